"""The cost of a sweep before it runs: :func:`plan` measures a few steps and predicts the whole sweep.

``plan`` takes :func:`~interp.sweep.run_sweep`'s arguments, does a little of the sweep's own work on
the trained weights w0 and writes nothing: the analyses' ``setup`` and one baseline call (as the
sweep does once), a second call and the loss and divergence (as at every draw), and the
degradation's own share, from its ``plan_costs`` member (:mod:`interp.degradations.cost`). The costs it measures add up to the sweep's wall time

    T = T_setup + T_analyse·(1 + Σ_ℓ N_ℓ) + T_degradation

with N_ℓ the draws of level ℓ and T_degradation the degradation's part: by default one draw of the
first level timed and multiplied by Σ_ℓ N_ℓ; for :class:`~interp.degradations.TemperedPosterior` a
probe of ``probe_steps`` SGLD steps and the calibration rounds each
:class:`~interp.degradations.LossIncrease` level is expected to take
(:mod:`interp.degradations.sgld_cost`, where the model of the rounds is stated), and a bound
``seconds_max`` with every calibration taking ``max_rounds``. Peak memory is the process's
resident set (CPU) or ``torch.cuda.max_memory_allocated`` (CUDA) while all of this runs: the sweep
does the same work, one draw at a time, so its peak is the same up to the store's rows.

The prediction is for the local executor from scratch (a resumed sweep skips finished draws; a Ray
cluster runs jobs in parallel). The measured costs are in :attr:`SweepPlan.costs`, so a user can
redo the sum for other settings.

Example::

    >>> import interp
    >>> model, task = interp.organisms.load("induction", n_train=64, n_test=64)
    >>> def head_norm(model, task):                                          # an analysis
    ...     return {"norm": float(model.blocks[0].attn.W_O.detach().norm())}
    >>> p = interp.plan(model, task, [head_norm], interp.WeightNoise(relative=True, draws_per_level=4),
    ...                 [0.05, 0.1], eval_rows=16, progress=False)
    >>> print(p)                                                                # doctest: +ELLIPSIS
    plan of a WeightNoise sweep: expected wall time ...
    >>> p.seconds > 0 and p.peak_memory > 0
    True

    A :class:`~interp.TemperedPosterior` sweep's plan also measures the step size's curvature and the
    calibration pilots (tens of seconds for this model), which it then counts in.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["plan", "SweepPlan"]

#: steps the probe times by default (after a first, untimed one)
PROBE_STEPS = 4


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


def plan(model: Any, task: Any, analyses: Sequence[Any], degradation: Any, levels: Sequence[Any], *,
         out: str | os.PathLike | None = None, seed: int = 0, eval_rows: int = 256, progress: bool = True,
         executor: Any = "local", probe_steps: int = PROBE_STEPS) -> SweepPlan:
    """The expected wall time and peak memory of ``run_sweep`` with the same arguments, measured
    before any sweep work and writing nothing (``out`` is checked, never created or written).
    ``model``, ``task``, ``analyses``, ``degradation``, ``levels``, ``out``, ``seed``,
    ``eval_rows``, ``progress`` and ``executor`` are as for :func:`~interp.sweep.run_sweep` (every
    one checked the same way).

    Args:
        probe_steps: SGLD steps the sampler's probe times (after one untimed step; passed to the
            degradation's ``plan_costs``); more gives a steadier estimate on a busy machine.

    Returns:
        A :class:`SweepPlan` (``seconds``, ``seconds_max``, ``peak_memory``, the parts and the
        measured unit costs; ``print`` it for a table).

    The model's weights are restored bit-identically (checked, as a sweep checks them). Planning
    costs about the analyses' setup, one baseline call and a few steps; a sweep file is planned
    with ``interp sweep --plan FILE``.
    """
    from interp.degradations.cost import clock, timed
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
    started = clock()
    if isinstance(model, ModelRecipe):
        model = model.load()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    costs: dict[str, float] = {}
    with _PeakMemory(device) as mem:
        digest, costs["digest"] = timed(kernel.weights_digest, model)
        try:
            batch = kernel.eval_batch(task, eval_rows)
            _, costs["setup"] = timed(kernel.setup_analyses, analyses, model, task, seed, digest)
            base_loss, t_loss = timed(kernel.measure_loss, model, task, batch)
            meter, costs["meter"] = timed(kernel.divergence_meter, model, task, eval_rows)
            _, t_div = timed(kernel.measure_divergence, meter, model)
            name = kernel.degradation_name(degradation)
            _, costs["baseline"] = timed(kernel.analyse, analyses, model, task, kernel.BASELINE_KEY, None,
                                          base_loss, base_loss, seed, name, divergence=0.0)
            # a second call, as at a draw: the first carries one-off costs (lazy imports, first allocations)
            _, t_analyses = timed(kernel.analyse, analyses, model, task, (0, 0, 0), None, base_loss,
                                   base_loss, seed, name, divergence=0.0)
            costs["analyse"] = t_loss + t_div + t_analyses
            deg = _degradation_costs(degradation, model, task, levels, probe_steps, costs)
        finally:
            if kernel.weights_digest(model) != digest:
                raise RuntimeError("plan: the model's weights differ from before planning (an analysis's setup "
                                   "or call changed them); a sweep would refuse this too.")
    n_draws = deg.draws
    parts = {
        "setup and baseline": 3 * costs["digest"] + costs["setup"] + costs["meter"] + costs["baseline"],
        **deg.parts,
        "analyses at each draw": costs["analyse"] * n_draws,
    }
    seconds = sum(parts.values())
    return SweepPlan(
        seconds=seconds, seconds_max=seconds + deg.extra_max, peak_memory=int(mem.peak),
        memory_device=str(device), parts=parts,
        counts={"levels": len(levels), **deg.counts, "draws": n_draws},
        costs={k: v for k, v in costs.items() if k != "digest"}, probe_seconds=clock() - started,
        degradation=kernel.degradation_name(degradation),
    )


def _degradation_costs(degradation: Any, model: Any, task: Any, levels: list[Any], probe_steps: int,
                       costs: dict[str, float]) -> Any:
    """The degradation's own share, from its ``plan_costs`` member (checked to be a ``PlanCosts``)."""
    from interp.degradations import PlanCosts

    deg = degradation.plan_costs(model, task, levels, probe_steps, costs)
    if not isinstance(deg, PlanCosts):
        raise ValueError(f"{type(degradation).__name__}.plan_costs(...) returned {type(deg).__name__}: it must "
                         "return an interp.degradations.PlanCosts; drop plan_costs() for the default (one "
                         "draw timed).")
    return deg
