"""The Fourier basis of functions on ℤ_p: how modular-arithmetic models are read.

A model trained on (a + b) mod p represents its inputs with a few frequencies k: cos(2πka/p) and
sin(2πka/p) (Nanda et al. 2023, "Progress measures for grokking via mechanistic interpretability").
Projecting an embedding, an MLP's weights or a transcoder's latents onto this basis says which
frequencies they use. Both the ``modadd`` organism and the transcoder inspection read it from here.

Example::

    >>> import torch
    >>> f = fourier_basis(7)
    >>> f.shape
    torch.Size([7, 7])
    >>> bool(torch.allclose(f @ f.T, torch.eye(7), atol=1e-6))
    True
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float

__all__ = ["fourier_basis"]


def fourier_basis(p: int) -> Float[torch.Tensor, "p p"]:
    """Orthonormal Fourier basis of functions on ℤ_p, one basis function per row.

    Row 0 is the constant; rows ``2k − 1`` and ``2k`` are cos(2πkx/p) and sin(2πkx/p), k = 1 … (p−1)/2.
    """
    x = torch.arange(p, dtype=torch.float64)
    rows = [torch.ones(p, dtype=torch.float64)]
    for k in range(1, (p - 1) // 2 + 1):
        rows += [torch.cos(2 * math.pi * k * x / p), torch.sin(2 * math.pi * k * x / p)]
    basis = torch.stack(rows)
    return (basis / basis.norm(dim=1, keepdim=True)).float()
