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
        etf = np.array([ufm.metrics.etf_distance(G) for G in run.grams])
        t0 = time.perf_counter()
        res = ufm.fit(run, setting=setting)
        t_fit = time.perf_counter() - t0
        fig = plot_fit_figure(res)
        fig.savefig(os.path.join(args.out, f"fit_{name}.png"), dpi=72)
        rows.append({"setting": setting.name, "net": run.meta.get("network", {}).get("arch", "?"), "gap": gap,
                     "etf": etf, "peak_step": int(run.steps[int(np.argmax(gap))]), "fit": res, "train_s": t_train,
                     "fit_s": t_fit})
        print(res.message, flush=True)
    table = _table(rows)
    print(table)
    with open(os.path.join(args.out, "fits_table.md"), "w") as fh:
        fh.write(table + "\n")
    return rows


def _table(rows) -> str:
    def f(v, fmt="{:.2f}"):
        return "n/a" if v is None or not np.isfinite(v) else fmt.format(v)

    head = ("| setting | net | gap start / peak (step) / end | ETF dist. start / end | outside patterns (change) | "
            "model | gap R^2 | rise R^2 | ETF R^2 | pattern Gram R^2 | full Gram R^2 | accepted | best model | "
            "sigma [near-best] | transition observed / predicted | train s | fit s |")
    lines = [head, "|" + "---|" * 17]
    for r in rows:
        res, p = r["fit"], r["fit"].params
        near = p.get("near_best", {}).get("sigma")
        sig = "n/a" if "sigma" not in p else f"{p['sigma']:.3g}" + ("" if near is None else
                                                                    f" [{near[0]:.3g}, {near[1]:.3g}]")
        obs = res.transitions["observed"]["step"]
        pred = res.predicted_transition
        for i, m in enumerate(("input_coupled", "anchored")):
            g = res.gof[m]
            first = i == 0
            lines.append(
                f"| {r['setting'] if first else ''} | {r['net'] if first else ''} | "
                + (f"{r['gap'][0]:.3f} / {r['gap'].max():.3f} ({r['peak_step']}) / {r['gap'][-1]:.3f} | "
                   f"{r['etf'][0]:.2f} / {r['etf'][-1]:.2f} | {100 * p['outside_patterns']:.0f}% "
                   f"({100 * p['outside_patterns_change']:.0f}%) | " if first else "| | | ")
                + f"{'M2' if m == 'input_coupled' else 'M1'} | {f(g['gap_r2'])} | {f(g.get('rise_r2'))} | "
                f"{f(g['etf_r2'])} | "
                f"{f(g['gram_r2_patterns'])} | {f(g['gram_r2_full'])} | {'yes' if g['accepted'] else 'no'} | "
                + (f"{res.best_model or 'none'} | {sig} | {f(obs, '{:.3g}') if obs else 'none'} / "
                   f"{f(pred, '{:.3g}') if pred else 'none'} | {r['train_s']:.1f} | {r['fit_s']:.1f} |" if first else
                   "| | | | |"))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
