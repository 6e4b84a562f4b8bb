"""The cost of a sweep before it runs: :func:`plan` measures a few steps and predicts the whole sweep.

``plan`` takes :func:`~interp.sweep.run_sweep`'s arguments, does a little of the sweep's own work on
the trained weights w0 and writes nothing: the analyses' ``setup`` and one baseline call (as the
sweep does once), a second call and the loss and divergence (as at every draw), and for each
degradation a short probe. For
:class:`~interp.degradations.TemperedPosterior` the probe builds the sampler's engine (the
objective's ``prepare``, L(w0), the top curvature for the step size, the check of stacked chains),
then runs ``probe_steps`` SGLD steps at the first level's (first-guess) inverse temperature, each
with the fixed-batch evaluation of a draw. The costs it measures add up to the sweep's wall time

    T = T_setup + T_analyse·(1 + Σ_ℓ N_ℓ) + Σ_ℓ [T_level + R_ℓ·P·(S_p·t_1 + D_p·e) + C·(S·t_C/C + D·e)]

with N_ℓ = C·D the draws of level ℓ (C chains of D draws, S = burnin + (D − 1)·thin + 1 steps),
t_1 / t_C the measured cost of one step of one chain / of the C stacked chains (C·t_1 when the
chains run one after another), e one fixed-batch evaluation, T_level the per-level overhead (the
sampler's engine and L(w0); T_setup includes the top curvature, computed once per sweep), and for
a :class:`~interp.degradations.LossIncrease` level R_ℓ calibration rounds
of P pilot chains of S_p steps and D_p draws (``CalibrationConfig``). The number of rounds is not
known before the pilots run; it is estimated by replaying the calibration's own updates (first
guess, jumps of B by ΔL/Δ, bracketing and interpolation; ``interp.degradations.calibration``) on the
ΔL a pilot would measure. Pilots are short of equilibrium: a chain spreading from w0 gains variance
ε = ``lr_safety``/(B·ĥ + γ) per step along its flat directions, so a pilot's ΔL at B is modelled as
ΔL_p·(B_p·ĥ + γ)/(B·ĥ + γ) (λ/B, as at equilibrium, once B·ĥ ≫ γ; Lau et al. 2023), with ΔL_p the
probe's ΔL at B_p scaled by the square root of the ratio of a pilot's mean draw step to the probe's
steps (ΔL grows sublinearly: the stiff directions saturate first). The bound
``seconds_max`` uses ``max_rounds``.
Other degradations: one draw is timed per level. Peak memory is the process's resident set (CPU) or
``torch.cuda.max_memory_allocated`` (CUDA) while all of this runs: the sweep does the same work, one
draw at a time, so its peak is the same up to the store's rows.

The prediction is for the local executor from scratch (a resumed sweep skips finished draws; a Ray
cluster runs jobs in parallel). The measured costs are in :attr:`SweepPlan.costs`, so a user can
redo the sum for other settings.

Example::

    >>> import interp
    >>> model, task = interp.organisms.load("induction")                     # doctest: +SKIP
    >>> def head_norm(model, task):                                          # an analysis
    ...     return {"norm": float(model.blocks[0].attn.W_O.detach().norm())}
    >>> p = interp.plan(model, task, [head_norm], interp.TemperedPosterior(chains=2, n_draws=3),
    ...                 [interp.LossIncrease(0.1)])                            # doctest: +SKIP
    >>> print(p)                                                              # doctest: +SKIP
    >>> p.seconds, p.peak_memory                                              # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["plan", "SweepPlan"]

log = logging.getLogger(__name__)

#: steps the probe times by default (after a first, untimed one)
PROBE_STEPS = 4
#: the calibration's largest change of B per round (``interp.degradations.calibration``)
_MAX_JUMP = 30.0


@dataclass(frozen=True)
class SweepPlan:
    """What a sweep will cost, from :func:`plan`.

    ``seconds``: the expected wall time of the whole sweep (setup, baseline, calibration, chains and
    every analysis call), on this machine at its current load; ``seconds_max``: the same with every
    calibration taking its ``max_rounds``. ``peak_memory``: bytes, on ``memory_device`` (``"cpu"``:
    the process's peak resident set; ``"cuda:N"``: the peak of allocated tensors). ``parts``:
    seconds by part; ``counts``: steps, draws, calibration rounds; ``costs``: the measured unit
    costs in seconds (``step``, ``eval``, ``analyse``, ``level``, ...); ``probe_seconds``: what
    planning took. ``str(plan)`` is a short table."""

    seconds: float
    seconds_max: float
    peak_memory: int
    memory_device: str
    parts: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    costs: dict[str, float] = field(default_factory=dict)
    probe_seconds: float = 0.0
    degradation: str = ""

    def __str__(self) -> str:
        lines = [f"plan of a {self.degradation} sweep: expected wall time {_duration(self.seconds)}"
                 + (f" (at most {_duration(self.seconds_max)} if every calibration takes its max_rounds)"
                    if self.seconds_max > self.seconds * 1.01 else ""),
                 f"peak memory {self.peak_memory / 2**20:,.0f} MiB ({self.memory_device})"]
        width = max(len(k) for k in self.parts) if self.parts else 0
        for k, v in self.parts.items():
            lines.append(f"  {k:<{width}}  {_duration(v):>10}")
        if self.counts:
            lines.append("counts: " + ", ".join(f"{k} {v:,}" for k, v in self.counts.items()))
        if self.costs:
            lines.append("measured: " + ", ".join(f"{k} {_duration(v)}" for k, v in self.costs.items()))
        lines.append(f"(planning took {_duration(self.probe_seconds)}; nothing was written)")
        return "\n".join(lines)


def _duration(s: float) -> str:
    if not math.isfinite(s):
        return str(s)
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


class _PeakMemory:
    """Peak memory while a block runs: CUDA's allocator peak on a CUDA model, else the resident set
    of this process, read from ``/proc/self/statm`` every 5 ms by a thread (``ru_maxrss`` where
    there is no ``/proc``: the process's lifetime peak, an upper bound)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak, self._stop = device, 0, threading.Event()

    def __enter__(self) -> _PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.peak = _rss()
            self._thread = threading.Thread(target=self._watch, daemon=True)
            self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            self.peak = int(torch.cuda.max_memory_allocated(self.device))
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss())


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)


def _clock() -> float:
    return time.perf_counter()


def _timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    t = _clock()
    out = fn(*args, **kwargs)
    return out, _clock() - t


def plan(model: Any, task: Any, analyses: Sequence[Any], degradation: Any, levels: Sequence[Any], *,
         out: str | os.PathLike | None = None, seed: int = 0, eval_rows: int = 256, progress: bool = True,
         executor: Any = "local", probe_steps: int = PROBE_STEPS) -> SweepPlan:
    """The expected wall time and peak memory of ``run_sweep`` with the same arguments, measured
    before any sweep work and writing nothing (``out`` is checked, never created or written).

    Args:
        model, task, analyses, degradation, levels, out, seed, eval_rows, progress, executor: as
            for :func:`~interp.sweep.run_sweep` (every one checked the same way).
        probe_steps: SGLD steps the probe times (after one untimed step); more gives a steadier
            estimate on a busy machine.

    Returns:
        A :class:`SweepPlan` (``seconds``, ``seconds_max``, ``peak_memory``, the parts and the
        measured unit costs; ``print`` it for a table).

    The model's weights are restored bit-identically (checked, as a sweep checks them). Planning
    costs about the analyses' setup, one baseline call and a few steps; a sweep file is planned
    with ``interp sweep --plan FILE``.
    """
    from interp.sweep import kernel, resolve_executor
    from interp.sweep.ray import ModelRecipe

    resolve_executor(executor)  # checked like run_sweep checks it; the plan is for this process
    if not isinstance(probe_steps, int) or isinstance(probe_steps, bool) or probe_steps < 1:
        raise ValueError(f"plan(probe_steps={probe_steps!r}): must be an int >= 1 (SGLD steps to time), "
                         f"e.g. probe_steps={PROBE_STEPS}.")
    if not isinstance(model, ModelRecipe) and not isinstance(model, torch.nn.Module):
        raise ValueError(f"plan(model={model!r}): model must be a torch.nn.Module (e.g. the bridge "
                         "interp.organisms.load or interp.load_model returns) or a ModelRecipe.")
    analyses = kernel.prepare_analyses(analyses)
    levels = kernel.check_inputs(model, task, degradation, levels, out=out, seed=seed, eval_rows=eval_rows,
                                 progress=progress)
    started = _clock()
    if isinstance(model, ModelRecipe):
        model = model.load()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    costs: dict[str, float] = {}
    with _PeakMemory(device) as mem:
        digest, costs["digest"] = _timed(kernel.weights_digest, model)
        try:
            batch = kernel.eval_batch(task, eval_rows)
            _, costs["setup"] = _timed(kernel.setup_analyses, analyses, model, task, seed, digest)
            base_loss, t_loss = _timed(kernel.measure_loss, model, task, batch)
            meter, costs["meter"] = _timed(kernel.divergence_meter, model, task, eval_rows)
            _, t_div = _timed(kernel.measure_divergence, meter, model)
            name = kernel.degradation_name(degradation)
            _, costs["baseline"] = _timed(kernel.analyse, analyses, model, task, kernel.BASELINE_KEY, None,
                                          base_loss, base_loss, seed, name, divergence=0.0)
            # a second call, as at a draw: the first carries one-off costs (lazy imports, first allocations)
            _, t_analyses = _timed(kernel.analyse, analyses, model, task, (0, 0, 0), None, base_loss,
                                   base_loss, seed, name, divergence=0.0)
            costs["analyse"] = t_loss + t_div + t_analyses
            deg = _degradation_plan(degradation, model, task, levels, probe_steps, costs)
        finally:
            if kernel.weights_digest(model) != digest:
                raise RuntimeError("plan: the model's weights differ from before planning (an analysis's setup "
                                   "or call changed them); a sweep would refuse this too.")
    n_draws = deg["draws"]
    parts = {
        "setup and baseline": 3 * costs["digest"] + costs["setup"] + costs["meter"] + costs["baseline"],
        **deg["parts"],
        "analyses at each draw": costs["analyse"] * n_draws,
    }
    seconds = sum(parts.values())
    return SweepPlan(
        seconds=seconds, seconds_max=seconds + deg["extra_max"], peak_memory=int(mem.peak),
        memory_device=str(device), parts=parts,
        counts={"levels": len(levels), **deg["counts"], "draws": n_draws},
        costs={k: v for k, v in costs.items() if k != "digest"}, probe_seconds=_clock() - started,
        degradation=kernel.degradation_name(degradation),
    )


def _degradation_plan(degradation: Any, model: Any, task: Any, levels: list[Any], probe_steps: int,
                      costs: dict[str, float]) -> dict[str, Any]:
    from interp.degradations import TemperedPosterior

    if isinstance(degradation, TemperedPosterior):
        return _posterior_plan(degradation, model, task, levels, probe_steps, costs)
    return _draws_plan(degradation, model, task, levels, costs)


def _draws_plan(degradation: Any, model: Any, task: Any, levels: list[Any],
                costs: dict[str, float]) -> dict[str, Any]:
    """A degradation other than the sampler: one draw of the first level timed (its iterator
    closed at once, so the weights are back at w0), the same cost assumed for every draw."""
    from interp.sweep import kernel

    draws = degradation.draws(model, task, levels[0])
    try:
        t = _clock()
        next(iter(draws), None)
        costs["draw"] = _clock() - t
    finally:
        kernel.close_draws(draws)
    expected = [kernel.expected_draws(degradation, level) for level in levels]
    n = sum(1 if e is None else e for e in expected)
    if any(e is None for e in expected):
        log.warning("plan: %s does not say how many draws a level yields; one per level assumed.",
                    type(degradation).__name__)
    return {"draws": n, "parts": {"degradation draws": costs["draw"] * n}, "counts": {}, "extra_max": 0.0}


def _posterior_plan(cfg: Any, model: Any, task: Any, levels: list[Any], probe_steps: int,
                    costs: dict[str, float]) -> dict[str, Any]:
    """The sampler's costs: its engine built (as each level builds it), one short probe of
    ``probe_steps`` timed steps, and the calibration rounds each level is expected to take."""
    from interp.degradations import LossIncrease, NBeta
    from interp.degradations._chain import _Engine
    from interp.degradations.calibration import resolve_level

    t = _clock()
    eng = _Engine(cfg, model, task)
    try:
        eng.init_losses()
        costs["level"] = _clock() - t
        calibrated = [lv for lv in levels if isinstance(lv, LossIncrease)]
        curvature = math.nan
        if cfg.lr is None or calibrated:
            curvature, costs["curvature"] = _timed(eng.curvature)  # once per sweep (the sampler caches it)
        stacked = cfg.chains > 1 and eng.use_vmap(cfg.chains)
        if stacked:
            stacked, t_check = _timed(eng._vmap_agrees)
            costs["level"] += t_check
        first = levels[0]
        if isinstance(first, LossIncrease):
            nbeta = float(cfg.nbeta) if cfg.nbeta is not None else min(eng.d / 2, 100.0) / first.delta
            lr = eng.auto_lr(nbeta) if cfg.lr is None else cfg.lr
        else:
            level_plan = resolve_level(eng, first)
            nbeta, lr = level_plan.nbeta, level_plan.lr
        t_step1, t_eval, probe_llc = _probe(eng, nbeta, lr, 1, probe_steps)
        costs["step"], costs["eval"] = t_step1, t_eval
        if stacked:
            t_stack, _, _ = _probe(eng, nbeta, lr, cfg.chains, probe_steps)
            costs[f"step of {cfg.chains} stacked chains"] = t_stack
        else:
            t_stack = cfg.chains * t_step1
    finally:
        eng.snapshot.restore()
    cal = cfg.calibration
    steps = cfg.burnin + (cfg.n_draws - 1) * cfg.thin + 1
    p_burnin = cfg.burnin if cal.pilot_burnin is None else cal.pilot_burnin
    p_draws = cfg.n_draws if cal.pilot_draws is None else cal.pilot_draws
    p_thin = cfg.thin if cal.pilot_thin is None else cal.pilot_thin
    p_steps = p_burnin + (p_draws - 1) * p_thin + 1
    round_cost = cal.pilot_chains * (p_steps * t_step1 + p_draws * t_eval)
    # a pilot's ΔL is the mean over its draws, at p_burnin + j·p_thin steps; the probe's after
    # probe_steps. ΔL grows sublinearly in the steps (the stiff directions saturate first, the flat
    # ones gain ε per step): scaled by the square root of the ratio (measured on the induction
    # organism, 4-step probe, pilots of 26 steps: 0.0048 predicted, 0.0039 measured; a linear
    # scaling gave 0.0114)
    pilot_inc = probe_llc / nbeta * math.sqrt((p_burnin + (p_draws - 1) * p_thin / 2) / probe_steps)
    probe = (nbeta, pilot_inc, nbeta * curvature + cfg.localization)
    rounds = [_expected_rounds(lv, cfg, eng.d, probe) if isinstance(lv, LossIncrease) else 0 for lv in levels]
    bound = [cal.max_rounds if isinstance(lv, LossIncrease) else 0 for lv in levels]
    chains_cost = steps * t_stack + cfg.chains * cfg.n_draws * t_eval
    n = len(levels)
    return {
        "draws": n * cfg.chains * cfg.n_draws,
        "parts": {"sampler set-up per level": n * costs["level"],
                  "step-size curvature (once)": costs.get("curvature", 0.0),
                  "calibration pilots": sum(rounds) * round_cost,
                  "chains": n * chains_cost},
        "counts": {"chains": cfg.chains, "steps per chain": steps, "calibration rounds": sum(rounds),
                   "pilot steps": sum(rounds) * cal.pilot_chains * p_steps},
        "extra_max": (sum(bound) - sum(rounds)) * round_cost,
    }


def _probe(eng: Any, nbeta: float, lr: float, chains: int, steps: int) -> tuple[float, float, float]:
    """(seconds per step of ``chains`` chains, seconds per fixed-batch evaluation, λ̂ = B·ΔL at the
    last step): ``steps + 1`` steps at (B, ε), each a draw (so each is timed between two draws); the
    evaluations' own cost, timed apart, is taken out of the steps'."""
    from interp.degradations._chain import ChainDiagnostics  # noqa: F401 - the records eng.run fills

    records: list[Any] = []
    stamps = []
    run = eng.run(nbeta, lr, chains, 0, steps + 1, 1, None, records, yield_draws=True,
                  chain_ids=tuple(20_000 + c for c in range(chains)))
    try:
        for i, _draw in enumerate(run):
            if i % chains == chains - 1:
                stamps.append(_clock())
    finally:
        run.close()
    t_eval = math.nan
    if eng.obj.fixed is not None:
        with torch.no_grad():
            times = [_timed(eng.obj.eval_loss, eng.model)[1] for _ in range(2)]
        t_eval = min(times)
    gaps = [b - a for a, b in zip(stamps, stamps[1:])] or [math.nan]
    per_eval = 0.0 if math.isnan(t_eval) else t_eval
    t_step = max(statistics.median(gaps) - chains * per_eval, 0.0)
    ok = [r for r in records if not r.failed and r.eval_losses and r.init_eval_loss is not None]
    llc = statistics.mean(nbeta * (r.eval_losses[-1] - r.init_eval_loss) for r in ok) if ok else math.nan
    return t_step, per_eval, llc


def _expected_rounds(level: Any, cfg: Any, d: int, probe: tuple[float, float, float]) -> int:
    """Calibration rounds for a target Δ: the calibration's own updates (its first guess B0, the
    jump B·ΔL/Δ until Δ is bracketed, then interpolation of log B in log ΔL, or bisection; at most
    30× per round; ``interp.degradations.calibration``) replayed on the ΔL a pilot would measure.

    ``probe`` = (B_p, ΔL_p, a_p): a pilot-length ΔL measured at B_p, and a_p = B_p·ĥ + γ. A pilot is
    short of equilibrium: each step adds variance ε = ``lr_safety``/(B·ĥ + γ) along the flat
    directions, so ΔL(B) = ΔL_p·a_p/(B·ĥ + γ) (λ/B once B·ĥ ≫ γ, constant where γ dominates).
    The real ΔL(B) is steeper or flatter than that, so where B had to move one more round is
    counted (the calibration's interpolation after the landing round)."""
    cal = cfg.calibration
    b_p, inc_p, a_p = probe
    if not (math.isfinite(inc_p) and inc_p > 0 and a_p > 0):
        return cal.max_rounds
    h = max((a_p - cfg.localization) / b_p, 0.0)
    target = level.delta
    nbeta = float(cfg.nbeta) if cfg.nbeta is not None else min(d / 2, 100.0) / target
    lo = hi = None  # (log B, log ΔL) with ΔL above / below the target
    for rounds in range(1, cal.max_rounds + 1):
        inc = inc_p * a_p / (nbeta * h + cfg.localization)
        if abs(inc / target - 1) <= cal.tolerance:
            # the model is not exact: where B had to move, the landing round misses and one
            # interpolated round more is taken (measured: 3 rounds per level on the induction
            # organism at tolerance 0.25, where the exact law gives 2)
            return rounds if rounds == 1 else min(rounds + 1, cal.max_rounds)
        lb = math.log(nbeta)
        if inc > target:
            lo = (lb, math.log(inc))
        else:
            hi = (lb, math.log(inc))
        nb = lb + math.log(inc / target)
        if lo is not None and hi is not None:
            if lo[1] != hi[1]:
                nb = lo[0] + (hi[0] - lo[0]) * (lo[1] - math.log(target)) / (lo[1] - hi[1])
            if not min(lo[0], hi[0]) < nb < max(lo[0], hi[0]):
                nb = 0.5 * (lo[0] + hi[0])
        nbeta = math.exp(min(max(nb, lb - math.log(_MAX_JUMP)), lb + math.log(_MAX_JUMP)))
    return cal.max_rounds
