"""A sweep states its finetuning budgets (``finetune_steps`` in sweep.json): a sweep keeps the budgets it
started with, an older sweep.json reads with the budgets it ran, and a sweep at other budgets is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.finetune_config import FINETUNE_BUDGETS
from agents.pipeline import SweepConfig, finetune_config
from agents.pipeline.config import POSITIVE_FULL_STEPS_BEFORE_LEVELLING
from agents.pipeline.sweep import check_sweep_file
from seqenv.tasks import TASKS

FULL_SEED0 = Path(__file__).resolve().parents[2] / "docs" / "results" / "full-seed0"


def test_a_new_sweep_states_todays_budgets():
    cfg = SweepConfig.from_preset("full")
    for size in cfg.sizes:
        for task in cfg.tasks:
            assert cfg.finetune_steps[size][task] == FINETUNE_BUDGETS["full"]["positive"][size][task]
            assert finetune_config(cfg, size, 0, task).steps == cfg.finetune_steps[size][task]
    # REINFORCE halves ngood6, and the sweep's table says so per task
    rf = SweepConfig.from_preset("full", method="reinforce")
    assert rf.finetune_steps["tiny"]["ngood6"] * 2 == rf.finetune_steps["tiny"]["ngood4"]
    assert SweepConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_an_older_sweep_json_reads_with_the_budgets_it_ran():
    """The committed seed-0 run predates the setting: it ran 3,200 / 4,000 / 5,000 / 6,000 steps, as its
    trainers' histories show."""
    old = json.loads((FULL_SEED0 / "sweep.json").read_text())
    assert "finetune_steps" not in old
    cfg = SweepConfig.from_dict(old)
    for size, steps in POSITIVE_FULL_STEPS_BEFORE_LEVELLING.items():
        for task in cfg.tasks:
            assert cfg.finetune_steps[size][task] == steps
            history = (FULL_SEED0 / "models" / f"{size}-s0" / f"{task}.pt.history.csv").read_text()
            assert int(history.strip().splitlines()[-1].split(",")[0]) == steps
            assert finetune_config(cfg, size, 0, task).steps == steps


def test_a_sweep_at_other_budgets_is_refused_on_resume(tmp_path):
    started = SweepConfig.from_preset("quick", n_histories=512)
    check_sweep_file(tmp_path, started)
    other = SweepConfig.from_preset("quick", n_histories=512, finetune_steps={"tiny": {t: 7 for t in TASKS}})
    with pytest.raises(
        ValueError, match=r"other settings \(finetune_steps: .*'ngood2': 3200.* -> .*'ngood2': 7"
    ):
        check_sweep_file(tmp_path, other)
    check_sweep_file(tmp_path, SweepConfig.from_preset("quick", n_histories=512))  # the same: resumes


def test_custom_budgets_reach_the_trainer_with_their_evaluations_and_checkpoints():
    cfg = SweepConfig.from_preset(
        "quick", finetune_steps={"tiny": {"ngood2": 50, "ngood4": 70, "ngood6": 90}}
    )
    run = finetune_config(cfg, "tiny", 0, "ngood4")
    assert (run.steps, run.eval_every, run.checkpoint_every) == (70, 7, 7)


@pytest.mark.parametrize(
    "table, expected",
    [
        ({"small": {t: 10 for t in TASKS}}, r"must map each size \['tiny'\]"),
        ({"tiny": {"ngood2": 10}}, r"finetune_steps\['tiny'\] must map each task"),
        ({"tiny": {"ngood2": 10, "ngood4": 0, "ngood6": 10}}, r"finetune_steps\['tiny'\]\['ngood4'\]"),
        ({"tiny": {"ngood2": 10, "ngood4": 2.5, "ngood6": 10}}, r"finetune_steps\['tiny'\]\['ngood4'\]"),
    ],
)
def test_bad_budgets_are_named(table, expected):
    with pytest.raises((ValueError, TypeError), match=expected):  # a float is a TypeError, as elsewhere
        SweepConfig.from_preset("quick", finetune_steps=table)
