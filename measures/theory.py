"""The post's closed forms and the information quantities every measure is built from (all in nats).

* :func:`op_theory` — the Op a policy with success rate ``s`` must apply at least, when the comparison
  future is flat: ``s ln(s/p) + (1-s) ln((1-s)/(1-p))`` with ``p`` the chance success rate.
* :func:`imp_min` — the post's lower bound on Imp from the success rates in ``F`` and ``F'``:
  ``s ln(s/s') + (1-s) ln((1-s)/(1-s'))`` (Appendix B: ``Imp >= Imp_min`` always).
* :func:`entropy`, :func:`kl` — Shannon entropy and KL divergence along an axis.

All are plain functions over scalars or NumPy arrays (broadcasting), with ``0 ln 0 = 0`` and
``s ln(s/0) = inf`` for ``s > 0`` (``scipy.special.rel_entr``). Inputs outside ``[0, 1]`` or NaN raise.
"""

from __future__ import annotations

import numpy as np
from scipy.special import entr, rel_entr

ArrayLike = float | np.ndarray


def _rates(x: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    bad = ~((arr >= 0.0) & (arr <= 1.0))  # also catches NaN
    if bad.any():
        raise ValueError(f"{name} must be a rate in [0, 1], got {float(arr[bad].flat[0])}")
    return arr


def _out(value: np.ndarray) -> ArrayLike:
    return float(value) if value.ndim == 0 else value


def _bernoulli_kl(s: np.ndarray, q: np.ndarray) -> np.ndarray:
    return rel_entr(s, q) + rel_entr(1.0 - s, 1.0 - q)


def op_theory(s: ArrayLike, p: ArrayLike) -> ArrayLike:
    """The post's Op implied by a success rate: ``Op_theory(s, p) = s ln(s/p) + (1-s) ln((1-s)/(1-p))``.

    ``p = |good| / 8`` is the chance success rate of the task (0.25, 0.5, 0.75 for ngood2/4/6). Zero at
    ``s = p``; ``ln(1/p)`` at ``s = 1`` and ``ln(1/(1-p))`` at ``s = 0``.

    :param s: success rate(s) in [0, 1].
    :param p: chance success rate(s) in [0, 1].
    :return: nats (float or array).
    """
    return _out(_bernoulli_kl(_rates(s, "s"), _rates(p, "p")))


def imp_min(s: ArrayLike, s_prime: ArrayLike) -> ArrayLike:
    """The post's lower bound on impact: ``Imp_min(s, s') = s ln(s/s') + (1-s) ln((1-s)/(1-s'))``.

    The smallest ``KL(F || F')`` of any ``F`` with success rate ``s`` against a comparison future ``F'``
    with success rate ``s'`` (post, Appendix B), so ``Imp >= Imp_min >= 0``.

    :param s: success rate(s) in the policy's future ``F``, in [0, 1].
    :param s_prime: success rate(s) in the comparison future ``F'``, in [0, 1].
    :return: nats (float or array).
    """
    return _out(_bernoulli_kl(_rates(s, "s"), _rates(s_prime, "s_prime")))


def _distributions(p: np.ndarray, name: str, axis: int, atol: float = 1e-6) -> np.ndarray:
    arr = np.asarray(p, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} holds a non-finite value {float(arr[~np.isfinite(arr)].flat[0])}")
    if (arr < 0).any():
        raise ValueError(f"{name} holds a negative probability {float(arr[arr < 0].flat[0])}")
    total = arr.sum(axis=axis)
    off = np.abs(total - 1.0) > atol
    if np.any(off):
        raise ValueError(
            f"{name} must sum to 1 along axis {axis} (within {atol}); a distribution sums to {float(total[off].flat[0])}"
        )
    return arr


def entropy(p: np.ndarray, axis: int = -1) -> ArrayLike:
    """Shannon entropy ``-sum p ln p`` (nats) of the distributions along ``axis``.

    :param p: probabilities, non-negative and summing to 1 along ``axis`` (within 1e-6).
    :param axis: the axis holding the outcomes.
    """
    arr = _distributions(p, "p", axis)
    return _out(np.asarray(entr(arr).sum(axis=axis)))


def kl(p: np.ndarray, q: np.ndarray, axis: int = -1) -> ArrayLike:
    """KL divergence ``sum p ln(p/q)`` (nats) along ``axis``; ``inf`` where ``q = 0 < p``.

    :param p: the first distribution(s) (broadcast against ``q``).
    :param q: the second distribution(s).
    :param axis: the axis holding the outcomes.
    """
    p_, q_ = _distributions(p, "p", axis), _distributions(q, "q", axis)
    return _out(np.asarray(rel_entr(p_, q_).sum(axis=axis)))
