"""``splitseq demo``: play the environment with a reference policy and print what happens."""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np

from seqenv.sequence import next_deterministic
from seqenv.tasks import TASKS, good_mask


def run_demo(task: str = "ngood4", steps: int = 10_000, seed: int = 0, show: int = 3) -> dict[str, float]:
    """Success rates of the uniform and the greedy-exact (oracle) policy over ``steps`` one-step episodes."""
    env = gym.make(f"SplitSeq-{task}-v0", render_mode="ansi")
    mask = good_mask(task)
    rng = np.random.default_rng(seed)
    rates = {}
    for name in ("uniform", "oracle"):
        obs, _ = env.reset(seed=seed)
        wins = 0
        for i in range(steps):
            if name == "uniform":
                action = int(rng.integers(0, 8))
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


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="play SplitSeq with the uniform and the oracle policy", description=run_demo.__doc__)
    p.add_argument("--task", choices=sorted(TASKS), default="ngood4")
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)

    def func(args: argparse.Namespace) -> int:
        rates = run_demo(args.task, args.steps, args.seed)
        for name, rate in rates.items():
            print(f"{name:8s} success on {args.task}: {rate:.4f}")
        return 0

    p.set_defaults(func=func)
