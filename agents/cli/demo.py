"""``splitseq demo``: play the environment with the uniform and the oracle policy."""

from __future__ import annotations

import argparse

from agents.cli.options import add_seed, positive_int
from seqenv.demo import run_demo
from seqenv.tasks import TASKS


def _run(args: argparse.Namespace) -> int:
    rates = run_demo(args.task, args.steps, args.seed)
    for name, rate in rates.items():
        print(f"{name:8s} success on {args.task}: {rate:.4f}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``demo``."""
    p = sub.add_parser(
        "demo", help="play SplitSeq with the uniform and the oracle policy", description=run_demo.__doc__
    )
    p.add_argument("--task", choices=sorted(TASKS), default="ngood4", help="the task (default ngood4)")
    p.add_argument(
        "--steps", type=positive_int, default=10_000, help="one-step episodes per policy (default 10000)"
    )
    add_seed(p, "the environment and the uniform policy")
    p.set_defaults(func=_run)
