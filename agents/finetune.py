"""RL finetuning, the post's method (CleanRL-style single loop).

Each step, on ``batch_size`` natural histories from the native vector environment
(``gym.make_vec("SplitSeq-<task>-v0", vectorization_mode="vector_entry_point")``):

1. the model samples the odd token at temperature ``cfg.temperature`` (the post: 1) from its 8 odd-token logits;
2. the world writes ``s_{t+1}``; the sample succeeds when it lands in the task's good set;
3. policy updates, by ``cfg.method``:

   * ``"positive"`` (the post): cross-entropy on the chosen token of the successful samples only;
   * ``"reinforce"``: REINFORCE with a baseline, ``-(r - b) log pi(a|h)`` averaged over the batch;
     unsuccessful samples get a negative advantage and push their token down (the variant the post could
     not make work). ``b`` is the leave-one-out mean reward of the rollout; with ``group_size = K`` each
     history is played K times and ``b`` is the mean reward of the *same history's* other samples (RLOO).
     By default a rollout is 2048 histories at temperature 2, reused for 4 epochs of minibatch updates of
     256 through PPO's clipped importance ratio (``epochs``, ``minibatch_size``, ``clip``); the first update
     is exactly REINFORCE's;

4. "maintenance": after every policy update, one next-token step on natural contexts with even targets (the
   world-model question) through a second AdamW at a much lower learning rate (``maintenance_lr``), which
   keeps prediction intact.

Every ``eval_every`` steps the greedy (temperature 0) policy is scored *exactly* on a held-out set of
natural histories: its success is ``mean_i T(good | h_i, argmax pi(.|h_i))`` from
:func:`seqenv.sequence.transition_probs`, with no sampling noise; on the same histories the uniform policy
and the oracle give ``s_uniform`` and ``s_oracle``, and ``frac_of_oracle = (s - s_uniform) / (s_oracle -
s_uniform)``.

TensorBoard scalars: ``finetune/success`` (greedy, exact, held-out), ``finetune/sample_success`` (the
temperature-T rollouts), ``finetune/frac_of_oracle``, ``finetune/maintenance_acc`` (held-out even-target
accuracy), ``finetune/loss`` (policy loss), ``finetune/maintenance_loss``, ``finetune/lr``. The same
numbers go to the CSV beside the checkpoint (:func:`agents.pretrain.history_path`).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import seqenv  # noqa: F401  (registers the environments)
from agents.checkpoint import load_checkpoint, load_model, save_checkpoint
from agents.data import NextTokenData, eval_set
from agents.pretrain import (
    _check_int,
    _resume_state,
    _summary_writer,
    evaluate,
    lr_at,
    make_optimizer,
    write_history,
)
from agents.transformer import SplitSeqTransformer, count_parameters
from seqenv.sequence import natural_histories, transition_probs
from seqenv.tasks import TASKS, good_mask

METHODS = ("positive", "reinforce")
#: What ``None`` resolves to per method (measured: README "Training agents"). REINFORCE learns from every
#: sample and wants many distinct histories per update: 2048 per rollout in minibatches of 256.
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "positive": {"batch_size": 256, "lr": 1e-3, "epochs": 1, "minibatch_size": "batch_size", "dropout": 0.1,
                 "group_size": 1, "temperature": 1.0},
    "reinforce": {"batch_size": 2048, "lr": 5e-4, "epochs": 4, "minibatch_size": 256, "dropout": 0.0,
                  "group_size": 1, "temperature": 2.0},
}  # fmt: skip
BUDGETS = ("full", "quick")
#: Recommended steps per method and size (the "full" budget): README "Training agents".
PRESETS: dict[str, dict[str, int]] = {
    "positive": {"tiny": 3200, "small": 4000, "medium": 5000, "large": 6000},
    "reinforce": {"tiny": 200, "small": 200, "medium": 250, "large": 250},
}
#: REINFORCE's step budget per task, relative to the size's: ngood6 (6 good tokens of 8) needs about half.
TASK_STEP_FACTOR: dict[str, dict[str, float]] = {
    "positive": {"ngood2": 1.0, "ngood4": 1.0, "ngood6": 1.0},
    "reinforce": {"ngood2": 1.0, "ngood4": 1.0, "ngood6": 0.5},
}
#: Steps of the "quick" budget.
QUICK_STEPS: dict[str, dict[str, int]] = {
    "positive": {"tiny": 3200, "small": 1000, "medium": 1000, "large": 1000},
    "reinforce": {"tiny": 100, "small": 60, "medium": 60, "large": 60},
}
HISTORY_COLUMNS = (
    "step",
    "success",
    "frac_of_oracle",
    "sample_success",
    "maintenance_acc",
    "loss",
    "maintenance_loss",
    "lr",
    "elapsed",
)


@dataclass
class FinetuneConfig:
    """Every knob of :func:`finetune`.

    :param task: ``"ngood2"``, ``"ngood4"`` or ``"ngood6"``.
    :param method: ``"positive"`` (the post: successes only) or ``"reinforce"`` (with a baseline).
    :param seed: seeds dropout, sampling, the environment and the maintenance data.
    :param steps: policy steps (:meth:`preset` gives each size's recommended budget).
    :param batch_size: environment samples per step (one rollout of the vector env); ``None``: 256 for
        ``positive``, 2048 for ``reinforce`` (with 256 it learned 2-3x slower per sample: too few histories
        per update).
    :param epochs: passes over each rollout; with more than one, updates after the first use PPO's clipped
        importance ratio (see :func:`policy_loss`). ``epochs=1, minibatch_size=batch_size`` is the plain method.
        ``None``: the method's measured best, 1 for ``positive`` (reusing successes collapses its policy onto
        one token), 4 for ``reinforce``.
    :param group_size: samples per history: the rollout plays ``batch_size // group_size`` fresh histories
        ``group_size`` times each (divides ``batch_size``). With ``reinforce`` and ``group_size >= 2`` each
        sample's baseline is the mean reward of its history's other samples. ``None``: 1 (measured: at an
        equal sample budget, fewer distinct histories cost more than the per-history baseline gains).
    :param minibatch_size: samples per policy update; ``None``: ``batch_size`` for ``positive``, 256 for
        ``reinforce``.
    :param clip: PPO clip range of the importance ratio.
    :param lr: peak learning rate of the policy update; ``None``: 1e-3 for ``positive``, 5e-4 for ``reinforce``.
    :param warmup_steps: linear warmup of both learning rates.
    :param min_lr_ratio: both learning rates decay by a cosine to this fraction (1: constant after warmup,
        which learned faster than decaying within the budgets here).
    :param temperature: sampling temperature of the rollouts; the policy updated is the tempered one, and the
        greedy policy (its argmax) is the same at every temperature. ``None``: 1 for ``positive`` (the post),
        2 for ``reinforce`` (the pretrained policy is nearly deterministic, it picks the natural odd token
        ~95% of the time for ``large``, and a hotter sampler explores the other tokens; measured on ngood2).
    :param dropout: dropout rate during finetuning; ``None`` picks the method's measured best (README
        "Training agents"): ``positive`` keeps the pretraining's 0.1 (without that noise the positive-only
        policy collapses onto one token and stops exploring), ``reinforce`` uses 0 (dropout noise in the
        sampled policy and its gradient slowed it down).
    :param maintenance_lr: peak learning rate of the next-token maintenance step (much lower than ``lr``).
    :param maintenance_batch: even-target examples per maintenance step (0 disables maintenance).
    :param weight_decay: AdamW weight decay (0.01, as in pretraining).
    :param grad_clip: gradient-norm clip of each update (0 disables).
    :param eval_every: steps between held-out evaluations (``None``: ``steps // 10``, at least 1).
    :param eval_samples: held-out histories per evaluation (and even-target examples for maintenance accuracy).
    :param checkpoint_every: steps between resumable checkpoints (0: only the final one).
    :param threads: torch intra-op threads (0 leaves torch's setting alone).
    """

    task: str = "ngood4"
    method: str = "positive"
    seed: int = 0
    steps: int = 1000
    batch_size: int | None = None
    epochs: int | None = None
    group_size: int | None = None
    minibatch_size: int | None = None
    clip: float = 0.2
    lr: float | None = None
    warmup_steps: int = 20
    min_lr_ratio: float = 1.0
    temperature: float | None = None
    dropout: float | None = None
    maintenance_lr: float = 1e-4
    maintenance_batch: int = 32
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    eval_every: int | None = None
    eval_samples: int = 8192
    checkpoint_every: int = 0
    threads: int = 0

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; expected one of {sorted(TASKS)}")
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; expected one of {METHODS}")
        best = METHOD_DEFAULTS[self.method]
        if self.eval_every is None and isinstance(self.steps, int):
            self.eval_every = max(1, self.steps // 10)
        if self.batch_size is None:
            self.batch_size = best["batch_size"]
        _check_int("batch_size", self.batch_size, 1)
        for name in (
            "lr",
            "epochs",
            "minibatch_size",
            "dropout",
            "group_size",
            "temperature",
        ):  # the method's best
            if getattr(self, name) is None:
                value = self.batch_size if best[name] == "batch_size" else best[name]
                setattr(self, name, min(value, self.batch_size) if name == "minibatch_size" else value)
        for name in ("steps", "epochs", "group_size", "minibatch_size", "eval_every", "eval_samples"):
            _check_int(name, getattr(self, name), 1)
        if self.minibatch_size > self.batch_size:
            raise ValueError(
                f"minibatch_size={self.minibatch_size} must be at most batch_size={self.batch_size}"
            )
        if self.batch_size % self.group_size:
            raise ValueError(
                f"group_size={self.group_size} must divide batch_size={self.batch_size} (histories x samples each)"
            )
        if self.method == "reinforce" and self.batch_size < 2:
            raise ValueError(
                f"method='reinforce' needs batch_size >= 2 for its baseline, got {self.batch_size}"
            )
        for name in ("warmup_steps", "maintenance_batch", "checkpoint_every", "threads", "seed"):
            _check_int(name, getattr(self, name), 0)
        for name in ("lr", "temperature"):
            if not (getattr(self, name) > 0 and math.isfinite(getattr(self, name))):
                raise ValueError(f"{name} must be a positive number, got {getattr(self, name)}")
        if not (self.maintenance_lr >= 0 and math.isfinite(self.maintenance_lr)):
            raise ValueError(f"maintenance_lr must be a number >= 0, got {self.maintenance_lr}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be None or in [0, 1), got {self.dropout}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError(
                f"weight_decay and grad_clip must be >= 0, got {self.weight_decay}, {self.grad_clip}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def preset(
        cls,
        size: str,
        task: str = "ngood4",
        method: str = "positive",
        seed: int = 0,
        budget: str = "full",
        **overrides: Any,
    ) -> FinetuneConfig:
        """The recommended config for a model of ``size`` (see README "Training agents"), with ``overrides``;
        it checkpoints every tenth of its steps.

        :param budget: ``"full"`` (the sweep's budget) or ``"quick"`` (the quick preset).
        """
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
        if size not in PRESETS[method]:
            raise ValueError(f"unknown size {size!r}; expected one of {list(PRESETS[method])}")
        if budget not in BUDGETS:
            raise ValueError(f"unknown budget {budget!r}; expected one of {BUDGETS}")
        steps = (QUICK_STEPS if budget == "quick" else PRESETS)[method][size]
        if budget == "full" and task in TASK_STEP_FACTOR[method]:
            steps = max(1, round(steps * TASK_STEP_FACTOR[method][task]))
        steps = overrides.pop("steps", steps)
        # a resumable checkpoint every tenth of the run: an interrupted run loses at most 10% of its work
        base = {"steps": steps, "checkpoint_every": max(1, steps // 10)}
        return cls(task=task, method=method, seed=seed, **{**base, **overrides})


def advantages(rewards: torch.Tensor, method: str, group_size: int = 1) -> torch.Tensor:
    """Per-sample weights of ``log pi(a|h)`` for a rollout's 0/1 ``rewards``.

    ``"positive"``: ``r * B / sum(r)``, so that the batch mean of ``A log pi`` is the mean log-likelihood of
    the successful samples (cross-entropy on them only; all zero if none succeeded).
    ``"reinforce"``: ``r - b`` with a leave-one-out baseline, which keeps the gradient unbiased; failures get
    a negative advantage. With ``group_size = 1``, ``b_i = (sum(r) - r_i) / (B - 1)`` over the batch; with
    ``group_size = K >= 2`` the rollout is ``B / K`` histories played ``K`` times each (consecutive samples)
    and ``b_i`` is the mean reward of the other ``K - 1`` samples of the same history, so a history on which
    every token succeeds (or fails) teaches nothing and only the differences between tokens count.
    """
    if method == "positive":
        hits = rewards.sum()
        return rewards * (len(rewards) / hits) if hits > 0 else torch.zeros_like(rewards)
    if method == "reinforce":
        if group_size == 1:
            if len(rewards) < 2:
                raise ValueError("the leave-one-out baseline needs at least 2 samples per rollout")
            return rewards - (rewards.sum() - rewards) / (len(rewards) - 1)
        if group_size < 1 or len(rewards) % group_size:
            raise ValueError(
                f"group_size={group_size} must be >= 1 and divide the rollout's {len(rewards)} samples"
            )
        g = rewards.reshape(-1, group_size)
        return (g - (g.sum(1, keepdim=True) - g) / (group_size - 1)).reshape(-1)
    raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")


def policy_loss(
    logits: torch.Tensor,
    actions: torch.Tensor,
    adv: torch.Tensor,
    old_logp: torch.Tensor | None = None,
    clip: float = 0.2,
) -> torch.Tensor:
    """Policy-gradient loss of 8-way ``logits`` for sampled ``actions`` weighted by advantages ``adv``.

    Without ``old_logp``: ``-mean(A log pi(a|h))``. With the log-probabilities ``old_logp`` under which the
    actions were sampled: PPO's clipped surrogate ``-mean(min(rho A, clip(rho, 1 - c, 1 + c) A))``,
    ``rho = pi(a|h) / pi_old(a|h)``, which lets a rollout be reused for several updates; while the policy has
    not moved (``rho = 1``) its gradient is exactly that of ``-mean(A log pi)``.
    """
    logp = torch.log_softmax(logits, dim=-1).gather(1, actions[:, None]).squeeze(1)
    if old_logp is None:
        return -(adv * logp).mean()
    ratio = torch.exp(logp - old_logp)
    return -torch.min(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv).mean()


class SuccessEvaluator:
    """Exact greedy success of a model on fixed held-out natural histories, with the uniform and oracle levels.

    :param task: the task whose good set counts.
    :param n: histories.
    :param seed: seeds the histories.
    """

    def __init__(self, task: str, n: int, seed: int):
        self.histories = natural_histories(n, np.random.default_rng([seed, 0x5EC5]))
        self.tokens = torch.from_numpy(self.histories)
        good = transition_probs(self.histories)[..., good_mask(task)].sum(-1)  # (n, 8): P(good | h, a)
        self.good_prob = good
        self.s_uniform = float(good.mean())
        self.s_oracle = float(good.max(axis=1).mean())

    @torch.no_grad()
    def __call__(self, model: SplitSeqTransformer, chunk: int = 4096) -> dict[str, float]:
        was_training = model.training
        model.eval()
        actions = torch.cat(
            [
                model.policy_logits(self.tokens[i : i + chunk]).argmax(-1)
                for i in range(0, len(self.tokens), chunk)
            ]
        ).numpy()
        model.train(was_training)
        s = float(self.good_prob[np.arange(len(actions)), actions].mean())
        return {"success": s, "frac_of_oracle": (s - self.s_uniform) / (self.s_oracle - self.s_uniform)}


def finetune(
    pretrained: str | Path,
    cfg: FinetuneConfig,
    out: str | Path,
    log_dir: str | Path | None = None,
    progress: bool = True,
    resume: bool = True,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Finetune the pretrained checkpoint ``pretrained`` on ``cfg.task`` and save the result to ``out``.

    :param pretrained: a checkpoint written by :func:`agents.pretrain.pretrain` (or any model checkpoint).
    :param cfg: the run's hyperparameters.
    :param out: checkpoint path; its meta holds ``size, seed, task, method, params, pretrained`` and the summary.
    :param log_dir: TensorBoard directory (None: no TensorBoard).
    :param progress: show a tqdm progress bar.
    :param resume: continue from an unfinished run of the same config at ``out`` (a finished one is
        returned as is); False starts afresh and overwrites it.
    :param stop_after: stop (after checkpointing) once this many steps are done, as if interrupted.
    :return: summary dict: ``size, seed, task, method, params, steps, success, frac_of_oracle, s_uniform,
        s_oracle, success_pretrained, maintenance_acc, maintenance_acc_pretrained, wall_time_s, out``.
    """
    pretrained, out = Path(pretrained), Path(out)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model, pre = load_model(pretrained)
    size = pre["meta"].get("size", "custom")
    if cfg.maintenance_lr >= cfg.lr:
        raise ValueError(
            f"maintenance_lr={cfg.maintenance_lr} must be much lower than lr={cfg.lr} (the post's method)"
        )
    model.set_dropout(cfg.dropout)
    n_params = count_parameters(model)
    meta = {
        "size": size,
        "seed": cfg.seed,
        "pretrain_seed": pre["meta"].get("seed"),
        "task": cfg.task,
        "method": cfg.method,
        "params": n_params,
        "pretrained": str(pretrained.resolve()),
        "finetune": cfg.to_dict(),
    }
    torch.manual_seed(cfg.seed)
    policy_opt = make_optimizer(model, cfg.lr, cfg.weight_decay, (0.9, 0.99))
    maint_opt = make_optimizer(model, cfg.maintenance_lr, cfg.weight_decay, (0.9, 0.99))
    envs = gym.make_vec(
        f"SplitSeq-{cfg.task}-v0", num_envs=cfg.batch_size, vectorization_mode="vector_entry_point"
    )
    obs, _ = envs.reset(seed=cfg.seed)
    maint_data = NextTokenData(
        max(cfg.maintenance_batch, 1), np.random.default_rng([cfg.seed, 0x3A17]), "even"
    )
    judge = SuccessEvaluator(cfg.task, cfg.eval_samples, cfg.seed)
    x_even, y_even = eval_set(cfg.eval_samples, cfg.seed, "even")

    def measure() -> dict[str, float]:
        ev = evaluate(model, x_even, y_even)
        return {**judge(model), "maintenance_acc": ev["acc_even"]}

    start, history, elapsed_before, acc = 0, [], 0.0, [0.0, 0.0, 0.0, 0]
    state = _resume_state(out, cfg, "finetuned") if resume else None
    if state is not None:
        model.load_state_dict(load_checkpoint(out)["model"])
        history, start, elapsed_before = list(state["history"]), state["step"], state["elapsed"]
        if state.get("finished"):
            return state["summary"]
        policy_opt.load_state_dict(state["policy_optimizer"])
        maint_opt.load_state_dict(state["maintenance_optimizer"])
        maint_data.load_state_dict(state["data"])
        envs, obs, acc = state["env"], state["obs"], list(state["acc"])
        torch.set_rng_state(state["torch_rng"])
        before = state["before"]
    else:
        before = measure()

    def train_state(step: int, elapsed: float) -> dict[str, Any]:
        return {
            "config": cfg.to_dict(),
            "step": step,
            "elapsed": elapsed,
            "history": list(history),
            "before": before,
            "policy_optimizer": policy_opt.state_dict(),
            "maintenance_optimizer": maint_opt.state_dict(),
            "data": maint_data.state_dict(),
            "env": envs,
            "obs": obs,
            "acc": list(acc),
            "torch_rng": torch.get_rng_state(),
        }

    writer = _summary_writer(log_dir, purge_step=start or None)
    if writer is not None and start == 0:
        writer.add_text("finetune/config", str(cfg.to_dict()), 0)
        for key, value in before.items():
            writer.add_scalar(f"finetune/{key}", value, 0)
    model.train()
    plain = (
        cfg.epochs == 1 and cfg.minibatch_size == cfg.batch_size
    )  # one update per rollout: no ratio needed
    t0 = time.perf_counter()
    bar = tqdm(
        total=cfg.steps, initial=start, desc=f"finetune {size} {cfg.task} {cfg.method}", disable=not progress
    )
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    for step in range(start, end):
        frac = lr_at(step, cfg.steps, 1.0, cfg.warmup_steps, cfg.min_lr_ratio)
        for group in policy_opt.param_groups:
            group["lr"] = cfg.lr * frac
        for group in maint_opt.param_groups:
            group["lr"] = cfg.maintenance_lr * frac

        # 1-2: sample the odd token at temperature T (the policy as it trains: with its dropout), let the world answer
        if cfg.group_size > 1:  # replay each of the first B/K fresh histories K times (consecutive rows)
            obs, _ = envs.reset(
                options={"histories": np.repeat(obs[: cfg.batch_size // cfg.group_size], cfg.group_size, 0)}
            )
        h = torch.from_numpy(obs)
        with torch.no_grad():
            logits = model.policy_logits(h) / cfg.temperature
            actions = torch.multinomial(torch.softmax(logits, dim=-1), 1).squeeze(1)
            old_logp = torch.log_softmax(logits, dim=-1).gather(1, actions[:, None]).squeeze(1)
        obs, rewards, _, _, _ = envs.step(actions.numpy())
        adv = advantages(torch.from_numpy(rewards).float(), cfg.method, cfg.group_size)

        # 3-4: epochs x minibatches of policy updates (the first is exactly the plain update), each followed by
        # a maintenance next-token step on even targets at the low learning rate
        losses, m_losses = [], []
        for _ in range(cfg.epochs):
            order = torch.randperm(cfg.batch_size)
            for i in range(0, cfg.batch_size, cfg.minibatch_size):
                idx = order[i : i + cfg.minibatch_size]
                mb_logits = model.policy_logits(h[idx]) / cfg.temperature
                loss = policy_loss(
                    mb_logits, actions[idx], adv[idx], None if plain else old_logp[idx], cfg.clip
                )
                policy_opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                policy_opt.step()
                losses.append(loss.item())
                if cfg.maintenance_batch and cfg.maintenance_lr > 0:
                    x, y = maint_data.batch()
                    m_loss = F.cross_entropy(model(x), y)
                    maint_opt.zero_grad(set_to_none=True)
                    m_loss.backward()
                    if cfg.grad_clip:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    maint_opt.step()
                    m_losses.append(m_loss.item())
        loss, m_loss = float(np.mean(losses)), float(np.mean(m_losses)) if m_losses else 0.0
        acc = [acc[0] + loss, acc[1] + m_loss, acc[2] + float(rewards.mean()), acc[3] + 1]
        bar.update(1)

        done = step + 1
        if done % cfg.eval_every == 0 or done == cfg.steps:
            ev = measure()
            n = acc[3]
            row = {
                "step": done,
                **ev,
                "sample_success": acc[2] / n,
                "loss": acc[0] / n,
                "maintenance_loss": acc[1] / n,
                "lr": cfg.lr * frac,
                "elapsed": elapsed_before + time.perf_counter() - t0,
            }
            history.append(row)
            acc = [0.0, 0.0, 0.0, 0]
            bar.set_postfix(success=f"{ev['success']:.3f}", maint=f"{ev['maintenance_acc']:.3f}")
            if writer is not None:
                for key in HISTORY_COLUMNS[1:-1]:
                    writer.add_scalar(f"finetune/{key}", row[key], done)
            write_history(out, history, HISTORY_COLUMNS)
        if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.steps:
            save_checkpoint(
                out, model, "finetuned", meta, train_state(done, elapsed_before + time.perf_counter() - t0)
            )
    bar.close()
    if writer is not None:
        writer.close()
    wall = elapsed_before + time.perf_counter() - t0
    if end < cfg.steps:
        save_checkpoint(out, model, "finetuned", meta, train_state(end, wall))
        return {**meta, "steps": end, "finished": False, "out": str(out)}
    last = history[-1]
    summary = {
        "size": size,
        "seed": cfg.seed,
        "task": cfg.task,
        "method": cfg.method,
        "params": n_params,
        "steps": cfg.steps,
        "success": last["success"],
        "frac_of_oracle": last["frac_of_oracle"],
        "s_uniform": judge.s_uniform,
        "s_oracle": judge.s_oracle,
        "success_pretrained": before["success"],
        "maintenance_acc": last["maintenance_acc"],
        "maintenance_acc_pretrained": before["maintenance_acc"],
        "wall_time_s": wall,
        "out": str(out),
    }
    final_state = {"config": cfg.to_dict(), "step": cfg.steps, "elapsed": wall, "history": history}
    save_checkpoint(
        out, model, "finetuned", {**meta, **summary}, {**final_state, "finished": True, "summary": summary}
    )
    return summary


__all__ = ["METHODS", "FinetuneConfig", "SuccessEvaluator", "advantages", "finetune", "policy_loss"]
