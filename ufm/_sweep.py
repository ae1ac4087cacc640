"""``ufm.sweep``: parameter grids x seeds on joblib (one machine) or Dask distributed (a cluster).

The module is private (``ufm._sweep``) so that the function ``ufm.sweep`` is
never shadowed by a submodule of the same name.

``ufm`` does not schedule anything itself: ``backend="loky"`` and ``"threads"``
hand the runs to joblib, ``backend="dask"`` to a ``distributed.Client``. What
this module adds on top is what makes a sweep reproducible and restartable:

* **seeds**: run ``(point, i)`` gets the integer seed drawn from
  ``SeedSequence(seed, spawn_key=(hash of the point's parameters, i))``
  (:func:`point_seed`), so it depends on the parameters and ``i`` only, never
  on the order, the backend or the other points;
* **records**: what a task returns is summarized into one tidy dict
  (:func:`summarize`);
* **cache**: with ``cache_dir``, each finished run is written at once, atomically,
  to ``cache_dir/<key>.npz``, where ``key`` hashes the task, every argument,
  the seed and the ``ufm`` version (:func:`run_key`); a rerun loads those and
  computes only the missing runs. Failed runs are not cached (a rerun tries
  them again);
* **failures**: a task that raises gives a record with ``ok=False`` and its
  ``error``; the sweep goes on. A worker process that dies (segfault, OOM
  killer, ``os._exit``) is replaced and its runs are resubmitted: joblib-loky
  runs the runs that were in flight one at a time to find the one that kills
  its worker, and records it as failed after ``retries`` deaths; Dask
  reschedules them itself (``distributed.scheduler.allowed-failures``) and a
  run that keeps killing workers ends as ``KilledWorker``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass

import numpy as np

from .results import Result, Solution, Status, SweepResult, Trajectory, _Result, pack_records, record_value, unpack_records

__all__ = ["PROBLEMS", "TASKS", "build_problem", "grid_axis", "grid_points", "point_seed", "run_config", "run_key",
           "summarize", "sweep"]

BACKENDS = ("sequential", "threads", "loky", "dask")

#: Record keys that the sweep sets itself (a grid may not use them).
RESERVED = ("seed", "seed_index", "ok", "error")

#: Tasks that can be named by a string (``task="simulate"``); ``"module:function"`` names any other.
TASKS = {"simulate": "ufm._simulate:simulate", "solve": "ufm._solve:solve"}


# -- problems from keywords --------------------------------------------------------------
def _setting_problem(generator: str, **kw):
    from . import settings
    from .problems import InputCoupledUFM

    gen = getattr(settings, generator)
    names = set(inspect.signature(gen).parameters) - {"seed"}
    setting = gen(**{k: v for k, v in kw.items() if k in names})
    return InputCoupledUFM.from_setting(setting, **{k: v for k, v in kw.items() if k not in names})


def _setting_keys(generator: str) -> set:
    from . import settings
    from .problems import InputCoupledUFM

    names = set(inspect.signature(getattr(settings, generator)).parameters) - {"seed"}
    return names | (set(inspect.signature(InputCoupledUFM.from_setting).parameters) - {"setting", "cls"})


#: ``problem="kind"`` in :func:`sweep`: kind -> (builder, its keyword names).
PROBLEMS = {
    "ufm": ("ufm.problems:UFMProblem", None),
    "layer_peeled": ("ufm.problems:LayerPeeledProblem", None),
    "factorial": ("ufm._sweep:_setting_problem", "factorial"),
    "hierarchy": ("ufm._sweep:_setting_problem", "hierarchy"),
    "ntp_contexts": ("ufm._sweep:_setting_problem", "ntp_contexts"),
}


def build_problem(kind: str, **kwargs):
    """Build a problem from keywords: what ``problem="kind"`` does at each grid point.

    Parameters
    ----------
    kind : {"ufm", "layer_peeled", "factorial", "hierarchy", "ntp_contexts"}
        ``"ufm"``: ``UFMProblem(**kwargs)``; ``"layer_peeled"``:
        ``LayerPeeledProblem(**kwargs)``; a setting generator of
        :mod:`ufm.settings`: the input-coupled model M2 of that setting,
        ``InputCoupledUFM.from_setting(generator(...), sigma=..., ...)`` (THEORY §8.2),
        with each keyword going to the generator or to ``from_setting`` by name.
    **kwargs
        The problem's keywords, e.g. ``K=4, n=2, d=6, lam_W=1e-2, lam_H=1e-2`` or
        ``levels=(2, 2), sigma=0.3, lam_W=1e-3, lam_A=1e-3``.
    """
    if kind not in PROBLEMS:
        raise ValueError(f"problem kind must be one of {sorted(PROBLEMS)}, got {kind!r}; or pass a function "
                         "problem=f(**keywords) -> problem.")
    target, generator = PROBLEMS[kind]
    fn = _import(target)
    return fn(generator, **kwargs) if generator else fn(**kwargs)


def _problem_keys(kind: str) -> tuple[set, bool]:
    target, generator = PROBLEMS[kind]
    if generator:
        return _setting_keys(generator), False
    return _signature_keys(_import(target))


# -- names and signatures -----------------------------------------------------------------
def _import(target: str):
    module, _, name = target.partition(":")
    if not module or not name:
        raise ValueError(f"a task or factory named by a string must read 'module:function', got {target!r}.")
    obj = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _callable_name(fn) -> str:
    if isinstance(fn, functools.partial):
        return _callable_name(fn.func)
    module = getattr(fn, "__module__", None) or type(fn).__module__
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}:{qualname}"


def _signature_keys(fn) -> tuple[set, bool]:
    """Explicit keyword names of ``fn`` and whether it also takes ``**kwargs``."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return set(), True
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names, any(p.kind == p.VAR_KEYWORD for p in params)


def _resolve_task(task):
    if isinstance(task, str):
        target = TASKS.get(task, task)
        if ":" not in target:
            raise ValueError(f"task must be a function, one of {sorted(TASKS)}, or 'module:function'; got {task!r}.")
        try:
            return _import(target), target
        except (ImportError, AttributeError) as err:
            raise ValueError(f"task {task!r}: cannot import {target!r} ({err}).") from None
    if not callable(task):
        raise ValueError(f"task must be a function (e.g. ufm.simulate) or its name, got {type(task).__name__}.")
    return task, _callable_name(task)


# -- canonical forms (seeds and cache keys) -----------------------------------------------
def _canonical(x, where: str):
    """A JSON-able form of ``x`` that is equal for equal values and stable across processes."""
    if x is None or isinstance(x, (bool, str, int, float)):
        return x
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, (list, tuple)):
        return [_canonical(v, where) for v in x]
    if isinstance(x, dict):
        return {str(k): _canonical(v, where) for k, v in sorted(x.items(), key=lambda kv: str(kv[0]))}
    if isinstance(x, np.ndarray):
        arr = np.ascontiguousarray(x)
        return {"__ndarray__": hashlib.sha256(arr.tobytes()).hexdigest(), "dtype": arr.dtype.str,
                "shape": list(arr.shape)}
    if isinstance(x, np.dtype) or (isinstance(x, type) and issubclass(x, np.generic)):
        return {"__dtype__": np.dtype(x).str}
    if isinstance(x, functools.partial):
        return {"__partial__": _canonical(x.func, where), "args": _canonical(list(x.args), where),
                "keywords": _canonical(dict(x.keywords), where)}
    if hasattr(x, "as_dict") and callable(x.as_dict):
        return {"__object__": type(x).__qualname__, "as_dict": _canonical(x.as_dict(), where)}
    if callable(x):
        name = _callable_name(x)
        code = getattr(x, "__code__", None)
        if "<" in name and code is not None:   # lambdas and local functions: the name alone is not unique
            name += "#" + hashlib.sha256(code.co_code + repr(code.co_consts).encode()).hexdigest()[:16]
        return {"__callable__": name}
    try:
        import pickle

        return {"__pickle__": hashlib.sha256(pickle.dumps(x, protocol=4)).hexdigest()}
    except Exception:
        raise ValueError(f"{where}: cannot key the cache on a {type(x).__name__}; pass numbers, strings, arrays "
                         "or importable functions.") from None


def _dumps(x) -> str:
    return json.dumps(x, sort_keys=True, separators=(",", ":"))


def point_seed(seed: int, params: dict, index: int, scope: str = "point") -> int:
    """The integer seed of run ``index`` at the grid point ``params``.

    ``SeedSequence(seed, spawn_key=(w_0, w_1, w_2, w_3, index))`` where the ``w``
    are the first 16 bytes of the SHA-256 of the point's parameters (canonical
    JSON, sorted keys); its first 64-bit word, halved to fit a signed 64-bit
    integer. With ``scope="sweep"`` the parameters are left out (spawn key
    ``(index,)``, i.e. child ``index`` of ``SeedSequence(seed)``): every point
    then shares the seeds of index ``i`` (common random numbers).
    """
    if scope == "point":
        digest = hashlib.sha256(_dumps(_canonical(dict(params), "grid")).encode()).digest()[:16]
        key = tuple(int(w) for w in np.frombuffer(digest, dtype="<u4")) + (int(index),)
    elif scope == "sweep":
        key = (int(index),)
    else:
        raise ValueError(f"seed_scope must be 'point' or 'sweep', got {scope!r}.")
    state = np.random.SeedSequence(seed, spawn_key=key).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))


#: version of the summaries a run stores (2: statuses by Status name, a Solution's geometry under "regime"),
#: part of the cache key so that a cache written with another layout is recomputed, not mixed in
RECORD_FORMAT = 2


def run_key(call_id: str, params: dict, seed: int, index: int) -> str:
    """Cache key of one run: SHA-256 over the call (task, problem, fixed arguments, keep), the point's
    parameters, the seed and its index, the ``ufm`` version and :data:`RECORD_FORMAT`."""
    from . import __version__

    payload = _dumps({"call": call_id, "params": _canonical(dict(params), "grid"), "seed": seed,
                      "seed_index": index, "ufm": __version__, "records": RECORD_FORMAT})
    return hashlib.sha256(payload.encode()).hexdigest()[:40]


# -- the grid -------------------------------------------------------------------------------
def _param(value, where: str):
    try:
        return record_value(value, where)
    except ValueError:
        pass
    raise ValueError(f"{where} is a {type(value).__name__}; grid values must be numbers, strings, booleans, None "
                     "or lists of those (they go into the records). To sweep over objects such as problems, put "
                     "their keywords in the grid with problem=..., or sweep an index and look the object up in "
                     "your task.")


def grid_points(grid) -> list[dict]:
    """The points of a grid, in order.

    ``grid`` is a dict ``{name: list of values}`` (the Cartesian product, last
    name varying fastest, like ``itertools.product``) or a list of dicts (each
    one point, as given). ``{}`` is one point without parameters.
    """
    if isinstance(grid, dict):
        axes = {}
        for name, values in grid.items():
            if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__iter__"):
                raise ValueError(f"grid[{name!r}] must be a list of values, got {values!r}; write [{values!r}] "
                                 "for a single value (or pass it in fixed=).")
            values = list(values)
            if not values:
                raise ValueError(f"grid[{name!r}] is empty; give at least one value.")
            axes[str(name)] = [_param(v, f"grid[{name!r}][{i}]") for i, v in enumerate(values)]
        points = [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]
    elif isinstance(grid, (list, tuple)):
        if not grid:
            raise ValueError("grid is an empty list; give at least one point (a dict), or a dict of lists.")
        points = []
        for i, point in enumerate(grid):
            if not isinstance(point, dict):
                raise ValueError(f"grid[{i}] must be a dict of parameters, got {type(point).__name__}.")
            points.append({str(k): _param(v, f"grid[{i}][{k!r}]") for k, v in point.items()})
    else:
        raise ValueError(f"grid must be a dict of parameter lists or a list of dicts, got {type(grid).__name__}.")
    seen = {}
    for i, point in enumerate(points):
        for name in point:
            if name in RESERVED:
                raise ValueError(f"grid parameter {name!r} is set by the sweep itself; use seeds= (runs per point) "
                                 f"and seed= (base seed) instead.")
        text = _dumps(_canonical(point, "grid"))
        if text in seen:
            raise ValueError(f"grid points {seen[text]} and {i} are the same ({point}); remove the duplicate.")
        seen[text] = i
    return points


def grid_axis(points, name: str) -> list:
    """The distinct values of parameter ``name`` over ``points`` (records or grid points), in first-seen order."""
    seen = {}
    for point in points:
        if name in point:
            seen.setdefault(_dumps(_canonical(point[name], name)), point[name])
    return list(seen.values())


# -- turning what a task returns into a record ------------------------------------------
_SKIP_META = ("content_hash", "objective", "versions")


def _is_scalar(v) -> bool:
    return v is None or isinstance(v, (bool, str, int, float, np.generic))


def summarize(out, keep=()) -> dict:
    """What a task returned, as the outputs of one record.

    * :class:`~ufm.results.Solution`: ``loss``, ``success``, ``status`` (the
      :class:`~ufm.results.Status` name), ``regime``, ``method``, ``nit`` and the scalar entries of ``meta`` (regime quantities,
      duality gaps, ...; timings such as ``solve_time`` are left out so records
      do not depend on the machine); ``keep`` names arrays or properties to add
      (``"W"``, ``"H"``, ``"Z"``, ``"gram_H"``, ...).
    * :class:`~ufm.results.Trajectory`: ``status`` (name), ``success``, ``mode``, the
      last ``step`` and ``time``, and the final value of every scalar record
      (``loss``, ``nc1``, ...; an array over the simulate seeds when there are
      several); ``keep`` names records to add whole as ``<name>_history``
      (shape ``(seeds, T, ...)``), with ``times``.
    * other results (e.g. :class:`~ufm.phase.PhasePoint`): ``success`` and their scalar fields
      (``status`` by name; fields that are ``None`` are left out); ``keep`` names array fields.
    * a dict: taken as is (nested dicts flattened with ``"."``; lists become arrays).
    * a number, string or array: stored as ``value``.
    """
    keep = (keep,) if isinstance(keep, str) else tuple(keep)
    if isinstance(out, Solution):
        rec = {"loss": out.loss, "success": out.success, "status": out.status.name, "regime": out.regime,
               "method": out.method, "nit": out.nit}
        for k, v in out.meta.items():
            if _is_scalar(v) and k not in _SKIP_META and "time" not in k and k not in rec:
                rec[k] = v
        for name in keep:
            value = getattr(out, name, None)
            if value is None:
                raise ValueError(f"keep={name!r}: this Solution has no array {name!r}; try 'W', 'H', 'b', 'Z', 'A', "
                                 "'gram_H' or 'gram_W'.")
            rec[name] = np.asarray(value)
        return rec
    if isinstance(out, Trajectory):
        rec = {"status": out.status.name, "success": out.success, "mode": out.mode,
               "step": int(out.steps[-1]) if len(out.steps) else 0,
               "time": float(out.times[-1]) if len(out.times) else 0.0}
        for name, arr in out.records.items():
            if arr.ndim == 2 and arr.shape[1] > 0:
                final = arr[:, -1]
                rec[name] = float(final[0]) if final.shape[0] == 1 else np.array(final)
        for name in keep:
            if name not in out.records:
                raise ValueError(f"keep={name!r}: not recorded; the trajectory has {sorted(out.records)} "
                                 f"(add it to simulate's record=).")
            rec[f"{name}_history"] = np.array(out.records[name])
        if keep:
            rec["times"] = np.array(out.times)
        return rec
    if isinstance(out, _Result):
        rec = {k: v.name if isinstance(v, Status) else v for k, v in out._scalars().items()}
        rec = {"success": getattr(out, "success", True),
               **{k: v for k, v in rec.items() if _is_scalar(v) and v is not None}}
        for name in keep:
            rec[name] = np.asarray(getattr(out, name))
        return rec
    if isinstance(out, dict):
        rec = {}

        def walk(d, prefix):
            for k, v in d.items():
                name = f"{prefix}{k}"
                if isinstance(v, dict):
                    walk(v, name + ".")
                else:
                    rec[name] = np.asarray(v) if isinstance(v, (list, tuple)) else v
        walk(out, "")
        return rec
    if _is_scalar(out) or isinstance(out, (np.ndarray, list, tuple)):
        return {"value": np.asarray(out) if isinstance(out, (list, tuple)) else out}
    raise ValueError(f"the task returned a {type(out).__name__}; return a Solution, a Trajectory, a dict of "
                     "scalars and arrays, a number or an array.")


# -- one run ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Job:
    index: int          # position in grid order (point-major, seeds inner)
    key: str
    params: dict
    seed_index: int
    seed: int


class _Call:
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


def run_failure(out) -> str | None:
    """Why a task's result is a failed run, or ``None``.

    A simulation that did not complete (``status`` ``nonfinite``: it diverged;
    ``max_steps``: the integrator gave up), a solution that is not a certified
    optimum (``success=False``), any other result with ``success=False``, or a simulation
    whose final recorded scalars are not finite: such runs are counted as failed
    (``ok=False``), with their summary kept.
    """
    if isinstance(out, Trajectory):
        if not out.success:
            return f"{out.status.name}: {out.message}"
        loss = out.records.get("loss")
        if loss is not None and loss.shape[1] and not np.all(np.isfinite(loss[:, -1])):
            return "nonfinite: the final loss is not finite"
        return None
    if isinstance(out, Solution) and not out.success:
        return f"not solved ({out.status.name}): {out.message}"
    if isinstance(out, Result) and not out.success:
        return f"{out.status.name}: {out.message}"
    return None


_BLAS_CAPPED = False


def _cap_threads(mode):
    """One thread per worker for BLAS and numba, so parallel workers do not oversubscribe the cores."""
    global _BLAS_CAPPED
    if mode == "process" and not _BLAS_CAPPED:     # once per worker process (threadpoolctl takes ~1 ms)
        _BLAS_CAPPED = True
        import multiprocessing

        if multiprocessing.parent_process() is not None:   # a worker process, not the user's own
            for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
                os.environ.setdefault(var, "1")     # read when numba or a BLAS loads later in this process
        try:
            from threadpoolctl import threadpool_limits

            threadpool_limits(1)
        except ImportError:  # pragma: no cover - threadpoolctl is a core dependency
            pass
    numba = sys.modules.get("numba")
    if numba is not None:
        try:
            numba.set_num_threads(1)     # per thread: each worker thread runs its kernels on one thread
        except (ValueError, RuntimeError):  # pragma: no cover
            pass


def _run_job(call, job: _Job, cache_dir=None, marks_dir=None, cap=None, workers=1):
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
        _cap_threads(cap)
    if cap == "process":
        from . import _memory

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
        except OSError:     # e.g. a cluster worker that does not see the client's folder: the client writes it
            pass
    return job.index, record, None, written


# -- the cache ---------------------------------------------------------------------------------
def _cache_path(cache_dir, key: str) -> str:
    return os.path.join(os.fspath(cache_dir), f"{key}.npz")


def write_cached(cache_dir, key: str, record: dict) -> str:
    """Write one finished run to ``cache_dir/<key>.npz`` atomically (temporary file, then ``os.replace``)."""
    from . import __version__

    os.makedirs(cache_dir, exist_ok=True)
    rows, arrays = pack_records([record], prefix="r")
    header = json.dumps({"key": key, "ufm": __version__, "record": rows[0]})
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{key}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, __record__=np.array(header), **arrays)
        os.replace(tmp, _cache_path(cache_dir, key))
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return _cache_path(cache_dir, key)


def read_cached(cache_dir, key: str):
    """The cached record of ``key``, or ``None`` when missing or unreadable."""
    path = _cache_path(cache_dir, key)
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(str(data["__record__"]))
            if header.get("key") != key:
                return None
            return unpack_records([header["record"]], data)[0]
    except Exception:   # missing, truncated (zipfile.BadZipFile) or foreign: compute the run again
        return None


# -- progress ----------------------------------------------------------------------------------
class _Progress:
    def __init__(self, enabled, total, done):
        self.enabled, self.total, self.done, self.bar, self.last = enabled, total, done, None, -1
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=done, desc="ufm.sweep", unit="run", dynamic_ncols=True)
        except ImportError:
            self._line()

    def _line(self):
        pct = int(100 * self.done / max(self.total, 1))
        if pct >= self.last + 10 or self.done == self.total:
            print(f"ufm.sweep: {self.done}/{self.total} runs ({pct}%)", file=sys.stderr, flush=True)
            self.last = pct

    def update(self):
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        elif self.enabled:
            self._line()

    def close(self):
        if self.bar is not None:
            self.bar.close()


# -- backends ----------------------------------------------------------------------------------
def _error_record(job: _Job, message: str) -> dict:
    return {**job.params, "seed_index": job.seed_index, "seed": job.seed, "ok": False, "error": message}


def _run_sequential(call, jobs, done, opts):
    for job in jobs:
        done(*_run_job(call, job))


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

    from . import _memory

    saved, _memory.WORKERS = _memory.WORKERS, opts["n_jobs"]     # the threads share this process's memory
    try:
        _run_threads_inner(joblib, threadpool_limits, call, jobs, done, opts)
    finally:
        _memory.WORKERS = saved


def _run_threads_inner(joblib, threadpool_limits, call, jobs, done, opts):
    with threadpool_limits(1):
        gen = joblib.Parallel(n_jobs=opts["n_jobs"], backend="threading", return_as="generator_unordered")(
            joblib.delayed(_run_job)(call, job, None, None, "thread") for job in jobs)
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
            joblib.delayed(_run_job)(call, job, workdir, marks, "process", n_jobs) for job in batch)

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
                        receive((job.index, _error_record(job, f"WorkerDied: the worker process died "
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
        cluster = distributed.LocalCluster(n_workers=n_jobs, threads_per_worker=1, processes=True,
                                           dashboard_address=None)
        c = distributed.Client(cluster)
        return c, [c, cluster]


def _run_dask(call, jobs, done, opts):
    import uuid

    from distributed import as_completed

    client, owned = _dask_client(opts["client"], opts["n_jobs"])
    token = uuid.uuid4().hex[:8]
    futures = {}
    try:
        for job in jobs:
            fut = client.submit(_run_job, call, job, opts["cache_dir"], None, "process", 1, pure=False,
                                key=f"ufm-sweep-{token}-{job.index}", retries=opts["retries"])
            futures[fut] = job
        # results are fetched in the client's event loop as tasks finish (no round trip per run here)
        for fut, out in as_completed(list(futures), with_results=True, raise_errors=False):
            job = futures.pop(fut)
            if fut.status == "error":     # KilledWorker: the run killed workers too often
                err = out[1] if isinstance(out, tuple) else out
                out = (job.index, _error_record(job, f"{type(err).__name__}: {err}"), None, False)
            fut.release()
            done(*out)
    finally:
        if futures:
            client.cancel(list(futures))
        for obj in owned:
            obj.close()


_RUNNERS = {"sequential": _run_sequential, "threads": _run_threads, "loky": _run_loky, "dask": _run_dask}


# -- the entry point ---------------------------------------------------------------------------
def sweep(task, grid, *, seeds: int = 1, seed: int = 0, fixed: dict | None = None, problem=None, keep=(),
          backend: str = "loky", n_jobs: int | None = None, client=None, cache_dir=None, progress: bool = True,
          retries: int = 2, seed_scope: str = "point", seed_arg: str | None = "auto",
          on_interrupt: str = "raise") -> SweepResult:
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
    progress : bool
        Progress bar (tqdm when installed, else lines on stderr).
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
        SweepResult (status ``interrupted``) is raised in the ``result`` attribute of a
        ``KeyboardInterrupt`` (``"raise"``, the default, as :func:`ufm.simulate`) or
        returned (``"return"``).

    Returns
    -------
    SweepResult
        ``records`` (one dict per run, in grid order: parameters, ``seed_index``,
        ``seed``, ``ok``, ``error`` and the task's summary), ``success``, ``status``
        (a :class:`~ufm.results.Status`: ``completed``, ``runs_failed`` when some
        run failed, or ``interrupted``), ``message`` (counts and errors), ``meta``. ``result.to_pandas()`` gives a DataFrame when pandas is installed.
        A run is failed (``ok=False``) when the task raised, or returned a simulation
        that did not complete (diverged: ``nonfinite``; ``max_steps``), a solution
        that is not a certified optimum or any result with ``success=False``
        (:func:`run_failure`); its summary is kept.

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
    ...                 record=("loss", "etf_distance")), cache_dir="runs/")        # doctest: +SKIP
    >>> res.to_pandas().groupby(["sigma", "lam_W"]).etf_distance.mean()           # doctest: +SKIP
    """
    t0 = time.perf_counter()
    fn, task_name = _resolve_task(task)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
    if isinstance(seeds, bool) or not isinstance(seeds, (int, np.integer)) or seeds < 1:
        raise ValueError(f"seeds must be an integer >= 1 (runs per grid point), got {seeds!r}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0 (the base seed), got {seed!r}.")
    if isinstance(retries, bool) or not isinstance(retries, (int, np.integer)) or retries < 0:
        raise ValueError(f"retries must be an integer >= 0, got {retries!r}.")
    if n_jobs is None:
        n_jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or n_jobs < 1:
        raise ValueError(f"n_jobs must be an integer >= 1 (or None for all usable cores), got {n_jobs!r}.")
    if client is not None and backend != "dask":
        raise ValueError(f"client is for backend='dask'; got backend={backend!r}. Drop client or set backend='dask'.")
    if seed_scope not in ("point", "sweep"):
        raise ValueError(f"seed_scope must be 'point' or 'sweep', got {seed_scope!r}.")
    from . import _interrupt

    on_interrupt = _interrupt.check_on_interrupt(on_interrupt)
    if backend == "dask":
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise ValueError("backend='dask' needs dask.distributed, which is not installed: "
                             "pip install 'ufm[distributed]' (or choose backend='loky').") from None
    if isinstance(grid, dict) and not grid:
        raise ValueError("grid is empty ({}); give at least one parameter and its values, e.g. {'sigma': [1.0, 2.0]} "
                         "(to repeat one configuration, give its parameters one-value lists and use seeds=).")
    keep = (keep,) if isinstance(keep, str) else tuple(keep)
    fixed = dict(fixed or {})
    points = grid_points(grid)
    axes = list(dict.fromkeys(name for point in points for name in point))

    task_keys, task_var = _signature_keys(fn)
    if seed_arg == "auto":
        seed_arg = "seed" if "seed" in task_keys else None
    for name in fixed:
        if name in RESERVED or name == seed_arg:
            raise ValueError(f"fixed[{name!r}] is set by the sweep itself; use seeds= and seed= instead.")
        if name in axes:
            raise ValueError(f"{name!r} is both a grid parameter and in fixed; keep one.")
    if problem is not None:
        if isinstance(problem, str):
            if problem not in PROBLEMS:
                raise ValueError(f"problem must be one of {sorted(PROBLEMS)} or a function, got {problem!r}.")
            problem_keys, problem_var = _problem_keys(problem)
        elif callable(problem):
            problem_keys, problem_var = _signature_keys(problem)
        else:
            raise ValueError(f"problem must be a kind name or a function, got {type(problem).__name__}.")
    else:
        problem_keys, problem_var = set(), False
    routed = set()
    for name in axes + list(fixed):
        if name in problem_keys and name in task_keys:
            raise ValueError(f"{name!r} is a keyword of both the problem factory and the task; wrap the task in "
                             "your own function to say which one gets it.")
        if name in problem_keys or (problem_var and name not in task_keys):
            routed.add(name)
        elif name not in task_keys and not task_var:
            where = "the problem factory nor the task" if problem is not None else "the task"
            raise ValueError(f"{name!r} is not a keyword of {where} ({task_name}); check its spelling.")
    _precheck(fn, fixed, points, routed)
    call = _Call(fn, problem, routed, fixed, keep, seed_arg)
    call_id = _dumps({"task": task_name, "problem": _canonical(problem, "problem"),
                      "fixed": _canonical(fixed, "fixed"), "keep": list(keep), "seed_arg": seed_arg})

    jobs = []
    for point in points:
        for i in range(seeds):
            s = point_seed(int(seed), point, i, seed_scope)
            jobs.append(_Job(len(jobs), run_key(call_id, point, s, i), point, i, s))

    records: list = [None] * len(jobs)
    if cache_dir is not None:
        cache_dir = os.path.abspath(check_output_folder(cache_dir, "cache_dir"))   # workers may run elsewhere
        os.makedirs(cache_dir, exist_ok=True)
        for job in jobs:
            records[job.index] = read_cached(cache_dir, job.key)
    n_cached = sum(r is not None for r in records)
    todo = [job for job in jobs if records[job.index] is None]
    tracebacks: dict = {}
    opts = {"n_jobs": int(n_jobs), "client": client, "cache_dir": cache_dir, "retries": int(retries)}
    bar = _Progress(progress, len(jobs), n_cached)

    def done(index, record, tb, written):
        records[index] = record
        if record["ok"] and cache_dir is not None and not written:
            write_cached(cache_dir, jobs[index].key, record)
        if tb is not None and record["error"] not in tracebacks and len(tracebacks) < 5:
            tracebacks[record["error"]] = tb
        bar.update()

    status = "completed"
    try:
        if todo:
            _RUNNERS[backend](call, todo, done, opts)
    except KeyboardInterrupt:
        status = "interrupted"
    finally:
        bar.close()

    kept = [r for r in records if r is not None]
    errors: dict = {}
    for r in kept:
        if not r["ok"]:
            errors[r["error"]] = errors.get(r["error"], 0) + 1
    errors = dict(sorted(errors.items(), key=lambda kv: -kv[1]))
    n_failed = sum(errors.values())
    runs = f"{len(jobs)} runs ({len(points)} point{'s' * (len(points) != 1)} x {seeds} seed{'s' * (seeds != 1)})"
    if status == "completed":
        message = f"{runs}: {len(kept) - n_failed} ok, {n_failed} failed"
    else:
        message = (f"{len(kept)} of {runs} finished ({n_failed} failed); rerun with the same cache_dir "
                   f"to compute only the {len(jobs) - len(kept)} missing.")
    if status == "completed" and errors:
        top = next(iter(errors))
        message += f" (most common: {errors[top]} x {top})"
    if n_cached:
        message += f"; {n_cached} loaded from the cache"
    if status == "completed":
        message += "."
    meta = {"task": task_name, "backend": backend, "n_jobs": int(n_jobs), "seed": int(seed), "seeds": int(seeds),
            "seed_scope": seed_scope, "seed_arg": seed_arg, "problem": _canonical(problem, "problem"),
            "fixed": _canonical(fixed, "fixed"), "keep": list(keep), "n_points": len(points), "n_runs": len(jobs),
            "n_cached": n_cached, "n_computed": len(kept) - n_cached, "n_failed": n_failed, "errors": errors,
            "tracebacks": tracebacks, "cache_dir": cache_dir,
            "elapsed": time.perf_counter() - t0}
    if isinstance(grid, dict):
        meta["grid"] = {name: [_canonical(v, "grid") for v in grid_axis(points, name)] for name in axes}
    if status == "completed" and n_failed:
        status = "runs_failed"
    result = SweepResult(records=kept, task=task_name, axes=tuple(axes), seeds=int(seeds), status=status,
                         message=message, meta=meta, citation="ufm.sweep; joblib / Dask distributed")
    return _interrupt.finish(result, status == "interrupted", on_interrupt, result.message)


def _precheck(fn, fixed, points, routed):
    """Arguments every run would refuse, refused once before any run (ufm.simulate's scalar arguments)."""
    from ._simulate import check_arguments, simulate

    if fn is not simulate:
        return
    seen = set()
    for point in points or [{}]:
        args = {k: v for k, v in {**fixed, **point}.items() if k not in routed}
        key = _dumps(_canonical(args, "fixed"))
        if key in seen:
            continue
        seen.add(key)
        try:
            check_arguments(**args)
        except ValueError as err:
            where = "" if not point or not (set(point) & set(args)) else f" (at the grid point {point})"
            raise ValueError(f"every run would fail: {err}{where}") from None


# -- sweeps from a TOML file (``ufm sweep CONFIG.toml``) ----------------------------------------
_CONFIG_KEYS = {"task", "grid", "seeds", "seed", "backend", "n_jobs", "out", "keep", "problem", "fixed", "plot",
                "seed_scope", "retries"}


_PLOT_KEYS = {"x", "y", "value", "where", "annotate"}

#: Scalar quantities of ``ufm.simulate`` (what a phase diagram of a simulate sweep can show).
_SCALAR_RECORDS = ("loss", "nc1", "nc1_trace_ratio", "cdnv", "nc2", "nc2_classifier", "nc3", "nc4", "etf_distance",
                   "semantic_gap", "effective_rank")


def check_output_folder(path, name: str) -> str:
    """``path`` as an output folder that exists or can be created and written; a ValueError naming ``name`` otherwise.

    Parameters
    ----------
    path : str or path-like
        The folder.
    name : str
        The argument or option that gave it, for the message (e.g. ``"--out"``).

    Returns
    -------
    str
        The path.
    """
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{name} {path} is a file, not a folder; pass a folder (it is created if missing).")
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(os.path.abspath(probe))
        if parent == os.path.abspath(probe):
            break
        probe = parent
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{name} {path}: {probe} is not a writable folder; choose another output folder.")
    return path


def _pick_value(records, preferred=("etf_distance", "loss", "value")):
    ok = [r for r in records if r["ok"]]
    for name in preferred:
        if any(name in r for r in ok):
            return name
    for r in ok:
        for k, v in r.items():
            if k not in RESERVED and isinstance(v, (int, float)) and not isinstance(v, bool):
                return k
    return None


def run_config(path, *, out=None, resume: bool = False, backend=None, n_jobs=None, figure: bool = True,
               progress: bool = True, echo=print, on_interrupt: str = "raise") -> dict:
    """Run the sweep described by a TOML file; write ``result.npz`` and ``phase_diagram.png`` to its ``out``.

    The file (see ``examples/sweep.toml``) holds ``task`` (``"simulate"``,
    ``"solve"`` or ``"module:function"``), ``[grid]`` (parameter lists), and
    optionally ``seeds``, ``seed``, ``backend``, ``n_jobs``, ``out``, ``keep``,
    ``seed_scope``, ``retries``, ``[problem]`` (``kind`` and fixed problem
    keywords), ``[fixed]`` (task keywords) and ``[plot]`` (``x``, ``y``,
    ``value``, optional ``[plot.where]``). Finished runs are cached in
    ``out/cache``; ``resume=True`` continues from it, and without it an
    existing cache is an error (so results of another configuration are never
    mixed in by accident). Everything is checked before the first run: unknown keys
    (at the top level and in ``[plot]``), the ``[plot]`` axes and value, the output
    folder, and the task's arguments.

    Parameters
    ----------
    path : str or path-like
        The TOML file.
    out : str, optional
        Output folder (default: the file's ``out``, else ``ufm-sweep``).
    resume : bool
        Continue from ``out/cache``.
    backend, n_jobs : optional
        Override the file's.
    figure : bool
        Draw ``phase_diagram.png`` (failed runs are marked in it).
    progress : bool
        Progress bar.
    echo : callable
        Where the summary lines go.
    on_interrupt : {"raise", "return"}
        Ctrl-C: the partial result is written to ``result.npz`` first, then raised in
        ``KeyboardInterrupt`` (in its ``result``) or returned (``ufm sweep`` returns it and exits 130).

    Returns
    -------
    dict
        ``result`` (the SweepResult) and ``paths`` written.
    """
    import tomllib

    from . import _interrupt

    on_interrupt = _interrupt.check_on_interrupt(on_interrupt)
    with open(path, "rb") as fh:
        try:
            cfg = tomllib.load(fh)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{path}: not valid TOML ({err}).") from None
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}: not a TOML text file (it is not UTF-8: {err.reason} at byte {err.start}); "
                             "pass the sweep's .toml configuration.") from None
    unknown = set(cfg) - _CONFIG_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; known: {sorted(_CONFIG_KEYS)}.")
    for table in ("grid", "fixed", "problem", "plot"):
        if table in cfg and not isinstance(cfg[table], dict):
            raise ValueError(f"{path}: {table} must be a table ([{table}]), got {cfg[table]!r}.")
    plot_cfg = dict(cfg.get("plot", {}))
    bad = set(plot_cfg) - _PLOT_KEYS
    if bad:
        raise ValueError(f"{path}: unknown keys in [plot]: {sorted(bad)}; known: {sorted(_PLOT_KEYS)} (a key written "
                         "after a [table] header belongs to that table: put top-level keys before the first table).")
    grid_names = set(cfg.get("grid", {})) if isinstance(cfg.get("grid"), dict) else set()
    for key in ("x", "y"):
        if key in plot_cfg and plot_cfg[key] not in grid_names:
            raise ValueError(f"{path}: [plot] {key} = {plot_cfg[key]!r} is not a [grid] parameter "
                             f"({sorted(grid_names)}).")
    for key in plot_cfg.get("where", {}) or {}:
        if key not in grid_names:
            raise ValueError(f"{path}: [plot.where] {key!r} is not a [grid] parameter ({sorted(grid_names)}).")
    if "value" in plot_cfg and cfg.get("task") == "simulate":
        rec = cfg.get("fixed", {}).get("record", ("loss",))
        names = [rec] if isinstance(rec, str) else list(rec)
        scalars = [n for n in names if n in _SCALAR_RECORDS]
        if plot_cfg["value"] not in scalars:
            raise ValueError(f"{path}: [plot] value = {plot_cfg['value']!r} is not a scalar that [fixed] record = "
                             f"{names} keeps; use one of {scalars} or add it to record.")
    if "task" not in cfg or "grid" not in cfg:
        raise ValueError(f"{path}: needs task = \"simulate\" (or \"solve\", \"module:function\") and a [grid] table.")
    fixed = dict(cfg.get("fixed", {}))
    problem = None
    if "problem" in cfg:
        spec = dict(cfg["problem"])
        if "kind" not in spec:
            raise ValueError(f"{path}: [problem] needs kind = one of {sorted(PROBLEMS)}.")
        problem = spec.pop("kind")
        both = set(spec) & set(fixed)
        if both:
            raise ValueError(f"{path}: {sorted(both)} are in both [problem] and [fixed]; keep one.")
        fixed.update(spec)
    out = os.fspath(out if out is not None else cfg.get("out", "ufm-sweep"))
    cache = os.path.join(out, "cache")
    if not resume and os.path.isdir(cache) and any(n.endswith(".npz") for n in os.listdir(cache)):
        raise ValueError(f"{cache} holds runs of an earlier sweep; pass --resume to continue it, or choose "
                         "another --out.")
    check_output_folder(out, "out")
    os.makedirs(out, exist_ok=True)
    result = sweep(cfg["task"], cfg["grid"], seeds=cfg.get("seeds", 1), seed=cfg.get("seed", 0), fixed=fixed,
                   problem=problem, keep=cfg.get("keep", ()), backend=backend or cfg.get("backend", "loky"),
                   n_jobs=n_jobs or cfg.get("n_jobs"), cache_dir=cache, progress=progress,
                   retries=cfg.get("retries", 2), seed_scope=cfg.get("seed_scope", "point"), on_interrupt="return")
    paths = {"result": result.save(os.path.join(out, "result.npz"))}
    echo(result.summary())
    if result.status is Status.interrupted:
        echo("interrupted (Ctrl-C): wrote the finished runs; rerun with --resume to compute the rest.")
        echo("wrote: " + ", ".join(paths.values()))
        return _interrupt.finish({"result": result, "paths": paths}, True, on_interrupt, result.message)
    plot = dict(cfg.get("plot", {}))
    x, y = plot.get("x"), plot.get("y")
    varying = [a for a in result.axes if len(grid_axis(result.records, a)) > 1] or list(result.axes)
    if x is None:
        x = next((a for a in varying if a != y), None)
    if y is None:
        y = next((a for a in varying if a != x), None)
    value = plot.get("value") or _pick_value(result.records)
    if figure and result.records:
        if x is None or y is None or value is None:
            echo("no phase diagram: it needs two grid parameters and a numeric result ([plot] x, y, value).")
        else:
            import matplotlib

            matplotlib.use("Agg", force=True)
            import matplotlib.pyplot as plt

            from .plotting import plot_phase_diagram

            fig, ax = plt.subplots(figsize=(4.2, 3.4))
            plot_phase_diagram(result, x, y, value, ax=ax, where=plot.get("where"), annotate=plot.get("annotate", True))
            fig.tight_layout()
            paths["figure"] = os.path.join(out, "phase_diagram.png")
            fig.savefig(paths["figure"], dpi=120)
            plt.close(fig)
    echo("wrote: " + ", ".join(paths.values()))
    return {"result": result, "paths": paths}
