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


# ------------------------------------------------ induction_full: a collateral on a trained behaviour
@pytest.fixture(scope="module")
def full():
    from interp import organisms

    return organisms.load("induction_full", device="cpu")


def test_induction_full_masks_split_every_target_into_claim_and_first_seen(full):
    _, task = full
    d = task.tensors("test", rows=128, columns=("input_ids", "target_mask", "collateral_mask", "period"))
    claim, coll, ids = d["target_mask"].bool(), d["collateral_mask"].bool(), d["input_ids"].long()
    assert not (claim & coll).any() and (claim | coll)[:, 1:].all() and not (claim | coll)[:, 0].any()
    first_seen = torch.tensor([[int(ids[r, t]) not in ids[r, 1:t].tolist() for t in range(1, ids.shape[1])]
                               for r in range(len(ids))])
    assert torch.equal(coll[:, 1:], first_seen)
    assert torch.equal(coll.sum(1), d["period"].long())


def test_induction_full_collateral_positions_carry_a_trained_behaviour(full):
    """First-seen loss well below uniform (ln 65 = 4.17; the shipped weights: 3.75 over ~9,000 test
    tokens, whose per-token spread of ~1.5 nats gives a standard error < 0.02), never below what
    knowing the Zipf prior over the unseen tokens allows (3.48, up to the same error); and the model
    keeps its induction circuit (the claim)."""
    from interp.organisms import induction, induction_full

    model, task = full
    m = induction_full.position_losses(model, task)
    assert m["loss_first_seen"] < m["uniform"] - 0.3
    assert m["loss_first_seen"] > m["unigram_unseen"] - 0.05
    assert m["loss_repeated"] < 0.2 and m["accuracy_repeated"] > 0.95
    prev, ind = induction.previous_token_scores(model, task), induction.induction_scores(model, task)
    assert prev[induction_full.PREV_TOKEN_HEAD] == prev[0].max() and prev[0].max() > 0.25
    assert all(ind[h] > 0.3 for h in induction_full.INDUCTION_HEADS) and ind[0].max() < 0.1


def test_induction_full_analyses_declare_the_first_seen_kl_a_collateral(full):
    from analyses.ablation import HeadAblation
    from analyses.scrubbing import CausalScrubbing
    from analyses.scrubbing.induction import hypotheses
    from interp.organisms import induction_full

    model, task = full
    ablation = HeadAblation([induction_full.PREV_TOKEN_HEAD], eval_rows=64)
    ablation.setup(model, task)
    out = ablation(model, task)
    assert ablation.collaterals == ("kl_unclaimed",) and 0 < out["kl_unclaimed"] < out["kl_claimed"]
    hyps = hypotheses(induction_full.INDUCTION_HEADS, (induction_full.PREV_TOKEN_HEAD,))
    recovered = {}
    for name in ("correct", "wrong_heads"):
        scrub = CausalScrubbing(hyps[name], eval_rows=64, seeds=1, bootstrap=50)
        scrub.setup(model, task)
        assert scrub.collaterals == ("kl_unclaimed",)
        recovered[name] = scrub(model, task)["recovered"]
    assert recovered["correct"] > 0.85 and recovered["wrong_heads"] < 0.5  # the hypothesis applies


def test_no_clean_window_for_the_previous_token_head_under_the_trained_posterior(full):
    """The finding's direction (benchmarks/clean_window.py, BENCHMARKS.md): sampled on the loss the
    organism was trained with, at ΔL 0.3 the ablation's loss_carried / kl_unclaimed (84 at w0) is
    significantly worse than at w0 (about 20, interval a factor 3 below w0 at 8 chains)."""
    import interp
    from analyses.ablation import HeadAblation
    from interp.degradations import CalibrationConfig
    from interp.organisms import induction_full

    model, task = full
    sampler = interp.TemperedPosterior(chains=4, n_draws=1, burnin=100, seed=0, progress=False,
                                       calibration=CalibrationConfig(tolerance=0.2, max_rounds=4),
                                       objective=induction_full.score_every_token(task))
    res = interp.run_sweep(model, task, [HeadAblation([induction_full.PREV_TOKEN_HEAD], eval_rows=64)], sampler,
                           [interp.LossIncrease(0.3)], eval_rows=64, progress=False)
    (row,) = res.clean_window().itertuples()
    assert row.effect == "loss_carried" and row.collateral == "kl_unclaimed" and row.n_chains == 4
    assert row.worse_than_w0 and not row.better_than_w0
    assert row.collateral_ci_low > 2 * res.table.query("baseline and metric == 'kl_unclaimed'")["value"].iloc[0]
