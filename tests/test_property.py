"""Property-based tests (hypothesis) over configs and hook specs.

For each config class, hypothesis draws a valid configuration, or a valid one with exactly one field
replaced by an impossible value. A valid one must run on a tiny model (1-layer bridge, or a plain
module for the sampler's vectorised chains) and leave its weights bit-identical; an invalid one must
raise one ``ValueError`` (``PointError`` for hook points) whose message names the field, shows the
value and says what is allowed. Hook specs: every (kind, layer, head) either resolves and captures a
tensor of the documented shape or raises a ``PointError`` naming the point, the range and the
closest valid names.
"""

from __future__ import annotations

import functools
import math
import re
import textwrap
from unittest import mock

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import hooks
from interp.degradations import (
    ActivationNoise,
    CalibrationConfig,
    Checkpoints,
    LossIncrease,
    NBeta,
    TemperedPosterior,
    WeightNoise,
)
from reliability_tiny import TinyLM, hook_count, induction, state_bytes, tiny_bridge, tiny_task

SETTINGS = settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
FEW = settings(SETTINGS, max_examples=5)

#: words an error message uses to say what is allowed
ALLOWED = re.compile(r"must|give|one of|expected|allowed|need|Use|available|did you mean", re.I)


@functools.lru_cache(maxsize=1)
def bridge():
    model, task = tiny_bridge(), tiny_task()
    model(task.tensors("test", rows=2)["input_ids"])  # TransformerLens adds its own pre-hooks once
    return model, task


def assert_clear(err: BaseException, field: str, value) -> None:
    """One clear error: names the field, shows the value, says what is allowed."""
    msg = str(err)
    assert field in msg, f"the message does not name the field {field!r}: {msg}"
    shown = [repr(value), str(value)]
    if isinstance(value, float) and not math.isnan(value):
        shown += [repr(float(value)), f"{value:g}"]
    assert any(s in msg for s in shown), f"the message does not show the value {value!r}: {msg}"
    assert ALLOWED.search(msg), f"the message does not say what is allowed: {msg}"


def one_invalid(valid: dict, invalid: dict):
    """A strategy: (kwargs with one field replaced by an invalid value, that field, that value)."""
    fields = sorted(invalid)

    @st.composite
    def strat(draw):
        base = draw(st.fixed_dictionaries(valid))
        field = draw(st.sampled_from(fields))
        value = draw(invalid[field])
        return {**base, field: value}, field, value

    return strat()


# ------------------------------------------------------------------------------------ the sampler
SAMPLER_VALID = {
    "localization": st.sampled_from([0.0, 10.0, 100.0]),
    "lr": st.sampled_from([1e-5, 1e-4, 3e-4]),
    "chains": st.integers(1, 3),
    "n_draws": st.integers(1, 3),
    "burnin": st.integers(0, 2),
    "thin": st.integers(1, 2),
    "seed": st.integers(0, 2**31),
    "batch_size": st.integers(1, 16),
    "eval_rows": st.integers(0, 16),
    "init_batches": st.integers(1, 3),
    "lr_safety": st.floats(0.01, 1.9),
    "divergence": st.floats(1.0, 1e3),
    "max_loss_increase": st.one_of(st.none(), st.floats(0.01, 10.0)),
    "vectorize": st.sampled_from([None, True, False]),
}
SAMPLER_INVALID = {
    "nbeta": st.one_of(st.sampled_from([0.0, -1.0, float("nan"), float("inf"), "1000", True])),
    "localization": st.sampled_from([-1.0, float("nan"), float("inf"), "100", True]),
    "lr": st.sampled_from([0.0, -1e-4, float("nan"), "1e-4", True]),
    "chains": st.sampled_from([0, -1, 1.5, True, "2"]),
    "n_draws": st.sampled_from([0, -3, 2.0, False, None]),
    "burnin": st.sampled_from([-1, 0.5, True, None]),
    "thin": st.sampled_from([0, -1, 1.0, None]),
    "seed": st.sampled_from([-1, 0.5, "0", None]),
    "batch_size": st.sampled_from([0, -8, 8.0, None]),
    "eval_rows": st.sampled_from([-1, 8.5, None]),
    "init_batches": st.sampled_from([0, 2.5, -1]),
    "lr_safety": st.sampled_from([0.0, 2.0, 5.0, -0.2, float("nan")]),
    "divergence": st.sampled_from([0.0, -1.0, float("inf"), "x"]),
    "max_loss_increase": st.sampled_from([0.0, -0.1, float("nan"), "0.1"]),
    "vectorize": st.sampled_from(["yes", "auto", 2]),
    "calibration": st.sampled_from([{"tolerance": 0.1}, 0.1, "CalibrationConfig"]),
}


@SETTINGS
@given(one_invalid(SAMPLER_VALID, SAMPLER_INVALID))
def test_invalid_sampler_config_raises_one_clear_error(case):
    kwargs, field, value = case
    with pytest.raises(ValueError) as err:
        TemperedPosterior(**kwargs)
    assert_clear(err.value, field, value)


CAL_INVALID = {
    "tolerance": st.sampled_from([0.0, -0.1, float("nan"), "0.1"]),
    "max_rounds": st.sampled_from([0, 1.5, None]),
    "pilot_chains": st.sampled_from([0, -1, "1"]),
    "pilot_burnin": st.sampled_from([-1, 0.5]),
    "pilot_draws": st.sampled_from([0, 2.5]),
    "pilot_thin": st.sampled_from([0, "1"]),
}


@SETTINGS
@given(one_invalid({}, CAL_INVALID))
def test_invalid_calibration_config_raises_one_clear_error(case):
    kwargs, field, value = case
    with pytest.raises(ValueError) as err:
        CalibrationConfig(**kwargs)
    assert_clear(err.value, field, value)


@SETTINGS
@given(st.sampled_from([0.0, -1.0, float("nan"), float("inf"), "0.1", None]), st.sampled_from([NBeta, LossIncrease]))
def test_invalid_level_types_raise_one_clear_error(value, cls):
    with pytest.raises(ValueError) as err:
        cls(value)
    assert_clear(err.value, "value" if cls is NBeta else "delta", value)


@SETTINGS
@given(kwargs=st.fixed_dictionaries(SAMPLER_VALID),
       level=st.one_of(st.floats(10.0, 3e3), st.floats(10.0, 3e3).map(NBeta)))
def test_valid_sampler_config_runs_and_restores(kwargs, level):
    model, task = TinyLM(), tiny_task()
    before = state_bytes(model)
    run = TemperedPosterior(**kwargs, progress=False).draws(model, task, level)
    draws = list(run)
    assert state_bytes(model) == before
    assert len(run.chains) == kwargs["chains"]
    for c in run.chains:
        mine = [d for d in draws if d.chain == c.chain]
        if c.failed:
            assert c.reason and len(mine) < kwargs["n_draws"]
        else:
            assert [d.draw for d in mine] == list(range(kwargs["n_draws"]))
            assert all(math.isfinite(d.loss) for d in mine)


@FEW
@given(chains=st.integers(1, 2), draws=st.integers(1, 2), nbeta=st.floats(10.0, 1e3),
       vectorize=st.sampled_from([None, False]))
def test_valid_sampler_config_runs_on_a_bridge(chains, draws, nbeta, vectorize):
    model, task = bridge()
    before, n_hooks = state_bytes(model), hook_count(model)
    sampler = TemperedPosterior(nbeta=nbeta, lr=1e-4, chains=chains, n_draws=draws, burnin=1, batch_size=8,
                                eval_rows=8, init_batches=1, vectorize=vectorize, progress=False)
    got = [(d.chain, d.draw) for d in sampler.draws(model, task)]
    assert sorted(got) == [(c, i) for c in range(chains) for i in range(draws)]
    assert state_bytes(model) == before and hook_count(model) == n_hooks


# ------------------------------------------------------------------------------ baseline degradations
NOISE_VALID = {
    "sigma": st.floats(0.0, 0.5),
    "relative": st.booleans(),
    "draws_per_level": st.integers(1, 3),
    "seed": st.integers(0, 2**31),
    "eval_rows": st.integers(0, 8),
}
NOISE_INVALID = {
    "sigma": st.sampled_from([-0.1, float("nan"), float("inf"), "0.1", True, None]),
    "relative": st.sampled_from(["yes", 1, None]),
    "draws_per_level": st.sampled_from([0, -1, 2.0, True, "3"]),
    "seed": st.sampled_from([-1, 1.5, "0", None]),
    "eval_rows": st.sampled_from([-1, 2.5, True, None]),
}


@SETTINGS
@given(cls=st.sampled_from([WeightNoise, ActivationNoise]), case=one_invalid(NOISE_VALID, NOISE_INVALID))
def test_invalid_noise_config_raises_one_clear_error(cls, case):
    kwargs, field, value = case
    with pytest.raises(ValueError) as err:
        cls(**kwargs)
    assert_clear(err.value, field, value)


POINTS = ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_mid", "blocks.0.hook_resid_post",
          "blocks.0.hook_attn_out", "blocks.0.hook_mlp_out", "blocks.0.attn.hook_z", "blocks.0.mlp.hook_post"]


@SETTINGS
@given(cls=st.sampled_from([WeightNoise, ActivationNoise]), kwargs=st.fixed_dictionaries(NOISE_VALID),
       level=st.one_of(st.none(), st.floats(0.0, 0.5)),
       points=st.one_of(st.none(), st.lists(st.sampled_from(POINTS), min_size=1, max_size=3, unique=True)),
       restrict=st.sampled_from([None, "layers.0.*", ["tok_embed.*", "pos.*"], "*mlp*"]))
def test_valid_noise_config_runs_and_restores(cls, kwargs, level, points, restrict):
    model, task = bridge()
    before, n_hooks = state_bytes(model), hook_count(model)
    extra = {"points": points} if cls is ActivationNoise else {"restrict": restrict}
    draws = list(cls(**kwargs, **extra).draws(model, task, level))
    assert [d.draw for d in draws] == list(range(kwargs["draws_per_level"]))
    assert all(math.isfinite(d.loss) == (kwargs["eval_rows"] > 0) for d in draws)
    assert state_bytes(model) == before and hook_count(model) == n_hooks


@SETTINGS
@given(bad=st.sampled_from(["blocks.0.hook_resid_pr", "blocks.3.hook_resid_pre", "hook_embedd",
                            "blocks.0.attn.hook_result[7]"]))
def test_activation_noise_with_an_unknown_point_fails_before_any_draw(bad):
    model, task = bridge()
    before, n_hooks = state_bytes(model), hook_count(model)
    with pytest.raises(hooks.PointError) as err:
        next(iter(ActivationNoise(points=[POINTS[0], bad], draws_per_level=2).draws(model, task)))
    assert repr(bad) in str(err.value) and "closest valid names" in str(err.value)
    assert state_bytes(model) == before and hook_count(model) == n_hooks


@SETTINGS
@given(restrict=st.sampled_from(["layers.9.*", ["nothing*"], "blocks.0.attn.W_X"]),
       cls=st.sampled_from([WeightNoise, TemperedPosterior]))
def test_restrict_matching_nothing_is_one_clear_error(restrict, cls):
    model, task = bridge()
    deg = cls(restrict=restrict) if cls is WeightNoise else cls(nbeta=10.0, lr=1e-4, restrict=restrict, progress=False)
    with pytest.raises(ValueError) as err:
        list(deg.draws(model, task))
    assert_clear(err.value, "restrict", restrict)


@functools.lru_cache(maxsize=1)
def checkpoint_states():
    model, _ = bridge()
    g = torch.Generator().manual_seed(0)
    return [(s, {k: v + 0.05 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
                 for k, v in model.state_dict().items()}) for s in (100, 200, 300)]


@SETTINGS
@given(eval_rows=st.integers(0, 8), pick=st.sampled_from([None, 100, 200, "300"]))
def test_valid_checkpoints_config_runs_and_restores(eval_rows, pick):
    model, task = bridge()
    before = state_bytes(model)
    draws = list(Checkpoints(source=checkpoint_states(), eval_rows=eval_rows).draws(model, task, pick))
    assert [d.level for d in draws] == ([100, 200, 300] if pick is None else [int(pick)])
    assert [d.draw for d in draws] == list(range(len(draws)))  # distinct keys in a sweep
    assert state_bytes(model) == before


@SETTINGS
@given(case=one_invalid({"source": st.just("induction")},
                        {"source": st.sampled_from([3, 2.5, None, b"induction"]),
                         "eval_rows": st.sampled_from([-1, 1.5, True, None])}))
def test_invalid_checkpoints_config_raises_one_clear_error(case):
    kwargs, field, value = case
    with pytest.raises(ValueError) as err:
        Checkpoints(**kwargs)
    assert_clear(err.value, field, value)


# ------------------------------------------------------------------------------------------ hooks
KINDS = {
    "resid_pre": (hooks.resid_pre, lambda b, p, m: (b, p, m.cfg.d_model)),
    "resid_post": (hooks.resid_post, lambda b, p, m: (b, p, m.cfg.d_model)),
    "attn_out": (hooks.attn_out, lambda b, p, m: (b, p, m.cfg.d_model)),
    "mlp_out": (hooks.mlp_out, lambda b, p, m: (b, p, m.cfg.d_model)),
    "mlp_post": (hooks.mlp_post, lambda b, p, m: (b, p, m.cfg.d_mlp)),
    "attn_z": (hooks.attn_z, lambda b, p, m: (b, p, m.cfg.n_heads, m.cfg.d_head)),
    "attn_pattern": (hooks.attn_pattern, lambda b, p, m: (b, m.cfg.n_heads, p, p)),
    "head_out": (None, lambda b, p, m: (b, p, m.cfg.d_model)),
}


@SETTINGS
@given(kind=st.sampled_from(sorted(KINDS)), layer=st.integers(0, 3), head=st.integers(0, 4),
       batch=st.integers(1, 3), pos=st.integers(2, 10))
def test_hook_spec_resolves_or_names_the_range(kind, layer, head, batch, pos):
    model, task = bridge()
    make, shape = KINDS[kind]
    point = hooks.head_out(layer, head) if kind == "head_out" else make(layer)
    ids = task.tensors("test", rows=batch)["input_ids"][:, :pos]
    valid = layer < model.cfg.n_layers and (kind != "head_out" or head < model.cfg.n_heads)
    n_hooks = hook_count(model)
    if valid:
        got = hooks.capture(model, ids, [point])[point]
        assert tuple(got.shape) == shape(batch, pos, model)
    else:
        with pytest.raises(hooks.PointError) as err:
            hooks.capture(model, ids, [point])
        msg = str(err.value)
        assert repr(point) in msg and "out of range" in msg and "closest valid names" in msg
        assert (f"head {head}" if layer < model.cfg.n_layers else f"layer {layer}") in msg
    assert hook_count(model) == n_hooks


@SETTINGS
@given(name=st.sampled_from(POINTS), edit=st.sampled_from(["drop", "swap", "insert", "case"]), where=st.data())
def test_misspelt_point_lists_close_valid_names(name, edit, where):
    model, task = bridge()
    i = where.draw(st.integers(len("blocks.0."), len(name) - 2))
    bad = {"drop": name[:i] + name[i + 1:], "swap": name[:i] + name[i + 1] + name[i] + name[i + 2:],
           "insert": name[:i] + "x" + name[i:], "case": name[:i] + name[i:].upper()}[edit]
    assume(bad not in hooks.valid_points(model))
    with pytest.raises(hooks.PointError) as err:
        with hooks.apply(model, [hooks.zero_ablate(bad)]):
            pass
    msg = str(err.value)
    assert repr(bad) in msg and re.search(r"closest valid names: '[^']+'", msg)


@SETTINGS
@given(kind=st.sampled_from(["zero", "resample", "mean"]), pos=st.lists(st.integers(0, 9), max_size=4, unique=True),
       heads=st.one_of(st.none(), st.lists(st.integers(0, 1), min_size=1, max_size=2, unique=True)))
def test_intervention_edits_exactly_its_region(kind, pos, heads):
    model, task = bridge()
    point = hooks.attn_z(0)
    ids = task.tensors("test", rows=3)["input_ids"]
    clean = hooks.capture(model, ids, [point])[point]
    region = torch.zeros(clean.shape, dtype=torch.bool)
    region[:, pos or slice(None)] = True
    if heads is not None:
        keep = torch.zeros(clean.shape[2], dtype=torch.bool)
        keep[heads] = True
        region &= keep.view(1, 1, -1, 1)
    hook = {"zero": lambda: hooks.zero_ablate(point, pos=pos or None, heads=heads),
            "resample": lambda: hooks.resample_ablate(point, pos=pos or None, heads=heads),
            "mean": lambda: hooks.mean_ablate(point, clean.mean(0), pos=pos or None, heads=heads)}[kind]()
    seen = {}

    def record(x):
        seen["x"] = x.detach().clone()

    with hooks.apply(model, [hook, hooks.Hook(point, record)]):
        model(ids)
    edited = seen["x"]
    assert torch.equal(edited[~region], clean[~region])  # outside the region: untouched


@SETTINGS
@given(value=st.sampled_from([-1, 1.5, "0", True]), helper=st.sampled_from(["resid_pre", "mlp_out", "head_out"]))
def test_point_helpers_reject_bad_indices(value, helper):
    with pytest.raises(hooks.PointError) as err:
        getattr(hooks, helper)(value) if helper != "head_out" else hooks.head_out(0, value)
    assert_clear(err.value, "layer" if helper != "head_out" else "head", value)


# --------------------------------------------------------------------------------------- analyses
HEAD = st.tuples(st.integers(0, 3), st.integers(0, 3))
ABLATION_INVALID = {
    "heads": st.sampled_from([(), "10", 3, ((1.5, 0),), ((1, 0, 0),), ((-1, 0),), ((True, 0),), None]),
    "method": st.sampled_from(["median", "Mean", None]),
    "eval_rows": st.sampled_from([1, 0, 2.5, "64", True]),
}


@SETTINGS
@given(one_invalid({"heads": st.lists(HEAD, min_size=1, max_size=3).map(tuple)}, ABLATION_INVALID))
def test_invalid_head_ablation_raises_one_clear_error(case):
    from analyses.ablation import HeadAblation

    kwargs, field, value = case
    with pytest.raises(ValueError) as err:
        HeadAblation(**kwargs).validate_params()
    assert_clear(err.value, field, value)


@SETTINGS
@given(heads=st.lists(HEAD, min_size=1, max_size=3, unique=True), method=st.sampled_from(["mean", "zero", "resample"]),
       eval_rows=st.integers(2, 8))
def test_head_ablation_runs_or_names_the_missing_heads(heads, method, eval_rows):
    from analyses.ablation import HeadAblation

    model, task = bridge()
    before, n_hooks = state_bytes(model), hook_count(model)
    a = HeadAblation(tuple(heads), method=method, eval_rows=eval_rows)
    missing = [h for h in heads if h[0] >= 1 or h[1] >= 2]
    if missing:
        with pytest.raises(ValueError) as err:
            a.setup(model, task)
        assert str(missing[:1])[1:-1] in str(err.value) and "1 layers × 2 heads" in str(err.value)
    else:
        a.setup(model, task)
        out = a(model, task)
        assert set(a.effects + a.collaterals) <= set(out) and math.isfinite(out["loss_carried"])
    assert state_bytes(model) == before and hook_count(model) == n_hooks


NORMS_VALID = {
    "eval_rows": st.integers(1, 8), "batch_size": st.integers(1, 8), "skip_positions": st.integers(0, 3),
    "quantiles": st.lists(st.floats(0.01, 0.99), max_size=3).map(tuple),
    "writes": st.booleans(), "weights": st.booleans(), "split": st.sampled_from(["train", "test"]),
}
NORMS_INVALID = {
    "eval_rows": st.sampled_from([0, -1, 2.5, True, None]),
    "batch_size": st.sampled_from([0, "8", None]),
    "skip_positions": st.sampled_from([-1, 1.5, True]),
    "quantiles": st.sampled_from([(1.5,), (0.0,), (float("nan"),), "ab", 0.5, (True,)]),
    "positions": st.sampled_from([(-1,), ("a",), (0.5,)]),
    "writes": st.sampled_from(["no", 1, None]),
    "weights": st.sampled_from(["yes", 0]),
    "coordinates": st.sampled_from(["fold", "RAW", None]),
    "fit_layers": st.sampled_from([(3, 1), (1,), (0, 0), ("a", 2), 2]),
    "split": st.sampled_from(["val", "TEST", None]),
}


@SETTINGS
@given(one_invalid(NORMS_VALID, NORMS_INVALID))
def test_invalid_residual_norms_raises_one_clear_error(case):
    from analyses.norms import ResidualNorms

    kwargs, field, value = case
    if field == "positions":
        kwargs["skip_positions"] = 0
    with pytest.raises(ValueError) as err:
        ResidualNorms(**kwargs).validate_params()
    assert_clear(err.value, field, value)


@FEW
@given(kwargs=st.fixed_dictionaries(NORMS_VALID), positions=st.lists(st.integers(3, 9), max_size=2, unique=True))
def test_valid_residual_norms_runs(kwargs, positions):
    from analyses.norms import ResidualNorms

    model, task = bridge()
    before, n_hooks = state_bytes(model), hook_count(model)
    a = ResidualNorms(**kwargs, positions=tuple(positions))
    a.setup(model, task)
    out = a(model, task)
    assert out["n_tokens"] > 0 and math.isfinite(out["mean_L1"]) and out["skip_positions"] == kwargs["skip_positions"]
    assert all(f"mean_L{i}_pos{t}" in out for i in (0, 1) for t in positions)
    assert state_bytes(model) == before and hook_count(model) == n_hooks


SCRUB_VALID = {
    "eval_rows": st.integers(2, 4), "seeds": st.just(1), "min_class": st.integers(1, 3),
    "on_small_class": st.just("flag"), "bootstrap": st.just(10), "pool_rows": st.sampled_from([None, 16]), "split": st.sampled_from(["train", "test"]),
}
SCRUB_INVALID = {
    "eval_rows": st.sampled_from([1, 0, 2.5, True]),
    "seeds": st.sampled_from([0, "2"]),
    "min_class": st.sampled_from([0, -1]),
    "bootstrap": st.sampled_from([5, 100.0]),
    "batch_size": st.sampled_from([0, None]),
    "pool_rows": st.sampled_from([1, True, "all"]),
    "on_small_class": st.sampled_from(["warn", None]),
    "min_gap": st.sampled_from([-0.1, "0.05", float("nan")]),
    "cancel_tol": st.sampled_from([-1.0, None, True, float("inf")]),
    "seed": st.sampled_from([-1, 0.5]),
}


@SETTINGS
@given(one_invalid(SCRUB_VALID, SCRUB_INVALID))
def test_invalid_scrubbing_config_raises_one_clear_error(case):
    from analyses.scrubbing import CausalScrubbing
    from analyses.scrubbing.induction import hypotheses

    kwargs, field, value = case
    with pytest.raises(ValueError) as err:
        CausalScrubbing(hypotheses()["correct"], **kwargs).validate_params()
    assert_clear(err.value, field, value)


@FEW
@given(kwargs=st.fixed_dictionaries(SCRUB_VALID), name=st.sampled_from(["correct", "k_from_embed", "wrong_heads"]))
def test_valid_scrubbing_config_runs(kwargs, name):
    from analyses.scrubbing import CausalScrubbing
    from analyses.scrubbing.induction import hypotheses

    model, task = induction()
    before = state_bytes(model)
    a = CausalScrubbing(hypotheses()[name], **kwargs)
    a.setup(model, task)
    out = a(model, task)
    assert set(a.effects + a.collaterals) <= set(out) and 0.0 <= out["small_class_fraction"] <= 1.0
    assert state_bytes(model) == before


@SETTINGS
@given(layer=st.integers(0, 4), head=st.integers(0, 4))
def test_scrubbing_hypothesis_outside_the_model_is_one_clear_error(layer, head):
    from analyses.scrubbing import Head, Hypothesis

    model, _ = bridge()
    assume(layer >= 1 or head >= 2)
    hyp = Hypothesis([Head(layer, head)])
    with pytest.raises(ValueError) as err:
        hyp.validate(model)
    msg = str(err.value)
    assert f"Head({layer},{head})" in msg and ("n_layers=1" in msg or "n_heads=2" in msg)


PROBE_VALID = {
    "label": st.just("label"), "positions": st.sampled_from([("pos",), (-1,), (0, "pos")]),
    "layers": st.sampled_from([None, (0,), (0, 1)]), "lams": st.sampled_from([(1e-2,), (1e-2, 1.0)]),
    "folds": st.integers(2, 3), "eval_rows": st.sampled_from([None, 12, 24]), "batch_size": st.integers(1, 16),
}
PROBE_INVALID = {
    "label": st.sampled_from([3, None]),
    "positions": st.sampled_from([(1.5,), (True,), (None,)]),
    "layers": st.sampled_from([(), (-1,), (0.5,), "0"]),
    "lams": st.sampled_from([(), (0.0,), (-1.0,), "ab", (float("nan"),)]),
    "folds": st.sampled_from([1, 0, "3", 2.5]),
    "eval_rows": st.sampled_from([3, 0, 10.5]),
    "batch_size": st.sampled_from([0, -1, 2.5]),
    "seed": st.sampled_from([-1, True]),
}


@SETTINGS
@given(cls=st.sampled_from(["FrozenProbe", "RefitProbe"]), case=one_invalid(PROBE_VALID, PROBE_INVALID))
def test_invalid_probe_config_raises_one_clear_error(cls, case):
    import analyses.probing as probing

    kwargs, field, value = case
    with pytest.raises(ValueError) as err:
        getattr(probing, cls)(**kwargs).validate_params()
    shown = value[0] if field == "positions" else value  # the message names the bad entry
    assert_clear(err.value, "positions" if field == "positions" else field, shown)


@FEW
@given(cls=st.sampled_from(["FrozenProbe", "RefitProbe"]), kwargs=st.fixed_dictionaries(PROBE_VALID))
def test_valid_probe_config_runs(cls, kwargs):
    import analyses.probing as probing

    model, task = bridge()
    before, n_hooks = state_bytes(model), hook_count(model)
    a = getattr(probing, cls)(**kwargs, control_type=None)
    a.setup(model, task)
    out = a(model, task)
    assert out and all(isinstance(v, float) for v in out.values())
    assert state_bytes(model) == before and hook_count(model) == n_hooks


# ---------------------------------------------------------------------------------- sweep files
def toml(value) -> str:
    """A TOML literal for the scalars and lists used here (tomllib reads, it does not write)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf"))
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "[" + ", ".join(toml(v) for v in value) + "]"


def sweep_file(doc: dict) -> str:
    lines = [f"{k} = {toml(v)}" for k, v in doc.items() if not isinstance(v, (dict, list)) or k == "extra"]
    for section in ("model", "degradation", "levels"):
        if section in doc:
            lines += [f"[{section}]"] + [f"{k} = {toml(v)}" for k, v in doc[section].items()]
    for a in doc.get("analyses", []):
        lines += ["[[analyses]]"] + [f"{k} = {toml(v)}" for k, v in a.items()]
    return "\n".join(lines) + "\n"


DEGRADATION_DOCS = st.one_of(
    st.fixed_dictionaries({"type": st.just("WeightNoise"), "relative": st.booleans(),
                           "draws_per_level": st.integers(1, 2), "eval_rows": st.just(8)}),
    st.fixed_dictionaries({"type": st.just("ActivationNoise"), "draws_per_level": st.integers(1, 2),
                           "points": st.sampled_from([["blocks.0.hook_resid_post"], ["blocks.1.attn.hook_z"]]),
                           "eval_rows": st.just(8)}),
    st.fixed_dictionaries({"type": st.just("TemperedPosterior"), "chains": st.integers(1, 2), "n_draws": st.integers(1, 2),
                           "burnin": st.integers(0, 1), "lr": st.just(1e-5), "batch_size": st.just(8),
                           "eval_rows": st.just(8), "init_batches": st.just(1), "progress": st.just(False)}),
)
ANALYSIS_DOCS = st.lists(st.one_of(
    st.fixed_dictionaries({"type": st.just("HeadAblation"), "name": st.just("ablation"),
                           "heads": st.sampled_from([[[1, 0]], [[1, 0], [1, 1]]]), "eval_rows": st.integers(2, 8)}),
    st.fixed_dictionaries({"type": st.just("ResidualNorms"), "name": st.just("norms"), "eval_rows": st.integers(1, 8)}),
), min_size=1, max_size=2, unique_by=lambda a: a["name"])


@st.composite
def sweep_docs(draw):
    deg = draw(DEGRADATION_DOCS)
    kind = "nbeta" if deg["type"] == "TemperedPosterior" else "values"
    values = draw(st.lists(st.sampled_from([100.0, 300.0]) if kind == "nbeta" else st.floats(0.0, 0.3),
                           min_size=1, max_size=2))
    return {"seed": draw(st.integers(0, 9)), "model": {"organism": "induction"}, "degradation": deg,
            "levels": {kind: values}, "analyses": draw(ANALYSIS_DOCS)}


@pytest.fixture(scope="module")
def small_organisms():
    """``organisms.load`` returning the induction bridge with a 64-row task (the file parser loads by name)."""
    from interp import organisms

    with mock.patch.object(organisms, "load", lambda name, **kw: induction() if name == "induction"
                           else organisms.module(name).load(**kw)):
        yield


@FEW
@given(doc=sweep_docs())
def test_valid_sweep_file_runs(tmp_path_factory, small_organisms, doc):
    from interp.app.sweepfile import load_sweep_config
    from interp.sweep import run_sweep

    path = tmp_path_factory.mktemp("sweep") / "sweep.toml"
    path.write_text(sweep_file(doc))
    cfg = load_sweep_config(path)
    before = state_bytes(cfg["model"])
    res = run_sweep(cfg["model"], cfg["task"], cfg["analyses"], cfg["degradation"], cfg["levels"],
                    seed=cfg["seed"], eval_rows=8, progress=False)
    assert state_bytes(cfg["model"]) == before
    n_levels = len(next(iter(doc["levels"].values())))
    assert set(res.table["level_index"]) == {-1, *range(n_levels)}
    assert set(res.table["analysis"]) == {a["name"] for a in doc["analyses"]}


@st.composite
def broken_sweep_docs(draw):
    """A valid document with one mistake, and a string the error must contain."""
    doc = draw(sweep_docs())
    how = draw(st.sampled_from(["top_key", "model_key", "degradation_key", "degradation_value", "degradation_type",
                                "level_kind", "level_empty", "two_level_kinds", "analysis_type", "analysis_key",
                                "analysis_value", "organism", "missing_section"]))
    deg, ana = doc["degradation"], doc["analyses"][0]
    if how == "top_key":
        doc["extra"] = 1
        return doc, "'extra'"
    if how == "model_key":
        doc["model"]["organismm"] = "induction"
        return doc, "'organismm' (did you mean 'organism'?)"
    if how == "degradation_key":
        deg["draws_per_levl" if "draws_per_level" in deg else "chainz"] = 2
        return doc, "did you mean"
    if how == "degradation_value":
        field = "draws_per_level" if "draws_per_level" in deg else "chains"
        deg[field] = draw(st.sampled_from([0, -1, 1.5, "2"]))
        return doc, field
    if how == "degradation_type":
        deg["type"] = deg["type"].lower()
        return doc, f"Unknown degradation type {deg['type']!r}"
    if how == "level_kind":
        doc["levels"] = {"sigma": [0.1]}
        return doc, "'sigma'"
    if how == "level_empty":
        kind = next(iter(doc["levels"]))
        doc["levels"][kind] = []
        return doc, "non-empty list"
    if how == "two_level_kinds":
        doc["levels"]["loss_increase"] = [0.1]
        return doc, "exactly one of"
    if how == "analysis_type":
        ana["type"] = ana["type"] + "s"
        return doc, f"Unknown analysis type {ana['type']!r}"
    if how == "analysis_key":
        ana["eval_rowz"] = 8
        return doc, "'eval_rowz' (did you mean 'eval_rows'?)"
    if how == "analysis_value":
        ana["eval_rows"] = 0
        return doc, "eval_rows=0"
    if how == "organism":
        doc["model"]["organism"] = "inductoin"
        return doc, "Unknown organism 'inductoin'"
    del doc[draw(st.sampled_from(["model", "degradation", "levels"]))]
    return doc, "missing ["


@SETTINGS
@given(case=broken_sweep_docs())
def test_broken_sweep_file_raises_one_clear_error(tmp_path_factory, small_organisms, case):
    from interp.app.sweepfile import load_sweep_config

    doc, expected = case
    path = tmp_path_factory.mktemp("sweep") / "sweep.toml"
    path.write_text(sweep_file(doc))
    with pytest.raises(ValueError) as err:
        load_sweep_config(path)
    assert expected in str(err.value) and ALLOWED.search(str(err.value)), str(err.value)


def test_sweep_file_is_data_not_code(tmp_path, small_organisms):
    """Strings that look like code stay strings: nothing in a sweep file is evaluated."""
    from interp.app.sweepfile import load_sweep_config

    flag = tmp_path / "pwned"
    payload = f"__import__('pathlib').Path({str(flag)!r}).write_text('x')"
    path = tmp_path / "sweep.toml"
    path.write_text(textwrap.dedent(f"""
        [model]
        organism = "induction"
        [degradation]
        type = "WeightNoise"
        [levels]
        values = [0.1]
        [[analyses]]
        type = "HeadAblation"
        name = {toml(payload)}
        heads = [[1, 0]]
    """))
    cfg = load_sweep_config(path)
    assert cfg["analyses"][0].name == payload and not flag.exists()
    for field in ("organism", "type"):
        text = path.read_text().replace('"induction"' if field == "organism" else '"WeightNoise"', toml(payload))
        path.write_text(text)
        with pytest.raises(ValueError):
            load_sweep_config(path)
        assert not flag.exists()


# Values these configs once accepted silently or rejected with an unrelated message (float counts,
# bools, NaN/inf tolerances, strings for sequences), each checked every run, not only when drawn.
ONCE_ACCEPTED = [
    ("analyses.scrubbing:CausalScrubbing", "min_gap", float("nan")),
    ("analyses.scrubbing:CausalScrubbing", "cancel_tol", True),
    ("analyses.scrubbing:CausalScrubbing", "cancel_tol", float("inf")),
    ("analyses.probing:ProbeConfig", "folds", "3"),
    ("analyses.probing:ProbeConfig", "folds", 2.5),
    ("analyses.probing:ProbeConfig", "lams", "ab"),
    ("analyses.probing:ProbeConfig", "layers", (0.5,)),
    ("analyses.probing:ProbeConfig", "batch_size", 2.5),
    ("analyses.probing:ProbeConfig", "eval_rows", 10.5),
    ("analyses.probing:ProbeConfig", "seed", -1),
]


@pytest.mark.parametrize(("where", "field", "value"), ONCE_ACCEPTED,
                         ids=[f"{w.split(':')[1]}.{f}={v!r}" for w, f, v in ONCE_ACCEPTED])
def test_config_value_once_accepted_is_one_clear_error(where, field, value):
    import importlib

    module, cls = where.split(":")
    with pytest.raises(ValueError) as err:
        if cls == "CausalScrubbing":  # an analysis: its parameters are checked when work starts
            from analyses.scrubbing.induction import hypotheses

            getattr(importlib.import_module(module), cls)(hypotheses()["correct"], **{field: value}).validate_params()
        else:
            getattr(importlib.import_module(module), cls)(**{field: value})
    assert_clear(err.value, field, value)
