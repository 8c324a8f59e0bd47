"""The sweep as a graph of units: each unit writes exactly one file, and is finished when that file exists,
is final, and is not older than the files it was made from."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from agents.checkpoint import load_checkpoint
from agents.pipeline.config import SIZE_ORDER, SweepConfig
from agents.pipeline.layout import (
    HISTORIES_FILE,
    REPORT_FILE,
    checkpoint_path,
    measure_path,
    model_name,
    run_id,
)

#: the kinds of unit, in the order a sweep needs them
UNIT_KINDS: tuple[str, ...] = ("histories", "pretrain", "finetune", "measure", "reference", "report")


@dataclass(frozen=True)
class Unit:
    """One piece of work that writes one file (``output``, relative to the sweep directory).

    :param name: unique id, e.g. ``finetune:small-s3-ngood4``.
    :param kind: one of :data:`UNIT_KINDS`.
    :param output: the file it writes, relative to the sweep directory.
    :param deps: names of the units whose outputs it reads.
    :param size: model size, for training and measurement units.
    :param seed: training seed.
    :param task: RL task of a finetuning (or ``""``).
    """

    name: str
    kind: str
    output: str
    deps: tuple[str, ...] = ()
    size: str = ""
    seed: int = -1
    task: str = ""

    @property
    def model(self) -> str:
        """The model a training or measurement unit is about (``tiny-s0-ngood4``, ``tiny-s0-pretrained``)."""
        return model_name(self.size, self.seed, self.task)


def plan(sweep: SweepConfig) -> list[Unit]:
    """All units of a sweep in a dependency order (every unit after the units it needs)."""
    units = [Unit("histories", "histories", HISTORIES_FILE)]
    measures_ = []
    # larger models first: they take longest, so a pool finishes sooner when they start early
    sizes = sorted(sweep.sizes, key=lambda s: -SIZE_ORDER.index(s))
    for size in sizes:
        for seed in sweep.seeds:
            rid = run_id(size, seed)
            pre = Unit(f"pretrain:{rid}", "pretrain", checkpoint_path(size, seed), (), size, seed)
            units.append(pre)
            name = model_name(size, seed)
            measures_.append(
                Unit(f"measure:{name}", "measure", measure_path(name), (pre.name, "histories"), size, seed)
            )
            for task in sweep.tasks:
                ft = Unit(
                    f"finetune:{rid}-{task}",
                    "finetune",
                    checkpoint_path(size, seed, task),
                    (pre.name,),
                    size,
                    seed,
                    task,
                )
                units.append(ft)
                name = model_name(size, seed, task)
                measures_.append(
                    Unit(
                        f"measure:{name}",
                        "measure",
                        measure_path(name),
                        (ft.name, "histories"),
                        size,
                        seed,
                        task,
                    )
                )
    measures_.insert(0, Unit("measure:reference", "reference", measure_path("reference"), ("histories",)))
    units += measures_
    units.append(Unit("report", "report", REPORT_FILE, tuple(u.name for u in measures_)))
    return units


def checkpoint_finished(path: str | os.PathLike) -> bool:
    """Whether a trainer's checkpoint at ``path`` is its final one (the trainers checkpoint into the same
    file while they run, with ``train_state["finished"]`` set only at the end)."""
    state = load_checkpoint(path).get("train_state")
    return isinstance(state, dict) and bool(state.get("finished"))


def finished_mtime(root: Path, unit: Unit) -> int | None:
    """Modification time (ns) of a unit's output if the unit is finished, else ``None``."""
    path = root / unit.output
    try:
        mtime = path.stat().st_mtime_ns
    except FileNotFoundError:
        return None
    if unit.kind in ("pretrain", "finetune") and not checkpoint_finished(path):
        return None
    return mtime


def units_to_run(root: Path, units: list[Unit]) -> list[Unit]:
    """The units that are not finished: output missing or unfinished, older than an input, or an input
    will be redone. ``units`` must be in dependency order (as :func:`plan` gives them)."""
    todo: set[str] = set()
    mtimes = {u.name: finished_mtime(root, u) for u in units}
    for u in units:
        mine = mtimes[u.name]
        if mine is None or any(d in todo for d in u.deps) or any((mtimes[d] or 0) > mine for d in u.deps):
            todo.add(u.name)
    return [u for u in units if u.name in todo]
