"""Benchmark the measures in finite worlds: ``python scripts/bench_worlds.py`` (docs/worlds.md#speed).

Prints markdown tables:

1. **exact tabular speed** (targets: Taxi, 500 states, horizon 1 in < 0.1 s; FrozenLake 8x8 at horizon 10 in
   < 1 s): building the world from the environment's ``P``, then ``measure_mdp`` on the built world without
   intervals, with the default 1,000 bootstrap resamples (and the jackknife), and end to end from the
   environment with the default intervals; greedy (optimal) and stochastic (epsilon-greedy) policies, both
   splits.
2. **Monte Carlo against exact** (target: within 4 standard errors): ``measure_simulator`` on FrozenLake 4x4
   (slippery) from uniformly drawn non-terminal states, against ``measure_mdp`` on all of them (the
   population value), as ``(MC - exact) / se``; the Miller-Madow estimator for Imp.
3. **MEG** timings (the beta search: 57 grid points plus 3 local refinements, vectorised over beta).

Timings are the best of ``--repeats`` runs on one thread (BLAS and torch pinned); the machine is shared.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from measures import measure_mdp, measure_simulator, meg, optimal_policy, tabular_world  # noqa: E402
from measures.simulate import TOY_TEXT_STATE  # noqa: E402
from measures.world_policies import epsilon_greedy  # noqa: E402


def best_time(repeats: int, fn: Callable[..., object], *args: object, **kwargs: object) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args, **kwargs)
        times.append(time.perf_counter() - t0)
    return min(times)


def exact_speed(repeats: int) -> list[str]:
    lines = [
        "| world | horizon | policy | split | build world | no intervals | 1,000 resamples | end to end from the env |",
        "|---|---:|---|---|---:|---:|---:|---:|",
    ]
    cases = [
        ("Taxi-v4", {}, 1, 0, "every state's first goal-side action"),
        ("FrozenLake-v1", {"map_name": "8x8"}, 10, 63, None),
    ]
    for env_id, kw, horizon, goal, _ in cases:
        env = gym.make(env_id, **kw)
        t_build = best_time(repeats, tabular_world, env)
        w = tabular_world(env)
        opt = optimal_policy(w)
        policies = [
            ("optimal (greedy)", opt, 0.0),
            ("0.2-greedy (stochastic)", epsilon_greedy(opt, 0.2), 1.0),
        ]
        for name, pol, t in policies:
            for split in ("first", "every") if horizon > 1 else ("first",):
                args = (pol, w, {goal})
                kw2 = dict(horizon=horizon, split=split, temperature=t)
                t0 = best_time(repeats, measure_mdp, *args, n_bootstrap=0, **kw2)
                t1 = best_time(repeats, measure_mdp, *args, **kw2)
                t2 = best_time(repeats, measure_mdp, pol, env, {goal}, **kw2)
                lines.append(
                    f"| {w.name} | {horizon} | {name} | {split} | {t_build * 1e3:.1f} ms | {t0 * 1e3:.1f} ms | "
                    f"{t1 * 1e3:.1f} ms | {t2 * 1e3:.1f} ms |"
                )
    return lines


def monte_carlo_vs_exact(n_states: int) -> list[str]:
    env = gym.make("FrozenLake-v1")
    w = tabular_world(env)
    live = w.nonterminal_states()
    terminal = set(np.flatnonzero(w.terminal).tolist())

    def start(e: gym.Env, rng: np.random.Generator) -> int:
        e.reset(seed=int(rng.integers(2**31)))
        e.unwrapped.s = int(rng.choice(live))
        return e.unwrapped.s

    def coarse(s: int) -> int:
        return int(s) if int(s) in terminal else -1

    opt = optimal_policy(w)
    lines = [
        "| policy | horizon | split | outcome | time | z Op | z success | z s' | z Imp (Miller-Madow) |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, pol, t in (("optimal", opt, 0.0), ("0.3-greedy", epsilon_greedy(opt, 0.3), 1.0)):
        for horizon, split in ((1, "first"), (3, "first"), (3, "every")):
            kw = dict(horizon=horizon, split=split, temperature=t)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ex = measure_mdp(pol, w, {15}, outcome=coarse, n_bootstrap=0, **kw)
            sim = dict(
                n_states=n_states, start=start, state=TOY_TEXT_STATE, outcomes=[-1, *sorted(terminal)], **kw
            )
            t0 = time.perf_counter()
            mc = measure_simulator(pol, env, {15}, coarse, **sim)
            elapsed = time.perf_counter() - t0
            mm = measure_simulator(pol, env, {15}, coarse, estimator="miller_madow", **sim)
            z = {
                f: (getattr(mc, f) - getattr(ex, f)) / mc.se[f] for f in ("op", "success", "baseline_success")
            }
            # an infinite exact Imp has no z: Monte Carlo's smoothed KL is finite by construction
            z_imp = (
                f"{(mm.imp - ex.imp) / mm.se['imp']:+.2f}"
                if np.isfinite(ex.imp)
                else f"exact inf ({mm.imp:.3f})"
            )
            lines.append(
                f"| {name} | {horizon} | {split} | terminal state or live | {elapsed:.1f} s | {z['op']:+.2f} | "
                f"{z['success']:+.2f} | {z['baseline_success']:+.2f} | {z_imp} |"
            )
    return lines


def meg_speed(repeats: int) -> list[str]:
    lines = ["| world | schedule | policy | MEG per step | time |", "|---|---|---|---:|---:|"]
    for env_id, kw in (
        ("FrozenLake-v1", {}),
        ("FrozenLake-v1", {"map_name": "8x8"}),
        ("CliffWalking-v1", {}),
    ):
        w = tabular_world(gym.make(env_id, **kw))
        pol = epsilon_greedy(optimal_policy(w), 0.1)
        for schedule in (dict(horizon=100), dict(discount=0.99)):
            r = meg(pol, w, temperature=1.0, **schedule)
            t = best_time(repeats, meg, pol, w, temperature=1.0, **schedule)
            label = ", ".join(f"{k}={v}" for k, v in schedule.items())
            lines.append(f"| {w.name} | {label} | 0.1-greedy | {r.meg_per_step:.4f} | {t * 1e3:.0f} ms |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure (best is reported)")
    parser.add_argument("--mc-states", type=int, default=200, help="Monte Carlo snapshots per repeat")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # infinite Imp and rough intervals are expected in these worlds
    print(
        f"# worlds benchmark — {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared)\n"
    )
    print("## exact tabular measure\n")
    print("\n".join(exact_speed(args.repeats)))
    print(f"\n## Monte Carlo ({args.mc_states} states x 10 repeats, state= restore) against exact\n")
    print("\n".join(monte_carlo_vs_exact(args.mc_states)))
    print("\n## MEG\n")
    print("\n".join(meg_speed(args.repeats)))


if __name__ == "__main__":
    main()
