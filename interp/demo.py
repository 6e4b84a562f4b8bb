"""Deprecated import path: use ``interp.app.demo`` (the application layer, the main job).

``interp.demo`` keeps working for one release: its names load ``interp.app.demo`` on first access, with a
DeprecationWarning. The core package never imports the app layer, so importing this shim is cheap
and pulls in nothing of ``analyses``.

Example::

    >>> from interp.app.demo import run_demo                # doctest: +SKIP
"""

from __future__ import annotations

from interp._moved import forward

__getattr__, __dir__ = forward("interp.demo", "interp.app.demo")
