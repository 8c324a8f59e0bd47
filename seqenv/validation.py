"""Argument checks shared by every layer: each returns the value normalised or raises naming it.

Wrong types raise :class:`TypeError`, values out of range :class:`ValueError`; every message names the
argument, the value received and what was expected. ``bool`` is never accepted as an int.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def check_int(
    value: Any,
    name: str,
    minimum: int | None = None,
    *,
    maximum: int | None = None,
    expected: str | None = None,
) -> int:
    """``value`` as a Python int (numpy integers accepted), within ``minimum``..``maximum`` when given.

    ``expected`` replaces the description of what was expected in the error message (default: the bounds).
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be {expected or _int_bounds(minimum, maximum)}, got {value!r}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {expected or _int_bounds(minimum, maximum)}, got {value!r}")
    return int(value)


def _int_bounds(minimum: int | None, maximum: int | None) -> str:
    if maximum is None:
        return "an int" if minimum is None else f"an int >= {minimum}"
    return f"an int <= {maximum}" if minimum is None else f"an int in {minimum}..{maximum}"


def check_positive_int(value: Any, name: str) -> int:
    """``value`` as an int ``>= 1``."""
    return check_int(value, name, minimum=1)


def check_seed(value: Any, name: str = "seed") -> int:
    """A seed: an int ``>= 0``."""
    return check_int(value, name, minimum=0)


def check_optional_seed(value: Any, name: str = "seed") -> int | None:
    """A seed or ``None`` (fresh entropy): ``None`` or an int ``>= 0``."""
    return None if value is None else check_int(value, name, minimum=0, expected="an int >= 0 or None")


def check_number(
    value: Any, name: str, minimum: float | None = None, *, strict: bool = False, expected: str | None = None
) -> float:
    """``value`` as a finite float; at least ``minimum`` (above it with ``strict=True``) when given."""
    if expected is None:
        bound = "" if minimum is None else f" {'>' if strict else '>='} {minimum:g}"
        expected = f"a finite number{bound}"
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be {expected}, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or (minimum is not None and (v <= minimum if strict else v < minimum)):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return v


def check_temperature(value: Any, name: str = "temperature") -> float:
    """A sampling temperature: a finite number ``>= 0``, where 0 means greedy."""
    return check_number(value, name, 0.0, expected="a finite number >= 0 (0 = greedy)")


def check_choice(value: Any, name: str, choices: Iterable[T]) -> T:
    """``value`` if it is one of ``choices``."""
    options = tuple(choices)
    try:
        found = any(
            isinstance(value, type(option))
            and isinstance(value, bool) == isinstance(option, bool)
            and value == option
            for option in options
        )
    except (TypeError, ValueError):  # e.g. an array compared with a string
        found = False
    if found:
        return value  # type: ignore[no-any-return]
    raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}; got {value!r}")
