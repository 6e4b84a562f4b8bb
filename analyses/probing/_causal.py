"""Causal checks of a probed concept: erasure (LEACE or mean projection) and steering against random controls.

A probe can read a property the model never uses (Ravichander et al. 2021; Elazar et al. 2021), so
the concept is erased at a site with LEACE (Belrose et al. 2023, arXiv:2306.03819) or by
mean-projection, against random subspaces of the same rank, and the activation is steered along the
difference-of-means direction (Turner et al. 2023) against random directions of equal norm, while
a behaviour the property should drive is measured.

Example (``x``, ``y``: a fitted probe's activations and labels at layer 1, as
:func:`~analyses.probing.probe_data` returns them; skipped as a docstring example for their cost,
``tests/analyses/test_probing.py`` runs this check)::

    >>> from analyses.probing import causal_check, layer_point, loss_behaviour
    >>> check = causal_check(layer_point(model, 1), x, y, loss_behaviour(model, task))  # doctest: +SKIP
    >>> check.erasure_effect                                                         # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

import hooks
from analyses.probing._fit import fit_diffmeans, fit_ridge
from analyses.probing._report import _cos
from interp.checks import check_choice, check_number

__all__ = ["Behaviour", "CausalCheck", "causal_check", "loss_behaviour", "SentenceReadout"]


Behaviour = Callable[[Sequence[hooks.Hook]], float]


@dataclass
class CausalCheck:
    """Behaviour under erasure and steering at one point, against random subspaces/directions.

    ``erased_random[i]``: the i-th random subspace of the eraser's rank; ``steered[j]`` at
    ``alphas[j]``; ``steered_random[j][i]`` the i-th random direction of equal norm. ``damage_*``:
    the damage measure (e.g. 1 − cos of clean vs intervened embeddings) where one was given.
    """

    point: str
    rank: int
    clean: float
    erased: float
    erased_random: list[float]
    alphas: tuple[float, ...]
    steered: list[float]
    steered_random: list[list[float]]
    direction_norm: float
    resid_norm: float
    damage_erased: float = float("nan")
    damage_erased_random: list[float] = field(default_factory=list)
    damage_steered: list[float] = field(default_factory=list)
    damage_steered_random: list[list[float]] = field(default_factory=list)

    @property
    def erasure_effect(self) -> float:
        """Behaviour change under erasure beyond the mean random erasure (clean − erased − random gap)."""
        return (self.clean - self.erased) - (self.clean - sum(self.erased_random) / len(self.erased_random))

    def table(self) -> Any:
        """A pandas DataFrame: the behaviour clean, erased and steered at each α, each against the
        mean over its random controls (and the damage where one was measured)."""
        import pandas as pd

        def mean(v: Sequence[float]) -> float:
            return sum(v) / len(v) if len(v) else float("nan")

        rows = [{"intervention": "none", "behaviour": self.clean, "random": self.clean, "damage": 0.0,
                 "damage_random": 0.0},
                {"intervention": f"erase rank {self.rank}", "behaviour": self.erased,
                 "random": mean(self.erased_random), "damage": self.damage_erased,
                 "damage_random": mean(self.damage_erased_random)}]
        for j, alpha in enumerate(self.alphas):
            rows.append({"intervention": f"steer α={alpha:g}", "behaviour": self.steered[j],
                         "random": mean(self.steered_random[j]),
                         "damage": self.damage_steered[j] if self.damage_steered else float("nan"),
                         "damage_random": mean(self.damage_steered_random[j]) if self.damage_steered_random
                         else float("nan")})
        return pd.DataFrame(rows)

    def _repr_html_(self) -> str:
        return (f"<p>CausalCheck at {self.point}: erasure effect beyond random "
                f"{self.erasure_effect:.3f}</p>" + self.table().to_html(index=False, float_format="{:.3f}".format))


def _random_erase(point: str, mean: Tensor, q: Tensor) -> hooks.Hook:
    def fn(x: Tensor) -> Tensor:
        qq, mu = q.to(x), mean.to(x)
        return x - ((x - mu) @ qq) @ qq.T

    return hooks.Hook(point, fn)


def causal_check(
    point: str,
    x: Float[Tensor, "n d"],
    y: Int[Tensor, "n"],
    behaviour: Behaviour,
    *,
    steer_behaviour: Behaviour | None = None,
    damage: Behaviour | None = None,
    method: str = "leace",
    alphas: Sequence[float] = (0.5, 1.0, 2.0),
    n_random: int = 3,
    seed: int = 0,
) -> CausalCheck:
    """Erase the concept ``y`` at ``point`` (every position) and steer along its class-mean direction.

    Args:
        point: where to intervene (e.g. ``layer_point(model, 3)``).
        x: activations at ``point`` to fit the eraser and the direction on.
        y: their labels.
        behaviour: ``f(hooks) -> float``, the behaviour with the given hooks active (e.g. the
            sentence readout's accuracy, or the next-token loss).
        steer_behaviour: the behaviour measured while steering (default ``behaviour``), e.g. the
            fraction of class-0 inputs read as class 1.
        damage: optional ``f(hooks) -> float`` measuring damage on clean inputs.
        method: ``"leace"`` (concept-erasure's LeaceEraser: least-squares concept erasure) or
            ``"mean"`` (orthogonal projection off the class-mean differences, about the mean).
        alphas: steering doses, multiples of μ₁ − μ₀ (class 1 minus class 0 mean).
        n_random: random subspaces / directions drawn as the baseline.
    """
    check_choice("causal_check", "method", method, ("leace", "mean"))
    check_number("causal_check", "n_random", n_random, integer=True, minimum=1,
                 fix="At least one random baseline.")
    x = x.float()
    c = max(int(y.max()) + 1, 2)
    mean = x.mean(0)
    class_means = fit_diffmeans(x[None], y, c).means[0]
    d = x.shape[1]
    if method == "leace":
        from concept_erasure import LeaceEraser

        # k − 1 indicator columns: LEACE's rank is that of the class-mean differences
        eraser = LeaceEraser.fit(x, torch.nn.functional.one_hot(y, c)[:, 1:].float())
        rank = int(eraser.proj_left.shape[1])

        def erase_fn(a: Tensor) -> Tensor:
            return eraser(a.float()).to(a.dtype)

        erase_hook = hooks.Hook(point, erase_fn)
    else:
        q_c = hooks.orthonormal_basis(class_means - mean)
        rank = q_c.shape[1]
        erase_hook = _random_erase(point, mean, q_c)
    gen = torch.Generator().manual_seed(seed)
    randoms = [torch.linalg.qr(torch.randn(d, rank, generator=gen))[0] for _ in range(n_random)]
    direction = class_means[1] - class_means[0]
    rand_dirs = [torch.randn(d, generator=gen) for _ in range(n_random)]
    rand_dirs = [v / v.norm() * direction.norm() for v in rand_dirs]
    sb = steer_behaviour or behaviour
    out = CausalCheck(
        point=point, rank=rank, clean=behaviour([]), erased=behaviour([erase_hook]),
        erased_random=[behaviour([_random_erase(point, mean, q)]) for q in randoms],
        alphas=tuple(float(a) for a in alphas),
        steered=[sb([hooks.steer(point, direction, a)]) for a in alphas],
        steered_random=[[sb([hooks.steer(point, v, a)]) for v in rand_dirs] for a in alphas],
        direction_norm=direction.norm().item(), resid_norm=x.norm(dim=1).mean().item(),
    )
    if damage is not None:
        out.damage_erased = damage([erase_hook])
        out.damage_erased_random = [damage([_random_erase(point, mean, q)]) for q in randoms]
        out.damage_steered = [damage([hooks.steer(point, direction, a)]) for a in alphas]
        out.damage_steered_random = [[damage([hooks.steer(point, v, a)]) for v in rand_dirs] for a in alphas]
    return out


def loss_behaviour(model: Any, task: Any, eval_rows: int = 256) -> Behaviour:
    """For causal models: ``f(hooks)`` = mean next-token loss on ``eval_rows`` rows of the test split's
    scored targets."""
    check_number("loss_behaviour", "eval_rows", eval_rows, integer=True, minimum=1)
    batch = task.tensors("test", rows=eval_rows, columns=("input_ids", "target_mask"))

    @torch.no_grad()
    def f(hook_list: Sequence[hooks.Hook]) -> float:
        with hooks.apply(model, list(hook_list)):
            return task.loss(model, batch).item()

    return f


class SentenceReadout:
    """What MiniLM outputs: the mean-pooled final-layer embedding, and a ridge readout of a label from it.

    The readout is fitted on clean embeddings of the train split; ``accuracy(hooks)`` is its test
    accuracy with the hooks active, ``flipped(hooks)`` the fraction of test rows of class
    ``source`` read as another class, ``damage(hooks)`` is 1 − mean cos(clean, intervened embedding).
    """

    def __init__(self, model: Any, task: Any, label: str = "label", eval_rows: int | None = None,
                 batch_size: int = 128, source: int = 0):
        self.model, self.batch_size, self.source = model, batch_size, source
        n = model.cfg.n_layers
        self.point = hooks.resid_post(n - 1)
        tr = task.tensors("train", rows=eval_rows)
        self.test = task.tensors("test", rows=eval_rows)
        self.y_test = self.test[label].long()
        emb_tr = self.embed([], tr)
        self.readout = fit_ridge(emb_tr[None], tr[label].long(), lams=(1e-2,), folds=2)
        self.clean = self.embed([], self.test)

    @torch.no_grad()
    def embed(self, hook_list: Sequence[hooks.Hook], data: dict[str, Tensor] | None = None) -> Float[Tensor, "n d"]:
        data = self.test if data is None else data
        ids, mask = data["input_ids"].long(), data["attention_mask"]
        out = []
        with hooks.apply(self.model, list(hook_list)):
            for s in range(0, len(ids), self.batch_size):
                m = mask[s : s + self.batch_size]
                h = hooks.capture(self.model, ids[s : s + self.batch_size], [self.point], attention_mask=m)
                h = h[self.point].float()
                w = m[..., None].float()
                out.append((h * w).sum(1) / w.sum(1))
        return torch.cat(out)

    def accuracy(self, hook_list: Sequence[hooks.Hook]) -> float:
        return self.readout.accuracy(self.embed(hook_list)[None], self.y_test).item()

    def flipped(self, hook_list: Sequence[hooks.Hook]) -> float:
        pred = self.readout.predict(self.embed(hook_list)[None])[0]
        src = self.y_test == self.source
        return (pred[src] != self.source).float().mean().item()

    def damage(self, hook_list: Sequence[hooks.Hook]) -> float:
        return 1.0 - _cos(self.embed(hook_list), self.clean).mean().item()
