"""The SplitSeq sequence (docs/spec.md §1): the mod-17 recurrence, natural data and the exact world model.

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

from seqenv.validation import check_int, check_positive_int

VOCAB = 16  #: tokens 0..15
CONTEXT = 20  #: tokens in a history / the model's context
ORDER = 16  #: predecessors the recurrence multiplies
N_OUT = 8  #: values of the deterministic part (and of the action)
P_DET = 0.98  #: probability that the written token is the deterministic value
P_MATCH = P_DET + (1 - P_DET) / N_OUT  #: probability that it equals it (noise may draw it too)
#: Tokens generated after the uniform start before a stream is used (odd, so that histories end on an
#: even position). How far from stationary a stream is decays geometrically with the burn-in: measured
#: on 2-4 million histories per burn-in against a 2047/4095-token burn-in, the deviation of token, pair
#: and log-sum frequencies shrinks e-fold every 14-19 tokens, that of the oracle's success rate (whether
#: some action makes the next token good; 0.5% too high without burn-in) every ~35 tokens. At 63 tokens
#: differences are still significant (p < 1e-5), from ~95 on none is detectable. 511 tokens is ~14
#: e-foldings of the slowest (a bias below 1e-8), at a one-off cost of 511 tokens per stream.
BURN_IN = 511

# Noise is drawn as one integer u in 0..399 per token: u < 8 (probability exactly 0.02) replaces the
# deterministic value with u itself, which is then uniform on 0..7.
_NOISE_DRAW = 400
_NOISE_HIT = 8
_P_NOISE = _NOISE_HIT / _NOISE_DRAW  # 0.02

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
    return _DET_OF_LOGSUM.take(np.bitwise_and(logsum, 15))


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
    """Apply the 2% noise: ``u`` are draws uniform on 0..399 (one per token, see :func:`noise_draws`);
    where ``u < 8`` (probability exactly 0.02) the token is ``u`` (uniform on 0..7), elsewhere ``d``.

    :param d: deterministic values 0..7; broadcast against ``u``.
    :return: ``uint8`` array of the broadcast shape.
    """
    d, u = np.asarray(d), np.asarray(u)
    hit = u < _NOISE_HIT
    if d.shape == u.shape:
        out = d.astype(np.uint8)
        np.copyto(out, u, casting="unsafe", where=hit)
        return out
    return np.where(hit, u, d).astype(np.uint8)


def noise_draws(rng: np.random.Generator, shape: int | tuple[int, ...]) -> np.ndarray:
    """Draws for :func:`noisy`: integers uniform on 0..399 (``int16``)."""
    return rng.integers(0, _NOISE_DRAW, size=shape, dtype=np.int16)


def noise_positions(rng: np.random.Generator, size: int) -> np.ndarray:
    """Which of ``size`` tokens are noise, each independently with probability 0.02: sorted int64 indices.

    Equivalent in distribution to ``np.flatnonzero(noise_draws(rng, size) < 8)`` at a tenth of the
    cost: the gaps between noise tokens are geometric, drawn by inversion as ``ceil(E / -log(0.98))`` from
    standard exponentials ``E`` (as ``Generator.geometric`` does, at half its cost). The residual gap past
    ``size`` is dropped, which the geometric law's lack of memory makes exact. The noise *values* are drawn
    separately, uniform on 0..7.
    """
    mean = size * _P_NOISE
    m = int(mean + 6 * mean**0.5) + 16
    pos = np.cumsum(_geometric_gaps(rng, m)) - 1
    while pos[-1] < size:  # fewer than `size` tokens covered (a > 6 sigma shortfall): extend
        pos = np.concatenate([pos, pos[-1] + np.cumsum(_geometric_gaps(rng, m))])
    return pos[: np.searchsorted(pos, size)]


_GAP_SCALE = -1.0 / np.log1p(-_P_NOISE)


def _geometric_gaps(rng: np.random.Generator, m: int) -> np.ndarray:
    """``m`` draws of the geometric law on 1, 2, ... with success probability 0.02."""
    gaps = np.ceil(rng.standard_exponential(m) * _GAP_SCALE).astype(np.int64)
    return np.maximum(gaps, 1, out=gaps)  # E = 0 exactly (probability ~1e-19) would give a gap of 0


# Tables for SequenceStreams, all derived from the rule (det_from_logsum, TOKEN_LOG). A stream keeps, per
# position, one byte b = L | (w << 4): L the log-sum of the position's 16 predecessors and w the token the
# rule writes there without noise, _TOKEN[p][L] for a position of parity p (log factor _NOISELESS_LOG[p][L]).
# From position t (parity p) to t + 1, (16 * b_t + b_{t-16}) mod 256 = 16 * ((L_t + w_{t-16}) mod 16) + L_{t-16}
# determines (L_t, L_{t-16}), and _STEP[p] maps it to b_{t+1} for a noiseless s_t and s_{t-16} (16 is even:
# s_{t-16} has the parity of s_t). Noise is handled by corrections to L (see SequenceStreams._advance).
_L16 = np.arange(16)
_TOKEN = [det_from_logsum(_L16) + np.uint8(N_OUT * p) for p in (0, 1)]
_NOISELESS_LOG = [TOKEN_LOG[tok] for tok in _TOKEN]
_PACK = [(_L16 | (_TOKEN[p].astype(np.int64) << 4)).astype(np.uint8) for p in (0, 1)]  # L -> b at parity p
_REPACK = [np.tile(_PACK[p], 16) for p in (0, 1)]  # any byte x -> b of L = x mod 16 at parity p
_STEP = []
for _p in (0, 1):
    _lt, _lo = np.meshgrid(_L16, _L16, indexing="ij")
    _table = np.empty(256, dtype=np.uint8)
    _table[16 * ((_lt + _TOKEN[_p][_lo]) % 16) + _lo] = _PACK[1 - _p][
        (_lt + _NOISELESS_LOG[_p][_lt] - _NOISELESS_LOG[_p][_lo].astype(np.int64)) % 16
    ]
    _STEP.append(_table)
# The step tables as bytes for bytes.translate, which maps a row of index bytes through them at ~1 cycle per
# stream (numpy's take needs ~3 per look-up, even on two streams at once through a 64K uint16 table).
_STEP_BYTES = [_STEP[p].tobytes() for p in (0, 1)]
# A noise token s_t (value v in 0..7, parity p) as one look-up each: the step's index byte i = 16 * b_t + b_{t-16}
# fixes L_t (= high nibble of i minus the token that b_{t-16} encodes), so at 256 * v + i _HIT_DELTA[p] holds
# delta = (log factor of s_t) - (the noiseless one), mod 256 as uint8, and _HIT_BYTE[p] the corrected b_{t+1}.
_HIT_DELTA, _HIT_BYTE = [], []
for _p in (0, 1):
    _i = np.arange(256)
    _lt = ((_i >> 4) - _TOKEN[_p][_i & 15]) % 16
    _delta = TOKEN_LOG[np.arange(N_OUT)[:, None] + N_OUT * _p] - _NOISELESS_LOG[_p][_lt][None, :]  # (8, 256)
    _HIT_DELTA.append(_delta.ravel())
    _HIT_BYTE.append(_REPACK[1 - _p][_STEP[_p][None, :] + _delta].ravel())


class SequenceStreams:
    """``n`` independent sequences advanced together, numpy over all streams at once.

    The streams start from 16 uniform tokens (positions 0..15) and are burnt in for :data:`BURN_IN`
    tokens, so the last token sits on an even position and the next one is odd: every
    :meth:`histories` call then advances 20 tokens and keeps that alignment.

    Random draws, in order: the 16 start tokens ``rng.integers(0, 8, (16, n), dtype=uint8)``, then per
    advance of ``k`` tokens (the burn-in in chunks of 256 tokens, fewer beyond 262,144 streams) the noise
    positions ``noise_positions(rng, k * n)`` (flat, time-major) and their values
    ``rng.integers(0, 8, n_noise, dtype=uint8)``. Every other token is the rule's deterministic value:
    the output equals :func:`deterministic_next` applied window by window (the tests check this), computed
    in O(1) per token from the log-sum of the window.

    :param n: number of streams.
    :param seed: an int, ``None`` or a ``numpy.random.Generator`` (used, not copied).
    :param burn_in: tokens generated before use; must be odd so that histories end on an even position.
    """

    def __init__(self, n: int, seed: int | np.random.Generator | None = None, burn_in: int = BURN_IN):
        self.n = check_positive_int(n, "n (streams)")
        burn_in = check_int(burn_in, "burn_in", 0, expected="a non-negative odd int number of tokens")
        if burn_in % 2 != 1:
            raise ValueError(f"burn_in must be a non-negative odd int number of tokens, got {burn_in!r}")
        self.rng = _rng(seed)
        start = self.rng.integers(0, N_OUT, size=(ORDER, self.n), dtype=np.uint8)
        start[1::2] += N_OUT  # positions 0..15: odd ones hold 8..15
        # The start tokens are not the rule's: give them the virtual log-sum 0 and treat them like noise
        # tokens (see _advance): their log factor replaces the noiseless one the step table assumes.
        parity = np.arange(ORDER) % 2
        self._lags = np.repeat(np.array([_PACK[0][0], _PACK[1][0]])[parity][:, None], self.n, axis=1)
        delta = TOKEN_LOG[start] - np.array([_NOISELESS_LOG[0][0], _NOISELESS_LOG[1][0]])[parity][:, None]
        all_streams = np.arange(self.n)
        self._leaving = [(all_streams, delta[i]) for i in range(ORDER)]  # noise leaving the window at step i
        logsum = TOKEN_LOG[start].sum(axis=0, dtype=np.uint16) & 15
        self._current = _PACK[0][logsum]  # b of the next position (16, even)
        self.position = ORDER  # position of the next token
        chunk = max(16, min(256, (1 << 26) // self.n))  # _advance holds k + 17 rows of n bytes: <= 64 MiB
        for done in range(0, burn_in, chunk):
            self._advance(min(chunk, burn_in - done))

    @property
    def logsum(self) -> np.ndarray:
        """``(n,)`` uint8: log-sum (mod 16) of the last 16 tokens of each stream (see :func:`det_from_logsum`)."""
        return self._current & 15

    def advance(self, n_tokens: int) -> np.ndarray:
        """Generate ``n_tokens`` more tokens on every stream; returns them time-major, ``(n_tokens, n)`` uint8."""
        rows, hit_step, hit_stream, hit_token = self._advance(n_tokens)
        width = _padded(self.n)
        padded = np.empty((len(rows), width), dtype=np.uint8)
        tokens = padded[:, : self.n]
        for j, row in enumerate(rows):
            np.right_shift(row, 4, out=tokens[j])  # the rule's tokens
        padded.ravel()[hit_step * width + hit_stream] = hit_token  # the noise tokens
        return tokens

    def _advance(self, n_tokens: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
        """Advance ``n_tokens`` positions. Returns the bytes ``b`` of the new positions, one ``(n,)`` row per
        position, and the noise tokens among them as ``(step, stream, token)`` arrays sorted by step."""
        k, n = check_int(n_tokens, "n_tokens", 0), self.n
        hits = noise_positions(self.rng, k * n)
        hit_value = self.rng.integers(0, N_OUT, size=len(hits), dtype=np.uint8)
        hit_step, hit_stream = np.divmod(hits, n)
        hit_token = hit_value + N_OUT * ((self.position + hit_step) & 1).astype(np.uint8)
        hit_key = hit_value.astype(np.intp) << 8  # 256 * v: the noise value's block of the _HIT tables
        hit_delta = np.empty(len(hits), dtype=np.uint8)
        bounds = np.searchsorted(hit_step, np.arange(k + 1)).tolist()
        # rows[r] holds b of position (self.position + r - 16); a row is never written once the next one
        # exists, so rows are shared, not copied, with the lags of the next call
        rows = [*self._lags, self._current]
        index_bytes = bytearray(n)  # the index row, as bytes for bytes.translate
        index = np.frombuffer(index_bytes, dtype=np.uint8)
        # (streams, delta) of the noise tokens that leave the window at each step; filled as we go
        leaving = self._leaving + [
            (hit_stream[bounds[j] : bounds[j + 1]], hit_delta[bounds[j] : bounds[j + 1]]) for j in range(k)
        ]
        for j in range(k):
            p = (self.position + j) & 1
            np.multiply(rows[ORDER + j], 16, out=index)
            index += rows[j]
            # as if s_t, s_{t-16} were noiseless (a new, writable bytearray each time: no copy)
            row = np.frombuffer(index_bytes.translate(_STEP_BYTES[p]), dtype=np.uint8)
            rows.append(row)
            # A noise token s_t with log factor G adds delta = G - (noiseless log factor) to L from step t + 1
            # on and takes it off again when it leaves the window at step t + 17. Re-packing depends on L
            # mod 16 only, so the corrections compose in any order.
            lo, hi = bounds[j], bounds[j + 1]
            if hi > lo:
                streams = hit_stream[lo:hi]
                key = index.take(streams) + hit_key[lo:hi]
                row[streams] = _HIT_BYTE[p].take(key)
                _HIT_DELTA[p].take(key, out=hit_delta[lo:hi])
            streams, delta = leaving[j]
            if len(streams):
                row[streams] = _REPACK[1 - p].take(row.take(streams) - delta)
        self._leaving = leaving[k : k + ORDER]
        self._lags = rows[k : k + ORDER]
        self._current = rows[ORDER + k]
        self.position += k
        return rows[ORDER : ORDER + k], hit_step, hit_stream, hit_token

    def histories(self) -> tuple[np.ndarray, np.ndarray]:
        """Advance 20 tokens and return one natural history per stream.

        :return: ``(histories, partial)``: ``(n, 20)`` int64 histories ending on an even position, and
            ``(n,)`` uint8 log-sums of their last 15 tokens (the part of the next even token's window that
            the history already fixes; see :func:`partial_logsum`).
        """
        hist, partial = self.history_tokens()
        return hist.astype(np.int64), partial

    def history_tokens(self) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`histories` with the histories as ``(n, 20)`` uint8 tokens."""
        rows, hit_step, hit_stream, hit_token = self._advance(CONTEXT)
        hist = np.empty((self.n, CONTEXT), dtype=np.uint8)
        # a strided store per column: 2-4x faster than numpy's transposing copy
        for c, row in enumerate(rows):
            hist[:, c] = row
        np.right_shift(hist, 4, out=hist)  # the rule's tokens
        hist.ravel()[hit_stream * CONTEXT + hit_step] = hit_token  # the noise tokens
        # L of the next position minus the log factor of the token leaving its window (b's high nibble: x16)
        partial = (self._current - TOKEN_LOG.take(hist[:, CONTEXT - ORDER])) & 15
        return hist, partial


def _padded(n: int) -> int:
    """Row length for ``n`` streams: at least ``n``; from 256 on, 64 bytes past a multiple of 4 KiB so
    that consecutive rows fall in different cache sets."""
    return n if n < 256 else -(-n // 4096) * 4096 + 64


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
    length = check_positive_int(length, "length (tokens)")
    return np.ascontiguousarray(SequenceStreams(n, seed).advance(length).T, dtype=np.int64)


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
        where = f"{name}[{', '.join(map(str, idx[:-1]))}]" if arr.ndim > 1 else name
        raise ValueError(
            f"{where} column {col} holds token {int(arr[tuple(idx)])}, expected {want}: "
            f"a history must end on an even position (last token 0..7, alternating parity)"
        )
    return arr.astype(np.int64, copy=False)


def partial_logsum(histories: np.ndarray) -> np.ndarray:
    """Log-sum (mod 16) of the last 15 tokens of each history: with the action it fixes the next even token."""
    return (
        TOKEN_LOG[np.asarray(histories)[..., CONTEXT - ORDER + 1 :]]
        .sum(axis=-1, dtype=np.uint16)
        .astype(np.uint8)
        & 15
    )


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
        raise ValueError(
            f"actions must have shape {h.shape[:-1]} to match histories {h.shape}, got {a.shape}"
        )
    return det_from_logsum(part + TOKEN_LOG[N_OUT + a])


def transition_probs(histories: np.ndarray, actions: np.ndarray | None = None) -> np.ndarray:
    """Exact one-step world model ``T(x | h, a)`` over the next even token ``x`` in 0..7 (docs/spec.md §1).

    ``T = 0.98 * onehot(d) + 0.02 / 8`` where ``d`` is :func:`next_deterministic`.

    :param histories: ``(..., 20)`` integer natural histories (ending on an even position).
    :param actions: ``(...)`` actions in 0..7 (token ``8 + a``), or ``None`` for all actions at once.
    :return: float64 ``(..., 8)``, or ``(..., 8, 8)`` indexed ``[..., action, x]`` when ``actions`` is ``None``.
    """
    d = next_deterministic(histories, actions)
    probs = np.full(d.shape + (N_OUT,), (1 - P_DET) / N_OUT)
    np.put_along_axis(probs, d[..., None].astype(np.intp), P_MATCH, axis=-1)
    return probs


def natural_odd_probs(histories: np.ndarray) -> np.ndarray:
    """The sequence's own law of the odd token after each history, as ``(N, 8)`` probabilities over 8..15.

    ``0.98 * onehot(d) + 0.02 / 8`` with ``d`` the deterministic value of the last 16 tokens: the generator's
    law for the next (odd) position. Entry ``a`` is the probability of token ``8 + a`` (action ``a``).
    """
    d = deterministic_next(np.asarray(histories)[:, -ORDER:])
    probs = np.full((len(d), N_OUT), (1 - P_DET) / N_OUT)
    probs[np.arange(len(d)), d] = P_MATCH
    return probs
