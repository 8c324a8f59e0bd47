"""Pretraining: next-token prediction on fresh natural sequences (CleanRL-style single loop).

Every hyperparameter sits in :class:`PretrainConfig`. The loop draws a new batch from the sequence
generator each step (:class:`agents.data.NextTokenData`: nothing is ever repeated, so the post's
overfitting cannot occur), takes an AdamW step under a warmup + cosine learning-rate schedule, and
every ``eval_every`` steps measures accuracy on a held-out set (:func:`agents.data.heldout_metrics`),
separately on even targets (the world model: which even token follows an odd one) and odd targets (the
natural policy); the best possible accuracy on either is ``P_MATCH = 0.98 + 0.02/8 = 0.9825``.

The run's plumbing is :class:`agents.training.TrainingRun`. Checkpoints are written atomically every
``checkpoint_every`` steps to ``out`` itself, with the full training state (optimizer, step, torch and
numpy generator states, data streams, history) as plain data; running the same config with the same
``out`` again resumes from the last one and ends bit-identical to a run that was never interrupted. The
finished checkpoint keeps weights, history and summary but no optimizer.

Logged scalars (TensorBoard, if ``log_dir`` is given): ``pretrain/loss``, ``pretrain/eval_loss``,
``pretrain/acc_even``, ``pretrain/acc_odd``, ``pretrain/acc_limit`` (0.9825), ``pretrain/lr``,
``pretrain/tokens_per_s``. The history is also written as CSV beside the checkpoint
(:func:`agents.training.history_path`: columns ``step, loss, eval_loss, acc_even, acc_odd, lr, elapsed``).

``device`` and ``precision`` (:mod:`agents.runtime`) say where the model trains and whether its forward pass
and loss run under bf16 autocast; the batches are made by numpy on the CPU and moved there. On the CPU in
fp32 the numbers are exactly those of the code before devices existed.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from agents.checkpoint import numpy_arrays
from agents.data import CounterfactualMix, NextTokenData, eval_set, heldout_metrics
from agents.runtime import (
    PRECISIONS,
    autocast,
    check_device,
    device_name,
    device_rng_state,
    set_device_rng_state,
)
from agents.training import (
    BUDGETS,
    RunningMeans,
    TrainingRun,
    check_fraction,
    check_known,
    clipped_step,
    history_path,
    lr_at,
    make_optimizer,
    renamed_names,
    run_device,
    set_lr,
    set_threads,
)
from agents.transformer import SIZES, SplitSeqTransformer, count_parameters
from seqenv.sequence import CONTEXT, P_MATCH
from seqenv.validation import check_int, check_number, check_positive_int, check_seed

#: Recommended hyperparameters per size (the "full" budget), chosen on this 2-core CPU: README "Training agents".
PRETRAIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "tiny": {"steps": 6000, "batch_size": 256, "lr": 3e-3},
    "small": {"steps": 8000, "batch_size": 256, "lr": 3e-3},
    "medium": {"steps": 8000, "batch_size": 256, "lr": 2e-3},
    "large": {"steps": 16000, "batch_size": 256, "lr": 2e-3},
}
#: Optimizer steps per budget (:data:`agents.training.BUDGETS`) and size.
PRETRAIN_BUDGETS: dict[str, dict[str, int]] = {
    "full": {size: values["steps"] for size, values in PRETRAIN_DEFAULTS.items()},
    "quick": {"tiny": 3000, "small": 2000, "medium": 2000, "large": 2000},
}
HISTORY_COLUMNS = ("step", "loss", "eval_loss", "acc_even", "acc_odd", "lr", "elapsed")


@dataclass
class PretrainConfig:
    """Every knob of :func:`pretrain`; ``None`` takes the size's :data:`PRETRAIN_DEFAULTS` value."""

    # --- the model and the data
    size: str = "tiny"
    """Model size, one of :data:`agents.transformer.SIZES`."""
    seed: int = 0
    """Seeds initialisation, dropout and the data streams."""
    steps: int | None = None
    """Optimizer steps."""
    batch_size: int | None = None
    """Examples per step (even: half even targets, half odd)."""
    world_model: str = "natural"
    """``"natural"`` (the post's): natural sequences only, where every odd token is the sequence's own.
    ``"counterfactual"``: a share ``counterfactual_share`` of the even-target examples get a uniformly drawn odd
    token before their target and the world's answer to it (:class:`agents.data.CounterfactualMix`), so the
    model learns the world after any action, which self-evaluation needs (docs: Results)."""
    counterfactual_share: float = 0.5
    """Share of the even-target examples made counterfactual (``world_model="counterfactual"``)."""

    # --- the optimizer: AdamW under linear warmup + cosine decay
    lr: float | None = None
    """Peak learning rate."""
    min_lr_ratio: float = 0.05
    """The cosine decays to ``lr * min_lr_ratio``."""
    warmup_steps: int = 200
    """Linear warmup from 0 to ``lr``."""
    weight_decay: float = 0.01
    """AdamW weight decay on matrices and embeddings (the post: 0.01)."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.99
    """AdamW beta2."""
    grad_clip: float = 1.0
    """Clip the gradient norm to this (0 disables)."""

    # --- plumbing: evaluation, checkpoints, threads, device, precision
    eval_every: int = 250
    """Steps between held-out evaluations (and history rows)."""
    eval_samples: int = 8192
    """Held-out examples per evaluation (even: half even targets)."""
    checkpoint_every: int = 1000
    """Steps between resumable checkpoints (0: only the final one)."""
    threads: int = 0
    """Torch intra-op threads (0 leaves torch's setting alone)."""
    device: str = "auto"
    """Where the model trains: ``"auto"`` (CUDA if available, else MPS, else the CPU), ``"cpu"``, ``"cuda"``,
    ``"cuda:<i>"`` or ``"mps"`` (:mod:`agents.runtime`). On the CPU the numbers are bit-identical to those of
    the code before devices existed; a GPU gives other numbers (other kernels, its own dropout generator)."""
    precision: str = "fp32"
    """``"fp32"`` or ``"bf16"``: autocast of the forward pass and loss to bfloat16 (weights, gradients and
    optimizer state stay fp32; held-out evaluation runs in fp32). docs: Training, devices and precision."""

    def __post_init__(self) -> None:
        check_known(self.size, "size", SIZES)
        for name in ("steps", "batch_size", "lr"):  # unset: the size's recommended value
            if getattr(self, name) is None:
                setattr(self, name, PRETRAIN_DEFAULTS[self.size][name])
        for name in ("steps", "batch_size", "eval_every", "eval_samples"):
            check_positive_int(getattr(self, name), name)
        for name in ("warmup_steps", "checkpoint_every", "threads"):
            check_int(getattr(self, name), name, 0)
        check_seed(self.seed)
        if self.batch_size % 2 or self.eval_samples % 2:
            raise ValueError(
                f"batch_size and eval_samples must be even, got {self.batch_size}, {self.eval_samples}"
            )
        check_number(self.lr, "lr", 0.0, strict=True)
        check_known(self.world_model, "world_model", ("natural", "counterfactual"))
        check_fraction(self.counterfactual_share, "counterfactual_share")
        check_fraction(self.min_lr_ratio, "min_lr_ratio")
        check_fraction(self.beta1, "beta1", below_one=True)
        check_fraction(self.beta2, "beta2", below_one=True)
        check_number(self.weight_decay, "weight_decay", 0.0)
        check_number(self.grad_clip, "grad_clip", 0.0)
        check_device(self.device)
        check_known(self.precision, "precision", PRECISIONS)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def preset(cls, size: str, seed: int = 0, budget: str = "full", **overrides: Any) -> PretrainConfig:
        """The recommended config of ``size`` (see README "Training agents"), with ``overrides``.

        :param budget: ``"full"`` (the sweep's budget) or ``"quick"`` (the quick preset: a fraction of it).
        """
        check_known(size, "size", SIZES)
        check_known(budget, "budget", BUDGETS)
        base = {"steps": PRETRAIN_BUDGETS["quick"][size]} if budget == "quick" else {}
        return cls(size=size, seed=seed, **{**base, **overrides})


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
        wall_time_s, tokens_per_s, device, precision, out``.
    """
    device = run_device(cfg.device, cfg.precision)
    run = TrainingRun(out, "pretrained", cfg, HISTORY_COLUMNS, resume=resume)
    if run.finished:
        return run.summary
    set_threads(cfg.threads)
    torch.manual_seed(cfg.seed)  # seeds every device's generator: on a GPU, dropout draws from its own
    model = SplitSeqTransformer(cfg.size).to(device)  # initialised on the CPU: the same weights everywhere
    model.train()
    n_params = count_parameters(model)
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2))
    data: NextTokenData | CounterfactualMix = NextTokenData(cfg.batch_size, cfg.seed)
    if cfg.world_model == "counterfactual":
        data = CounterfactualMix(data, cfg.counterfactual_share, cfg.seed)
    x_eval, y_eval = eval_set(cfg.eval_samples, cfg.seed)
    running = RunningMeans("loss")  # the training loss since the last history row
    meta = {
        "size": cfg.size,
        "seed": cfg.seed,
        "params": n_params,
        "pretrain": cfg.to_dict(),
        "device": str(device),
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),  # they can change the last bits: recorded with the device
    }
    if run.resumed:
        model.load_state_dict(run.weights)
        optimizer.load_state_dict(run.state["optimizer"])
        data.load_state_dict(numpy_arrays(run.state["data"]))
        torch.set_rng_state(run.state["torch_rng"])
        set_device_rng_state(run.state, device)
        running.load_state_dict(run.state["loss_acc"])

    def train_state() -> dict[str, Any]:
        return {
            "optimizer": optimizer.state_dict(),
            "data": data.state_dict(),
            "torch_rng": torch.get_rng_state(),
            **device_rng_state(device),
            "loss_acc": running.state_dict(),
        }

    run.start(f"pretrain {cfg.size} s{cfg.seed}", log_dir, progress, prefix="pretrain")
    tokens_per_step = cfg.batch_size * CONTEXT
    t_log = time.perf_counter()
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    for step in range(run.start_step, end):
        # ---- algorithm: one AdamW step of next-token cross-entropy on a fresh batch
        lr = lr_at(step, cfg.steps, cfg.lr, cfg.warmup_steps, cfg.min_lr_ratio)
        set_lr(optimizer, lr)
        x, y = data.batch()  # numpy-made on the CPU, moved to the device (a no-op on the CPU)
        x, y = x.to(device), y.to(device)
        with autocast(device, cfg.precision):
            loss = F.cross_entropy(model(x).float(), y)
        clipped_step(optimizer, model, loss, cfg.grad_clip)
        running.add(loss=loss.item())
        run.advance()

        # ---- evaluation and checkpoints
        done = step + 1
        if run.evaluation_due(done):
            now = time.perf_counter()
            ev = heldout_metrics(model, x_eval, y_eval)
            tok_s = (done - max(run.start_step, done - running.n)) * tokens_per_step / (now - t_log)
            row = {"step": done, **running.means(), **ev, "lr": lr, "elapsed": run.elapsed()}
            run.show(loss=row["loss"], even=ev["acc_even"], odd=ev["acc_odd"])
            run.log(row, acc_limit=P_MATCH, tokens_per_s=tok_s)
            running.reset()
            t_log = time.perf_counter()
        if run.checkpoint_due(done):
            run.save(model, meta, done, train_state())
    wall = run.close()
    if end < cfg.steps:  # stopped early on request: leave a resumable checkpoint
        run.save(model, meta, end, train_state())
        return {"size": cfg.size, "seed": cfg.seed, "steps": end, "finished": False, "out": str(run.out)}
    last = run.history[-1]
    summary = {
        "size": cfg.size,
        "seed": cfg.seed,
        "params": n_params,
        "steps": cfg.steps,
        **{key: last[key] for key in ("loss", "eval_loss", "acc_even", "acc_odd")},
        "acc_limit": P_MATCH,
        "wall_time_s": wall,
        "tokens_per_s": cfg.steps * tokens_per_step / wall,
        "device": str(device),
        "precision": cfg.precision,
        "out": str(run.out),
    }
    run.finish(model, meta, summary)
    return summary


def config_fields() -> list[str]:
    """Names of :class:`PretrainConfig` fields (for the CLI)."""
    return [f.name for f in fields(PretrainConfig)]


#: Names this module had before the redesign, served with a DeprecationWarning until their users move.
__getattr__ = renamed_names(
    __name__,
    {
        "evaluate": ("agents.data.heldout_metrics", heldout_metrics),
        "PRESETS": ("PRETRAIN_DEFAULTS", PRETRAIN_DEFAULTS),
        "QUICK_STEPS": ("PRETRAIN_BUDGETS['quick']", PRETRAIN_BUDGETS["quick"]),
        "DEFAULT_STEPS": ("PRETRAIN_BUDGETS['full']", PRETRAIN_BUDGETS["full"]),
    },
)

__all__ = [
    "HISTORY_COLUMNS",
    "PRETRAIN_BUDGETS",
    "PRETRAIN_DEFAULTS",
    "PretrainConfig",
    "config_fields",
    "heldout_metrics",
    "history_path",
    "pretrain",
]
