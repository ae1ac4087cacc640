"""Structure before collapse in real networks: which training choices show the semantic transient.

Trains the reference networks of :mod:`ufm.bridge.networks` on three settings,
with their defaults and with contrasting configurations, and measures the
semantic gap of the penultimate-feature Gram (THEORY §7.4, centred) over
training:

* factorial((2,)*5) and hierarchy(2, depth=5), 32 items each: ReLU MLP on the
  M2 encoding ``Phi = [attribute one-hots; item_scale * I]`` (THEORY §8.2);
* ntp_contexts(4, 8, 2, 32), 32 contexts "subject verb" whose next tokens
  (objects) fall into 4 latent classes: small causal transformer.

A run shows the transient when the gap rises clearly above its start and then
falls clearly: ``peak >= start + 0.05`` and ``end <= 0.6 * peak``
(:func:`ufm.bridge.networks.gap_summary`).

Prints a markdown table (setting, configuration, gap at start / peak (step) /
end, ETF distance at the end, transient in how many seeds) and writes to
``--out``: ``networks_table.md``, ``networks_gap_<setting>.png`` (gap and ETF
distance over log-steps, every configuration) and
``networks_grams_<setting>.png`` (centred cosine Gram of the default run at
initialization, peak and end).

Usage::

    python examples/bridge_networks.py --out docs/bridge --seeds 3 --jobs 2

``--quick`` runs short versions of a few configurations (a smoke test).
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

# (label, keyword arguments of train_network, setting override or None); the first entry is the default
MLP_CONFIGS = [
    ("default: adam, item_scale 2.5", {}),
    ("attributes only (item_scale 0)", {"item_scale": 0.0}),
    ("item_scale 1 (small)", {"item_scale": 1.0}),
    ("item_scale 2", {"item_scale": 2.0}),
    ("item_scale 4 (large)", {"item_scale": 4.0}),
    ("adamw, weight decay 1.0", {"optimizer": "adamw", "weight_decay": 1.0}),
    ("adam + L2 weight decay 1e-3", {"weight_decay": 1e-3}),
    ("sgd (lr 0.05, momentum 0.9)", {"optimizer": "sgd"}),
    ("sgd + weight decay 5e-4", {"optimizer": "sgd", "weight_decay": 5e-4}),
    ("width 64", {"width": 64}),
    ("width 1024", {"width": 1024}),
    ("depth 3", {"depth": 3}),
]
TRANSFORMER_CONFIGS = [
    ("default: sgd lr 0.05, own subject per context", {}),
    ("shared subjects: ntp_contexts(4, 8, 2, 4)", {"_setting": (4, 8, 2, 4)}),
    ("adam lr 1e-3", {"optimizer": "adam"}),
    ("adamw lr 1e-3, weight decay 0.1", {"optimizer": "adamw", "weight_decay": 0.1}),
    ("sgd + weight decay 5e-4", {"weight_decay": 5e-4}),
    ("sgd lr 0.01", {"lr": 0.01}),
    ("sgd lr 0.002, 2000 steps (smooth)", {"lr": 0.002, "steps": 2000}),
    ("width 32", {"width": 32}),
    ("width 128", {"width": 128}),
    ("MLP on the token encoding (item_scale 2.5)", {"arch": "mlp"}),
]
QUICK = {"factorial": [0, 1, 6], "hierarchy": [0], "ntp_contexts": [0, 1]}


def _setting(key, override):
    from ufm.settings import ntp_contexts

    if override is not None:
        return ntp_contexts(*override)
    return SETTINGS[key][1]()


def _one(key, label, kwargs, seed, quick):
    """Train one configuration for one seed; return what the table and the figures need."""
    from ufm.bridge.networks import gap_summary, train_network

    kwargs = dict(kwargs)
    setting = _setting(key, kwargs.pop("_setting", None))
    if quick:
        kwargs.setdefault("steps", 1500 if key != "ntp_contexts" else 300)
        kwargs.setdefault("n_records", 30)
    t0 = time.perf_counter()
    run = train_network(setting, seed=seed, **kwargs)
    elapsed = time.perf_counter() - t0
    s = gap_summary(run)
    k = int(np.nanargmax(s["gaps"]))
    return {"key": key, "label": label, "seed": seed, "steps": run.steps, "gaps": s["gaps"], "etf": s["etf"],
            "loss": run.loss, "summary": {n: s[n] for n in ("start", "peak", "peak_step", "end", "etf_start",
                                                              "etf_end", "loss_end", "transient")},
            "snapshots": {"init": run.grams[0], "peak": run.grams[k], "end": run.grams[-1]},
            "snapshot_steps": (int(run.steps[0]), int(run.steps[k]), int(run.steps[-1])),
            "attributes": run.attributes, "meta": {n: run.meta[n] for n in ("optimizer", "lr", "weight_decay",
                                                                          "item_scale", "steps_run")},
            "network": run.meta["network"], "elapsed": elapsed}


def _jobs(seeds, quick):
    out = []
    for key in SETTINGS:
        configs = TRANSFORMER_CONFIGS if key == "ntp_contexts" else MLP_CONFIGS
        for i, (label, kwargs) in enumerate(configs):
            if quick and i not in QUICK[key]:
                continue
            for seed in range(seeds):
                out.append((key, label, kwargs, seed))
    return out


def _table(results, seeds):
    rows = ["| setting | configuration | gap start | gap peak (step) | gap end | end / peak | ETF dist. end "
            "| transient (seeds) | s / run |",
            "|---|---|---|---|---|---|---|---|---|"]
    order = []
    for r in results:
        if (r["key"], r["label"]) not in order:
            order.append((r["key"], r["label"]))
    for key, label in order:
        rs = [r for r in results if r["key"] == key and r["label"] == label]
        S = [r["summary"] for r in rs]
        mean = lambda n: float(np.mean([s[n] for s in S]))  # noqa: E731
        steps = sorted(s["peak_step"] for s in S)
        n_tr = sum(s["transient"] for s in S)
        verdict = "yes" if 2 * n_tr > len(S) else "no"
        rows.append(f"| {SETTINGS[key][0]} | {label} | {mean('start'):.3f} | {mean('peak'):.3f} "
                    f"({int(np.median(steps))}) | {mean('end'):.3f} | {mean('end') / mean('peak'):.2f} | "
                    f"{mean('etf_end'):.2f} | {verdict} ({n_tr}/{len(S)}) | "
                    f"{np.mean([r['elapsed'] for r in rs]):.0f} |")
    note = (f"Means over {seeds} seed(s) (peak step: median). Transient: peak >= start + 0.05 and "
            f"end <= 0.6 peak, counted per seed.")
    return "\n".join(rows) + "\n\n" + note + "\n"


def _figures(results, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ufm.metrics import center_gram
    from ufm.plotting import plot_gram

    written = []
    for key in SETTINGS:
        rs = [r for r in results if r["key"] == key and r["seed"] == 0]
        if not rs:
            continue
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), dpi=80)
        cmap = plt.get_cmap("tab10")
        for i, r in enumerate(rs):
            default = i == 0
            style = dict(color="black", lw=2.2, zorder=5) if default else dict(color=cmap((i - 1) % 10), lw=1.1)
            x = r["steps"] + 1
            axes[0].plot(x, r["gaps"], label=r["label"], **style)
            axes[1].plot(x, r["etf"], **style)
        for ax, name in zip(axes, ("semantic gap (centred Gram)", "ETF distance (centred Gram)")):
            ax.set_xscale("log")
            ax.set_xlabel("training step + 1")
            ax.set_ylabel(name)
            ax.grid(alpha=0.3)
        axes[0].set_title(f"{SETTINGS[key][0]}: semantic gap", fontsize=9)
        axes[1].set_title("distance to the simplex ETF", fontsize=9)
        fig.legend(loc="lower center", ncol=3, fontsize=7, frameon=False)
        fig.tight_layout(rect=(0, 0.2, 1, 1))
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
        fig.suptitle(f"{SETTINGS[key][0]}, {r['label']}: centred cosine Gram of the features", fontsize=9)
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
    p.add_argument("--quick", action="store_true", help="a few short runs (smoke test)")
    args = p.parse_args(argv)
    if args.seeds < 1 or args.jobs < 1:
        p.error("--seeds and --jobs must be >= 1")
    os.makedirs(args.out, exist_ok=True)
    jobs = _jobs(args.seeds, args.quick)
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
            net = r["network"]
            print(f"{SETTINGS[key][0]} default network: {net['arch']}, depth {net['depth']}, width {net['width']}, "
                  f"{r['meta']['optimizer']} lr {r['meta']['lr']:g}, {r['meta']['steps_run']} steps")
    with open(os.path.join(args.out, "networks_table.md"), "w") as fh:
        fh.write(table)
    for path in _figures(results, args.out):
        print("wrote", path)
    print(f"done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
