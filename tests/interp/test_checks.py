"""interp.checks: one message format (field, value, what is allowed, the fix)."""

from __future__ import annotations


import pytest

from interp.checks import bad_value, check_choice, check_flag, check_fraction, check_ints, check_number


def test_message_format_names_field_value_allowed_and_fix():
    e = bad_value("Cfg", "lr", -1, "a finite number > 0", "Use e.g. lr=1e-3.")
    assert str(e) == "Cfg(lr=-1): lr must be a finite number > 0. Use e.g. lr=1e-3."


@pytest.mark.parametrize("value", [True, 2.5, float("nan"), float("inf"), "3", None, 1])
def test_check_number_rejects(value):
    with pytest.raises(ValueError, match=r"^Cfg\(n="):
        check_number("Cfg", "n", value, integer=True, minimum=2)


def test_check_number_bounds():
    check_number("Cfg", "x", 0, zero_ok=True)
    check_number("Cfg", "x", None, none_ok=True)
    check_number("Cfg", "x", 0.5, zero_ok=True, maximum=1)
    with pytest.raises(ValueError, match=r">= 0 and <= 1"):
        check_number("Cfg", "x", 1.5, zero_ok=True, maximum=1)
    with pytest.raises(ValueError, match=r"> 0"):
        check_number("Cfg", "x", 0)


def test_flag_choice_fraction_ints():
    check_flag("C", "f", False)
    with pytest.raises(ValueError, match=r"C\(f=1\): f must be True or False"):
        check_flag("C", "f", 1)
    with pytest.raises(ValueError, match="Did you mean 'mean'"):
        check_choice("C", "method", "maen", ("mean", "zero"))
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        check_fraction("C", "q", 1.0, closed=False)
    assert check_ints("C", "layers", [0, 2]) == (0, 2)
    with pytest.raises(ValueError, match="non-empty sequence of integers >= 0"):
        check_ints("C", "layers", "01")
