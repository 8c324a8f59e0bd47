"""The RL tasks (docs/spec.md §2): which values of the next even token count as success."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from seqenv.sequence import N_OUT
from seqenv.validation import check_int

#: The post's three tasks: task id -> good set for ``s_{t+1}``.
TASKS: dict[str, tuple[int, ...]] = {
    "ngood2": (0, 4),
    "ngood4": (0, 2, 4, 6),
    "ngood6": (0, 1, 2, 4, 5, 6),
}

GoodSpec = str | Iterable[int]


def good_set(good: GoodSpec) -> tuple[int, ...]:
    """Resolve a task id or a custom good set to a sorted tuple, validating it.

    A custom good set is a non-empty proper subset of 0..7 without duplicates.

    :param good: ``"ngood2"``, ``"ngood4"``, ``"ngood6"`` or an iterable of ints.
    """
    if isinstance(good, str):
        if good not in TASKS:
            raise ValueError(
                f"unknown task {good!r}; expected one of {sorted(TASKS)} or a set of values in 0..7"
            )
        return TASKS[good]
    try:
        values = list(good)
    except TypeError:
        raise TypeError(f"good must be a task id or an iterable of ints in 0..7, got {good!r}") from None
    for v in values:
        check_int(v, "good set value", 0, maximum=N_OUT - 1)
    if not values:
        raise ValueError("good set is empty; expected a non-empty proper subset of 0..7")
    if len(set(values)) != len(values):
        dup = sorted({v for v in values if values.count(v) > 1})
        raise ValueError(f"good set {values} repeats {dup}; expected distinct values")
    if len(values) == N_OUT:
        raise ValueError(f"good set {sorted(values)} is all of 0..7; expected a proper subset (p < 1)")
    return tuple(sorted(int(v) for v in values))


def good_mask(good: GoodSpec) -> np.ndarray:
    """Boolean mask of shape ``(8,)``: ``mask[x]`` is True when even token ``x`` is a success."""
    mask = np.zeros(N_OUT, dtype=bool)
    mask[list(good_set(good))] = True
    return mask


def task_name(good: GoodSpec) -> str:
    """The task id of a good set (``"ngood4"``), or a readable name for a custom one (``"good{0,3}"``)."""
    gs = good_set(good)
    for name, values in TASKS.items():
        if values == gs:
            return name
    return "good{" + ",".join(map(str, gs)) + "}"
