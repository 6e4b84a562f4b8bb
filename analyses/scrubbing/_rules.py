"""Causal-scrubbing resampling rules: which inputs an interpretation treats as interchangeable.

An :class:`Agree` rule on a node of a hypothesis (Chan et al. 2022, "Causal Scrubbing", Redwood
Research) says on which inputs the node's interpretation takes the same value: the parent's own
input (:meth:`Agree.exact`), any input (:meth:`Agree.unconditional`), inputs with equal values of a
function (:meth:`Agree.on`), of the token at ``t + offset`` (:meth:`Agree.token_at`, resampled per
position) or of a dataset column (:meth:`Agree.column`). :class:`QueryOffset` names a key position
relative to the query inside a head's ``k``/``v`` reading.

Example::

    >>> from analyses.scrubbing import Agree, QueryOffset
    >>> Agree.token_at(-1).name, Agree.column("period").per_position, str(QueryOffset(-1))
    ('token@-1', False, 'q-1')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from interp.checks import check_choice

__all__ = ["Agree", "AgreeFn", "EXACT", "UNCONDITIONAL", "QueryOffset"]

_KINDS = ("exact", "unconditional", "function")


@dataclass(frozen=True)
class QueryOffset:
    """A key position relative to the query: ``t + offset`` for the query at position ``t``
    (``QueryOffset(-1)``: the previous token; ``QueryOffset(0)``: the query's own position). Valid
    in the ``k`` and ``v`` readings of a :class:`Head`, which each query reads at every key position."""

    offset: int

    def __post_init__(self) -> None:
        if isinstance(self.offset, bool) or not isinstance(self.offset, int):
            raise ValueError(f"QueryOffset(offset={self.offset!r}): offset must be an int, e.g. -1.")

    def __str__(self) -> str:
        return f"q{self.offset:+d}" if self.offset else "q"


AgreeFn = Callable[[dict[str, torch.Tensor]], torch.Tensor]
"""``fn(columns) -> values``: ``columns`` maps the task's numeric columns to tensors ``[rows, ...]``;
values are integers ``[rows]`` (one value per sequence) or ``[rows, pos]`` (one per position)."""


@dataclass(frozen=True, eq=False)
class Agree:
    """How the input of a node may be resampled: which inputs the interpretation treats as equal.

    Build with the class methods: :meth:`exact` (the parent's input itself), :meth:`unconditional`
    (any input), :meth:`on` (any input whose function value equals the parent input's),
    :meth:`token_at` (same token at position ``t + offset``; resampled per position) and
    :meth:`column` (same value of a dataset column, e.g. ``period``).
    """

    name: str
    kind: Literal["exact", "unconditional", "function"] = "function"
    fn: AgreeFn | None = None
    per_position: bool = False
    offset: int | None = field(default=None, repr=False)  # token_at's offset (≥ 1: reads the target)

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            check_choice("Agree", "kind", self.kind, _KINDS)
        if (self.kind == "function") != callable(self.fn):
            raise ValueError(
                f"Agree {self.name!r}: kind={self.kind!r} needs "
                + ("a callable fn(columns) -> values; use Agree.on(fn, name)." if self.kind == "function"
                   else "fn=None; use Agree.exact() or Agree.unconditional().")
            )
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Agree.name={self.name!r}: give a short non-empty description.")

    @classmethod
    def exact(cls) -> Agree:
        """The node sees exactly its parent's input (no resampling)."""
        return cls("exact", "exact")

    @classmethod
    def unconditional(cls) -> Agree:
        """The node may see any input of the dataset (one per sequence)."""
        return cls("unconditional", "unconditional")

    @classmethod
    def on(cls, fn: AgreeFn, name: str, per_position: bool = False) -> Agree:
        """Inputs with the same value of ``fn`` are interchangeable.

        Args:
            fn: ``fn(columns) -> values`` with ``columns`` the task's numeric columns as tensors
                ``[rows, ...]``; integer values ``[rows]`` (``per_position=False``) or ``[rows, pos]``.
            name: a short description for reports (``"same period"``).
            per_position: values are per position; each position then gets its own resampled
                sequence (treeified per position), agreeing with the parent's at that position.
        """
        return cls(name, "function", fn, per_position)

    @classmethod
    def token_at(cls, offset: int = 0, column: str = "input_ids") -> Agree:
        """Same token at position ``t + offset`` for every position ``t`` (e.g. ``-1``: previous token).

        Positions where ``t + offset`` is outside the sequence carry the value −1 (any input).
        ``offset ≥ 1`` reads the token the model predicts at ``t`` (the target): a hypothesis using
        it gets a :class:`VacuousRuleWarning`.
        """
        if not isinstance(offset, int) or isinstance(offset, bool):
            raise ValueError(f"Agree.token_at(offset={offset!r}): offset must be an int, e.g. -1.")

        def fn(columns: dict[str, torch.Tensor]) -> torch.Tensor:
            ids = columns[column].long()
            out = torch.full_like(ids, -1)
            n = ids.shape[1]
            lo, hi = max(0, -offset), min(n, n - offset)
            if lo < hi:
                out[:, lo:hi] = ids[:, lo + offset : hi + offset]
            return out

        return cls(f"token@{offset:+d}", "function", fn, True, offset)

    @classmethod
    def column(cls, name: str) -> Agree:
        """Same value of the dataset column ``name`` (one value per sequence, e.g. ``period``)."""
        return cls(f"same {name}", "function", lambda cols: cols[name], False)


EXACT = Agree.exact()
UNCONDITIONAL = Agree.unconditional()
