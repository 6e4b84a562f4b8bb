"""Deprecated import path: use ``interp.app.sweepfile`` (the application layer, sweep files).

``interp.sweepconfig`` keeps working for one release: its names load ``interp.app.sweepfile`` on first access, with a
DeprecationWarning. The core package never imports the app layer, so importing this shim is cheap
and pulls in nothing of ``analyses``.

Example::

    >>> from interp.app.sweepfile import load_sweep_config                # doctest: +SKIP
"""

from __future__ import annotations

from interp._moved import forward

__getattr__, __dir__ = forward("interp.sweepconfig", "interp.app.sweepfile")
