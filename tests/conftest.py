"""Shared test setup and the statistical helpers every test module uses.

Rate checks compare an empirical frequency with its exact probability within ``Z`` binomial standard
errors; seeds are fixed, so a test either always passes or always fails, and 5 s.e. leaves ample margin.
"""

from __future__ import annotations

import math

import pytest

#: tolerance of rate checks, in binomial standard errors
Z = 5.0
#: p-value below which a chi-square comparison fails
P_ALPHA = 1e-6


def binomial_se(p: float, n: float) -> float:
    """Standard error of a rate with probability ``p`` estimated from ``n`` independent samples."""
    return math.sqrt(p * (1 - p) / n)


def within(rate: float, p: float, n: float, z: float = Z) -> bool:
    """Whether ``rate`` is within ``z`` binomial standard errors of ``p`` (``n`` samples)."""
    return abs(rate - p) <= z * binomial_se(p, n)


@pytest.fixture(autouse=True, scope="session")
def _sb3_logs_in_pytest_tmp(tmp_path_factory):
    """SB3 algorithms built without a logger write an empty ``SB3-<date>`` folder per ``learn()``; keep them in
    pytest's temporary directory instead of the system's."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SB3_LOGDIR", str(tmp_path_factory.mktemp("sb3_logs")))
    yield
    mp.undo()
