"""Train the reference network of each setting, fit the UFM models to its Gram trajectory, report.

    python examples/bridge_fit.py [--out docs/bridge] [--quick]

For factorial((2,)*5), hierarchy(2, depth=5) and ntp_contexts (the defaults of
``ufm train-network``): trains the network (:func:`ufm.bridge.train_network`,
default arguments), fits the static decomposition, M2 and M1
(:func:`ufm.fit`, default arguments), prints one table row per setting and
writes ``fit_<setting>.png`` (the ``ufm fit`` overlay) and ``fits.md`` to
``--out``. Needs torch (``pip install 'ufm[torch]'``).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main(argv=None):
    import matplotlib

    matplotlib.use("Agg")
    import ufm
    from ufm.bridge.networks import train_network
    from ufm.plotting import plot_fit_figure

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="docs/bridge")
    ap.add_argument("--quick", action="store_true", help="smaller settings and runs (a smoke test)")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if args.quick:
        settings = {"factorial": ufm.factorial((2, 2, 2, 2))}
        train_kw = {"steps": 2000, "n_records": 30}
    else:
        from ufm.cli import network_setting

        settings = {name: network_setting(name) for name in ("factorial", "hierarchy", "ntp_contexts")}
        train_kw = {}
    rows = []
    for name, setting in settings.items():
        t0 = time.perf_counter()
        run = train_network(setting, **train_kw)
        t_train = time.perf_counter() - t0
        gap = np.array([ufm.metrics.semantic_gap(G, run.attributes) for G in run.grams])
        t0 = time.perf_counter()
        res = ufm.fit(run, setting=setting)
        t_fit = time.perf_counter() - t0
        fig = plot_fit_figure(res)
        fig.suptitle(f"{run.name}: observed vs fitted", fontsize=10)
        fig.savefig(os.path.join(args.out, f"fit_{name}.png"), dpi=72)
        p, g = res.params, res.gof
        rows.append((setting.name, run.meta.get("network", {}).get("arch", "?"), gap[0], gap.max(),
                     int(run.steps[int(np.argmax(gap))]), gap[-1], g["input_coupled"]["gap_r2"],
                     g["input_coupled"]["gram_r2"], g["anchored"]["gap_r2"], g["static"]["gap_r2"], p["sigma"],
                     p["lam"], p["time_exponent"], res.predicted_transition, p["observed_transition"], t_train, t_fit))
        print(res.message, flush=True)
    head = ("| setting | net | gap start | gap peak (step) | gap end | M2 gap R^2 | M2 Gram R^2 | M1 gap R^2 | "
            "static gap R^2 | sigma | lam | time exponent | predicted transition (step) | observed transition (step) | "
            "train s | fit s |")
    lines = [head, "|" + "---|" * 16]
    for r in rows:
        tr, ob = ("none" if v is None else f"{v:.3g}" for v in (r[13], r[14]))
        lines.append(f"| {r[0]} | {r[1]} | {r[2]:.3f} | {r[3]:.3f} ({r[4]}) | {r[5]:.3f} | {r[6]:.3f} | {r[7]:.3f} | "
                     f"{r[8]:.3f} | {r[9]:.3f} | {r[10]:.3g} | {r[11]:.2g} | {r[12]:.3g} | {tr} | {ob} | {r[15]:.1f} | "
                     f"{r[16]:.1f} |")
    table = "\n".join(lines)
    print(table)
    with open(os.path.join(args.out, "fits_table.md"), "w") as fh:
        fh.write(table + "\n")
    return rows


if __name__ == "__main__":
    main()
