"""run_sweep and Results: schema, persistence and resume, restoration guard, statistics."""

import dataclasses
import json

import datasets
import numpy as np
import pandas as pd
import pytest
import torch

from interp.degradations import Degradation, LevelAxis
from interp.results import Results
from interp.stats import t_quantile_975
from interp.sweep import COLUMNS, run_sweep, weights_digest
from interp.tasks import Task


class TinyLM(torch.nn.Module):
    def __init__(self, vocab=7, d=8, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.emb = torch.nn.Parameter(torch.randn(vocab, d, generator=g))
        self.out = torch.nn.Parameter(torch.randn(d, vocab, generator=g))

    def forward(self, ids):
        return self.emb[ids] @ self.out


def tiny_task(n=32, length=6, vocab=7):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (n, length), generator=g).tolist()
    ds = datasets.Dataset.from_dict({"input_ids": ids, "target_mask": [[0] + [1] * (length - 1)] * n})
    return Task("tiny", datasets.DatasetDict(train=ds, test=ds))


@dataclasses.dataclass(frozen=True)
class Draw:
    level: float
    chain: int
    draw: int
    loss: float


@dataclasses.dataclass(frozen=True)
class ScaledNoise(Degradation):
    """Test degradation: w0 + level·N(0, 1) per (chain, draw), restored in `finally`."""

    chains: int = 2
    n_draws: int = 3
    seed: int = 0
    restore: bool = True

    level_axis = LevelAxis("scale", "standard deviations of the added noise")

    def check_level(self, level):
        if not isinstance(level, float) or level < 0:
            raise ValueError(f"ScaledNoise level={level!r}: a float >= 0.")

    def replicates(self):
        return self.chains

    def draws(self, model, task, level):
        saved = {k: v.detach().clone() for k, v in model.named_parameters()}
        n_draws = self.n_draws
        try:
            for c in range(self.chains):
                for d in range(n_draws):
                    g = torch.Generator().manual_seed(hash((self.seed, level, c, d)) % 2**31)
                    with torch.no_grad():
                        for k, p in model.named_parameters():
                            p.copy_(saved[k] + level * torch.randn(p.shape, generator=g))
                    yield Draw(level, c, d, 0.0)
        finally:
            if self.restore:
                with torch.no_grad():
                    for k, p in model.named_parameters():
                        p.copy_(saved[k])


class LossAndNorm:
    """Effect: accuracy; collateral: the loss; other: the embedding norm. Optionally fails."""

    name = "toy"
    effects = ("accuracy",)
    collaterals = ("loss",)

    def __init__(self, fail_after=None, nan_at=None):
        self.calls, self.fail_after, self.nan_at = 0, fail_after, nan_at

    def setup(self, model, task):
        self.batch = task.tensors("test")

    def __call__(self, model, task):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("boom")
        ev = task.evaluate(model)
        noise = torch.rand(()).item()  # the sweep seeds this per draw
        value = float("nan") if self.calls == self.nan_at else ev["accuracy"]
        return {"accuracy": value, "loss": ev["loss"], "norm": model.emb.norm().item() + 0 * noise,
                "noise": noise}


def test_schema_baseline_and_restoration():
    model, task = TinyLM(), tiny_task()
    before = weights_digest(model)
    res = run_sweep(model, task, [LossAndNorm()], ScaledNoise(), [0.1, 0.5], progress=False)
    assert weights_digest(model) == before
    t = res.table
    assert list(t.columns) == COLUMNS
    base = t[t["baseline"]]
    assert set(base["metric"]) == {"accuracy", "loss", "norm", "noise"}
    assert (base[["level_index", "chain", "draw"]] == -1).all().all()
    assert (base["delta_loss"] == 0).all()
    assert len(t) == 4 * (1 + 2 * 2 * 3)
    kinds = t.drop_duplicates("metric").set_index("metric")["kind"].to_dict()
    assert kinds == {"accuracy": "effect", "loss": "collateral", "norm": "other", "noise": "other"}
    # the sweep's loss column is the eval-batch loss: larger noise, larger loss increase
    s = res.summary()
    acc = s[s["metric"] == "accuracy"].set_index("level_index")
    assert acc.loc[1, "delta_loss"] > acc.loc[0, "delta_loss"] > 0
    assert (acc.loc[[0, 1], "n_chains"] == 2).all() and (acc.loc[[0, 1], "ci_over"] == "chains").all()
    assert len(res.draws) == 12 and {"level_index", "chain", "draw", "loss"} <= set(res.draws.columns)


def test_interrupted_sweep_resumes_to_the_same_table(tmp_path):
    task = tiny_task()
    full = run_sweep(TinyLM(), task, [LossAndNorm()], ScaledNoise(), [0.1, 0.5], progress=False)
    model = TinyLM()
    with pytest.raises(RuntimeError, match="boom"):
        run_sweep(model, task, [LossAndNorm(fail_after=5)], ScaledNoise(), [0.1, 0.5],
                  out=tmp_path, progress=False)
    lines = (tmp_path / "rows.jsonl").read_text().splitlines()
    assert len(lines) == 5  # baseline + 4 draws persisted before the failure
    again = LossAndNorm()
    resumed = run_sweep(model, task, [again], ScaledNoise(), [0.1, 0.5], out=tmp_path, progress=False)
    assert again.calls == 13 - 5 + 0  # only the missing draws are analysed
    pd.testing.assert_frame_equal(resumed.table, full.table)
    pd.testing.assert_frame_equal(Results.load(tmp_path).table, full.table)


def test_torn_last_record_is_dropped_and_redone(tmp_path):
    task = tiny_task()
    first = run_sweep(TinyLM(), task, [LossAndNorm()], ScaledNoise(), [0.1], out=tmp_path, progress=False)
    rows = tmp_path / "rows.jsonl"
    text = rows.read_text()
    rows.write_text(text[: len(text) - 40])  # a crash mid-write of the last draw
    again = LossAndNorm()
    res = run_sweep(TinyLM(), task, [again], ScaledNoise(), [0.1], out=tmp_path, progress=False)
    assert again.calls == 1
    pd.testing.assert_frame_equal(res.table, first.table)


def test_mismatched_config_in_out_is_an_error(tmp_path):
    task = tiny_task()
    run_sweep(TinyLM(), task, [LossAndNorm()], ScaledNoise(), [0.1], out=tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"different configuration \(differs in \['levels'\]\)"):
        run_sweep(TinyLM(), task, [LossAndNorm()], ScaledNoise(), [0.2], out=tmp_path, progress=False)
    with pytest.raises(ValueError, match="weights"):
        run_sweep(TinyLM(seed=1), task, [LossAndNorm()], ScaledNoise(), [0.1], out=tmp_path,
                  progress=False)


def test_duplicate_records_are_detected(tmp_path, caplog):
    """A line repeated byte for byte is dropped with a warning (the table is unchanged); the same key
    with other values is an error naming the file and both lines."""
    from interp.sweep.store import StoreCorrupt

    task = tiny_task()
    first = run_sweep(TinyLM(), task, [LossAndNorm()], ScaledNoise(), [0.1], out=tmp_path, progress=False)
    rows = tmp_path / "rows.jsonl"
    lines = rows.read_text().splitlines(keepends=True)
    rows.write_text("".join(lines + [lines[-1]]))  # a duplicated last line
    with caplog.at_level("WARNING", logger="interp.sweep.store"):
        again = run_sweep(TinyLM(), task, [LossAndNorm()], ScaledNoise(), [0.1], out=tmp_path, progress=False)
    assert f"line {len(lines) + 1} repeats line {len(lines)}" in caplog.text
    pd.testing.assert_frame_equal(again.table, first.table)
    assert len(again.draws) == 6
    changed = json.loads(lines[2])
    changed["rows"][0]["value"] += 1.0
    rows.write_text("".join(lines + [json.dumps(changed) + "\n"]))
    with pytest.raises(StoreCorrupt, match=rf"{rows} line {len(lines) + 1} holds key \[0, 0, 1\] again, with "
                                           r"other values than line 3"):
        run_sweep(TinyLM(), task, [LossAndNorm()], ScaledNoise(), [0.1], out=tmp_path, progress=False)
    with pytest.raises(StoreCorrupt, match="line 8 holds key"):
        Results.load(tmp_path)


def test_rows_without_config_are_an_error(tmp_path):
    from interp.sweep.store import StoreCorrupt

    run_sweep(TinyLM(), tiny_task(), [LossAndNorm()], ScaledNoise(), [0.1], out=tmp_path, progress=False)
    (tmp_path / "config.json").unlink()
    with pytest.raises(StoreCorrupt, match=r"rows\.jsonl exists without .*config\.json: its rows cannot be checked"):
        run_sweep(TinyLM(), tiny_task(), [LossAndNorm()], ScaledNoise(), [0.1], out=tmp_path, progress=False)


@pytest.mark.parametrize("bad, fixed", [
    ({"levels": [-0.1]}, {"levels": [0.1]}),
    ({"levels": [0.1, float("nan")]}, {"levels": [0.1]}),
    ({"eval_rows": 0}, {"eval_rows": 16}),
    ({"eval_rows": 2.5}, {"eval_rows": 16}),
    ({"seed": 1.7}, {"seed": 1}),
    ({"seed": True}, {"seed": 1}),
    ({"analyses": "string"}, {"analyses": "fixed"}),  # an analysis returning a string, then fixed
])
def test_a_rejected_input_does_not_block_its_fix(tmp_path, bad, fixed):
    """Everything is checked before config.json is written (and config.json is written only with the
    first record), so the rerun with the input fixed is not refused as another configuration."""
    from interp.degradations import WeightNoise

    class Returns:
        name, effects, collaterals = "returns", (), ()

        def __init__(self, value):
            self.value = value

        def setup(self, model, task):
            pass

        def __call__(self, model, task):
            return self.value if self.value == "a string" else {"norm": model.emb.norm().item()}

    def sweep(levels=(0.1,), eval_rows=16, seed=1, analyses="fixed"):
        a = Returns("a string" if analyses == "string" else None)
        return run_sweep(TinyLM(), tiny_task(), [a], WeightNoise(relative=True, draws_per_level=2), list(levels),
                         out=tmp_path, eval_rows=eval_rows, seed=seed, progress=False)

    with pytest.raises(ValueError) as err:
        sweep(**bad)
    name = next(iter(bad))
    assert (name if name != "analyses" else "returned str 'a string'") in str(err.value)
    assert not (tmp_path / "config.json").exists()
    res = sweep(**{**bad, **fixed})
    assert len(res.draws) == 2 * len(fixed.get("levels", [0.1]))


@pytest.mark.parametrize("damage", ["garbage_line", "cut_line", "record_without_rows", "not_a_record"])
def test_corrupt_rows_name_the_file_and_line_and_how_to_resume(tmp_path, damage):
    from interp.sweep.store import StoreCorrupt

    task = tiny_task()
    first = run_sweep(TinyLM(), task, [LossAndNorm()], ScaledNoise(), [0.1], out=tmp_path, progress=False)
    rows = tmp_path / "rows.jsonl"
    lines = rows.read_text().splitlines(keepends=True)
    bad = {"garbage_line": "\x00\x17garbage\n", "cut_line": lines[3][:25] + "\n",
           "record_without_rows": json.dumps({k: v for k, v in json.loads(lines[3]).items() if k != "rows"}) + "\n",
           "not_a_record": "[1, 2, 3]\n"}[damage]
    rows.write_text("".join(lines[:3] + [bad] + lines[4:]))
    resume = "The 3 lines before it are intact: keep them"
    with pytest.raises(StoreCorrupt, match=rf"{rows} line 4 is corrupt: .*{resume}"):
        run_sweep(TinyLM(), task, [LossAndNorm()], ScaledNoise(), [0.1], out=tmp_path, progress=False)
    with pytest.raises(StoreCorrupt, match=rf"{rows} line 4 is corrupt"):
        Results.load(tmp_path)
    rows.write_text("".join(lines[:3]))  # what the message says: keep the intact lines, rerun
    again = LossAndNorm()
    res = run_sweep(TinyLM(), task, [again], ScaledNoise(), [0.1], out=tmp_path, progress=False)
    assert again.calls == 4  # only the 4 draws after the kept lines are analysed again
    pd.testing.assert_frame_equal(res.table, first.table)


@pytest.mark.parametrize("name", ["config.json", "levels.json", "jobs.json"])
def test_corrupt_store_json_names_the_file_and_how_to_resume(tmp_path, name):
    from interp.sweep.store import Store, StoreCorrupt

    task = tiny_task()
    first = run_sweep(TinyLM(), task, [LossAndNorm()], ScaledNoise(), [0.1, 0.5], out=tmp_path, progress=False)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / name).write_text('{"0": {"n_draws": 6}, "1": ')  # cut mid-write (or garbage)
    fix = {"config.json": "delete the out directory", "levels.json": "delete levels.json and rerun the same sweep",
           "jobs.json": "delete jobs.json and rerun the same sweep"}[name]
    with pytest.raises(StoreCorrupt, match=rf"{tmp_path / name} is corrupt \(JSONDecodeError at line 1 column \d+\)"
                                           rf": .*{fix}"):
        if name == "jobs.json":  # read by the Ray executor's bookkeeping
            with Store(tmp_path, config) as store:
                store.jobs()
        else:
            run_sweep(TinyLM(), task, [LossAndNorm()], ScaledNoise(), [0.1, 0.5], out=tmp_path, progress=False)
    assert not (tmp_path / "sweep.lock").exists()  # the lock is released on the error path
    if name != "config.json":
        (tmp_path / name).unlink()
        res = run_sweep(TinyLM(), task, [LossAndNorm()], ScaledNoise(), [0.1, 0.5], out=tmp_path, progress=False)
        pd.testing.assert_frame_equal(res.table, first.table)


def test_divergence_from_w0_is_recorded_at_every_draw():
    """The divergence column: 0 at the baseline, at every draw the meter built at w0 on the sweep's
    evaluation rows (checked against an analysis measuring the same), growing with the noise."""
    from interp.divergence import DivergenceMeter

    class SameMeter:
        name, effects, collaterals = "meter", (), ()

        def setup(self, model, task):
            self.meter = DivergenceMeter.for_task(model, task, eval_rows=16)

        def __call__(self, model, task):
            return {"kl": self.meter(model)}

    res = run_sweep(TinyLM(), tiny_task(), [SameMeter()], ScaledNoise(), [0.1, 0.5], eval_rows=16, progress=False)
    t = res.table
    assert (t.loc[t["baseline"], "divergence"] == 0).all()
    draws = t[~t["baseline"]]
    assert np.array_equal(draws["divergence"].to_numpy(), draws["value"].to_numpy())
    by_level = draws.groupby("level_index")["divergence"].mean()
    assert 0 < by_level[0] < by_level[1]
    assert res.meta["divergence_units"] == "KL nats/token"
    assert res.meta["config"]["divergence"] == {"kind": "kl", "units": "KL nats/token"}


def test_task_without_a_loss_has_divergence_as_its_axis():
    """A task without a next-token loss (as MiniLM's): loss and ΔL stay NaN, the divergence (the
    normalised MSE of the final hidden state) is the axis."""
    from reliability_tiny import tiny_bridge
    from reliability_tiny import tiny_task as bridge_task

    task = bridge_task()
    no_loss = Task("no_loss", task.dataset, has_loss=False)
    def probe(model, task):
        return {"norm": float(sum(p.detach().double().square().sum() for p in model.parameters()))}

    res = run_sweep(tiny_bridge(), no_loss, [probe], ScaledNoise(chains=1, n_draws=2), [0.01, 0.1], eval_rows=8,
                    progress=False)
    t = res.table
    assert t["loss"].isna().all() and t["delta_loss"].isna().all()
    assert (t.loc[t["baseline"], "divergence"] == 0).all()
    by_level = t[~t["baseline"]].groupby("level_index")["divergence"].mean()
    assert np.isfinite(by_level).all() and 0 < by_level[0] < by_level[1]
    assert res.meta["divergence_units"] == "normalised MSE"


def test_degradation_that_leaves_weights_changed_is_caught():
    with pytest.raises(RuntimeError, match="did not restore"):
        run_sweep(TinyLM(), tiny_task(), [LossAndNorm()], ScaledNoise(restore=False), [0.1],
                  progress=False)


def test_bad_analyses_are_rejected():
    with pytest.raises(ValueError, match="unique"):
        run_sweep(TinyLM(), tiny_task(), [LossAndNorm(), LossAndNorm()], ScaledNoise(), [0.1])
    with pytest.raises(ValueError, match="not an Analysis"):
        run_sweep(TinyLM(), tiny_task(), [object()], ScaledNoise(), [0.1])
    with pytest.raises(ValueError, match="levels is empty"):
        run_sweep(TinyLM(), tiny_task(), [LossAndNorm()], ScaledNoise(), [])
    with pytest.raises(ValueError, match=r"run_sweep\(model=None\): model must be a torch.nn.Module"):
        run_sweep(None, tiny_task(), [LossAndNorm()], ScaledNoise(), [0.1])


def test_nan_value_is_visible_not_averaged():
    res = run_sweep(TinyLM(), tiny_task(), [LossAndNorm(nan_at=3)], ScaledNoise(), [0.1], progress=False)
    acc = res.summary().query("metric == 'accuracy' and level_index == 0").iloc[0]
    assert np.isnan(acc["mean"]) and acc["n_nonfinite"] == 1


def test_analysis_randomness_is_seeded_per_draw_and_leaves_global_rng():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = run_sweep(TinyLM(), tiny_task(), [LossAndNorm()], ScaledNoise(), [0.1], progress=False, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    b = run_sweep(TinyLM(), tiny_task(), [LossAndNorm()], ScaledNoise(), [0.1], progress=False, seed=7)
    noise = lambda r: r.table.query("metric == 'noise'")["value"].to_numpy()  # noqa: E731
    assert np.array_equal(noise(a), noise(b)) and len(set(noise(a))) == len(noise(a))


def test_plain_function_and_partial_object_are_analyses(tmp_path):
    """An analysis may be a function fn(model, task) -> dict (named by __name__) or an object without
    setup/effects/collaterals/name: wrapped once, no setup, no effects, no collaterals."""
    def emb_norm(model, task):
        return {"norm": model.emb.norm().item()}

    class OnlyCall:  # no name, setup, effects or collaterals
        def __call__(self, model, task):
            return {"out_norm": model.out.norm().item()}

    class WithEffects:
        effects = ("loss",)

        def __call__(self, model, task):
            return {"loss": task.evaluate(model)["loss"]}

    model = TinyLM()
    res = run_sweep(model, tiny_task(), [emb_norm, OnlyCall(), WithEffects()], ScaledNoise(), [0.1],
                    progress=False, out=tmp_path)
    t = res.table
    assert sorted(set(t["analysis"])) == ["OnlyCall", "WithEffects", "emb_norm"]
    kinds = t.drop_duplicates("metric").set_index("metric")["kind"].to_dict()
    assert kinds == {"norm": "other", "out_norm": "other", "loss": "effect"}
    base = t[t["baseline"] & (t["metric"] == "norm")]["value"].iloc[0]
    assert base == pytest.approx(TinyLM().emb.norm().item())
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["analyses"][0] == {"type": "function", "name": "emb_norm",
                                     "function": f"{__name__}.test_plain_function_and_partial_object_are_analyses."
                                                 "<locals>.emb_norm"}
    # the same functions again resume the same sweep (their description is stable)
    again = run_sweep(model, tiny_task(), [emb_norm, OnlyCall(), WithEffects()], ScaledNoise(), [0.1],
                      progress=False, out=tmp_path)
    pd.testing.assert_frame_equal(again.table, t)
    with pytest.raises(ValueError, match=r"the class OnlyCall; pass an instance"):
        run_sweep(model, tiny_task(), [OnlyCall], ScaledNoise(), [0.1], progress=False)


def _synthetic(effect_by_level, collateral_by_level, chains=4):
    rows = []
    def add(li, level, c, metric, kind, value, dl):
        rows.append({"degradation": "d", "level": level, "level_index": li, "chain": c, "draw": 0,
                     "baseline": li == -1, "loss": 1 + dl, "delta_loss": dl, "analysis": "a",
                     "metric": metric, "kind": kind, "value": value})
    add(-1, None, -1, "eff", "effect", 1.0, 0.0)
    add(-1, None, -1, "col", "collateral", 1.0, 0.0)
    for li, (eff, col) in enumerate(zip(effect_by_level, collateral_by_level)):
        for c in range(chains):
            jitter = 0.01 * (c - (chains - 1) / 2)
            add(li, float(li), c, "eff", "effect", eff + jitter, 0.1 * (li + 1))
            add(li, float(li), c, "col", "collateral", col + jitter, 0.1 * (li + 1))
    return Results(pd.DataFrame(rows), pd.DataFrame(), {})


def test_survival_and_clean_window():
    res = _synthetic([0.95, 0.8, 0.6, 0.3, 0.1], [0.9, 0.4, 0.2, 0.1, 0.05])
    row = res.survival(fraction=0.5, collateral_fraction=0.5).iloc[0]
    assert row["last_held_level"] == 2.0 and row["lost_level"] == 3.0
    assert row["last_held_delta_loss"] == pytest.approx(0.3)
    assert row["lost_delta_loss"] == pytest.approx(0.4)
    assert row["clean_window_delta_loss"] == pytest.approx((0.2, 0.3))
    never = _synthetic([0.9, 0.9], [1.0, 1.0]).survival().iloc[0]
    assert never["lost_level"] is None and never["clean_window_delta_loss"] is None
    with pytest.raises(ValueError, match="fraction=0"):
        res.survival(fraction=0)


def test_confidence_interval_is_student_t_over_chains():
    res = _synthetic([0.5], [0.5], chains=4)
    s = res.summary().query("metric == 'eff' and level_index == 0").iloc[0]
    values = 0.5 + 0.01 * (np.arange(4) - 1.5)
    sem = values.std(ddof=1) / 2
    assert s["sem"] == pytest.approx(sem)
    assert s["ci_high"] - s["mean"] == pytest.approx(t_quantile_975(3) * sem)
    assert t_quantile_975(3) == pytest.approx(3.182) and t_quantile_975(1000) == 1.96


def test_save_load_roundtrip_and_plot(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    res = run_sweep(TinyLM(), tiny_task(), [LossAndNorm()], ScaledNoise(), [0.1, 0.3], progress=False)
    back = Results.load(res.save(tmp_path / "saved"))
    pd.testing.assert_frame_equal(back.table, res.table)
    assert json.loads((tmp_path / "saved" / "meta.json").read_text())["config"]["levels"] == [0.1, 0.3]
    fig = res.plot()
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 4
    assert "<table" in res._repr_html_()
