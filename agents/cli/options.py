"""Options and argument types shared by the ``splitseq`` sub-commands: each option is declared here once.

Argument types turn the text of one option into a value or raise :class:`argparse.ArgumentTypeError`
naming it, so argparse prints one line (``splitseq CMD: error: argument --x: ...``) and exits with 2.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import sys
from typing import Any

import torch

from agents.cli.interrupts import interrupted
from agents.finetune_config import WORLD_MODELS
from agents.runtime import PRECISIONS, check_device, choose_threads
from agents.training import BUDGETS


def number_type(
    kind: type, low: float, high: float = math.inf, strict: bool = False, expected: str | None = None
) -> Any:
    """An argument type for an int or float in ``[low, high]`` (``(low, high]`` with ``strict``); ``expected``
    names the range in error messages (default: spelled out from the bounds)."""
    if expected is None:
        lower = f"> {low:g}" if strict else f">= {low:g}"
        expected = (
            f"{'an integer' if kind is int else 'a number'} in {'(' if strict else '['}{low:g}, {high:g}]"
            if math.isfinite(high)
            else f"{'an integer' if kind is int else 'a finite number'} {lower}"
        )

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not (math.isfinite(value) and (value > low if strict else value >= low) and value <= high):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in "invalid <type> value" messages
    return parse


#: an int >= 1
positive_int = number_type(int, 1, expected="a positive integer")
#: an int >= 0
nonneg_int = number_type(int, 0)
#: a finite number > 0
positive_float = number_type(float, 0.0, strict=True, expected="a positive number")
#: a finite number >= 0
nonneg_float = number_type(float, 0.0)


# ------------------------------------------------------------------------------------ options used twice+
def add_seed(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--seed", type=nonneg_int, default=0, help=f"seed of {what} (default 0)")


def add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch threads (default: chosen from the model size, the device and the idle CPUs, and said in one "
        "line before the run starts)",
    )


def device_type(text: str) -> str:
    """A device name (:data:`agents.runtime.DEVICES`); whether it exists is checked when the run starts."""
    try:
        return check_device(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_device(
    p: argparse.ArgumentParser, default: str | None = "auto", what: str = "the model", help: str | None = None
) -> None:
    p.add_argument(
        "--device",
        type=device_type,
        default=default,
        help=help
        or f"where {what} runs: auto (default: cuda if available, else mps, else cpu), cpu, cuda, cuda:<i> or mps",
    )


def add_precision(p: argparse.ArgumentParser, default: str | None = "fp32") -> None:
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=default,
        help="fp32 (default: bit-reproducible) or bf16 (autocast of forward pass and loss; fast where the "
        "CPU or GPU has native bf16, docs: Training)",
    )


def use_threads(
    command: str, threads: int | None, size: str | None, device: Any, precision: str, announce: bool = True
) -> int:
    """Torch threads of a single run: ``threads`` if given, else :func:`agents.runtime.choose_threads`'s
    choice, announced (``announce``) in one line on stdout, where the run's summary goes (stderr keeps the
    progress bar and one line per error). Returns the number set."""
    if threads:
        torch.set_num_threads(threads)
        return threads
    n, why = choose_threads(size, device, precision)
    torch.set_num_threads(n)
    if announce:
        print(
            f"splitseq {command}: {n} torch thread{'s' * (n != 1)} ({why}); --threads N overrides", flush=True
        )
    return n


def add_log_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-dir", default=None, help="TensorBoard directory")


def add_restart(p: argparse.ArgumentParser) -> None:
    p.add_argument("--restart", action="store_true", help="start afresh instead of resuming a run at --out")


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_json(p: argparse.ArgumentParser, help: str = "print the summary as JSON") -> None:
    p.add_argument("--json", action="store_true", help=help)


def add_world_model(
    p: argparse.ArgumentParser, default: str | None, choices: tuple[str, ...] = WORLD_MODELS
) -> None:
    p.add_argument(
        "--world-model",
        choices=choices,
        default=default,
        help="what the next-token training shows the model: natural (the post's, default: natural sequences "
        "only), counterfactual (also the world's answer to uniformly drawn odd tokens)"
        + (" or policy (finetuning: to the policy's own sampled actions)" if "policy" in choices else "")
        + "; self-evaluation needs counterfactual contexts (docs: Results)",
    )


def add_budget(p: argparse.ArgumentParser) -> None:
    p.add_argument("--budget", choices=BUDGETS, default="full", help="the size's default budget")


# ------------------------------------------------------------------------------------------------ output
def fail(command: str, err: Exception | str, code: int = 2) -> int:
    """Print ``err`` as one line for ``splitseq COMMAND`` and return ``code`` (2: a usage error).

    A message over several lines (a library's details) is joined into one; an :class:`OSError` is described
    by :func:`describe_os_error`.
    """
    if interrupted():  # an error raised while Ctrl-C or SIGTERM was being handled is that interrupt
        raise KeyboardInterrupt
    if isinstance(err, OSError) and not isinstance(err, ValueError):
        err, code = describe_os_error(err)
    text = " ".join(str(err).split()) or type(err).__name__
    print(f"splitseq {command}: error: {text}", file=sys.stderr)
    return code


#: errors of the machine rather than of the command: exit code 1
_MACHINE_ERRNOS = {errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.ENOMEM}


def describe_os_error(err: OSError) -> tuple[str, int]:
    """One line for a file-system error, naming the path and what was expected, and its exit code."""
    path = err.filename if err.filename is not None else "a file"
    reasons = {
        errno.EACCES: f"cannot write {path}: permission denied; choose a path you may write to",
        errno.EPERM: f"cannot write {path}: operation not permitted; choose a path you may write to",
        errno.EROFS: f"cannot write {path}: read-only file system; choose a writable path",
        errno.ENOTDIR: f"{path}: a part of this path is a file, expected a directory",
        errno.EEXIST: f"{path} exists and is a file, expected a directory",
        errno.EISDIR: f"{path} is a directory, expected a file",
        errno.ENOENT: f"{path}: no such file or directory",
        errno.ENOSPC: f"no space left on the device writing {path}",
    }
    text = reasons.get(err.errno, f"{path}: {err.strerror or err}")
    return text, 1 if err.errno in _MACHINE_ERRNOS else 2


def print_summary(summary: dict[str, Any], as_json: bool) -> None:
    """A trainer's summary as aligned ``key  value`` lines, or as JSON."""
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
        return
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        print(f"{key:<{width}}  {text}")
