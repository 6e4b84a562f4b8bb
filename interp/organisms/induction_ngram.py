"""Induction + n-gram organism: a 2-layer, 4-heads-per-layer attention-only transformer whose heads
specialise into induction, previous-token and n-gram ("multigram") heads.

Why it exists. Wang, Hoogland, van Wingerden, Furman, Murfet ("Differentiation and specialization of
attention heads via the refined local learning coefficient", ICLR 2025) found that, in a two-layer
attention-only language model, heads implementing a general algorithm (induction) end training with a
*lower* weight-restricted learning coefficient λ̂ than heads that memorise n-grams, and that per-head
λ̂ curves over training separate the head types. This organism is a small synthetic stand-in for
their language model, on which that ordering can be measured in minutes on a CPU
(``benchmarks/head_llc.py``).

Corpus. Ordinary tokens ``0 .. 63`` are split into :data:`ANCHORS` (``0 .. 23``), :data:`GLUE`
(``24 .. 26``) and filler (``27 .. 63``); :data:`BOS` = 64. A fixed table of :data:`N_GRAMS` trigrams
(:data:`TRIGRAMS`: ``(anchor_i, glue_{i mod 3}, target_i)``, ``target_i`` distinct filler tokens) is
part of the organism. A row is BOS followed by :data:`SEQ_LEN` tokens, of one of two kinds (half each,
:data:`TEXT_FRACTION`):

- **text**: random filler tokens holding 4-6 trigrams (:data:`NGRAMS_PER_TEXT`) at random
  non-overlapping places. A trigram's target is predictable only by memory: each glue token follows 8
  anchors, so ``target_i`` needs the token *before* the glue (a lookup table of 24 entries; ln 8 = 2.08
  nats from the glue token alone, 0 with the anchor). Marked ``ngram_mask``;
- **repeated**: a pattern of ``period`` distinct filler tokens (uniform in :data:`PERIODS`) repeated;
  position ``t ≥ 1 + period`` repeats ``t − period`` and is predictable only by a general algorithm
  (induction: the period varies, so no positional rule works). Marked ``repeat_mask``.

The loss (``target_mask`` = ``ngram_mask`` | ``repeat_mask``) scores the predictable tokens only, as
the induction organism does: with the unpredictable filler tokens scored too (tried first) the model
lowered the repeated-token loss without forming induction heads (induction scores ≤ 0.1 after 1000
steps). That loss is the objective the weight-restricted λ̂ is measured on.

Head scores (attention ``A[q, k]`` from ``blocks.{l}.attn.hook_pattern``):

- previous-token score ``mean_{q ≥ 2} A[q, q − 1]`` (:func:`previous_token_scores`);
- induction score ``mean_{q ≥ period + 1} A[q, q − period + 1]`` on repeated *random* filler tokens with
  no n-grams (:func:`repeated_tokens_task`, :func:`induction_scores`): the standard test of
  Olsson et al. 2022;
- ablation effects (:func:`ablation_effects`): the increase of the n-gram-target loss and of the
  repeated-token loss when the head's output ``z`` is replaced by its mean over the test split.

:func:`head_types` classifies each head from these scores with the thresholds of
:data:`HEAD_TYPE_THRESHOLDS`; the shipped weights' types are :data:`HEAD_TYPES`: induction heads
L1H0-L1H3, previous-token head L0H1, n-gram heads L0H0, L0H2, L0H3. Their weight-restricted λ̂
(``benchmarks/head_llc.py``, nβ = 300, γ = 100) is ordered as Wang et al. found: induction 4-11, n-gram
21-30 at the end of training, and lower on average at every checkpoint measured (the types coincide
with the layers here, so a layer effect is not excluded).

Training (:func:`train`): the loop of :func:`interp.organisms.induction.fit` (AdamW, lr 3e-3, weight
decay 0.01, batches of 64 rows), :data:`STEPS` steps on ``target_mask``; checkpoints at :data:`CHECKPOINT_STEPS`
go to ``weights/induction_ngram_checkpoints`` (stored as float16 to keep the package small; they load
as float32). ``interp organisms train induction_ngram --out DIR`` reruns it.

Example::

    >>> from interp.organisms import induction_ngram
    >>> model, task = induction_ngram.load(n_train=64, n_test=128)   # fewer rows than the default
    >>> induction_ngram.head_types(model, task)["L1H0"]
    'induction'

    The weight-restricted λ̂ of one head, with a short chain (``benchmarks/head_llc.py`` runs every
    head of ``head_components(model)``, with four longer chains):

    >>> from interp.degradations import estimate_component_llcs
    >>> head = {"L1H0": induction_ngram.head_components(model)["L1H0"]}
    >>> est = estimate_component_llcs(model, task, components=head, nbeta=300.0, lr=1e-4, chains=2,
    ...                               n_draws=10, burnin=10, progress=False)
    >>> est["L1H0"].n_weights, est["L1H0"].interval[0] < est["L1H0"].mean < est["L1H0"].interval[1]
    (2340, True)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float

from interp.organisms import induction
from interp.organisms._weights import (
    WEIGHTS_DIR, check_steps, checkpoint_saver, load_bridge, load_checkpoints, save_trained,
)
from interp.tasks import Task
from interp.models import device_of

if TYPE_CHECKING:  # pragma: no cover
    from transformer_lens.model_bridge import TransformerBridge

__all__ = [
    "DESCRIPTION",
    "CONFIG",
    "TRIGRAMS",
    "make_task",
    "repeated_tokens_task",
    "train",
    "load",
    "checkpoints",
    "previous_token_scores",
    "induction_scores",
    "ablation_effects",
    "head_types",
    "head_components",
    "head_names",
]

logger = logging.getLogger(__name__)

NAME = "induction_ngram"
N_TOKENS = 64  #: ordinary tokens are ids 0 .. N_TOKENS - 1
BOS = N_TOKENS
ANCHORS = tuple(range(0, 24))  #: first tokens of the trigrams
GLUE = tuple(range(24, 27))  #: middle tokens of the trigrams (each shared by 8 trigrams)
FILLER = tuple(range(27, N_TOKENS))  #: everything else (and the trigrams' last tokens)
N_GRAMS = len(ANCHORS)
SEQ_LEN = 40  #: tokens after BOS
PERIODS = (8, 20)  #: inclusive range of the period of a repeated row
NGRAMS_PER_TEXT = (4, 6)  #: inclusive range of the number of trigrams in a text row
TEXT_FRACTION = 0.5  #: share of text rows (the others are repeated patterns)
N_TRAIN, N_TEST = 16384, 1024
TABLE_SEED = 20250424  #: seeds the trigram table (fixed: part of the organism, not of the task seed)


def _trigram_table() -> tuple[tuple[int, int, int], ...]:
    rng = np.random.default_rng(TABLE_SEED)
    targets = rng.choice(FILLER, size=N_GRAMS, replace=False)
    return tuple((a, GLUE[i % len(GLUE)], int(t)) for i, (a, t) in enumerate(zip(ANCHORS, targets)))


#: the memorisable trigrams ``(anchor, glue, target)``
TRIGRAMS = _trigram_table()

CONFIG: dict = {
    "d_model": 48,
    "d_head": 12,
    "n_heads": 4,
    "n_layers": 2,
    "n_ctx": SEQ_LEN + 1,
    "d_vocab": N_TOKENS + 1,
    "attn_only": True,
    "normalization_type": "LN",
    "positional_embedding_type": "standard",
    "model_name": "interp-induction-ngram",
}

STEPS = 800
#: steps at which checkpoints are saved (spanning the formation of both head types; the final
#: weights are the shipped model)
CHECKPOINT_STEPS = (50, 100, 200, 300, 400, 600)
WEIGHTS_FILE = "induction_ngram.safetensors"
CHECKPOINT_DIR = "induction_ngram_checkpoints"

#: how :func:`head_types` classifies a head (nats for the ablation effects)
HEAD_TYPE_THRESHOLDS = {"induction": 0.3, "previous_token": 0.3, "ngram_loss": 0.05}

#: head types of the shipped weights by :func:`head_types`. Scores: induction 0.54/0.44/0.53/0.55 (layer 1;
#: layer 0 ≤ 0.03), previous-token 0.39 (L0H1; others ≤ 0.22), mean-ablation n-gram-target loss
#: increase 0.52/0.41/0.16/0.10 nats (layer 0; layer 1 ≤ 0.02), repeated-token 3.80 for L0H1, ≤ 0.05
#: for every other head (the four induction heads are redundant: each alone costs ≤ 0.015 nats).
HEAD_TYPES: dict[str, str] = {
    "L0H0": "ngram", "L0H1": "previous_token", "L0H2": "ngram", "L0H3": "ngram",
    "L1H0": "induction", "L1H1": "induction", "L1H2": "induction", "L1H3": "induction",
}

DESCRIPTION = (
    "2-layer, 4-heads-per-layer, d_model 48 attention-only transformer (LayerNorm) trained on rows of a "
    f"BOS plus {SEQ_LEN} tokens: half text rows (random filler holding {NGRAMS_PER_TEXT[0]}-"
    f"{NGRAMS_PER_TEXT[1]} of {N_GRAMS} fixed trigrams anchor-glue-target; the targets scored), half "
    f"repeated patterns (period {PERIODS[0]}-{PERIODS[1]}; the repeats scored). Head types: induction "
    "heads L1H0-L1H3 (induction scores 0.44-0.55), previous-token head L0H1 (0.39), n-gram heads L0H0, "
    "L0H2, L0H3 (mean-ablation raises the trigram-target loss by 0.52/0.16/0.10 nats). Test loss 0.004 "
    "nats, accuracy 0.999. Training checkpoints at steps 50-600 ship too (the heads form at ~100-300)."
)


# ---------------------------------------------------------------------------------------------- data
def _place(length: int, m: int, rng: np.random.Generator) -> list[int]:
    """``m`` random non-overlapping starts of 3-token blocks in ``0 .. length − 1``."""
    gaps = np.sort(rng.choice(length - 3 * m + m, size=m, replace=False))
    return [int(g) + 2 * j for j, g in enumerate(gaps)]


def _generate(n: int, rng: np.random.Generator, text_fraction: float = TEXT_FRACTION) -> dict[str, list]:
    """``n`` rows, each a text row (probability ``text_fraction``) or a repeated pattern."""
    lo, hi = PERIODS
    filler = np.asarray(FILLER)
    ids = np.empty((n, SEQ_LEN + 1), dtype=np.int64)
    ngram_mask = np.zeros((n, SEQ_LEN + 1), dtype=np.int64)
    repeat_mask = np.zeros((n, SEQ_LEN + 1), dtype=np.int64)
    periods = np.full(n, SEQ_LEN, dtype=np.int64)
    ids[:, 0] = BOS
    for i in range(n):
        if rng.random() < text_fraction:
            row = rng.choice(filler, size=SEQ_LEN)
            m = int(rng.integers(NGRAMS_PER_TEXT[0], NGRAMS_PER_TEXT[1] + 1))
            for s in _place(SEQ_LEN, m, rng):
                row[s : s + 3] = TRIGRAMS[int(rng.integers(N_GRAMS))]
                ngram_mask[i, 1 + s + 2] = 1
            ids[i, 1:] = row
        else:
            period = int(rng.integers(lo, hi + 1))
            ids[i, 1:] = np.resize(rng.choice(filler, size=period, replace=False), SEQ_LEN)
            repeat_mask[i, 1 + period :] = 1
            periods[i] = period
    target_mask = repeat_mask | ngram_mask
    return {
        "input_ids": ids.tolist(),
        "target_mask": target_mask.tolist(),
        "repeat_mask": repeat_mask.tolist(),
        "ngram_mask": ngram_mask.tolist(),
        "period": periods.tolist(),
    }


def make_task(seed: int = 0, n_train: int = N_TRAIN, n_test: int = N_TEST) -> Task:
    """The training task: ``input_ids``, ``target_mask`` (the trained loss: ``repeat_mask`` |
    ``ngram_mask``), ``repeat_mask`` (repeated tokens of repeated rows), ``ngram_mask`` (trigram targets
    of text rows) and ``period`` (:data:`SEQ_LEN` on text rows: nothing repeats). Deterministic in
    ``seed`` (independent train and test streams)."""
    return Task(
        NAME,
        induction.make_splits(_generate, seed, n_train, n_test),
        description="Predict the trigram targets of text rows and the repeated tokens of repeated rows.",
    )


def repeated_tokens_task(seed: int = 0, n_test: int = 512) -> Task:
    """Repeated random filler tokens, no trigrams (the same periods): the standard induction test."""
    return Task(
        f"{NAME}-repeated",
        induction.make_splits(lambda n, rng: _generate(n, rng, text_fraction=0.0), seed + 1, 1, n_test),
        description="Repeated random filler tokens (induction-score test set).",
    )


# -------------------------------------------------------------------------------------------- scores
def head_names(model: torch.nn.Module) -> list[str]:
    """``["L0H0", "L0H1", ...]``: one name per (layer, head), layer-major."""
    return [f"L{layer}H{h}" for layer in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)]


def previous_token_scores(model: torch.nn.Module, task: Task, split: str = "test",
                          eval_rows: int = 256) -> Float[torch.Tensor, "layer head"]:
    """Mean attention from each query ``q ≥ 2`` to ``q − 1``, per (layer, head)."""
    return induction.previous_token_scores(model, task, split, eval_rows)


def induction_scores(model: torch.nn.Module, task: Task | None = None, split: str = "test",
                     eval_rows: int = 256) -> Float[torch.Tensor, "layer head"]:
    """Mean attention from each repeated-token query ``q`` to ``q − period + 1`` on repeated random
    tokens (``task``: :func:`repeated_tokens_task` by default), per (layer, head)."""
    return induction.induction_scores(model, task or repeated_tokens_task(), split, eval_rows)


def _head_slice(z: torch.Tensor, head: int, d_head: int) -> tuple[Any, ...]:
    if z.ndim == 4:  # [batch, pos, head, d_head]
        return (..., head, slice(None))
    return (..., slice(head * d_head, (head + 1) * d_head))  # [batch, pos, head·d_head]


@torch.no_grad()
def ablation_effects(model: torch.nn.Module, task: Task, split: str = "test",
                     eval_rows: int = 512) -> dict[str, dict[str, float]]:
    """Per head (``"L1H0"``, ...): the loss increase (nats/token) on the n-gram targets
    (``"ngram"``, ``ngram_mask``) and on the repeated tokens (``"repeat"``, ``repeat_mask``) when the
    head's ``z`` is replaced by its mean over the ``eval_rows`` rows (mean ablation), plus ``"all"``
    (every scored token)."""
    data = task.tensors(split, rows=eval_rows, columns=("input_ids", "target_mask", "repeat_mask", "ngram_mask"))
    device = device_of(model)
    ids = data["input_ids"].long().to(device)
    masks = {k: data[f"{k}_mask"][:, 1:].bool().to(device) for k in ("ngram", "repeat", "target")}
    d_head = model.cfg.d_head

    def losses() -> dict[str, float]:
        logp = torch.log_softmax(model(ids)[:, :-1].float(), -1)
        nll = -logp.gather(-1, ids[:, 1:, None])[..., 0]
        return {k: nll[m].mean().item() for k, m in masks.items()}

    means = {}
    handles = []
    try:
        for layer in range(model.cfg.n_layers):
            point = model.blocks[layer].attn.hook_z
            handles.append(point.register_forward_hook(
                lambda mod, inp, out, layer=layer: means.__setitem__(layer, out.mean(dim=(0, 1)))))
        clean = losses()
    finally:
        for h in handles:
            h.remove()
    out: dict[str, dict[str, float]] = {}
    for layer in range(model.cfg.n_layers):
        for head in range(model.cfg.n_heads):
            def ablate(mod: Any, inp: Any, z: torch.Tensor, layer: int = layer, head: int = head) -> torch.Tensor:
                z = z.clone()
                idx = _head_slice(z, head, d_head)
                z[idx] = means[layer][idx[1:]] if z.ndim == 4 else means[layer][idx[-1]]
                return z

            handle = model.blocks[layer].attn.hook_z.register_forward_hook(ablate)
            try:
                hit = losses()
            finally:
                handle.remove()
            out[f"L{layer}H{head}"] = {"ngram": hit["ngram"] - clean["ngram"],
                                       "repeat": hit["repeat"] - clean["repeat"],
                                       "all": hit["target"] - clean["target"]}
    return out


def head_types(model: torch.nn.Module, task: Task, thresholds: dict[str, float] | None = None
               ) -> dict[str, str]:
    """Each head's type from the standard scores: ``"induction"`` (induction score ≥ ``induction``),
    ``"previous_token"`` (previous-token score ≥ ``previous_token``), ``"ngram"`` (mean-ablating it
    raises the n-gram-target loss by ≥ ``ngram_loss`` nats and by at least twice what it raises the
    repeated-token loss), else ``"other"``; checked in that order (:data:`HEAD_TYPE_THRESHOLDS`)."""
    t = {**HEAD_TYPE_THRESHOLDS, **(thresholds or {})}
    unknown = set(t) - set(HEAD_TYPE_THRESHOLDS)
    if unknown:
        raise ValueError(f"head_types(thresholds=...): unknown keys {sorted(unknown)}; allowed: "
                         f"{sorted(HEAD_TYPE_THRESHOLDS)}.")
    ind = induction_scores(model)
    prev = previous_token_scores(model, task)
    abl = ablation_effects(model, task)
    out = {}
    for name in head_names(model):
        layer, head = int(name[1]), int(name[3:])
        e = abl[name]
        if ind[layer, head] >= t["induction"]:
            out[name] = "induction"
        elif prev[layer, head] >= t["previous_token"]:
            out[name] = "previous_token"
        elif e["ngram"] >= t["ngram_loss"] and e["ngram"] >= 2 * e["repeat"]:
            out[name] = "ngram"
        else:
            out[name] = "other"
    return out


def head_components(model: torch.nn.Module) -> dict[str, str]:
    """``{"L0H0": "blocks.0.attn.head.0", ...}``: every head as a component of
    ``estimate_component_llcs(model, task, components=...)`` (its Q/K/V rows and O columns: a weight-restricted λ̂
    per head)."""
    from interp.degradations import head_pattern

    return {f"L{layer}H{h}": head_pattern(layer, h)
            for layer in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)}


# ------------------------------------------------------------------------------------------ training
def train(out_dir: str | Path | None = None, seed: int = 0, steps: int | None = None,
          progress: bool = True) -> TransformerBridge:
    """Train the organism from scratch (deterministic on one machine for a given ``seed``).

    :func:`interp.organisms.induction.fit` (AdamW, lr 3e-3, weight decay 0.01, batches of 64) for
    :data:`STEPS` steps on :func:`make_task` ``(seed)``. With ``out_dir`` the final
    weights go to ``out_dir/induction_ngram.safetensors`` and the checkpoints at
    :data:`CHECKPOINT_STEPS` to ``out_dir/induction_ngram_checkpoints/step_NNNNN.safetensors``
    (float16). Returns the trained model in eval mode.
    """
    steps = check_steps(steps, STEPS)
    save_checkpoint = checkpoint_saver(CONFIG, out_dir, CHECKPOINT_DIR, CHECKPOINT_STEPS, organism=NAME,
                                       seed=seed, dtype=torch.float16)
    task = make_task(seed)
    model = induction.fit(task, CONFIG, seed=seed, steps=steps, progress=progress, name=NAME,
                          on_step=save_checkpoint)
    logger.info("%s: trained %d steps, %s", NAME, steps, task.evaluate(model))
    save_trained(model, CONFIG, out_dir, NAME, step=steps, seed=seed)
    return model


# ------------------------------------------------------------------------------------------- loading
def load(seed: int = 0, n_train: int = N_TRAIN, n_test: int = N_TEST) -> tuple[TransformerBridge, Task]:
    """The shipped trained model (eval mode) and its task (``make_task(seed, n_train, n_test)``)."""
    return load_bridge(WEIGHTS_DIR / WEIGHTS_FILE), make_task(seed, n_train, n_test)


def checkpoints() -> list[tuple[int, TransformerBridge]]:
    """The shipped training checkpoints as ``[(step, model), ...]`` sorted by step (eval mode, float32)."""
    return load_checkpoints(CHECKPOINT_DIR, NAME)
