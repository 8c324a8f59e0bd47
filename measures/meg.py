"""Maximum entropy goal-directedness (MEG; MacDermott, Fox, Belardinelli, Everitt, NeurIPS 2024) in tabular MDPs.

MEG of a policy ``pi`` with respect to a utility ``U(s, a)`` is how much better than the uniform policy the
best soft-optimal (maximum-entropy) policy predicts ``pi``'s own actions along ``pi``'s own trajectories,
in nats::

    MEG_U(pi) = max_{beta in [0, inf]}  E_pi[ sum_t ( ln pi_beta(a_t | s_t) - ln(1/A) ) ]

over the decisions in non-terminal states. The soft-optimal policy at rationality ``beta`` comes from soft
value iteration, with a finite horizon ``H`` (time-dependent, the default when the environment has a time
limit) or a discount ``gamma`` (stationary)::

    Q_t(s, a) = U(s, a) + sum_s' P(s'|s, a) V_{t+1}(s'),   V_H = 0
    V_t(s)    = (1/beta) ln sum_a exp(beta Q_t(s, a)),      pi_beta,t(a|s) = exp(beta (Q_t(s, a) - V_t(s)))
    (discounted: Q = U + gamma P V, iterated to its fixed point)

``beta = 0`` is the uniform policy (gain 0, so MEG >= 0, and MEG = 0 for the uniform policy), ``beta -> inf``
the uniform policy over the optimal actions (hard value iteration). Terminal states are absorbing and keep
their utility, so a positive affine map ``a U + b`` of the whole utility table adds a constant per step
(``b (H - t)``, or ``b / (1 - gamma)``) and scales ``Q``: ``pi_beta`` under ``a U + b`` is ``pi_{a beta}`` under
``U``, and MEG is unchanged. The search runs over ``beta * range(U)`` (a grid of 8 points per decade from
1e-3 to 1e4, refined by Brent's method around the best point, plus ``beta = inf``), so it is scale-free.

``meg`` is the expected gain per episode (the paper's sum over decisions); ``meg_per_step`` divides it by
the expected number of decisions (visits to non-terminal states). With ``negative=True`` the search also
covers ``beta < 0`` (soft-optimal for ``-U``: pursuing the opposite goal counts too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import logsumexp

from measures.policies import greedy
from measures.world_policies import world_action_probs
from measures.worlds import TabularWorld, tabular_rows, tabular_world
from seqenv.validation import check_int, check_number, check_temperature

#: the rationality grid, as ``beta * range(U)``
BETA_GRID = np.logspace(-3, 4, 57)
_VI_TOL = 1e-12  # relative change of V at which discounted value iteration stops
_VI_MAX_ITER = 100_000
_REFINE_ROUNDS, _REFINE_POINTS = 3, 17  # local grids between the best point's neighbours, on log beta


@dataclass(frozen=True)
class MEGResult:
    """MEG of a policy with respect to a utility, with the rationality that attains it.

    :param meg: the expected predictive gain per episode, in nats (the paper's MEG); with a discount, the
        expected discounted sum of the per-decision gains.
    :param meg_per_step: ``meg`` over the expected number of decisions (``decisions``).
    :param beta: the maximising rationality, in units of 1/utility (``inf``: the hard-optimal limit; 0: no
        soft-optimal policy predicts better than uniform).
    :param decisions: expected number of decisions (visits to non-terminal states) per episode (discounted
        with ``discount``).
    :param betas: the rationalities tried; :param gains: the gain per episode at each.
    :param horizon: the finite horizon, or ``None``; :param discount: the discount, or ``None``.
    :param world: the world's name.
    """

    meg: float
    meg_per_step: float
    beta: float
    decisions: float
    betas: tuple[float, ...]
    gains: tuple[float, ...]
    horizon: int | None
    discount: float | None
    world: str


def utility_table(world: TabularWorld, utility: Any) -> np.ndarray:
    """``U`` ``(S, A)``: ``"reward"`` (the world's expected reward) or an ``(S, A)`` / ``(S, A, S)`` array."""
    s, a = world.n_states, world.n_actions
    if isinstance(utility, str):
        if utility != "reward":
            raise ValueError(f"unknown utility {utility!r}; expected 'reward' or an ({s}, {a}) array")
        return world.reward
    u = np.asarray(utility, dtype=np.float64)
    if u.shape == (s, a, s):
        u = (world.P * u).sum(axis=2)
    if u.shape != (s, a):
        raise ValueError(f"utility must have shape ({s}, {a}) or ({s}, {a}, {s}), got {u.shape}")
    if not np.isfinite(u).all():
        raise ValueError("utility holds a non-finite value")
    return u


def _check_schedule(
    world: TabularWorld, env: Any, horizon: Any, discount: Any
) -> tuple[int | None, float | None]:
    if horizon is not None and discount is not None:
        raise ValueError("give horizon= or discount=, not both")
    if discount is not None:
        g = check_number(discount, "discount", 0.0)
        if not g < 1:
            raise ValueError(f"discount must be in [0, 1), got {discount!r}")
        return None, g
    if horizon is None:
        spec = getattr(env, "spec", None)
        horizon = getattr(spec, "max_episode_steps", None)
        if horizon is None:
            raise ValueError(
                f"{world.name!r} has no time limit to take the horizon from; pass horizon= (steps) or discount="
            )
    return check_int(horizon, "horizon", 1), None


def _start(world: TabularWorld, start: Any) -> np.ndarray:
    """The start distribution ``(S,)``: ``None`` (the world's, else uniform over non-terminal states), a
    distribution of floats, or states as :func:`measures.worlds.tabular_rows` takes them."""
    s = world.n_states
    if start is None:
        if world.initial is not None:
            return world.initial
        start = "nonterminal"
    arr = None if isinstance(start, str) else np.asarray(start)
    if arr is not None and arr.dtype.kind == "f":
        if arr.shape != (s,) or (arr < 0).any() or abs(arr.sum() - 1) > 1e-6:
            raise ValueError(
                f"a start distribution must be ({s},) probabilities summing to 1, got shape {arr.shape}"
            )
        return arr / arr.sum()
    rows = tabular_rows(world, start if arr is None or arr.ndim else arr.reshape(1), minimum=1)
    return np.bincount(rows, minlength=s) / len(rows)


def soft_q(
    world: TabularWorld,
    utility: np.ndarray,
    beta: float,
    horizon: int | None = None,
    discount: float | None = None,
) -> np.ndarray:
    """Soft Q-values: ``(H, S, A)`` for a finite horizon (``Q_t``), ``(S, A)`` with a discount.

    ``beta = inf`` gives the hard (optimal) Q-values; ``beta = 0`` the expected utility of the uniform policy.
    ``V`` is the log-mean-exp ``(1/beta) ln mean_a exp(beta Q)``: the log-sum-exp of the module docstring
    less ``ln(A)/beta`` per step to go, a constant across states that changes no soft-optimal policy.
    """
    P = world.P

    def value(q: np.ndarray) -> np.ndarray:
        if np.isinf(beta):
            return q.max(axis=1) if beta > 0 else q.min(axis=1)
        if beta == 0:
            return q.mean(axis=1)
        # (1/beta) ln mean_a exp(beta Q): the paper's log-sum-exp less ln(A)/beta, the same for every state,
        # so the same policies; it tends to the uniform policy's mean Q as beta -> 0 instead of diverging
        return logsumexp(beta * q, axis=1, b=1.0 / q.shape[1]) / beta

    if horizon is not None:
        out = np.empty((horizon,) + utility.shape)
        v = np.zeros(world.n_states)
        for t in range(horizon - 1, -1, -1):
            out[t] = utility + P @ v
            v = value(out[t])
        return out
    v = np.zeros(world.n_states)
    for _ in range(_VI_MAX_ITER):
        q = utility + discount * (P @ v)
        v_new = value(q)
        done = np.max(np.abs(v_new - v)) <= _VI_TOL * (1.0 + np.max(np.abs(v_new)))
        v = v_new
        if done:
            return utility + discount * (P @ v)
    raise RuntimeError(
        f"soft value iteration did not converge in {_VI_MAX_ITER} iterations (discount {discount})"
    )


def log_soft_policy(q: np.ndarray, beta: Any) -> np.ndarray:
    """``ln pi_beta(a|s)`` from Q-values ``(..., S, A)`` (``beta`` broadcasts against them); at a scalar
    ``beta = +-inf`` uniform over the best actions (ties within 1e-9 relative)."""
    if np.ndim(beta) == 0 and np.isinf(beta):
        q = q if beta > 0 else -q
        top = q.max(axis=-1, keepdims=True)
        tol = 1e-9 * (1.0 + np.abs(top))
        best = q >= top - tol
        with np.errstate(divide="ignore"):
            return np.where(best, -np.log(best.sum(axis=-1, keepdims=True)), -np.inf)
    z = beta * q
    return z - logsumexp(z, axis=-1, keepdims=True)


def q_values(world: Any, utility: Any = "reward", *, discount: float = 0.99) -> np.ndarray:
    """Optimal ``Q*`` ``(S, A)`` by (hard) value iteration with a discount."""
    w = tabular_world(world)
    _, g = _check_schedule(w, None, None, discount)
    return soft_q(w, utility_table(w, utility), np.inf, discount=g)


def optimal_policy(world: Any, utility: Any = "reward", *, discount: float = 0.99) -> np.ndarray:
    """A deterministic optimal policy table ``(S, A)`` (one-hot; ties to the lowest action)."""
    q = q_values(world, utility, discount=discount)
    top = q.max(axis=1, keepdims=True)
    return greedy(np.where(q >= top - 1e-9 * (1.0 + np.abs(top)), 1.0, 0.0))


def meg(
    policy: Any,
    env: Any,
    utility: Any = "reward",
    *,
    horizon: int | None = None,
    discount: float | None = None,
    start: Any = None,
    temperature: float = 0.0,
    negative: bool = False,
) -> MEGResult:
    """MEG of ``policy`` with respect to ``utility`` in a tabular world (module docstring).

    :param policy: any policy :func:`measures.measure_mdp` takes (evaluated at ``temperature``).
    :param env: an environment with a toy-text ``P``, a ``P`` dict or array, or a ``TabularWorld``.
    :param utility: ``"reward"`` (the environment's expected reward ``r(s, a)``) or a ``(S, A)`` /
        ``(S, A, S)`` array.
    :param horizon: the finite horizon (default: the environment's time limit).
    :param discount: a discount in [0, 1) instead of a horizon.
    :param start: the start distribution: ``None`` (the environment's, else uniform over non-terminal
        states), an ``(S,)`` float distribution or start states.
    :param temperature: of the policy (0 = greedy).
    :param negative: also search ``beta < 0``.
    :return: a :class:`MEGResult`.
    """
    world = tabular_world(env)
    h, g = _check_schedule(world, env, horizon, discount)
    u = utility_table(world, utility)
    d0 = _start(world, start)
    t = check_temperature(temperature)
    pi = world_action_probs(policy, np.arange(world.n_states), world.n_actions, t)
    live = ~world.terminal
    occupancy = _occupancy(world, pi, d0, h, g) * live  # (H, S) or (S,): visits to decision states
    decisions = float(occupancy.sum())
    scale = float(u[live].max() - u[live].min()) if live.any() else 0.0
    if scale == 0 or decisions == 0:  # every soft-optimal policy is uniform, or there is nothing to predict
        return MEGResult(0.0, 0.0, 0.0, decisions, (0.0,), (0.0,), h, g, world.name)

    def gains(betas: np.ndarray) -> np.ndarray:
        return _gains(world, u, pi, occupancy, np.asarray(betas, dtype=np.float64), h, g)

    signs = (1.0, -1.0) if negative else (1.0,)
    grid = np.concatenate([[0.0]] + [s * BETA_GRID / scale for s in signs] + [[s * np.inf] for s in signs])
    values = gains(grid)
    best = int(np.argmax(values))
    tried_b, tried_g = [grid], [values]
    if np.isfinite(grid[best]) and grid[best] != 0:  # refine on log |beta| between the grid neighbours
        sign, k = np.sign(grid[best]), int(np.argmin(np.abs(BETA_GRID / scale - abs(grid[best]))))
        lo, hi = np.log(BETA_GRID[max(k - 1, 0)]), np.log(BETA_GRID[min(k + 1, len(BETA_GRID) - 1)])
        for _ in range(_REFINE_ROUNDS):
            local = np.exp(np.linspace(lo, hi, _REFINE_POINTS))
            local_g = gains(sign * local / scale)
            tried_b.append(sign * local / scale)
            tried_g.append(local_g)
            i = int(np.argmax(local_g))
            lo, hi = np.log(local[max(i - 1, 0)]), np.log(local[min(i + 1, len(local) - 1)])
    betas, values = np.concatenate(tried_b), np.concatenate(tried_g)
    order = np.argsort(betas, kind="stable")
    best = int(np.argmax(values))
    return MEGResult(
        meg=float(values[best]),
        meg_per_step=float(values[best]) / decisions,
        beta=float(betas[best]),
        decisions=decisions,
        betas=tuple(float(b) for b in betas[order]),
        gains=tuple(float(x) for x in values[order]),
        horizon=h,
        discount=g,
        world=world.name,
    )


def _gains(
    world: TabularWorld,
    u: np.ndarray,
    pi: np.ndarray,
    occupancy: np.ndarray,
    betas: np.ndarray,
    horizon: int | None,
    discount: float | None,
) -> np.ndarray:
    """The predictive gain ``E_pi[sum_t ln pi_beta(a_t|s_t) + ln A]`` at each ``beta``, all at once."""
    out = np.zeros(len(betas))
    for idx in (np.flatnonzero(np.isfinite(betas) & (betas != 0)), np.flatnonzero(np.isinf(betas))):
        if len(idx):
            out[idx] = _gains_batch(world, u, pi, occupancy, betas[idx], horizon, discount)
    return out


def _gains_batch(
    world: TabularWorld,
    u: np.ndarray,
    pi: np.ndarray,
    occupancy: np.ndarray,
    betas: np.ndarray,
    horizon: int | None,
    discount: float | None,
) -> np.ndarray:
    """:func:`_gains` for ``K`` betas that are all finite and non-zero, or all infinite."""
    k, (s, a) = len(betas), u.shape
    flat = world._flat  # (S * A, S) sparse
    log_a = np.log(a)
    hard = np.isinf(betas[0])

    def backup(v: np.ndarray, gamma: float) -> tuple[np.ndarray, np.ndarray]:
        """``(Q, V)`` one step back from ``V`` ``(K, S)``."""
        q = u[None] + gamma * np.asarray(flat @ v.T).T.reshape(k, s, a)
        if hard:
            return q, np.where(betas[:, None] > 0, q.max(axis=2), q.min(axis=2))
        return q, logsumexp(betas[:, None, None] * q, axis=2, b=1.0 / a) / betas[:, None]

    def gain_of(q: np.ndarray, weights: np.ndarray) -> np.ndarray:
        logp = log_soft_policy(q, betas[:, None, None]) if not hard else _hard_log_policy(q, betas)
        with np.errstate(invalid="ignore"):
            per = np.where(pi[None] > 0, pi[None] * (logp + log_a), 0.0).sum(axis=2)  # (K, S)
        seen = weights > 0  # -inf (an action pi_inf never takes) only counts where pi goes
        return per[:, seen] @ weights[seen]

    v = np.zeros((k, s))
    if horizon is not None:
        total = np.zeros(k)
        for t in range(horizon - 1, -1, -1):
            q, v = backup(v, 1.0)
            total += gain_of(q, occupancy[t])
        return total
    for _ in range(_VI_MAX_ITER):
        q, v_new = backup(v, discount)
        done = np.max(np.abs(v_new - v)) <= _VI_TOL * (1.0 + np.max(np.abs(v_new)))
        v = v_new
        if done:
            return gain_of(backup(v, discount)[0], occupancy)
    raise RuntimeError(
        f"soft value iteration did not converge in {_VI_MAX_ITER} iterations (discount {discount})"
    )


def _hard_log_policy(q: np.ndarray, betas: np.ndarray) -> np.ndarray:
    return np.stack([log_soft_policy(q[i], float(b)) for i, b in enumerate(betas)])


def _occupancy(
    world: TabularWorld, pi: np.ndarray, d0: np.ndarray, horizon: int | None, discount: float | None
) -> np.ndarray:
    """Expected state visits under ``pi`` from ``d0``: ``(H, S)`` per step ``d_t``, or the discounted
    ``sum_t gamma^t d_t`` ``(S,)``."""
    m = world.transition_matrix(pi)
    if horizon is not None:
        out = np.empty((horizon, world.n_states))
        d = d0
        for t in range(horizon):
            out[t] = d
            d = np.asarray(m.T @ d)
        return out
    a = np.eye(world.n_states) - discount * m.toarray()
    return np.linalg.solve(a.T, d0)
