"""The clean window as the claim is made (issue 20): effect/collateral ratio per level with bootstrap
intervals over chains, compared with the ratio at w0; and collateral measured only where the task
marks trained predictions outside the claim."""

from __future__ import annotations

import datasets
import numpy as np
import pandas as pd
import pytest
import torch

from interp.results import Results
from interp.tasks import Task
from interp.verdicts import clean_window_findings
from reliability_tiny import tiny_bridge, tiny_task


def synthetic(effect, collateral, spread=0.02, chains=6):
    """One analysis; per level (effect, collateral) means, chain c adds ±spread·(c − 2.5) to both."""
    rows = []

    def add(li, c, metric, kind, value):
        rows.append({"degradation": "d", "level": None if li < 0 else 0.1 * (li + 1), "level_index": li,
                     "chain": c, "draw": 0 if li >= 0 else -1, "baseline": li < 0, "loss": 1.0,
                     "delta_loss": 0.0 if li < 0 else 0.1 * (li + 1), "analysis": "abl", "metric": metric,
                     "kind": kind, "value": value})

    for li, (e, k) in enumerate(zip(effect, collateral)):
        li -= 1
        for c in ([-1] if li < 0 else range(chains)):
            off = 0 if li < 0 else spread * (c - (chains - 1) / 2)
            add(li, c, "loss_carried", "effect", e + off)
            add(li, c, "kl_unclaimed", "collateral", k - off * k)
    return Results(pd.DataFrame(rows), pd.DataFrame(), {})


def test_ratio_intervals_and_comparison_with_the_trained_weights():
    # w0: 2.0 / 0.2 = 10; level 0: 2.0 / 0.1 = 20 (better); level 1: 1.0 / 0.1 = 10 (not); level 2: 1/0.2 (worse)
    res = synthetic([2.0, 2.0, 1.0, 1.0], [0.2, 0.1, 0.1, 0.2])
    cw = res.clean_window().set_index("level_index")
    assert list(cw.index) == [0, 1, 2] and np.allclose(cw["baseline_ratio"], 10.0)
    assert cw.loc[0, "ratio"] == pytest.approx(20.0, rel=0.01)
    for li in cw.index:
        r = cw.loc[li]
        assert r["ratio_ci_low"] <= r["ratio"] <= r["ratio_ci_high"]
        assert r["effect_ci_low"] <= r["effect_mean"] <= r["effect_ci_high"]
        assert r["collateral_ci_low"] <= r["collateral_mean"] <= r["collateral_ci_high"]
    assert list(cw["better_than_w0"]) == [True, False, False]
    assert list(cw["worse_than_w0"]) == [False, False, True]
    (finding,) = clean_window_findings(res)
    assert finding.startswith("abl (loss_carried/kl_unclaimed) under d: better than at w0 (10)")
    assert "at ΔL 0.1" in finding and "ΔL 0.2" not in finding


def test_no_level_better_is_said_with_the_best_interval():
    res = synthetic([2.0, 1.5, 1.0], [0.2, 0.2, 0.2])
    (finding,) = clean_window_findings(res)
    assert "nowhere significantly better than at w0 (10); best 7.5" in finding


def _with_collateral_mask(task: Task, mask_positions: slice) -> Task:
    splits = {}
    for split in ("train", "test"):
        ds = task.dataset[split]
        n, length = len(ds), len(ds[0]["input_ids"])
        m = torch.zeros(n, length, dtype=torch.long)
        m[:, mask_positions] = 1
        splits[split] = ds.add_column("collateral_mask", m.tolist())
    return Task(task.name, datasets.DatasetDict(splits))


def test_collateral_only_where_the_task_marks_trained_predictions():
    """Without a collateral_mask, HeadAblation and CausalScrubbing declare no collateral (their
    unscored-position KL is an ordinary metric); with one, kl_unclaimed is the KL there."""
    from analyses.ablation import HeadAblation
    from analyses.scrubbing import CausalScrubbing, Hypothesis
    from analyses.scrubbing._hypothesis import Head

    model, task = tiny_bridge(), tiny_task()
    plain = HeadAblation([(0, 0)], eval_rows=8)
    plain.setup(model, task)
    assert plain.collaterals == () and "kl_unclaimed" in plain(model, task)
    masked_task = _with_collateral_mask(task, slice(1, 3))  # targets 1 and 2: unscored, "trained"
    masked = HeadAblation([(0, 0)], eval_rows=8)
    masked.setup(model, masked_task)
    assert masked.collaterals == ("kl_unclaimed",)
    out, ref = masked(model, masked_task), plain(model, task)
    assert out["kl_claimed"] == pytest.approx(ref["kl_claimed"])
    assert out["kl_unclaimed"] != pytest.approx(ref["kl_unclaimed"])  # fewer positions than all unscored
    hyp = Hypothesis([Head(0, 0)], name="h")
    scrub = CausalScrubbing(hyp, eval_rows=8, seeds=1, bootstrap=10)
    scrub.setup(model, task)
    assert scrub.collaterals == ()
    scrub_m = CausalScrubbing(hyp, eval_rows=8, seeds=1, bootstrap=10)
    scrub_m.setup(model, masked_task)
    assert scrub_m.collaterals == ("kl_unclaimed",) and np.isfinite(scrub_m(model, masked_task)["kl_unclaimed"])


def test_an_analysis_without_collateral_is_said_so():
    res = synthetic([2.0, 2.0], [0.2, 0.1])
    res.table.loc[res.table["metric"] == "kl_unclaimed", "kind"] = "other"
    assert res.clean_window().empty
    (finding,) = clean_window_findings(res)
    assert "no collateral measured where a trained behaviour exists" in finding
    assert len(res.clean_window(collateral="kl_unclaimed")) == 1
