"""The rule that sets the full preset's finetuning budgets (``scripts/budget_curves.py``): a budget is where the
held-out success curve has levelled off, and the committed budgets follow from the committed curves."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
BUDGETS = ROOT / "docs" / "results" / "budgets"


def _script():
    spec = importlib.util.spec_from_file_location("budget_curves", ROOT / "scripts" / "budget_curves.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bc = _script()
STEPS = np.arange(1, 11) * 1000


def test_a_plateau_before_a_jump_is_not_where_the_curve_levels():
    frac = np.array([0.3, 0.3, 0.3, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9])
    # centred 3-point means: 0.3 0.3 0.5 0.7 0.9 ...: the first step that stays within 0.02 of 0.9 is 5,000
    assert bc.levelled_step(STEPS, frac) == (5000, 5000, pytest.approx(0.9))


def test_the_old_budget_is_a_floor_and_the_run_must_be_factor_times_longer():
    frac = np.array([0.3, 0.3, 0.3, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9])
    assert bc.levelled_step(STEPS, frac, floor=6000)[0] == 6000  # 10,000 >= 1.5 x 6,000
    assert bc.levelled_step(STEPS, frac, floor=7000)[0] is None  # 10,000 < 1.5 x 7,000: not shown
    assert bc.levelled_step(STEPS, frac, factor=2.5)[0] is None  # 10,000 < 2.5 x 5,000


def test_a_curve_still_creeping_up_has_not_levelled():
    frac = np.linspace(0.5, 0.8, STEPS.size)
    level, near_best_from, best = bc.levelled_step(STEPS, frac)
    assert level is None and near_best_from >= 9000 and best == pytest.approx(0.8 - 0.0333 / 2, abs=1e-3)


def test_noise_within_the_tolerance_does_not_move_the_level_but_a_dip_below_it_does():
    frac = np.array([0.3, 0.3, 0.3, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9])
    noisy = frac.copy()
    noisy[4:] += [0.0, 0.015, -0.015, 0.015, -0.015, 0.0]
    assert bc.levelled_step(STEPS, noisy)[0] == 5000
    dipped = frac.copy()
    dipped[5] = 0.7  # smoothed 0.833 at 5,000-7,000: below 0.9 - 0.02
    assert bc.levelled_step(STEPS, dipped)[1] == 8000


def test_the_committed_budgets_follow_from_the_committed_curves(tmp_path):
    """Re-analysing the committed histories alone gives the committed levelling table."""
    table = bc.analyse([BUDGETS / "histories"], tmp_path)
    committed = pd.read_csv(BUDGETS / "levelling.csv")
    cols = [
        "size",
        "seed",
        "task",
        "steps_run",
        "finished",
        "old_budget",
        "near_best_from",
        "levelled_at",
        "budget",
    ]
    key = ["size", "task"]
    again = table.sort_values(key).reset_index(drop=True)
    committed = committed.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(again[cols], committed[cols], check_dtype=False)
    np.testing.assert_allclose(again["best_frac"], committed["best_frac"], rtol=1e-12)
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_an_extended_run_is_the_run_of_that_length(tmp_path):
    """With a constant learning rate, an unfinished run extended to more steps repeats, bit for bit, the run
    started at that length (what lets one long run per size and task stand for every shorter budget)."""
    from agents.checkpoint import CheckpointError, load_checkpoint
    from agents.finetune import FinetuneConfig, finetune
    from agents.pretrain import PretrainConfig, pretrain

    pre = tmp_path / "pre.pt"
    pretrain(
        PretrainConfig(size="tiny", steps=60, batch_size=64, eval_every=60, eval_samples=256),
        pre,
        progress=False,
    )
    base = {"steps": 24, "batch_size": 64, "eval_every": 4, "eval_samples": 512, "warmup_steps": 2}
    finetune(pre, FinetuneConfig(**base), tmp_path / "straight.pt", progress=False)
    short = FinetuneConfig(**{**base, "steps": 12})
    finetune(pre, short, tmp_path / "extended.pt", progress=False, stop_after=8)
    # a plain resume at another length is refused
    with pytest.raises(CheckpointError, match="other settings"):
        finetune(pre, FinetuneConfig(**base), tmp_path / "extended.pt", progress=False)
    bc.extend_run(tmp_path / "extended.pt", 24)
    finetune(pre, FinetuneConfig(**base), tmp_path / "extended.pt", progress=False)
    straight, extended = (pd.read_csv(tmp_path / f"{n}.pt.history.csv") for n in ("straight", "extended"))
    pd.testing.assert_frame_equal(straight.drop(columns="elapsed"), extended.drop(columns="elapsed"))
    a, b = (load_checkpoint(tmp_path / f"{n}.pt")["model"] for n in ("straight", "extended"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_finished_run_cannot_be_extended(tmp_path):
    from agents.finetune import FinetuneConfig, finetune
    from agents.pretrain import PretrainConfig, pretrain

    pre = tmp_path / "pre.pt"
    pretrain(
        PretrainConfig(size="tiny", steps=20, batch_size=32, eval_every=20, eval_samples=128),
        pre,
        progress=False,
    )
    finetune(
        pre,
        FinetuneConfig(steps=4, batch_size=32, eval_every=4, eval_samples=128),
        tmp_path / "f.pt",
        progress=False,
    )
    with pytest.raises(SystemExit, match="finished at 4 steps and dropped its optimizer state"):
        bc.extend_run(tmp_path / "f.pt", 8)


def test_the_full_budgets_are_the_committed_levelling_of_every_size_whose_curves_have_levelled():
    """A size takes the budgets ``levelling.csv`` gives once all three of its curves have levelled; until then
    every task keeps the size's budget of before (so no size runs half-new budgets)."""
    from agents.finetune_config import FINETUNE_BUDGETS
    from agents.pipeline.config import POSITIVE_FULL_STEPS_BEFORE_LEVELLING

    table = FINETUNE_BUDGETS["full"]["positive"]
    levelling = pd.read_csv(BUDGETS / "levelling.csv")
    assert sorted(levelling["size"].unique()) == sorted(table)
    for size, rows in levelling.groupby("size"):
        assert sorted(rows["task"]) == sorted(table[size])
        if rows["budget"].notna().all():
            assert table[size] == {t: int(b) for t, b in zip(rows["task"], rows["budget"])}, size
        else:
            assert set(table[size].values()) == {POSITIVE_FULL_STEPS_BEFORE_LEVELLING[size]}, size
