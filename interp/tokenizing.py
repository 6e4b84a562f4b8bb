"""Tokenizer helpers: check a tokenizer against a model's vocabulary, read that vocabulary's real size,
and build an offline word-level tokenizer.

:func:`check_tokenizer` rejects a tokenizer that cannot serve a model of ``d_vocab`` tokens (empty, or
more tokens than the embedding has rows) and warns when it holds under 90% of them (probably another
model's); :func:`model_vocab` reads the embedding's row count (``cfg.d_vocab`` can lag behind);
:func:`build_word_tokenizer` makes a whitespace word-level tokenizer for synthetic corpora and tests.
The loaders (:mod:`interp.models`) and the text-task builders (:mod:`interp._textrows`) both use them,
so they sit below both.

Example::

    >>> from interp.tokenizing import build_word_tokenizer, check_tokenizer
    >>> tok = build_word_tokenizer(["the cat sat", "the dog ran"])
    >>> len(tok)
    7
    >>> check_tokenizer(tok, d_vocab=7)
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable
from typing import Any

import torch

__all__ = ["check_tokenizer", "model_vocab", "build_word_tokenizer"]

_NO_TOKENIZER_FIX = ("pass load_model(..., tokenizer=...) a tokenizer object, a hub name or a directory "
                     "with tokenizer files, or tokenizer=False to work with token ids only.")


def check_tokenizer(tokenizer: Any, d_vocab: int | None, what: str = "tokenizer") -> None:
    """A ``ValueError`` unless ``tokenizer`` can serve a model with ``d_vocab`` tokens: it must hold
    more than one token and no more than ``d_vocab``. A tokenizer under 90% of ``d_vocab`` (models
    pad their vocabulary by well under 10%) gets a warning: probably another model's."""
    try:
        n = len(tokenizer)
    except TypeError as err:
        raise ValueError(f"{what}={type(tokenizer).__name__}: not a tokenizer (it has no length).") from err
    if n <= 1:
        raise ValueError(
            f"{what} holds {n} token(s): it is empty, so every string would become token id 0 "
            "(a checkpoint saved without tokenizer files loads like this). Fix: " + _NO_TOKENIZER_FIX
        )
    if d_vocab is not None and n > d_vocab:
        raise ValueError(
            f"{what} holds {n} tokens but the model's vocabulary has d_vocab={d_vocab}: ids >= {d_vocab} "
            "would index past the embedding, so it is not this model's tokenizer. Fix: "
            + _NO_TOKENIZER_FIX
        )
    if d_vocab is not None and n < 0.9 * d_vocab:
        warnings.warn(
            f"{what} holds {n} tokens, the model d_vocab={d_vocab}: is it this model's tokenizer?",
            UserWarning, stacklevel=3,
        )


def model_vocab(model: Any) -> int:
    """Rows of the model's token embedding (its real vocabulary size; ``cfg.d_vocab`` can be out of
    step after a tokenizer is assigned)."""
    w_e = None
    with contextlib.suppress(Exception):
        w_e = model.W_E
    if isinstance(w_e, torch.Tensor) and w_e.dim() == 2:
        return int(w_e.shape[0])
    return int(model.cfg.d_vocab)


def build_word_tokenizer(texts: Iterable[str], *, unk: str = "<unk>", eos: str = "<eos>"):
    """A whitespace word-level ``PreTrainedTokenizerFast`` over the words of ``texts`` (offline; for
    synthetic corpora and tests). Id 0 is ``unk``, 1 is ``eos`` (also the padding token)."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {unk: 0, eos: 1}
    for text in texts:
        for word in text.split():
            vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=unk, eos_token=eos,
                                                pad_token=eos)
