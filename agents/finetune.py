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
   keeps the prediction of the natural sequence intact. Natural contexts only show the world answering the
   sequence's own odd token; ``world_model="counterfactual"`` (or ``"policy"``) also shows it answering other
   actions (:class:`agents.data.MaintenanceData`), which self-evaluation needs.

Every ``eval_every`` steps the greedy (temperature 0) policy is scored *exactly* on a held-out set of
natural histories: its success is ``mean_i T(good | h_i, argmax pi(.|h_i))`` from
:func:`seqenv.sequence.transition_probs`, with no sampling noise; on the same histories the uniform policy
and the oracle give ``s_uniform`` and ``s_oracle``, and ``frac_of_oracle = (s - s_uniform) / (s_oracle -
s_uniform)``.

TensorBoard scalars: ``finetune/success`` (greedy, exact, held-out), ``finetune/sample_success`` (the
temperature-T rollouts), ``finetune/frac_of_oracle``, ``finetune/maintenance_acc`` (held-out even-target
accuracy), ``finetune/loss`` (policy loss), ``finetune/maintenance_loss``, ``finetune/lr``. The same
numbers go to the CSV beside the checkpoint (:func:`agents.training.history_path`). The run's plumbing
(resume, TensorBoard, CSV, progress bar, checkpoints) is :class:`agents.training.TrainingRun`; the
configuration (:class:`~agents.finetune_config.FinetuneConfig`, methods, budgets) is :mod:`agents.finetune_config`.

On a GPU (``cfg.device``) the model, the rollout's histories, actions and advantages live there; the
environment and the maintenance data stay numpy on the CPU, and the minibatch order is drawn by the CPU's
generator on every device. ``cfg.precision="bf16"`` autocasts the rollouts' and updates' forward passes and
losses; the held-out evaluations run in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F

import seqenv  # noqa: F401  (registers the environments)
from agents.checkpoint import load_model, numpy_arrays
from agents.data import MaintenanceData, SuccessEvaluator, eval_set, heldout_metrics
from agents.finetune_config import FINETUNE_BUDGETS, FINETUNE_METHODS, METHOD_DEFAULTS, FinetuneConfig
from agents.runtime import autocast, device_name, device_rng_state, model_device, set_device_rng_state
from agents.training import (
    RunningMeans,
    TrainingRun,
    clipped_step,
    lr_at,
    make_optimizer,
    renamed_names,
    run_device,
    set_lr,
    set_threads,
)
from agents.transformer import SplitSeqTransformer, count_parameters

#: the columns of the history CSV beside the checkpoint (one row per evaluation)
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


# ------------------------------------------------------------------------------------------- the algorithm
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
    raise ValueError(f"unknown method {method!r}; expected one of {FINETUNE_METHODS}")


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


@dataclass
class Rollout:
    """One rollout: the histories played, the tokens sampled, their log-probabilities under the sampling
    (tempered) policy, and the 0/1 rewards the world gave."""

    histories: torch.Tensor
    actions: torch.Tensor
    logp: torch.Tensor
    rewards: np.ndarray


def collect_rollout(
    model: SplitSeqTransformer, envs: gym.vector.VectorEnv, obs: np.ndarray, cfg: FinetuneConfig
) -> tuple[Rollout, np.ndarray]:
    """Sample the odd token at temperature ``cfg.temperature`` (the policy as it trains: with its dropout) on
    the histories ``obs`` and let the world answer; returns the rollout and the next observations. With
    ``group_size`` K the first ``batch_size / K`` histories are replayed K times each (consecutive rows)."""
    if cfg.group_size > 1:
        replayed = np.repeat(obs[: cfg.batch_size // cfg.group_size], cfg.group_size, 0)
        obs, _ = envs.reset(options={"histories": replayed})
    device = model_device(model)
    h = torch.from_numpy(obs).to(device)  # the env is numpy on the CPU; the rollout lives on the device
    with torch.no_grad():
        with autocast(device, cfg.precision):
            logits = model.policy_logits(h).float() / cfg.temperature
        actions = torch.multinomial(torch.softmax(logits, dim=-1), 1).squeeze(1)
        logp = torch.log_softmax(logits, dim=-1).gather(1, actions[:, None]).squeeze(1)
    next_obs, rewards, _, _, _ = envs.step(actions.cpu().numpy())
    return Rollout(h, actions, logp, rewards), next_obs


def update(
    model: SplitSeqTransformer,
    rollout: Rollout,
    adv: torch.Tensor,
    policy_opt: torch.optim.Optimizer,
    maint_opt: torch.optim.Optimizer,
    maint_data: MaintenanceData,
    cfg: FinetuneConfig,
) -> tuple[float, float]:
    """``epochs`` x minibatches of policy updates on ``rollout`` (the first is exactly the plain update), each
    followed by a maintenance next-token step on even targets at the low learning rate.

    :return: the mean policy loss and the mean maintenance loss (0 without maintenance).
    """
    plain = cfg.epochs == 1 and cfg.minibatch_size == cfg.batch_size  # one update per rollout: no ratio
    maintain = cfg.maintenance_batch and cfg.maintenance_lr > 0
    device = model_device(model)
    adv = adv.to(device)
    losses, m_losses = [], []
    for _ in range(cfg.epochs):
        order = torch.randperm(cfg.batch_size)  # the CPU's generator, on every device
        for i in range(0, cfg.batch_size, cfg.minibatch_size):
            idx = order[i : i + cfg.minibatch_size].to(device)
            with autocast(device, cfg.precision):
                logits = model.policy_logits(rollout.histories[idx]).float() / cfg.temperature
                old_logp = None if plain else rollout.logp[idx]
                loss = policy_loss(logits, rollout.actions[idx], adv[idx], old_logp, cfg.clip)
            clipped_step(policy_opt, model, loss, cfg.grad_clip)
            losses.append(loss.item())
            if maintain:
                x, y = maint_data.batch(rollout.histories, rollout.actions)
                x, y = x.to(device), y.to(device)
                with autocast(device, cfg.precision):
                    m_loss = F.cross_entropy(model(x).float(), y)
                clipped_step(maint_opt, model, m_loss, cfg.grad_clip)
                m_losses.append(m_loss.item())
    return float(np.mean(losses)), float(np.mean(m_losses)) if m_losses else 0.0


# ------------------------------------------------------------------------------------------------ the run
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
        s_oracle, success_pretrained, maintenance_acc, maintenance_acc_pretrained, wall_time_s, device,
        precision, out``.
    """
    pretrained = Path(pretrained)
    device = run_device(cfg.device, cfg.precision)
    set_threads(cfg.threads)
    model, pre = load_model(pretrained, device=device)
    if cfg.maintenance_lr >= cfg.lr:
        raise ValueError(
            f"maintenance_lr={cfg.maintenance_lr} must be much lower than lr={cfg.lr} (the post's method)"
        )
    run = TrainingRun(out, "finetuned", cfg, HISTORY_COLUMNS, resume=resume)
    if run.finished:
        return run.summary
    size = pre["meta"].get("size", "custom")
    model.set_dropout(cfg.dropout)
    meta = {
        "size": size,
        "seed": cfg.seed,
        "pretrain_seed": pre["meta"].get("seed"),
        "task": cfg.task,
        "method": cfg.method,
        "params": count_parameters(model),
        "pretrained": str(pretrained.resolve()),
        "finetune": cfg.to_dict(),
        "device": str(device),
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),  # they can change the last bits: recorded with the device
    }

    # ---- setup: optimizers, the vector env, maintenance data, the held-out judge
    torch.manual_seed(cfg.seed)  # seeds every device's generator: on a GPU, sampling and dropout use its own
    policy_opt = make_optimizer(model, cfg.lr, cfg.weight_decay, (0.9, 0.99))
    maint_opt = make_optimizer(model, cfg.maintenance_lr, cfg.weight_decay, (0.9, 0.99))
    envs = gym.make_vec(
        f"SplitSeq-{cfg.task}-v0", num_envs=cfg.batch_size, vectorization_mode="vector_entry_point"
    )
    obs, _ = envs.reset(seed=cfg.seed)
    maint_data = MaintenanceData(cfg.maintenance_batch, cfg.seed, cfg.world_model, cfg.counterfactual_share)
    judge = SuccessEvaluator(cfg.task, cfg.eval_samples, cfg.seed)
    x_even, y_even = eval_set(cfg.eval_samples, cfg.seed, "even")
    running = RunningMeans("loss", "maintenance_loss", "sample_success")  # since the last history row

    def evaluate_policy() -> dict[str, float]:
        return {**judge(model), "maintenance_acc": heldout_metrics(model, x_even, y_even)["acc_even"]}

    if run.resumed:
        state = run.state
        model.load_state_dict(run.weights)
        policy_opt.load_state_dict(state["policy_optimizer"])
        maint_opt.load_state_dict(state["maintenance_optimizer"])
        maint_data.load_state_dict(numpy_arrays(state["data"]))
        envs.load_state_dict(numpy_arrays(state["env"]))
        obs = numpy_arrays(state["obs"])
        running.load_state_dict(state["acc"])
        torch.set_rng_state(state["torch_rng"])
        set_device_rng_state(state, device)
        before = state["before"]
    else:
        before = evaluate_policy()

    def train_state() -> dict[str, Any]:
        return {
            "before": before,
            "policy_optimizer": policy_opt.state_dict(),
            "maintenance_optimizer": maint_opt.state_dict(),
            "data": maint_data.state_dict(),
            "env": envs.state_dict(),
            "obs": obs,
            "acc": running.state_dict(),
            "torch_rng": torch.get_rng_state(),
            **device_rng_state(device),
        }

    run.start(f"finetune {size} {cfg.task} {cfg.method}", log_dir, progress, prefix="finetune")
    if not run.resumed:
        run.scalars(before, 0)
    model.train()
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    for step in range(run.start_step, end):
        frac = lr_at(step, cfg.steps, 1.0, cfg.warmup_steps, cfg.min_lr_ratio)
        set_lr(policy_opt, cfg.lr * frac)
        set_lr(maint_opt, cfg.maintenance_lr * frac)
        # 1. rollout: the policy samples the odd token, the world writes s_{t+1}
        rollout, obs = collect_rollout(model, envs, obs, cfg)
        # 2. advantages of the 0/1 rewards
        adv = advantages(torch.from_numpy(rollout.rewards).float(), cfg.method, cfg.group_size)
        # 3. policy updates, each with its maintenance step
        loss, m_loss = update(model, rollout, adv, policy_opt, maint_opt, maint_data, cfg)
        running.add(loss=loss, maintenance_loss=m_loss, sample_success=float(rollout.rewards.mean()))
        run.advance()
        # 4. evaluate the greedy policy exactly on held-out histories; checkpoint
        done = step + 1
        if run.evaluation_due(done):
            ev = evaluate_policy()
            run.show(success=ev["success"], maint=ev["maintenance_acc"])
            run.log({"step": done, **ev, **running.means(), "lr": cfg.lr * frac, "elapsed": run.elapsed()})
            running.reset()
        if run.checkpoint_due(done):
            run.save(model, meta, done, train_state())
    wall = run.close()
    if end < cfg.steps:
        run.save(model, meta, end, train_state())
        return {**meta, "steps": end, "finished": False, "out": str(run.out)}
    last = run.history[-1]
    summary = {
        **{key: meta[key] for key in ("size", "seed", "task", "method", "params")},
        "steps": cfg.steps,
        "success": last["success"],
        "frac_of_oracle": last["frac_of_oracle"],
        "s_uniform": judge.s_uniform,
        "s_oracle": judge.s_oracle,
        "success_pretrained": before["success"],
        "maintenance_acc": last["maintenance_acc"],
        "maintenance_acc_pretrained": before["maintenance_acc"],
        "wall_time_s": wall,
        "device": str(device),
        "precision": cfg.precision,
        "out": str(run.out),
    }
    run.finish(model, meta, summary)
    return summary


def _per_size(by_method: dict[str, dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    return {
        method: {size: t["ngood4"] for size, t in by_size.items()} for method, by_size in by_method.items()
    }


#: Names this module had before the redesign, served with a DeprecationWarning until their users move.
__getattr__ = renamed_names(
    __name__,
    {
        "METHODS": ("FINETUNE_METHODS", FINETUNE_METHODS),
        # {method: {size: steps}}, as they were: the steps of ngood4 (what preset(size) gives)
        "PRESETS": ("FINETUNE_BUDGETS['full']", _per_size(FINETUNE_BUDGETS["full"])),
        "QUICK_STEPS": ("FINETUNE_BUDGETS['quick']", _per_size(FINETUNE_BUDGETS["quick"])),
    },
)

__all__ = [
    "FINETUNE_BUDGETS",
    "FINETUNE_METHODS",
    "HISTORY_COLUMNS",
    "METHOD_DEFAULTS",
    "FinetuneConfig",
    "Rollout",
    "SuccessEvaluator",
    "advantages",
    "collect_rollout",
    "finetune",
    "policy_loss",
    "update",
]
