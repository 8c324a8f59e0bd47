"""Benchmark the SplitSeq environments side by side, in one run: ``python scripts/bench_env.py``.

Measures steps/s of

* the single env via ``gym.make`` (1-step episodes: ``reset()`` after every terminated step),
* ``CartPole-v1`` via ``gym.make`` as a yardstick (reset on termination/truncation),
* Gymnasium's ``SyncVectorEnv`` over 16 copies (``gym.make_vec(..., vectorization_mode="sync")``, its default
  NEXT_STEP autoreset: after a terminal step an env spends its next env-step on the reset), and the same
  with ``autoreset_mode=SAME_STEP`` (every env-step a decision, like the native env),
* the native vector env over 1024 envs (``vectorization_mode="vector_entry_point"``), counting env-steps,

and the ratios the issue sets targets for: native >= 3,000,000 env-steps/s and >= 50x SyncVectorEnv per
env-step; single env >= CartPole-v1. Actions are drawn beforehand so that only the environments are timed.

The machine may be shared, so the environments take turns: each round times one window of every
environment, and a ratio is computed within a round (its two sides saw the same load). The table gives
the best and the median over rounds, by wall clock and by CPU time of this process (steps per CPU-second:
what the rate would be on an idle core).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

import seqenv  # noqa: F401  (registers the ids)

ENV_ID = "SplitSeq-ngood4-v0"


def single_env(env_id: str, seed: int) -> Callable[[int], int]:
    env = gym.make(env_id)
    env.reset(seed=seed)
    actions = np.random.default_rng(seed).integers(0, env.action_space.n, size=1 << 16).tolist()

    def run(k: int) -> int:
        step, reset = env.step, env.reset
        for i in range(k):
            _, _, terminated, truncated, _ = step(actions[i & 0xFFFF])
            if terminated or truncated:
                reset()
        return k

    return run


def vector_env(num_envs: int, mode: str, seed: int, **vector_kwargs) -> Callable[[int], int]:
    envs = gym.make_vec(
        ENV_ID, num_envs=num_envs, vectorization_mode=mode, vector_kwargs=vector_kwargs or None
    )
    envs.reset(seed=seed)
    actions = np.random.default_rng(seed).integers(0, 8, size=(64, num_envs))

    def run(k: int) -> int:
        step = envs.step
        for i in range(k):
            step(actions[i & 63])
        return k * num_envs

    return run


def calibrate(run: Callable[[int], int], seconds: float) -> int:
    """Iterations of ``run`` that take about ``seconds``."""
    run(2)  # warm-up: first-call checks, lazy allocations
    k = 1
    while True:
        t0 = time.perf_counter()
        run(k)
        dt = time.perf_counter() - t0
        if dt > 0.05:
            return max(1, int(k * seconds / dt))
        k *= 4


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=1.0, help="length of one timed window")
    p.add_argument("--rounds", type=int, default=5, help="rounds; each times one window of every environment")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    envs = {
        "single": ("SplitSeq single env, gym.make, reset each step", single_env(ENV_ID, args.seed)),
        "cartpole": ("CartPole-v1, gym.make", single_env("CartPole-v1", args.seed)),
        "sync": ("SyncVectorEnv, 16 envs (NEXT_STEP autoreset)", vector_env(16, "sync", args.seed)),
        "sync_same": (
            "SyncVectorEnv, 16 envs, SAME_STEP autoreset",
            vector_env(16, "sync", args.seed, autoreset_mode=AutoresetMode.SAME_STEP),
        ),
        "native": ("native SplitSeqVectorEnv, 1024 envs", vector_env(1024, "vector_entry_point", args.seed)),
    }
    load_before = os.getloadavg()[0]
    iters = {key: calibrate(run, args.seconds) for key, (_, run) in envs.items()}
    wall: dict[str, list[float]] = {key: [] for key in envs}
    cpu: dict[str, list[float]] = {key: [] for key in envs}
    for _ in range(args.rounds):
        for key, (_, run) in envs.items():
            w0, c0 = time.perf_counter(), time.process_time()
            steps = run(iters[key])
            w1, c1 = time.perf_counter(), time.process_time()
            wall[key].append(steps / (w1 - w0))
            cpu[key].append(steps / max(c1 - c0, 1e-9))
    load_after = os.getloadavg()[0]

    print(
        f"machine: {os.cpu_count()} cores, {_cpu_model()}; Python {platform.python_version()}, numpy {np.__version__}, "
        f"gymnasium {gym.__version__}; load average {load_before:.2f} before, {load_after:.2f} after; "
        f"{args.rounds} rounds of {args.seconds:g} s windows"
    )
    print()
    print(f"| {'environment':48s} | {'steps/s best':>13s} | {'median':>11s} | {'per CPU-s best':>14s} |")
    print(f"|{'-' * 50}|{'-' * 15}:|{'-' * 12}:|{'-' * 15}:|")
    for key, (name, _) in envs.items():
        print(
            f"| {name:48s} | {max(wall[key]):13,.0f} | {statistics.median(wall[key]):11,.0f} | {max(cpu[key]):14,.0f} |"
        )
    print()

    def ratio(a: str, b: str) -> str:
        per_round = [x / y for x, y in zip(wall[a], wall[b])]
        return f"{max(per_round):6.1f} best, {statistics.median(per_round):6.1f} median, {max(cpu[a]) / max(cpu[b]):6.1f} CPU"

    print(f"native / SyncVectorEnv per env-step:           {ratio('native', 'sync')}   (target >= 50)")
    print(f"native / SyncVectorEnv SAME_STEP per env-step: {ratio('native', 'sync_same')}")
    print(f"single env / CartPole-v1:                      {ratio('single', 'cartpole')}   (target >= 1)")
    print(
        f"native env-steps/s:                            {max(wall['native']):,.0f} best, "
        f"{statistics.median(wall['native']):,.0f} median   (target >= 3,000,000)"
    )


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
