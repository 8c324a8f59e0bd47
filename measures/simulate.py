"""``measure_simulator(policy, env, good, ...)``: the post's Monte Carlo Op and Imp for an environment without ``P``.

The world is a black box that can be copied: each history is a *snapshot* of the environment (a state
reached by resetting it, optionally followed by a walk of the policy), and every sample of the future is a
rollout from a fresh copy of a snapshot. One repeat, on ``n`` snapshots (the post: 200, 10 repeats):

1. ``F^``: from each snapshot ``i`` take ``a ~ pi(.|o_i)``, then follow ``pi`` for ``horizon - 1`` more steps
   (a terminated episode stops early: its last observation is the outcome; truncation by a time limit is
   ignored, as in the exact measure, which has no clock);
   ``x_i = outcome(observation)``;
2. split history: for every pair ``(i, j)`` roll out from snapshot ``i`` with the first action drawn from
   ``pi(.|o_j)`` and then ``pi`` (``split="first"``), or every action from ``pi(.|o_j)`` (``"every"``);
   the ``n`` outcomes ``x_.j`` give ``F'^_j`` (``n^2`` rollouts). A single baseline policy ``rho`` instead
   takes one rollout per snapshot;
3. ``Op = mean_j H(F'^_j) - H(F^)``, ``Imp = mean_j KL(F^ || F'^_j)``, success rates are sample fractions;
   the chance rate ``p`` of ``Op_theory`` is the success of the uniform policy, from one rollout per
   snapshot and first action, pooled over all repeats (a repeat without a uniform success would make
   ``Op_theory`` infinite), so its sampling error is not in ``Op_theory``'s interval.

Entropies are plug-in estimates from counts and the KL smooths the comparison counts with the
Krichevsky-Trofimov estimator over the ``m`` outcome classes (``outcomes=``, else those seen in the
repeat), as :mod:`measures.monte_carlo` does for SplitSeq; ``estimator="miller_madow"`` subtracts the
first-order biases. Figures are means over repeats, with Student-t intervals.

Copies: ``clone(env)`` (default ``copy.deepcopy``: about 1 ms for a toy-text environment, which copies
its whole ``P`` table) gives each rollout a fresh copy, reseeding ``env.unwrapped.np_random`` so that copies
do not share random draws. Faster: ``state=(get_state, set_state)`` saves a snapshot's state and restores
it into one of ``n`` reused environments (:data:`TOY_TEXT_STATE` for Gymnasium's toy-text environments).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np

from measures.api import Evaluation, child_rng
from measures.mdp import SPLITS, WorldMeasureResult, check_rate, world_figures, world_result
from measures.mdp_futures import takes_start
from measures.monte_carlo import ESTIMATORS, count_entropy, count_kl
from measures.split import Draws
from measures.world_policies import world_action_probs
from seqenv.validation import check_int, check_optional_seed, check_temperature

#: ``state=`` for Gymnasium's toy-text environments: their whole state is ``env.unwrapped.s``
TOY_TEXT_STATE = (
    lambda env: int(env.unwrapped.s),
    lambda env, s: setattr(env.unwrapped, "s", s),
)


def _label(obs: Any) -> Any:
    """The default outcome: the observation itself (an int, or a tuple for an array)."""
    arr = np.asarray(obs)
    if arr.ndim == 0:
        return arr.item()
    return tuple(arr.reshape(-1).tolist())


class _Sim:
    """``n`` snapshots of an environment and rollouts from them (see the module docstring)."""

    def __init__(
        self, env: Any, n: int, rng: np.random.Generator, clone: Callable | None, state: tuple | None
    ):
        self.env, self.n, self.rng = env, n, rng
        self.clone = clone or copy.deepcopy
        self.state = state
        self.n_actions = int(env.action_space.n)
        # with state=(get, set): n reused copies, each seeded once; with clone: a fresh copy per rollout
        self.pool = [self._copy(env) for _ in range(n)] if state is not None else None
        self.snaps: list[Any] = []
        self.start_obs: list[Any] = []
        self.with_start = False  # outcome(start_observation, observation)

    def _copy(self, env: Any) -> Any:
        e = self.clone(env)
        unwrapped = getattr(e, "unwrapped", e)
        if hasattr(unwrapped, "np_random"):
            unwrapped.np_random = np.random.default_rng(int(self.rng.integers(2**63)))
        return e

    def start(self, start: Callable | None, walk: int, probs: Callable) -> np.ndarray:
        """Put the ``n`` snapshots in their start states and return their observations."""
        envs = self.pool if self.pool is not None else [self._copy(self.env) for _ in range(self.n)]
        obs = []
        for e in envs:
            if start is None:
                obs.append(e.reset(seed=int(self.rng.integers(2**31)))[0])
            else:
                obs.append(start(e, self.rng))
        steps = self.rng.integers(0, walk + 1, size=self.n) if walk else np.zeros(self.n, int)
        for t in range(int(steps.max(initial=0))):
            idx = np.flatnonzero(steps > t)
            acts = _sample(probs(_stack([obs[i] for i in idx])), self.rng)
            for i, a in zip(idx, acts, strict=True):
                o, _, term, trunc, _ = envs[i].step(int(a))
                obs[i] = o if not (term or trunc) else envs[i].reset(seed=int(self.rng.integers(2**31)))[0]
        self.snaps = [self.state[0](e) for e in envs] if self.state is not None else envs
        self.start_obs = obs
        return _stack(obs)

    def rollouts(
        self,
        first: np.ndarray,
        then: Callable[[np.ndarray, np.ndarray], np.ndarray],
        horizon: int,
        outcome: Callable,
    ) -> list[Any]:
        """One rollout from every snapshot ``i`` with first action ``first[i]``; later actions come from
        ``then(observations, rollout_indices) -> actions``. Returns the ``n`` outcomes."""
        if self.pool is not None:
            envs = self.pool
            for e, s in zip(envs, self.snaps, strict=True):
                self.state[1](e, s)
        else:
            envs = [self._copy(s) for s in self.snaps]
        obs: list[Any] = [None] * self.n
        alive = np.ones(self.n, dtype=bool)
        acts = first
        for t in range(horizon):
            if t > 0:
                idx = np.flatnonzero(alive)
                if not len(idx):
                    break
                acts = np.zeros(self.n, dtype=np.int64)
                acts[idx] = then(_stack([obs[i] for i in idx]), idx)
            for i in np.flatnonzero(alive):
                # truncation (a time limit) is not the world's dynamics: only termination stops a rollout
                obs[i], _, term, _, _ = envs[i].step(int(acts[i]))
                if term:
                    alive[i] = False
        if self.with_start:
            return [outcome(start, o) for start, o in zip(self.start_obs, obs, strict=True)]
        return [outcome(o) for o in obs]


def _ordered(values: Any) -> list:
    """Distinct values, sorted when they can be, else in order of first appearance."""
    seen = list(dict.fromkeys(values))
    try:
        return sorted(seen)
    except TypeError:
        return seen


def _stack(obs: list[Any]) -> np.ndarray:
    return np.asarray(obs)


def _sample(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One action per row of ``probs`` (inverse CDF; deterministic rows need no draw)."""
    if (probs.max(axis=1) == 1.0).all():
        return probs.argmax(axis=1)
    cdf = np.cumsum(probs, axis=1)
    cdf[:, -1] = 1.0
    return (rng.random((len(probs), 1)) >= cdf).sum(axis=1).clip(max=probs.shape[1] - 1)


def measure_simulator(
    policy: Any,
    env: Any,
    good: Any,
    outcome: Callable[[Any], Any] | None = None,
    *,
    horizon: int = 1,
    split: str = "first",
    baseline: Any = "split",
    action: int | None = None,
    n_states: int = 200,
    n_repeats: int = 10,
    start: Callable[[Any, np.random.Generator], Any] | None = None,
    walk: int = 0,
    temperature: float = 0.0,
    seed: int | None = 0,
    clone: Callable[[Any], Any] | None = None,
    state: tuple[Callable, Callable] | None = None,
    outcomes: Any = None,
    estimator: str = "plugin",
    p: float | None = None,
    ci_level: float = 0.95,
) -> WorldMeasureResult:
    """Monte Carlo split-history Op and Imp of ``policy`` in a copyable environment (module docstring).

    :param policy: any policy :func:`measures.measure_mdp` takes, on this environment's observations.
    :param env: a Gymnasium environment with a ``Discrete`` action space that ``clone`` can copy.
    :param good: the good outcome classes (a set, or one class).
    :param outcome: ``outcome(observation) -> class`` (hashable), or ``outcome(start, observation)`` with the
        snapshot's own observation first; default the observation itself.
    :param horizon: steps to the outcome (an episode that terminates first gives its last observation;
        truncation is ignored).
    :param split: ``"first"`` or ``"every"``, as :func:`measures.measure_mdp`.
    :param baseline: ``"split"``, ``"random"``, ``"fixed"`` (with ``action=``) or a reference policy.
    :param n_states: snapshots (histories) per repeat; the split takes ``n_states^2`` rollouts.
    :param n_repeats: independent repeats (fresh snapshots each), at least 2.
    :param start: ``start(env_copy, rng) -> observation`` puts a copy in a start state (default: ``reset``
        with a seed drawn from ``rng``).
    :param walk: after the start, each snapshot walks ``U{0..walk}`` steps of the policy (restarting an
        episode that ends), to reach states beyond the start distribution.
    :param temperature: 0 = greedy.
    :param seed: seeds everything (snapshots, actions, the copies' random generators).
    :param clone: copies an environment (default ``copy.deepcopy``).
    :param state: ``(get_state, set_state)`` to restore snapshots into reused copies instead of cloning.
    :param outcomes: all outcome classes, for the smoothing of the KL (default: those seen per repeat).
    :param estimator: ``"plugin"`` (the post) or ``"miller_madow"``.
    :param p: the chance rate of ``Op_theory`` (default: the uniform policy's, sampled).
    :param ci_level: coverage of the Student-t intervals over repeats.
    """
    horizon = check_int(horizon, "horizon", 1)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; expected one of {list(ESTIMATORS)}")
    n = check_int(n_states, "n_states", 2)
    reps = check_int(n_repeats, "n_repeats", 2, expected="an int >= 2 (the standard error needs repeats)")
    walk = check_int(walk, "walk", 0)
    t = check_temperature(temperature)
    check_optional_seed(seed)
    p_fixed = None if p is None else check_rate(p)
    if clone is not None and state is not None:
        raise ValueError("give clone= or state=, not both")
    space = getattr(env, "action_space", None)
    if space is None or not hasattr(space, "n"):
        raise TypeError(f"measure_simulator needs an environment with a Discrete action space, got {space!r}")
    if not (hasattr(env, "reset") and hasattr(env, "step")):
        raise TypeError(f"measure_simulator needs a Gymnasium-style environment, got {type(env).__name__}")
    n_act = int(space.n)
    outcome_fn = outcome or _label
    items = [good] if isinstance(good, str | int | np.integer) else list(good)
    if not items:
        raise ValueError("good must name at least one outcome class; got an empty set")
    good_set = set(items)
    known = None if outcomes is None else list(dict.fromkeys(outcomes))
    if known is not None:
        unknown = good_set - set(known)
        if unknown:
            raise ValueError(f"good holds {sorted(map(repr, unknown))[0]}, which is not among outcomes=")
        if good_set >= set(known):
            raise ValueError("good holds every outcome class: every policy succeeds; name a proper subset")
    rho_fn = _baseline_fn(baseline, action, n_act, t)
    rng = child_rng(seed, 2)

    def probs(obs: np.ndarray) -> np.ndarray:
        return world_action_probs(policy, obs, n_act, t)

    rows = []
    for _ in range(reps):
        sim = _Sim(env, n, rng, clone, state)
        sim.with_start = outcome is not None and takes_start(outcome)
        obs = sim.start(start, walk, probs)
        pi = probs(obs)
        follow = lambda o, idx: _sample(probs(o), rng)  # noqa: E731
        own = sim.rollouts(_sample(pi, rng), follow, horizon, outcome_fn)
        if rho_fn is None:
            comp = []
            for j in range(n):
                fixed = np.tile(pi[j], (n, 1))
                then = follow if split == "first" else (lambda o, idx, f=fixed: _sample(f[idx], rng))
                comp.append(sim.rollouts(_sample(fixed, rng), then, horizon, outcome_fn))
        else:
            then = follow if split == "first" else (lambda o, idx: _sample(rho_fn(o), rng))
            comp = [sim.rollouts(_sample(rho_fn(obs), rng), then, horizon, outcome_fn)]
        chance = []
        if p_fixed is None:  # every first action from every snapshot, then uniform actions
            uniform = lambda o, idx: rng.integers(0, n_act, size=len(idx))  # noqa: E731
            for a in range(n_act):
                chance += sim.rollouts(np.full(n, a), uniform, horizon, outcome_fn)
        rows.append((own, comp, chance))
    # the good classes are classes even when no rollout reached them (then s = 0)
    seen = (x for own, comp, _ in rows for r in [own, *comp] for x in r)
    labels = known if known is not None else _ordered([*good_set, *seen])
    draws, p_rows = _estimates(rows, labels, good_set, estimator, p_fixed, known is None)
    good_labels = tuple(x for x in labels if x in good_set)
    name = "good{" + ",".join(map(str, good_labels)) + "}"
    ev = Evaluation(
        tasks=(name,),
        p=np.array([p_rows.mean()]),
        figures=world_figures(draws, p_rows),
        method="monte_carlo",
        baseline=_baseline_name(baseline, action),
        temperature=t,
        n=n,
        ci_level=ci_level,
    )
    wname = getattr(getattr(env, "spec", None), "id", None) or type(getattr(env, "unwrapped", env)).__name__
    return world_result(
        ev, outcomes=tuple(labels), good=good_labels, horizon=horizon, split=split, world=wname
    )


def _baseline_fn(baseline: Any, action: int | None, n_act: int, t: float) -> Callable | None:
    """``rho(observations) -> (N, A)`` of a single comparison policy, or ``None`` for the split history."""
    if isinstance(baseline, str):
        if baseline not in ("split", "random", "fixed"):
            raise ValueError(
                f"unknown baseline {baseline!r}; expected 'split', 'random', 'fixed' or a policy"
            )
        if baseline == "fixed":
            if action is None:
                raise ValueError("baseline='fixed' needs action=, the action taken as 'doing nothing'")
            row = np.eye(n_act)[check_int(action, "action", 0, maximum=n_act - 1)]
            return lambda obs: np.tile(row, (len(obs), 1))
        if action is not None:
            raise ValueError(f"action={action!r} only applies to baseline='fixed'")
        return None if baseline == "split" else (lambda obs: np.full((len(obs), n_act), 1.0 / n_act))
    if baseline is None:
        raise ValueError("baseline must be 'split', 'random', 'fixed' or a policy, got None")
    if action is not None:
        raise ValueError("action= only applies to baseline='fixed'")
    return lambda obs: world_action_probs(baseline, obs, n_act, t)


def _baseline_name(baseline: Any, action: int | None) -> str:
    if isinstance(baseline, str):
        return f"fixed:action={action}" if baseline == "fixed" else baseline
    return f"policy:{getattr(baseline, '__name__', None) or type(baseline).__name__}"


def _estimates(
    rows: list, labels: list, good: set, estimator: str, p_fixed: float | None, per_repeat_classes: bool
) -> tuple[Draws, np.ndarray]:
    """Per-repeat figures as one-world :class:`measures.split.Draws`, and the chance rate per repeat."""
    index = {x: i for i, x in enumerate(labels)}
    m = len(labels)
    mask = np.array([x in good for x in labels], dtype=np.float64)
    out: dict[str, list] = {k: [] for k in Draws.__dataclass_fields__}
    p_rows = []
    for own, comp, chance in rows:
        c_own = np.bincount([index[x] for x in own], minlength=m)
        c_comp = np.stack([np.bincount([index[x] for x in c], minlength=m) for c in comp])
        seen = np.ones(m, dtype=bool)
        if per_repeat_classes:  # smooth over the classes this repeat saw
            seen = (c_own > 0) | (c_comp > 0).any(axis=0)
        h_own = count_entropy(c_own[seen], estimator)
        h_comp = count_entropy(c_comp[:, seen], estimator)
        future, base_future = c_own / c_own.sum(), (c_comp / c_comp.sum(axis=1, keepdims=True)).mean(axis=0)
        kl = count_kl(c_own[seen], c_comp[:, seen], estimator)
        for k, v in (
            ("op", h_comp.mean() - h_own),
            ("imp", kl.mean()),
            ("entropy", h_own),
            ("baseline_entropy", h_comp.mean()),
            ("future", future),
            ("baseline_future", base_future),
            ("s", future @ mask),
            ("s_prime", base_future @ mask),
        ):
            out[k].append(v)
        p_rows.append(sum(x in good for x in chance))
    # the chance rate pooled over the repeats: one repeat without a uniform success would make Op_theory inf
    pooled = p_fixed if p_fixed is not None else sum(p_rows) / sum(len(c) for _, _, c in rows)
    p_rows = [pooled] * len(rows)
    arrays = {k: np.array(v) for k, v in out.items()}
    draws = Draws(
        **{k: v[:, None] if k not in ("s", "s_prime") else v[:, None, None] for k, v in arrays.items()}
    )
    return draws, np.array(p_rows, dtype=np.float64)
