"""Loading real transformers as TransformerLens 4 ``TransformerBridge``s.

``load_model(name_or_path)`` wraps ``TransformerBridge.boot_transformers``: a Hugging Face hub name
("gpt2", "EleutherAI/pythia-70m") or a local directory written by ``save_pretrained``. The bridge keeps
the raw Hugging Face weights (no LayerNorm folding or re-centring: sampling must run in raw parameter
space) and comes back in eval mode.

Offline by construction: a local directory is loaded with the hub switched off, and a hub name is
tried online only when the hub answers within a couple of seconds; otherwise the local cache is used,
and a model missing from it raises an error that says so instead of hanging on network retries.

Example::

    >>> import interp
    >>> model = interp.load_model("path/to/saved/gpt2")          # doctest: +SKIP
    >>> model.cfg.n_layers                                         # doctest: +SKIP
    12
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import torch

__all__ = ["load_model", "hub_reachable"]

log = logging.getLogger(__name__)

_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hugging Face hub endpoint accepts a TCP connection within ``timeout`` seconds."""
    if any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes") for v in _OFFLINE_VARS):
        return False
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """Switch the hub off for the duration (environment and huggingface_hub's cached constant)."""
    saved = {v: os.environ.get(v) for v in _OFFLINE_VARS}
    for v in _OFFLINE_VARS:
        os.environ[v] = "1"
    hub_constants = None
    with contextlib.suppress(ImportError):
        from huggingface_hub import constants as hub_constants
    saved_flag = getattr(hub_constants, "HF_HUB_OFFLINE", None)
    if hub_constants is not None:
        hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        for v, old in saved.items():
            if old is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = old
        if hub_constants is not None:
            hub_constants.HF_HUB_OFFLINE = saved_flag


def load_model(
    name_or_path: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    offline: bool | None = None,
):
    """Boot a Hugging Face model (hub name or local directory) as a ``TransformerBridge`` in eval mode.

    Args:
        name_or_path: a hub model id or a local directory containing ``config.json`` and weights.
        device: where to put the model (default: CPU).
        dtype: parameter dtype (default float32).
        offline: ``True`` never contacts the hub; ``False`` always may; ``None`` (default) decides:
            offline for local directories and when the hub does not answer within 2 s.

    Raises:
        FileNotFoundError: a local-looking path that does not exist, or a hub model that is not in
            the local cache while offline.
    """
    from transformer_lens.model_bridge import TransformerBridge

    target = str(name_or_path)
    path = Path(target).expanduser()
    is_local = path.exists()
    if not is_local and target.startswith((".", "/", "~")):
        raise FileNotFoundError(f"Model directory {target!r} does not exist.")
    if is_local:
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path} has no config.json: expected a directory written by save_pretrained()."
            )
        target = str(path.resolve())
    if offline is None:
        offline = is_local or not hub_reachable()
        if offline and not is_local:
            log.info("Hugging Face hub unreachable: loading %r from the local cache only.", target)
    context = _offline() if offline else contextlib.nullcontext()
    with context:
        try:
            model = TransformerBridge.boot_transformers(target, device=device or "cpu", dtype=dtype)
        except OSError as err:
            if offline and not is_local:
                raise FileNotFoundError(
                    f"Model {target!r} is not in the local Hugging Face cache and the hub cannot be "
                    "reached (offline). Download it on a connected machine (or save_pretrained() it "
                    "to a directory) and pass that directory."
                ) from err
            raise
    return model.eval()
