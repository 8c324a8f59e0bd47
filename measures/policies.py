"""Turn any policy into action probabilities ``(N, 8)`` over the odd token (action ``a`` writes ``8 + a``).

Accepted policies, tried in this order:

1. the project's policy protocol (``agents/policy.py``): an object with
   ``action_probs(histories, temperature) -> (N, 8)``;
2. a Stable-Baselines3 model or policy (``BaseAlgorithm`` / ``BasePolicy``) with a ``Discrete(8)`` action
   space: greedy (``temperature=0``) from its deterministic action, otherwise the softmax of its
   distribution's logits divided by the temperature (at ``temperature=1`` exactly
   ``policy.get_distribution(obs).distribution.probs``);
3. a ``torch.nn.Module`` mapping a LongTensor ``(N, 20)`` to logits ``(N, 8)``, or to next-token logits
   ``(N, 16)`` of which the odd-token logits ``8..15`` are the policy (run in eval mode under
   ``torch.no_grad``; its training flag is restored afterwards);
4. any other object with SB3-style ``predict(obs, deterministic=True) -> (actions, state)`` (greedy only);
5. a plain callable on an ``(N, 20)`` int64 array returning actions ``(N,)`` in 0..7 (a deterministic
   policy: only ``temperature=0`` applies) or probabilities ``(N, 8)``.

``temperature=0`` is greedy: a one-hot on the most probable action, ties to the lowest index (the post's
setting). ``temperature=T>0`` divides logits by ``T``; for a policy given by probabilities ``q`` this is
``q**(1/T)`` renormalised, so ``T=1`` is the policy's own distribution. Probabilities are checked (finite,
non-negative, summing to 1 within 1e-6) and never clipped: bad output raises naming the offending value.

A model's next-token distribution (self-evaluation's world) comes from :func:`next_token_distribution`.
:class:`CachedPolicy` wraps any policy so that several measures on the same histories run its forward passes
once (one policy pass per history set and temperature, one next-token pass per context set).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy.special import softmax

from seqenv.sequence import CONTEXT, N_OUT, VOCAB
from seqenv.validation import check_temperature

#: Anything :func:`action_probabilities` accepts.
Policy = Any

PROB_ATOL = 1e-6  #: tolerance on the sum of a returned distribution
BATCH_SIZE = 8192  #: histories per forward pass of a torch or SB3 policy


def greedy(scores: np.ndarray) -> np.ndarray:
    """One-hot ``(N, K)`` float64 on the argmax of each row; ties go to the lowest index."""
    scores = np.asarray(scores)
    out = np.zeros(scores.shape, dtype=np.float64)
    out[np.arange(len(scores)), np.argmax(scores, axis=1)] = 1.0
    return out


def probs_from_logits(logits: np.ndarray, temperature: float, what: str = "policy") -> np.ndarray:
    """Greedy one-hot (``temperature == 0``) or ``softmax(logits / temperature)``, float64 ``(N, K)``."""
    logits = np.asarray(logits, dtype=np.float64)
    bad = ~np.isfinite(logits)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(
            f"{what} produced a non-finite logit {float(logits[row, col])} (history {row}, output {col}); "
            "expected finite logits"
        )
    if temperature == 0:
        return greedy(logits)
    return softmax(logits / temperature, axis=1)


def check_probs(probs: Any, n: int, what: str = "policy", width: int = N_OUT) -> np.ndarray:
    """Validate ``(n, width)`` probabilities and return them as float64, renormalised to sum exactly to 1.

    :raises ValueError: wrong shape, a NaN/inf, a negative entry, or a row not summing to 1 within 1e-6.
    """
    arr = _to_numpy(probs)
    if arr.shape != (n, width):
        raise ValueError(f"{what} returned probabilities of shape {arr.shape}; expected ({n}, {width})")
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"{what} returned probabilities of dtype {arr.dtype}; expected floats")
    arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(
            f"{what} returned probability {float(arr[row, col])} for history {row}, action {col}"
        )
    if (arr < 0).any():
        row, col = np.argwhere(arr < 0)[0]
        raise ValueError(
            f"{what} returned a negative probability {float(arr[row, col])} for history {row}, action {col}; "
            "expected probabilities >= 0"
        )
    total = arr.sum(axis=1)
    off = np.abs(total - 1.0) > PROB_ATOL
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise ValueError(
            f"{what} returned probabilities for history {row} that sum to {float(total[row])}; expected 1 "
            f"(within {PROB_ATOL}). If these are logits, pass a torch module or apply a softmax first"
        )
    return arr / total[:, None]


def check_actions(actions: Any, n: int, what: str = "policy") -> np.ndarray:
    """Validate ``(n,)`` integer actions in 0..7 and return them as int64."""
    return check_action_array(_to_numpy(actions), n, N_OUT, what, "history", " (token 8 + action)")


def check_action_array(
    arr: np.ndarray, n: int, n_actions: int, what: str, row_name: str, hint: str = ""
) -> np.ndarray:
    """``arr`` as ``(n,)`` int64 actions in ``0..n_actions-1``, or an error naming the first bad ``row_name``."""
    if arr.shape != (n,):
        raise ValueError(f"{what} returned actions of shape {arr.shape}; expected ({n},)")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(
            f"{what} returned actions of dtype {arr.dtype}; expected integers in 0..{n_actions - 1} "
            f"(or float probabilities of shape ({n}, {n_actions}))"
        )
    out_of_range = (arr < 0) | (arr >= n_actions)
    if out_of_range.any():
        row = int(np.flatnonzero(out_of_range)[0])
        raise ValueError(
            f"{what} returned action {arr[row]} for {row_name} {row}; expected 0..{n_actions - 1}{hint}"
        )
    return arr.astype(np.int64)


def temper(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Apply a temperature to validated probabilities: greedy at 0, ``q**(1/T)`` renormalised otherwise."""
    if temperature == 0:
        return greedy(probs)
    if temperature == 1:
        return probs
    with np.errstate(divide="ignore"):
        return softmax(np.log(probs) / temperature, axis=1)


def action_probabilities(
    policy: Policy, histories: np.ndarray, temperature: float = 0.0, batch_size: int = BATCH_SIZE
) -> np.ndarray:
    """The policy's distribution over actions 0..7 on each history.

    :param policy: any policy listed in the module docstring.
    :param histories: ``(N, 20)`` int64 natural histories (validated by the caller).
    :param temperature: 0 for greedy (one-hot, ties to the lowest index), ``> 0`` to temper logits.
    :param batch_size: histories per forward pass for torch and SB3 policies.
    :return: float64 ``(N, 8)``, rows summing to 1.
    """
    t = check_temperature(temperature)
    h = np.asarray(histories)
    n = len(h)
    if isinstance(policy, CachedPolicy):  # the remembered result of this function on the wrapped policy
        return policy.remember(("action_probs", t, batch_size), h, action_probabilities, t, batch_size)
    if hasattr(policy, "action_probs"):
        return check_probs(policy.action_probs(h, temperature=t), n, _name(policy))
    sb3 = _sb3_policy(policy)
    if sb3 is not None:
        return _sb3_probs(sb3, h, t, batch_size)
    if isinstance(policy, torch.nn.Module):
        logits = module_outputs(policy, h, batch_size)
        if logits.shape[1] == VOCAB:
            logits = logits[:, N_OUT:]
        elif logits.shape[1] != N_OUT:
            raise ValueError(
                f"{_name(policy)} returned logits of shape {tuple(logits.shape)}; expected ({n}, {N_OUT}) "
                f"action logits or ({n}, {VOCAB}) next-token logits"
            )
        return probs_from_logits(logits, t, _name(policy))
    if _is_predict_only(policy):
        if t != 0:
            raise ValueError(
                f"{_name(policy)} only exposes predict(); it has no action distribution to sample at "
                f"temperature={t}. Use temperature=0"
            )
        actions, _ = policy.predict(h, deterministic=True)
        return greedy_from_actions(check_actions(actions, n, _name(policy)))
    if callable(policy):
        return _callable_probs(policy, h, t)
    raise TypeError(
        f"cannot use {type(policy).__name__} as a policy; expected a callable on (N, 20) histories, a torch "
        "module, a Stable-Baselines3 model/policy or an object with action_probs(histories, temperature)"
    )


def next_token_distribution(model: Any, contexts: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """The model's ``(M, 16)`` next-token distribution on ``(M, 20)`` contexts.

    :param model: an object with ``next_token_probs(contexts) -> (M, 16)`` (e.g. ``agents.load(...)``), a
        torch module giving ``(M, 16)`` next-token logits, or a :class:`CachedPolicy` of either.
    :param batch_size: contexts per forward pass of a torch module.
    """
    m = len(contexts)
    if isinstance(model, CachedPolicy):
        return model.remember(
            ("next_token", batch_size), np.asarray(contexts), next_token_distribution, batch_size
        )
    if hasattr(model, "next_token_probs"):
        return check_probs(model.next_token_probs(contexts), m, f"model {type(model).__name__}", width=VOCAB)
    if isinstance(model, torch.nn.Module):
        logits = module_outputs(model, contexts, batch_size)
        if logits.shape[1] != VOCAB:
            raise ValueError(
                f"self-evaluation needs next-token logits of shape ({m}, {VOCAB}); {type(model).__name__} "
                f"returned {logits.shape}"
            )
        return probs_from_logits(logits, 1.0, f"model {type(model).__name__}")
    raise TypeError(
        f"cannot self-evaluate {type(model).__name__}: expected a torch module with {VOCAB} next-token logits "
        "or an object with next_token_probs(contexts)"
    )


class CachedPolicy:
    """A policy whose forward passes are remembered, so that several measures share them.

    :func:`action_probabilities` runs the wrapped policy once per history set and temperature, and
    :func:`next_token_distribution` the wrapped model once per context set; later calls on equal inputs
    (compared by content) get a copy of the remembered result. So ``cross_objective``,
    ``identify_objective``, ``optimizer_test``, ``measure`` and ``self_evaluate`` given the same
    ``CachedPolicy`` and histories run the policy's forward pass once between them, and self-evaluation's
    ``8 N`` contexts once, with exactly the numbers the wrapped policy gives (the same computation, done once).

    The wrapped policy must be fixed while the view is in use (its outputs are not recomputed), and
    everything is kept for the view's lifetime: make one per model and measurement batch.

    :param policy: anything :func:`action_probabilities` accepts; for self-evaluation, a model that
        :func:`next_token_distribution` accepts.
    """

    def __init__(self, policy: Policy):
        if isinstance(policy, CachedPolicy):
            raise TypeError(
                "policy is already a CachedPolicy; use it as it is (cached() returns it unchanged)"
            )
        self.policy = policy
        #: ``(kind, rows)`` of every forward pass run on the wrapped policy, in order (``kind``:
        #: ``"action_probs"`` or ``"next_token"``)
        self.passes: list[tuple[str, int]] = []
        self._memo: dict[tuple, np.ndarray] = {}

    def remember(
        self, key: tuple, inputs: np.ndarray, compute: Callable[..., np.ndarray], *args: Any
    ) -> np.ndarray:
        """``compute(self.policy, inputs, *args)`` the first time ``key`` meets these ``inputs``, else a copy of
        the remembered result (inputs match by shape, dtype and content)."""
        arr = np.ascontiguousarray(inputs)
        full = (*key, arr.shape, arr.dtype.str, hashlib.blake2b(arr.data, digest_size=16).digest())
        if full not in self._memo:
            self._memo[full] = compute(self.policy, arr, *args)
            self.passes.append((str(key[0]), len(arr)))
        return self._memo[full].copy()

    def action_probs(self, histories: np.ndarray, temperature: float = 0.0) -> np.ndarray:
        """``(N, 8)`` action probabilities of the wrapped policy (:func:`action_probabilities`), remembered."""
        return action_probabilities(self, histories, temperature)

    def next_token_probs(self, contexts: np.ndarray) -> np.ndarray:
        """``(M, 16)`` next-token distribution of the wrapped model (:func:`next_token_distribution`), remembered."""
        return next_token_distribution(self, contexts)

    def __repr__(self) -> str:
        return f"CachedPolicy({self.policy!r}, {len(self.passes)} forward passes)"


def cached(policy: Policy) -> CachedPolicy:
    """``policy`` as a :class:`CachedPolicy`: itself if it already is one, else a new one wrapping it."""
    return policy if isinstance(policy, CachedPolicy) else CachedPolicy(policy)


def greedy_from_actions(actions: np.ndarray) -> np.ndarray:
    """One-hot ``(N, 8)`` float64 of integer actions."""
    out = np.zeros((len(actions), N_OUT))
    out[np.arange(len(actions)), actions] = 1.0
    return out


def module_outputs(
    module: torch.nn.Module, histories: np.ndarray, batch_size: int = BATCH_SIZE
) -> np.ndarray:
    """Run a torch module on ``(N, 20)`` token histories in eval mode and return its 2-D output as float64."""
    try:
        device = next(module.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    was_training = module.training
    module.eval()
    outs = []
    try:
        with torch.no_grad():
            tokens = torch.from_numpy(np.ascontiguousarray(histories, dtype=np.int64))
            for start in range(0, len(tokens), batch_size):
                out = _call_module(module, tokens[start : start + batch_size].to(device))
                if not isinstance(out, torch.Tensor):
                    raise TypeError(
                        f"{_name(module)} returned {type(out).__name__}; expected a tensor of logits"
                    )
                outs.append(out.detach().to("cpu", torch.float64))
    finally:
        module.train(was_training)
    out = torch.cat(outs) if outs else torch.zeros((0, N_OUT), dtype=torch.float64)
    if out.ndim != 2 or out.shape[0] != len(histories):
        raise ValueError(
            f"{_name(module)} returned logits of shape {tuple(out.shape)}; expected ({len(histories)}, K)"
        )
    return out.numpy()


def _call_module(module: torch.nn.Module, tokens: torch.Tensor) -> Any:
    """``module(tokens)``, with torch's dtype and shape errors on the token histories explained in one line."""
    try:
        return module(tokens)
    except RuntimeError as e:
        text = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if "dtype" in text or "scalar type" in text or "Long" in text:
            raise TypeError(
                f"{_name(module)} cannot take the histories as given: a LongTensor of token ids "
                f"{tuple(tokens.shape)} (int64, as nn.Embedding expects); torch says: {text}. A module that "
                "wants float input can be measured through a callable returning probabilities, e.g. "
                "lambda h: torch.softmax(module(torch.as_tensor(h, dtype=torch.float32)), -1)"
            ) from e
        if "shape" in text or "size" in text:
            raise ValueError(
                f"{_name(module)} cannot take the histories as given: a LongTensor of token ids "
                f"{tuple(tokens.shape)} ({CONTEXT} tokens per history); torch says: {text}"
            ) from e
        raise


def _callable_probs(policy: Callable[[np.ndarray], Any], h: np.ndarray, t: float) -> np.ndarray:
    n = len(h)
    out = _to_numpy(policy(h))
    if out.ndim == 1:
        actions = check_actions(out, n, _name(policy))
        if t != 0:
            raise ValueError(
                f"{_name(policy)} returned actions, which fix one action per history; temperature={t} needs "
                f"a distribution: return probabilities ({n}, {N_OUT}) or use temperature=0"
            )
        return greedy_from_actions(actions)
    if out.ndim == 2:
        return temper(check_probs(out, n, _name(policy)), t)
    raise ValueError(
        f"{_name(policy)} returned an array of shape {out.shape}; expected actions ({n},) or probabilities ({n}, {N_OUT})"
    )


def _sb3_policy(policy: Any) -> Any:
    """The SB3 ``BasePolicy`` behind ``policy``, or ``None`` (SB3 is only consulted if already imported)."""
    if "stable_baselines3" not in sys.modules:
        return None
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.policies import BasePolicy

    if isinstance(policy, BaseAlgorithm):
        policy = policy.policy
    return policy if isinstance(policy, BasePolicy) else None


def _sb3_probs(policy: Any, h: np.ndarray, t: float, batch_size: int) -> np.ndarray:
    from gymnasium import spaces

    name = _name(policy)
    space = policy.action_space
    if not isinstance(space, spaces.Discrete) or int(space.n) != N_OUT or int(space.start) != 0:
        raise ValueError(
            f"{name} has action space {space}; expected Discrete({N_OUT}) (action a writes 8 + a)"
        )
    if tuple(policy.observation_space.shape) != (CONTEXT,):
        raise ValueError(
            f"{name} has observation space {policy.observation_space}; expected 20 tokens (MultiDiscrete([16]*20))"
        )
    n = len(h)
    if t == 0:
        parts = [
            policy.predict(h[i : i + batch_size], deterministic=True)[0] for i in range(0, n, batch_size)
        ]
        actions = np.concatenate([np.asarray(a).reshape(-1) for a in parts])
        return greedy_from_actions(check_actions(actions, n, name))
    if not hasattr(policy, "get_distribution"):
        raise ValueError(
            f"{name} has no action distribution (e.g. a DQN Q-network); only temperature=0 applies, got {t}"
        )
    policy.set_training_mode(False)
    chunks = []
    with torch.no_grad():
        for i in range(0, n, batch_size):
            obs, _ = policy.obs_to_tensor(h[i : i + batch_size])
            chunks.append(policy.get_distribution(obs).distribution.logits.detach().to("cpu", torch.float64))
    logits = torch.cat(chunks).numpy() if chunks else np.zeros((0, N_OUT))
    return probs_from_logits(logits, t, name)


def _is_predict_only(policy: Any) -> bool:
    return hasattr(policy, "predict") and not callable(policy)


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, tuple) and len(x) == 2 and x[1] is None:
        raise TypeError(
            "the policy returned a tuple (actions, state) like SB3 predict; return only the actions"
        )
    return np.asarray(x)


def _name(policy: Any) -> str:
    name = getattr(policy, "__name__", None) or type(policy).__name__
    return f"policy {name}"
