"""The tasks (docs/spec.md §2): the post's three good sets and validated custom ones."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqenv.tasks import TASKS, good_mask, good_set, task_name


def test_the_posts_tasks():
    assert TASKS == {"ngood2": (0, 4), "ngood4": (0, 2, 4, 6), "ngood6": (0, 1, 2, 4, 5, 6)}
    for name, values in TASKS.items():
        assert good_set(name) == values
        assert (
            good_mask(name).mean() == len(values) / 8 == {"ngood2": 0.25, "ngood4": 0.5, "ngood6": 0.75}[name]
        )
        assert task_name(name) == name
        assert task_name(reversed(values)) == name  # a task's good set given in any order is that task


proper_subsets = st.sets(st.integers(0, 7), min_size=1, max_size=7)


@settings(max_examples=200, deadline=None)
@given(proper_subsets, st.randoms())
def test_custom_good_sets_round_trip(values, rnd):
    as_list = list(values)
    rnd.shuffle(as_list)
    gs = good_set(as_list)
    assert gs == tuple(sorted(values))
    assert good_set(np.array(as_list)) == gs  # numpy ints are ints
    mask = good_mask(as_list)
    assert mask.dtype == bool and mask.shape == (8,) and set(np.flatnonzero(mask)) == values
    name = task_name(as_list)
    assert name in TASKS or name == "good{" + ",".join(map(str, gs)) + "}"


@pytest.mark.parametrize(
    ("good", "error", "match"),
    [
        ([], ValueError, "good set is empty"),
        ((1, 1, 3), ValueError, r"repeats \[1\]; expected distinct values"),
        (range(8), ValueError, r"is all of 0..7; expected a proper subset"),
        ((0, 8), ValueError, r"good set value must be an int in 0\.\.7, got 8"),
        ((-1, 2), ValueError, r"good set value must be an int in 0\.\.7, got -1"),
        ((0, 2.0), TypeError, "good set value must be an int in 0..7, got 2.0"),
        ((True, 2), TypeError, "good set value must be an int in 0..7, got True"),
        (("0", "2"), TypeError, "good set value must be an int in 0..7, got '0'"),
        ("ngood3", ValueError, "unknown task 'ngood3'"),
        (5, TypeError, "good must be a task id or an iterable of ints in 0..7, got 5"),
        (None, TypeError, "got None"),
    ],
)
def test_bad_good_sets_raise_naming_the_value(good, error, match):
    for fn in (good_set, good_mask, task_name):
        with pytest.raises(error, match=match):
            fn(good)
