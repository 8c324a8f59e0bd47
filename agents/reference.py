"""Reference policies: uniform random, the sequence's own (natural) odd token, and the exact oracle.

All three implement the project's policy protocol (:class:`agents.policy.Policy`): ``action_probs(histories,
temperature=0.0) -> (N, 8)`` float64, and SB3-style ``predict`` from :class:`agents.policy.PolicyBase`.
They bracket every trained agent:

* :class:`UniformPolicy` writes a uniformly random odd token: success ``s_uniform``, Op = 0.
* :class:`NaturalPolicy` writes what the sequence itself would write: ``0.98`` on the deterministic value
  ``d = deterministic_next(h[-16:])`` of the next (odd) position plus ``0.02 / 8`` on every token
  (:func:`seqenv.sequence.natural_odd_probs`, the convention of ``measures.baselines``: noise included).
* :class:`OraclePolicy` writes the token of highest exact success probability
  ``P(good | h, a) = sum_{x in good} T(x | h, a)`` (:func:`seqenv.sequence.transition_probs`): its
  success is the exact maximum ``mean_i max_a P(good | h_i, a)``, the ceiling of every agent on the task.

Uniform and natural are stochastic processes, not models with logits to sharpen: their distribution is the
same at every temperature (a greedy "uniform" policy would be the fixed token 8, which is the "do nothing"
reference, not a random one). The oracle is deterministic at every temperature.
"""

from __future__ import annotations

import numpy as np

from agents.policy import PolicyBase
from seqenv.sequence import N_OUT, natural_odd_probs, transition_probs, validate_histories
from seqenv.tasks import GoodSpec, good_mask, task_name
from seqenv.validation import check_choice, check_seed, check_temperature

TIE_BREAKS = ("random", "lowest")


class ReferencePolicy(PolicyBase):
    """Shared plumbing: history validation, and ``predict`` sampling stochastic policies from ``self.rng``.

    ``predict`` is :class:`~agents.policy.PolicyBase`'s: ``predict(deterministic=True)`` takes the most probable action (ties to the lowest index) of a policy that
    has one; the uniform policy has no preferred action and always samples.

    :param seed: seeds the generator :meth:`predict` samples stochastic policies with.
    """

    #: whether the policy puts all its mass on one action per history
    deterministic: bool = False

    def __init__(self, seed: int | None = 0):
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def action_probs(self, histories: np.ndarray, temperature: float = 0.0) -> np.ndarray:
        """``(N, 8)`` float64 distribution over actions 0..7 (odd tokens 8..15) for ``(N, 20)`` histories."""
        check_temperature(temperature)
        h = validate_histories(histories)
        if h.ndim != 2:
            raise ValueError(f"histories must have shape (N, 20), got {h.shape}")
        return self._probs(h)

    def _probs(self, histories: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _greedy(self, deterministic: bool) -> bool:
        return self.deterministic or deterministic

    def _sample(self, probs: np.ndarray) -> np.ndarray:
        """Inverse-CDF sampling with ``self.rng`` (one uniform per history)."""
        u = self.rng.random(len(probs))[:, None]
        return np.minimum((probs.cumsum(axis=1) < u).sum(axis=1), N_OUT - 1)


class UniformPolicy(ReferencePolicy):
    """Every odd token with probability 1/8, whatever the history and the temperature.

    :param seed: seeds :meth:`predict`'s sampling.
    """

    def _probs(self, histories: np.ndarray) -> np.ndarray:
        return np.full((len(histories), N_OUT), 1.0 / N_OUT)

    def _greedy(self, deterministic: bool) -> bool:
        return False  # no mode: a greedy "uniform" policy would be the fixed token 8

    def __repr__(self) -> str:
        return "UniformPolicy()"


class NaturalPolicy(ReferencePolicy):
    """The sequence's own odd token: ``0.98 + 0.0025`` on ``d = deterministic_next(h[-16:])``, ``0.0025`` elsewhere.

    :param seed: seeds :meth:`predict`'s sampling (``deterministic=False``); ``deterministic=True`` gives ``d``.
    """

    def _probs(self, histories: np.ndarray) -> np.ndarray:
        return natural_odd_probs(histories)

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
        self.tie_break = check_choice(tie_break, "tie_break", TIE_BREAKS)
        super().__init__(check_seed(seed))
        self.good = good_mask(task)
        self.task = task_name(task)

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
