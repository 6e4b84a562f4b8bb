"""Building native TransformerBridges from a config dict and (de)serialising their weights.

Weights are stored as safetensors with the bridge's state-dict names (``blocks.0.attn.q.weight``, ...)
and the model config as JSON in the file's metadata, so a file is self-describing and loading never
executes code. Only ``safetensors`` reads weights here. The organisms' ``train`` / ``load`` /
``checkpoints`` share the helpers below: the final weights go to ``out_dir/<organism>.safetensors``,
training checkpoints to ``out_dir/<directory>/step_NNNNN.safetensors`` (the step also in the metadata).

Example::

    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from interp.organisms._weights import build_native, load_bridge, save_bridge
    >>> config = {"d_model": 8, "d_head": 4, "n_heads": 2, "n_layers": 1, "n_ctx": 4, "d_vocab": 5,
    ...           "attn_only": True}
    >>> model = build_native(config)
    >>> path = save_bridge(model, config, Path(tempfile.mkdtemp()) / "tiny.safetensors", step=0)
    >>> again = load_bridge(path)
    >>> all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())
    True
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def build_native(config: dict[str, Any]):
    """A freshly initialised native ``TransformerBridge`` (train mode) from a plain config dict."""
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    return TransformerBridge.boot_native(TransformerBridgeConfig(**config))


def build_with_state(config: dict[str, Any], state: dict[str, torch.Tensor], owner: str):
    """A native bridge (eval mode) built from ``config`` holding the hand-set weights ``state``: every
    parameter set, no name unknown (a RuntimeError naming ``owner`` otherwise: never half-built)."""
    model = build_native(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:  # the bridge's parameter names changed: fail loudly
        raise RuntimeError(f"{owner}: bridge state mismatch: missing {sorted(missing)[:5]}, "
                           f"unexpected {sorted(unexpected)[:5]}.")
    return model.eval()


def save_bridge(model: torch.nn.Module, config: dict[str, Any], path: str | Path, *,
                dtype: torch.dtype | None = None, **meta: Any) -> Path:
    """Write ``model``'s weights and ``config`` (plus JSON-able ``meta``) to a safetensors file.

    ``dtype`` (e.g. ``torch.float16``) stores the tensors in that dtype; ``None`` keeps the model's.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to(dtype) if dtype is not None else v.detach()
               for k, v in model.state_dict().items()}
    tensors = {k: v.cpu().contiguous().clone() for k, v in tensors.items()}
    metadata = {"config": json.dumps(config, sort_keys=True)}
    metadata.update({k: json.dumps(v) for k, v in meta.items()})
    save_file(tensors, str(path), metadata=metadata)
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON metadata stored with a weights file (``config`` and any extra keys)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata() or {}
    return {k: json.loads(v) for k, v in raw.items()}


def load_bridge(path: str | Path):
    """A native bridge (eval mode) rebuilt from a file written by :func:`save_bridge`."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Weights file {path} not found. Reinstall interp, or regenerate it with "
            "`interp organisms train NAME`."
        )
    try:
        meta = read_metadata(path)
        state = load_file(str(path))
    except Exception as err:  # noqa: BLE001 - a corrupt header, a truncated body, bad JSON metadata
        raise ValueError(
            f"{path} cannot be read as a safetensors weights file ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:120]}): it is corrupt or truncated. Reinstall interp, or "
            "regenerate it with `interp organisms train NAME`."
        ) from err
    if "config" not in meta:
        raise ValueError(f"{path} has no 'config' metadata: not an interp organism weights file.")
    try:
        model = build_native(meta["config"])
    except (TypeError, ValueError, AssertionError) as err:
        raise ValueError(
            f"{path}: its 'config' metadata {meta['config']!r} is not a valid model config ({err})."
        ) from err
    own = model.state_dict()
    wrong = [f"{k} {tuple(v.shape)} (config wants {tuple(own[k].shape)})"
             for k, v in state.items() if k in own and v.shape != own[k].shape]
    if wrong:
        raise ValueError(f"{path} does not match its config: tensor shapes differ: {wrong[:3]}.")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path} does not match its config: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}."
        )
    return model.eval()


def check_steps(steps: int | None, default: int) -> int:
    """``steps`` as given (``None``: ``default``), checked to be a non-negative integer."""
    steps = default if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps={steps!r}: must be a non-negative integer (None: {default}).")
    return steps


def save_trained(model: torch.nn.Module, config: dict[str, Any], out_dir: str | Path | None,
                 organism: str, *, step: int, seed: int, **meta: Any) -> None:
    """Write an organism's trained weights to ``out_dir/<organism>.safetensors`` (nothing when
    ``out_dir`` is ``None``), with ``step``, ``seed``, ``organism`` and ``meta`` in the metadata."""
    if out_dir is None:
        return
    path = save_bridge(model, config, Path(out_dir) / f"{organism}.safetensors", step=step, seed=seed,
                       organism=organism, **meta)
    logger.info("%s: wrote %s", organism, path)


def checkpoint_saver(config: dict[str, Any], out_dir: str | Path | None, directory: str,
                     at_steps: Collection[int], *, organism: str, seed: int,
                     dtype: torch.dtype | None = None) -> Callable[[torch.nn.Module, int], None]:
    """An ``on_step(model, step)`` callback for a training loop that writes the weights at each step
    in ``at_steps`` to ``out_dir/directory/step_NNNNN.safetensors`` (nothing when ``out_dir`` is
    ``None``), in ``dtype`` (``None``: the model's)."""

    def save_checkpoint(model: torch.nn.Module, step: int) -> None:
        if out_dir is not None and step in at_steps:
            path = Path(out_dir) / directory / f"step_{step:05d}.safetensors"
            save_bridge(model, config, path, dtype=dtype, step=step, seed=seed, organism=organism)

    return save_checkpoint


def load_checkpoints(directory: str, organism: str) -> list[tuple[int, Any]]:
    """The shipped checkpoints under ``WEIGHTS_DIR/directory`` as ``[(step, model), ...]`` sorted by
    step (eval mode, float32 whatever the stored dtype)."""
    files = sorted((WEIGHTS_DIR / directory).glob("step_*.safetensors"))
    if not files:
        raise FileNotFoundError(f"No checkpoints under {WEIGHTS_DIR / directory}; regenerate them with "
                                f"`interp organisms train {organism}`.")
    return sorted(((int(read_metadata(f)["step"]), load_bridge(f)) for f in files), key=lambda p: p[0])
