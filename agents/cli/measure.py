"""``splitseq measure``: success, Op, Op_theory, Imp and Imp_min of a checkpoint or a reference policy.

::

    splitseq measure runs/tiny-s0-ngood4.pt --task all
    splitseq measure oracle-ngood4 --task all --json     # also: uniform, natural
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pandas as pd

import measures
from agents.checkpoint import CheckpointError
from agents.cli.options import (
    add_device,
    add_json,
    add_threads,
    fail,
    nonneg_float,
    nonneg_int,
    number_type,
    use_threads,
)
from agents.loading import load
from agents.reference import NaturalPolicy, OraclePolicy, UniformPolicy
from agents.runtime import resolve_device
from measures.api import MEASURE_METHODS
from seqenv.tasks import TASKS

#: the reference policies ``splitseq measure`` knows by name
REFERENCE_NAMES: tuple[str, ...] = ("uniform", "natural", *(f"oracle-{t}" for t in TASKS))


def load_policy(spec: str, device: str | None = None) -> Any:
    """A checkpoint path (``.pt`` / SB3 ``.zip``, loaded on ``device``, default the CPU) or a reference name
    (``uniform``, ``natural``, ``oracle-<task>``)."""
    if spec == "uniform":
        return UniformPolicy()
    if spec == "natural":
        return NaturalPolicy()
    if spec.startswith("oracle-") and not Path(spec).exists():
        return OraclePolicy(spec.removeprefix("oracle-"))
    return load(spec, device=device)


def measure_table(
    policy: Any, tasks: list[str], n_histories: int, seed: int, method: str, temperature: float
) -> pd.DataFrame:
    """Success, Op, Op_theory, Imp, Imp_min per task (a DataFrame indexed by task), via :mod:`measures`."""
    kw = {"n_histories": n_histories, "seed": seed, "method": method, "temperature": temperature}
    table = measures.cross_objective(policy, tuple(tasks), **kw)
    return table[["success", "op", "op_theory", "imp", "imp_min", "baseline_success", "p"]]


def _run(args: argparse.Namespace) -> int:
    tasks = sorted(TASKS) if args.task == "all" else [args.task]
    try:
        device = resolve_device(args.device)
        policy = load_policy(args.policy, device)
        size = getattr(policy, "meta", {}).get("size")  # reference policies: numpy only, no model
        threads = use_threads("measure", args.threads, size, device, "fp32", not args.json)
        table = measure_table(policy, tasks, args.n_histories, args.seed, args.method, args.temperature)
    except (CheckpointError, ValueError, TypeError) as e:
        return fail("measure", e)
    if args.json:
        data = {"policy": args.policy, "threads": threads, "tasks": table.to_dict(orient="index")}
        print(json.dumps(data, indent=2))
    else:
        print(f"{args.policy}: {args.method} split-history measures on {args.n_histories} histories (nats)")
        print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``measure``."""
    p = sub.add_parser(
        "measure",
        help="measure a policy's success, Op and Imp on every task",
        description="Split-history measures (docs/spec.md §4) of a checkpoint or a reference policy: success, Op, "
        "Op_theory (from the success rate), Imp and Imp_min per task, in nats. POLICY is a .pt checkpoint, an "
        "SB3 .zip, or one of: " + ", ".join(REFERENCE_NAMES) + ".",
    )
    p.add_argument("policy", metavar="POLICY", help="checkpoint path or reference policy name")
    p.add_argument("--task", choices=["all", *sorted(TASKS)], default="all", help="task, or all (default)")
    p.add_argument(
        "--n-histories", type=number_type(int, 2), default=4096, help="natural histories (default 4096)"
    )
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the histories (default 0)")
    p.add_argument(
        "--method",
        choices=MEASURE_METHODS,
        default="exact",
        help="exact (default) or monte_carlo (the post's sampling estimator)",
    )
    p.add_argument(
        "--temperature", type=nonneg_float, default=0.0, help="policy temperature (default 0: greedy)"
    )
    add_device(p, what="a checkpoint's model")
    add_threads(p)
    add_json(p, "print JSON instead of a table")
    p.set_defaults(func=_run)
