"""Configuration checks of :class:`~interp.degradations.TemperedPosterior`: every field validated
at construction, each failure a ValueError that names the field, the value, what is allowed and the fix.

The bounds come from the sampler's maths (Welling & Teh 2011; Lau et al. 2023): B = nβ > 0, the
localization γ >= 0, a step size ε > 0, and ``lr_safety`` = ε·(B·ĥ + γ) < 2, since on a quadratic of
stiffness a the update w ← w − (ε/2)·a·w + √ε·ξ is stable only for ε·a < 4 (the margin keeps the
first-order step-size bias 1/(1 − εa/4) small). RMSProp's decay α lies in (0, 1) and its floor η > 0.

Example::

    >>> from interp.degradations import TemperedPosterior
    >>> TemperedPosterior(lr_safety=3.0)
    Traceback (most recent call last):
    ...
    ValueError: TemperedPosterior(lr_safety=3.0): lr_safety must be < 2 (the chain diverges at ε·a >= 4). Use e.g. lr_safety=0.2.
"""

from __future__ import annotations

from typing import Any

from interp.checks import bad_value, check_choice, check_flag, check_fraction, check_number
from interp.degradations._select import check_restrict
from interp.degradations._step import SAMPLERS
from interp.degradations._targets import AUTOCAST_DTYPES, check_objective
from interp.degradations.calibration import CalibrationConfig

__all__ = ["check_sampler"]


def check_sampler(cfg: Any) -> None:
    """A ValueError naming the first field of ``cfg`` (a ``TemperedPosterior``) that the sampler
    cannot use, and the fix."""
    c = "TemperedPosterior"
    check_number(c, "nbeta", cfg.nbeta, none_ok=True, fix="Give B = nβ > 0, e.g. nbeta=1000.0, or "
                 "pass a level to draws().")
    check_number(c, "localization", cfg.localization, zero_ok=True,
                 fix="Use γ >= 0 (0 = no localization; 100 is a common choice).")
    check_number(c, "lr", cfg.lr, none_ok=True, fix="Use a step size > 0, e.g. lr=1e-4, or None "
                 "to choose it from the curvature.")
    for n, attr in (("chains", "chains"), ("n_draws", "n_draws"), ("thin", "thin"),
                    ("batch_size", "batch_size")):
        check_number(c, n, getattr(cfg, attr), integer=True, fix=f"Use a positive integer for {n}.")
    check_number(c, "init_batches", cfg.init_batches, integer=True, none_ok=True,
                 fix="Use None (the whole split, or 64 minibatches on a large one) or a positive integer.")
    for n in ("burnin", "seed", "eval_rows"):
        check_number(c, n, getattr(cfg, n), integer=True, zero_ok=True,
                     fix=f"Use a non-negative integer for {n}.")
    check_number(c, "lr_safety", cfg.lr_safety, fix="Use a value in (0, 2), e.g. 0.2.")
    if cfg.lr_safety >= 2:
        raise bad_value(c, "lr_safety", cfg.lr_safety, "< 2 (the chain diverges at ε·a >= 4)",
                        "Use e.g. lr_safety=0.2.")
    check_number(c, "divergence", cfg.divergence, fix="Use e.g. divergence=100.0.")
    check_number(c, "max_loss_increase", cfg.max_loss_increase, none_ok=True,
                 fix="Use a loss increase in the objective's units, or None.")
    check_number(c, "memory_budget", cfg.memory_budget, integer=True, none_ok=True,
                 fix="Give bytes as a positive integer, e.g. memory_budget=4 * 2**30, or None (half the "
                 "free memory).")
    if cfg.vectorize not in (None, True, False):
        raise bad_value(c, "vectorize", cfg.vectorize, "True, False or None (automatic)", "")
    check_flag(c, "progress", cfg.progress)
    check_flag(c, "strict", cfg.strict, fix="strict=True raises on a failed LossIncrease level.")
    if not isinstance(cfg.calibration, CalibrationConfig):
        raise bad_value(c, "calibration", cfg.calibration, "a CalibrationConfig", "Use "
                        "calibration=CalibrationConfig(tolerance=0.1, ...).")
    if cfg.objective is not None:
        check_objective(c, cfg.objective)
    check_restrict(cfg.restrict, c)
    check_choice(c, "sampler", cfg.sampler, SAMPLERS,
                 fix="'sgld' (plain localized SGLD) or 'rmsprop' (RMSProp-preconditioned SGLD).")
    check_fraction(c, "rmsprop_alpha", cfg.rmsprop_alpha, closed=False,
                   fix="The running-mean decay of squared gradients, in (0, 1), e.g. 0.999.")
    check_number(c, "rmsprop_eps", cfg.rmsprop_eps, fix="The preconditioner's floor η > 0, e.g. 0.1.")
    if cfg.autocast is not None:
        check_choice(c, "autocast", cfg.autocast, AUTOCAST_DTYPES,
                     fix="None (the model's dtype), or a low-precision forward: 'bfloat16' or 'float16'.")
