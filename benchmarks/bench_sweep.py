"""Throughput of ``ufm.sweep`` on each backend, relative to the sequential backend in the same run.

The workload is a 200-point phase diagram of ``ufm.simulate``: the input-coupled UFM (M2,
THEORY §8.2) of a 2x2x2 factorial setting, 10 capacities sigma x 20 weight decays lam_W, one seed
per point, 20 000 GD steps recorded at 50 log-spaced steps (loss, ETF distance, semantic gap).
One run takes tens of milliseconds, the size of a real sweep's runs, so the comparison includes
what the backends add per run (pickling, result transfer, scheduling) and not only the cores.

Every process runs numba and BLAS on one thread: the sequential baseline is one core, and each
backend worker is one core (``ufm.sweep`` caps the workers itself; this script caps its own
process for the baseline). Reported per backend:

* ``cold``: the first sweep on fresh workers, so it includes starting them and their first
  ``import ufm`` + numba cache load (for Dask the cluster is started before, timed apart);
* warm: ``--repeats`` rounds of the same sweep on every backend, interleaved (sequential, loky,
  dask, threads, sequential, ...), so that a burst of load from other processes hits them all;
  the ratio ``t_sequential / t_backend`` (throughput relative to sequential) is taken within each
  round and the median reported with its spread;
* the CPU that other processes used during each timing (machine busy time minus this process
  tree's, from psutil), to tell a disturbed run from a slow backend;
* whether the records are identical to the sequential ones (``records_hash``).

Usage::

    .venv/bin/python benchmarks/bench_sweep.py                       # about 2-3 minutes on 2 cores
    .venv/bin/python benchmarks/bench_sweep.py --append benchmarks/RESULTS.md
    .venv/bin/python benchmarks/bench_sweep.py --points 40 --steps 2000   # a quick look

Targets: loky >= 1.8x, Dask LocalCluster >= 1.6x on 2 cores, 200 points.
"""

from __future__ import annotations

import os

for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"          # before numpy / numba load: the baseline runs on one core

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from importlib import metadata  # noqa: E402

import numpy as np  # noqa: E402

from _machine import load as _load  # noqa: E402   benchmarks/_machine.py: the load next to every table

TARGETS = {"loky": 1.8, "dask": 1.6}
QUIET = 0.2     # cores used by other processes during a timing, above which the timing is set aside


def _version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def workload(points: int, steps: int):
    n_sigma = 10
    n_lam = max(1, points // n_sigma)
    grid = {"sigma": [float(f"{v:.4g}") for v in np.logspace(-1, 0.5, n_sigma)],
            "lam_W": [float(f"{v:.4g}") for v in np.logspace(-4, -1, n_lam)]}
    fixed = {"levels": (2, 2, 2), "lam_A": 1e-3, "steps": steps, "lr": 0.5, "n_records": 50,
             "record": ("objective", "etf_distance", "semantic_gap")}
    return grid, fixed


def _cpu():
    """(CPU seconds of this process and its descendants, busy CPU seconds of the whole machine)."""
    import psutil

    me = psutil.Process()
    own = 0.0
    for proc in [me, *me.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            own += t.user + t.system
        except psutil.Error:
            pass
    m = psutil.cpu_times()
    busy = m.user + m.system + getattr(m, "nice", 0.0) + getattr(m, "irq", 0.0) + getattr(m, "softirq", 0.0)
    return own, busy


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", type=int, default=200, help="grid points (10 sigmas x points/10 weight decays)")
    ap.add_argument("--steps", type=int, default=20_000, help="GD steps per run")
    ap.add_argument("--n-jobs", type=int, default=2, help="workers (loky, threads, Dask LocalCluster)")
    ap.add_argument("--repeats", type=int, default=3, help="rounds of warm timings (backends interleaved)")
    ap.add_argument("--backends", nargs="+", default=["loky", "dask", "threads"],
                    choices=["loky", "dask", "threads"], help="backends compared with sequential")
    ap.add_argument("--append", help="append the markdown section to this file (e.g. benchmarks/RESULTS.md)")
    ap.add_argument("--json", help="write the numbers to this JSON file")
    args = ap.parse_args(argv)

    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    import ufm
    from ufm._sweep import build_problem

    grid, fixed = workload(args.points, args.steps)
    n_points = len(grid["sigma"]) * len(grid["lam_W"])
    facts = {"cores": len(os.sched_getaffinity(0)), "load_average_start": _load(), "python": platform.python_version(),
             "numpy": _version("numpy"), "numba": _version("numba"), "joblib": _version("joblib"),
             "dask": _version("dask"), "distributed": _version("distributed")}
    kw = {"problem": "factorial", "fixed": fixed, "progress": False, "n_jobs": args.n_jobs}

    # the baseline: compile / load the kernels in this process first
    p = build_problem("factorial", levels=(2, 2, 2), sigma=1.0, lam_W=1e-3, lam_A=1e-3)
    ufm.simulate(p, 10, 0.5, record=fixed["record"])
    hashes, times, others = {}, {}, {}

    def timed(label, backend, **extra):
        own0, busy0 = _cpu()
        t0 = time.perf_counter()
        res = ufm.sweep(ufm.simulate, grid, backend=backend, **kw, **extra)
        dt = time.perf_counter() - t0
        own1, busy1 = _cpu()
        if not res.success:
            raise SystemExit(f"{label}: {res.summary()}")
        other = max(0.0, (busy1 - busy0) - (own1 - own0)) / dt     # cores used by other processes meanwhile
        hashes[label] = res.meta["records_hash"]
        times.setdefault(label, []).append(dt)
        others.setdefault(label, []).append(other)
        print(f"{label:>12}: {dt:7.2f} s  (other processes: {other:.2f} cores)", file=sys.stderr, flush=True)
        return dt

    client = cluster = None
    notes = {}
    try:
        if "loky" in args.backends:       # cold: fresh workers
            from joblib.externals.loky import get_reusable_executor

            get_reusable_executor().shutdown(wait=True)
            timed("loky cold", "loky")
        if "dask" in args.backends:
            import distributed

            t0 = time.perf_counter()
            cluster = distributed.LocalCluster(n_workers=args.n_jobs, threads_per_worker=1, processes=True,
                                               host="127.0.0.1", dashboard_address=None)
            client = distributed.Client(cluster)
            notes["dask cold"] = f"cluster start {time.perf_counter() - t0:.2f} s, not included"
            timed("dask cold", "dask", client=client)
        for _ in range(args.repeats):     # warm rounds, backends interleaved so a load burst hits all
            timed("sequential", "sequential")
            for backend in args.backends:
                timed(backend, backend, **({"client": client} if backend == "dask" else {}))
    finally:
        if client is not None:
            client.close()
            cluster.close()
    facts["load_average_end"] = _load()
    identical = len(set(hashes.values())) == 1

    # ratio per round (each backend against the sequential run of its own round), then the median
    seq = times["sequential"]
    quiet_seq = [t for t, o in zip(seq, others["sequential"]) if o <= QUIET] or seq
    cmd = "python benchmarks/bench_sweep.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    lines = [
        "## `ufm.sweep` throughput by backend (`bench_sweep.py`)",
        "",
        f"Command: `{cmd.strip()}`  ",
        (f"Workload: {n_points}-point `ufm.simulate` sweep (input-coupled UFM of a 2x2x2 factorial setting, "
         f"{len(grid['sigma'])} sigma x {len(grid['lam_W'])} lam_W, lam_A = 1e-3, 1 seed per point, "
         f"{args.steps} GD steps, 50 recorded steps of loss / ETF distance / semantic gap), "
         f"{args.n_jobs} workers; numba and BLAS on one thread in every process. "
         f"Sequential: {1e3 * float(np.median(quiet_seq)) / n_points:.1f} ms per run. Warm rows: median over "
         f"the quiet rounds of {args.repeats} (the backends interleaved in each round); each ratio divides by "
         "the sequential time of its own round."),
        "",
        "| backend | time (s) | runs/s | throughput vs sequential (min-max) | target | quiet rounds | note |",
        "|---|---|---|---|---|---|---|",
    ]
    out = {"facts": facts, "points": n_points, "steps": args.steps, "repeats": args.repeats, "times": times,
           "other_cores": others}
    order = ["sequential"] + [b for b in args.backends] + [c for c in ("loky cold", "dask cold") if c in times]
    for label in order:
        ts, os_ = times[label], others[label]
        if label.endswith("cold"):
            ratios = [float(np.median(quiet_seq)) / ts[0]]
            quiet = [os_[0] <= QUIET]
        else:
            ratios = [s / t for s, t in zip(seq, ts)]
            quiet = [max(a, b) <= QUIET for a, b in zip(others["sequential"], os_)]
        used = [r for r, q in zip(ratios, quiet) if q] or ratios      # rounds no other process disturbed
        ratio = float(np.median(used))
        out.setdefault("ratios", {})[label] = {"all": ratios, "quiet": [bool(q) for q in quiet]}
        target = TARGETS.get(label)
        tgt = "" if target is None else f">= {target}x ({'met' if ratio >= target else 'missed'})"
        name = {"dask": "dask LocalCluster", "dask cold": "dask LocalCluster, cold", "loky cold": "loky, cold"}.get(
            label, label)
        spread = f" ({min(used):.2f}-{max(used):.2f})" if len(used) > 1 else ""
        t_used = [t for t, q in zip(ts, quiet) if q] or ts
        rounds = "" if label.endswith("cold") else f"{sum(quiet)} of {len(quiet)}"
        note = notes.get(label, "") if any(quiet) else "disturbed: no quiet round"
        lines.append(f"| {name} | {float(np.median(t_used)):.2f} | {n_points / float(np.median(t_used)):.1f} | "
                     f"{ratio:.2f}x{spread} | {tgt} | {rounds} | {note} |")
    lines += [
        "",
        f"Records identical on every backend (same `records_hash`): {'yes' if identical else 'NO'}.  ",
        ("Cold: the first sweep on fresh workers (their start, `import ufm`, numba cache load), once. "
         f"*Quiet rounds*: rounds in which processes outside this benchmark used at most {QUIET} cores while "
         "the backend and its sequential baseline ran (machine busy time minus this process tree's, from "
         "psutil); only those enter the median, unless there are none."),
        "",
        "| fact | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in facts.items()]
    text = "\n".join(lines) + "\n"
    print(text)
    out["identical_records"] = identical
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    if args.append:
        with open(args.append, "a") as fh:
            fh.write("\n" + text)
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
