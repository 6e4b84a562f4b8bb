"""Statistics of the circuit tests: exact binomial tails, binomial-proportion intervals, the
equivalence p-value of Shi et al. (2024), the HSIC permutation test and MIB's curve areas.

- ``binomial_tail``: P(X ≥ k) or P(X ≤ k), X ~ Binomial(n, p), summed exactly (log-gamma pmf).
- ``wilson_interval`` (Wilson 1927): the score interval (p̂ + z²/2n ± z·√(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n).
- ``clopper_pearson`` (1934): the p where P(X ≥ k | p) and P(X ≤ k | p) equal (1 − level)/2.
- ``equivalence_p``: H0 |P(Δ > 0) − ½| < ε; with n untied rows, K wins, t = |K/n − ½|,
  p = P(|K'/n − ½| ≥ t), K' ~ Binomial(n, ½ + ε).
- ``hsic_p`` (Gretton et al. 2007): HSIC = tr(K̃ L̃)/(n − 1)², K̃ = HKH the centred Gaussian Gram
  matrix (bandwidth: median pairwise distance), permutation p-value (1 + #{HSIC_π ≥ HSIC})/(1 + B).
- ``compute_cpr_cmd`` (Mueller et al. 2025): CPR = ∫ f, CMD = ∫ |1 − f| over sizes in [0, 1].

Example::

    >>> round(binomial_tail(100, 100, 0.9, side="greater"), 7)
    2.66e-05
    >>> equivalence_p([0.5, -0.5] * 20, 0.1, 1e-4)[1]
    0.5
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

__all__ = ["binomial_tail", "clopper_pearson", "compute_cpr_cmd", "equivalence_p", "hsic_p", "wilson_interval"]


def binomial_tail(k: int, n: int, p: float, *, side: Literal["greater", "less"]) -> float:
    """P(X ≥ k) (``side="greater"``) or P(X ≤ k) (``"less"``) for X ~ Binomial(n, p), exactly."""
    if not 0 <= k <= n:
        return 1.0 if (side == "greater" and k <= 0) or (side == "less" and k >= n) else 0.0
    ks = range(k, n + 1) if side == "greater" else range(0, k + 1)
    return float(min(1.0, sum(_binom_pmf(i, n, p) for i in ks)))


def _binom_pmf(i: int, n: int, p: float) -> float:
    if p <= 0.0:
        return 1.0 if i == 0 else 0.0
    if p >= 1.0:
        return 1.0 if i == n else 0.0
    return math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                    + i * math.log(p) + (n - i) * math.log1p(-p))


def wilson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k/n (Wilson 1927); (NaN, NaN) when n = 0."""
    if n <= 0:
        return float("nan"), float("nan")
    z = _normal_quantile(0.5 + level / 2)
    phat = k / n
    centre = (phat + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper–Pearson 1934) interval of a binomial proportion: the p with
    P(X ≥ k | p) = (1 − level)/2 and P(X ≤ k | p) = (1 − level)/2, by bisection; (NaN, NaN) when n = 0."""
    if n <= 0:
        return float("nan"), float("nan")
    tail = (1 - level) / 2

    def solve(f: Any) -> float:  # f increasing in p; root of f(p) = 0 on [0, 1]
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
        return (lo + hi) / 2

    low = 0.0 if k == 0 else solve(lambda p: binomial_tail(k, n, p, side="greater") - tail)
    high = 1.0 if k == n else solve(lambda p: tail - binomial_tail(k, n, p, side="less"))
    return low, high


def _normal_quantile(u: float) -> float:
    """Standard normal quantile by bisection on erf (enough for interval construction)."""
    lo, hi = -10.0, 10.0
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < u else (lo, mid)
    return (lo + hi) / 2


def equivalence_p(delta: Any, epsilon: float, resolution: float) -> tuple[float, float, int]:
    """(p-value, fraction of untied rows with Δ > 0, untied rows) of the equivalence test; rows with
    |Δ| ≤ ``resolution`` are ties, dropped as in the sign test (no untied row: p = 1)."""
    delta = np.asarray(delta, dtype=float)
    untied = np.abs(delta) > resolution
    n = int(untied.sum())
    if n == 0:
        return 1.0, 0.5, 0
    k = int((delta[untied] > 0).sum())
    t = abs(k / n - 0.5)
    p = sum(_binom_pmf(i, n, 0.5 + epsilon) for i in range(n + 1) if abs(i / n - 0.5) >= t - 1e-12)
    return float(min(1.0, p)), k / n, n


def _gram(x: np.ndarray) -> np.ndarray | None:
    d2 = (x[:, None] - x[None, :]) ** 2
    positive = d2[d2 > 0]
    if positive.size == 0:  # a constant variable
        return None
    sigma2 = float(np.median(positive))  # median heuristic on squared distances
    return np.exp(-d2 / (2 * sigma2))


def hsic_p(x: np.ndarray, y: np.ndarray, permutations: int, seed: int) -> tuple[float, float]:
    """(HSIC statistic, permutation p-value) of independence of x and y (Gretton et al. 2007)."""
    n = len(x)
    kx, ky = _gram(x), _gram(y)
    if kx is None or ky is None:
        return 0.0, 1.0
    h = np.eye(n) - 1.0 / n
    kc, lc = h @ kx @ h, h @ ky @ h
    stat = float((kc * lc).sum()) / (n - 1) ** 2
    rng = np.random.default_rng(seed)
    exceed = 0
    for _ in range(permutations):
        perm = rng.permutation(n)
        if float((kc * lc[np.ix_(perm, perm)]).sum()) / (n - 1) ** 2 >= stat - 1e-15:
            exceed += 1
    return stat, (1 + exceed) / (1 + permutations)


def compute_cpr_cmd(sizes: Sequence[float], faithfulness: Sequence[float]) -> tuple[float, float]:
    """MIB's CPR = ∫ f and CMD = ∫ |1 − f| over circuit sizes in [0, 1] (trapezoid rule).

    >>> compute_cpr_cmd([0.0, 0.5, 1.0], [0.0, 1.0, 1.0])
    (0.75, 0.25)
    """
    x = np.asarray(sizes, dtype=float)
    f = np.asarray(faithfulness, dtype=float)
    if x.ndim != 1 or x.shape != f.shape or len(x) < 2 or np.any(np.diff(x) <= 0):
        raise ValueError(f"compute_cpr_cmd(sizes={list(x)!r}): sizes must be at least two increasing values in "
                         "[0, 1] with one faithfulness each. Pass the size grid and its faithfulness curve.")
    gap = np.abs(1.0 - f)
    return float(np.sum((f[1:] + f[:-1]) / 2 * np.diff(x))), float(np.sum((gap[1:] + gap[:-1]) / 2 * np.diff(x)))
