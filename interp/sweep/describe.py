"""Configured objects described for a sweep's identity: JSON-able and free of memory addresses.

A sweep's ``config.json`` names its analyses and degradation by what they are configured with, so a
rerun resumes only the same experiment. :func:`describe` gives a dataclass's fields (or those of its
``config``), else the type, ``name`` and the parameters the object declares (``get_params()``, the
scikit-learn convention), plus any ``version`` it declares; :func:`describe_value` does one value
(tensors as their shape, dtype and SHA-256, functions as ``module.qualname``, other objects as their
repr with addresses removed), so every process describes the same object the same way.

Example::

    >>> from interp.degradations import WeightNoise
    >>> describe(WeightNoise(sigma=0.1))["sigma"]
    0.1
    >>> describe_value(len)
    'builtins.len'
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import math
import re
from typing import Any

import torch

from interp.analysis import Analysis, FunctionAnalysis
from interp.sweep.store import jsonable

__all__ = ["describe", "describe_value"]

# fields that change how a run looks, not what it computes: not part of a sweep's identity
_PRESENTATION = frozenset({"progress"})
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def describe_value(v: Any) -> Any:
    """A JSON-able, address-free description of one parameter value: numbers and strings as they
    are, tensors and arrays as their shape, dtype and a SHA-256 of their bytes, functions and classes
    as ``module.qualname``, configured objects as :func:`describe`, anything else as its repr with
    memory addresses removed (the same in every process)."""
    if isinstance(v, (str, int, bool)) or v is None:
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else repr(v)
    if isinstance(v, (list, tuple)):
        return [describe_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): describe_value(x) for k, x in v.items()}
    if isinstance(v, torch.Tensor) or (hasattr(v, "tobytes") and hasattr(v, "shape") and hasattr(v, "dtype")):
        t = v.detach().cpu().contiguous() if isinstance(v, torch.Tensor) else torch.as_tensor(v).contiguous()
        raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        return {"shape": list(t.shape), "dtype": str(t.dtype), "sha256": hashlib.sha256(raw).hexdigest()}
    if isinstance(v, torch.nn.Module):  # e.g. a pretrained transcoder: its type and weights
        return {"type": type(v).__name__, "state": describe_value(dict(v.state_dict()))}
    if inspect.isroutine(v) or isinstance(v, type):
        return f"{getattr(v, '__module__', '?')}.{getattr(v, '__qualname__', getattr(v, '__name__', '?'))}"
    if dataclasses.is_dataclass(v) or dataclasses.is_dataclass(getattr(v, "config", None)):
        return describe(v)
    return _ADDRESS.sub("", repr(v))


def _declared_params(obj: Any) -> dict[str, Any]:
    """A user object's parameters where it declares them (``get_params()``, the scikit-learn
    convention), described address-free; nothing otherwise (its ``version`` then says when its
    output changed)."""
    get_params = getattr(obj, "get_params", None)
    if not callable(get_params):
        return {}
    try:
        params = dict(get_params())
    except Exception:  # noqa: BLE001 - a get_params of another convention: not part of the identity
        return {}
    return {str(k): describe_value(v) for k, v in sorted(params.items()) if k != "name"}


def _version(obj: Any) -> Any:
    """The ``version`` a user gave an analysis (or the function it wraps), or None."""
    version = getattr(obj, "version", None)
    return None if version is None else describe_value(version)


def describe(obj: Any) -> Any:
    """A JSON-able, address-free description of a configured object: its dataclass fields (or those
    of its ``config`` attribute), else its type, ``name`` and the parameters it declares
    (``get_params()``); with the ``version`` it declares, if any (a user's analysis bumps it when its
    output changes: nothing else can tell that its numbers changed meaning)."""
    if isinstance(obj, FunctionAnalysis):  # describe what it wraps
        fn = obj.fn
        if inspect.isroutine(fn) or not hasattr(fn, "__dict__"):
            desc = {"type": "function", "name": obj.name,
                    "function": f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', obj.name)}"}
            version = _version(fn)
            return desc if version is None else {**desc, "version": version}
        return {**describe(fn), "name": obj.name}
    source = obj if dataclasses.is_dataclass(obj) else getattr(obj, "config", None)
    desc: dict[str, Any] = {"type": type(obj).__name__}
    if dataclasses.is_dataclass(source) and not isinstance(source, type):
        desc.update({
            f.name: jsonable(getattr(source, f.name))
            for f in dataclasses.fields(source)
            if f.repr and f.name not in _PRESENTATION
        })
        if "name" not in desc and isinstance(getattr(obj, "name", None), str) and isinstance(obj, Analysis):
            desc["name"] = obj.name  # the name its rows are stored under: a renamed analysis is another one
    else:
        if hasattr(obj, "name"):
            desc["name"] = jsonable(obj.name)
        params = _declared_params(obj)
        if params:
            desc["params"] = params
    version = _version(obj)
    if version is not None:
        desc["version"] = version
    return desc
