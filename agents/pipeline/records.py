"""The sweep's tables on disk: the results columns, exact CSV reading, atomic writes, timing records and
each invocation's provenance (start, end, commit, machine)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from agents.checkpoint import atomic_write, load_checkpoint
from agents.pipeline.layout import RUNS_FILE, TIMINGS_FILE, timing_path
from agents.pipeline.plan import Unit
from agents.training import history_path

#: columns of ``results.csv``, in order (one row per model and evaluation task)
RESULT_COLUMNS: tuple[str, ...] = (
    "model",
    "kind",
    "size",
    "params",
    "seed",
    "train_task",
    "train_steps",
    "train_device",
    "train_precision",
    "eval_task",
    "p",
    "success",
    "success_lo",
    "success_hi",
    "baseline_success",
    "op",
    "op_lo",
    "op_hi",
    "op_theory",
    "excess_op",
    "imp",
    "imp_lo",
    "imp_hi",
    "imp_min",
    "self_op",
    "self_imp",
    "identified_task",
    "is_optimizer",
    "nt_loss",
    "acc_even",
    "acc_odd",
    "n_histories",
    "checkpoint",
)
#: the text columns of the results table (empty, not NaN, where a value does not apply)
TEXT_COLUMNS: tuple[str, ...] = (
    "model",
    "kind",
    "size",
    "train_task",
    "train_device",
    "train_precision",
    "eval_task",
    "identified_task",
    "checkpoint",
)


def read_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read a results CSV exactly (floats round-trip bit for bit: pandas >= 3 by default, older pandas with
    its round-trip parser); text columns stay text, empty where a value does not apply."""
    exact = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}
    df = pd.read_csv(path, dtype=dict.fromkeys(TEXT_COLUMNS, str), **exact)
    for col in TEXT_COLUMNS:
        if col in df:
            df[col] = df[col].fillna("")
    return df


def per_checkpoint(checkpoints: pd.Series, value: Callable[[str], Any], missing: Any) -> list[Any]:
    """``value(checkpoint)`` for each entry of a results table's ``checkpoint`` column, computed once per
    distinct checkpoint; ``missing`` for rows without one (the reference policies)."""
    known = {c: value(c) for c in checkpoints.unique() if isinstance(c, str) and c}
    return [known.get(c, missing) if isinstance(c, str) else missing for c in checkpoints]


def read_history(root: Path, checkpoint: str) -> pd.DataFrame | None:
    """The trainer's history CSV of ``checkpoint`` (relative to ``root``), or None where there is none."""
    path = history_path(root / checkpoint)
    return pd.read_csv(path) if path.is_file() else None


def training_columns(root: Path, checkpoints: pd.Series) -> dict[str, list[Any]]:
    """``train_steps``, ``train_device`` and ``train_precision`` of the training that made each checkpoint
    (relative to ``root``), read once from its meta, so the table states what was run, not what the presets
    say today. Checkpoints written before devices existed trained on the CPU in fp32. ``pd.NA`` and empty
    text for the reference policies (no checkpoint)."""

    def columns(c: str) -> tuple[Any, str, str]:
        meta = load_checkpoint(root / c)["meta"]
        config = meta.get("finetune", meta.get("pretrain", {}))
        return config.get("steps", pd.NA), meta.get("device", "cpu"), config.get("precision", "fp32")

    rows = per_checkpoint(checkpoints, columns, (pd.NA, "", ""))
    names = ("train_steps", "train_device", "train_precision")
    return {name: [r[i] for r in rows] for i, name in enumerate(names)}


#: the last share of a finetuning over which :func:`finetune_rise` measures the held-out success's rise
RISE_SHARE = 0.25


def finetune_rise(root: Path, checkpoints: pd.Series) -> list[float]:
    """How far each finetuned checkpoint's held-out success still rose over the last quarter of its run, in
    fractions of the way from the uniform policy to the oracle (``frac_of_oracle`` of the trainer's history,
    the last evaluation minus the value interpolated at 75% of the steps): near 0 where the budget let the
    curve level off. NaN for pretrained models (their histories have no success), reference policies and
    checkpoints without a history."""

    def rise(c: str) -> float:
        h = read_history(root, c)
        if h is None or len(h) < 2 or "frac_of_oracle" not in h:
            return float("nan")
        steps, frac = h["step"].to_numpy(float), h["frac_of_oracle"].to_numpy(float)
        return float(frac[-1] - np.interp((1 - RISE_SHARE) * steps[-1], steps, frac))

    return per_checkpoint(checkpoints, rise, float("nan"))


def save_csv(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` to ``path`` atomically (readers never see half a table)."""
    atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data)))


# ---------------------------------------------------------------------------------------------- provenance
def package_version() -> str:
    """The installed ``splitseq`` distribution's version (``""`` when it is not installed)."""
    try:
        return metadata.version("splitseq")
    except metadata.PackageNotFoundError:
        return ""


def git_commit() -> str:
    """The commit of the source checkout this code runs from (``-dirty`` with local changes), or ``""`` when
    it runs from an installed copy outside a checkout of this project."""
    root = Path(__file__).resolve().parents[2]
    if not ((root / "pyproject.toml").is_file() and (root / ".git").exists()):
        return ""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def code_version() -> str:
    """The code's identity for a report: ``commit `<sha>` `` in a checkout, else ``splitseq <version>``."""
    commit = git_commit()
    if commit:
        return f"commit `{commit}`"
    return f"splitseq {package_version()}" if package_version() else "code of unknown version"


# ------------------------------------------------------------------------------------------------- timings
def write_timing(root: Path, unit: Unit, record: dict[str, Any]) -> None:
    """Save one unit's timing record (``timings/<unit>.json``)."""
    write_json(timing_path(root, unit.name), record)


def write_timings(root: Path, units: list[Unit]) -> pd.DataFrame:
    """Collect the units' timing records into ``DIR/timings.csv`` (one row per unit, in plan order)."""
    rows = []
    for u in units:
        p = timing_path(root, u.name)
        rec = (
            json.loads(p.read_text())
            if p.exists()
            else {"unit": u.name, "kind": u.kind, "wall_s": float("nan")}
        )
        rows.append(rec)
    df = pd.DataFrame(rows)
    save_csv(df, root / TIMINGS_FILE)
    return df


def log_run(root: Path, row: dict[str, Any]) -> None:
    """Append one invocation's record to ``DIR/runs.csv`` (with the time it finished and the machine)."""
    path = root / RUNS_FILE
    row = dict(row)
    first = {
        "started": row.pop("started"),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "commit": row.pop("commit"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
    }
    new = pd.DataFrame([{**first, **row}])
    old = pd.read_csv(path) if path.exists() else None
    save_csv(pd.concat([old, new], ignore_index=True) if old is not None else new, path)
