"""The shared argument checks: values come back normalised, and every rejection names the argument, the bad
value and what was expected, as TypeError (wrong type) or ValueError (out of range)."""

import math
import re

import numpy as np
import pytest

from seqenv.validation import (
    check_choice,
    check_int,
    check_number,
    check_optional_seed,
    check_positive_int,
    check_seed,
    check_temperature,
)


def test_ints_come_back_as_python_ints_and_numpy_ints_are_accepted():
    assert check_int(np.int32(3), "n") == 3 and type(check_int(np.int64(3), "n")) is int
    assert check_positive_int(1, "n") == 1 and check_seed(0) == 0
    assert check_optional_seed(None) is None and check_optional_seed(np.uint8(7)) == 7
    assert check_int(5, "k", 0, maximum=7) == 5


@pytest.mark.parametrize("bad", [True, 1.0, "3", None, np.float64(2.0)])
def test_non_ints_are_type_errors_naming_the_value(bad):
    with pytest.raises(TypeError, match=re.escape(f"n must be an int >= 1, got {bad!r}")):
        check_positive_int(bad, "n")


@pytest.mark.parametrize(
    ("check", "value", "message"),
    [
        (lambda v: check_positive_int(v, "steps"), 0, "steps must be an int >= 1, got 0"),
        (lambda v: check_seed(v), -1, "seed must be an int >= 0, got -1"),
        (lambda v: check_int(v, "token", 0, maximum=7), 8, "token must be an int in 0..7, got 8"),
    ],
)
def test_out_of_range_ints_are_value_errors(check, value, message):
    with pytest.raises(ValueError, match=message):
        check(value)


def test_numbers_and_temperatures():
    assert check_number(np.float32(0.5), "x") == 0.5 and check_temperature(0) == 0.0
    with pytest.raises(ValueError, match="must be a finite number > 0"):
        check_number(0.0, "steps_scale", 0.0, strict=True)
    for bad in (math.nan, math.inf, -1e-9):
        with pytest.raises(ValueError, match=r"temperature must be a finite number >= 0 \(0 = greedy\)"):
            check_temperature(bad)
    with pytest.raises(TypeError, match="temperature must be"):
        check_temperature(True)


def test_choices_compare_by_value_and_type():
    assert check_choice("ray", "backend", ("local", "ray")) == "ray"
    for bad in ("slurm", ["ray"], 1, np.array(["ray"])):
        with pytest.raises(ValueError, match="backend must be one of 'local', 'ray'; got"):
            check_choice(bad, "backend", ("local", "ray"))
    with pytest.raises(ValueError):
        check_choice(True, "flag", (1, 2))  # True == 1, but a bool is not the int 1
