"""Dissolution: the degradation level at which an analysis's effect is lost, found by adaptive search.

(The module is ``interp.dissolve`` so that ``interp.dissolution`` stays the function.)

A circuit claim ("these heads implement induction") is expected to hold at the trained weights w0 and
to dissolve as the weights are degraded further: the *dissolution point* is where an effect metric
crosses a criterion θ, either absolute (``threshold=0.9``: recovered ≥ 0.9) or relative to the
metric's value at w0 (``relative=0.5``: θ = 0.5·b). Larger metric values are stronger; for a
relative criterion with a negative baseline the inequalities flip.

Decision rule per evaluated level, from the 95% interval of the metric over chains (``Results``:
Student-t, or a percentile bootstrap for bounded metrics such as ``recovered``): *held* when the lower
bound is ≥ θ, *lost* when the upper bound is < θ, *undecided* otherwise (more chains narrow that
zone); a level whose calibration failed or whose chains all failed is *failed* and decides nothing.

Search (:func:`dissolution`): on a log scale of the degradation's level (the target loss increase Δ
of :class:`~interp.degradations.LossIncrease` levels or the temperature 1/nβ for the tempered
posterior, σ for noise): from ``start``, step by ``factor`` until a held and a lost level bracket the
crossing (or ``limits`` are reached), then bisect (geometric midpoints) the widest gap between
decided or undecided neighbours until every gap is within ``1 + tolerance`` or ``max_levels`` levels
were evaluated. Every level is one :func:`~interp.run_sweep` (its own sub-directory of ``out``: the
records are a sweep's, and rerunning resumes); a LossIncrease level's calibration starts from the nβ
interpolated (log-log) between the already calibrated neighbours, so it usually converges in a round.

The crossing's interval is [last held level, first lost level] (the chains' intervals decide each
end; the search's bracket is its width) and its point estimate interpolates the mean's crossing of θ
linearly in log level between neighbours. Both are reported on the search axis, in the measured loss
increase ΔL (nats/token), in nβ, and in behavioural divergence where the sweep recorded it.
``converged``: every gap between evaluated neighbours inside the interval is within ``1 + tolerance``
(the interval itself may be wider: that is the chains' undecided zone). Outcomes:
``"dissolves"``, ``"never_holds"`` (θ not met at w0), ``"holds_throughout"`` (held at the largest
level searched), ``"lost_below_range"`` (lost already at the smallest level searched) and
``"undecided"`` (no lost level, the last one undecided).

``Results.dissolution`` does the same from an existing sweep's grid, marked ``interpolated=True``,
along the measured ΔL or the behavioural divergence from w0 (``axis="divergence"``: the default for a
model without a loss, e.g. MiniLM); :func:`compare_dissolutions` compares two points on the ΔL axis,
or on the divergence when both lie on it (two hypotheses, or one under two degradations at equal ΔL).

Example::

    >>> import interp                                                    # doctest: +SKIP
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["Dissolution", "DissolutionComparison", "dissolution", "compare_dissolutions", "crossing"]

log = logging.getLogger(__name__)

OUTCOMES = ("dissolves", "never_holds", "holds_throughout", "lost_below_range", "undecided")
#: default (start, (low, high)) per search axis
_DEFAULTS = {"loss_increase": (0.1, (0.003, 3.0)), "nbeta": (1000.0, (1.0, 1e6)), "sigma": (0.05, (1e-4, 10.0))}
_POINT_COLUMNS = ["x", "level", "target_delta_loss", "nbeta", "sigma", "delta_loss", "divergence", "mean",
                  "ci_low", "ci_high", "ci_method", "n_chains", "decision", "status", "reason"]


@dataclass(frozen=True, eq=False)
class Dissolution:
    """Where an effect is lost along a degradation (see the module docstring).

    ``level``/``level_ci`` are on ``axis`` (``"loss_increase"``: target Δ; ``"nbeta"``: nβ;
    ``"sigma"``: σ; ``"delta_loss"``: measured ΔL of a grid; ``"divergence"``: measured
    behavioural divergence of a grid); ``delta_loss``, ``nbeta`` and
    ``divergence`` give the same crossing in those units (NaN where not recorded). ``converged``: the
    search resolved the interval to ``1 + tolerance`` between evaluated neighbours. ``points``: every
    evaluated level (``x`` its value on the axis, the metric's mean and interval, ``decision``), the
    trained weights first.
    """

    analysis: str
    metric: str
    degradation: str
    criterion: str
    threshold: float
    baseline: float
    outcome: str
    axis: str
    level: float
    level_ci: tuple[float, float]
    delta_loss: float
    delta_loss_ci: tuple[float, float]
    nbeta: float
    nbeta_ci: tuple[float, float]
    divergence: float
    divergence_ci: tuple[float, float]
    tolerance: float
    converged: bool
    interpolated: bool
    points: pd.DataFrame = field(repr=False)
    divergence_units: str = ""

    def criterion_text(self) -> str:
        return f"{self.metric} ≥ {self.threshold:.3g}" + (
            f" = {self.threshold / self.baseline:.2g}× its value at w0" if self.criterion == "fraction"
            and self.baseline else "")

    def _along(self) -> tuple[str, str, str, tuple[float, float]]:
        """``(label, units, column, interval)`` of the axis a verdict speaks along: the divergence for a
        grid read along it, or for a search whose levels have no finite ΔL but a divergence (a model
        without a loss); else ΔL (units left unsaid, as everywhere: nats/token)."""
        evaluated = self.points[self.points["x"] > 0]

        def finite(column: str) -> bool:
            return bool(np.isfinite(pd.to_numeric(evaluated[column], errors="coerce").to_numpy(float)).any())
        if self.axis == "divergence" or (len(evaluated) and not finite("delta_loss") and finite("divergence")):
            return "divergence", self.divergence_units, "divergence", self.divergence_ci
        return "ΔL", "", "delta_loss", self.delta_loss_ci

    def verdict(self, name: str | None = None) -> str:
        """One line: ``NAME: holds (CRITERION) up to ΔL x [lo, hi] under DEGRADATION`` (``up to
        divergence x [lo, hi] UNITS`` for a grid read along the divergence), or the other outcomes
        said as such."""
        name = name or self.analysis
        crit, deg = self.criterion_text(), self.degradation
        label, units, column, ci = self._along()
        u = f" {units}" if units else ""
        dl = self.points[self.points["x"] > 0][column]
        if self.outcome == "never_holds":
            return (f"{name}: never holds ({self.metric} = {self.baseline:.3g} < {self.threshold:.3g} at "
                    f"the trained weights)")
        where = "grid" if self.interpolated else "range searched"
        if self.outcome == "holds_throughout":
            top = float(dl.max()) if len(dl) else float("nan")
            return f"{name}: holds ({crit}) over the whole {where}, up to {label} {top:.3g}{u}, under {deg}"
        if self.outcome == "lost_below_range":
            first = "first grid level" if self.interpolated else "smallest level searched"
            return (f"{name}: lost ({crit} fails) already at the {first}, {label} {ci[1]:.3g}{u}, "
                    f"under {deg}")
        if self.outcome == "undecided" and not math.isfinite(self.baseline):
            return f"{name}: undecided ({self.metric} is not finite at the trained weights)"
        if self.outcome == "undecided":
            held = ci[0]
            start = f"held ({crit}) up to {label} {held:.3g}{u} under {deg}, undecided beyond" if held > 0 else (
                f"undecided ({crit}) from the first level on under {deg}")
            return f"{name}: {start} (intervals straddle the threshold: more chains needed)"
        lo, hi = ci
        text = f"{name}: holds ({crit}) up to {label} {getattr(self, column):.2g} [{lo:.2g}, {hi:.2g}]{u} under {deg}"
        if math.isfinite(self.nbeta):
            text += f" (nβ ≈ {self.nbeta:.3g})"
        if column == "delta_loss" and math.isfinite(self.divergence):
            units = f" {self.divergence_units}" if self.divergence_units else ""
            text += f", divergence {self.divergence:.2g}{units}"
        elif column == "divergence" and math.isfinite(self.delta_loss):
            text += f", ΔL {self.delta_loss:.2g}"
        if self.interpolated:
            text += ", interpolated between grid levels"
        elif not self.converged:
            text += f" (search stopped before resolving it to ±{self.tolerance:.0%}: raise max_levels)"
        return text

    def table(self) -> pd.DataFrame:
        """The evaluated points, rounded for display."""
        return self.points.round(4)


@dataclass(frozen=True, eq=False)
class DissolutionComparison:
    """Two dissolution points compared on the measured ΔL axis: ``more_robust`` is ``"first"`` or
    ``"second"`` when one interval lies wholly above the other, else ``None``; ``statement`` says it."""

    first: Dissolution
    second: Dissolution
    more_robust: str | None
    statement: str


# ----------------------------------------------------------------------------------------- crossing
def _decide(mean: float, low: float, high: float, theta: float, sign: float, status: str = "ok") -> str:
    if status == "failed":
        return "failed"
    if not (math.isfinite(low) and math.isfinite(high)):
        return "undecided"
    if sign * (low if sign > 0 else high) >= sign * theta:
        return "held"
    if sign * (high if sign > 0 else low) < sign * theta:
        return "lost"
    return "undecided"


def _interp(a: float, b: float, frac: float, log: bool) -> float:
    if not (math.isfinite(a) and math.isfinite(b)):
        return b if frac >= 0.5 and math.isfinite(b) else (a if math.isfinite(a) else float("nan"))
    if log and a > 0 and b > 0:
        return float(math.exp(math.log(a) + frac * (math.log(b) - math.log(a))))
    return float(a + frac * (b - a))


def crossing(points: pd.DataFrame, theta: float, sign: float = 1.0) -> dict[str, Any]:
    """The crossing of θ along ``points`` (one row per level, ``x`` > 0 increasing with degradation;
    ``x = 0`` the trained weights, with ``mean`` and a ``decision``): outcome, the interval
    [last held, first lost] and the point estimate on ``x``, ``delta_loss``, ``nbeta``, ``divergence``."""
    p = points.sort_values("x", ignore_index=True)
    nan2 = (float("nan"), float("nan"))
    out: dict[str, Any] = {"outcome": "undecided", **{k: float("nan") for k in ("x", "delta_loss", "nbeta",
                                                                                 "divergence")},
                           **{f"{k}_ci": nan2 for k in ("x", "delta_loss", "nbeta", "divergence")}}
    if p.iloc[0]["decision"] != "held":  # a NaN value at w0 decides nothing
        out["outcome"] = "never_holds" if p.iloc[0]["decision"] == "lost" else "undecided"
        return out
    lost = p[p["decision"] == "lost"]
    if lost.empty:
        top = p.iloc[-1]
        out["outcome"] = "holds_throughout" if top["decision"] == "held" else "undecided"
        held = p[p["decision"] == "held"].iloc[-1]
        for k in ("x", "delta_loss", "nbeta", "divergence"):
            out[f"{k}_ci"] = (float(held[k]), float("inf") if k != "nbeta" else 0.0)
        return out
    i_hi = int(lost.index[0])
    held = p[(p["decision"] == "held") & (p.index < i_hi)]
    i_lo = int(held.index[-1])
    out["outcome"] = "lost_below_range" if i_lo == 0 else "dissolves"
    for k in ("x", "delta_loss", "nbeta", "divergence"):
        out[f"{k}_ci"] = (float(p.loc[i_lo, k]), float(p.loc[i_hi, k]))
    # point estimate: the first fall of the mean below θ inside the bracket, linear in log x
    d = sign * (p["mean"].to_numpy(dtype=float) - theta)
    j = next((j for j in range(i_lo, i_hi) if d[j] >= 0 > d[j + 1]), None)
    if j is None:  # the means do not cross θ inside (noise): the bracket's (geometric) middle
        a, b, frac = p.iloc[i_lo], p.iloc[i_hi], 0.5
    else:
        a, b, frac = p.iloc[j], p.iloc[j + 1], d[j] / (d[j] - d[j + 1])
    log_x = a["x"] > 0
    for k, log_k in (("x", True), ("delta_loss", False), ("nbeta", True), ("divergence", False)):
        out[k] = _interp(float(a[k]), float(b[k]), frac, log_k and log_x)
    return out


def _from_points(points: pd.DataFrame, *, analysis: str, metric: str, degradation: str, criterion: str,
                 theta: float, sign: float, baseline: float, axis: str, tolerance: float,
                 interpolated: bool, divergence_units: str = "") -> Dissolution:
    c = crossing(points, theta, sign)
    lo, hi = c["x_ci"]
    # resolved: every gap between evaluated neighbours inside [lo, hi] is within 1 + tolerance (an
    # interval wider than that is the chains' undecided zone, which only more chains narrow)
    xs = sorted(float(v) for v in points["x"] if lo <= v <= hi)
    converged = bool(c["outcome"] == "dissolves" and lo > 0 and math.isfinite(tolerance)
                     and all(b / a <= 1 + tolerance for a, b in zip(xs, xs[1:])))
    to_axis = (lambda v: 1.0 / v if v else float("inf")) if axis == "nbeta" else (lambda v: v)
    level_ci = tuple(sorted((to_axis(lo), to_axis(hi)))) if axis == "nbeta" else (lo, hi)
    return Dissolution(
        analysis=analysis, metric=metric, degradation=degradation, criterion=criterion, threshold=theta,
        baseline=baseline, outcome=c["outcome"], axis=axis, level=to_axis(c["x"]), level_ci=level_ci,
        delta_loss=c["delta_loss"], delta_loss_ci=c["delta_loss_ci"], nbeta=c["nbeta"],
        nbeta_ci=tuple(sorted(c["nbeta_ci"])), divergence=c["divergence"], divergence_ci=c["divergence_ci"],
        tolerance=tolerance, converged=converged, interpolated=interpolated,
        points=points.sort_values("x", ignore_index=True).reindex(columns=_POINT_COLUMNS),
        divergence_units=divergence_units or "",
    )


def _criterion(threshold: float | None, relative: float | None, baseline: float) -> tuple[str, float, float]:
    """``(criterion, θ, sign)``; validated."""
    if (threshold is None) == (relative is None):
        raise ValueError(f"threshold={threshold!r}, relative={relative!r}: give exactly one criterion, "
                         "threshold (absolute, e.g. 0.9) or relative (a fraction of the baseline, e.g. 0.5).")
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
            raise ValueError(f"threshold={threshold!r}: must be a finite number in the metric's units, e.g. 0.9.")
        return "threshold", float(threshold), 1.0
    if isinstance(relative, bool) or not isinstance(relative, (int, float)) or not 0 < relative <= 1:
        raise ValueError(f"relative={relative!r}: must be in (0, 1], e.g. 0.5 (half the baseline).")
    return "fraction", float(relative) * baseline, (1.0 if baseline >= 0 else -1.0)


def points_from_summary(summary: pd.DataFrame, levels: pd.DataFrame | None, table: pd.DataFrame,
                        analysis: str, metric: str, degradation: str, theta: float, sign: float,
                        x: Callable[[pd.Series], float]) -> pd.DataFrame:
    """One row per level of ``summary`` (baseline first, ``x = 0``) with the decision at θ."""
    s = summary[(summary["degradation"] == degradation) & (summary["analysis"] == analysis)
                & (summary["metric"] == metric)]
    rows = []
    div = table[(table["degradation"] == degradation) & ~table["baseline"]] if "divergence" in table else None
    for _, r in s.iterrows():
        base = r["level_index"] < 0
        divergence = 0.0 if base else float("nan")
        if div is not None and not base:
            at = div[div["level_index"] == r["level_index"]].drop_duplicates(["chain", "draw"])
            divergence = float(pd.to_numeric(at["divergence"], errors="coerce").mean()) if len(at) else divergence
        rows.append({
            "x": 0.0 if base else x(r), "level": r["level"], "target_delta_loss": r.get("target_delta_loss"),
            "nbeta": float("inf") if base else r.get("nbeta"), "sigma": 0.0 if base else r.get("sigma"),
            "delta_loss": 0.0 if base else r["delta_loss"], "divergence": divergence, "mean": r["mean"],
            "ci_low": r["ci_low"], "ci_high": r["ci_high"], "ci_method": r.get("ci_method"),
            "n_chains": r["n_chains"], "status": r.get("status", "ok"), "reason": r.get("reason"),
            "decision": _decide(r["mean"], r["ci_low"], r["ci_high"], theta, sign, r.get("status", "ok")),
        })
    return pd.DataFrame(rows, columns=_POINT_COLUMNS)


def from_results(results: Any, analysis: str, metric: str, *, threshold: float | None = None,
                 relative: float | None = None, degradation: str | None = None,
                 axis: str | None = None) -> Dissolution:
    """:meth:`Results.dissolution`: the crossing interpolated on an existing grid, along the measured
    ΔL or the behavioural divergence (``axis``; ``None``: ΔL where the sweep measured a loss, else the
    divergence)."""
    from interp._levels import resolve_axis

    axis = resolve_axis(results.table, axis)
    s = results.summary()
    names = sorted(s["degradation"].unique())
    if degradation is None:
        if len(names) != 1:
            raise ValueError(f"degradation=None: these results hold {names}; name one, e.g. "
                             f"degradation={names[0]!r}.")
        degradation = names[0]
    sel = s[(s["degradation"] == degradation) & (s["analysis"] == analysis) & (s["metric"] == metric)]
    if sel.empty:
        pairs = sorted(set(zip(s["analysis"], s["metric"])))
        raise ValueError(f"analysis={analysis!r}, metric={metric!r} under {degradation!r}: not in these "
                         f"results; (analysis, metric) pairs: {pairs[:12]}{' …' if len(pairs) > 12 else ''}.")
    baseline = float(sel.loc[sel["level_index"] < 0, "mean"].iloc[0])
    criterion, theta, sign = _criterion(threshold, relative, baseline)
    points = points_from_summary(s, None, results.table, analysis, metric, degradation, theta, sign,
                                 lambda r: float(r[axis]))
    points = points[(points["x"] == 0) | (points["x"] > 0)]  # a failed level with no draws has no ΔL
    return _from_points(points, analysis=analysis, metric=metric, degradation=degradation, criterion=criterion,
                        theta=theta, sign=sign, baseline=baseline, axis=axis, tolerance=float("nan"),
                        interpolated=True, divergence_units=_divergence_units(results.meta, degradation))


def _divergence_units(meta: dict[str, Any], degradation: str | None) -> str:
    """The units of a sweep's divergence column, from its metadata (empty when not recorded)."""
    from interp._levels import divergence_units

    return divergence_units(meta, degradation)


# ------------------------------------------------------------------------------------------- search
def _axis_of(degradation: Any, axis: str | None) -> str:
    name = type(degradation).__name__
    allowed = {"TemperedPosterior": ("loss_increase", "nbeta"), "WeightNoise": ("sigma",),
               "ActivationNoise": ("sigma",)}.get(name)
    if allowed is None:
        raise ValueError(f"degradation={name}: dissolution searches a continuous level; use "
                         "TemperedPosterior, WeightNoise or ActivationNoise (checkpoints are a fixed grid: "
                         "run a sweep and use Results.dissolution).")
    axis = axis or allowed[0]
    if axis not in allowed:
        raise ValueError(f"axis={axis!r}: {name} searches along {allowed}.")
    return axis


def _with_nbeta(sampler: Any, nbeta: float) -> Any:
    """A copy of a TemperedPosterior whose calibration starts from ``nbeta``."""
    kwargs = {n: getattr(sampler, n) for n in type(sampler).field_names()}
    kwargs["nbeta"] = float(nbeta)
    return type(sampler)(**kwargs)


def _nbeta_hint(points: pd.DataFrame, target: float) -> float | None:
    """nβ for a target Δ interpolated log-log between calibrated neighbours (ΔL ≈ λ/nβ beyond them)."""
    p = points[(points["x"] > 0) & np.isfinite(points["nbeta"].astype(float))].sort_values("x")
    if p.empty:
        return None
    x, b = np.log(p["x"].to_numpy(float)), np.log(p["nbeta"].to_numpy(float))
    t = math.log(target)
    if len(p) == 1 or t <= x[0] or t >= x[-1]:
        i = 0 if t <= x[0] else -1
        return float(math.exp(b[i] - (t - x[i])))
    return float(math.exp(np.interp(t, x, b)))


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
        degradation: a :class:`~interp.degradations.TemperedPosterior` (≥ 2 chains), or
            :class:`~interp.degradations.WeightNoise` / ``ActivationNoise`` (≥ 2 draws per level).
        metric: the analysis's metric (larger is stronger).
        threshold: absolute criterion θ (e.g. 0.9 for recovered ≥ 0.9). Give this or ``relative``.
        relative: θ as a fraction of the metric at the trained weights, in (0, 1].
        tolerance: stop when the crossing's interval is within a factor ``1 + tolerance`` on the axis.
        out: directory: each level's sweep goes to ``out/AXIS=VALUE``; rerunning resumes.
        axis: ``"loss_increase"`` (default for the posterior: LossIncrease levels), ``"nbeta"``
            (NBeta levels, no calibration) or ``"sigma"`` (noise).
        start: first level on the axis (default 0.1 nats, nβ 1000, σ 0.05).
        limits: ``(low, high)`` on the axis (default (0.003, 3) nats, (1, 1e6) nβ, (1e-4, 10) σ).
        factor: step between bracketing levels (> 1).
        max_levels: most levels evaluated.
        seed: passed to every :func:`~interp.run_sweep`.
        eval_rows: passed to every :func:`~interp.run_sweep`.
        progress: progress bars of every :func:`~interp.run_sweep` (``tqdm.auto``); ``None``
            (default): on in interactive use (a terminal or a notebook), off otherwise.
        executor: passed to every :func:`~interp.run_sweep` (with ``executor="ray"`` each level's
            chains run as Ray jobs; the search itself stays here).

    Returns:
        :class:`Dissolution`.
    """
    import interp
    from interp.degradations import LossIncrease, NBeta

    from interp.analysis import wrap_analysis

    kernel = interp.sweep.kernel  # through the package, as run_sweep: the sweeps call back into results
    axis = _axis_of(degradation, axis)
    if isinstance(analysis, (list, tuple, set, dict)):
        raise ValueError(f"analysis={analysis!r}: give one analysis (an Analysis or a function fn(model, task) -> "
                         "dict), not a collection; search each analysis with its own dissolution call.")
    analysis = wrap_analysis(analysis)  # a plain function is an analysis too (named by its __name__)
    name = analysis.name
    if not isinstance(metric, str):
        raise ValueError(f"metric={metric!r}: name one of the analysis's metrics, e.g. 'recovered'.")
    progress = kernel.interactive() if progress is None else progress
    if not isinstance(progress, bool):
        raise ValueError(f"progress={progress!r}: True, False or None (None: on in interactive use).")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 < tolerance < 10:
        raise ValueError(f"tolerance={tolerance!r}: a relative width in (0, 10), e.g. 0.15 (±15%).")
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 1:
        raise ValueError(f"factor={factor!r}: must be > 1, e.g. 3.")
    if isinstance(max_levels, bool) or not isinstance(max_levels, int) or max_levels < 2:
        raise ValueError(f"max_levels={max_levels!r}: an integer ≥ 2 (levels evaluated).")
    default_start, default_limits = _DEFAULTS[axis]
    start = default_start if start is None else start
    if limits is not None and (isinstance(limits, (str, bytes)) or not hasattr(limits, "__len__") or len(limits) != 2):
        raise ValueError(f"limits={limits!r}: give (low, high) on the {axis} axis, e.g. {default_limits}.")
    low, high = default_limits if limits is None else limits
    for n, v in (("start", start), ("limits[0]", low), ("limits[1]", high)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"{n}={v!r}: must be a finite number > 0 on the {axis} axis.")
    if not low < high:
        raise ValueError(f"limits=({low!r}, {high!r}): reversed or empty; give (low, high) with low < high, e.g. "
                         f"limits=({min(low, high)!r}, {max(low, high)!r}).")
    if not low <= start <= high:
        raise ValueError(f"start={start!r}: must lie within limits=({low!r}, {high!r}).")
    spread = getattr(degradation, "chains", None) or getattr(degradation, "draws_per_level", None) or 0
    if spread < 2:
        raise ValueError(f"{type(degradation).__name__}: a level's interval needs ≥ 2 chains (or draws per "
                         "level for noise) to decide held / lost; e.g. chains=4.")
    if threshold is None and relative is None:
        raise ValueError("give threshold= (absolute, e.g. 0.9) or relative= (fraction of the baseline).")
    _criterion(threshold, relative, 1.0)  # the criterion's own checks, before any sweep
    kernel.check_metric(model, task, analysis, metric, seed)
    # the search variable u grows with degradation: Δ, σ, or the temperature 1/nβ
    def to_u(v: float) -> float:
        return 1.0 / v if axis == "nbeta" else float(v)

    from_u = to_u
    u_low, u_high = sorted((to_u(low), to_u(high)))
    root = None if out is None else Path(out)
    state: dict[str, Any] = {"baseline": None, "theta": None, "sign": 1.0, "criterion": None}
    rows: list[dict[str, Any]] = []

    def evaluate(u: float) -> None:
        value = from_u(u)
        if axis == "loss_increase":
            level, deg = LossIncrease(value), degradation
            hint = _nbeta_hint(pd.DataFrame(rows, columns=_POINT_COLUMNS), value) if rows else None
            if hint is not None:
                deg = _with_nbeta(degradation, hint)
        else:
            level, deg = (NBeta(value) if axis == "nbeta" else value), degradation
        sub = None if root is None else root / f"{axis}={value:.6g}"
        res = interp.run_sweep(model, task, [analysis], deg, [level], out=sub, seed=seed, eval_rows=eval_rows,
                               progress=progress, executor=executor)
        s = res.summary()
        sel = s[(s["analysis"] == name) & (s["metric"] == metric)]
        if sel.empty:
            raise ValueError(f"metric={metric!r}: {name} returned {sorted(s[s['analysis'] == name]['metric'])}.")
        if state["baseline"] is None:
            state["baseline"] = float(sel.loc[sel["level_index"] < 0, "mean"].iloc[0])
            state["criterion"], state["theta"], state["sign"] = _criterion(threshold, relative, state["baseline"])
            base = points_from_summary(s, None, res.table, name, metric, sel["degradation"].iloc[0],
                                       state["theta"], state["sign"], lambda r: u)
            rows.append(base[base["x"] == 0].iloc[0].to_dict())
        pts = points_from_summary(s, None, res.table, name, metric, sel["degradation"].iloc[0], state["theta"],
                                  state["sign"], lambda r: u)
        row = pts[pts["x"] > 0].iloc[0].to_dict()
        if axis == "nbeta" and not math.isfinite(float(row["nbeta"])):
            row["nbeta"] = value
        rows.append(row)
        state["degradation"] = str(sel["degradation"].iloc[0])
        state["units"] = _divergence_units(res.meta, None)
        log.info("dissolution %s/%s at %s=%.4g: ΔL %.4g, %s %.4g [%.4g, %.4g] -> %s", name, metric, axis, value,
                 row["delta_loss"], metric, row["mean"], row["ci_low"], row["ci_high"], row["decision"])

    def frame() -> pd.DataFrame:
        return pd.DataFrame(rows, columns=_POINT_COLUMNS).sort_values("x", ignore_index=True)

    evaluate(to_u(start))
    n = 1
    # bracket: up until a level is lost (or the limit), down until one holds (or the limit)
    while n < max_levels:
        p = frame()
        if p.iloc[0]["decision"] != "held":
            break  # never holds: nothing to search
        lv = p[p["x"] > 0]
        lost = lv[lv["decision"] == "lost"]
        held = lv[lv["decision"] == "held"]
        if lost.empty:
            top = float(lv["x"].max())
            if top >= u_high * (1 - 1e-9) or lv.iloc[-1]["decision"] == "failed":
                break
            evaluate(min(top * factor, u_high))
        elif held.empty or float(held["x"].min()) > float(lost["x"].min()):
            bottom = float(lv["x"].min())
            if bottom <= u_low * (1 + 1e-9):
                break
            evaluate(max(bottom / factor, u_low))
        else:
            break
        n += 1
    # bisect the widest gap inside [last held, first lost]
    while n < max_levels:
        p = frame()
        lv = p[p["x"] > 0]
        lost = lv[lv["decision"] == "lost"]
        if p.iloc[0]["decision"] != "held" or lost.empty:
            break
        hi = float(lost["x"].min())
        held = lv[(lv["decision"] == "held") & (lv["x"] < hi)]
        if held.empty:
            break  # lost below the range
        lo = float(held["x"].max())
        xs = [lo, *sorted(float(v) for v in lv["x"] if lo < v < hi), hi]
        gaps = [(b / a, a, b) for a, b in zip(xs, xs[1:])]
        ratio, a, b = max(gaps)
        if ratio <= 1 + tolerance:
            break
        evaluate(math.sqrt(a * b))
        n += 1
    if state["baseline"] is None:  # pragma: no cover (evaluate ran at least once)
        raise RuntimeError("no level was evaluated")
    return _from_points(frame(), analysis=name, metric=metric, degradation=state["degradation"],
                        criterion=state["criterion"], theta=state["theta"], sign=state["sign"],
                        baseline=state["baseline"], axis=axis, tolerance=float(tolerance), interpolated=False,
                        divergence_units=state.get("units", ""))


# ----------------------------------------------------------------------------------------- compare
def compare_dissolutions(first: Dissolution, second: Dissolution, names: tuple[str, str] | None = None
                         ) -> DissolutionComparison:
    """Compare two dissolution points on the measured ΔL axis, or on the behavioural divergence when
    both were read along it (two hypotheses, or one effect under two degradations at equal ΔL): one is
    more robust when its whole interval lies above the other's."""
    n1, n2 = names or (f"{first.analysis} under {first.degradation}", f"{second.analysis} under {second.degradation}")
    on_divergence = first.axis == second.axis == "divergence"
    label = "divergence" if on_divergence else "ΔL"

    def interval(d: Dissolution) -> tuple[float, float]:
        if d.outcome == "never_holds":
            return (0.0, 0.0)
        return d.divergence_ci if on_divergence else d.delta_loss_ci

    (a_lo, a_hi), (b_lo, b_hi) = interval(first), interval(second)
    more = "first" if a_lo > b_hi else "second" if b_lo > a_hi else None
    if more is None:
        statement = (f"{n1} ({label} [{a_lo:.3g}, {a_hi:.3g}]) and {n2} ({label} [{b_lo:.3g}, {b_hi:.3g}]): "
                     "intervals overlap, not distinguishable at these chains")
    else:
        (w, (w_lo, w_hi)), (l_, (l_lo, l_hi)) = (((n1, (a_lo, a_hi)), (n2, (b_lo, b_hi))) if more == "first"
                                                 else ((n2, (b_lo, b_hi)), (n1, (a_lo, a_hi))))
        statement = (f"{w} is more robust: lost beyond {label} [{w_lo:.3g}, {w_hi:.3g}], against "
                     f"[{l_lo:.3g}, {l_hi:.3g}] for {l_}")
    return DissolutionComparison(first, second, more, statement)
