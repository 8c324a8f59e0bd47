"""A cheap supply of natural histories for environment resets."""

from __future__ import annotations

import numpy as np

from seqenv.sequence import CONTEXT, SequenceStreams


class HistorySampler:
    """Hands out natural histories one batch at a time, burning in only once.

    ``n_streams`` sequences are burnt in once; every refill advances each of them by 20 tokens and yields
    one history per stream, so a history costs 20 generated tokens instead of a burn-in. Each history is a
    window of a stationary sequence, i.e. exactly natural. The histories of one refill are independent;
    a stream is reused ``n_streams`` histories later, on the 20 tokens that follow its previous history:
    a later window of the same sequence, natural but weakly dependent on the earlier one (measured on
    400,000 pairs: Cramér's V 0.03 between their last tokens, 0.01 between the deterministic outcomes
    of an action, correlation 0.014 between "some action succeeds on ngood4").

    The arrays handed out are views of a batch the sampler never writes again.

    :param n_streams: histories per refill.
    :param rng: the generator every draw comes from.
    """

    def __init__(self, n_streams: int, rng: np.random.Generator):
        self.streams = SequenceStreams(n_streams, rng)
        self._hist = np.empty((0, CONTEXT), dtype=np.int64)
        self._partial = np.empty(0, dtype=np.uint8)
        self._partial_list: list[int] = []
        self._next = 0

    def _refill(self) -> None:
        self._hist, self._partial = self.streams.histories()
        self._partial_list = []
        self._next = 0

    def take_one(self) -> tuple[np.ndarray, int]:
        """One history ``(20,)`` int64 and the log-sum of its last 15 tokens as an int."""
        i = self._next
        if i >= len(self._hist):
            self._refill()
            i = 0
        if not self._partial_list:
            self._partial_list = self._partial.tolist()
        self._next = i + 1
        return self._hist[i], self._partial_list[i]

    def take(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``k`` histories ``(k, 20)`` int64 and the log-sums of their last 15 tokens ``(k,)`` uint8."""
        if self._next + k <= len(self._hist):
            sl = slice(self._next, self._next + k)
            self._next += k
            return self._hist[sl], self._partial[sl]
        parts_h, parts_p = [self._hist[self._next :]], [self._partial[self._next :]]
        need = k - len(parts_h[0])
        while need > 0:
            self._refill()
            got = min(need, len(self._hist))
            parts_h.append(self._hist[:got])
            parts_p.append(self._partial[:got])
            self._next = got
            need -= got
        return np.concatenate(parts_h), np.concatenate(parts_p)
