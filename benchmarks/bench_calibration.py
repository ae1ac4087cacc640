"""Calibration of ``ufm.fit``'s parameters: do its intervals contain the truth at their stated rate?

What is measured: ``--runs`` simulated M2 runs (``ufm.simulate`` of
``InputCoupledUFM.from_setting(factorial((3, 2, 2)), ...)``, CE) with random
true parameters, half GD (``lr = 0.5``, 20000 steps) and half gradient flow
(the same horizon), each from an ordinary Gaussian start of random width
16-64 (``init_scale = s / sqrt(d)``), recording only ``gram_H``:

* ``sigma``: log-uniform in [1.5, 8]; the strengths: ``exp(U(-0.3, 0.3))`` each;
* ``lam = lam_W = lam_A``: log-uniform in [1e-4, 1e-2] (unknown to the fit);
* the start scale ``s``: log-uniform in [1e-3, 10^-1.5].

Each run is fitted as a user would, ``ufm.fit(traj, setting=..., models=("input_coupled",))``
with the defaults (the run's own clock, ``lam`` fitted, intervals at 90% from the
parametric bootstrap at the run's own width). With ``--hide-width`` the fit is given
the Grams as arrays with the flow times (or GD steps) instead, so it does not know the
width and matches it to the misfit (what a network's run gets). Reported per parameter:
the coverage of the nominal 90% intervals, the share flagged identifiable, and the median
relative error of the point estimate (over the identifiable runs), for GD, flow and
both.

The baseline, in the same run on the same Grams: the fit of an earlier ufm (default
``29256ad``, the fit before this one), checked out with ``git worktree`` and run in its
own process on one core, with its defaults. It gives point values and a "near-best
range" (the values over simulated points within 5% of the best alignment cost), which it
says is not a confidence interval; its coverage is reported as what a user reading
that range as one would get.

Usage::

    .venv/bin/python benchmarks/bench_calibration.py                  # 48 runs, about 15 minutes
    .venv/bin/python benchmarks/bench_calibration.py --runs 12 --no-baseline
    .venv/bin/python benchmarks/bench_calibration.py --out benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _machine import cpu_model, load

ROOT = Path(__file__).resolve().parents[1]
ONE_CORE = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
LEVELS = (3, 2, 2)
PARAMS = ("sigma", "strengths", "lam", "init_scale")

BASELINE = r"""
import json, sys, numpy as np
sys.path.insert(0, sys.argv[1])
from ufm.bridge.fitting import fit
from ufm.settings import factorial
s = factorial(tuple(json.loads(sys.argv[3])))
out = []
with np.load(sys.argv[2]) as data:
    n = int(data["n"])
    for i in range(n):
        r = fit(data[f"grams{i}"], setting=s, steps=data[f"steps{i}"], models=("input_coupled",), progress=False)
        p = r.params
        out.append({k: p.get(k) for k in ("sigma", "strengths", "lam", "init_scale")} | {"near": p.get("near_best", {})})
print(json.dumps(out))
"""


def truths(n: int, seed: int):
    """The random true parameters of ``n`` runs (module docstring), alternating GD and flow."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        out.append({"mode": ("gd", "flow")[i % 2], "sigma": math.exp(rng.uniform(math.log(1.5), math.log(8))),
                    "lam": 10 ** rng.uniform(-4, -2), "init_scale": 10 ** rng.uniform(-3, -1.5),
                    "strengths": np.exp(rng.uniform(-0.3, 0.3, len(LEVELS))).tolist(),
                    "d": int(rng.integers(16, 65)), "seed": i})
    return out


def simulate(t):
    """The Trajectory of one run (module docstring)."""
    import ufm

    s = ufm.factorial(LEVELS)
    m = ufm.InputCoupledUFM.from_setting(s, sigma=t["sigma"], d=t["d"], loss="ce", lam_W=t["lam"], lam_A=t["lam"],
                                         strengths=t["strengths"])
    return ufm.simulate(m, steps=20000, lr=0.5, seed=t["seed"], record=("gram_H",), mode=t["mode"],
                        init_scale=t["init_scale"] / math.sqrt(t["d"]), progress=False)


def fit_new(tr, t, hide_width: bool, n_boot: int):
    import ufm

    s = ufm.factorial(LEVELS)
    t0 = time.perf_counter()
    if hide_width:              # the same run, its start not known to be Gaussian: the width is matched
        tr = tr.replace(meta={**tr.meta, "start": "unknown"})
    r = ufm.fit(tr, setting=s, models=("input_coupled",), bootstrap=n_boot, progress=False)
    return {"values": dict(r.estimates["input_coupled"]["params"]), "intervals": dict(r.intervals),
            "identifiable": dict(r.identifiable), "seconds": time.perf_counter() - t0,
            "method": r.estimates["input_coupled"]["interval_method"]}


def covered(truth, iv):
    return None if iv is None else bool(iv[0] <= truth <= iv[1])


def score(rows):
    """Coverage, identifiable share and median relative error per parameter over ``rows``."""
    out = {}
    for p in PARAMS:
        cov, ident, err = [], [], []
        for t, f in rows:
            vals = t[p] if p == "strengths" else [t[p]]
            est = f["values"][p] if p == "strengths" else [f["values"][p]]
            ivs = f["intervals"].get(p) if p == "strengths" else [f["intervals"].get(p)]
            oks = f["identifiable"].get(p) if p == "strengths" else [f["identifiable"].get(p)]
            for v, e, iv, ok in zip(vals, est, ivs or [None] * len(vals), oks or [None] * len(vals)):
                c = covered(v, iv)
                if c is not None:
                    cov.append(c)
                ident.append(bool(ok))
                if ok:
                    err.append(abs(e / v - 1))
        out[p] = {"coverage": float(np.mean(cov)) if cov else float("nan"), "n": len(cov),
                  "identifiable": float(np.mean(ident)), "median_error": float(np.median(err)) if err else float("nan")}
    return out


def score_baseline(rows):
    out = {}
    for p in ("sigma", "lam"):
        cov, err = [], []
        for t, b in rows:
            near = b["near"].get(p)
            if near is not None:
                cov.append(near[0] <= t[p] <= near[1])
            if b.get(p) is not None:
                err.append(abs(b[p] / t[p] - 1))
        out[p] = {"coverage": float(np.mean(cov)) if cov else float("nan"),
                  "median_error": float(np.median(err)) if err else float("nan")}
    return out


def run_baseline(commit, grams, steps, tmp):
    base = tmp / "baseline"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), commit], check=True,
                   capture_output=True)
    try:
        data = tmp / "runs.npz"
        np.savez(data, n=len(grams), **{f"grams{i}": g for i, g in enumerate(grams)},
                 **{f"steps{i}": s for i, s in enumerate(steps)})
        env = {**os.environ, **ONE_CORE, "PYTHONPATH": str(base)}
        out = subprocess.run([sys.executable, "-c", BASELINE, str(base), str(data), json.dumps(LEVELS)], env=env,
                             capture_output=True, text=True, timeout=7200)
        if out.returncode != 0:
            raise RuntimeError(f"the baseline fit failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], capture_output=True)


def table(rows, base_rows, args) -> str:
    lines = [f"## Calibration of ufm.fit (`benchmarks/bench_calibration.py`), {time.strftime('%Y-%m-%d')}", "",
             f"CPU: {cpu_model()}; one core; load {load()}. {len(rows)} M2 runs on factorial{LEVELS} "
             f"(half GD, half flow; widths 16-64; only `gram_H`; lam unknown to the fit), "
             + ("the width hidden from the fit (matched to the misfit; the clock still known)" if args.hide_width else
                "fitted from the Trajectory (the run's own clock and width)")
             + f"; {args.bootstrap} bootstrap runs; nominal level 90%. Interval method (first run): "
             f"{rows[0][1]['method']}.", "",
             "| runs | parameter | coverage of the 90% intervals | identifiable | median relative error "
             "(identifiable) |", "|---|---|---|---|---|"]
    for label, sel in (("GD", [r for r in rows if r[0]["mode"] == "gd"]),
                       ("flow", [r for r in rows if r[0]["mode"] == "flow"]), ("all", rows)):
        for p, sc in score(sel).items():
            lines.append(f"| {label} ({len(sel)}) | {p} | {100 * sc['coverage']:.0f}% ({sc['n']}) | "
                         f"{100 * sc['identifiable']:.0f}% | {100 * sc['median_error']:.1f}% |")
    secs = [f["seconds"] for _, f in rows]
    lines.append(f"\nFit time per run (with the bootstrap): median {np.median(secs):.1f} s, max {max(secs):.1f} s.")
    if base_rows:
        b = score_baseline(base_rows)
        lines += ["", f"Baseline (ufm at `{args.baseline}`, same Grams, its defaults; its near-best range read as an "
                      f"interval): sigma covered {100 * b['sigma']['coverage']:.0f}%, median error "
                      f"{100 * b['sigma']['median_error']:.1f}%; lam covered {100 * b['lam']['coverage']:.0f}%, "
                      f"median error {100 * b['lam']['median_error']:.0f}%."]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="coverage of ufm.fit's intervals on simulated M2 runs")
    ap.add_argument("--runs", type=int, default=48)
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--bootstrap", type=int, default=30)
    ap.add_argument("--hide-width", action="store_true", help="fit the Grams as arrays (the width is not known)")
    ap.add_argument("--baseline", default="29256ad")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--out", help="append the table to this Markdown file")
    args = ap.parse_args(argv)
    for k, v in ONE_CORE.items():
        os.environ.setdefault(k, v)
    sys.path.insert(0, str(ROOT))
    rows, grams, steps = [], [], []
    for t in truths(args.runs, args.seed):
        tr = simulate(t)
        f = fit_new(tr, t, args.hide_width, args.bootstrap)
        rows.append((t, f))
        grams.append(np.asarray(tr.records["gram_H"][0]))
        steps.append(np.asarray(tr.times, dtype=float))
        iv = f["intervals"]["sigma"]
        print(f"{t['seed']:3d} {t['mode']:4s} d={t['d']:2d} sigma {t['sigma']:.3f} -> {f['values']['sigma']:.3f} "
              f"[{iv[0]:.3f}, {iv[1]:.3f}]  lam {t['lam']:.2g} -> {f['values']['lam']:.2g}  {f['seconds']:.1f} s",
              flush=True)
    base_rows = None
    if not args.no_baseline:
        with tempfile.TemporaryDirectory() as tmp:
            base = run_baseline(args.baseline, grams, steps, Path(tmp))
        base_rows = [(t, b) for (t, _), b in zip(rows, base)]
    text = table(rows, base_rows, args)
    print(text)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write("\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
