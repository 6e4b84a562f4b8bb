"""Reading circuit tests over a sweep's draws: does a claim hold at a level, and how often is each
of its nodes necessary (posterior node inclusion)?

A claim *holds at level T* when its tests pass on at least 1 − α of the draws at T (a posterior
predictive check: the claim should survive the weights the posterior finds as plausible as w0). A
node's *inclusion* at T is the fraction of draws at which it is necessary, k/n, with the Wilson and
Clopper–Pearson 95% intervals of a binomial proportion.

Example (a sweep of the tests at every draw: skipped as a docstring example for its cost;
``tests/analyses/test_circuit_tests.py`` runs these on a sweep)::

    >>> import interp
    >>> from analyses.circuit_tests import CircuitTests, assess_claim, estimate_node_inclusion
    >>> res = interp.run_sweep(model, task, [CircuitTests(("embed", "L0H1", "L1H0", "L1H1"))],
    ...                        interp.WeightNoise(relative=True), [0.01, 0.1])   # doctest: +SKIP
    >>> assess_claim(res)[["level", "pass_rate", "holds"]]                       # doctest: +SKIP
    >>> estimate_node_inclusion(res)[["level", "node", "inclusion"]]             # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from analyses.circuit_tests._stats import clopper_pearson, wilson_interval
from interp.checks import check_fraction

__all__ = ["assess_claim", "estimate_node_inclusion"]


def _rows(results: Any, analysis: str) -> Any:
    table = results.table
    if analysis not in set(table["analysis"]):
        raise ValueError(f"no analysis {analysis!r} in these results; they have {sorted(set(table['analysis']))}. "
                         "Pass analysis= the CircuitTests name used in the sweep.")
    return table[table["analysis"] == analysis]


def assess_claim(results: Any, analysis: str = "circuit_tests", metric: str = "idealised_pass",
                 alpha: float = 0.05) -> Any:
    """Per degradation level: does the claim *hold* (its tests pass on ≥ 1 − α of the draws)?

    Returns a DataFrame with one row per (degradation, level) and the baseline (``level_index`` −1):
    ``n_draws``, ``n_pass``, ``pass_rate``, its Clopper–Pearson 95% interval ``ci_low``/``ci_high``
    and ``holds`` (pass_rate ≥ 1 − α). ``metric`` is any 0/1 metric of :class:`CircuitTests`
    (``idealised_pass``, ``equivalence_pass``, ``sufficiency_pass``, ...). NaN values (a test that
    could not run) are not counted as draws.
    """
    import pandas as pd

    check_fraction("assess_claim", "alpha", alpha, closed=False, fix="Use e.g. alpha=0.05.")
    rows = _rows(results, analysis)
    rows = rows[rows["metric"] == metric]
    if rows.empty:
        raise ValueError(f"assess_claim(metric={metric!r}): {analysis!r} has no such metric; use a *_pass metric "
                         "such as 'idealised_pass'.")
    out = []
    keys = ["degradation", "level_index"]
    for (deg, li), g in rows.groupby(keys, sort=True):
        values = g["value"].dropna().to_numpy()
        n, k = len(values), int((values == 1.0).sum())
        low, high = clopper_pearson(k, n)
        rate = k / n if n else float("nan")
        out.append({"degradation": deg, "level_index": int(li), "level": g["level"].iloc[0],
                    "delta_loss": float(g["delta_loss"].mean()) if "delta_loss" in g else float("nan"),
                    "n_draws": n, "n_pass": k, "pass_rate": rate, "ci_low": low, "ci_high": high,
                    "holds": bool(n > 0 and rate >= 1 - alpha)})
    return pd.DataFrame(out)


def estimate_node_inclusion(results: Any, analysis: str = "circuit_tests") -> Any:
    """Posterior node inclusion: per level and node of the claim, the fraction of draws at which the
    node is necessary (``necessary_{node}``), with Wilson and Clopper–Pearson 95% intervals.

    Returns a DataFrame: ``degradation``, ``level_index`` (−1: the trained weights), ``level``,
    ``node``, ``n_draws``, ``n_necessary``, ``inclusion``, ``wilson_low``/``wilson_high``,
    ``cp_low``/``cp_high``, and the mean ``necessity`` (share of the circuit's effect the node's
    knockout removes).
    """
    import pandas as pd

    rows = _rows(results, analysis)
    flags = rows[rows["metric"].str.startswith("necessary_")]
    if flags.empty:
        raise ValueError(f"estimate_node_inclusion: {analysis!r} has no necessary_<node> metrics; is it a "
                         "CircuitTests analysis?")
    shares = rows[rows["metric"].str.startswith("necessity_")]
    out = []
    for (deg, li, metric), g in flags.groupby(["degradation", "level_index", "metric"], sort=True):
        node = metric[len("necessary_"):]
        values = g["value"].dropna().to_numpy()
        n, k = len(values), int((values == 1.0).sum())
        wl, wh = wilson_interval(k, n)
        cl, ch = clopper_pearson(k, n)
        share = shares[(shares["degradation"] == deg) & (shares["level_index"] == li)
                       & (shares["metric"] == f"necessity_{node}")]["value"]
        out.append({"degradation": deg, "level_index": int(li), "level": g["level"].iloc[0], "node": node,
                    "n_draws": n, "n_necessary": k, "inclusion": k / n if n else float("nan"),
                    "wilson_low": wl, "wilson_high": wh, "cp_low": cl, "cp_high": ch,
                    "necessity": float(share.mean()) if len(share) else float("nan")})
    return pd.DataFrame(out)
