"""interp.dissolution (adaptive search for the level at which an effect is lost), Results.dissolution
(the same on an existing grid) and compare_dissolutions.

The search test uses relative WeightNoise on a tiny bridge with a deterministic analysis (agreement of
the next-token distribution with the trained weights' one on a fixed batch): every level draws the
same noise directions (one seed), only scaled by σ, so held / lost is a deterministic, monotone
function of σ and the search must bracket the crossing exactly where a dense grid puts it."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

import interp
from interp.degradations import Checkpoints, WeightNoise
from interp.crossing import compare_dissolutions, crossing
from interp.results import Results
from reliability_tiny import tiny_bridge, tiny_task


class Agreement:
    """Effect ``agreement``: 1 − mean total-variation distance between next-token distributions at
    the current and the trained weights on 8 fixed test rows (1 at w0, falls with noise)."""

    name = "agreement"
    effects = ("agreement",)
    collaterals = ()

    def setup(self, model, task):
        self.ids = task.tensors("test", rows=8)["input_ids"].long()
        with torch.no_grad():
            self.p0 = torch.softmax(model(self.ids).float(), -1)

    def __call__(self, model, task):
        with torch.no_grad():
            p = torch.softmax(model(self.ids).float(), -1)
        return {"agreement": 1 - 0.5 * float((p - self.p0).abs().sum(-1).mean())}


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return tiny_bridge(), tiny_task()


def test_search_brackets_the_crossing_a_dense_grid_finds(tiny, tmp_path):
    model, task = tiny
    noise = WeightNoise(relative=True, draws_per_level=8, seed=0, eval_rows=8)
    kwargs = dict(metric="agreement", threshold=0.8, tolerance=0.1, start=0.05, limits=(1e-3, 10.0),
                  max_levels=16, eval_rows=8, out=tmp_path / "search")
    d = interp.dissolution(model, task, Agreement(), noise, **kwargs)
    assert d.outcome == "dissolves" and d.axis == "sigma" and not d.interpolated
    lo, hi = d.level_ci
    # resolved to the tolerance between neighbours; the interval itself spans the undecided zone
    xs = sorted(x for x in d.points["x"] if lo <= x <= hi)
    assert d.converged and all(b / a <= 1.1 for a, b in zip(xs, xs[1:])) and lo <= d.level <= hi
    assert set(d.points.loc[(d.points["x"] > lo) & (d.points["x"] < hi), "decision"]) <= {"undecided"}
    assert d.delta_loss_ci[0] <= d.delta_loss <= d.delta_loss_ci[1]
    # the sweep's behavioural divergence at the crossing, with the same bracket
    assert 0 < d.divergence_ci[0] <= d.divergence <= d.divergence_ci[1]
    assert len(d.points) <= 17 and d.points.iloc[0]["x"] == 0 and d.points.iloc[0]["decision"] == "held"
    # a dense grid over the same range: its last held and first lost σ straddle the search's interval
    grid = np.geomspace(lo / 4, hi * 4, 40).tolist()
    res = interp.run_sweep(model, task, [Agreement()], noise, grid, eval_rows=8, progress=False)
    s = res.summary().query("level_index >= 0").sort_values("sigma")
    held = s["ci_low"] >= 0.8
    lost = s["ci_high"] < 0.8
    assert held.any() and lost.any()
    g_lo, g_hi = s.loc[held, "sigma"].max(), s.loc[lost, "sigma"].min()
    assert g_lo < g_hi  # monotone: every held level lies below every lost one
    assert g_lo <= hi and lo <= g_hi  # the same crossing
    assert s.loc[(s["sigma"] > lo) & (s["sigma"] < hi), "sigma"].between(g_lo, g_hi).all()
    # resumable: the same search again reads every level back from out
    again = interp.dissolution(model, task, Agreement(), noise, **kwargs)
    pd.testing.assert_frame_equal(again.points, d.points)


def test_never_holds_and_holds_throughout_are_outcomes(tiny):
    model, task = tiny
    noise = WeightNoise(relative=True, draws_per_level=2, seed=0, eval_rows=8)
    never = interp.dissolution(model, task, Agreement(), noise, metric="agreement", threshold=1.5,
                               start=0.01, eval_rows=8)
    assert never.outcome == "never_holds" and len(never.points) == 2  # the trained weights decide it
    assert "never holds" in never.verdict("x")
    always = interp.dissolution(model, task, Agreement(), noise, metric="agreement", relative=0.01,
                                start=1e-3, limits=(1e-3, 3e-3), factor=3.0, eval_rows=8)
    assert always.outcome == "holds_throughout" and "whole range searched" in always.verdict()


def test_bad_arguments_are_refused_before_any_work(tiny):
    model, task = tiny
    noise = WeightNoise(relative=True, draws_per_level=2)
    with pytest.raises(ValueError, match="exactly one criterion"):
        interp.dissolution(model, task, Agreement(), noise, metric="agreement", threshold=0.8, relative=0.5)
    with pytest.raises(ValueError, match="draws per level"):
        interp.dissolution(model, task, Agreement(), WeightNoise(draws_per_level=1), metric="agreement",
                           threshold=0.8)
    with pytest.raises(ValueError, match="not a degradation"):
        interp.dissolution(model, task, Agreement(), object(), metric="agreement", threshold=0.8)
    with pytest.raises(ValueError, match=r"fixed grid .* Results.dissolution"):
        interp.dissolution(model, task, Agreement(), Checkpoints([(0, model)]), metric="agreement", threshold=0.8)
    with pytest.raises(ValueError, match=r"axis='nbeta': WeightNoise searches along \('sigma',\)"):
        interp.dissolution(model, task, Agreement(), noise, metric="agreement", threshold=0.8, axis="nbeta")
    with pytest.raises(ValueError, match="start=20"):
        interp.dissolution(model, task, Agreement(), noise, metric="agreement", threshold=0.8, start=20)


def _points(means, halfwidth=0.01, dls=None):
    xs = [0.0, *range(1, len(means))]
    dls = dls or [0.0, *[0.1 * i for i in range(1, len(means))]]
    rows = []
    for x, m, dl in zip(xs, means, dls):
        lo, hi = m - (halfwidth if x else 0), m + (halfwidth if x else 0)
        dec = "held" if lo >= 0.9 else "lost" if hi < 0.9 else "undecided"
        rows.append({"x": float(x), "mean": m, "ci_low": lo, "ci_high": hi, "decision": dec, "delta_loss": dl,
                     "nbeta": float("inf") if not x else 1000.0 / x, "divergence": float("nan")})
    return pd.DataFrame(rows)


def test_crossing_interval_is_last_held_to_first_lost_with_undecided_inside():
    c = crossing(_points([0.98, 0.95, 0.905, 0.895, 0.85]), 0.9)
    assert c["outcome"] == "dissolves"
    assert c["x_ci"] == (1.0, 4.0) and c["delta_loss_ci"] == pytest.approx((0.1, 0.4))
    # the means cross 0.9 between x = 2 (0.905) and 3 (0.895), halfway, in log x
    assert c["x"] == pytest.approx(math.sqrt(2 * 3)) and c["delta_loss"] == pytest.approx(0.25)
    assert crossing(_points([0.5, 0.4]), 0.9)["outcome"] == "never_holds"
    assert crossing(_points([0.98, 0.95, 0.94]), 0.9)["outcome"] == "holds_throughout"
    assert crossing(_points([0.98, 0.95, 0.90]), 0.9)["outcome"] == "undecided"
    assert crossing(_points([0.98, 0.7]), 0.9)["outcome"] == "lost_below_range"
    nan_at_w0 = _points([0.98, 0.7])
    nan_at_w0.loc[0, ["mean", "ci_low", "ci_high", "decision"]] = [np.nan, np.nan, np.nan, "undecided"]
    assert crossing(nan_at_w0, 0.9)["outcome"] == "undecided"  # not "never holds"


def test_compare_two_dissolution_points():
    def grid(curve):
        rows = []
        for li, v in enumerate(curve):
            base = li == 0
            for c in ([-1] if base else range(4)):
                rows.append({"degradation": "d", "level": None if base else 0.1 * li, "level_index": li - 1,
                             "chain": c, "draw": 0, "baseline": base, "loss": 1 + 0.1 * li,
                             "delta_loss": 0.1 * li, "analysis": "a", "metric": "recovered", "kind": "effect",
                             "value": v + (0 if base else 0.005 * (c - 1.5))})
        return Results(pd.DataFrame(rows), pd.DataFrame(), {}).dissolution("a", "recovered", threshold=0.9)

    early = grid([0.98, 0.95, 0.85, 0.8, 0.7, 0.6])
    late = grid([0.98, 0.97, 0.96, 0.95, 0.93, 0.85])
    assert early.delta_loss_ci == pytest.approx((0.1, 0.2)) and late.delta_loss_ci == pytest.approx((0.4, 0.5))
    cmp = compare_dissolutions(early, late, names=("early", "late"))
    assert cmp.more_robust == "second" and cmp.statement.startswith("late is more robust")
    assert compare_dissolutions(early, early).more_robust is None
    assert "interpolated between grid levels" in late.verdict("late")


def test_grid_without_a_loss_dissolves_along_the_divergence():
    """No loss recorded (a model without an LM head): Results.dissolution interpolates on the
    behavioural divergence, its verdict says the divergence with its units, and two such points are
    compared on it (before: every ΔL NaN, every level dropped, "undecided")."""
    def grid(curve):
        rows = []
        for li, v in enumerate(curve):
            base = li == 0
            for c in ([-1] if base else range(4)):
                rows.append({"degradation": "d", "level": None if base else 0.1 * li, "level_index": li - 1,
                             "chain": c, "draw": 0, "baseline": base, "loss": float("nan"),
                             "delta_loss": float("nan"), "divergence": 0.01 * li, "analysis": "a",
                             "metric": "recovered", "kind": "effect",
                             "value": v + (0 if base else 0.005 * (c - 1.5))})
        meta = {"divergence_units": "normalised MSE"}
        return Results(pd.DataFrame(rows), pd.DataFrame(), meta).dissolution("a", "recovered", threshold=0.9)

    early = grid([0.98, 0.95, 0.85, 0.8, 0.7, 0.6])
    late = grid([0.98, 0.97, 0.96, 0.95, 0.93, 0.85])
    assert early.axis == late.axis == "divergence" and early.outcome == "dissolves"
    assert early.divergence_ci == pytest.approx((0.01, 0.02)) and late.divergence_ci == pytest.approx((0.04, 0.05))
    assert early.level_ci == pytest.approx((0.01, 0.02)) and math.isnan(early.delta_loss)
    assert "holds (recovered ≥ 0.9) up to divergence 0.015 [0.01, 0.02] normalised MSE under d" in early.verdict()
    cmp = compare_dissolutions(early, late, names=("early", "late"))
    assert cmp.statement.startswith("late is more robust: lost beyond divergence [0.04, 0.05]")


def test_calibration_of_a_new_level_starts_from_its_neighbours():
    """A LossIncrease level's calibration starts from nβ interpolated log-log between calibrated
    neighbours (ΔL ≈ λ/nβ beyond them), on a copy of the sampler that differs only in nbeta."""
    from interp.degradations import CalibrationConfig, LossIncrease, NBeta, TemperedPosterior

    s = TemperedPosterior(chains=3, n_draws=2, burnin=7, seed=5, progress=False,
                          calibration=CalibrationConfig(tolerance=0.2, max_rounds=3))
    known = [{"value": 0.1, "nbeta": 800.0}, {"value": 0.4, "nbeta": 200.0}]
    level, c = s.search_level("loss_increase", 0.2, known)
    assert level == LossIncrease(0.2)
    assert c.nbeta == pytest.approx(400.0)  # log-log between (0.1, 800) and (0.4, 200)
    assert s.search_level("loss_increase", 0.8, known)[1].nbeta == pytest.approx(100.0)  # beyond: nβ ∝ 1/Δ
    assert s.search_level("loss_increase", 0.2, []) == (LossIncrease(0.2), s)  # no neighbour: as configured
    assert s.search_level("nbeta", 50.0, known) == (NBeta(50.0), s)
    assert c.n_draws == 2 and c.chains == 3 and c.burnin == 7 and c.seed == 5
    assert c.calibration == s.calibration
