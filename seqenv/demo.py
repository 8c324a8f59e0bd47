"""Play the environment with the uniform and the oracle policy and print what happens.

The library part of ``splitseq demo``: the command line parses the options and calls :func:`run_demo`.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from seqenv.sequence import N_OUT, next_deterministic
from seqenv.tasks import TASKS, good_mask
from seqenv.validation import check_choice, check_int, check_positive_int, check_seed


def run_demo(task: str = "ngood4", steps: int = 10_000, seed: int = 0, show: int = 3) -> dict[str, float]:
    """Success rates of the uniform and the greedy-exact (oracle) policy over ``steps`` one-step episodes.

    :param task: a task id of :data:`seqenv.tasks.TASKS`.
    :param steps: episodes per policy.
    :param seed: seeds the environment and the uniform policy.
    :param show: the oracle's first ``show`` steps are printed as rendered text.
    :return: ``{"uniform": rate, "oracle": rate}``.
    """
    check_choice(task, "task", TASKS)
    steps = check_positive_int(steps, "steps")
    seed = check_seed(seed)
    show = check_int(show, "show", 0)
    env = gym.make(f"SplitSeq-{task}-v0", render_mode="ansi")
    mask = good_mask(task)
    rng = np.random.default_rng(seed)
    rates = {}
    for name in ("uniform", "oracle"):
        obs, _ = env.reset(seed=seed)
        wins = 0
        for i in range(steps):
            if name == "uniform":
                action = int(rng.integers(0, N_OUT))
            else:  # the first action whose deterministic outcome is good (else 0)
                good = mask[next_deterministic(obs[None])[0]]
                action = int(np.argmax(good))
            obs_next, reward, terminated, truncated, _ = env.step(action)
            if name == "oracle" and i < show:
                print(env.render(), end="")
            wins += reward
            obs = env.reset()[0] if terminated or truncated else obs_next
        rates[name] = wins / steps
    return rates
