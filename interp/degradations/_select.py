"""Which weights a degradation moves: ``restrict=`` resolved against a model, with a mask per parameter.

A restrict names parameters by fnmatch globs or prefixes, in the Hugging Face scheme or, on a
TransformerBridge, the TransformerLens one (:func:`transformerlens_names`), plus **head slices**
``"blocks.L.attn.head.H"``: head H's rows of W_Q, W_K, W_V (and their biases) and its columns of
W_O, as 0/1 masks on the parameters (Wang et al. 2025, "Differentiation and specialization of
attention heads via the refined local learning coefficient": a head's weight-restricted λ̂ samples
only those weights). A native bridge stores q/k/v as ``Linear`` weights ``[n_heads·d_head, d_model]``
(head H: rows H·d_head … (H+1)·d_head) and o as ``[d_model, n_heads·d_head]`` (head H: those
columns); a Hugging Face GPT-2 bridge stores ``Conv1D`` weights transposed (``[in, out]``), so the
slices swap axes. The selected set is Σ_p |mask_p| weights; every pattern must select something.

Every check runs before any work: a pattern that matches nothing (also one misspelt pattern among
good ones) names the closest valid names; a mask that is not 0/1, holds NaN, or is all zeros, or a
selection of zero weights, is a ``ValueError`` naming the value and the fix.

Example::

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    >>> [n for n, _, _ in select_parameters(net, ["0.*"])]
    ['0.weight', '0.bias']
    >>> select_parameters(net, ["0.*", "2.weight"])
    Traceback (most recent call last):
    ...
    ValueError: restrict pattern '2.weight' matches no parameter of Sequential (the other patterns do) (restrict=['0.*', '2.weight']); closest valid names: '1.weight', '0.weight', ... Fix or drop the pattern.
"""

from __future__ import annotations

import difflib
import fnmatch
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

import torch

logger = logging.getLogger("interp.degradations")

__all__ = ["Restrict", "clean_name", "transformerlens_names", "select_parameters", "check_restrict",
           "head_pattern", "selected_size"]

def clean_name(name: str) -> str:
    """A parameter name without TransformerBridge's ``._original_component`` wrapper segments."""
    return name.replace("._original_component", "").replace("_original_component.", "")


def _span(p: torch.Tensor) -> tuple[int, int, int]:
    """(storage id, first element, one past the last element) of a tensor in its storage."""
    start = p.storage_offset()
    extent = 1 + sum((s - 1) * st for s, st in zip(p.shape, p.stride())) if p.numel() else 0
    return p.untyped_storage().data_ptr(), start, start + extent


def _elements(p: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Which elements of storage positions ``[lo, hi)`` the tensor ``p`` covers (a bool mask)."""
    idx = torch.arange(hi - lo).as_strided(p.shape, p.stride(), p.storage_offset() - lo)
    mask = torch.zeros(hi - lo, dtype=torch.bool)
    mask[idx.reshape(-1)] = True
    return mask


def _shares_elements(p: torch.Tensor, span: tuple[int, int, int], q: torch.Tensor,
                     other: tuple[int, int, int]) -> bool:
    """Whether two tensors share at least one storage element (not just an overlapping extent:
    the q/k/v column blocks of a fused matrix interleave without sharing any element)."""
    if span[0] != other[0] or not (span[1] < other[2] and other[1] < span[2]):
        return False
    if (p.shape, p.stride(), p.storage_offset()) == (q.shape, q.stride(), q.storage_offset()):
        return True
    lo, hi = min(span[1], other[1]), max(span[2], other[2])
    return bool((_elements(p, lo, hi) & _elements(q, lo, hi)).any())


def _unread_fused(model: torch.nn.Module) -> set[int]:
    """ids of parameters a TransformerBridge holds but its forward never reads: the fused QKV matrix
    of a joint-QKV attention (GPT-2's ``c_attn``, GPT-NeoX's ``query_key_value``), which the bridge
    splits at boot into the ``q``/``k``/``v`` projections it actually runs (views of the fused
    matrix on GPT-2, independent copies on GPT-NeoX). Perturbing it would move nothing (and its
    gradient is always None), so the sampler must move the split projections instead."""
    out: set[int] = set()
    for m in model.modules():
        fused = getattr(m, "qkv", None) if callable(getattr(m, "split_qkv_matrix", None)) else None
        if isinstance(fused, torch.nn.Module) and all(
                isinstance(getattr(m, s, None), torch.nn.Module) for s in ("q", "k", "v")):
            out.update(id(p) for p in fused.parameters())
    return out


Restrict = Union[None, str, Sequence[str], Callable[[str], bool], Mapping[str, Any]]


_WRAP = "_original_component"


def _matches(names: Sequence[str], patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(c, pat) or c == pat or c.startswith(pat + ".") for c in names for pat in patterns)


def transformerlens_names(model: torch.nn.Module) -> dict[int, list[str]]:
    """TransformerLens-style names of a bridge's parameters (``blocks.0.attn.q.weight``,
    ``blocks.1.mlp.in.weight``, ``embed.weight``, ``unembed.weight``), keyed by ``id(parameter)``.

    A TransformerBridge reaches each parameter along several module paths: through its own
    components (``blocks``, ``attn``, ``mlp``, ``q``, ...), each wrapping a Hugging Face module as
    ``_original_component``. A parameter's TransformerLens names are the cleaned paths that pass
    through the fewest wrappers, then have the fewest segments after the last one: the route
    through the most specific bridge components (a BERT bridge's ``mlp`` wraps the whole layer, so
    ``blocks.0.mlp.attention...`` is not a name of the attention weights; ``blocks.0.attn.q.weight``
    is). ``{}`` for a model that is not a bridge.
    """
    if not isinstance(getattr(model, "blocks", None), torch.nn.Module):
        return {}
    best: dict[int, tuple[tuple[int, int], set[str]]] = {}
    for path, p in torch.nn.Module.named_parameters(model, remove_duplicate=False):
        parts = path.split(".")
        hops = parts.count(_WRAP)
        if not hops:
            continue
        key = (hops, len(parts) - 1 - max(i for i, x in enumerate(parts) if x == _WRAP))
        name = clean_name(path)
        old = best.get(id(p))
        if old is None or key < old[0]:
            best[id(p)] = (key, {name})
        elif key == old[0]:
            old[1].add(name)
    return {k: sorted(v) for k, (_, v) in best.items()}


def _example_pattern(names: Sequence[str]) -> str | None:
    """A glob for the first block of a naming scheme (``'blocks.0.*'``, ``'transformer.h.0.*'``)."""
    for n in names:
        parts = n.split(".")
        for i, x in enumerate(parts):
            if x.isdigit():
                return ".".join(parts[: i + 1]) + ".*"
    return None


def _no_match_hint(model: torch.nn.Module, named: list[tuple[str, torch.Tensor]],
                   tl: dict[int, list[str]]) -> str:
    hf = [clean_name(n) for n, _ in named]
    lens = [x for _, p in named for x in tl.get(id(p), [])[:1]]
    parts = [f"Hugging Face-style names: {', '.join(hf[:4])}, ..."]
    if lens:
        order = sorted(set(lens), key=lambda x: (not x.startswith("blocks."), lens.index(x)))
        parts.append(f"TransformerLens-style names: {', '.join(order[:4])}, ...")
    pats = [p for p in (_example_pattern(lens), _example_pattern(hf)) if p]
    if lens:
        pats += ["'blocks.*.attn.*'", "'embed'"]
    example = " or ".join(repr(p) if not p.startswith("'") else p for p in pats[:4]) or "'*weight'"
    return (f"names look like: {'; '.join(parts)} Give fnmatch globs or name prefixes of these names "
            f"(e.g. {example}).")

#: ``"blocks.L.attn.head.H"`` (also ``blocks.L.attn.heads.H``): one head's Q/K/V rows and O columns.
_HEAD = re.compile(r"^blocks\.(\d+)\.attn\.heads?\.(\d+)$")


def head_pattern(layer: int, head: int) -> str:
    """The restrict pattern of one attention head: ``"blocks.{layer}.attn.head.{head}"``."""
    return f"blocks.{layer}.attn.head.{head}"


def _mask_tensor(owner: str, key: str, value: Any) -> torch.Tensor:
    """A restrict mask checked to hold only 0 and 1, no NaN, and at least one 1."""
    try:
        mask = torch.as_tensor(value)
    except Exception as e:  # noqa: BLE001 - any conversion failure is the user's value
        raise ValueError(f"{owner}: restrict[{key!r}] = {type(value).__name__} is not a mask: give a 0/1 tensor "
                         f"of the parameter's shape (1 = sample, 0 = keep at w0), or None for the whole "
                         f"parameter ({type(e).__name__}: {e}).") from None
    if mask.dtype == torch.bool:
        mask = mask.to(torch.float32)
    if not (mask.is_floating_point() or mask.dtype in (torch.int8, torch.int16, torch.int32, torch.int64,
                                                        torch.uint8)):
        raise ValueError(f"{owner}: restrict[{key!r}] has dtype {mask.dtype}; a mask holds 0 and 1 (bool, int or "
                         "float). Convert it, e.g. mask.float().")
    m = mask.double()
    if bool(torch.isnan(m).any()):
        raise ValueError(f"{owner}: restrict[{key!r}] holds {int(torch.isnan(m).sum())} NaN value(s); a mask "
                         "holds only 0 (keep at w0) and 1 (sample). Replace the NaNs, e.g. "
                         "torch.nan_to_num(mask, nan=0.0).")
    bad = m[(m != 0) & (m != 1)]
    if bad.numel():
        vals = sorted({float(x) for x in bad.flatten()[:1000].tolist()})[:5]
        raise ValueError(f"{owner}: restrict[{key!r}] holds values {vals} besides 0 and 1; a mask holds only "
                         "0 (keep at w0) and 1 (sample): partial weights would scale the noise, not select "
                         "weights. Convert it, e.g. (mask > 0).float().")
    if m.numel() and not bool(m.any()):
        raise ValueError(f"{owner}: restrict[{key!r}] is all zeros: it selects no weight, so nothing would be "
                         "sampled and every draw would be w0 (ΔL 0). Put 1 where weights should move, or "
                         "drop the entry.")
    return mask


def check_restrict(restrict: Restrict, owner: str = "restrict") -> None:
    """The model-independent checks of a ``restrict`` (its type, its patterns, its masks), run at a
    config's construction. :func:`select_parameters` runs these and the checks against a model."""
    if restrict is None or callable(restrict) and not isinstance(restrict, (str, Mapping)):
        return
    if isinstance(restrict, str):
        pats: list[Any] = [restrict]
    elif isinstance(restrict, Mapping):
        pats = list(restrict)
        for k, v in restrict.items():
            if v is not None:
                _mask_tensor(owner, k, v)
    elif isinstance(restrict, Sequence):
        pats = list(restrict)
    else:
        raise ValueError(f"{owner}: restrict={restrict!r}: expected None, a glob pattern, a list of patterns, a "
                         "predicate name -> bool or a mapping pattern -> mask.")
    if not pats:
        raise ValueError(f"{owner}: restrict={restrict!r} is empty: it selects no weight. Give at least one "
                         "pattern, or restrict=None for every parameter.")
    for p in pats:
        if not isinstance(p, str) or not p:
            raise ValueError(f"{owner}: restrict pattern {p!r} is not a non-empty string; patterns are fnmatch "
                             "globs or name prefixes such as 'blocks.0.*' or 'blocks.1.attn.head.0'.")


def _closest(pattern: str, names: Sequence[str]) -> list[str]:
    """Valid names (and their module prefixes) closest to a pattern that matched nothing."""
    pool: list[str] = []
    for n in names:
        parts = n.split(".")
        for k in range(len(parts), 0, -1):
            x = ".".join(parts[:k])
            if x not in pool:
                pool.append(x)
    return difflib.get_close_matches(pattern.replace("*", ""), pool, n=3, cutoff=0.4) or list(names[:3])


def _head_masks(model: torch.nn.Module, pattern: str, layer: int, head: int,
                tl: dict[int, list[str]], named: list[tuple[str, torch.Tensor]]
                ) -> dict[str, torch.Tensor]:
    """``{parameter name: 0/1 mask}`` of one head's Q/K/V rows (and bias entries) and O columns."""
    cfg = getattr(model, "cfg", None)
    n_heads, d_head = getattr(cfg, "n_heads", None), getattr(cfg, "d_head", None)
    if not tl or not n_heads or not d_head:
        raise ValueError(f"restrict pattern {pattern!r}: head slices need a TransformerBridge with cfg.n_heads "
                         f"and cfg.d_head; {type(model).__name__} has none. Give the weights by name instead.")
    if head >= n_heads:
        raise ValueError(f"restrict pattern {pattern!r}: head {head} out of range, the model has {n_heads} "
                         f"heads per layer (0 … {n_heads - 1}).")
    def owner_of(name: str) -> Any:
        try:
            return model.get_submodule(name.rsplit(".", 1)[0])
        except AttributeError:
            return None

    out: dict[str, torch.Tensor] = {}
    found = set()
    for n, p in named:
        for tname in tl.get(id(p), []):
            m = re.match(rf"^blocks\.{layer}\.attn\.([qkvo])\.(weight|bias)$", tname)
            if not m:
                continue
            which, kind = m.groups()
            if which == "o" and kind == "bias":
                continue  # shared by all heads: not part of one head
            owner = owner_of(n)
            conv = owner is not None and hasattr(owner, "nf")  # HF Conv1D: weight stored [in, out]
            axis = (1 if conv else 0) if which != "o" else (0 if conv else 1)
            if kind == "bias":
                axis = 0
            if p.shape[axis] != n_heads * d_head:
                raise ValueError(f"restrict pattern {pattern!r}: {tname} has shape {tuple(p.shape)}, not "
                                 f"n_heads·d_head = {n_heads * d_head} along the head axis (grouped-query "
                                 "attention?); give the weights by name with a mask of your own.")
            mask = torch.zeros(p.shape, dtype=p.dtype, device=p.device)
            mask.narrow(axis, head * d_head, d_head).fill_(1)
            out[n] = mask
            found.add(which)
            break
    if not found:
        raise ValueError(f"restrict pattern {pattern!r}: layer {layer} has no attention q/k/v/o weights named "
                         f"blocks.{layer}.attn.[qkvo].weight (layers: 0 … {getattr(cfg, 'n_layers', '?')}).")
    return out


def _or(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    if a is None or b is None:
        return None
    return torch.maximum(a, b)


def select_parameters(
    model: torch.nn.Module, restrict: Restrict = None
) -> list[tuple[str, torch.nn.Parameter, torch.Tensor | None]]:
    """The parameters a degradation perturbs: ``[(name, parameter, mask or None)]``.

    De-duplicated by storage: a parameter that shares memory with another selected parameter is
    dropped, keeping the larger one, so noise is applied once (tied weights listed twice). A
    bridge's fused QKV matrix, which its forward never reads (GPT-2-style bridges list it next to
    the q/k/v views they run; GPT-NeoX bridges next to independent q/k/v copies), is left out, so
    each weight the forward uses is selected exactly once and receives its gradient. ``restrict``
    selects a subset: glob patterns or prefixes matched against the raw and the cleaned names, in
    the Hugging Face scheme (``"transformer.h.1.*"``, ``"layers.1.*"`` on the organisms) or, on a
    TransformerBridge, the TransformerLens one (``"blocks.5.*"``, ``"blocks.*.attn.*"``,
    ``"blocks.0.mlp.*"``, ``"embed"``, ``"unembed"``; :func:`transformerlens_names`), and head slices
    ``"blocks.1.attn.head.0"`` (:func:`head_pattern`); a list of these (their union); a predicate
    on the name; or a mapping ``pattern -> mask`` (a 0/1 tensor of the parameter's shape, or
    ``None`` for the whole parameter). Each pattern must match a parameter and each mask must hold
    only 0 and 1 with at least one 1 (a ``ValueError`` names the pattern and the closest names).
    """
    check_restrict(restrict)
    unread = _unread_fused(model)
    named = [(n, p) for n, p in model.named_parameters()
             if (p.requires_grad or restrict is not None) and id(p) not in unread]
    masks: dict[str, torch.Tensor | None] = {}
    if restrict is not None:
        named, masks = _restricted(model, named, restrict)
    if not named:
        raise ValueError(f"{type(model).__name__} has no trainable parameters to perturb.")
    out = [(n, p, masks.get(n)) for n, p in _distinct_storage(named)]
    if selected_size(out) == 0:
        raise ValueError(f"restrict={restrict!r} selects 0 weights of {type(model).__name__} (every mask is "
                         "zero where the parameters are): nothing would be sampled. Put 1 in the masks "
                         "where weights should move.")
    return out


_Named = list[tuple[str, torch.nn.Parameter]]


def _restricted(model: torch.nn.Module, named: _Named, restrict: Restrict
                ) -> tuple[_Named, dict[str, torch.Tensor | None]]:
    """The parameters of ``named`` that ``restrict`` selects, and their masks (``None``: whole)."""
    tl = transformerlens_names(model)
    if callable(restrict) and not isinstance(restrict, (str, Mapping)):
        keep = [(n, p) for n, p in named if restrict(n)]
        if not keep:
            raise ValueError(f"restrict={restrict!r} (a predicate) is False for every parameter of "
                             f"{type(model).__name__}; " + _no_match_hint(model, named, tl))
        return keep, {}
    table = dict(restrict) if isinstance(restrict, Mapping) else dict.fromkeys(
        [restrict] if isinstance(restrict, str) else list(restrict))
    chosen: dict[str, torch.Tensor | None] = {}
    unmatched = [pat for pat, value in table.items() if not _choose(model, named, tl, pat, value, chosen)]
    if unmatched:
        names = [x for n, p in named for x in (tl.get(id(p), [])[:1] or [clean_name(n)])]
        pat = unmatched[0]
        others = " (the other patterns do)" if len(unmatched) < len(table) else ""
        close = ", ".join(repr(c) for c in _closest(pat, names))
        more = f" ({len(unmatched)} patterns match nothing: {unmatched})" if len(unmatched) > 1 else ""
        raise ValueError(
            f"restrict pattern {pat!r} matches no parameter of {type(model).__name__}{others} "
            f"(restrict={list(table)!r}); closest valid names: {close}, ...{more} Fix or drop the pattern."
            + ("" if others else " " + _no_match_hint(model, named, tl)))
    return [(n, p) for n, p in named if n in chosen], chosen


def _choose(model: torch.nn.Module, named: _Named, tl: dict[int, list[str]], pat: str, value: Any,
            chosen: dict[str, torch.Tensor | None]) -> bool:
    """Add what one restrict pattern (a head slice or a glob, with its mask ``value``) selects to
    ``chosen`` (masks of a parameter chosen twice are OR-ed); whether it matched anything."""
    head = _HEAD.match(pat)
    if head:
        hm = _head_masks(model, pat, int(head.group(1)), int(head.group(2)), tl, named)
        if value is not None:
            raise ValueError(f"restrict[{pat!r}]: a head slice takes no mask of its own (its mask "
                             "is the head's rows and columns); give None.")
        for n, m in hm.items():
            chosen[n] = _or(chosen[n], m) if n in chosen else m
        return True
    hits = [(n, p) for n, p in named if _matches([n, clean_name(n), *tl.get(id(p), [])], [pat])]
    for n, p in hits:
        m = None
        if value is not None:
            m = _mask_tensor("restrict", pat, value).to(device=p.device)
            if m.shape != p.shape:
                raise ValueError(
                    f"restrict mask for {n!r} has shape {tuple(m.shape)}; it must have "
                    f"the parameter's shape {tuple(p.shape)} (1 = perturb, 0 = keep)."
                )
            m = m.to(p.dtype)
        chosen[n] = _or(chosen[n], m) if n in chosen else m
    return bool(hits)


def _distinct_storage(named: _Named) -> _Named:
    """``named`` without the parameters that share memory with a larger one (tied weights listed
    twice), in the original order: the largest is kept, anything overlapping it dropped."""
    order = sorted(range(len(named)), key=lambda i: -named[i][1].numel())
    kept: list[int] = []
    spans: list[tuple[int, int, int]] = []
    for i in order:
        p, span = named[i][1], _span(named[i][1])
        if any(_shares_elements(p, span, named[j][1], other) for j, other in zip(kept, spans)):
            logger.debug("parameter %s shares storage with a selected one: skipped", named[i][0])
            continue
        spans.append(span)
        kept.append(i)
    return [named[i] for i in sorted(kept)]


def selected_size(selection: Sequence[tuple[str, torch.Tensor, torch.Tensor | None]]) -> int:
    """Number of weights a selection moves: Σ over parameters of the mask's 1s (or its size)."""
    return int(sum(p.numel() if m is None else int(m.count_nonzero()) for _, p, m in selection))
