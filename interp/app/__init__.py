"""The application layer: the ``interp`` command line, the demo and sweep files.

This package sits on top of everything else: it may import ``interp`` core, ``hooks`` and
``analyses`` (the layering is ``hooks`` <- ``interp`` core <- ``analyses`` <- ``interp.app``, see
docs/design.md), and nothing outside it imports it, so the core never depends on ``analyses``.

Modules:

- ``interp.app.cli``: the ``interp`` console script (``interp demo``, ``interp sweep FILE.toml``, ...);
- ``interp.app.demo``: the main job on the bundled induction organism (``run_demo``);
- ``interp.app.sweepfile``: sweeps described in TOML files, and rebuilding reports from results.

Example::

    >>> from interp.app.cli import main
    >>> main(["organisms", "list"])                                 # doctest: +ELLIPSIS
    induction        2-layer, 2-head, d_model 32 attention-only transformer ...
    modadd           1-layer transformer ...
    0
"""
