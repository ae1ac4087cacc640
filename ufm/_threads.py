"""How many threads ``ufm`` runs, so that concurrent processes do not oversubscribe the cores.

``ufm.simulate`` runs seeds on up to :func:`seed_threads` threads (one serial kernel per
block of seeds) and the kernels' BLAS products on one thread (:func:`one_blas_thread`, a
context that restores the caller's BLAS threads afterwards). The count is the smallest of:

* ``numba.get_num_threads()`` (``NUMBA_NUM_THREADS``, or what the user set with
  ``numba.set_num_threads``);
* an explicit thread variable, ``NUMBA_NUM_THREADS``, ``OMP_NUM_THREADS``,
  ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS`` (the first one set, in that order);
* the CPUs this process may run on (``os.sched_getaffinity``) and the cgroup CPU quota
  (``cpu.max`` of cgroup v2, ``cpu.cfs_quota_us / cpu.cfs_period_us`` of v1, rounded up);
* one thread inside a worker of a pool that runs one task per core: a pytest-xdist worker
  (``PYTEST_XDIST_WORKER``), a Dask worker (``distributed.get_worker()`` answers) and a
  joblib/loky or multiprocessing worker process (``multiprocessing.parent_process()``);
  the pool already uses the cores. A worker's own thread variables, when set, win.

``ufm.sweep`` sets one thread per worker itself. Everything here is read at each call (cheap:
the cgroup files are read once per process), so tests can change the environment.
"""

from __future__ import annotations

import functools
import math
import os
import sys

#: Thread variables read, in order of precedence (the first one set wins).
THREAD_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _env_threads(environ) -> int | None:
    for var in THREAD_VARS:
        value = environ.get(var, "").strip()
        if value:
            try:
                n = int(value.split(",")[0])
            except ValueError:
                continue
            if n >= 1:
                return n
    return None


@functools.lru_cache(maxsize=None)
def cgroup_cpu_limit(root: str = "/sys/fs/cgroup") -> float | None:
    """The CPU quota of this process's cgroup in cores (e.g. 1.5), or None when there is none.

    Parameters
    ----------
    root : str
        Where the cgroup file system is mounted.

    Returns
    -------
    float or None
        ``quota / period`` of cgroup v2 ``cpu.max`` or cgroup v1 ``cpu.cfs_quota_us`` /
        ``cpu.cfs_period_us``; None when unlimited or unreadable.
    """
    try:
        with open(os.path.join(root, "cpu.max")) as fh:
            quota, period = fh.read().split()[:2]
        if quota != "max" and float(period) > 0:
            return float(quota) / float(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        with open(os.path.join(root, "cpu", "cpu.cfs_quota_us")) as fh:
            quota = float(fh.read())
        with open(os.path.join(root, "cpu", "cpu.cfs_period_us")) as fh:
            period = float(fh.read())
        if quota > 0 and period > 0:
            return quota / period
    except (OSError, ValueError):
        pass
    return None


def usable_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by the cgroup CPU quota (rounded up).

    Returns
    -------
    int
        At least 1.
    """
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = cgroup_cpu_limit()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def pool_worker() -> str | None:
    """The kind of worker pool this process is a worker of (it already runs one task per core), or None.

    Returns
    -------
    str or None
        ``"pytest-xdist"``, ``"dask"`` or ``"process pool"`` (a joblib/loky or multiprocessing
        child), or None in a user's own process.
    """
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return "pytest-xdist"
    dist = sys.modules.get("distributed")
    if dist is not None:
        try:
            dist.get_worker()
            return "dask"
        except (ValueError, AttributeError):
            pass
    import multiprocessing

    if multiprocessing.parent_process() is not None:
        return "process pool"
    return None


def seed_threads(environ=None) -> int:
    """Threads ``ufm.simulate`` runs seeds on (see the module docstring for the rules).

    Parameters
    ----------
    environ : mapping, optional
        The environment to read (default ``os.environ``).

    Returns
    -------
    int
        At least 1.
    """
    import numba

    environ = os.environ if environ is None else environ
    n = numba.get_num_threads()
    explicit = _env_threads(environ)
    if explicit is not None:
        n = min(n, explicit)
    elif pool_worker() is not None:
        return 1
    return max(1, min(n, usable_cpus()))


_CONTROLLER = None


def _controller():
    """One threadpoolctl controller per process (finding the BLAS libraries takes ~10 ms)."""
    global _CONTROLLER
    if _CONTROLLER is None:
        import scipy.linalg.cython_blas  # noqa: F401  (the BLAS numba's np.dot calls: load it first)
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER


def one_blas_thread():
    """A context manager that runs BLAS on one thread inside and restores the caller's setting after.

    Returns
    -------
    context manager
        threadpoolctl's limiter (``with one_blas_thread(): ...``).
    """
    return _controller().limit(limits=1, user_api="blas")


_WORKER_CAPPED = False


def one_thread_per_worker(mode: str) -> None:
    """One thread for BLAS and numba in a sweep worker, so parallel workers do not oversubscribe the cores.

    Parameters
    ----------
    mode : {"process", "thread"}
        ``"process"``: in a worker process (once per process), the thread variables default to 1 for
        libraries loaded later and the loaded BLAS libraries run on one thread; either mode: numba's
        kernels on this thread run on one thread.
    """
    global _WORKER_CAPPED
    if mode == "process" and not _WORKER_CAPPED:     # once per worker process (threadpoolctl takes ~1 ms)
        _WORKER_CAPPED = True
        import multiprocessing

        if multiprocessing.parent_process() is not None:   # a worker process, not the user's own
            for var in THREAD_VARS:
                os.environ.setdefault(var, "1")     # read when numba or a BLAS loads later in this process
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    numba = sys.modules.get("numba")
    if numba is not None:
        try:
            numba.set_num_threads(1)     # per thread: each worker thread runs its kernels on one thread
        except (ValueError, RuntimeError):  # pragma: no cover
            pass
