"""The exact split-history estimator of docs/spec.md §4, with a bootstrap over histories, for any finite world.

Given action probabilities ``pi (N, A)`` and a world model ``T (N, A, X)`` indexed ``[i, a, x]`` (history,
action, outcome; SplitSeq has ``A = X = 8``, a tabular MDP has its own, see :mod:`measures.mdp`)::

    F      = mean_i sum_a pi(a|h_i) T(.|h_i, a)          # the future the policy makes
    M(x|a) = mean_i T(x|h_i, a)                          # the world averaged over histories
    F'_j   = sum_a pi(a|h_j) M(.|a)                      # = mean_i sum_a pi(a|h_j) T(.|h_i, a)
    Op     = mean_j H(F'_j) - H(F)
    Imp    = mean_j KL(F || F'_j) = -H(F) - sum_x F(x) mean_j ln F'_j(x)

so the cost is O(N * A * X) (O(N * 64) for SplitSeq), not O(N^2). With a single reference future (baseline policy ``rho``)
``F' = mean_i sum_a rho(a|h_i) T(.|h_i, a)``, ``Op = H(F') - H(F)``, ``Imp = KL(F || F')``.

A jackknife (:func:`jackknife`) gives the acceleration of the BCa intervals (:mod:`measures.intervals`).

Everything is a weighted average over histories, so histories with identical ``(pi, rho, T)`` rows
collapse into one group with a weight: a greedy policy in SplitSeq's true world has at most 8 x 16 groups
(``T`` depends on a history only through 15 tokens' log-sum). The bootstrap resamples the N histories
with replacement; the resampled count of each group is then exactly multinomial, so 1000 resamples
cost 1000 x (groups) work instead of 1000 x N.

Every figure is a function of one weighting of the groups, so the resampling is separate from the
estimator: :func:`resample_weights` and :func:`jackknife_weights` produce the weightings and
:func:`weighted_stats` evaluates them; other estimators with the same ``Draws`` output (the general split
futures of :mod:`measures.pairwise`) reuse the same resampling.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy.special import entr, rel_entr

from seqenv.validation import check_int

#: bound on (resamples x groups x outcomes) floats held at once (cache-sized chunks)
CHUNK_ELEMENTS = 1 << 20
# Bootstrap resamples of a split with more groups than this (a stochastic policy: one group per history)
# evaluate the (groups x resamples x outcomes) split futures in float32: 2.5x faster, errors ~1e-6 nats, far
# below the width of any interval. The estimate itself (row 0) is always float64.
_FLOAT32_GROUPS = 256
#: Jackknife rows behind the BCa acceleration: one per group of identical histories while there are at most
#: this many groups, else a delete-a-block jackknife over this many random blocks of histories.
JACKKNIFE_ROWS = 256
# The estimate itself (one weighting of N histories) uses single-threaded einsum for its products with N
# rows: OpenBLAS would thread them, and waking its threads costs more than the product (and stalls on a
# busy machine). Bootstrap batches (many weightings at once) are real matrix products and use BLAS.


@dataclass(frozen=True)
class Groups:
    """Histories collapsed by identical ``(pi, rho, T, ...)`` rows.

    :param counts: ``(G,)`` number of histories in each group (sums to ``n``).
    :param pi: ``(G, A)`` action probabilities of the measured policy.
    :param worlds: one ``(G, A, X)`` world model per world (the true world, a model's prediction, ...).
    :param rho: ``(G, A)`` reference action probabilities, or ``None`` for the split history.
    :param n: number of histories.
    """

    counts: np.ndarray
    pi: np.ndarray
    worlds: tuple[np.ndarray, ...]
    rho: np.ndarray | None
    n: int


_HASH_MULT: dict[int, np.ndarray] = {}
_HASH_ROWS = 4096


def _row_hash(rows: np.ndarray) -> np.ndarray:
    """64-bit hash of each row of a float64 array: per-column odd multipliers, xor-shift mixing, a sum."""
    width = rows.shape[1]
    if width not in _HASH_MULT:
        rng = np.random.default_rng(0x5EED)
        _HASH_MULT[width] = rng.integers(1, 2**63, size=width, dtype=np.uint64) | np.uint64(1)
    key = np.empty(len(rows), dtype=np.uint64)
    for start in range(0, len(rows), _HASH_ROWS):  # cache-sized blocks: 3x faster than one pass
        v = rows[start : start + _HASH_ROWS].view(np.uint64) * _HASH_MULT[width]
        v ^= v >> np.uint64(32)  # fold the high bits (exponent, leading mantissa) into the low ones
        v *= np.uint64(0xBF58476D1CE4E5B9)
        v ^= v >> np.uint64(29)
        v.sum(axis=1, dtype=np.uint64, out=key[start : start + _HASH_ROWS])
    return key


def group_histories(
    pi: np.ndarray, worlds: list[np.ndarray] | tuple[np.ndarray, ...], rho: np.ndarray | None = None
) -> Groups:
    """Collapse histories whose policy, reference and world rows are all identical.

    Rows are keyed by a hash of their bits (fixed seed) and the grouping is then verified exactly; on the
    (astronomically unlikely) event of a key collision it falls back to an exact ``np.unique``. Groups are
    ordered by key, so the grouping (and a seeded bootstrap) does not depend on the order of histories.
    """
    n = len(pi)
    cols = (
        [pi.reshape(n, -1)]
        + [w.reshape(n, -1) for w in worlds]
        + ([] if rho is None else [rho.reshape(n, -1)])
    )
    rows = np.ascontiguousarray(np.concatenate(cols, axis=1), dtype=np.float64)
    # a hash of each row's bits (integer arithmetic wraps, so identical rows get identical keys wherever
    # they sit), then an exact check that no two different rows share a key
    key = _row_hash(rows)
    _, first, inverse, counts = np.unique(key, return_index=True, return_inverse=True, return_counts=True)
    if not np.array_equal(rows[first][inverse], rows):
        _, first, inverse, counts = np.unique(
            rows, axis=0, return_index=True, return_inverse=True, return_counts=True
        )
    return Groups(
        counts=counts.astype(np.int64),
        pi=pi[first],
        worlds=tuple(w[first] for w in worlds),
        rho=None if rho is None else rho[first],
        n=n,
    )


@dataclass(frozen=True)
class Draws:
    """Estimates for a batch of history weightings: row 0 is the sample itself, rows 1.. bootstrap resamples.

    Per world ``w`` (axis 1), outcome ``x`` and task ``k`` (last axis of ``s``/``s_prime``).
    """

    op: np.ndarray  # (B, W)
    imp: np.ndarray  # (B, W)
    entropy: np.ndarray  # (B, W)   H(F)
    baseline_entropy: np.ndarray  # (B, W)   mean_j H(F'_j) or H(F')
    future: np.ndarray  # (B, W, X)   F
    baseline_future: np.ndarray  # (B, W, X)   mean_j F'_j or F'
    s: np.ndarray  # (B, W, K)
    s_prime: np.ndarray  # (B, W, K)


def _matmul_rows(a: np.ndarray, b: np.ndarray, n_out: int) -> np.ndarray:
    """``a @ b`` for a tall ``a`` ``(G, A)`` and ``b`` ``(A, B * n_out)``: single-threaded einsum for one
    weighting (``B = 1``), BLAS for a batch."""
    if b.shape[1] <= n_out:
        return np.einsum("ga,ak->gk", a, b)
    return a @ b


def _weighted_sum(weights: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``weights @ x`` for ``weights (B, G)`` and ``x (G, K)``."""
    if len(weights) == 1:
        return np.einsum("g,gk->k", weights[0], x)[None]
    return weights @ x


def weighted_stats(
    weights: np.ndarray, g: Groups, masks: np.ndarray, split_dtype: type = np.float64
) -> Draws:
    """Measures for each row of ``weights`` ``(B, G)`` (rows sum to 1) in every world of ``g``.

    :param weights: one weighting of the groups per row (the sample: ``counts / n``; a bootstrap resample:
        :func:`resample_weights`; a jackknife row: :func:`jackknife_weights`).
    :param g: the grouped histories; each world ``(G, A, X)``.
    :param masks: ``(K, X)`` good masks, one per task.
    :param split_dtype: float type of the split futures (float32 for large bootstrap batches).
    """
    b, n_groups = weights.shape
    out: dict[str, list[np.ndarray]] = {k: [] for k in Draws.__dataclass_fields__}
    for world in g.worlds:
        _, n_act, n_out = world.shape
        f = np.einsum("ga,gax->gx", g.pi, world)  # each group's own future
        future = _weighted_sum(weights, f)  # (B, X)
        h_future = entr(future).sum(axis=1)
        if g.rho is None:
            m = _weighted_sum(weights, world.reshape(n_groups, -1)).reshape(
                b, n_act, n_out
            )  # M(x|a) per resample
            # F'_j of every group under every resample in one product: (G, A) @ (A, B*X) -> (G, B, X)
            pi_s, m_s, w_s = (x.astype(split_dtype, copy=False) for x in (g.pi, m, weights))
            f_split = _matmul_rows(pi_s, m_s.transpose(1, 0, 2).reshape(n_act, b * n_out), n_out).reshape(
                n_groups, b, n_out
            )
            with np.errstate(divide="ignore", invalid="ignore"):
                log_split = np.log(f_split)
            zero = f_split <= 0
            has_zero = zero.any()
            if has_zero:  # 0 ln 0 = 0 in the entropy; a zero of F'_j where F > 0 makes the KL infinite
                log_split[zero] = 0.0
            h_base = -np.einsum("bg,gb->b", w_s, (f_split * log_split).sum(axis=2)).astype(np.float64)
            mean_log = np.einsum("bg,gbx->bx", w_s, log_split).astype(np.float64)
            if has_zero:
                mean_log[np.einsum("bg,gbx->bx", weights, zero.astype(np.float64)) > 0] = -np.inf
            base_future = np.einsum("ba,bax->bx", _weighted_sum(weights, g.pi), m)
            with np.errstate(invalid="ignore"):
                cross = np.where(future > 0, future * mean_log, 0.0).sum(axis=1)
            imp = -h_future - cross
        else:
            base_future = _weighted_sum(weights, np.einsum("ga,gax->gx", g.rho, world))
            h_base = entr(base_future).sum(axis=1)
            imp = rel_entr(future, base_future).sum(axis=1)
        out["op"].append(h_base - h_future)
        out["imp"].append(imp)
        out["entropy"].append(h_future)
        out["baseline_entropy"].append(h_base)
        out["future"].append(future)
        out["baseline_future"].append(base_future)
        out["s"].append(future @ masks.T)
        out["s_prime"].append(base_future @ masks.T)
    return Draws(**{k: np.stack(v, axis=1) for k, v in out.items()})


def estimate(
    pi: np.ndarray,
    worlds: list[np.ndarray] | tuple[np.ndarray, ...],
    rho: np.ndarray | None,
    masks: np.ndarray,
    n_bootstrap: int = 0,
    rng: np.random.Generator | None = None,
    groups: Groups | None = None,
) -> Draws:
    """The exact measures on the sample (row 0) followed by ``n_bootstrap`` resamples of the histories.

    :param pi: ``(N, A)`` action probabilities of the measured policy.
    :param worlds: ``(N, A, X)`` world models ``[i, a, x]`` (the true ``T``, a model's prediction, ...).
    :param rho: ``(N, A)`` reference action probabilities, or ``None`` for the split history.
    :param masks: ``(K, X)`` float/bool good masks, one per task.
    :param n_bootstrap: resamples of the N histories with replacement (0 for none).
    :param rng: generator for the resampling.
    :param groups: ``group_histories(pi, worlds, rho)`` if the caller has it already (it also needs it for a
        :func:`jackknife`), else it is computed here for the bootstrap.
    """
    masks = np.asarray(masks, dtype=np.float64)
    n = len(pi)
    # the estimate itself straight from the histories (no grouping needed, always float64)
    ungrouped = Groups(counts=np.ones(n, dtype=np.int64), pi=pi, worlds=tuple(worlds), rho=rho, n=n)
    parts = [weighted_stats(np.full((1, n), 1.0 / n), ungrouped, masks)]
    if n_bootstrap > 0:
        if rng is None:
            raise ValueError("a bootstrap needs rng=")
        g = group_histories(pi, worlds, rho) if groups is None else groups
        split_dtype = np.float32 if len(g.counts) > _FLOAT32_GROUPS else np.float64
        for weights in resample_weights(g.counts, n_bootstrap, rng, chunk_rows(g)):
            parts.append(weighted_stats(weights, g, masks, split_dtype))
    return concat(parts)


def resample_weights(
    counts: np.ndarray, n_bootstrap: int, rng: np.random.Generator, chunk: int, by: str = "group"
) -> Iterator[np.ndarray]:
    """Bootstrap weightings of grouped histories, ``chunk`` resamples ``(k, G)`` at a time.

    Resampling the ``n = counts.sum()`` histories with replacement gives each group a multinomial count;
    each row is those counts over ``n``. ``by="group"`` draws the multinomial counts directly (cheap with few
    groups: SplitSeq's greedy policies); ``by="history"`` draws ``n`` history indices per resample and counts
    them (cheap when most groups hold one history, as the states of a tabular world do). Both are exact
    bootstrap resamples; they use ``rng`` differently. The draws depend only on the arguments, so two
    estimators fed the same arguments see the same resamples.
    """
    counts = np.asarray(counts, dtype=np.int64)
    n = int(counts.sum())
    group_of = np.repeat(np.arange(len(counts)), counts) if by == "history" else None
    done = 0
    while done < n_bootstrap:
        k = min(chunk, n_bootstrap - done)
        if group_of is None:
            yield rng.multinomial(n, counts / n, size=k) / n
        else:
            picks = group_of[rng.integers(0, n, size=(k, n))] + len(counts) * np.arange(k)[:, None]
            yield np.bincount(picks.ravel(), minlength=k * len(counts)).reshape(k, len(counts)) / n
        done += k


def chunk_rows(g: Groups) -> int:
    """History weightings per :func:`weighted_stats` call that keep its arrays within ``CHUNK_ELEMENTS``."""
    n_out = g.worlds[0].shape[2]
    return max(1, CHUNK_ELEMENTS // (len(g.counts) * n_out * (1 if g.rho is not None else 2)))


def concat(parts: list[Draws]) -> Draws:
    """One :class:`Draws` from several batches of rows, in order."""
    return Draws(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in Draws.__dataclass_fields__})


def jackknife(
    g: Groups, masks: np.ndarray, rng: np.random.Generator, max_rows: int = JACKKNIFE_ROWS
) -> tuple[Draws, np.ndarray]:
    """The measures with one history left out, for the acceleration of a BCa interval.

    Histories with identical rows leave the same value, so with ``G <= max_rows`` groups the exact
    leave-one-out jackknife is ``G`` rows with multiplicities ``counts``. With more groups (a stochastic
    policy) the histories are dealt at random into ``max_rows`` blocks of (nearly) equal size and each block
    is left out in turn: the delete-a-block jackknife estimates the same acceleration (the skewness of the
    influence values over ``sqrt(N)``) at a fixed cost.

    :param g: the histories grouped by :func:`group_histories`.
    :param masks: ``(K, X)`` good masks, one per task.
    :param rng: deals the histories into blocks (unused when there are at most ``max_rows`` groups).
    :return: ``(draws, multiplicities)``: ``J`` rows of measures and their ``(J,)`` weights.
    """
    masks = np.asarray(masks, dtype=np.float64)
    weights, mult = jackknife_weights(g.counts, rng, max_rows)
    chunk = chunk_rows(g)
    # float64 throughout: leave-one-out values differ from each other by O(1/N)
    parts = [weighted_stats(weights[i : i + chunk], g, masks) for i in range(0, len(weights), chunk)]
    return concat(parts), mult


def jackknife_weights(
    counts: np.ndarray, rng: np.random.Generator, max_rows: int = JACKKNIFE_ROWS
) -> tuple[np.ndarray, np.ndarray]:
    """The weightings of a jackknife over grouped histories (see :func:`jackknife`): ``(J, G)`` rows summing
    to 1 and their ``(J,)`` multiplicities.

    :param counts: ``(G,)`` histories per group (``n = counts.sum() >= 2``).
    :param rng: deals the histories into blocks when there are more than ``max_rows`` groups.
    :param max_rows: the most jackknife rows.
    """
    max_rows = check_int(max_rows, "max_rows", 2)
    counts = np.asarray(counts, dtype=np.int64)
    n, n_groups = int(counts.sum()), len(counts)
    if n < 2:
        raise ValueError(f"a jackknife needs at least 2 histories, got {n}")
    if n_groups <= max_rows:
        left = np.diag(np.ones(n_groups, dtype=np.int64))
        mult = counts.astype(np.float64)
    else:
        blocks = min(max_rows, n)
        group_of = np.repeat(np.arange(n_groups), counts)
        block_of = rng.permutation(n) % blocks
        left = np.bincount(block_of * n_groups + group_of, minlength=blocks * n_groups).reshape(
            blocks, n_groups
        )
        mult = np.ones(blocks)
    kept = counts[None] - left
    return kept / kept.sum(axis=1, keepdims=True), mult
