"""The transcoder module, its configuration, and saving/loading (safetensors + JSON)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from interp.checks import bad_value

__all__ = ["TranscoderConfig", "Transcoder", "load_transcoder", "SPARSE_DECODE_MIN_LATENTS"]

FORMAT_VERSION = 1

#: ``decode="auto"`` uses the sparse path (gathered encoder rows + ``embedding_bag`` decode) from this
#: many latents up. Measured with ``benchmarks/bench_transcoders.py`` on the shared 2-core CPU (one
#: thread, d_model 128, k 32, batch 1024): the library's training step beats the straightforward dense
#: one at every width tried, 1.17x at 512 latents, 1.55x at 1,024, 2.65x at 4,096, 3.96x at 16,384
#: (BENCHMARKS.md, "Transcoders"); below 512 it was not measured.
SPARSE_DECODE_MIN_LATENTS = 512

_ACTIVATIONS = ("topk", "relu")
_DECODES = ("auto", "sparse", "dense")


def _bad(name: str, value: Any, allowed: str, fix: str) -> ValueError:
    """:func:`interp.checks.bad_value` for a TranscoderConfig field (``allowed`` reads "must be ...")."""
    return bad_value("TranscoderConfig", name, value, allowed.removeprefix("must be "), fix)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class TranscoderConfig:
    """How a transcoder is shaped and trained.

    Args:
        n_latents: dictionary width L. ``None``: 32·d_model (Gao et al. 2024), resolved at training.
        activation: ``"topk"`` (z = ReLU(TopK_k(W_enc x + b_enc)), Gao et al. 2024) or ``"relu"``
            (z = ReLU(W_enc x + b_enc) with an L1 penalty, Dunefsky et al. 2024), the baseline.
        k: active latents per token for TopK (the L0 is then a setting, not a result).
        l1: λ of the ReLU baseline's penalty λ·Σ_i z_i / σ_y (decoder rows have unit norm; σ_y is
            the target's root-mean-square deviation, so λ is dimensionless). Ignored for TopK.
        skip: add a linear skip connection W_skip x (initialised at 0).
        aux_k: k_aux of the AuxK loss (latents that have not fired for ``dead_tokens`` tokens
            reconstruct the residual error with their top-k_aux pre-activations). ``None``: d_out/2;
            ``0``: no AuxK. TopK only.
        aux_coef: α of the AuxK loss (Gao et al. use 1/32).
        dead_tokens: a latent that has not fired on this many training tokens counts as dead.
        steps: optimizer steps.
        batch_size: tokens per step.
        lr: Adam learning rate ε (linear warm-up over ``warmup`` of the steps, linear decay to 0 over
            the last ``decay`` fraction).
        warmup: fraction of ``steps`` for the warm-up (see ``lr``).
        decay: fraction of ``steps`` for the decay (see ``lr``).
        buffer_tokens: size of the shuffling buffer of activations.
        rows_per_forward: task rows per model forward when refilling the buffer.
        positions: ``"all"`` or a tuple of sequence positions to train and evaluate on.
        decode: ``"sparse"`` (gather the k active encoder rows, decode with ``embedding_bag``),
            ``"dense"`` (scatter into a dense code and matmul), ``"auto"``: sparse from
            :data:`SPARSE_DECODE_MIN_LATENTS` latents. Same numbers either way (to float rounding).
        seed: initialisation.
        data_seed: order of the training data (task rows and buffer shuffles). ``None``: ``seed``.
        progress: show a ``tqdm`` progress bar.
    """

    n_latents: int | None = None
    activation: Literal["topk", "relu"] = "topk"
    k: int = 32
    l1: float = 1e-3
    skip: bool = False
    aux_k: int | None = None
    aux_coef: float = 1 / 32
    dead_tokens: int = 20_000
    steps: int = 2000
    batch_size: int = 512
    lr: float = 2e-3
    warmup: float = 0.02
    decay: float = 0.2
    buffer_tokens: int = 16_384
    rows_per_forward: int = 256
    positions: Union[Literal["all"], tuple[int, ...]] = "all"
    decode: Literal["auto", "sparse", "dense"] = "auto"
    seed: int = 0
    data_seed: int | None = None
    progress: bool = field(default=True, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.n_latents is not None and (not _int(self.n_latents) or self.n_latents < 1):
            raise _bad("n_latents", self.n_latents, "must be a positive int or None",
                       "Use e.g. n_latents=4096, or None for 32·d_model.")
        if self.activation not in _ACTIVATIONS:
            raise _bad("activation", self.activation, f"must be one of {_ACTIVATIONS}",
                       "Use 'topk' (recommended) or 'relu' (the L1 baseline).")
        if not _int(self.k) or self.k < 1:
            raise _bad("k", self.k, "must be a positive int", "Use e.g. k=32.")
        if self.n_latents is not None and self.activation == "topk" and self.k > self.n_latents:
            raise _bad("k", self.k, f"must not exceed n_latents={self.n_latents}",
                       "Lower k or widen the dictionary.")
        if not (isinstance(self.l1, (int, float)) and self.l1 >= 0 and math.isfinite(self.l1)):
            raise _bad("l1", self.l1, "must be a finite number ≥ 0", "Use e.g. l1=1e-3.")
        if self.aux_k is not None and (not _int(self.aux_k) or self.aux_k < 0):
            raise _bad("aux_k", self.aux_k, "must be an int ≥ 0 or None",
                       "Use None (d_out/2), 0 (no AuxK) or e.g. aux_k=64.")
        if not (isinstance(self.aux_coef, (int, float)) and self.aux_coef >= 0):
            raise _bad("aux_coef", self.aux_coef, "must be ≥ 0", "Use e.g. aux_coef=1/32.")
        for name in ("dead_tokens", "steps", "batch_size", "buffer_tokens", "rows_per_forward"):
            v = getattr(self, name)
            if not _int(v) or v < 1:
                raise _bad(name, v, "must be a positive int", f"Use a positive integer for {name}.")
        if self.buffer_tokens < self.batch_size:
            raise _bad("buffer_tokens", self.buffer_tokens, f"must be ≥ batch_size={self.batch_size}",
                       "Use a buffer several batches large (e.g. 32·batch_size).")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise _bad("lr", self.lr, "must be a finite number > 0", "Use e.g. lr=2e-3.")
        for name in ("warmup", "decay"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 <= v <= 1):
                raise _bad(name, v, "must be a fraction in [0, 1]", f"Use e.g. {name}=0.1.")
        if self.warmup + self.decay > 1:
            raise _bad("decay", self.decay, f"≤ 1 − warmup = {1 - self.warmup:g} (warmup + decay ≤ 1)",
                       "Shorten one of them.")
        if isinstance(self.positions, list):
            object.__setattr__(self, "positions", tuple(self.positions))
        if self.positions != "all" and not (
            isinstance(self.positions, tuple) and self.positions and all(_int(p) for p in self.positions)
        ):
            raise _bad("positions", self.positions, "must be 'all' or a non-empty tuple of ints",
                       "Use positions='all' or e.g. positions=(2,).")
        if self.decode not in _DECODES:
            raise _bad("decode", self.decode, f"must be one of {_DECODES}", "Use 'auto'.")
        for name in ("seed", "data_seed"):
            v = getattr(self, name)
            if not (_int(v) or (v is None and name == "data_seed")):
                raise _bad(name, v, "must be an int" + (" or None" if name == "data_seed" else ""),
                           f"Use e.g. {name}=0.")

    @property
    def order_seed(self) -> int:
        """The seed of the data order: ``data_seed``, or ``seed`` when unset."""
        return self.seed if self.data_seed is None else self.data_seed

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["positions"] = self.positions if self.positions == "all" else list(self.positions)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TranscoderConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"TranscoderConfig: unknown key(s) {unknown}; allowed: {sorted(names)}.")
        d = dict(d)
        if isinstance(d.get("positions"), list):
            d["positions"] = tuple(d["positions"])
        return cls(**d)


class _GatherLinear(torch.autograd.Function):
    """``pre.gather(1, idx)`` for ``pre = x W_encᵀ + b_enc`` (given, graph-free) with a sparse backward.

    Backward, with g = ∂/∂(gathered values) ``[n, j]``: ∂W_enc = Sᵀ x with S the sparse ``[n, L]``
    matrix holding g at (row, idx) (``torch.sparse.mm``), ∂b_enc = Σ over rows of S, and
    ∂x = ``embedding_bag(idx, W_enc, g)``; cost O(n·j·d) instead of the dense O(n·L·d).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, w: Tensor, b: Tensor, pre: Tensor, idx: Tensor) -> Tensor:
        ctx.save_for_backward(x, w, idx)
        ctx.mark_non_differentiable(idx)
        return pre.gather(1, idx)

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        x, w, idx = ctx.saved_tensors
        n, j = idx.shape
        flat = idx.reshape(-1)
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = F.embedding_bag(idx, w, per_sample_weights=g.contiguous(), mode="sum")
        if ctx.needs_input_grad[1]:
            rows = torch.arange(n, device=idx.device).repeat_interleave(j)
            s = torch.sparse_coo_tensor(torch.stack([flat, rows]), g.reshape(-1), (w.shape[0], n),
                                        is_coalesced=False, check_invariants=False)
            gw = torch.sparse.mm(s, x.to(g.dtype))
        if ctx.needs_input_grad[2]:
            gb = torch.zeros(w.shape[0], dtype=g.dtype, device=g.device).index_add_(0, flat, g.reshape(-1))
        return gx, gw, gb, None, None


class Transcoder(torch.nn.Module):
    """A sparse, wider replacement of an MLP: ŷ = W_decᵀ z + b_dec (+ W_skip x), z = σ(W_enc x + b_enc).

    ``W_enc`` is ``[n_latents, d_in]``, ``W_dec`` ``[n_latents, d_out]`` with unit-norm rows (kept so
    by training, so a latent's activation is its contribution's norm), ``W_skip`` ``[d_out, d_in]``
    when ``config.skip``. ``layer``, ``input_point`` and ``output_point`` record where it was trained.
    """

    def __init__(self, d_in: int, d_out: int, config: TranscoderConfig, *, layer: int | None = None,
                 input_point: str | None = None, output_point: str | None = None) -> None:
        super().__init__()
        if config.n_latents is None:
            config = dataclasses.replace(config, n_latents=32 * d_in)
        n = config.n_latents
        if config.activation == "topk" and config.k > n:
            raise _bad("k", config.k, f"must not exceed n_latents={n}", "Lower k or widen the dictionary.")
        self.config = config
        self.d_in, self.d_out, self.n_latents = int(d_in), int(d_out), int(n)
        self.layer, self.input_point, self.output_point = layer, input_point, output_point
        self.W_enc = torch.nn.Parameter(torch.zeros(n, d_in))
        self.b_enc = torch.nn.Parameter(torch.zeros(n))
        self.W_dec = torch.nn.Parameter(torch.zeros(n, d_out))
        self.b_dec = torch.nn.Parameter(torch.zeros(d_out))
        self.W_skip = torch.nn.Parameter(torch.zeros(d_out, d_in)) if config.skip else None
        self.history: dict[str, list[float]] = {}

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def initialize(self, x: Float[Tensor, "n d_in"], y: Float[Tensor, "n d_out"]) -> None:
        """Random unit decoder rows (generator seeded by ``config.seed``), encoder rows along random
        unit directions scaled by σ_y/σ_x so pre-activations start on the target's scale, and
        ``b_dec`` = the mean target."""
        g = torch.Generator().manual_seed(self.config.seed)
        dec = torch.randn(self.n_latents, self.d_out, generator=g)
        enc = torch.randn(self.n_latents, self.d_in, generator=g)
        self.W_dec.copy_(dec / dec.norm(dim=1, keepdim=True))
        sx = x.float().pow(2).sum(-1).mean().sqrt()
        sy = (y.float() - y.float().mean(0)).pow(2).sum(-1).mean().sqrt()
        self.W_enc.copy_(enc / enc.norm(dim=1, keepdim=True) * (sy / sx.clamp(min=1e-12)))
        self.b_enc.zero_()
        self.b_dec.copy_(y.float().mean(0))
        if self.W_skip is not None:
            self.W_skip.zero_()

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Rescale decoder rows to unit norm (the encoder rows absorb nothing: this is a constraint)."""
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp(min=1e-12))

    # ------------------------------------------------------------------ forward
    @property
    def sparse_decode(self) -> bool:
        if self.config.decode == "auto":
            return self.config.activation == "topk" and self.n_latents >= SPARSE_DECODE_MIN_LATENTS
        return self.config.decode == "sparse" and self.config.activation == "topk"

    def pre_activations(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... n_latents"]:
        """W_enc x + b_enc."""
        return F.linear(x, self.W_enc, self.b_enc)

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... n_latents"]:
        """The latent code z as a dense tensor (zeros where a latent is inactive)."""
        pre = self.pre_activations(x)
        if self.config.activation == "relu":
            return F.relu(pre)
        vals, idx = pre.topk(self.config.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, idx, F.relu(vals))

    def active(self, x: Float[Tensor, "n d_in"]) -> tuple[Int[Tensor, "n k"], Float[Tensor, "n k"]]:
        """TopK indices and their (ReLU'd) activations, differentiable in the parameters (and ``x``).

        The dense pre-activations are computed without a graph; the k chosen ones are gathered by
        :class:`_GatherLinear`, whose backward touches only the n·k chosen (token, latent) pairs
        instead of the dense ``[n, n_latents]`` code (the gradients are the same: TopK routes
        gradient only to the chosen latents).
        """
        with torch.no_grad():
            pre = self.pre_activations(x)
            idx = pre.topk(self.config.k, dim=-1).indices
        return idx, self.gathered(x, pre, idx)

    def gathered(self, x: Float[Tensor, "n d_in"], pre: Float[Tensor, "n n_latents"],
                 idx: Int[Tensor, "n j"]) -> Float[Tensor, "n j"]:
        """ReLU(pre[n, idx]) with the sparse backward of :class:`_GatherLinear` (``pre`` = W_enc x + b_enc)."""
        return F.relu(_GatherLinear.apply(x, self.W_enc, self.b_enc, pre, idx))

    def decode_sparse(self, idx: Int[Tensor, "n k"], acts: Float[Tensor, "n k"]) -> Float[Tensor, "n d_out"]:
        """Σ_j acts_j · W_dec[idx_j] via ``embedding_bag`` (no bias)."""
        return F.embedding_bag(idx, self.W_dec, per_sample_weights=acts, mode="sum")

    def forward(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_out"]:
        shape = x.shape[:-1]
        flat = x.reshape(-1, self.d_in).to(self.W_enc.dtype)
        if self.sparse_decode:
            idx, acts = self.active(flat)
            out = self.decode_sparse(idx, acts)
        else:
            out = self.encode(flat) @ self.W_dec
        out = out + self.b_dec
        if self.W_skip is not None:
            out = out + flat @ self.W_skip.T
        return out.reshape(*shape, self.d_out)

    # ------------------------------------------------------------------ save / load
    def save(self, path: str | Path) -> Path:
        """Write ``PATH.safetensors`` (weights only) and ``PATH.json`` (config and provenance).

        ``path`` may end in ``.safetensors`` or carry no suffix; returns the safetensors path.
        """
        from safetensors.torch import save_file

        weights, meta = _paths(path)
        weights.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(tensors, str(weights))
        info = {"format_version": FORMAT_VERSION, "d_in": self.d_in, "d_out": self.d_out,
                "n_latents": self.n_latents, "layer": self.layer, "input_point": self.input_point,
                "output_point": self.output_point, "config": self.config.to_dict(),
                "history": self.history}
        meta.write_text(json.dumps(info, indent=1))
        return weights

    def extra_repr(self) -> str:
        c = self.config
        act = f"topk k={c.k}" if c.activation == "topk" else f"relu l1={c.l1}"
        return (f"d_in={self.d_in}, n_latents={self.n_latents}, d_out={self.d_out}, {act}, "
                f"skip={c.skip}, layer={self.layer}")


def _paths(path: str | Path) -> tuple[Path, Path]:
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def load_transcoder(path: str | Path, device: torch.device | str = "cpu") -> Transcoder:
    """Load a transcoder written by :meth:`Transcoder.save` (``PATH``, ``PATH.safetensors`` or ``PATH.json``)."""
    from safetensors.torch import load_file

    weights, meta = _paths(path)
    for f in (weights, meta):
        if not f.exists():
            raise FileNotFoundError(f"{f} not found: a saved transcoder is PATH.safetensors + PATH.json.")
    info = json.loads(meta.read_text())
    if info.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{meta}: format_version={info.get('format_version')!r}; this code reads "
                         f"{FORMAT_VERSION}. Re-save the transcoder with this version.")
    tc = Transcoder(info["d_in"], info["d_out"], TranscoderConfig.from_dict(info["config"]),
                    layer=info["layer"], input_point=info["input_point"], output_point=info["output_point"])
    tc.load_state_dict(load_file(str(weights)))
    tc.history = {k: list(v) for k, v in info.get("history", {}).items()}
    return tc.to(device)
