"""What a sweep runs: the presets and :class:`SweepConfig`, saved as ``DIR/sweep.json`` and checked on resume."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from agents.finetune_config import FINETUNE_METHODS, WORLD_MODELS, FinetuneConfig
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


#: the full budget's finetuning steps per size with the post's method before the budgets were set from
#: levelled held-out success curves: what a sweep whose ``sweep.json`` has no ``finetune_steps`` ran (every
#: other budget, REINFORCE's and the quick one, is unchanged since)
POSITIVE_FULL_STEPS_BEFORE_LEVELLING: dict[str, int] = {
    "tiny": 3200,
    "small": 4000,
    "medium": 5000,
    "large": 6000,
}


def finetune_steps_table(
    sizes: tuple[str, ...], tasks: tuple[str, ...], method: str, budget: str, levelled: bool = True
) -> dict[str, dict[str, int]]:
    """``{size: {task: steps}}`` of finetuning for a sweep (:meth:`FinetuneConfig.preset`'s budgets; with
    ``levelled=False``, the ones sweeps ran before :data:`POSITIVE_FULL_STEPS_BEFORE_LEVELLING` changed)."""
    table = {}
    for size in sizes:
        table[size] = {}
        for task in tasks:
            steps = FinetuneConfig.preset(size, task=task, method=method, budget=budget).steps
            if not levelled and method == "positive" and budget == "full":
                steps = POSITIVE_FULL_STEPS_BEFORE_LEVELLING[size]
            table[size][task] = steps
    return table


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
    :param finetune_steps: ``{size: {task: steps}}``, the finetunings' step budgets (before ``steps_scale``);
        default: the method's and budget's recommended steps today (:meth:`FinetuneConfig.preset`). Saved in
        ``sweep.json``, so a sweep keeps the budgets it started with and a sweep at other budgets is refused.
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
    finetune_steps: dict[str, dict[str, int]] | None = None

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
        if self.finetune_steps is None:
            table = finetune_steps_table(self.sizes, self.tasks, self.method, self.budget)
            object.__setattr__(self, "finetune_steps", table)  # resolved once: sweep.json states the budgets
        self._check_finetune_steps()

    def _check_finetune_steps(self) -> None:
        table = self.finetune_steps
        if not isinstance(table, dict) or sorted(table) != sorted(self.sizes):
            raise ValueError(
                f"finetune_steps must map each size {list(self.sizes)} to its tasks' steps, got {table!r}"
            )
        for size, by_task in table.items():
            if not isinstance(by_task, dict) or sorted(by_task) != sorted(self.tasks):
                raise ValueError(
                    f"finetune_steps[{size!r}] must map each task {list(self.tasks)} to steps, got {by_task!r}"
                )
            for task, steps in by_task.items():
                check_positive_int(steps, f"finetune_steps[{size!r}][{task!r}]")

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

    def __hash__(self) -> int:  # frozen, but finetune_steps is a dict
        return hash(repr(self.to_dict()))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepConfig:
        """Read :meth:`to_dict`'s output (a setting added later takes :data:`SETTINGS_BEFORE_THEY_EXISTED`'s
        value: the one older sweeps ran)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"sweep config has unknown keys {sorted(unknown)}")
        d = {**SETTINGS_BEFORE_THEY_EXISTED, **d}
        cfg = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
        if "finetune_steps" in d:
            return cfg
        # written before sweeps stated their budgets: the budgets of then
        then = finetune_steps_table(cfg.sizes, cfg.tasks, cfg.method, cfg.budget, levelled=False)
        return dataclasses.replace(cfg, finetune_steps=then)
