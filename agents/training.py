"""Run plumbing shared by the trainers (:mod:`agents.pretrain`, :mod:`agents.finetune`).

The trainers hold the algorithms; everything else about a run lives here:

* the optimizer and its schedule: :func:`make_optimizer`, :func:`lr_at`, :func:`set_lr`;
* config checks beyond :mod:`seqenv.validation`: :func:`check_known`, :func:`check_fraction`;
* :class:`TrainingRun`: resuming from the checkpoint at ``out``, the history CSV beside it
  (:func:`history_path`, :func:`write_history`), TensorBoard scalars, the progress bar and the atomic,
  resumable checkpoints;
* :class:`RunningMeans`: the training statistics averaged between two history rows.

A run's ``train_state`` (what resuming needs) is plain data (tensors, numbers, strings, lists and dicts):
:func:`agents.checkpoint.save_checkpoint` stores numpy arrays as tensors and
:func:`agents.checkpoint.numpy_arrays` turns them back.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from agents.checkpoint import (
    CheckpointError,
    atomic_write,
    check_writable,
    load_checkpoint,
    save_checkpoint,
)
from agents.runtime import bf16_warning, resolve_device
from agents.transformer import SplitSeqTransformer
from seqenv.validation import check_number

#: The step budgets of the trainers' presets: ``"full"`` (the sweep's) and ``"quick"`` (the quick preset).
BUDGETS = ("full", "quick")


# ------------------------------------------------------------------------------------ optimizer, schedule
def lr_at(step: int, total: int, peak: float, warmup: int, min_ratio: float) -> float:
    """Learning rate for ``step`` (0-based): linear warmup to ``peak``, then cosine down to ``peak * min_ratio``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(
    model: torch.nn.Module, lr: float, weight_decay: float, betas: tuple[float, float]
) -> torch.optim.AdamW:
    """AdamW decaying matrices and embeddings only (nanoGPT's split: no decay on biases and LayerNorm gains)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, foreach=True)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group of ``optimizer``."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def clipped_step(
    optimizer: torch.optim.Optimizer, model: torch.nn.Module, loss: torch.Tensor, grad_clip: float
) -> None:
    """One optimizer step on ``loss``, its gradient norm clipped to ``grad_clip`` (0: no clipping)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()


def set_threads(threads: int) -> None:
    """Set torch's intra-op threads (0 leaves torch's setting alone)."""
    if threads:
        torch.set_num_threads(threads)


def run_device(device: str, precision: str) -> torch.device:
    """The ``torch.device`` a run of config ``device`` uses, checked to exist here
    (:func:`agents.runtime.resolve_device`); warns if ``precision`` bf16 has no native support there."""
    dev = resolve_device(device)
    message = bf16_warning(dev, precision)
    if message:
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    return dev


# ------------------------------------------------------------------------------------------ config checks
def check_known(value: Any, name: str, known: Iterable[str]) -> str:
    """``value`` if it is one of the names ``known``; ``ValueError("unknown <name> ...")`` otherwise."""
    options = list(known)
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"unknown {name} {value!r}; expected one of {options}")
    return value


def check_fraction(value: Any, name: str, *, below_one: bool = False) -> float:
    """A number in ``[0, 1]`` (``[0, 1)`` with ``below_one=True``)."""
    interval = "[0, 1)" if below_one else "[0, 1]"
    v = check_number(value, name, 0.0, expected=f"a number in {interval}")
    if v > 1.0 or (below_one and v == 1.0):
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
    return v


def renamed_names(module: str, renamed: dict[str, tuple[str, Any]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` serving old names: ``renamed[old] = (new name, value)``; each use warns."""

    def __getattr__(name: str) -> Any:
        if name not in renamed:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        new, value = renamed[name]
        warnings.warn(f"{module}.{name} is now {new}", DeprecationWarning, stacklevel=2)
        return value

    return __getattr__


# ------------------------------------------------------------------------------------------------ history
def history_path(out: str | Path) -> Path:
    """Where the history CSV of checkpoint ``out`` goes: ``<out>.history.csv``."""
    return Path(str(out) + ".history.csv")


def write_history(out: str | Path, rows: list[dict[str, float]], columns: tuple[str, ...]) -> Path:
    """Write ``rows`` atomically as the CSV beside ``out`` (pandas-readable)."""
    frame = pd.DataFrame(rows, columns=list(columns))
    return atomic_write(history_path(out), lambda tmp: frame.to_csv(tmp, index=False))


class RunningMeans:
    """Per-step statistics summed since the last history row (``add``), averaged by :meth:`means`.

    :param names: the statistics, in the order of :meth:`state_dict`.
    """

    def __init__(self, *names: str):
        self.names = names
        self.reset()

    def reset(self) -> None:
        self.sums = dict.fromkeys(self.names, 0.0)
        self.n = 0

    def add(self, **values: float) -> None:
        """Add one step's ``values`` (one per name)."""
        self.sums = {name: self.sums[name] + values[name] for name in self.names}
        self.n += 1

    def means(self) -> dict[str, float]:
        return {name: total / self.n for name, total in self.sums.items()}

    def state_dict(self) -> list[float]:
        """``[sum of each statistic..., count]``."""
        return [*self.sums.values(), self.n]

    def load_state_dict(self, state: Iterable[float]) -> None:
        *sums, n = state
        self.sums, self.n = dict(zip(self.names, sums, strict=True)), int(n)


# -------------------------------------------------------------------------------------------------- runs
#: config fields a resume may change: how often a run is saved (no result changes), and the device (a run
#: interrupted on one GPU may be finished on another or on the CPU; it continues, but is bit-identical to an
#: uninterrupted run only on the same kind of device)
RESUME_FREE = ("checkpoint_every", "device")
#: how to start afresh over an existing run, in the words of the command line and of Python
RESTART_HINT = "or start afresh over it with --restart (resume=False in Python)"


#: config fields added after checkpoints were first written, with the value every older run used; a checkpoint
#: without one of them resumes under a config that has this value
ADDED_SETTINGS: dict[str, Any] = {"world_model": "natural", "counterfactual_share": 0.5, "precision": "fp32"}


def resume_checkpoint(out: Path, config: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The checkpoint of an earlier run of ``config`` at ``out`` (finished or not), or None when there is none.

    Fields of :data:`RESUME_FREE` (how often to checkpoint, the device) may differ.

    :raises CheckpointError: ``out`` holds something else: another kind, no train state, another config.
    """
    if not out.exists():
        return None
    try:
        ckpt = load_checkpoint(out)
    except CheckpointError as e:
        raise CheckpointError(
            f"{out} exists and is not a resumable {kind} checkpoint ({e}); choose another output path "
            f"{RESTART_HINT}, which overwrites it"
        ) from None
    state = ckpt.get("train_state")
    if ckpt["kind"] != kind or not isinstance(state, dict) or "config" not in state:
        raise CheckpointError(
            f"{out} exists and is not a resumable {kind} checkpoint of this run; choose another output path "
            f"{RESTART_HINT}, which overwrites it"
        )
    # settings added after the checkpoint was written: it ran with the value that reproduces the old behaviour
    saved = {**ADDED_SETTINGS, **state["config"]}
    diff = {k: (saved.get(k), v) for k, v in config.items() if saved.get(k) != v and k not in RESUME_FREE}
    if diff:
        changes = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in diff.items())
        raise CheckpointError(
            f"{out} holds a run with other settings (saved -> requested: {changes}); rerun with the saved "
            f"settings to resume it, choose another output path, {RESTART_HINT}, which overwrites it"
        )
    return ckpt


class TrainingRun:
    """The plumbing of one training run writing checkpoint ``out``: resume, history, TensorBoard, progress.

    ``config`` needs ``to_dict()`` and the fields ``steps``, ``eval_every`` and ``checkpoint_every``. After
    construction, :attr:`start_step` is the number of steps already done (0 on a fresh run), :attr:`history`
    the history rows so far and, when resuming, :attr:`state` the saved train state and :attr:`weights` the
    saved model weights (:attr:`finished`: the run is complete and :attr:`summary` is its result).

    :param out: the checkpoint path; the history CSV goes to :func:`history_path` ``(out)``.
    :param kind: the checkpoint kind (``"pretrained"``, ``"finetuned"``).
    :param config: the run's config.
    :param columns: the history CSV's columns (``step`` first, ``elapsed`` last).
    :param resume: continue a run of the same config at ``out``; False starts afresh (and overwrites it).
    """

    def __init__(
        self, out: str | Path, kind: str, config: Any, columns: tuple[str, ...], resume: bool = True
    ):
        self.out, self.kind, self.config, self.columns = Path(out), kind, config, columns
        check_writable(self.out)  # now, not after the first hour of training
        ckpt = resume_checkpoint(self.out, config.to_dict(), kind) if resume else None
        self.state: dict[str, Any] | None = None if ckpt is None else ckpt["train_state"]
        self.weights: dict[str, torch.Tensor] | None = None if ckpt is None else ckpt["model"]
        self.start_step: int = 0 if ckpt is None else self.state["step"]
        self.history: list[dict[str, float]] = [] if ckpt is None else list(self.state["history"])
        self._elapsed_before = 0.0 if ckpt is None else self.state["elapsed"]
        # CPU seconds of the earlier sessions (None: a checkpoint from before this was recorded)
        self._cpu_before: float | None = 0.0 if ckpt is None else self.state.get("cpu")
        self._t0, self._cpu0 = time.perf_counter(), time.process_time()
        self._writer: Any = None
        self._bar: Any = None
        self._prefix = ""

    @property
    def resumed(self) -> bool:
        return self.state is not None

    @property
    def finished(self) -> bool:
        return bool(self.state and self.state.get("finished"))

    @property
    def summary(self) -> dict[str, Any]:
        assert self.state is not None
        return self.state["summary"]

    def start(self, desc: str, log_dir: str | Path | None, progress: bool, prefix: str) -> None:
        """Start the clock, the progress bar and (with ``log_dir``) TensorBoard, under ``prefix/`` tags."""
        self._prefix = prefix
        if log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(log_dir), purge_step=self.start_step or None)
            self._writer.add_text(f"{prefix}/config", str(self.config.to_dict()), self.start_step)
        self._bar = tqdm(total=self.config.steps, initial=self.start_step, desc=desc, disable=not progress)
        self._t0, self._cpu0 = time.perf_counter(), time.process_time()

    def elapsed(self) -> float:
        """Seconds of training so far, over every session of the run."""
        return self._elapsed_before + time.perf_counter() - self._t0

    def cpu(self) -> float | None:
        """CPU seconds of this process (every thread) spent on the run so far, over every session of it;
        None when an earlier session did not record them."""
        if self._cpu_before is None:
            return None
        return self._cpu_before + time.process_time() - self._cpu0

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Log ``values`` to TensorBoard (if on) as ``<prefix>/<key>`` at ``step``."""
        if self._writer is not None:
            for key, value in values.items():
                self._writer.add_scalar(f"{self._prefix}/{key}", value, step)

    def advance(self) -> None:
        """One step done: advance the progress bar."""
        self._bar.update(1)

    def show(self, **values: float) -> None:
        """Show ``values`` beside the progress bar."""
        self._bar.set_postfix({key: f"{value:.3f}" for key, value in values.items()})

    def evaluation_due(self, done: int) -> bool:
        """Whether a history row is due after ``done`` steps: every ``eval_every`` steps and at the end."""
        return done % self.config.eval_every == 0 or done == self.config.steps

    def checkpoint_due(self, done: int) -> bool:
        """Whether a resumable checkpoint is due after ``done`` steps (never at the end: the final one is)."""
        every = self.config.checkpoint_every
        return bool(every) and done % every == 0 and done < self.config.steps

    def log(self, row: dict[str, float], **extra: float) -> None:
        """Append history ``row`` (rewriting the CSV) and log its values and ``extra`` to TensorBoard."""
        self.history.append(row)
        scalars = {k: v for k, v in row.items() if k not in ("step", "elapsed")}
        self.scalars({**scalars, **extra}, row["step"])
        write_history(self.out, self.history, self.columns)

    def _train_state(self, step: int, elapsed: float, state: dict[str, Any]) -> dict[str, Any]:
        base = {
            "config": self.config.to_dict(),
            "step": step,
            "elapsed": elapsed,
            "cpu": self.cpu(),
            "history": list(self.history),
        }
        return {**base, **state}

    def save(
        self, model: SplitSeqTransformer, meta: dict[str, Any], step: int, state: dict[str, Any]
    ) -> None:
        """Write a resumable checkpoint after ``step`` steps; ``state`` is what resuming needs beyond the
        config, step, elapsed time and history."""
        save_checkpoint(self.out, model, self.kind, meta, self._train_state(step, self.elapsed(), state))

    def close(self) -> float:
        """Close the progress bar and TensorBoard; returns the elapsed seconds."""
        if self._bar is not None:
            self._bar.close()
        if self._writer is not None:
            self._writer.close()
        return self.elapsed()

    def finish(self, model: SplitSeqTransformer, meta: dict[str, Any], summary: dict[str, Any]) -> None:
        """Write the final checkpoint: weights, ``meta`` updated with ``summary``, the history, no optimizer."""
        wall = summary["wall_time_s"]
        state = self._train_state(self.config.steps, wall, {"finished": True, "summary": summary})
        save_checkpoint(self.out, model, self.kind, {**meta, **summary}, state)
