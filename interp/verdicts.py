"""Verdicts: one answer per finding from a sweep's results: where each effect dissolves, and whether a
clean window exists.

**Dissolution lines** (:func:`verdict_lines`): for every (analysis, effect metric) with a criterion,
the crossing on each degradation's grid (``Results.dissolution``: interpolated on the measured ΔL
axis), said as one line per analysis: "holds (recovered ≥ 0.9) up to ΔL 0.31 [0.25, 0.36] under
TemperedPosterior; under WeightNoise up to …", or "never holds", "holds over the whole grid",
undecided and failed levels said as such.

**Clean window** (:func:`clean_window`): the claim "at some temperature, intervening on the circuit
still changes the behaviour it is claimed for while disturbing the rest of the model *less* than at
the trained weights" is tested per analysis and level on the ratio R = effect / collateral (both
parts reported). Each chain's draws are averaged first; R's interval is a percentile bootstrap over
chains (chains resampled jointly for both parts, ratio of the resampled means, 2,000 resamples, fixed
seed; Efron & Tibshirani 1993). A level is *better than w0* when the interval's lower bound exceeds
the ratio at the trained weights (a single evaluation: its own seed-to-seed spread is not in the
interval), *worse* when its upper bound is below it. Only metrics the analysis declares as
collaterals are used: analyses in ``analyses`` declare one only where the task marks predictions that
carry a trained behaviour outside the claim (a ``collateral_mask`` column), so a disturbance of
untrained predictions is never read as collateral.

Example::

    >>> from interp.verdicts import clean_window, verdict_lines          # doctest: +SKIP
    >>> print("\\n".join(verdict_lines(results, {"recovered": 0.9})))     # doctest: +SKIP
    >>> clean_window(results).query("better_than_w0")                    # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from interp.stats import bootstrap_interval

__all__ = ["clean_window", "clean_window_findings", "verdict_lines", "dissolutions", "main_metric", "survival"]

_SURVIVAL_COLUMNS = ["degradation", "analysis", "metric", "baseline", "criterion", "threshold", "held_at_baseline",
                     "axis", "last_held_level", "last_held_delta_loss", "last_held_divergence", "lost_level",
                     "lost_delta_loss", "lost_divergence", "clean_window_delta_loss", "clean_window_divergence",
                     "undecided_levels", "failed_levels"]

_CW_COLUMNS = ["degradation", "analysis", "effect", "collateral", "level_index", "level", "delta_loss",
               "divergence", "effect_mean", "effect_ci_low", "effect_ci_high", "collateral_mean", "collateral_ci_low",
               "collateral_ci_high", "ratio", "ratio_ci_low", "ratio_ci_high", "baseline_ratio",
               "better_than_w0", "worse_than_w0", "n_chains", "status"]


def _ratio_interval(effect: np.ndarray, collateral: np.ndarray, resamples: int = 2000,
                    seed: int = 0) -> tuple[float, float]:
    n = len(effect)
    if n < 2 or not (np.isfinite(effect).all() and np.isfinite(collateral).all()):
        return float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = effect[idx].mean(1) / collateral[idx].mean(1)
    r = r[np.isfinite(r)]
    if len(r) < resamples * 0.95:  # a collateral of 0 in many resamples: no usable interval
        return float("nan"), float("nan")
    return float(np.quantile(r, 0.025)), float(np.quantile(r, 0.975))


def _mean(d: pd.DataFrame, column: str) -> float:
    """Mean of a per-draw column, NaN when it is not recorded."""
    if column not in d.columns or d.empty:
        return float("nan")
    values = pd.to_numeric(d[column], errors="coerce")
    return float(values.mean()) if values.notna().any() else float("nan")


def _interval(values: np.ndarray) -> tuple[float, float]:
    return bootstrap_interval(values)


def clean_window(results: Any, *, collateral: str | None = None) -> pd.DataFrame:
    """Per degradation × analysis × effect × collateral × level: both parts and their ratio with
    bootstrap intervals over chains, the ratio at w0, and whether the level is better or worse than w0.

    Args:
        results: a :class:`~interp.results.Results`.
        collateral: use this metric as every analysis's collateral (e.g. to look at a disturbance the
            analysis does not declare as one); default: each analysis's declared collaterals.

    Returns:
        One row per level (columns in ``interp.verdicts._CW_COLUMNS`` order); empty when no analysis
        has a collateral.
    """
    t = results.table
    levels = results.levels().set_index(["degradation", "level_index"])
    failed = results.failed_chains()
    bad = set(zip(failed["degradation"], failed["level_index"], failed["chain"]))
    rows = []
    for (deg, analysis), g in t.groupby(["degradation", "analysis"]):
        kinds = g.drop_duplicates("metric").set_index("metric")["kind"]
        effects = [m for m, k in kinds.items() if k == "effect"]
        colls = [collateral] if collateral is not None and collateral in kinds.index else (
            [] if collateral is not None else [m for m, k in kinds.items() if k == "collateral"])
        for eff in effects:
            for coll in colls:
                base = g[g["baseline"]].set_index("metric")["value"]
                b_ratio = float(base[eff] / base[coll]) if base[coll] else float("nan")
                draws = g[~g["baseline"] & g["metric"].isin([eff, coll])]
                for li, d in draws.groupby("level_index"):
                    keep = [(deg, li, c) not in bad for c in d["chain"]]
                    d = d[keep]
                    if d.empty:
                        continue
                    wide = d.pivot_table(index=["chain", "draw"], columns="metric", values="value", aggfunc="first")
                    per = wide.groupby(level="chain").mean() if wide.index.get_level_values(0).nunique() > 1 \
                        else wide
                    e, c = per[eff].to_numpy(float), per[coll].to_numpy(float)
                    ratio = float(e.mean() / c.mean()) if c.mean() else float("nan")
                    lo, hi = _ratio_interval(e, c)
                    info = levels.loc[(deg, li)] if (deg, li) in levels.index else {}
                    rows.append({
                        "degradation": deg, "analysis": analysis, "effect": eff, "collateral": coll,
                        "level_index": int(li), "level": d["level"].iloc[0],
                        "delta_loss": float(d["delta_loss"].mean()),
                        "divergence": _mean(d, "divergence"),
                        "effect_mean": float(e.mean()), **dict(zip(("effect_ci_low", "effect_ci_high"),
                                                                  _interval(e))),
                        "collateral_mean": float(c.mean()), **dict(zip(("collateral_ci_low", "collateral_ci_high"),
                                                                      _interval(c))),
                        "ratio": ratio, "ratio_ci_low": lo, "ratio_ci_high": hi, "baseline_ratio": b_ratio,
                        "better_than_w0": bool(math.isfinite(lo) and lo > b_ratio),
                        "worse_than_w0": bool(math.isfinite(hi) and hi < b_ratio),
                        "n_chains": int(len(per)), "status": info.get("status", "ok") if len(info) else "ok",
                    })
    return pd.DataFrame(rows, columns=_CW_COLUMNS)


def clean_window_findings(results: Any, cw: pd.DataFrame | None = None, *, axis: str | None = None) -> list[str]:
    """One sentence per analysis: where the effect/collateral ratio is significantly better than at
    w0 (with intervals), that it is nowhere, or that the analysis declares no collateral; levels
    placed along ``axis`` (``"delta_loss"``, ``"divergence"``, or ``None``: ΔL where the sweep measured
    a loss, else the divergence)."""
    from interp._levels import axis_label, axis_units, resolve_axis

    axis = resolve_axis(results.table, axis)
    cw = clean_window(results) if cw is None else cw
    out, without = [], []
    analyses = sorted(set(results.table["analysis"]))
    for analysis in analyses:
        sub = cw[(cw["analysis"] == analysis) & (cw["status"] != "failed")]
        if sub.empty:
            if "effect" in set(results.table.loc[results.table["analysis"] == analysis, "kind"]):
                without.append(analysis)
            continue
        for (deg, eff, coll), g in sub.groupby(["degradation", "effect", "collateral"]):
            b = g["baseline_ratio"].iloc[0]
            better = g[g["better_than_w0"]].sort_values([axis, "level_index"])
            name = f"{analysis} ({eff}/{coll}) under {deg}"
            units = "" if axis == "delta_loss" else axis_units(results.meta, axis, deg)

            def at(v: float) -> str:
                return f"at {axis_label(axis)} {v:.2g}" + (f" {units}" if units else "")
            if len(better):
                parts = ", ".join(
                    f"{r.ratio:.3g} [{r.ratio_ci_low:.3g}, {r.ratio_ci_high:.3g}] {at(getattr(r, axis))}"
                    for r in better.itertuples())
                out.append(f"{name}: better than at w0 ({b:.3g}) {parts}")
            else:
                best = g.sort_values("ratio", ascending=False).iloc[0]
                out.append(f"{name}: nowhere significantly better than at w0 ({b:.3g}); best "
                           f"{best['ratio']:.3g} [{best['ratio_ci_low']:.3g}, {best['ratio_ci_high']:.3g}] "
                           f"{at(best[axis])}")
    if without:
        out.append(f"{', '.join(without)}: no collateral measured where a trained behaviour exists (the task "
                   "marks no trained predictions outside the claim: give it a collateral_mask column, as the "
                   "induction_full organism has), so no clean window can be claimed")
    return out


def dissolutions(results: Any, thresholds: Mapping[str, float] | None = None, *,
                 relative: float = 0.5, axis: str | None = None) -> list[Any]:
    """``Results.dissolution`` for every (degradation, analysis, effect metric): with the absolute
    threshold ``thresholds[metric]`` where given, else the ``relative`` criterion, interpolated along
    ``axis`` (``None``: ΔL where the sweep measured a loss, else the behavioural divergence)."""
    from interp._levels import resolve_axis

    axis = resolve_axis(results.table, axis)
    s = results.summary()
    effects = s[(s["kind"] == "effect") & (s["level_index"] < 0)]
    out = []
    for r in effects.itertuples():
        if thresholds and r.metric in thresholds:
            out.append(results.dissolution(r.analysis, r.metric, threshold=float(thresholds[r.metric]),
                                           degradation=r.degradation, axis=axis))
        else:
            out.append(results.dissolution(r.analysis, r.metric, relative=relative, degradation=r.degradation,
                                           axis=axis))
    return out


def main_metric(analysis: str, effects: list[str], thresholds: Mapping[str, float] | None = None,
                metrics: Mapping[str, str] | None = None) -> str:
    """The effect a verdict speaks about: ``metrics[analysis]``, else the first of ``thresholds`` (in
    its order) that the analysis has, else its first effect."""
    if metrics and analysis in metrics:
        return metrics[analysis]
    return next((m for m in (thresholds or {}) if m in effects), effects[0])


def _clause(d: Any) -> str:
    """The part of a verdict after the analysis name, for one degradation."""
    text = d.verdict("X")[len("X: "):]
    failed = d.points[d.points["decision"] == "failed"]
    if len(failed):
        text += f"; {len(failed)} failed level(s) not counted ({failed['reason'].iloc[0]})"
    return text


def verdict_lines(results: Any, thresholds: Mapping[str, float] | None = None, *, relative: float = 0.5,
                  metrics: Mapping[str, str] | None = None, names: Mapping[str, str] | None = None,
                  axis: str | None = None) -> list[str]:
    """One line per analysis: its main effect's dissolution under each degradation, said along
    ``axis`` with its units ("up to ΔL 0.31 [0.25, 0.36]", "up to divergence 0.031 [0.02, 0.04]
    normalised MSE").

    Args:
        results: a :class:`~interp.results.Results`.
        thresholds: ``effect metric -> θ`` absolute criteria (e.g. ``{"recovered": 0.9}``); other
            effects use ``relative``.
        relative: fraction of the baseline for effects without a threshold.
        metrics: ``analysis -> effect metric`` to speak about (default: the analysis's first effect
            with a threshold, else its first effect).
        names: ``analysis -> display name``.
        axis: ``"delta_loss"`` (the measured ΔL), ``"divergence"`` (the behavioural divergence from w0)
            or ``None``: ΔL where the sweep measured a loss, else the divergence (e.g. MiniLM).
    """
    ds = dissolutions(results, thresholds, relative=relative, axis=axis)
    lines = []
    by_analysis: dict[str, list[Any]] = {}
    for d in ds:
        by_analysis.setdefault(d.analysis, []).append(d)
    for analysis, items in by_analysis.items():
        chosen = main_metric(analysis, [d.metric for d in items], thresholds, metrics)
        mine = [d for d in items if d.metric == chosen]
        name = (names or {}).get(analysis, analysis)
        if mine and all(d.outcome == "never_holds" for d in mine):
            lines.append(mine[0].verdict(name))
            continue
        # the criterion once, in the first clause
        clauses = [_clause(d) if i == 0 else _clause(d).replace(f" ({d.criterion_text()})", "")
                   for i, d in enumerate(mine)]
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
