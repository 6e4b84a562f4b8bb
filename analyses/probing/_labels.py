"""Label specifications for probes: per-row and per-token labels computed from a task's columns.

Each is a callable ``f(data) -> labels`` (``[rows]`` or ``[rows, pos]`` with −1 where not probed)
usable as ``ProbeConfig(label=...)`` or as a Hewitt & Liang (2019) control *type*
(``ProbeConfig(control_type=...)``).

Example::

    >>> from analyses.probing import occurred_before
    >>> occurred_before(start=5, stop=16)
    occurred_before(start=5, stop=16)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Union

import torch
from jaxtyping import Float, Int
from torch import Tensor

__all__ = ["token_at", "occurred_before", "fourier_component", "token_class", "principal_split", "LabelSpec"]


class token_at:
    """Control-task type: the token id at the position given by a column (e.g. the subject noun)."""

    def __init__(self, column: str):
        self.column = column

    def __call__(self, data: dict[str, Tensor]) -> Int[Tensor, "rows"]:
        ids, pos = data["input_ids"], data[self.column].long()
        return ids[torch.arange(len(ids)), pos]

    def __repr__(self) -> str:
        return f"token_at({self.column!r})"


class occurred_before:
    """Per-token label: 1 where the current token occurred earlier in the sequence, else 0.

    Positions before ``start`` (e.g. BOS) and from ``stop`` on are not probed (label −1). In the
    induction organism a position ``t ≥ 1 + period`` is always a repeat, so probe the positions where
    position alone does not decide it (``start=5, stop=16`` for periods 4–14).
    """

    def __init__(self, start: int = 1, stop: int | None = None):
        self.start, self.stop = int(start), stop

    def __call__(self, data: dict[str, Tensor]) -> Int[Tensor, "rows pos"]:
        ids = data["input_ids"]
        same = ids[:, :, None] == ids[:, None, :]  # [b, t, s]
        earlier = torch.ones(ids.shape[1], ids.shape[1], dtype=torch.bool).tril(-1)
        y = (same & earlier).any(-1).long()
        y[:, : self.start] = -1
        if self.stop is not None:
            y[:, self.stop :] = -1
        return y

    def __repr__(self) -> str:
        return f"occurred_before(start={self.start}, stop={self.stop})"


class fourier_component:
    """Row label for modadd: ``1[cos(2πk·(a + b)/p) > 0]`` (the sign of one Fourier component)."""

    def __init__(self, k: int, p: int = 59):
        self.k, self.p = int(k), int(p)

    def __call__(self, data: dict[str, Tensor]) -> Int[Tensor, "rows"]:
        c = (data["a"] + data["b"]).double()
        return (torch.cos(2 * math.pi * self.k * c / self.p) > 0).long()

    def __repr__(self) -> str:
        return f"fourier_component(k={self.k}, p={self.p})"


class token_class:
    """Per-token label: the class ``classes[ids[t + offset]]`` of the token ``offset`` positions away.

    ``offset=0``: the current token; ``−1``: the previous token (what a previous-token head moves);
    ``−2``: the one before; ``+1``: the next token, which in the induction organism is the induction
    target (probe it with ``scored=True``: only positions whose next token is a scored target,
    ``target_mask[t + 1] = 1``). Positions before ``start``, positions whose source falls outside
    the sequence and tokens without a class (ids ≥ ``len(classes)``, e.g. BOS) are not probed (−1).
    ``classes`` is typically a two-way split of the vocabulary, e.g. :func:`principal_split`.
    """

    def __init__(self, classes: Int[Tensor, "vocab"], offset: int = 0, start: int = 1, scored: bool = False):
        self.classes = torch.as_tensor(classes).long()
        self.offset, self.start, self.scored = int(offset), int(start), bool(scored)
        if self.scored and self.offset != 1:
            raise ValueError(f"scored=True needs offset=1 (the next token is the target); got offset={offset}.")

    def __call__(self, data: dict[str, Tensor]) -> Int[Tensor, "rows pos"]:
        ids = data["input_ids"].long()
        length, o, v = ids.shape[1], self.offset, len(self.classes)
        src = torch.full_like(ids, -1)
        if o >= 0:
            src[:, : length - o] = ids[:, o:]
        else:
            src[:, -o:] = ids[:, : length + o]
        y = torch.where((src >= 0) & (src < v), self.classes[src.clamp(0, v - 1)], -1)
        y[:, : self.start] = -1
        if self.scored:
            if "target_mask" not in data:
                raise ValueError("scored=True needs a 'target_mask' column (a task with a next-token loss).")
            scored = torch.zeros_like(ids, dtype=torch.bool)
            scored[:, :-1] = data["target_mask"][:, 1:].bool()
            y = torch.where(scored, y, -1)
        return y

    def __repr__(self) -> str:
        return f"token_class(offset={self.offset}, start={self.start}, scored={self.scored})"


def principal_split(vectors: Float[Tensor, "vocab d"]) -> Int[Tensor, "vocab"]:
    """Two balanced classes of rows: above/below the median of their projection on the top principal
    component (e.g. of the token embedding ``W_E``): a vocabulary split the model can represent with
    one direction, unlike an arbitrary split of many tokens in few dimensions (Cover 1965)."""
    v = vectors.detach().float()
    v = v - v.mean(0)
    s = v @ torch.linalg.svd(v, full_matrices=False).Vh[0]
    return (s > s.median()).long()


LabelSpec = Union[str, Callable[[dict], Tensor]]
