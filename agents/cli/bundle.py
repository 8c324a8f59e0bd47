"""``splitseq bundle``: a finished sweep's results inputs and weights as a compact, committable bundle.

::

    splitseq bundle runs/full-s3 --out docs/results/full/seed-3      # make (or remake) a bundle
    splitseq bundle --verify docs/results/full/seed-*                 # check bundles against their manifests
    splitseq reproduce --merge docs/results/full/seed-* --out runs/full   # merge them into a finished sweep

    # a seed that takes longer than a machine lives: carry it over in a partial bundle
    splitseq bundle runs/full-s3 --partial --out docs/results/full/seed-3    # commit it
    splitseq bundle --unpack docs/results/full/seed-3 --out runs/full-s3    # on the next machine, then
    splitseq reproduce --preset full --seeds 3 --out runs/full-s3           # goes on where it stopped
"""

from __future__ import annotations

import argparse

from agents.cli.options import fail
from agents.pipeline.bundle import make_bundle, verify_bundle
from agents.pipeline.merge import unpack_bundle


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def _run(args: argparse.Namespace) -> int:
    """Make, verify or unpack bundles; ``0`` on success, ``2`` for bad input or a bundle that does not
    verify."""
    if args.verify:
        if args.sweep is not None or args.out is not None or args.unpack or args.partial:
            return fail(
                "bundle",
                "--verify takes only bundle directories; drop the sweep directory, --out, "
                "--unpack and --partial",
            )
        try:
            for d in args.verify:
                m = verify_bundle(d, complete=False)
                left = m.get("units_left") or []
                kind = f"partial ({len(left)} units left)" if left else "complete"
                print(
                    f"{d}: intact, {kind}, {len(m['files'])} files, {_mb(m['total_bytes'])}, seeds {m['seeds']}"
                )
        except ValueError as e:
            return fail("bundle", e)
        return 0
    if args.unpack is not None:
        if args.sweep is not None or args.out is None or args.partial:
            return fail(
                "bundle", "--unpack BUNDLE_DIR takes --out SWEEP_DIR only (no sweep directory, no --partial)"
            )
        try:
            sweep = unpack_bundle(args.unpack, args.out)
        except ValueError as e:
            return fail("bundle", e)
        seeds = " ".join(map(str, sweep.seeds))
        print(
            f"unpacked {args.unpack} -> {args.out}; go on with: splitseq reproduce --preset {sweep.preset} "
            f"--seeds {seeds} --out {args.out} (with the settings it ran: {args.out}/sweep.json)"
        )
        return 0
    if args.sweep is None or args.out is None:
        return fail(
            "bundle", "give a finished sweep directory and --out BUNDLE_DIR (or --verify BUNDLE_DIR ...)"
        )
    try:
        m = make_bundle(args.sweep, args.out, partial=args.partial)
    except ValueError as e:
        return fail("bundle", e)
    weights = sum(e["size"] for f, e in m["files"].items() if f.endswith(".pt"))
    seeds = ", ".join(map(str, m["seeds"]))
    left = m["units_left"]
    kind = (
        f"a partial bundle ({len(left)} units left, {len(m['in_progress'])} in progress)"
        if left
        else "bundled"
    )
    print(
        f"{kind} seeds {seeds} of {args.sweep}: {len(m['files'])} files, {_mb(m['total_bytes'])} "
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
    p.add_argument(
        "--partial",
        action="store_true",
        help="bundle an unfinished sweep too: its finished units and the resumable checkpoints of trainers "
        "that stopped part way (merging refuses it; --unpack it on another machine and rerun the sweep)",
    )
    p.add_argument(
        "--unpack",
        default=None,
        metavar="BUNDLE_DIR",
        help="unpack a bundle (complete or partial) into the new sweep directory --out, to rerun or go on with",
    )
    p.set_defaults(func=_run)
