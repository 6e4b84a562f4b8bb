"""Interval statistics shared by the results tables and the verdicts: Student-t quantiles and a
percentile bootstrap of a mean.

A mean over n chains gets the interval mean ± t_{0.975, n−1}·s/√n (Student 1908); a bounded metric
(an accuracy) gets the percentile bootstrap of its mean instead (Efron & Tibshirani 1993, ch. 13),
which stays within the observed values. Both :mod:`interp.results` and :mod:`interp.verdicts` use
them, so they sit below both.

Example::

    >>> import numpy as np
    >>> t_quantile_975(3)
    3.182
    >>> low, high = bootstrap_interval(np.array([0.2, 0.4, 0.6, 0.8]))
    >>> 0.2 <= low < 0.5 < high <= 0.8
    True
"""

from __future__ import annotations

import numpy as np

__all__ = ["t_quantile_975", "bootstrap_interval"]

# Student-t 0.975 quantiles for 1..30 degrees of freedom (beyond: the normal 1.96).
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
         2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
         2.052, 2.048, 2.045, 2.042]


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (NaN for df < 1)."""
    if df < 1:
        return float("nan")
    return _T975[df - 1] if df <= len(_T975) else 1.96


def bootstrap_interval(values: np.ndarray, *, resamples: int = 2000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of ``values`` (fixed ``seed``: the same numbers on
    every call); it lies within [min(values), max(values)], so bounded metrics stay in range."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2 or not np.isfinite(values).all():
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))
