"""Posterior objectives and the behavioural divergence from the trained weights w0.

What a degradation samples on is its *objective*, separate from the task the analyses read. Besides
a task's own next-token loss (:class:`CorpusLoss` wraps any text :class:`~interp.tasks.Task`), this
module has the **behavioural loss** of Bushnaq et al. 2024 ("Using degeneracy in the loss landscape
for mechanistic interpretability"),

    L_B(w) = E_x D(f_w(x), f_w0(x)),

with D one of

- ``"kl"``: KL(p_w0 ‖ p_w) of the next-token distributions, averaged over the scored tokens
  (positions ``t − 1`` predicting a token ``t`` with ``target_mask[t] = 1``; without a target mask
  ``attention_mask``, else every position). Units "KL nats/token".
- ``"mse"``: for a model without an LM head (e.g. MiniLM), the squared change of the final hidden
  state (``resid_post`` of the last block; ``attention_mask`` positions), averaged over positions
  and divided by the mean squared norm at w0, s = mean_t ‖h_w0(x)_t‖²: units "normalised MSE" (a
  value of 0.01 is a change of 10% of the hidden state's RMS norm). ``normalise=False`` leaves out
  s ("squared error").

``"kl"`` needs next-token logits: on a model without a language-model head (MiniLM: its bridge's head
is randomly initialised) it is an error, and ``"auto"`` picks ``"mse"`` there, saying why in
``kind_reason`` (and the log).

Both are 0 with zero gradient at w0, so a tempered posterior around w0 is localised by the
objective itself. For a deep linear network fitted exactly, the squared-error behavioural loss is
the population loss (up to the input covariance), so Aoyagi's learning coefficient applies.

:class:`interp.divergence.DivergenceMeter` measures the same divergence on one fixed evaluation batch at
any weights: the degradation axis that exists for every model, with or without a loss.

Objectives follow the :class:`Objective` protocol: ``name``, ``units``, ``prepare(model)`` (once at
w0), ``tensors()`` (the rows minibatches are drawn from) and ``loss(model, batch)``.

Example::

    >>> from interp.objectives import Objective, as_objective
    >>> class Quadratic:                 # an objective of one's own: the protocol's five members
    ...     name, units = "quadratic", "squared norm"
    ...     def prepare(self, model): pass
    ...     def tensors(self): return {"x": torch.ones(4, 1)}
    ...     def loss(self, model, batch): return (model(batch["x"]) ** 2).mean()
    >>> isinstance(Quadratic(), Objective) and as_objective(Quadratic()).name
    'quadratic'
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

from interp.divergence import Forward, _check_split, _Outputs, _resolve_kind
from interp.models import ModelCall

if TYPE_CHECKING:  # pragma: no cover
    from interp.tasks import Task

log = logging.getLogger(__name__)

__all__ = ["Objective", "Behavioural", "CorpusLoss", "as_objective", "ROW_COLUMN"]

ROW_COLUMN = "row"
"""The column of :meth:`Behavioural.tensors` holding each row's index into the stored references."""



@runtime_checkable
class Objective(Protocol):
    """What a tempered posterior samples on (any object with these members)."""

    name: str
    units: str

    def prepare(self, model: torch.nn.Module) -> None:
        """Called once at w0 before any sampling (e.g. to capture reference outputs)."""

    def tensors(self) -> dict[str, torch.Tensor]:
        """The rows minibatches are drawn from (equal first dimension)."""

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Differentiable scalar loss on ``batch``, a row subset of :meth:`tensors`."""


def _check_rows(rows: Any, owner: str) -> None:
    if rows is not None and (isinstance(rows, bool) or not isinstance(rows, int) or rows < 1):
        raise ValueError(f"{owner}(rows={rows!r}): rows must be an integer >= 1 (how many rows, the first "
                         "ones), or None for all of them.")


# -------------------------------------------------------------------------------- objectives
class Behavioural:
    """The behavioural loss L_B(w) = E_x D(f_w(x), f_w0(x)) (Bushnaq et al. 2024) as an objective.

    Args:
        data: a :class:`~interp.tasks.Task` (its ``split`` rows, the columns ``input_ids``,
            ``target_mask``, ``attention_mask`` where present) or a dict of tensors with equal first
            dimension (e.g. ``{"x": inputs}`` with ``forward=``).
        kind: ``"kl"``, ``"mse"`` or ``"auto"`` (a Task: ``"kl"`` iff ``task.has_loss``; a dict:
            ``"kl"`` iff it has ``target_mask``).
        normalise: ``"mse"`` only: divide by the mean squared norm of the outputs at w0
            (units "normalised MSE"); ``False``: plain mean squared error ("squared error").
        forward: optional ``fn(model, batch) -> outputs`` (logits for ``"kl"``, anything ``[..., d]``
            for ``"mse"``), for models that are not TransformerBridges.
        split: which split of a Task.
        rows: how many rows (the first ``rows``; ``None``: all).
        batch_size: rows per forward when :meth:`prepare` captures the references.
        reference: ``"stored"``, ``"recompute"`` or ``"auto"`` (see Memory below).
        max_reference_bytes: the most bytes of stored references (``"auto"`` recomputes above it,
            ``"stored"`` raises).
        name: the objective's name in records (default ``behavioural-<kind>[<task name>]``).

    Memory (``reference``): ``"stored"`` keeps the w0 outputs at every scored position, float32
    (float64 outputs stay float64): for ``"kl"`` n_scored × d_vocab × 4 bytes, e.g. 64 rows × 32
    tokens of GPT-2 (d_vocab 50257) ≈ 0.4 GB, 256 × 128 ≈ 6.6 GB. ``"recompute"`` keeps a frozen copy
    of the parameters instead (w0: one model's worth of memory) and computes f_w0 on each minibatch
    with ``torch.func.functional_call``: one extra forward (no backward) per step. ``"auto"``
    (default): stored when it fits in ``max_reference_bytes`` (default 2 GiB), else recompute.

    ``tensors()`` carries a ``"row"`` column (:data:`ROW_COLUMN`), so ``loss(model, batch)`` finds the
    reference rows of any row subset.
    """

    def __init__(self, data: Task | Mapping[str, torch.Tensor], kind: str = "auto", *, normalise: bool = True,
                 forward: Forward | None = None, split: str = "train", rows: int | None = None,
                 batch_size: int = 32, reference: str = "auto", max_reference_bytes: int = 2 << 30,
                 name: str | None = None) -> None:
        _check_rows(rows, "Behavioural")
        if not isinstance(normalise, bool):
            raise ValueError(f"Behavioural(normalise={normalise!r}): normalise must be True (divide the MSE "
                             "by the mean squared norm at w0) or False (plain squared error).")
        if isinstance(data, Mapping):
            tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
            if not tensors:
                raise ValueError("data: a dict with no tensors; give e.g. {'input_ids': ids} or a Task.")
            has_loss, data_name = None, "data"
        elif hasattr(data, "dataset") and hasattr(data, "tensors"):
            _check_split(data, split, "Behavioural")
            cols = tuple(c for c in ("input_ids", "target_mask", "attention_mask")
                         if c in data.dataset[split].column_names)
            tensors = data.tensors(split, rows=rows, columns=cols)
            has_loss, data_name = bool(getattr(data, "has_loss", True)), data.name
        else:
            raise ValueError(f"data={type(data).__name__}: give an interp Task or a dict of tensors.")
        n = {len(v) for v in tensors.values()}
        if len(n) != 1 or 0 in n:
            raise ValueError(f"data: columns need one non-zero first dimension, got lengths {sorted(n)}.")
        if isinstance(data, Mapping) and rows is not None:
            tensors = {k: v[:rows] for k, v in tensors.items()}
        if ROW_COLUMN in tensors:
            raise ValueError(f"data already has a {ROW_COLUMN!r} column; rename it.")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}: must be a positive integer.")
        if reference not in ("auto", "stored", "recompute"):
            raise ValueError(f"reference={reference!r}: use 'stored' (keep f_w0's outputs), 'recompute' "
                             "(keep w0, one extra forward per step) or 'auto'.")
        self.reference = reference
        self.kind, self.kind_reason = _resolve_kind(kind, tensors, has_loss)
        log.info("Behavioural: %s", self.kind_reason)
        self._asked, self._forward = kind, forward
        self.normalise = bool(normalise)
        self.units = ("KL nats/token" if self.kind == "kl"
                      else "normalised MSE" if self.normalise else "squared error")
        self.name = name or f"behavioural-{self.kind}[{data_name}]"
        self.batch_size = batch_size
        self.max_reference_bytes = max_reference_bytes
        self._data = tensors
        self._n = next(iter(n))
        self._impl = _Outputs(self.kind, forward)
        self._ref: torch.Tensor | None = None
        self._index: torch.Tensor | None = None
        self._w0: dict[str, torch.Tensor] | None = None
        self._prepared = False
        self.mode: str | None = None      # "stored" or "recompute", decided by prepare()
        self._scale = 1.0

    def __len__(self) -> int:
        return self._n

    @torch.no_grad()
    def prepare(self, model: torch.nn.Module) -> None:
        """At w0, before sampling: store f_w0 on every row, or (``"recompute"``) a copy of w0; and the
        normalisation of ``"mse"``."""
        if self.kind == "kl" and self._forward is None:
            from interp.models import _lm_head_problem

            problem = _lm_head_problem(model)
            if problem is not None:
                fix = (" kind='auto' chose 'kl' because the task claims a next-token loss; build the task "
                       "from the model (Task.from_texts(texts, model)) or" if self._asked == "auto" else "")
                raise ValueError(
                    f"Behavioural({self.name!r}) with kind='kl' needs next-token logits, but the model has "
                    f"no language-model head: {problem}.{fix} use kind='mse' (the final hidden state)."
                )
        chunks = [{k: v[i : i + self.batch_size] for k, v in self._data.items()}
                  for i in range(0, self._n, self.batch_size)]
        self._check_depends_on_weights(model, chunks[0])
        out, mask = self._impl.outputs(model, chunks[0])
        per_row = out.numel() * out.element_size() / max(1, len(mask))    # bytes of references per row
        need = per_row * self._n
        mode = self.reference
        if mode == "auto":
            mode = "stored" if need <= self.max_reference_bytes else "recompute"
            if mode == "recompute":
                log.info("%s: w0 references would take about %.2g GB: recomputing them per step from "
                         "a copy of w0", self.name, need / 1e9)
        if mode == "stored" and need > self.max_reference_bytes:
            raise ValueError(
                f"Behavioural({self.name!r}): the stored w0 references need about {need / 1e9:.2g} GB, over "
                f"max_reference_bytes={self.max_reference_bytes}; use reference='recompute' (keeps a copy "
                "of w0, one extra forward per step), fewer rows or shorter texts."
            )
        self.mode = mode
        refs, masks, sq_sum, count = [], [], 0.0, 0
        for i, chunk in enumerate(chunks):
            if i:
                out, mask = self._impl.outputs(model, chunk)
            sq_sum += float((out.double() ** 2).sum())
            count += out.shape[0]
            if mode == "stored":
                refs.append(out.detach())
                masks.append(mask.cpu())
        if count == 0:
            raise ValueError(f"Behavioural({self.name!r}): no scored positions in the data.")
        if mode == "stored":
            mask = torch.cat(masks)
            index = torch.full(mask.shape, -1, dtype=torch.long)
            index[mask] = torch.arange(int(mask.sum()))
            self._ref, self._index, self._w0 = torch.cat(refs), index, None
        else:
            self._w0 = {k: p.detach().clone() for k, p in model.named_parameters()}
            self._ref = self._index = None
        self._prepared = True
        if self.kind == "mse" and self.normalise:
            self._scale = sq_sum / count
            if not math.isfinite(self._scale) or self._scale <= 0:
                raise ValueError(f"Behavioural({self.name!r}): outputs at w0 have mean squared norm "
                                 f"{self._scale}; use normalise=False.")

    def _check_depends_on_weights(self, model: torch.nn.Module, chunk: Mapping[str, torch.Tensor]) -> None:
        """The outputs must depend on the parameters (a ``forward`` returning a constant has no
        gradient: SGLD would fail deep inside autograd)."""
        if not any(p.requires_grad for p in model.parameters()):
            return
        with torch.enable_grad():
            out, _ = self._impl.outputs(model, {k: v[:1] for k, v in chunk.items()})
        if not isinstance(out, torch.Tensor) or not out.requires_grad:
            raise ValueError(
                f"Behavioural({self.name!r}): the outputs "
                f"{'of forward=' + getattr(self._forward, '__name__', 'fn') if self._forward else ''} do "
                "not depend on the model's parameters (no gradient: a constant, a detached tensor or a "
                "computation under torch.no_grad()), so the divergence cannot be sampled. Return the "
                "model's outputs, computed from model(...) with gradients on."
            )

    def tensors(self) -> dict[str, torch.Tensor]:
        """The rows, plus a ``"row"`` index column."""
        return {**self._data, ROW_COLUMN: torch.arange(self._n)}

    def loss(self, model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Mean D(f_w, f_w0) over the batch's scored positions (differentiable; 0 at w0)."""
        if not self._prepared:
            raise RuntimeError(f"Behavioural({self.name!r}): call prepare(model) at w0 before loss().")
        if ROW_COLUMN not in batch:
            raise ValueError(f"batch lacks the {ROW_COLUMN!r} column: draw batches from tensors().")
        new, mask = self._impl.outputs(model, batch)
        if self.mode == "recompute":
            with torch.no_grad():
                wrapper = ModelCall(model, self._impl.scored_outputs)
                ref = torch.func.functional_call(
                    wrapper, {f"model.{k}": v for k, v in self._w0.items()}, (batch,))
        else:
            rows = batch[ROW_COLUMN].to(self._index.device).long()
            mask = mask.to(self._index.device)
            ref = self._ref[self._index[rows][mask.nonzero(as_tuple=True)]].to(new.device)
        return self._impl.divergence(new, ref, self._scale)

    def __repr__(self) -> str:
        return f"Behavioural({self.name!r}, rows={self._n}, units={self.units!r})"


class CorpusLoss:
    """A text :class:`~interp.tasks.Task`'s next-token loss as an objective (units "nats/token").

    ``tensors()`` are the ``split`` rows' ``input_ids`` / ``target_mask`` / ``attention_mask``.
    """

    units = "nats/token"

    def __init__(self, task: Task, split: str = "train", name: str | None = None) -> None:
        if not getattr(task, "has_loss", False):
            raise ValueError(
                f"CorpusLoss: task {getattr(task, 'name', task)!r} has no next-token loss "
                "(has_loss=False); use Behavioural(task, kind='mse') instead."
            )
        _check_split(task, split, "CorpusLoss")
        self.task = task
        self.split = split
        self.name = name or task.name

    def prepare(self, model: torch.nn.Module) -> None:
        """Checks that the model has a next-token head (nothing to capture)."""
        from interp.models import check_lm_head

        check_lm_head(model, f"CorpusLoss({self.name!r})")

    def tensors(self) -> dict[str, torch.Tensor]:
        cols = tuple(c for c in ("input_ids", "target_mask", "attention_mask")
                     if c in self.task.dataset[self.split].column_names)
        return self.task.tensors(self.split, columns=cols)

    def loss(self, model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.task.loss(model, dict(batch))

    def __repr__(self) -> str:
        return f"CorpusLoss({self.name!r})"


def as_objective(target: Any) -> Any:
    """A Task as :class:`CorpusLoss`; an :class:`Objective` as it is; anything else: a ValueError
    (a callable ``loss(model)`` has no rows, so it stays a callable for the sampler)."""
    if isinstance(target, Objective):
        return target
    if hasattr(target, "dataset") and hasattr(target, "loss"):
        return CorpusLoss(target)
    raise ValueError(
        f"objective={type(target).__name__}: give a Task, an Objective (name, units, prepare, tensors, "
        "loss) such as Behavioural(...), or a callable loss(model) -> scalar tensor."
    )
