"""Head ablation: how much of the task loss a set of attention heads carries, and at what collateral.

The claim "heads H implement the behaviour scored by the task" is tested by ablating the heads'
outputs (``hooks.head_out``: z_h·W_O[h]) and measuring, on a fixed evaluation batch:

- effect ``loss_carried`` = L_ablated − L_clean on the task's scored targets (nats/token), the loss
  the heads are responsible for at these weights;
- collateral ``kl_unclaimed`` = mean of KL(p_clean ‖ p_ablated) over the positions the task marks in
  its ``collateral_mask`` column: predictions that carry a *trained* behaviour the claim says nothing
  about. Without that column it is measured over the unscored positions and reported as an ordinary
  metric, not a collateral (``collaterals == ()`` after ``setup``): the shipped organisms are trained
  on their scored positions only, so their unscored predictions are untrained (the induction
  organism's first-seen tokens: 9.9 nats/token, worse than uniform; modadd's ``a → b → =``) and a
  disturbance there says nothing about the model's behaviour (``induction_full`` is trained on every
  token and marks its first-seen ones in ``collateral_mask``);
- ``kl_claimed``: the same KL on the scored positions, and ``loss_clean`` / ``loss_ablated``.

Ablation methods (``hooks``): ``mean`` replaces each head's output by its mean over the evaluation
batch at each position, computed afresh at every set of weights (so a degraded draw is ablated with
its own means); ``zero`` by zero; ``resample`` by the output on another row of the batch.

This is the simple ablation the demo needs; hypothesis-level causal scrubbing (resampling by
interpretation, treeified paths) is ``analyses.scrubbing``'s job.

Example::

    >>> import interp
    >>> from analyses.ablation import HeadAblation, ablate_heads
    >>> model, task = interp.organisms.load("induction")
    >>> ablate_heads(model, task, heads=((1, 0), (1, 1)))["loss_carried"] > 1.0
    True
    >>> a = HeadAblation(heads=((1, 0), (1, 1))); a.setup(model, task)
    >>> a(model, task)["loss_carried"] > 1.0
    True

One-shot function and sweep analysis come in pairs across ``analyses``: :func:`ablate_heads` /
:class:`HeadAblation` here, ``probe`` / ``FrozenProbe``, ``profile_norms`` / ``ResidualNorms``,
``evaluate_transcoder`` / ``SparseMLP``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch

import hooks
from analyses._base import Params
from interp.checks import bad_value, check_choice, check_is_fitted, check_number
from interp.models import device_of

__all__ = ["HeadAblation", "ablate_heads"]

_METHODS = ("mean", "zero", "resample")


def check_heads(owner: str, name: str, value: Any) -> None:
    """``value`` must be a non-empty sequence of ``(layer, head)`` pairs of non-negative integers."""

    def index(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    def pair(h: Any) -> bool:
        return isinstance(h, (tuple, list)) and len(h) == 2 and all(index(v) for v in h)

    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)) or not value \
            or not all(pair(h) for h in value):
        raise bad_value(owner, name, value, "a non-empty sequence of (layer, head) pairs of non-negative integers",
                        "Use e.g. heads=((1, 0), (1, 1)).")


class HeadAblation(Params):
    """Loss carried by a set of heads (effect) and KL on unclaimed positions (collateral).

    Args:
        heads: ``(layer, head)`` pairs ablated together.
        method: ``"mean"``, ``"zero"`` or ``"resample"`` (see the module docstring).
        eval_rows: test rows of the fixed evaluation batch.
        name: the analysis name in sweep results.

    Parameters are checked by :meth:`setup` (``param_constraints``). Fitted by :meth:`setup`:
    ``batch_`` (the evaluation batch).
    """

    effects = ("loss_carried",)
    collaterals = ("kl_unclaimed",)
    param_constraints = {
        "heads": check_heads,
        "method": partial(check_choice, choices=_METHODS),
        "eval_rows": partial(check_number, integer=True, minimum=2,
                             fix="Evaluation rows: at least 2 (resampling needs another row)."),
    }

    def __init__(self, heads: Any, *, method: str = "mean", eval_rows: int = 256, name: str = "head_ablation"):
        self.heads, self.method, self.eval_rows, self.name = heads, method, eval_rows, name

    def setup(self, model: Any, task: Any) -> None:
        self.validate_params()
        # collateral only where the task marks trained predictions outside the claim (module docstring)
        trained = "collateral_mask" in task.dataset["test"].column_names
        self.collaterals = ("kl_unclaimed",) if trained else ()
        columns = ("input_ids", "target_mask", "collateral_mask")[: 3 if trained else 2]
        self.batch_ = task.tensors("test", rows=self.eval_rows, columns=columns)
        n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
        bad = [tuple(h) for h in self.heads if h[0] >= n_layers or h[1] >= n_heads]
        if bad:
            raise bad_value("HeadAblation", "heads", self.heads, f"heads of this model ({n_layers} layers × "
                            f"{n_heads} heads); {bad} do not exist", "Use (layer, head) pairs within the model.")

    def _hooks(self, model: Any, ids: torch.Tensor) -> list[hooks.Hook]:
        points = [hooks.head_out(layer, head) for layer, head in self.heads]
        if self.method == "zero":
            return [hooks.zero_ablate(p) for p in points]
        if self.method == "resample":
            return [hooks.resample_ablate(p, seed=i) for i, p in enumerate(points)]
        acts = hooks.capture(model, ids, points)
        return [hooks.mean_ablate(p, acts[p].mean(0)) for p in points]

    @torch.no_grad()
    def __call__(self, model: Any, task: Any) -> dict[str, float]:
        check_is_fitted(self, "batch_")
        device = device_of(model)
        ids = self.batch_["input_ids"].long().to(device)
        scored = self.batch_["target_mask"].to(device)[:, 1:].bool()  # logits at t-1 predict token t
        clean = torch.log_softmax(model(ids)[:, :-1].float(), -1)
        with hooks.apply(model, self._hooks(model, ids)):
            ablated = torch.log_softmax(model(ids)[:, :-1].float(), -1)
        target = ids[:, 1:, None]
        nll_clean = -clean.gather(-1, target)[..., 0]
        nll_ablated = -ablated.gather(-1, target)[..., 0]
        kl = (clean.exp() * (clean - ablated)).sum(-1)
        unclaimed = ~scored
        if "collateral_mask" in self.batch_:
            unclaimed = self.batch_["collateral_mask"].to(device)[:, 1:].bool() & ~scored
        out = {
            "loss_clean": nll_clean[scored].mean().item(),
            "loss_ablated": nll_ablated[scored].mean().item(),
            "kl_claimed": kl[scored].mean().item(),
            "kl_unclaimed": kl[unclaimed].mean().item() if unclaimed.any() else float("nan"),
        }
        out["loss_carried"] = out["loss_ablated"] - out["loss_clean"]
        return out


def ablate_heads(model: Any, task: Any, heads: Any, method: str = "mean", eval_rows: int = 256) -> dict[str, float]:
    """One-shot :class:`HeadAblation` at the model's current weights: ``loss_carried``,
    ``kl_unclaimed``, ``kl_claimed``, ``loss_clean``, ``loss_ablated``."""
    analysis = HeadAblation(heads, method=method, eval_rows=eval_rows)
    analysis.setup(model, task)
    return analysis(model, task)
