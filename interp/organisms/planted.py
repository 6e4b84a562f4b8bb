"""Planted organism: a hand-compiled transformer with real and spurious findings side by side.

Ground truth for the validity suite (``benchmarks/validity.py``): every weight is written below, so
which components the output depends on and which carry structure that nothing downstream reads is
known *by construction*, and each planted spurious finding passes the analysis at the trained weights
by the same criterion as its real twin. (The construction follows :mod:`interp.organisms.compiled`,
the hand-compiled induction model, extended with a backup head, an MLP and unread components.)

Task (:func:`make_task`): the induction organism's task at a smaller size, so the one-hot layout
below stays small: BOS, then a pattern of ``period`` (3–8) distinct tokens out of 24, repeated to 24
tokens; scored where the next token already occurred.

Construction. A 2-layer, 3-head transformer with MLPs (ReLU), no LayerNorm, every bias zero except
the ones named. With ``V = 25`` token ids (BOS = 24) and ``n_ctx = 25``, the residual stream is split
into orthogonal blocks of standard basis vectors (:func:`layout`)::

    TOK    (V)      one-hot current token        token embedding        read by L0 heads' V, L1 Q/V
    POS    (n_ctx)  one-hot position             positional embedding   read by L0 Q/K, L1 K (BOS fix)
    PREV   (V)      token at t − 1               L0H0                   read by the K of L1H0, L1H1
    PREV2  (V)      token at t − 2               L0H2                   read by nothing
    CUR    (V)      current token again          L0H1                   read by MLP1's unread half
    MID    (V)      predicted token              L1H0 + L1H1 (½ each)   read by MLP1's used half
    OUT    (V)      predicted token              MLP1 neurons 0..V−1    read by the unembedding
    UNREAD (V)      current token again          MLP1 neurons V..2V−1   read by nothing
    BIG    (1)      a constant                   MLP0 neuron 0          read by nothing

Writing ``s`` for the sharpness (40) and ``c`` for the confidence (15):

- **L0H0** (previous-token head): attends to t − 1 (q_t = s·e_{t−1}, k_t = e_t on POS), copies the
  token (V from TOK) into PREV. **L0H2** attends to t − 2 the same way and copies into PREV2.
  **L0H1** attends to itself and copies the current token into CUR.
- **L1H0** and **L1H1** (two identical induction heads, a head and its backup): q = s·e_{x_t} (TOK)
  plus the query bias (s/2)·e_BOS, k = PREV (with k_0 = 0), v = TOK: each attends to the positions
  after earlier occurrences of x_t and writes ½·e_{x_{t+1}} into MID (so MID = e_{x_{t+1}} at every
  scored position). L1H2 is all zeros.
- **MLP1**: neuron i < V computes ReLU(MID_i) and writes it to OUT_i (the relay the output needs);
  neuron V + j computes ReLU(CUR_j) and writes it to UNREAD_j (activation variance nothing reads).
- **MLP0**: neuron 0 has input bias 1 and writes ``BIG_NORM``·e_BIG: a large constant write that
  nothing reads (a training-artefact-like norm). Its other neurons are zero.
- **Unembedding**: logits = c·OUT.

Planted findings (``benchmarks/validity.py`` runs them as its cases):

============  ===========================================  =================================================
analysis      real (the computation depends on it)         spurious (passes at w0; false by construction)
============  ===========================================  =================================================
scrubbing     output ← MLP1 ← {L1H0, L1H1}                 output ← MLP1 ← L1H0 (drops the backup L1H1)
scrubbing     the same complete circuit                    the circuit plus L0H2 (whose write nothing reads)
probing       token at t − 1 (PREV, read by L1 keys)       token at t − 2 (PREV2, read by nothing)
norms         layer-1 attention write (MID)                MLP0's constant write (BIG)
transcoders   MLP1 features reading MID, writing OUT       MLP1 features reading CUR, writing UNREAD
============  ===========================================  =================================================

Every "read by nothing" is exact: the reading weights are zero, so ablating the component leaves
the output bit-identical (``tests/test_validity.py`` checks each ground truth).

Example::

    >>> from interp.organisms import planted
    >>> model, task = planted.load(n_train=8, n_test=64)
    >>> task.evaluate(model)["accuracy"]
    1.0
    >>> sorted(planted.layout())[:3]
    ['BIG', 'CUR', 'MID']
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float, Int

if TYPE_CHECKING:  # pragma: no cover
    from interp.tasks import Task
    from transformer_lens.model_bridge import TransformerBridge

__all__ = [
    "DESCRIPTION",
    "PREV_TOKEN_HEAD",
    "PREV2_HEAD",
    "CUR_HEAD",
    "INDUCTION_HEADS",
    "BIG_NORM",
    "layout",
    "config",
    "build",
    "load",
    "subspace",
    "token_back",
    "make_task",
]

#: (layer, head) of each head, by construction
PREV_TOKEN_HEAD = (0, 0)
CUR_HEAD = (0, 1)
PREV2_HEAD = (0, 2)
INDUCTION_HEADS = ((1, 0), (1, 1))

N_TOKENS = 24  #: ordinary tokens (ids 0..23; BOS = 24)
SEQ_LEN = 24  #: tokens after BOS (n_ctx = 25)
PERIODS = (3, 8)  #: pattern length, uniform per sequence
N_TRAIN, N_TEST = 2048, 1024
SHARPNESS = 40.0
CONFIDENCE = 15.0
#: norm of MLP0's unread constant write (the same order as the layer-1 attention write, ≈ 1)
BIG_NORM = 1.0

_BLOCKS = ("TOK", "POS", "PREV", "PREV2", "CUR", "MID", "OUT", "UNREAD", "BIG")

DESCRIPTION = (
    "Hand-compiled 2-layer, 3-head transformer with ReLU MLPs (no LayerNorm) that solves the induction "
    "task exactly and carries planted spurious structure beside its real circuit: a backup induction "
    "head (L1H1 duplicates L1H0), a head writing the token at t-2 that nothing reads (L0H2), MLP1 "
    "neurons that relay the prediction (read MID, write OUT) beside neurons whose output nothing reads, "
    "and a constant MLP0 write that nothing reads. Ground truth for the validity suite. Test accuracy 1.0."
)


def layout(n_tokens: int = N_TOKENS, n_ctx: int = SEQ_LEN + 1) -> dict[str, slice]:
    """The residual-stream blocks (standard basis coordinates) of the planted model."""
    v = n_tokens + 1
    sizes = {"TOK": v, "POS": n_ctx, "PREV": v, "PREV2": v, "CUR": v, "MID": v, "OUT": v, "UNREAD": v,
             "BIG": 1}
    out, lo = {}, 0
    for name in _BLOCKS:
        out[name] = slice(lo, lo + sizes[name])
        lo += sizes[name]
    return out


def config() -> dict[str, Any]:
    """The native-bridge config dict of the planted model."""
    v, n_ctx = N_TOKENS + 1, SEQ_LEN + 1
    return {
        "d_model": layout()["BIG"].stop,
        "d_head": max(v, n_ctx),
        "n_heads": 3,
        "n_layers": 2,
        "n_ctx": n_ctx,
        "d_vocab": v,
        "d_mlp": 2 * v,
        "act_fn": "relu",
        "normalization_type": None,
        "positional_embedding_type": "standard",
        "model_name": "interp-planted",
    }


def subspace(name: str) -> Float[torch.Tensor, "d_model k"]:
    """An orthonormal basis ``[d_model, k]`` of block ``name`` (see :func:`layout`)."""
    lay = layout()
    if name not in lay:
        raise ValueError(f"subspace({name!r}): unknown block; available: {list(lay)}.")
    return torch.eye(lay["BIG"].stop)[:, lay[name]].contiguous()


def build(big_norm: float = BIG_NORM, sharpness: float = SHARPNESS, confidence: float = CONFIDENCE
          ) -> TransformerBridge:
    """The planted model (eval mode), weights as in the module docstring.

    ``big_norm``: the norm of MLP0's unread constant write (a finite number ≥ 0); ``sharpness`` (s)
    and ``confidence`` (c) as in the module docstring (finite numbers > 0).
    """
    from interp.organisms._weights import build_with_state
    from interp.organisms.compiled import native_state

    if isinstance(big_norm, bool) or not isinstance(big_norm, (int, float)) or not math.isfinite(big_norm) \
            or big_norm < 0:
        raise ValueError(f"planted.build: big_norm={big_norm!r} must be a finite number ≥ 0, e.g. 1.0.")
    for name, value in (("sharpness", sharpness), ("confidence", confidence)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"planted.build: {name}={value!r} must be a finite number > 0.")
    cfg = config()
    lay = layout()
    d, dh, nh, vocab, n_ctx, d_mlp = (cfg["d_model"], cfg["d_head"], cfg["n_heads"], cfg["d_vocab"],
                                      cfg["n_ctx"], cfg["d_mlp"])
    s, c, scale = sharpness, confidence, math.sqrt(dh)  # the bridge divides scores by √d_head
    bos = N_TOKENS

    def at(name: str, i: int) -> int:
        return lay[name].start + i

    W_Q, W_K, W_V = (torch.zeros(2, nh, d, dh) for _ in range(3))
    W_O = torch.zeros(2, nh, dh, d)
    b_Q = torch.zeros(2, nh, dh)
    # layer 0: attend to t − offset by position, copy the token into a block
    for (layer, head), offset, block in ((PREV_TOKEN_HEAD, 1, "PREV"), (CUR_HEAD, 0, "CUR"), (PREV2_HEAD, 2, "PREV2")):
        for t in range(n_ctx):
            if t >= offset:
                W_Q[layer, head, at("POS", t), t - offset] = s * scale
            W_K[layer, head, at("POS", t), t] = 1.0
        for x in range(vocab):
            W_V[layer, head, at("TOK", x), x] = 1.0
            W_O[layer, head, x, at(block, x)] = 1.0
    # layer 1: two identical induction heads, each writing half the prediction into MID
    for layer, head in INDUCTION_HEADS:
        for x in range(vocab):
            W_Q[layer, head, at("TOK", x), x] = s * scale
            W_K[layer, head, at("PREV", x), x] = 1.0
            W_V[layer, head, at("TOK", x), x] = 1.0
            W_O[layer, head, x, at("MID", x)] = 0.5
        W_K[layer, head, at("POS", 0), bos] = -1.0  # k_0 = 0: position 0 is never the default key
        b_Q[layer, head, bos] = s / 2 * scale        # the default key (t' = 1) scores s/2
    # MLPs (nn.Linear layouts: in.weight [d_mlp, d_model], out.weight [d_model, d_mlp])
    mlp_in, mlp_out = torch.zeros(2, d_mlp, d), torch.zeros(2, d, d_mlp)
    mlp_b_in = torch.zeros(2, d_mlp)
    mlp_b_in[0, 0] = 1.0
    mlp_out[0, at("BIG", 0), 0] = big_norm
    for x in range(vocab):
        mlp_in[1, x, at("MID", x)] = 1.0
        mlp_out[1, at("OUT", x), x] = 1.0
        mlp_in[1, vocab + x, at("CUR", x)] = 1.0
        mlp_out[1, at("UNREAD", x), vocab + x] = 1.0
    W_E = torch.zeros(vocab, d)
    W_E[torch.arange(vocab), [at("TOK", x) for x in range(vocab)]] = 1.0
    W_pos = torch.zeros(n_ctx, d)
    W_pos[torch.arange(n_ctx), [at("POS", t) for t in range(n_ctx)]] = 1.0
    W_U = torch.zeros(vocab, d)
    W_U[torch.arange(vocab), [at("OUT", x) for x in range(vocab)]] = c

    state = native_state(W_E, W_pos, W_U, W_Q, W_K, W_V, W_O, b_Q)
    for layer in range(2):
        state[f"blocks.{layer}.mlp.in.weight"] = mlp_in[layer]
        state[f"blocks.{layer}.mlp.in.bias"] = mlp_b_in[layer]
        state[f"blocks.{layer}.mlp.out.weight"] = mlp_out[layer]
        state[f"blocks.{layer}.mlp.out.bias"] = torch.zeros(d)
    return build_with_state(cfg, state, "planted.build")


def token_back(offset: int, n_classes: int = 4, start: int = 2):
    """Per-token probe label: the token at ``t − offset`` modulo ``n_classes`` (−1 before ``start``
    and at BOS), for ``analyses.probing.ProbeConfig(label=...)``. ``token_back(1)`` is what PREV holds
    (used), ``token_back(2)`` what PREV2 holds (unused)."""
    for name, value, low in (("offset", offset, 1), ("n_classes", n_classes, 2), ("start", start, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"token_back: {name}={value!r} must be an int ≥ {low}.")

    def label(data: dict[str, torch.Tensor]) -> Int[torch.Tensor, "rows pos"]:
        ids = data["input_ids"].long()
        y = torch.full_like(ids, -1)
        y[:, offset:] = ids[:, :-offset] % n_classes
        y[:, : max(start, offset + 1)] = -1  # the token back is BOS (or the position is too early)
        return y

    label.__name__ = f"token_back_{offset}"
    label.__qualname__ = label.__name__
    return label


def _generate(n: int, rng: np.random.Generator) -> dict[str, list]:
    lo, hi = PERIODS
    periods = rng.integers(lo, hi + 1, size=n)
    ids = np.empty((n, SEQ_LEN + 1), dtype=np.int64)
    mask = np.zeros((n, SEQ_LEN + 1), dtype=np.int64)
    ids[:, 0] = N_TOKENS
    for i, period in enumerate(periods):
        ids[i, 1:] = np.resize(rng.choice(N_TOKENS, size=period, replace=False), SEQ_LEN)
        mask[i, 1 + period:] = 1
    return {"input_ids": ids.tolist(), "target_mask": mask.tolist(), "period": periods.tolist()}


def make_task(seed: int = 0, n_train: int = N_TRAIN, n_test: int = N_TEST) -> Task:
    """The repeated-pattern task: ``input_ids``, ``target_mask`` and ``period`` columns; deterministic
    in ``seed``."""
    from interp.organisms.induction import make_splits
    from interp.tasks import Task

    return Task("planted-induction", make_splits(_generate, seed, n_train, n_test),
                description="Predict repeated tokens of a random pattern (period 3-8, 24 tokens).")


def load(seed: int = 0, n_train: int | None = None, n_test: int | None = None, **kwargs: Any
         ) -> tuple[TransformerBridge, Task]:
    """The planted model and its task (:func:`make_task`); ``kwargs`` go to :func:`build`
    (``big_norm``)."""
    bad = set(kwargs) - {"big_norm", "sharpness", "confidence"}
    if bad:
        raise ValueError(f"planted.load: unknown option(s) {sorted(bad)}; allowed: big_norm, sharpness, "
                         "confidence.")
    sizes = {k: v for k, v in (("n_train", n_train), ("n_test", n_test)) if v is not None}
    return build(**kwargs), make_task(seed, **sizes)
