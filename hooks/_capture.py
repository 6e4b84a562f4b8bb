"""``capture(model, inputs, points)``: activations at a few points, as a plain dict of tensors.

One forward pass with a read-only hook per distinct hook point (points that resolve to the same hook,
e.g. ``blocks.0.hook_resid_pre`` and ``blocks.0.hook_in``, share one). Each activation is reduced
*inside its hook* to the requested rows (``batch``) and positions (``pos``), detached and moved to
``device`` before it is stored, so a large sweep never holds whole caches. By default the forward
stops as soon as every requested point has fired (later layers are not computed); the model's
logits are not returned (use ``model(inputs)`` for those).

Per-head points (``hooks.head_out(l, h)``) are computed from the captured ``hook_z`` and the live
``W_O``: ``z[:, :, h] @ W_O[h]`` (see :mod:`hooks._points`). The result is a dict keyed by the points
as given; per-head outputs are also found under the other spelling: ``acts["blocks.1.attn.hook_result"]``
(TransformerLens' name, ``[batch, pos, head, d_model]``) stacks ``head_out(1, h)`` when every head was
captured, and ``acts["blocks.1.attn.hook_result[0]"]`` reads head 0 of ``head_out(1)``. Any other
missing key is a ``KeyError`` that lists what was captured.

Position axis: 1 for every activation except attention patterns/scores ``[batch, head, q, k]``,
where ``pos`` selects query positions (axis 2). An int ``pos`` or ``batch`` keeps its axis (length
1), so shapes do not depend on how a selection is spelled.

Example::

    >>> import torch, hooks
    >>> from transformer_lens.model_bridge import TransformerBridge
    >>> from transformer_lens.config import TransformerBridgeConfig
    >>> model = TransformerBridge.boot_native(TransformerBridgeConfig(
    ...     d_model=16, d_head=4, n_layers=2, n_ctx=8, n_heads=4, d_vocab=10, seed=0)).eval()
    >>> acts = hooks.capture(model, torch.tensor([[1, 2, 3, 4], [4, 3, 2, 1]]),
    ...                      [hooks.resid_post(0), hooks.head_out(1, 2)], pos=-1)
    >>> {k: tuple(v.shape) for k, v in acts.items()}
    {'blocks.0.hook_resid_post': (2, 1, 16), 'blocks.1.attn.hook_result[2]': (2, 1, 16)}
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from typing import Any, Union

import torch
from jaxtyping import Float, Int
from torch import Tensor

from hooks._hook import add, head_outputs, new_level, remove
from hooks._points import Resolved, resolve

__all__ = ["capture", "Selection", "Activations"]

_RESULT_RE = re.compile(r"^blocks\.(\d+)\.attn\.hook_result(?:\[(\d+)\])?$")


class Activations(dict):
    """``{point: activation}`` as :func:`capture` returns it: a plain dict, whose per-head outputs
    are also found under the other spelling (see the module docstring)."""

    n_heads: int | None = None

    def __missing__(self, key: Any) -> Tensor:
        m = _RESULT_RE.match(key) if isinstance(key, str) else None
        if m is not None:
            layer, head = m.group(1), m.group(2)
            whole = f"blocks.{layer}.attn.hook_result"
            if head is not None and whole in self:
                return dict.__getitem__(self, whole)[:, :, int(head)]
            if head is None and self.n_heads:
                heads = [f"{whole}[{h}]" for h in range(self.n_heads)]
                if all(h in self for h in heads):
                    return torch.stack([dict.__getitem__(self, h) for h in heads], dim=2)
        hint = ""
        if m is not None:
            hint = (f" Capture hooks.head_out({m.group(1)}) for all heads (TransformerLens' hook_result, "
                    f"[batch, pos, head, d_model]) or hooks.head_out({m.group(1)}, h) for one.")
        raise KeyError(f"{key!r} was not captured; captured: {sorted(self)}.{hint}")

Selection = Union[int, slice, Sequence[int], Tensor, None]
"""Rows or positions to keep: an int (axis kept, length 1), a slice, a list of ints, an index
tensor, or ``None`` for all."""


class _Stop(Exception):
    """Raised inside the last capture hook to end the forward early."""


def _as_index(sel: Selection, what: str) -> slice | Tensor:
    if sel is None:
        return slice(None)
    if isinstance(sel, slice):
        return sel
    if isinstance(sel, bool):
        raise ValueError(f"{what} must be an int, slice, sequence of ints or index tensor, got {sel!r}")
    if isinstance(sel, int):
        return slice(sel, sel + 1) if sel != -1 else slice(-1, None)
    if isinstance(sel, Tensor):
        if sel.dtype == torch.bool or sel.dtype.is_floating_point:
            raise ValueError(f"{what} must be an integer index tensor, got dtype {sel.dtype}")
        return sel.reshape(-1)
    try:
        return torch.as_tensor(list(sel), dtype=torch.long)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"{what} must be an int, slice, sequence of ints or index tensor, got {sel!r}"
        ) from e


def select(x: Tensor, batch: slice | Tensor, pos: slice | Tensor, pos_axis: int) -> Tensor:
    """``x`` restricted to the given rows (axis 0) and positions (``pos_axis``)."""
    if not (isinstance(batch, slice) and batch == slice(None)):
        x = x[batch] if isinstance(batch, slice) else x.index_select(0, batch.to(x.device))
    if x.dim() > pos_axis and not (isinstance(pos, slice) and pos == slice(None)):
        if isinstance(pos, slice):
            x = x[(slice(None),) * pos_axis + (pos,)]
        else:
            x = x.index_select(pos_axis, pos.to(x.device))
    return x


def check_tokens(model: Any, inputs: Any) -> None:
    """Token ids must be an integer tensor with every id in ``[0, d_vocab)``: a float or bool tensor,
    or an id outside the vocabulary, otherwise fails deep inside the forward with an unrelated
    message (a shape mismatch, ``index out of range in self``)."""
    if not isinstance(inputs, Tensor):
        return
    if inputs.is_floating_point() or inputs.is_complex() or inputs.dtype == torch.bool:
        raise ValueError(
            f"inputs has dtype {inputs.dtype}: token ids must be an integer tensor [batch, pos] "
            "(convert with ids.long())."
        )
    d_vocab = getattr(getattr(model, "cfg", None), "d_vocab", None)
    if isinstance(d_vocab, int) and d_vocab > 0 and inputs.numel():
        lo, hi = int(inputs.min()), int(inputs.max())
        if lo < 0 or hi >= d_vocab:
            bad = lo if lo < 0 else hi
            raise ValueError(
                f"inputs holds token id {bad}, outside the model's vocabulary [0, {d_vocab}); "
                "were the ids made with another tokenizer or organism?"
            )


def capture(
    model: Any,
    inputs: Int[Tensor, "batch pos"] | str | list[str],
    points: Sequence[str] | str,
    *,
    pos: Selection = None,
    batch: Selection = None,
    detach: bool = True,
    device: torch.device | str | None = None,
    stop_early: bool = True,
    **forward_kwargs: Any,
) -> dict[str, Float[Tensor, "..."]]:
    """Run ``model`` on ``inputs`` and return the activations at ``points``.

    Args:
        model: a TransformerLens ``TransformerBridge``.
        inputs: token ids ``[batch, pos]`` or text (tokenized by the bridge).
        points: point names (``hooks.resid_pre(0)``, ``hooks.head_out(1, 0)``, raw hook names).
        pos: positions to keep (axis 1; query axis for attention patterns). ``None``: all.
        batch: rows to keep. ``None``: all.
        detach: run under ``torch.no_grad()`` and store detached tensors. ``False`` keeps the graph
            (the activations can be differentiated).
        device: move each stored activation there (e.g. ``"cpu"``); ``None`` keeps it in place.
        stop_early: end the forward once every point has fired (nothing after the last point is
            computed, so hooks placed later in the model by an enclosing ``apply`` do not run).
        **forward_kwargs: passed to ``model(inputs, ...)`` (e.g. ``attention_mask``).

    Returns:
        ``{point: activation}`` with one entry per distinct requested point, keyed as given.

    Raises:
        PointError: an unknown or gated-off point (nothing is registered).
        RuntimeError: a point never fired during the forward (the bridge does not compute it).
    """
    if isinstance(points, str):
        points = [points]
    points = list(dict.fromkeys(points))
    if not points:
        raise ValueError("capture needs at least one point")
    resolved = [resolve(model, p) for p in points]
    check_tokens(model, inputs)
    b_idx = _as_index(batch, "batch")
    p_idx = _as_index(pos, "pos")

    raw = _record(model, inputs, resolved, b_idx, p_idx, detach=detach, device=device,
                  stop_early=stop_early, forward_kwargs=forward_kwargs)
    return _assemble(model, resolved, raw, detach)


def _record(model: Any, inputs: Any, resolved: list[Resolved], b_idx: slice | Tensor, p_idx: slice | Tensor,
            *, detach: bool, device: torch.device | str | None, stop_early: bool,
            forward_kwargs: dict[str, Any]) -> dict[int, Tensor]:
    """One forward with a recording hook on each distinct hook point (keyed by ``id``); the hooks are
    removed afterwards, even on error. With ``stop_early`` the forward ends once all have fired."""
    groups: dict[int, tuple[Any, list[Resolved]]] = {}
    for r in resolved:
        groups.setdefault(id(r.hook_point), (r.hook_point, []))[1].append(r)
    raw: dict[int, Tensor] = {}
    remaining = {"n": len(groups)}

    def make_hook(key: int, pos_axis: int) -> Any:
        def hook_fn(x: Tensor, *, hook: Any = None) -> None:
            if key not in raw:
                remaining["n"] -= 1
            v = select(x, b_idx, p_idx, pos_axis)
            if detach:
                v = v.detach()
            if device is not None:
                v = v.to(device)
            raw[key] = v
            if stop_early and remaining["n"] == 0:
                raise _Stop
            return None

        return hook_fn

    level = new_level()
    added: list[tuple[Any, Any]] = []
    try:
        for key, (hp, rs) in groups.items():
            added.append(add(hp, make_hook(key, rs[0].pos_axis), level))
        ctx = torch.no_grad() if detach else contextlib.nullcontext()
        with ctx:
            try:
                model(inputs, **forward_kwargs)
            except _Stop:
                pass
    finally:
        remove(added)
    return raw


def _assemble(model: Any, resolved: list[Resolved], raw: dict[int, Tensor], detach: bool) -> Activations:
    """The recorded tensors keyed by point as requested, per-head outputs computed from ``hook_z``;
    a point whose hook never fired is a RuntimeError."""
    out = Activations()
    out.n_heads = int(getattr(getattr(model, "cfg", None), "n_heads", 0) or 0) or None
    for r in resolved:
        v = raw.get(id(r.hook_point))
        if v is None:
            raise RuntimeError(
                f"point {r.point!r} (hook {r.name!r}) never fired during the forward: this bridge "
                "does not compute it"
            )
        if r.per_head:
            with torch.no_grad() if detach else contextlib.nullcontext():
                v = head_outputs(v, r.attn, r.heads).to(v.device)
        out[r.point] = v
    return out
