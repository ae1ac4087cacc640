"""Benchmark: exact global solvers of the regularized CE UFM, cvxpy (Clarabel, SCS) against the proximal solver.

For K = 10 ... 2000 classes, balanced (n = 1 per class, K = N) and imbalanced
(half the classes with 10 examples, half with 1), each solver runs on the same
problem in this process; every run is checked against the best objective found
and its certified relative duality gap is reported. Interior-point and SCS runs
happen in a child process with a time limit, so a size they cannot handle is
reported as a timeout instead of stalling the benchmark.

Run:  python benchmarks/bench_solvers.py            (full table, K up to 2000)
      python benchmarks/bench_solvers.py --quick    (K up to 300)
      python benchmarks/bench_solvers.py --scale --before 738d59b   (prox at scale, before/after)
The table goes to stdout and, with --write, into benchmarks/RESULTS.md.

``--scale`` times ``solve(method="prox", tol=1e-6)`` at K = 1000 and 2000 (balanced and
imbalanced), on soft labels mixing a few topics (a low-rank optimum with a spectral gap: the
leading-triplet path) and on distinct counts near a rank change (singular values crowding at the
threshold: the full-SVD fallback), with the package as it is and with ``ufm`` from the git
revision ``--before`` (exported with ``git archive``), each run in its own child process, one
BLAS thread, interleaved per case. Each row reports both times, their ratio, the certified gaps
and the relative difference of the two objectives. Every table states the CPU and the load.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import time

import numpy as np

from _machine import cpu_model, load   # benchmarks/_machine.py: CPU and load next to every table

LAM = 1e-4   # mu = 1e-4: below the zero threshold 1/(K sqrt n) for every size here


def problem(K: int, pattern: str):
    import ufm

    if pattern == "topics":            # K-word vocabulary, 3K contexts mixing 8 topics
        rng = np.random.default_rng(0)
        labels = rng.dirichlet(0.1 * np.ones(K), size=8).T @ rng.dirichlet(np.ones(8), size=3 * K).T
        return ufm.UFMProblem(labels=labels, d=K, loss="ce", lam_W=2e-4, lam_H=2e-4)
    if pattern == "distinct":          # counts 1..K, weight decay near the optimum's rank change
        return ufm.UFMProblem(K=K, counts=list(range(1, K + 1)), d=K, loss="ce", lam_W=3.7e-4, lam_H=3.7e-4)
    counts = [1] * K if pattern == "balanced" else [10] * (K // 2) + [1] * (K - K // 2)
    return ufm.UFMProblem(K=K, counts=counts, d=K, loss="ce", lam_W=LAM, lam_H=LAM)


def _run(method, K, pattern, opts, queue, path=None):
    import sys

    if path is not None:               # an older revision's package, exported by --before
        sys.path.insert(0, path)
    from threadpoolctl import threadpool_limits

    import ufm

    threadpool_limits(1)
    p = problem(K, pattern)
    t0 = time.perf_counter()
    sol = ufm.solve(p, method=method, **opts)
    queue.put((time.perf_counter() - t0, sol.objective, sol.meta.get("rel_duality_gap"), sol.nit, sol.success,
               sol.meta.get("svd"), ufm.__file__))


def timed(method, K, pattern, opts, limit, path=None):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_run, args=(method, K, pattern, opts, q, path))
    proc.start()
    proc.join(limit)
    if proc.is_alive():
        proc.kill()
        proc.join()
        return None
    return q.get() if not q.empty() else None


def cpu_and_load() -> str:
    """The CPU model, core count and 1-minute load, for every table's caption."""
    return f"{cpu_model()}, {os.cpu_count()} cores, load average {load().split()[0]}"


def export_revision(rev: str) -> str:
    """``ufm`` as of git revision ``rev`` in a temporary directory (``git archive``); returns the directory."""
    import subprocess
    import tarfile
    import tempfile

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tempfile.mkdtemp(prefix=f"ufm-{rev}-")
    tar = subprocess.run(["git", "-C", root, "archive", rev, "ufm"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=__import__("io").BytesIO(tar)) as tf:
        tf.extractall(out, filter="data")
    return out


SCALE_CASES = [("imbalanced", 1000), ("balanced", 1000), ("balanced", 2000), ("imbalanced", 2000),
               ("topics", 1000), ("distinct", 300)]


def scale(args):
    """prox at scale: this tree against revision ``args.before``, same problems, same run."""
    old = export_revision(args.before)
    load0 = cpu_and_load()
    rows = []
    for pattern, K in SCALE_CASES:
        if args.quick and K > 1000:
            continue
        after = timed("prox", K, pattern, {"tol": 1e-6}, args.prox_limit)
        before = timed("prox", K, pattern, {"tol": 1e-6}, args.prox_limit, path=old)
        print(pattern, K, "after", after, "before", before, flush=True)
        rows.append((pattern, K, before, after))
    lines = ["| problem | K | N | before | after | before / after | certified gap (before, after) | "
             "objective difference | thresholdings (after) |", "|---|---|---|---|---|---|---|---|---|"]
    for pattern, K, b, a in rows:
        N = problem(K, pattern).N
        tb = f"{b[0]:.3g} s" if b else f"> {args.prox_limit:g} s"
        ta = f"{a[0]:.3g} s" if a else f"> {args.prox_limit:g} s"
        ratio = f"{b[0] / a[0]:.1f}x" if (a and b) else "-"
        gaps = f"{b[2]:.1e}, {a[2]:.1e}" if (a and b) else "-"
        dev = f"{abs(a[1] - b[1]) / abs(b[1]):.0e}" if (a and b) else "-"
        st = a[5] if a and a[5] else {}
        paths = ", ".join(f"{k} {v}" for k, v in st.items() if k in ("classes", "partial", "full") and v)
        lines.append(f"| {pattern} | {K} | {N} | {tb} | {ta} | {ratio} | {gaps} | {dev} | "
                     f"{st.get('mode', '-')}: {paths} |")
    table = "\n".join(lines)
    print(table)
    if args.write:
        with open(os.path.join(os.path.dirname(__file__), "RESULTS.md"), "a") as fh:
            fh.write("\n## prox at scale: before and after (`bench_solvers.py --scale`)\n\n")
            fh.write(f"Command: `python benchmarks/bench_solvers.py --scale --before {args.before} --write`; "
                     f"CPU: {load0} at the start, {cpu_and_load().rsplit('load average ', 1)[1]} at the end; "
                     f"Python {platform.python_version()}, one BLAS thread. 'before' is `ufm` at {args.before}, "
                     f"'after' the working tree; every run in its own process, tol = 1e-6.\n\n")
            fh.write(table + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="sizes up to K=300")
    ap.add_argument("--limit", type=float, default=300.0, help="seconds allowed per cvxpy run (default 300)")
    ap.add_argument("--prox-limit", type=float, default=900.0, help="seconds allowed per prox run (default 900)")
    ap.add_argument("--write", action="store_true", help="append the table to benchmarks/RESULTS.md")
    ap.add_argument("--scale", action="store_true", help="prox at scale, this tree against --before")
    ap.add_argument("--before", default="738d59b", help="git revision of the 'before' column of --scale")
    args = ap.parse_args()
    if args.scale:
        scale(args)
        return
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
                     f"CPU: {cpu_and_load()}; Python {platform.python_version()}; "
                     f"cvxpy runs limited to {args.limit:g} s each, prox runs to {args.prox_limit:g} s; BLAS "
                     f"on {os.environ.get('OPENBLAS_NUM_THREADS', 'default')} thread(s). 'gap' is the certified relative duality "
                     f"gap, 'dev' the relative deviation from the best objective of the row.\n\n")
            fh.write(table + "\n")


if __name__ == "__main__":
    main()
