"""Where the runs execute: in this process, joblib threads, joblib's loky processes or a Dask cluster.

Every backend has the signature ``run(call, jobs, done, opts)``: it executes
:func:`~ufm._sweep.runner.run_job` for each job and hands each outcome
``(index, record, traceback, written)`` to ``done`` as it arrives. ``opts`` holds
``n_jobs``, ``client`` (Dask), ``cache_dir`` and ``retries``.
"""

from __future__ import annotations

import ast
import multiprocessing
import os
import shutil
import sys
import tempfile

from .. import _memory
from .runner import error_record, run_job

__all__ = ["BACKENDS", "RUNNERS"]


def _run_sequential(call, jobs, done, opts):
    for job in jobs:
        done(*run_job(call, job))


def _joblib():
    try:
        import joblib
    except ImportError:
        raise ImportError("backend='loky' and 'threads' need joblib (a core dependency of ufm): pip install joblib; "
                          "backend='sequential' needs nothing.") from None
    return joblib


def _run_threads(call, jobs, done, opts):
    joblib = _joblib()
    from threadpoolctl import threadpool_limits

    saved, _memory.WORKERS = _memory.WORKERS, opts["n_jobs"]     # the threads share this process's memory
    try:
        _run_threads_inner(joblib, threadpool_limits, call, jobs, done, opts)
    finally:
        _memory.WORKERS = saved


def _run_threads_inner(joblib, threadpool_limits, call, jobs, done, opts):
    with threadpool_limits(1):
        gen = joblib.Parallel(n_jobs=opts["n_jobs"], backend="threading", return_as="generator_unordered")(
            joblib.delayed(run_job)(call, job, None, None, "thread") for job in jobs)
        for out in gen:
            done(*out)


def _run_loky(call, jobs, done, opts):
    """joblib's loky processes; a worker death is survived by resubmitting what did not finish.

    Workers write each finished run to a cache folder (the user's ``cache_dir``, or
    a temporary one) and mark each run they start, so after a death the runs that
    finished are loaded, not recomputed, and the runs that were in flight run one
    at a time: one that kills its worker ``retries + 1`` times alone is recorded as failed.
    """
    if opts["n_jobs"] == 1:     # joblib runs a single job in this process: no workers to lose
        return _run_sequential(call, jobs, done, opts)
    joblib = _joblib()
    from joblib.externals.loky.process_executor import BrokenProcessPool

    scratch = tempfile.mkdtemp(prefix="ufm-sweep-")
    marks = os.path.join(scratch, "started")
    os.makedirs(marks)
    workdir = opts["cache_dir"] if opts["cache_dir"] is not None else os.path.join(scratch, "cache")
    finished, deaths = set(), {}

    def parallel(batch, n_jobs):
        return joblib.Parallel(n_jobs=n_jobs, backend="loky", inner_max_num_threads=1,
                               return_as="generator_unordered")(
            joblib.delayed(run_job)(call, job, workdir, marks, "process", n_jobs) for job in batch)

    def receive(out):
        finished.add(out[0])
        done(*out)

    try:
        pending, suspects = list(jobs), []
        while pending or suspects:
            while suspects:       # runs that were in flight when a worker died: one at a time
                job = suspects.pop(0)
                try:
                    for out in parallel([job], 2):
                        receive(out)
                except BrokenProcessPool as err:
                    deaths[job.index] = deaths.get(job.index, 0) + 1
                    if deaths[job.index] > opts["retries"]:
                        receive((job.index, error_record(job, f"WorkerDied: the worker process died "
                                 f"{deaths[job.index]} times while running this point alone ({err})"), None, False))
                    else:
                        suspects.insert(0, job)
            if not pending:
                break
            for name in os.listdir(marks):
                os.unlink(os.path.join(marks, name))
            try:
                for out in parallel(pending, opts["n_jobs"]):
                    receive(out)
                pending = []
            except BrokenProcessPool:
                started = {int(name) for name in os.listdir(marks)}
                suspects = [j for j in pending if j.index in started and j.index not in finished]
                pending = [j for j in pending if j.index not in started and j.index not in finished]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _dask_client(client, n_jobs):
    try:
        import distributed
    except ImportError:
        raise ImportError("backend='dask' needs dask.distributed: pip install 'ufm[distributed]'.") from None
    if isinstance(client, distributed.Client):
        return client, []
    if isinstance(client, str):
        c = distributed.Client(client)
        return c, [c]
    if client is not None and hasattr(client, "scheduler_address"):       # a cluster object
        c = distributed.Client(client)
        return c, [c]
    if client is not None:
        raise ValueError(f"client must be a distributed.Client, a scheduler address or a cluster, "
                         f"got {type(client).__name__}.")
    try:
        return distributed.get_client(), []
    except ValueError:
        pass
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        # a new worker process importing the main script (multiprocessing's own test): the script called ufm.sweep
        # at its top level
        raise RuntimeError(_unguarded_hint("this process is such a worker, and the script it imports calls ufm.sweep "
                                           "at its top level, outside `if __name__ == \"__main__\":`, so it would "
                                           "run the sweep again"))
    try:
        cluster = distributed.LocalCluster(n_workers=n_jobs, threads_per_worker=1, processes=True,
                                           dashboard_address=None)
    except Exception as err:
        import dask

        site = _main_call_site()
        if site is None or _guarded(*site) or \
                dask.config.get("distributed.worker.multiprocessing-method", "spawn") == "fork":
            raise
        raise RuntimeError(f"Dask could not start its worker processes ({type(err).__name__}: {err}). "
                           + _unguarded_hint(f"the script {site[0]} runs ufm.sweep from its line {site[1]}, outside "
                                             "`if __name__ == \"__main__\":`, so each worker runs the sweep again "
                                             "as it starts, and its nanny fails to start it")) from err
    c = distributed.Client(cluster)
    return c, [c, cluster]


def _unguarded_hint(why: str) -> str:
    """What went wrong when a script calls ``ufm.sweep(backend="dask")`` at its top level (``why``), and the fix."""
    return (f"backend='dask' starts a LocalCluster whose worker processes begin by importing the main script "
            f"(multiprocessing's 'spawn'): {why}. Put the script's work under `if __name__ == \"__main__\":` "
            "(see docs/guide/sweeps.md, 'A Dask cluster'), or pass client= a running cluster.")


def _main_call_site():
    """``(file, line)`` of the top-level statement of the main script that is running now, or ``None``.

    ``None`` also where the main module is no file that a worker would import again (an interactive
    session, ``python -c``, a notebook).
    """
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if not path or not os.path.isfile(path):
        return None
    frame, line = sys._getframe(1), None
    while frame is not None:
        if frame.f_code.co_name == "<module>" and os.path.abspath(frame.f_code.co_filename) == os.path.abspath(path):
            line = frame.f_lineno
        frame = frame.f_back
    return None if line is None else (path, line)


def _guarded(path: str, line: int) -> bool:
    """Whether ``line`` of the script ``path`` lies in the body of an ``if __name__ == "__main__":`` (True when the
    script cannot be read: no claim is made then)."""
    try:
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read())
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return True
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare) and \
                all(isinstance(op, ast.Eq) for op in node.test.ops):
            sides = [node.test.left, *node.test.comparators]
            if any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides) and \
                    any(isinstance(s, ast.Constant) and s.value == "__main__" for s in sides) and \
                    node.body[0].lineno <= line <= node.body[-1].end_lineno:
                return True
    return False


def _run_dask(call, jobs, done, opts):
    import uuid

    from distributed import as_completed

    client, owned = _dask_client(opts["client"], opts["n_jobs"])
    token = uuid.uuid4().hex[:8]
    futures = {}
    try:
        for job in jobs:
            fut = client.submit(run_job, call, job, opts["cache_dir"], None, "process", 1, pure=False,
                                key=f"ufm-sweep-{token}-{job.index}", retries=opts["retries"])
            futures[fut] = job
        # results are fetched in the client's event loop as tasks finish (no round trip per run here)
        for fut, out in as_completed(list(futures), with_results=True, raise_errors=False):
            job = futures.pop(fut)
            if fut.status == "error":     # KilledWorker: the run killed workers too often
                err = out[1] if isinstance(out, tuple) else out
                out = (job.index, error_record(job, f"{type(err).__name__}: {err}"), None, False)
            fut.release()
            done(*out)
    finally:
        if futures:
            client.cancel(list(futures))
        for obj in owned:
            obj.close()



#: ``backend=`` name -> the function that runs the jobs there.
RUNNERS = {"sequential": _run_sequential, "threads": _run_threads, "loky": _run_loky, "dask": _run_dask}
BACKENDS = tuple(RUNNERS)
