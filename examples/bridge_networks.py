"""Structure before collapse in real networks: which training choices show the rise and then the simplex ETF.

Trains the reference networks of :mod:`ufm.bridge.networks` on three settings,
with their defaults and with contrasting configurations, and measures the
semantic gap and the ETF distance of the penultimate-feature Gram (both
centred, THEORY §7.2, §7.4) over training:

* factorial((2,)*5) and hierarchy(2, depth=5), 32 items each: MLP on the
  M2 encoding ``Phi = [attribute one-hots; item_scale * I]`` (THEORY §8.2);
* ntp_contexts(4, 8, 2, 32), 32 contexts "subject verb" whose next tokens
  (objects) fall into 4 latent classes: small causal transformer.

Per seed, :func:`ufm.bridge.networks.gap_summary` decides

* **rise**: the gap peak is at least 0.05 above its start;
* **transient**: rise, and the gap ends at most 0.6 times its peak;
* **collapsed**: the ETF distance at the last record is at most 0.1;

and a run shows the whole phenomenon when it is a transient and collapsed.

Prints a markdown table and writes to ``--out``: ``networks_table.txt``,
``networks_whole.png`` (the default runs of every setting and seed, gap and
ETF distance over log-steps, beside the earlier defaults),
``networks_gap_<setting>.png`` (every configuration, seed 0) and
``networks_grams_<setting>.png`` (centred cosine Gram of the default run at
initialization, at the gap peak and at the end). ``--trend`` instead trains
the default conditions longer at several widths and writes
``networks_trend.txt`` and ``networks_trend.png`` (the first step with ETF
distance <= 0.1 against the width). The tables are written as ``.txt`` so that a
Sphinx build of ``docs/`` does not take them for pages.

Usage::

    python examples/bridge_networks.py --out docs/bridge --seeds 3 --jobs 2
    python examples/bridge_networks.py --out /tmp/ten --seeds 10 --only default --no-figures
    python examples/bridge_networks.py --out docs/bridge --seeds 3 --jobs 2 --trend

``--only TEXT`` keeps the configurations whose label contains TEXT; ``--quick``
runs short versions of a few configurations (a smoke test).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

SETTINGS = {
    "factorial": ("factorial((2,)*5)", lambda: __import__("ufm.settings").settings.factorial((2,) * 5)),
    "hierarchy": ("hierarchy(2, depth=5)", lambda: __import__("ufm.settings").settings.hierarchy(2, depth=5)),
    "ntp_contexts": ("ntp_contexts(4, 8, 2, 32)",
                     lambda: __import__("ufm.settings").settings.ntp_contexts(4, 8, 2, 32)),
}
LEGACY_LABEL = "earlier defaults"

# (label, keyword arguments of train_network); the first entry is the default. "_legacy" expands to
# ufm.bridge.networks.LEGACY[arch]; "_setting" replaces the ntp setting.
MLP_CONFIGS = [
    ("default: linear features, item_scale 1, penalties 1e-3, adam", {}),
    (f"{LEGACY_LABEL}: relu features, no penalties, item_scale 2.5, 8000 steps", {"_legacy": True}),
    ("no penalties (feature_decay 0, classifier_decay 0)", {"feature_decay": 0.0, "classifier_decay": 0.0}),
    ("no feature penalty (feature_decay 0)", {"feature_decay": 0.0}),
    ("no classifier penalty (classifier_decay 0)", {"classifier_decay": 0.0}),
    ("post-ReLU features (feature_layer relu)", {"feature_layer": "relu"}),
    ("penalties 1e-4", {"feature_decay": 1e-4, "classifier_decay": 1e-4}),
    ("penalties 1e-2", {"feature_decay": 1e-2, "classifier_decay": 1e-2}),
    ("optimizer L2 instead: adam, weight_decay 1e-3, no penalties",
     {"weight_decay": 1e-3, "feature_decay": 0.0, "classifier_decay": 0.0}),
    ("optimizer decay instead: adamw, weight_decay 1.0, no penalties",
     {"optimizer": "adamw", "weight_decay": 1.0, "feature_decay": 0.0, "classifier_decay": 0.0}),
    ("sgd (lr 0.05, momentum 0.9)", {"optimizer": "sgd"}),
    ("attributes only (item_scale 0)", {"item_scale": 0.0}),
    ("item_scale 2.5", {"item_scale": 2.5}),
    ("width 64", {"width": 64}),
    ("width 1024", {"width": 1024}),
    ("depth 3", {"depth": 3}),
]
TRANSFORMER_CONFIGS = [
    ("default: adam lr 1e-2, penalties 1e-3", {}),
    (f"{LEGACY_LABEL}: sgd lr 0.05, no penalties, 1000 steps", {"_legacy": True}),
    ("no penalties (feature_decay 0, classifier_decay 0)", {"feature_decay": 0.0, "classifier_decay": 0.0}),
    ("no feature penalty (feature_decay 0)", {"feature_decay": 0.0}),
    ("adam lr 1e-3", {"lr": 1e-3}),
    ("sgd lr 0.05 with the penalties", {"optimizer": "sgd"}),
    ("shared subjects: ntp_contexts(4, 8, 2, 4)", {"_setting": (4, 8, 2, 4)}),
    ("width 32", {"width": 32}),
    ("width 128", {"width": 128}),
    ("MLP on the token encoding (MLP defaults)", {"arch": "mlp"}),
]
QUICK = {"factorial": [0, 1, 3], "hierarchy": [0], "ntp_contexts": [0, 1]}
# --trend: how fast the default conditions reach ETF distance 0.1, against the width (long runs)
TREND = {"factorial": ([32, 64, 128, 256, 512], 8000), "ntp_contexts": ([16, 32, 64, 128], 6000)}
COLLAPSE = 0.1


def _setting(key, override):
    from ufm.settings import ntp_contexts

    if override is not None:
        return ntp_contexts(*override)
    return SETTINGS[key][1]()


def _one(key, label, kwargs, seed, quick):
    """Train one configuration for one seed; return what the table and the figures need."""
    from ufm.bridge.networks import LEGACY, gap_summary, train_network

    kwargs = dict(kwargs)
    setting = _setting(key, kwargs.pop("_setting", None))
    if kwargs.pop("_legacy", False):
        kwargs.update(LEGACY["transformer" if key == "ntp_contexts" else "mlp"])
    if quick:
        kwargs["steps"] = min(kwargs.get("steps", 1500), 1500 if key != "ntp_contexts" else 300)
        kwargs.setdefault("n_records", 30)
    t0 = time.perf_counter()
    run = train_network(setting, seed=seed, **kwargs)
    elapsed = time.perf_counter() - t0
    s = gap_summary(run)
    k = int(np.nanargmax(s["gaps"]))
    names = ("start", "peak", "peak_step", "end", "etf_start", "etf_min", "etf_min_step", "etf_end", "loss_end",
             "transient", "collapsed")
    return {"key": key, "label": label, "seed": seed, "steps": run.steps, "gaps": s["gaps"], "etf": s["etf"],
            "loss": run.loss, "summary": {n: s[n] for n in names},
            "snapshots": {"init": run.grams[0], "peak": run.grams[k], "end": run.grams[-1]},
            "snapshot_steps": (int(run.steps[0]), int(run.steps[k]), int(run.steps[-1])),
            "meta": {n: run.meta[n] for n in ("optimizer", "lr", "weight_decay", "item_scale", "feature_decay",
                                              "classifier_decay", "steps_run")},
            "network": run.meta["network"], "elapsed": elapsed}


def _trend_one(key, width, steps, seed):
    """One long default run at ``width``: the ETF-distance curve and the first record at <= COLLAPSE."""
    from ufm.bridge.networks import gap_summary, train_network

    t0 = time.perf_counter()
    run = train_network(SETTINGS[key][1](), width=width, steps=steps, n_records=80, seed=seed)
    s = gap_summary(run, collapse=COLLAPSE)
    hit = np.flatnonzero(s["etf"] <= COLLAPSE)
    return {"key": key, "width": width, "seed": seed, "steps": run.steps, "etf": s["etf"], "gaps": s["gaps"],
            "first": int(run.steps[hit[0]]) if hit.size else None, "etf_end": s["etf_end"],
            "rise": s["peak"] - s["start"], "elapsed": time.perf_counter() - t0}


def _trend(seeds, jobs, out):
    """Steps to reach ETF distance COLLAPSE against the width; writes networks_trend.txt and networks_trend.png."""
    work = [(key, w, steps, seed) for key, (widths, steps) in TREND.items() for w in widths for seed in range(seeds)]
    print(f"trend: training {len(work)} networks on {jobs} process(es) ...", file=sys.stderr, flush=True)
    if jobs == 1:
        res = [_trend_one(*j) for j in work]
    else:
        from joblib import Parallel, delayed

        res = Parallel(n_jobs=jobs, backend="loky")(delayed(_trend_one)(*j) for j in work)
    rows = ["| setting | width | steps run | first step with ETF distance <= 0.1 (per seed) | ETF end | gap rise | "
            "s / run |", "|---|---|---|---|---|---|---|"]
    for key, (widths, steps) in TREND.items():
        for w in widths:
            rs = [r for r in res if r["key"] == key and r["width"] == w]
            firsts = ", ".join("not reached" if r["first"] is None else str(r["first"]) for r in rs)
            ends = _range([r["etf_end"] for r in rs], "{:.3f}")
            rises = _range([r["rise"] for r in rs], "{:+.3f}")
            rows.append(f"| {SETTINGS[key][0]} | {w} | {steps} | {firsts} | {ends} | {rises} | "
                        f"{np.mean([r['elapsed'] for r in rs]):.0f} |")
    table = "\n".join(rows) + "\n\nDefault conditions of each architecture, only the width and the length changed.\n"
    print(table)
    with open(os.path.join(out, "networks_trend.txt"), "w") as fh:
        fh.write(table)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(TREND) + 1, figsize=(4.4 * (len(TREND) + 1), 4.0), dpi=80)
    for ax, key in zip(axes, TREND):
        widths = TREND[key][0]
        cmap = plt.get_cmap("viridis")
        for i, w in enumerate(widths):
            for r in res:
                if r["key"] == key and r["width"] == w:
                    ax.plot(r["steps"] + 1, r["etf"], color=cmap(i / max(1, len(widths) - 1)), lw=1.0,
                            label=f"width {w}" if r["seed"] == 0 else None)
        ax.axhline(COLLAPSE, color="red", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel("training step + 1")
        ax.set_ylabel("ETF distance (centred)")
        ax.set_title(f"{SETTINGS[key][0]} (every seed)", fontsize=9)
        ax.legend(fontsize=7, frameon=False)
        ax.grid(alpha=0.3)
    ax = axes[-1]
    for key, marker in zip(TREND, "os"):
        widths = TREND[key][0]
        for w in widths:
            firsts = [r["first"] for r in res if r["key"] == key and r["width"] == w and r["first"] is not None]
            ax.scatter([w] * len(firsts), firsts, marker=marker, color="C0" if key == "factorial" else "C1",
                       label=SETTINGS[key][0] if w == widths[0] else None)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("width")
    ax.set_ylabel(f"first step with ETF distance <= {COLLAPSE}")
    ax.set_title("time to the ETF against the width", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = os.path.join(out, "networks_trend.png")
    fig.savefig(path)
    plt.close(fig)
    print("wrote", path)


def _jobs(seeds, quick, only):
    out = []
    for key in SETTINGS:
        configs = TRANSFORMER_CONFIGS if key == "ntp_contexts" else MLP_CONFIGS
        for i, (label, kwargs) in enumerate(configs):
            if quick and i not in QUICK[key]:
                continue
            if only is not None and only not in label:
                continue
            for seed in range(seeds):
                out.append((key, label, kwargs, seed))
    return out


def _range(values, fmt):
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}-{fmt.format(hi)}"


def _table(results, seeds):
    rows = ["| setting | configuration | gap start | gap peak (step) | gap end | ETF start | ETF end | rise | "
            "transient | collapsed | whole | s / run |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    order = []
    for r in results:
        if (r["key"], r["label"]) not in order:
            order.append((r["key"], r["label"]))
    for key, label in order:
        rs = [r for r in results if r["key"] == key and r["label"] == label]
        S = [r["summary"] for r in rs]
        mean = lambda n: float(np.mean([s[n] for s in S]))  # noqa: E731
        rise = [s["peak"] >= s["start"] + 0.05 for s in S]
        whole = [s["transient"] and s["collapsed"] for s in S]
        n = len(S)
        rows.append(f"| {SETTINGS[key][0]} | {label} | {mean('start'):.3f} | {mean('peak'):.3f} "
                    f"({int(np.median([s['peak_step'] for s in S]))}) | {mean('end'):.3f} | {mean('etf_start'):.2f} | "
                    f"{_range([s['etf_end'] for s in S], '{:.3f}')} | {sum(rise)}/{n} | "
                    f"{sum(s['transient'] for s in S)}/{n} | {sum(s['collapsed'] for s in S)}/{n} | "
                    f"{sum(whole)}/{n} | {np.mean([r['elapsed'] for r in rs]):.0f} |")
    note = (f"Means over {seeds} seed(s) (peak step: median; ETF end: range over seeds). Rise: peak >= start + 0.05; "
            f"transient: rise and end <= 0.6 peak; collapsed: ETF distance at the end <= 0.1; whole: transient and "
            f"collapsed; each counted per seed.")
    return "\n".join(rows) + "\n\n" + note + "\n"


def _log_x(r):
    return r["steps"] + 1


def _figures(results, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ufm.metrics import center_gram
    from ufm.plotting import plot_gram

    written = []
    # the whole phenomenon: default runs (every seed) beside the earlier defaults
    keys = [k for k in SETTINGS if any(r["key"] == k for r in results)]
    fig, axes = plt.subplots(2, len(keys), figsize=(4.2 * len(keys), 6.4), dpi=80, squeeze=False)
    for j, key in enumerate(keys):
        labels = [lab for lab, _ in (TRANSFORMER_CONFIGS if key == "ntp_contexts" else MLP_CONFIGS)]
        for r in results:
            if r["key"] != key or r["label"] not in (labels[0], labels[1]):
                continue
            default = r["label"] == labels[0]
            style = (dict(color=plt.get_cmap("tab10")(r["seed"] % 10), lw=1.6) if default
                     else dict(color="0.6", lw=1.0, ls="--"))
            name = (f"default, seed {r['seed']}" if default else f"earlier defaults, seed {r['seed']}")
            axes[0, j].plot(_log_x(r), r["gaps"], label=name, **style)
            axes[1, j].plot(_log_x(r), r["etf"], **style)
        axes[1, j].axhline(0.1, color="red", lw=0.8, ls=":")
        axes[1, j].text(1.05, 0.12, "collapsed: ETF distance <= 0.1", color="red", fontsize=7)
        axes[0, j].set_title(SETTINGS[key][0], fontsize=9)
        axes[0, j].legend(fontsize=6, frameon=False)
        for i, name in enumerate(("semantic gap (centred)", "ETF distance (centred)")):
            ax = axes[i, j]
            ax.set_xscale("log")
            ax.set_xlabel("training step + 1")
            ax.set_ylabel(name)
            ax.grid(alpha=0.3)
    fig.suptitle("The gap rises, then the features reach the simplex ETF (default runs); the earlier defaults "
                 "(grey) rise and fall but stay far from it", fontsize=9)
    fig.tight_layout()
    path = os.path.join(out, "networks_whole.png")
    fig.savefig(path)
    plt.close(fig)
    written.append(path)

    for key in keys:
        rs = [r for r in results if r["key"] == key and r["seed"] == 0]
        if not rs:
            continue
        fig, axes = plt.subplots(1, 2, figsize=(10, 5.2), dpi=80)
        cmap = plt.get_cmap("tab20")
        for i, r in enumerate(rs):
            default = i == 0
            style = dict(color="black", lw=2.2, zorder=5) if default else dict(color=cmap((i - 1) % 20), lw=1.1)
            axes[0].plot(_log_x(r), r["gaps"], label=r["label"], **style)
            axes[1].plot(_log_x(r), r["etf"], **style)
        axes[1].axhline(0.1, color="red", lw=0.8, ls=":")
        for ax, name in zip(axes, ("semantic gap (centred Gram)", "ETF distance (centred Gram)")):
            ax.set_xscale("log")
            ax.set_xlabel("training step + 1")
            ax.set_ylabel(name)
            ax.grid(alpha=0.3)
        axes[0].set_title(f"{SETTINGS[key][0]}: semantic gap (seed 0)", fontsize=9)
        axes[1].set_title("distance to the simplex ETF (red: 0.1)", fontsize=9)
        fig.legend(loc="lower center", ncol=2, fontsize=7, frameon=False)
        fig.tight_layout(rect=(0, 0.27, 1, 1))
        path = os.path.join(out, f"networks_gap_{key}.png")
        fig.savefig(path)
        plt.close(fig)
        written.append(path)

        r = rs[0]
        fig, axes = plt.subplots(1, 3, figsize=(9.5, 3.1), dpi=80)
        for ax, (name, G), step in zip(axes, r["snapshots"].items(), r["snapshot_steps"]):
            plot_gram(center_gram(G), ax=ax, normalize="cosine", colorbar=(name == "end"),
                      title=f"{name} (step {step})")
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(f"{SETTINGS[key][0]}, default: centred cosine Gram of the features", fontsize=9)
        fig.tight_layout()
        path = os.path.join(out, f"networks_grams_{key}.png")
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="bridge-networks", help="output folder (default: bridge-networks)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per configuration (default 1)")
    p.add_argument("--jobs", type=int, default=1, help="parallel processes (joblib; default 1)")
    p.add_argument("--only", help="keep the configurations whose label contains this text")
    p.add_argument("--no-figures", action="store_true", help="the table only")
    p.add_argument("--quick", action="store_true", help="a few short runs (smoke test)")
    p.add_argument("--trend", action="store_true",
                   help="instead: steps to reach ETF distance 0.1 against the width (networks_trend.*)")
    args = p.parse_args(argv)
    if args.seeds < 1 or args.jobs < 1:
        p.error("--seeds and --jobs must be >= 1")
    os.makedirs(args.out, exist_ok=True)
    if args.trend:
        t0 = time.perf_counter()
        _trend(args.seeds, args.jobs, args.out)
        print(f"done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        return 0
    jobs = _jobs(args.seeds, args.quick, args.only)
    if not jobs:
        p.error(f"--only {args.only!r} matches no configuration")
    t0 = time.perf_counter()
    print(f"training {len(jobs)} networks on {args.jobs} process(es) ...", file=sys.stderr, flush=True)
    if args.jobs == 1:
        results = [_one(*j, args.quick) for j in jobs]
    else:
        from joblib import Parallel, delayed

        results = Parallel(n_jobs=args.jobs, backend="loky")(delayed(_one)(*j, args.quick) for j in jobs)
    table = _table(results, args.seeds)
    print(table)
    for key in SETTINGS:
        r = next((r for r in results if r["key"] == key), None)
        if r is not None:
            net, m = r["network"], r["meta"]
            print(f"{SETTINGS[key][0]}, {r['label']}: {net['arch']}, depth {net['depth']}, width {net['width']}, "
                  f"{m['optimizer']} lr {m['lr']:g}, feature_decay {m['feature_decay']:g}, classifier_decay "
                  f"{m['classifier_decay']:g}, {m['steps_run']} steps")
    with open(os.path.join(args.out, "networks_table.txt"), "w") as fh:
        fh.write(table)
    if not args.no_figures:
        for path in _figures(results, args.out):
            print("wrote", path)
    print(f"done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
