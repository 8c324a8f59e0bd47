"""PPO on SplitSeq's native vector env, with the exact success of the policy logged as it trains."""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import HumanOutputFormat, Logger

from agents.checkpoint import check_writable, load_checkpoint
from agents.runtime import resolve_device
from agents.sb3.adapter import as_policy
from agents.sb3.policies import TransformerPolicy
from agents.sb3.torch_layers import _arch
from agents.sb3.vec_env import make_sb3_vec_env
from agents.transformer import SIZES, TransformerConfig
from seqenv.sequence import natural_histories, transition_probs
from seqenv.tasks import good_mask, task_name
from seqenv.validation import check_choice, check_int, check_number, check_positive_int, check_seed

#: PPO hyperparameters of ``splitseq ppo`` (every one visible; override through ``train_ppo(**ppo_kwargs)``).
#: One-step episodes make ``gamma``/``gae_lambda`` irrelevant there: the advantage is ``r - V(h)``.
PPO_DEFAULTS: dict[str, Any] = {
    "n_steps": 8,  # per env: 8 x 256 envs = 2048 samples per rollout
    "batch_size": 256,
    "n_epochs": 4,
    "learning_rate": 1e-3,  # 3e-4 (SB3 default) learns ~3x slower here, for the transformer and the MLP alike
    "clip_range": 0.2,
    "ent_coef": 0.0,
    "vf_coef": 0.5,
    "max_grad_norm": 0.5,
    "gamma": 0.99,
    "gae_lambda": 0.95,
}


#: the range of each PPO hyperparameter: ``(minimum, maximum, minimum excluded)``
PPO_RANGES: dict[str, tuple[float, float, bool]] = {
    "n_steps": (1, math.inf, False),
    "batch_size": (2, math.inf, False),  # SB3 normalises advantages over a minibatch: one sample gives NaN
    "n_epochs": (1, math.inf, False),
    "learning_rate": (0.0, math.inf, True),
    "clip_range": (0.0, math.inf, True),
    "ent_coef": (0.0, math.inf, False),
    "vf_coef": (0.0, math.inf, False),
    "max_grad_norm": (0.0, math.inf, True),
    "gamma": (0.0, 1.0, False),
    "gae_lambda": (0.0, 1.0, False),
}


def check_ppo_kwargs(kwargs: dict[str, Any], n_envs: int) -> dict[str, Any]:
    """Validate the hyperparameters of :data:`PPO_RANGES` in ``kwargs`` (others pass to SB3 untouched)."""
    out = dict(kwargs)
    for key, (low, high, strict) in PPO_RANGES.items():
        if key not in out or callable(out[key]):  # SB3 also takes schedules for the rates
            continue
        if isinstance(PPO_DEFAULTS[key], int):
            out[key] = check_int(out[key], key, int(low))
            continue
        bound = f"> {low:g}" if strict else f">= {low:g}"
        expected = f"a number in [{low:g}, {high:g}]" if math.isfinite(high) else f"a finite number {bound}"
        v = check_number(out[key], key, low, strict=strict, expected=expected)
        if v > high:
            raise ValueError(f"{key} must be {expected}, got {out[key]!r}")
        out[key] = v
    if out.get("n_steps", 1) * n_envs < 2:
        raise ValueError(
            f"n_steps * n_envs must be at least 2 samples per rollout, got {out['n_steps']} x {n_envs}"
        )
    return out


class ExactSuccessCallback(BaseCallback):
    """Logs the exact expected success of the policy on fixed natural histories to TensorBoard.

    ``eval/greedy_success`` = mean over histories ``h`` of ``T(good | h, argmax pi(.|h))`` from the exact world
    model (no sampling noise), ``eval/sampled_success`` the same for the temperature-1 policy. Each record is
    indexed by the samples the evaluated policy was *trained* on (the last rollout, not yet learned from, is
    not counted): 0 for the initial policy, then every ``every`` samples, and the final policy.

    :param task: the task whose good set counts.
    :param every: evaluate once every ``every`` trained-on samples (checked at the end of each rollout).
    :param n_histories: histories evaluated (fixed, drawn once from ``seed``).
    :param seed: seed of the histories.
    :param histories: explicit ``(N, 20)`` histories instead (e.g. another method's held-out set).
    """

    def __init__(
        self,
        task: str,
        every: int = 10_000,
        n_histories: int = 4096,
        seed: int = 12345,
        histories: np.ndarray | None = None,
    ):
        super().__init__()
        self.every = check_positive_int(every, "every")
        self.histories = natural_histories(n_histories, seed) if histories is None else np.asarray(histories)
        self.p_good = transition_probs(self.histories) @ good_mask(task).astype(np.float64)  # (N, 8)
        self._next = 0
        #: ``(samples trained on, greedy success, sampled success, seconds since training started)``
        self.records: list[tuple[int, float, float, float]] = []

    def _on_training_start(self) -> None:
        self._t0 = time.perf_counter()
        self._eval_time = 0.0

    def _record(self, trained: int) -> None:
        t = time.perf_counter()
        pol = as_policy(self.model)
        greedy = float((pol.action_probs(self.histories, 0.0) * self.p_good).sum(1).mean())
        sampled = float((pol.action_probs(self.histories, 1.0) * self.p_good).sum(1).mean())
        self.records.append((trained, greedy, sampled, t - self._t0))
        self.logger.record("eval/greedy_success", greedy)
        self.logger.record("eval/sampled_success", sampled)
        self._eval_time += time.perf_counter() - t

    def _on_rollout_end(self) -> None:
        trained = self.num_timesteps - self.model.n_steps * self.model.n_envs
        if trained >= self._next:
            self._record(trained)
            self._next = trained + self.every

    def _on_training_end(self) -> None:
        if not self.records or self.records[-1][0] != self.num_timesteps:
            self._record(self.num_timesteps)
            self.logger.dump(self.num_timesteps)

    def _on_step(self) -> bool:
        return True


def train_ppo(
    task: str | tuple[int, ...] = "ngood4",
    timesteps: int = 200_000,
    out: str | os.PathLike | None = None,
    pretrained: str | os.PathLike | None = None,
    size: str | None = None,
    policy: str = "transformer",
    n_envs: int = 256,
    seed: int = 0,
    tensorboard_log: str | os.PathLike | None = None,
    eval_every: int | None = None,
    episode_length: int = 1,
    eval_histories: np.ndarray | None = None,
    verbose: int = 0,
    device: str = "auto",
    **ppo_kwargs: Any,
) -> PPO:
    """Train PPO on SplitSeq's native vector env; save the SB3 zip to ``out`` if given.

    :param task: a task id or a custom good set (e.g. ``(0, 3)``).
    :param timesteps: environment samples (rounded up to whole rollouts of ``n_steps * n_envs``).
    :param out: where to save the zip (``.zip`` appended by SB3 if missing).
    :param pretrained: ``.pt`` checkpoint to start the :class:`TransformerPolicy` from.
    :param size: model size without ``pretrained`` (default tiny).
    :param policy: ``"transformer"`` (:class:`TransformerPolicy`) or ``"mlp"`` (SB3's ``MlpPolicy`` on the
        one-hot observation, from scratch).
    :param n_envs: environments stepped together.
    :param seed: seeds torch, the env and SB3.
    :param tensorboard_log: TensorBoard directory (``None``: no TensorBoard).
    :param eval_every: log the exact greedy success every this many samples (default ``timesteps // 10``;
        0 disables).
    :param episode_length: steps per episode (1: the post's bandit).
    :param eval_histories: histories of the exact success evaluation (default: 4096 drawn with seed 12345).
    :param verbose: SB3 verbosity.
    :param device: where the policy trains (:func:`agents.runtime.resolve_device`: ``"auto"``, ``"cpu"``,
        ``"cuda"``, ``"cuda:<i>"``, ``"mps"``); the environment stays numpy on the CPU. On the CPU the numbers
        are those of the code before devices existed.
    :param ppo_kwargs: overrides of :data:`PPO_DEFAULTS` (and other ``PPO`` arguments).
    """
    name = task_name(task)  # validates a task id or a custom good set
    timesteps = check_positive_int(timesteps, "timesteps")
    n_envs = check_positive_int(n_envs, "n_envs")
    seed = check_seed(seed)
    check_choice(policy, "policy", ("transformer", "mlp"))
    dev = resolve_device(device)
    kwargs = check_ppo_kwargs({**PPO_DEFAULTS, **ppo_kwargs}, n_envs)
    if pretrained is not None:
        load_checkpoint(pretrained)  # a missing or corrupt file: its own clear error, before anything starts
    if out is not None:
        check_writable(out if str(out).endswith(".zip") else f"{out}.zip")  # before training, not after
    env = make_sb3_vec_env(task, n_envs, seed=seed, episode_length=episode_length)
    if policy == "transformer":
        policy_cls: Any = TransformerPolicy
        kwargs["policy_kwargs"] = {
            "pretrained": None if pretrained is None else str(pretrained),
            "size": size,
            **kwargs.get("policy_kwargs", {}),
        }
    else:  # "mlp"
        if pretrained is not None or size is not None:
            raise ValueError("policy='mlp' is SB3's MlpPolicy from scratch; it takes no pretrained= or size=")
        policy_cls = "MlpPolicy"
    model = PPO(
        policy_cls,
        env,
        seed=seed,
        tensorboard_log=None if tensorboard_log is None else str(tensorboard_log),
        verbose=verbose,
        device=dev,
        **kwargs,
    )
    if tensorboard_log is None:  # SB3 would otherwise create an empty tempdir/SB3-<date> folder per learn()
        model.set_logger(
            Logger(folder=None, output_formats=[HumanOutputFormat(sys.stdout)] if verbose else [])
        )
    model.splitseq_meta = {
        "method": "ppo",
        "policy": policy,
        "task": name,
        "seed": seed,
        "size": _size_name(model.policy.transformer.cfg) if policy == "transformer" else None,
        "pretrained": None if pretrained is None else str(pretrained),
        "timesteps": timesteps,
        "n_envs": n_envs,
        "device": str(dev),
    }
    every = max(1, timesteps // 10) if eval_every is None else check_int(eval_every, "eval_every", minimum=0)
    callbacks = [ExactSuccessCallback(task, every=every, histories=eval_histories)] if every > 0 else []
    run_name = Path(out).stem if out is not None else f"ppo_{name}"
    t0 = time.perf_counter()
    model.learn(timesteps, callback=callbacks, tb_log_name=run_name, progress_bar=False)
    model.splitseq_meta["wall_time_s"] = time.perf_counter() - t0
    if callbacks:
        model.splitseq_meta["eval"] = [list(r) for r in callbacks[0].records]
        model.splitseq_meta["eval_time_s"] = callbacks[0]._eval_time
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        model.save(out)
    return model


def _size_name(cfg: TransformerConfig) -> str:
    for name, c in SIZES.items():
        if _arch(c) == _arch(cfg):
            return name
    return "custom"


__all__ = ["PPO_DEFAULTS", "PPO_RANGES", "ExactSuccessCallback", "check_ppo_kwargs", "train_ppo"]
