"""Deprecated import path: use :mod:`interp.sweep` (``run_sweep``, ``weights_digest``, ``COLUMNS``,
``read_records``, ...). Attribute access warns (DeprecationWarning) and forwards for one release.

Example::

    >>> from interp.sweep import run_sweep       # not: from interp.sweeps import run_sweep
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

_NAMES = {
    "run_sweep": "interp.sweep",
    "weights_digest": "interp.sweep.kernel",
    "COLUMNS": "interp.sweep.store",
    "BASELINE_KEY": "interp.sweep.store",
    "SETUP_KEY": "interp.sweep.store",
    "read_records": "interp.sweep.store",
}
__all__ = ["run_sweep", "weights_digest"]


def __getattr__(name: str) -> Any:
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'interp.sweeps' has no attribute {name!r} (it moved to interp.sweep)")
    warnings.warn(f"interp.sweeps.{name} moved: import it from {module} (interp.sweeps goes away in the "
                  "next release).", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(_NAMES)
