"""The ``interp`` command line (also ``python -m interp``).

Commands::

    interp organisms list               the shipped model organisms
    interp organisms train NAME --out DIR   re-run an organism's deterministic training recipe
    interp demo [--out DIR]             the main job on the bundled induction organism
    interp sweep CONFIG.toml            a sweep described in a TOML file (interp.sweepconfig)
    interp report DIR                   rebuild report.html from saved results

The CLI is the only place in ``interp`` that may import ``analyses`` (DESIGN.md).

Example::

    >>> from interp.cli import main
    >>> main(["organisms", "list"])                                 # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="interp",
        description=(
            "Mechanistic interpretability on trained and naturally degraded weights "
            "(tempered-posterior SGLD samples, weight/activation noise, checkpoints)."
        ),
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info logs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    org = sub.add_parser("organisms", help="list or retrain the shipped model organisms")
    org_sub = org.add_subparsers(dest="organisms_command", required=True, metavar="ACTION")
    org_sub.add_parser("list", help="list the organisms with a one-line description")
    train = org_sub.add_parser("train", help="reproduce a shipped organism with its training recipe")
    train.add_argument("name", help="organism name (see `interp organisms list`)")
    train.add_argument("--out", required=True, help="directory to write the safetensors weights to")
    train.add_argument("--seed", type=int, default=0, help="training seed (shipped weights: 0)")

    demo = sub.add_parser("demo", help="run the main job on the bundled induction organism")
    demo.add_argument("--out", default="interp-demo", help="output directory (default: ./interp-demo)")

    sweep = sub.add_parser(
        "sweep", help="run the sweep a TOML file describes (resumable)",
        description="Run a sweep described in a TOML file; see interp.sweepconfig for the format.",
    )
    sweep.add_argument("config", help="path to the sweep's TOML file")

    report = sub.add_parser("report", help="rebuild report.html from saved results")
    report.add_argument("directory", help="a results directory (from `interp sweep` or `interp demo`)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        if args.command == "organisms":
            return _organisms(args)
        if args.command == "demo":
            from interp.demo import run_demo

            summary = run_demo(args.out, progress=not args.quiet)
            clean = summary["clean"]
            sys.stdout.write(
                f"induction organism: test loss {clean['loss']:.4f} nats/token, "
                f"accuracy {clean['accuracy']:.4f}\n\nsurvival of effects (ΔL in nats/token):\n"
                f"{summary['survival'].to_string(index=False)}\n\nreport: {summary['report']}\n"
            )
            return 0
        if args.command == "sweep":
            from interp.sweepconfig import run_sweep_file

            sys.stdout.write(f"report: {run_sweep_file(args.config, progress=not args.quiet)}\n")
            return 0
        if args.command == "report":
            from interp.sweepconfig import rebuild_report

            sys.stdout.write(f"report: {rebuild_report(args.directory)}\n")
            return 0
    except (ValueError, FileNotFoundError, ImportError) as err:
        sys.stderr.write(f"interp: error: {err}\n")
        return 2
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse guarantees a command


def _organisms(args: argparse.Namespace) -> int:
    from interp import organisms

    if args.organisms_command == "list":
        for name in organisms.names():
            sys.stdout.write(f"{name:<10} {organisms.describe(name)}\n")
        return 0
    mod = organisms.module(args.name)
    if not hasattr(mod, "train"):
        raise ValueError(f"Organism {args.name!r} is pretrained elsewhere and has no training recipe.")
    mod.train(out_dir=args.out, seed=args.seed, progress=not args.quiet)
    sys.stdout.write(f"wrote {args.name} weights to {args.out}\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
