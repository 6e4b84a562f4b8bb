"""Verdicts: one answer per finding from a sweep's results: where each effect dissolves, and whether a
clean window exists.

**Dissolution lines** (:func:`verdict_lines`): for every (analysis, effect metric) with a criterion,
the crossing on each degradation's grid (``Results.dissolution``: interpolated on the measured ΔL
axis), said as one line per analysis: "holds (recovered ≥ 0.9) up to ΔL 0.31 [0.25, 0.36] under
TemperedPosterior; under WeightNoise up to …", or "never holds", "holds over the whole grid: no
dissolution point reached (grid max ΔL y)", undecided and failed levels said as such; the same as a
table, one row per analysis × degradation (:func:`answer_table`).

Criteria that cannot be vacuous. A bounded effect has a *floor*, the value it takes with no finding
(:func:`effect_floor`): 0 for a recovered fraction, chance for an accuracy (the majority class's
share, which probes report as ``chance``). The relative criterion is measured from it:
θ = floor + f·(b − floor) (f = 0.5: half the way from chance to the value b at w0, so a binary probe
at 0.94 needs ≥ 0.72, not 0.47, which is below chance). A finding less than 10% of its range above
its floor at w0 (recovered < 0.1, a binary probe below 0.55) is *absent*: it never holds, whatever the
criterion. A grid whose largest ΔL is under 1% of the effect's loss gap (causal scrubbing's ``gap``)
gets a warning in the verdict: it cannot test the claim.

**Against weight noise** (:func:`compare_with_noise`): where the results hold a tempered posterior and
weight noise, each verdict says whether the effect *outlasts the weight-noise baseline at equal ΔL*
(its interval of dissolution, [last held, first lost] on the measured ΔL, wholly above the noise's),
does not (wholly below), or is undecided (the intervals overlap).

**Clean window** (:func:`clean_window`): the claim "at some temperature, intervening on the circuit
still changes the behaviour it is claimed for while disturbing the rest of the model *less* than at
the trained weights" is tested per analysis and level on the ratio R = effect / collateral (both
parts reported). Each chain's draws are averaged first; R's interval is a percentile bootstrap over
chains (chains resampled jointly for both parts, ratio of the resampled means, 2,000 resamples, fixed
seed; Efron & Tibshirani 1993). A level is *better than w0* when the interval's lower bound exceeds
the ratio at the trained weights (a single evaluation: its own seed-to-seed spread is not in the
interval), *worse* when its upper bound is below it. A better level is *attributable* to the hypothesis
only when its collateral fell more than the same collateral under the other analyses that measure it
(the other hypotheses, or a random one of the same size): a collateral that falls for every
intervention alike says the degraded model does less, not that the hypothesis is cleaner. Only metrics the analysis declares as
collaterals are used: analyses in ``analyses`` declare one only where the task marks predictions that
carry a trained behaviour outside the claim (a ``collateral_mask`` column), so a disturbance of
untrained predictions is never read as collateral.

Example (``study``: a small study's results, :class:`~interp.results.Results`)::

    >>> from interp.verdicts import answer_table, clean_window, verdict_lines
    >>> lines = verdict_lines(study, {"recovered": 0.9})
    >>> lines[1]
    'scrub_wrong_heads: never holds (recovered = 0.29 < 0.9 at the trained weights)'
    >>> answer_table(study, {"recovered": 0.9})[["analysis", "degradation", "answer"]].head(2)
            analysis        degradation answer
    0  scrub_correct  TemperedPosterior   lost
    1  scrub_correct        WeightNoise   lost
    >>> bool(clean_window(study)["better_than_w0"].any())   # no level is cleaner than w0
    False
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pandas as pd

from interp._cleanwindow import clean_window, clean_window_findings  # their public home: here

__all__ = ["clean_window", "clean_window_findings", "verdict_lines", "dissolutions", "main_metric", "survival",
           "answer_table", "compare_with_noise", "effect_floor", "check_thresholds", "Verdict"]

_SURVIVAL_COLUMNS = ["degradation", "analysis", "metric", "baseline", "criterion", "threshold", "held_at_baseline",
                     "axis", "last_held_level", "last_held_delta_loss", "last_held_divergence", "lost_level",
                     "lost_delta_loss", "lost_divergence", "clean_window_delta_loss", "clean_window_divergence",
                     "undecided_levels", "failed_levels"]


#: a finding is *absent at w0* when its value there lies less than this share of the metric's range
#: above its floor (recovered < 0.1; a binary probe's accuracy < chance + 0.1·(1 − chance))
ABSENT_SHARE = 0.1
#: a grid whose largest ΔL is below this share of the effect's loss gap cannot test the claim (the
#: induction hypothesis dissolves near 10% of its gap; a grid at 0.3% of it, as on an IOI model, says nothing)
REACH_SHARE = 0.01
#: metrics whose value at chance is recorded by the analysis beside them (``chance`` or ``METRIC_chance``)
_CHANCE_METRICS = ("chance", "majority")


def _is_recovered(metric: str) -> bool:
    name = str(metric).lower()
    return (name == "recovered" or name.endswith("_recovered")) and not name.endswith("loss_recovered")


def _is_accuracy(metric: str) -> bool:
    name = str(metric).lower()
    return name in ("accuracy", "acc") or name.endswith("_accuracy") or name.startswith(("acc_", "accuracy_"))


def effect_floor(results: Any, degradation: Any, analysis: Any, metric: str) -> tuple[float, str]:
    """``(floor, what)``: the value an effect metric takes when there is no finding: 0 for a recovered
    fraction (nothing recovered), chance for an accuracy (the analysis's ``chance``/``majority`` metric
    at w0, e.g. the majority-class share of a probe's test labels); ``(nan, reason)`` when unknown."""
    if _is_recovered(metric):
        return 0.0, "no recovery"
    if _is_accuracy(metric):
        t = results.table
        base = t[t["baseline"] & (t["degradation"] == degradation) & (t["analysis"] == analysis)]
        for name in (f"{metric}_chance", *_CHANCE_METRICS):
            v = base.loc[base["metric"] == name, "value"]
            if len(v) and math.isfinite(float(v.iloc[0])):
                return float(v.iloc[0]), "chance"
        return float("nan"), "chance not recorded by the analysis"
    return float("nan"), ""


class Verdict:
    """A dissolution point (:class:`~interp.crossing.Dissolution`, whose fields it exposes) read for a
    verdict: the criterion measured from the metric's floor (``floor``: 0 for a recovered fraction,
    chance for an accuracy), ``absent`` when the finding is not there at w0 (then ``outcome`` is
    ``"never_holds"`` whatever the criterion), ``grid_max`` (the largest level on the axis) and ``gap``
    (the effect's loss gap where the analysis records one, e.g. causal scrubbing's ``gap``) for the
    reach warning."""

    def __init__(self, dissolution: Any, *, floor: float = float("nan"), floor_name: str = "",
                 relative: float = float("nan"), absent: bool = False, grid_max: float = float("nan"),
                 gap: float = float("nan")) -> None:
        self.dissolution = dissolution
        self.floor, self.floor_name, self.relative = floor, floor_name, relative
        self.absent, self.grid_max, self.gap = absent, grid_max, gap
        self.outcome = "never_holds" if absent else dissolution.outcome

    def __getattr__(self, name: str) -> Any:  # the dissolution's fields and methods
        if name == "dissolution":
            raise AttributeError(name)
        return getattr(self.dissolution, name)

    def __repr__(self) -> str:
        return f"Verdict({self.analysis!r}, {self.metric!r}, {self.degradation!r}, outcome={self.outcome!r})"

    def criterion_text(self) -> str:
        if self.criterion == "fraction" and math.isfinite(self.floor) and self.floor != 0:
            return (f"{self.metric} ≥ {self.threshold:.3g} = {self.floor_name} {self.floor:.3g} + "
                    f"{self.relative:g}× (value at w0 − {self.floor_name})")
        return self.dissolution.criterion_text()

    def answer(self) -> str:
        """``holds``, ``lost``, ``undecided`` or ``never holds``."""
        return {"dissolves": "lost", "lost_below_range": "lost", "holds_throughout": "holds",
                "never_holds": "never holds"}.get(self.outcome, "undecided")

    def where(self) -> str:
        """``dissolves at ΔL x [lo, hi]`` or ``not reached: grid max ΔL y`` (units where not ΔL)."""
        label, units, column, ci = self._along()
        u = f" {units}" if units else ""
        if self.outcome == "dissolves":
            return f"dissolves at {label} {getattr(self, column):.2g} [{ci[0]:.2g}, {ci[1]:.2g}]{u}"
        if self.outcome == "lost_below_range":
            return f"lost at the first grid level, {label} {ci[1]:.2g}{u}"
        if self.outcome == "never_holds":
            return f"absent at w0 ({self.metric} = {self.baseline:.3g})"
        return f"not reached: grid max {label} {self.grid_max:.2g}{u}"

    def reach_warning(self) -> str:
        """Empty, or a loud note that the grid's ΔL is tiny against the effect's loss gap."""
        if self.outcome == "never_holds" or not (math.isfinite(self.gap) and math.isfinite(self.grid_max)):
            return ""
        _, _, column, _ = self._along()
        if column != "delta_loss" or self.grid_max >= REACH_SHARE * abs(self.gap):
            return ""
        return (f"WARNING: the grid moved the loss by at most ΔL {self.grid_max:.2g} nats/token against the "
                f"effect's gap of {abs(self.gap):.2g} nats: it cannot test this claim; use levels that reach "
                f"ΔL ≈ {abs(self.gap):.2g}")

    def verdict(self, name: str | None = None) -> str:
        name = name or self.analysis
        if self.absent:
            where = ("at or below" if self.baseline <= self.floor else
                     f"within {ABSENT_SHARE:.0%} of the range above")
            return (f"{name}: never holds ({self.metric} = {self.baseline:.3g} at the trained weights, {where} "
                    f"{self.floor_name} {self.floor:.3g}: there is no finding at w0 to track)")
        if self.outcome == "holds_throughout":
            label, units, _, _ = self._along()
            u = f" {units}" if units else ""
            text = (f"{name}: holds ({self.criterion_text()}) over the whole grid under {self.degradation}: no "
                    f"dissolution point reached (grid max {label} {self.grid_max:.3g}{u})")
        else:
            text = self.dissolution.verdict(name).replace(f"({self.dissolution.criterion_text()})",
                                                          f"({self.criterion_text()})", 1)
        warning = self.reach_warning()
        return f"{text}; {warning}" if warning else text


def check_thresholds(results: Any, thresholds: Mapping[str, float] | None) -> dict[str, float] | None:
    """``thresholds`` validated against the effect metrics of ``results``: a ValueError for a name that is
    not one (a typo would otherwise select nothing) or a value that is not a finite number."""
    if thresholds is None:
        return None
    if not isinstance(thresholds, Mapping):
        raise ValueError(f"thresholds={thresholds!r}: give a dict effect metric -> θ, e.g. {{'recovered': 0.9}}.")
    t = results.table
    effects = sorted(set(map(str, t.loc[t["kind"] == "effect", "metric"])))
    unknown = [k for k in thresholds if str(k) not in effects]
    if unknown:
        raise ValueError(f"thresholds: {unknown} are not effect metrics of these results (a typo selects "
                         f"nothing); effect metrics: {effects}.")
    out = {}
    for k, v in thresholds.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"thresholds[{k!r}]={v!r}: must be a finite number in the metric's units, e.g. 0.9.")
        out[str(k)] = float(v)
    return out


def dissolutions(results: Any, thresholds: Mapping[str, float] | None = None, *,
                 relative: float = 0.5, axis: str | None = None) -> list[Verdict]:
    """``Results.dissolution`` for every (degradation, analysis, effect metric): with the absolute
    threshold ``thresholds[metric]`` where given, else the ``relative`` criterion measured from the
    metric's floor (:func:`effect_floor`: θ = floor + relative·(b − floor), so a binary probe at
    accuracy 0.94 needs ≥ 0.72, not 0.47, which is below chance), interpolated along ``axis``
    (``None``: ΔL where the sweep measured a loss, else the behavioural divergence). A finding absent
    at w0 (less than :data:`ABSENT_SHARE` of the range above its floor) never holds, whatever the
    criterion. In the order the analyses returned their effects."""
    from interp._levels import resolve_axis

    thresholds = check_thresholds(results, thresholds)
    axis = resolve_axis(results.table, axis)
    if hasattr(results, "_memoised"):  # the report asks three times: once per contents of the results
        key = ("dissolutions", tuple((thresholds or {}).items()), float(relative), axis)
        return results._memoised(key, lambda: _dissolutions(results, thresholds, relative, axis))
    return _dissolutions(results, thresholds, relative, axis)


def _dissolutions(results: Any, thresholds: dict[str, float] | None, relative: float,
                  axis: str) -> list[Verdict]:
    t = results.table
    base_rows = t[t["baseline"]]
    draws = t[~t["baseline"]]
    out = []
    for r in base_rows[base_rows["kind"] == "effect"].drop_duplicates(
            ["degradation", "analysis", "metric"]).itertuples():
        b = float(r.value)
        floor, floor_name = effect_floor(results, r.degradation, r.analysis, r.metric)
        if thresholds and r.metric in thresholds:
            d = results.dissolution(r.analysis, r.metric, threshold=thresholds[r.metric],
                                    degradation=r.degradation, axis=axis)
        elif math.isfinite(floor) and floor != 0 and math.isfinite(b):
            theta = floor + relative * (b - floor)
            d = results.dissolution(r.analysis, r.metric, threshold=theta, degradation=r.degradation, axis=axis)
            d = replace(d, criterion="fraction")
        else:
            d = results.dissolution(r.analysis, r.metric, relative=relative, degradation=r.degradation,
                                    axis=axis)
        absent = bool(math.isfinite(floor) and math.isfinite(b) and b - floor < ABSENT_SHARE * (1.0 - floor))
        on = draws[(draws["degradation"] == r.degradation)][axis]
        grid_max = float(pd.to_numeric(on, errors="coerce").max()) if len(on) else float("nan")
        gap = base_rows[(base_rows["degradation"] == r.degradation) & (base_rows["analysis"] == r.analysis)
                        & (base_rows["metric"] == "gap")]["value"]
        v = Verdict(d, floor=floor, floor_name=floor_name, relative=relative, absent=absent,
                        grid_max=grid_max, gap=float(gap.iloc[0]) if len(gap) else float("nan"))
        out.append(v)
    return out


def main_metric(analysis: str, effects: list[str], thresholds: Mapping[str, float] | None = None,
                metrics: Mapping[str, str] | None = None) -> str:
    """The effect a verdict speaks about: ``metrics[analysis]``, else the first of ``thresholds`` (in
    its order) that the analysis has, else its first effect (in the order the analysis returns them,
    e.g. ``recovered`` before ``kl_recovered`` for causal scrubbing)."""
    if metrics and analysis in metrics:
        if metrics[analysis] not in effects:
            raise ValueError(f"metrics[{analysis!r}]={metrics[analysis]!r}: not an effect of {analysis!r}; its "
                             f"effects: {effects}.")
        return metrics[analysis]
    return next((m for m in (thresholds or {}) if m in effects), effects[0])


def _clause(d: Any) -> str:
    """The part of a verdict after the analysis name, for one degradation."""
    text = d.verdict("X")[len("X: "):]
    failed = d.points[d.points["decision"] == "failed"]
    if len(failed):
        text += f"; {len(failed)} failed level(s) not counted ({failed['reason'].iloc[0]})"
    return text


def _is_posterior(degradation: Any) -> bool:
    """Whether the table's ``degradation`` names the one judged at equal ΔL (its ``equal_loss_role``)."""
    from interp.degradations import equal_loss_role

    return equal_loss_role(degradation) == "posterior"


def _is_weight_noise(degradation: Any) -> bool:
    """Whether the table's ``degradation`` names the baseline at equal ΔL (its ``equal_loss_role``)."""
    from interp.degradations import equal_loss_role

    return equal_loss_role(degradation) == "baseline"


def compare_with_noise(posterior: Verdict, noise: Verdict) -> tuple[str, str]:
    """``(answer, sentence)``: whether an effect outlasts the weight-noise baseline at equal ΔL (or
    divergence): ``"outlasts"`` when its interval of dissolution under the posterior lies wholly above
    the one under weight noise, ``"does not outlast"`` when wholly below, else ``"undecided"`` (as
    :func:`interp.crossing.compare_dissolutions` decides). An effect that holds over a whole grid has the
    interval [last held, ∞); one that never holds at w0 is not compared (``"–"``)."""
    if posterior.outcome == "never_holds" or noise.outcome == "never_holds":
        return "–", "not compared with weight noise: the effect never holds at the trained weights"
    on_div = posterior.axis == noise.axis == "divergence"
    label = "divergence" if on_div else "ΔL"
    (a_lo, a_hi), (b_lo, b_hi) = ((d.divergence_ci if on_div else d.delta_loss_ci) for d in (posterior, noise))
    more = "first" if a_lo > b_hi else "second" if b_lo > a_hi else None  # NaN compares false: undecided

    def span(lo: float, hi: float) -> str:
        return f"[{lo:.2g}, ∞)" if hi == float("inf") else f"[{lo:.2g}, {hi:.2g}]"
    where = (f"dissolves within {label} {span(a_lo, a_hi)} under {posterior.degradation}, against "
             f"{span(b_lo, b_hi)} under {noise.degradation}")
    if more == "first":
        return "outlasts", f"outlasts the weight-noise baseline at equal {label}: {where}"
    if more == "second":
        return "does not outlast", f"does not outlast the weight-noise baseline at equal {label} (noise spares it longer): {where}"
    return "undecided", (f"undecided against the weight-noise baseline at equal {label}: the intervals overlap "
                         f"({where}; more chains or levels narrow them)")


def answer_table(results: Any, thresholds: Mapping[str, float] | None = None, *, relative: float = 0.5,
                 metrics: Mapping[str, str] | None = None, names: Mapping[str, str] | None = None,
                 axis: str | None = None) -> pd.DataFrame:
    """One row per analysis × degradation, the answer first: ``analysis`` (display name), ``effect``,
    ``degradation``, ``answer`` (holds / lost / undecided / never holds), ``where`` ("dissolves at ΔL x
    [lo, hi]" or "not reached: grid max ΔL y"), ``vs_weight_noise`` (for a posterior when the results
    also hold weight noise: outlasts / does not outlast / undecided; empty otherwise) and ``warning``."""
    ds = dissolutions(results, thresholds, relative=relative, axis=axis)
    rows = []
    for analysis, items in _by_analysis(ds).items():
        chosen = main_metric(analysis, list(dict.fromkeys(d.metric for d in items)), thresholds, metrics)
        mine = [d for d in items if d.metric == chosen]
        noise = next((d for d in mine if _is_weight_noise(d.degradation)), None)
        for d in mine:
            vs = compare_with_noise(d, noise)[0] if noise is not None and _is_posterior(d.degradation) else ""
            rows.append({"analysis": str((names or {}).get(analysis, analysis)), "effect": d.metric,
                         "degradation": str(d.degradation), "answer": d.answer(), "where": d.where(),
                         "vs_weight_noise": vs, "warning": d.reach_warning()})
    return pd.DataFrame(rows, columns=["analysis", "effect", "degradation", "answer", "where", "vs_weight_noise",
                                       "warning"])


def _by_analysis(ds: list[Verdict]) -> dict[Any, list[Verdict]]:
    by: dict[Any, list[Verdict]] = {}
    for d in ds:
        by.setdefault(d.analysis, []).append(d)
    return by


def verdict_lines(results: Any, thresholds: Mapping[str, float] | None = None, *, relative: float = 0.5,
                  metrics: Mapping[str, str] | None = None, names: Mapping[str, str] | None = None,
                  axis: str | None = None) -> list[str]:
    """One line per analysis: its main effect's dissolution under each degradation, said along
    ``axis`` with its units ("up to ΔL 0.31 [0.25, 0.36]", "up to divergence 0.031 [0.02, 0.04]
    normalised MSE"), and, when the results hold a tempered posterior and weight noise, whether the
    effect outlasts the weight-noise baseline at equal ΔL.

    Args:
        results: a :class:`~interp.results.Results`.
        thresholds: ``effect metric -> θ`` absolute criteria (e.g. ``{"recovered": 0.9}``); other
            effects use ``relative``. A name that is not an effect metric is a ValueError.
        relative: fraction of the way from the metric's floor (0 for a recovered fraction, chance for an
            accuracy, 0 otherwise) to its value at w0, for effects without a threshold.
        metrics: ``analysis -> effect metric`` to speak about (default: the analysis's first effect
            with a threshold, else its first effect).
        names: ``analysis -> display name``.
        axis: ``"delta_loss"`` (the measured ΔL), ``"divergence"`` (the behavioural divergence from w0)
            or ``None``: ΔL where the sweep measured a loss, else the divergence (e.g. MiniLM).
    """
    ds = dissolutions(results, thresholds, relative=relative, axis=axis)
    lines = []
    for analysis, items in _by_analysis(ds).items():
        chosen = main_metric(analysis, list(dict.fromkeys(d.metric for d in items)), thresholds, metrics)
        mine = [d for d in items if d.metric == chosen]
        name = str((names or {}).get(analysis, analysis))
        if mine and all(d.outcome == "never_holds" for d in mine):
            lines.append(mine[0].verdict(name))
            continue
        # the criterion once, in the first clause
        clauses = [_clause(d) if i == 0 else _clause(d).replace(f" ({d.criterion_text()})", "")
                   for i, d in enumerate(mine)]
        noise = next((d for d in mine if _is_weight_noise(d.degradation)), None)
        post = next((d for d in mine if _is_posterior(d.degradation)), None)
        if noise is not None and post is not None:
            clauses.append(compare_with_noise(post, noise)[1])
        lines.append(f"{name}: " + "; ".join(clauses))
    return lines


# ----------------------------------------------------------------------------------------- survival
def _thresholds(threshold: Any) -> dict[str | None, float] | None:
    """``threshold`` as ``{metric: θ}`` (``None`` key: every metric), validated; ``None`` if unset."""
    if threshold is None:
        return None

    def check(name: str, v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{name}={v!r}: must be a finite number in the metric's units "
                             "(e.g. threshold=0.9 for 90% of the loss recovered).")
        return float(v)

    if isinstance(threshold, Mapping):
        if not threshold:
            raise ValueError("threshold={}: name at least one effect metric, e.g. {'recovered': 0.9}.")
        return {str(k): check(f"threshold[{k!r}]", v) for k, v in threshold.items()}
    return {None: check("threshold", threshold)}


def _clean_levels(s: pd.DataFrame, held: pd.DataFrame, collateral_fraction: float) -> pd.DataFrame:
    """The held levels where every collateral of the analysis is at most ``collateral_fraction`` of
    its baseline (empty when the analysis has no collateral)."""
    coll = s[s["kind"] == "collateral"]
    if coll.empty:
        return held.iloc[:0]
    base = coll[coll["level_index"] == -1].set_index("metric")["mean"]
    keep = []
    for i, row in held.iterrows():
        at = coll[coll["level_index"] == row["level_index"]]
        keep.append(bool(len(at)) and all(
            abs(r["mean"]) <= collateral_fraction * abs(base[r["metric"]]) for _, r in at.iterrows()))
    return held[keep] if len(held) else held


def _span(rows: pd.DataFrame, column: str) -> tuple[float, float] | None:
    values = pd.to_numeric(rows[column], errors="coerce").dropna() if column in rows else pd.Series([], dtype=float)
    return (float(values.min()), float(values.max())) if len(values) else None


def survival(results: Any, fraction: float | None = None, collateral_fraction: float = 0.5, *,
             threshold: float | Mapping[str, float] | None = None, axis: str | None = None) -> pd.DataFrame:
    """:meth:`Results.survival <interp.results.Results.survival>`: per effect metric, the last level
    held and the first lost along ``axis``, each also given in ΔL and in divergence, and the clean
    window; the columns are the same whatever the criterion and the axis."""
    from interp._levels import resolve_axis

    if fraction is not None and threshold is not None:
        raise ValueError(
            f"survival(fraction={fraction!r}, threshold={threshold!r}): give one criterion, "
            "fraction (relative to each effect's baseline) or threshold (absolute), not both."
        )
    if threshold is None:
        fraction = 0.5 if fraction is None else fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
            raise ValueError(f"fraction={fraction!r}: must be in (0, 1] (e.g. 0.5: half the baseline).")
    thresholds = _thresholds(threshold)
    if collateral_fraction < 0:
        raise ValueError(f"collateral_fraction={collateral_fraction!r}: must be ≥ 0.")
    axis = resolve_axis(results.table, axis)
    s = results.summary()
    out = []
    effects = s[(s["kind"] == "effect") & (s["level_index"] == -1)]
    if isinstance(threshold, Mapping):
        unknown = set(thresholds) - set(effects["metric"])
        if unknown:
            raise ValueError(
                f"threshold: {sorted(unknown)} are not effect metrics of these results; "
                f"effect metrics: {sorted(set(effects['metric']))}."
            )
        effects = effects[effects["metric"].isin(set(thresholds))]
    nan = float("nan")
    for _, b in effects.iterrows():
        sel = (s["degradation"] == b["degradation"]) & (s["analysis"] == b["analysis"])
        levels = s[sel & (s["metric"] == b["metric"]) & (s["level_index"] >= 0)]
        bad = levels[levels["status"] == "failed"]
        # along the axis (levels without a value on it last, in their order)
        levels = levels[levels["status"] != "failed"].sort_values(
            [axis, "level_index"], na_position="last", kind="stable", ignore_index=True)
        base = b["mean"]
        if thresholds is None:
            thr, sign = fraction * base, (1.0 if base >= 0 else -1.0)
        else:
            thr, sign = thresholds[b["metric"]] if b["metric"] in thresholds else thresholds[None], 1.0
        holds = sign * levels["ci_low" if sign > 0 else "ci_high"] >= sign * thr
        lost = sign * levels["ci_high" if sign > 0 else "ci_low"] < sign * thr
        lost_rows = levels[lost]
        first_lost = lost_rows.iloc[0] if len(lost_rows) else None
        held_rows = levels[holds & (levels.index < lost_rows.index[0])] if first_lost is not None \
            else levels[holds]
        last_held = held_rows.iloc[-1] if len(held_rows) else None
        clean = _clean_levels(s[sel], levels[holds], collateral_fraction)
        out.append({
            "degradation": b["degradation"], "analysis": b["analysis"], "metric": b["metric"],
            "baseline": base, "criterion": "fraction" if thresholds is None else "threshold",
            "threshold": thr, "held_at_baseline": bool(sign * base >= sign * thr), "axis": axis,
            "last_held_level": None if last_held is None else last_held["level"],
            "last_held_delta_loss": nan if last_held is None else last_held["delta_loss"],
            "last_held_divergence": nan if last_held is None else last_held["divergence"],
            "lost_level": None if first_lost is None else first_lost["level"],
            "lost_delta_loss": nan if first_lost is None else first_lost["delta_loss"],
            "lost_divergence": nan if first_lost is None else first_lost["divergence"],
            "clean_window_delta_loss": _span(clean, "delta_loss"),
            "clean_window_divergence": _span(clean, "divergence"),
            "undecided_levels": [r["level"] for _, r in levels[~holds & ~lost].iterrows()],
            "failed_levels": [f"{r['level']}: {r['reason']}" for _, r in bad.iterrows()],
        })
    return pd.DataFrame(out, columns=_SURVIVAL_COLUMNS)
