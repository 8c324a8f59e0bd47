"""Bootstrap confidence intervals: bias-corrected and accelerated (BCa), with the percentile interval as its
special case.

The plug-in Op and Imp of N histories are biased (a nonlinear function of averages: entropies and KLs of
averaged futures), and their bootstrap distributions are skewed near 0. The percentile interval inherits
the bias twice over and can then miss its own point estimate; BCa (Efron 1987; Efron & Tibshirani 1993,
ch. 14) moves the percentiles by the median bias ``z0`` of the bootstrap distribution and the acceleration
``a`` (the skewness of the statistic's influence, from a jackknife), which gives second-order accurate
coverage. With ``z0 = a = 0`` it is exactly the percentile interval (``np.percentile``'s linear rule).

BCa needs a bootstrap distribution it can read: at small N (few distinct histories, a figure that takes few
values, a plug-in KL whose replicates nearly all sit on one side of the estimate) the bias correction ``z0``
pushes both percentiles into a tail that a few resamples cannot resolve, and the interval collapses or
misses its own estimate. :func:`bootstrap_interval` detects those cases (:func:`bca_diagnosis`) and falls
back, per element, to the normal interval ``estimate +- z * se`` with the jackknife standard error
(:func:`jackknife_se`; the bootstrap's where there is no jackknife), kept within the figure's range: valid
to first order wherever the figure is smooth, never narrower than its standard error allows, and always
containing the estimate. The result says which method made each interval (``method``) and why
(``reason``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import ndtr, ndtri

_TIE = 1e-12  # relative difference below which two values of a figure count as equal (float64 rounding)

#: the methods behind an interval: BCa, its fallback (normal with the jackknife standard error), or none (a
#: NaN estimate)
CI_METHODS = ("bca", "jackknife", "none")
# When BCa is not trusted (bca_diagnosis), each threshold derived from what BCa needs:
MIN_TAIL = 2.5  # expected resamples in each nominal tail (B >= 100 at 95%): fewer cannot place a percentile
MIN_DISTINCT = 10  # distinct resample values: fewer is a lattice, not a distribution to read percentiles from
MIN_GROUPS = 5  # groups of identical histories: fewer makes the bootstrap a handful of multinomial cells
MAX_Z0 = 1.0  # |z0| above this: over 84% of resamples on one side, a bias beyond one standard error
MAX_ACCELERATION = 0.25  # |a| above this: the correction itself is unstable (Efron & Tibshirani: |a| < 0.2)
SNAP = 0.01  # an interval end this close to the figure's bound (share of the width) is extended to it
MIN_WIDTH = 0.8  # width below this share of 2 z se: BCa moved into a short tail (a normal bootstrap keeps ~1)


def acceleration(jack: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """BCa acceleration ``a = sum w u^3 / (6 (sum w u^2)^1.5)``, ``u = mean_w(jack) - jack``, per element.

    :param jack: ``(J, ...)`` jackknife values: the statistic with one history (or one block of histories)
        left out.
    :param weights: ``(J,)`` multiplicities of the rows (how many histories leave the same value), default 1.
    :return: ``a`` with the shape of one row; 0 where the jackknife values do not vary or are not finite.
    """
    jack = np.asarray(jack, dtype=np.float64)
    w = np.ones(len(jack)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(jack),) or np.any(w < 0) or not w.sum() > 0:
        raise ValueError(f"weights must be {len(jack)} non-negative numbers with a positive sum, got {w!r}")
    w = w.reshape((-1,) + (1,) * (jack.ndim - 1))
    with np.errstate(invalid="ignore", over="ignore"):
        mean = (w * jack).sum(axis=0) / w.sum()
        u = mean - jack
        u = np.where(np.abs(u) <= _TIE * (1.0 + np.abs(mean)), 0.0, u)  # rounding noise is not skewness
        num = (w * u**3).sum(axis=0)
        den = 6.0 * (w * u**2).sum(axis=0) ** 1.5
        a = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    return np.where(np.isfinite(a), a, 0.0)


def _quantiles(boot: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per-element quantiles ``q`` (shape of one row) of ``boot`` ``(B, ...)``, linear interpolation."""
    s = np.sort(boot, axis=0)
    pos = q * (len(s) - 1)
    i = np.clip(np.floor(pos).astype(np.int64), 0, len(s) - 1)
    j = np.minimum(i + 1, len(s) - 1)
    lower = np.take_along_axis(s, i[None], axis=0)[0]
    upper = np.take_along_axis(s, j[None], axis=0)[0]
    frac = pos - i
    with np.errstate(invalid="ignore"):  # inf - inf between equal infinite neighbours
        return np.where((frac == 0) | (lower == upper), lower, lower + frac * (upper - lower))


def bca_interval(
    estimate: np.ndarray,
    boot: np.ndarray,
    jack: np.ndarray | None = None,
    jack_weights: np.ndarray | None = None,
    level: float = 0.95,
) -> tuple[np.ndarray, np.ndarray]:
    """The BCa interval of a statistic, elementwise over any trailing shape.

    :param estimate: the statistic on the sample (shape ``S``).
    :param boot: ``(B, *S)`` its bootstrap replicates (``B >= 2``).
    :param jack: ``(J, *S)`` jackknife values for the acceleration (``None``: ``a = 0``, the BC interval).
    :param jack_weights: ``(J,)`` multiplicities of the jackknife rows.
    :param level: coverage, in (0, 1).
    :return: ``(lo, hi)``, each of shape ``S`` (numpy scalars for a scalar estimate); NaN where the
        estimate is NaN. ``z0`` comes from the share of replicates below the estimate (ties count half),
        kept within ``[1/(2B), 1 - 1/(2B)]`` so that an estimate outside every replicate still gives a
        finite interval (the outermost replicates).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    boot = np.asarray(boot, dtype=np.float64)
    est = np.asarray(estimate, dtype=np.float64)
    if boot.ndim < 1 or len(boot) < 2 or boot.shape[1:] != est.shape:
        raise ValueError(
            f"boot must have shape (B >= 2, *{est.shape}) to match the estimate, got {boot.shape}"
        )
    b = len(boot)
    # ties within rounding: the sample's figure and the replicates are sums taken in different orders
    tie = np.abs(boot - est) <= _TIE * (1.0 + np.abs(est))
    below = ((boot < est) & ~tie).sum(axis=0) + 0.5 * tie.sum(axis=0)
    z0 = ndtri(np.clip(below / b, 0.5 / b, 1 - 0.5 / b))
    if jack is not None and np.shape(jack)[1:] != est.shape:
        raise ValueError(f"jack must have shape (J, *{est.shape}), got {np.shape(jack)}")
    a = np.zeros_like(est) if jack is None else acceleration(jack, jack_weights)
    out = []
    for z in ndtri(np.array([(1 - level) / 2, (1 + level) / 2])):
        t = z0 + z
        den = 1.0 - a * t
        # den <= 0 only for a huge acceleration; the adjusted level then runs off to the tail
        with np.errstate(invalid="ignore"):  # NaN figures: their interval is NaN below
            adj = np.where(den > 0, z0 + t / np.where(den > 0, den, 1.0), np.sign(t) * np.inf)
        out.append(_quantiles(boot, ndtr(adj)))
    lo, hi = out
    nan = np.isnan(est)
    return np.where(nan, np.nan, lo)[()], np.where(nan, np.nan, hi)[()]  # [()]: a scalar for a scalar


def jackknife_se(jack: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Jackknife standard error ``sqrt((n - 1) / n * sum w (jack - mean_w)^2)``, ``n = sum w``, per element.

    With multiplicities ``weights`` (one row per group of identical histories) this is the leave-one-out
    jackknife of the ``n`` histories; with ``m`` equal blocks (weights 1) the delete-a-block jackknife.
    """
    jack = np.asarray(jack, dtype=np.float64)
    w = np.ones(len(jack)) if weights is None else np.asarray(weights, dtype=np.float64)
    n = w.sum()
    w = w.reshape((-1,) + (1,) * (jack.ndim - 1))
    with np.errstate(invalid="ignore", over="ignore"):
        mean = (w * jack).sum(axis=0) / n
        var = (n - 1) / n * (w * (jack - mean) ** 2).sum(axis=0)
    return np.sqrt(np.maximum(var, 0.0))


@dataclass(frozen=True)
class Interval:
    """An interval per element of a figure, with how it was made.

    :param lo: lower ends (shape of the estimate; numpy scalars for a scalar).
    :param hi: upper ends.
    :param method: per element, one of :data:`CI_METHODS`.
    :param reason: per element, why BCa was not used (``""`` where it was): a category, then details in
        parentheses, e.g. ``"extreme bias correction (z0 = -2.51)"``.
    """

    lo: np.ndarray
    hi: np.ndarray
    method: np.ndarray
    reason: np.ndarray


def bca_diagnosis(
    estimate: np.ndarray,
    boot: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    jack: np.ndarray | None = None,
    jack_weights: np.ndarray | None = None,
    level: float = 0.95,
) -> np.ndarray:
    """Why the BCa interval ``(lo, hi)`` of each element cannot be trusted (``""`` where it can).

    Checked in order, first reason wins: too few resamples for the tail percentiles (:data:`MIN_TAIL`),
    too few groups of identical histories (:data:`MIN_GROUPS`, from ``len(jack)`` when ``jack_weights``
    gives their multiplicities), too few distinct resample values (:data:`MIN_DISTINCT`), an extreme bias
    correction (:data:`MAX_Z0`) or acceleration (:data:`MAX_ACCELERATION`), an interval that misses the
    estimate, and one far narrower than the resamples' spread (:data:`MIN_WIDTH`).
    """
    boot = np.asarray(boot, dtype=np.float64)
    est = np.asarray(estimate, dtype=np.float64)
    b = len(boot)
    tie = np.abs(boot - est) <= _TIE * (1.0 + np.abs(est))
    below = ((boot < est) & ~tie).sum(axis=0) + 0.5 * tie.sum(axis=0)
    z0 = ndtri(np.clip(below / b, 0.5 / b, 1 - 0.5 / b))
    a = np.zeros_like(est) if jack is None else acceleration(jack, jack_weights)
    s = np.sort(boot, axis=0)
    scale = _TIE * (1.0 + np.abs(s[-1:]))
    distinct = 1 + (np.diff(s, axis=0) > scale).sum(axis=0)
    se = boot.std(axis=0, ddof=1)
    z = ndtri((1 + level) / 2)
    slack = _TIE * (1.0 + np.abs(est))
    groups = len(jack) if jack is not None and jack_weights is not None else None
    reason = np.full(est.shape, "", dtype=object)

    def flag(cond: np.ndarray, text: Any) -> None:
        cond = np.broadcast_to(cond, est.shape)
        for idx in np.ndindex(est.shape):
            if cond[idx] and reason[idx] == "":
                reason[idx] = text(idx) if callable(text) else text

    # resamples that differ beyond rounding (a constant figure's interval is that value, and no fallback)
    spread = distinct > 1
    if b * (1 - level) / 2 < MIN_TAIL:
        need = int(np.ceil(2 * MIN_TAIL / (1 - level)))
        flag(
            spread,
            f"too few resamples ({b} for the tails of a {level:.0%} interval; need {need})",
        )
    if groups is not None and groups < MIN_GROUPS:
        flag(spread, f"too few distinct histories ({groups} groups)")
    flag(spread & (distinct < MIN_DISTINCT), lambda i: f"too few distinct resample values ({distinct[i]})")
    flag(np.abs(z0) > MAX_Z0, lambda i: f"extreme bias correction (z0 = {z0[i]:.2f})")
    flag(np.abs(a) > MAX_ACCELERATION, lambda i: f"extreme acceleration (a = {a[i]:.2f})")
    flag(
        (lo > est + slack) | (hi < est - slack),
        lambda i: f"BCa misses the estimate (BCa [{lo[i]:.4g}, {hi[i]:.4g}])",
    )
    flag(
        spread & (hi - lo < MIN_WIDTH * 2 * z * se),
        lambda i: f"BCa narrower than the resamples' spread (width {hi[i] - lo[i]:.2g}, se {se[i]:.2g})",
    )
    return reason


def bootstrap_interval(
    estimate: np.ndarray,
    boot: np.ndarray,
    jack: np.ndarray | None = None,
    jack_weights: np.ndarray | None = None,
    level: float = 0.95,
    bounds: tuple[float, float] = (-np.inf, np.inf),
) -> Interval:
    """BCa where :func:`bca_diagnosis` trusts it, else ``estimate +- z se`` with the jackknife standard error.

    Arguments as :func:`bca_interval`, plus ``bounds``, the range the figure can take (a rate in [0, 1], a
    KL >= 0), which clips the fallback interval (never past the estimate itself). The fallback's standard
    error is the jackknife's (:func:`jackknife_se`), or the bootstrap's standard deviation where there is no
    jackknife or it is 0 while the resamples vary.
    """
    lo, hi = bca_interval(estimate, boot, jack, jack_weights, level)
    boot = np.asarray(boot, dtype=np.float64)
    est = np.asarray(estimate, dtype=np.float64)
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    reason = bca_diagnosis(est, boot, lo, hi, jack, jack_weights, level)
    nan = np.isnan(est)
    fallback = (reason != "") & ~nan
    if fallback.any():
        se = boot.std(axis=0, ddof=1)
        if jack is not None:
            js = jackknife_se(jack, jack_weights)
            se = np.where(np.isfinite(js) & ((js > 0) | (se == 0)), js, se)
        half = ndtri((1 + level) / 2) * se
        low, high = bounds
        f_lo = np.maximum(est - half, np.minimum(low, est))
        f_hi = np.minimum(est + half, np.maximum(high, est))
        lo, hi = np.where(fallback, f_lo, lo), np.where(fallback, f_hi, hi)
    # an end within SNAP of the interval's width from the figure's bound reaches it: the resamples cannot
    # resolve how close to the bound the figure is (a KL near 0), so stopping short would be false precision
    low, high = bounds
    with np.errstate(invalid="ignore"):
        width = hi - lo
        lo = np.where(np.isfinite(low) & (lo - low < SNAP * width), np.minimum(lo, low), lo)
        hi = np.where(np.isfinite(high) & (high - hi < SNAP * width), np.maximum(hi, high), hi)
    method = np.where(nan, "none", np.where(fallback, "jackknife", "bca")).astype(object)
    reason = np.where(fallback, reason, "").astype(object)
    return Interval(lo[()], hi[()], method[()], reason[()])
