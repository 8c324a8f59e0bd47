"""A trained transformer as a policy: what ``agents.load`` returns and ``measures.measure`` accepts.

The policy protocol the whole project shares (``measures`` recognises it by ``action_probs``):

* ``action_probs(histories, temperature=0.0) -> (N, 8)`` float64: the distribution over actions 0..7
  (tokens 8..15) for ``(N, 20)`` int histories; ``temperature=0`` is greedy (one-hot on the argmax,
  ties to the lowest index), ``temperature>0`` the softmax of logits divided by the temperature.
* ``next_token_probs(contexts) -> (N, 16)`` float64: the model's predictive distribution of the next
  token (used by self-evaluation); optional for other policies.
* ``predict(obs, state=None, episode_start=None, deterministic=True) -> (actions, None)``, SB3's style.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.checkpoint import load_model
from agents.transformer import SplitSeqTransformer
from seqenv.sequence import CONTEXT, N_OUT, VOCAB


def probs_from_logits(logits: torch.Tensor, temperature: float) -> np.ndarray:
    """Greedy one-hot (``temperature == 0``) or tempered softmax of ``logits`` ``(N, K)``, as float64 numpy."""
    if temperature < 0 or not np.isfinite(temperature):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
    logits = logits.detach().to(torch.float64)
    if not torch.isfinite(logits).all():
        raise ValueError("the policy produced non-finite logits (NaN or inf)")
    if temperature == 0:
        out = np.zeros(tuple(logits.shape))
        out[np.arange(len(out)), logits.argmax(dim=-1).numpy()] = 1.0
        return out
    return torch.softmax(logits / temperature, dim=-1).numpy()


def _as_tokens(x: Any, name: str) -> torch.Tensor:
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be integer tokens, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] != CONTEXT:
        raise ValueError(f"{name} must have shape (N, {CONTEXT}), got {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= VOCAB):
        raise ValueError(f"{name} holds tokens outside 0..{VOCAB - 1} (min {arr.min()}, max {arr.max()})")
    return torch.from_numpy(arr.astype(np.int64, copy=False))


def predict_actions(
    action_probs: Callable[[np.ndarray, float], np.ndarray], observation: Any, deterministic: bool
) -> np.ndarray:
    """SB3-style ``predict`` for a policy given by its ``action_probs(histories, temperature)``.

    :param observation: one history ``(20,)`` or a batch ``(N, 20)``.
    :param deterministic: the most probable action (ties to the lowest index), else a sample at
        temperature 1 drawn with torch's global generator (so it follows ``torch.manual_seed``).
    :return: an action (scalar array) for one history, ``(N,)`` actions for a batch.
    """
    obs = np.asarray(observation)
    single = obs.ndim == 1
    batch = obs[None] if single else obs
    if deterministic:
        actions = action_probs(batch, 0.0).argmax(axis=1)
    else:
        p = torch.from_numpy(action_probs(batch, 1.0))
        actions = torch.multinomial(p, 1).squeeze(1).numpy()
    return actions[0] if single else actions


class AgentPolicy:
    """A :class:`~agents.transformer.SplitSeqTransformer` seen as a policy over the odd token.

    :param model: the transformer (put in eval mode; dropout off).
    :param meta: what the checkpoint said about it (size, seed, task, ...).
    :param batch_size: histories per forward pass.
    """

    def __init__(self, model: SplitSeqTransformer, meta: dict[str, Any] | None = None, batch_size: int = 8192):
        self.model = model.eval()
        self.meta = dict(meta or {})
        self.batch_size = batch_size

    @torch.no_grad()
    def _logits(self, tokens: torch.Tensor) -> torch.Tensor:
        outs = [self.model(tokens[i : i + self.batch_size]) for i in range(0, len(tokens), self.batch_size)]
        return torch.cat(outs) if outs else torch.zeros((0, VOCAB))

    def action_probs(self, histories: np.ndarray, temperature: float = 0.0) -> np.ndarray:
        """``(N, 8)`` distribution over actions (odd tokens 8..15) for ``(N, 20)`` histories."""
        return probs_from_logits(self._logits(_as_tokens(histories, "histories"))[:, N_OUT:], temperature)

    def next_token_probs(self, contexts: np.ndarray) -> np.ndarray:
        """``(N, 16)`` predictive distribution of the next token after each 20-token context."""
        return probs_from_logits(self._logits(_as_tokens(contexts, "contexts")), 1.0)

    def predict(
        self,
        observation: np.ndarray,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, None]:
        """Actions for one observation ``(20,)`` or a batch ``(N, 20)``, as SB3's ``predict``."""
        return predict_actions(self.action_probs, observation, deterministic), None

    def __repr__(self) -> str:
        desc = ", ".join(f"{k}={self.meta[k]!r}" for k in ("size", "seed", "task", "method") if k in self.meta)
        return f"AgentPolicy({desc})"


def load(path: str | os.PathLike) -> Any:
    """Load a trained agent as a policy ``measures.measure`` accepts, with SB3-style ``predict``.

    ``.pt`` checkpoints of this project give a :class:`AgentPolicy`; Stable-Baselines3 ``.zip`` files
    go through :func:`agents.sb3.load_sb3`. A missing, corrupt or mismatched file raises
    :class:`~agents.checkpoint.CheckpointError`.
    """
    path = Path(path)
    if path.suffix == ".zip":
        from agents.sb3 import load_sb3

        return load_sb3(path)
    model, ckpt = load_model(path)
    return AgentPolicy(model, {**ckpt["meta"], "kind": ckpt["kind"], "path": str(path)})
