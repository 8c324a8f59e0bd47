"""The distribution's layout: the three packages import and the console script is declared."""

import importlib


def test_packages_import_and_register_envs():
    import gymnasium as gym

    for name in ("seqenv", "agents", "measures"):
        importlib.import_module(name)
    for task in ("ngood2", "ngood4", "ngood6"):
        assert f"SplitSeq-{task}-v0" in gym.registry
