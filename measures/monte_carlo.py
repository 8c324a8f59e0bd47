"""The post's own estimator: sample ``s_{t+1}`` from the generator and count (``method="monte_carlo"``).

See docs/spec.md §4.

One repeat, on ``n`` histories ``h_1..h_n`` (the post: 200 histories, 10 repeats):

1. for each history ``h_i`` draw the action ``a_i ~ pi(.|h_i)`` (greedy: the argmax) and one world sample
   ``x_i ~ T(.|h_i, a_i)``; the empirical distribution of the ``x_i`` is ``F^``, its plug-in entropy ``H(F^)``;
2. split history: for each ``h_j`` and every world history ``h_i`` draw ``a_ij ~ pi(.|h_j)`` and
   ``x_ij ~ T(.|h_i, a_ij)``; the ``n`` samples ``x_.j`` give ``F'^_j`` and ``H(F'^_j)``
   (``n^2`` world samples per repeat). A single-future baseline instead draws ``a'_i ~ rho(.|h_i)``,
   ``x'_i ~ T(.|h_i, a'_i)`` once per history;
3. ``Op = mean_j H(F'^_j) - H(F^)``; ``Imp = mean_j KL(F^ || F'^_j)``; success rates are sample fractions.

Entropies are plug-in estimates from the sample counts, as in the post (``estimator="plugin"``). A KL
against an empirical ``F'^_j`` is infinite whenever ``F'^_j`` misses a value that ``F^`` has, so the
comparison counts are smoothed with the Krichevsky-Trofimov estimator ``q^ = (count + 1/2) / (n + 4)``
inside the KL (``F^`` itself is not smoothed). Plug-in estimates are biased at the post's 200 samples:
entropies down by about ``(m - 1) / (2n)`` (``m`` values seen), which largely cancels in Op, and the KL up
by about ``(m - 1) / (2n) + sum_x p(x) (1 - q(x)) / (2n q(x))``, which does not (about +0.03 nats at
n = 200). ``estimator="miller_madow"`` subtracts these first-order terms (estimated from the counts). Each figure is the mean over
repeats; its standard error is the standard deviation over repeats divided by ``sqrt(repeats)``.

The world is the sequence generator (``next_deterministic`` and its 2% noise, drawn from ``rng``) or, for a
black-box world, any ``world(histories (M, 20), actions (M,), rng) -> (M,)`` sampler of the even token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import entr, rel_entr

from seqenv.sequence import N_OUT, natural_histories, next_deterministic, noise_draws, noisy

World = Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]
#: the values of ``estimator=``: how entropies and KLs are estimated from the sample counts
ESTIMATORS = ("plugin", "miller_madow")
_PAIRS_PER_CHUNK = 1 << 21  # (i, j) world samples drawn at once


@dataclass(frozen=True)
class RepeatEstimates:
    """Per-repeat estimates, shape ``(R,)`` or ``(R, K)`` for the success rates of K tasks."""

    op: np.ndarray
    imp: np.ndarray
    entropy: np.ndarray
    baseline_entropy: np.ndarray
    future: np.ndarray  # (R, 8)
    baseline_future: np.ndarray  # (R, 8)
    s: np.ndarray  # (R, K)
    s_prime: np.ndarray  # (R, K)


def count_entropy(counts: np.ndarray, estimator: str) -> np.ndarray:
    """Entropy (nats) of the empirical distributions of ``counts`` ``(..., m)`` by ``estimator``."""
    n = counts.sum(axis=-1)
    h = entr(counts / n[..., None]).sum(axis=-1)
    if estimator == "miller_madow":
        h = h + ((counts > 0).sum(axis=-1) - 1) / (2 * n)
    return h


def count_kl(c_p: np.ndarray, c_q: np.ndarray, estimator: str) -> np.ndarray:
    """KL of the empirical ``c_p`` ``(m,)`` against Krichevsky-Trofimov-smoothed ``c_q`` ``(..., m)`` (``m = 8``
    here); see the module docstring."""
    m = c_p.shape[-1]
    n_p, n_q = c_p.sum(), c_q.sum(axis=-1)
    p = c_p / n_p
    q = (c_q + 0.5) / (n_q[..., None] + m / 2)
    kl = rel_entr(p, q).sum(axis=-1)
    if estimator == "miller_madow":
        kl = kl - ((c_p > 0).sum() - 1) / (2 * n_p) - (p * (1 - q) / q).sum(axis=-1) / (2 * n_q)
    return kl


def _sample_actions(probs: np.ndarray, shape_prefix: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Draw actions from ``probs`` (rows broadcast against ``shape_prefix + (rows,)``) by inverse CDF."""
    if (probs.max(axis=1) == 1.0).all():  # deterministic rows: no randomness needed
        return np.broadcast_to(probs.argmax(axis=1), shape_prefix + (len(probs),))
    cdf = np.cumsum(probs, axis=1)
    cdf[:, -1] = 1.0
    u = rng.random(shape_prefix + (len(probs),))
    return (u[..., None] >= cdf).sum(axis=-1).clip(max=N_OUT - 1)


class _GeneratorWorld:
    """The sequence generator on fixed histories: ``next_deterministic`` for all 8 actions, then its noise."""

    def __init__(self, histories: np.ndarray, world: World | None):
        self.histories = histories
        self.world = world
        self.det = next_deterministic(histories) if world is None else None  # (n, 8)

    def sample(self, idx: np.ndarray, actions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.world is None:
            return noisy(self.det[idx, actions], noise_draws(rng, idx.shape))
        flat = np.asarray(self.world(self.histories[idx.ravel()], actions.ravel().astype(np.int64), rng))
        if flat.shape != (idx.size,) or not np.issubdtype(flat.dtype, np.integer):
            raise ValueError(
                f"world returned {flat.dtype} of shape {flat.shape}; expected ({idx.size},) integer tokens 0..7"
            )
        if flat.size and (flat.min() < 0 or flat.max() >= N_OUT):
            raise ValueError(f"world returned token {flat[(flat < 0) | (flat >= N_OUT)][0]}; expected 0..7")
        return flat.reshape(idx.shape)


def _counts(x: np.ndarray, axis_len: int) -> np.ndarray:
    """Counts of values 0..7 along the last axis of ``x`` ``(..., axis_len)``, shape ``(..., 8)``."""
    lead = x.reshape(-1, axis_len)
    offs = np.arange(len(lead))[:, None] * N_OUT
    return np.bincount((lead + offs).ravel(), minlength=len(lead) * N_OUT).reshape(x.shape[:-1] + (N_OUT,))


def one_repeat(
    histories: np.ndarray,
    pi: np.ndarray,
    rho: np.ndarray | None,
    masks: np.ndarray,
    rng: np.random.Generator,
    world: World | None = None,
    estimator: str = "plugin",
) -> dict[str, np.ndarray]:
    """One repeat of the post's algorithm on fixed histories; see the module docstring."""
    n = len(histories)
    w = _GeneratorWorld(histories, world)
    idx = np.arange(n)
    x = w.sample(idx, _sample_actions(pi, (), rng), rng)
    c_future = np.bincount(x, minlength=N_OUT)
    if rho is None:
        c_split = np.zeros((n, N_OUT), dtype=np.int64)
        cols = max(1, _PAIRS_PER_CHUNK // n)
        for j0 in range(0, n, cols):
            pj = pi[j0 : j0 + cols]
            a = _sample_actions(pj, (n,), rng)  # (n_i, n_j): a_ij ~ pi(.|h_j)
            i_idx = np.broadcast_to(idx[:, None], a.shape)
            xij = w.sample(i_idx, a, rng)  # world from h_i
            c_split[j0 : j0 + cols] = _counts(np.ascontiguousarray(xij.T), n)
        h_base = count_entropy(c_split, estimator).mean()
        base_future = (c_split / n).mean(axis=0)
        imp = count_kl(c_future, c_split, estimator).mean()
    else:
        xr = w.sample(idx, _sample_actions(rho, (), rng), rng)
        c_base = np.bincount(xr, minlength=N_OUT)
        h_base = count_entropy(c_base, estimator)
        base_future = c_base / n
        imp = count_kl(c_future, c_base, estimator)
    future = c_future / n
    h_future = count_entropy(c_future, estimator)
    return {
        "op": h_base - h_future,
        "imp": imp,
        "entropy": h_future,
        "baseline_entropy": h_base,
        "future": future,
        "baseline_future": base_future,
        "s": future @ masks.T,
        "s_prime": base_future @ masks.T,
    }


def run(
    probs: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]],
    masks: np.ndarray,
    rng: np.random.Generator,
    n_histories: int = 200,
    n_repeats: int = 10,
    histories: np.ndarray | None = None,
    world: World | None = None,
    estimator: str = "plugin",
) -> RepeatEstimates:
    """``n_repeats`` repeats; fresh natural histories from ``rng`` each time unless ``histories`` is given.

    :param probs: maps histories to ``(pi, rho)``: the policy's and the baseline's action probabilities
        (``rho=None`` for the split history).
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; expected one of {list(ESTIMATORS)}")
    masks = np.asarray(masks, dtype=np.float64)
    reps = []
    for _ in range(n_repeats):
        h = natural_histories(n_histories, rng) if histories is None else histories
        pi, rho = probs(h)
        reps.append(one_repeat(h, pi, rho, masks, rng, world, estimator))
    return RepeatEstimates(
        **{k: np.array([r[k] for r in reps]) for k in RepeatEstimates.__dataclass_fields__}
    )
