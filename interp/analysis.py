"""The ``Analysis`` protocol: the one extension point of ``interp``.

An analysis is set up once on the clean weights and then called at the baseline and at every draw of
a degradation, with the degraded weights live in the model::

    analysis.setup(model, task)            # once, clean weights: fit a probe, compute means, ...
    metrics = analysis(model, task)        # dict[str, float], at w0 and at every draw

Metrics are named; an analysis says which of them are its *effect* (what it claims: "the induction
heads carry the behaviour") and which its *collateral* (how much its intervention disturbs behaviour
outside the claim), so a sweep can find the clean window where the effect holds and the collateral
is small. Any other metric is reported as it is.

Example::

    >>> class Loss:
    ...     name = "loss"
    ...     effects = ()
    ...     collaterals = ()
    ...     def setup(self, model, task): pass
    ...     def __call__(self, model, task):
    ...         return {"loss": task.evaluate(model)["loss"]}
    >>> isinstance(Loss(), Analysis)
    True

**Resuming and** ``version``: a sweep's ``out`` directory records each analysis's name and
parameters (its ``get_params()`` where it has one, as every shipped analysis does),
and a rerun resumes only when they are the same. What a user's code computes cannot be seen from
outside, so an analysis (class or function) may carry an optional ``version`` attribute: bump it
whenever its output changes meaning (another scale, another definition), and a resume of an older
sweep is refused, naming the version, instead of mixing old and new numbers in one level::

    >>> class Loss:
    ...     name, effects, collaterals, version = "loss", (), (), 2     # was 1: now per token
    ...     def setup(self, model, task): pass
    ...     def __call__(self, model, task):
    ...         return {"loss": task.evaluate(model)["loss"]}
    >>> def logit_norm(model, task):
    ...     return {"norm": 1.0}
    >>> logit_norm.version = "2024-06"                                  # functions take one too

A plain function ``fn(model, task) -> dict[str, float]`` is an analysis too (its name is the
function's ``__name__``; no setup, no effects, no collaterals), and so is an object that lacks
``setup``, ``effects``, ``collaterals`` or ``name`` (the defaults: no setup, no effects, no
collaterals, the class name). ``run_sweep`` wraps them once with :func:`wrap_analysis`::

    >>> def logit_norm(model, task):
    ...     return {"norm": 1.0}
    >>> wrap_analysis(logit_norm).name
    'logit_norm'
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["Analysis", "FunctionAnalysis", "metric_kind", "wrap_analysis", "declared_metrics"]


@runtime_checkable
class Analysis(Protocol):
    """What ``run_sweep`` needs of an analysis (see the module docstring)."""

    name: str
    effects: tuple[str, ...]
    collaterals: tuple[str, ...]
    # optional, not required by the protocol: ``version`` (any JSON value), bumped by the user when
    # the analysis's output changes meaning; part of a sweep's identity (see the module docstring)

    def setup(self, model: Any, task: Any) -> None: ...

    def __call__(self, model: Any, task: Any) -> dict[str, float]: ...


def metric_kind(analysis: Analysis, metric: str) -> str:
    """``"effect"``, ``"collateral"`` or ``"other"`` for one of an analysis's metrics."""
    if metric in getattr(analysis, "effects", ()):
        return "effect"
    if metric in getattr(analysis, "collaterals", ()):
        return "collateral"
    return "other"


def declared_metrics(obj: Any, attr: str) -> tuple[str, ...]:
    """``obj.effects`` or ``obj.collaterals`` as a tuple of metric names (empty when absent); a
    ValueError for a single string (``effects="recovered"`` would be read as the metrics ``r``, ``e``,
    ``c``, …) or anything but names."""
    value = getattr(obj, attr, ())
    name = getattr(obj, "name", None) or getattr(obj, "__name__", None) or type(obj).__name__
    if isinstance(value, (str, bytes)):
        raise ValueError(f"Analysis {name!r}: {attr}={value!r} is one string; {attr} is a tuple of metric names, "
                         f"e.g. {attr}=({value!r},) (note the comma).")
    try:
        names = tuple(value or ())
    except TypeError:
        names = None
    if names is None or not all(isinstance(m, str) for m in names):
        raise ValueError(f"Analysis {name!r}: {attr}={value!r}; {attr} is a tuple of metric names (strings), "
                         f"e.g. ('recovered',), or () for none.")
    return names


class FunctionAnalysis:
    """An analysis from a callable ``fn(model, task) -> dict[str, float]``, or from an object that
    lacks part of the protocol: missing ``setup`` does nothing, missing ``effects``/``collaterals``
    are empty, a missing ``name`` is the function's ``__name__`` (or the object's class name).

    Args:
        fn: the function, or the callable object (its ``setup``, ``effects`` and ``collaterals`` are
            used where it has them).
        name: the analysis's name in the table (default: as above).
    """

    def __init__(self, fn: Any, name: str | None = None) -> None:
        if not callable(fn):
            raise ValueError(f"FunctionAnalysis(fn={fn!r}): fn must be callable as fn(model, task) -> dict.")
        self.fn = fn
        default = getattr(fn, "name", None) or getattr(fn, "__name__", None) or type(fn).__name__
        self.name = str(name if name is not None else default)
        self.effects = declared_metrics(fn, "effects")
        self.collaterals = declared_metrics(fn, "collaterals")

    def setup(self, model: Any, task: Any) -> None:
        setup = getattr(self.fn, "setup", None)
        if callable(setup):
            setup(model, task)

    def __call__(self, model: Any, task: Any) -> dict[str, float]:
        return self.fn(model, task)

    def __repr__(self) -> str:
        return f"FunctionAnalysis({self.fn!r}, name={self.name!r})"


def wrap_analysis(obj: Any) -> Analysis:
    """``obj`` as an :class:`Analysis`: returned as it is when it follows the protocol, wrapped in a
    :class:`FunctionAnalysis` when it is a function or a callable object lacking ``setup``,
    ``effects``, ``collaterals`` or ``name``; a ValueError for anything else."""
    if isinstance(obj, Analysis):
        declared_metrics(obj, "effects"), declared_metrics(obj, "collaterals")
        return obj
    if callable(obj) and not isinstance(obj, type):
        return FunctionAnalysis(obj)
    what = f"the class {obj.__name__}; pass an instance, {obj.__name__}(...)" if isinstance(obj, type) else \
        f"a {type(obj).__name__}"
    raise ValueError(
        f"{obj!r} is not an Analysis ({what}): give an object with `__call__(model, task) -> dict[str, float]` "
        "(optionally `name`, `setup(model, task)`, `effects`, `collaterals`), or a function "
        "fn(model, task) -> dict[str, float]."
    )
