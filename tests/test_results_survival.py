"""Results.survival: relative (fraction of the baseline) and absolute (threshold) criteria, and the
induction organism's causal-scrubbing hypotheses under a tempered posterior."""

import numpy as np
import pandas as pd
import pytest
import torch

from interp.results import Results


def synthetic(curves, chains=4):
    """Results with one analysis per ``curves[name] = (baseline, [value per level])``; chain c adds
    0.01·(c − 1.5), so every level's 95% interval is mean ± 3.182·0.0065 = mean ± 0.021."""
    rows = []

    def add(analysis, li, level, c, value, dl):
        rows.append({"degradation": "d", "level": level, "level_index": li, "chain": c, "draw": 0,
                     "baseline": li == -1, "loss": 1 + dl, "delta_loss": dl, "analysis": analysis,
                     "metric": "recovered", "kind": "effect", "value": value})

    for name, (base, values) in curves.items():
        add(name, -1, None, -1, base, 0.0)
        for li, v in enumerate(values):
            for c in range(chains):
                add(name, li, float(li), c, v + 0.01 * (c - (chains - 1) / 2), 0.1 * (li + 1))
    return Results(pd.DataFrame(rows), pd.DataFrame(), {})


CURVES = {"correct": (0.98, [0.97, 0.95, 0.91, 0.80, 0.60]), "wrong": (0.24, [0.24, 0.23, 0.22, 0.20, 0.15])}


def test_absolute_threshold_separates_what_the_relative_one_cannot():
    res = synthetic(CURVES)
    rel = res.survival(fraction=0.5).set_index("analysis")
    # relative: each effect against half its own baseline; the wrong hypothesis "survives" as long
    assert rel.loc["correct", "last_held_delta_loss"] == pytest.approx(0.5)
    assert rel.loc["wrong", "last_held_delta_loss"] == pytest.approx(0.5)
    assert rel.loc["wrong", "threshold"] == pytest.approx(0.12) and rel["held_at_baseline"].all()
    assert set(rel["criterion"]) == {"fraction"}
    ab = res.survival(threshold=0.9).set_index("analysis")
    # absolute: 0.91 ± 0.021 straddles 0.9 (undecided), 0.80 + 0.021 < 0.9 is lost
    assert ab.loc["correct", "last_held_level"] == 1.0 and ab.loc["correct", "lost_level"] == 3.0
    assert ab.loc["correct", "last_held_delta_loss"] == pytest.approx(0.2)
    assert ab.loc["correct", "held_at_baseline"]
    # the wrong hypothesis never recovers 90%: not even at the trained weights
    assert pd.isna(ab.loc["wrong", "last_held_level"]) and np.isnan(ab.loc["wrong", "last_held_delta_loss"])
    assert not ab.loc["wrong", "held_at_baseline"] and ab.loc["wrong", "lost_level"] == 0.0
    assert set(ab["criterion"]) == {"threshold"} and (ab["threshold"] == 0.9).all()
    assert list(ab.columns) == list(rel.columns)


def test_default_is_half_the_baseline_and_criteria_are_validated():
    res = synthetic(CURVES)
    pd.testing.assert_frame_equal(res.survival(), res.survival(fraction=0.5))
    by_metric = res.survival(threshold={"recovered": 0.9})
    pd.testing.assert_frame_equal(by_metric, res.survival(threshold=0.9))
    with pytest.raises(ValueError, match="give one criterion"):
        res.survival(fraction=0.5, threshold=0.9)
    with pytest.raises(ValueError, match="fraction=1.5"):
        res.survival(fraction=1.5)
    with pytest.raises(ValueError, match="threshold=nan"):
        res.survival(threshold=float("nan"))
    with pytest.raises(ValueError, match=r"\['kl'\] are not effect metrics.*effect metrics: \['recovered'\]"):
        res.survival(threshold={"kl": 0.1})
    with pytest.raises(ValueError, match="threshold=\\{\\}"):
        res.survival(threshold={})
    with pytest.raises(ValueError, match="threshold\\['recovered'\\]='high'"):
        res.survival(threshold={"recovered": "high"})


@pytest.mark.slow
def test_correct_hypothesis_survives_a_tempered_posterior_longer_than_the_wrong_heads():
    """run_sweep with CausalScrubbing over a calibrated TemperedPosterior grid on the induction organism:
    the correct hypothesis keeps ≥ 90% of the loss recovered (95% lower bound over 4 chains) at the
    ΔL ≈ 0.1 level; the wrong-heads one (K from L0H0, not the previous-token head) recovers ≈ 0.23 at
    every level, the trained weights included. Measured: correct 0.949 (0.940-0.958) at ΔL 0.13,
    0.917 (0.899-0.935) at ΔL 0.47; wrong heads 0.22 (0.20-0.24) at both."""
    import interp
    from analyses.scrubbing import CausalScrubbing
    from analyses.scrubbing.induction import hypotheses
    from interp.degradations import CalibrationConfig

    torch.set_num_threads(1)
    model, task = interp.organisms.load("induction")
    hyps = hypotheses()
    analyses = [CausalScrubbing(hyps[k], baselines={"treeified": hyps[k].unconditional()}, rows=64, seeds=1,
                                bootstrap=100, name=k) for k in ("correct", "wrong_heads")]
    sampler = interp.TemperedPosterior(chains=4, draws=1, burnin=100, seed=0, progress=False,
                                       calibration=CalibrationConfig(tolerance=0.3, max_rounds=4))
    res = interp.run_sweep(model, task, analyses, sampler, [interp.LossIncrease(x) for x in (0.1, 0.5)],
                           progress=False)
    s = res.summary().query("metric == 'recovered' and level_index >= 0")
    assert s["delta_loss"].min() > 0.05 and s["delta_loss"].max() < 1.0  # the levels are real degradations
    surv = res.survival(threshold={"recovered": 0.9}).set_index("analysis")
    correct, wrong = surv.loc["correct"], surv.loc["wrong_heads"]
    assert correct["held_at_baseline"] and correct["last_held_delta_loss"] > 0.05
    assert not wrong["held_at_baseline"] and pd.isna(wrong["last_held_level"])
    assert wrong["lost_delta_loss"] == pytest.approx(s["delta_loss"].min())
    # the relative criterion cannot tell them apart: both keep half of their own baseline throughout
    rel = res.survival(fraction=0.5).query("metric == 'recovered'").set_index("analysis")
    assert rel["lost_level"].isna().all()
    # the ratio means something at every draw: baseline and clean losses stay ≥ min_gap apart
    flags = res.table.query("metric == 'flag_ratio_unreliable'")["value"]
    assert len(flags) == 2 * (1 + 2 * 4) and (flags == 0).all()
