"""Reproduce the research post end to end: the sweep, ``results.csv``, the figures and ``report.md``.

::

    splitseq reproduce --preset quick --out runs/quick              # tiny, one seed, three tasks: minutes
    splitseq reproduce --preset full --out runs/full --workers 2    # 4 sizes x 5 seeds x 3 tasks
    python -m scripts.reproduce --preset quick --out runs/quick     # the same without the console script

The sweep is a graph of *units*; each writes exactly one file under ``DIR``, atomically:

=====================================  ==========================================================
``histories.npy``                      the fixed, seeded evaluation histories every model is measured on
``models/<size>-s<seed>/pretrained.pt``  one pretraining per (size, seed)
``models/<size>-s<seed>/<task>.pt``      one RL finetuning per task, starting from that pretrained model
``measures/<model>.csv``               one measurement batch per model: every task (cross-objective),
                                       objective identification, self-evaluation, next-token accuracy
``measures/reference.csv``             the uniform, natural and oracle reference policies
``report.md``                          written last, after ``results.csv`` and ``figures/*.png``
=====================================  ==========================================================

A unit is finished when its file exists and is not older than the files it was made from, so
re-running a finished sweep does no work and re-running a killed one redoes at most the units that were
in flight (and the trainers resume those from their own checkpoints). ``timings.csv`` holds each unit's
wall time. Units run in a local process pool (``--workers``, each unit with a fixed number of torch
threads so results do not depend on the pool) or as Ray tasks (``--backend ray``).
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import json
import math
import os
import platform
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parent.parent
TASK_IDS: tuple[str, ...] = ("ngood2", "ngood4", "ngood6")
SIZE_ORDER: tuple[str, ...] = ("tiny", "small", "medium", "large")

#: columns of ``results.csv``, in order (one row per model and evaluation task)
RESULT_COLUMNS: tuple[str, ...] = (
    "model", "kind", "size", "params", "seed", "train_task", "train_steps", "eval_task", "p",
    "success", "success_lo", "success_hi", "baseline_success",
    "op", "op_lo", "op_hi", "op_theory", "excess_op",
    "imp", "imp_lo", "imp_hi", "imp_min",
    "self_op", "self_imp", "identified_task",
    "nt_loss", "acc_even", "acc_odd", "n_histories", "checkpoint",
)  # fmt: skip


# ----------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class Preset:
    """What a preset sweeps.

    :param sizes: model sizes (names of :data:`agents.SIZES`).
    :param seeds: training seeds per size.
    :param tasks: RL tasks; every finetuned model is also measured on all of them.
    :param n_histories: evaluation histories (the same for every model).
    :param budget: the trainers' step budget, ``"quick"`` or ``"full"`` (``PretrainConfig.preset``,
        ``FinetuneConfig.preset``).
    """

    sizes: tuple[str, ...]
    seeds: tuple[int, ...]
    tasks: tuple[str, ...] = TASK_IDS
    n_histories: int = 8192
    budget: str = "full"


PRESETS: dict[str, Preset] = {
    "quick": Preset(sizes=("tiny",), seeds=(0,), budget="quick"),
    "full": Preset(sizes=SIZE_ORDER, seeds=(0, 1, 2, 3, 4), budget="full"),
}


@dataclass(frozen=True)
class SweepConfig:
    """Everything that decides a sweep's numbers; saved as ``DIR/sweep.json`` and checked on resume.

    :param preset: the preset's name (``quick`` or ``full``).
    :param sizes: model sizes.
    :param seeds: training seeds.
    :param tasks: RL tasks.
    :param n_histories: number of evaluation histories.
    :param eval_seed: seed of the evaluation histories (and of the bootstrap intervals).
    :param steps_scale: multiplies every trainer step budget (``< 1`` for smoke tests).
    :param threads: torch threads inside every unit (fixed, so results do not depend on ``--workers``).
    :param method: the finetuning method, ``"positive"`` (the post's) or ``"reinforce"`` (REINFORCE with a
        baseline: README "Training agents").
    """

    preset: str = "quick"
    sizes: tuple[str, ...] = ("tiny",)
    seeds: tuple[int, ...] = (0,)
    tasks: tuple[str, ...] = TASK_IDS
    n_histories: int = 8192
    eval_seed: int = 20240401
    steps_scale: float = 1.0
    threads: int = 1
    budget: str = "quick"
    method: str = "positive"

    def __post_init__(self) -> None:
        from agents.transformer import SIZES
        from seqenv.tasks import TASKS

        for s in self.sizes:
            if s not in SIZES:
                raise ValueError(f"unknown size {s!r}; expected some of {list(SIZES)}")
        for t in self.tasks:
            if t not in TASKS:
                raise ValueError(f"unknown task {t!r}; expected some of {sorted(TASKS)}")
        if not self.sizes or not self.seeds or not self.tasks:
            raise ValueError(f"a sweep needs at least one size, seed and task, got {self.sizes}, {self.seeds}, {self.tasks}")
        for name in ("sizes", "seeds", "tasks"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"{name} repeats a value: {values}")
        if any(int(s) < 0 for s in self.seeds):
            raise ValueError(f"seeds must be non-negative ints, got {self.seeds}")
        if self.n_histories < 2:
            raise ValueError(f"n_histories must be at least 2, got {self.n_histories}")
        if not (self.steps_scale > 0 and math.isfinite(self.steps_scale)):
            raise ValueError(f"steps_scale must be a positive finite number, got {self.steps_scale}")
        if self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")
        if self.budget not in ("quick", "full"):
            raise ValueError(f"budget must be 'quick' or 'full', got {self.budget!r}")
        if self.method not in ("positive", "reinforce"):
            raise ValueError(f"method must be 'positive' or 'reinforce', got {self.method!r}")

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> SweepConfig:
        """The config of preset ``name`` with some fields replaced (``None`` values are ignored)."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
        base = dataclasses.asdict(PRESETS[name])
        base.update({k: v for k, v in overrides.items() if v is not None})
        for key in ("sizes", "seeds", "tasks"):
            base[key] = tuple(base[key])
        base["seeds"] = tuple(int(s) for s in base["seeds"])
        return cls(preset=name, **base)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"sweep config has unknown keys {sorted(unknown)}")
        d = {"method": "positive", **d}  # sweeps written before the method was a setting used the post's
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


# ------------------------------------------------------------------------------------------------ units
@dataclass(frozen=True)
class Unit:
    """One piece of work that writes one file (``output``, relative to the sweep directory).

    :param name: unique id, e.g. ``finetune:small-s3-ngood4``.
    :param kind: ``histories``, ``pretrain``, ``finetune``, ``measure``, ``reference`` or ``report``.
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
        return f"{self.size}-s{self.seed}-{self.task or 'pretrained'}"


def run_id(size: str, seed: int) -> str:
    return f"{size}-s{seed}"


def checkpoint_path(size: str, seed: int, task: str = "") -> str:
    """Path of a model's checkpoint relative to the sweep directory (``task=""`` for the pretrained one)."""
    return f"models/{run_id(size, seed)}/{task or 'pretrained'}.pt"


def plan(sweep: SweepConfig) -> list[Unit]:
    """All units of a sweep in a dependency order (every unit after the units it needs)."""
    units = [Unit("histories", "histories", "histories.npy")]
    measures_ = []
    # larger models first: they take longest, so a pool finishes sooner when they start early
    sizes = sorted(sweep.sizes, key=lambda s: -SIZE_ORDER.index(s) if s in SIZE_ORDER else 0)
    for size in sizes:
        for seed in sweep.seeds:
            rid = run_id(size, seed)
            pre = Unit(f"pretrain:{rid}", "pretrain", checkpoint_path(size, seed), (), size, seed)
            units.append(pre)
            m = Unit(f"measure:{rid}-pretrained", "measure", f"measures/{rid}-pretrained.csv",
                     (pre.name, "histories"), size, seed)  # fmt: skip
            measures_.append(m)
            for task in sweep.tasks:
                ft = Unit(f"finetune:{rid}-{task}", "finetune", checkpoint_path(size, seed, task), (pre.name,),
                          size, seed, task)  # fmt: skip
                units.append(ft)
                measures_.append(Unit(f"measure:{rid}-{task}", "measure", f"measures/{rid}-{task}.csv",
                                      (ft.name, "histories"), size, seed, task))  # fmt: skip
    measures_.insert(0, Unit("measure:reference", "reference", "measures/reference.csv", ("histories",)))
    units += measures_
    units.append(Unit("report", "report", "report.md", tuple(u.name for u in measures_)))
    return units


def checkpoint_finished(path: str | os.PathLike) -> bool:
    """Whether a trainer's checkpoint at ``path`` is its final one (the trainers checkpoint into the same
    file while they run, with ``train_state["finished"]`` set only at the end)."""
    from agents.checkpoint import load_checkpoint

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


# ----------------------------------------------------------------------------------------- unit bodies
def _scaled(value: int, scale: float, low: int = 1) -> int:
    return max(low, round(value * scale))


def _scale_steps(cfg: Any, k: float) -> Any:
    """``cfg`` with every step count times ``k``; below ``k = 1`` the trainers' held-out evaluations are also
    thinned (at most about 10 per run, on at least 1024 examples) so a smoke test is not all evaluation."""
    if k == 1.0:
        return cfg
    steps = _scaled(cfg.steps, k)
    changes = {"steps": steps, "warmup_steps": _scaled(cfg.warmup_steps, k, 0),
               "eval_every": max(_scaled(cfg.eval_every, k), math.ceil(steps / 10)),
               "checkpoint_every": _scaled(cfg.checkpoint_every, k, 0)}  # fmt: skip
    if k < 1.0:
        changes["eval_samples"] = max(1024, 2 * round(cfg.eval_samples * k / 2))
    return dataclasses.replace(cfg, **changes)


def pretrain_config(sweep: SweepConfig, size: str, seed: int) -> Any:
    """The :class:`agents.pretrain.PretrainConfig` of one pretraining: the agents' recommended config for
    the size and the preset's budget (:meth:`PretrainConfig.preset`), every step count times ``steps_scale``."""
    from agents.pretrain import PretrainConfig

    return _scale_steps(PretrainConfig.preset(size, seed=seed, budget=sweep.budget), sweep.steps_scale)


def finetune_config(sweep: SweepConfig, size: str, seed: int, task: str) -> Any:
    """The :class:`agents.finetune.FinetuneConfig` of one finetuning with the sweep's method (default the
    post's positive-only): the agents' recommended config for the method, size and budget
    (:meth:`FinetuneConfig.preset`), every step count times ``steps_scale``."""
    from agents.finetune import FinetuneConfig

    cfg = FinetuneConfig.preset(size, task=task, method=sweep.method, seed=seed, budget=sweep.budget)
    return _scale_steps(cfg, sweep.steps_scale)


def _save_csv(df: pd.DataFrame, path: Path) -> None:
    from agents.checkpoint import atomic_write

    atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))


def load_histories(root: str | os.PathLike) -> np.ndarray:
    """The sweep's fixed evaluation histories ``(N, 20)`` int64 (``DIR/histories.npy``)."""
    return np.load(Path(root) / "histories.npy")


def _run_histories(root: Path, unit: Unit, sweep: SweepConfig) -> None:
    from agents.checkpoint import atomic_write
    from seqenv.sequence import natural_histories

    h = natural_histories(sweep.n_histories, seed=sweep.eval_seed)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, h)

    atomic_write(root / unit.output, write)


def _run_pretrain(root: Path, unit: Unit, sweep: SweepConfig) -> None:
    from agents.pretrain import pretrain

    cfg = pretrain_config(sweep, unit.size, unit.seed)
    pretrain(cfg, root / unit.output, log_dir=root / "tb" / unit.model, progress=False)


def _run_finetune(root: Path, unit: Unit, sweep: SweepConfig) -> None:
    from agents.finetune import finetune

    cfg = finetune_config(sweep, unit.size, unit.seed, unit.task)
    finetune(root / checkpoint_path(unit.size, unit.seed), cfg, root / unit.output,
             log_dir=root / "tb" / unit.model, progress=False)  # fmt: skip


def _run_measure(root: Path, unit: Unit, sweep: SweepConfig) -> None:
    from scripts import _measure

    df = _measure.measure_model(root, checkpoint_path(unit.size, unit.seed, unit.task), sweep)
    _save_csv(df, root / unit.output)


def _run_reference(root: Path, unit: Unit, sweep: SweepConfig) -> None:
    from scripts import _measure

    _save_csv(_measure.measure_references(root, sweep), root / unit.output)


def _run_report(root: Path, unit: Unit, sweep: SweepConfig) -> None:
    from scripts import report

    report.build(root, sweep, [u for u in plan(sweep) if u.kind in ("measure", "reference")])


_RUNNERS: dict[str, Callable[[Path, Unit, SweepConfig], None]] = {
    "histories": _run_histories,
    "pretrain": _run_pretrain,
    "finetune": _run_finetune,
    "measure": _run_measure,
    "reference": _run_reference,
    "report": _run_report,
}


def timing_path(root: Path, unit: Unit) -> Path:
    return root / "timings" / (unit.name.replace(":", "_") + ".json")


def execute(root: str, unit: Unit, sweep: dict[str, Any]) -> dict[str, Any]:
    """Run one unit (in whatever process the backend chose) and return its timing record.

    Torch is set to ``sweep["threads"]`` threads for the unit and restored afterwards, so a unit's numbers
    do not depend on where it ran.
    """
    import torch

    cfg = SweepConfig.from_dict(sweep)
    path = Path(root)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    started = time.time()
    t0 = time.perf_counter()
    try:
        _RUNNERS[unit.kind](path, unit, cfg)
    finally:
        torch.set_num_threads(threads)
    wall = time.perf_counter() - t0
    record = {
        "unit": unit.name, "kind": unit.kind, "size": unit.size, "seed": unit.seed if unit.seed >= 0 else None,
        "task": unit.task, "wall_s": wall, "started": started, "finished": time.time(), "threads": cfg.threads,
        "host": platform.node(), "pid": os.getpid(),
    }  # fmt: skip
    from agents.checkpoint import atomic_write

    atomic_write(timing_path(path, unit), lambda tmp: Path(tmp).write_text(json.dumps(record)))
    return record


# --------------------------------------------------------------------------------------------- backends
def _watch_parent(parent: int) -> None:
    """In a pool worker: exit as soon as the sweep's process is gone (e.g. killed with SIGKILL), so no
    orphan keeps writing into the sweep directory while a resumed sweep runs."""

    def loop() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(0.2)

    threading.Thread(target=loop, daemon=True, name="parent-watch").start()


class _InlineBackend:
    """Runs each unit in this process when it is submitted (``--workers 1``)."""

    slots = 1

    def submit(self, root: str, unit: Unit, sweep: dict) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(execute(root, unit, sweep))
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt):
                raise
            e.__traceback_text__ = traceback.format_exc()  # type: ignore[attr-defined]
            fut.set_exception(e)
        return fut

    def wait(self, pending: Iterable[Future]) -> set[Future]:
        return {f for f in pending if f.done()}

    def result(self, fut: Future) -> dict:
        return fut.result()

    def close(self) -> None:
        pass


class _PoolBackend:
    """A local process pool (spawned workers, each watching the sweep process)."""

    def __init__(self, workers: int):
        self.slots = workers
        self.pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=get_context("spawn"), initializer=_watch_parent, initargs=(os.getpid(),)
        )

    def submit(self, root: str, unit: Unit, sweep: dict) -> Future:
        return self.pool.submit(execute, root, unit, sweep)

    def wait(self, pending: Iterable[Future]) -> set[Future]:
        done, _ = wait_futures(list(pending), return_when=FIRST_COMPLETED)
        return set(done)

    def result(self, fut: Future) -> dict:
        return fut.result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class _RayBackend:
    """Units as Ray tasks (``num_cpus = threads`` each) on the running Ray instance, or a new local one.

    The sweep directory must be visible to every node (a shared file system) for a multi-node cluster.
    """

    def __init__(self, workers: int | None, threads: int, address: str | None = None):
        try:
            import ray
        except ImportError:
            raise RuntimeError(
                "--backend ray needs Ray: pip install 'splitseq[ray]' (or pip install ray)"
            ) from None
        self.ray = ray
        self.started = False
        if not ray.is_initialized():
            ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False,
                     log_to_driver=False)  # fmt: skip
            self.started = True
        # workers import this module from the checkout, so put it on their path
        path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
        self.task = ray.remote(execute).options(
            num_cpus=threads, max_retries=0, runtime_env={"env_vars": {"PYTHONPATH": path}}
        )
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.slots = workers or max(1, cpus // threads)

    def submit(self, root: str, unit: Unit, sweep: dict) -> Any:
        return self.task.remote(root, unit, sweep)

    def wait(self, pending: Iterable[Any]) -> set[Any]:
        done, _ = self.ray.wait(list(pending), num_returns=1)
        return set(done)

    def result(self, ref: Any) -> dict:
        return self.ray.get(ref)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


# -------------------------------------------------------------------------------------------- the sweep
class SweepError(RuntimeError):
    """Some units of a sweep failed; the others finished (and stay finished)."""


class _Lock:
    """An exclusive lock on the sweep directory, so two sweeps never write the same files."""

    def __init__(self, root: Path):
        self.path = root / ".lock"
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = Path(self.path).read_text().strip() or "another process"
            os.close(self.fd)
            raise RuntimeError(f"{root} is in use by another reproduce run (pid {holder}); wait for it or stop it") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, str(os.getpid()).encode())

    def release(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _check_sweep_file(root: Path, sweep: SweepConfig) -> None:
    from agents.checkpoint import atomic_write

    path = root / "sweep.json"
    if path.exists():
        old = {"method": "positive", **json.loads(path.read_text())}
        new = sweep.to_dict()
        diff = {k: (old.get(k), new.get(k)) for k in set(old) | set(new) if old.get(k) != new.get(k)}
        if diff:
            changes = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(diff.items()))
            raise ValueError(
                f"{root} holds a sweep with other settings ({changes}); use another --out, or delete {root} to start over"
            )
        return
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(sweep.to_dict(), indent=2) + "\n"))


def _remove_temporaries(root: Path) -> None:
    """Delete the half-written temporary files a killed sweep leaves (``.<name>.<random>.tmp``); safe because
    the caller holds the directory's lock, so nothing else is writing them."""
    for path in root.rglob(".*.tmp*"):
        if path.is_file() and (path.name.endswith(".tmp") or path.name.endswith(".tmp.png")):
            path.unlink()


def git_commit() -> str:
    """The checkout's commit (with ``-dirty`` when it has local changes), or ``""`` outside git."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10, check=False).stdout.strip()  # fmt: skip
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def write_timings(root: Path, units: list[Unit]) -> pd.DataFrame:
    """Collect the units' timing records into ``DIR/timings.csv`` (one row per unit, in plan order)."""
    rows = []
    for u in units:
        p = timing_path(root, u)
        rec = json.loads(p.read_text()) if p.exists() else {"unit": u.name, "kind": u.kind, "wall_s": float("nan")}
        rows.append(rec)
    df = pd.DataFrame(rows)
    _save_csv(df, root / "timings.csv")
    return df


@dataclass
class SweepSummary:
    """What one call of :func:`run_sweep` did."""

    root: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    wall_s: float = 0.0


def run_sweep(
    out: str | os.PathLike,
    sweep: SweepConfig,
    workers: int | None = None,
    backend: str = "local",
    progress: bool = True,
    ray_address: str | None = None,
) -> SweepSummary:
    """Run (or resume) a sweep in directory ``out``.

    :param out: the sweep directory (created if needed).
    :param sweep: what to run; must match ``out/sweep.json`` when resuming.
    :param workers: units in flight at once. Local: default 1, which runs them in this process; more use a
        process pool. Ray: default as many as the cluster's CPUs allow (``threads`` CPUs per unit).
    :param backend: ``"local"`` (process pool) or ``"ray"``.
    :param progress: a log line per finished unit (and a progress bar on a terminal).
    :param ray_address: address of an existing Ray cluster (``--backend ray``); default a local instance.
    :return: a :class:`SweepSummary`; raises :class:`SweepError` if units failed (after running the rest).
    """
    from tqdm.auto import tqdm

    if backend not in ("local", "ray"):
        raise ValueError(f"backend must be 'local' or 'ray', got {backend!r}")
    if workers is not None and int(workers) < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    root = Path(out).resolve()
    root.mkdir(parents=True, exist_ok=True)
    lock = _Lock(root)
    t_start = time.perf_counter()
    started_at, commit = time.strftime("%Y-%m-%d %H:%M:%S"), git_commit()  # the code this invocation runs
    try:
        _check_sweep_file(root, sweep)
        _remove_temporaries(root)
        units = plan(sweep)
        todo = units_to_run(root, units)
        summary = SweepSummary(root, skipped=[u.name for u in units if u not in todo])
        sweep_d = sweep.to_dict()
        bar_on = progress and sys.stderr.isatty()  # piped output gets the log lines only

        def say(text: str) -> None:
            if bar_on:
                tqdm.write(text, file=sys.stderr)
            elif progress:
                print(text, file=sys.stderr, flush=True)

        say(f"reproduce: {len(units)} units in {root}: {len(todo)} to run, {len(units) - len(todo)} finished already")
        if not todo:
            summary.wall_s = time.perf_counter() - t_start
            return summary
        # the report runs here, after everything else (it reads every file and draws with matplotlib)
        work = [u for u in todo if u.kind != "report"]
        report = [u for u in todo if u.kind == "report"]
        be: Any = None
        if work:
            if backend == "ray":
                be = _RayBackend(workers, sweep.threads, ray_address)
            elif (workers or 1) == 1:
                be = _InlineBackend()
            else:
                be = _PoolBackend(min(workers, len(work)))
        bar = tqdm(total=len(todo), unit="unit", disable=not bar_on, dynamic_ncols=True, file=sys.stderr)
        blocked: set[str] = set()
        waiting = {u.name: u for u in work}
        running: dict[Any, Unit] = {}
        redo = {u.name for u in todo}

        def log_done(u: Unit, rec: dict) -> None:
            bar.update(1)
            el = time.perf_counter() - t_start
            say(f"  [{len(summary.ran)}/{len(todo)}] {u.name:<34} {rec['wall_s']:8.1f} s   (elapsed {el / 60:5.1f} min)")

        try:
            while waiting or running:
                ready = [u for u in waiting.values() if all(d not in redo or d in summary.ran for d in u.deps)]
                for u in ready:
                    if len(running) >= be.slots:
                        break
                    del waiting[u.name]
                    bar.set_postfix_str(u.name)
                    running[be.submit(str(root), u, sweep_d)] = u
                if not running:
                    break  # everything left waits on a failed unit
                for fut in be.wait(list(running)):
                    u = running.pop(fut)
                    try:
                        rec = be.result(fut)
                    except Exception as e:  # noqa: BLE001 - a failed unit must not stop the others
                        text = getattr(e, "__traceback_text__", None) or "".join(traceback.format_exception(e))
                        summary.failed[u.name] = text
                        say(f"  FAILED {u.name}: {type(e).__name__}: {e}")
                        continue
                    summary.ran.append(u.name)
                    log_done(u, rec)
            for name in list(waiting):
                blocked.add(name)
        finally:
            if be is not None:
                be.close()
        if not summary.failed:
            for u in report:
                try:
                    rec = execute(str(root), u, sweep_d)
                except Exception:  # noqa: BLE001 - recorded and raised as a SweepError below
                    summary.failed[u.name] = traceback.format_exc()
                    say(f"  FAILED {u.name}: {summary.failed[u.name].strip().splitlines()[-1]}")
                    continue
                summary.ran.append(u.name)
                log_done(u, rec)
            report = []
        bar.close()
        write_timings(root, units)
        summary.wall_s = time.perf_counter() - t_start
        _log_run(root, summary, workers, backend, started_at, commit)
        say(f"reproduce: {len(summary.ran)} units in {summary.wall_s / 60:.1f} min -> {root / 'report.md'}")
        if summary.failed:
            details = "\n\n".join(f"--- {k}\n{v}" for k, v in summary.failed.items())
            n_blocked = len(blocked) + len(report)
            waiting_txt = f"; {n_blocked} units not run because they depend on them" if n_blocked else ""
            raise SweepError(f"{len(summary.failed)} units failed{waiting_txt}. Rerun to retry them.\n{details}")
        return summary
    finally:
        lock.release()


def _log_run(
    root: Path, summary: SweepSummary, workers: int | None, backend: str, started: str, commit: str
) -> None:
    """Append this invocation to ``DIR/runs.csv`` (start, end, the commit checked out when it started,
    machine, wall time) for the record."""
    path = root / "runs.csv"
    row = pd.DataFrame([{
        "started": started, "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "commit": commit, "host": platform.node(),
        "cpus": os.cpu_count(), "workers": workers, "backend": backend, "units_run": len(summary.ran),
        "units_failed": len(summary.failed), "wall_s": round(summary.wall_s, 2),
    }])  # fmt: skip
    old = pd.read_csv(path) if path.exists() else None
    _save_csv(pd.concat([old, row], ignore_index=True) if old is not None else row, path)


# ----------------------------------------------------------------------------------------------- merging
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
    import shutil

    from agents.checkpoint import atomic_write

    roots = [Path(src).resolve() for src in sources]
    if len(roots) < 2:
        raise ValueError(f"merging needs at least two sweep directories, got {len(roots)}")
    configs = []
    for r in roots:
        if not (r / "sweep.json").is_file():
            raise ValueError(f"{r} is not a sweep directory (no sweep.json)")
        configs.append(SweepConfig.from_dict(json.loads((r / "sweep.json").read_text())))
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
                raise ValueError(f"seed {seed} is in both {seen[seed]} and {r}; merged sweeps must not share seeds")
            seen[seed] = r
    for r, c in zip(roots, configs):
        left = [u.name for u in units_to_run(r, plan(c)) if u.kind != "report"]
        if left:
            raise ValueError(
                f"{r} is not finished: {len(left)} units left (first: {left[0]}); rerun its sweep to finish it"
            )
    histories = [(r / "histories.npy").read_bytes() for r in roots]
    for r, h in zip(roots[1:], histories[1:]):
        if h != histories[0]:
            raise ValueError(f"{r}/histories.npy differs from {roots[0]}/histories.npy")
    merged = SweepConfig.from_dict({**base, "seeds": sorted(seen)})
    root = Path(out).resolve()
    if root in roots:
        raise ValueError(f"--out {root} is one of the sources; merge into a new directory")
    root.mkdir(parents=True, exist_ok=True)
    lock = _Lock(root)
    try:
        _check_sweep_file(root, merged)
        # shared units from the source with the oldest histories, so every copied measurement is newer
        first = min(range(len(roots)), key=lambda i: (roots[i] / "histories.npy").stat().st_mtime_ns)
        runs = []
        for i, (r, c) in enumerate(zip(roots, configs)):
            for u in plan(c):
                if u.kind == "report" or (u.kind in ("histories", "reference") and i != first):
                    continue
                files = [Path(u.output), timing_path(Path(), u)]
                if u.kind in ("pretrain", "finetune"):
                    files += [Path(u.output + ".history.csv")]
                for f in files:
                    if (r / f).is_file():  # copy2 keeps the modification time, which says the unit is finished
                        atomic_write(root / f, lambda tmp, src=r / f: shutil.copy2(src, tmp))
                if u.kind in ("pretrain", "finetune") and (r / "tb" / u.model).is_dir():
                    shutil.copytree(r / "tb" / u.model, root / "tb" / u.model, dirs_exist_ok=True)
            if (r / "runs.csv").is_file():
                runs.append(pd.read_csv(r / "runs.csv").assign(source=str(r)))
        if runs:
            _save_csv(pd.concat(runs, ignore_index=True), root / "runs.csv")
    finally:
        lock.release()
    return merged


# ------------------------------------------------------------------------------------------------- CLI
def default_workers(threads: int = 1) -> int:
    """The command line's local pool size: the CPUs this process may use, ``threads`` per unit."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // max(1, threads))


def main_args(args: argparse.Namespace) -> int:
    """Run a sweep from parsed arguments; ``0`` on success, ``1`` if units failed."""
    if args.merge:
        given = [f"--{k.replace('_', '-')}" for k in ("sizes", "seeds", "tasks", "n_histories", "steps_scale",
                                                       "threads", "method") if getattr(args, k) is not None]  # fmt: skip
        if given:
            print(f"reproduce: --merge takes the settings from the merged sweeps; drop {', '.join(given)}",
                  file=sys.stderr)  # fmt: skip
            return 2
        try:
            sweep = merge_sweeps(args.out, args.merge, preset=args.preset)
        except ValueError as e:
            print(f"reproduce: {e}", file=sys.stderr)
            return 2
        args.workers = None  # only the report is left, and it runs in this process
    else:
        sweep = SweepConfig.from_preset(
            args.preset or "quick", sizes=args.sizes, seeds=args.seeds, tasks=args.tasks, n_histories=args.n_histories,
            steps_scale=args.steps_scale, threads=args.threads, method=args.method,
        )  # fmt: skip
    if args.workers is None and args.backend == "local" and not args.merge:
        args.workers = default_workers(sweep.threads)
    try:
        run_sweep(args.out, sweep, workers=args.workers, backend=args.backend, progress=not args.no_progress,
                  ray_address=args.ray_address)  # fmt: skip
    except SweepError as e:
        print(f"reproduce: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    from agents.reproduce_cli import add_arguments

    p = argparse.ArgumentParser(prog="python -m scripts.reproduce", description=__doc__.split("\n")[0])
    add_arguments(p)
    return main_args(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
