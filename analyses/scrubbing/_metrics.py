"""Causal-scrubbing metrics, reported together, with bootstrap intervals and visible flags.

Inputs are per-example sums over the scored targets (``n_i`` targets in example ``i``) for the clean
model and, for each resampling seed ``s``, the scrubbed model and every named baseline. With
token-weighted means ``L = Σ_i ℓ_i / Σ_i n_i`` (as ``Task.loss``):

- % loss recovered against baseline b (Chan et al. 2022): ``(L_b − L_scrubbed) / (L_b − L_clean)``;
- mean per-token KL(clean ‖ scrubbed), which cannot cancel, and its recovery analogue
  ``1 − KL_scrubbed / KL_b`` (the clean model has KL 0);
- cancellation: per (seed, example) ``ΔL = ℓ_scrubbed/n − ℓ_clean/n``; ``E|ΔL|`` vs ``|EΔL|``, their
  difference ``cancelled`` (nats the mean hides) and the fraction of examples made better. Flagged
  (``flag_cancellation = 1``) when ``cancelled > cancel_tol · max(gap, min_gap)``;
- ``gap = L_b − L_clean``; when its 95% lower bound is below ``min_gap`` the ratio is meaningless
  (e.g. on degraded weights whose clean loss has risen to the baseline's): ``flag_ratio_unreliable``;
  the absolute losses and KL stay reported.

Intervals: a two-level bootstrap over examples (reference draws, resampled with replacement) and
seeds (resampled with replacement), percentile 95%. ``recovered_seed_sd`` is the spread over seeds
alone.

Example::

    >>> import torch
    >>> from analyses.scrubbing import summarize
    >>> n = torch.ones(4)
    >>> m = summarize(torch.zeros(4), n, torch.full((2, 4), 0.1), torch.full((2, 4), 0.1),
    ...               {"resample_all": (torch.ones(2, 4), torch.ones(2, 4))})
    >>> round(m["recovered"], 3), round(m["kl_recovered"], 3), m["flag_cancellation"]
    (0.9, 0.9, 0.0)
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float

__all__ = ["summarize"]


def _ci(x: torch.Tensor) -> tuple[float, float]:
    x = x[torch.isfinite(x)]
    if x.numel() == 0:
        return float("nan"), float("nan")
    q = torch.quantile(x.double(), torch.tensor([0.025, 0.975], dtype=torch.float64))
    return float(q[0]), float(q[1])


def summarize(
    clean: Float[torch.Tensor, "n"],
    counts: Float[torch.Tensor, "n"],
    scrubbed: Float[torch.Tensor, "seed n"],
    kl: Float[torch.Tensor, "seed n"],
    baselines: dict[str, tuple[Float[torch.Tensor, "seed n"], Float[torch.Tensor, "seed n"]]],
    *,
    min_gap: float = 0.05,
    cancel_tol: float = 0.1,
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """All scrubbing metrics from per-example loss / KL sums (see the module docstring).

    Args:
        clean: summed clean loss per example ``[n]``.
        counts: scored targets per example ``[n]`` (1 for one prediction per example).
        scrubbed: summed scrubbed loss per seed and example.
        kl: summed KL(clean ‖ scrubbed) per seed and example.
        baselines: ``name -> (loss sums, KL sums)`` per seed and example; the first is the primary
            baseline (``recovered``, ``kl_recovered``, ``gap``).
    """
    if not baselines:
        raise ValueError("summarize: give at least one baseline, e.g. {'resample_all': (loss, kl)}.")
    clean, counts = clean.double().cpu(), counts.double().cpu()
    scrubbed, kl = scrubbed.double().cpu(), kl.double().cpu()
    bases = {k: (v[0].double().cpu(), v[1].double().cpu()) for k, v in baselines.items()}
    n_seeds, n = scrubbed.shape
    total = counts.sum()

    def mean(x: torch.Tensor) -> float:  # token-weighted over examples, averaged over seeds
        return float(x.mean(0).sum() / total) if x.dim() == 2 else float(x.sum() / total)

    out: dict[str, float] = {"loss_clean": mean(clean), "loss_scrubbed": mean(scrubbed),
                             "kl": mean(kl)}
    primary = next(iter(bases))
    for name, (bl, bk) in bases.items():
        out[f"loss_{name}"] = mean(bl)
        out[f"kl_{name}"] = mean(bk)
        gap = out[f"loss_{name}"] - out["loss_clean"]
        out[f"recovered_{name}"] = (out[f"loss_{name}"] - out["loss_scrubbed"]) / gap if gap else math.nan
        out[f"kl_recovered_{name}"] = 1 - out["kl"] / out[f"kl_{name}"] if out[f"kl_{name}"] else math.nan
    out["recovered"] = out[f"recovered_{primary}"]
    out["kl_recovered"] = out[f"kl_recovered_{primary}"]
    out["gap"] = out[f"loss_{primary}"] - out["loss_clean"]

    # per-seed spread of the ratio
    bl, bk = bases[primary]
    per_seed = (bl.sum(1) - scrubbed.sum(1)) / (bl.sum(1) - clean.sum())
    out["recovered_seed_sd"] = float(per_seed.std()) if n_seeds > 1 else math.nan

    out.update(_bootstrap_intervals(clean, counts, scrubbed, kl, bl, bk, bootstrap, seed))
    out.update(_cancellation(clean, counts, scrubbed, total))
    scale = max(out["gap"], min_gap)
    out["flag_cancellation"] = float(out["cancelled"] > cancel_tol * scale)
    out["flag_ratio_unreliable"] = float(not out["gap_ci_low"] >= min_gap)
    return out


def _bootstrap_intervals(clean: torch.Tensor, counts: torch.Tensor, scrubbed: torch.Tensor, kl: torch.Tensor,
                         bl: torch.Tensor, bk: torch.Tensor, bootstrap: int, seed: int) -> dict[str, float]:
    """95% percentile intervals (``*_ci_low``/``*_ci_high``) of the token-weighted metrics under a
    two-level bootstrap: examples and seeds resampled with replacement (float64 inputs)."""
    n_seeds, n = scrubbed.shape
    g = torch.Generator().manual_seed(seed)
    ex = torch.randint(n, (bootstrap, n), generator=g)
    ex_w = torch.zeros(bootstrap, n, dtype=torch.float64).scatter_add_(
        1, ex, torch.ones(bootstrap, n, dtype=torch.float64))
    sd = torch.randint(n_seeds, (bootstrap, n_seeds), generator=g)
    sd_w = torch.zeros(bootstrap, n_seeds, dtype=torch.float64).scatter_add_(
        1, sd, torch.ones(bootstrap, n_seeds, dtype=torch.float64)) / n_seeds

    def boot(x: torch.Tensor) -> torch.Tensor:  # [bootstrap] token-weighted means
        per_ex = sd_w @ x if x.dim() == 2 else x.expand(bootstrap, n)
        return (per_ex * ex_w).sum(1) / (ex_w @ counts)

    b_clean, b_scr, b_kl, b_bl, b_bk = boot(clean), boot(scrubbed), boot(kl), boot(bl), boot(bk)
    b_gap = b_bl - b_clean
    out: dict[str, float] = {}
    for key, vals in {
        "recovered": (b_bl - b_scr) / b_gap,
        "kl_recovered": 1 - b_kl / b_bk,
        "loss_scrubbed": b_scr,
        "kl": b_kl,
        "gap": b_gap,
    }.items():
        out[f"{key}_ci_low"], out[f"{key}_ci_high"] = _ci(vals)
    return out


def _cancellation(clean: torch.Tensor, counts: torch.Tensor, scrubbed: torch.Tensor, total: torch.Tensor
                  ) -> dict[str, float]:
    """How much per-example ΔL cancels in the mean, over (seed, example) pairs, token-weighted."""
    n_seeds, n = scrubbed.shape
    delta = scrubbed / counts - clean / counts  # [seed, n] per-token ΔL of each example
    w = counts.expand(n_seeds, n) / (n_seeds * total)
    out = {"delta_loss_mean": float((delta * w).sum()), "delta_loss_abs": float((delta.abs() * w).sum())}
    out["cancelled"] = out["delta_loss_abs"] - abs(out["delta_loss_mean"])
    out["frac_better"] = float((delta < 0).double().mean())
    return out
