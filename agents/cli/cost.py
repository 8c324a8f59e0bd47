"""``splitseq cost``: what a sweep cost, and what it (or more seeds of it) would take on 2, 16 or 64 cores.

::

    splitseq cost docs/results/full-seed0                        # as run: unit times, wall on 2/16/64 workers
    splitseq cost docs/results/full-seed0 --seeds 0 1 2 3 4 --budgets current   # five seeds at today's budgets
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pandas as pd

from agents.cli.options import fail, positive_int
from agents.pipeline.config import SweepConfig
from agents.pipeline.cost import cost_table, critical_path, projected_seconds, seconds_by_kind, unit_seconds
from agents.pipeline.layout import SWEEP_FILE, TIMINGS_FILE, checkpoint_path
from agents.pipeline.plan import plan
from agents.pipeline.units import finetune_config, pretrain_config
from agents.training import history_path


def _steps_as_run(root: Path, size: str, seed: int, task: str) -> int | None:
    path = history_path(root / checkpoint_path(size, seed, task))
    if not path.is_file():
        return None
    steps = pd.read_csv(path)["step"]
    return int(steps.iloc[-1]) if len(steps) else None


def step_ratios(root: Path, sweep: SweepConfig) -> dict[tuple[str, str], float]:
    """``(size, task) -> steps of today's budget / steps as run`` (``task`` ``""``: pretraining), from the
    trainers' history CSVs of the lowest seed that has them."""
    today = dataclasses.replace(sweep, finetune_steps=None)  # the preset's budgets now, not the sweep's
    ratios = {}
    for size in sweep.sizes:
        for task in ("", *sweep.tasks):
            for seed in sweep.seeds:
                ran = _steps_as_run(root, size, seed, task)
                if ran:
                    cfg = (
                        finetune_config(today, size, seed, task)
                        if task
                        else pretrain_config(today, size, seed)
                    )
                    ratios[(size, task)] = cfg.steps / ran
                    break
    return ratios


def _run(args: argparse.Namespace) -> int:
    root = Path(args.sweep)
    if not (root / SWEEP_FILE).is_file() or not (root / TIMINGS_FILE).is_file():
        return fail(
            "cost", f"{root} has no {SWEEP_FILE} and {TIMINGS_FILE}: give a sweep directory or a bundle"
        )
    sweep = SweepConfig.from_dict(json.loads((root / SWEEP_FILE).read_text()))
    measured = unit_seconds(pd.read_csv(root / TIMINGS_FILE).dropna(subset=["wall_s"]))
    target = dataclasses.replace(sweep, seeds=tuple(args.seeds)) if args.seeds else sweep
    ratios = step_ratios(root, sweep) if args.budgets == "current" else {}
    units = plan(target)
    try:
        seconds = projected_seconds(units, measured, {u.name: u for u in plan(sweep)}, ratios)
        table = cost_table(units, seconds, args.workers)
    except ValueError as e:
        return fail("cost", e)
    projected = sum(u.name not in measured for u in units)
    changed = {k: v for k, v in ratios.items() if abs(v - 1) > 1e-9}
    print(
        f"{root}: {len(units)} units, seeds {', '.join(map(str, target.seeds))}; "
        + (f"{projected} projected from the same kind, size and task of the seeds run; " if projected else "")
        + (
            "training times scaled to today's budgets ("
            + ", ".join(f"{s}{'-' + t if t else ' pretrain'} ×{r:.2f}" for (s, t), r in changed.items())
            + ")"
            if changed
            else "budgets as run"
        )
    )
    print(f"total work {sum(seconds.values()) / 60:.1f} unit-min (one core each):")
    kinds = seconds_by_kind(units, seconds)
    per_kind = kinds.pivot_table(index="kind", columns="size", values="min", sort=False).round(1)
    print(per_kind.astype(object).where(per_kind.notna(), "").to_string())
    _, chain = critical_path(units, seconds)
    print(f"critical path: {' -> '.join(chain)}")
    print(table.round(3).to_string(index=False))
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``cost``."""
    p = sub.add_parser(
        "cost",
        help="a sweep's compute time, and its wall time on any number of cores from the unit graph",
        description="Total unit time of a finished (or partly finished) sweep or bundle, its critical path and "
        "its wall time on --workers workers (one core per unit, the sweep's dispatch rule), optionally for "
        "more seeds than were run (each new unit timed as the mean of the same kind, size and task) and at "
        "today's budgets (training times scaled by steps).",
    )
    p.add_argument("sweep", help="a sweep directory or bundle with sweep.json and timings.csv")
    p.add_argument(
        "--seeds", nargs="+", type=int, default=None, help="the seeds to cost (default: the sweep's)"
    )
    p.add_argument(
        "--workers", nargs="+", type=positive_int, default=[2, 16, 64], help="worker counts (default 2 16 64)"
    )
    p.add_argument(
        "--budgets",
        choices=("as-run", "current"),
        default="as-run",
        help="training times as run, or scaled to the preset's current step budgets",
    )
    p.set_defaults(func=_run)
