"""The configuration of RL finetuning: :class:`FinetuneConfig`, the methods and the per-size budgets.

:func:`agents.finetune.finetune` runs a config; :meth:`FinetuneConfig.preset` gives the recommended one for a
model size, task, method and budget.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from agents.runtime import PRECISIONS, check_device
from agents.training import BUDGETS, check_fraction, check_known
from seqenv.tasks import TASKS
from seqenv.validation import check_int, check_number, check_positive_int, check_seed

#: What the maintenance steps train the world model on (``FinetuneConfig.world_model``).
WORLD_MODELS = ("natural", "counterfactual", "policy")

#: The finetuning methods (``FinetuneConfig.method``).
FINETUNE_METHODS = ("positive", "reinforce")
#: What ``None`` resolves to per method (measured: README "Training agents"). REINFORCE learns from every
#: sample and wants many distinct histories per update: 2048 per rollout in minibatches of 256.
#: ``minibatch_size`` ``None``: the whole rollout (one plain update per rollout); a minibatch is at most the rollout.
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "positive": {
        "batch_size": 256,
        "lr": 1e-3,
        "epochs": 1,
        "minibatch_size": None,
        "dropout": 0.1,
        "group_size": 1,
        "temperature": 1.0,
    },
    "reinforce": {
        "batch_size": 2048,
        "lr": 5e-4,
        "epochs": 4,
        "minibatch_size": 256,
        "dropout": 0.0,
        "group_size": 1,
        "temperature": 2.0,
    },
}


def _per_task(ngood6_share: float = 1.0, **sizes: int) -> dict[str, dict[str, int]]:
    """``{size: {task: steps}}`` with the same steps for every task, ``ngood6_share`` of them on ngood6."""
    return {
        size: {task: max(1, round(steps * (ngood6_share if task == "ngood6" else 1.0))) for task in TASKS}
        for size, steps in sizes.items()
    }


#: The full budget with the post's method, per size and task: where seed 0's held-out success curve has
#: levelled off (docs: "Training agents: budgets", ``docs/results/budgets/levelling.csv``; tested against
#: it). A size takes its levelled budgets once all three of its curves have levelled; until then it keeps
#: the budget of before (tiny 3,200, small 4,000, large 6,000 for every task).
_POSITIVE_FULL: dict[str, dict[str, int]] = {
    "tiny": {"ngood2": 3200, "ngood4": 3200, "ngood6": 3200},
    "small": {"ngood2": 4000, "ngood4": 4000, "ngood6": 4000},
    "medium": {"ngood2": 6000, "ngood4": 7000, "ngood6": 14000},
    "large": {"ngood2": 6000, "ngood4": 6000, "ngood6": 6000},
}

#: Recommended policy steps per budget (:data:`agents.training.BUDGETS`), method, size and task (docs:
#: "Training agents"). REINFORCE on ngood6 (6 good tokens of 8) needs half its budget.
FINETUNE_BUDGETS: dict[str, dict[str, dict[str, dict[str, int]]]] = {
    "full": {
        "positive": _POSITIVE_FULL,
        "reinforce": _per_task(0.5, tiny=200, small=200, medium=250, large=250),
    },
    "quick": {
        "positive": _per_task(tiny=3200, small=1000, medium=1000, large=1000),
        "reinforce": _per_task(tiny=100, small=60, medium=60, large=60),
    },
}


@dataclass
class FinetuneConfig:
    """Every knob of :func:`finetune`; ``None`` takes the method's :data:`METHOD_DEFAULTS` value."""

    # --- the task
    task: str = "ngood4"
    """``"ngood2"``, ``"ngood4"`` or ``"ngood6"``."""
    method: str = "positive"
    """``"positive"`` (the post: successes only) or ``"reinforce"`` (with a baseline)."""
    seed: int = 0
    """Seeds dropout, sampling, the environment and the maintenance data."""
    steps: int = 1000
    """Policy steps (:meth:`preset` gives each size's recommended budget)."""

    # --- rollouts and policy updates
    batch_size: int | None = None
    """Environment samples per step (one rollout of the vector env): 256 for ``positive``, 2048 for
    ``reinforce`` (with 256 it learned 2-3x slower per sample: too few histories per update)."""
    epochs: int | None = None
    """Passes over each rollout; with more than one, updates after the first use PPO's clipped importance
    ratio (see :func:`policy_loss`). ``epochs=1, minibatch_size=batch_size`` is the plain method. Default:
    the method's measured best, 1 for ``positive`` (reusing successes collapses its policy onto one token),
    4 for ``reinforce``."""
    group_size: int | None = None
    """Samples per history: the rollout plays ``batch_size // group_size`` fresh histories ``group_size`` times
    each (divides ``batch_size``). With ``reinforce`` and ``group_size >= 2`` each sample's baseline is the mean
    reward of its history's other samples. Default 1 (measured: at an equal sample budget, fewer distinct
    histories cost more than the per-history baseline gains)."""
    minibatch_size: int | None = None
    """Samples per policy update: ``batch_size`` for ``positive``, 256 for ``reinforce``."""
    clip: float = 0.2
    """PPO clip range of the importance ratio."""
    lr: float | None = None
    """Peak learning rate of the policy update: 1e-3 for ``positive``, 5e-4 for ``reinforce``."""
    warmup_steps: int = 20
    """Linear warmup of both learning rates."""
    min_lr_ratio: float = 1.0
    """Both learning rates decay by a cosine to this fraction (1: constant after warmup, which learned faster
    than decaying within the budgets here)."""
    temperature: float | None = None
    """Sampling temperature of the rollouts; the policy updated is the tempered one, and the greedy policy (its
    argmax) is the same at every temperature. Default: 1 for ``positive`` (the post), 2 for ``reinforce`` (the
    pretrained policy is nearly deterministic, it picks the natural odd token ~95% of the time for ``large``,
    and a hotter sampler explores the other tokens; measured on ngood2)."""
    dropout: float | None = None
    """Dropout rate during finetuning; default: the method's measured best (README "Training agents"):
    ``positive`` keeps the pretraining's 0.1 (without that noise the positive-only policy collapses onto one
    token and stops exploring), ``reinforce`` uses 0 (dropout noise in the sampled policy and its gradient
    slowed it down)."""

    # --- maintenance: next-token steps on even targets after every policy update
    maintenance_lr: float = 1e-4
    """Peak learning rate of the next-token maintenance step (much lower than ``lr``)."""
    maintenance_batch: int = 32
    """Even-target examples per maintenance step (0 disables maintenance)."""
    world_model: str = "natural"
    """What the maintenance steps show the model (:data:`WORLD_MODELS`). ``"natural"`` (the post's): natural
    sequences only, where every odd token is the sequence's own, so the model never sees the world answer any
    other action. ``"counterfactual"``: a share ``counterfactual_share`` of each maintenance batch is replaced
    by contexts ``h ⊕ (8 + a)`` on the rollout's histories with ``a`` uniform over 0..7, the target the world's
    next even token (sampled from ``T(.|h, a)``). ``"policy"``: the same with ``a`` the action the policy
    sampled in the rollout. Self-evaluation needs the model's world on such contexts (docs: results)."""
    counterfactual_share: float = 0.5
    """Share of each maintenance batch given to counterfactual contexts (``world_model`` other than natural)."""

    # --- both optimizers
    weight_decay: float = 0.01
    """AdamW weight decay (0.01, as in pretraining)."""
    grad_clip: float = 1.0
    """Gradient-norm clip of each update (0 disables)."""

    # --- plumbing: evaluation, checkpoints, threads, device, precision
    eval_every: int | None = None
    """Steps between held-out evaluations (default: ``steps // 10``, at least 1)."""
    eval_samples: int = 8192
    """Held-out histories per evaluation (and even-target examples for maintenance accuracy)."""
    checkpoint_every: int = 0
    """Steps between resumable checkpoints (0: only the final one)."""
    threads: int = 0
    """Torch intra-op threads (0 leaves torch's setting alone)."""
    device: str = "auto"
    """Where the model trains: ``"auto"`` (CUDA if available, else MPS, else the CPU), ``"cpu"``, ``"cuda"``,
    ``"cuda:<i>"`` or ``"mps"`` (:mod:`agents.runtime`); the environment and the maintenance data stay numpy
    on the CPU and move to it in batches. On the CPU the numbers are those of the code before devices existed."""
    precision: str = "fp32"
    """``"fp32"`` or ``"bf16"``: autocast of the rollouts' and updates' forward passes and losses to bfloat16
    (weights, gradients and optimizer state stay fp32; the held-out evaluations run in fp32)."""

    def __post_init__(self) -> None:
        check_known(self.task, "task", sorted(TASKS))
        check_known(self.method, "method", FINETUNE_METHODS)
        if self.eval_every is None and isinstance(self.steps, int):
            self.eval_every = max(1, self.steps // 10)
        self._resolve_method_defaults()
        for name in ("steps", "epochs", "group_size", "minibatch_size", "eval_every", "eval_samples"):
            check_positive_int(getattr(self, name), name)
        for name in ("warmup_steps", "maintenance_batch", "checkpoint_every", "threads"):
            check_int(getattr(self, name), name, 0)
        check_seed(self.seed)
        if self.minibatch_size > self.batch_size:
            raise ValueError(
                f"minibatch_size={self.minibatch_size} must be at most batch_size={self.batch_size}"
            )
        if self.batch_size % self.group_size:
            raise ValueError(
                f"group_size={self.group_size} must divide batch_size={self.batch_size} (histories x samples each)"
            )
        if self.method == "reinforce" and self.batch_size < 2:
            raise ValueError(
                f"method='reinforce' needs batch_size >= 2 for its baseline, got {self.batch_size}"
            )
        for name in ("lr", "temperature"):
            check_number(getattr(self, name), name, 0.0, strict=True)
        for name in ("clip", "maintenance_lr", "weight_decay", "grad_clip"):
            check_number(getattr(self, name), name, 0.0)
        check_fraction(self.dropout, "dropout", below_one=True)
        check_fraction(self.min_lr_ratio, "min_lr_ratio")
        check_known(self.world_model, "world_model", WORLD_MODELS)
        check_fraction(self.counterfactual_share, "counterfactual_share")
        check_device(self.device)
        check_known(self.precision, "precision", PRECISIONS)

    def _resolve_method_defaults(self) -> None:
        defaults = METHOD_DEFAULTS[self.method]
        if self.batch_size is None:
            self.batch_size = defaults["batch_size"]
        check_positive_int(self.batch_size, "batch_size")
        for name in ("lr", "epochs", "minibatch_size", "dropout", "group_size", "temperature"):
            if getattr(self, name) is None:
                value = defaults[name]
                if name == "minibatch_size":  # the method's minibatch, at most the rollout
                    value = min(value or self.batch_size, self.batch_size)
                setattr(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def preset(
        cls,
        size: str,
        task: str = "ngood4",
        method: str = "positive",
        seed: int = 0,
        budget: str = "full",
        **overrides: Any,
    ) -> FinetuneConfig:
        """The recommended config for a model of ``size`` (see README "Training agents"), with ``overrides``;
        it checkpoints every tenth of its steps.

        :param budget: ``"full"`` (the sweep's budget) or ``"quick"`` (the quick preset).
        """
        check_known(method, "method", FINETUNE_METHODS)
        check_known(size, "size", FINETUNE_BUDGETS["full"][method])
        check_known(budget, "budget", BUDGETS)
        check_known(task, "task", sorted(TASKS))
        steps = overrides.pop("steps", FINETUNE_BUDGETS[budget][method][size][task])
        # a resumable checkpoint every tenth of the run: an interrupted run loses at most 10% of its work
        base = {"steps": steps, "checkpoint_every": max(1, steps // 10)}
        return cls(task=task, method=method, seed=seed, **{**base, **overrides})
