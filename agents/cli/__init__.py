"""The ``splitseq`` command line (also ``python -m agents``): one module per group of sub-commands.

Every sub-command module defines ``add_parsers(subparsers)``, which adds its parsers with
``func=callable(args) -> int`` as their default. Shared options and argument types live in
:mod:`agents.cli.options`; the library modules below hold no argparse.
"""

from __future__ import annotations

import argparse
import sys

from agents.cli import demo, measure, ppo, reproduce, train


def build_parser() -> argparse.ArgumentParser:
    """The ``splitseq`` parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="splitseq",
        description="SplitSeq: train transformer agents on the mod-17 sequence and measure their optimization (Op) "
        "and impact (Imp) in nats.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (demo, ppo, train, measure, reproduce):  # the order --help lists them
        module.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``splitseq`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


__all__ = ["build_parser", "main"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
