"""One run of a sweep, as a worker executes it: build the problem, call the task, summarize, cache."""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass

from .. import _memory, _threads
from ..results import Status, Trajectory, record_value
from .cache import read_cached, write_cached
from .grid import RESERVED
from .summary import run_failure, summarize
from .tasks import build_problem

__all__ = ["Call", "Job", "error_record", "run_job"]


@dataclass(frozen=True)
class Job:
    """One (grid point, seed index) to run."""

    index: int          # position in grid order (point-major, seeds inner)
    key: str
    params: dict
    seed_index: int
    seed: int


class Call:
    """``task`` with its problem factory, fixed arguments and summary options: what a worker runs."""

    def __init__(self, task, problem, problem_keys, fixed, keep, seed_arg):
        self.task, self.problem, self.problem_keys = task, problem, frozenset(problem_keys)
        self.fixed, self.keep, self.seed_arg = dict(fixed), tuple(keep), seed_arg

    def __call__(self, params: dict, seed: int):
        kwargs = {**self.fixed, **params}
        args = ()
        if self.problem is not None:
            pkw = {k: kwargs.pop(k) for k in list(kwargs) if k in self.problem_keys}
            factory = self.problem
            args = (build_problem(factory, **pkw) if isinstance(factory, str) else factory(**pkw),)
        if self.seed_arg:
            kwargs[self.seed_arg] = seed
        out = self.task(*args, **kwargs)
        if isinstance(out, Trajectory) and out.status is Status.interrupted:
            raise KeyboardInterrupt("the simulation was interrupted")
        return summarize(out, self.keep), run_failure(out)


def run_job(call, job: Job, cache_dir=None, marks_dir=None, cap=None, workers=1):
    """Run one (point, seed); returns ``(index, record, error_traceback, written_to_cache)``.

    Exceptions of the task become a record with ``ok=False``; ``KeyboardInterrupt``
    propagates (the sweep stops and keeps what finished).
    """
    if marks_dir is not None:
        open(os.path.join(marks_dir, str(job.index)), "w").close()
    if cache_dir is not None:
        cached = read_cached(cache_dir, job.key)
        if cached is not None:
            return job.index, cached, None, True
    if cap:
        _threads.one_thread_per_worker(cap)
    if cap == "process":
        _memory.WORKERS = max(int(workers), 1)    # the memory guard of each run counts the runs beside it
    record = {**job.params, "seed_index": job.seed_index, "seed": job.seed}
    try:
        outputs, failure = call(job.params, job.seed)
        clean = {}
        for name, value in outputs.items():
            name = str(name)
            clean[f"out_{name}" if name in record or name in RESERVED else name] = record_value(value, name)
    except Exception as err:
        record.update(ok=False, error=f"{type(err).__name__}: {err}")
        return job.index, record, traceback.format_exc(limit=-4), False
    if failure is not None:       # the task returned, but its run failed (diverged, not solved): not cached
        record.update(ok=False, error=f"RunFailed: {failure}", **clean)
        return job.index, record, None, False
    record.update(ok=True, error=None, **clean)
    written = False
    if cache_dir is not None:
        try:
            write_cached(cache_dir, job.key, record)
            written = True
        except (OSError, ValueError):     # a worker that cannot write the client's folder: the client writes it
            pass
    return job.index, record, None, written



def error_record(job: Job, message: str) -> dict:
    """The record of a run that failed outside the task (its worker died)."""
    return {**job.params, "seed_index": job.seed_index, "seed": job.seed, "ok": False, "error": message}
