"""Results.survival: relative (fraction of the baseline) and absolute (threshold) criteria, and the
induction organism's causal-scrubbing hypotheses under a tempered posterior."""

import numpy as np
import pandas as pd
import pytest
import torch

from interp.results import Results


def synthetic(curves, chains=4):
    """Results with one analysis per ``curves[name] = (baseline, [value per level])``; chain c adds
    0.01·(c − 1.5). ``recovered`` is bounded, so its 95% interval is the percentile bootstrap of the
    4 chain means: mean ± 0.010 (the t interval would be mean ± 3.182·0.0065 = mean ± 0.021)."""
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


CURVES = {"correct": (0.98, [0.97, 0.95, 0.905, 0.80, 0.60]), "wrong": (0.24, [0.24, 0.23, 0.22, 0.20, 0.15])}


def test_absolute_threshold_separates_what_the_relative_one_cannot():
    res = synthetic(CURVES)
    rel = res.survival(fraction=0.5).set_index("analysis")
    # relative: each effect against half its own baseline; the wrong hypothesis "survives" as long
    assert rel.loc["correct", "last_held_delta_loss"] == pytest.approx(0.5)
    assert rel.loc["wrong", "last_held_delta_loss"] == pytest.approx(0.5)
    assert rel.loc["wrong", "threshold"] == pytest.approx(0.12) and rel["held_at_baseline"].all()
    assert set(rel["criterion"]) == {"fraction"}
    ab = res.survival(threshold=0.9).set_index("analysis")
    # absolute: 0.905 ± 0.010 straddles 0.9 (undecided), 0.80 + 0.010 < 0.9 is lost
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
    analyses = [CausalScrubbing(hyps[k], baselines={"treeified": hyps[k].unconditional()}, eval_rows=64, seeds=1,
                                bootstrap=100, name=k) for k in ("correct", "wrong_heads")]
    sampler = interp.TemperedPosterior(chains=4, n_draws=1, burnin=100, seed=0, progress=False,
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


# ------------------------------------------------------------------ readable statistics (issue 20)
def _two_chain_accuracy():
    rows = [{"degradation": "d", "level": None, "level_index": -1, "chain": -1, "draw": -1, "baseline": True,
             "loss": 1.0, "delta_loss": 0.0, "analysis": "probe", "metric": "accuracy", "kind": "effect",
             "value": 0.99}]
    for c, v in enumerate((0.9, 1.0)):
        rows.append({**rows[0], "level": 0.1, "level_index": 0, "chain": c, "draw": 0, "baseline": False,
                     "loss": 1.1, "delta_loss": 0.1, "value": v})
        rows.append({**rows[-1], "metric": "loss", "kind": "other", "value": 1.0 + v, "analysis": "probe"})
    return Results(pd.DataFrame(rows), pd.DataFrame(), {})


def test_interval_of_a_bounded_metric_stays_in_range():
    """Two chains at accuracy 0.9 and 1.0: a Student-t interval is 0.95 ± 12.706·0.05 = [0.31, 1.59];
    the percentile bootstrap of the chain means stays within [0.9, 1.0]. Unbounded metrics keep t."""
    s = _two_chain_accuracy().summary().query("level_index == 0").set_index("metric")
    acc = s.loc["accuracy"]
    assert acc["ci_method"] == "bootstrap" and acc["ci_over"] == "chains"
    assert acc["mean"] == pytest.approx(0.95) and 0.9 <= acc["ci_low"] < 0.95 < acc["ci_high"] <= 1.0
    loss = s.loc["loss"]
    assert loss["ci_method"] == "t" and loss["ci_high"] - loss["mean"] == pytest.approx(12.706 * 0.05, rel=1e-3)


def test_bounded_metric_names_and_bootstrap_is_deterministic():
    from interp.results import is_bounded
    from interp.stats import bootstrap_interval

    assert is_bounded("accuracy") and is_bounded("kl_recovered") and is_bounded("recovered")
    assert not is_bounded("loss") and not is_bounded("kl_unclaimed") and not is_bounded("loss_carried")
    v = np.array([0.2, 0.5, 0.9, 0.7])
    assert bootstrap_interval(v) == bootstrap_interval(v)  # fixed seed
    lo, hi = bootstrap_interval(v)
    assert v.min() <= lo < v.mean() < hi <= v.max()
    assert all(np.isnan(bootstrap_interval(np.array([0.5]))))


def test_levels_are_given_as_numbers_beside_their_label():
    """LossIncrease levels (recorded as their repr) get target ΔL and the calibrated nβ; a noise level
    its σ; every level a status."""
    res = synthetic({"a": (1.0, [0.9, 0.8])})
    res.table["degradation"] = "TemperedPosterior"
    res.table["level"] = res.table["level"].astype(object)
    res.table.loc[res.table["level_index"] == 0, "level"] = "LossIncrease(delta=0.1)"
    res.table.loc[res.table["level_index"] == 1, "level"] = "LossIncrease(delta=0.3)"
    res.meta = {"config": {"degradation": {"type": "TemperedPosterior"}},
                "levels": {"0": {"calibration": {"target": 0.1, "nbeta": 800.0, "converged": True, "rounds": []}},
                           "1": {"calibration": {"target": 0.3, "nbeta": 250.0, "converged": False,
                                                 "rounds": [{}, {}, {}, {}]}}}}
    s = res.summary().query("level_index >= 0").set_index("level_index")
    assert s.loc[0, "target_delta_loss"] == 0.1 and s.loc[0, "nbeta"] == 800.0 and s.loc[0, "status"] == "ok"
    assert s.loc[1, "target_delta_loss"] == 0.3 and s.loc[1, "nbeta"] == 250.0
    # calibration that did not converge is a failed level, with its reason, never held or lost
    assert s.loc[1, "status"] == "failed" and "did not converge in 4 rounds" in s.loc[1, "reason"]
    assert np.isnan(s.loc[0, "sigma"]) and np.isnan(s.loc[0, "step"])
    surv = res.survival(threshold=0.85).iloc[0]
    assert surv["lost_level"] is None and surv["failed_levels"] == [
        "LossIncrease(delta=0.3): calibration to ΔL 0.3 did not converge in 4 rounds"]
    noise = synthetic({"a": (1.0, [0.9])})
    noise.table["degradation"] = "WeightNoise"
    noise.meta = {"config": {"degradation": {"type": "WeightNoise"}, "levels": [0.0],
                             "level_axis": {"name": "sigma", "units": "standard deviations of Gaussian noise"}}}
    row = noise.summary().query("level_index == 0").iloc[0]
    assert row["sigma"] == 0.0 and np.isnan(row["nbeta"]) and np.isnan(row["target_delta_loss"])


def test_measured_loss_increase_off_its_target_marks_the_level_failed():
    res = synthetic({"a": (1.0, [0.9])})  # level 0 has ΔL 0.1
    res.meta = {"levels": {"0": {"calibration": {"target": 0.5, "nbeta": 10.0, "converged": True,
                                                 "tolerance": 0.25, "rounds": []}}}}
    row = res.summary().query("level_index == 0").iloc[0]
    assert row["status"] == "failed" and "measured ΔL 0.1 is off its target 0.5" in row["reason"]


def test_a_level_whose_chains_all_failed_keeps_its_rows_with_nan_statistics(tmp_path):
    """issue 18 item 6: the diverged level (every chain failed before its first draw, so no table rows)
    stays in summary() with NaN statistics and the failure reason; also after Results.load(out)."""
    from interp.degradations import TemperedPosterior
    from interp.sweep import run_sweep
    from reliability_tiny import LossProbe, tiny_bridge, tiny_task

    model, task = tiny_bridge(), tiny_task()
    sampler = TemperedPosterior(localization=1.0, lr=1e-3, chains=2, n_draws=3, burnin=1, batch_size=8,
                                eval_rows=8, init_batches=1, max_loss_increase=0.5, progress=False)
    res = run_sweep(model, task, [LossProbe()], sampler, [10.0, 1e5], out=tmp_path, eval_rows=8, progress=False)
    for r in (res, Results.load(tmp_path)):
        s = r.summary()
        lost = s[s["level_index"] == 1]
        assert len(lost) == len(s[s["level_index"] == 0]) > 0
        assert lost["mean"].isna().all() and lost["ci_low"].isna().all() and (lost["n_draws"] == 0).all()
        assert (lost["n_failed_chains"] == 2).all() and (lost["status"] == "failed").all()
        assert lost["reason"].str.contains("every chain failed").all()
        assert (lost["nbeta"] == 1e5).all()
        assert (s.loc[s["level_index"] == 0, "status"] == "ok").all()


def test_calibration_that_missed_its_target_is_marked_failed_not_a_result():
    """issue 18 item 5, display side: the sampler records a calibration that missed (``failed``); the
    level is failed in summary() with the sampler's reason, and survival() never counts it."""
    import interp
    from interp.degradations import CalibrationConfig, LossIncrease, TemperedPosterior
    from reliability_tiny import LossProbe

    torch.manual_seed(0)
    model, task = interp.organisms.load("modadd")
    # one pilot round cannot reach 0.5 nats from the default start: the level fails by construction
    sampler = TemperedPosterior(chains=2, n_draws=1, burnin=5, progress=False, eval_rows=64, batch_size=64,
                                calibration=CalibrationConfig(tolerance=0.01, max_rounds=1, acceptance=0.01))
    res = interp.run_sweep(model, task, [LossProbe()], sampler, [LossIncrease(0.5)], eval_rows=64, progress=False)
    cal = res.meta["levels"][0]["calibration"]
    assert cal["failed"]
    row = res.summary().query("level_index == 0").iloc[0]
    assert row["status"] == "failed" and f"calibration failed: {cal['failed']}" in row["reason"]
    assert row["target_delta_loss"] == 0.5 and row["nbeta"] == pytest.approx(cal["nbeta"])
    surv = res.survival(fraction=0.5).iloc[0]
    assert surv["lost_level"] is None and surv["last_held_level"] is None
    assert surv["failed_levels"] and surv["failed_levels"][0].startswith("LossIncrease(0.5): ")


def _old_record(key, value, delta_loss):
    """A record as sweeps stored it before the behavioural ``divergence`` column existed."""
    li, chain, draw = key
    row = {"degradation": "d", "level": None if li < 0 else 0.1, "level_index": li, "chain": chain, "draw": draw,
           "baseline": li < 0, "loss": 1.0 + delta_loss, "delta_loss": delta_loss, "analysis": "a",
           "metric": "recovered", "kind": "effect", "value": value}
    return {"key": list(key), "rows": [row], "draw": {} if li < 0 else {"chain": chain, "draw": draw, "loss": 1.0}}


def test_records_written_before_the_divergence_column_still_load(tmp_path):
    """An out directory from before ``divergence`` was recorded loads with NaN there (was a KeyError);
    a record missing a column that was always written is still a clear error."""
    import json

    records = [_old_record((-1, -1, -1), 0.9, 0.0), _old_record((0, 0, 0), 0.8, 0.1), _old_record((0, 1, 0), 0.7, 0.2)]
    res = Results.from_records(records, {})
    assert "divergence" in res.table.columns and res.table["divergence"].isna().all()
    assert res.table["value"].tolist() == [0.9, 0.8, 0.7]
    s = res.summary().query("level_index == 0").iloc[0]
    assert s["mean"] == pytest.approx(0.75) and np.isnan(s["divergence"])
    # the same records as a sweep's out directory, and results saved before the column existed
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "config.json").write_text("{}")
    assert Results.load(tmp_path).table["divergence"].isna().all()
    saved = res.save(tmp_path / "saved")
    pd.read_parquet(saved / "table.parquet").drop(columns="divergence").to_parquet(saved / "table.parquet")
    assert Results.load(saved).table["divergence"].isna().all()
    broken = _old_record((0, 2, 0), 0.6, 0.3)
    del broken["rows"][0]["value"]
    with pytest.raises(ValueError, match=r"record \[0, 2, 0\] has no 'value' column"):
        Results.from_records([*records, broken], {})


# ------------------------------------------------------------------ the divergence axis (no loss)
class _Alignment:
    """Effect: cosine between the weights and the trained ones (1 at w0, falling with the noise)."""

    name, effects, collaterals = "align", ("cosine",), ()

    def setup(self, model, task):
        self.w0 = torch.cat([p.detach().flatten().double() for p in model.parameters()])

    def __call__(self, model, task):
        w = torch.cat([p.detach().flatten().double() for p in model.parameters()])
        return {"cosine": float(torch.nn.functional.cosine_similarity(w, self.w0, dim=0))}


def no_loss_results():
    """Weight noise on a task without a loss (as MiniLM's): ΔL is NaN everywhere, the divergence
    (normalised MSE of the final hidden state) is recorded at every draw."""
    from reliability_tiny import tiny_bridge, tiny_task

    import interp
    from interp.tasks import Task

    task = tiny_task()
    no_loss = Task("no_loss", task.dataset, has_loss=False)
    noise = interp.WeightNoise(relative=True, draws_per_level=4)
    return interp.run_sweep(tiny_bridge(), no_loss, [_Alignment()], noise, [0.001, 0.01, 10.0], eval_rows=8,
                            progress=False)


def test_a_model_without_a_loss_survives_along_the_divergence():
    """Without a loss, survival, dissolution and the verdicts read the levels along the behavioural
    divergence and say so with its units (before: last_held_delta_loss NaN, no last held level, the
    verdict in ΔL); the columns are the same on either axis."""
    res = no_loss_results()
    assert res.table["delta_loss"].isna().all()
    surv = res.survival(fraction=0.5).iloc[0]
    assert surv["axis"] == "divergence"
    assert surv["last_held_level"] == 0.01 and surv["lost_level"] == 10.0
    assert 0 < surv["last_held_divergence"] < surv["lost_divergence"] and np.isnan(surv["last_held_delta_loss"])
    div = res.summary().set_index("level_index").query("metric == 'cosine'")["divergence"]
    assert surv["last_held_divergence"] == pytest.approx(div[1])
    assert list(res.survival(axis="divergence").columns) == list(surv.index)
    d = res.dissolution("align", "cosine", relative=0.5)
    assert d.axis == "divergence" and d.outcome == "dissolves"
    assert div[1] <= d.divergence <= div[2] and d.divergence_ci == (pytest.approx(div[1]), pytest.approx(div[2]))
    (line,) = res.verdicts()
    assert "holds (cosine ≥ 0.5 = 0.5× its value at w0) up to divergence " in line and "normalised MSE" in line
    assert "ΔL" not in line
    with pytest.raises(ValueError, match=r"axis='delta_loss': no draw of these results has a finite delta_loss"):
        res.survival(axis="delta_loss")
    with pytest.raises(ValueError, match=r"axis='dL': must be 'delta_loss'"):
        res.dissolution("align", "cosine", relative=0.5, axis="dL")


def test_axis_picks_the_ordering_and_both_positions_are_reported():
    """With a loss the default axis is ΔL; ``axis="divergence"`` orders the levels by divergence
    instead (here the reverse order), and the row gives both positions whatever the axis."""
    res = synthetic({"correct": (0.98, [0.97, 0.95, 0.60])})
    # divergence falling with ΔL: the two axes order the levels oppositely
    res.table["divergence"] = np.where(res.table["baseline"], 0.0, 1.0 - res.table["delta_loss"])
    by_loss = res.survival(fraction=0.9).iloc[0]
    assert by_loss["axis"] == "delta_loss"
    assert by_loss["last_held_level"] == 1.0 and by_loss["lost_level"] == 2.0
    assert by_loss["last_held_divergence"] == pytest.approx(0.8)
    by_div = res.survival(fraction=0.9, axis="divergence").iloc[0]
    assert by_div["axis"] == "divergence" and by_div["last_held_level"] is None and by_div["lost_level"] == 2.0
    assert "up to ΔL" in res.verdicts({"recovered": 0.9})[0]
    assert "up to divergence" not in res.verdicts({"recovered": 0.9})[0]


def test_levels_put_each_level_on_its_recorded_axis():
    """``Results.levels()`` reads the level axis the sweep recorded: a plain-number level is
    ``level_value`` on it (and fills the column of the axis's name where there is one); a level
    object (a loss increase) has no value on the axis; without a recorded axis nothing is named."""
    res = synthetic({"a": (1.0, [0.9, 0.8])})
    res.meta = {"config": {"level_axis": {"name": "sigma", "units": "standard deviation of the noise"}}}
    lv = res.levels()
    assert lv["level_axis"].tolist() == ["sigma"] * 2 and lv["level_value"].tolist() == [0.0, 1.0]
    assert lv["sigma"].tolist() == [0.0, 1.0] and lv[["nbeta", "step"]].isna().all().all()
    assert set(lv["level_units"]) == {"standard deviation of the noise"}
    res.table["level"] = res.table["level"].astype(object)
    res.table.loc[res.table["level_index"] == 1, "level"] = "LossIncrease(0.2)"
    res.meta = {"config": {"level_axis": {"name": "nbeta", "units": "inverse temperature"}}}
    lv = res.levels()
    assert lv["nbeta"].iloc[0] == 0.0 and np.isnan(lv["level_value"].iloc[1])
    assert lv["target_delta_loss"].iloc[1] == 0.2
    res.meta = {}
    assert res.levels()[["level_axis", "level_units"]].isna().all().all()


def test_a_behavioural_target_is_not_checked_against_the_tasks_loss():
    """A LossIncrease calibrated on a behavioural objective (its target in normalised MSE, recorded
    with its units) is not failed for a task ΔL far from that target (the units differ); the same
    record on the task's loss is; both levels say their target's units."""
    def level_row(units):
        res = synthetic({"a": (1.0, [0.9])})  # measured task ΔL 0.1
        res.table["degradation"] = "TemperedPosterior"
        res.table["level"] = res.table["level"].astype(object)
        res.table.loc[res.table["level_index"] == 0, "level"] = "LossIncrease(0.01)"
        cal = {"target": 0.01, "nbeta": 80.0, "converged": True, "rounds": [], "acceptance": 0.5, "units": units}
        res.meta = {"config": {"degradation": {"type": "TemperedPosterior"}}, "levels": {"0": {"calibration": cal}}}
        return res.levels().iloc[0]

    behavioural = level_row("normalised MSE")
    assert behavioural["status"] == "ok" and behavioural["target_units"] == "normalised MSE"
    assert behavioural["target_delta_loss"] == 0.01
    task = level_row("nats/token")
    assert task["status"] == "failed" and "measured ΔL 0.1 is off its target 0.01" in task["reason"]
