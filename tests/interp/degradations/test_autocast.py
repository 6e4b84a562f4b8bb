"""A low-precision forward (``TemperedPosterior(autocast=...)``): the weights and update stay float32,
λ̂ of the deep linear network oracle is unchanged within its standard error, stacked chains still
stack, and the trained weights come back bit-identical."""

from __future__ import annotations

import pytest
import torch

from interp.degradations import TemperedPosterior
from interp.degradations.llc import estimate_llc
from interp.degradations.oracles import DeepLinearNetwork


def test_bfloat16_forward_leaves_the_oracle_llc_unchanged():
    """Same seeds with and without bfloat16: the chains see the same noise, so λ̂ differs only by
    the rounding of L and of its gradient (relative ≈ 2⁻⁸ per product, zero-mean, averaged over
    1200 draws); one standard error of the estimate (≈ 4% of λ here) bounds that with a wide margin,
    and both must stay within the oracle test's tolerance of Aoyagi's value (3 se + 10% of λ).
    The draws' losses must differ, so the bfloat16 forward really ran."""
    runs = {}
    for autocast in (None, "bfloat16"):
        net = DeepLinearNetwork([5, 3, 5], 1).float()
        w0 = [p.detach().clone() for p in net.parameters()]
        runs[autocast] = estimate_llc(net, net.loss, nbeta=100.0, localization=1.0, chains=4, n_draws=300,
                                      burnin=300, progress=False, autocast=autocast)
        assert all(torch.equal(p, w) and p.dtype == torch.float32 for p, w in zip(net.parameters(), w0))
    full, low = runs[None], runs["bfloat16"]
    assert abs(low.mean - full.mean) <= full.stderr, (low.mean, full.mean, full.stderr)
    for est in (full, low):
        assert abs(est.mean - net.llc) <= 3 * est.stderr + 0.1 * net.llc, (est.mean, est.stderr)
    assert not torch.equal(torch.tensor(low.per_chain), torch.tensor(full.per_chain))


def test_bfloat16_forward_on_a_bridge_keeps_stacked_chains(organism):
    """The stacked forward is checked against the bridge in the model's own dtype (bfloat16 rounds
    the two computations differently), so autocast does not turn stacking off; every draw's loss
    is finite and the weights come back bit-identical."""
    model, task = organism
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tp = TemperedPosterior(nbeta=30.0, localization=100.0, lr=1e-4, chains=2, n_draws=2, burnin=2, batch_size=8,
                           eval_rows=8, progress=False, autocast="bfloat16")
    run = tp.draws(model, task)
    draws = list(run)
    assert len(draws) == 4 and all(torch.isfinite(torch.tensor(d.loss)) for d in draws)
    assert run.stacking.chains_per_batch == 2, run.stacking.reason
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_autocast_names_the_choices():
    with pytest.raises(ValueError, match=r"autocast.*'bfloat16', 'float16'"):
        TemperedPosterior(autocast="bf16")
