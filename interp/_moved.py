"""Deprecated import paths: one forwarder for every module whose names moved elsewhere.

A module that moved keeps its old path for one release as a shim whose ``__getattr__`` and
``__dir__`` come from :func:`forward`: each name loads the new module on first access (so importing
the shim stays cheap and loads nothing above its layer) and warns with a ``DeprecationWarning``.

Example::

    >>> __getattr__, __dir__ = forward("interp.old", "interp.checks", names=("bad_value",))
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     f = __getattr__("bad_value")
    >>> str(caught[0].message)
    'interp.old.bad_value moved: import it from interp.checks (interp.old goes away in the next release).'
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["forward"]


def forward(old: str, new: str, names: Sequence[str] | None = None
            ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for the shim module ``old`` whose names now live in ``new``.

    ``names``: the names the old path offered (``None``: every public name of ``new``).
    """

    def __getattr__(name: str) -> Any:
        if name.startswith("__") or (names is not None and name not in names):
            raise AttributeError(f"module {old!r} has no attribute {name!r} (it moved to {new})")
        warnings.warn(f"{old}.{name} moved: import it from {new} ({old} goes away in the next release).",
                      DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(new), name)

    def __dir__() -> list[str]:
        return sorted(names if names is not None else getattr(importlib.import_module(new), "__all__", []))

    return __getattr__, __dir__
