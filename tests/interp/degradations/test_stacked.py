"""The stacked-chains forward (``interp.degradations.stacked``) against the bridge it replaces."""

from __future__ import annotations

import pytest
import torch

from interp import organisms
from interp.degradations import TemperedPosterior
from interp.degradations.stacked import StackedForward, unsupported_reason

TORCH_THREADS = 1  # this module's tests run on one thread (tests/conftest.py; nothing leaks to others)


@pytest.fixture(scope="module", params=["induction", "modadd"])
def organism(request):
    return organisms.load(request.param)


def _perturbed(params, C, seed=0):
    """C different weight sets near w0: chain c is w0 + (c·0.05)·noise."""
    g = torch.Generator().manual_seed(seed)
    return [torch.stack([p.detach() + 0.05 * c * torch.randn(p.shape, generator=g) for c in range(C)]) for p in params]


def test_logits_and_gradients_equal_the_bridge_per_chain(organism):
    """Each chain's logits and loss gradient equal the bridge's with that chain's weights loaded."""
    model, task = organism
    params = list(model.parameters())
    W = _perturbed(params, 3)
    batch = task.tensors("train", rows=16, columns=("input_ids", "target_mask"))
    fwd = StackedForward(model, params)
    leaves = [w.clone().requires_grad_(True) for w in W]
    L = task.loss_from_logits(fwd(leaves, batch["input_ids"]), batch)
    grads = torch.autograd.grad(L.sum(), leaves)
    saved = [p.detach().clone() for p in params]
    try:
        for c in range(3):
            with torch.no_grad():
                for p, w in zip(params, W):
                    p.copy_(w[c])
            loss = task.loss(model, batch)
            ref = torch.autograd.grad(loss, params)
            assert float(L[c].detach()) == pytest.approx(float(loss.detach()), rel=1e-5)
            for g, r in zip(grads, ref):
                assert torch.allclose(g[c], r, rtol=1e-3, atol=1e-6)
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)


def test_stacked_chains_equal_sequential_chains():
    """Same seeds: the stacked path and chain-by-chain bridge path give the same draws (float rounding)."""
    model, task = organisms.load("induction")
    kw = dict(nbeta=1000.0, localization=100.0, lr=3e-6, chains=3, n_draws=3, burnin=4, thin=3,
              eval_rows=32, progress=False)
    a = {(d.chain, d.draw): d.loss for d in TemperedPosterior(vectorize=None, **kw).draws(model, task)}
    b = {(d.chain, d.draw): d.loss for d in TemperedPosterior(vectorize=False, **kw).draws(model, task)}
    assert a.keys() == b.keys() and len(a) == 9
    assert all(a[k] == pytest.approx(b[k], rel=1e-4) for k in a)
    assert len({round(v, 6) for v in a.values()}) == 9  # the chains really differ


def test_restricted_parameters_only_move():
    """With ``restrict`` only the selected parameters are stacked; the rest enter as they are."""
    model, task = organisms.load("induction")
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    kw = dict(nbeta=1000.0, lr=3e-6, chains=2, n_draws=2, burnin=2, thin=2, eval_rows=16,
              restrict="layers.1.*", progress=False)
    a = {}
    for d in TemperedPosterior(**kw).draws(model, task):
        now = model.state_dict()
        changed = {k for k in saved if not torch.equal(now[k], saved[k])}
        assert changed and all("layers.1" in k or "blocks.1" in k for k in changed)
        a[(d.chain, d.draw)] = d.loss
    b = {(d.chain, d.draw): d.loss for d in TemperedPosterior(vectorize=False, **kw).draws(model, task)}
    assert all(a[k] == pytest.approx(b[k], rel=1e-4) for k in a)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())


def test_unsupported_models_fall_back_with_a_reason():
    model, task = organisms.load("induction")
    assert unsupported_reason(model) is None
    assert unsupported_reason(torch.nn.Linear(2, 2)) == "not a native TransformerBridge"
    import hooks

    with hooks.apply(model, [hooks.Hook("blocks.0.hook_resid_pre", lambda x: x)]):
        assert unsupported_reason(model) == "hooks are attached to the model"
        with pytest.raises(ValueError, match="hooks are attached"):
            StackedForward(model, list(model.parameters()))
        # sampling still works (chains run through the bridge, hooks active)
        run = TemperedPosterior(nbeta=1000.0, lr=3e-6, chains=2, n_draws=1, burnin=1, eval_rows=8,
                                progress=False).sample(model, task)
        assert len(run.chains) == 2 and not run.failed
    assert unsupported_reason(model) is None


def test_docstring_example_runs():
    import doctest

    import interp.degradations.stacked as mod

    result = doctest.testmod(mod)
    assert result.attempted > 0 and result.failed == 0


def test_memory_budget_bounds_the_stacked_chains_and_the_draws_stay_the_same():
    """A budget too small for two stacked chains runs them one after another (recorded in the run's
    ``stacking``) with exactly the sequential draws; a budget for two of three chains runs batches of
    two, equal to the sequential draws up to float rounding."""
    model, task = organisms.load("induction")
    kw = dict(nbeta=1000.0, localization=100.0, lr=3e-6, chains=3, n_draws=2, burnin=2, thin=2, eval_rows=16,
              progress=False)
    seq = TemperedPosterior(vectorize=False, **kw).draws(model, task)
    b = {(d.chain, d.draw): d.loss for d in seq}
    tiny = TemperedPosterior(memory_budget=1, **kw).draws(model, task)
    a = {(d.chain, d.draw): d.loss for d in tiny}
    assert tiny.stacking.chains_per_batch == 1 and tiny.stacking.batches == 3
    assert "one after another" in tiny.stacking.reason and tiny.stacking.per_chain_bytes > 0
    assert a == b
    st = tiny.stacking
    two = TemperedPosterior(memory_budget=st.base_bytes + int(2.5 * st.per_chain_bytes), **kw).draws(model, task)
    c = {(d.chain, d.draw): d.loss for d in two}
    assert (two.stacking.chains_per_batch, two.stacking.batches) == (2, 2)
    assert c.keys() == b.keys() and all(c[k] == pytest.approx(b[k], rel=1e-4) for k in b)
    assert len({round(v, 6) for v in c.values()}) == 6  # the chains really differ
    with pytest.raises(ValueError, match="memory_budget"):
        TemperedPosterior(memory_budget=-5)


def test_measured_peak_counts_what_is_alive_at_once():
    """Two float32 1000 x 1000 tensors alive together: 8,000,000 bytes at the peak, on the CPU."""
    from interp.degradations._memory import free_memory_bytes, measure_peak_bytes

    assert measure_peak_bytes(lambda: torch.ones(1000, 1000) + 1, torch.device("cpu")) == 8_000_000
    assert measure_peak_bytes(lambda: [torch.ones(1000) for _ in range(3)], torch.device("cpu")) == 12_000
    assert free_memory_bytes(torch.device("cpu")) > 0


def test_the_check_and_the_loss_at_w0_run_once_per_model_and_weights(monkeypatch):
    """The stacked-gradient check at w0 (with its memory measurement) and L(w0) run once for a model,
    weights, objective and batch size: a second ``sample()`` (another level) reuses them with the same
    stacking; other weights are checked and measured afresh."""
    import interp.degradations._batched as batched
    from interp.degradations._chain import _Engine

    model, task = organisms.load("induction")
    calls, inits = [], []
    measure = batched.measure_peak_bytes
    monkeypatch.setattr(batched, "measure_peak_bytes", lambda fn, device: calls.append(1) or measure(fn, device))
    init_batches = _Engine._init_batches
    monkeypatch.setattr(_Engine, "_init_batches", lambda self: inits.append(1) or init_batches(self))
    params = list(model.parameters())
    saved = [p.detach().clone() for p in params]
    kw = dict(localization=100.0, lr=3e-6, chains=2, n_draws=2, burnin=0, thin=1, eval_rows=0, init_batches=1,
              batch_size=8, progress=False)
    try:
        with torch.no_grad():  # weights no other test has sampled: a fresh entry in the cache
            params[0].add_(1e-4 * torch.randn(params[0].shape, generator=torch.Generator().manual_seed(7)))
        first = TemperedPosterior(nbeta=1000.0, **kw).sample(model, task)
        second = TemperedPosterior(nbeta=300.0, **kw).sample(model, task)
        a, b = first.stacking, second.stacking  # (the default budget follows the free memory)
        assert len(calls) == 1 and a.chains_per_batch == b.chains_per_batch == 2
        assert (a.base_bytes, a.per_chain_bytes) == (b.base_bytes, b.per_chain_bytes)
        assert len(inits) == 1 and first.chains[0].init_loss == second.chains[0].init_loss
        with torch.no_grad():
            params[0].add_(1e-4)
        third = TemperedPosterior(nbeta=1000.0, **kw).sample(model, task)
        assert len(calls) == 2 and len(inits) == 2 and third.chains[0].init_loss != first.chains[0].init_loss
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)


def test_large_models_on_the_cpu_run_their_chains_in_turn(monkeypatch):
    """Above STACK_CPU_MAX_WEIGHTS sampled weights the automatic choice on the CPU is chains one after
    another (stacking measured 0.6x at 124M), with the reason recorded; vectorize=True still stacks."""
    import interp.degradations._batched as batched

    model, task = organisms.load("induction")
    monkeypatch.setattr(batched, "STACK_CPU_MAX_WEIGHTS", 1000)
    kw = dict(nbeta=1000.0, localization=100.0, lr=3e-6, chains=2, n_draws=1, burnin=1, eval_rows=8, progress=False)
    auto = TemperedPosterior(**kw).sample(model, task)
    assert auto.stacking.chains_per_batch == 1 and "above 1,000 sampled weights" in auto.stacking.reason
    assert not TemperedPosterior(**kw).vectorizes(model, task)
    assert TemperedPosterior(vectorize=True, **kw).sample(model, task).stacking.chains_per_batch == 2
