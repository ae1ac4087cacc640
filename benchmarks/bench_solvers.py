"""Benchmark: exact global solvers of the regularized CE UFM, cvxpy (Clarabel, SCS) against the proximal solver.

For K = 10 ... 2000 classes, balanced (n = 1 per class, K = N) and imbalanced
(half the classes with 10 examples, half with 1), each solver runs on the same
problem in this process; every run is checked against the best objective found
and its certified relative duality gap is reported. Interior-point and SCS runs
happen in a child process with a time limit, so a size they cannot handle is
reported as a timeout instead of stalling the benchmark.

Run:  python benchmarks/bench_solvers.py            (full table, K up to 2000)
      python benchmarks/bench_solvers.py --quick    (K up to 300)
The table goes to stdout and, with --write, into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import time

import numpy as np

LAM = 1e-4   # mu = 1e-4: below the zero threshold 1/(K sqrt n) for every size here


def problem(K: int, pattern: str):
    import ufm

    counts = [1] * K if pattern == "balanced" else [10] * (K // 2) + [1] * (K - K // 2)
    return ufm.UFMProblem(K=K, counts=counts, d=K, loss="ce", lam_W=LAM, lam_H=LAM)


def _run(method, K, pattern, opts, queue):
    import ufm

    p = problem(K, pattern)
    t0 = time.perf_counter()
    sol = ufm.solve(p, method=method, **opts)
    queue.put((time.perf_counter() - t0, sol.loss, sol.meta.get("rel_duality_gap"), sol.nit, sol.success))


def timed(method, K, pattern, opts, limit):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_run, args=(method, K, pattern, opts, q))
    proc.start()
    proc.join(limit)
    if proc.is_alive():
        proc.kill()
        proc.join()
        return None
    return q.get() if not q.empty() else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="sizes up to K=300")
    ap.add_argument("--limit", type=float, default=300.0, help="seconds allowed per cvxpy run (default 300)")
    ap.add_argument("--prox-limit", type=float, default=900.0, help="seconds allowed per prox run (default 900)")
    ap.add_argument("--write", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = ap.parse_args()
    sizes = [10, 30, 100, 300] if args.quick else [10, 30, 100, 300, 1000, 2000]
    solvers = [("convex", {"solver": "CLARABEL"}, "Clarabel (IPM)"),
               ("convex", {"solver": "SCS", "eps": 1e-7, "polish": None}, "SCS eps=1e-7"),
               ("prox", {"tol": 1e-6}, "prox tol=1e-6")]
    rows = []
    skip = {name: False for _, _, name in solvers}
    for pattern in ("balanced", "imbalanced"):
        for K in sizes:
            res = {}
            for method, opts, name in solvers:
                if skip[name] and method == "convex":
                    res[name] = "skipped"
                    continue
                limit = args.prox_limit if method == "prox" else args.limit
                r = timed(method, K, pattern, opts, limit)
                if r is None:
                    res[name] = f"> {limit:g} s"
                    skip[name] = True           # larger sizes would only be slower
                else:
                    res[name] = r
                print(pattern, K, name, res[name], flush=True)
            done = [v[1] for v in res.values() if isinstance(v, tuple)]
            best = min(done) if done else float("nan")
            rows.append((pattern, K, res, best))
        skip = {k: False for k in skip}
    lines = ["| classes | K | N | " + " | ".join(n for *_, n in solvers) + " | fastest |",
             "|---|---|---|" + "---|" * (len(solvers) + 1)]
    for pattern, K, res, best in rows:
        N = K if pattern == "balanced" else 10 * (K // 2) + (K - K // 2)
        cells, times = [], {}
        for *_, name in solvers:
            v = res[name]
            if isinstance(v, tuple):
                t, f, gap, nit, ok = v
                times[name] = t
                err = abs(f - best) / abs(best) if best == best else float("nan")
                cells.append(f"{t:.3g} s (gap {gap:.1e}, dev {err:.0e}{'' if ok else ', FAILED'})")
            else:
                cells.append(v)
        fastest = min(times, key=times.get) if times else "-"
        lines.append(f"| {pattern} | {K} | {N} | " + " | ".join(cells) + f" | {fastest} |")
    table = "\n".join(lines)
    print(table)
    if args.write:
        with open(os.path.join(os.path.dirname(__file__), "RESULTS.md"), "a") as fh:
            fh.write("\n## Exact solvers: cvxpy against prox (regularized CE, lam_W = lam_H = 1e-4)\n\n")
            fh.write(f"Command: `python benchmarks/bench_solvers.py{' --quick' if args.quick else ''} --write`; "
                     f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
                     f"cvxpy runs limited to {args.limit:g} s each, prox runs to {args.prox_limit:g} s; BLAS "
                     f"on {os.environ.get('OPENBLAS_NUM_THREADS', 'default')} thread(s). 'gap' is the certified relative duality "
                     f"gap, 'dev' the relative deviation from the best objective of the row.\n\n")
            fh.write(table + "\n")


if __name__ == "__main__":
    main()
