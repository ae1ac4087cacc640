"""Forecast a network's gap peak and collapse from the first 20% of its training: predicted against observed.

    python examples/bridge_forecast.py [--out docs/bridge] [--seeds 0 1 2] [--fraction 0.2] [--runs DIR] [--simulated]

For each reference setting (factorial((2,)*5) and hierarchy(2, depth=5) on the
MLP, ntp_contexts on the causal transformer: the defaults of ``ufm
train-network``) and seed, trains the network (:func:`ufm.bridge.train_network`,
default arguments; or reads ``DIR/<setting>_<seed>.npz``), fits
``ufm.fit(run, until=fraction * last step)`` with its defaults, and compares
``FitResult.forecast`` (the gap peak and the collapse, ETF distance <= 0.1) with
the steps the whole run shows (``FitResult.transitions["observed"]``, computed on
every record). Prints one table row per run and writes ``forecast_table.md`` to
``--out``; ``--simulated`` adds M2-H's own GD runs, where the model is right. Needs torch
(``pip install 'ufm[torch]'``).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

SETTINGS = ("factorial", "hierarchy", "ntp_contexts")


def forecast_row(name, seed, run, fraction):
    import ufm

    until = fraction * float(run.steps[-1])
    t0 = time.perf_counter()
    kw = {} if isinstance(run, ufm.bridge.Run) else {"setting": ufm.factorial((2, 2, 2))}
    f = ufm.fit(run, until=until, progress=False, **kw)
    seconds = time.perf_counter() - t0
    obs = f.transitions["observed"]
    row = {"setting": name, "seed": seed, "until": until, "model": f.best_model, "seconds": seconds}
    for k in ("peak", "collapse"):
        o, p = obs[k]["step"], f.forecast[k]
        row[k] = {"observed": o, "predicted": None if p is None else p[0],
                  "interval": None if p is None or p[1] is None else (p[1], p[2]),
                  "reason": f.forecast["reason"][k] if p is None else "",
                  "ratio": None if p is None or o is None else p[0] / o,
                  "inside": None if p is None or o is None or p[1] is None else bool(p[1] <= o <= p[2])}
    return row, f


def table(rows, fraction) -> str:
    def cell(e):
        if e["predicted"] is None:
            short = ("no model accepted" if "no model is accepted" in e["reason"] else
                     "not determined" if "not determined" in e["reason"] else e["reason"])
            obs = "none" if e["observed"] is None else f"{e['observed']:.4g}"
            return f"none ({short}) / {obs}", "", ""
        iv = "" if e["interval"] is None else f" [{e['interval'][0]:.4g}, {e['interval'][1]:.4g}]"
        obs = "none" if e["observed"] is None else f"{e['observed']:.4g}"
        ratio = "" if e["ratio"] is None else f"{e['ratio']:.2f}"
        inside = "" if e["inside"] is None else ("yes" if e["inside"] else "no")
        return f"{e['predicted']:.4g}{iv} / {obs}", ratio, inside

    lines = ["| setting | seed | fitted up to step | accepted model | gap peak: predicted [interval] / observed | "
             "ratio | inside | collapse: predicted [interval] / observed | ratio | inside | fit s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pk, cl = cell(r["peak"]), cell(r["collapse"])
        lines.append(f"| {r['setting']} | {r['seed']} | {r['until']:.0f} ({100 * fraction:.0f}%) | {r['model']} | "
                     f"{pk[0]} | {pk[1]} | {pk[2]} | {cl[0]} | {cl[1]} | {cl[2]} | {r['seconds']:.1f} |")
    return "\n".join(lines)


def main(argv=None):
    import ufm
    from ufm.bridge.networks import train_network
    from ufm.cli import network_setting

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="docs/bridge")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--fraction", type=float, default=0.2)
    ap.add_argument("--runs", help="folder of recorded runs <setting>_<seed>.npz (trained when missing)")
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    ap.add_argument("--simulated", action="store_true", help="also forecast simulated M2-H runs (the model's own "
                                                              "data: the method where the model is right)")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for name in args.settings:
        for seed in args.seeds:
            path = None if args.runs is None else os.path.join(args.runs, f"{name}_{seed}.npz")
            if path is not None and os.path.exists(path):
                run = ufm.bridge.load_run(path)
            else:
                run = train_network(network_setting(name), seed=seed, progress=False)
                if path is not None:
                    run.save(path)
            row, _ = forecast_row(name, seed, run, args.fraction)
            rows.append(row)
            print(table([row], args.fraction).splitlines()[-1], flush=True)
    text = table(rows, args.fraction)
    if args.simulated:
        sim = [forecast_row("M2-H GD run, factorial(2,2,2)", seed, simulated_run(seed), args.fraction)[0]
               for seed in args.seeds]
        text += "\n\n" + table(sim, args.fraction)
    print(text)
    with open(os.path.join(args.out, "forecast_table.md"), "w") as fh:
        fh.write(text + "\n")
    return rows


def simulated_run(seed):
    """An M2-H GD run (sigma 2, lam 1e-3, width 64, 5000 steps): its gap peaks near step 34 and it collapses
    near step 3200, after the first 20% of its steps."""
    import ufm

    s = ufm.factorial((2, 2, 2))
    m = ufm.InputCoupledUFM.from_setting(s, sigma=2.0, d=64, loss="ce", lam_W=1e-3, lam_H=1e-3)
    return ufm.simulate(m, steps=5000, lr=0.5, seed=seed, record=("gram_H",), init_scale=1e-2 / 8, progress=False)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
