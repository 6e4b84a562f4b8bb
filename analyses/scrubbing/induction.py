"""Ready-made causal-scrubbing hypotheses for the induction organism (``interp.organisms``).

The induction circuit (Elhage et al. 2021; Olsson et al. 2022): a previous-token head in layer 0
writes "the token before me" at every key position; an induction head in layer 1 matches its query,
the current token, against those keys, attends to the position after the previous occurrence and
copies that position's token through its value. As a hypothesis (Chan et al. 2022's induction
experiment; Olsson et al. 2022):

- output ← both induction heads (exact: computed on the reference sequence);
- each induction head's Q ← token embedding, same token at the query position;
- K ← layer-0 heads, same token at the previous position (``Agree.token_at(-1)``);
- V ← token embedding, same token at the key position.

Everything else (the direct path, positional embeddings feeding Q/K/V, the other writes) is
resampled. The wrong hypotheses keep the structure and break one claim:

=================== ==========================================================================
``qk_swapped``      Q from the previous-token heads, K from the embeddings
``k_from_embed``    K from the embeddings (no previous-token composition)
``v_from_layer0``   V from the previous-token heads instead of the embeddings
``wrong_heads``     K from layer-0 head(s) that are *not* the previous-token head
=================== ==========================================================================

:func:`compiled_hypotheses` gives the same set for the hand-compiled induction model
(:mod:`interp.organisms.compiled`, one induction head L1H0, previous-token head L0H0, decoy L0H1), plus
``wrong_position`` (K from the previous-token head, claimed to carry the token two back). There the
circuit is known by construction: the true hypothesis recovers 100% (KL 0) and every false one
0.15–0.24 (``tests/analyses/test_scrubbing_compiled.py``).

Example::

    >>> from analyses.scrubbing.induction import hypotheses
    >>> sorted(hypotheses())
    ['correct', 'k_from_embed', 'qk_swapped', 'v_from_layer0', 'wrong_heads']
"""

from __future__ import annotations

from collections.abc import Sequence

from analyses.scrubbing._hypothesis import Embed, Head, Hypothesis
from analyses.scrubbing._rules import Agree
from interp.checks import bad_value

__all__ = ["hypotheses", "build", "compiled_hypotheses"]

_TOK = Agree.token_at(0)
_PREV = Agree.token_at(-1)


def build(name: str, induction_heads: Sequence[tuple[int, int]], q: str, k: str, v: str,
          layer0: Sequence[tuple[int, int]]) -> Hypothesis:
    """An induction hypothesis with each of Q/K/V read from ``"embed"`` or ``"layer0"``.

    ``"embed"`` claims the token embedding with "same token here"; ``"layer0"`` claims the heads
    ``layer0`` with "same previous token".
    """

    def claim(src: str) -> list:
        if src == "embed":
            return [Embed(_TOK)]
        if src == "layer0":
            return [Head(layer, head, _PREV) for layer, head in layer0]
        raise bad_value("induction hypothesis", "source", src, "'embed' or 'layer0'")

    heads = [Head(layer, head, q=claim(q), k=claim(k), v=claim(v)) for layer, head in induction_heads]
    return Hypothesis(heads, name=name)


def hypotheses(
    induction_heads: Sequence[tuple[int, int]] = ((1, 0), (1, 1)),
    prev_token_heads: Sequence[tuple[int, int]] = ((0, 1),),
    other_heads: Sequence[tuple[int, int]] = ((0, 0),),
) -> dict[str, Hypothesis]:
    """The correct induction hypothesis and four plausible wrong ones (defaults: the shipped organism,
    ``induction.INDUCTION_HEADS`` and ``induction.PREV_TOKEN_HEAD``)."""
    ih, prev = [tuple(h) for h in induction_heads], [tuple(h) for h in prev_token_heads]
    return {
        "correct": build("correct", ih, "embed", "layer0", "embed", prev),
        "qk_swapped": build("qk_swapped", ih, "layer0", "embed", "embed", prev),
        "k_from_embed": build("k_from_embed", ih, "embed", "embed", "embed", prev),
        "v_from_layer0": build("v_from_layer0", ih, "embed", "layer0", "layer0", prev),
        "wrong_heads": build("wrong_heads", ih, "embed", "layer0", "embed", list(other_heads)),
    }


def compiled_hypotheses() -> dict[str, Hypothesis]:
    """The true and five false hypotheses for :mod:`interp.organisms.compiled` (its
    ``INDUCTION_HEAD`` (1, 0), ``PREV_TOKEN_HEAD`` (0, 0) and decoy (0, 1)): ``correct``,
    ``qk_swapped``, ``k_from_embed``, ``v_from_layer0``, ``wrong_heads`` (K from the decoy) and
    ``wrong_position`` (K from the previous-token head with "same token two back")."""
    out = hypotheses(induction_heads=((1, 0),), prev_token_heads=((0, 0),), other_heads=((0, 1),))
    out["wrong_position"] = Hypothesis(
        [Head(1, 0, q=[Embed(_TOK)], k=[Head(0, 0, Agree.token_at(-2))], v=[Embed(_TOK)])],
        name="wrong_position",
    )
    return out
