"""The worlds study: split-history Op and Imp beside MEG for gridworld policies of every level of optimality.

``python scripts/study_worlds.py --out docs/results/worlds`` (docs/worlds.md#study) writes ``study.csv``,
``agents.csv`` (the SB3 training runs) and three figures. Worlds: FrozenLake 4x4 (slippery), FrozenLake 8x8
(slippery) and CliffWalking (deterministic). Policies: the value-iteration optimum (discount 0.99, greedy),
epsilon-greedy versions of it, the uniform policy, and Stable-Baselines3 PPO and DQN agents trained for a
small budget (``--steps``), measured greedy as the post measures its agents.

Every policy is measured on the world's reachable non-terminal states with ``measures.measure_mdp``:

* ``goal``: the outcome is whether the goal has been reached (a binary outcome), after 1 step and after a
  long horizon (``--long``), with the first action split (``first``) and, at the long horizon, every
  action split (``every``);
* ``state``: the outcome is the next state itself (horizon 1);
* ``progress``: the outcome is whether the step brought the agent closer to the goal (in shortest-path
  steps), kept it as far, took it farther, or into a hole: ``outcome(start, state)``, horizon 1, good =
  closer. Every start state can make progress, so this is the outcome closest to the post's setting.

Beside them: MEG per decision with respect to the environment's reward (horizon 100, from the start state),
and the episode success (the exact probability of reaching the goal within 100 steps from the start).
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from measures import measure_mdp, meg, optimal_policy, tabular_world  # noqa: E402
from measures.world_policies import epsilon_greedy, world_action_probs  # noqa: E402
from measures.worlds import TabularWorld  # noqa: E402

WORLDS = {  # name: (env id, kwargs, goal state, long horizon)
    "FrozenLake 4x4": ("FrozenLake-v1", {}, 15, 20),
    "FrozenLake 8x8": ("FrozenLake-v1", {"map_name": "8x8"}, 63, 40),
    "CliffWalking": ("CliffWalking-v1", {}, 47, 15),
}
EPSILONS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)
EPISODE = 100  # steps of an episode for MEG and the episode success
AGENTS = ("PPO", "DQN")
LABELLED = (0.0, 0.1, 0.3, 0.7, 1.0)  # epsilons named in the Op-against-success figure
FIELDS = (
    "world", "policy", "epsilon", "outcome", "horizon", "split", "success", "p", "op", "op_lo", "op_hi",
    "op_theory", "excess_op", "imp", "imp_min", "baseline_success", "meg_per_step", "meg_beta",
    "episode_success",
)  # fmt: skip


def episode_success(world: TabularWorld, table: np.ndarray, goal: int, steps: int = EPISODE) -> float:
    """The exact probability of standing on the goal after ``steps`` steps from the start (it absorbs)."""
    d = world.initial
    m = world.transition_matrix(table)
    for _ in range(steps):
        d = m.T @ d
    return float(d[goal])


def distances(world: TabularWorld, goal: int) -> np.ndarray:
    """Shortest-path steps to the goal through non-terminal states (``inf`` where it cannot be reached)."""
    step = (world.P.sum(axis=1) > 0) & ~world.terminal[:, None]  # s -> s' by some action, s alive
    d = np.full(world.n_states, np.inf)
    d[goal], frontier, k = 0, np.array([goal]), 0
    while len(frontier):
        k += 1
        nxt = np.flatnonzero(step[:, frontier].any(axis=1) & np.isinf(d))
        d[nxt] = k
        frontier = nxt
    return d


def progress(world: TabularWorld, goal: int):
    """``outcome(start, state)``: -1 closer to the goal, 0 as far, 1 farther, 2 lost (a hole)."""
    d = distances(world, goal)

    def outcome(start: int, state: int) -> int:
        if world.terminal[state] and state != goal:
            return 2
        return int(np.sign(d[state] - d[start])) if np.isfinite(d[state]) else 1

    return outcome


def train_agents(name: str, steps: int, seed: int) -> list[tuple[str, object, dict]]:
    """PPO and DQN on the world, ``steps`` environment steps each (100-step episodes)."""
    from stable_baselines3 import DQN, PPO

    env_id, kw, _, _ = WORLDS[name]
    out = []
    for algo, make in (
        ("PPO", lambda env: PPO("MlpPolicy", env, n_steps=512, batch_size=64, ent_coef=0.01, seed=seed, device="cpu")),
        (
            "DQN",
            lambda env: DQN(
                "MlpPolicy", env, learning_starts=500, exploration_fraction=0.5, target_update_interval=250,
                buffer_size=20_000, seed=seed, device="cpu",
            ),
        ),
    ):  # fmt: skip
        env = gym.make(env_id, max_episode_steps=EPISODE, **kw)
        t0 = time.perf_counter()
        model = make(env).learn(steps)
        out.append((algo, model, {"world": name, "algo": algo, "steps": steps, "seed": seed,
                                  "seconds": round(time.perf_counter() - t0, 1)}))  # fmt: skip
    return out


def rows_for(
    name: str, label: str, eps: float, policy: object, temperature: float, world: TabularWorld
) -> list[dict]:
    _, _, goal, long = WORLDS[name]
    table = world_action_probs(policy, np.arange(world.n_states), world.n_actions, temperature)
    m = meg(table, world, horizon=EPISODE, temperature=1.0)
    common = dict(
        world=name,
        policy=label,
        epsilon=eps,
        meg_per_step=m.meg_per_step,
        meg_beta=m.beta,
        episode_success=episode_success(world, table, goal),
    )
    configs = [
        ("goal", 1, "first"), ("goal", long, "first"), ("goal", long, "every"), ("state", 1, "first"),
        ("progress", 1, "first"),
    ]  # fmt: skip
    outcomes = {  # (good set, outcome=)
        "goal": ({True}, lambda s, g=goal: s == g),
        "state": ({goal}, None),
        "progress": ({-1}, progress(world, goal)),
    }
    out = []
    for outcome, horizon, split in configs:
        good, fn = outcomes[outcome]
        r = measure_mdp(
            table,
            world,
            good,
            states="reachable",
            horizon=horizon,
            split=split,
            outcome=fn,
            temperature=1.0,
            seed=0,
        )
        out.append(
            common
            | dict(outcome=outcome, horizon=horizon, split=split, success=r.success, p=r.p, op=r.op)
            | dict(op_lo=r.ci["op"][0], op_hi=r.ci["op"][1], op_theory=r.op_theory, excess_op=r.excess_op)
            | dict(imp=r.imp, imp_min=r.imp_min, baseline_success=r.baseline_success)
        )
    return out


def figures(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from measures.theory import op_theory

    def pick(world: str, outcome: str, horizon_long: bool, split: str = "first") -> list[dict]:
        long = WORLDS[world][3]
        return [
            r
            for r in rows
            if r["world"] == world and r["outcome"] == outcome and r["split"] == split
            and r["horizon"] == (long if horizon_long else 1)
        ]  # fmt: skip

    # 1. Op against success with the post's Op_theory curve: goal reached (long horizon) and progress (1 step)
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.4))
    for row, (outcome, long) in enumerate((("goal", True), ("progress", False))):
        for ax, world in zip(axes[row], WORLDS, strict=True):
            sel = pick(world, outcome, long)
            p = sel[0]["p"]
            s = np.linspace(0, 1, 201)
            ax.plot(s, op_theory(s, p), color="0.6", lw=1, label=f"Op_theory(s, p={p:.3f})")
            for r in sel:
                agent = r["policy"] in AGENTS
                color = "C1" if agent else "C0"
                ax.scatter(r["success"], r["op"], marker="s" if agent else "o", color=color, zorder=3)
                if agent or r["epsilon"] in LABELLED:
                    name = r["policy"] if agent else f"ε={r['epsilon']:g}"
                    ax.annotate(
                        name, (r["success"], r["op"]), fontsize=7, xytext=(3, 3), textcoords="offset points"
                    )
            ax.axvline(0.5, color="0.85", lw=0.8)
            what = (
                f"goal within {sel[0]['horizon']} steps"
                if outcome == "goal"
                else "closer to the goal in 1 step"
            )
            ax.set(title=f"{world}: {what}", xlabel="success s", ylabel="Op (nats)")
            ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(out / "op_vs_success.png", dpi=80)
    plt.close(fig)

    # 2. Op (goal, both horizons), Op (state) and MEG against epsilon
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, world in zip(axes, WORLDS, strict=True):
        for (outcome, long, split), style in {
            ("goal", False, "first"): "C0-",
            ("goal", True, "first"): "C0--",
            ("goal", True, "every"): "C0:",
            ("state", False, "first"): "C2-",
            ("progress", False, "first"): "C1-",
        }.items():
            sel = [r for r in pick(world, outcome, long, split) if r["policy"] not in AGENTS]
            label = f"Op, {outcome}, k={sel[0]['horizon']}, {split}"
            ax.plot([r["epsilon"] for r in sel], [r["op"] for r in sel], style, marker=".", label=label)
        sel = [r for r in pick(world, "goal", False) if r["policy"] not in AGENTS]
        ax.plot(
            [r["epsilon"] for r in sel],
            [r["meg_per_step"] for r in sel],
            "C3-",
            marker=".",
            label="MEG per step",
        )
        ax.axhline(0, color="0.7", lw=0.8)
        ax.set(title=world, xlabel="epsilon (0 = optimal, 1 = uniform)", ylabel="nats")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "op_meg_vs_epsilon.png", dpi=80)
    plt.close(fig)

    # 3. success against epsilon, for both outcome horizons: where success crosses 1/2
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for ax, world in zip(axes, WORLDS, strict=True):
        for outcome, long, style in (
            ("goal", False, "C0-"),
            ("goal", True, "C0--"),
            ("progress", False, "C1-"),
        ):
            sel = [r for r in pick(world, outcome, long) if r["policy"] not in AGENTS]
            what = f"goal within {sel[0]['horizon']}" if outcome == "goal" else "closer in 1 step"
            ax.plot([r["epsilon"] for r in sel], [r["success"] for r in sel], style, marker=".", label=what)
        sel = [r for r in pick(world, "goal", False) if r["policy"] not in AGENTS]
        ax.plot([r["epsilon"] for r in sel], [r["episode_success"] for r in sel], "C4-", marker=".",
                label=f"episode success ({EPISODE} steps from the start)")  # fmt: skip
        ax.axhline(0.5, color="0.7", lw=0.8)
        ax.set(title=world, xlabel="epsilon", ylabel="success", ylim=(-0.02, 1.02))
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "success_vs_epsilon.png", dpi=80)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/results/worlds"))
    parser.add_argument("--steps", type=int, default=20_000, help="environment steps per SB3 agent")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # infinite Imp (state outcomes) and rough intervals at ~50 states
    args.out.mkdir(parents=True, exist_ok=True)
    rows, agents = [], []
    for name, (env_id, kw, _, _) in WORLDS.items():
        world = tabular_world(gym.make(env_id, **kw))
        opt = optimal_policy(world, discount=0.99)
        for eps in EPSILONS:
            label = "optimal" if eps == 0 else ("uniform" if eps == 1 else f"optimal, {eps:g}-greedy")
            rows += rows_for(name, label, eps, epsilon_greedy(opt, eps), 1.0, world)
        for algo, model, info in train_agents(name, args.steps, args.seed):
            agents.append(info)
            rows += rows_for(name, algo, float("nan"), model, 0.0, world)
        print(f"{name}: done", flush=True)
    with open(args.out / "study.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    with open(args.out / "agents.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(agents[0]))
        w.writeheader()
        w.writerows(agents)
    figures(rows, args.out)
    print(f"wrote {args.out}/study.csv, agents.csv and 3 figures")


if __name__ == "__main__":
    main()
