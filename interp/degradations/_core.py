"""Shared pieces of the degradations: the ``Draw`` record, the ``Degradation`` protocol with its level
axis and registry, level types and bit-identical weight snapshots (the loss targets a degradation
measures on: :mod:`interp.degradations._targets`).

A degradation owns its level axis: what a level is (:class:`LevelAxis`: its name and units, which
``Results.levels()`` reports with each plain-number level's value on it), how a level is checked
(``check_level``), how ``interp.dissolution`` searches along it (:class:`SearchAxis`: start,
limits, which way is "more degraded", log or linear midpoints; ``search_level`` turns a value on
the axis into a level), and how an executor splits a level into jobs (``chain_jobs``). The sweep,
the dissolution search, ``Results.levels``, the progress bar and ``interp.plan``
(``work``, ``plan_costs``: :mod:`interp.degradations.cost`), ``Results.verdicts``
(``equal_loss_role``) and sweep files ask these members and never name a
degradation class, so adding one is one class: subclass :class:`Degradation` (its defaults fill the
optional members) and decorate it with :func:`register_degradation` to make sweep files know it.

Example::

    >>> from interp.degradations import (Degradation, LevelAxis, SearchAxis, register_degradation,
    ...                                  registered_degradations, unregister_degradation)
    >>> @register_degradation
    ... class Scale(Degradation):
    ...     level_axis = LevelAxis("shrink", "fraction of each weight removed",
    ...                            search=(SearchAxis("shrink", 0.1, (0.01, 0.9)),))
    ...     def __init__(self, draws_per_level=2):
    ...         self.draws_per_level = draws_per_level
    ...     def check_level(self, level):
    ...         if not (isinstance(level, float) and 0 <= level < 1):
    ...             raise ValueError(f"Scale level={level!r}: a fraction in [0, 1), e.g. 0.1.")
    ...     def replicates(self):
    ...         return self.draws_per_level
    ...     def draws(self, model, target=None, level=None):
    ...         yield from ()                      # a real one puts w0·(1 − level) live here
    >>> Scale().check_level(0.2)
    >>> Scale().chain_jobs(None, None)           # the default: one job per level
    [None]
    >>> "Scale" in registered_degradations()
    True
    >>> unregister_degradation("Scale")
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Union, runtime_checkable

import torch

logger = logging.getLogger("interp.degradations")

__all__ = [
    "Draw",
    "Degradation",
    "LevelAxis",
    "SearchAxis",
    "register_degradation",
    "registered_degradations",
    "unregister_degradation",
    "equal_loss_role",
    "LossIncrease",
    "NBeta",
    "Level",
    "Target",
    "WeightSnapshot",
]

#: A loss target: a :class:`~interp.tasks.Task` or a plain ``loss(model) -> scalar tensor``.
Target = Union["Task", Callable[[torch.nn.Module], torch.Tensor]]  # noqa: F821


# ------------------------------------------------------------------------------------------- levels
@dataclass(frozen=True)
class NBeta:
    """A level given as the inverse temperature ``B = nβ`` on the per-token mean loss."""

    value: float

    def __post_init__(self) -> None:
        if not (isinstance(self.value, (int, float)) and math.isfinite(self.value) and self.value > 0):
            raise ValueError(
                f"NBeta(value={self.value!r}): the inverse temperature must be a finite number > 0 "
                "(e.g. NBeta(1000.0)); for a loss budget use LossIncrease(delta) instead."
            )


@dataclass(frozen=True)
class LossIncrease:
    """A level given as a **target loss increase** Δ over the trained weights, in the units of the
    objective the posterior samples on (nats/token for a task's next-token loss, KL nats/token or
    normalised MSE for a behavioural objective; the calibration record says which).

    The sampler calibrates ``B`` so that the mean loss of its draws, on a fixed evaluation batch, sits
    Δ above the loss at ``w0`` (Lau et al. 2023: E[L] − L(w0) ≈ λ/B, so B ≈ λ̂/Δ, refined by bisection on
    log B). The repr is unit-free,
    ``LossIncrease(0.1)``, since the units are the objective's.
    """

    delta: float

    def __post_init__(self) -> None:
        if not (isinstance(self.delta, (int, float)) and math.isfinite(self.delta) and self.delta > 0):
            raise ValueError(
                f"LossIncrease(delta={self.delta!r}): the target loss increase must be a finite number "
                "> 0 in the units of the posterior's objective (nats/token for a task's next-token loss), "
                "e.g. LossIncrease(0.1)."
            )

    def __repr__(self) -> str:
        return f"LossIncrease({self.delta!r})"


#: What ``draws(..., level=...)`` accepts: ``None`` (the configured value), a number (nβ for the
#: sampler, σ for weight noise, ...), or one of the level types above.
Level = Union[None, float, int, NBeta, LossIncrease, Any]


# --------------------------------------------------------------------------------------------- draw
@dataclass(frozen=True)
class Draw:
    """One degraded model, live in the model while the consumer holds it.

    Attributes:
        level: the level as requested (a number, :class:`NBeta`, :class:`LossIncrease`, a checkpoint
            step, ...).
        chain: chain index (0 for degradations without chains).
        draw: draw index within the chain.
        loss: loss of the degraded model (the sampler: on its fixed evaluation batch when it has one,
            else the minibatch loss at this step; baselines: on the target's evaluation batch).
        nbeta: inverse temperature B = nβ of the chain (sampler only).
        lr: step size ε of the chain (sampler only).
        step: SGLD step at which the draw was taken (sampler only).
        objective: name of what ``loss`` measures (the sampler's objective, or the target's name).
        units: units of ``loss`` (``"nats/token"`` for a task's next-token loss).
    """

    level: Any
    chain: int
    draw: int
    loss: float
    nbeta: float | None = None
    lr: float | None = None
    step: int | None = None
    objective: str | None = None
    units: str | None = None


# ------------------------------------------------------------------------------------ level axis
@dataclass(frozen=True)
class SearchAxis:
    """One axis ``interp.dissolution`` can search a degradation's level along.

    Attributes:
        name: the axis's name, as ``dissolution(axis=...)`` takes it (``"sigma"``, ``"nbeta"``, ...).
        start: the first value evaluated.
        limits: ``(low, high)``: the search never leaves them.
        increasing: whether larger values degrade more (σ, a loss increase Δ); ``False`` for an
            inverse temperature nβ, searched on its reciprocal, the temperature.
        scale: ``"log"`` (bracket by factors, bisect at geometric midpoints: values > 0 spanning
            decades) or ``"linear"`` (bisect at arithmetic midpoints: a bounded fraction).
    """

    name: str
    start: float
    limits: tuple[float, float]
    increasing: bool = True
    scale: str = "log"

    def __post_init__(self) -> None:
        if not (isinstance(self.name, str) and self.name.isidentifier()):
            raise ValueError(f"SearchAxis(name={self.name!r}): the axis name must be an identifier, e.g. 'sigma'.")
        low, high = self.limits
        for what, v in (("start", self.start), ("limits[0]", low), ("limits[1]", high)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"SearchAxis({self.name!r}, {what}={v!r}): must be a finite number > 0.")
        if not low <= self.start <= high:
            raise ValueError(f"SearchAxis({self.name!r}): start={self.start!r} must lie within limits={self.limits!r}.")
        if self.scale not in ("log", "linear"):
            raise ValueError(f"SearchAxis({self.name!r}, scale={self.scale!r}): 'log' or 'linear'.")


@dataclass(frozen=True)
class LevelAxis:
    """What a degradation's levels are.

    Attributes:
        name: what a plain-number level measures (``"sigma"``, ``"nbeta"``, ``"step"``, ...);
            ``Results.levels()`` reports it (``level_axis``, ``level_units``) with each plain-number
            level's ``level_value``, also put in the column of that name where it has one
            (``nbeta``, ``sigma``, ``step``).
        units: the units of that number, in words.
        search: the axes ``interp.dissolution`` can search along, the default first; empty for a
            degradation whose levels are a fixed grid (checkpoints: read the grid with
            ``Results.dissolution``).
    """

    name: str
    units: str
    search: tuple[SearchAxis, ...] = ()

    def search_axis(self, owner: str, axis: str | None) -> SearchAxis:
        """The search axis named ``axis`` (``None``: the default), or a ValueError naming the choices."""
        if not self.search:
            raise ValueError(f"degradation={owner}: its levels ({self.name}) are a fixed grid that "
                             "interp.dissolution cannot search; run a sweep over them and read the crossing "
                             "with Results.dissolution.")
        names = [a.name for a in self.search]
        if axis is None:
            return self.search[0]
        if axis not in names:
            raise ValueError(f"axis={axis!r}: {owner} searches along {tuple(names)}; pass one of them, "
                             f"e.g. axis={names[0]!r}.")
        return self.search[names.index(axis)]


# ---------------------------------------------------------------------------------------- protocol
@runtime_checkable
class Degradation(Protocol):
    """What the sweep, ``interp.dissolution``, the Ray executor and sweep files need of a degradation.

    Required: ``level_axis`` (a :class:`LevelAxis`), ``draws(model, target, level)`` (puts degraded
    weights live, one :class:`Draw` at a time, and always restores the original weights
    bit-identically when the iterator finishes, breaks or raises), ``check_level(level)`` (a
    ValueError naming the level unless the degradation can use it) and ``replicates()``
    (independent draws per level: what a level's interval is over). Subclassing gives defaults for
    the rest: ``check(model)`` (resolve what a first draw would reject against the model, before
    any work; default: nothing), ``expected_draws(level)`` (for progress bars; default: unknown),
    ``search_level(axis, value, evaluated)`` (a searched value as a level, and the degradation to
    run it with; default: the value itself) and ``chain_jobs(model, target)`` (how an executor
    splits a level: ``[None]``, one job per level, the default; or chain indices, each a job run
    with the degradation's ``plan(model, target, level)``, ``run_chain(model, target, level,
    plan, chain)`` and ``assess(calibration, chains)``), ``work(levels)`` (what the sweep's progress
    bar counts; default: one unit per expected draw), ``plan_costs(model, target, levels,
    probe_steps, costs)`` (its share of ``interp.plan``; default: one draw timed) and
    ``equal_loss_role`` (its part in the comparison at equal ΔL of ``Results.verdicts``; default:
    none).
    """

    level_axis: ClassVar[LevelAxis]
    #: ``"posterior"`` (its dissolution is judged against the baseline's at equal ΔL), ``"baseline"``
    #: (the weight-noise baseline of that comparison) or ``None``: read by ``Results.verdicts``
    equal_loss_role: ClassVar[str | None] = None

    def draws(self, model: torch.nn.Module, target: Any, level: Level = None) -> Iterator[Draw]: ...

    def check_level(self, level: Level) -> None: ...

    def replicates(self) -> int: ...

    def check(self, model: torch.nn.Module) -> Any:
        """What a first draw would reject, checked against ``model`` before any work (no weight
        touched); a ValueError naming it. The return value is the degradation's own."""
        return None

    def expected_draws(self, level: Level) -> int | None:
        """How many draws ``level`` yields when nothing fails, or ``None`` when unknown."""
        return None

    def search_level(self, axis: str, value: float, evaluated: Sequence[Mapping[str, float]]
                     ) -> tuple[Any, Degradation]:
        """The level ``interp.dissolution`` runs for ``value`` on search axis ``axis`` and the
        degradation to run it with; ``evaluated`` holds the levels already run (``value`` and the
        numbers measured there: ``nbeta``, ``delta_loss``, ...), e.g. to start a calibration near
        its neighbours'."""
        return value, self

    def chain_jobs(self, model: torch.nn.Module, target: Any) -> list[int | None]:
        """The jobs one level splits into on an executor: ``[None]`` (the whole level one job)."""
        return [None]

    def work(self, levels: Sequence[Level]) -> Any:
        """What a sweep's progress bar counts over ``levels``: an ``interp.degradations.cost.Work``,
        by default one unit per draw (``expected_draws`` of each level)."""
        from interp.degradations.cost import Work

        return Work([self.expected_draws(level) for level in levels])

    def plan_costs(self, model: torch.nn.Module, target: Any, levels: Sequence[Level], probe_steps: int,
                   costs: dict[str, float]) -> Any:
        """This degradation's share of ``interp.plan``: an ``interp.degradations.cost.PlanCosts``,
        measured on ``model`` at w0 (restored bit-identically), its unit costs put in ``costs``; by
        default one draw of the first level timed (``probe_steps`` is the sampler's)."""
        from interp.degradations.cost import time_draws

        return time_draws(self, model, target, levels, costs)


#: sweep-file name -> degradation class (:func:`register_degradation`)
_REGISTRY: dict[str, type] = {}
_MEMBERS = ("draws", "check_level", "replicates", "check", "expected_draws", "search_level", "chain_jobs",
            "work", "plan_costs")
#: the roles in the comparison at equal ΔL (``Results.verdicts``): the degradation whose dissolution
#: is judged, and the baseline it is judged against
ROLES = ("posterior", "baseline")


def register_degradation(cls: type) -> type:
    """Class decorator: make ``cls`` a degradation that sweep files name by its class name
    (``[degradation] type = "NAME"``). Checks the protocol's members are there."""
    if not isinstance(cls, type):
        raise ValueError(f"register_degradation({cls!r}): decorate a class (@register_degradation above "
                         "class MyDegradation(Degradation): ...).")
    missing = [m for m in _MEMBERS if not callable(getattr(cls, m, None))]
    if not isinstance(getattr(cls, "level_axis", None), LevelAxis):
        missing.insert(0, "level_axis (a LevelAxis)")
    role = getattr(cls, "equal_loss_role", None)
    if role is not None and role not in ROLES:
        raise ValueError(f"register_degradation({cls.__name__}): equal_loss_role={role!r}; one of {ROLES} "
                         "or None (the default: not part of the comparison at equal ΔL).")
    if missing:
        raise ValueError(f"register_degradation({cls.__name__}): lacks {missing} of the Degradation protocol; "
                         "subclass interp.degradations.Degradation for the defaults and define the rest.")
    old = _REGISTRY.get(cls.__name__)
    if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"register_degradation({cls.__module__}.{cls.__qualname__}): the name {cls.__name__!r} "
                         f"is taken by {old.__module__}.{old.__qualname__}; rename the class.")
    _REGISTRY[cls.__name__] = cls
    return cls


def unregister_degradation(name: str) -> None:
    """Forget the registered degradation ``name`` (a ValueError naming the registered ones if absent)."""
    if name not in _REGISTRY:
        raise ValueError(f"unregister_degradation({name!r}): not registered; registered: {sorted(_REGISTRY)}.")
    del _REGISTRY[name]


#: the entry-point group through which an installed package registers its degradations
ENTRY_POINT_GROUP = "interp.degradations"


def equal_loss_role(name: Any) -> str | None:
    """The ``equal_loss_role`` of the registered degradation a table's ``degradation`` column names
    (its class name; case and underscores ignored): ``"posterior"``, ``"baseline"`` or ``None``."""
    global _ENTRY_POINTS_READ

    def find() -> type | None:
        key = str(name).lower().replace("_", "")
        return next((c for n, c in _REGISTRY.items() if n.lower().replace("_", "") == key), None)

    import interp.degradations  # noqa: F401 - the shipped degradations register themselves

    cls = find()
    if cls is None and not _ENTRY_POINTS_READ:  # installed packages' ones, read once (~10 ms)
        registered_degradations()
        _ENTRY_POINTS_READ = True
        cls = find()
    return getattr(cls, "equal_loss_role", None)


#: whether :func:`equal_loss_role` has read the entry points once
_ENTRY_POINTS_READ = False


def registered_degradations() -> dict[str, type]:
    """Every registered degradation by its sweep-file name: the shipped ones, those decorated with
    :func:`register_degradation` in modules imported so far, and those installed packages declare
    in the ``interp.degradations`` entry-point group (``[project.entry-points."interp.degradations"]
    WeightMask = "mypackage.masks:WeightMask"`` in their ``pyproject.toml``; loaded here, so the
    ``interp sweep`` command line knows them)."""
    from importlib.metadata import entry_points

    import interp.degradations  # noqa: F401 - the shipped degradations register themselves

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in _REGISTRY:
            cls = ep.load()  # importing its module may register it already
            if _REGISTRY.get(cls.__name__) is not cls:
                register_degradation(cls)
    return dict(sorted(_REGISTRY.items()))


# ----------------------------------------------------------------------------------------- snapshot
class WeightSnapshot:
    """Exact copy of every parameter and buffer of a module (plus grads, ``requires_grad`` flags and
    train/eval mode), restored with ``copy_`` so the weights come back bit-identical."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.params = [(p, p.detach().clone()) for p in model.parameters()]
        self.buffers = [(b, b.detach().clone()) for b in model.buffers()]
        self.grads = [(p, p.grad) for p in model.parameters()]
        self.requires_grad = [(p, p.requires_grad) for p in model.parameters()]
        self.modes = [(m, m.training) for m in model.modules()]

    def restore(self) -> None:
        with torch.no_grad():
            for t, saved in self.params + self.buffers:
                if t.data_ptr() != 0:
                    t.copy_(saved)
        for p, g in self.grads:
            p.grad = g
        for p, flag in self.requires_grad:
            p.requires_grad_(flag)
        for m, mode in self.modes:
            m.training = mode

    def saved(self, p: torch.Tensor) -> torch.Tensor:
        for q, s in self.params:
            if q is p:
                return s
        raise KeyError("parameter not in snapshot")
