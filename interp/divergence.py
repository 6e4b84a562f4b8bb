"""The behavioural divergence from the trained weights w0, and :class:`DivergenceMeter`, which measures it.

Bushnaq et al. 2024 ("Using degeneracy in the loss landscape for mechanistic interpretability")
compare a model's outputs at weights w with its outputs at w0, D(f_w(x), f_w0(x)), with D one of

- ``"kl"``: KL(p_w0 ‖ p_w) of the next-token distributions, averaged over the scored tokens
  (positions ``t − 1`` predicting a token ``t`` with ``target_mask[t] = 1``; without a target mask
  ``attention_mask``, else every position). Units "KL nats/token".
- ``"mse"``: for a model without an LM head (e.g. MiniLM), the squared change of the final hidden
  state (``resid_post`` of the last block; ``attention_mask`` positions), averaged over positions
  and divided by the mean squared norm at w0, s = mean_t ‖h_w0(x)_t‖²: units "normalised MSE".

This module holds the forwards and masks D is computed from, the reference outputs at w0
(``_Outputs``, shared with the behavioural objective of :mod:`interp.objectives`) and
:class:`DivergenceMeter`: the divergence on one fixed evaluation batch at any weights, the degradation
axis that exists for every model, with or without a loss.

Example::

    >>> import torch
    >>> from interp.divergence import DivergenceMeter
    >>> model = torch.nn.Sequential(torch.nn.Embedding(5, 5))      # logits = embedding rows
    >>> batch = {"input_ids": torch.tensor([[0, 1, 2, 3]])}
    >>> meter = DivergenceMeter(model, batch, kind="kl")
    >>> meter(model), meter.units
    (0.0, 'KL nats/token')
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch

from interp.checks import check_number
from interp.models import ModelCall, device_of

if TYPE_CHECKING:  # pragma: no cover
    from interp.tasks import Task

log = logging.getLogger(__name__)

__all__ = ["DivergenceMeter", "DIVERGENCE_UNITS"]

DIVERGENCE_UNITS = {"kl": "KL nats/token", "mse": "normalised MSE"}

_KINDS = ("auto", "kl", "mse")
Forward = Callable[[torch.nn.Module, Mapping[str, torch.Tensor]], torch.Tensor]


# ----------------------------------------------------------------------------------- forwards
def _is_bridge(model: Any) -> bool:
    return hasattr(model, "hook_dict") and hasattr(getattr(model, "cfg", None), "n_layers")


def _check_ids(model: Any, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    if "input_ids" not in batch:
        raise ValueError(
            f"batch has columns {sorted(batch)}, no 'input_ids': give token ids [batch, pos], or pass "
            "forward=fn(model, batch) for a model that takes other inputs."
        )
    ids = batch["input_ids"]
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.is_floating_point():
        raise ValueError(
            f"batch['input_ids'] must be a [batch, pos] integer tensor, got "
            f"{tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__}"
            f"{' ' + str(ids.dtype) if isinstance(ids, torch.Tensor) else ''}."
        )
    d_vocab = getattr(getattr(model, "cfg", None), "d_vocab", None)
    if isinstance(d_vocab, int) and d_vocab > 0 and ids.numel() and (ids.min() < 0 or ids.max() >= d_vocab):
        bad = int(ids.min()) if ids.min() < 0 else int(ids.max())
        raise ValueError(
            f"batch['input_ids'] holds token id {bad}, outside the model's vocabulary [0, {d_vocab}): "
            "were the ids made with another tokenizer?"
        )
    return ids


def _forward_kwargs(model: Any, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if _is_bridge(model) and "attention_mask" in batch:
        return {"attention_mask": batch["attention_mask"].to(device_of(model))}
    return {}


def _logits(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The model's next-token logits ``[batch, pos, vocab]`` on ``batch['input_ids']``."""
    ids = _check_ids(model, batch)
    out = model(ids.to(device_of(model)).long(), **_forward_kwargs(model, batch))
    return out if isinstance(out, torch.Tensor) else out.logits


def _final_hidden(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``resid_post`` of the last block ``[batch, pos, d_model]`` (differentiable)."""
    if not _is_bridge(model):
        raise ValueError(
            f"kind='mse' reads the final hidden state of a TransformerBridge; {type(model).__name__} "
            "is not one: pass forward=fn(model, batch) returning the outputs to compare."
        )
    import hooks

    ids = _check_ids(model, batch)
    point = hooks.resid_post(model.cfg.n_layers - 1)
    acts = hooks.capture(model, ids.to(device_of(model)).long(), [point], detach=False,
                         **_forward_kwargs(model, batch))
    return acts[point]


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float64 else x.float()


def _kl_mask(batch: Mapping[str, torch.Tensor], shape: torch.Size) -> torch.Tensor:
    """[batch, pos-1] bool: logits at t-1 are scored when token t is (target mask, else attention)."""
    for col in ("target_mask", "attention_mask"):
        if col in batch:
            m = batch[col]
            if tuple(m.shape) != tuple(shape):
                raise ValueError(f"batch[{col!r}] has shape {tuple(m.shape)}, input_ids {tuple(shape)}.")
            return m[:, 1:].bool()
    return torch.ones(shape[0], shape[1] - 1, dtype=torch.bool, device=_batch_device(batch))


def _batch_device(batch: Mapping[str, torch.Tensor]) -> torch.device | None:
    """Where the batch's token ids are (``None``: the default device), so masks built for it live there."""
    ids = batch.get("input_ids")
    return ids.device if isinstance(ids, torch.Tensor) else None


def _mse_mask(batch: Mapping[str, torch.Tensor], out: torch.Tensor) -> torch.Tensor:
    """Bool mask over the output's leading ``[batch, pos]`` (or ``[batch]``) axes."""
    lead = out.shape[:-1] if out.dim() > 1 else out.shape
    if "attention_mask" in batch and out.dim() == 3 and tuple(batch["attention_mask"].shape) == tuple(lead):
        return batch["attention_mask"].bool()
    return torch.ones(lead, dtype=torch.bool, device=_batch_device(batch))


def _resolve_kind(kind: str, batch: Mapping[str, torch.Tensor] | None, has_loss: bool | None,
                  model: Any = None) -> tuple[str, str]:
    """``(kind, why)``: the divergence to use and, for ``"auto"``, why it was chosen."""
    if not isinstance(kind, str) or kind not in _KINDS:
        raise ValueError(f"kind={kind!r}: use 'kl' (LM head), 'mse' (final hidden state) or 'auto'.")
    if kind != "auto":
        return kind, f"kind={kind!r} was asked for"
    if model is not None:
        from interp.models import _lm_head_problem

        problem = _lm_head_problem(model)
        if problem is not None:
            return "mse", f"kind='auto' chose 'mse': the model has no language-model head ({problem})"
    if has_loss is not None:
        return ("kl", "kind='auto' chose 'kl': the task has a next-token loss") if has_loss else (
            "mse", "kind='auto' chose 'mse': the task has no next-token loss (has_loss=False)")
    if batch is not None and "target_mask" in batch:
        return "kl", "kind='auto' chose 'kl': the data has a target_mask"
    return "mse", "kind='auto' chose 'mse': the data has no target_mask"


def _check_split(data: Any, split: Any, owner: str) -> None:
    if split not in data.dataset:
        splits = sorted(data.dataset.keys())
        raise ValueError(f"{owner}(split={split!r}): task {data.name!r} has no split {split!r}; it has "
                         f"{splits}. Use e.g. split={splits[0]!r}.")


# ------------------------------------------------------------------------------- references
class _Outputs:
    """What D compares, for one kind: reference values at w0 over scored positions, and the
    divergence of new outputs from them."""

    def __init__(self, kind: str, forward: Forward | None) -> None:
        self.kind = kind
        self.forward = forward

    def outputs(self, model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(scored outputs ``[n_scored, features]``, mask) at the model's current weights."""
        if self.kind == "kl":
            logits = self.forward(model, batch) if self.forward is not None else _logits(model, batch)
            # the mask stays where the batch is (the sampler's batches are on the CPU): its integer
            # indices are then found without a device-to-host sync and index the logits on any device
            mask = _kl_mask(batch, logits.shape[:2])
            logp = torch.log_softmax(_at_least_float32(logits[:, :-1]), dim=-1)
            return logp[mask.nonzero(as_tuple=True)], mask   # integer indices: works under vmap
        out = self.forward(model, batch) if self.forward is not None else _final_hidden(model, batch)
        out = _at_least_float32(out)
        if out.dim() == 1:
            out = out[:, None]
        mask = _mse_mask(batch, out)
        return out[mask.nonzero(as_tuple=True)], mask

    def scored_outputs(self, model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The scored outputs alone (what ``functional_call`` evaluates at w0, via ``ModelCall``)."""
        return self.outputs(model, batch)[0]

    def divergence(self, new: torch.Tensor, ref: torch.Tensor, scale: float) -> torch.Tensor:
        """Mean over scored positions of D(new, ref) (``ref`` at w0)."""
        if new.shape[0] == 0:
            raise ValueError("the batch has no scored positions (all masks zero); nothing to compare.")
        if self.kind == "kl":
            # Σ_v p0 (log p0 − log p): exactly 0 where the log-probs are identical
            return (ref.exp() * (ref - new)).sum(-1).mean()
        return ((new - ref) ** 2).sum(-1).mean() / scale


class DivergenceMeter:
    """The behavioural divergence from w0 on one fixed batch, measured at the model's current weights.

    Built at w0: captures the reference outputs on ``batch``; ``meter(model)`` is then the mean
    divergence D(f_w, f_w0) over the batch's scored positions (exactly 0.0 at w0).

    Args:
        model: the model at its trained weights w0.
        batch: ``{"input_ids": [batch, pos], ...}``; ``target_mask`` / ``attention_mask`` select the
            scored positions (see the module docstring).
        kind: ``"kl"`` (LM head: KL(p_w0 ‖ p_w) per scored token), ``"mse"`` (final hidden state:
            normalised mean squared change) or ``"auto"``: ``"kl"`` when ``has_loss`` is true, or when
            ``has_loss`` is ``None`` and the batch has a ``target_mask``; else ``"mse"``.
            :meth:`for_task` decides by ``task.has_loss``.
        has_loss: whether the task the batch comes from has a next-token loss (``None``: unknown).
        forward: optional ``fn(model, batch) -> outputs`` replacing the default forward (logits for
            ``"kl"``, final hidden state for ``"mse"``).
        batch_size: rows per forward (bounds the logits in memory: rows × pos × d_vocab floats).
        reference: ``"stored"`` keeps f_w0's outputs (for ``"kl"``: n_scored × d_vocab floats, e.g.
            256 rows × 128 tokens of GPT-2 ≈ 6.6 GB); ``"recompute"`` keeps a copy of w0 instead and
            evaluates f_w0 with ``torch.func.functional_call`` at each call (twice the forwards);
            ``"auto"`` (default): stored when under ``max_reference_bytes``, else recompute.
        max_reference_bytes: the limit for stored references (default 1 GiB).
    """

    def __init__(self, model: torch.nn.Module, batch: Mapping[str, torch.Tensor], kind: str = "auto",
                 *, has_loss: bool | None = None, forward: Forward | None = None, batch_size: int = 64,
                 reference: str = "auto", max_reference_bytes: int = 1 << 30) -> None:
        if not isinstance(batch, Mapping) or not batch:
            raise ValueError(f"batch={type(batch).__name__}: give a non-empty dict of tensors.")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}: must be a positive integer (rows per forward).")
        if reference not in ("auto", "stored", "recompute"):
            raise ValueError(f"reference={reference!r}: use 'stored', 'recompute' or 'auto'.")
        self.kind, self.kind_reason = _resolve_kind(kind, batch, has_loss, model)
        log.info("DivergenceMeter: %s", self.kind_reason)
        if self.kind == "kl" and forward is None:   # "kl" reads logits: refuse a model without a head
            from interp.models import check_lm_head
            check_lm_head(model, "DivergenceMeter with kind='kl' (KL of next-token distributions)")
        self.units = DIVERGENCE_UNITS[self.kind]
        self.batch = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
        n = len(next(iter(self.batch.values())))
        self._chunks = [{k: v[i : i + batch_size] for k, v in self.batch.items()}
                        for i in range(0, n, batch_size)]
        self._impl = _Outputs(self.kind, forward)
        refs: list[torch.Tensor] = []
        sq_sum, count, mode = 0.0, 0, reference
        with torch.no_grad():
            for i, chunk in enumerate(self._chunks):
                ref, _ = self._impl.outputs(model, chunk)
                if i == 0 and mode == "auto":
                    need = ref.numel() * ref.element_size() * n / max(1, len(next(iter(chunk.values()))))
                    mode = "stored" if need <= max_reference_bytes else "recompute"
                if mode == "stored":
                    refs.append(ref.detach())
                sq_sum += float((ref.double() ** 2).sum())
                count += ref.shape[0]
        if count == 0:
            raise ValueError("DivergenceMeter: the batch has no scored positions (all masks zero).")
        self.mode = mode
        self._refs = refs if mode == "stored" else None
        self._w0 = ({k: p.detach().clone() for k, p in model.named_parameters()}
                    if mode == "recompute" else None)
        self._scale = 1.0
        if self.kind == "mse":
            self._scale = sq_sum / count
            if not math.isfinite(self._scale) or self._scale <= 0:
                raise ValueError(
                    f"DivergenceMeter: the final hidden state has mean squared norm {self._scale} at w0; "
                    "cannot normalise the MSE by it."
                )

    @classmethod
    def for_task(cls, model: torch.nn.Module, task: Task, eval_rows: int = 64, split: str = "test",
                 kind: str = "auto", **kwargs: Any) -> DivergenceMeter:
        """A meter on the first ``eval_rows`` rows of ``task``'s ``split``; ``"auto"`` picks ``"kl"`` when
        ``task.has_loss`` else ``"mse"``."""
        check_number("DivergenceMeter.for_task", "eval_rows", eval_rows, integer=True, minimum=1,
                     fix="Evaluation rows: e.g. eval_rows=64.")
        _check_split(task, split, "DivergenceMeter.for_task")
        cols = tuple(c for c in ("input_ids", "target_mask", "attention_mask")
                     if c in task.dataset[split].column_names)
        batch = task.tensors(split, rows=eval_rows, columns=cols)
        return cls(model, batch, kind, has_loss=bool(getattr(task, "has_loss", True)), **kwargs)

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module) -> float:
        total, count = 0.0, 0
        for i, chunk in enumerate(self._chunks):
            new, _ = self._impl.outputs(model, chunk)
            if self._refs is not None:
                ref = self._refs[i].to(new.device)
            else:
                ref = torch.func.functional_call(ModelCall(model, self._impl.scored_outputs), {
                    f"model.{k}": v for k, v in self._w0.items()}, (chunk,))
            total += float(self._impl.divergence(new, ref, self._scale)) * new.shape[0]
            count += new.shape[0]
        return total / count

    def __repr__(self) -> str:
        eval_rows = len(next(iter(self.batch.values())))
        return f"DivergenceMeter(kind={self.kind!r}, eval_rows={eval_rows}, units={self.units!r}, reference={self.mode!r})"
