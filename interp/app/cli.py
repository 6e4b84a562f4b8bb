"""The ``interp`` command line (also ``python -m interp``).

Commands::

    interp organisms list               the shipped model organisms
    interp organisms train NAME --out DIR   re-run an organism's deterministic training recipe
    interp demo [--out DIR]             the main job on the bundled induction organism
    interp demo minilm [--out DIR] [--quick] [--plan]
                                        MiniLM's subject number under the behavioural posterior
    interp sweep CONFIG.toml            a sweep described in a TOML file (docs/sweep-files.md)
    interp sweep CONFIG.toml --plan     its expected wall time and peak memory, before any work
    interp sweep CONFIG.toml --executor ray --address ray://HOST:10001
                                        the same sweep, one Ray task per (level, chain) job
    interp report DIR                   rebuild report.html from saved results

The CLI is part of the app layer (``interp.app``), which may import ``analyses``; the core never does.

Example::

    >>> from interp.app.cli import main
    >>> main(["organisms", "list"])                                 # doctest: +ELLIPSIS
    induction        2-layer, 2-head, d_model 32 attention-only transformer ...
    modadd           1-layer transformer ...
    0
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser"]


#: the sweep-file format in brief, shown by ``interp sweep --help`` (docs/sweep-files.md has it all)
SWEEP_FILE_FORMAT = """\
sweep file format (TOML; every key is checked before anything runs):

  out = "runs/my-sweep"             results directory, relative to the file
  seed = 0
  [model]
  organism = "induction"            see `interp organisms list`
  [degradation]
  type = "WeightNoise"              or TemperedPosterior, ActivationNoise, Checkpoints
  relative = true                   ... the class's own arguments by name
  [levels]
  values = [0.05, 0.1]              or loss_increase = [...], or nbeta = [...]
  [[analyses]]                      one table per analysis
  type = "HeadAblation"
  heads = [[1, 0], [1, 1]]

example: examples/sweep-weight-noise.toml   reference: docs/sweep-files.md
"""


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

    demo = sub.add_parser("demo", help="run the main job on the bundled induction organism (or on MiniLM)")
    demo.add_argument("which", nargs="?", choices=("induction", "minilm"), default="induction",
                      help="induction (default): the induction circuit; minilm: MiniLM's subject-number "
                           "probe under the behavioural posterior (needs interp[minilm])")
    demo.add_argument("--out", default=None,
                      help="output directory (default: ./interp-demo, or ./minilm-demo for minilm)")
    demo.add_argument("--quick", action="store_true",
                      help="one level per degradation, few draws: a smoke run, too few numbers for conclusions")
    demo.add_argument("--plan", action="store_true",
                      help="minilm only: print each sweep's expected wall time and peak memory, measured on a "
                           "few steps, and exit; writes nothing")

    sweep = sub.add_parser(
        "sweep", help="run the sweep a TOML file describes (resumable)",
        description="Run the sweep a TOML file describes (model organism, degradation and levels, "
                    "analyses, out directory). Rerunning the same command resumes. The format is "
                    "documented in docs/sweep-files.md; a complete example is "
                    "examples/sweep-weight-noise.toml.",
        epilog=SWEEP_FILE_FORMAT, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sweep.add_argument("config", help="path to the sweep's TOML file")
    sweep.add_argument("--plan", action="store_true",
                       help="print the sweep's expected wall time and peak memory, measured on a few steps "
                            "(setup, one baseline call, a short sampler probe), and exit; writes nothing")
    sweep.add_argument("--executor", choices=("local", "ray"), default="local",
                       help="where the (level, chain) jobs run: this process (default) or a Ray cluster")
    sweep.add_argument("--address", default=None,
                       help="Ray cluster: 'auto' (the one this node is in), 'ray://HOST:10001' (Ray "
                            "Client) or 'HOST:6379'; default: RAY_ADDRESS, else a new local cluster")
    sweep.add_argument("--num-cpus", type=int, default=None,
                       help="CPUs of a new local Ray cluster (without --address; default: all)")
    sweep.add_argument("--cpus-per-job", type=float, default=1.0, help="CPUs Ray reserves per job (default 1)")
    sweep.add_argument("--gpus-per-job", type=float, default=0.0,
                       help="GPUs Ray reserves per job (default 0; > 0 puts the jobs' models on CUDA)")
    sweep.add_argument("--max-retries", type=int, default=3,
                       help="Ray retries of a job whose worker died (default 3)")
    sweep.add_argument("--retry-exceptions", action="store_true",
                       help="also retry jobs that raised (transient errors such as CUDA out of memory)")
    sweep.add_argument("--device", default=None,
                       help="model device: cpu, cuda, cuda:1, ... (default: CUDA when available; Ray: "
                            "CUDA when --gpus-per-job > 0)")
    sweep.add_argument("--dtype", default=None, help="model dtype: float32, bfloat16, ... (default: as shipped)")

    report = sub.add_parser("report", help="rebuild report.html from saved results",
                            description="Rebuild DIR/report.html from the results saved in DIR. The report "
                                        "renders what is in DIR (numbers, names, the attention views the "
                                        "sweep recorded); it never runs anything from it.")
    report.add_argument("directory", help="a results directory (from `interp sweep` or `interp demo`)")
    report.add_argument("--threshold", action="append", default=[], metavar="METRIC=VALUE",
                        help="an absolute criterion for an effect metric's verdict, e.g. --threshold "
                             "recovered=0.9 (repeat for several; default: half the way from the metric's "
                             "floor to its value at the trained weights)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``interp`` command; returns the exit status.

    Expected failures (bad input, a missing or unwritable file, a failed job, Ctrl-C) print one line
    on stderr and return non-zero: 2 for input to fix, 1 for a failure while running, 130 when
    interrupted (rerunning resumes). A bug still shows its traceback.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        resumable = args.command in ("sweep", "demo")
        sys.stderr.write("interp: interrupted; rerun the same command to resume (finished draws are kept).\n"
                         if resumable else "interp: interrupted.\n")
        return 130
    except (ValueError, ImportError) as err:
        sys.stderr.write(f"interp: error: {_one_line(err)}\n")
        return 2
    except OSError as err:
        sys.stderr.write(f"interp: error: {_os_error(err)}\n")
        return 2 if isinstance(err, (FileNotFoundError, NotADirectoryError, IsADirectoryError)) else 1
    except RuntimeError as err:
        if not _raised_on_purpose(err):
            raise  # a bug: keep the traceback
        sys.stderr.write(f"interp: error: {_one_line(err)}\n")
        return 1


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _os_error(err: OSError) -> str:
    """An OSError as one line naming the file, and that the results written before it are kept."""
    if err.filename is None:
        return _one_line(err)
    reason = err.strerror or type(err).__name__
    kept = "" if isinstance(err, FileNotFoundError) else \
        " Nothing written before this was lost; fix it and rerun the same command to resume."
    return f"{err.filename}: {reason}.{kept}"


def _raised_on_purpose(err: BaseException) -> bool:
    """Whether a RuntimeError was raised by our own code (a failed calibration, failed jobs) rather
    than inside torch or another library (a bug, whose traceback is kept)."""
    if type(err).__module__.split(".")[0] in _OURS:
        return True
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return False
    module = tb.tb_frame.f_globals.get("__name__", "")
    return module.split(".")[0] in _OURS


_OURS = ("interp", "hooks", "analyses")


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "organisms":
        return _organisms(args)
    if args.command == "demo" and args.plan:
        if args.which != "minilm":
            raise ValueError("--plan is for `interp demo minilm`; the induction demo takes a few minutes (for "
                             "a sweep file: interp sweep FILE --plan).")
        from interp.app.demo_minilm import plan_minilm_demo

        plans = plan_minilm_demo(quick=args.quick)
        total = sum(p.seconds for p in plans.values())
        sys.stdout.write("".join(f"{name}:\n{p}\n\n" for name, p in plans.items())
                         + f"the demo's sweeps together: about {total / 60:.1f} min (plus its report)\n")
        return 0
    if args.command == "demo" and args.which == "minilm":
        from interp.app.demo_minilm import run_minilm_demo

        out = args.out or "minilm-demo"
        _check_out_dir(out, "--out")
        summary = run_minilm_demo(out, progress=not args.quiet, quick=args.quick)
        sys.stdout.write(
            f"MiniLM, posterior objective {summary['objective']} ({summary['units']}), perturbed "
            f"parameters {summary['restrict']}\n\nsurvival of effects:\n"
            f"{summary['survival'].to_string(index=False)}\n\nreport: {summary['report']}\n"
        )
        return 0
    if args.command == "demo":
        from interp.app.demo import run_demo

        args.out = args.out or "interp-demo"
        _check_out_dir(args.out, "--out")
        summary = run_demo(args.out, progress=not args.quiet, quick=args.quick)
        clean = summary["clean"]
        sys.stdout.write(
            f"induction organism: test loss {clean['loss']:.4f} nats/token, "
            f"accuracy {clean['accuracy']:.4f}\n\nverdicts:\n" + "".join(f"  {v}\n" for v in summary["verdicts"])
            + f"\nsurvival of effects (ΔL in nats/token):\n"
            f"{summary['survival'].to_string(index=False)}\n\nsurvival of the scrubbing effects "
            f"against an absolute threshold (a hypothesis that explains little never holds):\n"
            f"{summary['survival_absolute'].to_string(index=False)}\n\nreport: {summary['report']}\n"
        )
        return 0
    if args.command == "sweep":
        return _sweep(args)
    if args.command == "report":
        from interp.app.sweepfile import rebuild_report
        from interp.report import default_thresholds, parse_thresholds

        with default_thresholds(parse_thresholds(args.threshold)):
            sys.stdout.write(f"report: {rebuild_report(args.directory)}\n")
        return 0
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse guarantees a command


def _check_out_dir(out: str, option: str) -> None:
    """Fail before any work when ``out`` cannot be a directory (it is a file, or under one)."""
    from pathlib import Path

    path = Path(out)
    for p in (path, *path.parents):
        if p.exists() and not p.is_dir():
            raise ValueError(f"{option} {out}: {p} is a file, not a directory; give a directory path "
                             "(it is created if missing).")


def _check_device(device: str | None) -> None:
    """Fail before loading anything when ``--device`` names hardware this machine lacks."""
    if device is None:
        return
    import torch

    from interp.models import resolve_device

    target = resolve_device(device)
    if target.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"--device {device}: CUDA is not available here (torch.cuda.is_available() is "
                             "False); use --device cpu, or leave --device out to use CUDA only when present.")
        if target.index is not None and target.index >= count:
            raise ValueError(f"--device {device}: this machine has {count} CUDA device(s), "
                             f"cuda:0 to cuda:{count - 1}.")
    elif target.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: MPS is not available here; use --device cpu.")


def _executor(args: argparse.Namespace) -> object:
    from interp.sweep import LocalExecutor, RayExecutor

    if args.executor == "local":
        ray_only = [f"--{k.replace('_', '-')}" for k, default in (
            ("address", None), ("num_cpus", None), ("cpus_per_job", 1.0), ("gpus_per_job", 0.0),
            ("max_retries", 3), ("retry_exceptions", False)) if getattr(args, k) != default]
        if ray_only:
            raise ValueError(f"{', '.join(ray_only)} only apply with --executor ray.")
        return LocalExecutor()
    return RayExecutor(address=args.address, num_cpus=args.num_cpus, cpus_per_job=args.cpus_per_job,
                       gpus_per_job=args.gpus_per_job, max_retries=args.max_retries,
                       retry_exceptions=args.retry_exceptions)


def _sweep(args: argparse.Namespace) -> int:
    """``interp sweep``: the sweep file's parts, run on the chosen executor, results and report saved."""
    import tomllib
    from pathlib import Path

    from interp.sweep import LocalExecutor, ModelRecipe, SweepJobsFailed
    from interp.models import place
    from interp.app.sweepfile import load_sweep_config, rebuild_report
    from interp.sweep import run_sweep

    executor = _executor(args)
    _check_device(args.device)
    if args.dtype is not None:
        from interp.models import resolve_dtype

        resolve_dtype(args.dtype)
    path = Path(args.config)
    cfg = load_sweep_config(path)
    _check_out_dir(str(cfg["out"]), f"{path}: out =")
    from interp.sweep.kernel import check_degradation

    check_degradation(cfg["degradation"], cfg["model"])  # restrict, points, checkpoint files: before any
    # work on either executor (the Ray jobs load their own model, which the driver never checks)
    if args.plan:
        from interp.sweep.plan import plan

        estimate = plan(place(cfg["model"], args.device, args.dtype), cfg["task"], cfg["analyses"],
                        cfg["degradation"], cfg["levels"], out=cfg["out"] / "sweep", seed=cfg["seed"],
                        progress=not args.quiet)
        note = "" if isinstance(executor, LocalExecutor) else \
            " (for this process; a Ray cluster runs the (level, chain) jobs in parallel)"
        sys.stdout.write(f"{estimate}{note}\n")
        return 0
    if isinstance(executor, LocalExecutor):
        model = place(cfg["model"], args.device, args.dtype)
    else:  # the jobs load the model themselves, from the file's [model] table
        spec = tomllib.loads(path.read_text())["model"]
        weights = spec.get("weights")
        model = ModelRecipe(organism=spec["organism"], device=args.device, dtype=args.dtype,
                            weights=None if weights is None else str((path.parent / weights).resolve()))
    try:
        results = run_sweep(model, cfg["task"], cfg["analyses"], cfg["degradation"], cfg["levels"],
                            out=cfg["out"] / "sweep", seed=cfg["seed"], progress=not args.quiet,
                            executor=executor)
    except SweepJobsFailed as err:
        sys.stderr.write(f"interp: error: {err}\n")
        return 1
    results.save(cfg["out"] / "results")
    sys.stdout.write(f"report: {rebuild_report(cfg['out'])}\n")
    return 0


def _organism_table(rows: list[tuple[str, str]], width: int | None = None) -> str:
    """Names in one column as wide as the longest, each description beside its name: wrapped to
    ``width`` (default: the terminal's, when stdout is one) under its own column, else one line per
    organism (for scripts reading the output)."""
    import shutil
    import textwrap

    if width is None and sys.stdout.isatty():
        width = max(60, shutil.get_terminal_size((100, 24)).columns)
    col = max(len(name) for name, _ in rows) + 2
    lines = []
    for name, text in rows:
        text = " ".join(text.split())
        wrapped = textwrap.wrap(text, width=max(30, width - col)) if width else [text]
        lines.append(f"{name:<{col}}{(wrapped or [''])[0]}")
        lines.extend(" " * col + part for part in wrapped[1:])
    return "\n".join(lines) + "\n"


def _organisms(args: argparse.Namespace) -> int:
    from interp import organisms

    if args.organisms_command == "list":
        sys.stdout.write(_organism_table([(name, organisms.describe(name)) for name in organisms.names()]))
        return 0
    mod = organisms.module(args.name)
    if not hasattr(mod, "train"):
        raise ValueError(f"Organism {args.name!r} is pretrained elsewhere and has no training recipe.")
    _check_out_dir(args.out, "--out")  # before training, not after
    mod.train(out_dir=args.out, seed=args.seed, progress=not args.quiet)
    sys.stdout.write(f"wrote {args.name} weights to {args.out}\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
