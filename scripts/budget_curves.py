"""Held-out success curves of finetuning runs longer than the preset's budget, and the budget they justify.

::

    # 1. run: the sweep's own finetuning config for (size, seed, task), run for --steps policy steps
    python scripts/budget_curves.py run --size large --tasks ngood6 ngood2 --steps 12000 \\
        --pretrained runs/full/models/large-s0/pretrained.pt --out-dir runs/budgets
    # 2. analyse every run under the directory: levelling step per (size, task), figure, CSV
    python scripts/budget_curves.py analyse runs/budgets runs/budgets-long --out docs/results/budgets
    python scripts/budget_curves.py analyse docs/results/budgets/histories --out /tmp/again   # from the copies

Both learning rates are constant after a 20-step warmup (``min_lr_ratio = 1``) and nothing else in a
finetuning run depends on its step budget, so the first ``B`` steps of a longer run *are* a ``B``-step run
(checked: the evaluations up to the preset's budget repeat the committed full-budget histories exactly). One
long run per (size, task) therefore gives the held-out success of every shorter budget.

``run`` without ``--pretrained`` pretrains the size first with the sweep's config (``<out-dir>/<size>-s<seed>/
pretrained.pt``). Evaluations come every ``--eval-every`` steps (default: a tenth of the preset's budget, the
sweep's own interval). Runs resume where they stopped; ``--extend`` lets an unfinished run go on to the longer
``--steps`` (with a constant learning rate the step budget changes nothing before the end: checked, an
extended run repeats the straight run of that length exactly); a finished run has dropped its optimizer
state, so a longer run of it starts afresh in another ``--out-dir``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from agents.checkpoint import atomic_write, load_checkpoint
from agents.finetune import finetune
from agents.pipeline.config import POSITIVE_FULL_STEPS_BEFORE_LEVELLING, SweepConfig
from agents.pipeline.plan import checkpoint_finished
from agents.pipeline.units import finetune_config, pretrain_config
from agents.pretrain import pretrain
from agents.training import history_path
from seqenv.tasks import TASKS

#: A curve has levelled off at step B when its smoothed value (running mean of SMOOTH evaluations, centred)
#: stays within LEVEL_TOL of the best smoothed value the whole run reaches from B on, B is at least the old
#: budget, and the run went on for at least LEVEL_FACTOR x B steps. Each part is there for a curve seen:
#: curves sit on a plateau before they jump (medium ngood4 of the committed seed-0 run: 0.57-0.59 of the way
#: from 1,500 to 2,500 steps, 0.80 at 3,500; every such plateau lies below the old budgets), and some creep up
#: for a long time (tiny ngood2: a 16,000-step run put B at 12,800 under a 1.25x length, the 48,000-step run
#: at 30,400), so the run must be well longer than B.
LEVEL_TOL = 0.02
LEVEL_FACTOR = 1.5
SMOOTH = 3


def extend_run(ckpt: Path, steps: int) -> None:
    """Let the unfinished run at ``ckpt`` go on to ``steps`` steps (its saved config's ``steps`` becomes
    ``steps``, so resuming it at that length is allowed). Only a constant learning rate after warmup makes this
    the same run as one started at that length; :func:`run_curves` checks that."""
    saved = load_checkpoint(ckpt)
    state = saved["train_state"]
    if state.get("finished"):
        raise SystemExit(
            f"{ckpt} finished at {state['config']['steps']} steps and dropped its optimizer state: it cannot "
            f"be extended; run the longer one in another --out-dir"
        )
    if state["config"]["steps"] < steps:
        state["config"]["steps"] = steps
        atomic_write(ckpt, lambda tmp: torch.save(saved, tmp))


def run_curves(
    size: str,
    seed: int,
    tasks: list[str],
    steps: int,
    eval_every: int | None,
    pretrained: Path | None,
    out: Path,
    extend: bool = False,
) -> None:
    """Finetune ``size`` (seed ``seed``) on each task for ``steps`` steps with the full preset's config
    (``extend``: an unfinished shorter run of it goes on to ``steps``)."""
    sweep = SweepConfig(preset="full", budget="full", sizes=(size,), seeds=(seed,), device="cpu")
    torch.set_num_threads(1)
    run_dir = out / f"{size}-s{seed}"
    if pretrained is None:
        pretrained = run_dir / "pretrained.pt"
        pretrain(pretrain_config(sweep, size, seed), pretrained, progress=False)
    for task in tasks:
        cfg = finetune_config(sweep, size, seed, task)
        cfg = dataclasses.replace(
            cfg,
            steps=steps,
            eval_every=eval_every or cfg.eval_every,
            checkpoint_every=max(1, steps // 20),
        )
        if cfg.min_lr_ratio != 1.0:
            raise SystemExit(
                f"the learning rate decays (min_lr_ratio {cfg.min_lr_ratio}): no prefix is a run"
            )
        ckpt = run_dir / f"{task}.pt"
        if extend and ckpt.exists():
            extend_run(ckpt, steps)
        summary = finetune(pretrained, cfg, ckpt, progress=False)
        print(
            f"{size}-s{seed} {task}: {steps} steps, success {summary['success']:.3f} "
            f"({summary['frac_of_oracle']:.3f} of the way), {summary['wall_time_s']:.0f} s",
            flush=True,
        )


def levelled_step(
    steps: np.ndarray,
    frac: np.ndarray,
    tol: float = LEVEL_TOL,
    factor: float = LEVEL_FACTOR,
    floor: int = 0,
) -> tuple[int | None, int, float]:
    """``(B, first step from which the smoothed curve stays within tol of its best, best smoothed value)``.

    ``B`` is that first step, at least ``floor`` (the budget before: only a rise is in question, and every
    plateau seen before a jump lies below it), when the run reached ``factor * B`` steps; else None (not
    shown to have levelled).
    """
    smooth = pd.Series(frac).rolling(SMOOTH, center=True, min_periods=1).mean().to_numpy()
    best = float(smooth.max())
    below = np.flatnonzero(smooth < best - tol)
    first = int(steps[below[-1] + 1]) if below.size else int(steps[0])
    level = max(first, floor)
    return (level if steps[-1] >= factor * level else None), first, best


def _longest_runs(roots: list[Path]) -> list[Path]:
    """The finetuned checkpoints (or, in a copy made by :func:`analyse`, their finished runs' histories) under
    ``roots``, the longest run of each (size, seed, task)."""
    best: dict[tuple[str, str], tuple[int, Path]] = {}
    for root in roots:
        for hist in root.glob("*-s*/ngood*.pt.history.csv"):
            ckpt = hist.with_name(hist.name.removesuffix(".history.csv"))
            steps = int(pd.read_csv(hist)["step"].iloc[-1])
            key = (ckpt.parent.name, ckpt.stem)
            if key not in best or steps > best[key][0]:
                best[key] = (steps, ckpt)
    return [best[k][1] for k in sorted(best)]


def _finished(ckpt: Path) -> bool:
    # a run still going may not have written its first checkpoint yet; analyse's copies carry a marker
    if ckpt.exists():
        return checkpoint_finished(ckpt)
    return ckpt.with_suffix(".finished").exists()


#: what an evaluation measures of the model at that step (the other history columns are running means since
#: the previous evaluation, so they depend on the evaluation interval)
EVALUATION_COLUMNS = ("success", "frac_of_oracle", "maintenance_acc")


def _same_prefix(hist: pd.DataFrame, committed: Path) -> str | None:
    """``"k/n"``: of the ``n`` evaluations a committed full-budget run shares with this longer run (same step),
    how many measured the same model (:data:`EVALUATION_COLUMNS` equal); None without a committed run."""
    if not committed.is_file():
        return None
    both = hist.merge(pd.read_csv(committed), on="step", suffixes=("", "_c"))
    equal = sum(all(r[c] == r[c + "_c"] for c in EVALUATION_COLUMNS) for _, r in both.iterrows())
    return f"{equal}/{len(both)}"


def analyse(
    roots: list[Path],
    out: Path,
    tol: float = LEVEL_TOL,
    factor: float = LEVEL_FACTOR,
    committed: Path | None = None,
) -> pd.DataFrame:
    """One row per (size, seed, task), from its longest run under ``roots``, in ``out/levelling.csv``; a figure
    of every curve with its levelling step (``out/curves.png``); the runs' histories copied to
    ``out/histories/`` (which ``analyse`` reads as well, so the committed copy re-analyses alone). A run still
    going counts as far as it has been evaluated: its evaluations are those of any run of that length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, curves = [], {}
    for ckpt in _longest_runs(roots):
        hist = pd.read_csv(history_path(ckpt))
        size, seed = ckpt.parent.name.rsplit("-s", 1)
        task = ckpt.stem
        steps, frac = hist["step"].to_numpy(), hist["frac_of_oracle"].to_numpy()
        finished = _finished(ckpt)
        if out.resolve() not in ckpt.resolve().parents:
            copy = out / "histories" / ckpt.parent.name / history_path(ckpt).name
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(history_path(ckpt), copy)
            copy.with_name(ckpt.stem + ".finished").unlink(missing_ok=True)
            if finished:
                copy.with_name(ckpt.stem + ".finished").touch()
        old = POSITIVE_FULL_STEPS_BEFORE_LEVELLING[size]
        level_at, near_best, best = levelled_step(steps, frac, tol, factor, floor=old)
        same = (
            _same_prefix(hist, committed / "models" / ckpt.parent.name / history_path(ckpt).name)
            if committed
            else None
        )
        curves[(size, task)] = (steps, frac, level_at)
        rows.append(
            {
                "size": size,
                "seed": int(seed),
                "task": task,
                "steps_run": int(steps[-1]),
                "finished": finished,
                "old_budget": old,
                "frac_at_old_budget": float(np.interp(old, steps, frac)) if steps[-1] >= old else np.nan,
                "best_frac": best,
                "near_best_from": near_best,
                "levelled_at": level_at,
                "budget": None if level_at is None else int(math.ceil(level_at / 1000) * 1000),
                "success_final": float(hist["success"].iloc[-1]),
                "same_as_committed": same,
            }
        )
    table = pd.DataFrame(rows)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "levelling.csv", index=False)
    sizes = [s for s in ("tiny", "small", "medium", "large") if s in set(table["size"])]
    fig, axes = plt.subplots(1, len(sizes), figsize=(4 * len(sizes), 3.3), sharey=True, squeeze=False)
    for ax, size in zip(axes[0], sizes, strict=True):
        for task in TASKS:
            if (size, task) not in curves:
                continue
            steps, frac, level_at = curves[(size, task)]
            color = f"C{sorted(TASKS).index(task)}"  # one colour per task in every panel
            ax.plot(steps, frac, color=color, label=task)
            if level_at is not None:
                ax.axvline(level_at, color=color, ls=":", lw=1)
        ax.axvline(
            POSITIVE_FULL_STEPS_BEFORE_LEVELLING[size], color="grey", ls="--", lw=1, label="old budget"
        )
        ax.set_title(f"{size} (dotted: levelled)")
        ax.set_xlabel("policy steps")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("held-out success (of the way to oracle)")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=120)
    return table


def markdown(table: pd.DataFrame) -> str:
    """The levelling table as markdown, sizes in increasing order."""
    order = {s: i for i, s in enumerate(("tiny", "small", "medium", "large"))}
    lines = [
        "| size | task | steps run | of the way at the old budget | best | levelled at | budget |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(table.itertuples(), key=lambda r: (order[r.size], r.task)):
        at_old = "" if pd.isna(r.frac_at_old_budget) else f"{r.frac_at_old_budget:.2f} ({r.old_budget:,})"
        level = "not yet" if pd.isna(r.levelled_at) else f"{int(r.levelled_at):,}"
        budget = "" if pd.isna(r.budget) else f"{int(r.budget):,}"
        running = "" if r.finished else " (running)"
        lines.append(
            f"| {r.size} | {r.task} | {r.steps_run:,}{running} | {at_old} | {r.best_frac:.2f} | {level} | {budget} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="long finetuning runs")
    r.add_argument("--size", required=True)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--tasks", nargs="+", default=list(TASKS))
    r.add_argument("--steps", type=int, required=True)
    r.add_argument("--eval-every", type=int, default=None)
    r.add_argument("--pretrained", type=Path, default=None)
    r.add_argument("--out-dir", type=Path, required=True)
    r.add_argument("--extend", action="store_true", help="an unfinished shorter run goes on to --steps")
    a = sub.add_parser("analyse", help="levelling steps and figure")
    a.add_argument("roots", type=Path, nargs="+", help="directories of runs (the longest run of each counts)")
    a.add_argument("--out", type=Path, required=True)
    a.add_argument(
        "--committed",
        type=Path,
        default=None,
        help="a full-budget sweep of the same seed: compare the prefixes",
    )
    a.add_argument("--markdown", action="store_true", help="print the table as markdown (for the docs)")
    a.add_argument("--tol", type=float, default=LEVEL_TOL, help=f"default {LEVEL_TOL}")
    a.add_argument("--factor", type=float, default=LEVEL_FACTOR, help=f"default {LEVEL_FACTOR}")
    args = ap.parse_args(argv)
    if args.cmd == "run":
        run_curves(
            args.size,
            args.seed,
            args.tasks,
            args.steps,
            args.eval_every,
            args.pretrained,
            args.out_dir,
            args.extend,
        )
    else:
        table = analyse(args.roots, args.out, args.tol, args.factor, args.committed)
        print(markdown(table) if args.markdown else table.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
