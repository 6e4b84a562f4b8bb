"""The per-group statistics ``Results.summary`` computes, on numpy columns of the long table.

For each (degradation, level, analysis, metric) group, given by its row positions
(:func:`group_positions`): the mean over chains (chain means first; over draws when there is one
chain) with its 95% interval, Student-t (mean ± t₀.₉₇₅,ₙ₋₁·s/√n) or, for a bounded metric, a
percentile bootstrap (``interp.stats``), and the mean ΔL and behavioural divergence of its draws
(:func:`nanmean`: NaN skipped, summed to the last bit as pandas sums).

Example::

    >>> import numpy as np, pandas as pd
    >>> t = pd.DataFrame({"value": [1.0, 3.0, 2.0, 4.0], "chain": [0, 0, 1, 1], "kind": ["effect"] * 4,
    ...                   "level": [0.1] * 4, "delta_loss": [0.1, 0.2, 0.3, float("nan")]})
    >>> cols = SummaryColumns(t)
    >>> cols.mean_ci(np.arange(4))["mean"], round(float(cols.delta_loss_mean(np.arange(4))), 6)
    (2.5, 0.2)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from interp.stats import bootstrap_interval, t_quantile_975

__all__ = ["SummaryColumns", "group_positions", "nanmean"]


def group_positions(frame: pd.DataFrame, keys: list[str]) -> list[tuple[tuple[Any, ...], np.ndarray]]:
    """``(key, positions)`` of each group of ``frame`` by ``keys`` (positions in table order; groups
    with a missing key are left out, as ``groupby`` leaves them out)."""
    if frame.empty:
        return []
    return list(frame.groupby(keys, sort=False).indices.items())


class SummaryColumns:
    """The columns of a long table that :meth:`Results.summary` reads, as numpy arrays, and the
    statistics of a group of rows given by their positions."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.value = frame["value"].to_numpy(dtype=float)
        self.chain = frame["chain"].to_numpy()
        self.kind = frame["kind"].to_numpy()
        self.level = frame["level"].to_numpy()
        self.delta_loss = frame["delta_loss"].to_numpy()
        self.divergence = (pd.to_numeric(frame["divergence"], errors="coerce").to_numpy()
                           if "divergence" in frame.columns else None)

    def delta_loss_mean(self, idx: np.ndarray) -> float:
        """Mean ΔL of the rows, NaN skipped (NaN for none)."""
        return nanmean(self.delta_loss[idx])

    def divergence_mean(self, idx: np.ndarray) -> float:
        """Mean behavioural divergence of the rows, NaN when it is not recorded."""
        if self.divergence is None or not len(idx):
            return float("nan")
        return float(nanmean(self.divergence[idx]))

    def mean_ci(self, idx: np.ndarray, bounded: bool = False) -> dict[str, Any]:
        """Mean and 95% CI across chains (chain means first); over draws when there is one chain (NaN
        statistics for no rows at all). Student-t, or a percentile bootstrap for a bounded metric."""
        if not len(idx):
            nan = float("nan")
            return {"mean": nan, "sem": nan, "ci_low": nan, "ci_high": nan, "ci_method": "-", "n_chains": 0,
                    "n_draws": 0, "ci_over": "-", "n_nonfinite": 0}
        value = self.value[idx]
        chains, inverse = np.unique(self.chain[idx], return_inverse=True)
        if len(chains) > 1:  # numpy means: a NaN value makes its chain's mean NaN (never skipped)
            values = np.array([float(np.mean(value[inverse == k])) for k in range(len(chains))])
            over = "chains"
        else:
            values, over = value, "draws"
        n = len(values)
        mean = float(values.mean())
        sem = float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
        if bounded:
            low, high = bootstrap_interval(values)
            method = "bootstrap"
        else:
            half = t_quantile_975(n - 1) * sem
            low, high, method = mean - half, mean + half, "t"
        return {"mean": mean, "sem": sem, "ci_low": low, "ci_high": high, "ci_method": method,
                "n_chains": int(len(chains)), "n_draws": int(len(idx)), "ci_over": over,
                "n_nonfinite": int((~np.isfinite(value)).sum())}


def nanmean(values: np.ndarray) -> float:
    """The mean of the non-NaN values (NaN for none), summed as pandas' ``Series.mean`` sums them: NaN
    replaced by 0, one pairwise sum, divided by the count (the same number to the last bit)."""
    if values.dtype.kind != "f":
        return pd.Series(values).mean()
    missing = np.isnan(values)
    count = values.size - int(missing.sum())
    if count == 0:
        return float("nan")
    return np.where(missing, 0.0, values).sum() / np.float64(count)
