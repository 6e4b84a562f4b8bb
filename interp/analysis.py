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
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["Analysis", "metric_kind"]


@runtime_checkable
class Analysis(Protocol):
    """What ``run_sweep`` needs of an analysis (see the module docstring)."""

    name: str
    effects: tuple[str, ...]
    collaterals: tuple[str, ...]

    def setup(self, model: Any, task: Any) -> None: ...

    def __call__(self, model: Any, task: Any) -> dict[str, float]: ...


def metric_kind(analysis: Analysis, metric: str) -> str:
    """``"effect"``, ``"collateral"`` or ``"other"`` for one of an analysis's metrics."""
    if metric in getattr(analysis, "effects", ()):
        return "effect"
    if metric in getattr(analysis, "collaterals", ()):
        return "collateral"
    return "other"
