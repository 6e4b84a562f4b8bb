"""Rows of a text task: tokenise texts (packed or padded) or prompt/answer pairs, mark the scored
next tokens and split the rows into a train/test ``DatasetDict``.

The machinery behind :meth:`Task.from_texts <interp.tasks.Task.from_texts>`,
:meth:`Task.from_dataset <interp.tasks.Task.from_dataset>` and
:meth:`Task.from_pairs <interp.tasks.Task.from_pairs>` (the conventions, packing, padding and pairs,
are described in :mod:`interp.textdata`). It returns plain datasets, so it sits below
:mod:`interp.tasks`, which wraps them in a ``Task``.

Example::

    >>> from interp.tokenizing import build_word_tokenizer
    >>> tok = build_word_tokenizer(["the cat sat"])
    >>> dataset, description = split_texts(["the cat sat"] * 6, tok, max_length=4, pack=True)
    >>> dataset["train"].column_names, description
    (['input_ids', 'target_mask'], '6 texts, packed to 4 tokens')
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from interp.tokenizing import check_tokenizer, model_vocab

if TYPE_CHECKING:  # pragma: no cover
    import datasets

log = logging.getLogger(__name__)

__all__ = ["split_texts", "split_dataset", "split_pairs", "resolve_tokenizer"]


# ------------------------------------------------------------------------------ tokenizers
def resolve_tokenizer(tokenizer_or_model: Any) -> tuple[Any, int | None, int | None]:
    """``(tokenizer, d_vocab, n_ctx)`` from a tokenizer or a model carrying one (``model.tokenizer``,
    ``model.cfg.d_vocab`` / ``n_ctx``); the tokenizer is checked against the model's vocabulary."""
    cfg = getattr(tokenizer_or_model, "cfg", None)
    if cfg is not None and hasattr(cfg, "d_vocab"):
        tok = getattr(tokenizer_or_model, "tokenizer", None)
        if tok is None:
            raise ValueError(
                "tokenizer_or_model: the model has no tokenizer (loaded with tokenizer=False?); pass "
                "its tokenizer instead, e.g. transformers.AutoTokenizer.from_pretrained(...)."
            )
        d_vocab, n_ctx = model_vocab(tokenizer_or_model), getattr(cfg, "n_ctx", None)
        check_tokenizer(tok, d_vocab)
        return tok, d_vocab, (int(n_ctx) if n_ctx else None)
    if not callable(tokenizer_or_model) or not hasattr(tokenizer_or_model, "__len__"):
        raise ValueError(
            f"tokenizer_or_model={type(tokenizer_or_model).__name__}: give a Hugging Face tokenizer or "
            "a model with a .tokenizer (e.g. from interp.load_model)."
        )
    check_tokenizer(tokenizer_or_model, None)
    return tokenizer_or_model, None, None


def _encode(tok: Any, texts: Sequence[str], special: bool = True) -> list[list[int]]:
    return [list(ids) for ids in tok(list(texts), add_special_tokens=special)["input_ids"]]


def _pad_id(tok: Any) -> int:
    for attr in ("pad_token_id", "eos_token_id"):
        v = getattr(tok, attr, None)
        if isinstance(v, int):
            return v
    return 0


def _check_ids(ids: list[list[int]], d_vocab: int | None) -> None:
    if d_vocab is None:
        return
    top = max((max(r) for r in ids if r), default=-1)
    if top >= d_vocab:
        raise ValueError(
            f"The tokenizer produced token id {top}, outside the model's vocabulary [0, {d_vocab}): "
            "it is not this model's tokenizer. Pass the model itself, or its own tokenizer."
        )


def _check_max_length(max_length: int | None, n_ctx: int | None, tok: Any) -> int:
    if max_length is None:
        max_length = n_ctx
        if max_length is None:
            m = getattr(tok, "model_max_length", None)
            max_length = m if isinstance(m, int) and 0 < m <= 1_000_000 else None
        if max_length is None:
            raise ValueError("max_length=None and neither the model nor the tokenizer states a context "
                             "length: pass max_length=... (tokens per row).")
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 2:
        raise ValueError(f"max_length={max_length!r}: must be an integer >= 2 (tokens per row).")
    if n_ctx is not None and max_length > n_ctx:
        raise ValueError(f"max_length={max_length} exceeds the model's context n_ctx={n_ctx}; "
                         f"use max_length <= {n_ctx}.")
    return max_length


# ------------------------------------------------------------------------------------ rows
def _split(name: str, rows: list[dict], test_fraction: float, seed: int) -> datasets.DatasetDict:
    """The rows split at random (``seed``) into ``test`` (``test_fraction``, at least one) and ``train``."""
    import datasets

    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction={test_fraction!r}: must lie in (0, 1), e.g. 0.2.")
    if len(rows) < 2:
        raise ValueError(f"Task {name!r}: only {len(rows)} row(s); a task needs at least 2 (train and "
                         "test): give more text, or a smaller max_length when packing.")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_test = min(max(1, round(test_fraction * len(rows))), len(rows) - 1)
    test = [rows[i] for i in sorted(order[:n_test])]
    train = [rows[i] for i in sorted(order[n_test:])]
    return datasets.DatasetDict(train=datasets.Dataset.from_list(train),
                                test=datasets.Dataset.from_list(test))


def _check_texts(texts: Any, what: str = "texts") -> list[str]:
    if isinstance(texts, str):
        raise ValueError(f"{what}: got one string; pass a list of texts, e.g. [{texts[:30]!r}].")
    texts = list(texts)
    if not texts:
        raise ValueError(f"{what}: the corpus is empty; give at least two texts.")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise ValueError(f"{what}: item {bad[0]} is {type(texts[bad[0]]).__name__}, not a string "
                         f"({len(bad)} non-string items).")
    if not any(t.strip() for t in texts):
        raise ValueError(f"{what}: all {len(texts)} texts are empty; the corpus has no tokens.")
    return texts


def _padded_rows(ids: list[list[int]], pad: int, first_scored: list[int]) -> list[dict]:
    width = max(len(r) for r in ids)
    rows = []
    for r, start in zip(ids, first_scored):
        n = len(r)
        rows.append({
            "input_ids": r + [pad] * (width - n),
            "target_mask": [0] * start + [1] * (n - start) + [0] * (width - n),
            "attention_mask": [1] * n + [0] * (width - n),
        })
    return rows


def split_texts(texts: Iterable[str], tokenizer_or_model: Any, *, max_length: int | None = None,
                pack: bool = True, truncate: bool = False, columns: Mapping[str, Sequence] | None = None,
                name: str = "texts", description: str = "", test_fraction: float = 0.1,
                seed: int = 0) -> tuple[datasets.DatasetDict, str]:
    """``(dataset, description)`` of the task :meth:`interp.tasks.Task.from_texts` builds (see it for
    the arguments; ``name`` only names the task in errors)."""
    texts = _check_texts(texts)
    tok, d_vocab, n_ctx = resolve_tokenizer(tokenizer_or_model)
    max_length = _check_max_length(max_length, n_ctx, tok)
    columns = dict(columns or {})
    for col, values in columns.items():
        if col in ("input_ids", "target_mask", "attention_mask", "text"):
            raise ValueError(f"columns: {col!r} is a reserved column name; rename it.")
        if len(values) != len(texts):
            raise ValueError(f"columns[{col!r}] has {len(values)} values for {len(texts)} texts.")
    if pack and columns:
        raise ValueError("columns=... needs pack=False: packed rows mix several texts, so per-text "
                         "values have no row to go to.")
    if pack:
        eos = getattr(tok, "eos_token_id", None)
        stream: list[int] = []
        for ids in _encode(tok, [t for t in texts if t.strip()]):
            stream.extend(ids)
            if isinstance(eos, int) and (not ids or ids[-1] != eos):
                stream.append(eos)
        _check_ids([stream], d_vocab)
        n_rows = len(stream) // max_length
        if n_rows < 2:
            raise ValueError(
                f"The corpus has {len(stream)} tokens: {n_rows} packed row(s) of max_length={max_length}; "
                "a task needs at least 2. Add texts or lower max_length."
            )
        dropped = len(stream) - n_rows * max_length
        if dropped:
            log.info("packing: the last %d tokens (a partial row) are dropped", dropped)
        rows = [{"input_ids": stream[i * max_length:(i + 1) * max_length],
                 "target_mask": [0] + [1] * (max_length - 1)} for i in range(n_rows)]
    else:
        empty = [i for i, t in enumerate(texts) if not t.strip()]
        if empty:
            raise ValueError(f"texts: {len(empty)} empty text(s) (first at index {empty[0]}); remove "
                             "them (each text is one row with pack=False).")
        ids = _encode(tok, texts)
        long = [i for i, r in enumerate(ids) if len(r) > max_length]
        if long and not truncate:
            raise ValueError(
                f"{len(long)} of {len(texts)} texts are longer than max_length={max_length} tokens "
                f"(longest {max(len(ids[i]) for i in long)}, first at index {long[0]}). Fix: pass "
                "truncate=True, pack=True (rows cut from the joined texts), or a larger max_length."
            )
        ids = [r[:max_length] for r in ids]
        _check_ids(ids, d_vocab)
        if any(len(r) < 2 for r in ids):
            short = sum(len(r) < 2 for r in ids)
            raise ValueError(f"texts: {short} text(s) are a single token, with no next-token target; "
                             "remove them.")
        rows = _padded_rows(ids, _pad_id(tok), [1] * len(ids))
        for i, row in enumerate(rows):
            row["text"] = texts[i]
            row.update({c: v[i] for c, v in columns.items()})
    desc = description or (f"{len(texts)} texts, " + ("packed" if pack else "padded")
                           + f" to {max_length} tokens")
    return _split(name, rows, test_fraction, seed), desc


def split_dataset(dataset: Any, tokenizer_or_model: Any, *, text_column: str = "text",
                  rows: int | None = None, split: str = "train", shuffle: bool = False,
                  max_length: int | None = None, pack: bool = True, truncate: bool = False,
                  keep_columns: Sequence[str] | None = None, name: str = "dataset",
                  test_fraction: float = 0.1, seed: int = 0) -> tuple[datasets.DatasetDict, str]:
    """``(dataset, description)`` of the task :meth:`interp.tasks.Task.from_dataset` builds (see it
    for the arguments; ``name`` only names the task in errors)."""
    import datasets

    if isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        if split not in dataset:
            raise ValueError(f"split={split!r}: the dataset has splits {sorted(dataset)}.")
        dataset = dataset[split]
    streaming = isinstance(dataset, datasets.IterableDataset)
    if not streaming and not isinstance(dataset, datasets.Dataset):
        raise ValueError(f"dataset={type(dataset).__name__}: give a datasets.Dataset, IterableDataset "
                         "(streaming=True) or a DatasetDict.")
    if rows is not None and (not isinstance(rows, int) or isinstance(rows, bool) or rows < 2):
        raise ValueError(f"rows={rows!r}: must be an integer >= 2 (texts to take), or None for all.")
    if streaming and rows is None:
        raise ValueError("rows=None with a streaming dataset: give rows=... (how many texts to take "
                         "from the stream).")
    cols = list(dataset.column_names or []) if dataset.column_names is not None else None
    if cols is not None and text_column not in cols:
        raise ValueError(f"text_column={text_column!r} is not a column; the dataset has {cols}.")
    keep = list(keep_columns) if keep_columns is not None else (
        [] if pack else [c for c in (cols or []) if c != text_column])
    if streaming:
        ds = dataset.shuffle(seed=seed, buffer_size=max(1000, 10 * rows)) if shuffle else dataset
        taken = list(ds.take(rows))
    else:
        ds = dataset.shuffle(seed=seed) if shuffle else dataset
        if rows is not None:
            ds = ds.select(range(min(rows, len(ds))))
        taken = list(ds)
    if not taken:
        raise ValueError("The dataset is empty: no texts to build a task from.")
    if text_column not in taken[0]:
        raise ValueError(f"text_column={text_column!r} is not a column; rows have {sorted(taken[0])}.")
    missing = [c for c in keep if c not in taken[0]]
    if missing:
        raise ValueError(f"keep_columns: {missing} not in the dataset's columns {sorted(taken[0])}.")
    texts = [r[text_column] for r in taken]
    columns = {c: [r[c] for r in taken] for c in keep}
    return split_texts(texts, tokenizer_or_model, max_length=max_length, pack=pack, truncate=truncate,
                       columns=columns or None, name=name, test_fraction=test_fraction, seed=seed,
                       description=f"{len(texts)} texts from a Hugging Face dataset"
                                   f"{' (streamed)' if streaming else ''}")


def split_pairs(prompts: Sequence[str], answers: Sequence[str], tokenizer_or_model: Any,
                wrong_answers: Sequence[str] | None = None, *, columns: Mapping[str, Sequence] | None = None,
                max_length: int | None = None, name: str = "pairs", description: str = "",
                test_fraction: float = 0.2, seed: int = 0) -> tuple[datasets.DatasetDict, str]:
    """``(dataset, description)`` of the task :meth:`interp.tasks.Task.from_pairs` builds (see it for
    the arguments; ``name`` only names the task in errors)."""
    prompts = _check_texts(prompts, "prompts")
    answers = list(answers)
    if len(answers) != len(prompts):
        raise ValueError(f"answers: {len(answers)} answers for {len(prompts)} prompts; give one each.")
    if wrong_answers is not None and len(wrong_answers) != len(prompts):
        raise ValueError(f"wrong_answers: {len(wrong_answers)} for {len(prompts)} prompts; give one each.")
    columns = dict(columns or {})
    for col, values in columns.items():
        if len(values) != len(prompts):
            raise ValueError(f"columns[{col!r}] has {len(values)} values for {len(prompts)} prompts.")
    tok, d_vocab, n_ctx = resolve_tokenizer(tokenizer_or_model)
    limit = max_length if max_length is not None else n_ctx
    p_ids = _encode(tok, prompts)
    a_ids = _encode(tok, answers, special=False)
    empty = [i for i, a in enumerate(a_ids) if not a]
    if empty or any(not p for p in p_ids):
        raise ValueError(f"answers/prompts: {len(empty)} answer(s) tokenise to nothing (first at index "
                         f"{empty[0] if empty else '-'}), or a prompt is empty.")
    w_ids = None
    if wrong_answers is not None:
        w_ids = _encode(tok, list(wrong_answers), special=False)
        multi = [i for i in range(len(prompts)) if len(a_ids[i]) != 1 or len(w_ids[i]) != 1]
        if multi:
            i = multi[0]
            raise ValueError(
                f"wrong_answers: the logit difference needs single-token answers; {len(multi)} pair(s) "
                f"are not (first: answer {answers[i]!r} -> {a_ids[i]}, wrong {wrong_answers[i]!r} -> "
                f"{w_ids[i]}). Use answers that are one token (e.g. ' Mary' with a leading space).")
    ids = [p + a for p, a in zip(p_ids, a_ids)]
    if limit is not None:
        long = [i for i, r in enumerate(ids) if len(r) > limit]
        if long:
            raise ValueError(f"{len(long)} of {len(ids)} prompt+answer rows are longer than "
                             f"{limit} tokens (the model's context or max_length); shorten the prompts.")
    _check_ids(ids + (w_ids or []), d_vocab)
    rows = _padded_rows(ids, _pad_id(tok), [len(p) for p in p_ids])
    for i, row in enumerate(rows):
        row.update(prompt=prompts[i], answer=answers[i], answer_pos=len(p_ids[i]))
        if w_ids is not None:
            row.update(wrong_answer=wrong_answers[i], answer_id=a_ids[i][0], wrong_id=w_ids[i][0])
        row.update({c: v[i] for c, v in columns.items()})
    desc = description or f"{len(prompts)} prompt/answer pairs; loss on the answer tokens"
    return _split(name, rows, test_fraction, seed), desc
