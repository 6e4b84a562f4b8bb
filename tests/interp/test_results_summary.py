"""``Results.summary`` at size: the vectorised statistics equal a straightforward per-group reference
to the last bit, and the memo of summary/levels sees a table changed in place."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from interp.results import Results, is_bounded
from interp.stats import bootstrap_interval, t_quantile_975

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_results", ROOT / "benchmarks" / "bench_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _reference_stats(g: pd.DataFrame, bounded: bool) -> dict:
    """The statistics of one group of rows, computed plainly: chain means with numpy, then mean, s.e.
    and a Student-t (or, bounded, percentile-bootstrap) interval over chains (over draws for one)."""
    if g.empty:
        return {"mean": math.nan, "sem": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n_chains": 0,
                "n_draws": 0}
    per_chain = [float(np.mean(v["value"].to_numpy(float))) for _, v in g.groupby("chain")]
    values = np.array(per_chain) if len(per_chain) > 1 else g["value"].to_numpy(float)
    n, mean = len(values), float(values.mean())
    sem = float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    if bounded:
        low, high = bootstrap_interval(values)
    else:
        low, high = mean - t_quantile_975(n - 1) * sem, mean + t_quantile_975(n - 1) * sem
    return {"mean": mean, "sem": sem, "ci_low": low, "ci_high": high, "n_chains": len(per_chain),
            "n_draws": len(g)}


def _reference_summary(res: Results) -> pd.DataFrame:
    t = res.table
    failed = {(r.degradation, r.level_index, r.chain) for r in res.failed_chains().itertuples()}
    rows = []
    for (deg, li, analysis, metric), g in t[~t["baseline"]].groupby(
            ["degradation", "level_index", "analysis", "metric"]):
        kept = g[[(deg, li, c) not in failed for c in g["chain"]]]
        div = kept["divergence"].dropna()
        rows.append({"degradation": deg, "level_index": li, "analysis": analysis, "metric": metric,
                     "delta_loss": kept["delta_loss"].mean(),
                     "divergence": float(div.mean()) if len(div) else math.nan,
                     **_reference_stats(kept, is_bounded(metric))})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def study():
    """A small study shaped like a real one (3 chains, 2 levels per degradation), and a copy with a failed
    chain, a level whose chains all failed, a NaN value and draws without a ΔL."""
    res = _bench().make_results(posterior_levels=(0.01, 0.1), noise_levels=(0.05, 0.2), chains=3, draws=2,
                                noise_draws=2)
    broken = Results(res.table.copy(), res.draws.copy(), {"parts": [dict(p) for p in res.meta["parts"]],
                                                          "thresholds": res.meta["thresholds"]})
    levels = {k: dict(v) for k, v in broken.meta["parts"][0]["levels"].items()}
    levels["0"]["chains"] = [dict(c) for c in levels["0"]["chains"]]
    levels["0"]["chains"][1].update(failed=True, reason="diverged")
    levels["1"]["chains"] = [dict(c, failed=True, reason="nan loss") for c in levels["1"]["chains"]]
    broken.meta["parts"][0] = {**broken.meta["parts"][0], "levels": levels}
    t = broken.table
    t.loc[t.index[~t["baseline"]][7], "value"] = np.nan
    t.loc[t.index[-40:], "delta_loss"] = np.nan
    return {"plain": res, "broken": broken}


@pytest.mark.parametrize("which", ["plain", "broken"])
def test_summary_equals_the_reference_to_the_last_bit(study, which):
    res = study[which]
    s = res.summary()
    got = s[s["level_index"] >= 0].set_index(["degradation", "level_index", "analysis", "metric"]).sort_index()
    ref = _reference_summary(res).set_index(["degradation", "level_index", "analysis", "metric"]).sort_index()
    assert len(got) == len(ref) > 100
    pd.testing.assert_frame_equal(got[ref.columns], ref, check_exact=True, check_dtype=False)
    if which == "broken":  # the failed chains are out, the failed level keeps its rows with NaN statistics
        lv1 = got.xs(1, level="level_index").xs("TemperedPosterior", level="degradation")
        assert lv1["mean"].isna().all() and (lv1["status"] == "failed").all()
        assert (got.xs(0, level="level_index").xs("TemperedPosterior", level="degradation")["n_chains"] == 2).all()
    base = s[s["level_index"] < 0]
    by_rows = res.table[res.table["baseline"]].groupby(["degradation", "analysis", "metric"])["value"].mean()
    assert np.array_equal(base.set_index(["degradation", "analysis", "metric"])["mean"].sort_index().to_numpy(),
                          by_rows.sort_index().to_numpy(), equal_nan=True)


def test_summary_memo_sees_a_table_changed_in_place(study):
    res = Results(study["plain"].table.copy(), study["plain"].draws, study["plain"].meta)
    first = res.summary()
    first.loc[0, "mean"] = -1.0  # a caller's edit of its copy does not reach the memo
    assert res.summary().loc[0, "mean"] != -1.0
    row = res.table.index[~res.table["baseline"]][0]
    res.table.loc[row, "value"] += 1.0
    key = tuple(res.table.loc[row, ["degradation", "level_index", "analysis", "metric"]])
    s = res.summary().set_index(["degradation", "level_index", "analysis", "metric"])
    ref = _reference_summary(res).set_index(["degradation", "level_index", "analysis", "metric"])
    assert s.loc[key, "mean"] == ref.loc[key, "mean"] != first.set_index(
        ["degradation", "level_index", "analysis", "metric"]).loc[key, "mean"]
