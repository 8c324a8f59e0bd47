"""``measure_mdp(policy, env, good, ...)``: split-history Op and Imp in any tabular world (docs/worlds.md).

The histories are states ``s_1..s_N``; the outcome is the state after ``k = horizon`` steps (terminal
states absorb), or its class ``outcome(state)`` or ``outcome(start, state)``; ``P_pi`` is the state-to-state
matrix of the policy and ``C`` maps states to outcome classes (per start state, for the second form)::

    F     = mean_i  delta(s_i) P_pi^k C                                   # the future the policy makes
    F'_j  = mean_i  delta(s_i) P_{pi_j} P_pi^(k-1) C    (split="first")   # first action from pi(.|s_j)
    F'_j  = mean_i  delta(s_i) P_{pi_j}^k C             (split="every")   # every action from pi(.|s_j)
    Op    = mean_j H(F'_j) - H(F),   Imp = mean_j KL(F || F'_j)

with ``P_{pi_j}[s, s'] = sum_a pi(a|s_j) P[s, a, s']``. At ``horizon=1`` both are the post's split history.
A single comparison policy ``rho`` (``baseline="random"``, ``"fixed"`` with ``action=``, or a policy)
replaces the same actions: ``F' = mean_i delta(s_i) P_rho P_pi^(k-1) C`` or ``mean_i delta(s_i) P_rho^k C``,
``Op = H(F') - H(F)``, ``Imp = KL(F || F')``. Success ``s = F(good)``, ``s' = mean_j F'_j(good)``,
``Imp_min(s, s')`` as the post, ``Op_theory(s, p)`` with ``p`` the uniform policy's success over all ``k``
steps from the same states (chance) unless ``p=`` is given.

The futures come from :mod:`measures.mdp_futures`. ``split="first"`` is linear in ``pi(.|s_j)`` and runs
on :mod:`measures.split`'s estimator with the world ``T[i, a, :] = delta(s_i) P_a P_pi^(k-1) C``;
``split="every"`` (and any policy with few distinct action distributions, for speed) runs on
:mod:`measures.pairwise`. Both give the same numbers where both apply.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from measures.api import Evaluation, MeasureResult, child_rng
from measures.mdp_futures import chance_success, good_mask_for, outcome_classes, plain, tabular_futures
from measures.pairwise import ExplicitFutures, explicit_stats_batched
from measures.split import (
    Draws,
    Groups,
    chunk_rows,
    concat,
    jackknife_weights,
    resample_weights,
    weighted_stats,
)
from measures.theory import imp_min, op_theory
from measures.world_policies import world_action_probs
from measures.worlds import TabularWorld, tabular_rows, tabular_world
from seqenv.validation import check_int, check_optional_seed, check_temperature

SPLITS = ("first", "every")  #: which actions the comparison futures replace
MDP_BASELINES = ("split", "random", "fixed")  #: named comparison futures (or a reference policy)


class InfiniteImpactWarning(RuntimeWarning):
    """Imp is infinite: the policy reaches an outcome that some comparison future never reaches."""


@dataclass(frozen=True)
class WorldMeasureResult(MeasureResult):
    """A :class:`measures.MeasureResult` in a world other than SplitSeq, with what defines its outcome.

    ``future`` and ``baseline_future`` are distributions over ``outcomes`` (outcome classes, in order);
    ``task`` names the good set; ``p`` is the chance success (the uniform policy's, or the ``p=`` given).

    :param outcomes: the outcome classes that ``future`` is indexed by.
    :param good: the good classes.
    :param horizon: steps to the outcome.
    :param split: ``"first"`` or ``"every"``: the actions the comparison futures replace.
    :param world: the world's name.
    """

    outcomes: tuple = ()
    good: tuple = ()
    horizon: int = 1
    split: str = "first"
    world: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["outcomes"] = [plain(x) for x in self.outcomes]
        d["good"] = [plain(x) for x in self.good]
        return d

    def __str__(self) -> str:
        return f"{self.world}, horizon={self.horizon}, split={self.split}: " + super().__str__()


def _baseline_table(
    baseline: Any, world: TabularWorld, temperature: float, action: int | None
) -> np.ndarray | None:
    """The comparison policy's ``(S, A)`` table, or ``None`` for the split history."""
    s, a = world.n_states, world.n_actions
    if isinstance(baseline, str):
        if baseline not in MDP_BASELINES:
            raise ValueError(
                f"unknown baseline {baseline!r}; expected one of {list(MDP_BASELINES)} or a policy"
            )
        if baseline == "fixed":
            if action is None:
                raise ValueError("baseline='fixed' needs action=, the action taken as 'doing nothing'")
            act = check_int(action, "action", 0, maximum=a - 1)
            table = np.zeros((s, a))
            table[:, act] = 1.0
            return table
        if action is not None:
            raise ValueError(f"action={action!r} only applies to baseline='fixed', not {baseline!r}")
        return None if baseline == "split" else np.full((s, a), 1.0 / a)
    if baseline is None:
        raise ValueError(f"baseline must be one of {list(MDP_BASELINES)} or a policy, got None")
    if action is not None:
        raise ValueError("action= only applies to baseline='fixed'")
    return world_action_probs(baseline, np.arange(s), a, temperature)


def _baseline_label(baseline: Any, action: int | None) -> str:
    if isinstance(baseline, str):
        return f"fixed:action={action}" if baseline == "fixed" else baseline
    return f"policy:{getattr(baseline, '__name__', None) or type(baseline).__name__}"


def check_n_bootstrap(n_bootstrap: Any) -> int:
    """0 (no intervals) or an int >= 2 (the resamples behind ``ci`` and ``se``)."""
    expected = "0 (no intervals) or an int >= 2 (resamples behind ci and se)"
    n = check_int(n_bootstrap, "n_bootstrap", 0, expected=expected)
    if n == 1:
        raise ValueError(f"n_bootstrap must be {expected}, got 1")
    return n


def check_rate(p: Any, name: str = "p") -> float:
    """A rate in [0, 1] (``p=``)."""
    if isinstance(p, bool) or not isinstance(p, int | float | np.integer | np.floating) or not 0 <= p <= 1:
        raise ValueError(f"{name} must be a chance success rate in [0, 1], got {p!r}")
    return float(p)


def world_figures(d: Draws, p_rows: np.ndarray) -> dict[str, np.ndarray]:
    """The figures of :class:`measures.api.Evaluation` from one-world draws, with a chance rate per row.

    ``excess_imp`` is ``inf`` where Imp is (``inf - Imp_min`` is undefined when both are infinite).
    """
    s, s_prime = np.clip(d.s[:, 0], 0.0, 1.0), np.clip(d.s_prime[:, 0], 0.0, 1.0)  # float sums may pass 1
    op, imp = d.op[:, 0], d.imp[:, 0]
    theory = op_theory(s, np.clip(p_rows, 0.0, 1.0)[:, None])
    bound = imp_min(s, s_prime)
    with np.errstate(invalid="ignore"):
        excess_imp = np.where(np.isinf(imp)[:, None], np.inf, imp[:, None] - bound)
    return {
        "op": op,
        "imp": imp,
        "entropy": d.entropy[:, 0],
        "baseline_entropy": d.baseline_entropy[:, 0],
        "future": d.future[:, 0],
        "baseline_future": d.baseline_future[:, 0],
        "success": s,
        "baseline_success": s_prime,
        "op_theory": theory,
        "imp_min": bound,
        "excess_op": op[:, None] - theory,
        "excess_imp": excess_imp,
    }


def world_result(ev: Evaluation, **extra: Any) -> WorldMeasureResult:
    """The :class:`WorldMeasureResult` of a one-task evaluation; an infinite figure's spread is ``inf``."""
    with warnings.catch_warnings(), np.errstate(invalid="ignore", over="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # inf - inf inside the spread of an infinite figure
        base = ev.result(0)
    values = {f.name: getattr(base, f.name) for f in fields(MeasureResult)}
    for name in ("se", "ci"):
        if values[name]:  # an infinite figure's interval is the point itself, its spread inf (not NaN)
            values[name] = {
                k: (_inf_spread(v, getattr(base, k)) if not np.isfinite(getattr(base, k)) else v)
                for k, v in values[name].items()
            }
    if values["se"]:  # a finite estimate with infinite replicates (a resample without noise) spreads to inf
        values["se"] = {
            k: float("inf") if np.isnan(v) and np.isinf(ev.figures[k]).any() else v
            for k, v in values["se"].items()
        }
    return WorldMeasureResult(**values, **extra)


def _inf_spread(v: Any, point: float) -> Any:
    return (point, point) if isinstance(v, tuple) else float("inf")


def measure_mdp(
    policy: Any,
    env: Any,
    good: Any,
    states: Any = None,
    horizon: int = 1,
    split: str = "first",
    outcome: Any = None,
    baseline: Any = "split",
    temperature: float = 0.0,
    n_bootstrap: int = 1000,
    seed: int | None = 0,
    *,
    p: float | None = None,
    action: int | None = None,
    ci_level: float = 0.95,
) -> WorldMeasureResult:
    """Exact split-history Op and Imp of ``policy`` in a tabular world (module docstring, docs/worlds.md).

    :param policy: a policy table ``(S, A)`` / ``(S,)``, a callable on int states, a torch module, an SB3
        model on ``Discrete`` observations, ... (:mod:`measures.world_policies`).
    :param env: a Gymnasium environment with a toy-text ``env.unwrapped.P``, a ``P`` dict, a ``(S, A, S)``
        array or a :class:`measures.worlds.TabularWorld`.
    :param good: the good outcome classes (states when ``outcome`` is ``None``): a set, or one class.
    :param states: the start states (histories): ``None`` or ``"nonterminal"`` (every non-terminal state),
        ``"reachable"`` (non-terminal states reachable from the start distribution) or explicit indices
        (repeats weight a state; a terminal state's future is itself); at least 2.
    :param horizon: steps ``k >= 1`` to the outcome.
    :param split: ``"first"`` (the comparison replaces the first action) or ``"every"`` (every action).
    :param outcome: ``None`` (the state after ``k`` steps), ``outcome(state) -> class``,
        ``outcome(start, state) -> class`` (a class that depends on where the history started, e.g. progress
        towards a goal), ``S`` classes, or an ``(S, S)`` array ``[start, state]``.
    :param baseline: ``"split"``, ``"random"`` (uniform), ``"fixed"`` (with ``action=``) or a policy.
    :param temperature: 0 = greedy (ties to the lowest action); ``> 0`` tempers the policy.
    :param n_bootstrap: resamples of the start states for ``ci`` and ``se`` (BCa, as :func:`measures.measure`).
    :param seed: seeds the bootstrap and the jackknife's blocks.
    :param p: the chance success rate of ``Op_theory`` (default: the uniform policy's on the same states).
    :param action: the action of ``baseline="fixed"``.
    :param ci_level: coverage of the intervals.
    :return: a frozen :class:`WorldMeasureResult`. Imp is ``inf`` (with an :class:`InfiniteImpactWarning`)
        when the policy reaches an outcome a comparison future never does; never NaN.
    """
    world = tabular_world(env)
    horizon = check_int(horizon, "horizon", 1)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    t = check_temperature(temperature)
    n_bootstrap = check_n_bootstrap(n_bootstrap)
    check_optional_seed(seed)
    if not 0 < ci_level < 1:
        raise ValueError(f"ci_level must be in (0, 1), got {ci_level!r}")
    p_fixed = None if p is None else check_rate(p)
    rows = tabular_rows(world, states)
    uniq, counts = np.unique(rows, return_counts=True)
    labels, class_of = outcome_classes(world, outcome, uniq)
    mask = good_mask_for(good, labels)
    rho_table = _baseline_table(baseline, world, t, action)
    pi_all = world_action_probs(policy, np.arange(world.n_states), world.n_actions, t)
    fut = tabular_futures(world, pi_all, uniq, counts, class_of, len(labels), horizon, split, rho_table)
    chance = chance_success(world, uniq, class_of, mask, horizon)  # (G,) the uniform policy's success
    good_labels = tuple(lab for lab, m in zip(labels, mask, strict=True) if m)
    name = "good{" + ",".join(map(str, good_labels)) + "}"
    label = _baseline_label(baseline, action)
    ev = _evaluate(fut, counts, chance, p_fixed, mask, n_bootstrap, seed, ci_level, t, label, name)
    if np.isinf(ev.figures["imp"][0]):
        _warn_infinite(fut, counts, uniq, labels)
    return world_result(
        ev,
        outcomes=labels,
        good=good_labels,
        horizon=horizon,
        split=split,
        world=world.name,
    )


def _stats(
    fut: Groups | ExplicitFutures, weights: np.ndarray, masks: np.ndarray, dtype: type = np.float64
) -> Draws:
    if isinstance(fut, ExplicitFutures):
        return explicit_stats_batched(weights, fut, masks, dtype)
    step = chunk_rows(fut)
    return concat(
        [weighted_stats(weights[i : i + step], fut, masks, dtype) for i in range(0, len(weights), step)]
    )


def _evaluate(
    fut: Groups | ExplicitFutures,
    counts: np.ndarray,
    chance: np.ndarray,
    p_fixed: float | None,
    mask: np.ndarray,
    n_bootstrap: int,
    seed: int | None,
    ci_level: float,
    temperature: float,
    baseline: str,
    task: str,
) -> Evaluation:
    """Row 0 (the states as given), the bootstrap resamples and, with 2 or more, the jackknife."""
    masks = mask[None].astype(np.float64)
    n = int(counts.sum())

    def rows_for(weights: np.ndarray, dtype: type = np.float64) -> tuple[Draws, np.ndarray]:
        p_rows = np.full(len(weights), p_fixed) if p_fixed is not None else weights @ chance
        return _stats(fut, weights, masks, dtype), p_rows

    parts = [rows_for((counts / n)[None])]
    if n_bootstrap > 0:  # resamples in float32 (~1e-6 nats); the estimate and the jackknife in float64
        chunk = fut.chunk_rows() if isinstance(fut, ExplicitFutures) else chunk_rows(fut)
        resamples = resample_weights(counts, n_bootstrap, child_rng(seed, 1), chunk, by="history")
        parts += [rows_for(w, np.float32) for w in resamples]
    draws = concat([d for d, _ in parts])
    p_rows = np.concatenate([q for _, q in parts])
    jack, jack_weights = None, None
    if n_bootstrap >= 2:
        jw, jack_weights = jackknife_weights(counts, child_rng(seed, 3))
        jd, jp = rows_for(jw)
        jack = world_figures(jd, jp)
    return Evaluation(
        tasks=(task,),
        p=np.array([p_rows[0]]),
        figures=world_figures(draws, p_rows),
        method="exact",
        baseline=baseline,
        temperature=temperature,
        n=n,
        ci_level=ci_level,
        jackknife=jack,
        jack_weights=jack_weights,
    )


def _warn_infinite(
    fut: Groups | ExplicitFutures, counts: np.ndarray, uniq: np.ndarray, labels: tuple
) -> None:
    """Name an outcome the policy reaches and a start state whose comparison future never reaches it."""
    w = counts / counts.sum()
    if isinstance(fut, ExplicitFutures):
        own = fut.weighted(w[None], "own")[0]
        comp = fut.weighted(w[None], "comp")[0].reshape(fut.n_rows, -1)
        cmp_future = comp if fut.member is None else comp[fut.member]
    else:
        world = fut.worlds[0]
        own = w @ np.einsum("ga,gax->gx", fut.pi, world)
        if fut.rho is None:
            cmp_future = fut.pi @ np.einsum("g,gax->ax", w, world)  # F'_j = sum_a pi(a|s_j) M(.|a)
        else:
            cmp_future = (w @ np.einsum("ga,gax->gx", fut.rho, world))[None]
    hit = (own[None] > 0) & (cmp_future <= 0)
    j, x = np.argwhere(hit)[0]
    whose = (
        "the comparison future" if len(cmp_future) == 1 else f"the split future of start state {int(uniq[j])}"
    )
    warnings.warn(
        f"Imp = inf: the policy's future gives outcome {plain(labels[x])!r} probability {own[x]:.3g}, but "
        f"{whose} gives it probability 0, so KL(F || F') is infinite. This is the exact value, not an error "
        "(the world is too deterministic for every action to reach every outcome); Op, success and Imp_min stay "
        "finite. A noisier world, a coarser outcome= or baseline='random' give a finite Imp",
        InfiniteImpactWarning,
        stacklevel=3,
    )


__all__ = [
    "InfiniteImpactWarning",
    "WorldMeasureResult",
    "good_mask_for",
    "measure_mdp",
    "outcome_classes",
    "world_figures",
    "world_result",
]
