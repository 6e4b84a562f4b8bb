"""Localized SGLD on the tempered local posterior: :class:`TemperedPosterior` and :func:`estimate_llc`.

Target density around the trained weights ``w0`` (REFERENCE §2; Welling & Teh 2011; localized as in
Lau et al. 2023):

    p_B(w) ∝ exp(−B·L(w) − γ/2·‖w − w0‖²),     B = nβ,  γ = ``localization``

with ``L`` the per-token mean loss of the target. One step, with ε = ``lr`` and ξ ~ N(0, I):

    w ← w − (ε/2)·[B·∇L_batch(w) + γ(w − w0)] + √ε·ξ

LLC estimate after burn-in: λ̂ = B·(E[L_batch(w_t)] − L(w0)); specific heat B²·Var(L_fixed) on a
fixed evaluation batch as a second estimator (agreement is an equilibrium diagnostic).

Choosing γ and ε for an LLC estimate (measured on deep linear networks, ``tests/test_sampler.py``):
near a singular w0 the loss is locally homogeneous, so E[B·L] depends on (B, γ) through κ = γ/√B and
approaches λ only like λ − (m − 1)/log(1/κ²) (m the multiplicity); valleys of the zero set are held
only by γ and relax in ≈ 1/(εγ) steps. κ ≈ 0.1 with ε·(B·ĥ + γ) ≈ 0.2 lands within a few percent;
B = 10³, γ = 10 (κ = 0.32) is 8–17% low.

Several chains of a plain module run as one batched call (``vectorize``): the forward is
``torch.func.vmap`` over ``functional_call`` with stacked weights, the backward plain autograd on the
sum of the per-chain losses (chains do not interact, so each chain gets its own gradient); ≈ 12k
chain-steps/s for 16 chains of a 64-parameter network on one thread. Native bridges (the organisms)
run all chains through one hand-batched forward (:mod:`interp.degradations.stacked`; vmapping the
bridge was measured no faster than running chains one after another); ≈ 3× devinterp's chain-steps/s
on the induction organism with 4 chains (BENCHMARKS.md, "Sampler"). Other models run chains one
after another.

Example::

    >>> from interp.degradations.oracles import DeepLinearNetwork
    >>> net = DeepLinearNetwork([4, 3, 4], rank=1)
    >>> est = estimate_llc(net, net.loss, nbeta=100.0, localization=1.0, lr=6e-4, chains=2,
    ...                    draws=50, burnin=10, eval_rows=0, progress=False)
    >>> est.mean > 0
    True
"""

from __future__ import annotations

import logging
import math
import statistics
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from interp.checks import bad_value, check_flag, check_number
from interp.degradations._core import (
    Draw,
    LossIncrease,
    NBeta,
    Objective,
    Restrict,
    WeightSnapshot,
    check_objective,
    describe_objective,
    select_parameters,
)
from interp.degradations.stacked import StackedForward, unsupported_reason

logger = logging.getLogger("interp.degradations")

__all__ = [
    "TemperedPosterior",
    "CalibrationConfig",
    "CalibrationRecord",
    "CalibrationRound",
    "ChainDiagnostics",
    "SamplingRun",
    "LevelPlan",
    "LLCEstimate",
    "estimate_llc",
]


@dataclass(frozen=True)
class CalibrationConfig:
    """How a :class:`~interp.degradations.LossIncrease` level is turned into an inverse temperature.

    Pilot chains (``pilot_chains`` × (``pilot_burnin`` + ``pilot_draws``·``pilot_thin``) steps; ``None``:
    the sampler's own burnin/draws/thin, so pilots measure exactly what the final chains will, even
    when the loss is still relaxing) measure the mean loss increase on the fixed evaluation batch; ``B`` moves by the λ̂-based guess
    ``B·ΔL/Δ`` (since ΔL ≈ λ/B) until the target is bracketed, then by interpolation / bisection on
    log B. It stops when |ΔL/Δ − 1| ≤ ``tolerance`` or after ``max_rounds``. A diverging pilot halves ε.
    """

    tolerance: float = 0.1
    max_rounds: int = 8
    pilot_chains: int = 1
    pilot_burnin: int | None = None
    pilot_draws: int | None = None
    pilot_thin: int | None = None

    def __post_init__(self) -> None:
        c = "CalibrationConfig"
        check_number(c, "tolerance", self.tolerance, fix="Use e.g. tolerance=0.1 (10%).")
        for n in ("max_rounds", "pilot_chains"):
            check_number(c, n, getattr(self, n), integer=True, fix=f"Use a positive integer for {n}.")
        for n in ("pilot_draws", "pilot_thin"):
            check_number(c, n, getattr(self, n), integer=True, none_ok=True,
                         fix=f"Use a positive integer for {n}, or None (the sampler's own value).")
        check_number(c, "pilot_burnin", self.pilot_burnin, integer=True, zero_ok=True, none_ok=True,
                     fix="Use a non-negative integer, or None (the sampler's burnin).")


@dataclass(frozen=True)
class CalibrationRound:
    """One pilot of a calibration: its ``nbeta`` B, step ``lr`` ε, measured ``loss_increase`` and λ̂."""

    nbeta: float
    lr: float
    loss_increase: float
    llc: float
    failed: str | None = None


@dataclass(frozen=True)
class CalibrationRecord:
    """How a target loss increase was reached: the chosen B and ε and every pilot round; ``target``
    and the pilots' loss increases are in ``units`` of the ``objective`` sampled on."""

    target: float
    nbeta: float
    lr: float
    rounds: tuple[CalibrationRound, ...]
    converged: bool
    objective: str | None = None
    units: str | None = None


@dataclass(frozen=True)
class LevelPlan:
    """What every chain of one level starts with: inverse temperature ``nbeta`` B, step size ``lr``
    ε, and the ``calibration`` that chose them for a :class:`LossIncrease` level (``None`` otherwise).

    Made by :meth:`TemperedPosterior.plan`; :meth:`TemperedPosterior.run_chain` runs one chain of the
    level from it (in this process or another one, e.g. a Ray job).
    """

    nbeta: float
    lr: float
    calibration: CalibrationRecord | None = None

    def __post_init__(self) -> None:
        check_number("LevelPlan", "nbeta", self.nbeta, fix="Make plans with TemperedPosterior.plan(...).")
        check_number("LevelPlan", "lr", self.lr, fix="Make plans with TemperedPosterior.plan(...).")
        if self.calibration is not None and not isinstance(self.calibration, CalibrationRecord):
            raise bad_value("LevelPlan", "calibration", self.calibration, "a CalibrationRecord or None",
                            "Make plans with TemperedPosterior.plan(...).")


@dataclass
class ChainDiagnostics:
    """Everything recorded about one chain (filled while it runs).

    ``losses``: minibatch loss at every step (before that step's update). ``eval_losses``,
    ``distances`` (‖w − w0‖) and ``grad_noise`` (‖(ε/2)·B·∇L‖ / ‖√ε·ξ‖) at every draw. A chain that
    diverges (non-finite loss or weights, or a loss explosion) stops with ``failed=True`` and a
    ``reason``; its numbers are never averaged into an estimate.
    """

    chain: int
    nbeta: float
    lr: float
    localization: float
    burnin: int
    init_loss: float
    init_eval_loss: float | None
    n_params: int
    losses: list[float] = field(default_factory=list)
    eval_losses: list[float] = field(default_factory=list)
    distances: list[float] = field(default_factory=list)
    grad_noise: list[float] = field(default_factory=list)
    failed: bool = False
    reason: str | None = None
    objective: str | None = None
    units: str | None = None

    @property
    def steps(self) -> int:
        return len(self.losses)

    @property
    def llc(self) -> float:
        """λ̂ = B·(mean minibatch loss after burn-in − L(w0)); NaN for a failed chain."""
        post = self.losses[self.burnin:]
        if self.failed or not post:
            return math.nan
        return self.nbeta * (sum(post) / len(post) - self.init_loss)

    @property
    def specific_heat(self) -> float:
        """B²·Var(L) of the fixed-batch loss over the draws (≈ λ at equilibrium)."""
        if self.failed or len(self.eval_losses) < 2:
            return math.nan
        return self.nbeta**2 * statistics.variance(self.eval_losses)

    @property
    def loss_increase(self) -> float:
        """Mean fixed-batch loss over the draws minus its value at ``w0`` (in ``units``)."""
        if self.failed or not self.eval_losses or self.init_eval_loss is None:
            return math.nan
        return sum(self.eval_losses) / len(self.eval_losses) - self.init_eval_loss


@dataclass(frozen=True, init=False, repr=False)
class TemperedPosterior:
    """Localized SGLD sampler of the tempered local posterior around the trained weights.

    Args:
        nbeta: inverse temperature B = nβ multiplying the per-token mean loss (used when ``draws`` is
            given no level). ``None``: a level must be given.
        localization: γ, strength of the pull ``γ/2·‖w − w0‖²`` back to the trained weights.
        lr: step size ε. ``None`` (default): chosen per level as ``lr_safety / (B·ĥ + γ)`` with ĥ the
            top Hessian eigenvalue at ``w0`` (power iteration), so the chain is stable (εa < 4 is
            needed; see the module docstring for the measured step-size bias). A number is used as
            given (with a :class:`LossIncrease` level it is an upper bound).
        chains: number of chains.
        draws: draws per chain (stored as ``n_draws``: ``draws`` is also the method that samples).
            A chain runs ``burnin + (draws − 1)·thin + 1`` steps.
        burnin: steps discarded first.
        thin: steps between draws.
        seed: seeds the noise (chain ``c`` uses ``seed·1000003 + c``) and the minibatch order (shared
            by all chains).
        batch_size: minibatch rows per step for a :class:`~interp.tasks.Task` or objective target.
        eval_rows: rows of the fixed evaluation batch (first rows of the train split, or of the
            objective's ``tensors()``) whose loss is recorded at every draw (``Draw.loss``, specific
            heat, calibration). 0 turns it off. (Was ``eval_size``, still accepted with a
            ``DeprecationWarning``.)
        init_batches: minibatches averaged for L(w0) in λ̂.
        restrict: only these parameters move (a layer, the MLPs, a head via a mask): see
            :func:`~interp.degradations.select_parameters`.
        lr_safety: target value of ε·(B·ĥ + γ) when ``lr`` is ``None``.
        divergence: a chain fails when B·(L − L(w0)) exceeds ``divergence · (d/2 + 1)`` (d = number of
            sampled parameters; at equilibrium B·(L − L0) ≈ λ ≤ d/2), or when loss or weights are
            not finite.
        max_loss_increase: optional absolute guard: fail when L − L(w0) exceeds it (in the
            objective's units).
        vectorize: run all chains in one batched call. ``None``: automatic: native bridges with a
            task target go through :class:`~interp.degradations.stacked.StackedForward` (one
            hand-batched forward for all chains), small plain modules without overlapping
            parameters through ``torch.func.vmap``; other models run chains one after another. The
            result is the same up to float rounding (checked on the model at w0 before use).
        calibration: :class:`CalibrationConfig` for :class:`LossIncrease` levels.
        progress: show a ``tqdm`` progress bar.
        objective: what the posterior is sampled on. ``None`` (default): the target passed to
            :meth:`draws` (a sweep's task). Else a :class:`~interp.tasks.Task`, a callable
            ``loss(model) -> scalar tensor``, or an object of the ``interp.objectives.Objective``
            protocol (``name``, ``units``, ``prepare(model)`` called once at w0 before anything,
            ``tensors()``, ``loss(model, batch)``); the target passed to :meth:`draws` is then
            ignored for sampling. Losses, calibration and λ̂ are in the objective's units; every
            :class:`~interp.degradations.Draw`, calibration record and LLC estimate names it.
            Its description is part of the sampler's configuration (``objective_id``).
    """

    nbeta: float | None = None
    localization: float = 100.0
    lr: float | None = None
    chains: int = 4
    n_draws: int = 100
    burnin: int = 100
    thin: int = 1
    seed: int = 0
    batch_size: int = 32
    eval_rows: int = 256
    init_batches: int = 8
    restrict: Restrict = None
    lr_safety: float = 0.2
    divergence: float = 100.0
    max_loss_increase: float | None = None
    vectorize: bool | None = None
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    progress: bool = True
    objective: Any = field(default=None, repr=False, compare=False)
    #: address-free description of ``objective`` (``None``: the target passed to ``draws``).
    objective_id: str | None = field(default=None, init=False)

    def __init__(self, nbeta: float | None = None, localization: float = 100.0, lr: float | None = None,
                 chains: int = 4, draws: int = 100, burnin: int = 100, thin: int = 1, seed: int = 0,
                 batch_size: int = 32, eval_rows: int = 256, init_batches: int = 8,
                 restrict: Restrict = None, lr_safety: float = 0.2, divergence: float = 100.0,
                 max_loss_increase: float | None = None, vectorize: bool | None = None,
                 calibration: CalibrationConfig | None = None, progress: bool = True,
                 objective: Any = None, *, eval_size: int | None = None,
                 n_draws: int | None = None) -> None:
        values = dict(locals())
        values.pop("self")
        old = values.pop("eval_size")
        if old is not None:
            if eval_rows != 256 and eval_rows != old:
                raise bad_value("TemperedPosterior", "eval_size", old, "left out when eval_rows= is given "
                                "(eval_size is the old name of eval_rows)", f"Pass only eval_rows={eval_rows!r}.")
            warnings.warn("TemperedPosterior(eval_size=...) is renamed eval_rows=; the old name is accepted "
                          "for one release.", DeprecationWarning, stacklevel=2)
            values["eval_rows"] = old
        stored = values.pop("n_draws")  # the stored name, so dataclasses.replace and configs round-trip
        if stored is not None:
            if draws != 100 and draws != stored:
                raise bad_value("TemperedPosterior", "n_draws", stored, f"equal to draws={draws!r} when both "
                                "are given (n_draws is the stored name of draws)", "Pass only draws=...")
            draws = stored
        values["n_draws"] = values.pop("draws") if stored is None else draws
        if values["calibration"] is None:
            values["calibration"] = CalibrationConfig()
        for k, v in values.items():
            object.__setattr__(self, k, v)
        object.__setattr__(self, "objective_id", describe_objective(objective))
        self.__post_init__()

    def __post_init__(self) -> None:
        c = "TemperedPosterior"
        check_number(c, "nbeta", self.nbeta, none_ok=True, fix="Give B = nβ > 0, e.g. nbeta=1000.0, or "
                     "pass a level to draws().")
        check_number(c, "localization", self.localization, zero_ok=True,
                     fix="Use γ >= 0 (0 = no localization; 100 is a common choice).")
        check_number(c, "lr", self.lr, none_ok=True, fix="Use a step size > 0, e.g. lr=1e-4, or None "
                     "to choose it from the curvature.")
        for n, attr in (("chains", "chains"), ("draws", "n_draws"), ("thin", "thin"),
                        ("batch_size", "batch_size"), ("init_batches", "init_batches")):
            check_number(c, n, getattr(self, attr), integer=True, fix=f"Use a positive integer for {n}.")
        for n in ("burnin", "seed", "eval_rows"):
            check_number(c, n, getattr(self, n), integer=True, zero_ok=True,
                         fix=f"Use a non-negative integer for {n}.")
        check_number(c, "lr_safety", self.lr_safety, fix="Use a value in (0, 2), e.g. 0.2.")
        if self.lr_safety >= 2:
            raise bad_value(c, "lr_safety", self.lr_safety, "< 2 (the chain diverges at ε·a >= 4)",
                            "Use e.g. lr_safety=0.2.")
        check_number(c, "divergence", self.divergence, fix="Use e.g. divergence=100.0.")
        check_number(c, "max_loss_increase", self.max_loss_increase, none_ok=True,
                     fix="Use a loss increase in the objective's units, or None.")
        if self.vectorize not in (None, True, False):
            raise bad_value(c, "vectorize", self.vectorize, "True, False or None (automatic)", "")
        check_flag(c, "progress", self.progress)
        if not isinstance(self.calibration, CalibrationConfig):
            raise bad_value(c, "calibration", self.calibration, "a CalibrationConfig", "Use "
                            "calibration=CalibrationConfig(tolerance=0.1, ...).")
        if self.objective is not None:
            check_objective(c, self.objective)

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            if not f.init or f.name == "objective":
                continue
            parts.append(f"{'draws' if f.name == 'n_draws' else f.name}={getattr(self, f.name)!r}")
        if self.objective is not None:
            parts.append(f"objective={self.objective_id}")
        return f"TemperedPosterior({', '.join(parts)})"

    @property
    def eval_size(self) -> int:
        """Deprecated name of :attr:`eval_rows`."""
        warnings.warn("TemperedPosterior.eval_size is renamed eval_rows.", DeprecationWarning, stacklevel=2)
        return self.eval_rows

    # ------------------------------------------------------------------------------------- public
    @classmethod
    def field_names(cls) -> list[str]:
        """Constructor argument names (``draws`` is stored as ``n_draws``)."""
        return ["draws" if f.name == "n_draws" else f.name for f in fields(cls) if f.init]

    def draws(self, model: torch.nn.Module, target: Any, level: Any = None) -> SamplingRun:
        """Iterate over posterior draws with the sampled weights live in ``model``.

        ``target``: a :class:`~interp.tasks.Task` or a callable ``loss(model) -> scalar tensor``.
        ``level``: ``None`` (use ``nbeta``), a number or :class:`NBeta` (inverse temperature B), or
        :class:`LossIncrease` (calibrated). Returns a :class:`SamplingRun`: iterate it for
        :class:`~interp.degradations.Draw` s; its ``chains`` and ``calibration`` hold the diagnostics.
        The original weights are restored bit-identically between chains and when the iteration
        finishes, is broken off, or raises.
        """
        return SamplingRun(self, model, target, level)

    def sample(self, model: torch.nn.Module, target: Any, level: Any = None) -> SamplingRun:
        """Run all chains to the end without a consumer; returns the finished :class:`SamplingRun`."""
        run = SamplingRun(self, model, target, level, yield_draws=False)
        for _ in run:
            pass
        return run

    # ------------------------------------------------------- the steps of draws(), one at a time
    def plan(self, model: torch.nn.Module, target: Any, level: Any = None) -> LevelPlan:
        """A level's inverse temperature B and step size ε (calibrated for a :class:`LossIncrease`
        level): what :meth:`draws` computes before its chains. The weights are restored after."""
        eng = _Engine(self, model, target)
        try:
            return LevelPlan(*resolve_level(eng, level))
        finally:
            eng.snapshot.restore()

    def run_chain(self, model: torch.nn.Module, target: Any, level: Any, plan: LevelPlan,
                  chain: int) -> SamplingRun:
        """Chain ``chain`` of a level alone, from its :meth:`plan`: exactly the draws (and the
        :class:`ChainDiagnostics`, in the run's ``chains``) that chain ``chain`` of the sequential
        sampler (``vectorize=False``) yields; noise stream ``seed·1000003 + chain``, the minibatch
        order shared by all chains. A :class:`SamplingRun`: iterate it; the weights are restored
        when it finishes, is closed, or raises."""
        if not isinstance(plan, LevelPlan):
            raise bad_value("TemperedPosterior.run_chain", "plan", plan, "a LevelPlan",
                            "Make it with sampler.plan(model, target, level).")
        if isinstance(chain, bool) or not isinstance(chain, int) or not 0 <= chain < self.chains:
            raise bad_value("TemperedPosterior.run_chain", "chain", chain,
                            f"an integer in [0, chains={self.chains})", "Pass one of the sampler's chains.")
        return SamplingRun(self, model, target, level, plan=plan, chain_ids=(chain,))

    def vectorizes(self, model: torch.nn.Module, target: Any) -> bool:
        """Whether :meth:`draws` runs this model's chains as one batched call (then chain ``c``
        equals :meth:`run_chain` only up to float rounding). The weights are restored after."""
        if self.chains < 2:
            return False
        eng = _Engine(self, model, target)
        try:
            return bool(eng.use_vmap(self.chains) and eng._vmap_agrees())
        finally:
            eng.snapshot.restore()


# ----------------------------------------------------------------------------------------- engine
def _flat_norm(ts: list[torch.Tensor]) -> float:
    return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(ts)))) if ts else 0.0


def _chain_norms(ts: list[torch.Tensor]) -> list[float]:
    """Per-chain Euclidean norm over all tensors ``ts[i]: [C, ...]`` (chain along dim 0)."""
    sq = sum(x.reshape(x.shape[0], -1).square().sum(1) for x in ts)
    return sq.sqrt().tolist()


class _Engine:
    """The sampling machinery for one ``draws()`` call (one model, target and level)."""

    def __init__(self, cfg: TemperedPosterior, model: torch.nn.Module, target: Any) -> None:
        self.cfg = cfg
        self.model = model
        source = cfg.objective if cfg.objective is not None else target
        check_objective("TemperedPosterior", source)
        sel = select_parameters(model, cfg.restrict)
        self.names = [n for n, _, _ in sel]
        self.params = [p for _, p, _ in sel]
        self.masks = [m for _, _, m in sel]
        self.has_masks = any(m is not None for m in self.masks)
        self.d = int(sum(p.numel() if m is None else int(m.count_nonzero()) for p, m in zip(self.params, self.masks)))
        self.snapshot = WeightSnapshot(model)
        try:  # an objective's prepare(model) runs here, at w0, before anything else
            self.obj = Objective(source, cfg.batch_size, cfg.eval_rows, model=model)
        finally:
            self.snapshot.restore()
        self.w0 = [self.snapshot.saved(p) for p in self.params]
        self._curv: float | None = None
        self._init: tuple[float, float | None] | None = None

    # -------------------------------------------------------------------- reference quantities
    def init_losses(self) -> tuple[float, float | None]:
        """(L(w0) averaged over ``init_batches`` minibatches, fixed-batch loss at w0)."""
        if self._init is None:
            stream = self.obj.stream(self.cfg.seed)
            with torch.no_grad():
                vals = [float(self.obj.loss(self.model, next(stream))) for _ in range(
                    self.cfg.init_batches if self.obj.has_rows else 1)]
            ev = self.obj.eval_loss(self.model) if self.obj.fixed is not None else None
            if not all(math.isfinite(v) for v in vals):
                raise ValueError("The loss at the original weights is not finite; cannot sample.")
            self._init = (sum(vals) / len(vals), ev)
        return self._init

    def curvature(self) -> float:
        """Top Hessian eigenvalue ĥ of the loss at w0 (power iteration, 20 Hessian-vector products)."""
        if self._curv is None:
            gen = torch.Generator().manual_seed(self.cfg.seed + 17)
            v = [torch.randn(p.shape, generator=gen).to(p) for p in self.params]
            v = [x * m if m is not None else x for x, m in zip(v, self.masks)]
            nrm = _flat_norm(v)
            v = [x / nrm for x in v]
            batch = self.obj.fixed if self.obj.has_rows else None
            if batch is not None and len(next(iter(batch.values()))) > 64:
                batch = {k: t[:64] for k, t in batch.items()}
            if batch is None and self.obj.has_rows:
                batch = next(self.obj.stream(self.cfg.seed))
            lam = 0.0
            for _ in range(20):
                loss = self.obj.loss(self.model, batch)
                g = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)
                pairs = [(gi, vi) for gi, vi in zip(g, v) if gi is not None and gi.requires_grad]
                if not pairs:
                    break
                hv = torch.autograd.grad([gi for gi, _ in pairs], self.params,
                                         grad_outputs=[vi for _, vi in pairs], allow_unused=True)
                hv = [torch.zeros_like(p) if h is None else h.detach() for h, p in zip(hv, self.params)]
                hv = [h * m if m is not None else h for h, m in zip(hv, self.masks)]
                lam = float(sum((h * x).sum() for h, x in zip(hv, v)))
                nrm = _flat_norm(hv)
                if nrm == 0 or not math.isfinite(nrm):
                    break
                v = [h / nrm for h in hv]
            self._curv = abs(lam) if math.isfinite(lam) else 0.0
            logger.info("top curvature at w0: %.4g", self._curv)
        return self._curv

    def auto_lr(self, nbeta: float) -> float:
        a = nbeta * self.curvature() + self.cfg.localization
        if a <= 0:
            raise ValueError(
                "lr=None but the loss has zero curvature at w0 and localization=0, so no stable step "
                "size can be derived: pass lr=... explicitly or a localization > 0."
            )
        return self.cfg.lr_safety / a

    def stacked(self) -> StackedForward | None:
        """The hand-batched forward for native bridges with a task target (``None`` if not usable)."""
        if not hasattr(self, "_stacked"):
            reason = unsupported_reason(self.model)
            if reason is None and (self.obj.kind != "task" or "attention_mask" in self.obj.data):
                reason = "the target is not a plain next-token task"
            self._stacked = StackedForward(self.model, self.params) if reason is None else None
            if reason is not None:
                logger.debug("stacked chains unavailable: %s", reason)
        return self._stacked

    def use_vmap(self, chains: int) -> bool:
        if self.cfg.vectorize is not None:
            return bool(self.cfg.vectorize) and chains > 1
        if chains < 2:
            return False
        if hasattr(self.model, "original_model") or hasattr(self.model, "hook_dict"):
            return self.stacked() is not None
        all_params = list(self.model.parameters())
        if len({p.untyped_storage().data_ptr() for p in all_params}) < len(all_params):
            return False
        return self.d <= 20_000

    # ------------------------------------------------------------------------------ the chains
    def run(self, nbeta: float, lr: float, chains: int, burnin: int, draws: int, thin: int,
            level: Any, records: list[ChainDiagnostics], yield_draws: bool = True,
            progress: bool = False, chain_offset: int = 0,
            chain_ids: tuple[int, ...] | None = None) -> Iterator[Draw]:
        """Run chains ``chain_ids`` (default ``chain_offset + 0 .. chains − 1``); chain ``c`` draws
        its noise from ``seed·1000003 + c``."""
        ids = tuple(chain_ids) if chain_ids is not None else tuple(chain_offset + c for c in range(chains))
        chains = len(ids)
        init_loss, init_eval = self.init_losses()
        steps = burnin + (draws - 1) * thin + 1
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=chains * steps, desc=f"SGLD B={nbeta:.4g}", leave=False, mininterval=0.5)
        try:
            common = dict(nbeta=nbeta, lr=lr, localization=self.cfg.localization, burnin=burnin,
                          init_loss=init_loss, init_eval_loss=init_eval, n_params=self.d,
                          objective=self.obj.name, units=self.obj.units)
            if self.use_vmap(chains) and self._vmap_agrees():
                recs = [ChainDiagnostics(chain=c, **common) for c in ids]
                records.extend(recs)
                yield from self._run_vmap(recs, steps, burnin, thin, level, yield_draws, bar)
            else:
                for c in ids:
                    rec = ChainDiagnostics(chain=c, **common)
                    records.append(rec)
                    try:
                        yield from self._run_one(rec, steps, burnin, thin, level, yield_draws, bar)
                    finally:
                        self.snapshot.restore()
        finally:
            if bar is not None:
                bar.close()
            self.snapshot.restore()

    def _vmap_grad(self, chains: int):
        """``(ws, batch) -> (grads, losses)`` for ``chains`` stacked weight sets ``ws[name]: [C, ...]``.

        The forward is vmapped over the chains (``functional_call`` with one entry per parameter slot
        and ``tie_weights=False``, REFERENCE §1); the backward is plain autograd on the sum of the
        per-chain losses, whose gradient with respect to chain c's weights is chain c's own gradient
        (the chains do not interact). That is ≈2× cheaper than ``vmap(grad(...))`` on small modules.
        """
        stacked = self.stacked()
        if stacked is not None:
            return self._stacked_grad(stacked)
        from torch.func import functional_call, vmap

        holder = _LossModule(self.model, self.obj)

        def f(ws: dict[str, torch.Tensor], batch: Any) -> torch.Tensor:
            return functional_call(holder, {"model." + n: w for n, w in ws.items()}, (batch,),
                                   tie_weights=False, strict=False)

        vf = vmap(f, in_dims=(0, None))

        def grad_and_loss(ws: dict[str, torch.Tensor], batch: Any) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
            leaves = {n: w.detach().requires_grad_(True) for n, w in ws.items()}
            with torch.enable_grad():
                L = vf(leaves, batch)
                gs = torch.autograd.grad(L.sum(), list(leaves.values()), allow_unused=True)
            return ({n: torch.zeros_like(w) if g is None else g for (n, w), g in zip(leaves.items(), gs)},
                    L.detach())

        return grad_and_loss

    def _stacked_grad(self, stacked: StackedForward):
        """Like :meth:`_vmap_grad`, through :class:`StackedForward` (one forward for all chains)."""
        names, task = self.names, self.obj.target

        def grad_and_loss(ws: dict[str, torch.Tensor], batch: Any) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
            leaves = [ws[n].detach().requires_grad_(True) for n in names]
            with torch.enable_grad():
                L = task.loss_from_logits(stacked(leaves, batch["input_ids"].to(leaves[0].device)), batch)
                gs = torch.autograd.grad(L.sum(), leaves, allow_unused=True)
            return ({n: torch.zeros_like(w) if g is None else g for n, w, g in zip(names, leaves, gs)},
                    L.detach())

        return grad_and_loss

    def _vmap_agrees(self) -> bool:
        """Check once that the vectorised gradient at w0 equals the plain autograd one (a module that
        rebuilds Parameters inside forward, or keeps state, breaks ``functional_call``); fall back
        to sequential chains with a warning if not."""
        if getattr(self, "_vmap_ok", None) is not None:
            return self._vmap_ok
        batch = next(self.obj.stream(self.cfg.seed))
        try:
            g, val = self._vmap_grad(2)(dict(zip(self.names, [w.unsqueeze(0).repeat(2, *([1] * w.dim())) for w in self.w0])), batch)
            loss = self.obj.loss(self.model, batch)
            ref = torch.autograd.grad(loss, self.params, allow_unused=True)
            ok = torch.allclose(val[0].detach(), loss.detach(), rtol=1e-4, atol=1e-6) and all(
                torch.allclose(g[n][0], torch.zeros_like(p) if r is None else r, rtol=1e-4, atol=1e-6)
                for n, p, r in zip(self.names, self.params, ref))
            reason = "vectorised gradient differs from autograd at w0"
        except Exception as e:  # noqa: BLE001 - any failure means: use the sequential path
            ok, reason = False, f"{type(e).__name__}: {e}"
        finally:
            self.snapshot.restore()
        if not ok:
            logger.warning("vectorised chains disabled for %s (%s); running chains sequentially",
                           type(self.model).__name__, reason)
        self._vmap_ok = ok
        return ok

    def _threshold(self) -> float:
        return self.cfg.divergence * (self.d / 2 + 1)

    def _check(self, rec: ChainDiagnostics, loss: float) -> str | None:
        if not math.isfinite(loss):
            return f"non-finite loss ({loss}) at step {rec.steps}"
        inc = loss - rec.init_loss
        if rec.nbeta * inc > self._threshold():
            return (f"loss explosion at step {rec.steps}: B·(L − L0) = {rec.nbeta * inc:.4g} > "
                    f"divergence·(d/2 + 1) = {self._threshold():.4g} (L = {loss:.4g}, L0 = {rec.init_loss:.4g})")
        if self.cfg.max_loss_increase is not None and inc > self.cfg.max_loss_increase:
            return f"loss increase {inc:.4g} > max_loss_increase={self.cfg.max_loss_increase} at step {rec.steps}"
        return None

    def _drift_and_noise(self, grads: list[torch.Tensor], diff: list[torch.Tensor], noise: list[torch.Tensor],
                         B: float, gamma: float, masks: list[torch.Tensor | None]
                         ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The SGLD drift B·∇L + γ(w − w0) and the noise, both zeroed outside the sampled masks
        (shared by the sequential and the batched chains)."""
        drift = torch._foreach_mul(grads, B)
        if gamma:
            torch._foreach_add_(drift, diff, alpha=gamma)
        if self.has_masks:
            drift = [d * m if m is not None else d for d, m in zip(drift, masks)]
            noise = [x * m if m is not None else x for x, m in zip(noise, masks)]
        return drift, noise

    def _noise(self, gen: torch.Generator) -> list[torch.Tensor]:
        total = sum(p.numel() for p in self.params)
        flat = torch.randn(total, generator=gen, dtype=torch.float32)
        out, i = [], 0
        for p in self.params:
            out.append(flat[i:i + p.numel()].view(p.shape).to(device=p.device, dtype=p.dtype))
            i += p.numel()
        return out

    def _noise_stacked(self, gens: list[torch.Generator]) -> list[torch.Tensor]:
        """The same numbers as ``[_noise(g) for g in gens]``, stacked per parameter: ``[C, *shape]``."""
        total = sum(p.numel() for p in self.params)
        flat = torch.stack([torch.randn(total, generator=g, dtype=torch.float32) for g in gens])
        out, i = [], 0
        for p in self.params:
            out.append(flat[:, i:i + p.numel()].reshape(len(gens), *p.shape).to(device=p.device, dtype=p.dtype))
            i += p.numel()
        return out

    def _gen(self, chain: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + chain)

    def _run_one(self, rec: ChainDiagnostics, steps: int, burnin: int, thin: int, level: Any,
                 yield_draws: bool, bar: Any) -> Iterator[Draw]:
        cfg, params, w0, masks = self.cfg, self.params, self.w0, self.masks
        B, eps, gamma = rec.nbeta, rec.lr, rec.localization
        gen = self._gen(rec.chain)
        stream = self.obj.stream(cfg.seed)
        sq = math.sqrt(eps)
        n_draw = 0
        for t in range(steps):
            loss_t = self.obj.loss(self.model, next(stream))
            loss = float(loss_t.detach())
            reason = self._check(rec, loss)
            rec.losses.append(loss)
            if reason is not None:
                rec.failed, rec.reason = True, reason
                logger.warning("chain %d failed (B=%.4g, ε=%.3g): %s", rec.chain, B, eps, reason)
                return
            grads = torch.autograd.grad(loss_t, params, allow_unused=True)
            grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]
            with torch.no_grad():
                diff = torch._foreach_sub(params, w0)
                drift, noise = self._drift_and_noise(grads, diff, self._noise(gen), B, gamma, masks)
                is_draw = t >= burnin and (t - burnin) % thin == 0
                if is_draw:
                    rec.distances.append(_flat_norm(diff))
                    gn = 0.5 * eps * B * _flat_norm(grads if not self.has_masks else
                                                    [g * m if m is not None else g for g, m in zip(grads, masks)])
                    rec.grad_noise.append(gn / max(sq * _flat_norm(noise), 1e-30))
            if is_draw:
                if self.obj.fixed is not None:
                    ev = self.obj.eval_loss(self.model)
                    rec.eval_losses.append(ev)
                    if not math.isfinite(ev):
                        rec.failed, rec.reason = True, f"non-finite evaluation loss at step {t}"
                        return
                if yield_draws:
                    yield Draw(level=level, chain=rec.chain, draw=n_draw,
                               loss=rec.eval_losses[-1] if rec.eval_losses else loss,
                               nbeta=B, lr=eps, step=t, objective=self.obj.name, units=self.obj.units)
                n_draw += 1
            if t == steps - 1:
                break
            with torch.no_grad():
                torch._foreach_add_(params, drift, alpha=-eps / 2)
                torch._foreach_add_(params, noise, alpha=sq)
            if bar is not None:
                bar.update(1)
            if t % 50 == 49:
                bad = [n for n, p in zip(self.names, params) if not torch.isfinite(p).all()]
                if bad:
                    rec.failed, rec.reason = True, f"non-finite weights in {bad[:3]} at step {t}"
                    return

    def _run_vmap(self, recs: list[ChainDiagnostics], steps: int, burnin: int, thin: int,
                  level: Any, yield_draws: bool, bar: Any) -> Iterator[Draw]:
        C = len(recs)
        B, eps, gamma = recs[0].nbeta, recs[0].lr, recs[0].localization
        sq = math.sqrt(eps)
        obj, model, names = self.obj, self.model, self.names
        gv = self._vmap_grad(C)
        W = [w.unsqueeze(0).repeat(C, *([1] * w.dim())) for w in self.w0]
        W0 = [w.unsqueeze(0).expand_as(x) for w, x in zip(self.w0, W)]
        masks = [None if m is None else m.unsqueeze(0) for m in self.masks]
        gens = [self._gen(r.chain) for r in recs]
        stream = obj.stream(self.cfg.seed)
        alive = [True] * C
        keep: torch.Tensor | None = None  # per-chain 0/1 update mask once a chain has failed
        n_draw = 0
        for t in range(steps):
            g, L = gv(dict(zip(names, W)), next(stream))
            Ls = L.detach().tolist()
            for c, r in enumerate(recs):
                if not alive[c]:
                    continue
                reason = self._check(r, Ls[c])
                r.losses.append(Ls[c])
                if reason is not None:
                    r.failed, r.reason, alive[c] = True, reason, False
                    keep = torch.tensor(alive, dtype=W[0].dtype, device=W[0].device)
                    logger.warning("chain %d failed (B=%.4g, ε=%.3g): %s", r.chain, B, eps, reason)
            if not any(alive):
                return
            grads = [g[n] for n in names]
            with torch.no_grad():
                diff = torch._foreach_sub(W, W0)
                drift, noise = self._drift_and_noise(grads, diff, self._noise_stacked(gens), B, gamma, masks)
                is_draw = t >= burnin and (t - burnin) % thin == 0
                if is_draw:
                    gm = grads if not self.has_masks else [x if m is None else x * m for x, m in zip(grads, masks)]
                    dist, gnorm, nnorm = (_chain_norms(x) for x in (diff, gm, noise))
                    for c, r in enumerate(recs):
                        if alive[c]:
                            r.distances.append(dist[c])
                            r.grad_noise.append(0.5 * eps * B * gnorm[c] / max(sq * nnorm[c], 1e-30))
            if is_draw:
                if yield_draws or obj.fixed is not None:
                    for c, r in enumerate(recs):
                        if not alive[c]:
                            continue
                        with torch.no_grad():
                            for p, w in zip(self.params, W):
                                p.copy_(w[c])
                        if obj.fixed is not None:
                            r.eval_losses.append(obj.eval_loss(model))
                        if yield_draws:
                            yield Draw(level=level, chain=r.chain, draw=n_draw,
                                       loss=r.eval_losses[-1] if r.eval_losses else Ls[c], nbeta=B, lr=eps, step=t,
                                       objective=obj.name, units=obj.units)
                    self.snapshot.restore()
                n_draw += 1
            if t == steps - 1:
                break
            with torch.no_grad():
                if keep is None:
                    torch._foreach_add_(W, drift, alpha=-eps / 2)
                    torch._foreach_add_(W, noise, alpha=sq)
                else:
                    for w, d, x in zip(W, drift, noise):
                        shape = (C,) + (1,) * (w.dim() - 1)
                        w.add_(d * keep.view(shape), alpha=-eps / 2)
                        w.add_(x * keep.view(shape), alpha=sq)
            if bar is not None:
                bar.update(C)


class _LossModule(torch.nn.Module):
    """``forward(batch) = objective.loss(model, batch)``, so ``functional_call`` can swap the model's
    parameters for a callable target too."""

    def __init__(self, model: torch.nn.Module, obj: Objective) -> None:
        super().__init__()
        self.model = model
        object.__setattr__(self, "_obj", obj)

    def forward(self, batch: Any) -> torch.Tensor:
        return self._obj.loss(self.model, batch)


# -------------------------------------------------------------------------------------------- run
class _RunState:
    """What a :class:`SamplingRun`'s generator records (read through the run's attributes)."""

    __slots__ = ("cfg", "_yield_draws", "chains", "calibration", "nbeta", "lr", "init_loss")

    def __init__(self, cfg: TemperedPosterior, yield_draws: bool) -> None:
        self.cfg, self._yield_draws = cfg, yield_draws
        self.chains: list[ChainDiagnostics] = []
        self.calibration: CalibrationRecord | None = None
        self.nbeta: float | None = None
        self.lr: float | None = None
        self.init_loss: float | None = None


class SamplingRun(Iterator[Draw]):
    """The iterator returned by :meth:`TemperedPosterior.draws`.

    Attributes (filled as it runs): ``chains`` (list of :class:`ChainDiagnostics`), ``calibration``
    (:class:`CalibrationRecord` or ``None``), ``nbeta`` and ``lr`` actually used, ``init_loss``.
    Closing it (``close()``, ``break`` in a ``for`` loop followed by garbage collection, leaving a
    ``with`` block, an exception) restores the original weights.
    """

    def __init__(self, cfg: TemperedPosterior, model: torch.nn.Module, target: Any, level: Any,
                 yield_draws: bool = True, plan: LevelPlan | None = None,
                 chain_ids: tuple[int, ...] | None = None) -> None:
        self.cfg, self.level = cfg, level
        # The generator fills in a separate state object, never ``self``: a generator frame holding
        # ``self`` is a reference cycle, so an abandoned run (an exception in the consumer's loop)
        # would keep the sampled weights in the model until the cyclic garbage collector ran.
        self._state = _RunState(cfg, yield_draws)
        self._gen = SamplingRun._generate(self._state, model, target, level, plan, chain_ids)

    def __getattr__(self, name: str) -> Any:
        state = self.__dict__.get("_state")
        if state is not None and name in _RunState.__slots__:
            return getattr(state, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _generate(self: Any, model: torch.nn.Module, target: Any, level: Any, plan: LevelPlan | None,
                  chain_ids: tuple[int, ...] | None) -> Iterator[Draw]:
        cfg = self.cfg
        eng = _Engine(cfg, model, target)
        try:
            if plan is None:
                plan = LevelPlan(*resolve_level(eng, level))
            nbeta, lr, self.calibration = plan.nbeta, plan.lr, plan.calibration
            self.nbeta, self.lr = nbeta, lr
            self.init_loss = eng.init_losses()[0]
            ids = tuple(range(cfg.chains)) if chain_ids is None else chain_ids
            yield from eng.run(nbeta, lr, len(ids), cfg.burnin, cfg.n_draws, cfg.thin, level,
                               self.chains, yield_draws=self._yield_draws,
                               progress=cfg.progress and chain_ids is None, chain_ids=ids)
            failed = [c for c in self.chains if c.failed]
            if failed:
                logger.warning("%d of %d chains failed: %s", len(failed), len(self.chains),
                               "; ".join(f"chain {c.chain}: {c.reason}" for c in failed))
        finally:
            eng.snapshot.restore()

    def __iter__(self) -> SamplingRun:
        return self

    def __next__(self) -> Draw:
        return next(self._gen)

    def close(self) -> None:
        """Stop sampling and restore the original weights."""
        self._gen.close()

    def __enter__(self) -> SamplingRun:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self._gen.close()
        except Exception:  # pragma: no cover
            pass

    @property
    def failed(self) -> list[ChainDiagnostics]:
        return [c for c in self.chains if c.failed]

    @property
    def ok(self) -> list[ChainDiagnostics]:
        return [c for c in self.chains if not c.failed]


# -------------------------------------------------------------------------------------- calibrate
def resolve_level(eng: _Engine, level: Any) -> tuple[float, float, CalibrationRecord | None]:
    """A level's inverse temperature B and step size ε, with the calibration that chose them for a
    :class:`LossIncrease` level (``None`` otherwise): what every run of a level's chains starts with,
    in this process or in a Ray job (``interp.executors``)."""
    cfg = eng.cfg
    if isinstance(level, LossIncrease):
        calibration = _calibrate(eng, level.nats)
        return calibration.nbeta, calibration.lr, calibration
    if level is None:
        if cfg.nbeta is None:
            raise ValueError(
                "TemperedPosterior(nbeta=None) and no level given: pass level=NBeta(B), "
                "a number B or LossIncrease(nats), or set nbeta=... on the sampler."
            )
        nbeta = float(cfg.nbeta)
    elif isinstance(level, NBeta):
        nbeta = float(level.value)
    elif isinstance(level, (int, float)) and not isinstance(level, bool):
        nbeta = float(NBeta(float(level)).value)
    else:
        raise ValueError(
            f"level={level!r}: TemperedPosterior takes None, a number or NBeta (inverse "
            "temperature B) or LossIncrease(nats)."
        )
    return nbeta, cfg.lr if cfg.lr is not None else eng.auto_lr(nbeta), None


def _calibrate(eng: _Engine, target: float) -> CalibrationRecord:
    cfg, cal = eng.cfg, eng.cfg.calibration
    if eng.obj.fixed is None:
        raise ValueError("LossIncrease levels need the fixed evaluation batch: set eval_rows > 0.")
    B = float(cfg.nbeta) if cfg.nbeta is not None else min(eng.d / 2, 100.0) / target
    lr_scale = 1.0
    rounds: list[CalibrationRound] = []
    lo: tuple[float, float] | None = None  # (log B, log ΔL) with ΔL > target: B too small
    hi: tuple[float, float] | None = None  # ΔL < target: B too large
    best: tuple[float, float, float] | None = None  # (|log ratio|, B, lr)
    converged = False
    for _ in range(cal.max_rounds):
        lr = eng.auto_lr(B) if cfg.lr is None else min(cfg.lr, 2 * cfg.lr_safety / (B * eng.curvature() + cfg.localization))
        lr *= lr_scale
        recs: list[ChainDiagnostics] = []
        burnin = cfg.burnin if cal.pilot_burnin is None else cal.pilot_burnin
        draws = cfg.n_draws if cal.pilot_draws is None else cal.pilot_draws
        thin = cfg.thin if cal.pilot_thin is None else cal.pilot_thin
        for _d in eng.run(B, lr, cal.pilot_chains, burnin, draws, thin, None, recs, yield_draws=False,
                          chain_ids=tuple(10_000 + c for c in range(cal.pilot_chains))):
            pass
        bad = [r for r in recs if r.failed]
        if bad:
            rounds.append(CalibrationRound(B, lr, math.nan, math.nan, failed=bad[0].reason))
            lr_scale /= 2
            logger.info("calibration pilot diverged at B=%.4g, ε=%.3g: halving ε", B, lr)
            continue
        inc = sum(r.loss_increase for r in recs) / len(recs)
        llc = sum(r.llc for r in recs) / len(recs)
        rounds.append(CalibrationRound(B, lr, inc, llc))
        logger.info("calibration: B=%.4g ε=%.3g ΔL=%.4g (target %.4g) λ̂=%.4g", B, lr, inc, target, llc)
        if inc > 0:
            err = abs(math.log(inc / target))
            if best is None or err < best[0]:
                best = (err, B, lr)
            if abs(inc / target - 1) <= cal.tolerance:
                converged = True
                break
        lb = math.log(B)
        if inc > target:
            lo = (lb, math.log(inc))
        else:
            hi = (lb, math.log(inc) if inc > 0 else -math.inf)
        if inc <= 0:
            nb = lb - math.log(10)
        else:
            nb = lb + math.log(inc / target)  # ΔL ≈ λ/B
        if lo is not None and hi is not None:
            if math.isfinite(hi[1]) and lo[1] != hi[1]:
                # interpolate log B linearly in log ΔL between the bracket ends
                tlog = math.log(target)
                nb = lo[0] + (hi[0] - lo[0]) * (lo[1] - tlog) / (lo[1] - hi[1])
            if not (min(lo[0], hi[0]) < nb < max(lo[0], hi[0])):
                nb = 0.5 * (lo[0] + hi[0])  # bisection on log B
        nb = min(max(nb, lb - math.log(30)), lb + math.log(30))
        B = math.exp(nb)
    if best is None:
        raise RuntimeError(
            f"Calibration to a loss increase of {target} {eng.obj.units} failed: every pilot diverged or "
            f"lowered the loss (rounds: {rounds}). w0 may not be a minimum; try a larger localization."
        )
    if not converged:
        _, B, lr = best
        logger.warning("calibration to ΔL=%.4g did not converge in %d rounds; using the closest B=%.4g",
                       target, cal.max_rounds, B)
    else:
        lr = rounds[-1].lr
    return CalibrationRecord(target=target, nbeta=B, lr=lr, rounds=tuple(rounds), converged=converged,
                             objective=eng.obj.name, units=eng.obj.units)


# ------------------------------------------------------------------------------------------- LLC
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
