"""Validation of config values and arguments, in one message format for every frozen config and analysis.

An impossible value raises a ``ValueError`` before any work starts, worded as
``Owner(field=value): field must be <what is allowed>. <the fix>``.

Example::

    >>> check_number("ProbeConfig", "folds", 5, integer=True, minimum=2)
    >>> check_number("ProbeConfig", "folds", 2.5, integer=True, minimum=2, fix="Use e.g. folds=5.")
    Traceback (most recent call last):
    ...
    ValueError: ProbeConfig(folds=2.5): folds must be an integer >= 2. Use e.g. folds=5.
    >>> check_choice("HeadAblation", "method", "man", ("mean", "zero"))
    Traceback (most recent call last):
    ...
    ValueError: HeadAblation(method='man'): method must be one of ('mean', 'zero'). Did you mean 'mean'?

An analysis declares its constraints once, as ``{parameter: check}`` with the ``check_*`` functions
above partially applied, and checks them with :func:`check_params` when work starts (scikit-learn's
``_parameter_constraints``, Buitinck et al. 2013); :func:`check_is_fitted` guards what needs ``setup``::

    >>> from functools import partial
    >>> class Thing:
    ...     constraints = {"folds": partial(check_number, integer=True, minimum=2)}
    ...     def __init__(self, folds=5):
    ...         self.folds = folds
    >>> check_params(Thing(folds=1), Thing.constraints)
    Traceback (most recent call last):
    ...
    ValueError: Thing(folds=1): folds must be an integer >= 2.
    >>> check_is_fitted(Thing(), "probe_")
    Traceback (most recent call last):
    ...
    RuntimeError: Thing: call setup(model, task) on the clean weights first (it sets probe_).
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = [
    "bad_value", "check_number", "check_flag", "check_choice", "check_fraction", "check_ints",
    "Constraint", "check_params", "check_is_fitted",
]

#: a parameter's check, called as ``check(owner, name, value)``: raises :func:`bad_value`'s error
Constraint = Callable[[str, str, Any], Any]


def bad_value(owner: str, name: str, value: Any, allowed: str, fix: str = "") -> ValueError:
    """The error for ``owner(name=value)``: what ``name`` must be (``allowed``) and how to fix it.

    ``allowed`` completes "name must be ..."; ``fix`` is a sentence (e.g. ``"Use e.g. lr=1e-3."``).
    """
    allowed = allowed.rstrip(".")
    fix = fix.strip()
    return ValueError(f"{owner}({name}={value!r}): {name} must be {allowed}.{' ' + fix if fix else ''}")


def _is_real(value: Any, integer: bool) -> bool:
    kind = numbers.Integral if integer else numbers.Real
    return isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value)


def check_number(owner: str, name: str, value: Any, *, integer: bool = False, zero_ok: bool = False,
                 minimum: float | None = None, maximum: float | None = None, none_ok: bool = False,
                 fix: str = "") -> None:
    """Raise :func:`bad_value` unless ``value`` is a finite real number (an integer, numpy's included,
    if ``integer``; never a bool) that is > 0, or ≥ 0 with ``zero_ok``, or ≥ ``minimum`` when that is
    given, and ≤ ``maximum`` when that is given; ``None`` passes with ``none_ok``."""
    if value is None and none_ok:
        return
    ok = _is_real(value, integer)
    if minimum is not None:
        ok = ok and value >= minimum
        bound = f">= {minimum:g}"
    else:
        ok = ok and (value > 0 or (zero_ok and value == 0))
        bound = ">= 0" if zero_ok else "> 0"
    if maximum is not None:
        ok = ok and value <= maximum
        bound += f" and <= {maximum:g}"
    if not ok:
        kind = "an integer" if integer else "a finite number"
        raise bad_value(owner, name, value, f"{kind} {bound}" + (" or None" if none_ok else ""), fix)


def check_fraction(owner: str, name: str, value: Any, *, closed: bool = True, fix: str = "") -> None:
    """``value`` must be a number in [0, 1] (``closed``) or in (0, 1)."""
    ok = _is_real(value, False) and (0 <= value <= 1 if closed else 0 < value < 1)
    if not ok:
        raise bad_value(owner, name, value, "a fraction in " + ("[0, 1]" if closed else "(0, 1)"), fix)


def check_flag(owner: str, name: str, value: Any, fix: str = "") -> None:
    """``value`` must be ``True`` or ``False`` (not 0/1, not a string)."""
    if not isinstance(value, bool):
        raise bad_value(owner, name, value, "True or False", fix)


def check_choice(owner: str, name: str, value: Any, choices: Iterable[Any], fix: str = "") -> None:
    """``value`` must be one of ``choices``; a near-miss string gets a "Did you mean" fix."""
    choices = tuple(choices)
    try:
        ok = value in choices
    except TypeError:  # unhashable compared against a tuple never raises, but be safe
        ok = False
    if ok:
        return
    if not fix and isinstance(value, str):
        close = difflib.get_close_matches(value, [c for c in choices if isinstance(c, str)], n=1)
        fix = f"Did you mean {close[0]!r}?" if close else ""
    raise bad_value(owner, name, value, f"one of {choices!r}", fix)


def check_ints(owner: str, name: str, value: Any, *, minimum: int | None = 0, empty_ok: bool = False,
               fix: str = "") -> tuple[int, ...]:
    """``value`` must be a sequence (not a string) of integers ≥ ``minimum`` (any sign when ``None``),
    non-empty unless ``empty_ok``; returns it as a tuple of ints."""
    seq = isinstance(value, (tuple, list)) and (empty_ok or len(value) > 0)
    ok = seq and all(_is_real(v, True) and (minimum is None or v >= minimum) for v in value)
    if not ok:
        what = "integers" if minimum is None else f"integers >= {minimum}"
        raise bad_value(owner, name, value, f"{'a' if empty_ok else 'a non-empty'} sequence of {what}", fix)
    return tuple(int(v) for v in value)


def check_params(obj: Any, constraints: Mapping[str, Constraint]) -> None:
    """Check each parameter of ``obj`` named in ``constraints`` (its value: ``getattr(obj, name)``)
    with its constraint, in declaration order; the owner in the message is ``obj``'s class name."""
    owner = type(obj).__name__
    for name, constraint in constraints.items():
        constraint(owner, name, getattr(obj, name))


def check_is_fitted(obj: Any, *attributes: str) -> None:
    """A ``RuntimeError`` unless ``obj`` has every fitted attribute in ``attributes`` (set, not
    ``None``): what ``setup(model, task)`` fits on the clean weights before any call."""
    missing = [a for a in attributes if getattr(obj, a, None) is None]
    if missing:
        name = getattr(obj, "name", None) or type(obj).__name__
        raise RuntimeError(f"{name}: call setup(model, task) on the clean weights first (it sets "
                           f"{', '.join(missing)}).")
