"""Pretraining: next-token prediction on fresh natural sequences (CleanRL-style single loop).

Every hyperparameter sits in :class:`PretrainConfig`. The loop draws a new batch from the sequence
generator each step (:class:`agents.data.NextTokenData`: nothing is ever repeated, so the post's
overfitting cannot occur), takes an AdamW step under a warmup + cosine learning-rate schedule, and
every ``eval_every`` steps measures accuracy on a held-out set, separately on even targets (the world
model: which even token follows an odd one) and odd targets (the natural policy); the best possible
accuracy on either is ``P_MATCH = 0.98 + 0.02/8 = 0.9825``.

Checkpoints are written atomically every ``checkpoint_every`` steps to ``out`` itself, with the full
training state (optimizer, step, torch and numpy generator states, data streams, history); running the
same config with the same ``out`` again resumes from the last one and ends bit-identical to a run that
was never interrupted. The finished checkpoint keeps weights, history and summary but no optimizer.

Logged scalars (TensorBoard, if ``log_dir`` is given): ``pretrain/loss``, ``pretrain/eval_loss``,
``pretrain/acc_even``, ``pretrain/acc_odd``, ``pretrain/acc_limit`` (0.9825), ``pretrain/lr``,
``pretrain/tokens_per_s``. The history is also written as CSV beside the checkpoint
(:func:`history_path`: columns ``step, loss, eval_loss, acc_even, acc_odd, lr, elapsed``).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from agents.checkpoint import CheckpointError, atomic_write, load_checkpoint, save_checkpoint
from agents.data import NextTokenData, eval_set, target_is_even
from agents.transformer import SIZES, SplitSeqTransformer, count_parameters
from seqenv.sequence import CONTEXT, P_MATCH

BUDGETS = ("full", "quick")
#: Recommended hyperparameters per size (the "full" budget), chosen on this 2-core CPU: README "Training agents".
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"steps": 6000, "batch_size": 256, "lr": 3e-3},
    "small": {"steps": 8000, "batch_size": 256, "lr": 3e-3},
    "medium": {"steps": 8000, "batch_size": 256, "lr": 2e-3},
    "large": {"steps": 16000, "batch_size": 256, "lr": 2e-3},
}
#: Steps of the "quick" budget.
QUICK_STEPS: dict[str, int] = {"tiny": 3000, "small": 2000, "medium": 2000, "large": 2000}
#: Default steps per size (the full budget).
DEFAULT_STEPS: dict[str, int] = {k: v["steps"] for k, v in PRESETS.items()}

HISTORY_COLUMNS = ("step", "loss", "eval_loss", "acc_even", "acc_odd", "lr", "elapsed")


@dataclass
class PretrainConfig:
    """Every knob of :func:`pretrain`.

    :param size: model size, one of :data:`agents.transformer.SIZES`.
    :param seed: seeds initialisation, dropout and the data streams.
    :param steps: optimizer steps (default: the size's :data:`PRESETS` value, as for ``batch_size`` and ``lr``).
    :param batch_size: examples per step (even: half even targets, half odd).
    :param lr: peak learning rate.
    :param min_lr_ratio: the cosine decays to ``lr * min_lr_ratio``.
    :param warmup_steps: linear warmup from 0 to ``lr``.
    :param weight_decay: AdamW weight decay on matrices and embeddings (the post: 0.01).
    :param beta1: AdamW beta1.
    :param beta2: AdamW beta2.
    :param grad_clip: clip the gradient norm to this (0 disables).
    :param eval_every: steps between held-out evaluations (and history rows).
    :param eval_samples: held-out examples per evaluation (half even targets).
    :param checkpoint_every: steps between resumable checkpoints (0: only the final one).
    :param threads: torch intra-op threads (0 leaves torch's setting alone).
    """

    size: str = "tiny"
    seed: int = 0
    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    min_lr_ratio: float = 0.05
    warmup_steps: int = 200
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    eval_every: int = 250
    eval_samples: int = 8192
    checkpoint_every: int = 1000
    threads: int = 0

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ValueError(f"unknown size {self.size!r}; expected one of {list(SIZES)}")
        for name in ("steps", "batch_size", "lr"):  # unset: the size's recommended value
            if getattr(self, name) is None:
                setattr(self, name, PRESETS[self.size][name])
        for name in ("steps", "batch_size", "eval_every", "eval_samples"):
            _check_int(name, getattr(self, name), 1)
        for name in ("warmup_steps", "checkpoint_every", "threads", "seed"):
            _check_int(name, getattr(self, name), 0)
        if self.batch_size % 2 or self.eval_samples % 2:
            raise ValueError(
                f"batch_size and eval_samples must be even, got {self.batch_size}, {self.eval_samples}"
            )
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        for name in ("min_lr_ratio", "beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0 + (name == "min_lr_ratio"):
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError(
                f"weight_decay and grad_clip must be >= 0, got {self.weight_decay}, {self.grad_clip}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def preset(cls, size: str, seed: int = 0, budget: str = "full", **overrides: Any) -> PretrainConfig:
        """The recommended config of ``size`` (see README "Training agents"), with ``overrides``.

        :param budget: ``"full"`` (the sweep's budget) or ``"quick"`` (the quick preset: a fraction of it).
        """
        if size not in SIZES:
            raise ValueError(f"unknown size {size!r}; expected one of {list(SIZES)}")
        if budget not in BUDGETS:
            raise ValueError(f"unknown budget {budget!r}; expected one of {BUDGETS}")
        base = {"steps": QUICK_STEPS[size]} if budget == "quick" else {}
        return cls(size=size, seed=seed, **{**base, **overrides})


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def lr_at(step: int, total: int, peak: float, warmup: int, min_ratio: float) -> float:
    """Learning rate for ``step`` (0-based): linear warmup to ``peak``, then cosine down to ``peak * min_ratio``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, betas: tuple[float, float]):
    """AdamW decaying matrices and embeddings only (nanoGPT's split: no decay on biases and LayerNorm gains)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, foreach=True)


@torch.no_grad()
def evaluate(
    model: SplitSeqTransformer, x: torch.Tensor, y: torch.Tensor, chunk: int = 4096
) -> dict[str, float]:
    """Held-out loss and accuracy on even and on odd targets (argmax of the 16 logits; limit 0.9825)."""
    was_training = model.training
    model.eval()
    logits = torch.cat([model(x[i : i + chunk]) for i in range(0, len(x), chunk)])
    model.train(was_training)
    correct = logits.argmax(-1) == y
    even = target_is_even(y)
    return {
        "eval_loss": F.cross_entropy(logits, y).item(),
        "acc_even": correct[even].double().mean().item(),
        "acc_odd": correct[~even].double().mean().item(),
    }


def history_path(out: str | Path) -> Path:
    """Where the history CSV of checkpoint ``out`` goes: ``<out>.history.csv``."""
    return Path(str(out) + ".history.csv")


def write_history(out: str | Path, rows: list[dict[str, float]], columns: tuple[str, ...]) -> Path:
    """Write ``rows`` atomically as the CSV beside ``out`` (pandas-readable)."""
    frame = pd.DataFrame(rows, columns=list(columns))
    return atomic_write(history_path(out), lambda tmp: frame.to_csv(tmp, index=False))


def _summary_writer(log_dir: str | Path | None, purge_step: int | None):
    if log_dir is None:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(log_dir), purge_step=purge_step)


def _resume_state(out: Path, cfg: PretrainConfig, kind: str) -> dict[str, Any] | None:
    """The train_state of an earlier run of the same config at ``out``, or None when there is none."""
    if not out.exists():
        return None
    ckpt = load_checkpoint(out)
    state = ckpt.get("train_state")
    if ckpt["kind"] != kind or not isinstance(state, dict) or "config" not in state:
        raise CheckpointError(
            f"{out} exists and is not a resumable {kind} checkpoint of this run; choose another --out "
            f"or pass resume=False to overwrite it"
        )
    if state["config"] != cfg.to_dict():
        diff = {
            k: (state["config"].get(k), v) for k, v in cfg.to_dict().items() if state["config"].get(k) != v
        }
        raise CheckpointError(
            f"{out} holds a run with a different config (saved vs requested: {diff}); choose another --out "
            f"or pass resume=False to overwrite it"
        )
    return state


def pretrain(
    cfg: PretrainConfig,
    out: str | Path,
    log_dir: str | Path | None = None,
    progress: bool = True,
    resume: bool = True,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Pretrain a transformer of ``cfg.size`` on next-token prediction and save it to ``out``.

    :param cfg: the run's hyperparameters.
    :param out: checkpoint path (``.pt``); the history CSV goes to :func:`history_path` ``(out)``.
    :param log_dir: TensorBoard directory (None: no TensorBoard).
    :param progress: show a tqdm progress bar.
    :param resume: continue from the checkpoint at ``out`` if it holds an unfinished run of the same
        config (a finished one is returned as is); False starts afresh and overwrites it.
    :param stop_after: stop (after checkpointing) once this many steps are done, as if interrupted.
    :return: summary dict: ``size, seed, params, steps, loss, eval_loss, acc_even, acc_odd, acc_limit,
        wall_time_s, tokens_per_s, out``.
    """
    out = Path(out)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = SplitSeqTransformer(cfg.size)
    model.train()
    n_params = count_parameters(model)
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2))
    data = NextTokenData(cfg.batch_size, cfg.seed)
    x_eval, y_eval = eval_set(cfg.eval_samples, cfg.seed)
    meta = {"size": cfg.size, "seed": cfg.seed, "params": n_params, "pretrain": cfg.to_dict()}

    start, history, elapsed_before = 0, [], 0.0
    loss_sum, loss_n = 0.0, 0
    state = _resume_state(out, cfg, "pretrained") if resume else None
    if state is not None:
        model.load_state_dict(load_checkpoint(out)["model"])
        history, start, elapsed_before = list(state["history"]), state["step"], state["elapsed"]
        if state.get("finished"):
            return state["summary"]
        optimizer.load_state_dict(state["optimizer"])
        data.load_state_dict(state["data"])
        torch.set_rng_state(state["torch_rng"])
        loss_sum, loss_n = state["loss_acc"]

    def train_state(step: int, elapsed: float) -> dict[str, Any]:
        return {
            "config": cfg.to_dict(),
            "step": step,
            "elapsed": elapsed,
            "history": list(history),
            "optimizer": optimizer.state_dict(),
            "data": data.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "loss_acc": (
                loss_sum,
                loss_n,
            ),  # the running mean of the training loss since the last history row
        }

    writer = _summary_writer(log_dir, purge_step=start or None)
    if writer is not None:
        writer.add_text("pretrain/config", str(cfg.to_dict()), start)
    tokens_per_step = cfg.batch_size * CONTEXT
    t0 = time.perf_counter()
    t_log = t0
    last_loss = math.nan
    bar = tqdm(total=cfg.steps, initial=start, desc=f"pretrain {cfg.size} s{cfg.seed}", disable=not progress)
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    for step in range(start, end):
        lr = lr_at(step, cfg.steps, cfg.lr, cfg.warmup_steps, cfg.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = data.batch()
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        loss_sum, loss_n = loss_sum + loss.item(), loss_n + 1
        bar.update(1)

        done = step + 1
        if done % cfg.eval_every == 0 or done == cfg.steps:
            now = time.perf_counter()
            ev = evaluate(model, x_eval, y_eval)
            last_loss = loss_sum / loss_n
            tok_s = (done - max(start, done - loss_n)) * tokens_per_step / (now - t_log)
            elapsed = elapsed_before + now - t0
            history.append({"step": done, "loss": last_loss, **ev, "lr": lr, "elapsed": elapsed})
            bar.set_postfix(loss=f"{last_loss:.3f}", even=f"{ev['acc_even']:.3f}", odd=f"{ev['acc_odd']:.3f}")
            if writer is not None:
                for key, value in (("loss", last_loss), *ev.items(), ("acc_limit", P_MATCH), ("lr", lr)):
                    writer.add_scalar(f"pretrain/{key}", value, done)
                writer.add_scalar("pretrain/tokens_per_s", tok_s, done)
            write_history(out, history, HISTORY_COLUMNS)
            loss_sum, loss_n, t_log = 0.0, 0, time.perf_counter()
        if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.steps:
            save_checkpoint(
                out, model, "pretrained", meta, train_state(done, elapsed_before + time.perf_counter() - t0)
            )
    bar.close()
    if writer is not None:
        writer.close()
    wall = elapsed_before + time.perf_counter() - t0
    if end < cfg.steps:  # stopped early on request: leave a resumable checkpoint
        save_checkpoint(out, model, "pretrained", meta, train_state(end, wall))
        return {"size": cfg.size, "seed": cfg.seed, "steps": end, "finished": False, "out": str(out)}
    last = history[-1]
    summary = {
        "size": cfg.size,
        "seed": cfg.seed,
        "params": n_params,
        "steps": cfg.steps,
        "loss": last["loss"],
        "eval_loss": last["eval_loss"],
        "acc_even": last["acc_even"],
        "acc_odd": last["acc_odd"],
        "acc_limit": P_MATCH,
        "wall_time_s": wall,
        "tokens_per_s": cfg.steps * tokens_per_step / wall,
        "out": str(out),
    }
    final_state = {"config": cfg.to_dict(), "step": cfg.steps, "elapsed": wall, "history": history}
    save_checkpoint(
        out, model, "pretrained", {**meta, **summary}, {**final_state, "finished": True, "summary": summary}
    )
    return summary


def config_fields() -> list[str]:
    """Names of :class:`PretrainConfig` fields (for the CLI)."""
    return [f.name for f in fields(PretrainConfig)]
