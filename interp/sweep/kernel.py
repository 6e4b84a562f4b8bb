"""The per-draw kernel every executor shares: input checks, seeding, setup, loss, one draw's rows.

Seeds: the analyses are set up on w0 with their randomness seeded by s(seed, SETUP_KEY) and each draw
(ℓ, c, d) is analysed under s(seed, ℓ, c, d), s = the first 8 bytes of SHA-256 of the JSON list, so
every executor, in any process, and a resumed run reproduce the same numbers. The caller's RNG state
is left untouched (``torch.random.fork_rng``).

Axes: each draw's loss L(w) is measured on one fixed evaluation batch (``eval_rows`` test rows), so
every row sits on ΔL = L(w) − L(w0) (nats/token), comparable across degradations; on the same rows
its behavioural divergence from w0 (``interp.divergence.DivergenceMeter``): the mean KL(p_w0 ‖ p_w)
per scored token (nats/token) for a model with an LM head, else the mean squared change of the final
hidden state over its mean squared norm at w0 (a task without a loss, e.g. MiniLM, where ΔL is NaN
and the divergence is the axis). 0 at the baseline.

Example::

    >>> from interp.sweep.kernel import seed_for
    >>> seed_for(0, (1, 0, 2)) == seed_for(0, (1, 0, 2))
    True
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from interp.analysis import Analysis, metric_kind, wrap_analysis
from interp.checks import check_number
from interp.sweep.describe import describe, describe_value
from interp.sweep.identity import data_fingerprint, objective_fingerprint
from interp.sweep.store import BASELINE_KEY, SETUP_KEY, Store, asdict, check_out, jsonable

__all__ = [
    "weights_digest", "seed_for", "check_inputs", "check_protocol", "check_degradation", "check_metric", "interactive", "prepare_analyses", "setup_analyses", "eval_batch",
    "measure_loss", "measure_divergence", "divergence_meter", "divergence_spec", "analyse", "sweep_config",
    "degradation_name", "level_info", "draw_record", "describe", "describe_value",
    "data_fingerprint", "objective_fingerprint",
    "make_results", "close_draws", "expected_draws", "calibration_progress",
]

log = logging.getLogger(__name__)


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer's bytes, in state-dict order (bit-identity check)."""
    h = hashlib.sha256()
    for name, t in model.state_dict(keep_vars=False).items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def seed_for(seed: int, key: tuple[int, int, int]) -> int:
    """A per-draw seed for the analyses' own randomness, the same on a resumed run."""
    digest = hashlib.sha256(json.dumps([seed, *key]).encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**63)


def fork_rng() -> Any:
    """``torch.random.fork_rng`` over the CPU and every initialised CUDA device."""
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    return torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if cuda else [])


# ----------------------------------------------------------------------------------- input checks
def check_inputs(model: Any, task: Any, degradation: Any, levels: Any, *, out: Any, seed: Any,
                 eval_rows: Any, progress: Any) -> list[Any]:
    """Every argument of ``run_sweep`` checked before any work (and before ``config.json`` is
    written); returns the levels as a list."""
    owner = "run_sweep"
    if isinstance(degradation, type):
        raise ValueError(f"{owner}(degradation={degradation.__name__}): pass an instance, e.g. "
                         f"{degradation.__name__}(), not the class.")
    check_protocol(degradation)
    if isinstance(task, (str, bytes)) or not callable(getattr(task, "tensors", None)):
        raise ValueError(f"{owner}(task={task!r}): task must be an interp.Task (with tensors(...) and "
                         "loss(...)), e.g. the task interp.organisms.load('induction') returns.")
    if isinstance(levels, (str, bytes, dict)) or not isinstance(levels, Sequence) and not _iterable(levels):
        raise ValueError(f"{owner}(levels={levels!r}): levels must be a list of the degradation's levels, "
                         "e.g. levels=[0.05, 0.1].")
    levels = list(levels)
    if not levels:
        raise ValueError(f"{owner}(levels=[]): levels is empty: give at least one degradation level.")
    for i, level in enumerate(levels):
        check_level(degradation, level, i)
    check_number(owner, "eval_rows", eval_rows, integer=True, fix="Use e.g. eval_rows=256 (test rows of the "
                 "fixed batch every draw's loss is measured on).")
    check_number(owner, "seed", seed, integer=True, zero_ok=True, fix="Use e.g. seed=0.")
    if not isinstance(progress, bool):
        raise ValueError(f"{owner}(progress={progress!r}): progress must be True or False.")
    if getattr(task, "has_loss", True):
        n_test = _n_rows(task, "test")
        if n_test is not None and eval_rows > n_test:
            log.info("eval_rows=%d > the %d test rows of task %r: the loss is measured on all %d.",
                     eval_rows, n_test, getattr(task, "name", task), n_test)
    if out is not None:
        if not isinstance(out, (str, Path)) and not hasattr(out, "__fspath__"):
            raise ValueError(f"{owner}(out={out!r}): out must be a directory path (str or Path) or None.")
        check_out(Path(out))
    if isinstance(model, torch.nn.Module):
        check_degradation(degradation, model)
    return levels


def check_protocol(degradation: Any) -> None:
    """A ValueError naming the members of the Degradation protocol that ``degradation`` lacks."""
    from interp.degradations import Degradation, LevelAxis, registered_degradations

    if isinstance(degradation, Degradation) and isinstance(degradation.level_axis, LevelAxis):
        return
    members = ("level_axis", "draws", "check_level", "replicates", "check", "expected_draws", "search_level",
               "chain_jobs", "work", "plan_costs", "equal_loss_role")
    missing = [m for m in members if not hasattr(degradation, m)]
    if not isinstance(getattr(degradation, "level_axis", None), LevelAxis):
        missing = sorted(set(missing) | {"level_axis"})
    raise ValueError(f"run_sweep(degradation={degradation!r}): not a degradation: it lacks {missing} of the "
                     "interp.degradations.Degradation protocol. Pass one of "
                     f"{', '.join(f'{n}(...)' for n in registered_degradations())}, or subclass Degradation "
                     "(its defaults fill the optional members).")


def check_degradation(degradation: Any, model: torch.nn.Module) -> None:
    """What a degradation would reject at its first draw, checked against the model before any work
    (so before ``config.json`` and the baseline are written, and the fixed rerun is not refused as
    another configuration): its ``check(model)`` (``restrict`` patterns and masks, hook points,
    checkpoint files resolved against the model). Touches no weight."""
    degradation.check(model)


def _iterable(x: Any) -> bool:
    try:
        iter(x)
    except TypeError:
        return False
    return True


def _n_rows(task: Any, split: str) -> int | None:
    try:
        return len(task.dataset[split])
    except Exception:  # noqa: BLE001 - a task without a datasets split: nothing to compare with
        return None


def check_level(degradation: Any, level: Any, index: int = 0) -> None:
    """A level the degradation can use (its ``check_level``), before any work; the error names the
    level's place in ``levels``."""
    try:
        degradation.check_level(level)
    except ValueError as err:
        raise ValueError(f"run_sweep(levels[{index}]={level!r}): {err}") from None


def interactive() -> bool:
    """Whether this process talks to a person (a terminal on stderr, or a Jupyter/IPython kernel):
    where progress bars are on by default (``interp.dissolution(progress=None)``)."""
    import builtins
    import sys

    if getattr(builtins, "__IPYTHON__", False):  # an IPython shell or a Jupyter kernel runs this process
        return True
    stream = getattr(sys, "stderr", None)
    return bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())


def check_metric(model: Any, task: Any, analysis: Any, metric: str, seed: int) -> None:
    """``metric`` is one the analysis returns, checked before the first level's sweep: from its
    declared effects and collaterals, else from one call at the trained weights (after its setup,
    seeded as a sweep seeds it)."""
    declared = (*getattr(analysis, "effects", ()), *getattr(analysis, "collaterals", ()))
    if metric in declared:
        return
    if not hasattr(model, "state_dict"):
        return  # a recipe (Ray): the first sweep's baseline checks it
    digest = weights_digest(model)
    setup_analyses([analysis], model, task, seed, digest)
    with fork_rng():
        torch.manual_seed(seed_for(seed, BASELINE_KEY))
        got = analysis(model, task)
    if weights_digest(model) != digest:
        raise RuntimeError(f"Analysis {analysis.name!r} changed the model's weights at the trained weights; an "
                           "analysis must leave them as they are.")
    names = sorted(got) if isinstance(got, dict) else []
    if metric not in names:
        raise ValueError(f"metric={metric!r}: {analysis.name} returns {names} at the trained weights"
                         + (f" (declared effects {list(getattr(analysis, 'effects', ()))})" if declared else "")
                         + f"; name one of them, e.g. metric={(names or ['recovered'])[0]!r}.")


def prepare_analyses(analyses: Any) -> list[Analysis]:
    """The analyses as :class:`~interp.analysis.Analysis` objects (plain functions and objects without
    ``setup``/``effects``/``collaterals`` wrapped once), with unique names."""
    if isinstance(analyses, (str, bytes)) or callable(analyses) or not _iterable(analyses):
        raise ValueError(f"run_sweep(analyses={analyses!r}): analyses must be a list of analyses "
                         "(objects or functions fn(model, task) -> dict of metrics), e.g. [ResidualNorms()].")
    wrapped = [wrap_analysis(a) for a in analyses]
    if not wrapped:
        raise ValueError("run_sweep(analyses=[]): give at least one analysis.")
    names = [a.name for a in wrapped]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"Analysis names must be unique; repeated: {dupes}. Give each a distinct name.")
    return wrapped


# ------------------------------------------------------------------------------- per-draw kernel
def setup_analyses(analyses: Sequence[Analysis], model: torch.nn.Module, task: Any, seed: int,
                   digest: str | None = None) -> None:
    """Every analysis's ``setup`` on the clean weights, its randomness seeded from ``seed`` (so every
    executor, in any process, sets up the same state); the caller's RNG state is left untouched. With
    ``digest`` (w0's), an analysis whose setup changed the weights is named in a RuntimeError."""
    for a in analyses:
        with fork_rng():
            torch.manual_seed(seed_for(seed, SETUP_KEY))
            a.setup(model, task)
        if digest is not None and weights_digest(model) != digest:
            raise RuntimeError(
                f"Analysis {a.name!r} changed the model's weights in setup(); an analysis must leave them "
                "as they are (work on a copy, or restore them in a finally). The sweep did not start."
            )


def eval_batch(task: Any, eval_rows: int) -> dict[str, torch.Tensor] | None:
    """The sweep's fixed evaluation batch (None for a task without a loss)."""
    return task.tensors("test", rows=eval_rows) if getattr(task, "has_loss", True) else None


def measure_loss(model: torch.nn.Module, task: Any, batch: dict[str, torch.Tensor] | None) -> float:
    """The loss on the sweep's fixed evaluation batch (NaN for a task without a loss)."""
    if batch is None:
        return float("nan")
    with torch.no_grad():
        return float(task.loss(model, batch))


def divergence_spec(task: Any) -> dict[str, str]:
    """The kind and units of the sweep's divergence column: KL(p_w0 ‖ p_w) per scored token for a
    task with a loss (an LM head), else the normalised MSE of the final hidden state (MiniLM)."""
    from interp.divergence import DIVERGENCE_UNITS

    kind = "kl" if getattr(task, "has_loss", True) else "mse"
    return {"kind": kind, "units": DIVERGENCE_UNITS[kind]}


def divergence_meter(model: torch.nn.Module, task: Any, eval_rows: int) -> Any:
    """A :class:`~interp.divergence.DivergenceMeter` built at w0 on the sweep's fixed evaluation rows
    (the first ``eval_rows`` test rows); ``None``, with a warning, for a model it cannot measure (the
    column is then NaN, never a made-up number)."""
    from interp.divergence import DivergenceMeter

    try:
        return DivergenceMeter.for_task(model, task, eval_rows=eval_rows, kind=divergence_spec(task)["kind"])
    except (ValueError, TypeError, RuntimeError, AttributeError, KeyError) as err:
        log.warning("The divergence from w0 cannot be measured on this model and task (%s: %s); the "
                    "divergence column is NaN.", type(err).__name__, err)
        return None


def measure_divergence(meter: Any, model: torch.nn.Module) -> float:
    """The behavioural divergence from w0 at the current weights (NaN without a meter)."""
    return float("nan") if meter is None else float(meter(model))


def _metric_value(analysis: Analysis, metric: Any, value: Any) -> float:
    """One metric value as a float, or a ValueError naming the analysis and the metric."""
    if not isinstance(metric, str):
        raise ValueError(f"Analysis {analysis.name!r} returned a metric named {metric!r}; metric names must be "
                         "strings.")
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    elif hasattr(value, "item") and getattr(value, "size", None) == 1:  # a numpy scalar / 1-element array
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        shape = f" of shape {tuple(value.shape)}" if hasattr(value, "shape") else ""
        raise ValueError(
            f"Analysis {analysis.name!r} returned {type(value).__name__}{shape} {_short(value)} for metric "
            f"{metric!r}; each metric must be one real number (a float, an int or a 1-element tensor). "
            "Return one metric per number, e.g. {'head_0': ..., 'head_1': ...}."
        )
    return float(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_declared(analysis: Analysis, metrics: dict) -> None:
    """A ValueError when the baseline call of ``analysis`` lacks one of its declared effects or
    collaterals (verdicts, survival and the report read those names: a missing one selects nothing)."""
    declared = (*getattr(analysis, "effects", ()), *getattr(analysis, "collaterals", ()))
    missing = [m for m in declared if m not in metrics]
    if missing:
        raise ValueError(
            f"Analysis {analysis.name!r} declares {missing} in its effects/collaterals but its call at the trained "
            f"weights returned only {sorted(metrics)[:12]}; return every declared metric, or declare the names "
            "it returns."
        )


def analyse(analyses: Sequence[Analysis], model: torch.nn.Module, task: Any, key: tuple[int, int, int],
            level: Any, loss: float, base_loss: float, seed: int, deg_name: str,
            divergence: float = float("nan")) -> list[dict]:
    """The table rows of one draw (or the baseline): every analysis, seeded per draw."""
    rows = []
    for a in analyses:
        with fork_rng():  # the caller's RNG state is left untouched
            torch.manual_seed(seed_for(seed, key))
            metrics = a(model, task)
        if not isinstance(metrics, dict):
            raise ValueError(
                f"Analysis {a.name!r} returned {type(metrics).__name__} {_short(metrics)}; an analysis returns "
                "a dict of named metrics, e.g. {'loss': 0.12}."
            )
        for metric, value in metrics.items():
            value = _metric_value(a, metric, value)
            if not math.isfinite(value):
                log.warning("Analysis %r metric %r is %s at draw %s: kept, counted in n_nonfinite, never "
                            "averaged away.", a.name, metric, value, list(key))
            rows.append({
                "degradation": deg_name, "level": jsonable(level), "level_index": key[0],
                "chain": key[1], "draw": key[2], "baseline": key == BASELINE_KEY,
                "loss": loss, "delta_loss": loss - base_loss, "divergence": divergence, "analysis": a.name,
                "metric": metric, "kind": metric_kind(a, metric), "value": value,
            })
        if key == BASELINE_KEY:
            check_declared(a, metrics)
    return rows


class _CalibrationTap(logging.Filter):
    """Shows the sampler's calibration rounds on the sweep's progress bar (from the records the
    calibration logs), and lets through only the records the logger would have let through."""

    def __init__(self, bar: Any, level: Any, threshold: int) -> None:
        super().__init__()
        self.bar, self.level, self.threshold, self.rounds = bar, level, threshold, 0

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if msg.startswith("calibration"):
            self.rounds += 1
            detail = msg.split(": ", 1)[-1]
            self.bar.set_postfix_str(f"calibrating {self.level}: round {self.rounds} done ({detail}); "
                                     f"round {self.rounds + 1} running", refresh=True)
        return record.levelno >= self.threshold


class calibration_progress:
    """Context manager: while a level's first draw is awaited (a ``LossIncrease`` level calibrates
    its nβ in pilot rounds first, minutes on a large model), the bar says so and shows each round's
    nβ and ΔL against the target; nothing changes with ``enabled=False``."""

    def __init__(self, bar: Any, level: Any, enabled: bool) -> None:
        self.bar, self.level, self.enabled = bar, level, enabled
        self.logger = logging.getLogger("interp.degradations")

    def __enter__(self) -> calibration_progress:
        if not self.enabled:
            return self
        from interp.degradations import LossIncrease

        if isinstance(self.level, LossIncrease):
            self.bar.set_postfix_str(f"calibrating {self.level}: round 1 running", refresh=True)
        self.old_level = self.logger.level
        self.tap = _CalibrationTap(self.bar, self.level, self.logger.getEffectiveLevel())
        self.logger.addFilter(self.tap)
        if not self.logger.isEnabledFor(logging.INFO):
            self.logger.setLevel(logging.INFO)  # so the rounds are logged; the tap drops what was dropped
        return self

    def sampling(self) -> None:
        """The first draw arrived: calibration (if any) is over."""
        if self.enabled:
            self.bar.set_postfix_str("", refresh=False)

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self.logger.removeFilter(self.tap)
            self.logger.setLevel(self.old_level)


def close_draws(draws: Any) -> None:
    """Close a degradation's draw iterator now (its ``finally`` restores the weights and removes its
    hooks), never leaving that to garbage collection: a traceback kept alive (IPython's
    ``sys.last_value``) would keep a suspended generator, and the degraded weights, alive."""
    close = getattr(draws, "close", None)
    if callable(close):
        close()


# ------------------------------------------------------------------------------ identity, records
def sweep_config(task: Any, analyses: Sequence[Analysis], degradation: Any, levels: Sequence[Any],
                 seed: int, eval_rows: int, digest: str) -> dict[str, Any]:
    """What identifies a sweep (its ``config.json``): the executor is not part of it. Besides the
    configuration it holds fingerprints of the task's data (``task_data``) and, for a posterior
    sampled on an objective of its own, of the objective's data (``objective_data``), so a resume
    with other data under the same names is refused (``interp.sweep.store``)."""
    config = {
        "task": getattr(task, "name", repr(task)),
        "task_data": data_fingerprint(task),
        "analyses": [describe(a) for a in analyses],
        "degradation": describe(degradation),
        "levels": jsonable(levels),
        "seed": seed,
        "eval_rows": eval_rows,
        "weights": digest,
        "divergence": divergence_spec(task),
        "level_axis": {"name": degradation.level_axis.name, "units": degradation.level_axis.units},
    }
    objective = objective_fingerprint(degradation)
    if objective is not None:
        config["objective_data"] = objective
    return config


def degradation_name(degradation: Any) -> str:
    return getattr(degradation, "name", type(degradation).__name__)


def level_info(draws: Any) -> dict[str, Any]:
    """What a degradation's draw iterator reports about its level once exhausted: the sampler's
    calibration and per-chain diagnostics (failed chains with their reasons), else nothing."""
    info = {}
    for attr in ("calibration", "chains"):
        value = getattr(draws, attr, None)
        if value is not None:
            info[attr] = asdict(value)
    return info


def draw_record(draw: Any) -> dict[str, Any]:
    """A draw's own fields (B, ε, step, its loss, ...) minus the level, which the table holds."""
    fields = dataclasses.asdict(draw) if dataclasses.is_dataclass(draw) else {
        k: v for k, v in vars(draw).items() if not k.startswith("_")
    }
    return {k: jsonable(v) for k, v in fields.items() if k != "level"}


def versions() -> dict[str, str]:
    """Versions of Python and the packages that determine the numbers."""
    import importlib.metadata
    import platform

    out = {"python": platform.python_version()}
    for pkg in ("interp", "torch", "transformer-lens", "transformers", "numpy"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def make_results(store: Store, config: dict[str, Any], extra: dict[str, Any] | None = None) -> Any:
    """The :class:`~interp.results.Results` of a finished (or partly finished) store."""
    from interp.results import Results

    meta = {"config": config, "versions": versions(), "levels": dict(sorted(store.level_info.items())),
            "divergence_units": config.get("divergence", {}).get("units"), **(extra or {})}
    return Results.from_records(store.records(), meta)
