"""Residual-stream norms per layer (Heimersheim & Turner 2023), as a sweep analysis.

For each layer l the L2 norm ‖x_l(b, t)‖ of ``resid_pre`` (and of the final ``resid_post``) is taken
over the evaluation tokens, excluding the first ``skip_positions`` positions (BOS: its norm follows a
different law) and padding, streamed batch by batch so no full cache is held. Reported per layer:
mean (``mean_L{l}``) and median (``median_L{l}``), with ``L{n}`` the final ``resid_post``; and the
growth factor g = exp(slope) of the least-squares line log mean-norm = a + l·log g over all layers,
with the fit's R² (``growth``, ``growth_r2``).

Coordinates: raw model weights (no LayerNorm folding). Pre-LN architectures only: in post-LN models
(BERT, MiniLM) ``resid_pre`` is a LayerNorm output whose norm is set by the LN gains, so this
analysis refuses them with a clear error rather than report numbers that mean something else.

Example::

    >>> import interp
    >>> from analyses.norms import ResidualNorms
    >>> model, task = interp.organisms.load("induction")          # doctest: +SKIP
    >>> norms = ResidualNorms(); norms.setup(model, task)           # doctest: +SKIP
    >>> sorted(norms(model, task))[:3]                              # doctest: +SKIP
    ['growth', 'growth_r2', 'mean_L0']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

import hooks

__all__ = ["ResidualNorms", "ResidualNormsConfig"]


@dataclass(frozen=True)
class ResidualNormsConfig:
    """Evaluation rows, batch size and how many leading positions to exclude."""

    rows: int = 256
    batch_size: int = 64
    skip_positions: int = 1

    def __post_init__(self) -> None:
        for field in ("rows", "batch_size"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field}={getattr(self, field)!r}: must be a positive integer.")
        if self.skip_positions < 0:
            raise ValueError(f"skip_positions={self.skip_positions!r}: must be ≥ 0.")


class ResidualNorms:
    """Per-layer residual-stream norms and their growth factor (no effect/collateral claim)."""

    effects: tuple[str, ...] = ()
    collaterals: tuple[str, ...] = ()

    def __init__(self, rows: int = 256, batch_size: int = 64, skip_positions: int = 1, name: str = "norms"):
        self.config = ResidualNormsConfig(rows=rows, batch_size=batch_size, skip_positions=skip_positions)
        self.name = name

    def setup(self, model: Any, task: Any) -> None:
        if hooks.is_post_ln(model):
            raise ValueError(
                "ResidualNorms measures resid_pre, which in a post-LN model (BERT, MiniLM) is a "
                "LayerNorm output; post-LN models are not supported by this analysis yet."
            )
        self.data = task.tensors("test", rows=self.config.rows)
        n = model.cfg.n_layers
        self.points = [hooks.resid_pre(layer) for layer in range(n)] + [hooks.resid_post(n - 1)]

    @torch.no_grad()
    def __call__(self, model: Any, task: Any) -> dict[str, float]:
        ids = self.data["input_ids"].long()
        mask = self.data.get("attention_mask", torch.ones_like(ids)).bool().clone()
        mask[:, : self.config.skip_positions] = False
        per_layer: list[list[torch.Tensor]] = [[] for _ in self.points]
        for start in range(0, len(ids), self.config.batch_size):
            sl = slice(start, start + self.config.batch_size)
            acts = hooks.capture(model, ids[sl], self.points, device="cpu")
            for i, p in enumerate(self.points):
                per_layer[i].append(acts[p].float().norm(dim=-1)[mask[sl]])
        norms = [torch.cat(v) for v in per_layer]
        means = torch.stack([v.mean() for v in norms])
        out = {}
        for layer, v in enumerate(norms):
            out[f"mean_L{layer}"] = v.mean().item()
            out[f"median_L{layer}"] = v.median().item()
        slope, r2 = _log_linear_fit(means)
        out["growth"] = float(torch.exp(slope))
        out["growth_r2"] = r2
        return out


def _log_linear_fit(means: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Least-squares slope of log(means) against layer index, and the fit's R²."""
    y = means.double().log()
    x = torch.arange(len(y), dtype=torch.float64)
    xc, yc = x - x.mean(), y - y.mean()
    slope = (xc * yc).sum() / (xc * xc).sum()
    resid = yc - slope * xc
    ss_tot = (yc * yc).sum()
    r2 = 1.0 - (resid * resid).sum() / ss_tot if ss_tot > 0 else torch.tensor(1.0)
    return slope, float(r2)
