"""Finite worlds for the measures: tabular MDPs from Gymnasium's ``P`` convention or from arrays.

A :class:`TabularWorld` holds the transition probabilities ``P[s, a, s']`` of ``S`` states and ``A``
actions, the expected reward ``r(s, a)``, which states are terminal and, when known, the start
distribution. Terminal states are **absorbing**: every action leaves them where they are, with reward 0,
so "the state after ``k`` steps" is defined for every start state and every ``k``.

:func:`tabular_world` builds one from

* a Gymnasium environment whose ``env.unwrapped.P`` follows the toy-text convention
  ``P[s][a] = [(prob, next_state, reward, terminated), ...]`` (FrozenLake 4x4 and 8x8, slippery or not,
  CliffWalking, Taxi): a state entered by a transition with ``terminated=True`` is terminal (FrozenLake's
  holes and goal, CliffWalking's goal, Taxi's delivered-passenger states); repeated next states are summed;
  ``env.unwrapped.initial_state_distrib`` is the start distribution when the environment has it;
* such a ``P`` dict itself, or arrays: ``tabular_world(P_array, terminal=..., reward=..., initial=...)``
  with ``P_array`` of shape ``(S, A, S)``.

A state entered with ``terminated=True`` by one transition and with ``terminated=False`` by another,
from a state an episode can reach, cannot be one state of a Markov chain over states; that raises (Taxi
has such transitions only out of states no episode reaches, which are harmless and allowed).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

from seqenv.validation import check_int

PROB_ATOL = 1e-6  #: tolerance on the sum of a transition distribution
#: the values of ``states=`` that name a set of start states (``None`` means ``"nonterminal"``)
STATE_SETS = ("nonterminal", "reachable")


@dataclass(frozen=True, eq=False)
class TabularWorld:
    """A finite MDP with absorbing terminal states.

    :param P: ``(S, A, S)`` float64 transition probabilities ``P[s, a, s']``; a terminal state's rows are
        self-loops.
    :param reward: ``(S, A)`` expected reward ``sum_s' P[s, a, s'] R(s, a, s')``; 0 in terminal states.
    :param terminal: ``(S,)`` bool, the absorbing states.
    :param initial: ``(S,)`` start distribution, or ``None`` when unknown.
    :param name: a label for reports (the Gymnasium id when built from an environment).
    """

    P: np.ndarray
    reward: np.ndarray
    terminal: np.ndarray
    initial: np.ndarray | None
    name: str = "tabular"

    @property
    def n_states(self) -> int:
        return self.P.shape[0]

    @property
    def n_actions(self) -> int:
        return self.P.shape[1]

    def nonterminal_states(self) -> np.ndarray:
        """The states that are not terminal, in increasing order."""
        return np.flatnonzero(~self.terminal)

    def reachable_states(self) -> np.ndarray:
        """The non-terminal states some action sequence reaches from the start distribution (its support
        included), in increasing order. Needs ``initial``."""
        if self.initial is None:
            raise ValueError(
                f"world {self.name!r} has no start distribution, so 'reachable' is undefined; pass states= "
                "explicitly or build the world with initial="
            )
        return np.flatnonzero(_reachable(self.P, self.terminal, self.initial > 0) & ~self.terminal)

    def transition_matrix(self, pi: np.ndarray) -> sparse.csr_matrix:
        """The state-to-state matrix ``P_pi[s, s'] = sum_a pi(a|s) P[s, a, s']`` (sparse) of a policy table
        ``pi`` ``(S, A)``."""
        s, a = self.n_states, self.n_actions
        mix = sparse.csr_matrix(
            (pi.reshape(-1), np.arange(s * a), np.arange(0, s * a + 1, a)), shape=(s, s * a)
        )
        return (mix @ self._flat).tocsr()

    @property
    def _flat(self) -> sparse.csr_matrix:
        """``P`` as a sparse ``(S * A, S)`` matrix (built once)."""
        cached = self.__dict__.get("_flat_cache")
        if cached is None:
            cached = sparse.csr_matrix(self.P.reshape(-1, self.n_states))
            object.__setattr__(self, "_flat_cache", cached)
        return cached

    def action_rows(self, states: np.ndarray) -> sparse.csr_matrix:
        """The rows ``P[s, a, :]`` of the listed states, stacked ``(len(states) * A, S)`` (sparse), row
        ``i * A + a`` for state ``states[i]`` and action ``a``."""
        rows = (np.asarray(states)[:, None] * self.n_actions + np.arange(self.n_actions)).reshape(-1)
        return self._flat[rows]

    def action_step(self, states: np.ndarray, values: np.ndarray) -> np.ndarray:
        """``sum_s' P[s, a, s'] values[s']`` for each listed state and action: ``(len(states), A, X)`` from
        ``values`` ``(S, X)``."""
        rows = (np.asarray(states)[:, None] * self.n_actions + np.arange(self.n_actions)).reshape(-1)
        out = self._flat[rows] @ values
        return np.asarray(out).reshape(len(states), self.n_actions, -1)


def _reachable(P: np.ndarray, terminal: np.ndarray, start: np.ndarray) -> np.ndarray:
    """States reachable from ``start`` (bool ``(S,)``) along positive transitions, not leaving terminal
    states."""
    n = len(terminal)
    step = (P.sum(axis=1) > 0) & ~terminal[:, None]  # s -> s' by some action; terminal states lead nowhere
    graph = np.zeros((n + 1, n + 1), dtype=bool)  # node n: a source linked to every start state
    graph[:n, :n] = step
    graph[n, :n] = start
    order = csgraph.breadth_first_order(sparse.csr_matrix(graph), n, directed=True, return_predecessors=False)
    seen = np.zeros(n + 1, dtype=bool)
    seen[order] = True
    return seen[:n]


def tabular_world(
    env: Any,
    *,
    terminal: Iterable[int] | np.ndarray | None = None,
    reward: np.ndarray | None = None,
    initial: np.ndarray | None = None,
    name: str | None = None,
) -> TabularWorld:
    """A :class:`TabularWorld` from a Gymnasium environment, a toy-text ``P`` dict or a ``(S, A, S)`` array.

    :param env: a :class:`TabularWorld` (returned as it is), an environment with ``env.unwrapped.P``, a
        ``P`` dict ``{s: {a: [(prob, next_state, reward, terminated), ...]}}``, or an array ``(S, A, S)``.
    :param terminal: arrays only: the terminal states (indices or an ``(S,)`` bool mask); default none.
    :param reward: arrays only: ``(S, A)`` expected rewards; default 0.
    :param initial: the start distribution ``(S,)`` (default: the environment's ``initial_state_distrib``).
    :param name: a label (default: the environment's id).
    :raises ValueError: on a malformed ``P`` (a probability outside [0, 1], rows not summing to 1, a next
        state out of range, states or actions missing), naming the offending entry.
    """
    if isinstance(env, TabularWorld):
        if any(x is not None for x in (terminal, reward, initial, name)):
            raise ValueError("terminal=, reward=, initial= and name= only apply when building a world")
        return env
    is_array = isinstance(env, np.ndarray) or (isinstance(env, list | tuple) and np.ndim(env) == 3)
    if not is_array and (terminal is not None or reward is not None):
        raise ValueError(
            "terminal= and reward= only apply to a P array; a P dict or an environment has its own"
        )
    entries, init, label = None, None, name
    if is_array:
        P, rew, term = _from_arrays(np.asarray(env, dtype=np.float64), terminal, reward)
    elif isinstance(env, dict):
        P, rew, term, entries = _from_dict(env, "P")
    else:
        unwrapped = getattr(env, "unwrapped", env)
        table = getattr(unwrapped, "P", None)
        if not isinstance(table, dict):
            raise TypeError(
                f"cannot build a tabular world from {type(env).__name__}: it has no toy-text transition table "
                "env.unwrapped.P (a dict P[s][a] = [(prob, next_state, reward, terminated), ...]). Pass a "
                "(S, A, S) array, a P dict, or measure it as a simulator with measures.measure_simulator"
            )
        P, rew, term, entries = _from_dict(table, f"{type(unwrapped).__name__}.P")
        dist = getattr(unwrapped, "initial_state_distrib", None)
        init = None if dist is None else np.asarray(dist, dtype=np.float64)
        label = label or _env_label(env, unwrapped)
    if initial is not None:
        init = np.asarray(initial, dtype=np.float64)
    if init is not None:
        init = _check_distribution(init, P.shape[0], "initial")
    world = TabularWorld(P=P, reward=rew, terminal=term, initial=init, name=label or "tabular")
    if entries is not None:
        _check_termination_consistent(world, entries)
    return world


def _env_label(env: Any, unwrapped: Any) -> str:
    spec = getattr(env, "spec", None)
    if spec is None:
        return type(unwrapped).__name__
    kwargs = ", ".join(f"{k}={v}" for k, v in sorted(spec.kwargs.items()) if k != "render_mode")
    return f"{spec.id}({kwargs})" if kwargs else spec.id


def _check_distribution(x: np.ndarray, n: int, name: str) -> np.ndarray:
    if x.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) (one probability per state), got {x.shape}")
    if not np.isfinite(x).all() or (x < 0).any() or abs(x.sum() - 1.0) > PROB_ATOL:
        raise ValueError(f"{name} must be a probability distribution over the {n} states, got sum {x.sum()}")
    return x / x.sum()


def _from_arrays(P: np.ndarray, terminal: Any, reward: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if P.ndim != 3 or P.shape[0] != P.shape[2] or P.shape[0] < 1 or P.shape[1] < 1:
        raise ValueError(f"P must have shape (S, A, S) with S, A >= 1, got {P.shape}")
    s, a, _ = P.shape
    term = np.zeros(s, dtype=bool)
    if terminal is not None:
        t = np.asarray(terminal)
        if t.dtype == bool:
            if t.shape != (s,):
                raise ValueError(f"a terminal mask must have shape ({s},), got {t.shape}")
            term = t.copy()
        else:
            for x in t.reshape(-1):
                term[check_int(x, "terminal state", 0, maximum=s - 1)] = True
    live = P[~term]  # a terminal state's rows are replaced by self-loops: they may be left empty
    if not np.isfinite(P).all() or (P < 0).any():
        idx = np.argwhere(~(np.isfinite(P) & (P >= 0)))[0]
        raise ValueError(f"P{tuple(int(i) for i in idx)} = {P[tuple(idx)]} is not a probability")
    off = np.abs(live.sum(axis=2) - 1.0) > PROB_ATOL
    if off.any():
        st, ac = np.argwhere(off)[0]
        st = np.flatnonzero(~term)[st]
        raise ValueError(f"P[{st}, {ac}, :] sums to {P[st, ac].sum()}; expected 1 (within {PROB_ATOL})")
    P = P.copy()
    P[~term] /= P[~term].sum(axis=2, keepdims=True)
    rew = np.zeros((s, a)) if reward is None else np.asarray(reward, dtype=np.float64)
    if rew.shape == (s, a, s):
        rew = (P * rew).sum(axis=2)
    if rew.shape != (s, a) or not np.isfinite(rew).all():
        raise ValueError(f"reward must be finite with shape ({s}, {a}) or ({s}, {a}, {s}), got {rew.shape}")
    return _absorb(P, rew.copy(), term)


def _absorb(P: np.ndarray, rew: np.ndarray, term: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Make the terminal states absorbing (self-loops under every action) with reward 0."""
    P = P.copy()
    idx = np.flatnonzero(term)
    P[idx] = 0.0
    P[idx, :, idx] = 1.0
    rew[idx] = 0.0
    return P, rew, term


def _from_dict(table: dict, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple]:
    """``(P, reward, terminal, entries)`` from a toy-text ``P`` dict; ``entries`` are the flat
    ``(state, action, prob, next_state, terminated)`` arrays of its transitions."""
    s = len(table)
    if s == 0 or sorted(table) != list(range(s)):
        raise ValueError(f"{what} must have the states 0..S-1 as keys, got {sorted(table)[:5]}...")
    n_act = {len(table[k]) for k in range(s)}
    if len(n_act) != 1 or 0 in n_act:
        raise ValueError(f"{what}: every state must have the same non-zero number of actions, got {n_act}")
    a = n_act.pop()
    flat = []
    for st in range(s):
        acts = table[st]
        if any(ac not in acts for ac in range(a)):
            raise ValueError(f"{what}[{st}] must have the actions 0..{a - 1} as keys, got {sorted(acts)}")
        for ac in range(a):
            for entry in acts[ac]:
                if len(entry) != 4:
                    raise ValueError(
                        f"{what}[{st}][{ac}] holds {entry!r}; expected (prob, next_state, reward, terminated)"
                    )
                flat.append((st, ac, *entry))
    st, ac, prob, nxt, r, done = (np.asarray(c) for c in zip(*flat, strict=True))
    prob, r, done = prob.astype(np.float64), r.astype(np.float64), done.astype(bool)
    bad = ~((prob >= 0) & (prob <= 1))
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{what}[{st[k]}][{ac[k]}] has probability {prob[k]}; expected a value in [0, 1]")
    bad = ~np.isin(nxt, np.arange(s)) if nxt.dtype.kind in "iu" else np.ones(len(nxt), dtype=bool)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ValueError(f"next state in {what}[{st[k]}][{ac[k]}] must be an int in 0..{s - 1}, got {nxt[k]}")
    nxt = nxt.astype(np.int64)
    pair = st * a + ac
    P = np.bincount(pair * s + nxt, weights=prob, minlength=s * a * s).reshape(s, a, s)
    rew = np.bincount(pair, weights=prob * r, minlength=s * a).reshape(s, a)
    total = P.sum(axis=2)
    off = np.abs(total - 1.0) > PROB_ATOL
    if off.any():
        bs, ba = np.argwhere(off)[0]
        raise ValueError(f"{what}[{bs}][{ba}] probabilities sum to {total[bs, ba]}; expected 1")
    term = np.zeros(s, dtype=bool)
    term[nxt[done & (prob > 0)]] = True
    P /= total[:, :, None]
    return (*_absorb(P, rew, term), (st, ac, prob, nxt, done))


def _check_termination_consistent(world: TabularWorld, entries: tuple) -> None:
    """Raise if a terminal state is also entered without termination from a state an episode reaches."""
    st, ac, prob, nxt, done = entries
    live = ~world.terminal
    if world.initial is not None:
        live &= _reachable(world.P, world.terminal, world.initial > 0)
    bad = live[st] & (prob > 0) & ~done & world.terminal[nxt]
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"state {nxt[k]} is entered with terminated=True by one transition and with terminated=False from "
            f"state {st[k]} (action {ac[k]}), which an episode reaches: it cannot be both absorbing and live. "
            "Build the world from arrays with the terminal states you mean"
        )


def tabular_rows(world: TabularWorld, states: Any, minimum: int = 2) -> np.ndarray:
    """The start states of a measure as int64 ``(N,)``: ``None`` / ``"nonterminal"`` (every non-terminal
    state), ``"reachable"`` (:meth:`TabularWorld.reachable_states`) or explicit state indices (repeats
    allowed: they weight the state). At least ``minimum`` (a split needs 2)."""
    if states is None or (isinstance(states, str) and states == "nonterminal"):
        out = world.nonterminal_states()
    elif isinstance(states, str):
        if states not in STATE_SETS:
            raise ValueError(
                f"unknown states={states!r}; expected one of {list(STATE_SETS)}, None or state indices"
            )
        out = world.reachable_states()
    else:
        arr = np.asarray(states)
        if arr.ndim != 1 or arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(
                f"states must be a 1-D sequence of integer state indices, got {arr.dtype} of shape {arr.shape}"
            )
        bad = (arr < 0) | (arr >= world.n_states)
        if bad.any():
            raise ValueError(
                f"state {int(arr[bad][0])} is out of range; {world.name!r} has states 0..{world.n_states - 1}"
            )
        out = arr.astype(np.int64)
    if len(out) < minimum:
        what = "a split-history measure" if minimum == 2 else "this measure"
        raise ValueError(f"{what} needs at least {minimum} start states, got {len(out)} (states={states!r})")
    return out
