"""Deprecated import path: use :mod:`interp.sweep` (``run_sweep``, ``weights_digest``, ``COLUMNS``,
``read_records``, ...). Attribute access warns (DeprecationWarning) and forwards for one release.

Example::

    >>> from interp.sweep import run_sweep       # not: from interp.sweeps import run_sweep
"""

from __future__ import annotations

from interp._moved import forward

__all__ = ["run_sweep", "weights_digest"]
__getattr__, __dir__ = forward("interp.sweeps", "interp.sweep", names=(
    "run_sweep", "weights_digest", "COLUMNS", "BASELINE_KEY", "SETUP_KEY", "read_records"))
