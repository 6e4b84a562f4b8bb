"""Models with a known learning coefficient, to check any sampler against the maths.

- :class:`MonomialPotential`: K(w) = ½·Σ_i |w_i|^{p_i} at w0 = 0. With γ = 0 the tempered posterior
  makes B·K ~ Gamma(λ, 1) exactly, λ = Σ_i 1/p_i (so mean and variance of B·K are both λ).
- :class:`DeepLinearNetwork`: population loss ½‖W_M⋯W_1 − T‖²_F started on the true set (a product
  equal to T of rank r). Its learning coefficient is Aoyagi's closed form, :func:`aoyagi_llc`
  (Aoyagi 2024, "Consideration on the learning efficiency of multiple-layered neural networks with
  linear units", Neural Networks 172); two layers reduce to reduced-rank regression,
  :func:`rrr_llc` (Aoyagi & Watanabe 2005), an independent check of the implementation.

Example::

    >>> aoyagi_llc([5, 3, 5], 0), aoyagi_llc([6, 4, 4, 6], 2)
    (6.5, 12.0)
    >>> rrr_llc(n_in=4, hidden=3, n_out=4, rank=1) == aoyagi_llc([4, 3, 4], 1)
    True
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

__all__ = ["MonomialPotential", "DeepLinearNetwork", "DeepLinearNetworks", "aoyagi_llc", "rrr_llc",
           "quadratic_llc"]


class MonomialPotential(torch.nn.Module):
    """Weights ``w`` (one per power) with loss K(w) = ½·Σ_i |w_i|^{p_i}; λ = Σ_i 1/p_i at w0 = 0."""

    def __init__(self, powers: Sequence[float], scale: float = 1.0) -> None:
        super().__init__()
        if not powers or any(p <= 0 for p in powers):
            raise ValueError(f"powers={list(powers)!r}: give at least one power, each > 0.")
        self.register_buffer("powers", torch.tensor([float(p) for p in powers], dtype=torch.float64))
        self.w = torch.nn.Parameter(torch.zeros(len(powers), dtype=torch.float64))
        self.scale = scale

    def loss(self, model: torch.nn.Module | None = None) -> torch.Tensor:
        m = self if model is None else model
        return self.scale * 0.5 * (m.w.abs() ** m.powers).sum()

    @property
    def llc(self) -> float:
        return float((1.0 / self.powers).sum())

    def forward(self) -> torch.Tensor:
        return self.loss()


class DeepLinearNetwork(torch.nn.Module):
    """Layers ``W_i`` (``widths[i+1] × widths[i]``) started on a random true product of rank ``rank``;
    :meth:`loss` is the population loss ½‖W_M⋯W_1 − T‖²_F (unit input covariance)."""

    def __init__(self, widths: Sequence[int], rank: int, seed: int = 0) -> None:
        super().__init__()
        if len(widths) < 3 or any(w < 1 for w in widths):
            raise ValueError(f"widths={list(widths)!r}: need >= 3 positive widths (input, hidden..., output).")
        if not 0 <= rank <= min(widths):
            raise ValueError(f"rank={rank!r}: must lie in [0, min(widths)={min(widths)}].")
        gen = torch.Generator().manual_seed(seed)
        ws = []
        for i in range(len(widths) - 1):
            w = torch.zeros(widths[i + 1], widths[i], dtype=torch.float64)
            if rank:
                w[:rank, :rank] = torch.eye(rank, dtype=torch.float64) + 0.3 * torch.randn(
                    rank, rank, generator=gen, dtype=torch.float64)
            ws.append(w)
        self.weights = torch.nn.ParameterList([torch.nn.Parameter(w) for w in ws])
        with torch.no_grad():
            self.register_buffer("true", self.product().detach().clone())
        self.widths, self.rank = list(widths), rank

    def product(self) -> torch.Tensor:
        out = self.weights[0]
        for i in range(1, len(self.weights)):  # no slicing: it would rebuild Parameters
            out = self.weights[i] @ out
        return out

    def loss(self, model: torch.nn.Module | None = None) -> torch.Tensor:
        m = self if model is None else model
        return 0.5 * ((m.product() - m.true) ** 2).sum()

    @property
    def llc(self) -> float:
        return aoyagi_llc(self.widths, self.rank)

    def forward(self) -> torch.Tensor:
        return self.loss()


class DeepLinearNetworks(torch.nn.Module):
    """Independent deep linear networks side by side in one module (``nets.0``, ``nets.1``, ...):
    the loss is the sum of their population losses, so the whole has λ = Σ_i λ_i and sampling only
    ``nets.i.*`` (the others fixed on their true sets, where their loss is 0) has λ_i, Aoyagi's
    value of network i: an oracle for per-component (weight-restricted) learning coefficients.

    ``specs``: ``[(widths, rank), ...]``; network i is ``DeepLinearNetwork(widths, rank, seed + i)``.
    """

    def __init__(self, specs: Sequence[tuple[Sequence[int], int]], seed: int = 0) -> None:
        super().__init__()
        if not specs:
            raise ValueError("specs=[]: give at least one (widths, rank) pair.")
        self.nets = torch.nn.ModuleList([DeepLinearNetwork(w, r, seed + i) for i, (w, r) in enumerate(specs)])

    def loss(self, model: torch.nn.Module | None = None) -> torch.Tensor:
        m = self if model is None else model
        return sum(net.loss() for net in m.nets)

    @property
    def llcs(self) -> list[float]:
        """Aoyagi's λ of each network, in order."""
        return [net.llc for net in self.nets]

    @property
    def llc(self) -> float:
        return float(sum(self.llcs))

    def forward(self) -> torch.Tensor:
        return self.loss()


def aoyagi_llc(widths: Sequence[int], rank: int) -> float:
    """Learning coefficient of a deep linear network with layer widths ``H_1 … H_{M+1}`` (input
    first) at a true matrix of rank ``r`` (Aoyagi 2024, main theorem).

    With Δ_i = H_i − r, take the subset Σ of indices (|Σ| = ℓ + 1) such that every Δ in Σ is
    smaller than every Δ outside it, Σ_{σ∈Σ} Δ_σ ≥ ℓ·max_Σ Δ and Σ_{σ∈Σ} Δ_σ < ℓ·min_{∉Σ} Δ. Then
    with S = Σ_{σ∈Σ} Δ_σ and a = S − ℓ·⌊S/ℓ⌋,

        λ = [−r² + r(H_1 + H_{M+1})]/2 + a(ℓ − a)/(4ℓ) − ℓ(ℓ − 1)/4·(S/ℓ)² + ½·Σ_{i<j∈Σ} Δ_i·Δ_j
    """
    h = [int(x) for x in widths]
    r = int(rank)
    if len(h) < 2 or min(h) < r or r < 0:
        raise ValueError(f"widths={h}, rank={r}: need >= 2 widths, each >= rank >= 0.")
    delta = [x - r for x in h]
    base = (-r * r + r * (h[0] + h[-1])) / 2
    idx = sorted(range(len(h)), key=lambda i: delta[i])
    # Σ consists of the smallest Δs; try every prefix length of the sorted order
    for size in range(2, len(h) + 1):
        sigma = idx[:size]
        rest = idx[size:]
        ell = size - 1
        s = sum(delta[i] for i in sigma)
        mx = max(delta[i] for i in sigma)
        mn = min((delta[i] for i in rest), default=float("inf"))
        if mx < mn and s >= ell * mx and s < ell * mn:
            a = s - ell * (s // ell)
            pairs = sum(delta[i] * delta[j] for i, j in itertools.combinations(sigma, 2))
            return base + a * (ell - a) / (4 * ell) - ell * (ell - 1) / 4 * (s / ell) ** 2 + pairs / 2
    raise ValueError(
        f"widths={h}, rank={r}: no index subset satisfies Aoyagi's conditions; not covered by the "
        "closed form implemented here."
    )


def rrr_llc(n_in: int, hidden: int, n_out: int, rank: int) -> float:
    """Reduced-rank regression (two-layer linear network N → H → M, true rank r), Aoyagi & Watanabe
    2005: the four-case closed form."""
    M, N, H, r = n_out, n_in, hidden, rank
    if N + r <= M + H and M + r <= N + H and H + r <= M + N:
        num = -((H + r) ** 2) - M**2 - N**2 + 2 * (H + r) * (M + N) + 2 * M * N
        return (num + (1 if (M + H + N + r) % 2 else 0)) / 8
    if M + H < N + r:
        return (H * M - H * r + N * r) / 2
    if N + H < M + r:
        return (H * N - H * r + M * r) / 2
    return M * N / 2


def quadratic_llc(nbeta: float, curvature: float, localization: float, lr: float) -> float:
    """Exact λ̂ of SGLD on K = ½·h·w² (one dimension) with step ε: the chain's stationary variance is
    1/(a(1 − εa/4)), a = B·h + γ, so λ̂ = B·E[K] = ½·(B·h/a)/(1 − εa/4) (infinite when εa ≥ 4)."""
    a = nbeta * curvature + localization
    if lr * a >= 4:
        return float("inf")
    return 0.5 * (nbeta * curvature / a) / (1 - lr * a / 4)
