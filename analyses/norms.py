"""Residual-stream norms per layer and position (Heimersheim & Turner 2023), as a sweep analysis.

What is measured. For a pre-LN transformer with residual stream x_0 (embeddings), x_{l+1} = x_l + a_l +
m_l (a_l, m_l: what block l's attention and MLP write), the L2 norm ‖x_l(b, t)‖ of ``resid_pre(l)``
for every block and of the final ``resid_post`` (stream points ``L0 … Ln``), over a task's tokens:
mean, median, quantiles (``mean_L{l}``, ``median_L{l}``, ``q5_L{l}``, …), the mean squared norm
(``msq_L{l}``), the ratio of consecutive means (``ratio_L{l}`` = mean_L{l} / mean_L{l-1}) and, on
request, the mean at single positions (``mean_L{l}_pos{t}``). Tokens: the first ``skip_positions``
*real* tokens of each row are excluded (position 0 / BOS by default: its norm follows a different
law) and padding (``attention_mask == 0``) is excluded and masked in the forward. Everything is
streamed batch by batch: only per-token scalars are kept, never a cache of activations.

Attribution of growth. Each component's write norm (``attn_write_L{l}`` = mean ‖a_l‖,
``mlp_write_L{l}`` = mean ‖m_l‖, read at ``hooks.attn_out``/``hooks.mlp_out``, the raw writes before
any residual add or LayerNorm on every architecture) and the change of squared norm it causes,

    ‖x + a‖² − ‖x‖² = 2⟨x, a⟩ + ‖a‖²     (``attn_dsq_L{l}``; ``mlp_dsq_L{l}`` likewise for m on x + a),

so that for a pre-LN model msq_L{l+1} − msq_L{l} = attn_dsq_L{l} + mlp_dsq_L{l} exactly (up to float
rounding). The decomposition is checked on the first batch; an architecture where it does not hold is
an error, not a quiet number. Weight norms that explain write norms (Heimersheim & Turner: ‖W_OV‖_F
tracks attention-output norms): ``wov_L{l}`` = (Σ_h ‖W_V^h W_O^h‖_F²)^½, ``wout_L{l}`` = ‖W_out‖_F, and
``param_norm`` (all parameters, de-duplicated by storage).

Growth factor. g = exp(s), s the least-squares slope of log mean_L{l} against l over the stream
points ``fit_from … fit_to`` (reported), with the fit's R² (``growth``, ``growth_r2``). A random-init
pre-LN model grows *diffusively*: each write is roughly independent of the stream it is added to and,
its input being LayerNorm-ed, of the same expected size c at every layer, so E‖x_l‖² ≈ ‖x_0‖² + c·l
(linear in l), not exponentially; trained models depart from this.

Coordinates. Raw model weights (what the degradations perturb), stated in the output as
``folded = 0``. ``coordinates="folded"`` measures the HookedTransformer view (LayerNorm folded, writing
weights centred: TL4's ``enable_compatibility_mode()``), which is what published numbers use, on a
*copy* rebuilt from the model's config and state dict (native bridges) or a deep copy checked to
share neither parameters nor hooks with the original; the user's model is never folded. Centring the
writing weights makes the stream the per-token centred raw stream, x − mean(x)·1, which the tests check.

Post-LN models (BERT, MiniLM; ``hooks.is_post_ln``). There ``resid_pre/resid_post`` are LayerNorm
outputs whose norm is set by the LN gains (≈ √d_model at random init), so the stream points ``L{l}``
are the *pre-LN sums* instead: ``L0`` the embedding sum (``embed_ln.hook_in``), ``L{l+1}`` block l's
sum before its last LayerNorm (``blocks.{l}.ln2.hook_in``); ``mid_mean_L{l}`` is the sum before the
attention LayerNorm (``blocks.{l}.ln1.hook_in``). The LayerNorm outputs are reported as
``ln_mean_L{l}``/``ln_median_L{l}``, dsq is relative to the LN output the write is added to, the
growth fit starts at L1 (L0 is not a sum of an LN output and a write), and ``post_ln = 1`` is in the
output with a note logged at setup (``ResidualNorms.notes``). TL 4.3 caveat checked here: on BERT,
TransformerLens' own ``hook_attn_out`` holds residual + attention after LayerNorm; ``hooks.attn_out``
resolves to the raw attention write (``attn.o.hook_out``), which is what is measured.

Stated in every output: ``skip_positions``, ``post_ln``, ``folded``, ``n_tokens``, ``fit_from``,
``fit_to``. Plots (matplotlib imported lazily): :func:`plot_norms_by_layer` (norm vs layer, one line
per draw coloured by loss increase) and :func:`plot_growth` (growth factor vs loss increase, or vs
checkpoint step with ``x="level"``).

Why hand-written: TL4 has no norm-tracking utility and published code (Heimersheim & Turner) runs
``run_with_cache`` on folded HookedTransformers; this streams on raw bridges and handles post-LN.

Example::

    >>> import interp
    >>> from analyses.norms import ResidualNorms
    >>> model, task = interp.organisms.load("induction")          # doctest: +SKIP
    >>> norms = ResidualNorms(); norms.setup(model, task)           # doctest: +SKIP
    >>> out = norms(model, task)                                    # doctest: +SKIP
    >>> out["skip_positions"], out["post_ln"], out["folded"]        # doctest: +SKIP
    (1.0, 0.0, 0.0)
    >>> from analyses.norms import norm_profile                    # streaming, per-token values
    >>> prof = norm_profile(model, task.tensors("test", rows=64)["input_ids"])  # doctest: +SKIP
    >>> prof.per_position("L2").shape                               # doctest: +SKIP
    torch.Size([33])
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

import hooks

__all__ = [
    "NormProfile",
    "ResidualNorms",
    "ResidualNormsConfig",
    "folded_copy",
    "log_linear_fit",
    "norm_profile",
    "plot_growth",
    "plot_norms_by_layer",
]

log = logging.getLogger(__name__)

_COORDINATES = ("raw", "folded")
_SPLITS = ("train", "test")
_STREAM_TEMPLATE = r"^{stat}_L(\d+)$"


# ---------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class ResidualNormsConfig:
    """What :class:`ResidualNorms` measures and on which tokens.

    Attributes:
        rows: evaluation rows of ``split``.
        batch_size: rows per forward (memory is one batch's activations at the measured points).
        skip_positions: leading real tokens of each row excluded (1: BOS / [CLS]).
        quantiles: reported as ``q{100·q:g}_L{l}`` (e.g. ``q5_L0``), in (0, 1).
        positions: report ``mean_L{l}_pos{t}`` at these positions (each ≥ ``skip_positions``).
        writes: also measure the attention/MLP write norms and their squared-norm increments.
        weights: also report ``wov_L{l}``, ``wout_L{l}``, ``param_norm``.
        coordinates: ``"raw"`` (model weights as they are) or ``"folded"`` (LayerNorm folded and
            writing weights centred, on a copy: the HookedTransformer view of published numbers).
        fit_layers: ``(first, last)`` stream points of the growth fit, inclusive; ``None``: all
            (from L1 on post-LN models).
        split: ``"test"`` or ``"train"``.
    """

    rows: int = 256
    batch_size: int = 64
    skip_positions: int = 1
    quantiles: tuple[float, ...] = (0.05, 0.25, 0.75, 0.95)
    positions: tuple[int, ...] = ()
    writes: bool = True
    weights: bool = True
    coordinates: Literal["raw", "folded"] = "raw"
    fit_layers: tuple[int, int] | None = None
    split: str = "test"

    def __post_init__(self) -> None:
        for name in ("rows", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: must be a positive integer.")
        if isinstance(self.skip_positions, bool) or not isinstance(self.skip_positions, int) or self.skip_positions < 0:
            raise ValueError(f"skip_positions={self.skip_positions!r}: must be an integer ≥ 0 (0 keeps BOS).")
        if not isinstance(self.quantiles, (tuple, list)) or not all(
                isinstance(q, (int, float)) and not isinstance(q, bool) for q in self.quantiles):
            raise ValueError(f"quantiles={self.quantiles!r}: give numbers in (0, 1), e.g. (0.05, 0.95).")
        object.__setattr__(self, "quantiles", tuple(float(q) for q in self.quantiles))
        bad = [q for q in self.quantiles if not 0.0 < q < 1.0]
        if bad:
            raise ValueError(f"quantiles={self.quantiles!r}: each must lie in (0, 1); the median is always reported.")
        object.__setattr__(self, "positions", tuple(self.positions))
        bad_pos = [t for t in self.positions if isinstance(t, bool) or not isinstance(t, int) or t < self.skip_positions]
        if bad_pos:
            raise ValueError(
                f"positions={self.positions!r}: each must be an int ≥ skip_positions={self.skip_positions} "
                "(excluded positions have no tokens); lower skip_positions to see position 0."
            )
        for name in ("writes", "weights"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r}: must be True or False.")
        if self.coordinates not in _COORDINATES:
            raise ValueError(f"coordinates={self.coordinates!r}: must be one of {_COORDINATES}.")
        if self.fit_layers is not None:
            fl = tuple(self.fit_layers)
            if len(fl) != 2 or any(isinstance(v, bool) or not isinstance(v, int) for v in fl) or not 0 <= fl[0] < fl[1]:
                raise ValueError(
                    f"fit_layers={self.fit_layers!r}: give (first, last) stream points with 0 ≤ first < last, "
                    "e.g. (1, 6), or None for all."
                )
            object.__setattr__(self, "fit_layers", fl)
        if self.split not in _SPLITS:
            raise ValueError(f"split={self.split!r}: must be one of {_SPLITS}.")


# ---------------------------------------------------------------------------------------------
# where to read: the layout of points on one bridge


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


def norm_profile(
    model: Any,
    input_ids: Int[Tensor, "row pos"],
    attention_mask: Int[Tensor, "row pos"] | None = None,
    *,
    batch_size: int = 64,
    skip_positions: int = 1,
    writes: bool = True,
    coordinates: Literal["raw", "folded"] = "raw",
    progress: bool = False,
) -> NormProfile:
    """Stream ``input_ids`` through ``model`` in batches and keep per-token norms (see module docs).

    Args:
        model: a TransformerLens ``TransformerBridge`` (pre-LN or post-LN).
        input_ids: token ids ``[row, pos]``.
        attention_mask: 1 for real tokens, 0 for padding; passed to the forward and excludes padding.
        batch_size: rows per forward; peak memory is one batch's activations at the measured points.
        skip_positions: leading real tokens of each row excluded (1: BOS).
        writes: also the attention/MLP write norms and squared-norm increments.
        coordinates: ``"raw"`` or ``"folded"`` (measured on :func:`folded_copy`; ``model`` untouched).
        progress: a ``tqdm.auto`` bar over batches.
    """
    from tqdm.auto import tqdm

    if coordinates not in _COORDINATES:
        raise ValueError(f"coordinates={coordinates!r}: must be one of {_COORDINATES}.")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: must be a positive integer.")
    if coordinates == "folded":
        model = folded_copy(model)
    layout = _layout(model)
    ids = torch.as_tensor(input_ids).long()
    if ids.dim() != 2:
        raise ValueError(f"input_ids must be [row, pos], got shape {tuple(ids.shape)}.")
    if attention_mask is not None and tuple(attention_mask.shape) != tuple(ids.shape):
        raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {tuple(ids.shape)}.")
    mask = _token_mask(attention_mask, ids.shape, skip_positions)
    n = layout.n_layers
    keys = [f"L{i}" for i in range(n + 1)]
    if layout.post_ln:
        keys += [f"ln_L{i}" for i in range(n + 1)] + ([f"mid_L{i}" for i in range(n)] if writes else [])
    if writes:
        keys += [f"attn_write_L{i}" for i in range(n)] + [f"attn_dsq_L{i}" for i in range(n)]
        if layout.has_mlp:
            keys += [f"mlp_write_L{i}" for i in range(n)] + [f"mlp_dsq_L{i}" for i in range(n)]
    values = {k: torch.full(ids.shape, float("nan"), dtype=torch.float32) for k in keys}
    points = layout.points(writes)
    device = next(iter(model.parameters())).device
    for start in tqdm(range(0, len(ids), batch_size), desc="norms", disable=not progress, leave=False):
        sl = slice(start, start + batch_size)
        kwargs = {} if attention_mask is None else {"attention_mask": attention_mask[sl].to(device)}
        acts = hooks.capture(model, ids[sl].to(device), points, **kwargs)
        if writes and start == 0:
            _check_decomposition(acts, layout, mask[sl].to(device))
        out: dict[str, Tensor] = {}
        for i, p in enumerate(layout.stream):
            out[f"L{i}"] = acts[p].float().norm(dim=-1)
        for i, p in enumerate(layout.ln_out):
            out[f"ln_L{i}"] = acts[p].float().norm(dim=-1)
        if writes:
            for layer in range(n):
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
        del acts
        keep = mask[sl]
        for k, v in out.items():
            values[k][sl] = v.cpu().where(keep, torch.tensor(float("nan")))
    return NormProfile(values, mask, n, layout.post_ln, coordinates == "folded", skip_positions,
                       _notes(layout, skip_positions, coordinates == "folded"))


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
    device = next(iter(model.parameters())).device
    if getattr(model.cfg, "architecture", None) == "TransformerLensNative":
        from transformer_lens.model_bridge import TransformerBridge

        twin = TransformerBridge.boot_native(copy.deepcopy(model.cfg))
        twin.load_state_dict(model.state_dict(), strict=True)
        if next(iter(twin.parameters())).device != device:
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
            model(torch.zeros((1, 1), dtype=torch.long, device=next(iter(model.parameters())).device))
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
    from interp.degradations import select_parameters

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
        out["param_norm"] = math.sqrt(sum(float(p.detach().double().pow(2).sum())
                                          for _, p, _ in select_parameters(model, "*")))
    return out


# ---------------------------------------------------------------------------------------------
# the analysis


class ResidualNorms:
    """Per-layer residual-stream norms, write norms, growth factor (no effect/collateral claim).

    Metrics (see the module docstring): ``mean_L{l}``, ``median_L{l}``, ``q{p}_L{l}``, ``msq_L{l}``,
    ``ratio_L{l}``, ``mean_L{l}_pos{t}``; ``attn_write_L{l}``, ``mlp_write_L{l}``, ``attn_dsq_L{l}``,
    ``mlp_dsq_L{l}``; post-LN: ``ln_mean_L{l}``, ``ln_median_L{l}``, ``mid_mean_L{l}``; ``wov_L{l}``,
    ``wout_L{l}``, ``param_norm``; ``growth``, ``growth_r2``, ``fit_from``, ``fit_to``; and the
    statements ``skip_positions``, ``post_ln``, ``folded``, ``n_tokens``.
    """

    effects: tuple[str, ...] = ()
    collaterals: tuple[str, ...] = ()

    def __init__(
        self,
        rows: int = 256,
        batch_size: int = 64,
        skip_positions: int = 1,
        quantiles: tuple[float, ...] = (0.05, 0.25, 0.75, 0.95),
        positions: tuple[int, ...] = (),
        writes: bool = True,
        weights: bool = True,
        coordinates: Literal["raw", "folded"] = "raw",
        fit_layers: tuple[int, int] | None = None,
        split: str = "test",
        name: str = "norms",
    ):
        self.config = ResidualNormsConfig(
            rows=rows, batch_size=batch_size, skip_positions=skip_positions, quantiles=quantiles,
            positions=positions, writes=writes, weights=weights, coordinates=coordinates,
            fit_layers=fit_layers, split=split,
        )
        self.name = name
        self.notes = ""

    def setup(self, model: Any, task: Any) -> None:
        cfg = self.config
        self.data = task.tensors(cfg.split, rows=cfg.rows)
        if "input_ids" not in self.data:
            raise ValueError(f"task {getattr(task, 'name', task)!r} has no numeric input_ids column.")
        if cfg.coordinates == "folded":
            folded_copy(model)  # refuses post-LN models now rather than at the first draw
        layout = _layout(model)
        n = layout.n_layers
        width = self.data["input_ids"].shape[1]
        too_far = [t for t in cfg.positions if t >= width]
        if too_far:
            raise ValueError(f"positions={cfg.positions!r}: {too_far} beyond the rows' length {width}.")
        first, last = cfg.fit_layers if cfg.fit_layers is not None else (1 if layout.post_ln else 0, n)
        if last > n:
            raise ValueError(f"fit_layers={cfg.fit_layers!r}: the model has stream points L0..L{n}.")
        self.fit_range = (first, last)
        self.notes = _notes(layout, cfg.skip_positions, cfg.coordinates == "folded")
        if layout.post_ln:
            log.warning("%s: %s", self.name, self.notes)
        else:
            log.info("%s: %s", self.name, self.notes)

    @torch.no_grad()
    def __call__(self, model: Any, task: Any) -> dict[str, float]:
        cfg = self.config
        prof = norm_profile(
            model, self.data["input_ids"], self.data.get("attention_mask"), batch_size=cfg.batch_size,
            skip_positions=cfg.skip_positions, writes=cfg.writes, coordinates=cfg.coordinates,
        )
        if prof.n_tokens == 0:
            raise ValueError(f"{self.name}: no token left after excluding {cfg.skip_positions} leading position(s) and padding.")
        return self.metrics(prof, model)

    def metrics(self, prof: NormProfile, model: Any | None = None) -> dict[str, float]:
        """Flatten a :class:`NormProfile` into this analysis's metrics (``model``: weight norms)."""
        cfg = self.config
        n = prof.n_layers
        qs = [0.5, *cfg.quantiles]
        out: dict[str, float] = {}
        means = prof.stream_means()
        for i in range(n + 1):
            key = f"L{i}"
            q = prof.quantile(key, qs).tolist()
            out[f"mean_L{i}"] = float(means[i])
            out[f"median_L{i}"] = q[0]
            for p, v in zip(cfg.quantiles, q[1:]):
                out[f"q{100 * p:g}_L{i}"] = v
            out[f"msq_L{i}"] = float(prof.tokens(key).double().pow(2).mean())
            if i:
                out[f"ratio_L{i}"] = float(means[i] / means[i - 1])
            if cfg.positions:
                per_pos = prof.per_position(key)
                for t in cfg.positions:
                    out[f"mean_L{i}_pos{t}"] = float(per_pos[t])
            if prof.post_ln:
                out[f"ln_mean_L{i}"] = prof.mean(f"ln_L{i}")
                out[f"ln_median_L{i}"] = float(prof.quantile(f"ln_L{i}", 0.5))
        for key in prof.values:
            if key.startswith(("attn_", "mlp_", "mid_")):
                stem, layer = key.rsplit("_L", 1)
                out[f"{stem}_mean_L{layer}" if stem == "mid" else f"{stem}_L{layer}"] = prof.mean(key)
        first, last = getattr(self, "fit_range", (1 if prof.post_ln else 0, n))
        slope, r2 = log_linear_fit(means[first : last + 1])
        out["growth"] = math.exp(slope)
        out["growth_r2"] = r2
        out["fit_from"], out["fit_to"] = float(first), float(last)
        if cfg.weights and model is not None:
            target = folded_copy(model) if cfg.coordinates == "folded" else model
            out.update(_weight_norms(target, _layout(target)))
        out["skip_positions"] = float(prof.skip_positions)
        out["post_ln"] = float(prof.post_ln)
        out["folded"] = float(prof.folded)
        out["n_tokens"] = float(prof.n_tokens)
        return out


# ---------------------------------------------------------------------------------------------
# plots (matplotlib imported lazily)


def _norm_rows(results: Any, analysis: str, stat: str, degradation: str | None):
    t = results.table
    t = t[t["analysis"] == analysis]
    if degradation is not None:
        t = t[t["degradation"] == degradation]
    pattern = re.compile(_STREAM_TEMPLATE.format(stat=re.escape(stat)))
    layer = t["metric"].str.extract(pattern, expand=False)
    t = t[layer.notna()].assign(layer=layer[layer.notna()].astype(int))
    if t.empty:
        raise ValueError(
            f"no '{stat}_L<l>' metrics of analysis {analysis!r}"
            + (f" under degradation {degradation!r}" if degradation else "")
            + f"; analyses in the table: {sorted(results.table['analysis'].unique())}."
        )
    return t


def _plt():
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("norm plots need matplotlib: pip install 'interp[plot]'.") from err
    return plt


def plot_norms_by_layer(
    results: Any,
    analysis: str = "norms",
    *,
    stat: str = "mean",
    degradation: str | None = None,
    logy: bool = True,
    ax: Any = None,
):
    """Norm (``{stat}_L{l}``) against stream point l: one line per draw, coloured by loss increase ΔL;
    the trained weights in black. Returns the figure."""
    plt = _plt()
    import matplotlib as mpl

    t = _norm_rows(results, analysis, stat, degradation)
    fig = ax.figure if ax is not None else plt.subplots(figsize=(5.5, 3.8))[0]
    ax = ax if ax is not None else fig.axes[0]
    draws = t[~t["baseline"]]
    lo, hi = (float(draws["delta_loss"].min()), float(draws["delta_loss"].max())) if len(draws) else (0.0, 1.0)
    cnorm = mpl.colors.Normalize(vmin=min(lo, 0.0), vmax=hi if hi > lo else lo + 1e-9)
    cmap = mpl.colormaps["viridis"]
    for _, g in draws.groupby(["degradation", "level_index", "chain", "draw"]):
        g = g.sort_values("layer")
        ax.plot(g["layer"], g["value"], color=cmap(cnorm(float(g["delta_loss"].iloc[0]))), lw=1, alpha=0.8)
    for _, g in t[t["baseline"]].groupby("degradation"):
        g = g.sort_values("layer")
        ax.plot(g["layer"], g["value"], color="black", lw=2, marker="o", ms=3, label="trained weights")
        break
    if logy:
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("stream point l (resid_pre of block l; last = final resid_post)")
    ax.set_ylabel(f"{stat} ‖x_l‖")
    ax.set_title(f"{analysis}: {stat} residual norm by layer", fontsize=9)
    fig.colorbar(mpl.cm.ScalarMappable(norm=cnorm, cmap=cmap), ax=ax, label="loss increase ΔL (nats/token)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_growth(
    results: Any,
    analysis: str = "norms",
    *,
    x: Literal["delta_loss", "level"] = "delta_loss",
    degradation: str | None = None,
    ax: Any = None,
):
    """Growth factor per draw against loss increase (``x="delta_loss"``) or the level itself
    (``x="level"``: checkpoint steps, noise scales), level means joined by a line; the trained
    weights as a dashed line. Returns the figure."""
    if x not in ("delta_loss", "level"):
        raise ValueError(f"x={x!r}: must be 'delta_loss' or 'level'.")
    plt = _plt()
    t = results.table
    t = t[(t["analysis"] == analysis) & (t["metric"] == "growth")]
    if degradation is not None:
        t = t[t["degradation"] == degradation]
    if t.empty:
        raise ValueError(f"no 'growth' metric of analysis {analysis!r} in the results.")
    fig = ax.figure if ax is not None else plt.subplots(figsize=(5, 3.5))[0]
    ax = ax if ax is not None else fig.axes[0]
    for deg, g in t[~t["baseline"]].groupby("degradation"):
        xs = g["delta_loss"] if x == "delta_loss" else g["level"].astype(float)
        pts = ax.scatter(xs, g["value"], s=12, alpha=0.6, label=str(deg))
        means = g.assign(_x=xs.values).groupby("level_index")[["_x", "value"]].mean().sort_values("_x")
        ax.plot(means["_x"], means["value"], color=pts.get_facecolor()[0], lw=1)
    base = t[t["baseline"]]
    if len(base):
        ax.axhline(float(base["value"].iloc[0]), color="black", ls="--", lw=1, label="trained weights")
    ax.set_xlabel("loss increase ΔL (nats/token)" if x == "delta_loss" else "level (e.g. checkpoint step)")
    ax.set_ylabel("growth factor per layer")
    ax.set_title(f"{analysis}: residual-norm growth factor", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
