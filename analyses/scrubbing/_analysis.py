"""``CausalScrubbing``: score one hypothesis on a task, as an ``Analysis`` for sweeps.

Effect and collateral (docs/design.md, docs/concepts.md): the effects are ``recovered`` (fraction of the loss gap to the
primary baseline that the hypothesis recovers) and ``kl_recovered`` (the same for KL, which cannot
cancel); the collateral ``kl_unclaimed`` is the mean KL(clean ‖ scrubbed) at the predictions outside
the task's claim that carry a *trained* behaviour: the positions the task marks in its
``collateral_mask`` column (resampling what the hypothesis calls unimportant should leave them alone).
Without that column ``kl_unclaimed`` is measured on the unscored targets and reported as an ordinary
metric, not a collateral (``collaterals == ()`` after ``setup``): the shipped organisms are trained on
their scored targets only, so their unscored predictions are untrained (the induction organism's
first-seen tokens: 9.9 nats/token, worse than uniform; modadd's ``a → b → =``). The
``induction_full`` organism is trained on every token and marks its first-seen ones.

Both effects are fractions in absolute units (1: all of the gap to the baseline recovered, 0: none),
comparable across hypotheses and weights, so survival over a sweep is best read with the absolute
criterion ``Results.survival(threshold={"recovered": 0.9})``: a hypothesis that recovers 24% at the
trained weights never "holds", however slowly it decays. The ratio is only meaningful while clean and
baseline losses stay apart: read ``flag_ratio_unreliable`` (and the absolute ``loss_*`` and ``kl``)
at hot levels.
"""

from __future__ import annotations

import logging
import warnings
from functools import partial
from typing import Any

import torch

from analyses.scrubbing._engine import Groups, Scrubber
from analyses.scrubbing._hypothesis import Hypothesis, VacuousRuleWarning
from analyses.scrubbing._metrics import summarize
from analyses._base import Params
from interp.checks import bad_value, check_choice, check_is_fitted, check_number
from interp.models import device_of

__all__ = ["CausalScrubbing"]

log = logging.getLogger(__name__)


def _check_hypothesis(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, Hypothesis):
        raise bad_value(owner, name, value, "an analyses.scrubbing.Hypothesis", "Build one with Hypothesis([...]).")


def _check_baselines(owner: str, name: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, dict) or not value or not all(isinstance(b, Hypothesis) for b in value.values()):
        raise bad_value(owner, name, value, "a non-empty dict name -> Hypothesis, or None",
                        "None uses {'treeified': hypothesis.unconditional(), 'resample_all': Hypothesis([])}.")


def _determines_target(groups: Groups, ids: torch.Tensor, mask: torch.Tensor) -> bool:
    """Whether a rule's classes fix the predicted token: at every scored position t (target
    ``ids[:, t + 1]``), each class holds one target, and some class merges different rows."""
    rows, pos = ids.shape
    key = groups.key if groups.per_position else groups.key.expand(rows, pos)
    scored = mask[:, 1:].bool()  # logits at t predict token t + 1
    r, t = scored.nonzero(as_tuple=True)
    if not len(r):
        return False
    cls = key[r, t] * pos + t
    target = ids[r, t + 1]
    n_cls = len(torch.unique(cls))
    merged = torch.unique(torch.stack([cls, r]), dim=1).shape[1] > n_cls
    return merged and torch.unique(torch.stack([cls, target]), dim=1).shape[1] == n_cls


class CausalScrubbing(Params):
    """Causal scrubbing of ``hypothesis`` against named ``baselines`` (an ``Analysis``).

    Args:
        hypothesis: the :class:`Hypothesis` to test.
        baselines: ``name -> Hypothesis``; the first is primary. Default: ``"treeified"``, the
            hypothesis's own tree with every rule unconditional (``hypothesis.unconditional()``: each
            claimed path on its own random input; the baseline of docs/science.md, "Causal scrubbing"), then
            ``"resample_all"`` (``Hypothesis([])``: the whole model on one random input, Chan et al.'s
            fully scrubbed model). Both are reported; ``recovered`` is against the first.
        name: the analysis name in sweep results (default ``"scrub_" + hypothesis.name``).
        eval_rows: reference inputs (drawn from the pool with ``seed``).
        split: the task split references and resampled inputs come from.
        pool_rows: rows of ``split`` to resample from (``None``: all).
        seeds: resampling seeds (each a full treeified evaluation of the hypothesis and baselines).
        seed: base seed (reference draw, resampling, bootstrap).
        min_class: classes of a rule with fewer distinct members than this are flagged.
        on_small_class: ``"flag"`` (report ``small_class_fraction``, warn) or ``"raise"``.
        min_gap: the baseline−clean loss gap (nats/token) below which % recovered is flagged.
        cancel_tol: ``flag_cancellation`` when E|ΔL| − |EΔL| > cancel_tol · max(gap, min_gap).
        bootstrap: bootstrap replicates for the 95% intervals.
        batch_size: the most sequences per forward pass.

    Parameters are checked by :meth:`setup` (``param_constraints``). Fitted by :meth:`setup`:
    ``baselines_`` (the baselines used), ``columns_``, ``ids_``, ``mask_`` (the pool), ``refs_``
    (the reference rows) and ``groups_`` (each rule's classes). One-shot use: ``setup`` then call
    at the current weights.

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

    param_constraints = {
        "hypothesis": _check_hypothesis,
        "baselines": _check_baselines,
        "eval_rows": partial(check_number, integer=True, minimum=2),
        "pool_rows": partial(check_number, integer=True, minimum=2, none_ok=True,
                             fix="None resamples from the whole split."),
        "seeds": partial(check_number, integer=True, minimum=1),
        "seed": partial(check_number, integer=True, zero_ok=True),
        "min_class": partial(check_number, integer=True, minimum=1),
        "on_small_class": partial(check_choice, choices=("flag", "raise")),
        "min_gap": partial(check_number, zero_ok=True),
        "cancel_tol": partial(check_number, zero_ok=True),
        "bootstrap": partial(check_number, integer=True, minimum=10),
        "batch_size": partial(check_number, integer=True, minimum=1),
    }

    def __init__(self, hypothesis: Hypothesis, *, baselines: dict[str, Hypothesis] | None = None,
                 name: str | None = None, eval_rows: int = 256, split: str = "test",
                 pool_rows: int | None = None, seeds: int = 4, seed: int = 0, min_class: int = 2,
                 on_small_class: str = "flag", min_gap: float = 0.05, cancel_tol: float = 0.1,
                 bootstrap: int = 1000, batch_size: int = 4096) -> None:
        self.hypothesis, self.baselines = hypothesis, baselines
        self.name = name if name is not None else f"scrub_{getattr(hypothesis, 'name', 'hypothesis')}"
        self.eval_rows, self.split, self.pool_rows, self.seeds, self.seed = eval_rows, split, pool_rows, seeds, seed
        self.min_class, self.on_small_class, self.min_gap = min_class, on_small_class, min_gap
        self.cancel_tol, self.bootstrap, self.batch_size = cancel_tol, bootstrap, batch_size

    # ------------------------------------------------------------------------- setup
    def setup(self, model: Any, task: Any) -> None:
        """Validate against the model, load the pool, group it on every rule, draw references."""
        self.validate_params()
        cfg = self
        self.baselines_ = self.baselines if self.baselines is not None else {
            "treeified": self.hypothesis.unconditional(), "resample_all": Hypothesis([], name="resample_all")}
        for h in (self.hypothesis, *self.baselines_.values()):
            h.validate(model)
        if not task.has_loss:
            raise ValueError(f"Task {task.name!r} has no next-token loss; causal scrubbing needs one.")
        split = task.dataset[cfg.split]
        rows = None if cfg.pool_rows is None else min(cfg.pool_rows, len(split))
        self.columns_ = task.tensors(cfg.split, rows=rows)
        self.ids_ = self.columns_["input_ids"].long()
        self.mask_ = self.columns_["target_mask"].bool()
        # collateral only where the task marks trained predictions outside the claim (module docstring)
        trained = "collateral_mask" in self.columns_
        self.collaterals = ("kl_unclaimed",) if trained else ()
        self.unclaimed_ = self.columns_["collateral_mask"].bool() & ~self.mask_ if trained else ~self.mask_
        if len(self.ids_) < cfg.eval_rows:
            raise ValueError(
                f"eval_rows={cfg.eval_rows}: split {cfg.split!r} (pool_rows={cfg.pool_rows}) has only "
                f"{len(self.ids_)} rows; lower eval_rows or raise pool_rows."
            )
        g = torch.Generator().manual_seed(cfg.seed)
        self.refs_ = torch.randperm(len(self.ids_), generator=g)[: cfg.eval_rows]
        self.groups_: dict[int, Groups] = {}
        for h in (self.hypothesis, *self.baselines_.values()):
            for a in h.agreements():
                if a.kind == "function" and id(a) not in self.groups_:
                    self.groups_[id(a)] = Groups.build(a, self.columns_)
        # a rule that fixes the predicted token can make a hypothesis recover the loss whatever the model
        # does; whether it did is known at the first call (the trained weights in a sweep): warned there
        self.vacuous_rules_ = [a.name for a in self.hypothesis.agreements()
                               if a.kind == "function" and _determines_target(self.groups_[id(a)], self.ids_, self.mask_)]
        self._small_warned = False
        self._small_calls = 0

    def _warn_vacuous(self, recovered: float) -> None:
        """At the first call: warn about a rule that determines the predicted token only when the
        hypothesis does recover much of the loss (``recovered`` ≥ 0.5, or not finite); a hypothesis that
        recovers little was not inflated by it."""
        rules = getattr(self, "vacuous_rules_", [])
        if not rules:
            return
        self.vacuous_rules_ = []
        if recovered < 0.5:
            log.info("%s: the rule(s) %s determine the predicted token, but the hypothesis recovers only %.3g "
                     "of the loss, so they did not inflate it.", self.name, rules, recovered)
            return
        warnings.warn(
            f"{self.name}: the rule Agree {rules[0]!r} determines the token the model predicts at every "
            "scored position (each class of the rule has one target): resampling within it keeps the "
            f"target, so part of the recovered {recovered:.3g} may come from the rule rather than the model "
            "(a claim that a head depends on the next token scores 1.000). Use a rule that reads only the "
            "input up to the predicting position.", VacuousRuleWarning, stacklevel=3)

    # ------------------------------------------------------------------------- call
    def scrubber(self, model: Any, seed: int) -> Scrubber:
        """The engine for one resampling seed (used by benchmarks and tests)."""
        c = self
        return Scrubber(model, self.ids_, self.groups_, seed=seed, batch_size=c.batch_size, min_class=c.min_class)

    @torch.no_grad()
    def __call__(self, model: Any, task: Any) -> dict[str, float]:
        check_is_fitted(self, "refs_", "groups_")
        cfg = self
        device = device_of(model)
        ids = self.ids_[self.refs_]
        scored = self.mask_[self.refs_][:, 1:].to(device)
        unscored = self.unclaimed_[self.refs_][:, 1:].to(device)
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
        base = {k: ([], []) for k in self.baselines_}
        draws = small = sequences = needed = 0
        for s in range(cfg.seeds):
            sc = self.scrubber(model, seed=cfg.seed * 100_003 + s)
            l_, k_, u_ = stats(sc.run(self.hypothesis, self.refs_))
            draws, small, sequences = draws + sc.draws, small + sc.small, sequences + sc.forwards
            needed += sc.needed
            loss.append(l_), kls.append(k_), unc.append(u_)
            for name, hyp in self.baselines_.items():
                bl, bk, _ = stats(sc.run(hyp, self.refs_))
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
            self._small_calls = getattr(self, "_small_calls", 0) + 1
            if not getattr(self, "_small_warned", False):  # once per analysis and sweep (setup resets it)
                self._small_warned = True
                log.warning("%s (Said once for this analysis in this sweep: every row records it in "
                            "small_class_fraction and flag_small_class; count the rows with "
                            "flag_small_class = 1 for how many evaluations it affected.)", msg)
        self._warn_vacuous(out.get("recovered", float("nan")))
        if out["flag_ratio_unreliable"]:
            log.warning("%s: baseline and clean losses are within %.3f nats (gap %.4f); %% recovered is "
                        "not meaningful here, read loss_* and kl.", self.name, cfg.min_gap, out["gap"])
        return out
