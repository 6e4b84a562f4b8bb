"""Baseline degradations with the sampler's interface: Gaussian weight noise, activation noise and
earlier training checkpoints. Each puts its degraded model live, yields a :class:`Draw`, and restores
the original weights (bit-identically) or removes its hooks when the iteration ends, breaks or raises.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from interp.degradations._core import Draw, Objective, Restrict, WeightSnapshot, select_parameters

logger = logging.getLogger("interp.degradations")

__all__ = ["WeightNoise", "ActivationNoise", "Checkpoints"]


def _eval_loss(obj: Objective | None, model: torch.nn.Module) -> float:
    return obj.eval_loss(model) if obj is not None and obj.fixed is not None else math.nan


def _objective(target: Any, eval_size: int) -> Objective | None:
    return None if target is None else Objective(target, batch_size=1, eval_size=eval_size)


@dataclass(frozen=True)
class WeightNoise:
    """Gaussian weight noise: w = w0 + σ·ξ, or with ``relative=True`` w = w0 + σ·std(w0_param)·ξ per
    parameter tensor (so σ is a fraction of each tensor's spread).

    ``draws(model, target, level)``: ``level`` is σ (``None``: the configured ``sigma``); ``draws``
    independent draws from ``seed``. ``Draw.loss`` is the target's loss on its fixed evaluation batch
    (first ``eval_size`` train rows of a Task, or the callable), NaN without a target.
    """

    sigma: float = 0.01
    relative: bool = False
    draws_per_level: int = 8
    seed: int = 0
    restrict: Restrict = None
    eval_size: int = 256

    def __post_init__(self) -> None:
        if not (isinstance(self.sigma, (int, float)) and math.isfinite(self.sigma) and self.sigma >= 0):
            raise ValueError(f"WeightNoise(sigma={self.sigma!r}): sigma must be a finite number >= 0, e.g. 0.01.")
        if not (isinstance(self.draws_per_level, int) and self.draws_per_level > 0):
            raise ValueError(f"WeightNoise(draws_per_level={self.draws_per_level!r}): must be a positive integer.")
        if not (isinstance(self.eval_size, int) and self.eval_size >= 0):
            raise ValueError(f"WeightNoise(eval_size={self.eval_size!r}): must be an integer >= 0.")

    def draws(self, model: torch.nn.Module, target: Any = None, level: Any = None) -> Iterator[Draw]:
        sigma = self.sigma if level is None else float(level)
        if not (math.isfinite(sigma) and sigma >= 0):
            raise ValueError(f"WeightNoise level={level!r}: σ must be a finite number >= 0.")
        obj = _objective(target, self.eval_size)
        sel = select_parameters(model, self.restrict)
        snap = WeightSnapshot(model)
        w0 = [snap.saved(p) for _, p, _ in sel]
        scales = [float(w.float().std()) if (self.relative and w.numel() > 1) else 1.0 for w in w0]
        gen = torch.Generator().manual_seed(self.seed)
        try:
            for i in range(self.draws_per_level):
                with torch.no_grad():
                    for (_, p, m), w, s in zip(sel, w0, scales):
                        x = torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p)
                        if m is not None:
                            x = x * m
                        p.copy_(w + sigma * s * x)
                yield Draw(level=level if level is not None else sigma, chain=0, draw=i,
                           loss=_eval_loss(obj, model))
                snap.restore()
        finally:
            snap.restore()


@dataclass(frozen=True)
class ActivationNoise:
    """Gaussian noise added to activations at hook points while each draw is held:
    x ← x + σ·ξ (``relative=True``: σ·std(x)·ξ). Weights are untouched; the hooks are removed when
    the iteration ends, breaks or raises.

    ``points``: hook names (e.g. ``"blocks.0.hook_resid_post"``) or a predicate on the name.
    ``level`` is σ. Each draw re-seeds the noise, so a draw is one fixed random function of the input
    for its whole lifetime (every forward inside it sees fresh noise from that draw's generator).
    """

    sigma: float = 0.1
    points: Sequence[str] | None = None
    relative: bool = False
    draws_per_level: int = 8
    seed: int = 0
    eval_size: int = 256

    def __post_init__(self) -> None:
        if not (isinstance(self.sigma, (int, float)) and math.isfinite(self.sigma) and self.sigma >= 0):
            raise ValueError(f"ActivationNoise(sigma={self.sigma!r}): sigma must be a finite number >= 0.")
        if self.points is not None and (isinstance(self.points, str) or not len(self.points)):
            raise ValueError(
                f"ActivationNoise(points={self.points!r}): give a non-empty list of hook names, e.g. "
                "['blocks.0.hook_resid_post'] (a single name still goes in a list)."
            )
        if not (isinstance(self.draws_per_level, int) and self.draws_per_level > 0):
            raise ValueError(f"ActivationNoise(draws_per_level={self.draws_per_level!r}): must be a positive integer.")

    def draws(self, model: torch.nn.Module, target: Any = None, level: Any = None) -> Iterator[Draw]:
        import hooks

        sigma = self.sigma if level is None else float(level)
        if not (math.isfinite(sigma) and sigma >= 0):
            raise ValueError(f"ActivationNoise level={level!r}: σ must be a finite number >= 0.")
        obj = _objective(target, self.eval_size)
        pts = (list(self.points) if self.points is not None
               else [hooks.resid_post(layer) for layer in range(model.cfg.n_layers)])
        gen = torch.Generator()
        relative = self.relative

        def noise(x: torch.Tensor) -> torch.Tensor:
            eps = torch.randn(x.shape, generator=gen, dtype=torch.float32).to(x)
            scale = x.detach().float().std() if relative else 1.0
            return x + sigma * scale * eps

        for i in range(self.draws_per_level):
            gen.manual_seed(self.seed * 1_000_003 + i)
            with hooks.apply(model, [hooks.Hook(p, noise) for p in pts]):
                yield Draw(level=level if level is not None else sigma, chain=0, draw=i,
                           loss=_eval_loss(obj, model))


@dataclass(frozen=True)
class Checkpoints:
    """Earlier training checkpoints as degradations: each draw loads one checkpoint's weights into the
    live model (same architecture), then the original weights come back.

    ``source``: a sequence of ``(step, model or state_dict)`` pairs (what
    ``interp.organisms.checkpoints(name)`` returns), of paths to ``.safetensors``/``.pt`` state dicts
    (the level is then the path's stem), or an organism name. ``level``: a step (or stem) to yield just
    that checkpoint; ``None`` yields them all in order, one draw each.
    """

    source: Any = ()
    eval_size: int = 256

    def _items(self) -> list[tuple[Any, Any]]:
        src = self.source
        if isinstance(src, str):
            from interp import organisms

            return list(organisms.checkpoints(src))
        items = []
        for x in src:
            if isinstance(x, (str, Path)):
                items.append((Path(x).stem, Path(x)))
            elif isinstance(x, tuple) and len(x) == 2:
                items.append(x)
            else:
                raise ValueError(
                    f"Checkpoints source entry {x!r}: expected (step, model or state_dict) or a path."
                )
        if not items:
            raise ValueError("Checkpoints(source=...) is empty: give (step, model) pairs, paths or an organism name.")
        return items

    @staticmethod
    def _state(obj: Any) -> dict[str, torch.Tensor]:
        if isinstance(obj, torch.nn.Module):
            return obj.state_dict()
        if isinstance(obj, Path):
            if obj.suffix == ".safetensors":
                from safetensors.torch import load_file

                return load_file(str(obj))
            return torch.load(obj, map_location="cpu", weights_only=True)
        if isinstance(obj, dict):
            return obj
        raise ValueError(f"Cannot read a checkpoint from {type(obj).__name__}.")

    def draws(self, model: torch.nn.Module, target: Any = None, level: Any = None) -> Iterator[Draw]:
        items = self._items()
        if level is not None:
            items = [(s, m) for s, m in items if s == level or str(s) == str(level)]
            if not items:
                raise ValueError(f"Checkpoints: no checkpoint at level={level!r}; available: {[s for s, _ in self._items()]}.")
        obj = _objective(target, self.eval_size)
        snap = WeightSnapshot(model)
        own = model.state_dict()
        try:
            for step, ck in items:
                state = self._state(ck)
                missing = [k for k in own if k not in state and own[k].is_floating_point()]
                if missing:
                    raise ValueError(
                        f"checkpoint {step!r} lacks {len(missing)} tensor(s) of the model, e.g. {missing[:3]}; "
                        "it must come from the same architecture."
                    )
                with torch.no_grad():
                    for k, t in own.items():
                        if k in state:
                            if state[k].shape != t.shape:
                                raise ValueError(f"checkpoint {step!r}: {k} has shape {tuple(state[k].shape)}, model {tuple(t.shape)}.")
                            t.copy_(state[k])
                yield Draw(level=step, chain=0, draw=0, loss=_eval_loss(obj, model))
                snap.restore()
        finally:
            snap.restore()
