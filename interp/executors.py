"""Deprecated import path: use :mod:`interp.sweep` (``LocalExecutor``, ``RayExecutor``,
``ModelRecipe``, ``SweepJobsFailed``, ``resolve_executor``). Attribute access warns
(DeprecationWarning) and forwards for one release.

Example::

    >>> from interp.sweep import ModelRecipe, RayExecutor    # not: from interp.executors import ...
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

_NAMES = {
    "LocalExecutor": "interp.sweep.local",
    "RayExecutor": "interp.sweep.ray",
    "ModelRecipe": "interp.sweep.ray",
    "SweepJobsFailed": "interp.sweep.ray",
    "resolve_executor": "interp.sweep",
}
__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'interp.executors' has no attribute {name!r} (it moved to interp.sweep)")
    warnings.warn(f"interp.executors.{name} moved: import it from interp.sweep (interp.executors goes away "
                  "in the next release).", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(_NAMES)
