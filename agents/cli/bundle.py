"""``splitseq bundle``: a finished sweep's results inputs and weights as a compact, committable bundle.

::

    splitseq bundle runs/full-s3 --out docs/results/full/seed-3      # make (or remake) a bundle
    splitseq bundle --verify docs/results/full/seed-*                 # check bundles against their manifests
    splitseq reproduce --merge docs/results/full/seed-* --out runs/full   # merge them into a finished sweep
"""

from __future__ import annotations

import argparse

from agents.cli.options import fail
from agents.pipeline.bundle import make_bundle, verify_bundle


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def _run(args: argparse.Namespace) -> int:
    """Make or verify bundles; ``0`` on success, ``2`` for bad input or a bundle that does not verify."""
    if args.verify:
        if args.sweep is not None or args.out is not None:
            return fail(
                "bundle", "--verify takes only bundle directories; drop the sweep directory and --out"
            )
        try:
            for d in args.verify:
                m = verify_bundle(d)
                print(f"{d}: intact, {len(m['files'])} files, {_mb(m['total_bytes'])}, seeds {m['seeds']}")
        except ValueError as e:
            return fail("bundle", e)
        return 0
    if args.sweep is None or args.out is None:
        return fail(
            "bundle", "give a finished sweep directory and --out BUNDLE_DIR (or --verify BUNDLE_DIR ...)"
        )
    try:
        m = make_bundle(args.sweep, args.out)
    except ValueError as e:
        return fail("bundle", e)
    weights = sum(e["size"] for f, e in m["files"].items() if f.endswith(".pt"))
    seeds = ", ".join(map(str, m["seeds"]))
    print(
        f"bundled seeds {seeds} of {args.sweep}: {len(m['files'])} files, {_mb(m['total_bytes'])} "
        f"(weights {_mb(weights)}) -> {args.out}/bundle.json"
    )
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``bundle``."""
    p = sub.add_parser(
        "bundle",
        help="pack a finished sweep's results inputs and weights into a compact bundle to commit",
        description="Write a compact bundle of a finished sweep (normally one seed of the full preset): "
        "sweep.json, the histories (gzipped), measures/*.csv, timings, runs.csv, the trainers' history CSVs "
        "and every checkpoint without optimizer state, with bundle.json listing each file's size and sha256. "
        "'splitseq reproduce --merge' takes bundles as well as sweep directories.",
    )
    p.add_argument("sweep", nargs="?", default=None, help="the finished sweep directory to bundle")
    p.add_argument(
        "--out", default=None, help="the bundle directory (new, empty, or a bundle of the same sweep)"
    )
    p.add_argument(
        "--verify",
        nargs="+",
        default=None,
        metavar="BUNDLE_DIR",
        help="check bundles instead: every file against its size and sha256 in bundle.json",
    )
    p.set_defaults(func=_run)
