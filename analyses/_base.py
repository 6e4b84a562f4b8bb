"""The constructor style every analysis shares (scikit-learn style, Pedregosa et al. 2011; Buitinck et al. 2013).

An analysis takes explicit arguments and stores each one unchanged under its own name (``__init__``
does nothing else); its class declares once, in ``param_constraints``, what each parameter may be
(``{name: check}``, the checks of :mod:`interp.checks`), and :meth:`Params.validate_params` checks
them when work starts (the first thing ``setup`` does); what ``setup`` fits lives in attributes with
a trailing underscore (``probe_``, ``batch_``), guarded by :func:`interp.checks.check_is_fitted`;
``get_params()`` (a sweep's identity) and ``repr`` show the constructor arguments.

Example::

    >>> from functools import partial
    >>> from interp.checks import check_number
    >>> class Thing(Params):
    ...     param_constraints = {"eval_rows": partial(check_number, integer=True, minimum=1)}
    ...     def __init__(self, eval_rows=256, name="thing"):
    ...         self.eval_rows, self.name = eval_rows, name
    >>> Thing(eval_rows=8)
    Thing(eval_rows=8, name='thing')
    >>> Thing(eval_rows=0).validate_params()
    Traceback (most recent call last):
    ...
    ValueError: Thing(eval_rows=0): eval_rows must be an integer >= 1.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

from interp.checks import Constraint, check_params

__all__ = ["Params"]


class Params:
    """``get_params()`` and ``__repr__`` from the constructor's named arguments, and their checks."""

    #: ``{parameter: check(owner, name, value)}``, checked in this order by :meth:`validate_params`
    param_constraints: ClassVar[dict[str, Constraint]] = {}

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

    def validate_params(self) -> None:
        """Check every parameter against :attr:`param_constraints` (a ValueError names the first bad
        one, what it may be and the fix); analyses call it first thing in ``setup``."""
        check_params(self, self.param_constraints)
