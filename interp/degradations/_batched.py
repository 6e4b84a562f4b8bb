"""Stacked chains: all chains of a level (or as many as fit in memory) in one batched step.

The sampler's :class:`~interp.degradations._chain._Engine` gets these methods from
:class:`BatchedChains`: the batched gradient (``torch.func.vmap`` over ``functional_call`` for small
plain modules; :class:`~interp.degradations.stacked.StackedForward` for the bridges it covers), the
one-time check that it equals a plain forward and autograd near w0, the choice of how many chains to
stack per batch within the memory budget (:mod:`interp.degradations._memory`), and the stacked chain
loop. Stacked weights are ``W[i]: [C, *shape]``; the step is the same rule as for one chain
(:mod:`interp.degradations._step`, one fused pass per parameter), with chain c's noise from its own
generator, so a chain run stacked equals the same chain run alone up to float rounding (Welling &
Teh 2011 for the SGLD step; chains do not interact, so the gradient of the summed per-chain losses
with respect to chain c's weights is chain c's own gradient).

Memory: M(C) ≈ M_base + C·m_chain. ``m_chain`` comes from the measured peak of the check's 2-chain
gradient (an upper bound: M(2)/2) and, when the budget binds, of a 1-chain gradient (then
m_chain = M(2) − M(1) exactly), plus the per-chain state kept between steps; the chains are split into
batches of at most ``floor((budget − M_base)/m_chain)``, and below two per batch they run one after
another (:class:`ChainStacking` records the choice).

Example::

    >>> from interp.degradations import TemperedPosterior
    >>> from interp.degradations.oracles import MonomialPotential
    >>> m = MonomialPotential([2, 2])
    >>> run = TemperedPosterior(nbeta=10.0, localization=0.0, lr=1e-3, chains=3, n_draws=2, burnin=0,
    ...                         eval_rows=0, progress=False, memory_budget=1).sample(m, m.loss)
    >>> run.stacking.chains_per_batch                 # one byte fits no stacked chain: one after another
    1
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from interp.degradations._core import Draw
from interp.degradations._targets import SampledLoss
from interp.degradations._memory import MEMORY_FRACTION, free_memory_bytes, measure_peak_bytes
from interp.degradations._step import NoiseBuffer, StepNorms
from interp.degradations.stacked import StackedForward, unsupported_reason
from interp.models import ModelCall

logger = logging.getLogger("interp.degradations")

__all__ = ["BatchedChains", "ChainStacking", "STACK_CPU_MAX_WEIGHTS"]

#: On the CPU, bridges' chains are stacked automatically only up to this many sampled weights: above
#: it, stacked chains measured slower than chains in turn: 1.03–1.12× their speed at 29.6M weights,
#: 0.62–0.66× at GPT-2 small's 124M, where the passes over the stacked weights and gradients (the
#: 38.6M-weight embedding's above all) cost more than stacking saves (BENCHMARKS.md, "Sampler on
#: Hugging Face bridges")
STACK_CPU_MAX_WEIGHTS = 50_000_000


@dataclass(frozen=True)
class ChainStacking:
    """How a sampling run split its chains (``SamplingRun.stacking``).

    ``chains_per_batch``: chains stacked in one batched step (1: one after another through the
    model); ``batches``: how many such batches ran; ``budget_bytes``: the memory budget;
    ``base_bytes`` and ``per_chain_bytes``: the measured M_base and m_chain (``None`` when the chains
    could not be stacked at all); ``reason``: why this choice, in words.
    """

    chains_per_batch: int
    batches: int
    budget_bytes: int | None
    base_bytes: int | None
    per_chain_bytes: int | None
    reason: str


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


class BatchedChains:
    """The stacked-chains half of the sampler's engine (mixed into ``_Engine``)."""

    _peak2: int | None = None

    def choose_stacking(self: Any, chains: int) -> ChainStacking:
        """How many of ``chains`` chains to stack per batch within the memory budget (cached)."""
        cached = getattr(self, "_stacking", None)
        if cached is not None and cached[0] == chains:
            return cached[1]
        stacking = self._choose_stacking(chains)
        self._stacking = (chains, stacking)
        logger.info("sampler: %s", stacking.reason)
        return stacking

    def _choose_stacking(self: Any, chains: int) -> ChainStacking:
        if not self.use_vmap(chains):
            why = (f"on the CPU above {STACK_CPU_MAX_WEIGHTS:,} sampled weights ({self.d:,}), where stacking "
                   "is slower" if self._too_large_to_stack() else
                   f"vectorize={self.cfg.vectorize!r}, {chains} chain(s), or a model outside the stacked family")
            return ChainStacking(1, chains, None, None, None, f"chains one after another (not vectorised: {why})")
        if not self._vmap_agrees():
            return ChainStacking(1, chains, None, None, None, "chains one after another (the vectorised "
                                 "gradient differs from the plain one)")
        device = self.w0[0].device
        budget = self.cfg.memory_budget
        if budget is None:
            budget = int(MEMORY_FRACTION * free_memory_bytes(device))
            src = f"{MEMORY_FRACTION:.0%} of the free {device.type} memory"
        else:
            src = "memory_budget"
        state = (5 if getattr(self.cfg, "sampler", "sgld") == "rmsprop" else 3) * sum(
            w.numel() * w.element_size() for w in self.w0)
        base, per_chain = 0, (self._peak2 or 0) / 2 + state   # upper bound: M(2)/2 per chain
        if base + chains * per_chain > budget:               # the budget binds: measure M(1) too
            batch = next(self.obj.stream(self.cfg.seed))
            W1 = {n: w.unsqueeze(0).clone() for n, w in zip(self.names, self.w0)}
            grad = self._vmap_grad(1)
            peak1 = measure_peak_bytes(lambda: grad(W1, batch), device)
            step = max(0, (self._peak2 or 0) - peak1)
            base, per_chain = max(0, peak1 - step), step + state
        fit = int((budget - base) // per_chain) if per_chain > 0 else chains
        size = max(1, min(chains, fit))
        if size < 2:
            size = 1
        batches = math.ceil(chains / size)
        size = math.ceil(chains / batches)  # balanced batches
        how = (f"{size} of {chains} chains stacked per batch ({batches} batch{'es' if batches > 1 else ''})"
               if size > 1 else "chains one after another (stacking two does not fit the memory budget)")
        return ChainStacking(size, batches, int(budget), int(base), int(per_chain),
                             f"{how}: budget {_mib(budget)} ({src}), measured {_mib(base)} shared + "
                             f"{_mib(per_chain)} per stacked chain")

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

    def _too_large_to_stack(self: Any) -> bool:
        """Automatic stacking on the CPU above :data:`STACK_CPU_MAX_WEIGHTS` sampled weights."""
        return self.cfg.vectorize is None and self.w0[0].device.type == "cpu" and self.d > STACK_CPU_MAX_WEIGHTS

    def use_vmap(self, chains: int) -> bool:
        if self.cfg.vectorize is not None:
            return bool(self.cfg.vectorize) and chains > 1
        if chains < 2:
            return False
        if hasattr(self.model, "original_model") or hasattr(self.model, "hook_dict"):
            return self.stacked() is not None and not self._too_large_to_stack()
        all_params = list(self.model.parameters())
        if len({p.untyped_storage().data_ptr() for p in all_params}) < len(all_params):
            return False
        return self.d <= 20_000

    def _vmap_grad(self, chains: int):
        """``(ws, batch) -> (grads, losses)`` for ``chains`` stacked weight sets ``ws[name]: [C, ...]``.

        The forward is vmapped over the chains (``functional_call`` with one entry per parameter slot
        and ``tie_weights=False``, so tied or fused weights get one slot each); the backward is plain autograd on the sum of the
        per-chain losses, whose gradient with respect to chain c's weights is chain c's own gradient
        (the chains do not interact). That is ≈2× cheaper than ``vmap(grad(...))`` on small modules.
        """
        stacked = self.stacked()
        if stacked is not None:
            return self._stacked_grad(stacked)
        from torch.func import functional_call, vmap

        holder = ModelCall(self.model, self.obj.loss)

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
        """Check once, before any chain runs, that the vectorised path computes what the sequential
        one does: at two distinct points near w0 (w0 + δ_c, δ_c ~ 10⁻³·std(w)·N(0, I) inside the
        masks, so the gradient is not the zero of a minimum and the chains differ), each chain's
        loss and gradient must equal a plain forward and autograd at that chain's weights. A loss
        that reads parameters around ``functional_call`` (tensors captured outside the module, a
        module rebuilt inside forward, state kept between calls) fails here, and the chains run
        one after another with a warning: it never changes the numbers, only the speed.

        The outcome (and the measured M(2)) is kept per model, keyed like the curvature by a digest
        of every weight, the objective, the sampled parameters and masks, the seed, the batch size
        and the device (``_Engine._w0_key``): the levels of a sweep, and repeated ``sample()`` calls,
        check once (it costs about two SGLD steps of the model: ~10% of a 40-chain-step run)."""
        if getattr(self, "_vmap_ok", None) is not None:
            return self._vmap_ok
        self._vmap_ok, self._peak2, msg = self.at_w0(
            ("stacked check", self.cfg.batch_size, str(self.w0[0].device)), self._check_stacked)
        if msg is not None:
            logger.warning(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=4)
        return self._vmap_ok

    def _check_stacked(self) -> tuple[bool, int | None, str | None]:
        """(agrees, M(2) in bytes, the warning if not), measured (:meth:`_vmap_agrees`)."""
        peak2 = None
        batch = next(self.obj.stream(self.cfg.seed))
        gen = torch.Generator().manual_seed(self.cfg.seed + 31)
        points = []
        for _c in range(2):
            ws = []
            for w, m in zip(self.w0, self.masks):
                scale = float(w.float().std()) if w.numel() > 1 else float(w.abs().max())
                d = 1e-3 * (scale if scale > 0 and math.isfinite(scale) else 1.0) * torch.randn(
                    w.shape, generator=gen).to(w)
                ws.append(w + (d if m is None else d * m))
            points.append(ws)
        reason = "the vectorised loss or gradient differs from a plain forward and autograd near w0"
        try:  # in the model's own dtype: low-precision rounding differs between the two paths
            with self.obj.full_precision():
                stacked_points = dict(zip(self.names, [torch.stack(ws) for ws in zip(*points)]))
                out: list[Any] = []
                peak2 = measure_peak_bytes(lambda: out.append(self._vmap_grad(2)(stacked_points, batch)),
                                           self.w0[0].device)
                g, val = out.pop()
                ok = True
                for c, ws in enumerate(points):
                    with torch.no_grad():
                        for p, w in zip(self.params, ws):
                            p.copy_(w)
                    loss = self.obj.loss(self.model, batch)
                    ref = torch.autograd.grad(loss, self.params, allow_unused=True)
                    ref = [torch.zeros_like(p) if r is None else r for r, p in zip(ref, self.params)]
                    ok = ok and bool(torch.isfinite(loss)) and torch.allclose(
                        val[c].detach(), loss.detach(), rtol=1e-4, atol=1e-10)
                    for n, r in zip(self.names, ref):
                        tol = 1e-6 + 1e-4 * float(r.abs().max()) if r.numel() else 1e-6
                        ok = ok and torch.allclose(g[n][c], r, rtol=1e-3, atol=tol)
                    if not ok:
                        reason += f" (chain {c}: vectorised loss {float(val[c]):.6g}, plain {float(loss.detach()):.6g})"
                        break
        except Exception as e:  # noqa: BLE001 - any failure means: use the sequential path
            ok, reason = False, f"{type(e).__name__}: {e}"
        finally:
            self.snapshot.restore()
        msg = None if ok else (
            f"vectorised chains disabled for {type(self.model).__name__}: {reason}; running the chains "
            "one after another (same numbers, slower). A loss that reads parameters captured outside "
            "the model, or rebuilds them in forward, cannot be vectorised; pass vectorize=False to "
            "skip this check.")
        return ok, peak2, msg

    def _run_vmap(self, recs: list[Any], steps: int, burnin: int, thin: int,
                  level: Any, yield_draws: bool, bar: Any) -> Iterator[Draw]:
        C = len(recs)
        rule = self.step_rule(recs[0].nbeta, recs[0].lr)
        obj, model, names = self.obj, self.model, self.names
        gv = self._vmap_grad(C)
        W = [w.unsqueeze(0).repeat(C, *([1] * w.dim())) for w in self.w0]
        W0 = [w.unsqueeze(0).expand_as(x) for w, x in zip(self.w0, W)]
        masks = [None if m is None else m.unsqueeze(0) for m in self.masks]
        gens = [self._gen(r.chain) for r in recs]
        noise_buf = NoiseBuffer(self.params, C)
        diff = [torch.empty_like(w) for w in W]
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
                    logger.warning("chain %d failed (B=%.4g, ε=%.3g): %s", r.chain, rule.nbeta, rule.lr, reason)
            if not any(alive):
                return
            grads = [g[n] for n in names]
            is_draw = t >= burnin and (t - burnin) % thin == 0
            noise = noise_buf.draw(gens)
            if not is_draw:  # the whole step, one pass per parameter
                rule.update_(W, grads, W0, noise, diff, masks, keep)
                if bar is not None:
                    bar.update(C)
                continue
            norms = StepNorms(C)
            read = yield_draws or obj.fixed is not None  # something reads the weights w_t of the draw
            rule.update_(W, grads, W0, noise, diff, masks, keep, norms=norms, apply=not read)
            dist, gnorm, nnorm = norms.per_chain()
            for c, r in enumerate(recs):
                if alive[c]:
                    r.distances.append(dist[c])
                    r.grad_noise.append(rule.grad_to_noise(gnorm[c], nnorm[c]))
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
                                   loss=r.eval_losses[-1] if r.eval_losses else Ls[c], nbeta=rule.nbeta,
                                   lr=rule.lr, step=t, objective=obj.name, units=obj.units)
                self.snapshot.restore()
            n_draw += 1
            if t == steps - 1:
                break
            if read:  # the update update_ left for after the draw was read
                rule.commit_(W, grads, noise)
            if bar is not None:
                bar.update(C)
