"""``CausalScrubbing``: score one hypothesis on a task, as an ``Analysis`` for sweeps.

Effect and collateral (DESIGN.md): the effects are ``recovered`` (fraction of the loss gap to the
primary baseline that the hypothesis recovers) and ``kl_recovered`` (the same for KL, which cannot
cancel); the collateral ``kl_unclaimed`` is the mean KL(clean ‖ scrubbed) at the predictions outside
the task's claim: the unscored targets of the same sequences (for the induction organism, tokens seen
for the first time: a distribution on which the hypothesis claims nothing, so resampling what it calls
unimportant should leave them alone).

Both effects are fractions in absolute units (1: all of the gap to the baseline recovered, 0: none),
comparable across hypotheses and weights, so survival over a sweep is best read with the absolute
criterion ``Results.survival(threshold={"recovered": 0.9})``: a hypothesis that recovers 24% at the
trained weights never "holds", however slowly it decays. The ratio is only meaningful while clean and
baseline losses stay apart: read ``flag_ratio_unreliable`` (and the absolute ``loss_*`` and ``kl``)
at hot levels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from analyses.scrubbing._engine import Groups, Scrubber
from analyses.scrubbing._hypothesis import Hypothesis
from analyses.scrubbing._metrics import summarize
from interp.checks import bad_value, check_number

__all__ = ["CausalScrubbing", "ScrubbingConfig"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScrubbingConfig:
    """How a hypothesis is scored.

    Args:
        rows: reference inputs (drawn from the pool with ``seed``).
        split: the task split references and resampled inputs come from.
        pool_rows: rows of ``split`` to resample from (``None``: all).
        seeds: resampling seeds (each a full treeified evaluation of the hypothesis and baselines).
        seed: base seed (reference draw, resampling, bootstrap).
        min_class: classes of a rule with fewer distinct members than this are flagged.
        on_small_class: ``"flag"`` (report ``small_class_fraction``, warn) or ``"raise"``.
        min_gap: the baseline−clean loss gap (nats/token) below which % recovered is flagged.
        cancel_tol: ``flag_cancellation`` when E|ΔL| − |EΔL| > cancel_tol · max(gap, min_gap).
        bootstrap: bootstrap replicates for the 95% intervals.
        chunk: the most sequences per forward pass.
    """

    rows: int = 256
    split: str = "test"
    pool_rows: int | None = None
    seeds: int = 4
    seed: int = 0
    min_class: int = 2
    on_small_class: str = "flag"
    min_gap: float = 0.05
    cancel_tol: float = 0.1
    bootstrap: int = 1000
    chunk: int = 4096

    def __post_init__(self) -> None:
        c = "ScrubbingConfig"
        for name, lo in (("rows", 2), ("seeds", 1), ("min_class", 1), ("bootstrap", 10), ("chunk", 1)):
            check_number(c, name, getattr(self, name), integer=True, minimum=lo)
        check_number(c, "pool_rows", self.pool_rows, integer=True, minimum=2, none_ok=True,
                     fix="None resamples from the whole split.")
        check_number(c, "seed", self.seed, integer=True, zero_ok=True)
        if self.on_small_class not in ("flag", "raise"):
            raise bad_value(c, "on_small_class", self.on_small_class, "'flag' or 'raise'")
        for name in ("min_gap", "cancel_tol"):
            check_number(c, name, getattr(self, name), zero_ok=True)


class CausalScrubbing:
    """Causal scrubbing of ``hypothesis`` against named ``baselines`` (an ``Analysis``).

    Args:
        hypothesis: the :class:`Hypothesis` to test.
        baselines: ``name -> Hypothesis``; the first is primary. Default: ``"treeified"``, the
            hypothesis's own tree with every rule unconditional (``hypothesis.unconditional()``: each
            claimed path on its own random input; the baseline REFERENCE §3's numbers use), then
            ``"resample_all"`` (``Hypothesis([])``: the whole model on one random input, Chan et al.'s
            fully scrubbed model). Both are reported; ``recovered`` is against the first.
        name: the analysis name in sweep results (default ``"scrub_" + hypothesis.name``).
        **config: :class:`ScrubbingConfig` fields.

    Metrics (all floats; see :func:`analyses.scrubbing.summarize`): ``loss_clean``,
    ``loss_scrubbed``, ``loss_<baseline>``, ``recovered`` (+ ``_ci_low``/``_ci_high``,
    ``_seed_sd``, ``recovered_<baseline>``), ``kl``, ``kl_<baseline>``, ``kl_recovered``,
    ``delta_loss_mean``, ``delta_loss_abs``, ``cancelled``, ``frac_better``, ``gap``,
    ``flag_cancellation``, ``flag_ratio_unreliable``, ``small_class_fraction``,
    ``flag_small_class``, ``kl_unclaimed``, ``sequences`` (sequences run through the model per seed for
    the hypothesis) and ``sequences_needed`` (distinct inputs its treeified model consumes).
    """

    effects = ("recovered", "kl_recovered")
    collaterals = ("kl_unclaimed",)

    def __init__(self, hypothesis: Hypothesis, baselines: dict[str, Hypothesis] | None = None,
                 name: str | None = None, **config: Any) -> None:
        if not isinstance(hypothesis, Hypothesis):
            raise ValueError(f"hypothesis={hypothesis!r}: must be an analyses.scrubbing.Hypothesis.")
        if baselines is None:
            baselines = {"treeified": hypothesis.unconditional(),
                         "resample_all": Hypothesis([], name="resample_all")}
        if not baselines or not all(isinstance(b, Hypothesis) for b in baselines.values()):
            raise ValueError(
                f"baselines={baselines!r}: give a non-empty dict name -> Hypothesis "
                "(default {'resample_all': Hypothesis([])})."
            )
        unknown = set(config) - set(ScrubbingConfig.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"CausalScrubbing: unknown option(s) {sorted(unknown)}; allowed: "
                f"{sorted(ScrubbingConfig.__dataclass_fields__)}."
            )
        self.hypothesis = hypothesis
        self.baselines = dict(baselines)
        self.config = ScrubbingConfig(**config)
        self.name = name or f"scrub_{hypothesis.name}"
        self._ready = False

    # ------------------------------------------------------------------------- setup
    def setup(self, model: Any, task: Any) -> None:
        """Validate against the model, load the pool, group it on every rule, draw references."""
        cfg = self.config
        for h in (self.hypothesis, *self.baselines.values()):
            h.validate(model)
        if not task.has_loss:
            raise ValueError(f"Task {task.name!r} has no next-token loss; causal scrubbing needs one.")
        split = task.dataset[cfg.split]
        rows = None if cfg.pool_rows is None else min(cfg.pool_rows, len(split))
        self.columns = task.tensors(cfg.split, rows=rows)
        self.ids = self.columns["input_ids"].long()
        self.mask = self.columns["target_mask"].bool()
        if len(self.ids) < cfg.rows:
            raise ValueError(
                f"rows={cfg.rows}: split {cfg.split!r} (pool_rows={cfg.pool_rows}) has only "
                f"{len(self.ids)} rows; lower rows or raise pool_rows."
            )
        g = torch.Generator().manual_seed(cfg.seed)
        self.refs = torch.randperm(len(self.ids), generator=g)[: cfg.rows]
        self.groups: dict[int, Groups] = {}
        for h in (self.hypothesis, *self.baselines.values()):
            for a in h.agreements():
                if a.kind == "function" and id(a) not in self.groups:
                    self.groups[id(a)] = Groups.build(a, self.columns)
        self._ready = True

    # ------------------------------------------------------------------------- call
    def scrubber(self, model: Any, seed: int) -> Scrubber:
        """The engine for one resampling seed (used by benchmarks and tests)."""
        c = self.config
        return Scrubber(model, self.ids, self.groups, seed=seed, chunk=c.chunk, min_class=c.min_class)

    @torch.no_grad()
    def __call__(self, model: Any, task: Any) -> dict[str, float]:
        if not self._ready:
            raise RuntimeError(f"{self.name}: call setup(model, task) first.")
        cfg = self.config
        device = next(model.parameters()).device
        ids = self.ids[self.refs]
        scored = self.mask[self.refs][:, 1:].to(device)
        unscored = ~scored
        target = ids[:, 1:, None].to(device)
        clean = torch.log_softmax(model(ids.to(device))[:, :-1].float(), -1)
        p_clean = clean.exp()
        nll_clean = -clean.gather(-1, target)[..., 0]

        def stats(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            lp = torch.log_softmax(logits[:, :-1].float(), -1)
            nll = -lp.gather(-1, target)[..., 0]
            kl = (p_clean * (clean - lp)).sum(-1)
            return (nll * scored).sum(1), (kl * scored).sum(1), (kl * unscored).sum()

        loss, kls, unc = [], [], []
        base = {k: ([], []) for k in self.baselines}
        draws = small = sequences = needed = 0
        for s in range(cfg.seeds):
            sc = self.scrubber(model, seed=cfg.seed * 100_003 + s)
            l_, k_, u_ = stats(sc.run(self.hypothesis, self.refs))
            draws, small, sequences = draws + sc.draws, small + sc.small, sequences + sc.forwards
            needed += sc.needed
            loss.append(l_), kls.append(k_), unc.append(u_)
            for name, hyp in self.baselines.items():
                bl, bk, _ = stats(sc.run(hyp, self.refs))
                base[name][0].append(bl), base[name][1].append(bk)
        out = summarize(
            (nll_clean * scored).sum(1), scored.sum(1).float(), torch.stack(loss), torch.stack(kls),
            {k: (torch.stack(v[0]), torch.stack(v[1])) for k, v in base.items()},
            min_gap=cfg.min_gap, cancel_tol=cfg.cancel_tol, bootstrap=cfg.bootstrap, seed=cfg.seed,
        )
        n_unscored = int(unscored.sum())
        out["kl_unclaimed"] = float(torch.stack(unc).sum() / (cfg.seeds * n_unscored)) if n_unscored else float("nan")
        out["small_class_fraction"] = small / draws if draws else 0.0
        out["flag_small_class"] = float(small > 0)
        out["sequences"] = sequences / cfg.seeds
        out["sequences_needed"] = needed / cfg.seeds
        if small:
            msg = (f"{self.name}: {small} of {draws} resampled entries came from a class with fewer "
                   f"than min_class={cfg.min_class} distinct members (the input is reused, not "
                   "resampled); enlarge the pool (pool_rows, split) or coarsen the rule.")
            if cfg.on_small_class == "raise":
                raise ValueError(msg)
            log.warning(msg)
        if out["flag_ratio_unreliable"]:
            log.warning("%s: baseline and clean losses are within %.3f nats (gap %.4f); %% recovered is "
                        "not meaningful here, read loss_* and kl.", self.name, cfg.min_gap, out["gap"])
        return out
