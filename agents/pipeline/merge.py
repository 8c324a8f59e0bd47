"""Combine finished sweeps that differ only in their seeds (run on separate machines) into one sweep."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd

from agents.checkpoint import atomic_write
from agents.pipeline.config import SweepConfig
from agents.pipeline.layout import HISTORIES_FILE, RUNS_FILE, SWEEP_FILE, tensorboard_dir, timing_path
from agents.pipeline.plan import plan, units_to_run
from agents.pipeline.records import save_csv
from agents.pipeline.sweep import SweepLock, check_sweep_file
from agents.training import history_path


def merge_sweeps(
    out: str | os.PathLike, sources: list[str | os.PathLike], preset: str | None = None
) -> SweepConfig:
    """Combine finished sweeps that differ only in their seeds into one sweep directory ``out``.

    For seeds run on separate machines without a shared file system (``--seeds 0`` on one, ``--seeds 1`` on
    another, ...): every source must hold a finished sweep (its report aside) with the same settings but
    disjoint seeds, measured on byte-identical histories. Their files are copied into ``out`` with their
    modification times, so the merged directory is a finished sweep of all the seeds; ``runs.csv`` keeps
    every source's invocations (with a ``source`` column) and the timing records come along. The report is
    not built here: :func:`run_sweep` on the returned config builds it and runs nothing else.

    :param out: the merged sweep directory (new, or a previous merge of the same sources).
    :param sources: sweep directories to merge (at least two).
    :param preset: if given, the preset the sources must have run.
    :return: the merged :class:`SweepConfig` (the sources' settings, every seed).
    """
    roots = [Path(src).resolve() for src in sources]
    if len(roots) < 2:
        raise ValueError(f"merging needs at least two sweep directories, got {len(roots)}")
    configs = []
    for r in roots:
        if not (r / SWEEP_FILE).is_file():
            raise ValueError(f"{r} is not a sweep directory (no sweep.json)")
        configs.append(SweepConfig.from_dict(json.loads((r / SWEEP_FILE).read_text())))
    base = configs[0].to_dict()
    if preset is not None and preset != base["preset"]:
        raise ValueError(f"preset {preset!r} asked for, but {roots[0]} ran the {base['preset']!r} preset")
    for r, c in zip(roots[1:], configs[1:]):
        diff = sorted(k for k, v in c.to_dict().items() if k != "seeds" and v != base[k])
        if diff:
            changes = ", ".join(f"{k}: {base[k]!r} vs {c.to_dict()[k]!r}" for k in diff)
            raise ValueError(f"{r} differs from {roots[0]} in more than its seeds ({changes})")
    seen: dict[int, Path] = {}
    for r, c in zip(roots, configs):
        for seed in c.seeds:
            if seed in seen:
                raise ValueError(
                    f"seed {seed} is in both {seen[seed]} and {r}; merged sweeps must not share seeds"
                )
            seen[seed] = r
    for r, c in zip(roots, configs):
        left = [u.name for u in units_to_run(r, plan(c)) if u.kind != "report"]
        if left:
            raise ValueError(
                f"{r} is not finished: {len(left)} units left (first: {left[0]}); rerun its sweep to finish it"
            )
    histories = [(r / HISTORIES_FILE).read_bytes() for r in roots]
    for r, h in zip(roots[1:], histories[1:]):
        if h != histories[0]:
            raise ValueError(f"{r}/histories.npy differs from {roots[0]}/histories.npy")
    merged = SweepConfig.from_dict({**base, "seeds": sorted(seen)})
    root = Path(out).resolve()
    if root in roots:
        raise ValueError(f"--out {root} is one of the sources; merge into a new directory")
    root.mkdir(parents=True, exist_ok=True)
    lock = SweepLock(root)
    try:
        check_sweep_file(root, merged)
        # shared units from the source with the oldest histories, so every copied measurement is newer
        first = min(range(len(roots)), key=lambda i: (roots[i] / HISTORIES_FILE).stat().st_mtime_ns)
        runs = []
        for i, (r, c) in enumerate(zip(roots, configs)):
            for u in plan(c):
                if u.kind == "report" or (u.kind in ("histories", "reference") and i != first):
                    continue
                files = [Path(u.output), timing_path(Path(), u.name)]
                if u.kind in ("pretrain", "finetune"):
                    files += [history_path(Path(u.output))]
                for f in files:
                    if (
                        r / f
                    ).is_file():  # copy2 keeps the modification time, which says the unit is finished
                        atomic_write(root / f, lambda tmp, src=r / f: shutil.copy2(src, tmp))
                if u.kind in ("pretrain", "finetune") and tensorboard_dir(r, u.model).is_dir():
                    shutil.copytree(
                        tensorboard_dir(r, u.model), tensorboard_dir(root, u.model), dirs_exist_ok=True
                    )
            if (r / RUNS_FILE).is_file():
                runs.append(pd.read_csv(r / RUNS_FILE).assign(source=str(r)))
        if runs:
            save_csv(pd.concat(runs, ignore_index=True), root / RUNS_FILE)
    finally:
        lock.release()
    return merged
