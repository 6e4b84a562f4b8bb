"""Re-export of :mod:`interp.checks` (the public home of config validation); kept for old imports."""

from __future__ import annotations

from interp.checks import bad_value, check_choice, check_flag, check_fraction, check_ints, check_number

__all__ = ["bad_value", "check_number", "check_flag", "check_choice", "check_fraction", "check_ints"]
