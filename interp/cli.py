"""Deprecated import path: use ``interp.app.cli`` (the application layer, the ``interp`` command line).

``interp.cli`` keeps working for one release: its names load ``interp.app.cli`` on first access, with a
DeprecationWarning. The core package never imports the app layer, so importing this shim is cheap
and pulls in nothing of ``analyses``.

Example::

    >>> from interp.app.cli import main                # doctest: +SKIP
"""

from __future__ import annotations

from interp._moved import forward

__getattr__, __dir__ = forward("interp.cli", "interp.app.cli")
