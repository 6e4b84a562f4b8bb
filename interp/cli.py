"""Deprecated import path: use ``interp.app.cli`` (the application layer, the ``interp`` command line).

``interp.cli`` keeps working for one release: its names load ``interp.app.cli`` on first access, with a
DeprecationWarning. The core package never imports the app layer, so importing this shim is cheap
and pulls in nothing of ``analyses``.

Example::

    >>> from interp.app.cli import main                # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

_NEW = "interp.app.cli"


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    warnings.warn(f"interp.cli is deprecated; import {name} from {_NEW} instead.", DeprecationWarning,
                  stacklevel=2)
    return getattr(importlib.import_module(_NEW), name)


def __dir__() -> list[str]:
    return list(getattr(importlib.import_module(_NEW), "__all__", []))
