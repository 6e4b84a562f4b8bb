"""Baseline degradations with the sampler's interface: Gaussian weight noise, activation noise and
earlier training checkpoints. Each puts its degraded model live, yields a :class:`Draw`, and restores
the original weights (bit-identically) or removes its hooks when the iteration ends, breaks or raises.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from interp.checks import check_flag, check_number
from interp.degradations._core import (
    Degradation,
    Draw,
    LevelAxis,
    SearchAxis,
    WeightSnapshot,
    register_degradation,
)
from interp.degradations._targets import SampledLoss, is_task
from interp.degradations._select import Restrict, check_restrict, select_parameters

logger = logging.getLogger("interp.degradations")

__all__ = ["WeightNoise", "ActivationNoise", "Checkpoints"]


def _check_sigma(cls: str, level: Any, default: float) -> None:
    """A ValueError unless ``level`` is a σ: ``None`` (the configured one) or a finite number >= 0."""
    if level is not None and (isinstance(level, bool) or not isinstance(level, (int, float))
                              or not math.isfinite(level) or level < 0):
        raise ValueError(
            f"{cls} level={level!r}: a level is σ, a finite number >= 0 (or None for sigma={default}); "
            "e.g. levels=[0.05, 0.1]."
        )


def _sigma(cls: str, level: Any, default: float) -> float:
    """The σ a level stands for: ``None`` (the configured one) or a finite number >= 0."""
    _check_sigma(cls, level, default)
    return float(default if level is None else level)


#: σ levels: searched on a log scale from 0.05
_SIGMA_AXIS = LevelAxis("sigma", "standard deviations of Gaussian noise",
                        search=(SearchAxis("sigma", 0.05, (1e-4, 10.0)),))


def _eval_loss(obj: SampledLoss | None, model: torch.nn.Module) -> float:
    return obj.eval_loss(model) if obj is not None and obj.fixed is not None else math.nan


def _objective(target: Any, eval_rows: int, model: torch.nn.Module) -> SampledLoss | None:
    """The target's loss on its fixed evaluation batch (an objective is prepared at w0 first).

    ``None`` (``Draw.loss`` NaN) without a target and for a Task without a loss (``has_loss=False``,
    e.g. MiniLM): a baseline only measures the loss, it never needs one, and the sweep records the
    behavioural divergence from w0 as the degradation axis of such a model."""
    if target is None or (is_task(target) and not getattr(target, "has_loss", True)):
        return None
    return SampledLoss(target, batch_size=1, eval_rows=eval_rows, model=model)


def _named(obj: SampledLoss | None) -> dict[str, str | None]:
    """``Draw`` fields naming what its loss measures."""
    return {"objective": None if obj is None else obj.name, "units": None if obj is None else obj.units}


class _GaussianNoise(Degradation):
    """The core the two Gaussian-noise baselines share: σ levels (:data:`_SIGMA_AXIS`; ``None``: the
    configured ``sigma``), ``draws_per_level`` draws per level, each held live by the subclass's
    :meth:`_holder` while its :class:`Draw` is out, ``Draw.loss`` on the target's fixed evaluation
    batch. Subclasses are frozen dataclasses with ``sigma``, ``relative``, ``draws_per_level``,
    ``seed`` and ``eval_rows`` fields."""

    level_axis = _SIGMA_AXIS

    def _check_noise_fields(self) -> None:
        c = type(self).__name__
        check_flag(c, "relative", self.relative)
        check_number(c, "draws_per_level", self.draws_per_level, integer=True, minimum=1)
        check_number(c, "seed", self.seed, integer=True, zero_ok=True)
        check_number(c, "eval_rows", self.eval_rows, integer=True, zero_ok=True)

    def check_level(self, level: Any) -> None:
        """A ValueError unless ``level`` is σ (a finite number >= 0) or ``None``."""
        _check_sigma(type(self).__name__, level, self.sigma)

    def replicates(self) -> int:
        return int(self.draws_per_level)

    def expected_draws(self, level: Any) -> int:
        return int(self.draws_per_level)

    def _holder(self, model: torch.nn.Module, sigma: float) -> Callable[[int], AbstractContextManager[None]]:
        """``hold(i)``: a context inside which draw ``i``'s noisy model is live (undone on exit)."""
        raise NotImplementedError

    def draws(self, model: torch.nn.Module, target: Any = None, level: Any = None) -> Iterator[Draw]:
        sigma = _sigma(type(self).__name__, level, self.sigma)
        obj = _objective(target, self.eval_rows, model)
        hold = self._holder(model, sigma)
        for i in range(self.draws_per_level):
            with hold(i):
                yield Draw(level=level if level is not None else sigma, chain=0, draw=i,
                           loss=_eval_loss(obj, model), **_named(obj))


@register_degradation
@dataclass(frozen=True)
class WeightNoise(_GaussianNoise):
    """Gaussian weight noise: w = w0 + σ·ξ, or with ``relative=True`` w = w0 + σ·std(w0_param)·ξ per
    parameter tensor (so σ is a fraction of each tensor's spread).

    ``draws(model, target, level)``: ``level`` is σ (``None``: the configured ``sigma``); ``draws``
    independent draws from ``seed``. ``Draw.loss`` is the target's loss on its fixed evaluation batch
    (first ``eval_rows`` train rows of a Task, or the callable), NaN without a target.
    """

    equal_loss_role = "baseline"  # Results.verdicts judges the tempered posterior against it at equal ΔL

    sigma: float = 0.01
    relative: bool = False
    draws_per_level: int = 8
    seed: int = 0
    restrict: Restrict = None
    eval_rows: int = 256

    def __post_init__(self) -> None:
        check_number("WeightNoise", "sigma", self.sigma, zero_ok=True)
        self._check_noise_fields()
        check_restrict(self.restrict, "WeightNoise")

    def check(self, model: torch.nn.Module) -> dict[str, int]:
        """Resolve :attr:`restrict` against ``model`` before any work: ``{parameter name: number of
        weights perturbed}``; raises the ``ValueError`` drawing would raise. Touches no weight."""
        return {n: (p.numel() if m is None else int(m.count_nonzero()))
                for n, p, m in select_parameters(model, self.restrict)}

    def _holder(self, model: torch.nn.Module, sigma: float) -> Callable[[int], AbstractContextManager[None]]:
        """Draw i: w0 + σ·s·ξ written into the selected parameters from one generator seeded by
        ``seed`` (draws consume it in turn); w0 restored bit-identically on exit, also on error."""
        sel = select_parameters(model, self.restrict)
        snap = WeightSnapshot(model)
        w0 = [snap.saved(p) for _, p, _ in sel]
        scales = [float(w.float().std()) if (self.relative and w.numel() > 1) else 1.0 for w in w0]
        gen = torch.Generator().manual_seed(self.seed)

        @contextmanager
        def hold(i: int) -> Iterator[None]:
            try:
                with torch.no_grad():
                    for (_, p, m), w, s in zip(sel, w0, scales):
                        x = torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p)
                        if m is not None:
                            x = x * m
                        p.copy_(w + sigma * s * x)
                yield
            finally:
                snap.restore()

        return hold


@register_degradation
@dataclass(frozen=True)
class ActivationNoise(_GaussianNoise):
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
    eval_rows: int = 256

    def __post_init__(self) -> None:
        c = "ActivationNoise"
        check_number(c, "sigma", self.sigma, zero_ok=True)
        if self.points is not None and (
            isinstance(self.points, str) or not isinstance(self.points, Sequence) or not len(self.points)
            or not all(isinstance(p, str) and p for p in self.points)
        ):
            raise ValueError(
                f"ActivationNoise(points={self.points!r}): give a non-empty list of hook names, e.g. "
                "['blocks.0.hook_resid_post'] (a single name still goes in a list)."
            )
        self._check_noise_fields()

    def check(self, model: torch.nn.Module) -> None:
        """Resolve :attr:`points` against ``model`` before any work (an unknown point names the
        closest valid ones). Touches no weight."""
        import hooks

        for point in self.points or ():
            hooks.resolve(model, point)

    def _holder(self, model: torch.nn.Module, sigma: float) -> Callable[[int], AbstractContextManager[None]]:
        """Draw i: noise hooks at the points (default: every ``resid_post``), their generator
        re-seeded with ``seed·1000003 + i``; the hooks are removed on exit."""
        import hooks

        pts = (list(self.points) if self.points is not None
               else [hooks.resid_post(layer) for layer in range(model.cfg.n_layers)])
        for p in pts:
            hooks.resolve(model, p)  # an unknown point fails here, before any draw, naming close ones
        gen = torch.Generator()
        relative = self.relative

        def noise(x: torch.Tensor) -> torch.Tensor:
            eps = torch.randn(x.shape, generator=gen, dtype=torch.float32).to(x)
            scale = x.detach().float().std() if relative else 1.0
            return x + sigma * scale * eps

        def hold(i: int) -> AbstractContextManager[None]:
            gen.manual_seed(self.seed * 1_000_003 + i)
            return hooks.apply(model, [hooks.Hook(p, noise) for p in pts])

        return hold


@register_degradation
@dataclass(frozen=True)
class Checkpoints(Degradation):
    """Earlier training checkpoints as degradations: each draw loads one checkpoint's weights into the
    live model (same architecture), then the original weights come back.

    ``source``: a sequence of ``(step, model or state_dict)`` pairs (what
    ``interp.organisms.checkpoints(name)`` returns), of paths to ``.safetensors``/``.pt`` state dicts
    (the level is then the path's stem), or an organism name. ``level``: a step (or stem) to yield just
    that checkpoint; ``None`` yields them all in order, one draw each.
    """

    source: Any = ()
    eval_rows: int = 256

    def __post_init__(self) -> None:
        src = self.source
        if not isinstance(src, (str, Sequence)) or isinstance(src, bytes):
            raise ValueError(
                f"Checkpoints(source={src!r}): give an organism name, or a list of (step, model or "
                "state_dict) pairs or of .safetensors/.pt paths."
            )
        check_number("Checkpoints", "eval_rows", self.eval_rows, integer=True, zero_ok=True)

    #: a fixed grid of training steps: not searched by interp.dissolution
    level_axis = LevelAxis("step", "training steps")

    def check(self, model: torch.nn.Module) -> None:
        """Every checkpoint file can be read (missing, unreadable or not a state dict: its own clear
        error), before any work. Touches no weight."""
        for _, item in self._items():
            if isinstance(item, Path):
                self._state(item)

    def check_level(self, level: Any) -> None:
        """A ValueError unless ``level`` is ``None`` (every checkpoint) or one of the steps."""
        if level is None:
            return
        available = [s for s, _ in self._items()]
        if not any(s == level or str(s) == str(level) for s in available):
            raise ValueError(f"Checkpoints level={level!r}: no checkpoint at this level; available steps: "
                             f"{available}.")

    def replicates(self) -> int:
        return 1

    def expected_draws(self, level: Any) -> int | None:
        if level is not None:
            return 1
        # an organism's name would load its checkpoints just to count them
        return None if isinstance(self.source, str) else len(self.source)

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
            if not obj.is_file():
                raise FileNotFoundError(f"Checkpoint file {obj} not found.")
            try:
                if obj.suffix == ".safetensors":
                    from safetensors.torch import load_file

                    return load_file(str(obj))
                # weights only: a pickle never gets to run code
                state = torch.load(obj, map_location="cpu", weights_only=True)
            except Exception as err:  # noqa: BLE001 - every reader error means the same to the user
                kind = "safetensors" if obj.suffix == ".safetensors" else "weights-only torch"
                raise ValueError(
                    f"Checkpoint file {obj} cannot be read as a {kind} state dict ({type(err).__name__}): "
                    "it is corrupt, truncated or not a plain state dict of tensors. Only safetensors files "
                    "and weights-only torch state dicts are read; no pickled code is ever run."
                ) from err
            if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
                raise ValueError(f"Checkpoint file {obj} holds {type(state).__name__}, not a state dict of tensors.")
            return state
        if isinstance(obj, dict):
            return obj
        raise ValueError(f"Cannot read a checkpoint from {type(obj).__name__}.")

    def draws(self, model: torch.nn.Module, target: Any = None, level: Any = None) -> Iterator[Draw]:
        self.check_level(level)
        items = [(s, m) for s, m in self._items() if level is None or s == level or str(s) == str(level)]
        obj = _objective(target, self.eval_rows, model)
        snap = WeightSnapshot(model)
        own = model.state_dict()
        try:
            for i, (step, ck) in enumerate(items):
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
                # draw i: with level=None every checkpoint is a distinct draw of the one level
                yield Draw(level=step, chain=0, draw=i, loss=_eval_loss(obj, model), **_named(obj))
                snap.restore()
        finally:
            snap.restore()
