"""Deprecated import path: use :mod:`interp.sweep` (``LocalExecutor``, ``RayExecutor``,
``ModelRecipe``, ``SweepJobsFailed``, ``resolve_executor``). Attribute access warns
(DeprecationWarning) and forwards for one release.

Example::

    >>> from interp.sweep import ModelRecipe, RayExecutor    # not: from interp.executors import ...
"""

from __future__ import annotations

from interp._moved import forward

__all__ = ["LocalExecutor", "ModelRecipe", "RayExecutor", "SweepJobsFailed", "resolve_executor"]
__getattr__, __dir__ = forward("interp.executors", "interp.sweep", names=__all__)
