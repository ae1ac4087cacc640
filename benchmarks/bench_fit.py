"""Time of ``ufm.fit`` against the number of classes K, next to the fit of an earlier ufm, in the same run.

What is timed: the default fit (today: ``models = static, input_coupled,
feature_penalty, anchored``, ``lam="fit"``, start scale and clock fitted,
``match="patterns"``, 30 bootstrap runs for the quoted model's intervals) of one
observed run per K, on one core (``NUMBA_NUM_THREADS = OMP_NUM_THREADS =
OPENBLAS_NUM_THREADS = 1`` in every process). The baseline is the same call on the
ufm of an earlier commit (default ``29256ad``, the fit before the intervals: Nelder-Mead
on a free time map, no intervals), checked out
with ``git worktree`` into a temporary folder and run in its own process on the
same file; it is stopped after ``--baseline-timeout`` seconds. Each fit runs in
a fresh process after a warm-up fit of a small run, so numba's compile time is
not counted (the cache is warm in both).

The observed runs imitate a finite network: the Gram trajectory of M2 (sigma 3,
weight decay 1e-3, isotropic start) on a factorial setting, plus a random
item-specific part of the first Gram (``rho * R R^T``, ``rho`` decaying as
``1 / (1 + step / 100)``), 40 log-spaced records. The K = 256 row uses a binary
factorial (256 patterns: the worst case of the pattern reduction); the 1024 row
a 4^5 factorial (32 patterns), as the documented route to 1000+ classes.

Reported per K: wall seconds, the number of M2 simulations, the longest silence
between progress lines (``progress=True``), the baseline's seconds (or ``>``
the timeout) and the ratio baseline / new. With ``--out`` the table is appended to
``benchmarks/RESULTS.md`` with the CPU it ran on.

Usage::

    .venv/bin/python benchmarks/bench_fit.py                       # K = 32 and 81 against the baseline
    .venv/bin/python benchmarks/bench_fit.py --sizes 32 81 --out benchmarks/RESULTS.md
    .venv/bin/python benchmarks/bench_fit.py --baseline-max-k 64 --baseline-timeout 900
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import cpu_model   # benchmarks/_machine.py: the CPU next to every table

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ONE_CORE = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
SETTINGS = {8: (2, 2, 2), 16: (2, 2, 2, 2), 32: (2,) * 5, 64: (2,) * 6, 81: (3, 3, 3, 3), 128: (2,) * 7,
            256: (2,) * 8, 1024: (4,) * 5}

CHILD = r"""
import json, sys, time, numpy as np
sys.path.insert(0, sys.argv[1])
from ufm.bridge.fitting import fit
from ufm.settings import factorial
levels = tuple(json.loads(sys.argv[3]))
data = np.load(sys.argv[2])
s = factorial(levels)
warm = np.load(sys.argv[4])
fit(warm["grams"], setting=factorial((2, 2, 2)), steps=warm["steps"])            # compile and import outside the timing
lines = []
class Tee:
    def write(self, text):
        if text.strip():
            lines.append(time.perf_counter())
        return len(text)
    def flush(self):
        pass
kw = {"progress": True} if sys.argv[5] == "new" else {}
if kw:
    sys.stderr = Tee()
t0 = time.perf_counter()
r = fit(data["grams"], setting=s, steps=data["steps"], **kw)
t1 = time.perf_counter()
sys.stderr = sys.__stderr__
gaps = np.diff([t0] + lines + [t1]) if lines else np.array([t1 - t0])
sims = r.params.get("simulations", r.params.get("m2_simulations"))
print(json.dumps({"seconds": t1 - t0, "simulations": sims, "intervals": bool(getattr(r, "intervals", None)),
                  "silence": float(gaps.max()), "best": r.best_model}))
"""




def make_run(K: int, path: Path, seed: int = 0) -> None:
    """The imitation of a network's Gram trajectory described in the module docstring."""
    sys.path.insert(0, str(ROOT))
    from ufm.bridge.m2 import M2Model, Points
    from ufm.bridge.patterns import PatternAlgebra
    from ufm.settings import factorial

    s = factorial(SETTINGS[K])
    a = PatternAlgebra.from_attributes(s.attributes)
    m = M2Model(s.N, setting=s, algebra=a, lam=1e-3, scale=1e-2)
    x = m.pack(sigma=3.0, strengths=np.ones(len(s.blocks)))
    t = m.grid(m.unpack(x), 1e6)
    G = m.centred_unit(m.run(x, Points(times=t)))
    idx = np.unique(np.round(np.geomspace(1, len(t) - 1, 40)).astype(int))
    steps = np.round(t[idx] * 10).astype(float)
    steps = np.maximum.accumulate(steps + np.arange(len(steps)))        # strictly increasing integers
    rng = np.random.default_rng(seed)
    R = rng.standard_normal((s.N, s.N)) / np.sqrt(s.N)
    grams = a.dense(G[idx]) + (0.5 / (1 + steps / 100.0))[:, None, None] * (R @ R.T)[None] + np.eye(s.N)[None]
    np.savez(path, grams=grams, steps=steps)


def run_child(src: Path, data: Path, K: int, warm: Path, kind: str, timeout: float) -> dict | None:
    env = {**os.environ, **ONE_CORE, "PYTHONPATH": str(src)}
    try:
        out = subprocess.run([sys.executable, "-c", CHILD, str(src), str(data), json.dumps(SETTINGS[K]), str(warm),
                              kind], env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    if out.returncode != 0:
        raise RuntimeError(f"the {kind} fit failed for K = {K}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="ufm.fit time against K, next to an earlier ufm's fit")
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 81])
    ap.add_argument("--baseline", default="29256ad", help="commit of the baseline ufm (default: the fit before "
                                                          "the intervals)")
    ap.add_argument("--baseline-max-k", type=int, default=81, help="largest K the baseline runs at")
    ap.add_argument("--baseline-timeout", type=float, default=600.0)
    ap.add_argument("--out", help="append the table to this Markdown file")
    args = ap.parse_args(argv)
    unknown = [k for k in args.sizes if k not in SETTINGS]
    if unknown:
        ap.error(f"--sizes must be among {sorted(SETTINGS)}, got {unknown}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = tmp / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.baseline],
                       check=True, capture_output=True)
        try:
            make_run(8, tmp / "warm.npz", seed=1)
            for K in args.sizes:
                data = tmp / f"run{K}.npz"
                make_run(K, data)
                new = run_child(ROOT, data, K, tmp / "warm.npz", "new", timeout=3600)
                old = None
                if K <= args.baseline_max_k:
                    old = run_child(base, data, K, tmp / "warm.npz", "old", timeout=args.baseline_timeout)
                row = {"K": K, "levels": SETTINGS[K], "new": new, "old": old}
                rows.append(row)
                print(_row(row, args), flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], capture_output=True)
    table = _table(rows, args)
    print(table)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write("\n" + table + "\n")
    return 0


def _row(r, args) -> str:
    n, o = r["new"], r["old"]
    if o is None:
        old = f"> {args.baseline_timeout:.0f}" if r["K"] <= args.baseline_max_k else "not run"
        ratio = f"> {args.baseline_timeout / n['seconds']:.0f}x" if r["K"] <= args.baseline_max_k else ""
    else:
        old, ratio = f"{o['seconds']:.1f}", f"{o['seconds'] / n['seconds']:.1f}x"
    return (f"| {r['K']} | {'x'.join(map(str, r['levels']))} | {n['seconds']:.1f} | "
            f"{'yes' if n.get('intervals') else 'no'} | {n['simulations']} | {n['silence']:.1f} | {old} | {ratio} | "
            f"{n['best']} |")


def _table(rows, args) -> str:
    head = (f"## ufm.fit against K (`benchmarks/bench_fit.py`), {time.strftime('%Y-%m-%d')}\n\n"
            f"CPU: {cpu_model()}; one core per fit (numba, OpenMP and BLAS at 1 thread); load average at the end "
            f"{os.getloadavg()[0]:.1f}. Baseline: ufm at `{args.baseline}` in the same run, on the same files.\n\n"
            "| K | factorial | fit (s) | intervals | M2 simulations (quoted model) | longest silence (s) | "
            "baseline fit (s) | time ratio | best model |\n|---|---|---|---|---|---|---|---|---|")
    return head + "\n" + "\n".join(_row(r, args) for r in rows)


if __name__ == "__main__":
    sys.exit(main())
