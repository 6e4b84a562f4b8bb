"""Deprecated import path: use ``interp.app.sweepfile`` (the application layer, sweep files).

``interp.sweepconfig`` keeps working for one release: its names load ``interp.app.sweepfile`` on first access, with a
DeprecationWarning. The core package never imports the app layer, so importing this shim is cheap
and pulls in nothing of ``analyses``.

Example::

    >>> from interp.app.sweepfile import load_sweep_config                # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

_NEW = "interp.app.sweepfile"


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    warnings.warn(f"interp.sweepconfig is deprecated; import {name} from {_NEW} instead.", DeprecationWarning,
                  stacklevel=2)
    return getattr(importlib.import_module(_NEW), name)


def __dir__() -> list[str]:
    return list(getattr(importlib.import_module(_NEW), "__all__", []))
