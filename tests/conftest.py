"""Shared test setup."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _sb3_logs_in_pytest_tmp(tmp_path_factory):
    """SB3 algorithms built without a logger write an empty ``SB3-<date>`` folder per ``learn()``; keep them in
    pytest's temporary directory instead of the system's."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SB3_LOGDIR", str(tmp_path_factory.mktemp("sb3_logs")))
    yield
    mp.undo()
