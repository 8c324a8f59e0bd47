"""Combine finished sweeps that differ only in their seeds and sizes (run on separate machines) into one
sweep; the sources may be sweep directories or bundles of them (:mod:`~agents.pipeline.bundle`), mixed
freely. Unpack one bundle, finished or partial, into a sweep directory to go on with."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from agents.checkpoint import atomic_write
from agents.pipeline.bundle import (
    BUNDLED_HISTORIES,
    BundleError,
    bundle_histories,
    finished_units,
    is_bundle,
    read_manifest,
    unit_files,
    verify_bundle,
)
from agents.pipeline.config import SIZE_ORDER, SweepConfig
from agents.pipeline.layout import HISTORIES_FILE, REPORT_FILE, RUNS_FILE, SWEEP_FILE, tensorboard_dir
from agents.pipeline.plan import Unit, plan, units_to_run
from agents.pipeline.records import save_csv
from agents.pipeline.sweep import SweepLock, check_sweep_file

#: the modification times the merged files get, one unit after another in dependency order (see
#: :func:`date_in_order`): far enough apart for any file system that keeps nanoseconds or milliseconds
TIME_STEP_NS = 1_000_000


@dataclass(frozen=True)
class _Source:
    """One sweep to merge: a sweep directory, or a bundle (``files``: what its manifest lists)."""

    root: Path
    config: SweepConfig
    files: frozenset[str] | None = None

    @property
    def bundle(self) -> bool:
        return self.files is not None

    def has(self, rel: str) -> bool:
        return (rel in self.files) if self.files is not None else (self.root / rel).is_file()

    def histories(self) -> bytes:
        return bundle_histories(self.root) if self.bundle else (self.root / HISTORIES_FILE).read_bytes()


def _open(root: Path) -> _Source:
    if is_bundle(root):
        manifest, config = read_manifest(root)
        return _Source(root, config, frozenset(manifest["files"]))
    if not (root / SWEEP_FILE).is_file():
        raise ValueError(f"{root} is not a sweep directory (no sweep.json) nor a bundle (no bundle.json)")
    return _Source(root, SweepConfig.from_dict(json.loads((root / SWEEP_FILE).read_text())))


def _check_finished(src: _Source) -> None:
    """A sweep directory: every unit finished by its files' times; a bundle: its manifest verifies."""
    if src.bundle:
        verify_bundle(src.root)
        return
    left = [u.name for u in units_to_run(src.root, plan(src.config)) if u.kind != "report"]
    if left:
        raise ValueError(
            f"{src.root} is not finished: {len(left)} units left (first: {left[0]}); rerun its sweep to "
            "finish it"
        )


#: the settings in which merged sweeps may differ: each source runs some sizes for some seeds
_MAY_DIFFER = ("seeds", "sizes", "finetune_steps")


def _grid(srcs: list[_Source]) -> tuple[list[str], list[int], dict[str, dict[str, int]]]:
    """The merged sweep's sizes (in :data:`SIZE_ORDER`), seeds (sorted) and finetuning budgets, checking that
    the sources' (size, seed) cells are disjoint and fill that grid, and that a size's budgets agree."""
    seen: dict[tuple[str, int], Path] = {}
    steps: dict[str, tuple[dict[str, int], Path]] = {}
    for s in srcs:
        for size in s.config.sizes:
            mine = s.config.finetune_steps[size]
            if size in steps and steps[size][0] != mine:
                raise ValueError(
                    f"{s.root} finetunes {size} for {mine} steps, {steps[size][1]} for {steps[size][0]}: "
                    "the sizes of merged sweeps must run the same budgets"
                )
            steps[size] = (mine, s.root)
            for seed in s.config.seeds:
                if (size, seed) in seen:
                    raise ValueError(
                        f"{size} seed {seed} is in both {seen[size, seed]} and {s.root}; merged sweeps must not "
                        "share seeds of a size"
                    )
                seen[size, seed] = s.root
    sizes = [size for size in SIZE_ORDER if size in steps]
    seeds = sorted({seed for _, seed in seen})
    holes = [(size, seed) for size in sizes for seed in seeds if (size, seed) not in seen]
    if holes:
        raise ValueError(
            f"the sweeps do not fill the grid of sizes {sizes} x seeds {seeds}: none has {holes[0][0]} seed "
            f"{holes[0][1]} ({len(holes)} missing); merge sweeps that together run every size for every seed"
        )
    return sizes, seeds, {size: steps[size][0] for size in sizes}


def date_in_order(root: Path, units: list[Unit]) -> None:
    """Give the files of ``units`` (in dependency order) modification times one :data:`TIME_STEP_NS` apart,
    in that order and all in the past, so :func:`~agents.pipeline.plan.units_to_run` sees every unit as no
    older than its inputs: finished. Copies lose their times (git keeps none), so the merged sweep is
    dated by its plan rather than by its sources."""
    base = time.time_ns() - (len(units) + 1) * TIME_STEP_NS
    for i, u in enumerate(units):
        t = base + i * TIME_STEP_NS
        for rel in unit_files(u):
            if (root / rel).is_file():
                os.utime(root / rel, ns=(t, t))


def merge_sweeps(
    out: str | os.PathLike, sources: list[str | os.PathLike], preset: str | None = None
) -> SweepConfig:
    """Combine finished sweeps that differ only in their seeds and sizes into one sweep directory ``out``.

    For seeds run on separate machines without a shared file system (``--seeds 0`` on one, ``--seeds 1`` on
    another, ...), or sizes of a seed run apart (``--sizes tiny small medium`` and ``--sizes large``): every
    source must hold a finished sweep (its report aside) with the same settings but its own (size, seed)
    cells, together every size of the merge for every seed of it, each size at the same finetuning budgets,
    measured on byte-identical histories. A source is a sweep directory (finished: every
    unit's file is there and no older than its inputs) or a bundle (:func:`~agents.pipeline.bundle.make_bundle`;
    finished: its manifest verifies, every file's size and sha256). Their files are copied into ``out`` and
    dated in dependency order (:func:`date_in_order`), so the merged directory is a finished sweep of all the
    seeds; ``runs.csv`` keeps every source's invocations (with a ``source`` column) and the timing records
    come along. The report is not built here: :func:`run_sweep` on the returned config builds it and runs
    nothing else.

    :param out: the merged sweep directory (new, or a previous merge of the same sources).
    :param sources: sweep directories or bundles to merge: at least two, or one bundle (to unpack it).
    :param preset: if given, the preset the sources must have run.
    :return: the merged :class:`SweepConfig` (the sources' settings, every size and seed).
    """
    roots = [Path(src).resolve() for src in sources]
    if len(roots) < 2 and not (len(roots) == 1 and is_bundle(roots[0])):
        raise ValueError(
            f"merging needs at least two sweep directories or bundles (or one bundle, to unpack it), got "
            f"{len(roots)}"
        )
    srcs = [_open(r) for r in roots]
    base = srcs[0].config.to_dict()
    if preset is not None and preset != base["preset"]:
        raise ValueError(f"preset {preset!r} asked for, but {roots[0]} ran the {base['preset']!r} preset")
    for s in srcs[1:]:
        mine = s.config.to_dict()
        diff = sorted(k for k, v in mine.items() if k not in _MAY_DIFFER and v != base[k])
        if diff:
            changes = ", ".join(f"{k}: {base[k]!r} vs {mine[k]!r}" for k in diff)
            raise ValueError(f"{s.root} differs from {roots[0]} in more than its seeds and sizes ({changes})")
    sizes, seeds, steps = _grid(srcs)
    for s in srcs:
        _check_finished(s)
    histories = [s.histories() for s in srcs]
    for s, h in zip(srcs[1:], histories[1:]):
        if h != histories[0]:
            raise ValueError(f"{s.root}'s histories.npy differs from {roots[0]}'s")
    merged = SweepConfig.from_dict({**base, "sizes": sizes, "seeds": seeds, "finetune_steps": steps})
    root = Path(out).resolve()
    if root in roots:
        raise ValueError(f"--out {root} is one of the sources; merge into a new directory")
    root.mkdir(parents=True, exist_ok=True)
    lock = SweepLock(root)
    try:
        check_sweep_file(root, merged)
        runs = []
        for i, s in enumerate(srcs):
            for u in plan(s.config):
                # the shared units (histories, reference policies) from the first source
                if u.kind == "report" or (u.kind in ("histories", "reference") and i > 0):
                    continue
                for rel in unit_files(u):
                    if u.kind == "histories" and rel == u.output:
                        atomic_write(root / rel, lambda tmp: Path(tmp).write_bytes(histories[0]))
                    elif s.has(rel):
                        atomic_write(root / rel, lambda tmp, f=s.root / rel: shutil.copyfile(f, tmp))
                if u.kind in ("pretrain", "finetune") and tensorboard_dir(s.root, u.model).is_dir():
                    shutil.copytree(
                        tensorboard_dir(s.root, u.model), tensorboard_dir(root, u.model), dirs_exist_ok=True
                    )
            if s.has(RUNS_FILE):
                runs.append(pd.read_csv(s.root / RUNS_FILE).assign(source=str(s.root)))
        if runs:
            save_csv(pd.concat(runs, ignore_index=True), root / RUNS_FILE)
        date_in_order(root, [u for u in plan(merged) if u.kind != "report"])
        (root / REPORT_FILE).unlink(missing_ok=True)  # a previous merge's report: rebuilt from these files
    finally:
        lock.release()
    return merged


def unpack_bundle(bundle: str | os.PathLike, out: str | os.PathLike) -> SweepConfig:
    """Unpack one bundle, complete or partial, into the sweep directory ``out`` and return its settings.

    Every file the bundle lists is copied (the histories unzipped) and the finished units' files are dated in
    dependency order (:func:`date_in_order`), so rerunning the sweep (``run_sweep(out, config)``) runs only
    what the bundle lacks; a trainer that stopped part way resumes from its checkpoint. This carries a seed's
    sweep across machines that keep no files: run it, bundle it with ``partial=True`` and commit, unpack it
    on the next machine and run it again.

    :param bundle: the bundle directory (its manifest must verify: every file's size and sha256).
    :param out: the sweep directory to create: new or empty.
    :raises BundleError: the bundle does not verify, or ``out`` holds files.
    """
    src, root = Path(bundle).resolve(), Path(out).resolve()
    manifest = verify_bundle(src, complete=False)
    sweep = SweepConfig.from_dict(manifest["sweep"])
    if root.is_file() or (root.is_dir() and any(root.iterdir())):
        raise BundleError(f"--out {root} is not empty; unpack into a new or empty directory")
    root.mkdir(parents=True, exist_ok=True)
    for rel in manifest["files"]:
        if rel == BUNDLED_HISTORIES:
            data = bundle_histories(src)
            atomic_write(root / HISTORIES_FILE, lambda tmp, d=data: Path(tmp).write_bytes(d))
        else:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            atomic_write(root / rel, lambda tmp, f=src / rel: shutil.copyfile(f, tmp))
    date_in_order(root, finished_units(manifest, sweep))
    return sweep
