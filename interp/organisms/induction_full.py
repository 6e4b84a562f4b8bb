"""Induction organism trained on every next token: induction heads *and* a trained first-seen behaviour.

Why it exists. The ``induction`` organism is trained only on repeated tokens, so its predictions of
first-seen tokens are untrained (9.9 nats/token, worse than uniform): a disturbance there says nothing
about the model's behaviour, and a collateral of an intervention on the induction circuit cannot be
measured on them. This variant is trained with the loss on every next-token position, so the
first-seen positions carry a trained behaviour distinct from induction, and its task marks them in a
``collateral_mask`` column (trained predictions outside the induction claim; see ``interp.verdicts``).

Task. The generator of :mod:`interp.organisms.induction` (BOS + :data:`~interp.organisms.induction.SEQ_LEN`
tokens, a pattern of ``period`` distinct tokens, period uniform in 4-14 per sequence, repeated), with
the pattern's tokens drawn without replacement from a Zipf unigram distribution
p(i) ∝ 1 / (i + 1)^:data:`ZIPF_EXPONENT` over the 64 ordinary tokens instead of uniformly. Why Zipf:
with uniform tokens the best possible first-seen prediction (uniform over the not-yet-seen tokens,
hedged by the chance that the pattern ends here and its first token comes next) has a Bayes loss of
4.173 nats/token, no better than uniform over the 65 ids (4.174), so nothing there is learnably better
than chance. With Zipf tokens a first-seen token is predicted by the unigram prior renormalised over the
tokens not yet seen in the period (about 3.6 nats/token at best): a trained behaviour clearly below
uniform. Columns:

- ``target_mask[t] = 1`` for ``t ≥ 1 + period`` (the repeated tokens: the induction claim);
- ``collateral_mask[t] = 1`` for ``1 ≤ t ≤ period`` (first-seen tokens: trained, outside the claim);
- ``period``.

Training (:func:`train`): :func:`interp.organisms.induction.fit` (same optimiser, batch and seed
handling as ``induction``) on the same rows with the loss on every position ``t ≥ 1`` (the union of
both masks), :data:`STEPS` steps. The model keeps the induction circuit of Elhage et al. 2021 / Olsson et al. 2022 (previous-token head
:data:`PREV_TOKEN_HEAD`, induction heads :data:`INDUCTION_HEADS`, by
:func:`~interp.organisms.induction.previous_token_scores` / :func:`~interp.organisms.induction.induction_scores`).
The shipped weights ``weights/induction_full.safetensors`` were produced by ``train(seed=0)``
(``interp organisms train induction_full --out DIR``).

Example::

    >>> from interp.organisms import induction_full
    >>> model, task = induction_full.load(n_train=64, n_test=256)
    >>> induction_full.position_losses(model, task)["loss_first_seen"] < 3.8
    True
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from interp.organisms import induction
from interp.organisms._weights import WEIGHTS_DIR, check_steps, load_bridge, save_trained
from interp.tasks import Task
from interp.models import device_of

if TYPE_CHECKING:  # pragma: no cover
    from transformer_lens.model_bridge import TransformerBridge

__all__ = ["DESCRIPTION", "CONFIG", "TOKEN_PROBS", "make_task", "score_every_token", "train", "load", "position_losses"]

logger = logging.getLogger(__name__)

NAME = "induction_full"
ZIPF_EXPONENT = 1.0
#: unigram distribution the pattern tokens are drawn from (token 0 the most frequent)
TOKEN_PROBS = 1.0 / np.arange(1, induction.N_TOKENS + 1) ** ZIPF_EXPONENT
TOKEN_PROBS = TOKEN_PROBS / TOKEN_PROBS.sum()

CONFIG: dict = {**induction.CONFIG, "model_name": "interp-induction-full"}
STEPS = 600
WEIGHTS_FILE = "induction_full.safetensors"

#: (layer, head) of the previous-token head and the induction heads in the shipped weights
PREV_TOKEN_HEAD = (0, 1)
INDUCTION_HEADS = ((1, 0), (1, 1))

DESCRIPTION = (
    "The induction organism's architecture (2 layers, 2 heads, d_model 32, attention-only) trained with "
    "the loss on every next token of a repeated random pattern (period 4-14, Zipf-distributed tokens). "
    "Repeated tokens (target_mask, the induction claim): loss 0.108 nats, accuracy 0.981, by a "
    "previous-token head L0H1 (score 0.31; L0H0 0.23) and induction heads L1H0/L1H1 (0.38/0.39). "
    "First-seen tokens (collateral_mask: trained, outside the claim): loss 3.75 nats, below uniform "
    "4.17 (the Zipf prior over the unseen tokens: 3.48)."
)


# ---------------------------------------------------------------------------------------------- data
def _columns(n: int, rng: np.random.Generator) -> dict[str, list]:
    cols = induction._generate(n, rng, token_probs=TOKEN_PROBS)
    target = np.asarray(cols["target_mask"])
    first_seen = np.zeros_like(target)
    first_seen[:, 1:] = 1 - target[:, 1:]  # 1 ≤ t ≤ period: the token has not occurred before
    cols["collateral_mask"] = first_seen.tolist()
    return cols


def make_task(seed: int = 0, n_train: int = induction.N_TRAIN, n_test: int = induction.N_TEST) -> Task:
    """The task: ``input_ids``, ``target_mask`` (repeated tokens), ``collateral_mask`` (first-seen
    tokens) and ``period``. Deterministic in ``seed`` (independent train and test streams)."""
    dd = induction.make_splits(_columns, seed, n_train, n_test)
    return Task(NAME, dd, description="Predict every next token of a repeated Zipf-random pattern; the "
                "repeated tokens are scored (induction), the first-seen ones are collateral_mask.")


def score_every_token(task: Task) -> Task:
    """``task`` with every position ``t ≥ 1`` scored: the loss the organism is trained with (e.g. the
    objective of a tempered posterior of the trained model, ``TemperedPosterior(objective=...)``)."""
    import datasets

    def score_all(row: dict) -> dict:
        return {"target_mask": [0] + [1] * (len(row["input_ids"]) - 1)}

    dd = datasets.DatasetDict({s: task.dataset[s].map(score_all) for s in task.dataset})
    return Task(f"{NAME}-train", dd)


# ------------------------------------------------------------------------------------------ training
def train(
    out_dir: str | Path | None = None,
    seed: int = 0,
    steps: int | None = None,
    progress: bool = True,
) -> TransformerBridge:
    """Train the organism from scratch (deterministic on one machine for a given ``seed``).

    :func:`interp.organisms.induction.fit` on :func:`make_task` ``(seed)`` with every position scored,
    :data:`STEPS` steps. With ``out_dir`` the weights go to ``out_dir/induction_full.safetensors``.
    Returns the trained model in eval mode.
    """
    steps = check_steps(steps, STEPS)
    task = make_task(seed)
    model = induction.fit(score_every_token(task), CONFIG, seed=seed, steps=steps, progress=progress, name=NAME)
    logger.info("%s: trained %d steps, %s", NAME, steps, position_losses(model, task))
    save_trained(model, CONFIG, out_dir, NAME, step=steps, seed=seed)
    return model


def load(seed: int = 0, n_train: int = induction.N_TRAIN, n_test: int = induction.N_TEST
         ) -> tuple[TransformerBridge, Task]:
    """The shipped trained model (eval mode) and its task (``make_task(seed, n_train, n_test)``)."""
    return load_bridge(WEIGHTS_DIR / WEIGHTS_FILE), make_task(seed, n_train, n_test)


# -------------------------------------------------------------------------------------- measurement
@torch.no_grad()
def position_losses(model: torch.nn.Module, task: Task, split: str = "test", eval_rows: int = 1024) -> dict[str, float]:
    """Mean next-token loss (nats/token) on the repeated (``target_mask``) and first-seen
    (``collateral_mask``) tokens, with references for the first-seen ones.

    Keys: ``loss_repeated``, ``accuracy_repeated``, ``loss_first_seen``, ``uniform`` (ln 65: uniform
    over every id), ``unigram_unseen`` (the loss of predicting the Zipf prior renormalised over the
    tokens not yet seen in the sequence, with no hedge for the pattern's end) and ``mass_on_seen``
    (mean probability the model puts on tokens already seen, at first-seen positions).
    """
    data = task.tensors(split, rows=eval_rows, columns=("input_ids", "target_mask", "collateral_mask"))
    device = device_of(model)
    ids = data["input_ids"].long().to(device)
    logp = torch.log_softmax(model(ids)[:, :-1].float(), -1)
    target = ids[:, 1:]
    nll = -logp.gather(-1, target[..., None])[..., 0]
    rep = data["target_mask"][:, 1:].bool().to(device)
    first = data["collateral_mask"][:, 1:].bool().to(device)
    n_vocab = logp.shape[-1]
    # seen[b, t, v]: token v occurs at positions 1..t (what the prediction at t has seen)
    onehot = torch.nn.functional.one_hot(ids[:, 1:], n_vocab).float()
    seen = (onehot.cumsum(1) - onehot + torch.nn.functional.one_hot(ids[:, :-1], n_vocab).float()) > 0
    seen[..., induction.BOS] = False
    mass_seen = (logp.exp() * seen).sum(-1)
    prior = torch.zeros(n_vocab, device=device)
    prior[: induction.N_TOKENS] = torch.as_tensor(TOKEN_PROBS, dtype=torch.float32, device=device)
    unseen_prior = prior * ~seen
    unigram = -torch.log(unseen_prior.gather(-1, target[..., None])[..., 0] / unseen_prior.sum(-1))
    return {
        "loss_repeated": nll[rep].mean().item(),
        "accuracy_repeated": (logp.argmax(-1) == target)[rep].float().mean().item(),
        "loss_first_seen": nll[first].mean().item(),
        "uniform": float(np.log(n_vocab)),
        "unigram_unseen": unigram[first].mean().item(),
        "mass_on_seen": mass_seen[first].mean().item(),
    }
