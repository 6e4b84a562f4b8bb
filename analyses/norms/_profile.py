"""Streaming residual-stream norms of one model: the stream layout, per-token norms, the folded copy, the fit.

The measurement behind :class:`analyses.norms.ResidualNorms` (Heimersheim & Turner 2023); see
:mod:`analyses.norms` for the maths (write norms, the squared-norm decomposition, post-LN streams).

Example::

    >>> from analyses.norms import profile_norms
    >>> prof = profile_norms(model, task, eval_rows=64, batch_size=16)
    >>> prof.stream_means().shape                                 # mean norm at L0, L1, L2
    torch.Size([3])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

import hooks
from interp.checks import bad_value, check_choice, check_number
from interp.models import device_of

__all__ = ["NormProfile", "profile_norms", "folded_copy", "log_linear_fit"]

_COORDINATES = ("raw", "folded")


@dataclass(frozen=True)
class _Layout:
    n_layers: int
    post_ln: bool
    has_mlp: bool
    stream: tuple[str, ...]  # points of L0..Ln
    ln_out: tuple[str, ...]  # post-LN: LayerNorm outputs entering each block + final (else ())
    block_in: tuple[str, ...]  # what each block's attention write is added to
    mid: tuple[str, ...]  # post-LN: ln1 input sums (else ())
    mid_ln: tuple[str, ...]  # post-LN: ln1 outputs, what the MLP write is added to (else ())
    attn: tuple[str, ...]
    mlp: tuple[str, ...]

    def points(self, writes: bool) -> list[str]:
        pts = list(self.stream) + list(self.ln_out)
        if writes:
            pts += list(self.block_in) + list(self.mid) + list(self.mid_ln) + list(self.attn) + list(self.mlp)
        return list(dict.fromkeys(pts))


def _layout(model: Any) -> _Layout:
    n = int(model.cfg.n_layers)
    post_ln = hooks.is_post_ln(model)
    has_mlp = not bool(getattr(model.cfg, "attn_only", False))
    if has_mlp:
        try:
            hooks.resolve(model, hooks.mlp_out(0))
        except hooks.PointError:
            has_mlp = False
    attn = tuple(hooks.attn_out(layer) for layer in range(n))
    mlp = tuple(hooks.mlp_out(layer) for layer in range(n)) if has_mlp else ()
    if not post_ln:
        stream = tuple(hooks.resid_pre(layer) for layer in range(n)) + (hooks.resid_post(n - 1),)
        return _Layout(n, False, has_mlp, stream, (), stream[:-1], (), (), attn, mlp)
    if not has_mlp:
        raise ValueError("post-LN model without MLPs: not a BERT-style block; ResidualNorms cannot lay it out.")
    ln_out = tuple(hooks.resid_pre(layer) for layer in range(n)) + (hooks.resid_post(n - 1),)
    stream = ("embed_ln.hook_in",) + tuple(f"blocks.{layer}.ln2.hook_in" for layer in range(n))
    mid = tuple(f"blocks.{layer}.ln1.hook_in" for layer in range(n))
    mid_ln = tuple(hooks.resid_mid(layer) for layer in range(n))  # ln1 output on post-LN bridges
    return _Layout(n, True, True, stream, ln_out, ln_out[:-1], mid, mid_ln, attn, mlp)


def _notes(layout: _Layout, skip: int, folded: bool) -> str:
    coords = (
        "folded copy (LayerNorm folded, writing weights centred: enable_compatibility_mode on a copy)"
        if folded else "raw model weights (not LayerNorm-folded)"
    )
    tokens = (
        f"the first {skip} real token(s) of each row excluded (BOS/[CLS])" if skip else "all tokens (BOS included)"
    )
    text = f"Coordinates: {coords}. Tokens: {tokens}; padding excluded. "
    if layout.post_ln:
        text += (
            "POST-LN model: resid_pre/resid_post are LayerNorm outputs (norm set by the LN gains), so L0..Ln "
            "are the pre-LN sums: L0 = embedding sum (embed_ln.hook_in), L{l+1} = block l's sum before its "
            "last LayerNorm (ln2.hook_in); mid_* = the sums before ln1 (ln1.hook_in); LayerNorm outputs "
            "are reported as ln_*; the growth fit starts at L1."
        )
    else:
        text += "Stream points: resid_pre of every block (L0..L{n-1}) and the final resid_post (Ln)."
    return text


# ---------------------------------------------------------------------------------------------
# streaming measurement


@dataclass(frozen=True)
class NormProfile:
    """Per-token scalars from one streamed pass (no activations kept).

    ``values[key]`` is ``[row, pos]`` (float32, NaN where a token is not counted) for the keys
    ``L{l}`` (stream norms), ``ln_L{l}`` (post-LN: LayerNorm outputs), ``mid_L{l}`` (post-LN: sums
    before ln1), ``attn_write_L{l}``, ``mlp_write_L{l}``, ``attn_dsq_L{l}``, ``mlp_dsq_L{l}``;
    ``mask`` marks the counted tokens. ``notes`` states coordinates, tokens and, for post-LN models,
    what ``L{l}`` means.
    """

    values: dict[str, Float[Tensor, "row pos"]]
    mask: Bool[Tensor, "row pos"]
    n_layers: int
    post_ln: bool
    folded: bool
    skip_positions: int
    notes: str

    @property
    def n_tokens(self) -> int:
        return int(self.mask.sum())

    def tokens(self, key: str) -> Float[Tensor, " token"]:
        """The counted tokens' values of ``key`` (row-major order)."""
        return self.values[key][self.mask]

    def mean(self, key: str) -> float:
        return float(self.tokens(key).double().mean())

    def quantile(self, key: str, q: float | list[float]) -> Float[Tensor, "..."]:
        """Quantile(s) with linear interpolation (the median is ``quantile(key, 0.5)``)."""
        import numpy as np

        return torch.as_tensor(np.quantile(self.tokens(key).double().numpy(), q))

    def per_position(self, key: str) -> Float[Tensor, " pos"]:
        """Mean of ``key`` at each position over the counted tokens (NaN where none is counted)."""
        v = self.values[key].double().nan_to_num(0.0) * self.mask
        count = self.mask.sum(0)
        return (v.sum(0) / count).where(count > 0, torch.tensor(float("nan"), dtype=torch.float64))

    def stream_means(self) -> Float[Tensor, " point"]:
        """Mean norm at L0..Ln."""
        return torch.tensor([self.mean(f"L{i}") for i in range(self.n_layers + 1)], dtype=torch.float64)

    def _repr_html_(self) -> str:
        """Notebook display: mean, median and the 10%/90% quantiles of the stream norm per layer."""
        import html

        rows = []
        for i in range(self.n_layers + 1):
            q10, q50, q90 = self.quantile(f"L{i}", [0.1, 0.5, 0.9]).tolist()
            rows.append(f"<tr><td>L{i}</td><td>{self.mean(f'L{i}'):.4g}</td><td>{q50:.4g}</td>"
                        f"<td>{q10:.4g}</td><td>{q90:.4g}</td></tr>")
        return (f"<p>NormProfile: {self.n_tokens} tokens. {html.escape(self.notes)}</p><table><tr><th>layer</th>"
                "<th>mean</th><th>median</th><th>q10</th><th>q90</th></tr>" + "".join(rows) + "</table>")


def _token_mask(
    attention_mask: Int[Tensor, "row pos"] | None, shape: torch.Size, skip: int
) -> Bool[Tensor, "row pos"]:
    """Counted tokens: real (attention_mask 1) and not among the first ``skip`` real tokens of the row."""
    real = torch.ones(shape, dtype=torch.bool) if attention_mask is None else attention_mask.bool().cpu()
    rank = real.long().cumsum(1) - 1  # index of each real token among the real tokens of its row
    return real & (rank >= skip)


def _dsq(base: Tensor, write: Tensor) -> Tensor:
    """‖base + write‖² − ‖base‖² = 2⟨base, write⟩ + ‖write‖² (no cancellation)."""
    return 2.0 * (base * write).sum(-1) + (write * write).sum(-1)


def _check_decomposition(acts: dict[str, Tensor], layout: _Layout, mask: Tensor) -> None:
    """The writes must sum to the residual change (else dsq would not attribute growth)."""

    def check(lhs: Tensor, rhs: Tensor, what: str) -> None:
        err = (lhs - rhs).norm(dim=-1)[mask]
        scale = rhs.norm(dim=-1)[mask].clamp_min(1e-6)
        worst = float((err / scale).max()) if err.numel() else 0.0
        if worst > 1e-3:
            raise ValueError(
                f"{what} does not hold on this architecture (relative error {worst:.2e}), or hooks that "
                "edit the residual stream between the writes are active (e.g. ActivationNoise at "
                "resid_post): the write norms cannot attribute the stream's growth here. Use writes=False."
            )

    for layer in range(layout.n_layers):
        x, a = acts[layout.block_in[layer]].float(), acts[layout.attn[layer]].float()
        if layout.post_ln:
            check(x + a, acts[layout.mid[layer]].float(), f"block {layer}: ln1 input = LN output + attention write")
            u, m = acts[layout.mid_ln[layer]].float(), acts[layout.mlp[layer]].float()
            check(u + m, acts[layout.stream[layer + 1]].float(), f"block {layer}: ln2 input = ln1 output + MLP write")
        else:
            total = x + a + (acts[layout.mlp[layer]].float() if layout.has_mlp else 0.0)
            check(total, acts[layout.stream[layer + 1]].float(), f"block {layer}: x_(l+1) = x_l + attention + MLP writes")


def profile_norms(
    model: Any,
    data: Any,
    attention_mask: Int[Tensor, "row pos"] | None = None,
    *,
    eval_rows: int | None = 256,
    split: str = "test",
    batch_size: int = 64,
    skip_positions: int = 1,
    writes: bool = True,
    coordinates: Literal["raw", "folded"] = "raw",
    progress: bool = False,
) -> NormProfile:
    """Stream rows through ``model`` in batches and keep per-token norms (see :mod:`analyses.norms`):
    the one-shot counterpart of :class:`ResidualNorms`.

    Args:
        model: a TransformerLens ``TransformerBridge`` (pre-LN or post-LN).
        data: a task (``eval_rows`` rows of its ``split``, with its ``attention_mask`` if it has one)
            or token ids ``[row, pos]`` (all rows).
        attention_mask: with token ids: 1 for real tokens, 0 for padding; passed to the forward and
            excludes padding.
        eval_rows: rows of the task's split (``None``: all); ignored for token ids.
        split: the task's split.
        batch_size: rows per forward; peak memory is one batch's activations at the measured points.
        skip_positions: leading real tokens of each row excluded (1: BOS).
        writes: also the attention/MLP write norms and squared-norm increments.
        coordinates: ``"raw"`` or ``"folded"`` (measured on :func:`folded_copy`; ``model`` untouched).
        progress: a ``tqdm.auto`` bar over batches.
    """
    from tqdm.auto import tqdm

    c = "profile_norms"
    check_choice(c, "coordinates", coordinates, _COORDINATES)
    check_number(c, "batch_size", batch_size, integer=True, minimum=1, fix="Rows per forward, e.g. batch_size=64.")
    check_number(c, "skip_positions", skip_positions, integer=True, zero_ok=True, fix="0 keeps BOS.")
    ids, attention_mask = _rows(data, attention_mask, eval_rows, split)
    if coordinates == "folded":
        model = folded_copy(model)
    layout = _layout(model)
    mask = _token_mask(attention_mask, ids.shape, skip_positions)
    n = layout.n_layers
    values = {k: torch.full(ids.shape, float("nan"), dtype=torch.float32) for k in _keys(layout, writes)}
    points = layout.points(writes)
    device = device_of(model)
    for start in tqdm(range(0, len(ids), batch_size), desc="norms", disable=not progress, leave=False):
        sl = slice(start, start + batch_size)
        kwargs = {} if attention_mask is None else {"attention_mask": attention_mask[sl].to(device)}
        acts = hooks.capture(model, ids[sl].to(device), points, **kwargs)
        if writes and start == 0:
            _check_decomposition(acts, layout, mask[sl].to(device))
        out = _batch_norms(acts, layout, writes)
        del acts
        keep = mask[sl]
        for k, v in out.items():
            values[k][sl] = v.cpu().where(keep, torch.tensor(float("nan")))
    return NormProfile(values, mask, n, layout.post_ln, coordinates == "folded", skip_positions,
                       _notes(layout, skip_positions, coordinates == "folded"))


def _rows(data: Any, attention_mask: Tensor | None, eval_rows: int | None, split: str
          ) -> tuple[Int[Tensor, "row pos"], Tensor | None]:
    """Token ids ``[row, pos]`` and the attention mask (or ``None``) of ``data``: a task's split (its
    own mask) or token ids (with the mask given)."""
    c = "profile_norms"
    if hasattr(data, "tensors"):  # a task
        check_number(c, "eval_rows", eval_rows, integer=True, minimum=1, none_ok=True)
        if attention_mask is not None:
            raise bad_value(c, "attention_mask", "<tensor>", "None when data is a task (its own mask is used)")
        rows = data.tensors(split, rows=eval_rows)
        if "input_ids" not in rows:
            raise ValueError(f"profile_norms: task {getattr(data, 'name', data)!r} has no numeric input_ids column.")
        input_ids, attention_mask = rows["input_ids"], rows.get("attention_mask")
    else:
        input_ids = data
    ids = torch.as_tensor(input_ids).long()
    if ids.dim() != 2:
        raise ValueError(f"input_ids must be [row, pos], got shape {tuple(ids.shape)}.")
    if attention_mask is not None and tuple(attention_mask.shape) != tuple(ids.shape):
        raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {tuple(ids.shape)}.")
    return ids, attention_mask


def _keys(layout: _Layout, writes: bool) -> list[str]:
    """The quantities measured per token: ``L{i}`` stream norms, post-LN ``ln_L{i}``/``mid_L{i}``, and
    with ``writes`` the attention/MLP write norms and squared-norm increments."""
    n = layout.n_layers
    keys = [f"L{i}" for i in range(n + 1)]
    if layout.post_ln:
        keys += [f"ln_L{i}" for i in range(n + 1)] + ([f"mid_L{i}" for i in range(n)] if writes else [])
    if writes:
        keys += [f"attn_write_L{i}" for i in range(n)] + [f"attn_dsq_L{i}" for i in range(n)]
        if layout.has_mlp:
            keys += [f"mlp_write_L{i}" for i in range(n)] + [f"mlp_dsq_L{i}" for i in range(n)]
    return keys


def _batch_norms(acts: dict[str, Tensor], layout: _Layout, writes: bool) -> dict[str, Tensor]:
    """Per-token norms of one batch's captured activations, keyed as :func:`_keys`."""
    out: dict[str, Tensor] = {}
    for i, p in enumerate(layout.stream):
        out[f"L{i}"] = acts[p].float().norm(dim=-1)
    for i, p in enumerate(layout.ln_out):
        out[f"ln_L{i}"] = acts[p].float().norm(dim=-1)
    if writes:
        for layer in range(layout.n_layers):
            x, a = acts[layout.block_in[layer]].float(), acts[layout.attn[layer]].float()
            out[f"attn_write_L{layer}"] = a.norm(dim=-1)
            out[f"attn_dsq_L{layer}"] = _dsq(x, a)
            if layout.post_ln:
                out[f"mid_L{layer}"] = acts[layout.mid[layer]].float().norm(dim=-1)
            if layout.has_mlp:
                m = acts[layout.mlp[layer]].float()
                base = acts[layout.mid_ln[layer]].float() if layout.post_ln else x + a
                out[f"mlp_write_L{layer}"] = m.norm(dim=-1)
                out[f"mlp_dsq_L{layer}"] = _dsq(base, m)
    return out


# ---------------------------------------------------------------------------------------------
# folded (HookedTransformer-style) view on a copy


def folded_copy(model: Any) -> Any:
    """A copy of ``model`` with LayerNorm folded and writing weights centred (``model`` untouched).

    TL4's ``enable_compatibility_mode()`` folds irreversibly, and ``copy.deepcopy`` of a bridge that
    has run can share hooks with the original, so a native bridge is rebuilt from its config and
    state dict; any other bridge is deep-copied and then checked to share no parameter storage and
    no hook with the original (an error otherwise). Post-LN models are refused: folding LayerNorm
    into the next layer's weights is defined for pre-LN blocks only.
    """
    import copy

    if hooks.is_post_ln(model):
        raise ValueError(
            "coordinates='folded' on a post-LN model (BERT, MiniLM): LayerNorm folding is defined for "
            "pre-LN blocks only; use coordinates='raw' (the post-LN pre-LN sums are already reported)."
        )
    device = device_of(model)
    if getattr(model.cfg, "architecture", None) == "TransformerLensNative":
        from transformer_lens.model_bridge import TransformerBridge

        twin = TransformerBridge.boot_native(copy.deepcopy(model.cfg))
        twin.load_state_dict(model.state_dict(), strict=True)
        if device_of(twin) != device:
            twin = twin.to(device)
        twin = twin.eval()
    else:
        twin = copy.deepcopy(model).eval()
        _check_isolated(model, twin)
    twin.enable_compatibility_mode()
    return twin


def _check_isolated(model: Any, twin: Any) -> None:
    """``twin`` shares no parameter storage and no hook with ``model``."""
    own = {p.untyped_storage().data_ptr() for p in model.parameters()}
    if any(p.untyped_storage().data_ptr() in own for p in twin.parameters()):
        raise RuntimeError("folded_copy: the copy shares parameter storage with the model; refusing to fold it.")
    fired: list[int] = []

    def mark(x: Tensor, hook: Any = None) -> None:
        fired.append(1)

    with hooks.apply(twin, [hooks.Hook(hooks.resid_pre(0), mark)]):
        with torch.no_grad():
            model(torch.zeros((1, 1), dtype=torch.long, device=device_of(model)))
    if fired:
        raise RuntimeError(
            "folded_copy: a hook added to the deep copy fired in the original model (TL4 deep copies share "
            "hooks); refusing to fold. Rebuild the model from its config and state dict instead."
        )


# ---------------------------------------------------------------------------------------------
# fit


def log_linear_fit(means: Float[Tensor, " point"]) -> tuple[float, float]:
    """Least-squares slope s of log(means) against index, and the fit's R² (1 for a constant)."""
    y = torch.as_tensor(means, dtype=torch.float64).log()
    x = torch.arange(len(y), dtype=torch.float64)
    xc, yc = x - x.mean(), y - y.mean()
    slope = (xc * yc).sum() / (xc * xc).sum()
    resid = yc - slope * xc
    ss_tot = float((yc * yc).sum())
    r2 = 1.0 - float((resid * resid).sum()) / ss_tot if ss_tot > 0 else 1.0
    return float(slope), r2


def _log_linear_fit(means: Tensor) -> tuple[Tensor, float]:  # kept for callers of the first version
    slope, r2 = log_linear_fit(means)
    return torch.tensor(slope, dtype=torch.float64), r2


def _weight_norms(model: Any, layout: _Layout) -> dict[str, float]:
    out: dict[str, float] = {}
    with torch.no_grad():
        for layer in range(layout.n_layers):
            attn = model.blocks[layer].attn
            w_v, w_o = attn.W_V.float(), attn.W_O.float()
            if w_v.shape[0] != w_o.shape[0]:  # grouped-query attention: shared value heads
                w_v = w_v.repeat_interleave(w_o.shape[0] // w_v.shape[0], dim=0)
            out[f"wov_L{layer}"] = float(torch.linalg.matrix_norm(w_v @ w_o).pow(2).sum().sqrt())
            if layout.has_mlp:
                out[f"wout_L{layer}"] = float(model.blocks[layer].mlp.W_out.float().norm())
        out["param_norm"] = _param_norm(model)
    return out


def _param_norm(model: Any) -> float:
    """‖θ‖ over all parameters, each stored tensor counted once (tied embeddings are one tensor)."""
    seen: set[tuple[int, int, tuple[int, ...]]] = set()
    total = 0.0
    for p in model.parameters():
        key = (p.untyped_storage().data_ptr(), p.storage_offset(), tuple(p.shape))
        if key not in seen:
            seen.add(key)
            total += float(p.detach().double().pow(2).sum())
    return math.sqrt(total)
