"""Validation of config values, shared by every frozen config (house rule: an impossible value raises a
``ValueError`` that names the field and the value, says what is allowed and how to fix it).

Example::

    >>> check_number("ProbeConfig", "folds", 5, integer=True, minimum=2)
    >>> check_number("ProbeConfig", "folds", 2.5, integer=True, minimum=2)
    Traceback (most recent call last):
    ...
    ValueError: ProbeConfig(folds=2.5): folds must be an integer >= 2.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["bad_value", "check_number"]


def bad_value(owner: str, name: str, value: Any, allowed: str, fix: str = "") -> ValueError:
    """The error for ``owner(name=value)``: what ``name`` must be, and how to fix it."""
    return ValueError(f"{owner}({name}={value!r}): {name} must be {allowed}.{' ' + fix if fix else ''}")


def check_number(owner: str, name: str, value: Any, *, integer: bool = False, zero_ok: bool = False,
                 minimum: float | None = None, none_ok: bool = False, fix: str = "") -> None:
    """Raise :func:`bad_value` unless ``value`` is a finite real number (an integer, numpy's included,
    if ``integer``; never a bool) that is > 0, or ≥ 0 with ``zero_ok``, or ≥ ``minimum`` when that is
    given; ``None`` passes with ``none_ok``."""
    if value is None and none_ok:
        return
    ok_type = isinstance(value, numbers.Integral if integer else numbers.Real) and not isinstance(value, bool)
    if minimum is not None:
        ok = ok_type and math.isfinite(value) and value >= minimum
        bound = f">= {minimum:g}"
    else:
        ok = ok_type and math.isfinite(value) and (value > 0 or (zero_ok and value == 0))
        bound = ">= 0" if zero_ok else "> 0"
    if not ok:
        kind = "an integer" if integer else "a finite number"
        raise bad_value(owner, name, value, f"{kind} {bound}" + (" or None" if none_ok else ""), fix)
