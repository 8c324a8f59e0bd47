"""The split-history estimator with the split futures given explicitly, for any world and any horizon.

:mod:`measures.split` needs ``F'_j`` to be linear in the policy's action distribution at ``h_j``
(``F'_j = sum_a pi(a|h_j) M(.|a)``), which holds when only one action is replaced. When every action of a
``k``-step future comes from ``pi(.|h_j)`` (``split="every"`` in :func:`measures.measure_mdp`), ``F'_j`` is
a degree-``k`` polynomial in it; it is still linear in the weights of the world histories:

    F(w)      = sum_i w_i f_i                     # f_i: the future the policy makes from h_i
    F'_r(w)   = sum_i w_i U[r, i]                 # U[r, i]: the future from h_i under comparison row r
    Op(w)     = sum_j w_j H(F'_{r(j)}(w)) - H(F(w))
    Imp(w)    = sum_j w_j KL(F(w) || F'_{r(j)}(w))

where ``r(j)`` is the *distinct* action distribution of history ``j`` (a greedy policy has at most ``A`` of
them), so a weighting costs ``O(R * G * X)`` for ``G`` groups of histories, ``R`` distinct rows and ``X``
outcomes. A single comparison future ``F'(w) = sum_i w_i c_i`` (a baseline policy) is the case ``R = 1``
with ``Op = H(F') - H(F)``. The futures may be scipy.sparse matrices (a tabular world's usually are). The
output is :class:`measures.split.Draws` (one world), so the bootstrap and jackknife weightings of
:mod:`measures.split` apply unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import sparse
from scipy.special import entr, rel_entr

from measures.split import CHUNK_ELEMENTS, Draws, concat


@dataclass(frozen=True)
class ExplicitFutures:
    """The futures of ``G`` groups of histories, with their comparison futures (dense or scipy.sparse).

    :param own: ``(G, X)`` the future the policy makes from each group, ``f_i``.
    :param comp: ``(G, R * X)``: ``comp[i, r * X + x]`` is the future from group ``i`` under comparison row
        ``r`` (``R = 1`` for a single comparison future ``c_i``).
    :param member: ``(G,)`` the comparison row ``r(j)`` of each group's own action distribution (the split
        history), or ``None`` for a single comparison future.
    """

    own: Any
    comp: Any
    member: np.ndarray | None = None
    _flat: dict[Any, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        g, x = self.own.shape
        if self.comp.shape[0] != g or self.comp.shape[1] % x:
            raise ValueError(f"comp must have shape ({g}, R * {x}), got {self.comp.shape}")
        if self.member is not None and np.shape(self.member) != (g,):
            raise ValueError(f"member must have shape ({g},), got {np.shape(self.member)}")
        if self.member is None and self.comp.shape[1] != x:
            raise ValueError("a single comparison future (member=None) needs comp of shape (G, X)")
        self._flat.update(own=_maybe_sparse(self.own), comp=_maybe_sparse(self.comp))

    @classmethod
    def from_split(cls, own: np.ndarray, split: np.ndarray, member: np.ndarray) -> ExplicitFutures:
        """From dense split futures ``(R, G, X)`` and each group's row ``member`` ``(G,)``."""
        r, g, x = split.shape
        return cls(own=own, comp=split.transpose(1, 0, 2).reshape(g, r * x), member=np.asarray(member))

    @property
    def n_rows(self) -> int:
        """``R``, the comparison rows."""
        return self.comp.shape[1] // self.own.shape[1]

    def weighted(self, weights: np.ndarray, which: str, dtype: type = np.float64) -> np.ndarray:
        """``weights @ own`` or ``weights @ comp`` (the comparison futures, ``(G, R * X)``), dense, in
        ``dtype``."""
        key = (which, np.dtype(dtype).str)
        if key not in self._flat:
            self._flat[key] = self._flat[which].astype(dtype)
        m = self._flat[key]
        w = weights.astype(dtype, copy=False)
        if sparse.issparse(m):
            return np.asarray((m.T @ w.T).T)
        return w @ m

    def chunk_rows(self) -> int:
        """Weightings per :func:`explicit_stats` call that keep its arrays within ``CHUNK_ELEMENTS``."""
        return max(1, CHUNK_ELEMENTS // (2 * self.comp.shape[1]))


def explicit_stats(
    weights: np.ndarray, fut: ExplicitFutures, masks: np.ndarray, split_dtype: type = np.float64
) -> Draws:
    """Measures for each row of ``weights`` ``(B, G)`` (rows sum to 1); see the module docstring.

    :param masks: ``(K, X)`` good masks, one per task.
    :param split_dtype: float type of the split futures (float32 for bootstrap batches: 2-10x faster,
        ~1e-6 nats; the estimate itself and jackknife rows stay float64).
    :return: :class:`measures.split.Draws` with one world.
    """
    masks = np.asarray(masks, dtype=np.float64)
    future = fut.weighted(weights, "own")  # (B, X)
    h_future = entr(future).sum(axis=1)
    if fut.member is None:
        base_future = fut.weighted(weights, "comp")
        h_base = entr(base_future).sum(axis=1)
        imp = rel_entr(future, base_future).sum(axis=1)
    else:
        b, (g, x), r = len(weights), fut.own.shape, fut.n_rows
        f_split = fut.weighted(weights, "comp", split_dtype).reshape(b, r, x)
        member = np.zeros((g, r))
        member[np.arange(g), fut.member] = 1.0
        w_row = (weights @ member).astype(split_dtype)  # (B, R): weight of the histories in comparison row r
        pos = f_split > 0
        log_split = np.log(f_split + ~pos)  # ln 1 = 0 where F'_j = 0: 0 ln 0 = 0 in the entropy
        h_base = -((f_split * log_split).sum(axis=2) * w_row).sum(axis=1).astype(np.float64)
        mean_log = np.matmul(w_row[:, None, :], log_split)[:, 0].astype(np.float64)  # sum_r W_r ln F'_r
        # a zero of some weighted F'_j where F > 0 makes the KL infinite
        mean_log[(~pos & (w_row > 0)[:, :, None]).any(axis=1)] = -np.inf
        base_future = np.matmul(w_row[:, None, :], f_split)[:, 0].astype(np.float64)
        with np.errstate(invalid="ignore"):
            cross = np.where(future > 0, future * mean_log, 0.0).sum(axis=1)
        imp = -h_future - cross
    return Draws(
        op=(h_base - h_future)[:, None],
        imp=imp[:, None],
        entropy=h_future[:, None],
        baseline_entropy=h_base[:, None],
        future=future[:, None],
        baseline_future=base_future[:, None],
        s=(future @ masks.T)[:, None],
        s_prime=(base_future @ masks.T)[:, None],
    )


#: below this share of non-zero entries (and above ``_SPARSE_MIN`` entries) futures are multiplied sparse
_SPARSE_DENSITY = 0.05
_SPARSE_MIN = 1 << 14


def _maybe_sparse(a: Any) -> np.ndarray | sparse.csr_matrix:
    """A sparse (CSR) ``(G, K)`` matrix when mostly zero (a tabular world's futures often are), else dense."""
    nnz = a.nnz if sparse.issparse(a) else np.count_nonzero(a)
    if a.shape[0] * a.shape[1] >= _SPARSE_MIN and nnz < _SPARSE_DENSITY * a.shape[0] * a.shape[1]:
        return sparse.csr_matrix(a)
    return a.toarray() if sparse.issparse(a) else np.asarray(a)


def explicit_stats_batched(
    weights: np.ndarray, fut: ExplicitFutures, masks: np.ndarray, split_dtype: type = np.float64
) -> Draws:
    """:func:`explicit_stats` in chunks of :meth:`ExplicitFutures.chunk_rows` weightings."""
    chunk = fut.chunk_rows()
    return concat(
        [
            explicit_stats(weights[i : i + chunk], fut, masks, split_dtype)
            for i in range(0, len(weights), chunk)
        ]
    )
