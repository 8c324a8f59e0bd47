"""The policy protocol the whole project shares, its SB3-style ``predict``, and the transformer as a policy.

This is the bottom of ``agents``: it imports nothing of ``agents`` but the transformer, so every policy
(:class:`AgentPolicy` here, :class:`agents.sb3.SB3Policy`, the policies of :mod:`agents.reference`) builds on
it and :mod:`agents.loading` builds on all of them.

The protocol (:class:`Policy`; ``measures`` recognises a policy by its ``action_probs``):

* ``action_probs(histories, temperature=0.0) -> (N, 8)`` float64: the distribution over actions 0..7
  (tokens 8..15) for ``(N, 20)`` int histories; ``temperature=0`` is greedy (one-hot on the argmax,
  ties to the lowest index), ``temperature>0`` the softmax of logits divided by the temperature.
* ``next_token_probs(contexts) -> (N, 16)`` float64, optional: the model's predictive distribution of the
  next token (used by self-evaluation, found with ``hasattr``). Only token-predicting models have it, so
  :class:`PolicyBase` does not define it.
* ``predict(obs, state=None, episode_start=None, deterministic=True) -> (actions, None)``, SB3's style:
  written once, by :class:`PolicyBase`, on top of ``action_probs``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from agents.transformer import SplitSeqTransformer
from seqenv.sequence import CONTEXT, N_OUT, VOCAB
from seqenv.validation import check_temperature


@runtime_checkable
class Policy(Protocol):
    """What ``measures.measure`` accepts and ``agents.load`` returns: a distribution over the 8 actions.

    ``isinstance(x, Policy)`` checks only that ``action_probs`` exists. A token-predicting policy also has
    ``next_token_probs(contexts) -> (N, 16)`` (see the module docstring); SB3-style ``predict`` comes with
    :class:`PolicyBase`.
    """

    def action_probs(self, histories: np.ndarray, temperature: float = 0.0) -> np.ndarray:
        """``(N, 8)`` float64 distribution over actions 0..7 (odd tokens 8..15) for ``(N, 20)`` histories."""
        ...


class PolicyBase:
    """SB3-style :meth:`predict` for any policy, written once on top of :meth:`action_probs`.

    Subclasses implement ``action_probs``; two hooks adapt ``predict`` without rewriting it:
    :meth:`_greedy` (whether a call takes the most probable action) and :meth:`_sample` (how an action is
    drawn from the temperature-1 distribution).
    """

    def action_probs(self, histories: np.ndarray, temperature: float = 0.0) -> np.ndarray:
        """``(N, 8)`` float64 distribution over actions 0..7 (odd tokens 8..15) for ``(N, 20)`` histories."""
        raise NotImplementedError

    def _greedy(self, deterministic: bool) -> bool:
        """Whether :meth:`predict` takes the most probable action (default: when asked to)."""
        return deterministic

    def _sample(self, probs: np.ndarray) -> np.ndarray:
        """``(N,)`` actions drawn from ``(N, 8)`` probabilities with torch's global generator.

        So sampling follows ``torch.manual_seed``.
        """
        return torch.multinomial(torch.from_numpy(probs), 1).squeeze(1).numpy()

    def predict(
        self,
        observation: np.ndarray,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, None]:
        """Actions for one observation ``(20,)`` or a batch ``(N, 20)``, as SB3's ``predict``.

        :param observation: one history ``(20,)`` or a batch ``(N, 20)``.
        :param state: ignored (no recurrent state), as ``episode_start``.
        :param deterministic: the most probable action (ties to the lowest index), else a sample from the
            temperature-1 distribution (:meth:`_sample`).
        :return: ``(actions, None)``: an action (scalar array) for one history, ``(N,)`` actions for a batch.
        """
        obs = np.asarray(observation)
        single = obs.ndim == 1
        batch = obs[None] if single else obs
        if self._greedy(deterministic):
            actions = self.action_probs(batch, 0.0).argmax(axis=1)
        else:
            actions = self._sample(self.action_probs(batch, 1.0))
        return (actions[0] if single else actions), None


def as_tokens(x: Any, name: str) -> torch.Tensor:
    """``(N, 20)`` integer tokens in ``0..15`` as an int64 tensor, or ``TypeError``/``ValueError`` naming ``name``."""
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be integer tokens, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] != CONTEXT:
        raise ValueError(f"{name} must have shape (N, {CONTEXT}), got {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= VOCAB):
        raise ValueError(f"{name} holds tokens outside 0..{VOCAB - 1} (min {arr.min()}, max {arr.max()})")
    return torch.from_numpy(arr.astype(np.int64, copy=False))


def _torch_probs(logits: torch.Tensor, temperature: float) -> np.ndarray:
    """Greedy one-hot (``temperature == 0``) or tempered softmax of torch ``logits`` ``(N, K)``, as float64 numpy.

    The torch counterpart of :func:`measures.policies.probs_from_logits`: same law, but torch's float64
    softmax, whose last bit differs from scipy's for about half the entries, and this module's numbers are
    the ones trained agents were measured with.
    """
    temperature = check_temperature(temperature)
    logits = logits.detach().cpu().to(torch.float64)
    if not torch.isfinite(logits).all():
        raise ValueError("the policy produced non-finite logits (NaN or inf)")
    if temperature == 0:
        out = np.zeros(tuple(logits.shape))
        out[np.arange(len(out)), logits.argmax(dim=-1).numpy()] = 1.0
        return out
    return torch.softmax(logits / temperature, dim=-1).numpy()


class AgentPolicy(PolicyBase):
    """A :class:`~agents.transformer.SplitSeqTransformer` seen as a policy over the odd token.

    :param model: the transformer (put in eval mode; dropout off), on any device: histories go to its device
        in batches and its logits come back to the CPU in fp32.
    :param meta: what the checkpoint said about it (size, seed, task, ...).
    :param batch_size: histories per forward pass.
    """

    def __init__(
        self, model: SplitSeqTransformer, meta: dict[str, Any] | None = None, batch_size: int = 8192
    ):
        self.model = model.eval()
        self.meta = dict(meta or {})
        self.batch_size = batch_size

    @torch.no_grad()
    def _logits(self, tokens: torch.Tensor) -> torch.Tensor:
        device = next(self.model.parameters()).device
        outs = [
            self.model(tokens[i : i + self.batch_size].to(device)).float().cpu()
            for i in range(0, len(tokens), self.batch_size)
        ]
        return torch.cat(outs) if outs else torch.zeros((0, VOCAB))

    def action_probs(self, histories: np.ndarray, temperature: float = 0.0) -> np.ndarray:
        """``(N, 8)`` distribution over actions (odd tokens 8..15) for ``(N, 20)`` histories."""
        return _torch_probs(self._logits(as_tokens(histories, "histories"))[:, N_OUT:], temperature)

    def next_token_probs(self, contexts: np.ndarray) -> np.ndarray:
        """``(N, 16)`` predictive distribution of the next token after each 20-token context."""
        return _torch_probs(self._logits(as_tokens(contexts, "contexts")), 1.0)

    def __repr__(self) -> str:
        desc = ", ".join(
            f"{k}={self.meta[k]!r}" for k in ("size", "seed", "task", "method") if k in self.meta
        )
        return f"AgentPolicy({desc})"


__all__ = ["AgentPolicy", "Policy", "PolicyBase", "as_tokens"]
