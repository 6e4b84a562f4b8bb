"""The constructor style every analysis shares (scikit-learn style, Pedregosa et al. 2011; Buitinck et al. 2013).

An analysis takes explicit keyword arguments and stores each one unchanged under its own name;
``config`` holds the validated (normalised) frozen dataclass a sweep uses for its identity; what
``setup`` fits lives in attributes with a trailing underscore (``probe_``, ``batch_``), never in a
constructor argument; ``repr`` shows the constructor arguments.

Example::

    >>> class Thing(Params):
    ...     def __init__(self, eval_rows=256, name="thing"):
    ...         self.eval_rows, self.name = eval_rows, name
    >>> Thing(eval_rows=8)
    Thing(eval_rows=8, name='thing')
"""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["Params"]


class Params:
    """``get_params()`` and ``__repr__`` from the constructor's named arguments."""

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values()
                if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    def get_params(self) -> dict[str, Any]:
        """The constructor arguments, as given."""
        return {k: getattr(self, k) for k in self._param_names() if hasattr(self, k)}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"
