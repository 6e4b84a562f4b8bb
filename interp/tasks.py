"""Tasks: the data a model is judged on, and its loss.

A :class:`Task` holds a ``datasets.DatasetDict`` with ``train`` and ``test`` splits. Every row has an
``input_ids`` sequence and, for tasks with a next-token loss, a ``target_mask`` of the same length:
``target_mask[t] = 1`` when token ``t`` is a scored target, predicted from the logits at ``t - 1``.
Other columns are labels and metadata (probe labels, induction periods, the values an interpretation
assigns). Padded rows carry an ``attention_mask`` (1 = real token; padding on the right).

Build a task from text with the model's tokenizer: :meth:`Task.from_texts`
(packed or padded rows), :meth:`Task.from_dataset` (a Hugging Face dataset, streaming too) and
:meth:`Task.from_pairs` (prompt/answer pairs; with wrong answers, :meth:`Task.evaluate` also reports
the mean logit difference). Given the model, they decide from it whether the task has a loss (a model
without a next-token head, such as MiniLM, gives ``has_loss=False``) and tokenise padded texts and
prompts as ``model.to_tokens`` does, BOS included; given a tokenizer only, as the tokenizer does.
Loss-based methods (:meth:`Task.loss`, :meth:`Task.evaluate`, :meth:`Task.logit_diff`) refuse a model
without a next-token head instead of reading its hidden states as logits.

Tasks from text (the rows are built in :mod:`interp._textrows`, the tokenizer helpers live in
:mod:`interp.tokenizing`):

- **Packed** (``pack=True``): the texts are joined, separated by the tokenizer's end-of-text token,
  and cut into rows of exactly ``max_length`` tokens (the last partial row is dropped); every token
  but each row's first is scored. Per-text columns cannot follow texts into packed rows.
- **Padded** (``pack=False``): one row per text, padded to the longest; the text's tokens after the
  first are scored. Extra per-text columns (probe labels, ``Agree`` columns) are kept.
- **Pairs** (IOI-style, Wang et al. 2022): each row is ``prompt + answer``; only the answer tokens
  are scored, so the loss is the answer's cross-entropy. With ``wrong_answers`` (single tokens) the
  rows also carry ``answer_id``, ``wrong_id`` and ``answer_pos``, and ``Task.evaluate`` reports the
  mean logit difference logit(answer) − logit(wrong) at the position predicting the answer.

Rows are split at random (``seed``) into ``test_fraction`` test rows and the rest train, or by group
(``group=COLUMN``: every row of a held-out value, a word, a template or a name, is a test row).

Tokens: given the model, padded texts and prompts are tokenised as ``model.to_tokens(text)`` tokenises
them, with the BOS it prepends (so ``answer_pos`` is ``model.to_tokens(prompt).shape[1]``); given a
tokenizer alone, as ``tokenizer(text)`` does. Packed texts are separated by the end-of-text token,
unless the tokenizer closes each text itself (BERT's ``[SEP]``): a BERT stream reads
``… [SEP] [CLS] …``, never ``[UNK]``. Given the model, the task has a loss only if the model has a
next-token head (:func:`interp.models.has_lm_head`).

The loss is the per-token mean cross-entropy over scored targets,

    L(w) = (1 / |S|) · Σ_{(b, t) ∈ S} −log softmax(f_w(x_b)_{t−1})[x_{b,t}],

the quantity the tempered-posterior sampler works with (``nbeta`` multiplies it).

Example::

    >>> import torch, datasets
    >>> from interp.tasks import Task
    >>> ids = [[0, 1, 2, 1, 2]] * 4
    >>> mask = [[0, 0, 0, 1, 1]] * 4
    >>> ds = datasets.Dataset.from_dict({"input_ids": ids, "target_mask": mask})
    >>> task = Task("toy", datasets.DatasetDict(train=ds, test=ds))
    >>> model = torch.nn.Sequential(torch.nn.Embedding(3, 3))   # logits = embedding rows
    >>> round(task.evaluate(model)["accuracy"], 2) <= 1.0
    True
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from interp.models import device_of

if TYPE_CHECKING:  # pragma: no cover
    import datasets

__all__ = ["Task"]

_SEQUENCE_COLUMNS = ("input_ids", "target_mask", "attention_mask")
_PAIR_COLUMNS = ("answer_id", "wrong_id", "answer_pos")


@dataclass(frozen=True)
class Task:
    """The data a model is judged on (train/test splits of token ids plus labels) and its loss.

    Args:
        name: short identifier, used in results tables.
        dataset: a ``datasets.DatasetDict`` with ``train`` and ``test`` splits and an ``input_ids``
            column; a ``target_mask`` column when the task has a next-token loss.
        description: one sentence on what the task tests.
        has_loss: ``False`` for tasks without a next-token loss (e.g. MiniLM has no LM head);
            ``loss``/``evaluate`` then raise instead of returning meaningless numbers.
    """

    name: str
    dataset: datasets.DatasetDict
    description: str = ""
    has_loss: bool = True

    def __post_init__(self) -> None:
        missing = {"train", "test"} - set(self.dataset.keys())
        if missing:
            raise ValueError(
                f"Task {self.name!r}: dataset lacks split(s) {sorted(missing)}; a Task needs a "
                "DatasetDict with 'train' and 'test' splits (use Dataset.train_test_split)."
            )
        needed = ["input_ids"] + (["target_mask"] if self.has_loss else [])
        for split in ("train", "test"):
            cols = set(self.dataset[split].column_names)
            lacking = [c for c in needed if c not in cols]
            if lacking:
                raise ValueError(
                    f"Task {self.name!r}: split {split!r} lacks column(s) {lacking}; found "
                    f"{sorted(cols)}. 'target_mask' marks the scored next-token targets."
                )
            if len(self.dataset[split]) == 0:
                raise ValueError(f"Task {self.name!r}: split {split!r} is empty.")
            if self.has_loss:
                _check_target_mask(self.name, split, self.dataset[split])

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_texts(cls, texts: Iterable[str], tokenizer_or_model: Any, *, max_length: int | None = None,
                   pack: bool = True, truncate: bool = False, columns: Mapping[str, Sequence] | None = None,
                   name: str = "texts", description: str = "", test_fraction: float = 0.1,
                   seed: int = 0, has_loss: bool | None = None, group: str | None = None) -> Task:
        """A next-token task from a list of texts, tokenised with the model's tokenizer.

        Args:
            texts: the corpus (a list of strings; empty strings are skipped when packing).
            tokenizer_or_model: a Hugging Face tokenizer, or a model with ``.tokenizer`` (its
                ``cfg.d_vocab`` and ``n_ctx`` are then checked against the tokenizer and rows).
            max_length: tokens per row (``None``: the model's ``n_ctx``).
            pack: ``True``: join the texts (end-of-text token between them) and cut rows of exactly
                ``max_length`` tokens, the last partial row dropped. ``False``: one row per text,
                right-padded, with an ``attention_mask`` and a ``text`` column.
            truncate: ``pack=False`` only: cut texts longer than ``max_length`` instead of raising.
            columns: per-text extra columns (probe labels, ``Agree`` values); ``pack=False`` only.
            name: the task's name.
            description: one sentence on the task (default: says how it was built).
            test_fraction: the fraction of rows (at random) in the test split, or with ``group`` the
                fraction of the group's values held out.
            seed: seeds that split.
            has_loss: ``None`` (default): decided from the model (``False`` for a model without a
                next-token head, e.g. MiniLM; ``True`` given a tokenizer only). ``False``: the rows
                serve probes and norms, and loss-based code raises instead of reading random logits.
            group: ``pack=False`` only: a column of ``columns`` (or ``"text"``) whose values are held
                out together: every row of a held-out value is in the test split.
        """
        from interp._textrows import split_texts

        has_loss = _decide_loss(tokenizer_or_model, has_loss)
        dataset, description = split_texts(
            texts, tokenizer_or_model, max_length=max_length, pack=pack, truncate=truncate, columns=columns,
            name=name, description=description, test_fraction=test_fraction, seed=seed, group=group)
        return cls(name, dataset, description=description, has_loss=has_loss)

    @classmethod
    def from_dataset(cls, dataset: Any, tokenizer_or_model: Any, *, text_column: str = "text",
                     rows: int | None = None, split: str = "train", shuffle: bool = False,
                     max_length: int | None = None, pack: bool = True, truncate: bool = False,
                     keep_columns: Sequence[str] | None = None, name: str | None = None,
                     test_fraction: float = 0.1, seed: int = 0, has_loss: bool | None = None,
                     group: str | None = None) -> Task:
        """A next-token task from a Hugging Face ``datasets`` dataset's ``text_column``.

        ``dataset`` may be a ``Dataset``, a ``DatasetDict`` (``split`` is used) or an
        ``IterableDataset`` (``load_dataset(..., streaming=True)``: ``rows`` texts are taken from the
        stream, after a buffered shuffle when ``shuffle``). ``rows``: how many texts (``None``: all).
        With ``pack=False`` the other columns are kept (or only ``keep_columns``). The rest as in
        :meth:`from_texts`.
        """
        from interp._textrows import split_dataset

        name = name or f"dataset[{text_column}]"
        has_loss = _decide_loss(tokenizer_or_model, has_loss)
        splits, description = split_dataset(
            dataset, tokenizer_or_model, text_column=text_column, rows=rows, split=split, shuffle=shuffle,
            max_length=max_length, pack=pack, truncate=truncate, keep_columns=keep_columns, name=name,
            test_fraction=test_fraction, seed=seed, group=group)
        return cls(name, splits, description=description, has_loss=has_loss)

    @classmethod
    def from_pairs(cls, prompts: Sequence[str], answers: Sequence[str], tokenizer_or_model: Any,
                   wrong_answers: Sequence[str] | None = None, *,
                   columns: Mapping[str, Sequence] | None = None, max_length: int | None = None,
                   name: str = "pairs", description: str = "", test_fraction: float = 0.2,
                   seed: int = 0, has_loss: bool | None = None, group: str | None = None) -> Task:
        """A task from prompt/answer pairs (IOI-style): each row is ``prompt + answer``, the loss is
        the cross-entropy of the answer tokens only.

        With ``wrong_answers`` (one per prompt; answers and wrong answers one token each) the rows
        also carry ``answer_id``, ``wrong_id`` and ``answer_pos``, :meth:`logit_diff` gives
        logit(answer) − logit(wrong) per row and :meth:`evaluate` reports its mean. String columns
        ``prompt``, ``answer`` (``wrong_answer``) and any ``columns`` are kept (``columns`` may not
        reuse those names nor ``input_ids``, ``target_mask``, ``attention_mask``, ``answer_pos``,
        ``answer_id``, ``wrong_id``).

        Answers must be strings the tokenizer knows (an answer that becomes the unknown token is an
        error); the wrong answer must differ from the answer. Given the model, prompts are tokenised
        as ``model.to_tokens(prompt)`` tokenises them (with its BOS), so ``answer_pos`` is the position
        after ``model.to_tokens(prompt)``'s last token. ``has_loss`` and ``group`` (e.g.
        ``group="answer"`` holds out names) as in :meth:`from_texts`.
        """
        from interp._textrows import split_pairs

        has_loss = _decide_loss(tokenizer_or_model, has_loss)
        dataset, description = split_pairs(
            prompts, answers, tokenizer_or_model, wrong_answers, columns=columns, max_length=max_length,
            name=name, description=description, test_fraction=test_fraction, seed=seed, group=group)
        return cls(name, dataset, description=description, has_loss=has_loss)

    # ------------------------------------------------------------------ data
    def tensors(
        self,
        split: str = "test",
        rows: int | slice | list[int] | None = None,
        columns: tuple[str, ...] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Rows of a split as a dict of tensors (all numeric columns unless ``columns`` is given)."""
        ds = self._split(split)
        if rows is not None:
            if isinstance(rows, int):
                rows = slice(0, min(rows, len(ds)))
            ds = ds.select(range(len(ds))[rows]) if isinstance(rows, slice) else ds.select(rows)
        if columns is None:
            columns = tuple(c for c in ds.column_names if _is_numeric(ds.features[c]))
        out = ds.with_format("torch", columns=list(columns))[:]
        return {c: out[c] for c in columns}

    def batches(
        self,
        split: str = "train",
        batch_size: int = 64,
        *,
        seed: int | None = 0,
        drop_last: bool = False,
    ) -> Iterator[dict[str, torch.Tensor]]:
        """One pass over a split in batches; shuffled with ``seed`` (``None``: in order)."""
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}: must be a positive integer.")
        data = self.tensors(split)
        n = len(data["input_ids"])
        order = (
            torch.arange(n)
            if seed is None
            else torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        )
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            idx = order[start : start + batch_size]
            yield {k: v[idx] for k, v in data.items()}

    # ------------------------------------------------------------------ loss
    def token_losses(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor]
    ) -> Float[torch.Tensor, "batch pos"]:
        """Cross-entropy of each scored target token; 0 at unscored positions (see ``target_mask``)."""
        self._require_loss()
        logits = self._logits(model, batch)
        ids, mask = self._ids_and_mask(batch, logits.device)
        nll = self._scored_nll(logits, ids, mask)
        return torch.nn.functional.pad(nll, (1, 0))  # position 0 predicts nothing; out of place, so vmap-able

    def loss_from_logits(
        self, logits: Float[torch.Tensor, "*chain batch pos vocab"], batch: dict[str, torch.Tensor]
    ) -> Float[torch.Tensor, "*chain"]:
        """:meth:`loss` from precomputed logits, with any leading axes (e.g. one per SGLD chain)."""
        ids, mask = self._ids_and_mask(batch, logits.device)
        return self._scored_nll(logits, ids, mask).sum((-2, -1)) / mask.sum().clamp(min=1)

    @staticmethod
    def _scored_nll(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Next-token NLL at positions 1.. times the target mask; ``logits`` may have leading axes."""
        logp = torch.log_softmax(logits[..., :-1, :].float(), dim=-1)
        nll = -logp.gather(-1, ids[:, 1:, None].expand(*logp.shape[:-1], 1))[..., 0]
        return nll * mask[:, 1:]

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> Float[torch.Tensor, ""]:
        """Per-token mean cross-entropy over the batch's scored targets (differentiable)."""
        mask = batch["target_mask"]
        return self.token_losses(model, batch).sum() / mask.sum().clamp(min=1).to(device_of(model))

    @property
    def has_logit_diff(self) -> bool:
        """Whether rows carry ``answer_id``/``wrong_id``/``answer_pos`` (:meth:`from_pairs` with
        wrong answers), so :meth:`logit_diff` applies."""
        return all(c in self.dataset["test"].column_names for c in _PAIR_COLUMNS)

    def logit_diff(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> Float[torch.Tensor, "batch"]:
        """logit(answer) − logit(wrong answer) per row, at the position predicting the answer."""
        return self._logit_diff(self._logits(model, batch), batch)

    def _logit_diff(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        missing = [c for c in _PAIR_COLUMNS if c not in batch]
        if missing:
            raise ValueError(
                f"Task {self.name!r}: the batch lacks {missing}; the logit difference needs a task made "
                "by Task.from_pairs(..., wrong_answers=...)."
            )
        rows = torch.arange(logits.shape[0], device=logits.device)
        at = logits[rows, batch["answer_pos"].to(logits.device).long() - 1].float()
        return (at.gather(-1, batch["answer_id"].to(logits.device).long()[:, None])
                - at.gather(-1, batch["wrong_id"].to(logits.device).long()[:, None]))[:, 0]

    @torch.no_grad()
    def evaluate(
        self, model: torch.nn.Module, split: str = "test", batch_size: int = 256
    ) -> dict[str, float]:
        """Held-out ``loss`` (nats/token over scored targets) and ``accuracy`` (argmax = target);
        ``logit_diff`` too (mean over rows) for pair tasks with wrong answers."""
        self._require_loss()
        total_loss, total_correct, total_n = 0.0, 0, 0
        diffs: list[torch.Tensor] = []
        pairs = self.has_logit_diff
        for batch in self.batches(split, batch_size, seed=None):
            logits = self._logits(model, batch)
            if pairs:
                diffs.append(self._logit_diff(logits, batch).cpu())
            ids, mask = self._ids_and_mask(batch, logits.device)
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            nll = -logp.gather(-1, ids[:, 1:, None])[..., 0]
            m = mask[:, 1:].bool()
            total_loss += nll[m].sum().item()
            total_correct += (logp.argmax(-1) == ids[:, 1:])[m].sum().item()
            total_n += int(m.sum().item())
        if total_n == 0:
            raise ValueError(f"Task {self.name!r}: split {split!r} has no scored targets.")
        out = {"loss": total_loss / total_n, "accuracy": total_correct / total_n}
        if pairs:
            out["logit_diff"] = float(torch.cat(diffs).mean())
        return out

    # ------------------------------------------------------------------ helpers
    def _split(self, split: str) -> datasets.Dataset:
        if split not in self.dataset:
            raise ValueError(
                f"Task {self.name!r} has no split {split!r}; available: {sorted(self.dataset.keys())}."
            )
        return self.dataset[split]

    def _require_loss(self) -> None:
        if not self.has_loss:
            raise ValueError(
                f"Task {self.name!r} has no next-token loss (has_loss=False); use it for "
                "residual-stream analyses (probing, norms), not for loss-based ones."
            )

    def _ids_and_mask(
        self, batch: dict[str, torch.Tensor], device: torch.device
    ) -> tuple[Int[torch.Tensor, "batch pos"], Int[torch.Tensor, "batch pos"]]:
        self._require_loss()
        return batch["input_ids"].to(device).long(), batch["target_mask"].to(device)

    def _logits(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        from interp.models import check_lm_head

        check_lm_head(model, f"Task {self.name!r} (its loss, accuracy and logit difference)")
        device = device_of(model)
        ids = batch["input_ids"]
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
            raise ValueError(
                f"Task {self.name!r}: batch['input_ids'] must be a [batch, pos] tensor of token ids, got "
                f"{tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__}."
            )
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise ValueError(
                f"Task {self.name!r}: batch['input_ids'] has dtype {ids.dtype}; token ids must be "
                "integers (convert with ids.long())."
            )
        if "target_mask" in batch and tuple(batch["target_mask"].shape) != tuple(ids.shape):
            raise ValueError(
                f"Task {self.name!r}: batch['target_mask'] has shape {tuple(batch['target_mask'].shape)}, "
                f"input_ids {tuple(ids.shape)}; the mask marks scored tokens and needs the same shape."
            )
        d_vocab = getattr(getattr(model, "cfg", None), "d_vocab", None)
        if isinstance(d_vocab, int) and d_vocab > 0 and ids.numel() and (ids.min() < 0 or ids.max() >= d_vocab):
            bad = int(ids.min()) if ids.min() < 0 else int(ids.max())
            raise ValueError(
                f"Task {self.name!r}: token id {bad} is outside the model's vocabulary [0, {d_vocab}); "
                "is this the task of another model?"
            )
        logits = model(ids.to(device))
        if not isinstance(logits, torch.Tensor):  # HF-style output objects
            logits = logits.logits
        return logits

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v)}" for k, v in self.dataset.items())
        return f"Task({self.name!r}, {sizes}, columns={self.dataset['train'].column_names})"


def _decide_loss(tokenizer_or_model: Any, has_loss: bool | None) -> bool:
    """``has_loss`` for a task built with ``tokenizer_or_model``: ``None`` decides from the model (a
    tokenizer alone: ``True``); ``True`` with a model without a next-token head is an error."""
    from interp.models import _lm_head_problem

    if has_loss is not None and not isinstance(has_loss, bool):
        raise ValueError(f"has_loss={has_loss!r}: give True, False or None (decide from the model).")
    is_model = getattr(tokenizer_or_model, "cfg", None) is not None
    problem = _lm_head_problem(tokenizer_or_model) if is_model else None
    if has_loss and problem is not None:
        raise ValueError(
            f"has_loss=True, but the model has no language-model head: {problem}. Leave has_loss out "
            "(the task then has no loss: for probing and norms), or pass a model with a causal LM head."
        )
    if has_loss is None:
        return problem is None
    return has_loss


def _check_target_mask(name: str, split: str, ds: datasets.Dataset) -> None:
    """``target_mask`` holds only 0/1 and marks at least one target after position 0 (position 0 has
    no prediction): otherwise every loss would be 0 or negative, silently."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = ds.data.column("target_mask")
    values = pc.list_flatten(column) if hasattr(column.type, "value_type") else column
    bad = pc.sum(pc.invert(pc.is_in(pc.cast(values, "double"), value_set=pa.array([0.0, 1.0])))).as_py()
    if bad:
        odd = sorted({v for v in values.to_pylist() if v not in (0, 1)})[:5]
        raise ValueError(
            f"Task {name!r}: split {split!r} has target_mask values {odd}; target_mask must hold only 0 "
            "(not scored) and 1 (a scored next-token target). Convert it, e.g. (mask > 0).astype(int)."
        )
    after_first = pc.list_flatten(pc.list_slice(column, 1)) if hasattr(column.type, "value_type") else values
    if not pc.sum(pc.cast(after_first, "double")).as_py():
        raise ValueError(
            f"Task {name!r}: split {split!r} has no scored target (target_mask has no 1 after position 0, "
            "which nothing predicts): every loss would be 0. Set target_mask = 1 on the tokens to predict."
        )


def _is_numeric(feature: object) -> bool:
    """Whether a datasets feature holds numbers (possibly nested in sequences)."""
    dtype = getattr(feature, "dtype", None)
    if dtype is None:
        inner = getattr(feature, "feature", None)
        return inner is not None and _is_numeric(inner)
    return dtype.startswith(("int", "uint", "float", "bool"))
