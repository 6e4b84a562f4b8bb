"""Reading a dissolution off a table: the crossing of an effect's criterion along evaluated levels.

A circuit claim ("these heads implement induction") is expected to hold at the trained weights w0 and
to dissolve as the weights are degraded further: the *dissolution point* is where an effect metric
crosses a criterion θ, either absolute (``threshold=0.9``: recovered ≥ 0.9) or relative to the
metric's value at w0 (``relative=0.5``: θ = 0.5·b). Larger metric values are stronger; for a
relative criterion with a negative baseline the inequalities flip.

Decision rule per evaluated level, from the 95% interval of the metric over chains (``Results``:
Student-t, or a percentile bootstrap for bounded metrics such as ``recovered``): *held* when the lower
bound is ≥ θ, *lost* when the upper bound is < θ, *undecided* otherwise (more chains narrow that
zone); a level whose calibration failed or whose chains all failed is *failed* and decides nothing.

The crossing's interval is [last held level, first lost level] (:func:`crossing`; the chains'
intervals decide each end) and its point estimate interpolates the mean's crossing of θ linearly in
log level between neighbours. Both are reported on the level's axis, in the measured loss increase
ΔL (nats/token), in nβ, and in behavioural divergence where the sweep recorded it. Outcomes:
``"dissolves"``, ``"never_holds"`` (θ not met at w0), ``"holds_throughout"`` (held at the largest
level), ``"lost_below_range"`` (lost already at the smallest level) and ``"undecided"`` (no lost
level, the last one undecided).

This module only reads: :func:`read_dissolution` (``Results.dissolution``) interpolates the crossing
on an existing sweep's grid (``interpolated=True``) along the measured ΔL or the behavioural
divergence from w0 (``axis="divergence"``: the default for a model without a loss, e.g. MiniLM);
:func:`compare_dissolutions` compares two points on the ΔL axis, or on the divergence when both lie
on it. Searching for a crossing by running sweeps is :func:`interp.dissolution`
(``interp.dissolve``), which builds its result with :func:`dissolution_from_points`.

Example::

    >>> import pandas as pd
    >>> points = pd.DataFrame({"x": [0.0, 0.1, 0.3], "delta_loss": [0.0, 0.1, 0.3],
    ...                        "nbeta": [float("inf"), 900.0, 300.0], "divergence": [0.0, 0.05, 0.2],
    ...                        "mean": [1.0, 0.95, 0.5], "decision": ["held", "held", "lost"]})
    >>> c = crossing(points, theta=0.9)
    >>> c["outcome"], c["x_ci"]
    ('dissolves', (0.1, 0.3))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from interp._levels import divergence_units, resolve_axis

__all__ = ["Dissolution", "DissolutionComparison", "crossing", "compare_dissolutions", "read_dissolution",
           "dissolution_from_points", "points_from_summary", "check_criterion", "POINT_COLUMNS"]

OUTCOMES = ("dissolves", "never_holds", "holds_throughout", "lost_below_range", "undecided")
#: the columns of a dissolution's ``points``
POINT_COLUMNS = ["x", "level", "target_delta_loss", "nbeta", "sigma", "delta_loss", "divergence", "mean",
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


def dissolution_from_points(points: pd.DataFrame, *, analysis: str, metric: str, degradation: str, criterion: str,
                 theta: float, sign: float, baseline: float, axis: str, tolerance: float,
                 interpolated: bool, divergence_units: str = "", increasing: bool = True) -> Dissolution:
    """The :class:`Dissolution` of evaluated ``points`` (``x``: the search variable, growing with
    degradation; ``increasing=False``: the axis is its reciprocal, as nβ is of the temperature)."""
    c = crossing(points, theta, sign)
    lo, hi = c["x_ci"]
    # resolved: every gap between evaluated neighbours inside [lo, hi] is within 1 + tolerance (an
    # interval wider than that is the chains' undecided zone, which only more chains narrow)
    xs = sorted(float(v) for v in points["x"] if lo <= v <= hi)
    converged = bool(c["outcome"] == "dissolves" and lo > 0 and math.isfinite(tolerance)
                     and all(b / a <= 1 + tolerance for a, b in zip(xs, xs[1:])))
    to_axis = (lambda v: v) if increasing else (lambda v: 1.0 / v if v else float("inf"))
    level_ci = (lo, hi) if increasing else tuple(sorted((to_axis(lo), to_axis(hi))))
    return Dissolution(
        analysis=analysis, metric=metric, degradation=degradation, criterion=criterion, threshold=theta,
        baseline=baseline, outcome=c["outcome"], axis=axis, level=to_axis(c["x"]), level_ci=level_ci,
        delta_loss=c["delta_loss"], delta_loss_ci=c["delta_loss_ci"], nbeta=c["nbeta"],
        nbeta_ci=tuple(sorted(c["nbeta_ci"])), divergence=c["divergence"], divergence_ci=c["divergence_ci"],
        tolerance=tolerance, converged=converged, interpolated=interpolated,
        points=points.sort_values("x", ignore_index=True).reindex(columns=POINT_COLUMNS),
        divergence_units=divergence_units or "",
    )


def check_criterion(threshold: float | None, relative: float | None, baseline: float) -> tuple[str, float, float]:
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
    by_level: dict[Any, float] = {}  # each level's mean divergence over its draws, one pass for all levels
    if "divergence" in table:
        at = table[(table["degradation"] == degradation) & ~table["baseline"]].drop_duplicates(
            ["level_index", "chain", "draw"])
        by_level = pd.to_numeric(at["divergence"], errors="coerce").groupby(at["level_index"]).mean().to_dict()
    for _, r in s.iterrows():
        base = r["level_index"] < 0
        divergence = 0.0 if base else float(by_level.get(r["level_index"], float("nan")))
        rows.append({
            "x": 0.0 if base else x(r), "level": r["level"], "target_delta_loss": r.get("target_delta_loss"),
            "nbeta": float("inf") if base else r.get("nbeta"), "sigma": 0.0 if base else r.get("sigma"),
            "delta_loss": 0.0 if base else r["delta_loss"], "divergence": divergence, "mean": r["mean"],
            "ci_low": r["ci_low"], "ci_high": r["ci_high"], "ci_method": r.get("ci_method"),
            "n_chains": r["n_chains"], "status": r.get("status", "ok"), "reason": r.get("reason"),
            "decision": _decide(r["mean"], r["ci_low"], r["ci_high"], theta, sign, r.get("status", "ok")),
        })
    return pd.DataFrame(rows, columns=POINT_COLUMNS)


def read_dissolution(results: Any, analysis: str, metric: str, *, threshold: float | None = None,
                 relative: float | None = None, degradation: str | None = None,
                 axis: str | None = None) -> Dissolution:
    """:meth:`Results.dissolution`: the crossing interpolated on an existing grid, along the measured
    ΔL or the behavioural divergence (``axis``; ``None``: ΔL where the sweep measured a loss, else the
    divergence)."""
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
    criterion, theta, sign = check_criterion(threshold, relative, baseline)
    points = points_from_summary(s, None, results.table, analysis, metric, degradation, theta, sign,
                                 lambda r: float(r[axis]))
    points = points[(points["x"] == 0) | (points["x"] > 0)]  # a failed level with no draws has no ΔL
    return dissolution_from_points(points, analysis=analysis, metric=metric, degradation=degradation, criterion=criterion,
                        theta=theta, sign=sign, baseline=baseline, axis=axis, tolerance=float("nan"),
                        interpolated=True, divergence_units=divergence_units(results.meta, degradation))


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
