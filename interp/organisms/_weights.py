"""Building native TransformerBridges from a config dict and (de)serialising their weights.

Weights are stored as safetensors with the bridge's state-dict names (``blocks.0.attn.q.weight``, ...)
and the model config as JSON in the file's metadata, so a file is self-describing and loading never
executes code. Only ``safetensors`` reads weights here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def build_native(config: dict[str, Any]):
    """A freshly initialised native ``TransformerBridge`` (train mode) from a plain config dict."""
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    return TransformerBridge.boot_native(TransformerBridgeConfig(**config))


def save_bridge(model: torch.nn.Module, config: dict[str, Any], path: str | Path, **meta: Any) -> Path:
    """Write ``model``'s weights and ``config`` (plus JSON-able ``meta``) to a safetensors file."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
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
