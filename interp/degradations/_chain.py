"""The chain loop of the tempered-posterior sampler: runs localized SGLD chains on the live model.

:class:`_Engine` holds what one sampling call needs (the objective made uniform, the sampled
parameters and their masks, a bit-identical snapshot of w0, L(w0), the top curvature for the step
size) and runs chains with the step rule of :mod:`interp.degradations._step`: one after another on
the live parameters, or in batches of stacked weights as many as fit in the memory budget (the
batched half, :mod:`interp.degradations._batched`: ``torch.func.vmap`` over ``functional_call`` for
small plain modules; :class:`~interp.degradations.stacked.StackedForward` for the bridges it
covers). Chain ``c`` draws its noise from ``seed·1000003 + c`` and every chain reads the
same minibatch order, so chain ``c`` alone (``TemperedPosterior.run_chain``) equals chain ``c`` of
a sequential run. :class:`ChainDiagnostics` records everything about one chain; a chain that
diverges stops with a reason and is never averaged (Lau et al. 2023 for λ̂ = B·(E[L] − L(w0))).

Example::

    >>> from interp.degradations import TemperedPosterior
    >>> from interp.degradations.oracles import MonomialPotential
    >>> m = MonomialPotential([2])
    >>> run = TemperedPosterior(nbeta=10.0, localization=0.0, lr=1e-3, chains=1, n_draws=3, burnin=0,
    ...                         eval_rows=0, progress=False).sample(m, m.loss)
    >>> run.chains[0].steps, run.chains[0].failed
    (3, False)
"""

from __future__ import annotations

import hashlib
import logging
import math
import weakref
import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from interp.degradations._core import Draw, WeightSnapshot
from interp.degradations._targets import SampledLoss, check_objective
from interp.degradations._select import select_parameters
from interp.degradations._step import NoiseBuffer, StepNorms, flat_norm, make_step
from interp.degradations._batched import BatchedChains

logger = logging.getLogger("interp.degradations")

__all__ = ["ChainDiagnostics", "FULL_SPLIT_ROWS", "INIT_BATCHES"]

#: L(w0) is computed on every row of the training split when it has at most this many rows.
FULL_SPLIT_ROWS = 4096
#: Minibatches (without replacement) that L(w0) averages on a larger split.
INIT_BATCHES = 64
#: model -> {(what, *what it depends on): a quantity measured at w0} (``_Engine.at_w0``: the curvature,
#: L(w0), the stacked-gradient check); dropped with the model
_AT_W0: weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple[Any, ...], Any]] = weakref.WeakKeyDictionary()


def _digest(named: Any) -> str:
    """SHA-256 of ``(name, tensor)`` pairs in order: each name, then the tensor's bytes."""
    h = hashlib.sha256()
    for name, t in named:
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy())
    return h.hexdigest()


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
    init_loss_se: float | None = None

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


class _Engine(BatchedChains):
    """The sampling machinery for one ``draws()`` call (one model, target and level)."""

    def __init__(self, cfg: Any, model: torch.nn.Module, target: Any) -> None:
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
            self.obj = SampledLoss(source, cfg.batch_size, cfg.eval_rows, model=model, autocast=cfg.autocast)
        finally:
            self.snapshot.restore()
        self.w0 = [self.snapshot.saved(p) for p in self.params]
        self._curv: float | None = None
        self._key: tuple[Any, ...] | None = None
        self._init: tuple[float, float | None] | None = None
        self.init_loss_se = math.nan

    # -------------------------------------------------------------------- reference quantities
    def init_losses(self) -> tuple[float, float | None]:
        """(L(w0), fixed-batch loss at w0); :attr:`init_loss_se` is the standard error of L(w0).

        ``init_batches=None`` (default): on the whole training split (every row, in minibatches
        of ``batch_size``, row-weighted) when it has at most :data:`FULL_SPLIT_ROWS` rows, so L(w0)
        has no sampling error (SE 0); on a larger split, :data:`INIT_BATCHES` random minibatches
        without replacement, SE = sd/√k·√(1 − k·b/n). An integer: the first ``init_batches``
        minibatches of the chains' stream, SE = sd/√k. A callable target: one call, SE 0.

        Kept per model like the curvature (keyed by :meth:`_w0_key` and what else it depends on:
        the training rows, ``init_batches``, ``batch_size``, ``autocast``): the levels of a sweep
        compute it once.
        """
        if self._init is None:
            rows = _digest(sorted(self.obj.data.items())) if self.obj.has_rows else None  # what it averages
            mean, ev, self.init_loss_se = self.at_w0(
                ("init losses", self.cfg.init_batches, self.cfg.batch_size, getattr(self.cfg, "autocast", None),
                 rows), self._measure_init_losses)
            self._init = (mean, ev)
        return self._init

    def _measure_init_losses(self) -> tuple[float, float | None, float]:
        """(L(w0), the fixed-batch loss at w0, the SE of L(w0)), measured."""
        vals, weights, se = self._init_batches()
        if not all(math.isfinite(v) for v in vals):
            raise ValueError("The loss at the original weights is not finite; cannot sample.")
        ev = self.obj.eval_loss(self.model) if self.obj.fixed is not None else None
        mean = sum(w * v for w, v in zip(weights, vals)) / sum(weights) if weights else sum(vals) / len(vals)
        return mean, ev, se

    def _init_batches(self) -> tuple[list[float], list[int] | None, float]:
        """The minibatch losses at w0 that L(w0) averages, their row weights (``None``: equal) and
        the standard error of the average."""
        obj, cfg = self.obj, self.cfg
        with torch.no_grad():
            if not obj.has_rows:
                return [float(obj.loss(self.model, None))], None, 0.0
            if cfg.init_batches is not None:  # the first k batches of the chains' own stream
                stream = obj.stream(cfg.seed)
                vals = [float(obj.loss(self.model, next(stream))) for _ in range(cfg.init_batches)]
                se = statistics.stdev(vals) / math.sqrt(len(vals)) if len(vals) > 1 else math.nan
                return vals, None, se
            bs = min(cfg.batch_size, obj.n)
            if obj.n <= FULL_SPLIT_ROWS:
                chunks = [torch.arange(i, min(i + bs, obj.n)) for i in range(0, obj.n, bs)]
                vals = [float(obj.loss(self.model, {k: v[idx] for k, v in obj.data.items()})) for idx in chunks]
                return vals, [len(idx) for idx in chunks], 0.0
            order = torch.randperm(obj.n, generator=torch.Generator().manual_seed(cfg.seed + 29))
            k = min(INIT_BATCHES, obj.n // bs)
            vals = [float(obj.loss(self.model, {key: v[order[i * bs:(i + 1) * bs]] for key, v in obj.data.items()}))
                    for i in range(k)]
            fpc = math.sqrt(max(0.0, 1 - k * bs / obj.n))
            return vals, None, statistics.stdev(vals) / math.sqrt(k) * fpc if k > 1 else math.nan

    def curvature(self) -> float:
        """Top Hessian eigenvalue ĥ of the loss at w0 (power iteration, 20 Hessian-vector products).

        Computed once per (model, weights, objective, sampled parameters, batch, seed): the levels of
        a sweep each build an engine but share w0, so a sweep pays for it once (on MiniLM's blocks
        2–3 it costs tens of SGLD steps), the cache keyed by a SHA-256 of every weight and of the
        batch, so other weights or data are measured afresh."""
        if self._curv is None:
            self._curv = self.at_w0(("curvature",), self._measure_curvature)
        return self._curv

    def _measure_curvature(self) -> float:
        """ĥ by power iteration on Hessian-vector products, measured."""
        gen = torch.Generator().manual_seed(self.cfg.seed + 17)
        v = [torch.randn(p.shape, generator=gen).to(p) for p in self.params]
        v = [x * m if m is not None else x for x, m in zip(v, self.masks)]
        nrm = flat_norm(v)
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
            nrm = flat_norm(hv)
            if nrm == 0 or not math.isfinite(nrm):
                break
            v = [h / nrm for h in hv]
        curv = abs(lam) if math.isfinite(lam) else 0.0
        logger.info("top curvature at w0: %.4g", curv)
        return curv

    def at_w0(self, what: tuple[Any, ...], measure: Any) -> Any:
        """``measure()``, kept per model under ``what`` and :meth:`_w0_key` (what every quantity measured
        at w0 depends on), so the levels of a sweep and repeated ``sample()`` calls measure it once;
        measured afresh each time for a callable target (no key)."""
        key = self._w0_key()
        if key is None:
            return measure()
        store = _AT_W0.setdefault(self.model, {})
        key = (*what, *key)
        if key not in store:
            store[key] = measure()
        return store[key]

    def _w0_key(self) -> tuple[Any, ...] | None:
        """What a quantity measured at w0 (the curvature, the stacked-gradient check) depends on
        (``None`` for a callable target, whose loss may read anything): the target object and its
        name, the sampled parameters and masks, the evaluation batch, the seed, and a SHA-256 of
        every weight and buffer. Computed once per engine, on its first call, which must be at w0
        (both callers run before any chain moves the weights)."""
        if not self.obj.has_rows:
            return None
        if self._key is None:
            weights = _digest(self.model.state_dict(keep_vars=False).items())
            batch_and_masks = _digest([("", t) for t in (*(self.obj.fixed or {}).values(),
                                                          *(m for m in self.masks if m is not None))])
            source = self.cfg.objective if self.cfg.objective is not None else self.obj.target
            self._key = (id(source), self.obj.name, tuple(self.names), self.cfg.seed, weights, batch_and_masks)
        return self._key

    def step_rule(self, nbeta: float, lr: float) -> Any:
        """A fresh step rule (``cfg.sampler``) for one chain run at (B, ε)."""
        cfg = self.cfg
        return make_step(getattr(cfg, "sampler", "sgld"), nbeta, lr, cfg.localization,
                         getattr(cfg, "rmsprop_alpha", 0.999), getattr(cfg, "rmsprop_eps", 0.1))

    @property
    def max_precondition(self) -> float:
        """The largest factor the step rule puts on ε: 1 for SGLD, 1/η for RMSProp-SGLD."""
        return 1.0 / self.cfg.rmsprop_eps if getattr(self.cfg, "sampler", "sgld") == "rmsprop" else 1.0

    def auto_lr(self, nbeta: float) -> float:
        a = self.max_precondition * (nbeta * self.curvature() + self.cfg.localization)
        if a <= 0:
            raise ValueError(
                "lr=None but the loss has zero curvature at w0 and localization=0, so no stable step "
                "size can be derived: pass lr=... explicitly or a localization > 0."
            )
        return self.cfg.lr_safety / a

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
                          objective=self.obj.name, units=self.obj.units, init_loss_se=self.init_loss_se)
            size = self.choose_stacking(chains).chains_per_batch
            if size > 1:  # batches of stacked chains, within the memory budget
                for i in range(0, chains, size):
                    recs = [ChainDiagnostics(chain=c, **common) for c in ids[i:i + size]]
                    records.extend(recs)
                    try:
                        yield from self._run_vmap(recs, steps, burnin, thin, level, yield_draws, bar)
                    finally:
                        self.snapshot.restore()
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

    def _gen(self, chain: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + chain)

    def _run_one(self, rec: ChainDiagnostics, steps: int, burnin: int, thin: int, level: Any,
                 yield_draws: bool, bar: Any) -> Iterator[Draw]:
        cfg, params, w0, masks = self.cfg, self.params, self.w0, self.masks
        rule = self.step_rule(rec.nbeta, rec.lr)
        gens = [self._gen(rec.chain)]
        noise_buf = NoiseBuffer(params)
        diff = [torch.empty_like(p) for p in params]
        stream = self.obj.stream(cfg.seed)
        n_draw = 0
        for t in range(steps):
            loss_t = self.obj.loss(self.model, next(stream))
            loss = float(loss_t.detach())
            reason = self._check(rec, loss)
            rec.losses.append(loss)
            if reason is not None:
                rec.failed, rec.reason = True, reason
                logger.warning("chain %d failed (B=%.4g, ε=%.3g): %s", rec.chain, rule.nbeta, rule.lr, reason)
                return
            grads = torch.autograd.grad(loss_t, params, allow_unused=True)
            grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]
            is_draw = t >= burnin and (t - burnin) % thin == 0
            noise = noise_buf.draw(gens)
            if is_draw:  # read the draw at w_t (if anything reads it), then move
                norms = StepNorms()
                read = yield_draws or self.obj.fixed is not None
                rule.update_(params, grads, w0, noise, diff, masks, norms=norms, apply=not read)
                (dist,), (gnorm,), (nnorm,) = norms.per_chain()
                rec.distances.append(dist)
                rec.grad_noise.append(rule.grad_to_noise(gnorm, nnorm))
                if self.obj.fixed is not None:
                    ev = self.obj.eval_loss(self.model)
                    rec.eval_losses.append(ev)
                    if not math.isfinite(ev):
                        rec.failed, rec.reason = True, f"non-finite evaluation loss at step {t}"
                        return
                if yield_draws:
                    yield Draw(level=level, chain=rec.chain, draw=n_draw,
                               loss=rec.eval_losses[-1] if rec.eval_losses else loss,
                               nbeta=rule.nbeta, lr=rule.lr, step=t, objective=self.obj.name, units=self.obj.units)
                n_draw += 1
                if t == steps - 1:
                    break
                if read:
                    rule.commit_(params, grads, noise)
            else:  # the whole step, one pass per parameter
                rule.update_(params, grads, w0, noise, diff, masks)
            if bar is not None:
                bar.update(1)
            if t % 50 == 49:
                bad = [n for n, p in zip(self.names, params) if not torch.isfinite(p).all()]
                if bad:
                    rec.failed, rec.reason = True, f"non-finite weights in {bad[:3]} at step {t}"
                    return
