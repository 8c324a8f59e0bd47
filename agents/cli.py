"""The ``splitseq`` command line: one sub-command per module listed in :data:`COMMAND_MODULES`.

Each listed module defines ``add_command(subparsers)``, which adds its sub-parser and sets
``func=callable(args) -> int`` as the parser default.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: modules that contribute a sub-command, in the order ``--help`` lists them
COMMAND_MODULES: tuple[str, ...] = ("seqenv.demo", "agents.sb3", "agents.commands", "agents.reproduce_cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="splitseq",
        description="SplitSeq: train transformer agents on the mod-17 sequence and measure their optimization (Op) "
        "and impact (Imp) in nats.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
