"""The futures of a tabular world: outcome classes, propagation, and the comparison futures of each split.

:func:`measures.measure_mdp` (docs/worlds.md) builds here, for the start states ``s_g``, the outcome-class
distributions that :mod:`measures.split` and :mod:`measures.pairwise` estimate from:

* ``T[(g, a), :] = delta(s_g) P_a P_pi^(k-1) C``: first action ``a``, then the policy (``split="first"``);
* the policy's own future ``f_g = sum_a pi(a|s_g) T[(g, a), :]``;
* the split futures of each distinct action distribution ``pi_r``: ``sum_a pi_r(a) T[(g, a), :]`` (first) or
  ``delta(s_g) P_{pi_r}^k C`` (every), or a single comparison policy's.

``C`` maps the state after ``k`` steps to its outcome class: ``outcome(state)``, or ``outcome(start, state)``
when the class depends on where the history started (progress towards a goal, say). Everything stays
sparse while it is mostly zero (a tabular world's futures usually are), so Taxi's 500 states cost
milliseconds.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
from scipy import sparse

from measures.pairwise import ExplicitFutures
from measures.split import Groups
from measures.worlds import TabularWorld

#: distinct action distributions up to which split="first" also runs on the explicit-futures estimator
#: (cheaper: R x B x X logarithms instead of G x B x X)
EXPLICIT_MAX_ROWS = 64
_DENSE_SHARE = 0.25  # propagated futures denser than this are kept as dense arrays


def plain(x: Any) -> Any:
    """A numpy scalar as the Python value it holds (outcome classes are compared and printed as such)."""
    return x.item() if isinstance(x, np.generic) else x


def takes_start(outcome: Any) -> bool:
    """Whether a callable outcome takes ``(start, state)`` rather than ``(state)``."""
    try:
        params = inspect.signature(outcome).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: one argument
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len([p for p in positional if p.default is p.empty]) >= 2


def outcome_classes(
    world: TabularWorld, outcome: Any, starts: np.ndarray | None = None
) -> tuple[tuple, np.ndarray]:
    """``(labels, class_of)``: the outcome classes in order and the class index of every state: ``(S,)``, or
    ``(len(starts), S)`` when the class depends on the start state.

    :param outcome: ``None`` (the state itself), a callable ``outcome(state) -> class`` or
        ``outcome(start, state) -> class`` (any hashable), a sequence of ``S`` classes or an ``(S, S)``
        array indexed ``[start, state]``. Classes are sorted when they can be, else kept in order of first
        appearance.
    :param starts: the start states (for a start-dependent outcome; default all states).
    """
    n = world.n_states
    starts = np.arange(n) if starts is None else np.asarray(starts)
    if outcome is None:
        return tuple(range(n)), np.arange(n)
    if callable(outcome):
        if takes_start(outcome):
            values = [[plain(outcome(int(a), s)) for s in range(n)] for a in starts]
        else:
            values = [plain(outcome(s)) for s in range(n)]
    else:
        arr = np.asarray(outcome, dtype=object)
        if arr.shape == (n, n):
            values = [[plain(v) for v in arr[a]] for a in starts]
        elif arr.shape == (n,):
            values = [plain(v) for v in arr]
        else:
            raise ValueError(
                f"outcome must be a callable, one class per state ({n},) or one per start and state ({n}, {n}); "
                f"got shape {arr.shape}"
            )
    flat = [v for row in values for v in row] if values and isinstance(values[0], list) else values
    try:
        labels = tuple(sorted(set(flat)))
    except TypeError:
        labels = tuple(dict.fromkeys(flat))
    index = {v: i for i, v in enumerate(labels)}
    if flat is values:
        return labels, np.array([index[v] for v in values], dtype=np.int64)
    return labels, np.array([[index[v] for v in row] for row in values], dtype=np.int64)


def good_mask_for(good: Any, labels: tuple) -> np.ndarray:
    """The ``(X,)`` bool mask of the good classes; raises on an empty, unknown or all-covering good set."""
    if good is None:
        raise ValueError("good must name the good outcome classes (a set such as {15}), got None")
    items = [good] if isinstance(good, str | int | np.integer) else list(good)
    if not items:
        raise ValueError("good must name at least one outcome class; got an empty set")
    index = {v: i for i, v in enumerate(labels)}
    mask = np.zeros(len(labels), dtype=bool)
    for g in items:
        g = plain(g)
        if g not in index:
            shown = ", ".join(map(repr, labels[:12])) + (", ..." if len(labels) > 12 else "")
            raise ValueError(f"good holds {g!r}, which is not an outcome class; the classes are {shown}")
        mask[index[g]] = True
    if mask.all():
        raise ValueError(
            f"good holds every outcome class ({len(labels)}): every policy succeeds, so success, Op_theory and "
            "Imp_min say nothing; name a proper subset"
        )
    return mask


def _class_matrix(class_of: np.ndarray, n_classes: int) -> sparse.csr_matrix:
    """``C`` ``(S, X)``: the one-hot outcome class of each state."""
    n = len(class_of)
    return sparse.csr_matrix((np.ones(n), class_of, np.arange(n + 1)), shape=(n, n_classes))


def _propagate(world: TabularWorld, table: np.ndarray, values: Any, steps: int) -> Any:
    """``P_table^steps values`` for ``values`` ``(S, X)`` or ``(S,)``: the expected values ``steps`` steps
    later. Sparse values stay sparse while they are mostly zero."""
    if steps == 0:
        return values
    m = world.transition_matrix(table)
    for _ in range(steps):
        values = m @ values
        if sparse.issparse(values) and values.nnz > _DENSE_SHARE * values.shape[0] * values.shape[1]:
            values = values.toarray()
    return values


def _mix(weights: np.ndarray) -> sparse.csr_matrix:
    """``(G, G * A)``: row ``g`` averages rows ``g * A + a`` of a ``(G * A, X)`` matrix with ``weights[g, a]``."""
    g, a = weights.shape
    return sparse.csr_matrix(
        (weights.reshape(-1), np.arange(g * a), np.arange(0, g * a + 1, a)), shape=(g, g * a)
    )


def _stack_columns(blocks: list[Any]) -> Any:
    """``[B_0 | B_1 | ...]`` (sparse when any block is)."""
    if any(sparse.issparse(b) for b in blocks):
        return sparse.hstack(blocks, format="csr")
    return np.hstack(blocks)


def _apply_classes(y: Any, row_group: np.ndarray, class_of: np.ndarray, n_classes: int) -> sparse.csr_matrix:
    """Map state distributions ``y`` ``(M, S)`` to class distributions ``(M, X)`` with start-dependent classes:
    row ``m`` uses ``class_of[row_group[m]]``."""
    coo = sparse.coo_matrix(y)
    cols = class_of[row_group[coo.row], coo.col]
    return sparse.csr_matrix((coo.data, (coo.row, cols)), shape=(y.shape[0], n_classes))


def chance_success(
    world: TabularWorld, uniq: np.ndarray, class_of: np.ndarray, mask: np.ndarray, horizon: int
) -> np.ndarray:
    """``(G,)`` the uniform policy's success over ``horizon`` steps from each start state."""
    uniform = np.full((world.n_states, world.n_actions), 1.0 / world.n_actions)
    if class_of.ndim == 1:
        return np.asarray(_propagate(world, uniform, mask[class_of].astype(np.float64), horizon))[uniq]
    reach = _propagate(world, uniform, sparse.identity(world.n_states, format="csr"), horizon)[uniq]
    good = mask[class_of].astype(np.float64)  # (G, S)
    return np.asarray(sparse.csr_matrix(reach).multiply(good).sum(axis=1)).reshape(-1)


def tabular_futures(
    world: TabularWorld,
    pi_all: np.ndarray,
    uniq: np.ndarray,
    counts: np.ndarray,
    class_of: np.ndarray,
    n_classes: int,
    horizon: int,
    split: str,
    rho_table: np.ndarray | None,
) -> Groups | ExplicitFutures:
    """The futures of the start states ``uniq`` for the estimator that fits (module docstring).

    :param class_of: ``(S,)`` outcome classes, or ``(G, S)`` classes per start state (:func:`outcome_classes`).
    :return: :class:`measures.split.Groups` (the factorised estimator, for policies with many distinct action
        distributions) or :class:`measures.pairwise.ExplicitFutures`.
    """
    pi = pi_all[uniq]
    g, n_act = len(uniq), world.n_actions
    if class_of.ndim == 1:  # propagate the classes themselves: X columns instead of S
        base = _class_matrix(class_of, n_classes)

        def finish(y: Any, row_group: np.ndarray) -> Any:
            return y
    else:
        base = sparse.identity(world.n_states, format="csr")

        def finish(y: Any, row_group: np.ndarray) -> Any:
            return _apply_classes(y, row_group, class_of, n_classes)

    by_group, by_action = np.arange(g), np.repeat(np.arange(g), n_act)
    # T[(g, a), :]: first action a from state g, then pi for k - 1 steps, as outcome classes
    t_flat = finish(world.action_rows(uniq) @ _propagate(world, pi_all, base, horizon - 1), by_action)
    own = _mix(pi) @ t_flat
    every = split == "every" and horizon > 1
    if rho_table is not None:
        if every:
            comp = finish(_propagate(world, rho_table, base, horizon)[uniq], by_group)
        else:
            comp = _mix(rho_table[uniq]) @ t_flat
        return ExplicitFutures(own=own, comp=comp)
    distinct, member = np.unique(pi, axis=0, return_inverse=True)
    if every:
        blocks = [
            finish(_propagate(world, np.tile(d, (world.n_states, 1)), base, horizon)[uniq], by_group)
            for d in distinct
        ]
    elif len(distinct) <= EXPLICIT_MAX_ROWS:
        blocks = [_mix(np.tile(d, (g, 1))) @ t_flat for d in distinct]
    else:  # many distinct action distributions: the factorised estimator, O(G * A * X) per weighting
        t_dense = t_flat.toarray() if sparse.issparse(t_flat) else np.asarray(t_flat)
        return Groups(
            counts=counts,
            pi=pi,
            worlds=(t_dense.reshape(g, n_act, n_classes),),
            rho=None,
            n=int(counts.sum()),
        )
    return ExplicitFutures(own=own, comp=_stack_columns(blocks), member=member.reshape(-1))
