"""The SplitSeq sequence (SPEC §1): the mod-17 recurrence, natural data and the exact world model.

Positions ``t = 0, 1, 2, ...``; even positions hold tokens 0..7, odd positions 8..15::

    d_t = (prod_{i=1..16} (s_{t-i} + 1) mod 17) mod 8
    s_t = (d_t with probability 0.98, else uniform on 0..7) + 8 * (t mod 2)

Every factor ``s + 1`` lies in 1..16, a unit mod 17, and 3 generates the multiplicative group mod 17.
So the product is ``3 ** (sum of discrete logs mod 16)``: the rule is a sum of small table look-ups,
which keeps everything in ``uint8`` and lets a stream update its window product in O(1) per token.
:func:`det_from_logsum` (with the table :data:`TOKEN_LOG`) *is* the rule; every other function here,
the environments, the training data and the measures all reach the recurrence through it.
"""

from __future__ import annotations

import numpy as np

VOCAB = 16  #: tokens 0..15
CONTEXT = 20  #: tokens in a history / the model's context
ORDER = 16  #: predecessors the recurrence multiplies
N_OUT = 8  #: values of the deterministic part (and of the action)
P_DET = 0.98  #: probability that the written token is the deterministic value
P_MATCH = P_DET + (1 - P_DET) / N_OUT  #: probability that it equals it (noise may draw it too)
BURN_IN = 255  #: tokens generated after the uniform start before a stream is used (odd: see SequenceStreams)

# Noise is drawn as one integer u in 0..399 per token: u < 8 (probability exactly 0.02) replaces the
# deterministic value with u itself, which is then uniform on 0..7.
_NOISE_DRAW = 400
_NOISE_HIT = 8

_EXP17 = np.array([pow(3, k, 17) for k in range(16)], dtype=np.uint8)  # 3**k mod 17, k = 0..15
_LOG17 = np.zeros(17, dtype=np.uint8)
_LOG17[_EXP17] = np.arange(16, dtype=np.uint8)
#: discrete log (base 3, mod 17) of the factor ``s + 1`` of each token ``s`` in 0..15
TOKEN_LOG = _LOG17[np.arange(1, VOCAB + 1)]
_DET_OF_LOGSUM = (_EXP17 % N_OUT).astype(np.uint8)


def det_from_logsum(logsum: np.ndarray) -> np.ndarray:
    """The rule's last step: ``(3**logsum mod 17) mod 8`` for a sum of :data:`TOKEN_LOG` values.

    :param logsum: any non-negative integers (only ``logsum mod 16`` matters).
    :return: ``uint8`` array of the same shape with values 0..7.
    """
    return _DET_OF_LOGSUM[np.asarray(logsum) & 15]


def deterministic_next(window: np.ndarray) -> np.ndarray:
    """``d_t`` from the 16 tokens ``s_{t-16} .. s_{t-1}`` (last axis, oldest first).

    :param window: integer array of shape ``(..., 16)`` with tokens in 0..15.
    :return: ``uint8`` array of shape ``(...)`` with values 0..7.
    """
    window = np.asarray(window)
    if window.shape[-1:] != (ORDER,):
        raise ValueError(f"window must have shape (..., {ORDER}), got {window.shape}")
    _check_tokens(window, "window")
    return det_from_logsum(TOKEN_LOG[window].sum(axis=-1, dtype=np.uint16))


def _check_tokens(tokens: np.ndarray, name: str) -> None:
    if not np.issubdtype(tokens.dtype, np.integer):
        raise TypeError(f"{name} must hold integer tokens, got dtype {tokens.dtype}")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= VOCAB):
        bad = tokens[(tokens < 0) | (tokens >= VOCAB)].flat[0]
        raise ValueError(f"{name} holds token {bad}; expected tokens in 0..{VOCAB - 1}")


def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def noisy(d: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Apply the 2% noise: ``u`` are draws uniform on 0..399 (one per token), see ``_NOISE_DRAW``."""
    return np.where(u < _NOISE_HIT, u, d).astype(np.uint8)


def noise_draws(rng: np.random.Generator, shape: int | tuple[int, ...]) -> np.ndarray:
    """Draws for :func:`noisy`: integers uniform on 0..399 (``int16``)."""
    return rng.integers(0, _NOISE_DRAW, size=shape, dtype=np.int16)


class SequenceStreams:
    """``n`` independent sequences advanced together, each holding its last 16 tokens and their log-sum.

    The streams start from 16 uniform tokens (positions 0..15) and are burnt in for :data:`BURN_IN`
    tokens, so the last token sits on an even position and the next one is odd: every
    :meth:`histories` call then advances 20 tokens and keeps that alignment.

    :param n: number of streams.
    :param seed: an int, ``None`` or a ``numpy.random.Generator`` (used, not copied).
    :param burn_in: tokens generated before use; must be odd so that histories end on an even position.
    """

    def __init__(self, n: int, seed: int | np.random.Generator | None = None, burn_in: int = BURN_IN):
        if int(n) < 1:
            raise ValueError(f"n must be a positive number of streams, got {n}")
        if burn_in < 0 or burn_in % 2 != 1:
            raise ValueError(f"burn_in must be a non-negative odd number of tokens, got {burn_in}")
        self.n = int(n)
        self.rng = _rng(seed)
        start = self.rng.integers(0, N_OUT, size=(ORDER, self.n), dtype=np.uint8)
        start[1::2] += N_OUT  # positions 0..15: odd ones hold 8..15
        self._tail = start  # (16, n): the last 16 tokens, oldest first, time-major for contiguous rows
        self._logsum = TOKEN_LOG[start].sum(axis=0, dtype=np.uint16).astype(np.uint8) & 15
        self.position = ORDER  # position of the next token
        self.advance(burn_in)

    def advance(self, n_tokens: int) -> np.ndarray:
        """Generate ``n_tokens`` more tokens on every stream; returns them time-major, ``(n_tokens, n)`` uint8."""
        buf = np.empty((ORDER + n_tokens, self.n), dtype=np.uint8)
        buf[:ORDER] = self._tail
        u = noise_draws(self.rng, (n_tokens, self.n))
        logsum = self._logsum
        for j in range(n_tokens):
            tok = noisy(det_from_logsum(logsum), u[j])
            if (self.position + j) % 2:
                tok += N_OUT
            buf[ORDER + j] = tok
            logsum = (logsum + TOKEN_LOG[tok] + (16 - TOKEN_LOG[buf[j]])) & 15
        self._logsum = logsum
        self._tail = buf[n_tokens:].copy()
        self.position += n_tokens
        return buf[ORDER:]

    def histories(self) -> tuple[np.ndarray, np.ndarray]:
        """Advance 20 tokens and return one natural history per stream.

        :return: ``(histories, partial)``: ``(n, 20)`` int64 histories ending on an even position, and
            ``(n,)`` uint8 log-sums of their last 15 tokens (the part of the next even token's window that
            the history already fixes; see :func:`partial_logsum`).
        """
        tokens = self.advance(CONTEXT)
        hist = np.ascontiguousarray(tokens.T, dtype=np.int64)
        partial = (self._logsum + (16 - TOKEN_LOG[tokens[CONTEXT - ORDER]])) & 15
        return hist, partial


def natural_histories(n: int, seed: int | np.random.Generator | None = None) -> np.ndarray:
    """``n`` independent natural histories: 20 tokens of a stationary sequence, ending on an even position.

    :param n: number of histories.
    :param seed: an int, ``None`` or a ``numpy.random.Generator``.
    :return: ``(n, 20)`` int64 array; column 19 holds tokens 0..7, column 18 tokens 8..15, and so on.
    """
    return SequenceStreams(n, seed).histories()[0]


def generate_sequences(n: int, length: int, seed: int | np.random.Generator | None = None) -> np.ndarray:
    """``n`` independent natural sequences of ``length`` tokens, each starting on an odd position.

    The first token of each row is at an odd position (8..15), so row ``[:20]`` followed by row ``[20]``
    is a history and its next (odd) token.

    :return: ``(n, length)`` int64 array.
    """
    if int(length) < 1:
        raise ValueError(f"length must be a positive number of tokens, got {length}")
    return np.ascontiguousarray(SequenceStreams(n, seed).advance(int(length)).T, dtype=np.int64)


def validate_histories(histories: np.ndarray, name: str = "histories") -> np.ndarray:
    """Check that ``histories`` is an integer array ``(..., 20)`` of natural-looking histories.

    Natural histories alternate parity and end on an even position: the last token is in 0..7, the one
    before in 8..15, and so on. Returns the array as ``int64``; raises ``TypeError``/``ValueError`` naming
    the offending value otherwise.
    """
    arr = np.asarray(histories)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array of tokens, got dtype {arr.dtype}")
    if arr.ndim < 1 or arr.shape[-1] != CONTEXT:
        raise ValueError(f"{name} must have shape (..., {CONTEXT}), got {arr.shape}")
    _check_tokens(arr, name)
    odd_cols = (np.arange(CONTEXT) % 2) == 0  # columns 0, 2, ..., 18 sit on odd positions
    parity_ok = (arr >= N_OUT) == odd_cols
    if not parity_ok.all():
        idx = np.argwhere(~parity_ok)[0]
        col = int(idx[-1])
        want = "8..15 (odd position)" if odd_cols[col] else "0..7 (even position)"
        raise ValueError(
            f"{name}{list(map(int, idx[:-1]))} column {col} holds token {int(arr[tuple(idx)])}, expected {want}: "
            f"a history must end on an even position (last token 0..7, alternating parity)"
        )
    return arr.astype(np.int64, copy=False)


def partial_logsum(histories: np.ndarray) -> np.ndarray:
    """Log-sum (mod 16) of the last 15 tokens of each history: with the action it fixes the next even token."""
    return TOKEN_LOG[np.asarray(histories)[..., CONTEXT - ORDER + 1 :]].sum(axis=-1, dtype=np.uint16).astype(
        np.uint8
    ) & 15


def _check_actions(actions: np.ndarray) -> np.ndarray:
    actions = np.asarray(actions)
    if not np.issubdtype(actions.dtype, np.integer):
        raise TypeError(f"actions must be integers in 0..{N_OUT - 1}, got dtype {actions.dtype}")
    if actions.size and (actions.min() < 0 or actions.max() >= N_OUT):
        bad = actions[(actions < 0) | (actions >= N_OUT)].flat[0]
        raise ValueError(f"action {bad} is out of range: expected 0..{N_OUT - 1} (token 8 + action)")
    return actions


def next_deterministic(histories: np.ndarray, actions: np.ndarray | None = None) -> np.ndarray:
    """The deterministic value of the even token that follows ``history ⊕ (8 + action)``.

    :param histories: ``(..., 20)`` natural histories.
    :param actions: ``(...)`` actions in 0..7, or ``None`` for all eight actions.
    :return: ``uint8`` array ``(...)``, or ``(..., 8)`` indexed by action when ``actions`` is ``None``.
    """
    h = validate_histories(histories)
    part = partial_logsum(h)
    if actions is None:
        return det_from_logsum(part[..., None] + TOKEN_LOG[N_OUT + np.arange(N_OUT)])
    a = _check_actions(actions)
    if a.shape != h.shape[:-1]:
        raise ValueError(f"actions must have shape {h.shape[:-1]} to match histories {h.shape}, got {a.shape}")
    return det_from_logsum(part + TOKEN_LOG[N_OUT + a])


def transition_probs(histories: np.ndarray, actions: np.ndarray | None = None) -> np.ndarray:
    """Exact one-step world model ``T(x | h, a)`` over the next even token ``x`` in 0..7 (SPEC §1).

    ``T = 0.98 * onehot(d) + 0.02 / 8`` where ``d`` is :func:`next_deterministic`.

    :param histories: ``(..., 20)`` integer natural histories (ending on an even position).
    :param actions: ``(...)`` actions in 0..7 (token ``8 + a``), or ``None`` for all actions at once.
    :return: float64 ``(..., 8)``, or ``(..., 8, 8)`` indexed ``[..., action, x]`` when ``actions`` is ``None``.
    """
    d = next_deterministic(histories, actions)
    probs = np.full(d.shape + (N_OUT,), (1 - P_DET) / N_OUT)
    np.put_along_axis(probs, d[..., None].astype(np.intp), P_MATCH, axis=-1)
    return probs
