"""The body of each kind of unit, and :func:`execute`, which runs one unit in whatever process a backend
chose and records its wall time."""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.checkpoint import atomic_write, load_checkpoint
from agents.finetune import FinetuneConfig, finetune
from agents.pipeline.config import SweepConfig
from agents.pipeline.layout import checkpoint_path, tensorboard_dir
from agents.pipeline.measure import measure_model, measure_references
from agents.pipeline.plan import Unit, plan
from agents.pipeline.records import save_csv, write_timing
from agents.pipeline.report import build as build_report
from agents.pretrain import PretrainConfig, pretrain
from agents.runtime import device_name, resolve_device
from seqenv.sequence import natural_histories


def _scaled(value: int, scale: float, low: int = 1) -> int:
    return max(low, round(value * scale))


def scale_steps(cfg: Any, k: float) -> Any:
    """``cfg`` with every step count times ``k``; below ``k = 1`` the trainers' held-out evaluations are also
    thinned (at most about 10 per run, on at least 1024 examples) so a smoke test is not all evaluation."""
    if k == 1.0:
        return cfg
    steps = _scaled(cfg.steps, k)
    changes = {
        "steps": steps,
        "warmup_steps": _scaled(cfg.warmup_steps, k, 0),
        "eval_every": max(_scaled(cfg.eval_every, k), math.ceil(steps / 10)),
        "checkpoint_every": _scaled(cfg.checkpoint_every, k, 0),
    }
    if k < 1.0:
        changes["eval_samples"] = max(1024, 2 * round(cfg.eval_samples * k / 2))
    return dataclasses.replace(cfg, **changes)


def pretrain_config(sweep: SweepConfig, size: str, seed: int) -> PretrainConfig:
    """The config of one pretraining: the agents' recommended config for the size and the sweep's budget
    (:meth:`PretrainConfig.preset`), every step count times ``steps_scale``."""
    # every world model but the post's also pretrains on counterfactual contexts (uniform actions)
    world = "natural" if sweep.world_model == "natural" else "counterfactual"
    cfg = PretrainConfig.preset(
        size,
        seed=seed,
        budget=sweep.budget,
        world_model=world,
        device=sweep.device,
        precision=sweep.precision,
    )
    return scale_steps(cfg, sweep.steps_scale)


def finetune_config(sweep: SweepConfig, size: str, seed: int, task: str) -> FinetuneConfig:
    """The config of one finetuning with the sweep's method (default the post's positive-only): the agents'
    recommended config for the method, size and budget (:meth:`FinetuneConfig.preset`) at the sweep's own
    ``finetune_steps``, every step count times ``steps_scale``."""
    cfg = FinetuneConfig.preset(
        size,
        task=task,
        method=sweep.method,
        seed=seed,
        budget=sweep.budget,
        steps=sweep.finetune_steps[size][task],
        world_model=sweep.world_model,
        device=sweep.device,
        precision=sweep.precision,
    )
    return scale_steps(cfg, sweep.steps_scale)


# ------------------------------------------------------------------------------------------------ bodies
def _run_histories(root: Path, unit: Unit, sweep: SweepConfig) -> None:
    h = natural_histories(sweep.n_histories, seed=sweep.eval_seed)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, h)

    atomic_write(root / unit.output, write)


def _run_pretrain(root: Path, unit: Unit, sweep: SweepConfig) -> None:
    cfg = pretrain_config(sweep, unit.size, unit.seed)
    pretrain(cfg, root / unit.output, log_dir=tensorboard_dir(root, unit.model), progress=False)


def _run_finetune(root: Path, unit: Unit, sweep: SweepConfig) -> None:
    cfg = finetune_config(sweep, unit.size, unit.seed, unit.task)
    start = root / checkpoint_path(unit.size, unit.seed)
    finetune(start, cfg, root / unit.output, log_dir=tensorboard_dir(root, unit.model), progress=False)


def _run_measure(root: Path, unit: Unit, sweep: SweepConfig) -> None:
    save_csv(measure_model(root, checkpoint_path(unit.size, unit.seed, unit.task), sweep), root / unit.output)


def _run_reference(root: Path, unit: Unit, sweep: SweepConfig) -> None:
    save_csv(measure_references(root, sweep), root / unit.output)


def _run_report(root: Path, unit: Unit, sweep: SweepConfig) -> None:
    build_report(root, sweep, [u for u in plan(sweep) if u.kind in ("measure", "reference")])


_RUNNERS: dict[str, Callable[[Path, Unit, SweepConfig], None]] = {
    "histories": _run_histories,
    "pretrain": _run_pretrain,
    "finetune": _run_finetune,
    "measure": _run_measure,
    "reference": _run_reference,
    "report": _run_report,
}


#: the kinds of unit that run a model (the others are numpy and files: they run on the CPU)
MODEL_UNITS: tuple[str, ...] = ("pretrain", "finetune", "measure")


def _earlier_sessions(ckpt: Path, unit: Unit) -> tuple[float, float | None]:
    """Wall and CPU seconds a trainer unit already spent in earlier sessions, from its unfinished checkpoint
    (``(0, 0)`` for a fresh start or another kind of unit; CPU None when the checkpoint did not record it)."""
    if unit.kind not in ("pretrain", "finetune") or not ckpt.is_file():
        return 0.0, 0.0
    state = load_checkpoint(ckpt).get("train_state")
    if not isinstance(state, dict) or state.get("finished"):
        return 0.0, 0.0
    return float(state.get("elapsed", 0.0)), state.get("cpu")


def execute(root: str, unit: Unit, sweep: dict[str, Any], device: str | None = None) -> dict[str, Any]:
    """Run one unit (in whatever process the backend chose) and return its timing record.

    Torch is set to ``sweep["threads"]`` threads for the unit and restored afterwards, so a unit's numbers
    do not depend on where it ran.

    :param device: the device the backend placed the unit on (default: the sweep's ``device``); units that
        run no model (:data:`MODEL_UNITS`) run on the CPU. The units see it as their sweep's ``device``.
    """
    cfg = SweepConfig.from_dict(sweep)
    dev = resolve_device(device or cfg.device) if unit.kind in MODEL_UNITS else torch.device("cpu")
    cfg = dataclasses.replace(cfg, device=str(dev))
    path = Path(root)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    earlier_wall, earlier_cpu = _earlier_sessions(path / unit.output, unit)
    started = time.time()
    t0, cpu0 = time.perf_counter(), time.process_time()
    try:
        _RUNNERS[unit.kind](path, unit, cfg)
    finally:
        torch.set_num_threads(threads)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    # a trainer resumed from a checkpoint (interrupted, or carried from another machine in a partial bundle)
    # counts the sessions before this one too: its record is the whole unit's cost
    wall += earlier_wall
    cpu = None if earlier_cpu is None else cpu + earlier_cpu
    record = {
        "unit": unit.name,
        "kind": unit.kind,
        "size": unit.size,
        "seed": unit.seed if unit.seed >= 0 else None,
        "task": unit.task,
        "wall_s": wall,
        "cpu_s": cpu,  # this process's CPU time, every thread: below wall_s x threads when cores were shared
        "resumed_after_s": earlier_wall,  # wall seconds of earlier sessions (0: run in one go)
        "started": started,
        "finished": time.time(),
        "threads": cfg.threads,
        "device": str(dev),
        "device_name": device_name(dev),
        "precision": cfg.precision,
        "host": platform.node(),
        "pid": os.getpid(),
    }
    write_timing(path, unit, record)
    return record
