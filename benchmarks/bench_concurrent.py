"""Two ``ufm`` processes at once: wall time with the default threads against NUMBA_NUM_THREADS=1.

Run from the repository root, in the project's virtual environment::

    python benchmarks/bench_concurrent.py                          # this tree, about 2 minutes
    python benchmarks/bench_concurrent.py --before 738d59b 90960d3  # and git revisions, same run

Each process runs the same script: ``ufm.simulate`` GD on one seed (tiny, K = N = 10, d = 16,
20 000 steps), on 8 seeds (tiny, 20 000 steps; small, K = N = 64, d = 64, 1 000 steps) and a
gradient flow (tiny, no weight decay, to t = 1e6). Nothing else: the user's own BLAS calls
run with the user's BLAS setting (OpenBLAS: every core), which ``simulate`` no longer changes
for the rest of the process (before, it left BLAS at one thread), so they are not ``ufm``'s
threads; ``--blas`` appends three K = 400 SVDs to show what that costs two processes at once.
For every tree (this one, and each ``--before``
revision exported with ``git archive``, with its own warmed numba cache):

* ``two, default``: two processes started together, the environment as a user has it;
* ``two, NUMBA_NUM_THREADS=1``: the same two processes with ``NUMBA_NUM_THREADS=1``;
* ``one, default``: one process alone.

Reported: the wall time until both processes finished (medians over ``--rounds`` rounds, the
configurations interleaved within each round) and the ratio ``two, default`` / ``two,
NUMBA_NUM_THREADS=1`` (the speed target: within 1.2x). The CPU model and the load average
at the start and end are printed next to the table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import cpu_model, load   # benchmarks/_machine.py: CPU and load next to every table

ROOT = Path(__file__).resolve().parents[1]

WORKLOAD = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
import ufm
t0 = time.perf_counter()
tiny = ufm.UFMProblem(K=10, n=1, d=16, loss="ce", lam_W=5e-3, lam_H=5e-3)
small = ufm.UFMProblem(K=64, n=1, d=64, loss="ce", lam_W=5e-3, lam_H=5e-3)
ufm.simulate(tiny, steps=20000, lr=0.5)
ufm.simulate(tiny, steps=20000, lr=0.5, seeds=8)
ufm.simulate(small, steps=1000, lr=0.5, seeds=8)
ufm.simulate(ufm.UFMProblem(K=10, n=1, d=16, loss="ce"), steps=10**6, lr=1.0, mode="flow")
print(time.perf_counter() - t0)
"""






def run(tree, cache, copies, numba_one):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(var, None)
    if numba_one:
        env["NUMBA_NUM_THREADS"] = "1"
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", WORKLOAD, tree], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(copies)]
    outs = [p.communicate() for p in procs]
    wall = time.perf_counter() - t0
    for p, (_, err) in zip(procs, outs):
        if p.returncode != 0:
            raise RuntimeError(f"a workload process failed ({tree}):\n{err}")
    return wall, max(float(out.strip().splitlines()[-1]) for out, _ in outs)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", nargs="*", default=[], metavar="REV", help="git revisions to time as well")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--blas", action="store_true", help="append three 400 x 400 SVDs (the caller's BLAS) to the script")
    args = ap.parse_args(argv)
    global WORKLOAD
    if args.blas:
        WORKLOAD = WORKLOAD.replace("print(time.perf_counter() - t0)",
                                    "X = np.random.default_rng(0).standard_normal((400, 400))\n"
                                    "for _ in range(3):\n    np.linalg.svd(X)\nprint(time.perf_counter() - t0)")

    configs = {"two, default": (2, False), "two, NUMBA_NUM_THREADS=1": (2, True), "one, default": (1, False)}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"this tree": str(ROOT)}
        for rev in args.before:
            dest = Path(tmp) / rev
            dest.mkdir()
            subprocess.run(f"git -C {ROOT} archive {rev} ufm | tar -x -C {dest}", shell=True, check=True)
            trees[rev] = str(dest)
        caches = {name: str(Path(tmp) / f"cache-{i}") for i, name in enumerate(trees)}
        for name, tree in trees.items():          # compile every tree's kernels once, alone
            run(tree, caches[name], 1, False)
        print(f"CPU {cpu_model()}, {len(os.sched_getaffinity(0))} usable cores, load average {load()} at the start",
              flush=True)
        times = {(t, c): [] for t in trees for c in configs}
        for _ in range(args.rounds):
            for name, tree in trees.items():
                for conf, (copies, one) in configs.items():
                    times[(name, conf)].append(run(tree, caches[name], copies, one))
        print(f"load average {load()} at the end; {args.rounds} rounds, medians; wall = until every process "
              "finished (inner = the slowest process's own workload time, without start-up)\n")
        print("| tree | two, default | two, NUMBA_NUM_THREADS=1 | ratio | one, default |")
        print("|---|---|---|---|---|")
        for name in trees:
            med = {c: (statistics.median(w for w, _ in times[(name, c)]),
                       statistics.median(i for _, i in times[(name, c)])) for c in configs}
            ratio = statistics.median(a[0] / b[0] for a, b in zip(times[(name, "two, default")],
                                                               times[(name, "two, NUMBA_NUM_THREADS=1")]))
            cell = {c: f"{w:.2f} s (inner {i:.2f} s)" for c, (w, i) in med.items()}
            print(f"| {name} | {cell['two, default']} | {cell['two, NUMBA_NUM_THREADS=1']} | {ratio:.2f}x | "
                  f"{cell['one, default']} |")


if __name__ == "__main__":
    main()
