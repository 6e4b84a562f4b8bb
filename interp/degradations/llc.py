"""The local learning coefficient estimator: λ̂ = B·(E[L] − L(w0)) with its standard error.

From localized SGLD chains at inverse temperature B (Lau et al. 2023, "The Local Learning
Coefficient: A Singularity-Aware Complexity Measure"): λ̂ per chain is B times the mean minibatch
loss after burn-in minus L(w0); the estimate is the mean over the chains that did not fail.

Example::

    >>> from interp.degradations.oracles import MonomialPotential
    >>> q = MonomialPotential([2])                       # λ = 1/2
    >>> est = estimate_llc(q, q.loss, nbeta=100.0, localization=0.0, lr=1e-3, chains=4, draws=400,
    ...                    burnin=100, eval_rows=0, progress=False)
    >>> 0.3 < est.mean < 0.8
    True
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

import torch

from interp.degradations._chain import ChainDiagnostics
from interp.degradations.calibration import CalibrationRecord
from interp.degradations.sgld import TemperedPosterior

__all__ = ["LLCEstimate", "estimate_llc"]


@dataclass(frozen=True)
class LLCEstimate:
    """Local learning coefficient estimate from the chains that did not fail.

    ``mean`` ± ``stderr`` (standard error over chains), ``per_chain`` λ̂ of the successful chains,
    ``specific_heat`` (mean over chains of B²·Var(L) on the fixed batch, NaN without one),
    ``failed`` (``(chain, reason)`` of every failed chain), ``chains`` (all diagnostics) and the
    ``nbeta``, ``lr``, ``localization`` used; ``objective`` and ``units`` name the loss sampled on
    (λ̂ is dimensionless: B carries the inverse units).
    """

    mean: float
    stderr: float
    per_chain: tuple[float, ...]
    specific_heat: float
    failed: tuple[tuple[int, str], ...]
    chains: tuple[ChainDiagnostics, ...]
    nbeta: float
    lr: float
    localization: float
    calibration: CalibrationRecord | None = None
    objective: str | None = None
    units: str | None = None


def estimate_llc(model: torch.nn.Module, target: Any, level: Any = None, **sampler_kwargs: Any) -> LLCEstimate:
    """Estimate the local learning coefficient λ̂ = B·(E[L] − L(w0)) with its standard error.

    ``sampler_kwargs`` are :class:`TemperedPosterior` fields (``nbeta``, ``localization``, ``lr``,
    ``chains``, ``draws``, ``burnin``, ``thin``, ``seed``, ...). Failed chains are reported in
    ``failed`` and never averaged; if every chain fails a ``RuntimeError`` names the reasons.
    """
    unknown = set(sampler_kwargs) - set(TemperedPosterior.field_names())
    if unknown:
        raise ValueError(
            f"estimate_llc got unknown argument(s) {sorted(unknown)}; allowed: "
            f"{', '.join(TemperedPosterior.field_names())}."
        )
    run = TemperedPosterior(**sampler_kwargs).sample(model, target, level)
    ok = run.ok
    failed = tuple((c.chain, c.reason or "") for c in run.failed)
    if not ok:
        raise RuntimeError(
            "Every chain failed, no LLC estimate: " + "; ".join(f"chain {c}: {r}" for c, r in failed)
            + ". Lower lr (or let lr=None choose it), or raise localization."
        )
    vals = tuple(c.llc for c in ok)
    mean = sum(vals) / len(vals)
    se = statistics.stdev(vals) / math.sqrt(len(vals)) if len(vals) > 1 else math.nan
    heats = [c.specific_heat for c in ok if math.isfinite(c.specific_heat)]
    return LLCEstimate(
        mean=mean, stderr=se, per_chain=vals,
        specific_heat=sum(heats) / len(heats) if heats else math.nan,
        failed=failed, chains=tuple(run.chains), nbeta=float(run.nbeta), lr=float(run.lr),
        localization=run.cfg.localization, calibration=run.calibration,
        objective=ok[0].objective, units=ok[0].units,
    )
