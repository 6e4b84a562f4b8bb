"""The localized SGLD step rule, as an optimizer-like update (drift + localization + noise).

One step at inverse temperature B = nβ, localization γ and step size ε (Welling & Teh 2011;
localized as in Lau et al. 2023, "The Local Learning Coefficient"), with ξ ~ N(0, I):

    w ← w − (ε/2)·[B·∇L_batch(w) + γ(w − w0)] + √ε·ξ

Drift and noise are zeroed outside a parameter's mask (``restrict`` with masks). The same rule moves
one chain's live parameters or a stack of chains ``[C, ...]`` at once (a 0/1 ``keep`` per chain
freezes failed chains); both give the same numbers as devinterp's SGLD step.

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

__all__ = ["SGLDStep", "gaussian_noise", "stacked_gaussian_noise", "flat_norm", "chain_norms"]

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


def flat_norm(ts: list[torch.Tensor]) -> float:
    """Euclidean norm over all tensors together."""
    return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(ts)))) if ts else 0.0


def chain_norms(ts: list[torch.Tensor]) -> list[float]:
    """Per-chain Euclidean norm over all tensors ``ts[i]: [C, ...]`` (chain along dim 0)."""
    sq = sum(x.reshape(x.shape[0], -1).square().sum(1) for x in ts)
    return sq.sqrt().tolist()
