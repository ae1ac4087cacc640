"""The memory guard's estimate against the measured peak, for ``ufm.simulate`` and ``ufm.fit``.

Every entry point refuses, before allocating, a computation whose estimated peak exceeds
half the free memory (``ufm._memory``). The guard is only as good as the estimate; this
benchmark measures the real peak and reports ``estimate / measured`` (the target: 0.8 to
1.25).

How the peak is measured: one fresh process per case (nothing freed earlier is reused).
The child imports ufm, runs a tiny warm-up of the same call (numba loads its compiled
kernels, modules import), then reads its resident memory (``/proc/self/statm``) and
measures the call's peak as ``ru_maxrss`` after the call minus the resident memory before
it (``resource.getrusage``; this counts numba's and BLAS's allocations too, which
``tracemalloc`` does not see). With ``--tracemalloc`` the child reports the Python-side
peak as well. The cases are large enough (100 MiB to ~1.5 GiB) that the interpreter's own
noise is small against them.

The baseline, in the same run (``simulate`` cases): the ufm of an earlier commit (default
``1107caf``, before the memory guard estimated the whole peak), checked out with ``git worktree`` into a temporary folder and
measured the same way, against the estimate its guard used (records only, ``8 x seeds x T x
size`` bytes: records then existed as a list, a stacked array, a frozen copy and a byte copy
for the hash). The fit had no estimate before.

Usage::

    .venv/bin/python benchmarks/bench_memory.py                  # all cases, ~3 minutes
    .venv/bin/python benchmarks/bench_memory.py --quick          # the smaller cases
    .venv/bin/python benchmarks/bench_memory.py --out benchmarks/RESULTS.md
    .venv/bin/python benchmarks/bench_memory.py --baseline none       # skip the earlier commit
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ONE_CORE = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

CHILD = r"""
import json, resource, sys, tracemalloc
import numpy as np
sys.path.insert(0, sys.argv[1])
case = json.loads(sys.argv[2])
import ufm
from ufm import _simulate

def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096

def problem(c):
    if c["model"] == "ufm":
        return ufm.UFMProblem(K=c["K"], n=c["n"], d=c["d"], lam_W=1e-3, lam_H=1e-3)
    s = ufm.factorial(tuple(c["levels"]))
    return ufm.InputCoupledUFM.from_setting(s, sigma=2.0, d=c["d"], lam_W=1e-3, lam_A=1e-3)

if case["kind"] == "simulate":
    p = problem(case)
    if case.get("baseline"):        # an earlier ufm: its guard counted the records only
        _simulate.memory_estimate = lambda p, rec, seeds, T, mode: {"records": sum(
            8 * seeds * T * int(np.prod(r.shape(p))) for r in rec.values())}
    kw = dict(steps=case["steps"], lr=0.05, mode=case["mode"], seeds=case["seeds"], record=tuple(case["record"]),
              n_records=case["n_records"])
    small = dict(kw, steps=3, n_records=3, seeds=2)
    ufm.simulate(p, **small)                                   # warm-up: kernels, modules
    rec = _simulate._resolve_recorders(p, kw["record"], None)
    T = len(_simulate.record_grid(kw["steps"], kw["n_records"]))
    parts = _simulate.memory_estimate(p, rec, kw["seeds"], T, kw["mode"])
    run = lambda: ufm.simulate(p, **kw)
else:
    from ufm.bridge.fitting import fit, memory_estimate
    s = ufm.factorial(tuple(case["levels"]))
    K, T = s.N, case["T"]
    rng = np.random.default_rng(0)
    Kx = s.input_kernel(3.0)
    steps = np.unique(np.round(np.logspace(0, 4, T)).astype(int))
    T = len(steps)
    R = rng.standard_normal((K, K))
    grams = np.stack([(1 - a) * Kx + 5 * a * np.eye(K) + 1e-2 * (R @ R.T) for a in np.linspace(0, 1, T)])
    models = tuple(case["models"])
    warm = ufm.factorial((2, 2, 2))
    fit(np.stack([warm.input_kernel(x) for x in (1.0, 2.0, 3.0, 4.0)]), setting=warm, models=models, maxiter=2)
    parts = memory_estimate(K, T, len(case["levels"]), models)
    run = lambda: fit(grams, setting=s, steps=steps, models=models, maxiter=case.get("maxiter", 150))
if case.get("tracemalloc"):
    tracemalloc.start()
before = rss()
run()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
out = {"estimate": int(sum(parts.values())), "parts": {k: int(v) for k, v in parts.items()}, "measured": int(peak)}
if case.get("tracemalloc"):
    out["tracemalloc"] = tracemalloc.get_traced_memory()[1]
print(json.dumps(out))
"""

SIMULATE = [
    # records dominate (a long recorded run, smaller): H recorded, many records
    dict(kind="simulate", name="UFM K=100 n=10 d=200, record H, 400 records", model="ufm", K=100, n=10, d=200,
         steps=400, seeds=1, mode="gd", record=["H"], n_records=400),
    dict(kind="simulate", name="UFM K=100 n=20 d=400, record H, 400 records", model="ufm", K=100, n=20, d=400,
         steps=400, seeds=1, mode="gd", record=["H"], n_records=400),
    dict(kind="simulate", name="UFM K=100 n=20 d=400, record H, 1200 records", model="ufm", K=100, n=20, d=400,
         steps=1200, seeds=1, mode="gd", record=["H"], n_records=1200),
    # many seeds: the state and Grams
    dict(kind="simulate", name="UFM K=50 n=10 d=100, 64 seeds, record gram_H", model="ufm", K=50, n=10, d=100,
         steps=40, seeds=64, mode="gd", record=["objective", "gram_H"], n_records=40),
    # the flow: lockstep integration, records of A
    dict(kind="simulate", name="M2 factorial(2^6) d=256 flow, 8 seeds, record A", model="icm", levels=[2] * 6,
         d=256, steps=20, seeds=8, mode="flow", record=["objective", "A"], n_records=60),
]
FIT = [
    dict(kind="fit", name="fit factorial(3^4) K=81, T=393, static", levels=[3, 3, 3, 3], T=600, models=["static"]),
    dict(kind="fit", name="fit factorial(3^4) K=81, T=393, 3 models", levels=[3, 3, 3, 3], T=600,
         models=["static", "input_coupled", "anchored"], maxiter=20),
    dict(kind="fit", name="fit factorial(2^7) K=128, T=37, static", levels=[2] * 7, T=40, models=["static"]),
    dict(kind="fit", name="fit factorial(2^6) K=64, T=37, M2", levels=[2] * 6, T=40, models=["input_coupled"]),
]
QUICK = {SIMULATE[0]["name"], SIMULATE[3]["name"], FIT[0]["name"], FIT[3]["name"]}


def measure(case, tracemalloc=False, root=ROOT):
    env = {**os.environ, **ONE_CORE}
    case = {**case, "tracemalloc": tracemalloc, "baseline": root != ROOT}
    out = subprocess.run([sys.executable, "-c", CHILD, str(root), json.dumps(case)],
                         capture_output=True, text=True, env=env, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"{case['name']}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the smaller cases only")
    ap.add_argument("--tracemalloc", action="store_true", help="also report the Python-side peak (tracemalloc)")
    ap.add_argument("--out", help="append the table to this markdown file")
    ap.add_argument("--baseline", default="1107caf", help="earlier commit for the simulate baseline, or 'none'")
    args = ap.parse_args(argv)
    cases = [c for c in SIMULATE + FIT if not args.quick or c["name"] in QUICK]
    base = None
    if args.baseline != "none":
        tmp = tempfile.mkdtemp(prefix="ufm-bench-memory-")
        base = Path(tmp) / "ufm"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.baseline], check=True,
                       capture_output=True)
    rows = ["| case | estimate (MiB) | measured peak (MiB) | estimate / measured | "
            f"{args.baseline}: guard's estimate, peak (MiB), ratio |", "|---|---:|---:|---:|---|"]
    print(rows[0])
    print(rows[1])
    try:
        for c in cases:
            rows.append(_row(c, args, base))
    finally:
        if base is not None:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], capture_output=True)
    if args.out:
        cpu = platform.processor() or platform.machine()
        with open(args.out, "a") as fh:
            fh.write(f"\n## bench_memory.py: memory estimate vs measured peak ({cpu}, {platform.python_version()})\n\n"
                     "Peak = ru_maxrss after the call minus the resident memory before it, in a fresh process per "
                     "case after a warm-up call. Target ratio 0.8-1.25.\n\n" + "\n".join(rows) + "\n")


def _row(c, args, base):
    mib = 2**20
    r = measure(c, args.tracemalloc)
    if c["kind"] == "fit" or base is None:
        old = "none (no estimate)" if c["kind"] == "fit" else "not run"
    else:
        b = measure(c, False, base)
        old = f"{b['estimate'] / mib:.0f}, {b['measured'] / mib:.0f}, {b['estimate'] / b['measured']:.2f}"
    line = (f"| {c['name']} | {r['estimate'] / mib:.0f} | {r['measured'] / mib:.0f} | "
            f"{r['estimate'] / r['measured']:.2f} | {old} |")
    if args.tracemalloc:
        line += f" tracemalloc {r['tracemalloc'] / mib:.0f} MiB"
    print(line, flush=True)
    return line


if __name__ == "__main__":
    main()
