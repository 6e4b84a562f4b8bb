"""Tasks from text: a list of texts, a Hugging Face dataset, or prompt/answer pairs, with the model's tokenizer.

:func:`texts_task`, :func:`dataset_task` and :func:`pairs_task` are
:meth:`Task.from_texts <interp.tasks.Task.from_texts>`,
:meth:`Task.from_dataset <interp.tasks.Task.from_dataset>` and
:meth:`Task.from_pairs <interp.tasks.Task.from_pairs>` as functions (the rows are built in
:mod:`interp._textrows`, the tokenizer helpers live in :mod:`interp.tokenizing`). They write the column conventions of
:mod:`interp.tasks`: ``input_ids``, ``target_mask`` (1 where token t is a scored next-token target,
predicted from position t − 1) and, for padded rows, ``attention_mask``; padding is on the right.

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

Example::

    >>> from interp.textdata import build_word_tokenizer
    >>> from interp.tasks import Task
    >>> tok = build_word_tokenizer(["the cat sat", "the dog ran"])
    >>> task = Task.from_texts(["the cat sat"] * 6, tok, max_length=4, pack=True)
    >>> task.dataset["train"].column_names
    ['input_ids', 'target_mask']
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from interp._textrows import resolve_tokenizer
from interp.tasks import Task
from interp.tokenizing import build_word_tokenizer

__all__ = ["texts_task", "dataset_task", "pairs_task", "resolve_tokenizer", "build_word_tokenizer"]


def texts_task(texts: Iterable[str], tokenizer_or_model: Any, **kwargs: Any) -> Task:
    """:meth:`Task.from_texts <interp.tasks.Task.from_texts>` (same arguments)."""
    return Task.from_texts(texts, tokenizer_or_model, **kwargs)


def dataset_task(dataset: Any, tokenizer_or_model: Any, **kwargs: Any) -> Task:
    """:meth:`Task.from_dataset <interp.tasks.Task.from_dataset>` (same arguments)."""
    return Task.from_dataset(dataset, tokenizer_or_model, **kwargs)


def pairs_task(prompts: Sequence[str], answers: Sequence[str], tokenizer_or_model: Any,
               wrong_answers: Sequence[str] | None = None, **kwargs: Any) -> Task:
    """:meth:`Task.from_pairs <interp.tasks.Task.from_pairs>` (same arguments)."""
    return Task.from_pairs(prompts, answers, tokenizer_or_model, wrong_answers, **kwargs)
