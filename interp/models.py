"""Loading real transformers as TransformerLens 4 ``TransformerBridge``s.

``load_model(name_or_path)`` wraps ``TransformerBridge.boot_transformers``: a Hugging Face hub name
("gpt2", "EleutherAI/pythia-70m") or a local directory written by ``save_pretrained``. The bridge keeps
the raw Hugging Face weights (no LayerNorm folding or re-centring: sampling must run in raw parameter
space) and comes back in eval mode.

Devices: ``device=None`` means CUDA when available, else CPU (:func:`default_device`); ``dtype``
takes a ``torch.dtype`` or its name (``"float32"``, ``"bfloat16"``, ...; :func:`resolve_dtype`).

Tokenizers: ``tokenizer=None`` uses the checkpoint's own and checks it at load time: a directory
without tokenizer files, an empty tokenizer (length <= 1, what ``AutoTokenizer`` makes of a GPT-2
directory saved without them: every string becomes id 0) or one with more tokens than the model's
``d_vocab`` is a ``ValueError`` naming the fix. ``tokenizer=`` also takes a tokenizer object, a hub
name or a directory to load one from, or ``False``: no tokenizer, token ids only (a warning says so;
``model.tokenizer`` is ``None``).

LM heads: :func:`has_lm_head` decides from the model whether its logits are next-token predictions.
A checkpoint saved without its language-model head (all-MiniLM-L6-v2 declares ``BertModel``; the
bridge boots it as ``BertForMaskedLM`` with a randomly initialised head) and a masked LM are not:
:meth:`Task.from_texts <interp.tasks.Task.from_texts>` then builds a task without a loss, and
``Task.evaluate``/``loss``, ``Behavioural(kind="kl")`` and ``CorpusLoss`` raise
(:func:`check_lm_head`) instead of reading hidden states through a random head as logits.
Loading is deterministic: whatever the checkpoint lacks is initialised under a fixed seed (the
caller's random state is left as it was), so the weights, and a sweep's weights digest, are the same
in every process.

Offline by construction: a local directory is loaded with the hub switched off, and a hub name is
tried online only when the hub answers within a couple of seconds; otherwise the local cache is used,
and a model missing from it raises an error that says so instead of hanging on network retries.

Example::

    >>> import interp
    >>> model = interp.load_model(gpt2_dir)     # a save_pretrained directory; or a hub name: "gpt2"
    >>> model.cfg.n_layers, model.cfg.d_model
    (2, 32)
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from interp.tokenizing import _NO_TOKENIZER_FIX, build_word_tokenizer, check_tokenizer, model_vocab

__all__ = ["load_model", "device_of", "hub_reachable", "default_device", "resolve_device", "resolve_dtype", "place",
           "has_lm_head", "check_lm_head"]

# the seed under which load_model initialises whatever the checkpoint lacks (e.g. a missing LM head)
LOAD_SEED = 0

log = logging.getLogger(__name__)

_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
# files from which AutoTokenizer can build a tokenizer
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model",
                    "sentencepiece.bpe.model", "tokenizer_config.json")


_DTYPES = {
    "float32": torch.float32, "float": torch.float32, "fp32": torch.float32,
    "float64": torch.float64, "double": torch.float64, "fp64": torch.float64,
    "float16": torch.float16, "half": torch.float16, "fp16": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}


def default_device() -> torch.device:
    """``cuda`` when a CUDA device is available, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class ModelCall(torch.nn.Module):
    """``forward(*args) = fn(model, *args)`` with ``model`` as the submodule ``model``, so that
    ``torch.func.functional_call(ModelCall(model, fn), {"model." + name: tensor}, args)`` evaluates
    ``fn`` at other parameter values (w0, or one chain's weights under ``vmap``) without touching
    the live ones. ``fn`` is kept outside the module tree (it holds no parameters of its own)."""

    def __init__(self, model: torch.nn.Module, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.model = model
        object.__setattr__(self, "_fn", fn)

    def forward(self, *args: Any) -> Any:
        return self._fn(self.model, *args)


def device_of(model: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter (CPU for a module without parameters): where its inputs go."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a ``torch.device`` (``None``: :func:`default_device`); a ValueError names bad ones."""
    if device is None:
        return default_device()
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"device={device!r} is not a torch device: use 'cpu', 'cuda', 'cuda:1', ... or None "
            "(CUDA when available)."
        ) from err


def _check_available(device: torch.device, given: Any) -> None:
    """A ValueError when ``device`` is a CUDA device this machine lacks (checked where a model is
    put on it, not where a device is only named: a Ray driver may name a GPU its workers have)."""
    if device.type != "cuda":
        return
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ValueError(
            f"device={given!r}: CUDA is not available here (torch.cuda.is_available() is False); use "
            "device='cpu', or device=None to use CUDA only when present."
        )
    if device.index is not None and device.index >= count:
        raise ValueError(f"device={given!r}: this machine has {count} CUDA device(s), cuda:0 to "
                         f"cuda:{count - 1}; use one of them or device=None.")


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """``dtype`` as a floating ``torch.dtype`` (``None``: float32); accepts names like ``"bfloat16"``."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return dtype
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in _DTYPES:
        return _DTYPES[dtype.removeprefix("torch.")]
    raise ValueError(
        f"dtype={dtype!r}: give a floating torch dtype or one of its names "
        f"({', '.join(sorted(_DTYPES))}), or None (float32)."
    )


def place(model: torch.nn.Module, device: str | torch.device | None = None,
          dtype: str | torch.dtype | None = None) -> torch.nn.Module:
    """Move ``model`` to ``device`` (``None``: CUDA when available) and cast it to ``dtype``
    (``None``: leave the dtype as it is), in place; returns it."""
    target = resolve_device(device)
    _check_available(target, device)
    want = None if dtype is None else resolve_dtype(dtype)
    tensors = [*model.parameters(), *model.buffers()]
    if all(t.device.type == target.type and (target.index is None or t.device.index == target.index)
           and (want is None or not t.is_floating_point() or t.dtype == want) for t in tensors):
        return model  # already there: no copy
    return model.to(device=target) if want is None else model.to(device=target, dtype=want)


_TOKENIZER_METHODS = ("to_tokens", "to_string", "to_str_tokens", "to_single_token", "to_single_str_token",
                      "get_token_position", "tokens_to_residual_directions", "generate")


def _needs_tokenizer(source: str, method: str) -> Any:
    """A stand-in for a bridge method that needs the tokenizer, on a model loaded without one."""
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise ValueError(
            f"model.{method}(...): the model was loaded with load_model({source!r}, tokenizer=False) and "
            "has no tokenizer, so it cannot turn text into tokens or back. Pass token ids (an integer "
            "tensor [batch, pos]) to the model, or reload it with a tokenizer (tokenizer=None for the "
            "checkpoint's own, or a tokenizer object, hub name or directory)."
        )
    refuse.__name__ = method
    return refuse


def _is_tokenizer(obj: Any) -> bool:
    """A tokenizer object: callable, with a length, and able to map tokens to ids (a plain function
    or lambda is not)."""
    return callable(obj) and hasattr(obj, "__len__") and (
        hasattr(obj, "convert_ids_to_tokens") or hasattr(obj, "decode"))


def _has_tokenizer_files(path: Path) -> bool:
    return any((path / f).is_file() for f in _TOKENIZER_FILES)


def _load_tokenizer(source: Any, offline: bool) -> Any:
    """A tokenizer object from a hub name or directory (``source`` already an object: itself)."""
    if not isinstance(source, (str, os.PathLike)):
        return source
    from transformers import AutoTokenizer

    path = Path(source).expanduser()
    if path.exists() and not _has_tokenizer_files(path):
        raise ValueError(f"tokenizer={str(source)!r}: the directory has no tokenizer files "
                         f"({', '.join(_TOKENIZER_FILES[:5])}, ...). Fix: " + _NO_TOKENIZER_FIX)
    context = _offline() if offline or path.exists() else contextlib.nullcontext()
    with context:
        try:
            return AutoTokenizer.from_pretrained(str(path.resolve()) if path.exists() else str(source))
        except (OSError, ValueError) as err:
            raise ValueError(f"tokenizer={str(source)!r} could not be loaded ({err}). Fix: "
                             + _NO_TOKENIZER_FIX) from err


def _placeholder_tokenizer() -> Any:
    """A two-token stand-in so that booting does not look for the checkpoint's tokenizer (removed
    again right after)."""
    return build_word_tokenizer([])


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


_NEXT_TOKEN_CLASSES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")


def _lm_head_problem(model: Any) -> str | None:
    """Why ``model``'s outputs are not next-token logits, or ``None`` when they are (or when the model
    is not a Hugging Face model: a plain module is taken to return logits)."""
    hf = getattr(model, "original_model", None)
    config = getattr(hf, "config", None)
    if hf is None or config is None or not hasattr(config, "architectures"):
        return None
    cls = type(hf).__name__
    if cls.endswith(_NEXT_TOKEN_CLASSES):
        return None
    declared = [a for a in (getattr(config, "architectures", None) or []) if isinstance(a, str)]
    if cls.endswith("ForMaskedLM"):
        if declared and not any(a.endswith(("LM", "LMHeadModel", "ForPreTraining")) for a in declared):
            return (f"its checkpoint is a {declared[0]}, saved without a language-model head: the "
                    f"bridge's {cls} head is randomly initialised, so its logits are random")
        return (f"it is a masked language model ({cls}): its logits predict masked tokens at their "
                "own position, not the next token")
    return f"it is a {cls}, not a causal language model: its outputs are not next-token logits"


def has_lm_head(model: Any) -> bool:
    """Whether ``model``'s outputs are next-token logits from a trained head (decided from the model:
    its Hugging Face class and the architectures its checkpoint declares). ``False`` for
    all-MiniLM-L6-v2 (a ``BertModel`` checkpoint: no head) and for masked LMs; ``True`` for causal LMs
    and for plain modules, which are taken to return logits."""
    return _lm_head_problem(model) is None


def check_lm_head(model: Any, what: str) -> None:
    """A ``ValueError`` naming ``what`` when ``model`` has no next-token head (see :func:`has_lm_head`)."""
    problem = _lm_head_problem(model)
    if problem is not None:
        raise ValueError(
            f"{what} needs next-token logits, but the model has no language-model head: {problem}. "
            "Use residual-stream analyses (probing, norms) and a behavioural objective on its hidden "
            "states (Behavioural(task, kind='mse')) instead of a loss."
        )


def _check_source(name_or_path: Any) -> str:
    """``name_or_path`` as a string, or a ValueError for what cannot name a model."""
    if isinstance(name_or_path, bool) or not isinstance(name_or_path, (str, os.PathLike)):
        raise ValueError(
            f"load_model({name_or_path!r}): give a Hugging Face hub name (e.g. 'gpt2') or the path of a "
            f"directory written by save_pretrained(), not {type(name_or_path).__name__}. For a shipped "
            "model organism use interp.organisms.load(name)."
        )
    target = str(name_or_path)
    if not target.strip():
        raise ValueError("load_model(''): give a hub name (e.g. 'gpt2') or a model directory.")
    path = Path(target).expanduser()
    if path.is_file():
        raise ValueError(
            f"load_model({target!r}): {path} is a file; give the directory that holds it (with "
            "config.json and the weights), e.g. load_model(" + repr(str(path.parent)) + ")."
        )
    return target


def load_model(
    name_or_path: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    offline: bool | None = None,
    tokenizer: Any = None,
):
    """Boot a Hugging Face model (hub name or local directory) as a ``TransformerBridge`` in eval mode.

    Args:
        name_or_path: a hub model id or a local directory containing ``config.json`` and weights.
        device: where to put the model (``None``: CUDA when available, else CPU).
        dtype: parameter dtype, a ``torch.dtype`` or its name (``None``: float32).
        offline: ``True`` never contacts the hub; ``False`` always may; ``None`` (default) decides:
            offline for local directories and when the hub does not answer within 2 s.
        tokenizer: ``None``: the checkpoint's own (checked); a tokenizer object; a hub name or
            directory to load one from; ``False``: none (token ids only, with a warning).

    Raises:
        FileNotFoundError: a local-looking path that does not exist, or a hub model that is not in
            the local cache while offline.
        ValueError: a missing, empty or mismatched tokenizer (see the module docstring).
    """
    from transformer_lens.model_bridge import TransformerBridge

    target = _check_source(name_or_path)
    given_device, device, dtype = device, resolve_device(device), resolve_dtype(dtype)
    _check_available(device, given_device)
    target, local_dir = _locate(target)
    is_local = local_dir is not None
    if offline is None:
        offline = is_local or not hub_reachable()
        if offline and not is_local:
            log.info("Hugging Face hub unreachable: loading %r from the local cache only.", target)
    _check_tokenizer_argument(tokenizer, local_dir)
    tok = None
    if tokenizer is False:
        tok = _placeholder_tokenizer()
    elif tokenizer is not None:
        tok = _load_tokenizer(tokenizer, offline)
    context = _offline() if offline else contextlib.nullcontext()
    with context, torch.random.fork_rng(devices=[]):
        # weights the checkpoint lacks are initialised at random: under a fixed seed, so that loading
        # is deterministic (and the caller's random state is untouched)
        torch.manual_seed(LOAD_SEED)
        try:
            model = TransformerBridge.boot_transformers(target, device=str(device), dtype=dtype,
                                                        tokenizer=tok)
        except OSError as err:
            if offline and not is_local:
                raise FileNotFoundError(
                    f"Model {target!r} is not in the local Hugging Face cache and the hub cannot be "
                    "reached (offline). Download it on a connected machine (or save_pretrained() it "
                    "to a directory) and pass that directory."
                ) from err
            raise
    if tokenizer is False:
        _drop_tokenizer(model, str(name_or_path))
        warnings.warn(f"load_model({str(name_or_path)!r}, tokenizer=False): no tokenizer; the model "
                      "takes token ids only (model.tokenizer is None).", UserWarning, stacklevel=2)
    elif getattr(model, "tokenizer", None) is None:
        raise ValueError(f"{target}: the model loaded without a tokenizer. Fix: " + _NO_TOKENIZER_FIX)
    else:
        check_tokenizer(model.tokenizer, model_vocab(model), what=f"the tokenizer of {target}")
    return model.eval()


def _locate(target: str) -> tuple[str, Path | None]:
    """``(target, local directory or None)``: a local model directory (``target`` resolved, checked
    to hold ``config.json``) or a hub name; a local-looking path that does not exist is a
    FileNotFoundError."""
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
    return target, path if is_local else None


def _check_tokenizer_argument(tokenizer: Any, local_dir: Path | None) -> None:
    """A ValueError for a ``tokenizer`` argument that is none of the allowed kinds, or for ``None``
    (the checkpoint's own) when the local directory ``local_dir`` holds no tokenizer files."""
    if tokenizer is True or (tokenizer is not None and tokenizer is not False
                             and not isinstance(tokenizer, (str, os.PathLike)) and not _is_tokenizer(tokenizer)):
        raise ValueError(f"tokenizer={tokenizer!r}: give None (the checkpoint's own), a tokenizer "
                         "object (e.g. transformers.AutoTokenizer.from_pretrained(...); a plain function "
                         "is not one), a hub name or directory, or False (token ids only).")
    if tokenizer is None and local_dir is not None and not _has_tokenizer_files(local_dir):
        raise ValueError(f"{local_dir} has no tokenizer files ({', '.join(_TOKENIZER_FILES[:5])}, ...): "
                         "it was saved without its tokenizer. Fix: " + _NO_TOKENIZER_FIX)


def _drop_tokenizer(model: Any, name: str) -> None:
    """Remove the bridge's tokenizer (``tokenizer=False``): its text methods raise a clear error."""
    model.tokenizer = None
    driver = getattr(model, "_driver", None)
    if driver is not None and hasattr(driver, "tokenizer"):
        driver.tokenizer = None
    for method in _TOKENIZER_METHODS:
        if hasattr(model, method):
            object.__setattr__(model, method, _needs_tokenizer(name, method))
