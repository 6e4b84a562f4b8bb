"""A sweep's level records as numbers and a status: what ``Results.summary`` puts beside each level.

A level is recorded as the sweep was given it (``0.05``, ``"LossIncrease(0.3)"``, a checkpoint
step) and described by the degradation's record in ``levels.json`` (the calibration's target and nβ,
each chain's diagnostics). This module reads both into ``target_delta_loss``, ``nbeta``, ``sigma``,
``step``, the level as a number on the degradation's own recorded level axis (``level_axis``,
``level_units``, ``level_value``: a user's degradation's drop probability as much as σ), the
measured ΔL, and a ``status`` (``"failed"`` with a ``reason`` when every chain failed,
the calibration did not converge or failed, or the measured ΔL missed the calibration's target by more
than its recorded tolerance).

It also names the **axis** along which levels are ordered and reported (:func:`resolve_axis`): the
measured loss increase ΔL of the sweep's task (``"delta_loss"``, nats/token) or the behavioural
divergence from w0 that every draw records (``"divergence"``, KL(p_w0 ‖ p_w) per token for a model
with an LM head, the normalised MSE of the final hidden state without one; Bushnaq et al. 2024).
Automatic: ΔL where the sweep measured a loss, else the divergence (a model without a loss, MiniLM).

Example::

    >>> parse_level("LossIncrease(0.3)")
    ('LossIncrease', 0.3)
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["parse_level", "level_numbers", "levels_table", "AXES", "resolve_axis", "axis_units", "axis_label", "axis_title",
           "divergence_units"]

#: the axes levels can be ordered and reported along
AXES = ("delta_loss", "divergence")

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def parse_level(level: Any) -> tuple[str | None, float]:
    """``(kind, number)`` of a recorded level: ``("LossIncrease", 0.3)`` from the object, its dict or
    its repr, ``("NBeta", 1e3)``, ``(None, 0.05)`` for a plain number, ``(None, nan)`` otherwise."""
    if isinstance(level, bool) or level is None:
        return None, float("nan")
    if isinstance(level, (int, float)):
        return None, float(level)
    for kind, attr in (("LossIncrease", "delta"), ("NBeta", "value")):
        if type(level).__name__ == kind:
            return kind, float(getattr(level, attr))
        if isinstance(level, Mapping) and attr in level:
            return (level.get("type") or kind), float(level[attr])
    if isinstance(level, str):
        m = re.fullmatch(rf"\s*(\w+)\(\s*(?:\w+\s*=\s*)?({_NUMBER})\s*(?:,[^()]*)?\)\s*", level)
        if m:
            return m.group(1), float(m.group(2))
        if re.fullmatch(rf"\s*{_NUMBER}\s*", level):
            return None, float(level)
    return None, float("nan")


def level_numbers(axis: Mapping[str, Any], level: Any, info: Mapping[str, Any], draw_nbeta: float,
                  failed: pd.DataFrame, deg: Any, li: int, rows: pd.DataFrame) -> dict[str, Any]:
    """A level's numbers and status from its record (``levels.json`` entry), its draws and rows.

    ``axis``: the degradation's level axis as ``config.json`` records it (``{"name": ..., "units":
    ...}``; empty when not recorded). A plain-number level is ``level_value`` on it, and also goes
    in the column of the axis's name where the table has one (``nbeta``, ``sigma`` or ``step``)."""
    nan = float("nan")
    kind, number = parse_level(level)
    name = axis.get("name") if isinstance(axis.get("name"), str) and axis.get("name") else None
    units = axis.get("units") if isinstance(axis.get("units"), str) and axis.get("units") else None
    plain = {name: number} if kind is None and name else {}
    cal = info.get("calibration") if isinstance(info.get("calibration"), Mapping) else {}
    target = float(cal["target"]) if "target" in cal else (number if kind == "LossIncrease" else nan)
    nbeta = draw_nbeta
    if not math.isfinite(nbeta):
        nbeta = float(cal["nbeta"]) if "nbeta" in cal else (number if kind == "NBeta" else plain.get("nbeta", nan))
    sigma, step = plain.get("sigma", nan), plain.get("step", nan)
    mine = failed[(failed["level_index"] == li) & ((failed["degradation"] == deg) | failed["degradation"].isna())]
    failed_chains = set(mine["chain"].tolist())
    kept = rows[~rows["chain"].isin(failed_chains)] if len(rows) else rows
    measured = float(kept["delta_loss"].mean()) if len(kept) else nan
    divergence = pd.to_numeric(kept["divergence"], errors="coerce") if len(kept) and "divergence" in kept else None
    measured_divergence = float(divergence.mean()) if divergence is not None and divergence.notna().any() else nan
    chains = [c for c in (info.get("chains") or []) if isinstance(c, Mapping)]
    reasons = []
    if info.get("failed") or info.get("reason"):
        reasons.append(str(info.get("reason") or "the level failed"))
    if chains and len(failed_chains) >= len(chains):
        reasons.append(f"every chain failed ({'; '.join(sorted({str(r) for r in mine['reason']}))})")
    if cal:
        if cal.get("failed") or cal.get("reason"):
            reasons.append(f"calibration failed: {cal.get('reason') or cal.get('failed')}")
        elif cal.get("converged") is False:
            rounds = [r for r in cal.get("rounds") or [] if isinstance(r, Mapping)]
            to = f"ΔL {target:g}" if cal.get("units") in (None, "nats/token") else f"Δ {target:g} {cal['units']}"
            reasons.append(f"calibration to {to} did not converge in {len(rounds)} rounds")
        # the sampler's own verdict (``failed``, from its ``acceptance``) when it recorded one; else
        # the table's measured ΔL against a recorded acceptance/tolerance, where the calibration was on
        # the task's loss (a behavioural objective's target is not in the table's ΔL units)
        tol = cal.get("acceptance", cal.get("tolerance"))
        on_task_loss = cal.get("units") in (None, "nats/token")
        if "failed" not in cal and on_task_loss and isinstance(tol, (int, float)) and math.isfinite(measured) \
                and target > 0 \
                and abs(measured / target - 1) > tol:
            reasons.append(f"measured ΔL {measured:.3g} is off its target {target:g} by more than {tol:g}")
    target_units = cal.get("units") if cal.get("units") else None
    return {"level": level, "level_axis": name, "level_units": units, "level_value": number if kind is None else nan,
            "target_delta_loss": target, "target_units": target_units, "nbeta": nbeta, "sigma": sigma,
            "step": step, "measured_delta_loss": measured, "measured_divergence": measured_divergence, "n_failed_chains": len(failed_chains),
            "status": "failed" if reasons else "ok", "reason": "; ".join(reasons) or None}


def levels_table(table: pd.DataFrame, draws: pd.DataFrame, meta: Mapping[str, Any],
                 failed: pd.DataFrame) -> pd.DataFrame:
    """``Results.levels()``: one row per (degradation, level) of a sweep's long ``table``, its
    ``draws`` records, its ``meta`` (one sweep's, or ``{"parts": [...]}`` of several) and its
    ``failed`` chains (``Results.failed_chains()``)."""
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    drawn = table[~table["baseline"]]
    for part in meta.get("parts", [meta]):
        deg, config = part.get("degradation_name"), part.get("config") or {}
        if deg is None:  # a single sweep's results: one degradation
            names = table["degradation"].unique()
            deg = names[0] if len(names) == 1 else None
        axis = config.get("level_axis") if isinstance(config.get("level_axis"), Mapping) else {}
        recorded = config.get("levels") or []
        infos = {int(k): v for k, v in (part.get("levels") or {}).items()}
        in_table = drawn[drawn["degradation"] == deg] if deg is not None else drawn
        indices = sorted(set(infos) | set(in_table["level_index"].unique().tolist()) | set(range(len(recorded))))
        for li in map(int, indices):
            g = in_table[in_table["level_index"] == li]
            level = g["level"].iloc[0] if len(g) else (recorded[li] if li < len(recorded) else None)
            rows[(deg, li)] = level_numbers(axis, level, infos.get(li) or {}, _draw_nbeta(draws, deg, li),
                                            failed, deg, li, g)
    frame = pd.DataFrame(
        [{"degradation": d, "level_index": li, **r} for (d, li), r in rows.items()],
        columns=["degradation", "level_index", "level", "level_axis", "level_units", "level_value",
                 "target_delta_loss", "target_units", "nbeta", "sigma",
                 "step", "measured_delta_loss", "measured_divergence", "n_failed_chains", "status", "reason"])
    return frame.sort_values(["degradation", "level_index"], ignore_index=True)


def _draw_nbeta(draws: pd.DataFrame, deg: Any, li: int) -> float:
    """The mean nβ the draws of level ``li`` recorded (NaN where none did)."""
    if not len(draws) or "nbeta" not in draws.columns:
        return float("nan")
    sel = draws["level_index"] == li
    if "degradation" in draws.columns and deg is not None:
        sel &= draws["degradation"] == deg
    values = pd.to_numeric(draws.loc[sel, "nbeta"], errors="coerce")
    return float(values.mean()) if values.notna().any() else float("nan")


def _finite(table: pd.DataFrame, column: str) -> bool:
    """Whether ``column`` has a finite value at some draw (the baseline's 0 does not count)."""
    if column not in table.columns or table.empty:
        return False
    rows = table[~table["baseline"].astype(bool)] if "baseline" in table.columns else table
    return bool(np.isfinite(pd.to_numeric(rows[column], errors="coerce").to_numpy(dtype=float)).any())


def resolve_axis(table: pd.DataFrame, axis: str | None) -> str:
    """The axis to order and report levels along: ``axis`` checked against ``table`` (a sweep's long
    table), or for ``None`` ``"delta_loss"`` where the table has a finite ΔL, else ``"divergence"``."""
    if axis is not None and axis not in AXES:
        raise ValueError(f"axis={axis!r}: must be 'delta_loss' (the task's loss increase ΔL), 'divergence' "
                         "(the behavioural divergence from w0) or None (ΔL where the sweep measured a loss, "
                         "else the divergence).")
    if axis is None:
        return "delta_loss" if _finite(table, "delta_loss") or not _finite(table, "divergence") else "divergence"
    if not _finite(table, axis) and _finite(table, "delta_loss" if axis == "divergence" else "divergence"):
        other = "delta_loss" if axis == "divergence" else "divergence"
        why = ("the sweep recorded no behavioural divergence (results from before it was recorded)"
               if axis == "divergence" else "the task has no loss (e.g. a model without an LM head)")
        raise ValueError(f"axis={axis!r}: no draw of these results has a finite {axis}: {why}; use "
                         f"axis={other!r} (or None).")
    return axis


def divergence_units(meta: Mapping[str, Any], degradation: Any = None) -> str:
    """The units of a sweep's divergence column, from its metadata (empty when not recorded)."""
    for part in meta.get("parts", [meta]):
        if degradation is None or part.get("degradation_name") in (None, degradation):
            units = part.get("divergence_units") or ((part.get("config") or {}).get("divergence") or {}).get("units")
            if units:
                return str(units)
    return ""


def axis_units(meta: Mapping[str, Any], axis: str, degradation: Any = None) -> str:
    """Units of an axis: ``nats/token`` for ΔL, the recorded divergence units otherwise."""
    return "nats/token" if axis == "delta_loss" else divergence_units(meta, degradation)


def axis_title(meta: Mapping[str, Any], axis: str) -> str:
    """A plot's axis title: ``loss increase ΔL (nats/token)`` or ``divergence from w0 (UNITS)``."""
    if axis == "delta_loss":
        return "loss increase ΔL (nats/token)"
    units = divergence_units(meta)
    return "divergence from w0" + (f" ({units})" if units else "")


def axis_label(axis: str) -> str:
    """How verdicts name an axis: ``ΔL`` or ``divergence``."""
    return "ΔL" if axis == "delta_loss" else "divergence"
