"""Bootstrap confidence intervals: bias-corrected and accelerated (BCa), with the percentile interval as its
special case.

The plug-in Op and Imp of N histories are biased (a nonlinear function of averages: entropies and KLs of
averaged futures), and their bootstrap distributions are skewed near 0. The percentile interval inherits
the bias twice over and can then miss its own point estimate; BCa (Efron 1987; Efron & Tibshirani 1993,
ch. 14) moves the percentiles by the median bias ``z0`` of the bootstrap distribution and the acceleration
``a`` (the skewness of the statistic's influence, from a jackknife), which gives second-order accurate
coverage. With ``z0 = a = 0`` it is exactly the percentile interval (``np.percentile``'s linear rule).
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr, ndtri

_TIE = 1e-12  # relative difference below which two values of a figure count as equal (float64 rounding)


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
        adj = np.where(den > 0, z0 + t / np.where(den > 0, den, 1.0), np.sign(t) * np.inf)
        out.append(_quantiles(boot, ndtr(adj)))
    lo, hi = out
    nan = np.isnan(est)
    return np.where(nan, np.nan, lo)[()], np.where(nan, np.nan, hi)[()]  # [()]: a scalar for a scalar
