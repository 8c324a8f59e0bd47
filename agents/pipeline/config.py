"""What a sweep runs: the presets and :class:`SweepConfig`, saved as ``DIR/sweep.json`` and checked on resume."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from agents.finetune_config import FINETUNE_METHODS, WORLD_MODELS
from agents.runtime import PRECISIONS, check_device
from agents.training import BUDGETS
from agents.transformer import SIZES
from seqenv.tasks import TASKS
from seqenv.validation import check_choice, check_int, check_number, check_positive_int, check_seed

#: the model sizes in increasing order (the order of :data:`agents.SIZES`)
SIZE_ORDER: tuple[str, ...] = tuple(SIZES)


#: settings added after sweeps were first written, with the value those sweeps ran (sweeps before devices ran
#: on the CPU, which is what ``"auto"`` gives on a machine without a GPU)
SETTINGS_BEFORE_THEY_EXISTED: dict[str, str] = {
    "method": "positive",
    "world_model": "natural",
    "device": "auto",
    "precision": "fp32",
}


@dataclass(frozen=True)
class Preset:
    """What a preset sweeps.

    :param sizes: model sizes (names of :data:`agents.SIZES`).
    :param seeds: training seeds per size.
    :param tasks: RL tasks; every finetuned model is also measured on all of them.
    :param n_histories: evaluation histories (the same for every model).
    :param budget: the trainers' step budget, ``"quick"`` or ``"full"``.
    """

    sizes: tuple[str, ...]
    seeds: tuple[int, ...]
    tasks: tuple[str, ...] = tuple(TASKS)
    n_histories: int = 8192
    budget: str = "full"


#: the sweeps ``splitseq reproduce --preset`` knows: ``quick`` (minutes) and ``full`` (the post's design)
SWEEP_PRESETS: dict[str, Preset] = {
    "quick": Preset(sizes=("tiny",), seeds=(0,), budget="quick"),
    "full": Preset(sizes=SIZE_ORDER, seeds=(0, 1, 2, 3, 4), budget="full"),
}


@dataclass(frozen=True)
class SweepConfig:
    """Everything that decides a sweep's numbers; saved as ``DIR/sweep.json`` and checked on resume.

    :param preset: the preset's name (``quick`` or ``full``).
    :param sizes: model sizes.
    :param seeds: training seeds.
    :param tasks: RL tasks.
    :param n_histories: number of evaluation histories.
    :param eval_seed: seed of the evaluation histories (and of the bootstrap intervals).
    :param steps_scale: multiplies every trainer step budget (``< 1`` for smoke tests).
    :param threads: torch threads inside every unit (fixed, so results do not depend on ``--workers``).
    :param budget: the trainers' step budget, ``"quick"`` or ``"full"``.
    :param method: the finetuning method, ``"positive"`` (the post's) or ``"reinforce"`` (REINFORCE with a
        baseline; see the training docs).
    :param world_model: what finetuning's maintenance steps show the model: ``"natural"`` (the post's),
        ``"counterfactual"`` or ``"policy"`` (:class:`agents.finetune_config.FinetuneConfig`).
    :param device: where the units' models run: ``"auto"`` (every GPU there is, else MPS, else the CPU),
        ``"cpu"``, ``"cuda"`` (every GPU), ``"cuda:<i>"`` (that one) or ``"mps"``; the local pool spreads the
        units over the GPUs, Ray places them itself (:mod:`agents.pipeline.backends`). Within a unit it is
        the device that unit runs on.
    :param precision: ``"fp32"`` (bit-reproducible) or ``"bf16"`` (autocast; see the training docs).
    """

    preset: str = "quick"
    sizes: tuple[str, ...] = ("tiny",)
    seeds: tuple[int, ...] = (0,)
    tasks: tuple[str, ...] = tuple(TASKS)
    n_histories: int = 8192
    eval_seed: int = 20240401
    steps_scale: float = 1.0
    threads: int = 1
    budget: str = "quick"
    method: str = "positive"
    world_model: str = "natural"
    device: str = "auto"
    precision: str = "fp32"

    def __post_init__(self) -> None:
        for s in self.sizes:
            if s not in SIZES:
                raise ValueError(f"unknown size {s!r}; expected some of {list(SIZES)}")
        for t in self.tasks:
            if t not in TASKS:
                raise ValueError(f"unknown task {t!r}; expected some of {sorted(TASKS)}")
        if not self.sizes or not self.seeds or not self.tasks:
            raise ValueError(
                f"a sweep needs at least one size, seed and task, got {self.sizes}, {self.seeds}, {self.tasks}"
            )
        for name in ("sizes", "seeds", "tasks"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"{name} repeats a value: {values}")
        for seed in self.seeds:
            check_seed(seed, "seeds")
        check_int(self.n_histories, "n_histories", minimum=2)
        check_seed(self.eval_seed, "eval_seed")
        check_number(self.steps_scale, "steps_scale", 0.0, strict=True)
        check_positive_int(self.threads, "threads")
        check_choice(self.budget, "budget", BUDGETS)
        check_choice(self.method, "method", FINETUNE_METHODS)
        check_choice(self.world_model, "world_model", WORLD_MODELS)
        check_device(self.device)
        check_choice(self.precision, "precision", PRECISIONS)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> SweepConfig:
        """The config of preset ``name`` with some fields replaced (``None`` values are ignored)."""
        check_choice(name, "preset", SWEEP_PRESETS)
        base = dataclasses.asdict(SWEEP_PRESETS[name])
        base.update({k: v for k, v in overrides.items() if v is not None})
        for key in ("sizes", "seeds", "tasks"):
            base[key] = tuple(base[key])
        base["seeds"] = tuple(int(s) for s in base["seeds"])
        return cls(preset=name, **base)

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready data (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepConfig:
        """Read :meth:`to_dict`'s output (a setting added later takes :data:`SETTINGS_BEFORE_THEY_EXISTED`'s
        value: the one older sweeps ran)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"sweep config has unknown keys {sorted(unknown)}")
        d = {**SETTINGS_BEFORE_THEY_EXISTED, **d}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
