"""Benchmark the SplitSeq environments side by side, in one run: ``python scripts/bench_env.py``.

Measures steps/s of

* the single env via ``gym.make`` (1-step episodes: ``reset()`` after every terminated step),
* ``CartPole-v1`` via ``gym.make`` as a yardstick (reset on termination/truncation),
* Gymnasium's ``SyncVectorEnv`` over 16 copies (``gym.make_vec(..., vectorization_mode="sync")``, its default
  NEXT_STEP autoreset: after a terminal step an env spends its next env-step on the reset), and the same
  with ``autoreset_mode=SAME_STEP`` (every env-step a decision, like the native env),
* the native vector env over 1024 envs (``vectorization_mode="vector_entry_point"``), counting env-steps,
* with ``--baseline REV``, the native vector env of git revision ``REV`` (its ``seqenv`` modules imported from
  a private copy, as the class itself: ``make_vec`` adds no wrapper), for an old-vs-new ratio in one run,

and the ratios the issues set targets for: native >= 10,000,000 env-steps/s and >= 50x SyncVectorEnv per
env-step; single env >= CartPole-v1. Actions are drawn beforehand so that only the environments are timed.

The machine may be shared, so the environments take turns: each round times one window of every
environment, and a ratio is computed within a round (its two sides saw the same load). The table gives
the best and the median over rounds, by wall clock and by CPU time of this process (steps per CPU-second:
what the rate would be on an idle core).

``--breakdown`` then times, in CPU time, where a native step goes and what bounds it: the natural
histories of the resets (and, within them, the sampler's random draws, its table look-ups and its
transposition), the rest of the step, and for comparison a bare ``np.copyto`` of the step's two
``(1024, 20)`` int64 arrays, its noise draws alone and one numpy call on 1024 elements.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

import seqenv  # noqa: F401  (registers the ids)
from seqenv.sequence import CONTEXT, N_OUT, SequenceStreams, noise_draws, noise_positions
from seqenv.vector import SplitSeqVectorEnv

ENV_ID = "SplitSeq-ngood4-v0"
NATIVE_ENVS = 1024
ROOT = Path(__file__).resolve().parent.parent


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


def stepper(envs: gym.vector.VectorEnv, seed: int) -> Callable[[int], int]:
    """``run(k)``: ``k`` steps of ``envs`` (reset with ``seed``) on pre-drawn actions; returns env-steps."""
    envs.reset(seed=seed)
    actions = np.random.default_rng(seed).integers(0, N_OUT, size=(64, envs.num_envs))

    def run(k: int) -> int:
        step = envs.step
        for i in range(k):
            step(actions[i & 63])
        return k * envs.num_envs

    return run


def vector_env(num_envs: int, mode: str, seed: int, **vector_kwargs) -> Callable[[int], int]:
    envs = gym.make_vec(
        ENV_ID, num_envs=num_envs, vectorization_mode=mode, vector_kwargs=vector_kwargs or None
    )
    return stepper(envs, seed)


def baseline_vector_env_class(rev: str) -> type:
    """``SplitSeqVectorEnv`` as of git revision ``rev``: its ``seqenv`` modules copied into a private package
    (without ``__init__``, which would re-register the gym ids) and imported from there."""
    name = "_seqenv_" + re.sub(r"\W", "_", rev)

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True
        ).stdout

    pkg = Path(tempfile.mkdtemp(prefix="bench_env_")) / name
    pkg.mkdir()
    for path in git("ls-tree", "--name-only", rev, "seqenv/").split():
        if path.endswith(".py") and not path.endswith("__init__.py"):
            source = git("show", f"{rev}:{path}").replace("from seqenv.", f"from {name}.")
            (pkg / Path(path).name).write_text(source)
    (pkg / "__init__.py").write_text("")
    sys.path.insert(0, str(pkg.parent))
    return importlib.import_module(f"{name}.vector").SplitSeqVectorEnv


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


def cpu_us(f: Callable[[], object], calls: int, repeats: int = 7) -> float:
    """Best over ``repeats`` of the CPU time of one call of ``f``, in µs (``calls`` calls per repeat)."""
    f()
    best = float("inf")
    for _ in range(repeats):
        c0 = time.process_time()
        for _ in range(calls):
            f()
        best = min(best, (time.process_time() - c0) / calls)
    return best * 1e6


def breakdown(seed: int) -> None:
    """Where the CPU time of a native step of 1024 envs goes, and the floors it is measured against."""
    n, streams = NATIVE_ENVS, 32768  # the env's default history_batch: one refill serves 32 steps
    per_step = n / streams
    envs = SplitSeqVectorEnv(n, good="ngood4")
    run = stepper(envs, seed)
    step = cpu_us(lambda: run(64), 20) / 64
    run_one = stepper(SplitSeqVectorEnv(1, good="ngood4"), seed)
    fixed = cpu_us(lambda: run_one(64), 200) / 64
    s = SequenceStreams(streams, seed)
    histories = cpu_us(s.history_tokens, 20) * per_step
    rng = np.random.default_rng(seed)

    def sampler_draws() -> None:
        hits = noise_positions(rng, CONTEXT * streams)
        rng.integers(0, N_OUT, size=len(hits), dtype=np.uint8)

    draws = cpu_us(sampler_draws, 20) * per_step
    index_bytes = bytearray(rng.integers(0, 256, streams, dtype=np.uint8).tobytes())
    index = np.frombuffer(index_bytes, dtype=np.uint8)
    rows = np.empty((CONTEXT + 1, streams), dtype=np.uint8)
    step_table = rng.permutation(256).astype(np.uint8).tobytes()  # any 256-byte table costs the same

    def lookups() -> None:  # as SequenceStreams steps 20 token rows: an index byte per stream, then the table
        for j in range(CONTEXT):
            np.multiply(rows[j], 16, out=index)
            np.add(index, rows[j], out=index)
            rows[j + 1] = np.frombuffer(index_bytes.translate(step_table), dtype=np.uint8)

    table = cpu_us(lookups, 20) * per_step
    hist = np.empty((streams, CONTEXT), dtype=np.uint8)

    def transpose() -> None:
        for c in range(CONTEXT):
            hist[:, c] = rows[c]

    transposition = cpu_us(transpose, 20) * per_step
    obs = np.empty((2, n, CONTEXT), dtype=np.int64)
    src = obs.copy()
    copy = cpu_us(lambda: np.copyto(obs, src), 2000)
    tokens = hist[:n]
    widen = cpu_us(lambda: (tokens.astype(np.int64), tokens.astype(np.int64)), 2000)
    noise = cpu_us(lambda: noise_draws(rng, (64, n)), 200) / 64  # drawn for 64 steps at once
    a, b = rng.integers(0, 8, n), rng.integers(0, 8, n)
    call = cpu_us(lambda: np.add(a, b), 20000)
    rows_out = [
        ("native step, 1024 envs (1-step episodes)", step),
        ("  a native step of 1 env: the part that does not grow with the batch", fixed),
        ("  natural histories for the resets (1024 x 20 new tokens)", histories),
        ("    of which the sampler's random draws (noise positions, values)", draws),
        ("    of which the rule's table look-ups (bytes.translate per token row)", table),
        ("    of which the transposition to (streams, 20) uint8", transposition),
        ("  the rest: rule, noise, reward, obs and final_obs, info", step - histories),
        ("floor: np.copyto of two (1024, 20) int64 arrays (obs, final_obs)", copy),
        ("the step's two uint8 -> int64 (1024, 20) conversions", widen),
        ("floor: the step's noise draws alone (1024 int16, 64 steps per draw)", noise),
        ("one numpy call on 1024 int64 (np.add)", call),
    ]
    print(f"| {'where a native step goes (CPU time)':72s} | {'µs/step':>8s} | {'of step':>7s} |")
    print(f"|{'-' * 74}|{'-' * 9}:|{'-' * 8}:|")
    for name, us in rows_out:
        print(f"| {name:72s} | {us:8.1f} | {us / step:7.0%} |")
    print(f"\nnative step: {n / step * 1e6:,.0f} env-steps per CPU-second")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=1.0, help="length of one timed window")
    p.add_argument("--rounds", type=int, default=5, help="rounds; each times one window of every environment")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--baseline", metavar="REV", help="also time the native env of this git revision")
    p.add_argument("--breakdown", action="store_true", help="also time where a native step goes")
    p.add_argument("--native-only", action="store_true", help="time only the native env (and the baseline)")
    args = p.parse_args()

    native = f"native SplitSeqVectorEnv, {NATIVE_ENVS} envs"
    envs = {
        "single": ("SplitSeq single env, gym.make, reset each step", single_env(ENV_ID, args.seed)),
        "cartpole": ("CartPole-v1, gym.make", single_env("CartPole-v1", args.seed)),
        "sync": ("SyncVectorEnv, 16 envs (NEXT_STEP autoreset)", vector_env(16, "sync", args.seed)),
        "sync_same": (
            "SyncVectorEnv, 16 envs, SAME_STEP autoreset",
            vector_env(16, "sync", args.seed, autoreset_mode=AutoresetMode.SAME_STEP),
        ),
        "native": (native, vector_env(NATIVE_ENVS, "vector_entry_point", args.seed)),
    }
    if args.native_only:
        envs = {"native": envs["native"]}
    if args.baseline:
        base = baseline_vector_env_class(args.baseline)
        envs["base"] = (f"{native} @ {args.baseline}", stepper(base(NATIVE_ENVS, good="ngood4"), args.seed))
    load_before = os.getloadavg()[0]
    iters = {key: calibrate(run, args.seconds) for key, (_, run) in envs.items()}
    wall: dict[str, list[float]] = {key: [] for key in envs}
    cpu: dict[str, list[float]] = {key: [] for key in envs}
    for r in range(args.rounds):
        # alternate which of native and baseline goes first, so that neither always follows the other
        order = list(envs) if r % 2 == 0 else list(envs)[::-1]
        for key in order:
            run = envs[key][1]
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
    width = max(48, *(len(name) for name, _ in envs.values()))
    print(f"| {'environment':{width}s} | {'steps/s best':>13s} | {'median':>11s} | {'per CPU-s best':>14s} |")
    print(f"|{'-' * (width + 2)}|{'-' * 15}:|{'-' * 12}:|{'-' * 15}:|")
    for key, (name, _) in envs.items():
        print(
            f"| {name:{width}s} | {max(wall[key]):13,.0f} | {statistics.median(wall[key]):11,.0f} | {max(cpu[key]):14,.0f} |"
        )
    print()

    def ratio(a: str, b: str) -> str:
        per_round = [x / y for x, y in zip(wall[a], wall[b])]
        return f"{max(per_round):6.2f} best, {statistics.median(per_round):6.2f} median, {max(cpu[a]) / max(cpu[b]):6.2f} CPU"

    if "sync" in envs:
        print(f"native / SyncVectorEnv per env-step:           {ratio('native', 'sync')}   (target >= 50)")
        print(f"native / SyncVectorEnv SAME_STEP per env-step: {ratio('native', 'sync_same')}")
        print(f"single env / CartPole-v1:                      {ratio('single', 'cartpole')}   (target >= 1)")
    if "base" in envs:
        print(
            f"native / native @ {args.baseline}:{' ' * max(1, 28 - len(args.baseline))}{ratio('native', 'base')}"
        )
    print(
        f"native env-steps/s:                            {max(wall['native']):,.0f} best, "
        f"{statistics.median(wall['native']):,.0f} median, {max(cpu['native']):,.0f} per CPU-s   "
        f"(target >= 10,000,000)"
    )
    if args.breakdown:
        print()
        breakdown(args.seed)


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
