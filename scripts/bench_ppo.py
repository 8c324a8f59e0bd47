"""PPO samples/s on SplitSeq: the native batched SB3 ``VecEnv`` against SB3's ``DummyVecEnv``, side by side.

``python scripts/bench_ppo.py [--n-envs 256] [--repeats 3]``

For each policy (SB3's ``MlpPolicy`` and the tiny :class:`agents.sb3.TransformerPolicy`) and each way of
vectorising the same ``n_envs`` environments, it times

* **env**: stepping the ``VecEnv`` alone with pre-drawn random actions (SB3 API, monitors included),
* **rollout**: ``PPO.collect_rollouts`` (policy forward passes + env steps, no gradient updates),
* **learn**: ``PPO.learn`` end to end (rollouts + ``n_epochs`` of minibatch updates), the number users see,

and prints samples/s with the native/Dummy ratio. "Dummy" is ``make_vec_env("SplitSeq-ngood4-v0", n_envs)``
(``DummyVecEnv`` of ``Monitor``-wrapped single envs, what SB3 users get by default); "native" is
:func:`agents.sb3.make_sb3_vec_env` (:class:`agents.sb3.SB3VecEnv`, which writes the same ``episode`` infos as
``Monitor``, from numpy). Each number is the
best of ``--repeats`` windows, native and Dummy alternating (the machine is shared); torch uses ``--threads`` threads (default 1).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

import seqenv  # noqa: F401  (registers the ids)
from agents.sb3 import PPO_DEFAULTS, TransformerPolicy, make_sb3_vec_env


def interleaved(
    native: Callable[[], int], dummy: Callable[[], int], repeats: int
) -> tuple[list[float], list[float]]:
    """Samples/s of each ``run`` (returning the samples it produced), alternating the two in every repeat so
    that both see the same background load on this shared machine."""
    native(), dummy()  # warm-up
    rates: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for run, out in ((native, rates[0]), (dummy, rates[1])):
            t0 = time.perf_counter()
            n = run()
            out.append(n / (time.perf_counter() - t0))
    return rates


def make_env(kind: str, n_envs: int, seed: int):
    if kind == "native":
        return make_sb3_vec_env("ngood4", n_envs, seed=seed)
    # render_mode=None: make_vec_env asks for "rgb_array" by default, which SplitSeqEnv (text only) rejects
    return make_vec_env("SplitSeq-ngood4-v0", n_envs=n_envs, seed=seed, env_kwargs={"render_mode": None})


def make_model(policy: str, env, seed: int) -> PPO:
    if policy == "mlp":
        return PPO("MlpPolicy", env, seed=seed, device="cpu", **PPO_DEFAULTS)
    return PPO(
        TransformerPolicy, env, seed=seed, device="cpu", policy_kwargs={"size": "tiny"}, **PPO_DEFAULTS
    )


def env_runner(kind: str, n_envs: int, steps: int) -> Callable[[], int]:
    env = make_env(kind, n_envs, seed=0)
    env.reset()
    actions = np.random.default_rng(0).integers(0, 8, size=(steps, n_envs))

    def run() -> int:
        for a in actions:
            env.step(a)
        return steps * n_envs

    return run


class _Null(BaseCallback):
    def _on_step(self) -> bool:
        return True


def rollout_runner(kind: str, policy: str, n_envs: int) -> Callable[[], int]:
    env = make_env(kind, n_envs, seed=0)
    model = make_model(policy, env, seed=0)
    model._setup_learn(10**9, _Null())
    cb = _Null()
    cb.init_callback(model)

    def run() -> int:
        model.collect_rollouts(model.env, cb, model.rollout_buffer, n_rollout_steps=model.n_steps)
        return model.n_steps * n_envs

    return run


def learn_runner(kind: str, policy: str, n_envs: int, rollouts: int) -> Callable[[], int]:
    env = make_env(kind, n_envs, seed=0)
    model = make_model(policy, env, seed=0)
    samples = rollouts * model.n_steps * n_envs

    def run() -> int:
        model.learn(samples, reset_num_timesteps=False)
        return samples

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-envs", type=int, default=256)
    ap.add_argument("--rollouts", type=int, default=3, help="rollouts per timed PPO.learn window")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n = args.n_envs
    print(
        f"# PPO on SplitSeq-ngood4, {n} envs, torch threads {args.threads}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs (shared; best of {args.repeats}, median in brackets)"
    )
    print(f"# PPO: {PPO_DEFAULTS}")
    print(f"{'what':38s} {'native samples/s':>22s} {'Dummy samples/s':>22s} {'ratio':>7s}")

    def row(name: str, native: Callable[[], int], dummy: Callable[[], int]) -> None:
        rn, rd = interleaved(native, dummy, args.repeats)

        def fmt(r: list[float]) -> str:
            return f"{max(r):>10,.0f} [{statistics.median(r):>9,.0f}]"

        print(f"{name:38s} {fmt(rn):>22s} {fmt(rd):>22s} {max(rn) / max(rd):>6.1f}x", flush=True)

    row("env.step only (random actions)", env_runner("native", n, 200), env_runner("dummy", n, 20))
    for policy in ("mlp", "transformer"):
        row(
            f"{policy}: collect_rollouts",
            rollout_runner("native", policy, n),
            rollout_runner("dummy", policy, n),
        )
        row(
            f"{policy}: PPO.learn (rollout+update)",
            learn_runner("native", policy, n, args.rollouts),
            learn_runner("dummy", policy, n, args.rollouts),
        )


if __name__ == "__main__":
    main()
