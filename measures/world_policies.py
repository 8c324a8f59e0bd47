"""Turn any policy into action probabilities ``(N, A)`` on the observations of a finite-action world.

The SplitSeq adapter (:mod:`measures.policies`) maps token histories to 8 actions; this one maps the
observations of any environment with a ``Discrete(A)`` action space (tabular states ``0..S-1`` or arrays)
to ``A`` actions. Accepted policies, tried in this order:

1. a **policy table**: an array ``(S, A)`` of action probabilities per state, or ``(S,)`` of actions (a
   deterministic table); observations index its rows;
2. an object with ``action_probs(observations, temperature) -> (N, A)``;
3. a Stable-Baselines3 model or policy with a ``Discrete(A)`` action space (PPO, A2C, DQN, ... on
   ``Discrete`` or ``Box`` observations): greedy from its deterministic ``predict``; at ``temperature > 0``
   the softmax of its action logits over the temperature (PPO/A2C; at 1 its own distribution) or, for a
   Q-network (DQN), the Boltzmann policy ``softmax(Q / temperature)``;
4. a ``torch.nn.Module`` mapping observations (a LongTensor ``(N,)`` of states for integer observations, a
   float tensor otherwise) to logits ``(N, A)``;
5. any other object with SB3-style ``predict(obs, deterministic=True)`` (greedy only);
6. a plain callable on the ``(N, ...)`` observations returning actions ``(N,)`` in ``0..A-1`` (greedy only)
   or probabilities ``(N, A)``.

``temperature=0`` is greedy with ties to the lowest action, as for SplitSeq; probabilities ``q`` at
temperature ``T`` become ``q^(1/T)`` renormalised. Bad output raises naming the value and the observation.

:func:`uniform_policy` and :func:`epsilon_greedy` build policy tables.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

import numpy as np
import torch

from measures.policies import (
    BATCH_SIZE,
    _to_numpy,
    check_action_array,
    check_probs,
    probs_from_logits,
    temper,
)
from seqenv.validation import check_int, check_number, check_temperature


class StochasticTableWarning(UserWarning):
    """A stochastic policy table measured at ``temperature=0`` (its greedy version)."""


def world_action_probs(
    policy: Any, observations: Any, n_actions: int, temperature: float = 0.0, batch_size: int = BATCH_SIZE
) -> np.ndarray:
    """The policy's distribution over actions ``0..n_actions-1`` at each observation.

    :param policy: any policy listed in the module docstring.
    :param observations: ``(N, ...)`` observations (int states ``(N,)`` for a tabular world).
    :param n_actions: the size ``A`` of the ``Discrete(A)`` action space.
    :param temperature: 0 for greedy (ties to the lowest action), ``> 0`` to temper logits or probabilities.
    :return: float64 ``(N, A)``, rows summing to 1.
    """
    t = check_temperature(temperature)
    n_actions = check_int(n_actions, "n_actions", 1)
    obs = np.asarray(observations)
    n = len(obs)
    what = _name(policy)
    if isinstance(policy, np.ndarray | list | tuple):
        return _table_probs(np.asarray(policy), obs, n_actions, t)
    if hasattr(policy, "action_probs"):
        return temper_checked(policy.action_probs(obs, temperature=t), n, n_actions, what, 1.0)
    sb3 = _sb3_policy(policy)
    if sb3 is not None:
        return _sb3_probs(sb3, obs, n_actions, t, batch_size)
    if isinstance(policy, torch.nn.Module):
        return probs_from_logits(_module_logits(policy, obs, n_actions, batch_size), t, what)
    if hasattr(policy, "predict") and not callable(policy):
        if t != 0:
            raise ValueError(f"{what} only exposes predict(); use temperature=0 (got {t})")
        return one_hot(
            check_world_actions(policy.predict(obs, deterministic=True)[0], n, n_actions, what), n_actions
        )
    if callable(policy):
        out = _to_numpy(policy(obs))
        if out.ndim == 1:
            if t != 0:
                raise ValueError(
                    f"{what} returned actions, which fix one action per observation; temperature={t} needs "
                    f"probabilities ({n}, {n_actions}), or use temperature=0"
                )
            return one_hot(check_world_actions(out, n, n_actions, what), n_actions)
        return temper_checked(out, n, n_actions, what, t)
    raise TypeError(
        f"cannot use {type(policy).__name__} as a policy; expected a policy table (S, A) or (S,), a callable on "
        "observations, a torch module, a Stable-Baselines3 model/policy or an object with action_probs"
    )


def temper_checked(probs: Any, n: int, n_actions: int, what: str, temperature: float) -> np.ndarray:
    """Validate ``(n, n_actions)`` probabilities and apply a temperature (1 leaves them unchanged)."""
    return temper(check_probs(_to_numpy(probs), n, what, width=n_actions), temperature)


def one_hot(actions: np.ndarray, n_actions: int) -> np.ndarray:
    """One-hot ``(N, A)`` float64 of integer actions."""
    out = np.zeros((len(actions), n_actions))
    out[np.arange(len(actions)), actions] = 1.0
    return out


def check_world_actions(actions: Any, n: int, n_actions: int, what: str = "policy") -> np.ndarray:
    """Validate ``(n,)`` integer actions in ``0..n_actions-1``; return them as int64."""
    arr = _to_numpy(actions)
    if arr.ndim == 2 and arr.shape[1] == 1:  # SB3 predict on some observation spaces: (N, 1)
        arr = arr[:, 0]
    return check_action_array(arr, n, n_actions, what, "observation")


def _table_probs(table: np.ndarray, obs: np.ndarray, n_actions: int, t: float) -> np.ndarray:
    if obs.ndim != 1 or not np.issubdtype(obs.dtype, np.integer):
        raise ValueError(
            f"a policy table is indexed by integer states; got observations of dtype {obs.dtype} and shape "
            f"{obs.shape}"
        )
    if table.ndim == 1:
        acts = check_world_actions(table, len(table), n_actions, "policy table")
        if t != 0:
            raise ValueError(f"a table of actions is deterministic; temperature={t} needs an (S, A) table")
        probs = one_hot(acts, n_actions)
    elif table.ndim == 2:
        probs = check_probs(table, len(table), "policy table", width=n_actions)
        if t == 0 and (probs.max(axis=1) < 1).any():
            warnings.warn(
                "the policy table is stochastic, and temperature=0 measures its greedy version (the most "
                "probable action of each state, ties to the lowest); pass temperature=1 to measure the table "
                "as it is",
                StochasticTableWarning,
                stacklevel=4,
            )
    else:
        raise ValueError(f"a policy table must have shape (S, {n_actions}) or (S,), got {table.shape}")
    bad = (obs < 0) | (obs >= len(probs))
    if bad.any():
        raise ValueError(f"state {int(obs[bad][0])} is outside the policy table's {len(probs)} rows")
    return temper(probs[obs], t)


def _module_logits(module: torch.nn.Module, obs: np.ndarray, n_actions: int, batch_size: int) -> np.ndarray:
    try:
        device = next(module.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    was_training = module.training
    module.eval()
    x = torch.from_numpy(
        np.ascontiguousarray(obs, dtype=np.int64 if np.issubdtype(obs.dtype, np.integer) else np.float32)
    )
    outs = []
    try:
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                outs.append(
                    module(x[start : start + batch_size].to(device)).detach().to("cpu", torch.float64)
                )
    finally:
        module.train(was_training)
    out = torch.cat(outs).numpy() if outs else np.zeros((0, n_actions))
    if out.shape != (len(obs), n_actions):
        raise ValueError(
            f"{_name(module)} returned logits of shape {out.shape}; expected ({len(obs)}, {n_actions})"
        )
    return out


def _sb3_policy(policy: Any) -> Any:
    """The SB3 ``BasePolicy`` behind ``policy``, or ``None`` (SB3 is only consulted if already imported)."""
    if "stable_baselines3" not in sys.modules:
        return None
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.policies import BasePolicy

    if isinstance(policy, BaseAlgorithm):
        policy = policy.policy
    return policy if isinstance(policy, BasePolicy) else None


def _sb3_probs(policy: Any, obs: np.ndarray, n_actions: int, t: float, batch_size: int) -> np.ndarray:
    from gymnasium import spaces

    name = _name(policy)
    space = policy.action_space
    if not isinstance(space, spaces.Discrete) or int(space.n) != n_actions or int(space.start) != 0:
        raise ValueError(f"{name} has action space {space}; expected Discrete({n_actions}) like the world")
    n = len(obs)
    if t == 0:
        parts = [
            policy.predict(obs[i : i + batch_size], deterministic=True)[0] for i in range(0, n, batch_size)
        ]
        acts = np.concatenate([np.asarray(a).reshape(-1) for a in parts]) if parts else np.zeros(0, np.int64)
        return one_hot(check_world_actions(acts, n, n_actions, name), n_actions)
    policy.set_training_mode(False)
    chunks = []
    with torch.no_grad():
        for i in range(0, n, batch_size):
            x, _ = policy.obs_to_tensor(obs[i : i + batch_size])
            if hasattr(policy, "get_distribution"):
                logits = policy.get_distribution(x).distribution.logits
            elif hasattr(policy, "q_net"):  # DQN: the Boltzmann policy of its Q-values
                logits = policy.q_net(x)
            else:
                raise ValueError(
                    f"{name} has neither an action distribution nor a Q-network; use temperature=0"
                )
            chunks.append(logits.detach().to("cpu", torch.float64))
    logits = torch.cat(chunks).numpy() if chunks else np.zeros((0, n_actions))
    return probs_from_logits(logits, t, name)


def uniform_policy(n_states: int, n_actions: int) -> np.ndarray:
    """The uniform policy table ``(S, A)``."""
    return np.full(
        (check_int(n_states, "n_states", 1), check_int(n_actions, "n_actions", 1)), 1.0 / n_actions
    )


def epsilon_greedy(policy: np.ndarray, epsilon: float) -> np.ndarray:
    """``(1 - epsilon) * policy + epsilon * uniform`` for a policy table (``(S,)`` actions or ``(S, A)``)."""
    eps = check_number(epsilon, "epsilon", 0.0)
    if eps > 1:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon!r}")
    table = np.asarray(policy)
    if table.ndim == 1:
        raise ValueError("epsilon_greedy needs an (S, A) table; one_hot(actions, A) turns actions into one")
    probs = check_probs(table, len(table), "policy table", width=table.shape[1])
    return (1 - eps) * probs + eps / probs.shape[1]


def _name(policy: Any) -> str:
    if isinstance(policy, np.ndarray | list | tuple):
        return "policy table"
    name = getattr(policy, "__name__", None) or type(policy).__name__
    return f"policy {name}"


__all__ = [
    "StochasticTableWarning",
    "check_world_actions",
    "epsilon_greedy",
    "one_hot",
    "temper_checked",
    "uniform_policy",
    "world_action_probs",
]
