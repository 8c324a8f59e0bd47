"""Reference policies: uniform random, the sequence's own (natural) odd token, and the exact oracle.

All three implement the project's policy protocol (see :mod:`agents.policy`): ``action_probs(histories,
temperature=0.0) -> (N, 8)`` float64 and SB3-style ``predict``. They bracket every trained agent:

* :class:`UniformPolicy` writes a uniformly random odd token: success ``s_uniform``, Op = 0.
* :class:`NaturalPolicy` writes what the sequence itself would write: ``0.98`` on the deterministic value
  ``d = deterministic_next(h[-16:])`` of the next (odd) position plus ``0.02 / 8`` on every token
  (the convention of ``measures.baselines``: noise included).
* :class:`OraclePolicy` writes the token of highest exact success probability
  ``P(good | h, a) = sum_{x in good} T(x | h, a)`` (:func:`seqenv.sequence.transition_probs`): its
  success is the exact maximum ``mean_i max_a P(good | h_i, a)``, the ceiling of every agent on the task.

Uniform and natural are stochastic processes, not models with logits to sharpen: their distribution is the
same at every temperature (a greedy "uniform" policy would be the fixed token 8, which is the "do nothing"
reference, not a random one). The oracle is deterministic at every temperature.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from seqenv.sequence import (
    N_OUT,
    ORDER,
    P_DET,
    P_MATCH,
    deterministic_next,
    transition_probs,
    validate_histories,
)
from seqenv.tasks import GoodSpec, good_mask, task_name

TIE_BREAKS = ("random", "lowest")


def _check_temperature(temperature: float) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.integer, np.floating)):
        raise TypeError(f"temperature must be a number >= 0, got {temperature!r}")
    if not np.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")


class ReferencePolicy:
    """Shared plumbing: history validation and SB3-style :meth:`predict`.

    :param seed: seeds the generator :meth:`predict` samples stochastic policies with.
    """

    #: whether the policy puts all its mass on one action per history
    deterministic: bool = False

    def __init__(self, seed: int | None = 0):
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def action_probs(self, histories: np.ndarray, temperature: float = 0.0) -> np.ndarray:
        """``(N, 8)`` float64 distribution over actions 0..7 (odd tokens 8..15) for ``(N, 20)`` histories."""
        _check_temperature(temperature)
        h = validate_histories(histories)
        if h.ndim != 2:
            raise ValueError(f"histories must have shape (N, 20), got {h.shape}")
        return self._probs(h)

    def _probs(self, histories: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict(
        self,
        observation: np.ndarray,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, None]:
        """Actions for one observation ``(20,)`` or a batch ``(N, 20)``, as SB3's ``predict``.

        ``deterministic=True`` takes the most probable action (ties to the lowest index) of a policy that
        has one; the uniform policy has no preferred action and always samples (from ``self.rng``).
        """
        obs = np.asarray(observation)
        single = obs.ndim == 1
        probs = self.action_probs(obs[None] if single else obs)
        if self.deterministic or (deterministic and not isinstance(self, UniformPolicy)):
            actions = probs.argmax(axis=1)
        else:
            u = self.rng.random(len(probs))[:, None]
            actions = np.minimum((probs.cumsum(axis=1) < u).sum(axis=1), N_OUT - 1)
        return (actions[0] if single else actions), None


class UniformPolicy(ReferencePolicy):
    """Every odd token with probability 1/8, whatever the history and the temperature.

    :param seed: seeds :meth:`predict`'s sampling.
    """

    def _probs(self, histories: np.ndarray) -> np.ndarray:
        return np.full((len(histories), N_OUT), 1.0 / N_OUT)

    def __repr__(self) -> str:
        return "UniformPolicy()"


class NaturalPolicy(ReferencePolicy):
    """The sequence's own odd token: ``0.98 + 0.0025`` on ``d = deterministic_next(h[-16:])``, ``0.0025`` elsewhere.

    :param seed: seeds :meth:`predict`'s sampling (``deterministic=False``); ``deterministic=True`` gives ``d``.
    """

    def _probs(self, histories: np.ndarray) -> np.ndarray:
        d = deterministic_next(histories[:, -ORDER:])
        probs = np.full((len(histories), N_OUT), (1 - P_DET) / N_OUT)
        probs[np.arange(len(d)), d] = P_MATCH
        return probs

    def __repr__(self) -> str:
        return "NaturalPolicy()"


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A well-mixed 64-bit hash (SplitMix64's finaliser), vectorised over uint64 arrays."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


class OraclePolicy(ReferencePolicy):
    """The action of highest exact success probability on ``task``: the ceiling any agent can reach.

    Several actions can share the maximum (e.g. two tokens whose deterministic outcome is good). With
    ``tie_break="lowest"`` the lowest one is taken; with ``"random"`` one of them is chosen at random, as a
    fixed function of the history and ``seed`` (a hash of the 20 tokens), so the oracle stays a policy: the
    same history always gets the same action, and a different seed gives a different oracle of equal success.

    :param task: a task id or a custom good set.
    :param tie_break: ``"random"`` or ``"lowest"``.
    :param seed: seeds the random tie-break.
    """

    deterministic = True

    def __init__(self, task: GoodSpec = "ngood4", tie_break: str = "random", seed: int = 0):
        if tie_break not in TIE_BREAKS:
            raise ValueError(f"tie_break must be one of {TIE_BREAKS}, got {tie_break!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        super().__init__(seed)
        self.good = good_mask(task)
        self.task = task_name(task)
        self.tie_break = tie_break

    def success_probs(self, histories: np.ndarray) -> np.ndarray:
        """``(N, 8)`` exact ``P(good | h, a)`` for every action."""
        h = validate_histories(histories)
        return transition_probs(h)[..., self.good].sum(axis=-1)

    def _probs(self, histories: np.ndarray) -> np.ndarray:
        p = self.success_probs(histories)
        best = np.isclose(p, p.max(axis=1, keepdims=True), rtol=0.0, atol=1e-12)
        if self.tie_break == "lowest":
            actions = best.argmax(axis=1)
        else:
            key = np.zeros(len(histories), dtype=np.uint64)
            for col in range(histories.shape[1]):  # 4 bits per token would overflow: hash-chain the columns
                key = _splitmix64(key ^ histories[:, col].astype(np.uint64))
            key = _splitmix64(key ^ np.uint64(self.seed))
            priority = _splitmix64(key[:, None] + np.arange(1, N_OUT + 1, dtype=np.uint64)[None, :])
            actions = np.where(best, priority | np.uint64(1), np.uint64(0)).argmax(axis=1)
        probs = np.zeros(p.shape)
        probs[np.arange(len(p)), actions] = 1.0
        return probs

    def __repr__(self) -> str:
        return f"OraclePolicy({self.task!r}, tie_break={self.tie_break!r}, seed={self.seed})"


__all__ = ["TIE_BREAKS", "NaturalPolicy", "OraclePolicy", "ReferencePolicy", "UniformPolicy"]
