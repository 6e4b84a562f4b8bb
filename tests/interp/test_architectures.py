"""Every piece of the toolkit on three Hugging Face architectures: GPT-2, GPT-NeoX (Pythia), Llama.

Each model is a small random-init Hugging Face config (2 layers, d_model 32, vocab 100), trained for
a few AdamW steps on a synthetic two-class Markov corpus so that its loss is not flat, saved with
``save_pretrained`` (plus a tiny offline word-level tokenizer) and loaded back with
``interp.load_model(path)``. On each bridge: capture, head and MLP ablation, a causal-scrubbing
hypothesis with an MLP node, probing, residual norms, a transcoder on one MLP and a short
tempered-posterior sweep (task loss, and the behavioural objective), each asserted to run and to
leave the weights bit-identical. Parameter selection is checked against the Hugging Face module:
fused QKV (GPT-2's ``c_attn`` with q/k/v views, GPT-NeoX's ``query_key_value`` with split copies)
and tied embeddings count once, and every selected parameter is one the forward reads.
"""

from __future__ import annotations

import math

import pytest
import torch
import transformers

import hooks
import interp
from interp.degradations import NBeta, TemperedPosterior, WeightNoise, select_parameters

VOCAB, D, LAYERS, HEADS, SEQ, ROWS = 100, 32, 2, 4, 16, 192
ARCHS = ("gpt2", "neox", "llama")


def _digest(model: torch.nn.Module) -> str:
    from interp.sweep import weights_digest

    return weights_digest(model)


def _hf_model(arch: str) -> torch.nn.Module:
    common = dict(vocab_size=VOCAB, bos_token_id=0, eos_token_id=0)
    if arch == "gpt2":
        cfg = transformers.GPT2Config(n_layer=LAYERS, n_embd=D, n_head=HEADS, n_positions=32, **common)
        return transformers.GPT2LMHeadModel(cfg)
    if arch == "neox":
        cfg = transformers.GPTNeoXConfig(num_hidden_layers=LAYERS, hidden_size=D, num_attention_heads=HEADS,
                                         intermediate_size=4 * D, max_position_embeddings=32, **common)
        return transformers.GPTNeoXForCausalLM(cfg)
    cfg = transformers.LlamaConfig(num_hidden_layers=LAYERS, hidden_size=D, num_attention_heads=HEADS,
                                   num_key_value_heads=HEADS // 2, intermediate_size=2 * D,
                                   max_position_embeddings=32, tie_word_embeddings=True, **common)
    return transformers.LlamaForCausalLM(cfg)


def _corpus(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token 0 (BOS), then a Markov chain over tokens 2..50 (class 0, step 1) or 51..99 (class 1,
    step 7), with 20% uniform noise within the class's tokens: every token says its class, and a
    trained model writes it into the residual stream (linearly readable, for the probe)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    half = (VOCAB - 2) // 2
    low = 2 + labels * half
    step = torch.where(labels == 0, 1, 7)
    ids = torch.zeros(n, SEQ, dtype=torch.long)
    ids[:, 1] = low + torch.randint(0, half, (n,), generator=g)
    for t in range(2, SEQ):
        nxt = low + (ids[:, t - 1] - low + step) % half
        noise = torch.rand(n, generator=g) < 0.2
        ids[:, t] = torch.where(noise, low + torch.randint(0, half, (n,), generator=g), nxt)
    return ids, labels


def _task(ids: torch.Tensor, labels: torch.Tensor) -> interp.Task:
    import datasets

    mask = torch.ones_like(ids)
    mask[:, :2] = 0  # BOS and the first (uniform) token are not predictable
    n = len(ids) // 2
    split = {
        s: datasets.Dataset.from_dict({"input_ids": ids[r].tolist(), "target_mask": mask[r].tolist(),
                                       "label": labels[r].tolist()})
        for s, r in (("train", slice(0, n)), ("test", slice(n, None)))
    }
    return interp.Task("markov2", datasets.DatasetDict(split), description="two-class Markov chains")


def _tokenizer():
    """A word-level tokenizer over the words t0 … t99, built offline (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"t{i}": i for i in range(VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="t1"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="t0", eos_token="t0",
                                                unk_token="t1", pad_token="t0")


def _train(hf: torch.nn.Module, ids: torch.Tensor, steps: int = 80) -> tuple[float, float]:
    opt = torch.optim.AdamW(hf.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    hf.train()
    first = last = float("nan")
    for i in range(steps):
        batch = ids[torch.randint(0, len(ids), (32,), generator=g)]
        loss = hf(batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if i == 0 else first
        last = loss.item()
    hf.eval()
    return first, last


@pytest.fixture(scope="module", params=ARCHS)
def arch(request, tmp_path_factory):
    """(name, bridge, task, hf module, (first loss, last loss)) for one architecture."""
    torch.manual_seed(0)
    hf = _hf_model(request.param)
    ids, labels = _corpus(ROWS, seed=1)
    losses = _train(hf, ids)
    path = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(path)
    _tokenizer().save_pretrained(path)
    model = interp.load_model(path, device="cpu")
    return request.param, model, _task(ids, labels), hf, losses


# ------------------------------------------------------------------------------------ loading
def test_load_model_matches_the_trained_hf_module(arch):
    name, model, task, hf, (first, last) = arch
    assert last < first - 0.5, f"{name}: training did not lower the loss ({first:.2f} -> {last:.2f})"
    assert not model.training and model.cfg.n_layers == LAYERS
    ids = task.tensors("test", rows=4)["input_ids"]
    with torch.no_grad():
        assert torch.allclose(model(ids), hf(ids).logits, atol=1e-4)
    assert task.evaluate(model)["loss"] < math.log(VOCAB) - 0.5


# ------------------------------------------------------------------ parameter de-duplication
def test_parameter_selection_counts_each_weight_once_and_only_read_ones(arch):
    """Fused QKV and tied embeddings count once; every selected parameter gets a gradient.

    Before the fix, GPT-2's selection kept the fused ``c_attn`` (which the bridge never reads: it runs
    the q/k/v views), so SGLD saw no gradient on any attention QKV weight; GPT-NeoX's kept both the
    fused matrix and the bridge's split copies (6,336 extra, inert weights here).
    """
    name, model, task, hf, _ = arch
    sel = select_parameters(model)
    hf_unique = {p.untyped_storage().data_ptr(): p.numel() for p in hf.parameters()}
    assert sum(p.numel() for _, p, _ in sel) == sum(hf_unique.values()), name
    spans = [(p.untyped_storage().data_ptr(), p.storage_offset(), p.shape, p.stride()) for _, p, _ in sel]
    assert len(set(spans)) == len(spans)
    params = [p for _, p, _ in sel]
    loss = task.loss(model, task.tensors("train", rows=16, columns=("input_ids", "target_mask")))
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    unread = [n for (n, _, _), g in zip(sel, grads) if g is None]
    assert not unread, f"{name}: selected parameters the forward never reads: {unread}"
    if name == "gpt2":  # the q/k/v views of c_attn are selected, not the fused matrix
        qkv = [n for n, _, _ in sel if ".attn.q." in n or ".attn.k." in n or ".attn.v." in n]
        assert len(qkv) == 6 * LAYERS and not any(".qkv." in n for n, _, _ in sel)


def test_weight_noise_moves_every_weight_once_and_restores(arch):
    name, model, task, _, _ = arch
    before = _digest(model)
    sel = select_parameters(model)
    w0 = [p.detach().clone() for _, p, _ in sel]
    for draw in WeightNoise(sigma=0.01, draws_per_level=1, seed=0).draws(model, task, 0.01):
        moved = [(p.detach() - w).std().item() for (_, p, _), w in zip(sel, w0)]
        # every selected weight moved by ~σ (noise added twice would give ~σ√2 on shared storage)
        assert all(0.006 < m < 0.0125 for m in moved if m == m), (name, moved)
        assert math.isfinite(draw.loss)
    assert _digest(model) == before


# ------------------------------------------------------------------ hooks and analyses
def test_capture_and_ablations_restore(arch):
    name, model, task, _, _ = arch
    from analyses.ablation import HeadAblation

    before = _digest(model)
    ids = task.tensors("test", rows=8)["input_ids"]
    points = [hooks.resid_pre(0), hooks.attn_out(1), hooks.mlp_out(0), hooks.head_out(1, 0), hooks.mlp_in(1)]
    acts = hooks.capture(model, ids, points)
    assert acts[hooks.resid_pre(0)].shape == (8, SEQ, D) and acts[hooks.head_out(1, 0)].shape == (8, SEQ, D)
    clean = model(ids)
    a = HeadAblation(heads=[(1, 0), (1, 2)], eval_rows=64)
    a.setup(model, task)
    m = a(model, task)
    assert math.isfinite(m["loss_carried"]) and m["kl_claimed"] >= 0
    with hooks.apply(model, [hooks.zero_ablate(hooks.mlp_out(0))]):
        ablated = model(ids)
    assert (ablated - clean).abs().max() > 1e-3  # the MLP write matters
    with hooks.apply(model, [hooks.mean_ablate(hooks.mlp_out(1), acts[hooks.mlp_out(0)].mean(0) * 0)]):
        assert torch.allclose(model(ids), ablated, atol=1e3)  # runs; values checked above
    assert torch.equal(model(ids), clean)
    assert _digest(model) == before


def test_causal_scrubbing_with_an_mlp_node(arch):
    name, model, task, _, _ = arch
    from analyses.scrubbing import MLP, Agree, CausalScrubbing, Embed, Head, Hypothesis

    before = _digest(model)
    tok = Agree.token_at(0)
    hyp = Hypothesis([Embed(tok), MLP(0, tok, inputs=[Embed(tok)]), MLP(1, Agree.column("label"))],
                     name="mlps")
    if model.cfg.parallel_attn_mlp:  # GPT-NeoX: the MLP reads resid_pre; a clear error, before any work
        assert name == "neox"
        with pytest.raises(ValueError, match="parallel"):
            CausalScrubbing(hyp, eval_rows=64, seeds=1).setup(model, task)
        hyp = Hypothesis([Embed(tok), Head(1, 0, q=[Embed(tok)])], name="heads")  # heads still work
    a = CausalScrubbing(hyp, eval_rows=64, seeds=1)
    a.setup(model, task)
    m = a(model, task)
    assert math.isfinite(m["loss_scrubbed"]) and m["kl"] >= 0
    assert math.isfinite(m["recovered"]) or m["flag_ratio_unreliable"] == 1.0
    assert _digest(model) == before


def test_probing_and_norms(arch):
    name, model, task, _, _ = arch
    import analyses
    from analyses.probing import probe

    before = _digest(model)
    report = probe(model, task, label="label", positions=(-1,), eval_rows=96, control_type=None)
    assert float(report.accuracy.max()) > 0.8, (name, report.accuracy)
    norms = analyses.ResidualNorms(eval_rows=32)
    norms.setup(model, task)
    out = norms(model, task)
    assert all(math.isfinite(out[f"mean_L{l}"]) and out[f"mean_L{l}"] > 0 for l in range(LAYERS))
    assert out["post_ln"] == 0.0
    assert _digest(model) == before


def test_transcoder_on_one_mlp(arch):
    name, model, task, _, _ = arch
    from analyses.transcoders import SparseMLP

    before = _digest(model)
    a = SparseMLP(layer=1, transcoder=dict(n_latents=64, k=8, steps=60, batch_size=128, buffer_tokens=1024,
                                           rows_per_forward=64), refit_steps=5, eval_rows=64)
    a.setup(model, task)
    m = a(model, task)
    assert 0 <= a.clean_.fvu < 1, (name, a.clean_)
    assert math.isfinite(m["refit_kl"])
    assert _digest(model) == before


# ------------------------------------------------------------------ sweeps
def _sampler(**kw) -> TemperedPosterior:
    return TemperedPosterior(localization=100.0, chains=2, n_draws=2, burnin=4, batch_size=16, eval_rows=32,
                             progress=False, **kw)


def test_tempered_posterior_sweep_on_the_task_loss(arch, tmp_path):
    name, model, task, _, _ = arch
    import analyses
    from analyses.ablation import HeadAblation

    before = _digest(model)
    res = interp.run_sweep(model, task, [HeadAblation(heads=[(1, 0)], eval_rows=32), analyses.ResidualNorms(eval_rows=32)],
                           _sampler(), levels=[NBeta(50.0)], eval_rows=32, progress=False, out=tmp_path / "s")
    assert len(res.draws) == 4 and res.draws["loss"].notna().all(), res.draws
    assert _digest(model) == before


def test_tempered_posterior_sweep_on_the_behavioural_objective(arch, tmp_path):
    name, model, task, _, _ = arch
    import analyses
    from interp import objectives

    before = _digest(model)
    obj = objectives.Behavioural(task, rows=64)
    assert obj.kind == "kl"
    res = interp.run_sweep(model, task, [analyses.ResidualNorms(eval_rows=32)], _sampler(objective=obj),
                           levels=[NBeta(50.0)], eval_rows=32, progress=False, out=tmp_path / "b")
    assert len(res.draws) == 4 and res.draws["loss"].notna().all()
    # the draws were sampled on, and their loss measured in, the behavioural objective (0 at w0)
    assert set(res.draws["objective"]) == {obj.name} and set(res.draws["units"]) == {"KL nats/token"}
    assert (res.draws["loss"] > 0).all() and (res.draws["loss"] < 1.0).all()
    assert _digest(model) == before


def test_chains_stack_on_gpt2_and_give_the_sequential_draws(arch):
    """GPT-2 bridges run all chains in one hand-batched forward (the fast path); the other two
    architectures say why they cannot, and run chain by chain."""
    name, model, task, _, _ = arch
    from interp.degradations.stacked import StackedForward, unsupported_reason

    reason = unsupported_reason(model)
    if name != "gpt2":
        assert reason is not None and "GPT-2" in reason, reason
        assert not _sampler().vectorizes(model, task)
        return
    assert reason is None and _sampler().vectorizes(model, task)
    params = [p for _, p, _ in select_parameters(model)]
    ids = task.tensors("test", rows=4)["input_ids"]
    with torch.no_grad():
        W = [p.detach().expand(2, *p.shape) for p in params]
        assert torch.allclose(StackedForward(model, params)(W, ids)[1], model(ids), atol=1e-4)
    before = _digest(model)
    stacked = {(d.chain, d.draw): d.loss for d in _sampler(nbeta=50.0).draws(model, task)}
    sequential = {(d.chain, d.draw): d.loss for d in _sampler(nbeta=50.0, vectorize=False).draws(model, task)}
    assert stacked.keys() == sequential.keys()
    assert all(abs(stacked[k] - sequential[k]) < 1e-3 for k in stacked), (stacked, sequential)
    assert _digest(model) == before
