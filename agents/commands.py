"""``splitseq pretrain``, ``splitseq finetune`` and ``splitseq measure``.

::

    splitseq pretrain --size tiny --seed 0 --out runs/tiny-s0.pt
    splitseq finetune runs/tiny-s0.pt --task ngood4 --out runs/tiny-s0-ngood4.pt
    splitseq measure runs/tiny-s0-ngood4.pt --task all
    splitseq measure oracle-ngood4 --task all --json     # also: uniform, natural
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from agents.transformer import SIZES
from seqenv.tasks import TASKS

REFERENCE_NAMES = ("uniform", "natural", *(f"oracle-{t}" for t in TASKS))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _fail(command: str, err: Exception) -> int:
    print(f"splitseq {command}: error: {err}", file=sys.stderr)
    return 2


def _print_summary(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
        return
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        print(f"{key:<{width}}  {text}")


# ------------------------------------------------------------------------------------------------ pretrain
def _run_pretrain(args: argparse.Namespace) -> int:
    from agents.checkpoint import CheckpointError
    from agents.pretrain import PretrainConfig, pretrain

    try:
        cfg = PretrainConfig.preset(args.size, seed=args.seed, budget=args.budget)
        overrides = {
            k: v
            for k, v in {
                "steps": args.steps,
                "batch_size": args.batch_size,
                "lr": args.lr,
                "threads": args.threads,
                "checkpoint_every": args.checkpoint_every,
            }.items()
            if v is not None
        }
        if overrides:
            cfg = PretrainConfig(**{**cfg.to_dict(), **overrides})
        summary = pretrain(
            cfg, args.out, log_dir=args.log_dir, progress=not args.quiet, resume=not args.restart
        )
    except (CheckpointError, ValueError, TypeError) as e:
        return _fail("pretrain", e)
    _print_summary(summary, args.json)
    return 0


def _add_pretrain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="pretrain a transformer on next-token prediction (fresh natural data)",
        description="Pretrain the post's encoder-only transformer on next-token prediction over fresh natural "
        "sequences (AdamW, weight decay 0.01, dropout 0.1, warmup + cosine schedule). Writes a checkpoint "
        "(atomically, every --checkpoint-every steps; rerunning the same command resumes an interrupted run "
        "bit-identically), a history CSV beside it (<out>.history.csv) and optional TensorBoard scalars.",
    )
    p.add_argument("--size", choices=list(SIZES), required=True, help="model size")
    p.add_argument(
        "--seed", type=_nonneg_int, default=0, help="seed of initialisation, dropout and data (default 0)"
    )
    p.add_argument("--out", required=True, help="checkpoint path (.pt)")
    p.add_argument(
        "--steps", type=_positive_int, default=None, help="optimizer steps (default: the size's budget)"
    )
    p.add_argument("--budget", choices=("full", "quick"), default="full", help="the size's default budget")
    p.add_argument("--batch-size", type=_positive_int, default=None, help="examples per step")
    p.add_argument("--lr", type=_positive_float, default=None, help="peak learning rate")
    p.add_argument("--checkpoint-every", type=_nonneg_int, default=None, help="steps between checkpoints")
    p.add_argument("--threads", type=_nonneg_int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--log-dir", default=None, help="TensorBoard directory")
    p.add_argument("--restart", action="store_true", help="start afresh instead of resuming a run at --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_run_pretrain)


# ------------------------------------------------------------------------------------------------ finetune
def _run_finetune(args: argparse.Namespace) -> int:
    from agents.checkpoint import CheckpointError, load_checkpoint
    from agents.finetune import FinetuneConfig, finetune

    try:
        size = load_checkpoint(args.pretrained)["meta"].get("size", "large")
        overrides = {
            k: v
            for k, v in {
                "steps": args.steps,
                "batch_size": args.batch_size,
                "group_size": getattr(args, "group_size", None),
                "lr": args.lr,
                "maintenance_lr": args.maintenance_lr,
                "threads": args.threads,
            }.items()
            if v is not None
        }
        cfg = FinetuneConfig.preset(
            size, task=args.task, method=args.method, seed=args.seed, budget=args.budget, **overrides
        )
        summary = finetune(
            args.pretrained,
            cfg,
            args.out,
            log_dir=args.log_dir,
            progress=not args.quiet,
            resume=not args.restart,
        )
    except (CheckpointError, ValueError, TypeError) as e:
        return _fail("finetune", e)
    _print_summary(summary, args.json)
    return 0


def _add_finetune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune",
        help="RL-finetune a pretrained model on a task (the post's method)",
        description="RL finetuning as in the post: sample the odd token at temperature 1 on natural histories of "
        "the vector env, let the world write s_{t+1}, reinforce the successful samples (--method positive) or "
        "use REINFORCE with a baseline (--method reinforce), with maintenance next-token training on even "
        "positions at a much lower learning rate. Reports the greedy success exactly, with the uniform and "
        "oracle levels on the same held-out histories.",
    )
    p.add_argument("pretrained", help="pretrained checkpoint (.pt) from splitseq pretrain")
    p.add_argument("--task", choices=sorted(TASKS), required=True, help="the RL task")
    p.add_argument("--out", required=True, help="output checkpoint (.pt)")
    p.add_argument(
        "--method",
        choices=("positive", "reinforce"),
        default="positive",
        help="policy update: positive = the post's (successes only); reinforce = with a baseline, reaches "
        "0.8-0.95 of the way to the oracle (README 'Training agents')",
    )
    p.add_argument(
        "--seed", type=_nonneg_int, default=0, help="seed of sampling, env and dropout (default 0)"
    )
    p.add_argument(
        "--steps", type=_positive_int, default=None, help="policy steps (default: the size's budget)"
    )
    p.add_argument("--budget", choices=("full", "quick"), default="full", help="the size's default budget")
    p.add_argument("--batch-size", type=_positive_int, default=None, help="environment samples per step")
    p.add_argument(
        "--group-size",
        type=_positive_int,
        default=None,
        help="samples per history (reinforce: per-history baseline)",
    )
    p.add_argument("--lr", type=_positive_float, default=None, help="policy learning rate")
    p.add_argument("--maintenance-lr", type=_positive_float, default=None, help="maintenance learning rate")
    p.add_argument("--threads", type=_nonneg_int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--log-dir", default=None, help="TensorBoard directory")
    p.add_argument("--restart", action="store_true", help="start afresh instead of resuming a run at --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_run_finetune)


# ------------------------------------------------------------------------------------------------- measure
def load_policy(spec: str) -> Any:
    """A checkpoint path (``.pt`` / SB3 ``.zip``) or a reference name (``uniform``, ``natural``, ``oracle-<task>``)."""
    import agents
    from agents.reference import NaturalPolicy, OraclePolicy, UniformPolicy

    if spec == "uniform":
        return UniformPolicy()
    if spec == "natural":
        return NaturalPolicy()
    if spec.startswith("oracle-") and not Path(spec).exists():
        return OraclePolicy(spec.removeprefix("oracle-"))
    return agents.load(spec)


def measure_table(
    policy: Any, tasks: list[str], n_histories: int, seed: int, method: str, temperature: float
):
    """Success, Op, Op_theory, Imp, Imp_min per task (a DataFrame indexed by task), via ``measures``."""
    import measures

    kw = {"n_histories": n_histories, "seed": seed, "method": method, "temperature": temperature}
    table = measures.cross_objective(policy, tuple(tasks), **kw)
    return table[["success", "op", "op_theory", "imp", "imp_min", "baseline_success", "p"]]


def _run_measure(args: argparse.Namespace) -> int:
    from agents.checkpoint import CheckpointError

    tasks = sorted(TASKS) if args.task == "all" else [args.task]
    try:
        policy = load_policy(args.policy)
        table = measure_table(policy, tasks, args.n_histories, args.seed, args.method, args.temperature)
    except (CheckpointError, ValueError, TypeError) as e:
        return _fail("measure", e)
    if args.json:
        print(json.dumps({"policy": args.policy, "tasks": table.to_dict(orient="index")}, indent=2))
    else:
        print(f"{args.policy}: {args.method} split-history measures on {args.n_histories} histories (nats)")
        print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    return 0


def _add_measure(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "measure",
        help="measure a policy's success, Op and Imp on every task",
        description="Split-history measures (SPEC §4) of a checkpoint or a reference policy: success, Op, "
        "Op_theory (from the success rate), Imp and Imp_min per task, in nats. POLICY is a .pt checkpoint, an "
        "SB3 .zip, or one of: " + ", ".join(REFERENCE_NAMES) + ".",
    )
    p.add_argument("policy", metavar="POLICY", help="checkpoint path or reference policy name")
    p.add_argument("--task", choices=["all", *sorted(TASKS)], default="all", help="task, or all (default)")
    p.add_argument("--n-histories", type=_positive_int, default=4096, help="natural histories (default 4096)")
    p.add_argument("--seed", type=_nonneg_int, default=0, help="seed of the histories (default 0)")
    p.add_argument("--method", choices=("exact", "monte_carlo"), default="exact", help="estimator")
    p.add_argument("--temperature", type=float, default=0.0, help="policy temperature (default 0: greedy)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_run_measure)


def add_command(sub: argparse._SubParsersAction) -> None:
    """Add ``pretrain``, ``finetune`` and ``measure`` to the ``splitseq`` sub-commands."""
    _add_pretrain(sub)
    _add_finetune(sub)
    _add_measure(sub)
