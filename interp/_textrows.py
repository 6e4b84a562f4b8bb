"""Rows of a text task: tokenise texts (packed or padded) or prompt/answer pairs, mark the scored
next tokens and split the rows into a train/test ``DatasetDict``.

The machinery behind :meth:`Task.from_texts <interp.tasks.Task.from_texts>`,
:meth:`Task.from_dataset <interp.tasks.Task.from_dataset>` and
:meth:`Task.from_pairs <interp.tasks.Task.from_pairs>` (the conventions, packing, padding and pairs,
are described in :mod:`interp.tasks`). It returns plain datasets, so it sits below
:mod:`interp.tasks`, which wraps them in a ``Task``.

Splits: at random (``seed``), or by group (``group=COLUMN``): every row whose ``COLUMN`` value is one of
the held-out values goes to ``test``, so a probe or a circuit is judged on unseen words, templates or
names, not only unseen rows. With k distinct values, round(test_fraction · k) of them (at least one,
at most k − 1) are held out, drawn with ``seed``.

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


def model_bos(tokenizer_or_model: Any, tok: Any) -> int | None:
    """The BOS id that ``model.to_tokens(text)`` prepends to what the tokenizer makes of ``text``, or
    ``None`` (given a tokenizer only, or a model whose tokenizer adds its own BOS / whose
    ``cfg.default_prepend_bos`` is off). Rows then start as ``to_tokens`` starts them."""
    cfg = getattr(tokenizer_or_model, "cfg", None)
    if cfg is None or tokenizer_or_model is tok or not getattr(cfg, "default_prepend_bos", False):
        return None
    if getattr(cfg, "tokenizer_prepends_bos", True):
        return None
    bos, bos_id = getattr(tok, "bos_token", None), getattr(tok, "bos_token_id", None)
    if bos is None or not isinstance(bos_id, int):
        return None
    atomic = tok(bos, add_special_tokens=False)["input_ids"]
    return bos_id if list(atomic) == [bos_id] else None


def _encode(tok: Any, texts: Sequence[str], special: bool = True, bos: int | None = None) -> list[list[int]]:
    out = [list(ids) for ids in tok(list(texts), add_special_tokens=special)["input_ids"]]
    if bos is not None:
        out = [ids if ids[:1] == [bos] else [bos, *ids] for ids in out]
    return out


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
def _check_fraction(test_fraction: Any) -> float:
    if (isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float))
            or not 0 < test_fraction < 1):
        raise ValueError(
            f"test_fraction={test_fraction!r}: must be a number in (0, 1), the fraction of rows (or of "
            "groups, with group=) held out for the test split, e.g. test_fraction=0.2."
        )
    return float(test_fraction)


def _check_group(group: Any, available: Sequence[str]) -> str | None:
    if group is None:
        return None
    if not isinstance(group, str) or group not in available:
        raise ValueError(
            f"group={group!r}: name the column whose values are held out together, one of "
            f"{sorted(available)} (add it with columns={{...}})."
        )
    return group


def _split(name: str, rows: list[dict], test_fraction: float, seed: int,
           group: str | None = None) -> datasets.DatasetDict:
    """The rows split into ``test`` (``test_fraction`` of the rows, at least one, or with ``group``:
    every row of ``test_fraction`` of the group values) and ``train``, at random with ``seed``."""
    import datasets

    test_fraction = _check_fraction(test_fraction)
    if len(rows) < 2:
        raise ValueError(f"Task {name!r}: only {len(rows)} row(s); a task needs at least 2 (train and "
                         "test): give more text, or a smaller max_length when packing.")
    if group is None:
        order = list(range(len(rows)))
        random.Random(seed).shuffle(order)
        n_test = min(max(1, round(test_fraction * len(rows))), len(rows) - 1)
        held = set(order[:n_test])
    else:
        values = [row[group] for row in rows]
        bad = [v for v in values if not isinstance(v, (str, int)) or isinstance(v, bool)]
        if bad:
            raise ValueError(f"group={group!r}: the column holds {type(bad[0]).__name__} values such as "
                             f"{bad[0]!r}; a group column holds strings or integers (a word, a template id).")
        distinct = sorted(set(values), key=lambda v: (str(type(v)), v))
        if len(distinct) < 2:
            raise ValueError(f"group={group!r}: every row has the value {distinct[0]!r}; a group split "
                             "needs at least 2 distinct values (one for train, one for test).")
        random.Random(seed).shuffle(distinct)
        k = min(max(1, round(test_fraction * len(distinct))), len(distinct) - 1)
        test_values = set(distinct[:k])
        held = {i for i, v in enumerate(values) if v in test_values}
    test = [rows[i] for i in range(len(rows)) if i in held]
    train = [rows[i] for i in range(len(rows)) if i not in held]
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
    for i, t in enumerate(texts):
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(
                f"{what}: item {i} holds {t[err.start]!r} at character {err.start}, a lone surrogate "
                "(half of a UTF-16 pair, e.g. from a mis-decoded file) that no tokenizer can encode. "
                "Decode the file as UTF-8, or drop the character: "
                "t.encode('utf-8', 'replace').decode('utf-8')."
            ) from None
    if not any(t.strip() for t in texts):
        raise ValueError(f"{what}: all {len(texts)} texts are empty; the corpus has no tokens.")
    return texts


def _separator(tok: Any) -> int | None:
    """The end-of-text id that separates packed texts, when it is a real token of the vocabulary (a
    BERT tokenizer's stand-in EOS maps to [UNK]: no separator then)."""
    eos, unk = getattr(tok, "eos_token_id", None), getattr(tok, "unk_token_id", None)
    if not isinstance(eos, int) or (eos == unk and getattr(tok, "eos_token", None) != getattr(tok, "unk_token", None)):
        return None
    return eos


def _check_columns(columns: Any, n: int, what: str, reserved: Sequence[str]) -> dict[str, list]:
    """Extra per-row columns: a mapping of names to one value per text, none shadowing a reserved name."""
    if columns is None:
        return {}
    if not isinstance(columns, Mapping):
        raise ValueError(f"columns={type(columns).__name__}: give a dict of column name -> one value per "
                         f"{what[:-1]}, e.g. columns={{'label': [0, 1, ...]}}.")
    out = {}
    for col, values in columns.items():
        if col in reserved:
            raise ValueError(f"columns: {col!r} is a reserved column name (the task writes "
                             f"{sorted(reserved)} itself); rename it, e.g. {'user_' + str(col)!r}.")
        if isinstance(values, str) or not hasattr(values, "__len__"):
            raise ValueError(f"columns[{col!r}]={values!r}: give a list with one value per {what[:-1]}.")
        if len(values) != n:
            raise ValueError(f"columns[{col!r}] has {len(values)} values for {n} {what}.")
        out[col] = list(values)
    return out


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
                seed: int = 0, group: str | None = None) -> tuple[datasets.DatasetDict, str]:
    """``(dataset, description)`` of the task :meth:`interp.tasks.Task.from_texts` builds (see it for
    the arguments; ``name`` only names the task in errors)."""
    texts = _check_texts(texts)
    _check_fraction(test_fraction)
    tok, d_vocab, n_ctx = resolve_tokenizer(tokenizer_or_model)
    max_length = _check_max_length(max_length, n_ctx, tok)
    columns = _check_columns(columns, len(texts), "texts", ("input_ids", "target_mask", "attention_mask", "text"))
    if pack and columns:
        raise ValueError("columns=... needs pack=False: packed rows mix several texts, so per-text "
                         "values have no row to go to.")
    if pack and group is not None:
        raise ValueError(f"group={group!r} needs pack=False: packed rows mix several texts, so a row "
                         "has no single group value.")
    group = _check_group(group, [*columns, "text"])
    if pack:
        sep = _separator(tok)
        specials = set(getattr(tok, "all_special_ids", None) or [])
        stream: list[int] = []
        for ids in _encode(tok, [t for t in texts if t.strip()]):
            stream.extend(ids)
            # a separator between texts, unless the tokenizer closed the text with a special token of
            # its own (BERT's [SEP])
            if sep is not None and (not ids or (ids[-1] != sep and ids[-1] not in specials)):
                stream.append(sep)
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
        ids = _encode(tok, texts, bos=model_bos(tokenizer_or_model, tok))
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
    return _split(name, rows, test_fraction, seed, group), desc


def split_dataset(dataset: Any, tokenizer_or_model: Any, *, text_column: str = "text",
                  rows: int | None = None, split: str = "train", shuffle: bool = False,
                  max_length: int | None = None, pack: bool = True, truncate: bool = False,
                  keep_columns: Sequence[str] | None = None, name: str = "dataset",
                  test_fraction: float = 0.1, seed: int = 0,
                  group: str | None = None) -> tuple[datasets.DatasetDict, str]:
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
                       group=group, description=f"{len(texts)} texts from a Hugging Face dataset"
                                   f"{' (streamed)' if streaming else ''}")


_PAIR_RESERVED = ("input_ids", "target_mask", "attention_mask", "answer_pos", "answer_id", "wrong_id",
                  "prompt", "answer", "wrong_answer")


def _check_answers(values: Any, what: str, n: int) -> list[str]:
    """One answer string per prompt (a single string is not a list of answers)."""
    if isinstance(values, str):
        raise ValueError(
            f"{what}={values!r}: got one string where one {what[:-1]} per prompt is expected (a string "
            f"would be split into its characters); pass a list, e.g. {what}=[{values!r}] * {n}."
        )
    try:
        values = list(values)
    except TypeError:
        raise ValueError(f"{what}={values!r}: give a list of strings, one per prompt.") from None
    if len(values) != n:
        raise ValueError(f"{what}: {len(values)} {what} for {n} prompts; give one each.")
    bad = [i for i, v in enumerate(values) if not isinstance(v, str)]
    if bad:
        raise ValueError(f"{what}: item {bad[0]} is {type(values[bad[0]]).__name__} {values[bad[0]]!r}, "
                         f"not a string ({len(bad)} non-string item(s)); {what} are text, e.g. ' Mary'.")
    return values


def _check_known(tok: Any, what: str, texts: list[str], ids: list[list[int]]) -> None:
    """No answer may become the unknown token (id 0 of a word-level tokenizer, BERT's [UNK]) unless
    it is that token."""
    unk = getattr(tok, "unk_token_id", None)
    if not isinstance(unk, int):
        return
    bad = [i for i, r in enumerate(ids) if unk in r and texts[i].strip() != getattr(tok, "unk_token", None)]
    if bad:
        i = bad[0]
        raise ValueError(
            f"{what}: {len(bad)} answer(s) contain text the tokenizer does not know (first: {what}[{i}] = "
            f"{texts[i]!r} -> {tok.convert_ids_to_tokens(ids[i])}, the unknown token "
            f"{getattr(tok, 'unk_token', unk)!r}); every such answer would be scored as the same token. "
            "Use words in the tokenizer's vocabulary."
        )


def split_pairs(prompts: Sequence[str], answers: Sequence[str], tokenizer_or_model: Any,
                wrong_answers: Sequence[str] | None = None, *, columns: Mapping[str, Sequence] | None = None,
                max_length: int | None = None, name: str = "pairs", description: str = "",
                test_fraction: float = 0.2, seed: int = 0,
                group: str | None = None) -> tuple[datasets.DatasetDict, str]:
    """``(dataset, description)`` of the task :meth:`interp.tasks.Task.from_pairs` builds (see it for
    the arguments; ``name`` only names the task in errors)."""
    prompts = _check_texts(prompts, "prompts")
    answers = _check_answers(answers, "answers", len(prompts))
    if wrong_answers is not None:
        wrong_answers = _check_answers(wrong_answers, "wrong_answers", len(prompts))
        same = [i for i in range(len(prompts)) if answers[i] == wrong_answers[i]]
        if same:
            raise ValueError(
                f"wrong_answers: {len(same)} pair(s) have the wrong answer equal to the answer (first at "
                f"index {same[0]}: {answers[same[0]]!r}), so their logit difference is 0 by construction; "
                "give each prompt a different wrong answer (e.g. the other name).")
    _check_fraction(test_fraction)
    columns = _check_columns(columns, len(prompts), "prompts", _PAIR_RESERVED)
    group = _check_group(group, [*columns, "prompt", "answer"]
                         + (["wrong_answer"] if wrong_answers is not None else []))
    tok, d_vocab, n_ctx = resolve_tokenizer(tokenizer_or_model)
    limit = max_length if max_length is not None else n_ctx
    p_ids = _encode(tok, prompts, bos=model_bos(tokenizer_or_model, tok))
    a_ids = _encode(tok, answers, special=False)
    empty = [i for i, a in enumerate(a_ids) if not a]
    if empty or any(not p for p in p_ids):
        raise ValueError(f"answers/prompts: {len(empty)} answer(s) tokenise to nothing (first at index "
                         f"{empty[0] if empty else '-'}), or a prompt is empty.")
    _check_known(tok, "answers", answers, a_ids)
    w_ids = None
    if wrong_answers is not None:
        w_ids = _encode(tok, list(wrong_answers), special=False)
        _check_known(tok, "wrong_answers", wrong_answers, w_ids)
        multi = [i for i in range(len(prompts)) if len(a_ids[i]) != 1 or len(w_ids[i]) != 1]
        if multi:
            i = multi[0]
            raise ValueError(
                f"wrong_answers: the logit difference needs single-token answers; {len(multi)} pair(s) "
                f"are not (first: answer {answers[i]!r} -> {a_ids[i]}, wrong {wrong_answers[i]!r} -> "
                f"{w_ids[i]}). Use answers that are one token (e.g. ' Mary' with a leading space).")
        same = [i for i in range(len(prompts)) if a_ids[i] == w_ids[i]]
        if same:
            i = same[0]
            raise ValueError(
                f"wrong_answers: {len(same)} pair(s) tokenise the answer and the wrong answer to the same "
                f"token (first: {answers[i]!r} and {wrong_answers[i]!r} -> {a_ids[i]}), so their logit "
                "difference is 0 by construction; use answers the tokenizer tells apart.")
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
    return _split(name, rows, test_fraction, seed, group), desc
