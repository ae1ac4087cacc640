"""What recording costs in ``ufm.simulate`` (GD): every step recorded against two records, same run.

Run from the repository root, in the project's virtual environment::

    python benchmarks/bench_recording.py                        # tiny, small, medium, k1024, large (~4 minutes)
    python benchmarks/bench_recording.py --sizes tiny small     # a quick look
    python benchmarks/bench_recording.py --huge                 # also K = N = 8192, d = 512, 3 records
    python benchmarks/bench_recording.py --before 90960d3       # the same cases on a git revision too

Sizes are those of ``bench_simulate.py``, plus ``k1024`` (K = N = 1024, d = 256) (CE, lam_W = lam_H = 5e-3, one sample per class so
K = N, float64, one thread for numba and BLAS). For every size, interleaved round-robin and
repeated, whole ``ufm.simulate`` calls of ``steps`` GD steps that record:

* ``2 records``: the loss at step 0 and at the last step (the least ``simulate`` records: the
  baseline, "not recording");
* ``loss, every step``: the loss at every step (``record_steps = 0..steps``);
* ``loss + gram_means``: the loss and the K x K Gram of the class means at every step;
* ``loss + 3 Grams``: the loss, ``gram_means``, ``gram_W`` and ``gram_H`` at every step;
* ``loss + 3 Grams, hash read``: the same, then ``meta["content_hash"]`` read (SHA-256 over
  every record, as ``save`` does). Since the hash is computed when first read, not when the
  result is made, this is what the hash adds for a user who saves or reads it; on a revision
  that hashed at construction the two cases do the same work;

the bare kernel (``ufm._kernels.ufm_gd``, ``steps`` steps in one call, no recording), and the
Gram products alone (``gram``: one K x K Gram ``_gram_rows`` per record, into fresh records as
the kernel writes them; the ``floor`` column adds one and three of them to ``2 records``: what
recording one or three Grams at every step cannot cost less than, when the step does not compute
them). Calls
draw their start from ``seed=0`` (a start passed as ``W0``/``H0`` is also checked for
stationarity, one gradient in NumPy, which would add to every case alike). The
report gives the median time per step and each case's ratio to ``2 records`` of the same round
(median over rounds); the speed target is a ratio below 1.15 for the loss and the Grams, at every size.

``--huge`` adds K = N = 8192, d = 512: 2 steps with 3 records (steps 0, 1, 2) of the loss,
against 2 records of the loss (steps 0 and 2), one round each (a step takes seconds).

``--grams`` times only one Gram product (the K x K Gram of the sizes above, tiny aside): the full
product ``np.dot(X, X.T)`` as the kernels took it before, ``_gram_rows`` (BLAS ``dsyrk``), and
SHA-256 of the result, interleaved in this process; then the same Gram written into fresh memory
against memory written before (what the first touch of record pages costs on this machine).

``--before REV`` exports the revision with ``git archive`` and runs the same cases on it in a
subprocess, after this tree's, so the two tables come from one run. The report states the CPU
model and the load average at the start and at the end of each table.
"""

from __future__ import annotations

import os

for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from _machine import cpu_model, load  # noqa: E402   # benchmarks/_machine.py: CPU and load next to every table

ROOT = Path(__file__).resolve().parents[1]

SIZES = {  # name: (K = N, d, steps per call, rounds)
    "tiny": (10, 16, 20000, 7),
    "small": (64, 64, 2000, 7),
    "medium": (512, 256, 40, 5),
    "k1024": (1024, 256, 16, 5),
    "large": (2048, 512, 6, 3),
}
CASES = {
    "2 records": ("objective",),
    "loss, every step": ("objective",),
    "loss + gram_means": ("objective", "gram_means"),
    "loss + 3 Grams": ("objective", "gram_means", "gram_W", "gram_H"),
    "loss + 3 Grams, hash read": ("objective", "gram_means", "gram_W", "gram_H"),
}
LAM, LR = 5e-3, 0.5


def measure(sizes, huge):
    """Time every case of every size in this process (the ``ufm`` on ``sys.path``)."""
    import numba
    import numpy as np
    from threadpoolctl import threadpool_limits

    import ufm
    from ufm import _kernels as k

    cases = list(CASES)

    @numba.njit
    def grams_into(X, rec):      # a compiled loop, as in the kernel (no Python call per Gram)
        for r in range(rec.shape[0]):
            k._gram_rows(X, rec[r])

    threadpool_limits(1)
    numba.set_num_threads(1)
    out = {"load_start": load(), "cpu": cpu_model(), "sizes": {}}
    for name in sizes:
        K, d, steps, rounds = SIZES[name]
        p = ufm.UFMProblem(K=K, n=1, d=d, loss="ce", lam_W=LAM, lam_H=LAM)
        rng = np.random.default_rng(0)
        W0, H0 = 1e-3 * rng.standard_normal((K, d)), 1e-3 * rng.standard_normal((d, K))
        every = np.arange(steps + 1)

        def call(case):
            rs = [0, steps] if case == "2 records" else every
            t = ufm.simulate(p, steps=steps, lr=LR, record=CASES[case], record_steps=rs, seed=0)
            if case.endswith("hash read"):
                assert len(t.meta["content_hash"]) == 64
            return t

        def kernel():
            Ws, Hs, bs = W0[None].copy(), H0[None].copy(), np.zeros((1, K))
            k.ufm_gd(Ws, Hs, bs, np.ascontiguousarray(p.Y), np.zeros((1, 1)), LAM, LAM, 0.0, 0.0, 0, False, LR, steps)

        X = np.ascontiguousarray(W0)

        def gram_products():      # the floor: one K x K Gram per record, into fresh records, nothing else
            grams_into(X, np.empty((steps + 1, K, K)))

        for case in cases:                      # compile / load, and check the recorded values once
            t = call(case)
            assert t.success, t.message
        kernel()
        gram_products()
        extra = {"kernel": kernel, "gram": gram_products}
        times = {c: [] for c in [*cases, *extra]}
        for _ in range(rounds):
            for case in times:
                t0 = time.perf_counter()
                call(case) if case not in extra else extra[case]()
                times[case].append((time.perf_counter() - t0) / steps)
        ratios = {c: statistics.median(a / b for a, b in zip(times[c], times["2 records"])) for c in times}
        out["sizes"][name] = {"K": K, "d": d, "steps": steps, "rounds": rounds,
                              "per_step": {c: statistics.median(v) for c, v in times.items()},
                              "spread": {c: [min(v), max(v)] for c, v in times.items()},
                              "ratio": ratios}
        print(f"  {name}: " + ", ".join(f"{c} {ratios[c]:.3f}x" for c in times), file=sys.stderr, flush=True)
    if huge:
        K, d = 8192, 512
        p = ufm.UFMProblem(K=K, n=1, d=d, loss="ce", lam_W=LAM, lam_H=LAM)
        rng = np.random.default_rng(0)
        res = {}
        for case, rs in (("2 records", [0, 2]), ("3 records", [0, 1, 2])):
            t0 = time.perf_counter()
            ufm.simulate(p, steps=2, lr=LR, record=("objective",), record_steps=rs, seed=0)
            res[case] = time.perf_counter() - t0
        out["huge"] = {"K": K, "d": d, "seconds": res, "ratio": res["3 records"] / res["2 records"]}
        print(f"  huge: {res}", file=sys.stderr, flush=True)
    out["load_end"] = load()
    return out


def grams():
    """One K x K Gram ``X X^T`` (X: K x d, the sizes above but tiny) three ways, interleaved in one process: the full
    product ``np.dot(X, X.T)`` copied into the record (how ``ufm._kernels._gram_rows`` did it before ``dsyrk``), the
    kernels' ``_gram_rows`` (BLAS ``dsyrk``, one triangle, mirrored), and SHA-256 of the K x K result (what the content
    hash of ``ufm.results`` spends on each recorded Gram). CPU seconds, median of 7 rounds.

    Then what fresh memory costs: 16 Grams by ``_gram_rows`` into a newly allocated (16, K, K) record array, as a
    simulation recording a Gram at every step writes them, against the same into an array written before; minimum and
    maximum over 7 rounds, and the page faults of the fresh case (``ru_minflt``)."""
    import hashlib
    import resource

    import numba
    import numpy as np

    from ufm import _kernels as k

    @numba.njit
    def full_product(X, out):
        t = np.dot(X, X.T)
        for i in range(X.shape[0]):
            for j in range(X.shape[0]):
                out[i, j] = t[i, j]

    @numba.njit
    def grams_into(X, rec):
        for r in range(rec.shape[0]):
            k._gram_rows(X, rec[r])

    lines = [f"Gram products: CPU {cpu_model()}, load average {load()} at the start; CPU time per Gram, median of "
             "7 interleaved rounds.", "",
             "| K, d | np.dot(X, X.T) | _gram_rows (dsyrk) | np.dot / dsyrk | SHA-256 of the K x K Gram |",
             "|---|---|---|---|---|"]
    memory = ["", "The same `_gram_rows`, 16 Grams into records: CPU time per Gram, min-max over 7 rounds.", "",
              "| K, d | into records written before | into fresh records | page faults per fresh array (MB) |",
              "|---|---|---|---|"]
    for name in ("small", "medium", "k1024", "large"):
        n, d = SIZES[name][:2]
        X = np.random.default_rng(0).standard_normal((n, d))
        out = np.empty((n, n))
        full_product(X, out)
        k._gram_rows(X, out)
        reps = max(3, int(2e8 / (n * n * d)))
        t = {"full": [], "syrk": [], "hash": []}
        for _ in range(7):
            for case, f in (("full", lambda: full_product(X, out)), ("syrk", lambda: k._gram_rows(X, out)),
                            ("hash", lambda: hashlib.sha256(memoryview(out.reshape(-1)).cast("B")).digest())):
                c0 = time.process_time()
                for _ in range(reps):
                    f()
                t[case].append((time.process_time() - c0) / reps)
        ratio = statistics.median(a / b for a, b in zip(t["full"], t["syrk"]))
        lines.append(f"| {n}, {d} | {fmt(statistics.median(t['full']))} | {fmt(statistics.median(t['syrk']))} | "
                     f"{ratio:.2f}x | {fmt(statistics.median(t['hash']))} |")
        used = np.empty((16, n, n))
        grams_into(X, used)
        m = {"used": [], "fresh": [], "faults": []}
        for _ in range(7):
            c0 = time.process_time()
            grams_into(X, used)
            m["used"].append((time.process_time() - c0) / 16)
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            c0 = time.process_time()
            grams_into(X, np.empty((16, n, n)))
            m["fresh"].append((time.process_time() - c0) / 16)
            m["faults"].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
        memory.append(f"| {n}, {d} | {fmt(min(m['used']))} - {fmt(max(m['used']))} | {fmt(min(m['fresh']))} - "
                      f"{fmt(max(m['fresh']))} | {statistics.median(m['faults']):.0f} ({16 * n * n * 8 / 2**20:.0f}) |")
    lines += memory
    lines.append(f"\nLoad average {load()} at the end.")
    return "\n".join(lines)


def table(res, title):
    lines = [f"{title}: CPU {res['cpu']}, load average {res['load_start']} at the start, {res['load_end']} at "
             "the end; one thread (numba and BLAS); median per step over interleaved rounds, ratio to "
             "`2 records` within each round (median).", "",
             "| size (K = N, d, steps) | 2 records | loss, every step | loss + gram_means | loss + 3 Grams | "
             "loss + 3 Grams, hash read | bare kernel | floor: 1 Gram / 3 Grams |", "|---|---|---|---|---|---|---|---|"]
    for name, r in res["sizes"].items():
        ps, ra = r["per_step"], r["ratio"]

        def cell(c):
            return f"{fmt(ps[c])} ({ra[c]:.2f}x)" if c in ps else "-"
        lines.append(f"| {name} ({r['K']}, {r['d']}, {r['steps']}) | {fmt(ps['2 records'])} | "
                     f"{cell('loss, every step')} | {cell('loss + gram_means')} | {cell('loss + 3 Grams')} | "
                     f"{cell('loss + 3 Grams, hash read')} | {cell('kernel')} | {floor(r)} |")
    if "huge" in res:
        h = res["huge"]
        lines += ["", f"K = N = {h['K']}, d = {h['d']}, 2 GD steps recording the loss: 2 records "
                  f"{h['seconds']['2 records']:.1f} s, 3 records {h['seconds']['3 records']:.1f} s "
                  f"({h['ratio']:.2f}x)."]
    return "\n".join(lines)


def floor(r):
    """What recording one and three Grams at every step cannot cost less than: ``2 records`` plus that many
    K x K Gram products alone (the ``gram`` case: ``_gram_rows``, one per record, into fresh records)."""
    if "gram" not in r["ratio"]:
        return "-"
    g = r["ratio"]["gram"]
    return f"{1 + g:.2f}x / {1 + 3 * g:.2f}x"


def fmt(s):
    return f"{s * 1e6:.2f} µs" if s < 1e-3 else (f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--huge", action="store_true", help="also K = N = 8192, d = 512 with 3 records")
    ap.add_argument("--before", metavar="REV", help="also run the cases on this git revision (after this tree's)")
    ap.add_argument("--json", type=Path, help="write the numbers here")
    ap.add_argument("--grams", action="store_true", help="only time one Gram product: np.dot, dsyrk, SHA-256")
    ap.add_argument("--tree", help=argparse.SUPPRESS)          # internal: measure the ufm found in this folder
    args = ap.parse_args(argv)

    if args.tree:
        sys.path.insert(0, args.tree)
        print(json.dumps(measure(args.sizes, args.huge)))
        return
    sys.path.insert(0, str(ROOT))
    if args.grams:
        print(grams())
        return
    print("this tree:", file=sys.stderr)
    results = {"after": measure(args.sizes, args.huge)}
    print(table(results["after"], "This tree"))
    if args.before:
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(f"git -C {ROOT} archive {args.before} ufm | tar -x -C {tmp}", shell=True, check=True)
            print(f"{args.before}:", file=sys.stderr)
            cmd = [sys.executable, __file__, "--tree", tmp, "--sizes", *args.sizes] + (["--huge"] if args.huge else [])
            env = dict(os.environ, NUMBA_CACHE_DIR=str(Path(tmp) / "numba-cache"))
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
            sys.stderr.write(out.stderr)
            results["before"] = json.loads(out.stdout.strip().splitlines()[-1])
        print()
        print(table(results["before"], f"Revision {args.before}"))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
