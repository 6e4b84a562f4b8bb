"""Bad input to the sampler (docs/bad-input.md, section "Sampler inputs"): restrict patterns and
masks, components, vectorised chains on a user's loss. One ``test_<id>`` per catalogue row."""

from __future__ import annotations

import pytest
import torch

from interp.degradations import LossIncrease, TemperedPosterior, WeightNoise, estimate_component_llcs, estimate_llc
from interp.degradations.oracles import DeepLinearNetwork

TORCH_THREADS = 1


def _weights(model):
    return [p.detach().clone() for p in model.parameters()]


def _same(model, saved):
    return all(torch.equal(a, b) for a, b in zip(saved, model.parameters()))


def test_restrict_pattern_matches_nothing(organism):
    model, task = organism
    saved = _weights(model)
    bad = ["blocks.1.attn.*", "blocks.0.atn.q.weight"]
    for call in (lambda: TemperedPosterior(restrict=bad, progress=False).check(model),
                 lambda: list(TemperedPosterior(restrict=bad, chains=1, n_draws=1, burnin=0,
                                                progress=False).draws(model, task, 10.0)),
                 lambda: list(WeightNoise(restrict=bad).draws(model, task, 0.1))):
        with pytest.raises(ValueError, match=r"'blocks\.0\.atn\.q\.weight' matches no parameter .*the other "
                                             r"patterns do.*closest valid names: 'blocks\.0\.attn\.q\.weight'"):
            call()
    assert _same(model, saved)


def test_restrict_mask_all_zeros(organism):
    model, _ = organism
    zeros = {"blocks.1.attn.q.weight": torch.zeros(32, 32)}
    for make in (TemperedPosterior, WeightNoise):
        with pytest.raises(ValueError, match=r"is all zeros: it selects no weight.*ΔL 0"):
            make(restrict=zeros)
    with pytest.raises(ValueError, match=r"is all zeros"):
        estimate_component_llcs(model, model, components={"q": zeros}, nbeta=10.0)


def test_restrict_mask_values_not_zero_one():
    for values, shown in ((torch.full((4,), 0.5), r"\[0\.5\]"), (torch.tensor([0, 2, 1, -1]), r"\[-1\.0, 2\.0\]")):
        with pytest.raises(ValueError, match=rf"holds values {shown} besides 0 and 1.*\(mask > 0\)\.float\(\)"):
            TemperedPosterior(restrict={"w": values})


def test_restrict_mask_nan():
    mask = torch.ones(4)
    mask[2] = float("nan")
    with pytest.raises(ValueError, match=r"holds 1 NaN value\(s\).*nan_to_num"):
        TemperedPosterior(restrict={"w": mask})


def test_restrict_zero_weights_calibration(organism):
    """Was ``ValueError: math domain error`` from inside the calibration (log of B = 0 for d = 0)."""
    model, task = organism
    zeros = {"blocks.1.attn.q.weight": torch.zeros(32, 32)}
    with pytest.raises(ValueError, match="all zeros"):
        TemperedPosterior(restrict=zeros).draws(model, task, LossIncrease(0.1))
    with pytest.raises(ValueError, match=r"restrict=\[\] is empty"):
        TemperedPosterior(restrict=[])


def test_head_slice_out_of_range(organism):
    model, _ = organism
    with pytest.raises(ValueError, match=r"head 7 out of range, the model has 2 heads"):
        TemperedPosterior(restrict="blocks.1.attn.head.7").check(model)
    with pytest.raises(ValueError, match=r"layer 5 has no attention"):
        TemperedPosterior(restrict="blocks.5.attn.head.0").check(model)


def test_components_not_usable():
    net = DeepLinearNetwork([3, 2, 3], rank=1)
    kw = dict(nbeta=10.0, chains=1, n_draws=1, burnin=0, progress=False)
    with pytest.raises(ValueError, match=r"components=\{\}\): give a non-empty mapping"):
        estimate_component_llcs(net, net.loss, components={}, **kw)
    with pytest.raises(ValueError, match=r"a component needs a restrict"):
        estimate_component_llcs(net, net.loss, components={"a": None}, **kw)
    with pytest.raises(ValueError, match=r"either restrict= or components="):
        estimate_component_llcs(net, net.loss, components={"a": "weights.0"}, restrict="weights.1", **kw)
    before = _weights(net)
    with pytest.raises(ValueError, match=r"'weights\.9' matches no parameter.*closest valid names"):
        estimate_component_llcs(net, net.loss, components={"a": "weights.0", "b": "weights.9"}, **kw)
    assert _same(net, before)
    with pytest.raises(ValueError, match=r"components=None, data=None\): give components="):
        estimate_component_llcs(net, net.loss, **kw)
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['components'\].*estimate_component_llcs\("):
        estimate_llc(net, net.loss, components={"a": "weights.0"}, **kw)


def test_vectorised_chains_disagree_with_sequential():
    net = DeepLinearNetwork([3, 2, 3], rank=1)
    captured = list(net.weights)

    def loss(model):  # reads parameters captured outside the model: functional_call cannot swap them
        out = captured[0]
        for w in captured[1:]:
            out = w @ out
        return 0.5 * ((out - net.true) ** 2).sum()

    kw = dict(nbeta=100.0, localization=1.0, chains=2, n_draws=20, burnin=20, progress=False)
    with pytest.warns(RuntimeWarning, match=r"vectorised chains disabled for DeepLinearNetwork: .*one after another"):
        est = estimate_llc(net, loss, **kw)
    assert est.per_chain == estimate_llc(net, loss, vectorize=False, **kw).per_chain


def test_objective_does_not_depend_on_weights():
    net = DeepLinearNetwork([3, 2, 3], rank=1)
    saved = _weights(net)
    sampler = TemperedPosterior(nbeta=10.0, localization=1.0, lr=1e-4, chains=1, n_draws=2, burnin=0, eval_rows=0,
                                progress=False)
    with pytest.raises(ValueError, match=r"returned a tensor that does not depend on the model's weights \(1, "
                                         r"requires_grad=False\): SGLD needs its gradient"):
        list(sampler.draws(net, lambda model: torch.tensor(1.0), 10.0))
    assert _same(net, saved)
