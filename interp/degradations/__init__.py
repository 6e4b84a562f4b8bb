"""Degradations: put naturally degraded weights into the live model, one draw at a time, and always
restore the originals.

:class:`TemperedPosterior` samples the tempered local posterior around the trained weights ``w0``
with localized SGLD (Welling & Teh 2011; Lau et al. 2023, "The Local Learning Coefficient"):

    p_B(w) ∝ exp(−B·L(w) − γ/2·‖w − w0‖²)
    w ← w − (ε/2)·[B·∇L_batch(w) + γ(w − w0)] + √ε·ξ,      ξ ~ N(0, I)

with L the per-token mean loss of a :class:`~interp.tasks.Task` (or any ``loss(model)``), B = nβ
(``nbeta``), γ (``localization``), ε (``lr``). Levels are inverse temperatures or **target loss
increases** Δ (:class:`LossIncrease`), calibrated from E[L] − L(w0) ≈ λ/B. :func:`estimate_llc`
returns the local learning coefficient λ̂ = B·(E[L] − L(w0)) with its standard error. Baselines
with the same interface: :class:`WeightNoise`, :class:`ActivationNoise`, :class:`Checkpoints`.
:mod:`interp.degradations.oracles` has models with known λ to check samplers against.

Why hand-written: devinterp deep-copies the model for every chain, which breaks on TransformerLens 4
bridges (the copy shares hooks with the original), and no TL4-aware sampler exists. Here the chains
run in place on the live model (or vectorised with ``torch.func`` for plain modules) and every exit
path restores the weights bit-identically.

Example::

    >>> import torch
    >>> from interp.degradations import TemperedPosterior, estimate_llc
    >>> from interp.degradations.oracles import MonomialPotential
    >>> model = MonomialPotential([2, 2, 4])                 # λ = 1/2 + 1/2 + 1/4
    >>> est = estimate_llc(model, model.loss, nbeta=100.0, localization=0.0, lr=1e-3,
    ...                    chains=4, n_draws=500, burnin=200, progress=False)
    >>> 0.6 < est.mean < 1.9
    True
    >>> sampler = TemperedPosterior(nbeta=100.0, localization=0.0, lr=1e-3, chains=2, n_draws=3,
    ...                             burnin=10, progress=False)
    >>> sorted((d.chain, d.draw) for d in sampler.draws(model, model.loss))
    [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    >>> bool(model.w.eq(0).all())                             # restored
    True
"""

from interp.degradations._core import (
    Degradation,
    Draw,
    LevelAxis,
    LossIncrease,
    NBeta,
    SearchAxis,
    WeightSnapshot,
    equal_loss_role,
    register_degradation,
    registered_degradations,
    unregister_degradation,
)
from interp.degradations.cost import PlanCosts, Work
from interp.degradations._select import clean_name, select_parameters, transformerlens_names
from interp.degradations.baselines import ActivationNoise, Checkpoints, WeightNoise
from interp.degradations._batched import ChainStacking
from interp.degradations._chain import ChainDiagnostics
from interp.degradations.calibration import (
    CalibrationConfig,
    CalibrationFailed,
    CalibrationRecord,
    CalibrationRound,
    LevelPlan,
    assess_calibration,
    indistinct_levels,
)
from interp.degradations._select import head_pattern
from interp.degradations.llc import LLCEstimate, estimate_component_llcs, estimate_llc
from interp.degradations.llc_table import ComponentLLC, ComponentLLCs
from interp.degradations.sgld import SamplingRun, TemperedPosterior

__all__ = [
    "ActivationNoise",
    "CalibrationConfig",
    "CalibrationFailed",
    "CalibrationRecord",
    "CalibrationRound",
    "ChainDiagnostics",
    "ChainStacking",
    "ComponentLLC",
    "ComponentLLCs",
    "Checkpoints",
    "Degradation",
    "Draw",
    "LLCEstimate",
    "LevelAxis",
    "LevelPlan",
    "LossIncrease",
    "NBeta",
    "PlanCosts",
    "SamplingRun",
    "SearchAxis",
    "TemperedPosterior",
    "WeightNoise",
    "WeightSnapshot",
    "Work",
    "assess_calibration",
    "clean_name",
    "equal_loss_role",
    "estimate_component_llcs",
    "estimate_llc",
    "head_pattern",
    "indistinct_levels",
    "select_parameters",
    "transformerlens_names",
    "register_degradation",
    "registered_degradations",
    "unregister_degradation",
]
