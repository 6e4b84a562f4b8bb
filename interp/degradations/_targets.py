"""Loss targets of the degradations: what a sampler or a baseline measures its loss on, made uniform.

A target is one of three things: a :class:`~interp.tasks.Task` (the per-token mean next-token loss
of its train split, in nats/token), an object of the posterior-objective protocol
(``interp.objectives.Objective``: ``name``, ``units``, ``prepare(model)``, ``tensors()``,
``loss(model, batch)``), or a plain callable ``loss(model) -> scalar tensor``. :class:`SampledLoss`
gives all three one interface: an endless stream of minibatches (row subsets, reshuffled each epoch,
deterministic in the seed), a differentiable loss L_batch(w) for the SGLD drift
(Welling & Teh 2011: the minibatch gradient is an unbiased estimate of the full-data one when rows
are drawn uniformly) and a fixed evaluation batch whose loss each draw records. With ``autocast``
(``"bfloat16"`` or ``"float16"``) every loss it computes runs its forward under ``torch.autocast``:
matrix products in the low precision, the weights, gradients and update in their own dtype, the loss
returned in float32 at least (Micikevicius et al. 2018, "Mixed precision training").
:func:`objective_label` names a target and its units; :func:`describe_objective` gives the
address-free description that enters a sampler's configuration; :func:`check_objective` rejects what
is none of the three.

Example::

    >>> import torch
    >>> from interp.degradations._targets import SampledLoss, objective_label
    >>> w = torch.nn.Parameter(torch.tensor([3.0]))
    >>> def quadratic(model):
    ...     return 0.5 * (w ** 2).sum()
    >>> quadratic.units = "half squared norm"
    >>> objective_label(quadratic)[1]
    'half squared norm'
    >>> loss = SampledLoss(quadratic, batch_size=1, eval_rows=0)
    >>> loss.kind, loss.loss(None, None).item()
    ('callable', 4.5)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch

__all__ = [
    "AUTOCAST_DTYPES",
    "SampledLoss",
    "TASK_UNITS",
    "CALLABLE_UNITS",
    "check_objective",
    "describe_objective",
    "is_objective",
    "is_task",
    "objective_label",
]


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


#: the low-precision forward dtypes a sampler accepts (``TemperedPosterior(autocast=...)``).
AUTOCAST_DTYPES = ("bfloat16", "float16")


def _functorch_wrapped(t: torch.Tensor) -> bool:
    """Whether ``t`` is a torch.func transform's wrapper (vmap, grad), whose autograd flags are not its own."""
    check = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    return bool(check is not None and check(t))


class SampledLoss:
    """A loss target made uniform: minibatch stream, differentiable loss, fixed evaluation batch.

    ``target``: a :class:`~interp.tasks.Task` (minibatches of its train split; ``kind="task"``), an
    object of the objective protocol (``prepare(model)`` is called here, at the weights the model
    has now, then minibatches are row subsets of ``tensors()``; ``kind="rows"``), or a callable
    ``loss(model)`` (``kind="callable"``). ``name`` and ``units`` say what the loss is. ``autocast``:
    one of :data:`AUTOCAST_DTYPES` to run every forward under ``torch.autocast`` (``None``: as is).
    """

    def __init__(self, target: Any, batch_size: int, eval_rows: int, split: str = "train",
                 model: torch.nn.Module | None = None, autocast: str | None = None) -> None:
        self.target = target
        self.batch_size = batch_size
        self.autocast = None if autocast is None else getattr(torch, autocast)
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

    @contextlib.contextmanager
    def full_precision(self) -> Iterator[None]:
        """Every loss in the model's own dtype inside the block: for checks that compare two
        computations of the same loss, whose low-precision rounding would differ."""
        saved, self.autocast = self.autocast, None
        try:
            yield
        finally:
            self.autocast = saved

    @property
    def has_rows(self) -> bool:
        """Whether minibatches are row subsets (a Task or a protocol objective), not ``None``."""
        return self.kind != "callable"

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor] | None) -> torch.Tensor:
        if self.autocast is None:
            return self._loss(model, batch)
        device = next((p.device.type for p in model.parameters()), "cpu") if model is not None else "cpu"
        with torch.autocast(device, dtype=self.autocast):
            out = self._loss(model, batch)
        return out.float() if out.dtype in (torch.bfloat16, torch.float16) else out

    def _loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor] | None) -> torch.Tensor:
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
