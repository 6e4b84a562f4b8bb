"""The localized SGLD step rule, as an optimizer-like update (drift + localization + noise).

One step at inverse temperature B = nβ, localization γ and step size ε (Welling & Teh 2011;
localized as in Lau et al. 2023, "The Local Learning Coefficient"), with ξ ~ N(0, I):

    w ← w − (ε/2)·[B·∇L_batch(w) + γ(w − w0)] + √ε·ξ

Drift and noise are zeroed outside a parameter's mask (``restrict`` with masks). The same rule moves
one chain's live parameters or a stack of chains ``[C, ...]`` at once (a 0/1 ``keep`` per chain
freezes failed chains); both give the same numbers as devinterp's SGLD step.

RMSProp-preconditioned SGLD (Li, Chen, Carlson, Carin 2016; the form devinterp's ``rmsprop_sgld``
uses, and the most faithful local sampler on Hitchcock & Hoogland's 2025 deep-linear-network
benchmark) keeps a running mean of the squared minibatch gradient g = ∇L_batch per weight and
preconditions drift and noise with G = diag(1/(√V + η)):

    V ← α·V + (1 − α)·g²,    w ← w − (ε/2)·G·[B·g + γ(w − w0)] + √ε·√G·ξ

(α = ``rmsprop_alpha``, 0.999 here, 0.99 in devinterp; η = ``rmsprop_eps``; the Γ correction term for a changing G is left out, as
there: V changes slowly once the chain is in equilibrium). G ≤ 1/η, so ε·(B·ĥ + γ)/η bounds the
largest effective step; the automatic step size divides by it.

Example::

    >>> import torch
    >>> step = SGLDStep(nbeta=10.0, lr=0.01, localization=1.0)
    >>> w, w0 = [torch.ones(2)], [torch.zeros(2)]
    >>> drift = step.drift([torch.ones(2)], step.displacement(w, w0))   # B·g + γ(w − w0) = 11
    >>> step.apply_(w, drift, [torch.zeros(2)])
    >>> [round(x, 6) for x in w[0].tolist()]                               # 1 − 0.005·11
    [0.945, 0.945]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["SGLDStep", "RMSPropSGLDStep", "make_step", "SAMPLERS", "gaussian_noise", "stacked_gaussian_noise",
           "NoiseBuffer", "StepNorms", "flat_norm", "chain_norms"]

#: the step rules ``TemperedPosterior(sampler=...)`` accepts.
SAMPLERS = ("sgld", "rmsprop")

Masks = Sequence["torch.Tensor | None"]


@dataclass(frozen=True)
class SGLDStep:
    """The update rule of one level: B = ``nbeta``, ε = ``lr``, γ = ``localization``."""

    nbeta: float
    lr: float
    localization: float

    @staticmethod
    def displacement(weights: list[torch.Tensor], w0: list[torch.Tensor]) -> list[torch.Tensor]:
        """w − w0, per tensor."""
        return torch._foreach_sub(weights, w0)

    def drift(self, grads: list[torch.Tensor], diff: list[torch.Tensor],
              masks: Masks | None = None) -> list[torch.Tensor]:
        """B·∇L + γ(w − w0), zeroed outside ``masks`` (``None`` entries: the whole tensor)."""
        drift = torch._foreach_mul(grads, self.nbeta)
        if self.localization:
            torch._foreach_add_(drift, diff, alpha=self.localization)
        return mask(drift, masks)

    def apply_(self, weights: list[torch.Tensor], drift: list[torch.Tensor], noise: list[torch.Tensor],
               keep: torch.Tensor | None = None) -> None:
        """w ← w − (ε/2)·drift + √ε·noise in place; ``keep`` (one 0/1 per chain along dim 0) freezes
        the chains marked 0."""
        eps, sq = self.lr, math.sqrt(self.lr)
        with torch.no_grad():
            if keep is None:
                torch._foreach_add_(weights, drift, alpha=-eps / 2)
                torch._foreach_add_(weights, noise, alpha=sq)
            else:
                for w, d, x in zip(weights, drift, noise):
                    shape = (len(keep),) + (1,) * (w.dim() - 1)
                    w.add_(d * keep.view(shape), alpha=-eps / 2)
                    w.add_(x * keep.view(shape), alpha=sq)

    def grad_to_noise(self, grad_norm: float, noise_norm: float) -> float:
        """‖(ε/2)·B·∇L‖ / ‖√ε·ξ‖: how much of a step is the loss's pull rather than noise."""
        return 0.5 * self.lr * self.nbeta * grad_norm / max(math.sqrt(self.lr) * noise_norm, 1e-30)

    def update_(self, weights: list[torch.Tensor], grads: list[torch.Tensor], w0: list[torch.Tensor],
                noise: list[torch.Tensor], diff: list[torch.Tensor], masks: Masks | None = None,
                keep: torch.Tensor | None = None, norms: StepNorms | None = None, apply: bool = True) -> None:
        """The whole step in one pass per parameter, in place, with no allocation (the fast path of
        :meth:`displacement`, :meth:`drift` and :meth:`apply_`, the same operations in the same order,
        so the same numbers as devinterp's step). For each tensor: ``diff ← w − w0`` (into the
        preallocated ``diff``), ``grad ← B·grad + γ·diff`` (the drift, overwriting ``grads``), drift and
        ``noise`` zeroed outside the mask and for chains with ``keep`` 0 (``noise`` is overwritten:
        a :class:`NoiseBuffer` draw), ``w ← w − (ε/2)·drift``, ``w ← w + √ε·noise``; all of one tensor
        while it is in cache. ``norms``: accumulate ‖w − w0‖², ‖masked ∇L‖² and ‖ξ‖² per chain.
        ``apply=False``: everything but the two updates of ``w``, which :meth:`commit_` then does (so a
        draw can be read at the current weights first)."""
        eps, sq, B, gamma = self.lr, math.sqrt(self.lr), self.nbeta, self.localization
        masks = masks if masks is not None else [None] * len(weights)
        with torch.no_grad():
            for w, g, w0_, x, d, m in zip(weights, grads, w0, noise, diff, masks):
                torch.sub(w, w0_, out=d)
                if m is not None:
                    x.mul_(m)
                if norms is not None:
                    norms.add(d, g if m is None else g * m, x)
                g.mul_(B)
                if gamma:
                    g.add_(d, alpha=gamma)
                if m is not None:
                    g.mul_(m)
                if keep is not None:
                    k = keep.view((len(keep),) + (1,) * (w.dim() - 1))
                    g.mul_(k)
                    x.mul_(k)
                if apply:
                    w.add_(g, alpha=-eps / 2)
                    w.add_(x, alpha=sq)

    def commit_(self, weights: list[torch.Tensor], drift: list[torch.Tensor], noise: list[torch.Tensor]) -> None:
        """The last part of :meth:`update_` with ``apply=False`` (``drift`` and ``noise`` as it left
        them): w ← w − (ε/2)·drift, then w ← w + √ε·noise."""
        self.apply_(weights, drift, noise)


class RMSPropSGLDStep:
    """RMSProp-preconditioned SGLD: the :class:`SGLDStep` update with drift and noise scaled per
    weight by G = 1/(√V + η), V the running mean of squared gradients (stateful: one rule per chain
    run; a stack of chains keeps one V per chain, so the chains stay independent)."""

    def __init__(self, nbeta: float, lr: float, localization: float, alpha: float = 0.999,
                 eps: float = 0.1) -> None:
        self.base = SGLDStep(nbeta, lr, localization)
        self.nbeta, self.lr, self.localization = nbeta, lr, localization
        self.alpha, self.eps = alpha, eps
        self.square_avg: list[torch.Tensor] | None = None
        self.precond: list[torch.Tensor] | None = None

    displacement = staticmethod(SGLDStep.displacement)

    def drift(self, grads: list[torch.Tensor], diff: list[torch.Tensor],
              masks: Masks | None = None) -> list[torch.Tensor]:
        """G·(B·∇L + γ(w − w0)), after V ← αV + (1 − α)·∇L²; zeroed outside ``masks``."""
        if self.square_avg is None:
            self.square_avg = [torch.zeros_like(g) for g in grads]
        torch._foreach_mul_(self.square_avg, self.alpha)
        torch._foreach_addcmul_(self.square_avg, grads, grads, value=1 - self.alpha)
        root = torch._foreach_sqrt(self.square_avg)
        torch._foreach_add_(root, self.eps)
        self.precond = torch._foreach_reciprocal(root)
        return torch._foreach_mul(self.base.drift(grads, diff, masks), self.precond)

    def apply_(self, weights: list[torch.Tensor], drift: list[torch.Tensor], noise: list[torch.Tensor],
               keep: torch.Tensor | None = None) -> None:
        """w ← w − (ε/2)·drift + √ε·√G·noise (``drift`` already preconditioned by :meth:`drift`)."""
        if self.precond is None:
            raise RuntimeError("RMSPropSGLDStep.apply_ before drift(): drift computes the preconditioner")
        self.base.apply_(weights, drift, torch._foreach_mul(noise, torch._foreach_sqrt(self.precond)), keep)

    def grad_to_noise(self, grad_norm: float, noise_norm: float) -> float:
        """As for SGLD (unpreconditioned norms): how much of a step is the loss's pull."""
        return self.base.grad_to_noise(grad_norm, noise_norm)

    def update_(self, weights: list[torch.Tensor], grads: list[torch.Tensor], w0: list[torch.Tensor],
                noise: list[torch.Tensor], diff: list[torch.Tensor], masks: Masks | None = None,
                keep: torch.Tensor | None = None, norms: StepNorms | None = None, apply: bool = True) -> None:
        """:meth:`SGLDStep.update_`'s contract (``grads`` left holding the preconditioned drift,
        ``noise`` the masked, preconditioned noise), with fused ``torch._foreach_*`` passes; the norms
        are of the unpreconditioned quantities."""
        with torch.no_grad():
            torch._foreach_copy_(diff, torch._foreach_sub(weights, w0))
            if masks is not None:
                for x, m in zip(noise, masks):
                    if m is not None:
                        x.mul_(m)
            if norms is not None:
                for d, g, x in zip(diff, mask(grads, masks), noise):
                    norms.add(d, g, x)
            torch._foreach_copy_(grads, self.drift(grads, diff, masks))
            torch._foreach_mul_(noise, torch._foreach_sqrt(self.precond))
            if keep is not None:
                for g, x in zip(grads, noise):
                    k = keep.view((len(keep),) + (1,) * (g.dim() - 1))
                    g.mul_(k)
                    x.mul_(k)
            if apply:
                self.commit_(weights, grads, noise)

    def commit_(self, weights: list[torch.Tensor], drift: list[torch.Tensor], noise: list[torch.Tensor]) -> None:
        """The last part of :meth:`update_` with ``apply=False``: w ← w − (ε/2)·drift + √ε·noise."""
        self.base.commit_(weights, drift, noise)


def make_step(sampler: str, nbeta: float, lr: float, localization: float, alpha: float = 0.999,
              eps: float = 0.1) -> SGLDStep | RMSPropSGLDStep:
    """The step rule of one chain run: ``"sgld"`` or ``"rmsprop"`` (see :data:`SAMPLERS`)."""
    if sampler == "rmsprop":
        return RMSPropSGLDStep(nbeta, lr, localization, alpha, eps)
    if sampler == "sgld":
        return SGLDStep(nbeta, lr, localization)
    raise ValueError(f"sampler={sampler!r}: must be one of {SAMPLERS}.")


def mask(ts: list[torch.Tensor], masks: Masks | None) -> list[torch.Tensor]:
    """``ts`` zeroed outside ``masks`` (unchanged when there are none)."""
    if masks is None or all(m is None for m in masks):
        return ts
    return [t * m if m is not None else t for t, m in zip(ts, masks)]


def gaussian_noise(params: Sequence[torch.Tensor], gen: torch.Generator) -> list[torch.Tensor]:
    """ξ ~ N(0, I) for each parameter, drawn as one float32 vector from ``gen`` (so a chain's noise
    does not depend on how the parameters are split into tensors)."""
    total = sum(p.numel() for p in params)
    flat = torch.randn(total, generator=gen, dtype=torch.float32)
    out, i = [], 0
    for p in params:
        out.append(flat[i:i + p.numel()].view(p.shape).to(device=p.device, dtype=p.dtype))
        i += p.numel()
    return out


def stacked_gaussian_noise(params: Sequence[torch.Tensor], gens: Sequence[torch.Generator]) -> list[torch.Tensor]:
    """The same numbers as ``[gaussian_noise(params, g) for g in gens]``, stacked: ``[C, *shape]``."""
    total = sum(p.numel() for p in params)
    flat = torch.stack([torch.randn(total, generator=g, dtype=torch.float32) for g in gens])
    out, i = [], 0
    for p in params:
        out.append(flat[:, i:i + p.numel()].reshape(len(gens), *p.shape).to(device=p.device, dtype=p.dtype))
        i += p.numel()
    return out


class NoiseBuffer:
    """ξ ~ N(0, I) for one chain (``chains=None``: views shaped like the parameters) or a stack of
    chains (views ``[C, *shape]``), drawn in place into one preallocated float32 buffer: chain c's
    row is one ``torch.randn`` call on its generator, so the numbers are those of
    :func:`gaussian_noise` (and :func:`stacked_gaussian_noise`), without allocating or copying.
    Parameters that are not CPU float32 get a preallocated copy on their device and dtype."""

    def __init__(self, params: Sequence[torch.Tensor], chains: int | None = None) -> None:
        self.total = sum(p.numel() for p in params)
        rows = 1 if chains is None else chains
        self.flat = torch.empty((rows, self.total), dtype=torch.float32)
        self._host: list[torch.Tensor] = []
        self.views: list[torch.Tensor] = []
        self._copies: list[tuple[torch.Tensor, torch.Tensor]] = []
        off, base = 0, self.flat.storage_offset()
        for p in params:
            shape = tuple(p.shape)
            strides = tuple(torch.empty(shape, device="meta").stride())
            if chains is None:
                v = self.flat.as_strided(shape, strides, base + off)
            else:
                v = self.flat.as_strided((rows, *shape), (self.total, *strides), base + off)
            off += p.numel()
            if p.device.type != "cpu" or p.dtype != torch.float32:
                dev = torch.empty(v.shape, dtype=p.dtype, device=p.device)
                self._copies.append((dev, v))
                v = dev
            self.views.append(v)

    def draw(self, gens: Sequence[torch.Generator]) -> list[torch.Tensor]:
        """Fill the buffer (one generator per row) and return the per-parameter views (reused:
        the next draw overwrites them)."""
        if len(gens) != len(self.flat):
            raise ValueError(f"NoiseBuffer.draw: {len(gens)} generators for {len(self.flat)} chains; pass one "
                             "generator per chain.")
        for row, g in zip(self.flat, gens):
            torch.randn(self.total, generator=g, out=row)
        for dev, v in self._copies:
            dev.copy_(v, non_blocking=True)
        return self.views


class StepNorms:
    """Squared norms accumulated over a step's tensors, per chain: ‖w − w0‖², ‖∇L‖², ‖ξ‖²
    (tensors with a leading chain axis when ``chains`` is given, else one chain)."""

    def __init__(self, chains: int | None = None) -> None:
        self.chains = chains
        self.sq: list[torch.Tensor | float] = [0.0, 0.0, 0.0]

    def add(self, *ts: torch.Tensor) -> None:
        for i, t in enumerate(ts):
            if self.chains is None:
                self.sq[i] = self.sq[i] + torch.linalg.vector_norm(t).square()
            elif t.dim() == 1:  # one number per chain
                self.sq[i] = self.sq[i] + t.square()
            else:  # over the non-chain dims in place: no copy of a strided (e.g. transposed) gradient
                self.sq[i] = self.sq[i] + torch.linalg.vector_norm(t, dim=tuple(range(1, t.dim()))).square()

    def per_chain(self) -> tuple[list[float], list[float], list[float]]:
        """(‖w − w0‖, ‖∇L‖, ‖ξ‖), one value per chain."""
        out = []
        for s in self.sq:
            t = torch.as_tensor(s, dtype=torch.float64).sqrt().reshape(-1)
            out.append(t.tolist() if self.chains is None or t.numel() > 1 else t.tolist() * self.chains)
        return out[0], out[1], out[2]


def flat_norm(ts: list[torch.Tensor]) -> float:
    """Euclidean norm over all tensors together."""
    return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(ts)))) if ts else 0.0


def chain_norms(ts: list[torch.Tensor]) -> list[float]:
    """Per-chain Euclidean norm over all tensors ``ts[i]: [C, ...]`` (chain along dim 0)."""
    sq = sum(x.reshape(x.shape[0], -1).square().sum(1) for x in ts)
    return sq.sqrt().tolist()
