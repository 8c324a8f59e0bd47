"""An SB3 actor-critic policy (in memory or loaded) seen through the project's policy protocol."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy

from agents.policy import PolicyBase, _torch_probs, as_tokens
from agents.sb3.policies import TransformerPolicy, action_logits
from seqenv.sequence import CONTEXT, N_OUT, VOCAB


class SB3Policy(PolicyBase):
    """An SB3 actor-critic policy seen through the project's policy protocol (see :mod:`agents.policy`).

    ``action_probs`` uses the policy's raw action logits (temperature 0: greedy one-hot, ties to the lowest
    action; temperature 1: the policy's own distribution). ``next_token_probs`` exists for
    :class:`~agents.sb3.policies.TransformerPolicy` only. ``predict`` is :class:`~agents.policy.PolicyBase`'s
    (sampling with torch's global generator).

    :param policy: an SB3 ``ActorCriticPolicy`` on SplitSeq's spaces (put in eval mode).
    :param meta: what is known about it (path, task, size, seed, method, ...).
    :param batch_size: histories per forward pass.
    """

    def __init__(self, policy: BasePolicy, meta: dict[str, Any] | None = None, batch_size: int = 8192):
        if not isinstance(policy, ActorCriticPolicy):
            raise TypeError(f"expected an SB3 ActorCriticPolicy (PPO, A2C), got {type(policy).__name__}")
        if not (isinstance(policy.action_space, spaces.Discrete) and int(policy.action_space.n) == N_OUT):
            raise ValueError(f"expected SplitSeq's Discrete({N_OUT}) action space, got {policy.action_space}")
        obs_space = policy.observation_space
        if not (isinstance(obs_space, spaces.MultiDiscrete) and obs_space.shape == (CONTEXT,)):
            raise ValueError(
                f"expected SplitSeq's MultiDiscrete([16] * {CONTEXT}) observations, got {obs_space}"
            )
        self.policy = policy
        self.policy.set_training_mode(False)
        self.meta = dict(meta or {})
        self.batch_size = batch_size
        if isinstance(policy, TransformerPolicy):
            self.next_token_probs = self._next_token_probs

    @th.no_grad()
    def _batched(self, fn: Any, tokens: th.Tensor, width: int) -> th.Tensor:
        self.policy.set_training_mode(False)
        device = self.policy.device
        outs = [
            fn(tokens[i : i + self.batch_size].to(device)).cpu()
            for i in range(0, len(tokens), self.batch_size)
        ]
        return th.cat(outs) if outs else th.zeros((0, width))

    def action_probs(self, histories: np.ndarray, temperature: float = 0.0) -> np.ndarray:
        """``(N, 8)`` distribution over actions for ``(N, 20)`` histories (temperature 0 = greedy)."""
        tokens = as_tokens(histories, "histories")
        return _torch_probs(
            self._batched(lambda x: action_logits(self.policy, x), tokens, N_OUT), temperature
        )

    def _next_token_probs(self, contexts: np.ndarray) -> np.ndarray:
        """``(N, 16)`` predictive distribution of the next token (TransformerPolicy only)."""
        tokens = as_tokens(contexts, "contexts")
        return _torch_probs(self._batched(self.policy.next_token_logits, tokens, VOCAB), 1.0)

    def __repr__(self) -> str:
        desc = ", ".join(
            f"{k}={self.meta[k]!r}" for k in ("method", "policy", "size", "task", "seed") if k in self.meta
        )
        return f"SB3Policy({desc})"


def as_policy(model: BaseAlgorithm | BasePolicy, meta: dict[str, Any] | None = None) -> SB3Policy:
    """The project's policy protocol for an SB3 algorithm (``PPO``, ``A2C``) or its policy, in memory."""
    if isinstance(model, BaseAlgorithm):
        meta = {**getattr(model, "splitseq_meta", {}), **(meta or {})}
        model = model.policy
    return SB3Policy(model, meta)


__all__ = ["SB3Policy", "as_policy"]
