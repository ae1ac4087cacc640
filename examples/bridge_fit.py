"""Train the reference network of each setting, fit the UFM models to its Gram trajectory, report.

    python examples/bridge_fit.py [--out docs/bridge] [--quick]

For factorial((2,)*5), hierarchy(2, depth=5) and ntp_contexts (the defaults of
``ufm train-network``): trains the network (:func:`ufm.bridge.train_network`,
default arguments), fits the static decomposition, M2, M2-H and M1
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

    def quoted(res, name):
        v, iv, ok = res.params.get(name), res.intervals.get(name), res.identifiable.get(name)
        if v is None:
            return "n/a"
        if iv is None:
            return f"{v:.3g}"
        return f"{v:.3g} " + (f"(flat over [{iv[0]:.2g}, {iv[1]:.2g}])" if ok is False else
                              f"[{iv[0]:.3g}, {iv[1]:.3g}]")

    def event(res, k):
        o = res.transitions["observed"][k]["step"]
        p = res.transitions["predicted"][k]
        pred = "none" if p["step"] is None else f"{p['step']:.3g}" + (
            "" if p.get("low") is None else f" [{p['low']:.3g}, {p['high']:.3g}]")
        return f"{f(o, '{:.3g}') if o is not None else 'none'} / {pred}"

    head = ("| setting | net | gap start / peak (step) / end | ETF dist. start / end | outside patterns (change) | "
            "model | gap R^2 | rise R^2 | ETF R^2 | pattern Gram R^2 | full Gram R^2 | end dETF | accepted | "
            "quoted model | sigma [90%] | lam [90%] | peak observed / predicted | collapse observed / predicted | "
            "train s | fit s |")
    lines = [head, "|" + "---|" * 20]
    for r in rows:
        res, p = r["fit"], r["fit"].params
        for i, m in enumerate(m for m in ("input_coupled", "feature_penalty", "anchored") if m in res.gof):
            g = res.gof[m]
            first = i == 0
            label = {"input_coupled": "M2", "feature_penalty": "M2-H", "anchored": "M1"}[m]
            lines.append(
                f"| {r['setting'] if first else ''} | {r['net'] if first else ''} | "
                + (f"{r['gap'][0]:.3f} / {r['gap'].max():.3f} ({r['peak_step']}) / {r['gap'][-1]:.3f} | "
                   f"{r['etf'][0]:.2f} / {r['etf'][-1]:.3f} | {100 * p['outside_patterns']:.0f}% "
                   f"({100 * p['outside_patterns_change']:.0f}%) | " if first else "| | | ")
                + f"{label} | {f(g['gap_r2'])} | {f(g.get('rise_r2'))} | {f(g['etf_r2'])} | "
                f"{f(g['gram_r2_patterns'])} | {f(g['gram_r2_full'])} | {f(g['end_etf'], '{:+.3f}')} | "
                f"{'yes' if g['accepted'] else 'no'} | "
                + (f"{p['model'] or 'none'}{'' if res.best_model else ' (not accepted)'} | {quoted(res, 'sigma')} | "
                   f"{quoted(res, 'lam')} | {event(res, 'peak')} | {event(res, 'collapse')} | {r['train_s']:.1f} | "
                   f"{r['fit_s']:.1f} |" if first else "| | | | | | |"))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
