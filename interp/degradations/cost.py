"""What a degradation's levels cost: the units a sweep's progress bar counts (:class:`Work`) and the
costs ``interp.plan`` predicts (:class:`PlanCosts`), with the defaults every degradation gets.

A sweep over levels ℓ = 1…L of a degradation does N_ℓ draws per level; the progress bar counts
*units* of work, by default one per draw, so its total is Σ_ℓ N_ℓ with N_ℓ from
``expected_draws(ℓ)`` (unknown when any N_ℓ is ``None``). A degradation whose draws cost unequal
work says so through its ``work(levels)`` member (the sampler counts SGLD steps, calibration pilots
included: ``interp.degradations.sgld_cost``). For ``interp.plan`` its ``plan_costs`` member returns
the seconds of its own work; the default, :func:`time_draws`, times one draw of the first level and
predicts T_draws = t_draw·Σ_ℓ N_ℓ (one draw per level where N_ℓ is unknown).

Example::

    >>> from interp.degradations import WeightNoise
    >>> work = WeightNoise(draws_per_level=3).work([0.1, 0.2])
    >>> work.unit, work.expected, work.total
    ('draw', [3, 3], 6)
    >>> work.advance(0, None)                    # a draw moves the bar by one unit
    1
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Work", "PlanCosts", "time_draws"]

log = logging.getLogger(__name__)


class Work:
    """The units of work a sweep's progress bar counts for one degradation: by default one unit
    (``"draw"``) per draw.

    ``expected[i]``: the units level ``i`` takes when nothing fails (``None``: unknown). A subclass
    overrides :meth:`started` (units done before the level's first draw, e.g. calibration; it may
    correct ``expected[i]`` once they are known) and :meth:`advance` (units one draw stands for).
    """

    #: what one unit is, as the progress bar says it
    unit = "draw"

    def __init__(self, expected: Sequence[int | None]) -> None:
        self.expected: list[int | None] = list(expected)

    @property
    def total(self) -> int | None:
        """Units of the whole sweep, or ``None`` when any level's is unknown."""
        return sum(self.expected) if all(n is not None for n in self.expected) else None  # type: ignore[arg-type]

    def started(self, index: int, draws: Any) -> int:
        """Level ``index`` yielded its first draw from the iterator ``draws``: the units done before
        it (none by default)."""
        return 0

    def advance(self, index: int, draw: Any) -> int:
        """Units one draw of level ``index`` stands for (one by default)."""
        return 1


@dataclass(frozen=True)
class PlanCosts:
    """A degradation's share of a planned sweep (``interp.plan``).

    Attributes:
        draws: draws of the whole sweep (each analysed once).
        parts: seconds of the degradation's own work, by part (``{"degradation draws": ...}``).
        counts: counts worth showing beside them (chains, steps, calibration rounds, ...).
        extra_max: seconds more in the worst case (e.g. every calibration taking its most rounds).
    """

    draws: int
    parts: dict[str, float]
    counts: dict[str, int] = field(default_factory=dict)
    extra_max: float = 0.0


def clock() -> float:
    """The clock every planned cost is measured with (seconds, monotonic)."""
    return time.perf_counter()


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``(fn(*args, **kwargs), seconds it took)``."""
    t = clock()
    out = fn(*args, **kwargs)
    return out, clock() - t


def time_draws(degradation: Any, model: Any, target: Any, levels: Sequence[Any],
               costs: dict[str, float]) -> PlanCosts:
    """The default ``plan_costs``: one draw of the first level timed (its iterator closed at once,
    so the weights are back at w0; the seconds put in ``costs["draw"]``), the same cost assumed for
    every draw of every level."""
    draws = degradation.draws(model, target, levels[0])
    try:
        t = clock()
        next(iter(draws), None)
        costs["draw"] = clock() - t
    finally:
        close = getattr(draws, "close", None)
        if callable(close):
            close()
    expected = [degradation.expected_draws(level) for level in levels]
    n = sum(1 if e is None else e for e in expected)
    if any(e is None for e in expected):
        log.warning("plan: %s does not say how many draws a level yields; one per level assumed.",
                    type(degradation).__name__)
    return PlanCosts(draws=n, parts={"degradation draws": costs["draw"] * n})
