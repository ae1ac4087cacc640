"""``ufm.sweep``: parameter grids x seeds on joblib (one machine) or Dask distributed (a cluster).

The package is private (``ufm._sweep``) so that the function ``ufm.sweep`` is
never shadowed by a submodule of the same name. One concern per module:

=================  ==============================================================
``core``           :func:`sweep`: plan the runs, execute them, collect the result
``tasks``          tasks named by strings, problems built from keywords
``grid``           the grid's points
``keys``           run seeds and cache keys
``runner``         one run, as a worker executes it
``summary``        what a task returned, as one record; failed runs
``cache``          finished runs on disk
``backends``       sequential, joblib threads, joblib loky, Dask
=================  ==============================================================

The TOML runner of ``ufm sweep CONFIG.toml`` belongs to the command line
(:mod:`ufm._cli_sweep`).

``ufm`` does not schedule anything itself: ``backend="loky"`` and ``"threads"``
hand the runs to joblib, ``backend="dask"`` to a ``distributed.Client``. What
this module adds on top is what makes a sweep reproducible and restartable:

* **seeds**: run ``(point, i)`` gets the integer seed drawn from
  ``SeedSequence(seed, spawn_key=(hash of the point's parameters, i))``
  (:func:`~ufm._sweep.keys.point_seed`), so it depends on the parameters and ``i`` only, never
  on the order, the backend or the other points;
* **records**: what a task returns is summarized into one tidy dict
  (:func:`~ufm._sweep.summary.summarize`);
* **cache**: with ``cache_dir``, each finished run is written at once, atomically,
  to ``cache_dir/<key>.npz``, where ``key`` hashes the task, every argument,
  the seed and the ``ufm`` version (:func:`~ufm._sweep.keys.run_key`); a rerun loads those and
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

from .backends import BACKENDS
from .cache import read_cached, write_cached
from .core import sweep
from .grid import RESERVED, grid_points
from .keys import point_seed, run_key
from .summary import run_failure, summarize
from .tasks import PROBLEMS, TASKS, build_problem

__all__ = ["BACKENDS", "PROBLEMS", "RESERVED", "TASKS", "build_problem", "grid_points", "point_seed", "read_cached",
           "run_failure", "run_key", "summarize", "sweep", "write_cached"]
