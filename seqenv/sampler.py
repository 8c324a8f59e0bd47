"""A cheap supply of natural histories for environment resets."""

from __future__ import annotations

import numpy as np

from seqenv.sequence import SequenceStreams


class HistorySampler:
    """Hands out natural histories one batch at a time, burning in only once.

    ``n_streams`` sequences are burnt in once; every refill advances each of them by 20 tokens and yields
    one history per stream. Consecutive histories come from different streams, and a stream is only
    reused ``n_streams`` histories later, on the 20 tokens that follow its previous history. Each history
    is a window of a stationary sequence (exactly natural); histories far apart in the supply are
    independent for all practical purposes, those of one refill are independent exactly.

    :param n_streams: histories per refill.
    :param rng: the generator every draw comes from.
    """

    def __init__(self, n_streams: int, rng: np.random.Generator):
        self.streams = SequenceStreams(n_streams, rng)
        self._hist = np.empty((0, 20), dtype=np.int64)
        self._partial = np.empty(0, dtype=np.uint8)
        self._next = 0

    def take(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``k`` histories ``(k, 20)`` int64 and the log-sums of their last 15 tokens ``(k,)`` uint8."""
        if self._next + k <= len(self._hist):
            sl = slice(self._next, self._next + k)
            self._next += k
            return self._hist[sl], self._partial[sl]
        parts_h, parts_p = [self._hist[self._next :]], [self._partial[self._next :]]
        need = k - len(parts_h[0])
        while need > 0:
            self._hist, self._partial = self.streams.histories()
            got = min(need, len(self._hist))
            parts_h.append(self._hist[:got])
            parts_p.append(self._partial[:got])
            self._next = got
            need -= got
        return np.concatenate(parts_h), np.concatenate(parts_p)
