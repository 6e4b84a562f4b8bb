"""Point naming: architecture-independent names for the places a hook can read or edit.

A *point* is a string. Most points are TransformerLens hook names (``blocks.0.hook_resid_pre``,
``blocks.1.attn.hook_z``, any key of ``model.hook_dict``); the helpers below build the common ones
so that analyses never spell names by hand. :func:`resolve` maps a point to the bridge's real
``HookPoint`` and raises :class:`PointError`, listing the closest valid names, when it cannot.

Two kinds of points are not plain hook names:

* **Per-head outputs.** ``head_out(l, h)`` is ``"blocks.{l}.attn.hook_result[h]"`` and
  ``head_out(l)`` is ``"blocks.{l}.attn.hook_result"`` (all heads, shape
  ``[batch, pos, head, d_model]``). A bridge exposes a per-head hook only on some architectures
  (and only after ``set_use_attn_result(True)``), so on *every* bridge they are computed from the
  attention's ``hook_z`` and ``W_O``:

      head_out_h = z[:, :, h, :] @ W_O[h],   Σ_h head_out_h + b_O = attention output (before any
      residual add or LayerNorm)

  (Elhage et al. 2021, "A Mathematical Framework for Transformer Circuits", §2). Edits of a
  per-head output are applied exactly, as ``attn.o.hook_out + (edited − original)``: they change
  what the attention writes, not ``hook_z``. Reading a per-head point always reports
  ``z_h W_O[h]`` from ``hook_z``, so an edit of ``head_out(l, h)`` is seen downstream (e.g. in
  ``attn_out(l)``), not when ``head_out(l, h)`` itself is read again in the same forward.

* **Post-LN models** (BERT, hence MiniLM). TransformerLens' ``hook_attn_out`` there holds the
  residual sum after the attention LayerNorm and ``hook_resid_mid`` the post-MLP sum before
  LayerNorm. ``attn_out(l)`` and ``resid_mid(l)`` keep their meaning across architectures instead:
  on a post-LN bridge ``blocks.{l}.hook_attn_out`` resolves to ``blocks.{l}.attn.o.hook_out`` (what
  attention writes, before the residual add and LayerNorm) and ``blocks.{l}.hook_resid_mid`` to
  ``blocks.{l}.attn.hook_out`` (the residual stream between attention and MLP, after LayerNorm).
  TransformerLens' own tensors stay reachable under their canonical names
  (``blocks.{l}.attn.hook_out``, ``blocks.{l}.ln2.hook_in``), which are never remapped.

Example::

    >>> from hooks import resid_pre, mlp_out, head_out
    >>> resid_pre(0), mlp_out(1), head_out(1, 0)
    ('blocks.0.hook_resid_pre', 'blocks.1.hook_mlp_out', 'blocks.1.attn.hook_result[0]')
    >>> from transformer_lens.model_bridge import TransformerBridge
    >>> from transformer_lens.config import TransformerBridgeConfig
    >>> model = TransformerBridge.boot_native(TransformerBridgeConfig(
    ...     d_model=16, d_head=4, n_layers=2, n_ctx=8, n_heads=4, d_vocab=10, seed=0)).eval()
    >>> from hooks import resolve
    >>> resolve(model, "blocks.0.hook_resid_pre").name      # the real (canonical) hook name
    'blocks.0.hook_in'
    >>> resolve(model, "blocks.0.hook_resid_pr")            # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    hooks._points.PointError: unknown point 'blocks.0.hook_resid_pr' ... closest valid names: 'blocks.0.hook_resid_pre', ...
"""

from __future__ import annotations

import difflib
import re
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # pragma: no cover
    from transformer_lens.hook_points import HookPoint

__all__ = [
    "is_post_ln",
    "PointError",
    "Resolved",
    "resolve",
    "resid_pre",
    "resid_mid",
    "resid_post",
    "attn_out",
    "attn_z",
    "attn_pattern",
    "mlp_in",
    "mlp_post",
    "mlp_out",
    "head_out",
    "embed",
    "logits",
    "valid_points",
]


class PointError(ValueError):
    """A point name that this bridge cannot serve (unknown, gated off, or out of range)."""


# ---------------------------------------------------------------------------------------------
# name helpers (pure strings: no model needed)


def _check_index(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PointError(f"{name} must be a non-negative int, got {value!r}")
    return value


def resid_pre(layer: int) -> str:
    """The residual stream entering block ``layer``."""
    return f"blocks.{_check_index('layer', layer)}.hook_resid_pre"


def resid_mid(layer: int) -> str:
    """The residual stream between attention and MLP of block ``layer`` (see module notes on post-LN)."""
    return f"blocks.{_check_index('layer', layer)}.hook_resid_mid"


def resid_post(layer: int) -> str:
    """The residual stream leaving block ``layer``."""
    return f"blocks.{_check_index('layer', layer)}.hook_resid_post"


def attn_out(layer: int) -> str:
    """What attention of block ``layer`` writes (``Σ_h head_out + b_O``), before residual add / LN."""
    return f"blocks.{_check_index('layer', layer)}.hook_attn_out"


def attn_z(layer: int) -> str:
    """Per-head attention-weighted values ``z``, shape ``[batch, pos, head, d_head]``."""
    return f"blocks.{_check_index('layer', layer)}.attn.hook_z"


def attn_pattern(layer: int) -> str:
    """Attention probabilities, shape ``[batch, head, query_pos, key_pos]`` (read-only on BERT)."""
    return f"blocks.{_check_index('layer', layer)}.attn.hook_pattern"


def mlp_in(layer: int) -> str:
    """The tensor the MLP of block ``layer`` receives (after LayerNorm on pre-LN models)."""
    return f"blocks.{_check_index('layer', layer)}.mlp.hook_in"


def mlp_post(layer: int) -> str:
    """MLP hidden activations after the nonlinearity, shape ``[batch, pos, d_mlp]``."""
    return f"blocks.{_check_index('layer', layer)}.mlp.hook_post"


def mlp_out(layer: int) -> str:
    """What the MLP of block ``layer`` writes, before any residual add / LayerNorm."""
    return f"blocks.{_check_index('layer', layer)}.hook_mlp_out"


def head_out(layer: int, head: int | None = None) -> str:
    """Output of one attention head in ``d_model`` (``z_h @ W_O[h]``); ``head=None``: all heads."""
    _check_index("layer", layer)
    if head is None:
        return f"blocks.{layer}.attn.hook_result"
    return f"blocks.{layer}.attn.hook_result[{_check_index('head', head)}]"


def embed() -> str:
    """Token embeddings (``hook_embed``)."""
    return "hook_embed"


def logits() -> str:
    """The unembedding output (``hook_unembed``)."""
    return "hook_unembed"


# ---------------------------------------------------------------------------------------------
# resolution

_HEAD_RE = re.compile(r"^blocks\.(\d+)\.attn\.hook_result(?:\[(\d+)\])?$")
_LAYER_RE = re.compile(r"^blocks\.(\d+)\.")


@dataclass(frozen=True)
class Resolved:
    """What a point resolves to on one bridge.

    Attributes:
        point: the point as the user wrote it.
        name: the canonical name of the real hook point (for a per-head point: the ``hook_z``).
        hook_point: the ``HookPoint`` module (for a per-head point: the ``hook_z`` HookPoint).
        layer: block index, or ``None`` for points outside the blocks.
        heads: for per-head points, the head index (int) or ``None`` for all heads; for ordinary
            points always ``None``.
        per_head: whether this is a computed per-head output point.
        out_hook_point: for per-head points, the HookPoint on the attention output projection
            (``attn.o.hook_out``) where edits are applied.
        attn: for per-head points, the attention bridge; ``attn.W_O`` (``[head, d_head, d_model]``)
            is read at every forward, so weights put into the live model are always used.
        pos_axis: the position axis of the activation (1, or 2 for attention patterns/scores).
    """

    point: str
    name: str
    hook_point: Any
    layer: int | None = None
    heads: int | None = None
    per_head: bool = False
    out_hook_point: Any = None
    attn: Any = None
    pos_axis: int = 1


class _ModelInfo:
    """Per-bridge cache of the hook dictionary (``model.hook_dict`` rebuilds aliases each call)."""

    __slots__ = ("registry_size", "hook_dict", "post_ln", "resolved")

    def __init__(self, model: Any) -> None:
        self.registry_size = len(getattr(model, "_hook_registry", {}) or {})
        self.hook_dict: dict[str, HookPoint] = dict(model.hook_dict)
        self.post_ln = _detect_post_ln(model)
        self.resolved: dict[str, Resolved] = {}


_INFO: weakref.WeakKeyDictionary[Any, _ModelInfo] = weakref.WeakKeyDictionary()


def is_post_ln(model: Any) -> bool:
    """Whether ``model`` is a post-LN transformer (BERT, MiniLM): its ``resid_pre/post`` are LayerNorm
    outputs, and the attention component contains a LayerNorm after the residual add."""
    return _detect_post_ln(model)


def _detect_post_ln(model: Any) -> bool:
    """Post-LN bridges (BERT): the attention component contains a LayerNorm after the residual add."""
    blocks = getattr(model, "blocks", None)
    if not blocks:
        return False
    attn = getattr(blocks[0], "attn", None)
    original = getattr(attn, "original_component", None)
    if original is None:
        return False
    return any(isinstance(m, torch.nn.LayerNorm) for m in original.modules())


def _info(model: Any) -> _ModelInfo:
    if not hasattr(model, "hook_dict"):
        raise TypeError(
            f"expected a TransformerLens TransformerBridge (with .hook_dict), got {type(model).__name__}"
        )
    info = _INFO.get(model)
    size = len(getattr(model, "_hook_registry", {}) or {})
    if info is None or info.registry_size != size:
        info = _ModelInfo(model)
        _INFO[model] = info
    return info


def _n_layers(model: Any) -> int:
    return int(model.cfg.n_layers)


def valid_points(model: Any) -> list[str]:
    """Every point name this bridge can serve: its hook names plus the per-head output points."""
    info = _info(model)
    names = [n for n, hp in info.hook_dict.items() if _gate_reason(model, hp.name or n) is None]
    for layer in range(_n_layers(model)):
        if f"blocks.{layer}.attn.hook_z" in info.hook_dict:
            names.append(f"blocks.{layer}.attn.hook_result")
            names.extend(
                f"blocks.{layer}.attn.hook_result[{h}]" for h in range(int(model.cfg.n_heads))
            )
    return sorted(set(names))


def _gate_reason(model: Any, name: str) -> str | None:
    fn = getattr(model, "_gated_hook_reason", None)
    return fn(name) if fn is not None else None


def _closest(model: Any, point: str, n: int = 5) -> str:
    candidates = valid_points(model)
    close = difflib.get_close_matches(point, candidates, n=n, cutoff=0.5)
    if not close:
        # fall back to names sharing the last component
        tail = point.rsplit(".", 1)[-1]
        close = [c for c in candidates if c.endswith(tail)][:n] or candidates[:n]
    return ", ".join(repr(c) for c in close)


def _unknown(model: Any, point: str, why: str) -> PointError:
    return PointError(
        f"unknown point {point!r} ({why}); closest valid names: {_closest(model, point)}. "
        "Use the helpers (hooks.resid_pre(l), hooks.head_out(l, h), ...) or hooks.valid_points(model)."
    )


def resolve(model: Any, point: str) -> Resolved:
    """Map a point name to the bridge's real hook point.

    Raises:
        PointError: the point is unknown, gated off, out of range, or never fires on this bridge;
            the message lists the closest valid names.
    """
    if not isinstance(point, str) or not point:
        raise PointError(f"a point is a non-empty str such as 'blocks.0.hook_resid_pre', got {point!r}")
    info = _info(model)
    cached = info.resolved.get(point)
    if cached is not None:
        return cached
    res = _resolve_uncached(model, info, point)
    info.resolved[point] = res
    return res


def _layer_of(name: str) -> int | None:
    m = _LAYER_RE.match(name)
    return int(m.group(1)) if m else None


def _resolve_uncached(model: Any, info: _ModelInfo, point: str) -> Resolved:
    m = _HEAD_RE.match(point)
    if m is not None:
        return _resolve_head(model, info, point, int(m.group(1)), m.group(2))

    name = point
    if info.post_ln:
        if point.endswith(".hook_attn_out") and _layer_of(point) is not None:
            name = f"blocks.{_layer_of(point)}.attn.o.hook_out"
        elif point.endswith(".hook_resid_mid") and _layer_of(point) is not None:
            name = f"blocks.{_layer_of(point)}.attn.hook_out"

    layer = _layer_of(name)
    if layer is not None and layer >= _n_layers(model):
        raise _unknown(model, point, f"layer {layer} out of range: the model has {_n_layers(model)} layers")
    hp = info.hook_dict.get(name)
    if hp is None:
        raise _unknown(model, point, "not a hook point of this bridge")
    canonical = hp.name or name
    reason = _gate_reason(model, canonical)
    if reason is not None:
        hint = " (for per-head outputs use hooks.head_out(l, h))" if "hook_result" in canonical else ""
        raise _unknown(
            model,
            point,
            f"gated off on this bridge: it would need model.set_{reason}(True){hint}",
        )
    pos_axis = 2 if canonical.endswith(("hook_pattern", "hook_attn_scores")) else 1
    return Resolved(point=point, name=canonical, hook_point=hp, layer=layer, pos_axis=pos_axis)


def _resolve_head(model: Any, info: _ModelInfo, point: str, layer: int, head: str | None) -> Resolved:
    if layer >= _n_layers(model):
        raise _unknown(model, point, f"layer {layer} out of range: the model has {_n_layers(model)} layers")
    n_heads = int(model.cfg.n_heads)
    h = None if head is None else int(head)
    if h is not None and h >= n_heads:
        raise _unknown(model, point, f"head {h} out of range: the model has {n_heads} heads")
    z = info.hook_dict.get(f"blocks.{layer}.attn.hook_z")
    out = info.hook_dict.get(f"blocks.{layer}.attn.o.hook_out")
    attn = getattr(model.blocks[layer], "attn", None)
    w_o = getattr(attn, "W_O", None) if attn is not None else None
    if z is None or out is None or w_o is None:
        raise _unknown(
            model,
            point,
            "per-head outputs need attn.hook_z, attn.o.hook_out and W_O, which this bridge lacks",
        )
    return Resolved(
        point=point,
        name=z.name or f"blocks.{layer}.attn.hook_z",
        hook_point=z,
        layer=layer,
        heads=h,
        per_head=True,
        out_hook_point=out,
        attn=attn,
        pos_axis=1,
    )
