"""Several weight sets of a native TransformerBridge in one batched forward: the fast SGLD path.

SGLD chains do not interact, so C chains of one model can share every kernel launch: stack each
parameter along a leading chain axis (``[C, ...]``) and run one forward on ``[C, batch, pos]``.
``torch.func.vmap`` over the bridge does this generically but was measured no faster than running
chains one after another (its per-op batching overhead eats the gain on small models), and
``functional_call`` on a bridge has pitfalls (its hook points and aliased, fused parameters). So for the bridge family the organisms
use (``TransformerBridge.boot_native``: pre-LN blocks, LayerNorm or none, learned absolute positions,
causal multi-head attention, plain or no MLP) this module writes the forward out by hand with the
chain axis explicit:

    x = E[ids] + P[:T];  per block:  x += Attn(LN1(x)),  x += W_out·act(W_in·LN2(x) + b_in) + b_out
    logits = LN_f(x)·W_Uᵀ + b_U

with the attention through ``scaled_dot_product_attention`` (one fused kernel per layer for all
chains, heads and rows). Parameters the sampler does not move enter without a chain axis.

The same forward covers Hugging Face GPT-2 bridges (``interp.load_model`` of a GPT-2 checkpoint:
the same pre-LN architecture, with ``Conv1D`` projections stored ``[in, out]``, GELU (tanh), scores
divided by √d_head, the unembedding tied to the token embedding, and q/k/v read from the bridge's
views of the fused ``c_attn``). Anything outside that family (rotary, GQA, gated MLPs, parallel
attention and MLP, soft-caps, padding masks, other HF-wrapped models) is reported by
:func:`unsupported_reason` and the sampler runs chains through the bridge itself. Equality with
the bridge is checked on the model at hand before use (logits and gradients at w0,
``_Engine._vmap_agrees``), so a mismatch can only slow sampling down, never change it.

Example::

    >>> import torch, interp
    >>> model, task = interp.organisms.load("induction")
    >>> params = [p for p in model.parameters()]
    >>> fwd = StackedForward(model, params)
    >>> ids = task.tensors("test", rows=4)["input_ids"]
    >>> W = [p.detach().expand(2, *p.shape) for p in params]
    >>> torch.allclose(fwd(W, ids)[1], model(ids), atol=1e-4)
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int

__all__ = ["StackedForward", "unsupported_reason"]

_ACTS = {"relu": F.relu, "gelu": F.gelu, "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
         "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"), "silu": F.silu}


def _inner(module: torch.nn.Module) -> torch.nn.Module:
    """The plain torch module inside a bridge component (or the module itself)."""
    return getattr(module, "_original_component", module)


def _gpt2_reason(model: Any, om: Any) -> str | None:
    """Why a Hugging Face GPT-2 bridge is outside the stacked family (``None``: inside it)."""
    hf = om.config
    checks = {
        "activation_function": (hf.activation_function in _ACTS, True),
        "scale_attn_weights": (bool(hf.scale_attn_weights), True),
        "scale_attn_by_inverse_layer_idx": (bool(hf.scale_attn_by_inverse_layer_idx), False),
        "reorder_and_upcast_attn": (bool(hf.reorder_and_upcast_attn), False),
        "add_cross_attention": (bool(getattr(hf, "add_cross_attention", False)), False),
    }
    for name, (value, allowed) in checks.items():
        if value != allowed:
            return f"GPT-2 config.{name}={getattr(hf, name, None)!r}"
    if any(hp._forward_hooks or hp._forward_pre_hooks for hp in model.hook_dict.values()):
        return "hooks are attached to the model"
    return None


def unsupported_reason(model: Any) -> str | None:
    """Why :class:`StackedForward` cannot compute ``model`` (``None``: it can)."""
    om = getattr(model, "original_model", None)
    if om is not None and type(om).__name__ == "GPT2LMHeadModel" and hasattr(model, "hook_dict"):
        return _gpt2_reason(model, om)
    if om is None:
        return "not a native TransformerBridge"
    if type(om).__name__ != "NativeModel":
        return f"a Hugging Face {type(om).__name__} bridge (stacked chains cover native and GPT-2 bridges)"
    cfg = model.cfg
    checks = {
        "positional_embedding_type": (cfg.positional_embedding_type, ("standard",)),
        "normalization_type": (cfg.normalization_type, ("LN", None)),
        "gated_mlp": (bool(getattr(cfg, "gated_mlp", False)), (False,)),
        "attention_dir": (getattr(cfg, "attention_dir", "causal"), ("causal",)),
        "n_key_value_heads": (getattr(cfg, "n_key_value_heads", None), (None, cfg.n_heads)),
        "final_rms": (bool(getattr(cfg, "final_rms", False)), (False,)),
    }
    for name, (value, allowed) in checks.items():
        if value not in allowed:
            return f"cfg.{name}={value!r}"
    if not cfg.attn_only and (cfg.act_fn or "gelu").lower() not in _ACTS:
        return f"cfg.act_fn={cfg.act_fn!r}"
    for layer in om.layers:
        att = _inner(_inner(layer).attn)
        if float(getattr(att, "attn_scores_soft_cap", 0.0) or 0.0) > 0 or getattr(att, "rotary", None) is not None:
            return "attention soft-cap or rotary embeddings"
    if float(getattr(om, "output_logits_soft_cap", 0.0) or 0.0) > 0:
        return "output logit soft-cap"
    if any(hp._forward_hooks or hp._forward_pre_hooks for hp in model.hook_dict.values()):
        return "hooks are attached to the model"
    return None


class StackedForward:
    """``(W, ids) -> logits[C, batch, pos, vocab]`` for C stacked copies of the sampled parameters.

    Args:
        model: a native ``TransformerBridge`` (see :func:`unsupported_reason`).
        params: the parameters being sampled, in the order of the stacked list ``W`` passed to
            ``__call__`` (``W[i]: [C, *params[i].shape]``); every other parameter or buffer is used
            as it is in the model.
    """

    def __init__(self, model: Any, params: Sequence[torch.Tensor]) -> None:
        reason = unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"StackedForward cannot compute this model: {reason}.")
        self.cfg = model.cfg
        self._slot = {id(p): i for i, p in enumerate(params)}
        om = model.original_model
        if type(om).__name__ == "GPT2LMHeadModel":
            self._init_gpt2(om)
            return
        self.embed, self.pos = _inner(om.tok_embed).weight, _inner(om.pos).weight
        self.blocks = []
        for layer in om.layers:
            blk = _inner(layer)
            att = _inner(blk.attn)
            b = {"ln1": _inner(blk.ln1), "scale": float(att.scale),
                 "qkvo": [_inner(getattr(att, n)) for n in "qkvo"]}
            if not self.cfg.attn_only:
                mlp = _inner(blk.mlp)
                b["ln2"], b["mlp"] = _inner(blk.ln2), (_inner(mlp.fc_in), _inner(mlp.fc_out))
                b["act"] = _ACTS[(self.cfg.act_fn or "gelu").lower()]
            self.blocks.append(b)
        self.ln_f, self.head = _inner(om.ln_out), _inner(om.head)

    def _init_gpt2(self, om: Any) -> None:
        """The same pieces from a Hugging Face GPT-2 bridge: the bridge's q/k/v ``Linear``s (views
        of the fused ``c_attn``, the weights its forward reads), ``Conv1D`` output and MLP
        projections (weight ``[in, out]``), GELU (tanh), scores divided by √d_head, tied unembedding."""
        tr = om.transformer
        self.embed, self.pos = _inner(tr.wte).weight, _inner(tr.wpe).weight
        act = _ACTS[om.config.activation_function]
        self.blocks = []
        for layer in tr.h:
            blk = _inner(layer)
            att, mlp = blk.attn, blk.mlp
            self.blocks.append({
                "ln1": _inner(blk.ln_1), "scale": math.sqrt(self.cfg.d_head),
                "qkvo": [_inner(getattr(att, n)) for n in "qkvo"],
                "ln2": _inner(blk.ln_2), "mlp": (_inner(getattr(mlp, "in")), _inner(mlp.out)), "act": act,
            })
        self.ln_f, self.head = _inner(tr.ln_f), _inner(om.lm_head)

    def _get(self, t: torch.Tensor | None, W: Sequence[torch.Tensor]) -> torch.Tensor | None:
        """The stacked ``[C, ...]`` version of ``t`` if it is sampled, else ``t`` itself."""
        if t is None:
            return None
        i = self._slot.get(id(t))
        return t if i is None else W[i]

    def _linear(self, x: torch.Tensor, lin: torch.nn.Linear, W: Sequence[torch.Tensor]) -> torch.Tensor:
        w, b = self._get(lin.weight, W), self._get(lin.bias, W)
        C = x.shape[0]
        wt = w if w.dim() == 3 else w.expand(C, *w.shape)
        if type(lin).__name__ != "Conv1D":  # nn.Linear: [out, in]; HF Conv1D is already [in, out]
            wt = wt.transpose(1, 2)
        if b is None:
            return torch.bmm(x, wt)
        return torch.baddbmm((b if b.dim() == 2 else b.expand(C, -1)).unsqueeze(1), x, wt)

    def _norm(self, x: torch.Tensor, ln: torch.nn.Module, W: Sequence[torch.Tensor]) -> torch.Tensor:
        if not isinstance(ln, torch.nn.LayerNorm):
            return x  # nn.Identity (normalization_type None)
        y = F.layer_norm(x, x.shape[-1:], None, None, ln.eps)
        w, b = self._get(ln.weight, W), self._get(ln.bias, W)
        if w is not None:
            y = y * (w.unsqueeze(1) if w.dim() == 2 else w)
        if b is not None:
            y = y + (b.unsqueeze(1) if b.dim() == 2 else b)
        return y

    def __call__(self, W: Sequence[torch.Tensor], ids: Int[torch.Tensor, "batch pos"]) -> Float[torch.Tensor, "chain batch pos vocab"]:
        C = W[0].shape[0]
        Bn, T = ids.shape
        H, dh = self.cfg.n_heads, self.cfg.d_head
        E, P = self._get(self.embed, W), self._get(self.pos, W)
        flat = ids.reshape(-1)
        tok = E[:, flat] if E.dim() == 3 else E[flat].expand(C, -1, -1)
        pos = P[:, :T] if P.dim() == 3 else P[:T].expand(C, -1, -1)
        x = tok + pos.repeat(1, Bn, 1)  # [C, B·T, d]
        for b in self.blocks:
            h = self._norm(x, b["ln1"], W)
            q, k, v = (self._linear(h, lin, W).view(C * Bn, T, H, dh).transpose(1, 2) for lin in b["qkvo"][:3])
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0 / b["scale"])
            x = x + self._linear(z.transpose(1, 2).reshape(C, Bn * T, H * dh), b["qkvo"][3], W)
            if "mlp" in b:
                fc_in, fc_out = b["mlp"]
                x = x + self._linear(b["act"](self._linear(self._norm(x, b["ln2"], W), fc_in, W)), fc_out, W)
        logits = self._linear(self._norm(x, self.ln_f, W), self.head, W)
        return logits.view(C, Bn, T, -1)
