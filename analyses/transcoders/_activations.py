"""What a transcoder reads and imitates: block l's MLP input and output on a task's tokens.

:func:`mlp_activations` captures x = ``blocks.{l}.mlp.hook_in`` (after LayerNorm, γ/β applied) and
y = ``blocks.{l}.hook_mlp_out`` in one forward and keeps the used tokens (:func:`token_mask`);
:class:`ActivationBuffer` streams them from the train split through a shuffling buffer for training
(tokens of one sequence spread over many steps, as in Bricken et al. 2023, "Towards
Monosemanticity"). Training, evaluation and inspection all read activations through this module.

Example::

    >>> import torch
    >>> from analyses.transcoders import token_mask
    >>> token_mask({"input_ids": torch.zeros(2, 4, dtype=torch.long)}, (1, -1)).sum().item()
    4
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor

import hooks

__all__ = ["ActivationBuffer", "token_mask", "mlp_activations"]


def token_mask(data: dict[str, Tensor], positions: Any) -> Bool[Tensor, "rows pos"]:
    """Which tokens of a batch are used: the selected ``positions`` (``"all"`` or a tuple), and only
    real tokens where the task has an ``attention_mask``."""
    ids = data["input_ids"]
    if positions == "all":
        mask = torch.ones(ids.shape, dtype=torch.bool)
    else:
        n = ids.shape[1]
        bad = [p for p in positions if not -n <= p < n]
        if bad:
            raise ValueError(f"positions={positions!r}: {bad} outside sequences of length {n}.")
        mask = torch.zeros(ids.shape, dtype=torch.bool)
        mask[:, list(positions)] = True
    if "attention_mask" in data:
        mask &= data["attention_mask"].bool()
    return mask


@torch.no_grad()
def mlp_activations(
    model: Any, data: dict[str, Tensor], layer: int, positions: Any = "all"
) -> tuple[Float[Tensor, "tokens d_in"], Float[Tensor, "tokens d_out"]]:
    """(MLP input, MLP output) of block ``layer`` on a batch of task rows, flattened to the used tokens.

    Input is ``blocks.{l}.mlp.hook_in`` (after LayerNorm, γ/β applied), output ``blocks.{l}.hook_mlp_out``.
    """
    from interp.models import device_of

    device = device_of(model)
    points = [hooks.mlp_in(layer), hooks.mlp_out(layer)]
    kwargs = {"attention_mask": data["attention_mask"].to(device)} if "attention_mask" in data else {}
    acts = hooks.capture(model, data["input_ids"].long().to(device), points, **kwargs)
    mask = token_mask(data, positions).to(acts[points[0]].device)
    return acts[points[0]][mask].float(), acts[points[1]][mask].float()


class ActivationBuffer:
    """An endless, deterministic stream of ``(x, y)`` token batches from a task's train split.

    Rows are read in a shuffled order (``Task.batches`` with seed ``seed + epoch``), pushed through
    the model ``rows_per_forward`` at a time, and their tokens' activations collected until the buffer
    holds ``buffer_tokens``; the buffer is then shuffled (its own generator, seeded by ``seed``) and
    its first half is served in batches of ``batch_size`` before it is refilled. Tokens of one
    sequence are thus spread over many steps.
    """

    def __init__(self, model: Any, task: Any, layer: int, *, batch_size: int, buffer_tokens: int,
                 rows_per_forward: int, positions: Any = "all", seed: int = 0, split: str = "train"):
        self.model, self.task, self.layer = model, task, layer
        self.batch_size, self.buffer_tokens = batch_size, buffer_tokens
        self.rows_per_forward, self.positions, self.seed, self.split = rows_per_forward, positions, seed, split
        self.gen = torch.Generator().manual_seed(seed)
        self.epoch = 0
        self._rows = self._row_batches()
        self.x: Tensor | None = None
        self.y: Tensor | None = None

    def _row_batches(self) -> Iterator[dict[str, Tensor]]:
        while True:
            for batch in self.task.batches(self.split, self.rows_per_forward, seed=self.seed + 1009 * self.epoch):
                yield batch
            self.epoch += 1

    def _fill(self) -> None:
        xs = [] if self.x is None else [self.x]
        ys = [] if self.y is None else [self.y]
        have = sum(len(x) for x in xs)
        while have < self.buffer_tokens:
            x, y = mlp_activations(self.model, next(self._rows), self.layer, self.positions)
            if len(x) == 0:
                raise ValueError(f"positions={self.positions!r} selects no tokens of the task's rows.")
            xs.append(x)
            ys.append(y)
            have += len(x)
        x, y = torch.cat(xs), torch.cat(ys)
        perm = torch.randperm(len(x), generator=self.gen).to(x.device)
        self.x, self.y = x[perm], y[perm]

    def __iter__(self) -> Iterator[tuple[Float[Tensor, "batch d_in"], Float[Tensor, "batch d_out"]]]:
        return self

    def __next__(self) -> tuple[Float[Tensor, "batch d_in"], Float[Tensor, "batch d_out"]]:
        if self.x is None or len(self.x) < max(self.buffer_tokens // 2, self.batch_size):
            self._fill()
        assert self.x is not None and self.y is not None
        b = self.batch_size
        x, y = self.x[:b], self.y[:b]
        self.x, self.y = self.x[b:], self.y[b:]
        return x, y
