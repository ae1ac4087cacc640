"""The ``ufm`` command line. Each sub-command is a thin wrapper over a library function."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def _demo(args) -> int:
    from .demo import run

    run(args.out, figures=not args.no_figures)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ufm", description="Unconstrained features model toolkit.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="solve standard UFMs in closed form; write a table and figures",
                          description="Solve the standard UFMs of THEORY TV1-TV3 and the layer-peeled model in "
                                      "closed form; print the table and write it with the figures to --out.")
    demo.add_argument("--out", default="ufm-demo", help="output folder (created if missing; default: ufm-demo)")
    demo.add_argument("--no-figures", action="store_true", help="write the table only")
    demo.set_defaults(func=_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
