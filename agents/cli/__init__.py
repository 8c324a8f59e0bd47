"""The ``splitseq`` command line (also ``python -m agents``): one module per group of sub-commands.

Every sub-command module defines ``add_parsers(subparsers)``, which adds its parsers with
``func=callable(args) -> int`` as their default. Shared options and argument types live in
:mod:`agents.cli.options`; the library modules below hold no argparse.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from agents.cli.interrupts import SIGNALS_SEEN, Terminated, interrupted, on_signal

#: the sub-commands
COMMANDS = ("demo", "ppo", "pretrain", "finetune", "measure", "reproduce", "bundle", "cost")
#: what an interrupted command says about resuming: its work is kept (atomic checkpoints and outputs)
RESUME_HINTS: dict[str, str] = {
    "reproduce": "rerun the same command to resume (finished units are kept)",
    "pretrain": "rerun the same command to resume from its last checkpoint",
    "finetune": "rerun the same command to resume from its last checkpoint",
}


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``splitseq CMD: error: ... (see 'splitseq CMD --help')``, exit code 2."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``splitseq`` parser with every sub-command."""
    parser = Parser(
        prog="splitseq",
        description="SplitSeq: train transformer agents on the mod-17 sequence and measure their optimization (Op) "
        "and impact (Imp) in nats.",
    )
    from agents.cli import (  # heavy (torch, pandas): after main took Ctrl-C
        bundle,
        cost,
        demo,
        measure,
        ppo,
        reproduce,
        train,
    )

    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (demo, ppo, train, measure, reproduce, bundle, cost):  # the order --help lists them
        module.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``splitseq`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    Bad input is one line on stderr and exit code 2. Ctrl-C (SIGINT) and SIGTERM stop the command cleanly
    (workers included), print one line saying how to resume, and exit with 130 and 143. A file-system error
    (an unwritable or missing path, a full disk) is one line naming the path, exit code 2 (1 for a full disk
    or an I/O error).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    SIGNALS_SEEN.clear()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(sig) is not signal.SIG_IGN:  # a background job's ignored Ctrl-C stays ignored
                previous[sig] = signal.signal(sig, on_signal)
    command = next((a for a in argv if not a.startswith("-")), "")  # until the parser says
    try:
        args = build_parser().parse_args(argv)  # imports the commands: an interrupt here is handled too
        command = args.command
        return int(args.func(args) or 0)
    except KeyboardInterrupt as e:
        seen = interrupted() or (signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT)
        return _report_interrupt(command, seen)
    except Exception as e:
        if interrupted():  # the interrupt, turned into another error by the code it landed in
            return _report_interrupt(command, interrupted())
        if not isinstance(e, OSError):
            raise
        from agents.cli.options import describe_os_error, fail

        text, code = describe_os_error(e)
        return fail(command, text, code)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _report_interrupt(command: str, signum: int) -> int:
    """Print the one line of an interrupted ``command``; its exit code, ``128 + signum``."""
    hint = RESUME_HINTS.get(command)
    what = "terminated" if signum == signal.SIGTERM else "interrupted"
    name = f"splitseq {command}" if command in COMMANDS else "splitseq"
    print(f"{name}: {what}" + (f"; {hint}" if hint else ""), file=sys.stderr)
    return 128 + int(signum)


__all__ = ["Parser", "Terminated", "build_parser", "interrupted", "main"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
