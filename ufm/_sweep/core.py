"""The entry point :func:`sweep`: plan the runs, execute them on a backend, collect one SweepResult."""

from __future__ import annotations

import difflib
import os
import time
from dataclasses import dataclass, field

import numpy as np

from .. import _interrupt, _threads
from .._checks import check_bool
from .._progress import Progress, check_progress
from .._simulate import check_arguments, simulate
from .._util import canonical, canonical_json, check_output_folder
from ..results import Status, SweepResult
from .backends import BACKENDS, RUNNERS
from .cache import read_cached, write_cached
from .grid import RESERVED, grid_points
from .keys import call_id, point_seed, run_key
from .runner import Call, Job
from .tasks import PROBLEMS, problem_keys, resolve_task, signature_keys, task_keys

__all__ = ["sweep"]


def sweep(task, grid, *, seeds: int = 1, seed: int = 0, fixed: dict | None = None, problem=None, keep=(),
          backend: str = "loky", n_jobs: int | None = None, client=None, cache_dir=None, progress="auto",
          retries: int = 2, seed_scope: str = "point", seed_arg: str | None = "auto",
          on_interrupt: str = "raise", throw: bool = False) -> SweepResult:
    """Run ``task`` at every grid point and seed, in parallel, and collect tidy records.

    Each run calls ``task(**point, **fixed, seed=s)`` (with ``problem=``:
    ``task(problem(**problem_keywords), **other_keywords, seed=s)``), where ``s``
    is :func:`point_seed`: a function of ``seed``, the point's parameters and the
    seed index only, so records do not depend on the backend or the order of
    completion.

    Parameters
    ----------
    task : callable or str
        A picklable function: ``ufm.simulate``, ``ufm.solve``, a theory curve or
        your own (defined in an importable module, or in a script/notebook:
        joblib and Dask pickle it by value). Strings: ``"simulate"``, ``"solve"``
        or ``"module:function"``.
    grid : dict of lists, or list of dicts
        ``{name: [values]}`` sweeps the Cartesian product (last name fastest);
        a list of dicts gives the points one by one. Values must be numbers,
        strings, booleans, None or lists of those: they go into the records.
    seeds : int
        Runs per point (seed indices ``0 .. seeds-1``).
    seed : int
        Base seed of the ``np.random.SeedSequence`` the run seeds come from.
    fixed : dict, optional
        Keyword arguments that are the same at every point (e.g. ``steps``,
        ``lr``, ``record`` for ``ufm.simulate``); they are part of the cache key
        but not of the records.
    problem : str or callable, optional
        Build the task's first argument at each point from keywords: a kind of
        :func:`build_problem` (``"ufm"``, ``"layer_peeled"``, ``"factorial"``,
        ``"hierarchy"``, ``"ntp_contexts"``) or a function ``f(**keywords)``.
        Grid and fixed keywords that ``problem`` accepts go to it, the rest to the task.
    keep : sequence of str
        Arrays to keep in the records (see :func:`summarize`); by default records
        hold scalar summaries only.
    backend : {"loky", "threads", "dask", "sequential"}
        ``"loky"``: joblib worker processes on this machine (the default);
        ``"threads"``: joblib threads (for tasks that release the GIL);
        ``"dask"``: a ``distributed`` cluster (see ``client``);
        ``"sequential"``: one run after the other in this process.
        Workers run BLAS and numba on one thread each.
    n_jobs : int, optional
        Parallel workers for loky and threads (and for the ``LocalCluster``
        started when ``backend="dask"`` has no client); default: the usable cores.
        ``n_jobs=1`` runs in this process, as joblib does.
    client : distributed.Client, str or cluster, optional
        For ``backend="dask"``: a client, a scheduler address (``"tcp://..."``)
        or a cluster object (e.g. ``LocalCluster``, ``SLURMCluster``). Default:
        the current client if there is one, else a ``LocalCluster`` of
        ``n_jobs`` single-threaded worker processes, closed at the end.
    cache_dir : str or path, optional
        Folder for finished runs (one ``.npz`` each, written as it completes).
        A rerun with the same folder loads them and computes only the missing
        ones: after a crash, a Ctrl-C or a killed worker nothing is lost or
        repeated. On a cluster, use a folder the workers can see to have them
        write it themselves (otherwise the client does).
    progress : {"auto", True, False}
        A progress display (tqdm when installed, else lines on stderr; never stdout):
        ``"auto"`` (default) once the work has run 2 s, ``True`` from the start,
        ``False`` never. Every ``ufm`` entry point takes the same values.
    retries : int
        loky: how many times a run may kill its worker before it is recorded as
        failed; Dask: ``retries`` of each submitted task.
    seed_scope : {"point", "sweep"}
        ``"point"``: seeds depend on the point's parameters and the seed index;
        ``"sweep"``: on the seed index only (every point shares seed ``i``:
        common random numbers).
    seed_arg : str or None
        Name of the task's seed argument; ``"auto"``: ``"seed"`` when the task
        has a parameter called ``seed`` (``ufm.solve`` has none: it is
        deterministic), else none. The records list ``seed`` either way.
    on_interrupt : {"raise", "return"}
        What Ctrl-C (SIGINT) does: the sweep stops (the runs in flight are abandoned,
        finished ones are kept and, with ``cache_dir``, already on disk) and the partial
        SweepResult (``status="interrupted"``) is raised in the ``result`` attribute of a
        ``KeyboardInterrupt`` (``"raise"``, the default, as :func:`ufm.simulate`) or
        returned (``"return"``).
    throw : bool
        Raise :class:`ufm.results.NotConverged` (the SweepResult in ``err.result``) when a
        run failed (status ``runs_failed``) instead of returning the result.

    Returns
    -------
    SweepResult
        ``records`` (one dict per run, in grid order: parameters, ``seed_index``,
        ``seed``, ``ok``, ``error`` and the task's summary), ``status``
        (``"completed"`` or ``"interrupted"``), ``message`` (counts and errors),
        ``meta``. ``result.to_pandas()`` gives a DataFrame when pandas is installed.
        A run is failed (``ok=False``) when the task raised, or returned a simulation
        that did not complete (diverged: ``"nonfinite"``; ``"max_steps"``) or a solution
        that is not a certified optimum (:func:`run_failure`); its summary is kept.

    Raises
    ------
    ValueError
        Bad grid, unknown backend, a missing backend package, a keyword that neither
        the task nor the problem factory accepts, or (for ``ufm.simulate``) a bad
        ``steps``, ``lr``, ... in ``fixed`` or the grid (checked before anything runs).
    KeyboardInterrupt
        After Ctrl-C with ``on_interrupt="raise"``; its ``result`` holds the SweepResult.

    Examples
    --------
    >>> res = ufm.sweep(ufm.simulate, {"sigma": [0.1, 1.0], "lam_W": [1e-3, 1e-2]}, seeds=2,
    ...                 problem="factorial", fixed=dict(levels=(2, 2), lam_A=1e-3, steps=2000, lr=0.5,
    ...                 record=("objective", "etf_distance")), cache_dir="runs/")   # doctest: +SKIP
    >>> res.to_pandas().groupby(["sigma", "lam_W"]).etf_distance.mean()           # doctest: +SKIP
    """
    t0 = time.perf_counter()
    with _interrupt.protected("sweep", on_interrupt) as call:     # from the first check to the return
        call.stage("plan")
        check_progress(progress)
        throw = check_bool("throw", throw)
        plan = _plan(task, grid, seeds=seeds, seed=seed, fixed=fixed, problem=problem, keep=keep, backend=backend,
                     n_jobs=n_jobs, client=client, cache_dir=cache_dir, retries=retries, seed_scope=seed_scope,
                     seed_arg=seed_arg, on_interrupt=on_interrupt)
        outcome = _execute(plan, progress, call)
        try:
            call.stage("result")
            result = _collect(plan, outcome, time.perf_counter() - t0)
        except KeyboardInterrupt:       # Ctrl-C again while the records were packed: packed once more, interrupted
            outcome.status = "interrupted"
            result = _collect(plan, outcome, time.perf_counter() - t0)
        result = call.finish(result, result.status is Status.interrupted, mark=_interrupted_after_the_runs)
    return result.raise_on_failure() if throw else result


def _interrupted_after_the_runs(result: SweepResult) -> SweepResult:
    """``result``, whose runs all ended before a Ctrl-C was seen, marked interrupted (nothing is missing from it)."""
    return result.replace(status="interrupted", message=f"Ctrl-C came after every run had ended ({result.message}); "
                                                        f"all {len(result.records)} records are kept.")


# -- plan: check everything, route the keywords, list the jobs -----------------------------------
@dataclass
class _Plan:
    """Everything :func:`sweep` decided before the first run."""

    task_name: str
    call: Call
    call_id: str
    grid: object
    points: list
    axes: list
    jobs: list
    backend: str
    opts: dict              # what the backend needs: n_jobs, client, cache_dir, retries
    settings: dict          # seed, seeds, seed_scope, seed_arg, problem, fixed, keep (for the result's meta)
    on_interrupt: str


def _plan(task, grid, *, seeds, seed, fixed, problem, keep, backend, n_jobs, client, cache_dir, retries,
          seed_scope, seed_arg, on_interrupt) -> _Plan:
    fn, task_name = resolve_task(task)
    n_jobs, on_interrupt = _check_options(backend, seeds, seed, retries, n_jobs, client, seed_scope, on_interrupt)
    if isinstance(grid, dict) and not grid:
        raise ValueError("grid is empty ({}); give at least one parameter and its values, e.g. {'sigma': [1.0, 2.0]} "
                         "(to repeat one configuration, give its parameters one-value lists and use seeds=).")
    keep = (keep,) if isinstance(keep, str) else tuple(keep)
    fixed = dict(fixed or {})
    points = grid_points(grid)
    axes = list(dict.fromkeys(name for point in points for name in point))
    t_keys, task_var = task_keys(fn)
    if seed_arg == "auto":
        seed_arg = "seed" if "seed" in t_keys else None
    routed = _route_keywords(task_name, t_keys, task_var, problem, fixed, axes, seed_arg)
    _precheck(fn, fixed, points, routed)
    call = Call(fn, problem, routed, fixed, keep, seed_arg)
    cid = call_id(task_name, problem, fixed, keep, seed_arg)
    jobs = []
    for point in points:
        for i in range(seeds):
            s = point_seed(int(seed), point, i, seed_scope)
            jobs.append(Job(len(jobs), run_key(cid, point, s, i), point, i, s))
    if cache_dir is not None:
        cache_dir = os.path.abspath(check_output_folder(cache_dir, "cache_dir"))   # workers may run elsewhere
        os.makedirs(cache_dir, exist_ok=True)
    settings = {"seed": int(seed), "seeds": int(seeds), "seed_scope": seed_scope, "seed_arg": seed_arg,
                "problem": problem, "fixed": fixed, "keep": keep}
    opts = {"n_jobs": int(n_jobs), "client": client, "cache_dir": cache_dir, "retries": int(retries)}
    return _Plan(task_name, call, cid, grid, points, axes, jobs, backend, opts, settings, on_interrupt)


def _check_options(backend, seeds, seed, retries, n_jobs, client, seed_scope, on_interrupt):
    """The scalar options, checked; returns ``n_jobs`` (the usable cores when ``None``) and ``on_interrupt``."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
    if isinstance(seeds, bool) or not isinstance(seeds, (int, np.integer)) or seeds < 1:
        raise ValueError(f"seeds must be an integer >= 1 (runs per grid point), got {seeds!r}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0 (the base seed), got {seed!r}.")
    if isinstance(retries, bool) or not isinstance(retries, (int, np.integer)) or retries < 0:
        raise ValueError(f"retries must be an integer >= 0, got {retries!r}.")
    if n_jobs is None:
        n_jobs = _threads.usable_cpus()
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or n_jobs < 1:
        raise ValueError(f"n_jobs must be an integer >= 1 (or None for all usable cores), got {n_jobs!r}.")
    if client is not None and backend != "dask":
        raise ValueError(f"client is for backend='dask'; got backend={backend!r}. Drop client or set backend='dask'.")
    if seed_scope not in ("point", "sweep"):
        raise ValueError(f"seed_scope must be 'point' or 'sweep', got {seed_scope!r}.")
    on_interrupt = _interrupt.check_on_interrupt(on_interrupt)
    if backend == "dask":
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise ValueError("backend='dask' needs dask.distributed, which is not installed: "
                             "pip install 'ufm[distributed]' (or choose backend='loky').") from None
    return n_jobs, on_interrupt


def _route_keywords(task_name, task_keys, task_var, problem, fixed, axes, seed_arg) -> set:
    """The grid and fixed keywords that go to the problem factory (the others go to the task)."""
    for name in fixed:
        if name in RESERVED or name == seed_arg:
            raise ValueError(f"fixed[{name!r}] is set by the sweep itself; use seeds= and seed= instead.")
        if name in axes:
            raise ValueError(f"{name!r} is both a grid parameter and in fixed; keep one.")
    if problem is not None:
        if isinstance(problem, str):
            if problem not in PROBLEMS:
                raise ValueError(f"problem must be one of {sorted(PROBLEMS)} or a function, got {problem!r}.")
            p_keys, p_var = problem_keys(problem)
        elif callable(problem):
            p_keys, p_var = signature_keys(problem)
        else:
            raise ValueError(f"problem must be a kind name or a function, got {type(problem).__name__}.")
    else:
        p_keys, p_var = set(), False
    routed = set()
    for name in axes + list(fixed):
        if name in p_keys and name in task_keys:
            raise ValueError(f"{name!r} is a keyword of both the problem factory and the task; wrap the task in "
                             "your own function to say which one gets it.")
        if name in p_keys or (p_var and name not in task_keys):
            routed.add(name)
        elif name not in task_keys and not task_var:
            _unknown_keyword(name, name in axes, task_name, task_keys - {seed_arg}, problem, p_keys)
    return routed


def _unknown_keyword(name, in_grid, task_name, task_keys, problem, p_keys):
    """One ValueError for a grid or fixed name that neither the problem factory nor the task accepts (every run
    would fail on it): the names each accepts, and the closest one."""
    accepted = set(task_keys) | set(p_keys)
    close = difflib.get_close_matches(name, sorted(accepted), n=1, cutoff=0.6)
    what = f"grid parameter {name!r}" if in_grid else f"fixed[{name!r}]"
    where = f"the problem factory ({problem!r}) nor the task" if problem is not None else "the task"
    lists = f"the task takes {sorted(task_keys)}" + (f", the problem {sorted(p_keys)}" if problem is not None else "")
    raise ValueError(f"{what} is not a keyword of {where} ({task_name}), so every run would fail"
                     + (f"; did you mean {close[0]!r}?" if close else "; check its spelling.")
                     + f" Accepted: {lists}.")


def _precheck(fn, fixed, points, routed):
    """Arguments every run would refuse, refused once before any run (ufm.simulate's scalar arguments)."""
    if fn is not simulate:
        return
    seen = set()
    for point in points or [{}]:
        args = {k: v for k, v in {**fixed, **point}.items() if k not in routed}
        key = canonical_json(args, "fixed")
        if key in seen:
            continue
        seen.add(key)
        try:
            check_arguments(**args)
        except ValueError as err:
            where = "" if not point or not (set(point) & set(args)) else f" (at the grid point {point})"
            raise ValueError(f"every run would fail: {err}{where}") from None


# -- execute: load the cached runs, run the others on the backend -------------------------------
@dataclass
class _Outcome:
    records: list                           # one entry per job, None where it did not finish
    n_cached: int
    status: str                             # "completed" or "interrupted"
    tracebacks: dict = field(default_factory=dict)


def _execute(plan: _Plan, progress: bool, call) -> _Outcome:
    """The cached runs, then the others on the backend; a Ctrl-C stops the runs and keeps every finished one.

    The runs themselves (and the wait for workers) may be abandoned anywhere
    (``_interrupt.raising``); storing a finished run is not cut short, and a Ctrl-C seen
    meanwhile stops the sweep right after it.
    """
    cache_dir = plan.opts["cache_dir"]
    records: list = [None] * len(plan.jobs)
    outcome = _Outcome(records, 0, "completed")
    bar = None

    def done(index, record, tb, written):
        with _interrupt.deferred():
            records[index] = record
            if record["ok"] and cache_dir is not None and not written:
                write_cached(cache_dir, plan.jobs[index].key, record)
            if tb is not None and record["error"] not in outcome.tracebacks and len(outcome.tracebacks) < 5:
                outcome.tracebacks[record["error"]] = tb
            bar.advance()
        if _interrupt.requested():
            raise KeyboardInterrupt

    try:
        call.stage("cache")
        if cache_dir is not None:
            for job in plan.jobs:
                records[job.index] = read_cached(cache_dir, job.key)
                outcome.n_cached += records[job.index] is not None
        todo = [job for job in plan.jobs if records[job.index] is None]
        bar = Progress(progress, len(plan.jobs), "ufm.sweep", unit="run", initial=outcome.n_cached)
        call.stage("run")
        with _interrupt.raising():
            if todo:
                RUNNERS[plan.backend](plan.call, todo, done, plan.opts)
    except KeyboardInterrupt:
        outcome.status = "interrupted"
    finally:
        if bar is not None:
            bar.close()
    return outcome


# -- collect: the records in grid order, the counts, the message ---------------------------------
def _collect(plan: _Plan, outcome: _Outcome, elapsed: float) -> SweepResult:
    kept = [r for r in outcome.records if r is not None]
    errors: dict = {}
    for r in kept:
        if not r["ok"]:
            errors[r["error"]] = errors.get(r["error"], 0) + 1
    errors = dict(sorted(errors.items(), key=lambda kv: -kv[1]))
    n_failed = sum(errors.values())
    message = _message(plan, outcome, len(kept), errors)
    s = plan.settings
    meta = {"task": plan.task_name, "backend": plan.backend, "n_jobs": plan.opts["n_jobs"], "seed": s["seed"],
            "seeds": s["seeds"], "seed_scope": s["seed_scope"], "seed_arg": s["seed_arg"],
            "problem": canonical(s["problem"], "problem"), "fixed": canonical(s["fixed"], "fixed"),
            "keep": list(s["keep"]), "n_points": len(plan.points), "n_runs": len(plan.jobs),
            "n_cached": outcome.n_cached, "n_computed": len(kept) - outcome.n_cached, "n_failed": n_failed,
            "errors": errors, "tracebacks": outcome.tracebacks, "cache_dir": plan.opts["cache_dir"],
            "elapsed": elapsed}
    if isinstance(plan.grid, dict):
        meta["grid"] = {name: [canonical(v, "grid") for v in _distinct(plan.points, name)] for name in plan.axes}
    status = "runs_failed" if outcome.status == "completed" and n_failed else outcome.status
    return SweepResult(records=kept, task=plan.task_name, axes=tuple(plan.axes), seeds=s["seeds"],
                       status=status, message=message, meta=meta,
                       citation="ufm.sweep; joblib / Dask distributed")


def _distinct(points, name: str) -> list:
    seen = {}
    for point in points:
        seen.setdefault(canonical_json(point[name], name), point[name])
    return list(seen.values())


def _message(plan: _Plan, outcome: _Outcome, n_kept: int, errors: dict) -> str:
    n_runs, n_points, seeds = len(plan.jobs), len(plan.points), plan.settings["seeds"]
    n_failed = sum(errors.values())
    runs = f"{n_runs} runs ({n_points} point{'s' * (n_points != 1)} x {seeds} seed{'s' * (seeds != 1)})"
    if outcome.status == "completed":
        message = f"{runs}: {n_kept - n_failed} ok, {n_failed} failed"
        if errors:
            top = next(iter(errors))
            message += f" (most common: {errors[top]} x {top})"
    else:
        message = (f"{n_kept} of {runs} finished ({n_failed} failed); rerun with the same cache_dir "
                   f"to compute only the {n_runs - n_kept} missing.")
    if outcome.n_cached:
        message += f"; {outcome.n_cached} loaded from the cache"
    if outcome.status == "completed":
        message += "."
    return message
