"""Fresh next-token training data drawn from the sequence generator itself.

The generator is free, so pretraining never sees a fixed dataset: every batch is new text from
:class:`seqenv.sequence.SequenceStreams`, and each example is seen once. The post's large models
overfit their finite dataset; here there is nothing to memorise, so train and test loss agree in
expectation and the only regulariser that matters is the one the post kept (AdamW weight decay 0.01,
dropout 0.1).

An example is a 20-token context and the token that follows it. Half of every batch has an odd
target (the context ends on an even position, as a natural history does: the policy's question), the
other half an even target (the context ends on an odd position: the world-model question).

Held-out sets come from streams no training run shares: :func:`eval_set` and :func:`heldout_metrics` score
next-token prediction, :class:`SuccessEvaluator` a policy's exact greedy success on natural histories.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from agents.transformer import SplitSeqTransformer
from seqenv.sampler import load_streams_state_dict, streams_state_dict
from seqenv.sequence import CONTEXT, N_OUT, SequenceStreams, natural_histories, transition_probs
from seqenv.tasks import good_mask
from seqenv.validation import check_choice, check_positive_int

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
        batch_size = check_positive_int(batch_size, "batch_size")
        check_choice(parity, "parity", PARITIES)
        if parity == "both" and batch_size % 2:
            raise ValueError(
                f"batch_size must be an even number >= 2 (half per target parity), got {batch_size}"
            )
        self.batch_size = batch_size
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
        """Everything needed to continue the exact same stream of batches, as plain data (the streams' arrays
        and their generator's bit-generator state: :func:`seqenv.sampler.streams_state_dict`)."""
        return {
            "batch_size": self.batch_size,
            "parity": self.parity,
            "streams": streams_state_dict(self.streams),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (a checkpoint's, after :func:`agents.checkpoint.numpy_arrays`); later
        batches are then identical to the original's."""
        if (state.get("batch_size"), state.get("parity", "both")) != (self.batch_size, self.parity):
            raise ValueError(
                f"data state is for batch_size {state.get('batch_size')}, parity {state.get('parity', 'both')!r}; "
                f"this stream has {self.batch_size}, {self.parity!r}"
            )
        load_streams_state_dict(self.streams, state["streams"])


def counterfactual_examples(
    histories: np.ndarray, actions: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Next-token examples after an arbitrary odd token: contexts ``h[1:] ⊕ (8 + a)`` ``(n, 20)`` and the world's
    next even token ``x ~ T(.|h, a)`` ``(n,)`` (the exact law, :func:`seqenv.sequence.transition_probs`)."""
    probs = transition_probs(histories, actions)  # (n, 8)
    u = rng.random(len(histories))
    targets = np.minimum((probs.cumsum(axis=1) < u[:, None]).sum(axis=1), N_OUT - 1).astype(np.int64)
    contexts = np.concatenate([histories[:, 1:], (N_OUT + actions.astype(np.int64))[:, None]], axis=1)
    return contexts, targets


def make_counterfactual(
    contexts: np.ndarray, targets: np.ndarray, rows: np.ndarray, rng: np.random.Generator
) -> None:
    """Turn the natural even-target examples ``rows`` of ``(contexts, targets)`` into counterfactual ones, in
    place: each context's last (odd) token becomes ``8 + a`` with ``a`` uniform over 0..7 and its target the
    world's answer, drawn from ``T(.|h, a)`` (``h`` is the context's first 19 tokens preceded by an odd token: the
    world reads only the last 16)."""
    if not len(rows):
        return
    filler = np.full((len(rows), 1), N_OUT, dtype=contexts.dtype)  # an odd token the world never reads
    h = np.concatenate([filler, contexts[rows, :-1]], axis=1)  # 20 tokens ending at s_t
    cx, cy = counterfactual_examples(h, rng.integers(0, N_OUT, len(rows)), rng)
    contexts[rows], targets[rows] = cx, cy


class CounterfactualMix:
    """Next-token batches of ``data`` with a share of their even-target examples made counterfactual
    (:func:`make_counterfactual`): the model sees the world answer every odd token, not only the sequence's own.

    :param data: the natural batches.
    :param share: the share of each batch's even-target examples made counterfactual.
    :param seed: seeds the counterfactual draws (independent of ``data``'s streams).
    """

    def __init__(self, data: NextTokenData, share: float, seed: int):
        self.data, self.share = data, share
        self.rng = np.random.default_rng([seed, 0xCF])

    def batch_numpy(self) -> tuple[np.ndarray, np.ndarray]:
        """The next batch as numpy ``(contexts (B, 20), targets (B,))`` int64."""
        x, y = self.data.batch_numpy()
        even = np.flatnonzero(y < N_OUT)
        make_counterfactual(x, y, even[: round(self.share * len(even))], self.rng)
        return x, y

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch as tensors."""
        x, y = self.batch_numpy()
        return torch.from_numpy(x), torch.from_numpy(y)

    def state_dict(self) -> dict[str, Any]:
        """The natural streams' state and the counterfactual generator's, as plain data."""
        return {**self.data.state_dict(), "counterfactual_rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
        state = dict(state)
        rng_state = state.pop("counterfactual_rng", None)
        self.data.load_state_dict(state)
        if rng_state is not None:
            self.rng.bit_generator.state = rng_state


class MaintenanceData:
    """The batches of finetuning's maintenance steps: natural contexts with even targets (the post's), with a
    share of each batch made counterfactual unless ``world_model="natural"``.

    :param batch_size: examples per batch.
    :param seed: seeds the natural streams and the counterfactual draws (independent generators).
    :param world_model: ``"natural"``; ``"counterfactual"``: uniformly drawn odd tokens on natural contexts
        (:class:`CounterfactualMix`); ``"policy"``: the rollout's histories and sampled actions. See
        :class:`agents.finetune_config.FinetuneConfig`.
    :param share: the share of each batch given to counterfactual contexts.
    """

    def __init__(self, batch_size: int, seed: int, world_model: str = "natural", share: float = 0.5):
        natural = NextTokenData(max(batch_size, 1), np.random.default_rng([seed, 0x3A17]), "even")
        self.data = CounterfactualMix(natural, share if world_model == "counterfactual" else 0.0, seed)
        self.n_policy = round(share * batch_size) if world_model == "policy" else 0

    def batch(self, histories: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch; with ``world_model="policy"`` its counterfactual rows come from the rollout's
        ``histories`` and ``actions``."""
        x, y = self.data.batch_numpy()
        k = self.n_policy
        if k:
            rows = self.data.rng.integers(0, len(histories), k)
            h, a = histories.cpu().numpy(), actions.cpu().numpy()  # the rollout may live on a GPU
            cx, cy = counterfactual_examples(h[rows], a[rows], self.data.rng)
            x[-k:], y[-k:] = cx, cy
        return torch.from_numpy(x), torch.from_numpy(y)

    def state_dict(self) -> dict[str, Any]:
        """As plain data (:meth:`CounterfactualMix.state_dict`)."""
        return self.data.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (checkpoints written before the counterfactual option lack its key)."""
        self.data.load_state_dict(state)


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


@torch.no_grad()
def heldout_metrics(
    model: SplitSeqTransformer, x: torch.Tensor, y: torch.Tensor, chunk: int = 4096
) -> dict[str, float]:
    """Next-token loss and accuracy of ``model`` on held-out contexts ``x`` and targets ``y`` (from
    :func:`eval_set`): ``eval_loss`` (cross-entropy), ``acc_even`` and ``acc_odd`` (argmax of the 16 logits
    on even and on odd targets; the best possible is ``P_MATCH = 0.9825``). The model is run in eval mode,
    on its own device and in fp32 (outside any autocast), and left in the mode it was in."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device  # chunks go to the model's device, logits come back in fp32
    logits = torch.cat([model(x[i : i + chunk].to(device)).float().cpu() for i in range(0, len(x), chunk)])
    model.train(was_training)
    correct = logits.argmax(-1) == y
    even = target_is_even(y)
    return {
        "eval_loss": F.cross_entropy(logits, y).item(),
        "acc_even": correct[even].double().mean().item(),
        "acc_odd": correct[~even].double().mean().item(),
    }


class SuccessEvaluator:
    """Exact greedy success of a model on fixed held-out natural histories, with the uniform and oracle levels.

    :param task: the task whose good set counts.
    :param n: histories.
    :param seed: seeds the histories.
    """

    def __init__(self, task: str, n: int, seed: int):
        self.histories = natural_histories(n, np.random.default_rng([seed, 0x5EC5]))
        self.tokens = torch.from_numpy(self.histories)
        good = transition_probs(self.histories)[..., good_mask(task)].sum(-1)  # (n, 8): P(good | h, a)
        self.good_prob = good
        self.s_uniform = float(good.mean())
        self.s_oracle = float(good.max(axis=1).mean())

    @torch.no_grad()
    def __call__(self, model: SplitSeqTransformer, chunk: int = 4096) -> dict[str, float]:
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        chunks = [self.tokens[i : i + chunk].to(device) for i in range(0, len(self.tokens), chunk)]
        actions = torch.cat([model.policy_logits(h).argmax(-1).cpu() for h in chunks]).numpy()
        model.train(was_training)
        s = float(self.good_prob[np.arange(len(actions)), actions].mean())
        return {"success": s, "frac_of_oracle": (s - self.s_uniform) / (self.s_oracle - self.s_uniform)}
