"""The clean window: is an intervention cleaner at some degradation level than at the trained weights?

The claim "at some temperature, intervening on the circuit still changes the behaviour it is claimed
for while disturbing the rest of the model *less* than at the trained weights" is tested per analysis
and level on the ratio R = effect / collateral (both parts reported). Each chain's draws are averaged
first; R's interval is a percentile bootstrap over chains (chains resampled jointly for both parts,
ratio of the resampled means, 2,000 resamples, fixed seed; Efron & Tibshirani 1993). A level is
*better than w0* when the interval's lower bound exceeds the ratio at the trained weights, *worse*
when its upper bound is below it. A better level is *attributable* to the hypothesis only when its
collateral fell more than the same collateral under the other analyses that measure it. The public
home of these functions is :mod:`interp.verdicts`.

Example (``study``: a small study's results, :class:`~interp.results.Results`)::

    >>> from interp.verdicts import clean_window
    >>> cw = clean_window(study)
    >>> cw[["analysis", "effect", "collateral"]].drop_duplicates().values.tolist()
    [['prev_token_head', 'loss_carried', 'kl_unclaimed']]
    >>> len(cw.query("better_than_w0 and attributable"))   # no cleaner level in this study
    0
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from interp.stats import bootstrap_interval

__all__ = ["clean_window", "clean_window_findings"]

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
    bootstrap intervals over chains, the ratio at w0, whether the level is better or worse than w0,
    and whether a better level is *attributable* to the hypothesis.

    A ratio can rise because the collateral fell for every intervention alike (the degraded model does
    less at the unclaimed positions): that says nothing about the hypothesis. So each level's
    collateral change c/c0 (upper 95% bound) is compared with the mean change of the same collateral
    under the other analyses that measure it at the same level (the other hypotheses, or a random one
    of the same size given as an analysis): ``attributable`` is true when it fell significantly more,
    false when not, ``None`` when no other analysis measures it (``control_collateral_change`` NaN).

    Args:
        results: a :class:`~interp.results.Results`.
        collateral: use this metric as every analysis's collateral (e.g. to look at a disturbance the
            analysis does not declare as one); default: each analysis's declared collaterals. A name
            that no analysis returns is a ValueError.

    Returns:
        One row per level (columns in ``interp.verdicts._CW_COLUMNS`` order). When empty,
        ``frame.attrs["why"]`` says why (no analysis declares a collateral, or no effect).
    """
    t = results.table
    if collateral is not None:
        known = sorted(set(map(str, t["metric"])))
        if str(collateral) not in known:
            raise ValueError(f"clean_window(collateral={collateral!r}): no analysis returns this metric (a typo "
                             f"selects nothing); metrics: {known}.")
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
    frame = _attribute(pd.DataFrame(rows, columns=_CW_COLUMNS), t)
    if frame.empty:
        kinds = set(t["kind"])
        frame.attrs["why"] = (
            "no analysis has an effect metric" if "effect" not in kinds else
            f"no analysis returns {collateral!r} beside an effect" if collateral is not None else
            "no analysis declares a collateral (analyses declare one only where the task marks trained "
            "predictions outside the claim: a collateral_mask column); pass collateral=METRIC to use one")
    return frame


def _attribute(cw: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """``collateral_change`` (c/c0 and its upper bound), ``control_collateral_change`` (mean c/c0 of the
    same collateral under the other analyses at the level) and ``attributable`` (see clean_window)."""
    base = table[table["baseline"]].drop_duplicates(["degradation", "analysis", "metric"]).set_index(
        ["degradation", "analysis", "metric"])["value"]
    change, high, control, attributable = [], [], [], []
    for r in cw.itertuples():
        c0 = base.get((r.degradation, r.analysis, r.collateral), float("nan"))
        ch = r.collateral_mean / c0 if c0 else float("nan")
        hi = r.collateral_ci_high / c0 if c0 else float("nan")
        others = cw[(cw["degradation"] == r.degradation) & (cw["level_index"] == r.level_index)
                    & (cw["collateral"] == r.collateral) & (cw["analysis"] != r.analysis)]
        ctrl = []
        for o in others.drop_duplicates("analysis").itertuples():
            o0 = base.get((o.degradation, o.analysis, o.collateral), float("nan"))
            if o0 and math.isfinite(o0):
                ctrl.append(o.collateral_mean / o0)
        cc = float(np.mean(ctrl)) if ctrl else float("nan")
        change.append(ch), high.append(hi), control.append(cc)
        attributable.append(None if not ctrl or not math.isfinite(hi) else bool(hi < cc))
    return cw.assign(collateral_change=change, collateral_change_high=high, control_collateral_change=control,
                     attributable=pd.Series(attributable, index=cw.index, dtype=object))


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
                text = f"{name}: better than at w0 ({b:.3g}) {parts}"
                own = better[better["attributable"].map(lambda v: v is True)]
                shared = better[better["attributable"].map(lambda v: v is False)]
                if len(own) == len(better):
                    text += f"; attributable to the hypothesis ({coll} fell more than under the other analyses)"
                elif len(shared):
                    r0 = shared.iloc[0]
                    text += (f"; NOT attributable to the hypothesis {'there' if len(own) == 0 else 'at some levels'}"
                             f": {coll} fell as much under the other analyses ({r0['collateral_change']:.2g}× "
                             f"its w0 value against {r0['control_collateral_change']:.2g}× for the others "
                             f"{at(r0[axis])}), so the degraded model, not the hypothesis, disturbs less")
                else:
                    text += (f"; not attributable yet: no other analysis measures {coll} to compare with (add "
                             "a random hypothesis of the same size as a second analysis)")
                out.append(text)
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
