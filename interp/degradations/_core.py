"""Shared pieces of the degradations: the ``Draw`` record, the ``Degradation`` protocol with its level
axis and registry, level types, bit-identical weight snapshots and loss targets.

A degradation owns its level axis: what a level is (:class:`LevelAxis`: its name and units, the
column of ``Results.levels()`` a plain-number level fills), how a level is checked
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
            ``Results.levels()`` puts a plain-number level in the column of that name where it has
            one (``nbeta``, ``sigma``, ``step``).
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


# ------------------------------------------------------------------------------------------ targets
def is_task(target: Any) -> bool:
    return hasattr(target, "loss") and hasattr(target, "tensors") and hasattr(target, "dataset")


def is_objective(target: Any) -> bool:
    """Whether ``target`` follows the posterior-objective protocol (``interp.objectives.Objective``):
    ``name``, ``units``, ``prepare(model)``, ``tensors()`` and ``loss(model, batch)``."""
    return (not is_task(target) and not isinstance(target, type)
            and all(hasattr(target, a) for a in ("name", "units", "prepare", "tensors", "loss")))


#: Units of a Task's next-token loss.
TASK_UNITS = "nats/token"
#: Units stated for a plain ``loss(model)`` callable without a ``units`` attribute.
CALLABLE_UNITS = "loss units"


def _callable_name(fn: Any) -> str:
    name = getattr(fn, "name", None)
    if isinstance(name, str) and name:
        return name
    inner = getattr(fn, "__func__", fn)
    qual = getattr(inner, "__qualname__", None) or type(fn).__qualname__
    return f"{getattr(inner, '__module__', '') or ''}.{qual}".lstrip(".")


def objective_label(target: Any) -> tuple[str, str]:
    """``(name, units)`` of a loss target: a Task (its name, nats/token), an objective (its own), or
    a callable (its ``name`` or qualified name; its ``units`` attribute, else "loss units")."""
    if is_task(target):
        return str(target.name), TASK_UNITS
    if is_objective(target):
        return str(target.name), str(target.units)
    units = getattr(target, "units", None)
    return _callable_name(target), units if isinstance(units, str) and units else CALLABLE_UNITS


def describe_objective(target: Any) -> str | None:
    """A stable, address-free description of a posterior objective (``None`` for ``None``): what
    makes a sampler's configuration (and so a sweep's ``config.json``) differ when it differs."""
    if target is None:
        return None
    if is_task(target):
        return repr(target)
    name, units = objective_label(target)
    own = type(target).__repr__ is not object.__repr__
    text = repr(target) if own else ""
    if own and " at 0x" not in text and len(text) <= 400 and "\n" not in text:
        return text if name in text else f"{text} [name={name!r}, units={units!r}]"
    kind = "callable" if not is_objective(target) else type(target).__qualname__
    return f"{kind}(name={name!r}, units={units!r})"


def check_objective(owner: str, target: Any) -> None:
    """A clear error unless ``target`` is a Task with a loss, an objective, or a callable."""
    if is_task(target):
        if not getattr(target, "has_loss", True):
            raise ValueError(
                f"{owner}: Task {target.name!r} has no next-token loss (has_loss=False): a degradation "
                "that samples or calibrates on the loss needs a task with a loss, or a posterior "
                "objective of its own (objective=..., e.g. a behavioural divergence)."
            )
        return
    if is_objective(target) or (callable(target) and not isinstance(target, type)):
        return
    missing = [a for a in ("name", "units", "prepare", "tensors", "loss") if not hasattr(target, a)]
    raise ValueError(
        f"{owner}: objective={type(target).__name__} is not a loss target: give an interp Task, a "
        "callable loss(model) -> scalar tensor, or an object with name, units, prepare(model), "
        f"tensors() and loss(model, batch) (interp.objectives.Objective; this one lacks {missing})."
    )


def _functorch_wrapped(t: torch.Tensor) -> bool:
    """Whether ``t`` is a torch.func transform's wrapper (vmap, grad), whose autograd flags are not its own."""
    check = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    return bool(check is not None and check(t))


class SampledLoss:
    """A loss target made uniform: minibatch stream, differentiable loss, fixed evaluation batch.

    ``target``: a :class:`~interp.tasks.Task` (minibatches of its train split; ``kind="task"``), an
    object of the objective protocol (``prepare(model)`` is called here, at the weights the model
    has now, then minibatches are row subsets of ``tensors()``; ``kind="rows"``), or a callable
    ``loss(model)`` (``kind="callable"``). ``name`` and ``units`` say what the loss is.
    """

    def __init__(self, target: Any, batch_size: int, eval_rows: int, split: str = "train",
                 model: torch.nn.Module | None = None) -> None:
        self.target = target
        self.batch_size = batch_size
        self.name, self.units = objective_label(target) if (is_task(target) or is_objective(target)
                                                            or callable(target)) else ("?", "?")
        if is_task(target):
            check_objective("Objective", target)
            cols = [c for c in ("input_ids", "target_mask", "attention_mask") if c in target.dataset[split].column_names]
            self.data = target.tensors(split, columns=tuple(cols))
            self.kind = "task"
        elif is_objective(target):
            if model is not None:
                target.prepare(model)
            data = target.tensors()
            if not isinstance(data, Mapping) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
                raise ValueError(
                    f"objective {self.name!r}: tensors() returned {type(data).__name__}; it must return a "
                    "non-empty dict of tensors (the rows minibatches are drawn from)."
                )
            sizes = {k: (v.shape[0] if v.dim() else None) for k, v in data.items()}
            if len(set(sizes.values())) != 1 or None in sizes.values() or not next(iter(sizes.values())):
                raise ValueError(
                    f"objective {self.name!r}: tensors() must give tensors with one equal, non-zero first "
                    f"dimension (rows); got first dimensions {sizes}."
                )
            self.data = dict(data)
            self.kind = "rows"
        elif callable(target) and not isinstance(target, type):
            self.data, self.n, self.kind = None, 0, "callable"
            self.fixed = {} if eval_rows > 0 else None  # the callable itself is the evaluation
            return
        else:
            check_objective("Objective", target)
        self.n = len(next(iter(self.data.values())))
        self.fixed = (
            {k: v[: min(eval_rows, self.n)] for k, v in self.data.items()} if eval_rows > 0 else None
        )

    @property
    def has_rows(self) -> bool:
        """Whether minibatches are row subsets (a Task or a protocol objective), not ``None``."""
        return self.kind != "callable"

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor] | None) -> torch.Tensor:
        if self.kind != "callable":
            out = self.target.loss(model, batch)
            if self.kind == "task":
                return out
        else:
            out = self.target(model)
        if not isinstance(out, torch.Tensor) or out.numel() != 1:
            raise ValueError(
                f"loss of objective {self.name!r} returned {type(out).__name__} "
                f"{tuple(out.shape) if isinstance(out, torch.Tensor) else ''}: it must return a scalar tensor."
            )
        # inside torch.func.vmap (vectorised chains) the wrapped output never says requires_grad: not checked there
        if torch.is_grad_enabled() and not out.requires_grad and not _functorch_wrapped(out):
            raise ValueError(
                f"loss of objective {self.name!r} returned a tensor that does not depend on the model's weights "
                f"({out.item():.6g}, requires_grad=False): SGLD needs its gradient. Compute the loss from the "
                "model's forward (or its parameters) inside the callable, without torch.no_grad() or .detach()."
            )
        return out.reshape(())

    def stream(self, seed: int) -> Iterator[dict[str, torch.Tensor] | None]:
        """Endless minibatches (reshuffled each epoch, deterministic in ``seed``); ``None`` forever
        for a callable target."""
        if not self.has_rows:
            while True:
                yield None
        gen = torch.Generator().manual_seed(seed)
        bs = min(self.batch_size, self.n)
        while True:
            order = torch.randperm(self.n, generator=gen)
            for start in range(0, self.n - bs + 1, bs):
                idx = order[start : start + bs]
                yield {k: v[idx] for k, v in self.data.items()}

    @torch.no_grad()
    def eval_loss(self, model: torch.nn.Module) -> float:
        return float(self.loss(model, self.fixed if self.has_rows else None))
