"""Options and argument types shared by the ``splitseq`` sub-commands: each option is declared here once.

Argument types turn the text of one option into a value or raise :class:`argparse.ArgumentTypeError`
naming it, so argparse prints one line (``splitseq CMD: error: argument --x: ...``) and exits with 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from agents.training import BUDGETS


def positive_int(text: str) -> int:
    """An int ``>= 1``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def nonneg_int(text: str) -> int:
    """An int ``>= 0``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number ``> 0``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def nonneg_float(text: str) -> float:
    """A finite number ``>= 0``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


# ------------------------------------------------------------------------------------ options used twice+
def add_seed(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--seed", type=nonneg_int, default=0, help=f"seed of {what} (default 0)")


def add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=nonneg_int, default=None, help="torch threads (default: torch's)")


def add_log_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-dir", default=None, help="TensorBoard directory")


def add_restart(p: argparse.ArgumentParser) -> None:
    p.add_argument("--restart", action="store_true", help="start afresh instead of resuming a run at --out")


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_json(p: argparse.ArgumentParser, help: str = "print the summary as JSON") -> None:
    p.add_argument("--json", action="store_true", help=help)


def add_budget(p: argparse.ArgumentParser) -> None:
    p.add_argument("--budget", choices=BUDGETS, default="full", help="the size's default budget")


# ------------------------------------------------------------------------------------------------ output
def fail(command: str, err: Exception) -> int:
    """Print ``err`` as one line for ``splitseq COMMAND`` and return the usage-error exit code 2."""
    print(f"splitseq {command}: error: {err}", file=sys.stderr)
    return 2


def print_summary(summary: dict[str, Any], as_json: bool) -> None:
    """A trainer's summary as aligned ``key  value`` lines, or as JSON."""
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
        return
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        print(f"{key:<{width}}  {text}")
