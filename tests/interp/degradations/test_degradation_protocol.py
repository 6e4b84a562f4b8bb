"""A fifth degradation defined in this file alone runs through ``run_sweep`` (its progress bar),
``interp.plan``, ``interp.dissolution``,
the Ray executor (``tests/interp/sweep/test_executors.py``, ``user-degradation``: on that module's Ray cluster) and
a sweep file: the ``Degradation`` protocol is the whole contract.

``WeightMask`` is DropConnect at inference (Wan et al. 2013): each weight of the selected tensors is
kept with probability 1 − p and scaled by 1/(1 − p), so E[w] = w0 and the level is the drop
probability p. Nothing outside this file knows the class; the sweep, the search, the Ray executor and
the sweep file only ask its protocol members.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

import interp
from interp.degradations import (
    Degradation,
    Draw,
    LevelAxis,
    SearchAxis,
    WeightSnapshot,
    register_degradation,
    registered_degradations,
    unregister_degradation,
)
from interp.results import Results
from interp.sweep import weights_digest


@register_degradation
@dataclass(frozen=True)
class WeightMask(Degradation):
    """Drop each weight of every 2-d parameter with probability p (the level), rescale the kept ones
    by 1/(1 − p); ``draws_per_level`` independent masks from ``seed``."""

    draws_per_level: int = 4
    seed: int = 0

    level_axis = LevelAxis("drop", "probability that a weight is dropped",
                           search=(SearchAxis("drop", 0.05, (0.01, 0.9), scale="linear"),))

    def check_level(self, level):
        if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 <= level < 1:
            raise ValueError(f"WeightMask level={level!r}: a drop probability in [0, 1), e.g. 0.1.")

    def replicates(self):
        return self.draws_per_level

    def expected_draws(self, level):
        return self.draws_per_level

    def draws(self, model, target=None, level=None):
        self.check_level(level)
        snap = WeightSnapshot(model)
        params = [p for p in model.parameters() if p.dim() == 2]
        gen = torch.Generator().manual_seed(self.seed)
        try:
            for i in range(self.draws_per_level):
                with torch.no_grad():
                    for p in params:
                        keep = torch.rand(p.shape, generator=gen) >= level
                        p.copy_(snap.saved(p) * keep.to(p) / (1 - level))
                yield Draw(level=level, chain=0, draw=i, loss=float("nan"))
                snap.restore()
        finally:
            snap.restore()


class Agreement:
    """Effect ``agreement``: 1 − mean total-variation distance between next-token distributions at
    the current and the trained weights on 8 test rows; metric ``dropped``: the fraction of the
    2-d weights that are exactly 0 (0 at w0, p in expectation at level p)."""

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
            mats = [q for q in model.parameters() if q.dim() == 2]
            zeros = sum(int((q == 0).sum()) for q in mats) / sum(q.numel() for q in mats)
        return {"agreement": 1 - 0.5 * float((p - self.p0).abs().sum(-1).mean()), "dropped": zeros}


@pytest.fixture(scope="module")
def tiny():
    from reliability_tiny import tiny_bridge, tiny_task

    torch.manual_seed(0)
    return tiny_bridge(), tiny_task()


def test_the_protocol_is_checked_where_a_degradation_is_registered_and_used(tiny):
    model, task = tiny
    assert isinstance(WeightMask(), Degradation) and registered_degradations()["WeightMask"] is WeightMask
    assert WeightMask().chain_jobs(model, task) == [None]  # the default: one job per level
    with pytest.raises(ValueError, match=r"run_sweep\(levels\[1\]=1\.5\): WeightMask level=1\.5: a drop "
                                         r"probability in \[0, 1\)"):
        interp.run_sweep(model, task, [Agreement()], WeightMask(), [0.1, 1.5], progress=False)

    class Half:  # draws() alone is not a degradation any more
        def draws(self, model, target, level=None):
            yield from ()
    with pytest.raises(ValueError, match=r"lacks \['chain_jobs', 'check', 'check_level', 'equal_loss_role', "
                                         r"'expected_draws', 'level_axis', 'plan_costs', 'replicates', "
                                         r"'search_level', 'work'\] of the .*Degradation"):
        interp.run_sweep(model, task, [Agreement()], Half(), [0.1], progress=False)
    with pytest.raises(ValueError, match=r"register_degradation\(Half\): lacks \['level_axis \(a LevelAxis\)'"):
        register_degradation(Half)
    odd = type("OddRole", (WeightMask,), {"equal_loss_role": "noise"})
    with pytest.raises(ValueError, match=r"register_degradation\(OddRole\): equal_loss_role='noise'; one of "
                                         r"\('posterior', 'baseline'\) or None"):
        register_degradation(odd)
    clash = type("WeightMask", (WeightMask,), {"__module__": "elsewhere"})
    with pytest.raises(ValueError, match=r"the name 'WeightMask' is taken by .*test_degradation_protocol"):
        register_degradation(clash)


def test_run_sweep_drops_the_stated_fraction_and_restores_w0(tiny, capsys):
    model, task = tiny
    before = weights_digest(model)
    res = interp.run_sweep(model, task, [Agreement()], WeightMask(draws_per_level=3), [0.1, 0.4],
                           eval_rows=8, progress=True)
    assert weights_digest(model) == before  # bit-identical after the sweep
    err = capsys.readouterr().err  # one bar over the sweep's 2 × 3 draws (the default work(): its draws)
    assert "WeightMask level 2/2 (0.4)" in err and "6/6" in err and "draw" in err
    assert res.meta["config"]["level_axis"] == {"name": "drop", "units": "probability that a weight is dropped"}
    s = res.summary().set_index(["level_index", "metric"])
    n = sum(q.numel() for q in model.parameters() if q.dim() == 2)
    for li, p in ((0, 0.1), (1, 0.4)):
        # the mean of 3 masks of n Bernoulli(p) drops: within 5 standard errors of p (the tiny model's
        # weights are never exactly 0 at w0: checked at the baseline)
        assert abs(s.loc[(li, "dropped"), "mean"] - p) <= 5 * math.sqrt(p * (1 - p) / (3 * n))
        assert s.loc[(li, "dropped"), "n_draws"] == 3
    assert s.loc[(-1, "dropped"), "mean"] == 0.0
    assert s.loc[(0, "agreement"), "mean"] > s.loc[(1, "agreement"), "mean"]
    # Results.levels() reads the recorded level axis: each level's number is its drop probability
    lv = res.levels()
    assert lv["level_axis"].tolist() == ["drop", "drop"] and lv["level_value"].tolist() == [0.1, 0.4]
    assert set(lv["level_units"]) == {"probability that a weight is dropped"}
    assert lv[["nbeta", "sigma", "step"]].isna().all().all()  # the shipped axes' columns stay empty


def test_plan_times_one_draw_and_counts_every_draw(tiny):
    """``interp.plan`` on it: the default ``plan_costs`` times one draw (weights back at w0) and
    predicts the sweep's 2 × 3 draws, each analysed once."""
    model, task = tiny
    before = weights_digest(model)
    p = interp.plan(model, task, [Agreement()], WeightMask(draws_per_level=3), [0.1, 0.4], eval_rows=8)
    assert weights_digest(model) == before
    assert p.degradation == "WeightMask" and p.counts == {"levels": 2, "draws": 6}
    assert p.costs["draw"] > 0 and p.parts["degradation draws"] == pytest.approx(6 * p.costs["draw"])
    assert p.parts["analyses at each draw"] == pytest.approx(6 * p.costs["analyse"])
    assert p.seconds == pytest.approx(sum(p.parts.values())) and p.seconds_max == p.seconds


def test_dissolution_searches_the_declared_linear_axis(tiny, tmp_path):
    model, task = tiny
    d = interp.dissolution(model, task, Agreement(), WeightMask(draws_per_level=4), metric="agreement",
                           threshold=0.75, tolerance=0.3, max_levels=7, eval_rows=8, out=tmp_path)
    assert d.axis == "drop" and d.outcome == "dissolves" and d.degradation == "WeightMask"
    xs = sorted(float(x) for x in d.points["x"] if x > 0)
    assert xs[0] == 0.05 and all(0.01 <= x <= 0.9 for x in xs)
    lo, hi = d.level_ci
    assert 0.05 <= lo < d.level < hi <= 0.9
    # bracketed by factors of 3 from the start, then bisected at arithmetic (linear-axis) midpoints
    bracket = [x for x in xs if x == 0.9 or any(math.isclose(x, 0.05 * 3**k) for k in range(-2, 4))]
    inside = [x for x in xs if x not in bracket]
    assert inside and all(any(math.isclose(x, (a + b) / 2) for a in xs for b in xs if a < x < b) for x in inside)
    assert sorted(p.name for p in tmp_path.iterdir())[0].startswith("drop=")
    with pytest.raises(ValueError, match=r"axis='sigma': WeightMask searches along \('drop',\)"):
        interp.dissolution(model, task, Agreement(), WeightMask(), metric="agreement", threshold=0.9, axis="sigma")


def test_a_sweep_file_names_it_by_its_registered_name(tmp_path):
    from interp.app.cli import main
    from interp.app.sweepfile import load_sweep_config

    path = tmp_path / "mask.toml"
    path.write_text(f"""
out = "{tmp_path / 'run'}"
seed = 1
[model]
organism = "induction"
[degradation]
type = "WeightMask"
draws_per_level = 2
seed = 4
[levels]
values = [0.05, 0.2]
[[analyses]]
type = "HeadAblation"
heads = [[1, 0], [1, 1]]
eval_rows = 16
""")
    assert main(["-q", "sweep", str(path)]) == 0
    res = Results.load(tmp_path / "run" / "results")
    assert set(res.table["degradation"]) == {"WeightMask"} and sorted(res.table["level"].dropna().unique()) == [0.05, 0.2]
    assert res.meta["config"]["degradation"] == {"type": "WeightMask", "draws_per_level": 2, "seed": 4}
    lv = res.levels()  # read back from the saved config.json
    assert lv["level_axis"].tolist() == ["drop", "drop"] and lv["level_value"].tolist() == [0.05, 0.2]
    path.write_text(path.read_text().replace('"WeightMask"', '"WeightMsk"'))
    with pytest.raises(ValueError, match=r"Unknown degradation type 'WeightMsk'; available: \[.*'WeightMask'.*"
                                         r"Did you mean 'WeightMask'"):
        load_sweep_config(path)


def test_unregistering_removes_it_from_sweep_files():
    unregister_degradation("WeightMask")
    try:
        assert "WeightMask" not in registered_degradations()
        with pytest.raises(ValueError, match=r"unregister_degradation\('WeightMask'\): not registered"):
            unregister_degradation("WeightMask")
    finally:
        register_degradation(WeightMask)


def test_an_installed_package_registers_one_through_its_entry_point(tmp_path, monkeypatch):
    """What ``[project.entry-points."interp.degradations"]`` in a package's pyproject.toml declares is
    registered when the registry is read (so the ``interp sweep`` command line knows it)."""
    import importlib.metadata

    (tmp_path / "masks_pkg.py").write_text(
        "from interp.degradations import Degradation, LevelAxis\n"
        "class Shrink(Degradation):\n"
        "    level_axis = LevelAxis('shrink', 'fraction of each weight removed')\n"
        "    def draws(self, model, target=None, level=None):\n        yield from ()\n"
        "    def check_level(self, level):\n        pass\n"
        "    def replicates(self):\n        return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = importlib.metadata.EntryPoint(name="Shrink", value="masks_pkg:Shrink", group="interp.degradations")
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda **kw: [ep] if kw.get("group") == "interp.degradations" else real(**kw))
    try:
        assert registered_degradations()["Shrink"].__module__ == "masks_pkg"
    finally:
        unregister_degradation("Shrink")
