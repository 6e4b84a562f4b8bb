"""Compiled induction organism: a transformer whose induction circuit is set by hand, not trained.

A ground truth for circuit-finding methods (causal scrubbing, ablations, probes): every weight is
written down below, so which heads matter, what each reads and writes, and which inputs each is
invariant to are known *by construction*. (The role tracr plays for RASP programs, Lindner et al. 2023,
without its JAX dependency: the program is small enough to compile by hand.)

It solves the induction organism's task (:mod:`interp.organisms.induction`: BOS, then a pattern of
``period`` distinct tokens repeated; scored where the next token already occurred) with the two-head
circuit of Elhage et al. 2021 (a previous-token head K-composed into an induction head), exactly.

Construction. A 2-layer, 2-head, attention-only native ``TransformerBridge`` without LayerNorm and
with every bias zero, so the residual stream is the plain sum of the writes. With ``V = n_tokens + 1``
token ids (BOS = ``n_tokens``) and ``n_ctx`` positions, the stream is split into orthogonal blocks of
standard basis vectors (:func:`layout`)::

    TOK  (V dims)      one-hot current token        written by the token embedding  W_E[x] = e^TOK_x
    POS  (n_ctx dims)  one-hot position             written by the pos. embedding   W_pos[t] = e^POS_t
    PREV (V dims)      one-hot previous token       written by L0H0
    CUR  (V dims)      one-hot current token again  written by the decoys L0H1, L1H1 (read by nothing)
    OUT  (V dims)      one-hot predicted token      written by L1H0, read by the unembedding

d_head = max(V, n_ctx). Write ``s`` for the sharpness (``sharpness``) and ``√d_head`` for the
bridge's attention scale (folded into W_Q, so scores are as written).

- **L0H0, previous-token head.** q_t = s·e_{t−1} (from POS; q_0 = 0), k_t = e_t (from POS), so
  the score is s·[k = t − 1]: for t ≥ 1 the head attends to t − 1 with weight ≥ 1 − t·e^{−s}
  (position 0 sees only itself). v_t = e_{x_t} (from TOK), W_O writes it into PREV. So PREV at
  position t holds e_{x_{t−1}} (e_BOS at t = 0) and depends on the input only through the token
  at t − 1.
- **L1H0, induction head.** q_t = s·e_{x_t} + (s/2)·e_BOS (from TOK; the second term is the query
  bias), k_t' = PREV_t' − POS_t'[0]·e_BOS = e_{x_{t'−1}} except k_0 = 0, so the score of key t' is

      s·[x_{t'−1} = x_t] + (s/2)·[t' = 1]

  (x_{t'−1} is BOS only at t' = 1, and the query token is never BOS for t ≥ 1). The head attends
  (uniformly) to every earlier position whose predecessor is the current token; when there is none
  (the last token of the first period) it falls back to position 1, the token after BOS, which is
  what follows the pattern's last token. v = e_{x_t'} (from TOK), W_O writes it into OUT. On the
  task the token after every earlier occurrence of x_t is the same, so OUT_t = e_{x_{t+1}} at every
  scored position up to a leak of at most t·e^{−s/2} (the weight on keys scoring s/2 less).
- **Unembedding.** logits = c·OUT (``confidence`` c), so a scored prediction has log-probability
  −log(1 + (V − 1)·e^{−c}) (2.0e−5 nats for the defaults).
- **Decoys L0H1, L1H1.** Attend to the current position (q_t = s·e_t, k_t = e_t from POS) and copy the
  current token into CUR, which nothing reads: plausible-looking heads that carry token information
  the output does not use. (A "wrong heads" hypothesis names them.)

So the true hypothesis is: output ← L1H0 only; its Q needs only the token at the query position, its
K only L0H0 (which needs only the token at t − 1), its V only the token at the key position (the
positional embedding and the query bias are the same for every input, so resampling them is a no-op).
Scrubbing it feeds L1H0 exactly the features the clean model computes, so it recovers 100% of the
loss up to float rounding and the e^{−s/2} leaks; any claim that drops one of these features (wrong
head, K from the embedding, Q/K swapped, V from layer 0, the previous-token head keyed on the wrong
position) leaves L1H0 reading a random input's feature there. Such a hypothesis still recovers a
little against a baseline that randomises every feature (measured 0.15–0.24: e.g. with K random,
L1H0 still falls back to position 1 when nothing matches, which is right at the end of each
period), never close to 1.

Example::

    >>> from interp.organisms import compiled
    >>> model, task = compiled.load(n_train=8, n_test=64)
    >>> task.evaluate(model)["accuracy"]
    1.0
    >>> sorted(compiled.layout())
    ['CUR', 'OUT', 'POS', 'PREV', 'TOK']
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float

if TYPE_CHECKING:  # pragma: no cover
    from interp.tasks import Task
    from transformer_lens.model_bridge import TransformerBridge

__all__ = [
    "DESCRIPTION",
    "PREV_TOKEN_HEAD",
    "INDUCTION_HEAD",
    "DECOY_HEADS",
    "layout",
    "config",
    "build",
    "load",
    "subspace",
]

#: (layer, head) of the heads, by construction
PREV_TOKEN_HEAD = (0, 0)
INDUCTION_HEAD = (1, 0)
DECOY_HEADS = ((0, 1), (1, 1))

N_TOKENS = 64  #: the induction organism's ordinary tokens (ids 0..63; BOS = 64)
SEQ_LEN = 32  #: tokens after BOS (n_ctx = 33)
SHARPNESS = 40.0  #: attention score of a match (s); keys scoring s/2 less leak e^{-s/2} ≈ 2e-9
CONFIDENCE = 15.0  #: logit of the predicted token (c)

DESCRIPTION = (
    "Hand-compiled 2-layer, 2-head attention-only transformer (no LayerNorm, no biases, d_model "
    f"{4 * (N_TOKENS + 1) + SEQ_LEN + 1}) that solves the induction organism's task exactly with a "
    "known circuit: previous-token head L0H0 writes the previous token into a dedicated subspace, "
    "induction head L1H0 keys on it and copies the token after the earlier occurrence; decoy heads "
    "L0H1 and L1H1 copy the current token into a subspace nothing reads. Ground truth for circuit "
    "methods (e.g. causal scrubbing: the true hypothesis recovers 100%). Test accuracy 1.0."
)

_BLOCKS = ("TOK", "POS", "PREV", "CUR", "OUT")


def layout(n_tokens: int = N_TOKENS, n_ctx: int = SEQ_LEN + 1) -> dict[str, slice]:
    """The residual-stream blocks (standard basis coordinates) of the compiled model."""
    v = n_tokens + 1
    sizes = {"TOK": v, "POS": n_ctx, "PREV": v, "CUR": v, "OUT": v}
    out, lo = {}, 0
    for name in _BLOCKS:
        out[name] = slice(lo, lo + sizes[name])
        lo += sizes[name]
    return out


def config(n_tokens: int = N_TOKENS, seq_len: int = SEQ_LEN) -> dict[str, Any]:
    """The native-bridge config dict of the compiled model."""
    for name, value in (("n_tokens", n_tokens), ("seq_len", seq_len)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise ValueError(f"compiled.config: {name}={value!r} must be an int ≥ 2.")
    n_ctx = seq_len + 1
    lay = layout(n_tokens, n_ctx)
    return {
        "d_model": lay["OUT"].stop,
        "d_head": max(n_tokens + 1, n_ctx),
        "n_heads": 2,
        "n_layers": 2,
        "n_ctx": n_ctx,
        "d_vocab": n_tokens + 1,
        "attn_only": True,
        "normalization_type": None,
        "positional_embedding_type": "standard",
        "model_name": "interp-compiled-induction",
    }


def subspace(name: str, n_tokens: int = N_TOKENS, seq_len: int = SEQ_LEN) -> Float[torch.Tensor, "d_model k"]:
    """An orthonormal basis ``[d_model, k]`` of block ``name`` (``"TOK"``, ``"POS"``, ``"PREV"``,
    ``"CUR"``, ``"OUT"``): e.g. for a hypothesis node's ``subspace``."""
    lay = layout(n_tokens, seq_len + 1)
    if name not in lay:
        raise ValueError(f"subspace({name!r}): unknown block; available: {list(lay)}.")
    eye = torch.eye(lay["OUT"].stop)
    return eye[:, lay[name]].contiguous()


def native_state(W_E: torch.Tensor, W_pos: torch.Tensor, W_U: torch.Tensor, W_Q: torch.Tensor, W_K: torch.Tensor,
                 W_V: torch.Tensor, W_O: torch.Tensor, b_Q: torch.Tensor) -> dict[str, torch.Tensor]:
    """The state dict of a native bridge without LayerNorm from weights written the TransformerLens
    way: ``W_E`` [vocab, d], ``W_pos`` [n_ctx, d], ``W_U`` [vocab, d] (nn.Linear layout),
    ``W_Q``/``W_K``/``W_V`` [layer, head, d, d_head], ``W_O`` [layer, head, d_head, d], query bias
    ``b_Q`` [layer, head, d_head]; every other bias zero. Shared by the hand-compiled organisms."""
    n_layers, n_heads, d, dh = W_Q.shape
    state: dict[str, torch.Tensor] = {"embed.weight": W_E, "pos_embed.weight": W_pos,
                                      "unembed.weight": W_U, "unembed.bias": torch.zeros(W_U.shape[0])}
    for layer in range(n_layers):
        # nn.Linear layouts: q/k/v.weight [head·d_head, d_model], o.weight [d_model, head·d_head]
        for name, w in (("q", W_Q), ("k", W_K), ("v", W_V)):
            state[f"blocks.{layer}.attn.{name}.weight"] = w[layer].permute(0, 2, 1).reshape(n_heads * dh, d)
            state[f"blocks.{layer}.attn.{name}.bias"] = (b_Q[layer].reshape(-1) if name == "q"
                                                         else torch.zeros(n_heads * dh))
        state[f"blocks.{layer}.attn.o.weight"] = W_O[layer].permute(2, 0, 1).reshape(d, n_heads * dh)
        state[f"blocks.{layer}.attn.o.bias"] = torch.zeros(d)
    return state


def _check_positive(name: str, value: float) -> None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or not value > 0:
        raise ValueError(f"compiled.build: {name}={value!r} must be a finite number > 0.")


def build(n_tokens: int = N_TOKENS, seq_len: int = SEQ_LEN, sharpness: float = SHARPNESS,
          confidence: float = CONFIDENCE) -> TransformerBridge:
    """The compiled induction model (eval mode), weights as in the module docstring.

    Args:
        n_tokens: ordinary token ids ``0..n_tokens−1``; BOS is ``n_tokens`` (vocabulary ``n_tokens+1``).
        seq_len: tokens after BOS (``n_ctx = seq_len + 1``).
        sharpness: s, the attention score of a match (keys scoring s/2 less get weight ≤ e^{−s/2}
            relative to it).
        confidence: c, the logit given to the predicted token.
    """
    from interp.organisms._weights import build_with_state

    _check_positive("sharpness", sharpness)
    _check_positive("confidence", confidence)
    cfg = config(n_tokens, seq_len)
    lay = layout(n_tokens, cfg["n_ctx"])
    d, dh, n_heads, vocab, n_ctx = cfg["d_model"], cfg["d_head"], cfg["n_heads"], cfg["d_vocab"], cfg["n_ctx"]
    scale = math.sqrt(dh)  # the bridge divides scores by √d_head

    def block(name: str, i: int) -> int:
        return lay[name].start + i

    # TransformerLens convention: W_Q/K/V [layer, head, d_model, d_head], W_O [layer, head, d_head, d_model]
    W_Q = torch.zeros(2, n_heads, d, dh)
    W_K = torch.zeros(2, n_heads, d, dh)
    W_V = torch.zeros(2, n_heads, d, dh)
    W_O = torch.zeros(2, n_heads, dh, d)
    for t in range(n_ctx):
        # L0H0: q_t = s·e_{t−1}, k_t = e_t (positions)
        if t >= 1:
            W_Q[0, 0, block("POS", t), t - 1] = sharpness * scale
        W_K[0, 0, block("POS", t), t] = 1.0
        # decoys: q_t = s·e_t, k_t = e_t (attend to self)
        for layer, head in DECOY_HEADS:
            W_Q[layer, head, block("POS", t), t] = sharpness * scale
            W_K[layer, head, block("POS", t), t] = 1.0
    for x in range(vocab):
        # L0H0 and the decoys copy the token: v = e_x; L0H0 writes PREV, the decoys CUR
        for layer, head in (PREV_TOKEN_HEAD, *DECOY_HEADS):
            W_V[layer, head, block("TOK", x), x] = 1.0
            W_O[layer, head, x, block("PREV" if (layer, head) == PREV_TOKEN_HEAD else "CUR", x)] = 1.0
        # L1H0: q = s·e_{x_t} (TOK), k = PREV, v = e_{x_t'} (TOK), writes OUT
        W_Q[1, 0, block("TOK", x), x] = sharpness * scale
        W_K[1, 0, block("PREV", x), x] = 1.0
        W_V[1, 0, block("TOK", x), x] = 1.0
        W_O[1, 0, x, block("OUT", x)] = 1.0
    bos = n_tokens
    W_K[1, 0, block("POS", 0), bos] = -1.0  # k_0 = e_BOS − e_BOS = 0: position 0 is never the default
    b_Q = torch.zeros(2, n_heads, dh)
    b_Q[1, 0, bos] = sharpness / 2 * scale  # the default key (t' = 1) scores s/2 for every query
    W_E = torch.zeros(vocab, d)
    W_E[torch.arange(vocab), [block("TOK", x) for x in range(vocab)]] = 1.0
    W_pos = torch.zeros(n_ctx, d)
    W_pos[torch.arange(n_ctx), [block("POS", t) for t in range(n_ctx)]] = 1.0
    W_U = torch.zeros(vocab, d)  # nn.Linear layout [d_vocab, d_model]
    W_U[torch.arange(vocab), [block("OUT", x) for x in range(vocab)]] = confidence

    state = native_state(W_E, W_pos, W_U, W_Q, W_K, W_V, W_O, b_Q)
    return build_with_state(cfg, state, "compiled.build")


def load(seed: int = 0, n_train: int | None = None, n_test: int | None = None, **kwargs: Any
         ) -> tuple[TransformerBridge, Task]:
    """The compiled model and the induction organism's task (``induction.make_task(seed, ...)``).

    ``kwargs`` go to :func:`build` (``sharpness``, ``confidence``); the task's vocabulary and length
    are the organism's, so ``n_tokens``/``seq_len`` are fixed here.
    """
    from interp.organisms import induction

    bad = set(kwargs) - {"sharpness", "confidence"}
    if bad:
        raise ValueError(f"compiled.load: unknown option(s) {sorted(bad)}; allowed: sharpness, confidence "
                         "(n_tokens/seq_len are the induction task's; use build() for others).")
    sizes = {k: v for k, v in (("n_train", n_train), ("n_test", n_test)) if v is not None}
    task = induction.make_task(seed, **sizes)
    return build(induction.N_TOKENS, induction.SEQ_LEN, **kwargs), task
