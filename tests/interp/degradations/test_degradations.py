"""Degradations: restoration, validation, de-duplication, baselines (fast tests)."""

from __future__ import annotations

import math

import pytest
import torch

from interp.degradations import (
    ActivationNoise,
    CalibrationConfig,
    Checkpoints,
    Degradation,
    Draw,
    LossIncrease,
    NBeta,
    TemperedPosterior,
    WeightNoise,
    estimate_llc,
    select_parameters,
)
from interp.degradations.oracles import MonomialPotential

TORCH_THREADS = 1  # this module's tests run on one thread (tests/conftest.py; nothing leaks to others)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _identical(model, saved) -> bool:
    now = model.state_dict()
    return all(torch.equal(now[k], v) and now[k].dtype == v.dtype for k, v in saved.items())


def _sampler(**kw):
    base = dict(nbeta=2000.0, chains=2, n_draws=3, burnin=2, thin=2, batch_size=8, eval_rows=16, progress=False)
    base.update(kw)
    return TemperedPosterior(**base)


@pytest.mark.parametrize("vectorize", [False, None])
def test_draws_restore_after_full_iteration(organism, vectorize):
    model, task = organism
    saved = _state(model)
    seen = []
    for d in _sampler(vectorize=vectorize).draws(model, task):
        assert isinstance(d, Draw) and d.nbeta == 2000.0 and d.lr > 0 and math.isfinite(d.loss)
        seen.append((d.chain, d.draw))
        assert not _identical(model, saved)  # the sampled weights are live
    # chains one after another yield chain by chain; stacked chains (the default here) draw by draw
    order = sorted(seen) if vectorize is False else sorted(seen, key=lambda k: (k[1], k[0]))
    assert seen == order and sorted(seen) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert _identical(model, saved)


def test_restore_between_chains(organism):
    model, task = organism
    saved = _state(model)
    first = {}
    for d in _sampler(chains=2, n_draws=1, burnin=0).draws(model, task):
        first[d.chain] = _state(model)
    # each chain starts from w0: after one step-free draw the weights equal w0
    assert _identical(model, saved)
    assert all(all(torch.equal(s[k], saved[k]) for k in saved) for s in first.values())


def test_restore_after_break_and_close(organism):
    model, task = organism
    saved = _state(model)
    run = _sampler().draws(model, task)
    for i, _ in enumerate(run):
        if i == 3:
            break
    run.close()  # GeneratorExit inside the generator
    assert _identical(model, saved)
    run2 = _sampler().draws(model, task)
    next(run2)
    del run2  # garbage collection closes too
    assert _identical(model, saved)


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_restore_after_exception_in_consumer(organism, exc):
    model, task = organism
    saved = _state(model)
    with pytest.raises(exc):
        with _sampler().draws(model, task) as run:
            for d in run:
                if d.chain == 1:
                    raise exc("boom")
    assert _identical(model, saved)


def test_restore_after_exception_in_loss():
    m = MonomialPotential([2, 2])
    with torch.no_grad():
        m.w.copy_(torch.tensor([0.1, -0.2], dtype=torch.float64))
    saved = _state(m)
    calls = {"n": 0}

    def loss(model):
        calls["n"] += 1
        if calls["n"] > 20:
            raise ValueError("loss blew up")
        return model.loss(model)

    with pytest.raises(ValueError, match="blew up"):
        for _ in TemperedPosterior(nbeta=10.0, lr=1e-3, chains=1, n_draws=50, burnin=0, eval_rows=0,
                                   vectorize=False, progress=False).draws(m, loss):
            pass
    assert _identical(m, saved)


@pytest.mark.parametrize("how", ["full", "break", "consumer_raises", "loss_raises", "sample"])
def test_vectorised_chains_restore_bit_identical(how):
    """The batched multi-chain path (``vectorize=True``, stacked weights, ``functional_call``) puts
    each chain's draw live in the model and restores w0 exactly, however the iteration ends."""
    from interp.degradations.oracles import DeepLinearNetwork

    net = DeepLinearNetwork([3, 2, 3], 1)
    saved = _state(net)
    calls = {"n": 0}

    def loss(model):
        calls["n"] += 1
        if how == "loss_raises" and calls["n"] > 8:
            raise ValueError("loss blew up")
        return model.loss(model)

    sampler = TemperedPosterior(nbeta=1000.0, localization=10.0, lr=1e-4, chains=3, n_draws=4, burnin=2,
                                thin=2, eval_rows=1, vectorize=True, progress=False)
    if how == "sample":
        run = sampler.sample(net, loss)
        assert len(run.chains) == 3 and all(len(c.eval_losses) == 4 for c in run.chains)
    elif how in ("consumer_raises", "loss_raises"):
        with pytest.raises((RuntimeError, ValueError)):
            with sampler.draws(net, loss) as run:
                for d in run:
                    if how == "consumer_raises" and d.chain == 1:
                        raise RuntimeError("boom")
    else:
        run = sampler.draws(net, loss)
        seen = []
        for d in run:
            seen.append((d.draw, d.chain))
            # the draw's weights are live: its loss is the model's current loss
            assert float(net.loss().detach()) == pytest.approx(d.loss, rel=1e-12)
            if how == "break" and len(seen) == 5:
                break
        run.close()
        if how == "full":
            assert seen == [(i, c) for i in range(4) for c in range(3)]
    assert _identical(net, saved)
    assert net.weights[0].grad is None and all(p.requires_grad for p in net.parameters())


def test_validation_messages():
    with pytest.raises(ValueError, match="nbeta"):
        TemperedPosterior(nbeta=-1.0)
    with pytest.raises(ValueError, match="draws"):
        TemperedPosterior(n_draws=0)
    with pytest.raises(ValueError, match="lr_safety"):
        TemperedPosterior(lr_safety=5.0)
    with pytest.raises(ValueError, match="LossIncrease"):
        LossIncrease(-0.1)
    with pytest.raises(ValueError, match="NBeta"):
        NBeta(0.0)
    with pytest.raises(ValueError, match="unknown argument"):
        estimate_llc(MonomialPotential([2]), lambda m: m.loss(m), nbeta=1.0, step_size=1e-3)
    with pytest.raises(ValueError, match="no level"):
        m = MonomialPotential([2])
        next(iter(TemperedPosterior(progress=False).draws(m, m.loss)))
    with pytest.raises(ValueError, match="tolerance"):
        CalibrationConfig(tolerance=0)


def test_protocol():
    for d in (TemperedPosterior(), WeightNoise(), ActivationNoise(), Checkpoints(source=[(0, {})])):
        assert isinstance(d, Degradation)


class _Fused(torch.nn.Module):
    """GPT-2-style overlap: q/k/v are parameters viewing slices of the fused matrix."""

    def __init__(self):
        super().__init__()
        self.fused = torch.nn.Parameter(torch.zeros(3, 4, dtype=torch.float64))
        self.q = torch.nn.Parameter(self.fused.data[0])
        self.k = torch.nn.Parameter(self.fused.data[1])

    def loss(self, model=None):
        return 0.5 * (self.fused**2).sum()


def test_parameters_deduplicated_by_storage():
    m = _Fused()
    sel = select_parameters(m)
    assert [n for n, _, _ in sel] == ["fused"]
    # noise applied once: one step from w0 = 0 with a tiny lr has per-coordinate variance ε
    eps = 1e-6
    run = TemperedPosterior(nbeta=1.0, localization=0.0, lr=eps, chains=1, n_draws=2, burnin=0, thin=1,
                            eval_rows=0, progress=False, vectorize=False).draws(m, m.loss)
    next(run)
    next(run)  # the second draw holds w after one step
    var = float(m.fused.detach().pow(2).mean())
    run.close()
    assert var < 4 * eps  # double noise would give 2ε on q/k rows (and 4ε on a shared update)
    assert torch.equal(m.q.detach(), m.fused.detach()[0])


def test_restrict_to_a_layer(organism):
    model, task = organism
    names = [n for n, _, _ in select_parameters(model, "layers.1.*")]
    assert names and all(".1." in n or n.startswith("layers.1") for n in names)
    saved = _state(model)
    untouched = [k for k in saved if not k.startswith("layers.1") and "blocks.1" not in k]
    for _ in _sampler(restrict="layers.1.*", chains=1).draws(model, task):
        now = model.state_dict()
        assert all(torch.equal(now[k], saved[k]) for k in untouched)
    assert _identical(model, saved)
    with pytest.raises(ValueError, match="matches no parameter"):
        select_parameters(model, "nonexistent.*")


def test_diagnostics_recorded(organism):
    model, task = organism
    run = _sampler(chains=1, n_draws=4, burnin=2, thin=1).sample(model, task)
    (c,) = run.chains
    assert c.steps == 2 + 3 + 1 and len(c.eval_losses) == 4 and len(c.distances) == 4
    assert len(c.grad_noise) == 4 and all(g > 0 for g in c.grad_noise)
    assert math.isfinite(c.llc) and math.isfinite(c.specific_heat) and not c.failed


def test_weight_noise(organism):
    model, task = organism
    saved = _state(model)
    clean = task.evaluate(model)["loss"]
    draws = list(WeightNoise(sigma=0.05, draws_per_level=2, eval_rows=32).draws(model, task))
    assert len(draws) == 2 and all(d.loss > 0 for d in draws)
    assert _identical(model, saved)
    rel = list(WeightNoise(relative=True, draws_per_level=1, eval_rows=32).draws(model, task, level=0.5))
    assert rel[0].level == 0.5 and rel[0].loss > clean
    assert _identical(model, saved)
    for d in WeightNoise(sigma=0.1, draws_per_level=3).draws(model, task):
        break
    assert _identical(model, saved) or True  # generator not closed yet: close it via GC
    import gc

    gc.collect()
    assert _identical(model, saved)


def test_activation_noise(organism):
    model, task = organism
    clean = task.evaluate(model)["loss"]
    ids = task.tensors("test", rows=4)["input_ids"]
    ref = model(ids)
    losses = []
    for d in ActivationNoise(sigma=1.0, draws_per_level=2, eval_rows=64).draws(model, task):
        assert not torch.allclose(model(ids), ref)  # hooks active during the draw
        losses.append(d.loss)
    assert all(x > clean for x in losses)
    assert torch.equal(model(ids), ref)  # hooks removed


def test_checkpoints(organism):
    model, task = organism
    from interp import organisms

    saved = _state(model)
    cks = organisms.checkpoints("induction")
    draws = list(Checkpoints(source=cks, eval_rows=64).draws(model, task))
    assert [d.level for d in draws] == [s for s, _ in cks]
    assert draws[0].loss > draws[-1].loss  # step 0 is worse than the trained checkpoint
    assert _identical(model, saved)
    one = list(Checkpoints(source="induction", eval_rows=64).draws(model, task, level=cks[0][0]))
    assert len(one) == 1
    with pytest.raises(ValueError, match="no checkpoint"):
        list(Checkpoints(source=cks).draws(model, task, level=-5))
    assert _identical(model, saved)


# ------------------------------------------------------------------- public steps: plan / run_chain
def _weights(model):
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("level", [None, NBeta(1500.0)])
def test_run_chain_equals_chain_of_sequential_sampler(organism, level):
    """plan() + run_chain(c) gives bit for bit the draws, live weights and diagnostics of chain c of
    the sequential sampler (what a Ray job per chain relies on), and restores the weights."""
    model, task = organism
    saved = _state(model)
    sampler = _sampler(chains=3, n_draws=2, burnin=1, thin=2, vectorize=False, seed=3)
    seq = {}
    run = sampler.draws(model, task, level)
    for d in run:
        seq[(d.chain, d.draw)] = (d, _weights(model))
    plan = sampler.plan(model, task, level)
    assert _identical(model, saved)
    assert (plan.nbeta, plan.lr, plan.calibration) == (run.nbeta, run.lr, None)
    for c in (2, 0):
        one = sampler.run_chain(model, task, level, plan, c)
        got = [(d, _weights(model)) for d in one]
        assert _identical(model, saved)
        assert [d for d, _ in got] == [seq[(c, i)][0] for i in range(2)]
        assert all(all(torch.equal(a, b) for a, b in zip(w, seq[(c, i)][1])) for i, (_, w) in enumerate(got))
        (diag,) = one.chains
        assert diag == run.chains[c] and diag.chain == c
        assert one.nbeta == run.nbeta and one.lr == run.lr


def test_run_chain_restores_on_close_and_exception(organism):
    model, task = organism
    saved = _state(model)
    sampler = _sampler(chains=2, vectorize=False)
    plan = sampler.plan(model, task)
    run = sampler.run_chain(model, task, None, plan, 1)
    next(run)
    run.close()
    assert _identical(model, saved)
    with pytest.raises(KeyboardInterrupt):
        with sampler.run_chain(model, task, None, plan, 0) as run:
            for _ in run:
                raise KeyboardInterrupt
    assert _identical(model, saved)
    with pytest.raises(ValueError, match="chain"):
        sampler.run_chain(model, task, None, plan, 2)
    with pytest.raises(ValueError, match="plan"):
        sampler.run_chain(model, task, None, (1.0, 1e-3, None), 0)


def test_run_chain_of_a_plain_module_and_vectorizes():
    from interp.degradations.oracles import DeepLinearNetwork

    net = DeepLinearNetwork([3, 2, 3], 1)
    saved = _state(net)
    kw = dict(nbeta=1000.0, localization=10.0, lr=1e-4, chains=3, n_draws=3, burnin=2, eval_rows=1,
              progress=False)
    assert TemperedPosterior(**kw).vectorizes(net, net.loss)
    assert not TemperedPosterior(vectorize=False, **kw).vectorizes(net, net.loss)
    assert not TemperedPosterior(**{**kw, "chains": 1}).vectorizes(net, net.loss)
    seq = TemperedPosterior(vectorize=False, **kw)
    ref = seq.sample(net, net.loss)
    plan = seq.plan(net, net.loss, None)
    for c in range(3):
        one = seq.run_chain(net, net.loss, None, plan, c)
        draws = list(one)
        assert one.chains[0] == ref.chains[c] and [d.chain for d in draws] == [c] * 3
    assert _identical(net, saved)


# ------------------------------------------------------------ restrict: TransformerLens-style names
HF_LAYER = {"gpt2": "transformer.h.", "bert": "bert.encoder.layer.", "neox": "gpt_neox.layers.",
            "llama": "model.layers."}


def _offline_bridge(arch, path):
    """A 2-layer random-init Hugging Face model of ``arch``, saved with an offline word-level
    tokenizer and loaded back as a TransformerBridge (no download)."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    import interp

    torch.manual_seed(0)
    common = dict(vocab_size=100)
    if arch == "gpt2":
        hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, n_positions=32, **common))
    elif arch == "bert":
        hf = transformers.BertModel(transformers.BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                                                            intermediate_size=64, max_position_embeddings=32, **common))
    elif arch == "neox":
        hf = transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(
            num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=32, **common))
    else:
        hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(
            num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=64, max_position_embeddings=32, **common))
    hf.save_pretrained(path)
    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(100)}, unk_token="t1"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="t0", eos_token="t0", unk_token="t1",
                                         pad_token="t0").save_pretrained(path)
    return interp.load_model(path, device="cpu")


def _selected(model, restrict):
    from interp.degradations import clean_name

    return {clean_name(n) for n, _, _ in select_parameters(model, restrict)}


def test_restrict_transformerlens_names_on_a_native_bridge(organism):
    model, _ = organism
    assert _selected(model, "blocks.1.*") == _selected(model, "layers.1.*")
    assert _selected(model, "blocks.*.attn.*") == _selected(model, "layers.*.attn.*")
    assert _selected(model, "embed") == {"tok_embed.weight"} and _selected(model, "unembed") == {"head.weight"}
    assert _selected(model, ["blocks.0.attn.q.*", "pos_embed"]) == {"layers.0.attn.q.weight", "layers.0.attn.q.bias",
                                                                    "pos.weight"}
    with pytest.raises(ValueError) as err:
        select_parameters(model, "blocks.0.mlp.*")  # attention-only: no MLP to select
    msg = str(err.value)
    assert "layers.0.ln1.weight" in msg and "blocks.0.attn.q.weight" in msg and "'blocks.0.*'" in msg


@pytest.mark.parametrize("arch", ["gpt2", "bert", "neox", "llama"])
def test_restrict_transformerlens_names_on_hf_bridges(arch, tmp_path):
    model = _offline_bridge(arch, tmp_path)
    hf1 = HF_LAYER[arch] + "1."
    layer1 = _selected(model, "blocks.1.*")
    assert layer1 and layer1 == _selected(model, hf1 + "*")
    attn, mlp = _selected(model, "blocks.0.attn.*"), _selected(model, "blocks.0.mlp.*")
    assert attn and mlp and not attn & mlp
    assert all(n.startswith(HF_LAYER[arch] + "0.") for n in attn | mlp)
    assert all("mlp" in n or "intermediate" in n or "output.dense" in n for n in mlp)
    assert all("attn" in n or "attention" in n for n in attn)
    assert _selected(model, "blocks.*.attn.*") >= attn
    embed = _selected(model, "embed")
    assert len(embed) == 1 and any(k in next(iter(embed)) for k in ("wte", "word_embeddings", "embed_in", "embed_tokens"))
    assert _selected(model, "unembed")
    with pytest.raises(ValueError) as err:
        select_parameters(model, "blocks.9.*")
    msg = str(err.value)
    hf_names = [n for n in msg.split("TransformerLens-style")[0].split() if n.startswith(HF_LAYER[arch].split(".")[0])]
    assert hf_names and "blocks.0." in msg and f"'{HF_LAYER[arch]}0.*'" in msg
