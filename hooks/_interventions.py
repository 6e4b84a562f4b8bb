"""Interventions: functions that return :class:`~hooks.Hook`s, to be used with :func:`hooks.apply`.

With ``x`` the activation at the point and ``R`` the edited region (positions ``pos``, heads
``heads``; everything when both are ``None``), each intervention replaces ``x`` on ``R`` by

* :func:`zero_ablate`:   ``0``
* :func:`mean_ablate`:   ``μ`` (given, e.g. ``capture(...)[p].mean(0)`` over a reference batch)
* :func:`resample_ablate`: ``x'`` taken from another row of the same batch (never the row itself) or
  from a given source batch; one donor per example, or independently per position or per head
  (Chan et al. 2022, causal scrubbing; Wang et al. 2022 for ablation choices)
* :func:`patch`:         the activation recorded on a source input (activation patching;
  Meng et al. 2022, Heimersheim & Nanda 2024)
* :func:`steer`:         ``x + α·d`` (activation addition; Turner et al. 2023)
* :func:`project_out`:   ``x − Q Qᵀ x`` with ``Q`` an orthonormal basis of the given subspace
* :func:`splice`:        ``f(s)`` with ``s`` the activation at another point of the same forward, e.g.
  a transcoder reading ``mlp_in(l)`` replacing ``mlp_out(l)``; ``error_node=True`` gives
  ``f(s) + (x − f(s)).detach()`` (value unchanged, gradients through ``f``).

Outside ``R`` the activation is returned unchanged. ``heads`` needs a point with a head axis
(``attn.hook_z/q/k/v``, ``head_out(l)``, patterns); a single head's output is the point
``head_out(l, h)`` itself.

Example::

    >>> import torch, hooks
    >>> from transformer_lens.model_bridge import TransformerBridge
    >>> from transformer_lens.config import TransformerBridgeConfig
    >>> model = TransformerBridge.boot_native(TransformerBridgeConfig(
    ...     d_model=16, d_head=4, n_layers=2, n_ctx=8, n_heads=4, d_vocab=10, seed=0)).eval()
    >>> clean, corrupt = torch.tensor([[1, 2, 3, 4]]), torch.tensor([[1, 2, 5, 4]])
    >>> cache = hooks.capture(model, clean, [hooks.resid_pre(1)])
    >>> with hooks.apply(model, [hooks.patch(hooks.resid_pre(1), cache)]):
    ...     patched = model(corrupt)
    >>> torch.allclose(patched, model(clean), atol=1e-5)     # the whole residual restored
    True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Literal, Union

import torch
from jaxtyping import Float
from torch import Tensor

from hooks._hook import Hook

__all__ = [
    "zero_ablate",
    "mean_ablate",
    "resample_ablate",
    "patch",
    "steer",
    "project_out",
    "splice",
]

Index = Union[int, slice, Sequence[int], Tensor, None]


# ---------------------------------------------------------------------------------------------
# regions


def _pos_axis(point: str) -> int:
    return 2 if point.endswith(("hook_pattern", "hook_attn_scores")) else 1


def _head_axis(point: str, x: Tensor) -> int:
    if point.endswith(("hook_pattern", "hook_attn_scores")):
        return 1
    if x.dim() == 4:
        return 2
    raise ValueError(
        f"heads= needs a point with a head axis (attn.hook_z/q/k/v, head_out(l), patterns); "
        f"{point!r} has shape {tuple(x.shape)}. For one head's output use hooks.head_out(l, h)."
    )


def _axis_mask(x: Tensor, axis: int, index: Index) -> Tensor:
    m = torch.zeros(x.shape[axis], dtype=torch.bool, device=x.device)
    if isinstance(index, Tensor):
        index = index.to(x.device)
    elif not isinstance(index, (int, slice)):
        index = torch.as_tensor(list(index), dtype=torch.long, device=x.device)
    m[index] = True
    shape = [1] * x.dim()
    shape[axis] = -1
    return m.view(shape)


def _region(x: Tensor, point: str, pos: Index, heads: Index) -> Tensor | None:
    mask = None
    if pos is not None:
        mask = _axis_mask(x, _pos_axis(point), pos)
    if heads is not None:
        hm = _axis_mask(x, _head_axis(point, x), heads)
        mask = hm if mask is None else mask & hm
    return mask


def _blend(x: Tensor, new: Tensor, point: str, pos: Index, heads: Index) -> Tensor:
    mask = _region(x, point, pos, heads)
    if mask is None:
        return new if new.shape == x.shape else new.expand_as(x).clone()
    return torch.where(mask, new, x)


def _check_point(point: str) -> str:
    if not isinstance(point, str) or not point:
        raise ValueError(f"point must be a non-empty str, got {point!r}")
    return point


def _broadcast(value: Tensor, x: Tensor, point: str, what: str) -> Tensor:
    value = value.to(device=x.device, dtype=x.dtype)
    try:
        return value.expand_as(x)
    except RuntimeError as e:
        raise ValueError(
            f"{what} of shape {tuple(value.shape)} does not broadcast to the activation at "
            f"{point!r} of shape {tuple(x.shape)}"
        ) from e


# ---------------------------------------------------------------------------------------------
# ablations


def zero_ablate(point: str, *, pos: Index = None, heads: Index = None) -> Hook:
    """Replace the activation at ``point`` by zero on the region (``pos``, ``heads``)."""
    _check_point(point)

    def fn(x: Tensor) -> Tensor:
        return _blend(x, torch.zeros_like(x), point, pos, heads)

    return Hook(point, fn)


def mean_ablate(
    point: str, mean: Float[Tensor, "*shape"], *, pos: Index = None, heads: Index = None
) -> Hook:
    """Replace the activation at ``point`` by ``mean`` (broadcast to its shape) on the region.

    ``mean`` is typically ``capture(model, reference, [point])[point].mean(0)`` (shape without the
    batch axis: a per-position mean) or ``.mean((0, 1))`` (one vector for every position).
    """
    _check_point(point)
    if not isinstance(mean, Tensor):
        raise ValueError(f"mean must be a Tensor, got {type(mean).__name__}")
    mean = mean.detach()

    def fn(x: Tensor) -> Tensor:
        return _blend(x, _broadcast(mean, x, point, "mean"), point, pos, heads)

    return Hook(point, fn)


_PER = ("example", "position", "head")


def resample_ablate(
    point: str,
    *,
    source: Float[Tensor, "source_batch ..."] | None = None,
    per: Literal["example", "position", "head"] = "example",
    pos: Index = None,
    heads: Index = None,
    seed: int = 0,
) -> Hook:
    """Replace the activation by the one of another input.

    Args:
        point: where.
        source: activations at ``point`` on a source batch (``[source_batch, *activation_shape]``,
            e.g. from :func:`hooks.capture`). ``None``: resample from the *other* rows of the
            running batch (each row gets a donor row different from itself; needs batch ≥ 2).
        per: ``"example"``: one donor per example for the whole activation; ``"position"``: an
            independent donor per (example, position); ``"head"``: per (example, head).
        pos: positions of the region to resample; elsewhere the activation is kept.
        heads: heads of the region to resample.
        seed: seeds the donor draws; every forward draws afresh from the same generator.
    """
    _check_point(point)
    if per not in _PER:
        raise ValueError(f"per must be one of {_PER}, got {per!r}")
    if source is not None:
        if not isinstance(source, Tensor):
            raise ValueError(f"source must be a Tensor of activations, got {type(source).__name__}")
        if source.shape[0] < 1:
            raise ValueError("source has no rows to resample from")
        source = source.detach()
    gen = torch.Generator().manual_seed(int(seed))

    def fn(x: Tensor) -> Tensor:
        b = x.shape[0]
        pool = x if source is None else source.to(device=x.device, dtype=x.dtype)
        if source is None and b < 2:
            raise ValueError(
                f"resample_ablate at {point!r}: a batch of {b} row has no other row to resample "
                "from; use a batch of at least 2 or pass source= activations"
            )
        if source is not None and pool.shape[1:] != x.shape[1:]:
            raise ValueError(
                f"resample_ablate at {point!r}: source rows have shape {tuple(pool.shape[1:])}, "
                f"the activation {tuple(x.shape[1:])}"
            )
        if per == "example":
            axis = None
            size: tuple[int, ...] = (b,)
        else:
            axis = _pos_axis(point) if per == "position" else _head_axis(point, x)
            size = (b, x.shape[axis])
        if source is None:
            offset = torch.randint(1, b, size, generator=gen)
            rows = torch.arange(b).view((b,) + (1,) * (len(size) - 1))
            idx = (rows + offset) % b
        else:
            idx = torch.randint(0, pool.shape[0], size, generator=gen)
        idx = idx.to(x.device)
        if axis is None:
            new = pool[idx]
        else:
            moved = pool.movedim(axis, 1)  # [pool_batch, n, ...]
            new = moved[idx, torch.arange(size[1], device=x.device).unsqueeze(0)].movedim(1, axis)
        return _blend(x, new, point, pos, heads)

    return Hook(point, fn)


# ---------------------------------------------------------------------------------------------
# patching, steering, projection, splicing


def patch(
    point: str,
    source: Float[Tensor, "*shape"] | Mapping[str, Tensor],
    *,
    pos: Index = None,
    heads: Index = None,
) -> Hook:
    """Replace the activation at ``point`` by ``source`` (a tensor, or a cache: ``source[point]``).

    The source must have the activation's shape or broadcast to it (e.g. one row for every
    example). Use ``pos``/``heads`` to patch only part of it.
    """
    _check_point(point)
    if isinstance(source, Mapping):
        if point not in source:
            raise ValueError(
                f"the source cache has no entry {point!r}; it has {sorted(source)}. Capture the same "
                "point names you patch."
            )
        source = source[point]
    if not isinstance(source, Tensor):
        raise ValueError(f"source must be a Tensor or a mapping of point -> Tensor, got {type(source).__name__}")
    source = source.detach()

    def fn(x: Tensor) -> Tensor:
        return _blend(x, _broadcast(source, x, point, "source"), point, pos, heads)

    return Hook(point, fn)


def steer(
    point: str, direction: Float[Tensor, "d"], alpha: float = 1.0, *, pos: Index = None
) -> Hook:
    """Add ``alpha · direction`` to the activation at ``point`` (on positions ``pos``)."""
    _check_point(point)
    if not isinstance(direction, Tensor) or direction.dim() != 1:
        raise ValueError(
            f"direction must be a 1-d Tensor over the activation's last axis, got "
            f"{getattr(direction, 'shape', type(direction).__name__)}"
        )
    direction = direction.detach()
    alpha = float(alpha)

    def fn(x: Tensor) -> Tensor:
        if x.shape[-1] != direction.shape[0]:
            raise ValueError(
                f"steer at {point!r}: direction has {direction.shape[0]} entries, the activation's "
                f"last axis {x.shape[-1]}"
            )
        return _blend(x, x + alpha * direction.to(device=x.device, dtype=x.dtype), point, pos, None)

    return Hook(point, fn)


def orthonormal_basis(basis: Float[Tensor, "k d"], tol: float = 1e-6) -> Float[Tensor, "d r"]:
    """An orthonormal basis ``Q`` (columns) of the row space of ``basis``; rank-deficient rows dropped."""
    if basis.dim() == 1:
        basis = basis.unsqueeze(0)
    u, s, _ = torch.linalg.svd(basis.T.to(torch.float64), full_matrices=False)
    keep = s > tol * s.max().clamp_min(1e-30)
    return u[:, keep].to(basis.dtype)


def project_out(
    point: str, basis: Float[Tensor, "k d"] | Float[Tensor, "d"], *, pos: Index = None
) -> Hook:
    """Remove the component of the activation in the span of ``basis`` rows: ``x − Q Qᵀ x``."""
    _check_point(point)
    if not isinstance(basis, Tensor) or basis.dim() not in (1, 2):
        raise ValueError(f"basis must be a [k, d] or [d] Tensor, got {getattr(basis, 'shape', basis)!r}")
    if not torch.isfinite(basis).all() or not basis.abs().sum() > 0:
        raise ValueError("basis must be finite and not all zero")
    q = orthonormal_basis(basis.detach())

    def fn(x: Tensor) -> Tensor:
        if x.shape[-1] != q.shape[0]:
            raise ValueError(
                f"project_out at {point!r}: basis vectors have {q.shape[0]} entries, the "
                f"activation's last axis {x.shape[-1]}"
            )
        qq = q.to(device=x.device, dtype=x.dtype)
        return _blend(x, x - (x @ qq) @ qq.T, point, pos, None)

    return Hook(point, fn)


def splice(
    target: str,
    source: str,
    fn: Callable[[Tensor], Tensor],
    *,
    error_node: bool = False,
    positions: Sequence[int] | None = None,
) -> tuple[Hook, Hook]:
    """Replace the activation at ``target`` by ``fn(activation at source)`` in the same forward.

    ``source`` must fire before ``target`` (e.g. ``mlp_in(l)`` → ``mlp_out(l)``). With
    ``error_node=True`` the result is ``f(s) + (x − f(s)).detach()``: the forward value is the
    original, gradients flow through ``f``. ``positions`` (a non-empty sequence of sequence
    positions, negative counting from the end): replace only there, ``fn`` applied to the source at
    those positions (``[batch, len(positions), ...]``); elsewhere the target keeps its own value.
    ``None``: every position. Returns two hooks; pass both to :func:`hooks.apply`.
    """
    _check_point(target)
    _check_point(source)
    if not callable(fn):
        raise ValueError(f"fn must be callable, got {fn!r}")
    if target == source:
        raise ValueError("splice needs two different points: source is read, target replaced")
    pos: list[int] | None = None
    if positions is not None:
        if isinstance(positions, (str, bytes)) or not isinstance(positions, Sequence) or not positions or any(
                isinstance(p, bool) or not isinstance(p, int) for p in positions):
            raise ValueError(f"splice(positions={positions!r}): positions must be a non-empty sequence of ints "
                             "or None (every position). Use e.g. positions=(-1,).")
        pos = list(positions)
    state: dict[str, Tensor] = {}

    def read(s: Tensor) -> None:
        state["s"] = s
        return None

    def replace(x: Tensor) -> Tensor:
        s = state.pop("s", None)
        if s is None:
            raise RuntimeError(
                f"splice: source {source!r} did not fire before target {target!r} in this forward"
            )
        if pos is not None:
            n = x.shape[1]
            bad = [p for p in pos if not -n <= p < n]
            if bad:
                raise ValueError(f"splice: positions {bad} outside sequences of length {n} at {target!r}")
            s = s[:, pos]
        y = fn(s)
        want = x.shape if pos is None else x[:, pos].shape
        if not isinstance(y, Tensor) or y.shape != want:
            raise ValueError(
                f"splice: fn returned {getattr(y, 'shape', type(y).__name__)} for target {target!r} "
                f"of shape {tuple(want)}"
            )
        y = y.to(dtype=x.dtype)
        if pos is None:
            return y + (x - y).detach() if error_node else y
        if error_node:
            y = y + (x[:, pos] - y).detach()
        out = x.clone()
        out[:, pos] = y
        return out

    return Hook(source, read), Hook(target, replace)

