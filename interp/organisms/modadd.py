"""Modular-addition organism: a 1-layer transformer with an MLP that grokked (a + b) mod p.

Task. Every sequence is ``[a, b, =, c]`` with ``a, b ∈ {0, …, p − 1}``, ``c = (a + b) mod p`` and ``=``
a dedicated token (id ``p``); only ``c`` is scored (``target_mask = [0, 0, 0, 1]``), predicted from the
logits at the ``=`` position. All ``p²`` pairs are split at random into train (fraction
:data:`TRAIN_FRACTION`) and test; the model must generalise to the held-out pairs.

Model and recipe follow Nanda et al. 2023, "Progress measures for grokking via mechanistic
interpretability" (arXiv:2301.05217): one block, 4 heads, d_model 128, ReLU MLP of width 512, no
LayerNorm, trained full-batch with AdamW and strong weight decay (λ = 1). The network first memorises
the training pairs and then generalises ("groks"), implementing addition with a few key frequencies
ω_k = 2πk/p: the embedding maps a to (cos ω_k a, sin ω_k a) for those k, and the rest of the network
combines them with trig identities into cos ω_k (a + b − c).

Fourier check. With the orthonormal Fourier basis on ℤ_p (constant, cos ω_k x, sin ω_k x for
k = 1 … (p − 1)/2), the embedding's norm in frequency k is ‖F_k W_E‖ where F_k projects onto the
cos/sin pair. A grokked model puts almost all of that norm into a handful of frequencies
(:func:`fourier_key_frequencies`); a random embedding spreads it evenly.

Example::

    >>> from interp.organisms import modadd
    >>> model, task = modadd.load()
    >>> task.evaluate(model)["accuracy"] > 0.99
    True
    >>> len(modadd.fourier_key_frequencies(model)) <= 8
    True
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from jaxtyping import Float

from interp.organisms._weights import WEIGHTS_DIR, check_steps, load_bridge, save_trained
from interp.tasks import Task

if TYPE_CHECKING:  # pragma: no cover
    from transformer_lens.model_bridge import TransformerBridge

__all__ = [
    "DESCRIPTION",
    "CONFIG",
    "P",
    "make_task",
    "train",
    "load",
    "fourier_basis",
    "embedding_fourier_norms",
    "fourier_key_frequencies",
]

logger = logging.getLogger(__name__)

P = 59  #: the prime modulus p
EQ = P  #: id of the '=' token
TRAIN_FRACTION = 0.5

CONFIG: dict = {
    "d_model": 128,
    "d_head": 32,
    "n_heads": 4,
    "n_layers": 1,
    "n_ctx": 4,
    "d_mlp": 512,
    "d_vocab": P + 1,
    "act_fn": "relu",
    "attn_only": False,
    "normalization_type": None,
    "positional_embedding_type": "standard",
    "model_name": "interp-modadd",
}

# Training recipe (seed 0 produced the shipped weights).
STEPS = 1400
LR = 3e-3
WEIGHT_DECAY = 1.0
BETAS = (0.9, 0.98)
WARMUP_STEPS = 10
#: the learning rate decays linearly to 0 from here to STEPS, after the model has grokked (at constant
#: lr the near-zero train loss makes Adam unstable: a loss spike at ~1400 steps was measured)
DECAY_START = 1000

WEIGHTS_FILE = "modadd.safetensors"

DESCRIPTION = (
    f"1-layer transformer (4 heads, d_model 128, ReLU MLP 512, no LayerNorm) trained full-batch with "
    f"AdamW (weight decay 1) on (a + b) mod {P} with sequences [a, b, =, c] and "
    f"{TRAIN_FRACTION:.0%} of the {P}x{P} pairs for training; it groks and generalises to the held-out "
    "pairs (shipped weights: test accuracy 1.000, test loss 0.0016 nats) with a few Fourier key "
    "frequencies in its embedding (Nanda et al. 2023): k = 25, 22, 7, 8, 16 carry 80% of the "
    "embedding's non-constant squared norm, 89% with k = 17."
)


# ---------------------------------------------------------------------------------------------- data
def make_task(seed: int = 0, p: int = P, train_fraction: float = TRAIN_FRACTION) -> Task:
    """All ``p²`` pairs as ``[a, b, =, c]`` rows, split at random (``seed``) into train and test.

    Columns: ``input_ids``, ``target_mask`` (only ``c``), ``a``, ``b``, ``c``.
    """
    import datasets

    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction={train_fraction!r}: must lie strictly between 0 and 1.")
    if p < 2:
        raise ValueError(f"p={p!r}: must be a prime ≥ 2.")
    a, b = (x.ravel() for x in np.meshgrid(np.arange(p), np.arange(p), indexing="ij"))
    c = (a + b) % p
    ids = np.stack([a, b, np.full_like(a, p), c], axis=1)
    mask = np.tile(np.array([0, 0, 0, 1]), (len(a), 1))
    order = np.random.default_rng(seed).permutation(len(a))
    n_train = int(round(train_fraction * len(a)))

    def split(rows: np.ndarray) -> datasets.Dataset:
        rows = np.sort(rows)
        return datasets.Dataset.from_dict(
            {
                "input_ids": ids[rows].tolist(),
                "target_mask": mask[rows].tolist(),
                "a": a[rows].tolist(),
                "b": b[rows].tolist(),
                "c": c[rows].tolist(),
            }
        )

    dd = datasets.DatasetDict(train=split(order[:n_train]), test=split(order[n_train:]))
    return Task("modadd", dd, description=f"Predict (a + b) mod {p} on held-out pairs.")


# ------------------------------------------------------------------------------------------ Fourier
def fourier_basis(p: int = P) -> Float[torch.Tensor, "p p"]:
    """Orthonormal Fourier basis of functions on ℤ_p, one per row (:func:`interp.fourier.fourier_basis`)."""
    from interp.fourier import fourier_basis as basis

    return basis(p)


def embedding_fourier_norms(model: torch.nn.Module, p: int = P) -> Float[torch.Tensor, "freq"]:
    """‖F_k W_E‖ for k = 0 … (p−1)/2: the norm of the number-token embedding in each frequency.

    Entry 0 is the constant component; entry k combines the cos and sin components of frequency k.
    """
    w_e = model.state_dict()["embed.weight"][:p].detach().float().cpu()  # [p, d_model]
    coef = fourier_basis(p) @ w_e  # [p, d_model]
    sq = coef.pow(2).sum(dim=1)
    per_freq = torch.cat([sq[:1], sq[1::2] + sq[2::2]])
    return per_freq.sqrt()


def fourier_key_frequencies(model: torch.nn.Module, p: int = P, mass: float = 0.8) -> list[int]:
    """The fewest frequencies k ≥ 1 that carry a fraction ``mass`` of the embedding's squared norm.

    The constant component is left out of both the sum and the total. Returned by decreasing norm. A
    grokked model needs a handful; a random embedding needs most of the (p − 1)/2 frequencies.
    """
    if not 0.0 < mass <= 1.0:
        raise ValueError(f"mass={mass!r}: must lie in (0, 1] (a fraction of the squared norm).")
    sq = embedding_fourier_norms(model, p)[1:].double().pow(2)
    order = torch.argsort(sq, descending=True)
    cumulative = torch.cumsum(sq[order], 0) / sq.sum()
    n = int(torch.searchsorted(cumulative, torch.tensor(mass, dtype=cumulative.dtype)).item()) + 1
    return [int(k) + 1 for k in order[: min(n, len(order))]]


# ------------------------------------------------------------------------------------------ training
def _lr_factor(step: int, steps: int) -> float:
    """Linear warm-up over WARMUP_STEPS, constant, then linear decay to 0 from DECAY_START to steps."""
    warm = min(1.0, (step + 1) / WARMUP_STEPS)
    if steps <= DECAY_START or step < DECAY_START:
        return warm
    return warm * max(0.0, (steps - step) / (steps - DECAY_START))


def train(
    out_dir: str | Path | None = None,
    seed: int = 0,
    steps: int | None = None,
    progress: bool = True,
) -> TransformerBridge:
    """Train the modular-addition organism from scratch (deterministic on one machine per ``seed``).

    Full-batch AdamW (lr :data:`LR` with :data:`WARMUP_STEPS` linear warm-up and a linear decay to 0
    from :data:`DECAY_START`, weight decay λ = :data:`WEIGHT_DECAY`, betas :data:`BETAS`) on :func:`make_task` ``(seed)``'s train split for
    :data:`STEPS` steps. With ``out_dir`` the weights go to ``out_dir/modadd.safetensors`` (nothing is
    written when ``out_dir`` is ``None``). Returns the trained model in eval mode.
    """
    from tqdm.auto import tqdm

    from interp.organisms._weights import build_native

    steps = check_steps(steps, STEPS)
    task = make_task(seed)
    batch = task.tensors("train", columns=("input_ids", "target_mask"))
    test = task.tensors("test", columns=("input_ids", "target_mask"))
    torch.manual_seed(seed)
    model = build_native(CONFIG)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY, betas=BETAS)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, partial(_lr_factor, steps=steps))
    bar = tqdm(range(steps), desc="modadd", disable=not progress)
    for step in bar:
        loss = task.loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            with torch.no_grad():
                test_loss = task.loss(model, test).item()
            bar.set_postfix(train=f"{loss.item():.2e}", test=f"{test_loss:.2e}")
            logger.debug("modadd step %d: train loss %.3e, test loss %.3e", step, loss.item(), test_loss)
    model.eval()
    metrics = task.evaluate(model)
    logger.info("modadd: trained %d steps, test loss %.4f, accuracy %.4f", steps, *metrics.values())
    save_trained(model, CONFIG, out_dir, "modadd", step=steps, seed=seed, p=P)
    return model


# ------------------------------------------------------------------------------------------- loading
def load(seed: int = 0) -> tuple[TransformerBridge, Task]:
    """The shipped trained model (eval mode) and its task (``make_task(seed)``)."""
    return load_bridge(WEIGHTS_DIR / WEIGHTS_FILE), make_task(seed)
