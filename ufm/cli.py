"""The ``ufm`` command line. Each sub-command is a thin wrapper over a library function."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _demo(args) -> int:
    from .demo import run

    run(args.out, figures=not args.no_figures)
    return 0


def _sweep(args) -> int:
    from ._sweep import run_config

    try:
        res = run_config(args.config, out=args.out, resume=args.resume, backend=args.backend, n_jobs=args.n_jobs,
                         figure=not args.no_figure, progress=not args.quiet)["result"]
    except (ValueError, OSError) as err:
        print(f"ufm sweep: {err}", file=sys.stderr)
        return 2
    if res.status == "interrupted":
        return 130
    return 0 if res.n_failed == 0 else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ufm", description="Unconstrained features model toolkit.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="solve standard UFMs in closed form; write a table and figures",
                          description="Solve the standard UFMs of THEORY TV1-TV3 and the layer-peeled model in "
                                      "closed form; print the table and write it with the figures to --out.")
    demo.add_argument("--out", default="ufm-demo", help="output folder (created if missing; default: ufm-demo)")
    demo.add_argument("--no-figures", action="store_true", help="write the table only")
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
    sw.set_defaults(func=_sweep)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
