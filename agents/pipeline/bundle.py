"""Per-seed bundles: a finished sweep's results inputs and weights, compact enough to commit to git.

A bundle holds what ``results.csv``, the figures and the report are built from, in the sweep's own layout
(:mod:`~agents.pipeline.layout`): ``sweep.json``, the histories (``histories.npy.gz``: gzip of the exact
``histories.npy`` bytes), ``measures/*.csv``, ``timings/*.json``, ``timings.csv``, ``runs.csv``, the trainers'
``models/*/*.pt.history.csv`` and every pretrained and finetuned checkpoint (weights, config, meta and the
final train state's config, history and summary: no optimizer, random-generator or data-stream state). No
TensorBoard logs, figures, results table or report: :func:`~agents.pipeline.merge.merge_sweeps` rebuilds a
finished sweep from bundles and :func:`~agents.pipeline.sweep.run_sweep` reports on it without training or
measuring anything.

``bundle.json``, written last, lists every file with its size and sha256, the sweep's settings and the
commits involved. Git keeps no modification times, so a bundle is *finished* when its manifest verifies
(:func:`verify_bundle`), not by the file times a sweep directory goes by.

A *partial* bundle (``partial=True``) carries an unfinished sweep from one machine to the next: its finished
units as above, and each trainer still running with its whole resumable checkpoint (optimizer, random-generator
and data-stream state), so :func:`~agents.pipeline.merge.unpack_bundle` and a rerun of the sweep go on where it
stopped. Merging refuses partial bundles.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import time
import zlib
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from agents.checkpoint import atomic_write, load_checkpoint
from agents.pipeline.config import SweepConfig
from agents.pipeline.layout import HISTORIES_FILE, RUNS_FILE, SWEEP_FILE, TIMINGS_FILE, timing_path
from agents.pipeline.plan import Unit, checkpoint_finished, plan, units_to_run
from agents.pipeline.records import git_commit, package_version
from agents.training import history_path

BUNDLE_FILE = "bundle.json"
BUNDLE_FORMAT = "splitseq-bundle/1"
#: the histories in a bundle: gzip of ``histories.npy`` (1.3 MB of int64 tokens 0-15 become ~0.1 MB)
BUNDLED_HISTORIES = HISTORIES_FILE + ".gz"
#: what a finished trainer's checkpoint keeps of its train state (all a finished run needs; no resume state)
FINISHED_STATE_KEYS: tuple[str, ...] = ("config", "step", "elapsed", "cpu", "history", "finished", "summary")


class BundleError(ValueError):
    """A sweep cannot be bundled, or a directory is not an intact bundle."""


def is_bundle(root: str | os.PathLike) -> bool:
    """Whether ``root`` holds a bundle (a ``bundle.json``), intact or not."""
    return (Path(root) / BUNDLE_FILE).is_file()


def bundle_path(unit: Unit) -> str:
    """Where a unit's output goes in a bundle, relative to it (the sweep's path, the histories gzipped)."""
    return BUNDLED_HISTORIES if unit.kind == "histories" else unit.output


def unit_files(unit: Unit) -> list[str]:
    """A unit's files in a sweep directory, relative to it: its output, its timing record and, for a
    trainer, the history CSV beside its checkpoint."""
    files = [unit.output, str(timing_path(Path(), unit.name))]
    if unit.kind in ("pretrain", "finetune"):
        files.append(str(history_path(unit.output)))
    return files


def sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, in hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)  # no time stamp: the same histories, the same bytes


def _weights_only(src: Path, dst: Path) -> bool:
    """Write the finished checkpoint ``src`` to ``dst`` without resume state; returns whether anything was
    dropped. A checkpoint that holds nothing more is copied byte for byte (the trainers' final checkpoints
    already drop the optimizer)."""
    ckpt = load_checkpoint(src)
    state = ckpt.get("train_state")
    if not (isinstance(state, dict) and state.get("finished")):
        raise BundleError(f"{src} is not a finished checkpoint; finish its sweep before bundling it")
    if set(state) <= set(FINISHED_STATE_KEYS):
        atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))
        return False
    slim = {**ckpt, "train_state": {k: state[k] for k in FINISHED_STATE_KEYS if k in state}}
    atomic_write(dst, lambda tmp: torch.save(slim, tmp))
    again = load_checkpoint(dst)  # the weights must come back bit for bit: the same outputs
    same = again["config"] == ckpt["config"] and again["model"].keys() == ckpt["model"].keys()
    if not (same and all(torch.equal(again["model"][k], v) for k, v in ckpt["model"].items())):
        raise BundleError(f"{dst}: the bundled weights differ from {src}'s")
    return True


def _check_out(out: Path, sweep: SweepConfig) -> list[Path]:
    """Refuse an ``out`` that holds anything but an earlier bundle of the same sweep; returns that bundle's
    files (to be replaced)."""
    if not out.exists():
        return []
    if not out.is_dir():
        raise BundleError(f"--out {out} is a file; expected a new or empty directory for the bundle")
    present = sorted(p for p in out.rglob("*") if p.is_file())
    if not present:
        return []
    if not is_bundle(out):
        raise BundleError(
            f"{out} already holds files ({present[0].relative_to(out)}, ...) and is not a bundle; choose a new "
            "or empty directory"
        )
    try:
        old = json.loads((out / BUNDLE_FILE).read_text())
        same = SweepConfig.from_dict(old["sweep"]) == sweep
        listed = {out / rel for rel in old["files"]} | {out / BUNDLE_FILE}
    except (ValueError, KeyError, TypeError) as e:
        raise BundleError(
            f"{out}/{BUNDLE_FILE} is unreadable ({e}); choose a new or empty directory"
        ) from None
    if not same:
        raise BundleError(f"{out} holds a bundle of another sweep; choose a new or empty directory")
    unlisted = [p for p in present if p not in listed]
    if unlisted:
        raise BundleError(
            f"{out} holds a bundle of this sweep and files it does not list ({unlisted[0].relative_to(out)}, "
            "...); move them away or choose a new directory"
        )
    return present


def _in_progress(root: Path, left: list[Unit]) -> list[Unit]:
    """The trainers among the unfinished units ``left`` that stopped part way (an unfinished checkpoint) and
    whose inputs are finished: resuming them elsewhere goes on from their checkpoint."""
    names = {u.name for u in left}
    return [
        u
        for u in left
        if u.kind in ("pretrain", "finetune")
        and (root / u.output).is_file()
        and not checkpoint_finished(root / u.output)
        and not any(d in names for d in u.deps)
    ]


def make_bundle(
    sweep_dir: str | os.PathLike, out_dir: str | os.PathLike, partial: bool = False
) -> dict[str, Any]:
    """Write a bundle of the finished sweep in ``sweep_dir`` into ``out_dir``; returns its manifest.

    A sweep of several seeds is bundled whole (one bundle per seed is the intended use: each seed committed
    as soon as it finishes). Rerunning over an earlier bundle of the same sweep replaces it.

    :param sweep_dir: a finished sweep directory (its report aside); it is only read.
    :param out_dir: the bundle directory: new, empty, or an earlier bundle of the same sweep.
    :param partial: allow an unfinished sweep: bundle its finished units and the resumable checkpoints of the
        trainers that stopped part way (``manifest["complete"]`` says which kind of bundle it is).
    :raises BundleError: the sweep is unfinished (without ``partial``) or not a sweep, or ``out_dir`` holds
        something else.
    """
    root, out = Path(sweep_dir).resolve(), Path(out_dir).resolve()
    if is_bundle(root):
        raise BundleError(f"{root} is a bundle already; merge it with 'splitseq reproduce --merge'")
    if not (root / SWEEP_FILE).is_file():
        raise BundleError(f"{root} is not a sweep directory (no {SWEEP_FILE})")
    if out == root or root in out.parents:
        raise BundleError(f"--out {out} is inside the sweep directory {root}; bundle it elsewhere")
    sweep = SweepConfig.from_dict(json.loads((root / SWEEP_FILE).read_text()))
    units = [u for u in plan(sweep) if u.kind != "report"]
    left = units_to_run(root, units)
    if left and not partial:
        raise BundleError(
            f"{root} is not finished: {len(left)} units left (first: {left[0].name}); rerun its sweep to "
            "finish it, then bundle it (or bundle it with --partial to go on elsewhere)"
        )
    running = _in_progress(root, left)
    old = _check_out(out, sweep)
    for p in sorted(old, key=lambda p: p.name != BUNDLE_FILE):
        p.unlink()  # the manifest first: a bundle half rewritten has none, so it is no bundle
    out.mkdir(parents=True, exist_ok=True)
    copies = [SWEEP_FILE] + [f for f in (RUNS_FILE, TIMINGS_FILE) if (root / f).is_file()]
    stripped = []
    for u in units:
        if u in left:
            continue
        for rel in unit_files(u):
            src = root / rel
            if rel == u.output and u.kind == "histories":
                data = _gzip(src.read_bytes())
                atomic_write(out / BUNDLED_HISTORIES, lambda tmp, d=data: Path(tmp).write_bytes(d))
            elif rel == u.output and u.kind in ("pretrain", "finetune"):
                if _weights_only(src, out / rel):
                    stripped.append(rel)
            elif src.is_file():
                copies.append(rel)
    for u in running:  # the whole checkpoint: resuming needs its optimizer and generator states
        copies += [rel for rel in (u.output, str(history_path(u.output))) if (root / rel).is_file()]
    for rel in copies:
        atomic_write(out / rel, lambda tmp, s=root / rel: shutil.copyfile(s, tmp))
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != BUNDLE_FILE)
    runs = pd.read_csv(root / RUNS_FILE) if (root / RUNS_FILE).is_file() else None
    histories = root / HISTORIES_FILE
    manifest = {
        "format": BUNDLE_FORMAT,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "commit": git_commit(),
        "version": package_version(),
        "sweep_commits": sorted(set(runs["commit"].dropna().astype(str))) if runs is not None else [],
        "source": str(root),
        "seeds": list(sweep.seeds),
        "sweep": sweep.to_dict(),
        "complete": not left,
        "units_left": [u.name for u in left],
        "in_progress": [u.output for u in running],
        "histories_sha256": sha256(histories) if units[0] not in left else None,
        "weights_stripped": stripped,
        "total_bytes": sum((out / f).stat().st_size for f in files),
        "files": {f: {"size": (out / f).stat().st_size, "sha256": sha256(out / f)} for f in files},
    }
    text = json.dumps(manifest, indent=1) + "\n"
    atomic_write(out / BUNDLE_FILE, lambda tmp: Path(tmp).write_text(text))
    return manifest


def finished_units(manifest: dict[str, Any], sweep: SweepConfig) -> list[Unit]:
    """The units (report aside, in plan order) whose outputs a bundle holds finished: all of them in a
    complete bundle; in a partial one, those neither left nor in progress."""
    left = set(manifest.get("units_left", ()))
    return [u for u in plan(sweep) if u.kind != "report" and u.name not in left]


def read_manifest(root: str | os.PathLike) -> tuple[dict[str, Any], SweepConfig]:
    """A bundle's manifest and settings, read but not verified (:func:`verify_bundle` verifies).

    :raises BundleError: ``root`` has no readable ``bundle.json`` of this format.
    """
    path = Path(root) / BUNDLE_FILE
    if not path.is_file():
        raise BundleError(f"{Path(root)} is not a bundle (no {BUNDLE_FILE})")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as e:
        raise BundleError(f"{path} is not a readable bundle manifest (invalid JSON: {e})") from None
    fmt = manifest.get("format") if isinstance(manifest, dict) else None
    if fmt != BUNDLE_FORMAT:
        raise BundleError(f"{path}: format {fmt!r}, expected {BUNDLE_FORMAT!r}")
    try:
        sweep = SweepConfig.from_dict(manifest["sweep"])
    except (ValueError, KeyError, TypeError) as e:
        raise BundleError(f"{path} holds no valid sweep settings ({type(e).__name__}: {e})") from None
    files = manifest.get("files")
    entries_ok = isinstance(files, dict) and all(
        isinstance(e, dict) and isinstance(e.get("size"), int) and isinstance(e.get("sha256"), str)
        for e in files.values()
    )
    if not entries_ok:
        raise BundleError(f"{path}: 'files' must map each path to its size and sha256")
    outside = [rel for rel in files if Path(rel).is_absolute() or ".." in Path(rel).parts]
    if outside:
        raise BundleError(f"{path} lists {outside[0]!r}, a path outside the bundle")
    return manifest, sweep


def verify_bundle(root: str | os.PathLike, complete: bool = True) -> dict[str, Any]:
    """Check that ``root`` is an intact, complete bundle and return its manifest.

    Intact: every file ``bundle.json`` lists is there with its size and sha256, and the gzipped histories
    unpack to the recorded ``histories.npy``. Complete: it holds every unit's output of its sweep (the report
    aside). That is what *finished* means for a bundle.

    :param complete: False accepts a partial bundle (intact, holding the outputs of the units its manifest
        counts as finished).
    :raises BundleError: naming the first file that is missing, changed or corrupted, or (``complete``) a
        partial bundle.
    """
    root = Path(root).resolve()
    manifest, sweep = read_manifest(root)
    files = manifest["files"]
    for rel, entry in files.items():
        f = root / rel
        if not f.is_file():
            raise BundleError(f"{root}: {rel} is missing (bundle.json lists it)")
        size = f.stat().st_size
        if size != entry["size"]:
            raise BundleError(
                f"{root}: {rel} has {size} bytes, bundle.json says {entry['size']}; the file was changed or "
                "truncated since the bundle was made"
            )
        if sha256(f) != entry["sha256"]:
            raise BundleError(
                f"{root}: {rel} does not match its sha256 in bundle.json; the file was changed or corrupted "
                "since the bundle was made"
            )
    left = manifest.get("units_left") or []
    if complete and left:
        raise BundleError(
            f"{root} is a partial bundle of an unfinished sweep ({len(left)} units left, first: {left[0]}); "
            "unpack it ('splitseq bundle --unpack'), finish the sweep and bundle it again"
        )
    missing = [bundle_path(u) for u in finished_units(manifest, sweep) if bundle_path(u) not in files]
    missing += [] if SWEEP_FILE in files else [SWEEP_FILE]
    if missing:
        raise BundleError(f"{root} is an incomplete bundle: it lacks {missing[0]} ({len(missing)} files)")
    saved = SweepConfig.from_dict(json.loads((root / SWEEP_FILE).read_text()))
    if saved != sweep:
        raise BundleError(f"{root}: {SWEEP_FILE} and {BUNDLE_FILE} hold different settings")
    if BUNDLED_HISTORIES in files and (
        hashlib.sha256(bundle_histories(root)).hexdigest() != manifest.get("histories_sha256")
    ):
        raise BundleError(f"{root}: {BUNDLED_HISTORIES} does not unpack to the histories bundle.json records")
    return manifest


def bundle_histories(root: str | os.PathLike) -> bytes:
    """The exact bytes of the bundled sweep's ``histories.npy``."""
    try:
        return gzip.decompress((Path(root) / BUNDLED_HISTORIES).read_bytes())
    except (OSError, EOFError, zlib.error) as e:
        raise BundleError(f"{Path(root) / BUNDLED_HISTORIES} is not a readable gzip file ({e})") from None
