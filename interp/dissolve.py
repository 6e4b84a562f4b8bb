"""Searching for a dissolution: the degradation level at which an effect is lost, found by running sweeps.

(The module is ``interp.dissolve`` so that ``interp.dissolution`` stays the function.)

The dissolution point, its decision rule (held / lost / undecided from the 95% interval over chains)
and its outcomes are defined in :mod:`interp.crossing`, which reads a crossing off evaluated levels
(``Results.dissolution`` reads one off an existing grid). This module chooses the levels to evaluate.

Search (:func:`dissolution`), along one of the search axes the degradation declares
(``degradation.level_axis.search``: a loss increase Δ or nβ for the tempered posterior, σ for noise,
whatever a user's degradation declares): on the search variable u, the axis value where larger values
degrade more, else its reciprocal (the temperature 1/nβ), from ``start`` step by ``factor`` until a
held and a lost level bracket the crossing (or ``limits`` are reached), then bisect the widest gap
between decided or undecided neighbours (geometric midpoints on a log axis, arithmetic on a linear
one) until every gap is within a factor ``1 + tolerance`` or ``max_levels`` levels were evaluated.
Every level is one :func:`~interp.run_sweep` (its own sub-directory of ``out``: the records are a
sweep's, and rerunning resumes), with the level and degradation the degradation's ``search_level``
gives for the value (the tempered posterior starts a loss increase's calibration from the nβ
interpolated log-log between the already calibrated neighbours, so it usually converges in a round).

``converged``: every gap between evaluated neighbours inside the crossing's interval is within
``1 + tolerance`` (the interval itself may be wider: that is the chains' undecided zone).

Example (a search of several sweeps: skipped as a docstring example for its cost;
``tests/interp/test_dissolution.py`` runs searches on the induction organism)::

    >>> import interp
    >>> d = interp.dissolution(model, task, scrub, interp.TemperedPosterior(chains=8, n_draws=1),
    ...                        metric="recovered", threshold=0.9, out="runs/dissolve")  # doctest: +SKIP
    >>> print(d.verdict("correct induction hypothesis"))                 # doctest: +SKIP
    correct induction hypothesis: holds (recovered ≥ 0.9) up to ΔL 0.73 [0.54, 1.1] under
    TemperedPosterior (nβ ≈ 151)
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from interp.crossing import POINT_COLUMNS, Dissolution, check_criterion, dissolution_from_points, points_from_summary

__all__ = ["dissolution"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Plan:
    """A checked search: the axis, its range on the search variable u, and the criterion's inputs."""

    axis: Any  # the degradation's SearchAxis
    start: float
    u_low: float
    u_high: float
    factor: float
    tolerance: float
    max_levels: int

    def to_u(self, value: float) -> float:
        """The search variable: the value where it grows with degradation, else its reciprocal."""
        return float(value) if self.axis.increasing else 1.0 / value

    def from_u(self, u: float) -> float:
        return self.to_u(u)  # the reciprocal is its own inverse

    def midpoint(self, a: float, b: float) -> float:
        return math.sqrt(a * b) if self.axis.scale == "log" else (a + b) / 2


def _number(name: str, value: Any, fix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={value!r}: must be a finite number > 0 {fix}.")


def _plan(degradation: Any, axis: str | None, start: float | None, limits: Any, factor: Any, tolerance: Any,
          max_levels: Any) -> _Plan:
    """The search axis the degradation declares, with ``start``/``limits`` defaulted and checked."""
    owner = type(degradation).__name__
    level_axis = getattr(degradation, "level_axis", None)
    if level_axis is None or not callable(getattr(level_axis, "search_axis", None)):
        raise ValueError(f"degradation={degradation!r}: not a degradation (no level_axis); pass one of the "
                         "interp.degradations classes or a subclass of interp.degradations.Degradation.")
    search = level_axis.search_axis(owner, axis)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 < tolerance < 10:
        raise ValueError(f"tolerance={tolerance!r}: a relative width in (0, 10), e.g. 0.15 (±15%).")
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 1:
        raise ValueError(f"factor={factor!r}: must be > 1, e.g. 3.")
    if isinstance(max_levels, bool) or not isinstance(max_levels, int) or max_levels < 2:
        raise ValueError(f"max_levels={max_levels!r}: an integer ≥ 2 (levels evaluated).")
    start = search.start if start is None else start
    if limits is not None and (isinstance(limits, (str, bytes)) or not hasattr(limits, "__len__") or len(limits) != 2):
        raise ValueError(f"limits={limits!r}: give (low, high) on the {search.name} axis, e.g. {search.limits}.")
    low, high = search.limits if limits is None else limits
    for n, v in (("start", start), ("limits[0]", low), ("limits[1]", high)):
        _number(n, v, f"on the {search.name} axis")
    if not low < high:
        raise ValueError(f"limits=({low!r}, {high!r}): reversed or empty; give (low, high) with low < high, e.g. "
                         f"limits=({min(low, high)!r}, {max(low, high)!r}).")
    if not low <= start <= high:
        raise ValueError(f"start={start!r}: must lie within limits=({low!r}, {high!r}).")
    replicates = degradation.replicates()
    if replicates < 2:
        raise ValueError(f"{owner}: a level's interval needs ≥ 2 independent draws per level (replicates() is "
                         f"{replicates}: chains for the posterior, draws per level for noise); e.g. chains=4.")
    u_low, u_high = sorted((float(low), float(high)) if search.increasing else (1.0 / low, 1.0 / high))
    return _Plan(search, float(start), u_low, u_high, float(factor), float(tolerance), max_levels)


class _Search:
    """The levels evaluated so far and how to evaluate the next one (one sweep per level)."""

    def __init__(self, plan: _Plan, run: Any, degradation: Any, analysis: Any, metric: str,
                 threshold: float | None, relative: float | None, root: Path | None) -> None:
        self.plan, self.run, self.degradation, self.analysis, self.metric = plan, run, degradation, analysis, metric
        self.threshold, self.relative, self.root = threshold, relative, root
        self.rows: list[dict[str, Any]] = []
        self.baseline: float | None = None
        self.criterion, self.theta, self.sign = "threshold", float("nan"), 1.0
        self.deg_name, self.units = type(degradation).__name__, ""

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=POINT_COLUMNS).sort_values("x", ignore_index=True)

    def evaluated(self) -> list[dict[str, float]]:
        """The levels run so far, as the degradation's ``search_level`` reads them."""
        return [{"value": self.plan.from_u(float(r["x"])), "nbeta": float(r["nbeta"]),
                 "delta_loss": float(r["delta_loss"]), "divergence": float(r["divergence"])}
                for r in self.rows if float(r["x"]) > 0]

    def evaluate(self, u: float) -> None:
        """Run the sweep of one level (u on the search variable) and record its decision."""
        axis, value, name = self.plan.axis.name, self.plan.from_u(u), self.analysis.name
        level, deg = self.degradation.search_level(axis, value, self.evaluated())
        sub = None if self.root is None else self.root / f"{axis}={value:.6g}"
        res = self.run(deg, level, sub)
        s = res.summary()
        sel = s[(s["analysis"] == name) & (s["metric"] == self.metric)]
        if sel.empty:
            raise ValueError(f"metric={self.metric!r}: {name} returned {sorted(s[s['analysis'] == name]['metric'])}.")
        self.deg_name = str(sel["degradation"].iloc[0])
        if self.baseline is None:
            self.baseline = float(sel.loc[sel["level_index"] < 0, "mean"].iloc[0])
            self.criterion, self.theta, self.sign = check_criterion(self.threshold, self.relative, self.baseline)
        pts = points_from_summary(s, None, res.table, name, self.metric, self.deg_name, self.theta, self.sign,
                                  lambda r: u)
        if not self.rows:
            self.rows.append(pts[pts["x"] == 0].iloc[0].to_dict())
        row = pts[pts["x"] > 0].iloc[0].to_dict()
        if axis in row and not math.isfinite(float(row[axis])):
            row[axis] = value  # the level's own number where the table could not tell it (an NBeta level)
        self.rows.append(row)
        from interp._levels import divergence_units

        self.units = divergence_units(res.meta, None)
        log.info("dissolution %s/%s at %s=%.4g: ΔL %.4g, %s %.4g [%.4g, %.4g] -> %s", name, self.metric, axis, value,
                 row["delta_loss"], self.metric, row["mean"], row["ci_low"], row["ci_high"], row["decision"])

    def bracket(self) -> bool:
        """Evaluate one level towards a bracket [held, lost]; False when there is nothing to do."""
        p = self.frame()
        if p.iloc[0]["decision"] != "held":
            return False  # never holds: nothing to search
        lv = p[p["x"] > 0]
        lost, held = lv[lv["decision"] == "lost"], lv[lv["decision"] == "held"]
        if lost.empty:  # up until a level is lost (or the limit)
            top = float(lv["x"].max())
            if top >= self.plan.u_high * (1 - 1e-9) or lv.iloc[-1]["decision"] == "failed":
                return False
            self.evaluate(min(top * self.plan.factor, self.plan.u_high))
            return True
        if held.empty or float(held["x"].min()) > float(lost["x"].min()):  # down until one holds
            bottom = float(lv["x"].min())
            if bottom <= self.plan.u_low * (1 + 1e-9):
                return False
            self.evaluate(max(bottom / self.plan.factor, self.plan.u_low))
            return True
        return False

    def bisect(self) -> bool:
        """Evaluate the midpoint of the widest gap inside [last held, first lost]; False when resolved."""
        p = self.frame()
        lv = p[p["x"] > 0]
        lost = lv[lv["decision"] == "lost"]
        if p.iloc[0]["decision"] != "held" or lost.empty:
            return False
        hi = float(lost["x"].min())
        held = lv[(lv["decision"] == "held") & (lv["x"] < hi)]
        if held.empty:
            return False  # lost below the range
        lo = float(held["x"].max())
        xs = [lo, *sorted(float(v) for v in lv["x"] if lo < v < hi), hi]
        ratio, a, b = max((b / a, a, b) for a, b in zip(xs, xs[1:]))
        if ratio <= 1 + self.plan.tolerance:
            return False
        self.evaluate(self.plan.midpoint(a, b))
        return True

    def result(self) -> Dissolution:
        return dissolution_from_points(
            self.frame(), analysis=self.analysis.name, metric=self.metric, degradation=self.deg_name,
            criterion=self.criterion, theta=self.theta, sign=self.sign, baseline=float(self.baseline),
            axis=self.plan.axis.name, tolerance=self.plan.tolerance, interpolated=False,
            divergence_units=self.units, increasing=self.plan.axis.increasing)


def _one_analysis(analysis: Any, metric: Any) -> Any:
    """The analysis as an :class:`~interp.analysis.Analysis` (a plain function is one too)."""
    from interp.analysis import wrap_analysis

    if isinstance(analysis, (list, tuple, set, dict)):
        raise ValueError(f"analysis={analysis!r}: give one analysis (an Analysis or a function fn(model, task) -> "
                         "dict), not a collection; search each analysis with its own dissolution call.")
    if not isinstance(metric, str):
        raise ValueError(f"metric={metric!r}: name one of the analysis's metrics, e.g. 'recovered'.")
    return wrap_analysis(analysis)


def dissolution(
    model: Any,
    task: Any,
    analysis: Any,
    degradation: Any,
    *,
    metric: str,
    threshold: float | None = None,
    relative: float | None = None,
    tolerance: float = 0.15,
    out: str | os.PathLike | None = None,
    axis: str | None = None,
    start: float | None = None,
    limits: tuple[float, float] | None = None,
    factor: float = 3.0,
    max_levels: int = 10,
    seed: int = 0,
    eval_rows: int = 256,
    progress: bool | None = None,
    executor: Any = "local",
) -> Dissolution:
    """Find where ``analysis``'s ``metric`` is lost along ``degradation`` (see the module docstring).

    Args:
        model: the model, as for :func:`~interp.run_sweep`.
        task: the task, as for :func:`~interp.run_sweep`.
        analysis: one analysis (an object, or a plain function named by its ``__name__``), as for
            :func:`~interp.run_sweep`.
        degradation: a degradation with a searchable level axis and ≥ 2 independent draws per level
            (``replicates()``): a :class:`~interp.degradations.TemperedPosterior` (≥ 2 chains),
            :class:`~interp.degradations.WeightNoise` / ``ActivationNoise`` (≥ 2 draws per level), or
            a user's (``interp.degradations.Degradation``).
        metric: the analysis's metric (larger is stronger).
        threshold: absolute criterion θ (e.g. 0.9 for recovered ≥ 0.9). Give this or ``relative``.
        relative: θ as a fraction of the metric at the trained weights, in (0, 1].
        tolerance: stop when the crossing's interval is within a factor ``1 + tolerance`` on the axis.
        out: directory: each level's sweep goes to ``out/AXIS=VALUE``; rerunning resumes.
        axis: one of the degradation's search axes (``level_axis.search``; ``None``: the first):
            ``"loss_increase"`` (the posterior's default: LossIncrease levels), ``"nbeta"`` (NBeta
            levels, no calibration) or ``"sigma"`` (noise).
        start: first level on the axis (default: the axis's, e.g. 0.1 nats, nβ 1000, σ 0.05).
        limits: ``(low, high)`` on the axis (default: the axis's, e.g. (0.003, 3) nats, (1, 1e6) nβ,
            (1e-4, 10) σ).
        factor: step between bracketing levels (> 1).
        max_levels: most levels evaluated.
        seed: passed to every :func:`~interp.run_sweep`.
        eval_rows: passed to every :func:`~interp.run_sweep`.
        progress: progress bars of every :func:`~interp.run_sweep` (``tqdm.auto``); ``None``
            (default): on in interactive use (a terminal or a notebook), off otherwise.
        executor: passed to every :func:`~interp.run_sweep` (with ``executor="ray"`` each level's
            chains run as Ray jobs; the search itself stays here).

    Returns:
        :class:`~interp.crossing.Dissolution`.
    """
    from interp.sweep import kernel, run_sweep

    plan = _plan(degradation, axis, start, limits, factor, tolerance, max_levels)
    analysis = _one_analysis(analysis, metric)
    progress = kernel.interactive() if progress is None else progress
    if not isinstance(progress, bool):
        raise ValueError(f"progress={progress!r}: True, False or None (None: on in interactive use).")
    if threshold is None and relative is None:
        raise ValueError("give threshold= (absolute, e.g. 0.9) or relative= (fraction of the baseline).")
    check_criterion(threshold, relative, 1.0)  # the criterion's own checks, before any sweep
    kernel.check_metric(model, task, analysis, metric, seed)

    def run(deg: Any, level: Any, sub: Path | None) -> Any:
        return run_sweep(model, task, [analysis], deg, [level], out=sub, seed=seed, eval_rows=eval_rows,
                         progress=progress, executor=executor)

    search = _Search(plan, run, degradation, analysis, metric, threshold, relative,
                     None if out is None else Path(out))
    search.evaluate(plan.to_u(plan.start))
    n = 1
    while n < plan.max_levels and search.bracket():
        n += 1
    while n < plan.max_levels and search.bisect():
        n += 1
    return search.result()
