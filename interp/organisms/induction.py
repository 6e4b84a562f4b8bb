"""Induction organism: a 2-layer attention-only transformer that learned induction heads.

Task. Each sequence is a BOS token (a dedicated id, :data:`BOS`) followed by :data:`SEQ_LEN` tokens:
a pattern of ``period`` distinct random tokens (``period`` drawn per sequence, uniformly in
:data:`PERIODS`) repeated to fill the sequence. Position ``t ≥ 1 + period`` repeats the token at
``t − period``; only those positions are scored (``target_mask[t] = 1``), so the loss is exactly the
part a model can only get right by looking back. Because the period varies from sequence to sequence,
a positional copy ("attend to the token k positions back") cannot solve it: the model has to find the
previous occurrence of the current token and copy the token that followed it, i.e. implement the
two-head induction circuit of Elhage et al. 2021 / Olsson et al. 2022 (a previous-token head in
layer 0 whose output is K-composed into an induction head in layer 1). Why the period is random, and
what causal scrubbing recovers on this model: docs/science.md, "Causal scrubbing".

Head scores (computed from ``blocks.{l}.attn.hook_pattern`` on test sequences, attention A[q, k]):

    prev-token score(l, h) = mean_{q ≥ 2} A_lh[q, q − 1]
    induction score(l, h)  = mean_{q ≥ period + 1} A_lh[q, q − period + 1]

(query ``q`` holds a token that already occurred at ``q − period``; the induction head attends to the
token after that occurrence, ``q − period + 1``.) A uniform causal pattern gives scores of about
``1 / (q + 1)``, i.e. ≈ 0.1 here. Once a pattern has repeated more than once, the trained induction
heads split their attention over *all* earlier occurrences' successors (any of them predicts the
answer), so the induction score, which counts only the most recent one, is ≈ 0.4 on the shipped
weights while the attention to all of them together is ≈ 0.9.

The shipped weights (``weights/induction.safetensors``) and the training checkpoints spanning the
formation of the induction heads (``weights/induction_checkpoints/step_*.safetensors``) were produced by
:func:`train` with ``seed=0``.

Example::

    >>> from interp.organisms import induction
    >>> model, task = induction.load(n_train=64, n_test=256)   # fewer rows than the default: faster
    >>> task.evaluate(model)["accuracy"] > 0.9
    True
    >>> bool(induction.induction_scores(model, task)[1].max() > 0.3)   # layer 1's heads: about 0.4
    True
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from jaxtyping import Float

from interp.organisms._weights import (
    WEIGHTS_DIR, check_steps, checkpoint_saver, load_bridge, load_checkpoints, save_trained,
)
from interp.tasks import Task
from interp.models import device_of

if TYPE_CHECKING:  # pragma: no cover
    import datasets
    from transformer_lens.model_bridge import TransformerBridge

__all__ = [
    "DESCRIPTION",
    "CONFIG",
    "make_task",
    "train",
    "fit",
    "load",
    "checkpoints",
    "previous_token_scores",
    "induction_scores",
]

logger = logging.getLogger(__name__)

N_TOKENS = 64  #: ordinary tokens are ids 0 .. N_TOKENS - 1
BOS = N_TOKENS  #: dedicated beginning-of-sequence id
SEQ_LEN = 32  #: tokens after BOS
PERIODS = (4, 14)  #: inclusive range the per-sequence period is drawn from
N_TRAIN, N_TEST = 8192, 1024

CONFIG: dict = {
    "d_model": 32,
    "d_head": 16,
    "n_heads": 2,
    "n_layers": 2,
    "n_ctx": SEQ_LEN + 1,
    "d_vocab": N_TOKENS + 1,
    "attn_only": True,
    "normalization_type": "LN",
    "positional_embedding_type": "standard",
    "model_name": "interp-induction",
}

# Training recipe (seed 0 produced the shipped weights).
STEPS = 300
BATCH_SIZE = 64
LR = 3e-3
WEIGHT_DECAY = 0.01
#: steps at which training checkpoints are saved (chosen to bracket the induction-head phase change)
CHECKPOINT_STEPS = (0, 100, 125, 150, 175, 300)

WEIGHTS_FILE = "induction.safetensors"
CHECKPOINT_DIR = "induction_checkpoints"

#: (layer, head) of the previous-token head and the induction heads in the shipped weights, by
#: :func:`previous_token_scores` / :func:`induction_scores` (0.36 and 0.38 / 0.40; other heads ≤ 0.12)
PREV_TOKEN_HEAD = (0, 1)
INDUCTION_HEADS = ((1, 0), (1, 1))

DESCRIPTION = (
    "2-layer, 2-head, d_model 32 attention-only transformer (LayerNorm) trained on a BOS token plus "
    f"{SEQ_LEN} tokens: a pattern of `period` distinct random tokens (period uniform in "
    f"{PERIODS[0]}-{PERIODS[1]} per sequence) repeated; only repeated tokens are scored. It solves the "
    "task with an induction circuit: previous-token head L0H1 (prev-token score 0.36; L0H0 0.12) and "
    "two induction heads L1H0 and L1H1 (induction scores 0.38 and 0.40; layer-0 heads 0.04), by "
    "`previous_token_scores` / `induction_scores`. Test loss 0.028 nats, accuracy 0.996 on scored "
    "tokens. Training checkpoints spanning the heads' formation (steps 0-300, phase change at "
    "steps ~125-175) ship too."
)


# ---------------------------------------------------------------------------------------------- data
def _generate(n: int, rng: np.random.Generator, token_probs: np.ndarray | None = None) -> dict[str, list]:
    """``n`` sequences; each pattern's tokens drawn without replacement, uniformly or by ``token_probs``."""
    lo, hi = PERIODS
    periods = rng.integers(lo, hi + 1, size=n)
    ids = np.empty((n, SEQ_LEN + 1), dtype=np.int64)
    mask = np.zeros((n, SEQ_LEN + 1), dtype=np.int64)
    ids[:, 0] = BOS
    for i, period in enumerate(periods):
        pattern = rng.choice(N_TOKENS, size=period, replace=False, p=token_probs)
        ids[i, 1:] = np.resize(pattern, SEQ_LEN)
        mask[i, 1 + period :] = 1
    return {"input_ids": ids.tolist(), "target_mask": mask.tolist(), "period": periods.tolist()}


def make_task(seed: int = 0, n_train: int = N_TRAIN, n_test: int = N_TEST) -> Task:
    """The repeated-random-tokens task: ``input_ids``, ``target_mask`` and ``period`` columns.

    Deterministic in ``seed`` (train and test use independent streams of one numpy generator).
    """
    return Task(
        "induction",
        make_splits(_generate, seed, n_train, n_test),
        description="Predict repeated tokens of a random pattern with a random period per sequence.",
    )


def make_splits(generate: Callable[[int, np.random.Generator], dict[str, list]], seed: int, n_train: int,
                n_test: int) -> datasets.DatasetDict:
    """Train and test splits of ``generate(n, rng)``'s columns, from independent streams of one numpy
    generator seeded with ``seed`` (shared by the induction organisms)."""
    import datasets

    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train={n_train!r}, n_test={n_test!r}: both must be positive integers.")
    train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    return datasets.DatasetDict(
        train=datasets.Dataset.from_dict(generate(n_train, train_rng)),
        test=datasets.Dataset.from_dict(generate(n_test, test_rng)),
    )


# ------------------------------------------------------------------------------------------- scores
def _patterns(
    model: torch.nn.Module, task: Task, split: str, eval_rows: int
) -> tuple[Float[torch.Tensor, "layer batch head q k"], torch.Tensor, torch.Tensor]:
    data = task.tensors(split, rows=eval_rows, columns=("input_ids", "period"))
    ids = data["input_ids"].long()
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layers)]
    device = device_of(model)
    with torch.no_grad():
        _, cache = model.run_with_cache(ids.to(device), names_filter=lambda name: name in names)
    pattern = torch.stack([cache[name].float().cpu() for name in names])
    return pattern, ids, data["period"].long()


def previous_token_scores(
    model: torch.nn.Module, task: Task, split: str = "test", eval_rows: int = 256
) -> Float[torch.Tensor, "layer head"]:
    """Mean attention from each query ``q ≥ 2`` to ``q − 1``, per (layer, head)."""
    pattern, _, _ = _patterns(model, task, split, eval_rows)
    q = torch.arange(2, pattern.shape[-1])
    return pattern[..., q, q - 1].mean(dim=(1, 3))


def induction_scores(
    model: torch.nn.Module, task: Task, split: str = "test", eval_rows: int = 256
) -> Float[torch.Tensor, "layer head"]:
    """Mean attention from each repeated-token query ``q`` to ``q − period + 1``, per (layer, head).

    Needs a ``period`` column (as in :func:`make_task`). Queries are the positions whose token occurred
    before, ``q ≥ period + 1`` (position 0 is BOS).
    """
    pattern, ids, periods = _patterns(model, task, split, eval_rows)
    n_pos = ids.shape[1]
    q = torch.arange(n_pos)
    valid = q[None, :] >= periods[:, None] + 1  # [batch, q]
    key = (q[None, :] - periods[:, None] + 1).clamp(min=0)  # [batch, q]
    idx = key[None, :, None, :, None].expand(pattern.shape[0], -1, pattern.shape[2], -1, 1)
    att = pattern.gather(-1, idx)[..., 0]  # [layer, batch, head, q]
    w = valid[None, :, None, :].float()
    return (att * w).sum(dim=(1, 3)) / w.sum(dim=(1, 3))


# ------------------------------------------------------------------------------------------ training
def train(
    out_dir: str | Path | None = None,
    seed: int = 0,
    steps: int | None = None,
    progress: bool = True,
) -> TransformerBridge:
    """Train the induction organism from scratch (deterministic on one machine for a given ``seed``).

    AdamW (lr :data:`LR`, weight decay :data:`WEIGHT_DECAY`), batches of :data:`BATCH_SIZE` drawn with
    a seeded generator from :func:`make_task` ``(seed)``'s train split, :data:`STEPS` steps. With
    ``out_dir`` the final weights go to ``out_dir/induction.safetensors`` and the checkpoints at
    :data:`CHECKPOINT_STEPS` to ``out_dir/induction_checkpoints/step_NNNNN.safetensors`` (nothing is
    written when ``out_dir`` is ``None``). Returns the trained model in eval mode.
    """
    steps = check_steps(steps, STEPS)
    save_checkpoint = checkpoint_saver(CONFIG, out_dir, CHECKPOINT_DIR, CHECKPOINT_STEPS,
                                       organism="induction", seed=seed)
    task = make_task(seed)
    model = fit(task, CONFIG, seed=seed, steps=steps, progress=progress, name="induction",
                on_step=save_checkpoint)
    metrics = task.evaluate(model)
    logger.info("induction: trained %d steps, test loss %.4f, accuracy %.4f", steps, *metrics.values())
    save_trained(model, CONFIG, out_dir, "induction", step=steps, seed=seed)
    return model


def fit(
    task: Task,
    config: dict,
    *,
    seed: int,
    steps: int,
    progress: bool = True,
    name: str = "induction",
    on_step: Callable[[torch.nn.Module, int], None] | None = None,
) -> TransformerBridge:
    """The training loop of :func:`train`, on any task with ``input_ids``/``target_mask`` columns.

    A native bridge built from ``config`` after ``torch.manual_seed(seed)``; AdamW (lr :data:`LR`,
    weight decay :data:`WEIGHT_DECAY`) on ``task.loss`` over batches of :data:`BATCH_SIZE` rows drawn
    from the train split with a generator seeded by ``seed``, ``steps`` steps. ``on_step(model, k)``
    is called after ``k`` steps (``k = 0 .. steps``). Returns the model in eval mode.
    """
    from tqdm.auto import tqdm

    from interp.organisms._weights import build_native

    data = task.tensors("train", columns=("input_ids", "target_mask"))
    torch.manual_seed(seed)
    model = build_native(config)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    gen = torch.Generator().manual_seed(seed)
    n = len(data["input_ids"])
    bar = tqdm(range(steps), desc=name, disable=not progress)
    if on_step is not None:
        on_step(model, 0)
    for step in bar:
        idx = torch.randint(n, (BATCH_SIZE,), generator=gen)
        loss = task.loss(model, {k: v[idx] for k, v in data.items()})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if on_step is not None:
            on_step(model, step + 1)
        if step % 25 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return model.eval()


# ------------------------------------------------------------------------------------------- loading
def load(seed: int = 0, n_train: int = N_TRAIN, n_test: int = N_TEST) -> tuple[TransformerBridge, Task]:
    """The shipped trained model (eval mode) and its task (``make_task(seed, n_train, n_test)``;
    fewer rows build faster: the default 8,192 + 1,024 take about a second)."""
    return load_bridge(WEIGHTS_DIR / WEIGHTS_FILE), make_task(seed, n_train, n_test)


def checkpoints() -> list[tuple[int, TransformerBridge]]:
    """The shipped training checkpoints as ``[(step, model), ...]`` sorted by step (eval mode)."""
    return load_checkpoints(CHECKPOINT_DIR, "induction")
