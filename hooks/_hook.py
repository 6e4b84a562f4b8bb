"""``Hook(point, fn)`` and ``apply(model, hooks)``: temporary, exactly-removed forward hooks.

A :class:`Hook` pairs a point (see :mod:`hooks._points`) with a function ``fn(activation)`` that
returns ``None`` (read only) or a tensor of the same shape that replaces the activation; a
TransformerLens-style ``fn(activation, hook)`` works too (decided once, from its signature, when the
``Hook`` is made; ``hook`` is the TransformerLens ``HookPoint`` that fired, as in ``run_with_hooks``),
and so does TransformerLens's habit of editing the activation in place and returning ``None``. ``apply``
is a context manager that resolves every hook first (a bad name registers nothing), registers them
under a context level of its own, and on exit removes exactly the handles it added, whether the
block ends normally, raises, or is interrupted (``KeyboardInterrupt``). Hooks registered outside,
by the user or by an enclosing ``apply``/``model.hooks()``, are left alone. Nested ``apply``s
compose: at one point, hooks run in registration order (outer before inner, list order within).

Why not ``model.hooks()``: TransformerLens numbers its contexts by depth, so two sibling contexts
share a level and level-based cleanup can remove hooks that another context added (upstream issue
#1636). Levels here are unique negative integers that TransformerLens never hands out, and removal is
by handle, never by level.

**Guard against ignored edits.** Some bridges fire a hook on a tensor their wrapped Hugging Face
module has already consumed (``hook_attn_scores`` on native bridges, ``hook_pattern`` and
``hook_attn_scores`` on BERT); TransformerLens then only warns. Here an edit at such a point raises
:class:`EditIgnoredError` from inside the forward, so no number is ever computed from an edit that
did not happen. An in-place change of the activation followed by ``return None`` is seen through
the tensor's version counter and guarded the same way (outside ``torch.inference_mode``, where
tensors keep no version counter; return the edit there).

Example::

    >>> import torch, hooks
    >>> from transformer_lens.model_bridge import TransformerBridge
    >>> from transformer_lens.config import TransformerBridgeConfig
    >>> model = TransformerBridge.boot_native(TransformerBridgeConfig(
    ...     d_model=16, d_head=4, n_layers=2, n_ctx=8, n_heads=4, d_vocab=10, seed=0)).eval()
    >>> tokens = torch.tensor([[1, 2, 3, 4]])
    >>> clean = model(tokens)
    >>> with hooks.apply(model, [hooks.Hook(hooks.mlp_out(1), lambda x: torch.zeros_like(x))]):
    ...     ablated = model(tokens)
    >>> bool((ablated != clean).any()), torch.equal(model(tokens), clean)   # removed on exit
    (True, True)
"""

from __future__ import annotations

import inspect
import itertools
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Union

import torch
from torch import Tensor

from hooks._points import Resolved, resolve

__all__ = ["Hook", "apply", "EditIgnoredError", "HookFn"]

HookFn = Union[Callable[[Tensor], Union[Tensor, None]], Callable[[Tensor, Any], Union[Tensor, None]]]
"""``fn(activation) -> None | Tensor`` or ``fn(activation, hook) -> None | Tensor`` (TransformerLens
style): ``None`` reads (or keeps an in-place edit), a tensor of the same shape replaces."""

_ACT, _HOOK = object(), object()


def hook_style(fn: Callable[..., Any]) -> str:
    """How ``fn`` is called: ``"activation"`` (``fn(x)``), ``"keyword"`` (``fn(x, hook=hp)``, as
    TransformerLens calls hooks) or ``"positional"`` (``fn(x, hp)``). A function that can take the
    hook gets it. Raises ``ValueError`` for a function that takes neither form."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature: the documented one-argument form
        return "activation"

    def binds(*args: Any, **kwargs: Any) -> bool:
        try:
            sig.bind(*args, **kwargs)
        except TypeError:
            return False
        return True

    if binds(_ACT, hook=_HOOK):
        return "keyword"
    if binds(_ACT):
        return "activation"
    if binds(_ACT, _HOOK):
        return "positional"
    raise ValueError(
        f"Hook.fn={fn!r} has signature {sig}: it must take fn(activation) or, TransformerLens style, "
        "fn(activation, hook); give it one of these forms (other parameters need defaults)."
    )


class EditIgnoredError(RuntimeError):
    """A hook returned a modified activation at a point where the bridge discards edits."""


@dataclass(frozen=True)
class Hook:
    """A point and a function of the activation there.

    Args:
        point: a point name (``hooks.resid_pre(0)``, ``"blocks.0.attn.hook_z"``, ...).
        fn: ``fn(activation) -> None | Tensor``, or TransformerLens's ``fn(activation, hook)``
            (``hook``: the ``HookPoint`` that fired; for a per-head point, ``attn.o.hook_out``).
            Returning ``None`` leaves the activation as it is (with any in-place edit);
            returning a tensor of the same shape replaces it. For a per-head point
            (``hooks.head_out(l, h)``) the activation is that head's output ``[batch, pos, d_model]``
            (all heads: ``[batch, pos, head, d_model]``).
    """

    point: str
    fn: HookFn
    style: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.point, str) or not self.point:
            raise ValueError(
                f"Hook.point must be a non-empty str such as 'blocks.0.hook_resid_pre', got "
                f"{self.point!r}"
            )
        if not callable(self.fn):
            raise ValueError(f"Hook.fn must be callable fn(activation) -> Tensor | None, got {self.fn!r}")
        object.__setattr__(self, "style", hook_style(self.fn))

    def call(self, x: Tensor, hook_point: Any) -> Tensor | None:
        """``fn`` on the activation ``x``, given the firing ``hook_point`` if it takes one."""
        if self.style == "keyword":
            return self.fn(x, hook=hook_point)
        if self.style == "positional":
            return self.fn(x, hook_point)
        return self.fn(x)


# ---------------------------------------------------------------------------------------------
# levels and removal

_LEVELS = itertools.count(1)


def new_level() -> int:
    """A context level no TransformerLens context uses (they count up from 1)."""
    return -next(_LEVELS)


def add(hook_point: Any, fn: Callable[..., Any], level: int) -> tuple[Any, Any]:
    """Register a TL-style ``fn(tensor, *, hook)`` forward hook; returns ``(hook_point, handle)``."""
    return hook_point, hook_point.add_hook(fn, dir="fwd", level=level)


def remove(added: list[tuple[Any, Any]]) -> None:
    """Remove exactly these handles, newest first; never touches other hooks."""
    errors: list[BaseException] = []
    while added:
        hook_point, handle = added.pop()
        try:
            handle.hook.remove()
            hook_point.fwd_hooks[:] = [h for h in hook_point.fwd_hooks if h is not handle]
            _clear_conversion_state(hook_point)
        except BaseException as e:  # noqa: BLE001 - keep removing the rest, re-raise after
            errors.append(e)
    if errors:
        raise errors[0]


def _clear_conversion_state(hook_point: Any) -> None:
    """Drop what a hook point's shape conversion remembered about the tensors it converted.

    TransformerLens 4.3's attention conversion stores one entry per hooked tensor (keyed by ``id``)
    and never clears it, so every forward with a hook at such a point grows memory. The entries are
    only needed between converting a tensor and reverting it inside one hook call; once no hook is
    left on the point nothing reads them.
    """
    clear = getattr(getattr(hook_point, "hook_conversion", None), "clear_state", None)
    if callable(clear) and not hook_point.fwd_hooks:
        clear()


# ---------------------------------------------------------------------------------------------
# the guard

_POST_HOC = "_fire_post_hoc_hook"


def edit_discarded() -> bool:
    """Whether the running hook was fired on a tensor the bridge has already consumed."""
    frame = sys._getframe(1)
    for _ in range(16):
        if frame is None:
            return False
        if frame.f_code.co_name == _POST_HOC:
            return True
        frame = frame.f_back
    return False


def _check_edit(point: str, name: str, x: Tensor, out: Any) -> Tensor | None:
    if out is None or out is x:
        return out
    if not isinstance(out, Tensor):
        raise TypeError(f"a hook at {point!r} returned {type(out).__name__}; return a Tensor or None")
    if out.shape != x.shape:
        raise ValueError(
            f"a hook at {point!r} returned shape {tuple(out.shape)} for an activation of shape "
            f"{tuple(x.shape)}; return a tensor of the same shape"
        )
    if out.dtype != x.dtype:
        raise ValueError(
            f"a hook at {point!r} returned dtype {out.dtype} for an activation of dtype {x.dtype}; "
            f"return a tensor of the same dtype (e.g. out.to(x.dtype))"
        )
    if edit_discarded():
        raise EditIgnoredError(
            f"a hook at {point!r} (bridge hook {name!r}) returned a modified activation, but this "
            "bridge fires that hook after its wrapped module has consumed the value, so the edit "
            "would be silently discarded. Edit a point that feeds the computation instead (e.g. "
            "attn.hook_q/hook_k for scores, attn.hook_z or hooks.head_out(l, h) for head outputs)."
        )
    return out


# ---------------------------------------------------------------------------------------------
# expansion of one Hook into TL hook functions


def _version(x: Tensor) -> int | None:
    """The tensor's in-place version counter (``None`` for inference tensors, which keep none)."""
    try:
        return x._version
    except RuntimeError:
        return None


def _edited_in_place(x: Tensor, before: int | None, out: Any) -> bool:
    return out is None and before is not None and _version(x) != before


def _expand(res: Resolved, hook: Hook) -> list[tuple[Any, Callable[..., Any]]]:
    if not res.per_head:
        point, name, hook_point, call = res.point, res.name, res.hook_point, hook.call

        def wrapper(x: Tensor, *, hook: Any = None) -> Tensor | None:
            before = _version(x)
            out = call(x, hook_point)
            if _edited_in_place(x, before, out) and edit_discarded():
                _check_edit(point, name, x, x.clone())  # raises EditIgnoredError
            return _check_edit(point, name, x, out)

        return [(hook_point, wrapper)]
    return _expand_head(res, hook)


def head_outputs(z: Tensor, attn: Any, head: int | None) -> Tensor:
    """``z[:, :, h] @ W_O[h]``: one head ``[..., d_model]`` or all heads ``[..., head, d_model]``."""
    w_o = attn.W_O.to(device=z.device, dtype=z.dtype)
    if head is None:
        return torch.einsum("...hd,hdm->...hm", z, w_o)
    return z[..., head, :] @ w_o[head]


def _expand_head(res: Resolved, hook_: Hook) -> list[tuple[Any, Callable[..., Any]]]:
    state: dict[str, Tensor] = {}
    point = res.point

    def record_z(z: Tensor, *, hook: Any = None) -> None:
        state["z"] = z
        return None

    def edit_out(out: Tensor, *, hook: Any = None) -> Tensor | None:
        z = state.pop("z", None)
        if z is None:
            raise RuntimeError(
                f"per-head point {point!r}: attn.hook_z did not fire before attn.o.hook_out"
            )
        y = head_outputs(z, res.attn, res.heads)
        before = _version(y)
        new = hook_.call(y, res.out_hook_point)
        if _edited_in_place(y, before, new):  # y is computed here: an in-place edit must be applied
            new = y.clone()
            y = head_outputs(z, res.attn, res.heads)
        new = _check_edit(point, res.name, y, new)
        if new is None or new is y:
            return None
        delta = new - y
        if res.heads is None:
            delta = delta.sum(-2)
        return out + delta

    return [(res.hook_point, record_z), (res.out_hook_point, edit_out)]


# ---------------------------------------------------------------------------------------------
# apply


def flatten(hooks: Iterable[Hook | Iterable[Hook]]) -> list[Hook]:
    """Hooks and (one level of) sequences of hooks, as returned by interventions, as one list."""
    if isinstance(hooks, Hook):
        return [hooks]
    out: list[Hook] = []
    for h in hooks:
        if isinstance(h, Hook):
            out.append(h)
        elif isinstance(h, Iterable) and not isinstance(h, (str, bytes)):
            for inner in h:
                if not isinstance(inner, Hook):
                    raise TypeError(f"expected a Hook, got {type(inner).__name__}: {inner!r}")
                out.append(inner)
        else:
            raise TypeError(f"expected a Hook or a sequence of Hooks, got {type(h).__name__}: {h!r}")
    return out


class apply:  # noqa: N801 - a verb, used as `with hooks.apply(model, [...]):`
    """Context manager: register ``hooks`` on ``model``; remove exactly those on exit.

    Args:
        model: a TransformerLens ``TransformerBridge``.
        hooks: ``Hook``s, or sequences of them (as returned by e.g. :func:`hooks.splice`).

    All points are resolved before anything is registered, so an unknown name
    (:class:`hooks.PointError`) leaves the model untouched. The context yields the model.
    """

    def __init__(self, model: Any, hooks: Iterable[Hook | Iterable[Hook]]) -> None:
        self.model = model
        self.hooks = tuple(flatten(hooks))
        self.level: int | None = None
        self._added: list[tuple[Any, Any]] = []
        self._entered = False

    def __enter__(self) -> Any:
        if self._entered:
            raise RuntimeError("this hooks.apply(...) context was already entered; create a new one")
        self._entered = True
        plan = [_expand(resolve(self.model, h.point), h) for h in self.hooks]
        self.level = new_level()
        try:
            for pieces in plan:
                for hook_point, fn in pieces:
                    self._added.append(add(hook_point, fn, self.level))
        except BaseException:
            remove(self._added)
            raise
        return self.model

    def __exit__(self, *exc: object) -> None:
        remove(self._added)
