"""``splitseq pretrain`` and ``splitseq finetune``.

::

    splitseq pretrain --size tiny --seed 0 --out runs/tiny-s0.pt
    splitseq finetune runs/tiny-s0.pt --task ngood4 --out runs/tiny-s0-ngood4.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

from agents.checkpoint import CheckpointError, load_checkpoint
from agents.cli.options import (
    add_budget,
    add_device,
    add_json,
    add_log_dir,
    add_precision,
    add_quiet,
    add_restart,
    add_seed,
    add_threads,
    add_world_model,
    fail,
    positive_float,
    positive_int,
    print_summary,
    use_threads,
)
from agents.finetune import FINETUNE_METHODS, FinetuneConfig, finetune
from agents.pretrain import PretrainConfig, pretrain
from agents.runtime import resolve_device
from agents.transformer import SIZES
from seqenv.tasks import TASKS


def _overrides(args: argparse.Namespace, names: tuple[str, ...]) -> dict:
    """The config fields given on the command line (options left at ``None`` keep the preset's value)."""
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}


# ------------------------------------------------------------------------------------------------ pretrain
def _run_pretrain(args: argparse.Namespace) -> int:
    try:
        device = resolve_device(args.device)  # before anything runs: a missing GPU is one line
        cfg = PretrainConfig.preset(args.size, seed=args.seed, budget=args.budget)
        names = (
            "steps",
            "batch_size",
            "lr",
            "threads",
            "checkpoint_every",
            "world_model",
            "device",
            "precision",
        )
        overrides = _overrides(args, names)
        if overrides:
            cfg = PretrainConfig(**{**cfg.to_dict(), **overrides})
        threads = use_threads("pretrain", args.threads, cfg.size, device, cfg.precision, not args.json)
        summary = pretrain(
            cfg, args.out, log_dir=args.log_dir, progress=not args.quiet, resume=not args.restart
        )
    except (CheckpointError, ValueError, TypeError) as e:
        return fail("pretrain", e)
    print_summary({**summary, "threads": threads}, args.json)
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
    add_seed(p, "initialisation, dropout and data")
    p.add_argument("--out", required=True, help="checkpoint path (.pt)")
    p.add_argument(
        "--steps", type=positive_int, default=None, help="optimizer steps (default: the size's budget)"
    )
    add_budget(p)
    p.add_argument("--batch-size", type=positive_int, default=None, help="examples per step")
    p.add_argument("--lr", type=positive_float, default=None, help="peak learning rate")
    p.add_argument(
        "--checkpoint-every",
        type=positive_int,
        default=None,
        help="steps between resumable checkpoints (default: the size's; changing it does not block a resume)",
    )
    add_world_model(p, default=None, choices=("natural", "counterfactual"))
    add_device(p)
    add_precision(p)
    add_threads(p)
    add_log_dir(p)
    add_restart(p)
    add_quiet(p)
    add_json(p)
    p.set_defaults(func=_run_pretrain)


# ------------------------------------------------------------------------------------------------ finetune
def _run_finetune(args: argparse.Namespace) -> int:
    try:
        if Path(args.out).resolve() == Path(args.pretrained).resolve():
            raise ValueError(
                f"--out {args.out} is the pretrained checkpoint itself: finetuning would overwrite its own "
                "input; choose another --out"
            )
        device = resolve_device(args.device)
        size = load_checkpoint(args.pretrained)["meta"].get("size", "large")
        names = ("steps", "batch_size", "group_size", "lr", "maintenance_lr", "threads", "world_model")
        overrides = _overrides(args, (*names, "device", "precision"))
        cfg = FinetuneConfig.preset(
            size, task=args.task, method=args.method, seed=args.seed, budget=args.budget, **overrides
        )
        threads = use_threads("finetune", args.threads, size, device, cfg.precision, not args.json)
        summary = finetune(
            args.pretrained,
            cfg,
            args.out,
            log_dir=args.log_dir,
            progress=not args.quiet,
            resume=not args.restart,
        )
    except (CheckpointError, ValueError, TypeError) as e:
        return fail("finetune", e)
    print_summary({**summary, "threads": threads}, args.json)
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
        choices=FINETUNE_METHODS,
        default="positive",
        help="policy update: positive = the post's (successes only); reinforce = with a baseline, reaches "
        "0.8-0.95 of the way to the oracle (docs: Training)",
    )
    add_seed(p, "sampling, env and dropout")
    p.add_argument(
        "--steps", type=positive_int, default=None, help="policy steps (default: the size's budget)"
    )
    add_budget(p)
    p.add_argument("--batch-size", type=positive_int, default=None, help="environment samples per step")
    p.add_argument(
        "--group-size",
        type=positive_int,
        default=None,
        help="samples per history (reinforce: per-history baseline)",
    )
    p.add_argument("--lr", type=positive_float, default=None, help="policy learning rate")
    p.add_argument("--maintenance-lr", type=positive_float, default=None, help="maintenance learning rate")
    add_world_model(p, default="natural")
    add_device(p)
    add_precision(p)
    add_threads(p)
    add_log_dir(p)
    add_restart(p)
    add_quiet(p)
    add_json(p)
    p.set_defaults(func=_run_finetune)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``pretrain`` and ``finetune``."""
    _add_pretrain(sub)
    _add_finetune(sub)
