"""``splitseq reproduce``: rerun the post's whole experiment (sweep, results table, figures, report).

The pipeline lives in the repository's ``scripts/`` directory, next to the installed packages of an
editable install (``pip install -e .``); this module finds it there and imports ``scripts.reproduce``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from types import ModuleType

PRESETS = ("quick", "full")


class NotACheckoutError(RuntimeError):
    """``splitseq reproduce`` was run from an install without the repository's ``scripts/`` directory."""


def repo_root() -> Path:
    """The source checkout this package was installed from (editable install), holding ``scripts/``."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "scripts" / "reproduce.py").is_file():
        raise NotACheckoutError(
            f"splitseq reproduce needs a source checkout of SplitSeq: no scripts/reproduce.py next to the "
            f"installed package in {root}. Clone the repository and install it editable "
            f"(bash scripts/install.sh, or pip install -e .), then run the command again."
        )
    return root


def load_pipeline() -> ModuleType:
    """Import ``scripts.reproduce`` from the checkout (putting the checkout first on ``sys.path``)."""
    root = repo_root()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    loaded = sys.modules.get("scripts")
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve().parent != root / "scripts":
        raise NotACheckoutError(f"another package named 'scripts' ({loaded.__file__}) shadows {root / 'scripts'}")
    return importlib.import_module("scripts.reproduce")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``splitseq reproduce`` (also used by ``python -m scripts.reproduce``)."""
    p.add_argument("--preset", choices=PRESETS, default=None,
                   help="quick (default): tiny, one seed, the three tasks (minutes); full: 4 sizes x 5 seeds x 3 tasks")  # fmt: skip
    p.add_argument("--out", required=True, help="sweep directory (created; run the same command again to resume)")
    p.add_argument("--workers", type=int, default=None,
                   help="units in flight at once: local default one per CPU (a process pool; 1 runs them in this "
                   "process); ray default: as many as the cluster's CPUs allow")  # fmt: skip
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local process pool, or Ray tasks (pip install 'splitseq[ray]')")  # fmt: skip
    p.add_argument("--ray-address", default=None, help="address of a Ray cluster (default: start a local instance)")
    p.add_argument("--threads", type=int, default=None, help="torch threads inside each unit (default 1)")
    p.add_argument("--steps-scale", type=float, default=None,
                   help="multiply every training step budget, e.g. 0.05 for a smoke test (default 1)")  # fmt: skip
    p.add_argument("--method", choices=("positive", "reinforce"), default=None,
                   help="finetuning method: positive (the post's, default) or reinforce (with a baseline)")
    p.add_argument("--sizes", nargs="+", default=None, metavar="SIZE", help="override the preset's model sizes")
    p.add_argument("--seeds", nargs="+", type=int, default=None, metavar="SEED", help="override the preset's seeds")
    p.add_argument("--tasks", nargs="+", default=None, metavar="TASK", help="override the preset's tasks")
    p.add_argument("--n-histories", type=int, default=None,
                   help="evaluation histories shared by every model (default 8192)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar and no per-unit log lines")
    p.add_argument("--merge", nargs="+", default=None, metavar="DIR",
                   help="combine finished sweeps that differ only in their seeds (e.g. run on separate machines) "
                   "into --out, then write its results, figures and report")  # fmt: skip


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce",
        help="rerun the post's experiment: train, measure, results.csv, figures, report.md",
        description="Rerun the research post's experiment end to end: pretrain each (size, seed), finetune on "
        "each task, measure every model on every task (plus reference policies), self-evaluate, then write "
        "DIR/results.csv, DIR/figures/*.png and DIR/report.md. Resumable: rerun the same command after an "
        "interruption and finished work is kept.",
    )
    add_arguments(p)

    def func(args: argparse.Namespace) -> int:
        try:
            pipeline = load_pipeline()
        except NotACheckoutError as e:
            print(f"splitseq reproduce: {e}", file=sys.stderr)
            return 2
        return pipeline.main_args(args)

    p.set_defaults(func=func)
