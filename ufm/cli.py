"""The ``ufm`` command line. Each sub-command is a thin wrapper over a library function."""

from __future__ import annotations

import argparse
import sys

from . import _interrupt, demo
from ._atomic import write_atomically
from ._cli_sweep import run_config
from ._util import check_output_folder
from .bridge.fitting import fit
from .bridge.networks import gap_summary, run_path, train_network
from .plotting import plot_fit_figure
from .settings import NAMED_SETTINGS, named_setting

__all__ = ["main"]


def _demo(args) -> int:
    import time

    t0 = time.perf_counter()
    try:
        check_output_folder(args.out, "--out")
    except ValueError as err:
        print(f"ufm demo: {err}", file=sys.stderr)
        return 2
    try:
        if not args.closed_forms:
            demo.structure_before_collapse(args.out, sigma=args.sigma, lam=args.lam, seeds=args.seeds, quick=args.quick,
                                           figures=not args.no_figures, progress=not args.quiet)
        if args.closed_forms or args.all:
            print("\n== standard UFMs in closed form (THEORY TV1-TV3, layer-peeled)")
            demo.run(args.out, figures=not args.no_figures)
    except KeyboardInterrupt:
        print(f"ufm demo: interrupted (Ctrl-C) after {time.perf_counter() - t0:.1f} s; what was finished is in "
              f"{args.out} (listed above)", file=sys.stderr)
        return 130
    print(f"ufm demo: done in {time.perf_counter() - t0:.1f} s; output folder: {args.out}")
    return 0


def _sweep(args) -> int:
    try:
        done = run_config(args.config, out=args.out, resume=args.resume, backend=args.backend, n_jobs=args.n_jobs,
                          figure=not args.no_figure, progress=not args.quiet, on_interrupt="return",
                          allow_import=args.allow_import)
    except (ValueError, OSError) as err:
        print(f"ufm sweep: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:         # Ctrl-C pressed twice, or before the sweep had anything to keep
        if err.result is None:
            print(f"ufm sweep: {err} Nothing was written.", file=sys.stderr)
        else:
            print(f"ufm sweep: {err}", file=sys.stderr)
        return 130
    res = done["result"]
    if done["interrupted"]:
        if res.status.name != "interrupted":
            print("ufm sweep: interrupted (Ctrl-C) after the sweep had ended; result.npz holds every run",
                  file=sys.stderr)
        return 130
    if res.n_failed:
        print(f"ufm sweep: {res.n_failed} of {len(res.records)} runs failed"
              + (" (none succeeded)" if res.n_failed == len(res.records) else ""), file=sys.stderr)
    return 0 if res.n_failed == 0 else 1


def _fit_or_number(value: str, flag: str, requirement: str):
    """``"fit"`` or the number ``value`` names; ValueError naming ``flag`` otherwise."""
    if value == "fit":
        return value
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{flag} must be 'fit' or a number {requirement}, got {value!r}") from None


def _number(value: str, flag: str, requirement: str) -> float:
    """The number ``value`` names; ValueError naming ``flag`` otherwise."""
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{flag} must be a number {requirement}, got {value!r}") from None


def _fit(args) -> int:
    import os

    import numpy as np

    def fail(msg):
        print(f"ufm fit: {msg}", file=sys.stderr)
        return 2

    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    try:
        lam = _fit_or_number(args.lam, "--lam", ">= 0")
        init_scale = _fit_or_number(args.init_scale, "--init-scale", "> 0")
        until = None if args.until is None else _number(args.until, "--until", ">= 0 (a step)")
    except ValueError as err:
        return fail(str(err))
    setting = None
    if args.setting:
        try:
            setting = network_setting(args.setting)
        except ValueError as err:
            return fail(str(err))
    arrays = {}
    for name in ("inputs", "kernel"):
        path = getattr(args, name)
        if path is not None:
            try:
                arrays[name] = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as err:
                return fail(f"--{name} {path}: not a readable .npy array ({err})")
    out = args.out or os.path.splitext(args.run)[0] + "_fit"
    if os.path.exists(out) and not os.path.isdir(out):
        return fail(f"--out {out} is a file; pass a folder (it is created if missing)")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        return fail(f"--out {out}: its parent folder {parent} does not exist or is not writable")
    try:
        res = fit(args.run, setting=setting, models=models, loss=args.loss, lam=lam, init_scale=init_scale,
                  fit_strengths=not args.no_strengths, match=args.match, start=args.start, clock=args.clock,
                  until=until, bootstrap=args.bootstrap, level=args.level, progress=not args.quiet,
                  on_interrupt="return", **arrays)
    except (ValueError, OSError) as err:
        return fail(str(err))
    except KeyboardInterrupt as err:         # Ctrl-C pressed twice, or before the fit had anything to keep
        if err.result is None:
            print(f"ufm fit: {err} Nothing was written.", file=sys.stderr)
            return 130
        res = err.result
    print(res)                      # the fit table (with the status first when it was interrupted)
    p = res.params
    if "b_end" in p:
        lo_hi = ", ".join(f"{b:.3g} [{lo:.3g}, {hi:.3g}]" for b, (lo, hi) in zip(p["b_end"], p["b_end_ci"]))
        print(f"static at the last record: a = {p['a_end']:.3g}, b_f = {lo_hi}")
    if "beta_end" in p:
        print(f"anchored (M1): beta from {p['beta_start']:.3g} to {p['beta_end']:.3g}")
    try:
        with _interrupt.deferred() as writing:       # a Ctrl-C while the files are written lets them be completed
            os.makedirs(out, exist_ok=True)
            written = [res.save(os.path.join(out, "fit.npz"))]
            if not args.no_figure and not _interrupt.requested():
                import matplotlib

                matplotlib.use("Agg")
                fig = plot_fit_figure(res)
                written.append(write_atomically(os.path.join(out, "fit_overlay.png"),
                                                lambda fh: fig.savefig(fh, format="png", dpi=110)))
    except (ValueError, OSError) as err:
        return fail(str(err))
    print("wrote " + ", ".join(written))
    if res.meta.get("interrupted"):
        print("ufm fit: interrupted (Ctrl-C); the best parameters found before it were written", file=sys.stderr)
        return 130
    if writing.seen:
        print("ufm fit: interrupted (Ctrl-C) while writing; fit.npz holds the whole fit", file=sys.stderr)
        return 130
    return 0


def network_setting(name: str, levels=None):
    """The setting ``ufm train-network --setting NAME [--levels ...]`` trains on (also ``ufm fit --setting``):
    :func:`ufm.settings.named_setting` with the ``"network"`` sizes by default."""
    named = NAMED_SETTINGS.get(name)
    if named is not None and named.arguments and levels is not None and len(levels) != len(named.arguments):
        raise ValueError(f"--levels for {name} takes {len(named.arguments)} integers ({','.join(named.arguments)}), "
                         f"e.g. {','.join(map(str, named.network))}; got {len(levels)}")
    return named_setting(name, levels, preset="network")


def _train_network(args) -> int:
    import os
    import time

    if args.levels is None:
        levels = None
    else:
        try:
            levels = tuple(int(v) for v in args.levels.split(","))
        except ValueError:
            print(f"ufm train-network: --levels must be comma-separated integers, e.g. 2,2,2; got {args.levels!r}",
                  file=sys.stderr)
            return 2
    try:
        setting = network_setting(args.setting, levels)
        # where the run goes, decided before training: a partial run does not replace a file already there
        written = {status: run_path(args.out, status) for status in ("completed", "interrupted")}
        t0 = time.perf_counter()
        run = train_network(setting, arch=args.arch, steps=args.steps, lr=args.lr, optimizer=args.optimizer,
                            weight_decay=args.weight_decay, width=args.width, depth=args.depth,
                            item_scale=args.item_scale, feature_layer=args.feature_layer,
                            feature_decay=args.feature_decay, classifier_decay=args.classifier_decay,
                            batch_size=args.batch_size, n_records=args.n_records, seed=args.seed,
                            progress=not args.quiet, out=args.out)
    except (ValueError, ImportError, OSError) as err:
        print(f"ufm train-network: {err}", file=sys.stderr)
        return 2
    m = run.meta
    net = m["network"]
    print(f"{net['arch']} (depth {net['depth']}, width {net['width']}) on {setting.name}: {m['optimizer']} "
          f"lr={m['lr']:g} weight_decay={m['weight_decay']:g}"
          + (f" item_scale={m['item_scale']:g}" if m["item_scale"] is not None else "")
          + (f" feature_layer={net['feature_layer']}" if "feature_layer" in net else "")
          + f" feature_decay={m['feature_decay']:g} classifier_decay={m['classifier_decay']:g}"
          + f" seed={m['seed']}; {m['status']} after {m['steps_run']} steps in {time.perf_counter() - t0:.1f} s")
    try:
        s = gap_summary(run)
    except ValueError as err:
        print(f"semantic gap: {err}")
    else:
        print(f"semantic gap: start {s['start']:.3f}, peak {s['peak']:.3f} (step {s['peak_step']}), end {s['end']:.3f}"
              f" -> transient {'yes' if s['transient'] else 'no'} (peak >= start + 0.05, end <= 0.6 peak)")
        print(f"ETF distance: start {s['etf_start']:.3f}, min {s['etf_min']:.3f} (step {s['etf_min_step']}), end "
              f"{s['etf_end']:.3f} -> collapsed {'yes' if s['collapsed'] else 'no'} (end <= 0.1); loss: start "
              f"{s['loss_start']:.3g}, end {s['loss_end']:.3g}")
    path = written["interrupted" if m["status"] == "interrupted" else "completed"]
    kept = f"; {written['completed']} is kept as it was" if path != written["completed"] else ""
    print(f"wrote {os.path.abspath(path)} ({run.T} records; labels: {m['labels']}){kept}")
    if m["status"] == "interrupted":
        return 130
    return 0 if m["status"] == "completed" else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ufm", description="Unconstrained features model toolkit.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="structure before collapse: simulation, theory curves, phase diagram",
                          description="Structure before collapse on factorial(2x2x2) (input-coupled UFM, THEORY "
                                      "§8.2): gradient flow from a small random start, theory curves, the exact "
                                      "end state and the phase diagram over capacity sigma, attribute strength, "
                                      "weight decay and setting. Prints summary tables and writes them with the "
                                      "figures sbc_grams.png, sbc_trajectory.png, sbc_phase.png to --out. "
                                      "--closed-forms shows the standard UFMs of THEORY TV1-TV3 in closed form "
                                      "instead; --all shows both.")
    demo.add_argument("--out", default="ufm-demo", help="output folder (created if missing; default: ufm-demo)")
    demo.add_argument("--no-figures", action="store_true", help="write the tables only")
    demo.add_argument("--quick", action="store_true", help="fewer seeds, records and phase points (for tests)")
    demo.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    demo.add_argument("--sigma", type=float, default=3.0, help="capacity of the headline run (default: 3)")
    demo.add_argument("--lam", type=float, default=1e-3,
                      help="weight decay lam_W = lam_A of the headline run, > 0 (default: 1e-3)")
    demo.add_argument("--seeds", type=int, default=None, help="simulated seeds (default: 3, or 1 with --quick)")
    demo.add_argument("--closed-forms", action="store_true",
                      help="only the closed-form table of standard UFMs (TV1-TV3, layer-peeled) and its figures")
    demo.add_argument("--all", action="store_true", help="the headline demo and the closed-form section")
    demo.set_defaults(func=_demo)
    sw = sub.add_parser("sweep", help="run a parameter sweep from a TOML file; write the result and a phase diagram",
                        description="Run the sweep of CONFIG.toml (task, [problem], [fixed], [grid], seeds, backend; "
                                    "see examples/sweep.toml) with ufm.sweep. Writes OUT/result.npz and "
                                    "OUT/phase_diagram.png; finished runs are cached in OUT/cache as they complete. "
                                    "Exit status: 0 all runs ok, 1 some failed, 2 bad configuration, 130 interrupted.")
    sw.add_argument("config", help="the TOML file")
    sw.add_argument("--out", help="output folder (default: the file's `out`, else ufm-sweep)")
    sw.add_argument("--resume", action="store_true",
                    help="continue an interrupted sweep: load the finished runs from OUT/cache, compute the rest")
    sw.add_argument("--backend", choices=["loky", "threads", "dask", "sequential"], help="override the file's backend")
    sw.add_argument("--n-jobs", type=int, help="override the file's n_jobs")
    sw.add_argument("--no-figure", action="store_true", help="write the result only")
    sw.add_argument("--quiet", action="store_true", help="no progress bar")
    sw.add_argument("--allow-import", action="store_true",
                    help="let a file whose task is 'module:function' (and that says allow_import = true) import and "
                         "run that function; without it a config names a registered task (simulate, solve)")
    sw.set_defaults(func=_sweep)
    ft = sub.add_parser("fit", help="fit UFM models to a recorded run; print the table, write the overlay figure",
                        description="Fit the static ETF + attribute decomposition, the input-coupled UFM (M2), the "
                                    "feature-penalty UFM (M2-H) and the anchored UFM (M1) to the class-mean Grams of RUN (a bridge file: .npz, "
                                    ".safetensors, .h5; THEORY §8.6). Prints the goodness-of-fit table and the "
                                    "fitted parameters with their intervals and the observed and predicted events; writes OUT/fit.npz and OUT/fit_overlay.png (observed "
                                    "semantic gap and ETF distance with the fitted curves, Gram snapshots side by "
                                    "side), and a verdict line saying what is and is not explained. Exit status 2 "
                                    "on a bad file or argument, 130 after Ctrl-C (the best parameters found are "
                                    "written).")
    ft.add_argument("run", help="the recorded run (written by ufm train-network or ufm.bridge.Exporter)")
    ft.add_argument("--setting", choices=sorted(NAMED_SETTINGS),
                    help="the setting `ufm train-network --setting NAME` uses by default, when the run does not "
                         "record its setting")
    ft.add_argument("--models", default="static,input_coupled,feature_penalty,anchored",
                    help="comma-separated subset of static,input_coupled,feature_penalty,anchored (default: all)")
    ft.add_argument("--loss", choices=["ce", "mse"], default="ce", help="loss of the M2 model (default: ce)")
    ft.add_argument("--lam", default="fit", help="M2 weight decay: 'fit' (default) or a number >= 0")
    ft.add_argument("--no-strengths", action="store_true", help="hold the attribute strengths at 1")
    ft.add_argument("--match", choices=["auto", "patterns", "full"], default="auto",
                    help="fit the models on attribute-pattern averaged Grams or on the full Grams (auto: full with "
                         "--start observed, else patterns); goodness of fit is reported on both")
    ft.add_argument("--start", choices=["isotropic", "observed"], default="isotropic",
                    help="M2's start: the wide-layer isotropic start (default) or the run's own first record")
    ft.add_argument("--init-scale", default="fit", help="M2's start scale: 'fit' (default) or a number > 0")
    ft.add_argument("--inputs", metavar="NPY", help="the network's own inputs for M2, a (p, K) .npy array (one "
                                                    "column per class); sigma and strengths are then not fitted")
    ft.add_argument("--kernel", metavar="NPY", help="the input kernel for M2, a (K, K) .npy array")
    ft.add_argument("--clock", choices=["auto", "gd", "flow", "linear", "power", "broken"], default="auto",
                    help="how steps map to model time (default auto: a ufm Trajectory's own clock, else the broken "
                         "power law); the linear and free maps are reported beside a declared one")
    ft.add_argument("--until", metavar="STEP", help="fit only the records up to STEP: the predicted gap peak and "
                                                     "collapse are then a forecast of the rest")
    ft.add_argument("--bootstrap", type=int, default=30, help="synthetic runs of the parametric bootstrap for the "
                                                               "intervals (default 30; 0: no intervals)")
    ft.add_argument("--level", type=float, default=0.9, help="confidence level of the intervals (default 0.9)")
    ft.add_argument("--out", help="output folder (default: RUN without extension + '_fit')")
    ft.add_argument("--no-figure", action="store_true", help="write fit.npz only")
    ft.add_argument("--quiet", action="store_true", help="no progress lines")
    ft.set_defaults(func=_fit)
    tn = sub.add_parser("train-network", help="train a reference network on a setting; record its Gram trajectory",
                        description="Train a reference network (ufm.bridge.networks.train_network) on a synthetic "
                                    "setting: a ReLU MLP on the attribute one-hots plus an item-id one-hot scaled "
                                    "by --item-scale (factorial, hierarchy), or a small causal transformer on the "
                                    "token contexts (ntp_contexts), with cross-entropy plus the UFM's feature and "
                                    "classifier penalties. Records the penultimate-feature Grams, the "
                                    "classifier and the loss on a log-spaced step grid, writes the run to --out "
                                    "(bridge format, for `ufm fit`) and prints the semantic gap at start / peak / "
                                    "end and the ETF distance. Unset options take the architecture's measured "
                                    "defaults (the gap rises, then the features reach the simplex ETF; "
                                    "docs/bridge/networks.md). Exit status: 0 "
                                    "completed, 1 diverged, 2 bad argument, 130 interrupted (the partial run is "
                                    "written).")
    tn.add_argument("--setting", required=True, choices=sorted(NAMED_SETTINGS), help="the synthetic setting")
    tn.add_argument("--levels", help="factorial: levels per factor (default 2,2,2,2,2); hierarchy: branching per "
                                     "level (default 2,2,2,2,2); ntp_contexts: n_classes,objects_per_class,"
                                     "verbs_per_class,n_subjects (default 4,8,2,32)")
    tn.add_argument("--arch", choices=["auto", "mlp", "transformer"], default="auto",
                    help="network (default auto: transformer for ntp_contexts, else MLP)")
    tn.add_argument("--steps", type=int, help="optimizer steps (default: 3000 MLP, 2000 transformer)")
    tn.add_argument("--lr", type=float, help="learning rate (default: adam/adamw 1e-3 MLP, 1e-2 transformer; "
                                             "sgd 0.05)")
    tn.add_argument("--optimizer", choices=["adam", "adamw", "sgd"],
                    help="optimizer (default: adam; sgd has momentum 0.9)")
    tn.add_argument("--weight-decay", type=float, default=0.0,
                    help="the optimizer's weight decay on every parameter (default 0)")
    tn.add_argument("--feature-decay", type=float,
                    help="lambda_H: adds (lambda_H/2) sum_i ||h_i||^2 of the penultimate features to the loss "
                         "(default 1e-3; 0 = off)")
    tn.add_argument("--classifier-decay", type=float,
                    help="lambda_W: adds (lambda_W/2) ||W||_F^2 of the classifier weight to the loss "
                         "(default 1e-3; 0 = off)")
    tn.add_argument("--width", type=int, help="hidden width / model width (default: 256 MLP, 64 transformer)")
    tn.add_argument("--depth", type=int, help="hidden layers / transformer blocks (default 2)")
    tn.add_argument("--item-scale", type=float,
                    help="MLP only: weight of the item-id one-hot in the input (default 1; 0 = attributes only)")
    tn.add_argument("--feature-layer", choices=["linear", "relu"],
                    help="MLP only: features are the last hidden layer's linear output (default) or its ReLU")
    tn.add_argument("--batch-size", type=int, help="items per step (default: full batch)")
    tn.add_argument("--n-records", "--records", dest="n_records", type=int, default=60,
                    help="records on the log-spaced step grid, as n_records of train_network (default 60)")
    tn.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    tn.add_argument("--out", required=True, help="the run file to write (.npz; .safetensors or .h5 by extension)")
    tn.add_argument("--quiet", action="store_true", help="no progress bar")
    tn.set_defaults(func=_train_network)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        if args.seeds is None:
            args.seeds = 1 if args.quick else 3
        if args.seeds < 1:
            parser.error("demo: --seeds must be >= 1")
        if not (args.sigma > 0) or not (args.lam > 0):
            parser.error("demo: --sigma and --lam must be > 0 (lam > 0 gives a finite end state)")
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
