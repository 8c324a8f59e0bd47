"""Four ways to train an agent on SplitSeq, compared after the same number of environment samples.

``python scripts/compare_methods.py [--size tiny] [--seeds 0 1 2] [--samples 204800] [--out results/compare_methods]``

For one model size and each seed (the pretrained checkpoint of that seed is shared by a-c):

(a) ``positive``  — the post's finetuning: reinforce successful temperature-1 samples only, with next-token
    maintenance (:func:`agents.finetune.finetune`, ``method="positive"``);
(b) ``reinforce`` — REINFORCE with a leave-one-out baseline, same loop (``method="reinforce"``: rollouts of
    2048 reused for 4 epochs of minibatches of 256 through PPO's clipped ratio);
(c) ``ppo``       — SB3 PPO with the pretrained :class:`agents.sb3.TransformerPolicy`;
(d) ``ppo_mlp``   — SB3 PPO with SB3's default ``MlpPolicy`` (64-64 tanh on the one-hot tokens) from scratch.

Every method sees ``--samples`` environment samples (finetuning: ``samples / batch`` steps of each method's
default batch, 256 for positive and 2048 for reinforce; PPO: ``samples / 2048`` rollouts of 8 x 256). Learning curves: the exact greedy success on the finetuning's
held-out histories, at ``--points`` evenly spaced sample counts. Final figures: :func:`measures.measure`
(exact split-history Op/Imp, greedy, 1000-fold bootstrap) of each final policy on one common set of held-out
natural histories, with the oracle (:class:`agents.reference.OraclePolicy`: the action maximising the exact
success probability, ties broken at random per history) and the pretrained model for reference. Wall time is the training loop's, evaluations included (~10 exact
evaluations per run for every method), pretraining excluded (reported separately).

Outputs in ``--out``: ``runs/<method>_s<seed>.json`` (cached: rerunning skips finished runs),
``results.csv`` (one row per method and seed), ``curves.csv``, ``summary.md`` (the README table) and
``curves.png``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import torch

import agents
from agents.finetune import FinetuneConfig, SuccessEvaluator, finetune
from agents.pretrain import PretrainConfig, pretrain
from agents.reference import OraclePolicy
from agents.sb3 import PPO_DEFAULTS, train_ppo
from agents.training import history_path
from measures import measure
from seqenv.sequence import natural_histories

COMPARED_METHODS = ("positive", "reinforce", "ppo", "ppo_mlp")
LABELS = {
    "positive": "(a) positive-only finetuning (post)",
    "reinforce": "(b) REINFORCE + baseline",
    "ppo": "(c) PPO, pretrained TransformerPolicy",
    "ppo_mlp": "(d) PPO, MlpPolicy from scratch",
    "pretrained": "pretrained model, untuned",
    "oracle": "oracle (exact best action, random tie-break)",
}
PPO_ROLLOUT = PPO_DEFAULTS["n_steps"] * 256


def run_method(method: str, seed: int, pre: Path, args: argparse.Namespace, judge: SuccessEvaluator) -> dict:
    """Train one method on one seed; return its curve, wall time and the path of the final policy."""
    every = args.samples // args.points
    if method in ("positive", "reinforce"):
        batch = FinetuneConfig(task=args.task, method=method).batch_size  # the method's default
        steps = args.samples // batch
        cfg = FinetuneConfig(
            task=args.task,
            method=method,
            seed=seed,
            steps=steps,
            batch_size=batch,
            eval_every=max(1, every // batch),
            eval_samples=args.eval_histories,
        )
        path = args.out / "models" / f"{method}_s{seed}.pt"
        summary = finetune(pre, cfg, path, progress=False, resume=False)
        hist = pd.read_csv(history_path(path))
        curve = [(0, summary["success_pretrained"], 0.0)] + [
            (int(r.step) * batch, float(r.success), float(r.elapsed)) for r in hist.itertuples()
        ]
        return {
            "wall_time_s": summary["wall_time_s"],
            "samples": steps * batch,
            "curve": curve,
            "path": str(path),
        }
    path = args.out / "models" / f"{method}_s{seed}.zip"
    model = train_ppo(
        args.task,
        args.samples,
        out=path,
        pretrained=pre if method == "ppo" else None,
        policy="transformer" if method == "ppo" else "mlp",
        seed=seed,
        eval_every=every,
        eval_histories=judge.histories,
    )
    meta = model.splitseq_meta
    curve = [(int(s), float(g), float(t)) for s, g, _, t in meta["eval"]]
    return {
        "wall_time_s": meta["wall_time_s"],
        "samples": int(model.num_timesteps),
        "curve": curve,
        "path": str(path),
    }


def samples_to_reach(curve: list[tuple[int, float, float]], level: float) -> tuple[float, float]:
    """First (samples, seconds) at which the curve reaches ``level``, linearly interpolated; NaN if never."""
    for (s0, y0, t0), (s1, y1, t1) in itertools.pairwise(curve):
        if y1 >= level > y0:
            f = (level - y0) / (y1 - y0)
            return s0 + f * (s1 - s0), t0 + f * (t1 - t0)
    return (0.0, 0.0) if curve and curve[0][1] >= level else (float("nan"), float("nan"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--task", default="ngood4")
    ap.add_argument("--samples", type=int, default=204_800, help="environment samples per method and seed")
    ap.add_argument("--points", type=int, default=10, help="evaluations along each learning curve")
    ap.add_argument(
        "--eval-histories", type=int, default=4096, help="held-out histories of the learning curves"
    )
    ap.add_argument(
        "--measure-histories", type=int, default=8192, help="held-out histories of the final measures"
    )
    ap.add_argument("--methods", nargs="+", default=list(COMPARED_METHODS), choices=COMPARED_METHODS)
    ap.add_argument("--out", type=Path, default=Path("results/compare_methods"))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    ft_batch = max(FinetuneConfig(method=m).batch_size for m in ("positive", "reinforce"))
    if args.samples % (ft_batch * args.points) or args.samples % PPO_ROLLOUT:
        raise SystemExit(
            f"--samples must be a multiple of {PPO_ROLLOUT} and of {ft_batch} x --points, got {args.samples}"
        )
    torch.set_num_threads(args.threads)
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    final_h = natural_histories(args.measure_histories, seed=987_654)  # common to every method and seed
    rows, curves = [], []

    def measured(policy, method: str, seed: int, extra: dict) -> None:
        r = measure(policy, args.task, histories=final_h, temperature=0.0, n_bootstrap=1000, seed=0)
        rows.append(
            {
                "method": method,
                "seed": seed,
                "success": r.success,
                "op": r.op,
                "op_theory": r.op_theory,
                "excess_op": r.excess_op,
                "excess_op_lo": r.ci["excess_op"][0],
                "excess_op_hi": r.ci["excess_op"][1],
                "imp": r.imp,
                "imp_min": r.imp_min,
                **extra,
            }
        )

    measured(OraclePolicy(args.task), "oracle", -1, {})
    for seed in args.seeds:
        pre = args.out / "models" / f"pretrained_{args.size}_s{seed}.pt"
        t0 = time.perf_counter()
        pre_summary = pretrain(
            PretrainConfig(size=args.size, seed=seed, checkpoint_every=0), pre, progress=False
        )
        print(
            f"seed {seed}: pretrained {args.size} in {pre_summary['wall_time_s']:.0f}s "
            f"(acc_odd {pre_summary['acc_odd']:.3f}; this call {time.perf_counter() - t0:.0f}s)",
            flush=True,
        )
        measured(agents.load(pre), "pretrained", seed, {"wall_time_s": pre_summary["wall_time_s"]})
        judge = SuccessEvaluator(args.task, args.eval_histories, seed)
        for method in args.methods:
            cache = args.out / "runs" / f"{method}_s{seed}.json"
            cfg_key = {
                "samples": args.samples,
                "points": args.points,
                "size": args.size,
                "task": args.task,
                "eval_histories": args.eval_histories,
            }
            run = json.loads(cache.read_text()) if cache.exists() else None
            if run is None or run.get("config") != cfg_key:
                run = {"config": cfg_key, **run_method(method, seed, pre, args, judge)}
                cache.write_text(json.dumps(run))
            s_half = judge.s_uniform + 0.5 * (judge.s_oracle - judge.s_uniform)
            n_half, t_half = samples_to_reach(run["curve"], s_half)
            measured(
                agents.load(run["path"]),
                method,
                seed,
                {
                    "wall_time_s": run["wall_time_s"],
                    "samples": run["samples"],
                    "samples_per_s": run["samples"] / run["wall_time_s"],
                    "samples_to_half_gap": n_half,
                    "seconds_to_half_gap": t_half,
                },
            )
            curves += [
                {
                    "method": method,
                    "seed": seed,
                    "samples": s,
                    "success": y,
                    "seconds": t,
                    "s_oracle": judge.s_oracle,
                    "s_uniform": judge.s_uniform,
                }
                for s, y, t in run["curve"]
            ]
            last = rows[-1]
            print(
                f"  {method:10s} success {last['success']:.3f}  Op {last['op']:.3f} (theory {last['op_theory']:.3f})"
                f"  Imp {last['imp']:.3f}  {run['wall_time_s']:.0f}s",
                flush=True,
            )

    df = pd.DataFrame(rows)
    df.to_csv(args.out / "results.csv", index=False)
    cv = pd.DataFrame(curves)
    cv.to_csv(args.out / "curves.csv", index=False)
    table = summary_table(df, args)
    (args.out / "summary.md").write_text(table)
    plot_curves(cv, args.out / "curves.png", args)
    print(table)
    print(f"total wall time {time.perf_counter() - t_start:.0f}s")


def summary_table(df: pd.DataFrame, args: argparse.Namespace) -> str:
    """Markdown table: mean ± sd over seeds of each figure per method."""

    def cell(values: pd.Series, fmt: str) -> str:
        values = values.dropna()
        if values.empty:
            return "never"
        if len(values) == 1:
            return format(values.iloc[0], fmt)
        return f"{format(values.mean(), fmt)} ± {format(values.std(ddof=1), fmt.lstrip('+'))}"

    n_seeds = len(args.seeds)
    head = (
        f"| method ({args.size}, {args.task}, {args.samples:,} samples, {n_seeds} seeds: mean ± sd) | success | "
        "Op | Op_theory | Op − Op_theory | Imp | Imp_min | samples / seconds to half the oracle gap | wall time (s) |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for method in ("oracle", "pretrained", *[m for m in COMPARED_METHODS if m in set(df.method)]):
        d = df[df.method == method]
        reach = d["samples_to_half_gap"] if "samples_to_half_gap" in d else pd.Series(dtype=float)
        if method in ("oracle", "pretrained"):
            reach_cell = "—"
        else:
            reached = reach.notna().sum()
            reach_cell = cell(reach, ",.0f") + ("" if reached == len(d) else f" ({reached}/{len(d)} seeds)")
            if reached:
                reach_cell += f" / {cell(d['seconds_to_half_gap'], '.1f')} s"
        wall = cell(d["wall_time_s"], ".0f") if method != "oracle" else "—"
        if method == "pretrained":
            wall += " (pretraining)"
        lines.append(
            f"| {LABELS[method]} | {cell(d.success, '.3f')} | {cell(d.op, '.3f')} | {cell(d.op_theory, '.3f')} | "
            f"{cell(d.excess_op, '+.3f')} | {cell(d.imp, '.3f')} | {cell(d.imp_min, '.3f')} | {reach_cell} | {wall} |"
        )
    return head + "\n".join(lines) + "\n"


def plot_curves(cv: pd.DataFrame, path: Path, args: argparse.Namespace) -> None:
    """Greedy success against samples and against wall time, one line per seed, the oracle dashed."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    colors = dict(zip(COMPARED_METHODS, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for method, d in cv.groupby("method", sort=False):
        for i, (_, s) in enumerate(d.groupby("seed")):
            label = LABELS[method] if i == 0 else None
            axes[0].plot(s.samples, s.success, color=colors[method], label=label, lw=1.2)
            axes[1].plot(s.seconds, s.success, color=colors[method], lw=1.2)
    for ax in axes:
        ax.axhline(cv.s_oracle.mean(), color="k", ls="--", lw=1, label="oracle" if ax is axes[0] else None)
        ax.axhline(
            cv.s_uniform.mean(), color="grey", ls=":", lw=1, label="uniform" if ax is axes[0] else None
        )
        ax.grid(alpha=0.3)
    axes[0].set(xlabel="environment samples", ylabel=f"greedy success on {args.task} (exact)")
    axes[1].set(xlabel="wall time (s, 1 thread, shared CPU)")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{args.size}, {len(args.seeds)} seeds (one line per seed)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
