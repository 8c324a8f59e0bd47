"""``splitseq reproduce``: rerun the post's whole experiment (sweep, results table, figures, report).

::

    splitseq reproduce --preset quick --out runs/quick
    splitseq reproduce --preset full --out runs/full --workers 2
    splitseq reproduce --merge runs/s0 runs/s1 --out runs/merged    # seeds run on separate machines
"""

from __future__ import annotations

import argparse
import sys

from agents.cli.interrupts import interrupted
from agents.cli.options import (
    add_device,
    add_precision,
    add_world_model,
    fail,
    nonneg_int,
    number_type,
    positive_float,
    positive_int,
)
from agents.finetune import FINETUNE_METHODS
from agents.pipeline import SWEEP_PRESETS, SweepConfig, SweepError, default_workers, merge_sweeps, run_sweep
from agents.pipeline.backends import BACKENDS

#: the options that set what a sweep runs (``--merge`` takes them from the merged sweeps instead)
SWEEP_OPTIONS: tuple[str, ...] = (
    "sizes",
    "seeds",
    "tasks",
    "n_histories",
    "steps_scale",
    "threads",
    "method",
    "world_model",
    "device",
    "precision",
)


def _error(text: str) -> int:
    return fail("reproduce", text)


def _run(args: argparse.Namespace) -> int:
    """Run a sweep from parsed arguments; ``0`` on success, ``1`` if units failed, ``2`` for bad input."""
    if args.merge:
        given = [f"--{k.replace('_', '-')}" for k in SWEEP_OPTIONS if getattr(args, k) is not None]
        if given:
            return _error(f"--merge takes the settings from the merged sweeps; drop {', '.join(given)}")
        try:
            sweep = merge_sweeps(args.out, args.merge, preset=args.preset)
        except ValueError as e:
            return _error(str(e))
        workers = None  # only the report is left, and it runs in this process
    else:
        try:
            sweep = SweepConfig.from_preset(
                args.preset or "quick", **{k: getattr(args, k) for k in SWEEP_OPTIONS}
            )
        except (TypeError, ValueError) as e:
            return _error(str(e))
        workers = args.workers
        if workers is None and args.backend == "local":
            workers = default_workers(sweep.threads)
    try:
        run_sweep(
            args.out,
            sweep,
            workers=workers,
            backend=args.backend,
            progress=not args.no_progress,
            ray_address=args.ray_address,
            gpus_per_unit=args.gpus_per_unit,
        )
    except SweepError as e:
        if interrupted():  # a unit in this process failed because the interrupt landed in its C code
            raise KeyboardInterrupt from None
        print(f"splitseq reproduce: {e}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, RuntimeError, OSError) as e:  # other settings, a locked --out, no Ray, ...
        return fail("reproduce", e)
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``splitseq reproduce``."""
    p.add_argument(
        "--preset",
        choices=tuple(SWEEP_PRESETS),
        default=None,
        help="quick (default): tiny, one seed, the three tasks (minutes); full: 4 sizes x 5 seeds x 3 tasks",
    )
    p.add_argument(
        "--out", required=True, help="sweep directory (created; run the same command again to resume)"
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="units in flight at once: local default one per CPU (a process pool; 1 runs them in this "
        "process); ray default: as many as the cluster's CPUs allow",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="local",
        help="local process pool, or Ray tasks (pip install 'splitseq[ray]')",
    )
    p.add_argument(
        "--ray-address", default=None, help="address of a Ray cluster (default: start a local instance)"
    )
    p.add_argument(
        "--threads", type=positive_int, default=None, help="torch threads inside each unit (default 1)"
    )
    add_device(
        p,
        default=None,
        help="where the units' models run: auto (default: every GPU, else mps, else cpu), cpu, cuda (every "
        "GPU; the local pool gives each unit the least busy one), cuda:<i> (that one) or mps",
    )
    p.add_argument(
        "--gpus-per-unit",
        type=number_type(float, 0.0, 1.0, strict=True),
        default=None,
        help="ray: the GPU share each training or measuring unit requests (e.g. 0.25: four units per GPU; "
        "default 1 when the cluster has GPUs and --device is not cpu)",
    )
    add_precision(p, default=None)
    p.add_argument(
        "--steps-scale",
        type=positive_float,
        default=None,
        help="multiply every training step budget, e.g. 0.05 for a smoke test (default 1)",
    )
    p.add_argument(
        "--method",
        choices=FINETUNE_METHODS,
        default=None,
        help="finetuning method: positive (the post's, default) or reinforce (with a baseline)",
    )
    add_world_model(p, default=None)
    p.add_argument(
        "--sizes", nargs="+", default=None, metavar="SIZE", help="override the preset's model sizes"
    )
    p.add_argument(
        "--seeds",
        nargs="+",
        type=nonneg_int,
        default=None,
        metavar="SEED",
        help="override the preset's seeds",
    )
    p.add_argument("--tasks", nargs="+", default=None, metavar="TASK", help="override the preset's tasks")
    p.add_argument(
        "--n-histories",
        type=number_type(int, 2),
        default=None,
        help="evaluation histories shared by every model (default 8192)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar and no per-unit log lines")
    p.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="DIR",
        help="combine finished sweeps or bundles of them (splitseq bundle) that differ only in their seeds "
        "and sizes (e.g. run on separate machines; together every size for every seed) into --out, then write its results, figures and report",
    )


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``reproduce``."""
    p = sub.add_parser(
        "reproduce",
        help="rerun the post's experiment: train, measure, results.csv, figures, report.md",
        description="Rerun the research post's experiment end to end: pretrain each (size, seed), finetune on "
        "each task, measure every model on every task (plus reference policies), self-evaluate, then write "
        "DIR/results.csv, DIR/figures/*.png and DIR/report.md. Resumable: rerun the same command after an "
        "interruption and finished work is kept.",
    )
    add_arguments(p)
    p.set_defaults(func=_run)
