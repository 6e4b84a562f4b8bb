"""interp.checks: one message format (field, value, what is allowed, the fix) and renamed arguments."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import pytest

from interp.checks import (bad_value, check_choice, check_flag, check_fraction, check_ints, check_number,
                           renamed_arguments)


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


def test_renamed_arguments_on_frozen_dataclass():
    @renamed_arguments(rows="eval_rows")
    @dataclass(frozen=True)
    class C:
        eval_rows: int = 1

    with pytest.warns(DeprecationWarning, match=r"C\(rows=...\) is renamed eval_rows="):
        assert C(rows=3).eval_rows == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert C(eval_rows=4).eval_rows == 4
    with pytest.raises(ValueError, match="Pass only eval_rows="):
        C(rows=3, eval_rows=4)


def test_an_error_about_a_renamed_argument_names_what_the_caller_wrote():
    @renamed_arguments(chunk="batch_size")
    @dataclass(frozen=True)
    class C:
        batch_size: int = 1

        def __post_init__(self):
            check_number("C", "batch_size", self.batch_size, integer=True, minimum=1)

    with pytest.warns(DeprecationWarning), pytest.raises(
            ValueError, match=r"^C\(batch_size=0\): batch_size must be an integer >= 1\. \(given as chunk=0, the old "
                              r"name of batch_size\)$"):
        C(chunk=0)
