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

__all__ = ["clean_window", "clean_window_findings", "verdict_lines", "dissolutions", "main_metric"]

_CW_COLUMNS = ["degradation", "analysis", "effect", "collateral", "level_index", "level", "delta_loss",
               "effect_mean", "effect_ci_low", "effect_ci_high", "collateral_mean", "collateral_ci_low",
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


def _interval(values: np.ndarray) -> tuple[float, float]:
    from interp.results import bootstrap_interval

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


def clean_window_findings(results: Any, cw: pd.DataFrame | None = None) -> list[str]:
    """One sentence per analysis: where the effect/collateral ratio is significantly better than at
    w0 (with intervals), that it is nowhere, or that the analysis declares no collateral."""
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
            better = g[g["better_than_w0"]].sort_values("delta_loss")
            name = f"{analysis} ({eff}/{coll}) under {deg}"
            if len(better):
                parts = ", ".join(
                    f"{r.ratio:.3g} [{r.ratio_ci_low:.3g}, {r.ratio_ci_high:.3g}] at ΔL {r.delta_loss:.2g}"
                    for r in better.itertuples())
                out.append(f"{name}: better than at w0 ({b:.3g}) at {parts}")
            else:
                best = g.sort_values("ratio", ascending=False).iloc[0]
                out.append(f"{name}: nowhere significantly better than at w0 ({b:.3g}); best "
                           f"{best['ratio']:.3g} [{best['ratio_ci_low']:.3g}, {best['ratio_ci_high']:.3g}] at ΔL "
                           f"{best['delta_loss']:.2g}")
    if without:
        out.append(f"{', '.join(without)}: no collateral measured where a trained behaviour exists (the task "
                   "marks no trained predictions outside the claim), so no clean window can be claimed")
    return out


def dissolutions(results: Any, thresholds: Mapping[str, float] | None = None, *,
                 relative: float = 0.5) -> list[Any]:
    """``Results.dissolution`` for every (degradation, analysis, effect metric): with the absolute
    threshold ``thresholds[metric]`` where given, else the ``relative`` criterion."""
    s = results.summary()
    effects = s[(s["kind"] == "effect") & (s["level_index"] < 0)]
    out = []
    for r in effects.itertuples():
        if thresholds and r.metric in thresholds:
            out.append(results.dissolution(r.analysis, r.metric, threshold=float(thresholds[r.metric]),
                                           degradation=r.degradation))
        else:
            out.append(results.dissolution(r.analysis, r.metric, relative=relative, degradation=r.degradation))
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
                  metrics: Mapping[str, str] | None = None, names: Mapping[str, str] | None = None) -> list[str]:
    """One line per analysis: its main effect's dissolution under each degradation.

    Args:
        results: a :class:`~interp.results.Results`.
        thresholds: ``effect metric -> θ`` absolute criteria (e.g. ``{"recovered": 0.9}``); other
            effects use ``relative``.
        relative: fraction of the baseline for effects without a threshold.
        metrics: ``analysis -> effect metric`` to speak about (default: the analysis's first effect
            with a threshold, else its first effect).
        names: ``analysis -> display name``.
    """
    ds = dissolutions(results, thresholds, relative=relative)
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
