"""The tempered-posterior sampler: :class:`TemperedPosterior` puts localized SGLD draws in the live model.

Its parts, one job per module: the checks of its configuration (:mod:`interp.degradations.sgld_checks`),
the update rule (:mod:`interp.degradations._step`), the chain loop
(:mod:`interp.degradations._chain`), calibration of loss-increase levels
(:mod:`interp.degradations.calibration`) and the LLC estimator (:mod:`interp.degradations.llc`,
:func:`~interp.degradations.estimate_llc`).

Target density around the trained weights ``w0`` (Welling & Teh 2011; localized as in
Lau et al. 2023):

    p_B(w) ∝ exp(−B·L(w) − γ/2·‖w − w0‖²),     B = nβ,  γ = ``localization``

with ``L`` the per-token mean loss of the target. One step, with ε = ``lr`` and ξ ~ N(0, I):

    w ← w − (ε/2)·[B·∇L_batch(w) + γ(w − w0)] + √ε·ξ

LLC estimate after burn-in: λ̂ = B·(E[L_batch(w_t)] − L(w0)); specific heat B²·Var(L_fixed) on a
fixed evaluation batch as a second estimator (agreement is an equilibrium diagnostic).

Choosing γ and ε for an LLC estimate (measured on deep linear networks, ``tests/interp/degradations/test_sampler.py``):
near a singular w0 the loss is locally homogeneous, so E[B·L] depends on (B, γ) through κ = γ/√B and
approaches λ only like λ − (m − 1)/log(1/κ²) (m the multiplicity); valleys of the zero set are held
only by γ and relax in ≈ 1/(εγ) steps. B = 10³, γ = 10 (κ = 0.32) is 8–17% low.

Two biases of opposite sign, measured (B = 100, γ = 1, κ = 0.1; 64 chains of 2000 + 3000 steps,
each smaller step size run with its steps scaled to the same time horizon):

- the step-size bias is upwards and first order in ε (exactly 1/(1 − εa/4) on a quadratic of
  stiffness a: +5% at εa = 0.2). On the deep linear network [5, 4, 3, 5] at rank 1 (Aoyagi λ = 7.5)
  λ̂ is 8.05 ± 0.08 (+7.4%) at ε·(B·ĥ + γ) = 0.2 (the ``lr=None`` default), 7.51 ± 0.07 at ε/2 and
  7.06 ± 0.06 at ε/4; doubling the horizon changes nothing beyond noise (8.02, 7.42, 6.98);
- the localization bias is downwards and remains at ε → 0: extrapolated, [5, 4, 3, 5] rank 1 gives
  6.97 ± 0.16 (Richardson, −7%) or 6.77 ± 0.08 (three-point line, −10%); [4, 3, 4] rank 1 (λ = 6)
  6.06 at ε but 5.74 ± 0.12 extrapolated (−4%). On a smooth true set it is small: [4, 3, 4] at full
  rank 3 (λ = 7.5) gives 7.78 ± 0.07 (+3.7%) at ε and 7.45 ± 0.10 (−0.7%) extrapolated.

So a λ̂ within a few percent at the default ε on a singular model is the two biases cancelling, not
an unbiased estimate. ``estimate_llc(..., extrapolate=2 or 3)`` removes the step-size part
(Richardson to ε → 0, with its error); the localization part needs a smaller κ (slow: ∝ 1/log(1/κ²)).

Several chains of a plain module run as one batched call (``vectorize``): the forward is
``torch.func.vmap`` over ``functional_call`` with stacked weights, the backward plain autograd on the
sum of the per-chain losses (chains do not interact, so each chain gets its own gradient); ≈ 12k
chain-steps/s for 16 chains of a 64-parameter network on one thread. Native bridges (the organisms)
run all chains through one hand-batched forward (:mod:`interp.degradations.stacked`; vmapping the
bridge was measured no faster than running chains one after another); ≈ 3× devinterp's chain-steps/s
on the induction organism with 4 chains (BENCHMARKS.md, "Sampler"). Other models run chains one
after another.

Example::

    >>> from interp.degradations import estimate_llc
    >>> from interp.degradations.oracles import DeepLinearNetwork
    >>> net = DeepLinearNetwork([4, 3, 4], rank=1)
    >>> est = estimate_llc(net, net.loss, nbeta=100.0, localization=1.0, lr=6e-4, chains=2,
    ...                    n_draws=50, burnin=10, eval_rows=0, progress=False)
    >>> est.mean > 0
    True
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from interp.checks import bad_value
from interp.degradations._batched import ChainStacking
from interp.degradations._chain import ChainDiagnostics, _Engine
from interp.degradations._core import (
    Degradation,
    Draw,
    LevelAxis,
    LossIncrease,
    NBeta,
    SearchAxis,
    register_degradation,
)
from interp.degradations._targets import describe_objective
from interp.degradations._select import Restrict
from interp.degradations._select import select_parameters, selected_size
from interp.degradations.cost import PlanCosts
from interp.degradations.sgld_checks import check_sampler
from interp.degradations.sgld_cost import SamplerWork, posterior_costs
from interp.degradations.calibration import (
    CalibrationConfig,
    CalibrationFailed,
    CalibrationRecord,
    CalibrationRound,
    LevelPlan,
    assess_calibration,
    guess_nbeta,
    resolve_level,
)

logger = logging.getLogger("interp.degradations")

__all__ = [
    "TemperedPosterior",
    "SamplingRun",
    "LevelPlan",
    # re-exported from the modules they live in
    "CalibrationConfig",
    "CalibrationRecord",
    "CalibrationRound",
    "CalibrationFailed",
    "ChainDiagnostics",
]


@register_degradation
@dataclass(frozen=True, init=False, repr=False)
class TemperedPosterior(Degradation):
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
        n_draws: draws per chain. A chain runs ``burnin + (n_draws − 1)·thin + 1`` steps.
        burnin: steps discarded first.
        thin: steps between draws.
        seed: seeds the noise (chain ``c`` uses ``seed·1000003 + c``) and the minibatch order (shared
            by all chains).
        batch_size: minibatch rows per step for a :class:`~interp.tasks.Task` or objective target.
        eval_rows: rows of the fixed evaluation batch (first rows of the train split, or of the
            objective's ``tensors()``) whose loss is recorded at every draw (``Draw.loss``, specific
            heat, calibration). 0 turns it off.
        init_batches: how L(w0) in λ̂ is measured. ``None`` (default): on every row of the training
            split when it has at most 4096 rows (no sampling error), else on 64 random minibatches
            without replacement (standard error reported). An integer k: the first k minibatches of
            the chains' stream (the behaviour before the default changed). Its standard error,
            times B, is part of λ̂'s error (:class:`~interp.degradations.LLCEstimate`).
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
            hand-batched forward for all chains; on the CPU only up to 50M sampled weights:
            stacking measured 1.03–1.12× chains in turn at 29.6M and 0.62–0.66× at 124M), small
            plain modules without overlapping parameters through ``torch.func.vmap``; other models
            run chains one after another. The
            result is the same up to float rounding (checked on the model at w0 before use).
        memory_budget: bytes that stacked chains may use (weights, gradients, noise and activations of
            every chain in a batch). ``None`` (default): half the free memory of the weights' device
            when sampling starts (CPU: available RAM; GPU: ``torch.cuda.mem_get_info``). The sampler
            measures what one more stacked chain costs on the model at hand and stacks as many
            chains per batch as fit, batch after batch; when two do not fit, chains run one after
            another (the memory of one model). The run's ``stacking`` records the choice; the
            draws are the same either way up to float rounding.
        calibration: :class:`CalibrationConfig` for :class:`LossIncrease` levels.
        progress: show a ``tqdm`` progress bar.
        strict: a :class:`LossIncrease` level that did not converge, or whose chains missed the
            target by more than ``calibration.acceptance``, raises :class:`CalibrationFailed`
            (``False``, default: it is kept, marked failed in ``calibration.failed``).
        objective: what the posterior is sampled on. ``None`` (default): the target passed to
            :meth:`draws` (a sweep's task). Else a :class:`~interp.tasks.Task`, a callable
            ``loss(model) -> scalar tensor``, or an object of the ``interp.objectives.Objective``
            protocol (``name``, ``units``, ``prepare(model)`` called once at w0 before anything,
            ``tensors()``, ``loss(model, batch)``); the target passed to :meth:`draws` is then
            ignored for sampling. Losses, calibration and λ̂ are in the objective's units; every
            :class:`~interp.degradations.Draw`, calibration record and LLC estimate names it.
            Its description is part of the sampler's configuration (``objective_id``).
        sampler: the step rule: ``"sgld"`` (default) or ``"rmsprop"``, RMSProp-preconditioned SGLD
            (G = 1/(√V + η) on drift and noise, V the running mean of squared gradients;
            :mod:`interp.degradations._step`). Same calibration, diagnostics, stacked chains and
            Ray jobs; with ``lr=None`` the step is divided by the largest preconditioner 1/η.
        rmsprop_alpha: α, the decay of V (``sampler="rmsprop"`` only). 0.999, not devinterp's 0.99:
            G follows the chain's own recent gradients, and without the correction term for a
            state-dependent G that biases the draws; measured on K = ½w² (B = 100, γ = 0, 16
            chains of 5000 steps): λ̂ 0.546 ± 0.016 at α = 0.99 against 0.523 ± 0.014 at 0.999
            (exact 0.5, 0.513 with the step-size bias), and 0.305 ± 0.016 against 0.271 ± 0.013 on
            K = ½w⁴ (exact 0.25).
        rmsprop_eps: η, the floor added to √V (``sampler="rmsprop"`` only).
        autocast: ``"bfloat16"`` or ``"float16"``: every forward of the sampled loss (steps,
            L(w0), draws, curvature) runs under ``torch.autocast`` in that dtype, the weights,
            gradients, noise and update stay in their own dtype (float32), the loss is returned in
            float32. ``None`` (default): the model's dtype throughout. On a GPU with tensor cores
            this is the fast setting; λ̂ of the deep linear network oracle is unchanged by bfloat16
            within its standard error at B = 100 (``tests/interp/degradations/test_autocast.py``);
            at a much larger B the rounding of L (relative ≈ 2⁻⁸ in bfloat16) enters B·(L − L0), so
            compare λ̂ with and without before relying on it there.
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
    init_batches: int | None = None
    restrict: Restrict = None
    lr_safety: float = 0.2
    divergence: float = 100.0
    max_loss_increase: float | None = None
    vectorize: bool | None = None
    memory_budget: int | None = field(default=None, compare=False)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    progress: bool = True
    strict: bool = False
    sampler: str = "sgld"
    rmsprop_alpha: float = 0.999
    rmsprop_eps: float = 0.1
    autocast: str | None = None
    objective: Any = field(default=None, repr=False, compare=False)
    #: address-free description of ``objective`` (``None``: the target passed to ``draws``).
    objective_id: str | None = field(default=None, init=False)

    def __init__(self, nbeta: float | None = None, localization: float = 100.0, lr: float | None = None,
                 chains: int = 4, n_draws: int = 100, burnin: int = 100, thin: int = 1, seed: int = 0,
                 batch_size: int = 32, eval_rows: int = 256, init_batches: int | None = None,
                 restrict: Restrict = None, lr_safety: float = 0.2, divergence: float = 100.0,
                 max_loss_increase: float | None = None, vectorize: bool | None = None,
                 calibration: CalibrationConfig | None = None, progress: bool = True,
                 objective: Any = None, strict: bool = False, sampler: str = "sgld",
                 rmsprop_alpha: float = 0.999, rmsprop_eps: float = 0.1,
                 memory_budget: int | None = None, autocast: str | None = None) -> None:
        values = dict(locals())
        values.pop("self")
        if values["calibration"] is None:
            values["calibration"] = CalibrationConfig()
        for k, v in values.items():
            object.__setattr__(self, k, v)
        object.__setattr__(self, "objective_id", describe_objective(objective))
        self.__post_init__()

    def __post_init__(self) -> None:
        check_sampler(self)

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            if not f.init or f.name == "objective":
                continue
            parts.append(f"{f.name}={getattr(self, f.name)!r}")
        if self.objective is not None:
            parts.append(f"objective={self.objective_id}")
        return f"TemperedPosterior({', '.join(parts)})"

    # ------------------------------------------------------------------------------------- public
    def check(self, model: torch.nn.Module) -> dict[str, int]:
        """Resolve :attr:`restrict` against ``model`` before any work: ``{parameter name: number of
        weights sampled}``. Raises the ``ValueError`` that sampling would raise (a pattern matching
        nothing, named with the closest valid names; a mask that is not 0/1 or selects nothing), so a
        sweep can validate before writing anything. Touches no weight."""
        sel = select_parameters(model, self.restrict)
        out = {n: (p.numel() if m is None else int(m.count_nonzero())) for n, p, m in sel}
        logger.debug("restrict %r selects %d weights", self.restrict, selected_size(sel))
        return out

    # ------------------------------------------------------------- the Degradation protocol's level axis
    #: a plain-number level is nβ; interp.dissolution searches a target loss increase Δ (calibrated,
    #: the default) or nβ itself (on the temperature 1/nβ, which grows with degradation)
    equal_loss_role = "posterior"  # Results.verdicts judges its dissolution against weight noise's
    level_axis = LevelAxis("nbeta", "inverse temperature nβ on the per-token mean loss", search=(
        SearchAxis("loss_increase", 0.1, (0.003, 3.0)),
        SearchAxis("nbeta", 1000.0, (1.0, 1e6), increasing=False),
    ))

    def check_level(self, level: Any) -> None:
        """A ValueError unless ``level`` is nβ (a finite number > 0 or :class:`NBeta`), a
        :class:`LossIncrease`, or ``None`` with ``nbeta`` configured."""
        if isinstance(level, (NBeta, LossIncrease)) or level is None and self.nbeta is not None:
            return
        if isinstance(level, bool) or not isinstance(level, numbers.Real) or not math.isfinite(level) or level <= 0:
            raise ValueError(f"TemperedPosterior level={level!r}: a level is an inverse temperature nβ, a finite "
                             "number > 0 (or NBeta(B), or LossIncrease(delta) for a target loss increase; None "
                             "only with nbeta=... set). Use e.g. levels=[100, 1000].")

    def replicates(self) -> int:
        """Independent draws per level: the chains (a level's interval is over them)."""
        return int(self.chains)

    def expected_draws(self, level: Any) -> int:
        return int(self.chains) * int(self.n_draws)

    def search_level(self, axis: str, value: float, evaluated: Sequence[Mapping[str, float]]
                     ) -> tuple[Any, TemperedPosterior]:
        """``NBeta(value)``, or ``LossIncrease(value)`` run by a copy whose calibration starts from the
        nβ interpolated log-log between the calibrated neighbours in ``evaluated`` (ΔL ≈ λ/nβ beyond
        them), so it usually converges in a round."""
        if axis == "nbeta":
            return NBeta(value), self
        if axis != "loss_increase":
            raise ValueError(f"axis={axis!r}: TemperedPosterior searches along 'loss_increase' or 'nbeta'.")
        hint = guess_nbeta(evaluated, value)
        if hint is None:
            return LossIncrease(value), self
        kwargs = {n: getattr(self, n) for n in self.field_names()}
        return LossIncrease(value), type(self)(**{**kwargs, "nbeta": hint})

    def work(self, levels: Sequence[Any]) -> SamplerWork:
        """The progress bar counts SGLD steps: calibration pilots, burn-in and thinning included."""
        return SamplerWork(self, levels)

    def plan_costs(self, model: torch.nn.Module, target: Any, levels: Sequence[Any], probe_steps: int,
                   costs: dict[str, float]) -> PlanCosts:
        """The engine built, ``probe_steps`` SGLD steps timed, the calibration rounds predicted
        (:func:`interp.degradations.sgld_cost.posterior_costs`)."""
        return posterior_costs(self, model, target, levels, probe_steps, costs)

    def chain_jobs(self, model: torch.nn.Module, target: Any) -> list[int | None]:
        """One job per chain, each run with :meth:`plan`, :meth:`run_chain` and :meth:`assess`;
        ``[None]`` (the level one job, exactly the local computation) when :meth:`vectorizes`."""
        return [None] if self.vectorizes(model, target) else list(range(self.chains))

    @classmethod
    def field_names(cls) -> list[str]:
        """Constructor argument names."""
        return [f.name for f in fields(cls) if f.init]

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
            return resolve_level(eng, level)
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

    def assess(self, plan: LevelPlan | CalibrationRecord | None, chains: list[ChainDiagnostics]
               ) -> CalibrationRecord | None:
        """A calibrated level's record after its chains (e.g. gathered from :meth:`run_chain` jobs):
        the measured loss increase and whether the level failed (see :func:`assess_calibration`;
        raises :class:`CalibrationFailed` with ``strict=True``). ``None`` for an uncalibrated level.
        :meth:`draws` does this itself."""
        record = plan.calibration if isinstance(plan, LevelPlan) else plan
        return assess_calibration(record, chains, self.calibration, strict=self.strict)

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


# -------------------------------------------------------------------------------------------- run
class _RunState:
    """What a :class:`SamplingRun`'s generator records (read through the run's attributes)."""

    __slots__ = ("cfg", "_yield_draws", "chains", "calibration", "nbeta", "lr", "init_loss", "init_loss_se",
                 "stacking")

    def __init__(self, cfg: TemperedPosterior, yield_draws: bool) -> None:
        self.cfg, self._yield_draws = cfg, yield_draws
        self.chains: list[ChainDiagnostics] = []
        self.calibration: CalibrationRecord | None = None
        self.nbeta: float | None = None
        self.lr: float | None = None
        self.init_loss: float | None = None
        self.init_loss_se: float | None = None
        self.stacking: ChainStacking | None = None


class SamplingRun(Iterator[Draw]):
    """The iterator returned by :meth:`TemperedPosterior.draws`.

    Attributes (filled as it runs): ``chains`` (list of :class:`ChainDiagnostics`), ``calibration``
    (:class:`CalibrationRecord` or ``None``; after all chains of :meth:`TemperedPosterior.draws`, with
    the measured loss increase and ``failed``), ``nbeta`` and ``lr`` actually used, ``init_loss`` and
    its standard error ``init_loss_se``, and ``stacking`` (:class:`ChainStacking`: how many chains ran
    stacked per batch within the memory budget, and the measured cost per chain).
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
                plan = resolve_level(eng, level)
            nbeta, lr, self.calibration = plan.nbeta, plan.lr, plan.calibration
            self.nbeta, self.lr = nbeta, lr
            self.init_loss = eng.init_losses()[0]
            self.init_loss_se = eng.init_loss_se
            ids = tuple(range(cfg.chains)) if chain_ids is None else chain_ids
            self.stacking = eng.choose_stacking(len(ids))
            yield from eng.run(nbeta, lr, len(ids), cfg.burnin, cfg.n_draws, cfg.thin, level,
                               self.chains, yield_draws=self._yield_draws,
                               progress=cfg.progress and chain_ids is None, chain_ids=ids)
            failed = [c for c in self.chains if c.failed]
            if failed:
                logger.warning("%d of %d chains failed: %s", len(failed), len(self.chains),
                               "; ".join(f"chain {c.chain}: {c.reason}" for c in failed))
            if chain_ids is None:  # one chain alone says nothing about the level: the sweep assesses
                self.calibration = assess_calibration(self.calibration, self.chains, cfg.calibration,
                                                      strict=cfg.strict)
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
