"""Fresh next-token training data drawn from the sequence generator itself.

The generator is free, so pretraining never sees a fixed dataset: every batch is new text from
:class:`seqenv.sequence.SequenceStreams`, and each example is seen once. The post's large models
overfit their finite dataset; here there is nothing to memorise, so train and test loss agree in
expectation and the only regulariser that matters is the one the post kept (AdamW weight decay 0.01,
dropout 0.1).

An example is a 20-token context and the token that follows it. Half of every batch has an odd
target (the context ends on an even position, as a natural history does: the policy's question), the
other half an even target (the context ends on an odd position: the world-model question).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from seqenv.sequence import CONTEXT, N_OUT, SequenceStreams

_WINDOW = CONTEXT + 1  # a context and its target


PARITIES = ("both", "even", "odd")


class NextTokenData:
    """Batches of ``(contexts (B, 20) int64, targets (B,) int64)`` from ``batch_size`` independent streams.

    Every call to :meth:`batch` advances all streams by 22 tokens and each stream contributes one
    21-token window of them (a context and its target), starting at the first or the second new token.
    With ``parity="both"`` the first half of the streams takes the window starting at the first new token
    and the second half the one starting a token later, so the two halves have targets of opposite parity
    (which half is odd alternates from batch to batch); ``"even"`` / ``"odd"`` pick, for every stream, the
    window whose target has that parity (even targets: tokens 0..7, the maintenance data of finetuning).

    :param batch_size: examples per batch (even, >= 2, for ``parity="both"``; >= 1 otherwise).
    :param seed: seeds the streams (an int, ``None`` or a ``numpy.random.Generator``).
    :param parity: ``"both"``, ``"even"`` or ``"odd"`` targets.
    """

    def __init__(self, batch_size: int, seed: int | np.random.Generator | None = 0, parity: str = "both"):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
            raise TypeError(f"batch_size must be an int, got {batch_size!r}")
        if parity not in PARITIES:
            raise ValueError(f"parity must be one of {PARITIES}, got {parity!r}")
        if parity == "both" and (batch_size < 2 or batch_size % 2):
            raise ValueError(
                f"batch_size must be an even number >= 2 (half per target parity), got {batch_size}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size}")
        self.batch_size = int(batch_size)
        self.parity = parity
        self.streams = SequenceStreams(self.batch_size, seed)

    def batch_numpy(self) -> tuple[np.ndarray, np.ndarray]:
        """The next batch as numpy ``(contexts (B, 20), targets (B,))`` int64."""
        first_target = self.streams.position + CONTEXT  # position of the target of the first window
        tokens = self.streams.advance(_WINDOW + 1)  # (22, B), time-major
        if self.parity == "both":
            half = self.batch_size // 2
            windows = np.empty((self.batch_size, _WINDOW), dtype=np.int64)
            windows[:half] = tokens[:_WINDOW, :half].T
            windows[half:] = tokens[1:, half:].T
        else:
            shift = int((first_target % 2 == 0) != (self.parity == "even"))
            windows = np.ascontiguousarray(tokens[shift : shift + _WINDOW].T, dtype=np.int64)
        return windows[:, :CONTEXT], windows[:, CONTEXT]

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch as tensors ``(contexts (B, 20), targets (B,))`` int64."""
        x, y = self.batch_numpy()
        return torch.from_numpy(x), torch.from_numpy(y)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the exact same stream of batches (generator state included)."""
        return {
            "batch_size": self.batch_size,
            "parity": self.parity,
            "streams": copy.deepcopy(vars(self.streams)),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; later batches are then identical to the original's."""
        if (state.get("batch_size"), state.get("parity", "both")) != (self.batch_size, self.parity):
            raise ValueError(
                f"data state is for batch_size {state.get('batch_size')}, parity {state.get('parity', 'both')!r}; "
                f"this stream has {self.batch_size}, {self.parity!r}"
            )
        vars(self.streams).update(copy.deepcopy(state["streams"]))


def eval_set(n: int, seed: int, parity: str = "both") -> tuple[torch.Tensor, torch.Tensor]:
    """A held-out set of ``n`` examples, from streams no training run shares.

    :param n: examples (even for ``parity="both"``: half with even targets).
    :param seed: seeds the held-out streams; the training loops derive it from their own seed.
    :param parity: ``"both"``, ``"even"`` or ``"odd"`` targets.
    """
    return NextTokenData(n, np.random.default_rng([seed, 0xE7A1]), parity).batch()


def target_is_even(targets: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """True where a target token sits on an even position (tokens 0..7)."""
    return targets < N_OUT
