"""Tests for the ``hooks`` package on a native and a GPT-2-style (locally built) bridge.

MiniLM (BERT) tests live in ``test_hooks_minilm.py``. Shapes are checked at runtime with
jaxtyping + beartype on the public entry points (``checked(...)``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager

import pytest
import torch
from beartype import beartype
from jaxtyping import jaxtyped

import hooks
from hooks import Hook

D_VOCAB = 20


def checked(fn):
    """Runtime jaxtyping shape check of a public function."""
    return jaxtyped(typechecker=beartype)(fn)


@contextmanager
def _offline():
    old = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _native():
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    cfg = TransformerBridgeConfig(
        d_model=16, d_head=4, n_layers=2, n_ctx=16, n_heads=4, d_vocab=D_VOCAB, seed=0
    )
    return TransformerBridge.boot_native(cfg).eval()


def _gpt2():
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(
        GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=D_VOCAB, n_positions=32)
    ).eval()
    with _offline(), tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        return TransformerBridge.boot_transformers(d, hf_model=hf).eval()


_MODELS = {}


@pytest.fixture(scope="module", params=["native", "gpt2"])
def model(request):
    if request.param not in _MODELS:
        _MODELS[request.param] = _native() if request.param == "native" else _gpt2()
    m = _MODELS[request.param]
    yield m
    assert _n_hooks(m) == 0, "a test leaked hooks"


@pytest.fixture(scope="module")
def native():
    if "native" not in _MODELS:
        _MODELS["native"] = _native()
    return _MODELS["native"]


def _n_hooks(model) -> int:
    """All forward hooks on every hook point, as TL and as torch see them."""
    seen, n = set(), 0
    for hp in model.hook_dict.values():
        if id(hp) in seen:
            continue
        seen.add(id(hp))
        assert len(hp.fwd_hooks) == len(hp._forward_hooks), hp.name
        n += len(hp.fwd_hooks)
    return n


def _tokens(batch=3, pos=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, D_VOCAB, (batch, pos), generator=g)


def _run(model, tokens, hs=()):
    with torch.no_grad(), hooks.apply(model, hs):
        return model(tokens)


def _head_on_logits(model, resid):
    """Hand-computed tail of the model: final LayerNorm and unembedding of a residual."""
    with torch.no_grad():
        return model.unembed(model.ln_final(resid))


# --------------------------------------------------------------------------------------------
# import, Hook


def test_import_is_fast_and_lazy():
    code = (
        "import time, sys, torch; t = time.perf_counter(); import hooks; "
        "dt = time.perf_counter() - t; print(dt, 'transformer_lens' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    dt, tl = out.stdout.split()
    assert float(dt) < 0.3
    assert tl == "False"


def test_hook_is_frozen_and_validated():
    h = Hook("blocks.0.hook_resid_pre", lambda x: None)
    with pytest.raises(AttributeError):
        h.point = "x"  # type: ignore[misc]
    with pytest.raises(ValueError, match="non-empty str"):
        Hook("", lambda x: None)
    with pytest.raises(ValueError, match="callable"):
        Hook("blocks.0.hook_resid_pre", 3)  # type: ignore[arg-type]


def test_hook_signature_decided_once():
    def tl_style(activation, hook):
        return None

    def tl_keyword(activation, *, hook):
        return None

    assert Hook("blocks.0.hook_resid_pre", lambda x: None).style == "activation"
    assert Hook("blocks.0.hook_resid_pre", tl_style).style == "keyword"
    assert Hook("blocks.0.hook_resid_pre", tl_keyword).style == "keyword"
    assert Hook("blocks.0.hook_resid_pre", lambda x, h: None).style == "positional"
    assert Hook("blocks.0.hook_resid_pre", lambda x, hook=None: None).style == "keyword"
    assert Hook("blocks.0.hook_resid_pre", torch.relu).style in ("activation", "keyword")
    for bad in (lambda: None, lambda x, y, z: None, lambda *, hook: None):
        with pytest.raises(ValueError, match=r"fn\(activation\) or, TransformerLens style, fn\(activation, hook\)"):
            Hook("blocks.0.hook_resid_pre", bad)


@pytest.mark.parametrize("point", ["mlp_out", "head_out"])
def test_transformer_lens_style_functions(model, point):
    """fn(activation, hook) returning a tensor, and editing in place and returning None (as TL users
    write them) give the same output as the one-argument form; ``hook`` is the firing HookPoint."""
    p = hooks.mlp_out(1) if point == "mlp_out" else hooks.head_out(1, 2)
    toks = _tokens()
    expected = _run(model, toks, [Hook(p, lambda x: torch.zeros_like(x))])
    names = []

    def returns(activation, hook):
        names.append(hook.name)
        return torch.zeros_like(activation)

    def in_place(activation, hook):
        activation[:] = 0.0

    assert torch.equal(_run(model, toks, [Hook(p, returns)]), expected)
    assert names and all(isinstance(n, str) and n.startswith("blocks.1.") for n in names)
    assert torch.equal(_run(model, toks, [Hook(p, in_place)]), expected)
    assert not torch.equal(_run(model, toks), expected)  # and nothing stays behind


def test_in_place_edit_at_discarded_point_raises(native):
    def in_place(activation, hook):
        activation += 1.0

    with pytest.raises(hooks.EditIgnoredError, match="discarded"):
        _run(native, _tokens(), [Hook("blocks.0.attn.hook_attn_scores", in_place)])
    assert _n_hooks(native) == 0


def test_helpers_names():
    assert hooks.resid_pre(0) == "blocks.0.hook_resid_pre"
    assert hooks.resid_mid(1) == "blocks.1.hook_resid_mid"
    assert hooks.resid_post(1) == "blocks.1.hook_resid_post"
    assert hooks.attn_out(0) == "blocks.0.hook_attn_out"
    assert hooks.mlp_in(0) == "blocks.0.mlp.hook_in"
    assert hooks.mlp_out(0) == "blocks.0.hook_mlp_out"
    assert hooks.head_out(1, 2) == "blocks.1.attn.hook_result[2]"
    assert hooks.head_out(1) == "blocks.1.attn.hook_result"
    with pytest.raises(hooks.PointError):
        hooks.resid_pre(-1)


# --------------------------------------------------------------------------------------------
# point resolution and errors


@pytest.mark.parametrize(
    "point",
    [
        hooks.resid_pre(1), hooks.resid_mid(1), hooks.resid_post(1), hooks.attn_out(1),
        hooks.mlp_in(1), hooks.mlp_out(1), hooks.mlp_post(0), hooks.attn_z(0),
        hooks.attn_pattern(0), hooks.head_out(1, 3), hooks.head_out(0), hooks.embed(),
        hooks.logits(),
    ],
)
def test_helpers_resolve(model, point):
    res = hooks.resolve(model, point)
    assert res.name in model.hook_dict


def test_unknown_point_lists_closest(model):
    with pytest.raises(hooks.PointError, match=r"closest valid names: 'blocks\.0\.hook_resid_pre'"):
        hooks.resolve(model, "blocks.0.hook_resid_pr")
    with pytest.raises(hooks.PointError, match="out of range"):
        hooks.resolve(model, hooks.resid_pre(7))
    with pytest.raises(hooks.PointError, match="head 9 out of range"):
        hooks.resolve(model, hooks.head_out(0, 9))
    with pytest.raises(hooks.PointError, match=r"gated off.*set_use_split_qkv_input\(True\)"):
        hooks.resolve(model, "blocks.0.attn.hook_q_input")
    # TL's per-head hook is gated off by default; the same name is served from hook_z and W_O
    assert hooks.resolve(model, "blocks.0.attn.hook_result").per_head
    assert isinstance(hooks.PointError("x"), ValueError)


def test_bad_name_registers_nothing(model):
    before = _n_hooks(model)
    with pytest.raises(hooks.PointError):
        with hooks.apply(model, [Hook(hooks.resid_pre(0), lambda x: None), Hook("nope", lambda x: None)]):
            pass  # pragma: no cover
    assert _n_hooks(model) == before
    with pytest.raises(hooks.PointError, match="closest valid names"):
        hooks.capture(model, _tokens(), ["blocks.1.hook_mlp_outt"])
    assert _n_hooks(model) == before


# --------------------------------------------------------------------------------------------
# apply: exact removal, exceptions, interrupts, user hooks, nesting


def test_apply_removes_exactly_its_hooks(model):
    toks = _tokens()
    clean = _run(model, toks)
    with hooks.apply(model, [hooks.zero_ablate(hooks.mlp_out(0)), hooks.zero_ablate(hooks.head_out(1, 0))]) as m:
        assert m is model
        assert _n_hooks(model) == 3  # one for mlp_out, two for the per-head point
        assert not torch.equal(model(toks), clean)
    assert _n_hooks(model) == 0
    assert torch.equal(_run(model, toks), clean)


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_nothing_leaks_after_exception_in_hook(model, exc):
    toks = _tokens()
    clean = _run(model, toks)

    def boom(x):
        raise exc("inside hook")

    with pytest.raises(exc, match="inside hook"):
        with hooks.apply(model, [hooks.steer(hooks.resid_pre(0), torch.ones(model.cfg.d_model)), Hook(hooks.mlp_out(1), boom)]):
            model(toks)
    assert _n_hooks(model) == 0
    assert torch.equal(_run(model, toks), clean)


def test_nothing_leaks_after_exception_in_body(model):
    with pytest.raises(KeyboardInterrupt):
        with hooks.apply(model, [hooks.zero_ablate(hooks.resid_post(0))]):
            raise KeyboardInterrupt
    assert _n_hooks(model) == 0


def test_user_hooks_survive(model):
    toks = _tokens()
    calls = {"perma": 0, "user": 0, "hp": 0}

    def count(key):
        def fn(x, hook):
            calls[key] += 1

        return fn

    name = "blocks.0.hook_resid_post"
    model.add_perma_hook(name, count("perma"))
    model.add_hook(name, count("user"))
    hp = hooks.resolve(model, name).hook_point
    hp.add_hook(count("hp"), level=1)  # same level TL's own first context would use
    try:
        n0 = _n_hooks(model)
        with hooks.apply(model, [hooks.zero_ablate(name)]):
            # TL's own contexts inside ours neither remove ours nor theirs
            model.run_with_cache(toks, names_filter=[name])
            with model.hooks(fwd_hooks=[(name, lambda x, hook: None)]):
                model(toks)
            assert _n_hooks(model) == n0 + 1
        assert _n_hooks(model) == n0
        model(toks)
        assert calls == {"perma": 3, "user": 3, "hp": 3}  # three forwards
    finally:
        model.reset_hooks(including_permanent=True)
    assert _n_hooks(model) == 0


def test_tl_context_outside_survives_ours(model):
    toks = _tokens()
    name = hooks.resid_post(0)
    seen = []
    with model.hooks(fwd_hooks=[(name, lambda x, hook: seen.append(1))]):
        with hooks.apply(model, [hooks.zero_ablate(name)]):
            model(toks)
        model(toks)
    assert len(seen) == 2
    assert _n_hooks(model) == 0


def test_nested_apply_composes_and_restores(model):
    toks = _tokens()
    d = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(1))
    outer_h = [hooks.steer(hooks.resid_pre(1), d, 2.0)]
    inner_h = [hooks.zero_ablate(hooks.mlp_out(1))]
    clean = _run(model, toks)
    outer_only = _run(model, toks, outer_h)
    both = _run(model, toks, outer_h + inner_h)
    with torch.no_grad(), hooks.apply(model, outer_h):
        with hooks.apply(model, inner_h):
            assert torch.allclose(model(toks), both)
        assert torch.allclose(model(toks), outer_only)
    assert torch.equal(_run(model, toks), clean)
    # same point, nested: hooks run outer first, then inner
    p = hooks.resid_pre(1)
    with hooks.apply(model, [Hook(p, lambda x: x * 2)]), hooks.apply(model, [Hook(p, lambda x: x + 1)]):
        got = hooks.capture(model, toks, [p])[p]
    ref = hooks.capture(model, toks, [p])[p]
    assert torch.allclose(got, ref * 2 + 1)


def test_apply_context_single_use(model):
    ctx = hooks.apply(model, [hooks.zero_ablate(hooks.resid_pre(0))])
    with ctx:
        pass
    with pytest.raises(RuntimeError, match="already entered"):
        with ctx:
            pass  # pragma: no cover
    assert _n_hooks(model) == 0


def test_hook_returning_wrong_shape_raises(model):
    with pytest.raises(ValueError, match="same shape"):
        with hooks.apply(model, [Hook(hooks.resid_pre(0), lambda x: x[:, :1])]):
            model(_tokens())
    assert _n_hooks(model) == 0


# --------------------------------------------------------------------------------------------
# guard: edits the bridge would discard raise


def test_ignored_edit_raises_on_native(native):
    toks = _tokens()
    p = "blocks.0.attn.hook_attn_scores"
    with pytest.raises(hooks.EditIgnoredError, match="discarded"):
        with hooks.apply(native, [Hook(p, lambda x: x + 1.0)]):
            native(toks)
    assert _n_hooks(native) == 0
    with hooks.apply(native, [Hook(p, lambda x: None), Hook(p, lambda x: x)]):  # reads are fine
        native(toks)
    with pytest.raises(hooks.EditIgnoredError):
        with hooks.apply(native, [hooks.zero_ablate(p)]):
            native(toks)
    assert _n_hooks(native) == 0


def test_edit_of_pattern_takes_effect_on_native(native):
    # native bridges do use an edited pattern: no error, and the output changes
    toks = _tokens()
    clean = _run(native, toks)
    edited = _run(native, toks, [hooks.zero_ablate(hooks.attn_pattern(1))])
    assert not torch.allclose(clean, edited)


# --------------------------------------------------------------------------------------------
# capture


def test_capture_matches_run_with_cache(model):
    toks = _tokens()
    pts = [hooks.resid_pre(0), hooks.resid_mid(1), hooks.mlp_out(0), hooks.attn_z(1), hooks.attn_pattern(0)]
    got = checked(hooks.capture)(model, toks, pts)
    names = [hooks.resolve(model, p).name for p in pts]
    _, cache = model.run_with_cache(toks, names_filter=names)
    assert list(got) == pts
    for p, n in zip(pts, names):
        torch.testing.assert_close(got[p], cache[n])
        assert not got[p].requires_grad
    full = hooks.capture(model, toks, pts, stop_early=False)
    for p in pts:
        assert torch.equal(full[p], got[p])


def test_capture_selection_and_device(model):
    toks = _tokens(batch=4, pos=6)
    p, pat = hooks.resid_post(0), hooks.attn_pattern(1)
    full = hooks.capture(model, toks, [p, pat])
    sel = hooks.capture(model, toks, [p, pat], batch=[0, 2], pos=-1, device="cpu")
    assert sel[p].shape == (2, 1, model.cfg.d_model)
    torch.testing.assert_close(sel[p], full[p][[0, 2]][:, -1:])
    # patterns [batch, head, q, k]: pos picks query positions
    torch.testing.assert_close(sel[pat], full[pat][[0, 2]][:, :, -1:])
    sl = hooks.capture(model, toks, [p], pos=slice(1, 3), batch=torch.tensor([3]))
    torch.testing.assert_close(sl[p], full[p][3:4, 1:3])
    assert sel[p].device.type == "cpu"


def test_capture_keeps_graph_when_not_detached(model):
    toks = _tokens()
    p = hooks.resid_post(1)
    acts = hooks.capture(model, toks, [p], detach=False)
    assert acts[p].requires_grad
    acts[p].sum().backward()
    assert any(q.grad is not None for q in model.parameters())
    model.zero_grad(set_to_none=True)


def test_capture_point_that_never_fires(native):
    with pytest.raises(RuntimeError, match="never fired"):
        hooks.capture(native, _tokens(), ["blocks.0.attn.hook_hidden_states"], stop_early=False)
    assert _n_hooks(native) == 0


def test_head_out_sums_to_attn_out(model):
    toks = _tokens()
    L = 1
    acts = checked(hooks.capture)(model, toks, [hooks.head_out(L), hooks.head_out(L, 2), hooks.attn_out(L)])
    heads = acts[hooks.head_out(L)]
    assert heads.shape == (3, 6, model.cfg.n_heads, model.cfg.d_model)
    b_o = model.blocks[L].attn.b_O.detach()
    torch.testing.assert_close(heads.sum(2) + b_o, acts[hooks.attn_out(L)], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(heads[:, :, 2], acts[hooks.head_out(L, 2)])


def test_capture_under_apply_sees_edit(model):
    toks = _tokens()
    p = hooks.mlp_out(0)
    with hooks.apply(model, [hooks.zero_ablate(p)]):
        acts = hooks.capture(model, toks, [p])
    assert acts[p].abs().max() == 0


# --------------------------------------------------------------------------------------------
# interventions: each changes exactly what it should


def test_zero_ablate_last_mlp_matches_hand_computed(model):
    toks = _tokens()
    L = model.cfg.n_layers - 1
    clean = hooks.capture(model, toks, [hooks.resid_mid(L)])
    ablated = _run(model, toks, [hooks.zero_ablate(hooks.mlp_out(L))])
    expected = _head_on_logits(model, clean[hooks.resid_mid(L)])
    torch.testing.assert_close(ablated, expected, atol=1e-5, rtol=1e-5)


def test_zero_ablate_positions_only(model):
    toks = _tokens()
    p = hooks.resid_post(0)
    clean = hooks.capture(model, toks, [p])[p]
    with hooks.apply(model, [hooks.zero_ablate(p, pos=[1, 3])]):
        got = hooks.capture(model, toks, [p])[p]
    assert got[:, [1, 3]].abs().max() == 0
    keep = [0, 2, 4, 5]
    assert torch.equal(got[:, keep], clean[:, keep])


def test_head_ablation_exact(model):
    toks = _tokens()
    L, h = 0, 1
    clean = hooks.capture(model, toks, [hooks.head_out(L, h), hooks.attn_out(L), hooks.resid_mid(L)])
    with hooks.apply(model, [hooks.zero_ablate(hooks.head_out(L, h))]):
        got = hooks.capture(model, toks, [hooks.attn_out(L), hooks.resid_mid(L)])
    expected = clean[hooks.attn_out(L)] - clean[hooks.head_out(L, h)]
    torch.testing.assert_close(got[hooks.attn_out(L)], expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(
        got[hooks.resid_mid(L)], clean[hooks.resid_mid(L)] - clean[hooks.head_out(L, h)], atol=1e-6, rtol=1e-5
    )
    # same as zeroing that head's z
    via_z = _run(model, toks, [hooks.zero_ablate(hooks.attn_z(L), heads=[h])])
    via_out = _run(model, toks, [hooks.zero_ablate(hooks.head_out(L, h))])
    torch.testing.assert_close(via_z, via_out, atol=1e-5, rtol=1e-5)


def test_mean_ablate(model):
    ref, toks = _tokens(batch=8, seed=1), _tokens()
    p = hooks.resid_pre(1)
    mean = hooks.capture(model, ref, [p])[p].mean(0)
    clean = hooks.capture(model, toks, [p])[p]
    with hooks.apply(model, [checked(hooks.mean_ablate)(p, mean, pos=slice(0, 2))]):
        got = hooks.capture(model, toks, [p])[p]
    torch.testing.assert_close(got[:, :2], mean[:2].expand(3, -1, -1))
    assert torch.equal(got[:, 2:], clean[:, 2:])
    with pytest.raises(ValueError, match="does not broadcast"):
        with hooks.apply(model, [hooks.mean_ablate(p, torch.zeros(5))]):
            model(toks)
    assert _n_hooks(model) == 0


def _row_sources(got, clean):
    """For each row of ``got``, the set of rows of ``clean`` it equals."""
    return [{j for j in range(clean.shape[0]) if torch.equal(got[i], clean[j])} for i in range(got.shape[0])]


def test_resample_within_batch(model):
    toks = _tokens(batch=4)
    p = hooks.resid_post(0)
    clean = hooks.capture(model, toks, [p])[p]
    with hooks.apply(model, [checked(hooks.resample_ablate)(p, seed=3)]):
        got = hooks.capture(model, toks, [p])[p]
    for i, src in enumerate(_row_sources(got, clean)):
        assert len(src) == 1 and i not in src
    # per position: every (row, pos) from another row at the same position
    with hooks.apply(model, [hooks.resample_ablate(p, per="position", seed=4)]):
        got = hooks.capture(model, toks, [p])[p]
    for i in range(4):
        for t in range(clean.shape[1]):
            donors = {j for j in range(4) if torch.equal(got[i, t], clean[j, t])}
            assert donors and i not in donors
    with pytest.raises(ValueError, match="no other row"):
        with hooks.apply(model, [hooks.resample_ablate(p)]):
            model(toks[:1])
    assert _n_hooks(model) == 0


def test_resample_from_source_per_head(model):
    toks, src_toks = _tokens(batch=3), _tokens(batch=5, seed=7)
    z = hooks.attn_z(1)
    src = hooks.capture(model, src_toks, [z])[z]
    clean = hooks.capture(model, toks, [z])[z]
    with hooks.apply(model, [hooks.resample_ablate(z, source=src, per="head", heads=[0, 2], seed=0)]):
        got = hooks.capture(model, toks, [z])[z]
    for i in range(3):
        for h in (0, 2):
            assert any(torch.equal(got[i, :, h], src[j, :, h]) for j in range(5))
        for h in (1, 3):
            assert torch.equal(got[i, :, h], clean[i, :, h])
    with pytest.raises(ValueError, match="head axis"):
        with hooks.apply(model, [hooks.resample_ablate(hooks.resid_pre(0), per="head")]):
            model(toks)
    with pytest.raises(ValueError, match="per must be"):
        hooks.resample_ablate(z, per="row")  # type: ignore[arg-type]


def test_patch_restores_clean_run(model):
    clean_t, corrupt_t = _tokens(seed=1), _tokens(seed=2)
    p = hooks.resid_pre(1)
    cache = hooks.capture(model, clean_t, [p])
    clean_logits = _run(model, clean_t)
    patched = _run(model, corrupt_t, [checked(hooks.patch)(p, cache)])
    torch.testing.assert_close(patched, clean_logits, atol=1e-5, rtol=1e-5)
    # patch one position only: other positions keep the corrupt activation
    corrupt = hooks.capture(model, corrupt_t, [p])[p]
    with hooks.apply(model, [hooks.patch(p, cache[p], pos=[2])]):
        got = hooks.capture(model, corrupt_t, [p])[p]
    assert torch.equal(got[:, 2], cache[p][:, 2])
    assert torch.equal(got[:, [0, 1, 3, 4, 5]], corrupt[:, [0, 1, 3, 4, 5]])
    with pytest.raises(ValueError, match="no entry"):
        hooks.patch(hooks.resid_pre(0), cache)


def test_patch_head_output_from_source(model):
    clean_t, corrupt_t = _tokens(seed=1), _tokens(seed=2)
    L, h = 1, 3
    pt = hooks.head_out(L, h)
    src = hooks.capture(model, clean_t, [pt])
    corrupt = hooks.capture(model, corrupt_t, [pt, hooks.attn_out(L)])
    with hooks.apply(model, [hooks.patch(pt, src)]):
        got = hooks.capture(model, corrupt_t, [hooks.attn_out(L)])
    expected = corrupt[hooks.attn_out(L)] - corrupt[pt] + src[pt]
    torch.testing.assert_close(got[hooks.attn_out(L)], expected, atol=1e-5, rtol=1e-5)


def test_steer_matches_hand_computed(model):
    toks = _tokens()
    L = model.cfg.n_layers - 1
    p = hooks.resid_post(L)
    d = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(5))
    clean = hooks.capture(model, toks, [p])[p]
    got = _run(model, toks, [checked(hooks.steer)(p, d, 3.0, pos=[0, 5])])
    resid = clean.clone()
    resid[:, [0, 5]] += 3.0 * d
    torch.testing.assert_close(got, _head_on_logits(model, resid), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="1-d"):
        hooks.steer(p, torch.ones(2, 2))


def test_project_out(model):
    toks = _tokens()
    p = hooks.resid_pre(1)
    g = torch.Generator().manual_seed(2)
    basis = torch.randn(2, model.cfg.d_model, generator=g)
    basis = torch.cat([basis, basis[:1] * 2])  # rank-deficient input is fine
    clean = hooks.capture(model, toks, [p])[p]
    with hooks.apply(model, [checked(hooks.project_out)(p, basis)]):
        got = hooks.capture(model, toks, [p])[p]
    assert (got @ basis.T).abs().max() < 1e-4
    q = hooks.orthonormal_basis(basis)
    assert q.shape == (model.cfg.d_model, 2)
    torch.testing.assert_close(clean - got, (clean @ q) @ q.T, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="not all zero"):
        hooks.project_out(p, torch.zeros(3))


def _dense_mlp(model, layer):
    mlp = model.blocks[layer].mlp.original_component
    assert mlp is not None
    return mlp


def test_splice(model):
    toks = _tokens()
    L = 1
    clean = _run(model, toks)
    mlp = _dense_mlp(model, L)
    # splicing in the dense MLP itself changes nothing
    same = _run(model, toks, [hooks.splice(hooks.mlp_out(L), hooks.mlp_in(L), mlp)])
    torch.testing.assert_close(same, clean, atol=1e-5, rtol=1e-5)
    # splicing zeros equals zero-ablation
    zero = _run(model, toks, [hooks.splice(hooks.mlp_out(L), hooks.mlp_in(L), torch.zeros_like)])
    torch.testing.assert_close(zero, _run(model, toks, [hooks.zero_ablate(hooks.mlp_out(L))]))
    # a linear replacement: output equals hand-computed tail
    lin = torch.nn.Linear(model.cfg.d_model, model.cfg.d_model)
    acts = hooks.capture(model, toks, [hooks.mlp_in(L), hooks.resid_mid(L)])
    got = _run(model, toks, [hooks.splice(hooks.mlp_out(L), hooks.mlp_in(L), lin)])
    with torch.no_grad():
        resid = acts[hooks.resid_mid(L)] + lin(acts[hooks.mlp_in(L)])
    torch.testing.assert_close(got, _head_on_logits(model, resid), atol=1e-5, rtol=1e-5)
    # error node: value unchanged, gradient reaches the replacement
    with hooks.apply(model, [hooks.splice(hooks.mlp_out(L), hooks.mlp_in(L), lin, error_node=True)]):
        out = model(toks)
    torch.testing.assert_close(out.detach(), clean, atol=1e-5, rtol=1e-5)
    out.sum().backward()
    assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)
    # wrong order: target before source
    with pytest.raises(RuntimeError, match="did not fire before"):
        with hooks.apply(model, [hooks.splice(hooks.mlp_out(0), hooks.mlp_in(1), lin)]):
            model(toks)
    assert _n_hooks(model) == 0


def test_splice_at_positions(model):
    """positions=: replace only there (negative from the end), fn sees the source at those positions."""
    toks = _tokens()
    L = 1
    lin = torch.nn.Linear(model.cfg.d_model, model.cfg.d_model)
    acts = hooks.capture(model, toks, [hooks.mlp_in(L), hooks.resid_mid(L), hooks.mlp_out(L)])
    shapes = []

    def fn(s):
        shapes.append(tuple(s.shape))
        return lin(s)

    got = _run(model, toks, [hooks.splice(hooks.mlp_out(L), hooks.mlp_in(L), fn, positions=(1, -1))])
    assert shapes == [(toks.shape[0], 2, model.cfg.d_model)]
    with torch.no_grad():
        y = acts[hooks.mlp_out(L)].clone()
        y[:, [1, -1]] = lin(acts[hooks.mlp_in(L)][:, [1, -1]])
        expected = _head_on_logits(model, acts[hooks.resid_mid(L)] + y)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    with hooks.apply(model, [hooks.splice(hooks.mlp_out(L), hooks.mlp_in(L), lin, error_node=True, positions=(0,))]):
        out = model(toks)
    torch.testing.assert_close(out.detach(), _run(model, toks), atol=1e-5, rtol=1e-5)
    out.sum().backward()
    assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)
    for bad in ((), "all", (1.5,)):
        with pytest.raises(ValueError, match="positions must be a non-empty sequence of ints"):
            hooks.splice(hooks.mlp_out(L), hooks.mlp_in(L), lin, positions=bad)
    with pytest.raises(ValueError, match="outside sequences of length"):
        _run(model, toks, [hooks.splice(hooks.mlp_out(L), hooks.mlp_in(L), lin, positions=(99,))])
    assert _n_hooks(model) == 0


@pytest.mark.parametrize(
    "module", ["hooks", "hooks._points", "hooks._hook", "hooks._capture", "hooks._interventions"]
)
def test_docstring_examples_run(module):
    import doctest
    import importlib

    mod = importlib.import_module(module)
    assert mod.__doc__ and "Example" in mod.__doc__
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_per_head_output_under_the_transformerlens_name(tiny):
    """``hook_result`` (all heads, TransformerLens' name) and ``hook_result[h]`` are two spellings of
    one capture: either is found when the other was captured."""
    model, task = tiny
    ids = task.tensors("test", rows=2)["input_ids"]
    per_head = hooks.capture(model, ids, [hooks.head_out(0, h) for h in range(model.cfg.n_heads)])
    whole = hooks.capture(model, ids, [hooks.head_out(0)])
    assert torch.allclose(per_head["blocks.0.attn.hook_result"], whole["blocks.0.attn.hook_result"], atol=1e-6)
    assert torch.allclose(whole["blocks.0.attn.hook_result[1]"], per_head["blocks.0.attn.hook_result[1]"], atol=1e-6)
    with pytest.raises(KeyError, match=r"'blocks.1.attn.hook_result' was not captured.*hooks.head_out\(1\)"):
        per_head["blocks.1.attn.hook_result"]
