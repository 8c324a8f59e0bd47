"""``splitseq ppo``: PPO (Stable-Baselines3) with the transformer or an MLP policy on the native vector env."""

from __future__ import annotations

import argparse
from pathlib import Path

from agents.checkpoint import CheckpointError, load_checkpoint
from agents.cli.options import add_device, add_seed, add_threads, fail, number_type, positive_int, use_threads
from agents.runtime import resolve_device
from agents.sb3 import PPO_DEFAULTS, train_ppo
from agents.sb3.training import PPO_RANGES
from agents.transformer import SIZES
from seqenv.tasks import TASKS


def _size(args: argparse.Namespace) -> str | None:
    """The transformer's size (the pretrained checkpoint's, --size's, or tiny); None for the MLP."""
    if args.policy == "mlp":
        return None
    if args.pretrained is not None:
        return load_checkpoint(args.pretrained)["meta"].get("size")
    return args.size or "tiny"


def _run(args: argparse.Namespace) -> int:
    tb = str(Path(args.out).parent / "runs") if args.tensorboard is None else (args.tensorboard or None)
    hyper = {key: getattr(args, key) for key in PPO_DEFAULTS}
    try:
        device = resolve_device(args.device)
        use_threads("ppo", args.threads, _size(args), device, "fp32")
        model = train_ppo(
            task=args.task,
            timesteps=args.timesteps,
            out=args.out,
            pretrained=args.pretrained,
            size=args.size,
            policy=args.policy,
            n_envs=args.n_envs,
            seed=args.seed,
            tensorboard_log=tb,
            eval_every=args.eval_every,
            episode_length=args.episode_length,
            device=args.device,
            **hyper,
        )
    except (CheckpointError, ValueError, TypeError) as e:
        return fail("ppo", e)
    meta = model.splitseq_meta
    for samples, greedy, sampled, seconds in meta.get("eval", []):
        print(
            f"{samples:>9d} samples {seconds:7.1f}s  greedy success {greedy:.4f}  sampled success {sampled:.4f}"
        )
    saved = args.out if str(args.out).endswith(".zip") else f"{args.out}.zip"
    print(
        f"trained {model.num_timesteps} samples in {meta['wall_time_s']:.1f}s "
        f"({model.num_timesteps / meta['wall_time_s']:.0f} samples/s); saved {saved}"
    )
    if tb:
        print(f"TensorBoard: tensorboard --logdir {tb}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``ppo``."""
    p = sub.add_parser(
        "ppo",
        help="train PPO (Stable-Baselines3) on SplitSeq's native vector env",
        description="Train PPO with the transformer policy (optionally from a pretrained checkpoint) or SB3's "
        "MlpPolicy on SplitSeq's native vector env; save SB3's zip (agents.load reads it); TensorBoard logs "
        "SB3's rollout/train scalars and eval/greedy_success (exact, on fixed histories).",
    )
    p.add_argument("--task", choices=sorted(TASKS), default="ngood4", help="the task (default ngood4)")
    p.add_argument("--pretrained", default=None, help="pretrained .pt checkpoint to start from")
    p.add_argument(
        "--size", choices=sorted(SIZES), default=None, help="model size without --pretrained (default tiny)"
    )
    p.add_argument("--policy", choices=("transformer", "mlp"), default="transformer", help="policy network")
    p.add_argument("--timesteps", type=positive_int, required=True, help="environment samples")
    p.add_argument("--out", required=True, help="output .zip")
    p.add_argument("--n-envs", type=positive_int, default=256, help="parallel environments (default 256)")
    add_seed(p, "PPO, the policy and the environments")
    p.add_argument(
        "--tensorboard", default=None, help="TensorBoard directory (default: runs/ beside --out; '' disables)"
    )
    p.add_argument(
        "--eval-every",
        type=positive_int,
        default=None,
        help="samples between exact greedy-success evaluations",
    )
    p.add_argument("--episode-length", type=positive_int, default=1, help="steps per episode (default 1)")
    for key, value in PPO_DEFAULTS.items():
        low, high, strict = PPO_RANGES[key]
        p.add_argument(
            f"--{key.replace('_', '-')}",
            type=number_type(type(value), low, high, strict),
            default=value,
            help=f"PPO's {key} (default {value})",
        )
    add_device(p, what="the policy")
    add_threads(p)
    p.set_defaults(func=_run)
