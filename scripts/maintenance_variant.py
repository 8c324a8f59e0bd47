"""Finetune from a sweep's pretrained models with other maintenance settings, and self-evaluate the result.

::

    python scripts/maintenance_variant.py runs/cf-medium --size medium --maintenance-batch 128 \\
        --maintenance-lr 3e-4 --out docs/results/world-model/medium-strong-maintenance.csv

For each task of the sweep: the sweep's own finetuning config (its method, budget and world model) with the
maintenance overrides, started from the sweep's pretrained checkpoint, then the sweep's own-task measures and
self-evaluation on its histories (the columns of ``results.csv``: ``op``, ``success``, ``self_op``,
``self_acc_counterfactual``, ...). One thread per run; the checkpoints go next to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pandas as pd
import torch

import agents
from agents.finetune import finetune
from agents.pipeline.config import SweepConfig
from agents.pipeline.layout import checkpoint_path, load_histories
from agents.pipeline.measure import policy_rows, self_evaluation
from agents.pipeline.units import finetune_config


def run(sweep_dir: Path, size: str, task: str, overrides: dict, out_dir: Path) -> dict:
    """Finetune ``size`` on ``task`` with ``overrides`` and return its own-task row with self-evaluation."""
    sweep = SweepConfig.from_dict(json.loads((sweep_dir / "sweep.json").read_text()))
    cfg = dataclasses.replace(finetune_config(sweep, size, 0, task), **overrides)
    out = out_dir / f"{size}-{task}.pt"
    summary = finetune(sweep_dir / checkpoint_path(size, 0), cfg, out, progress=False)
    policy = agents.load(out)
    h = load_histories(sweep_dir)
    own = policy_rows(policy, h, sweep).set_index("eval_task").loc[task]
    return {
        "model": f"{size}-s0-{task}",
        "size": size,
        "train_task": task,
        **overrides,
        "op": float(own["op"]),
        "success": float(own["success"]),
        **self_evaluation(policy, h, sweep),
        "wall_s": summary["wall_time_s"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sweep", type=Path, help="a finished sweep with the size's pretrained model (seed 0)")
    ap.add_argument("--size", required=True)
    ap.add_argument("--tasks", nargs="+", default=None, help="default: the sweep's tasks")
    ap.add_argument("--maintenance-batch", type=int, default=128)
    ap.add_argument("--maintenance-lr", type=float, default=3e-4)
    ap.add_argument("--out", type=Path, required=True, help="CSV of the rows")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    sweep = json.loads((args.sweep / "sweep.json").read_text())
    overrides = {"maintenance_batch": args.maintenance_batch, "maintenance_lr": args.maintenance_lr}
    out_dir = args.out.with_suffix("")
    rows = [run(args.sweep, args.size, t, overrides, out_dir) for t in args.tasks or sweep["tasks"]]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(args.out, index=False)
    print(pd.DataFrame(rows)[["model", "op", "self_op", "success", "self_acc_counterfactual"]].to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
