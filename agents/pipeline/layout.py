"""Where a sweep keeps its files: every path inside a sweep directory is named here, once.

=======================================  ==========================================================
``sweep.json``                           the settings (:class:`~agents.pipeline.config.SweepConfig`)
``histories.npy``                        the fixed, seeded evaluation histories every model is measured on
``models/<size>-s<seed>/pretrained.pt``  one pretraining per (size, seed)
``models/<size>-s<seed>/<task>.pt``      one RL finetuning per task, from that pretrained model
``measures/<model>.csv``                 one measurement batch per model
``measures/reference.csv``               the uniform, natural and oracle reference policies
``timings/<unit>.json``                  each unit's timing record; ``timings.csv`` collects them
``runs.csv``                             one row per invocation (start, end, commit, machine)
``results.csv``, ``figures/``, ``report.md``  written last
=======================================  ==========================================================
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

SWEEP_FILE = "sweep.json"
HISTORIES_FILE = "histories.npy"
REPORT_FILE = "report.md"
RESULTS_FILE = "results.csv"
TIMINGS_FILE = "timings.csv"
RUNS_FILE = "runs.csv"
FIGURES_DIR = "figures"
LOCK_FILE = ".lock"


def run_id(size: str, seed: int) -> str:
    """The name of one (size, seed) training run: ``tiny-s0``."""
    return f"{size}-s{seed}"


def model_name(size: str, seed: int, task: str = "") -> str:
    """The name of a model: ``tiny-s0-ngood4``, or ``tiny-s0-pretrained`` for ``task=""``."""
    return f"{run_id(size, seed)}-{task or 'pretrained'}"


def checkpoint_path(size: str, seed: int, task: str = "") -> str:
    """Path of a model's checkpoint relative to the sweep directory (``task=""`` for the pretrained one)."""
    return f"models/{run_id(size, seed)}/{task or 'pretrained'}.pt"


def measure_path(name: str) -> str:
    """Path of a measurement file relative to the sweep directory (``name`` a model name or ``reference``)."""
    return f"measures/{name}.csv"


def timing_path(root: Path, unit_name: str) -> Path:
    """The timing record of the unit called ``unit_name``."""
    return root / "timings" / (unit_name.replace(":", "_") + ".json")


def tensorboard_dir(root: Path, model: str) -> Path:
    """TensorBoard scalars of one training unit."""
    return root / "tb" / model


def load_histories(root: str | os.PathLike) -> np.ndarray:
    """The sweep's fixed evaluation histories ``(N, 20)`` int64 (``DIR/histories.npy``)."""
    return np.load(Path(root) / HISTORIES_FILE)
