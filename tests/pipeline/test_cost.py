"""agents.pipeline.cost: the sweep's wall time on any number of workers from its unit graph."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agents.pipeline import SweepConfig, plan
from agents.pipeline.cost import cost_section, cost_table, critical_path, simulate, unit_seconds
from agents.pipeline.plan import Unit

FULL_SEED0 = Path(__file__).resolve().parents[2] / "docs" / "results" / "full-seed0"


def diamond() -> tuple[list[Unit], dict[str, float]]:
    units = [
        Unit("a", "x", "a"),
        Unit("b", "x", "b", ("a",)),
        Unit("c", "x", "c", ("a",)),
        Unit("d", "x", "d", ("b", "c")),
    ]
    return units, {"a": 3.0, "b": 2.0, "c": 4.0, "d": 1.0}


def test_diamond_by_hand():
    units, sec = diamond()
    assert critical_path(units, sec) == (8.0, ["a", "c", "d"])
    assert simulate(units, sec, 1) == 10.0  # one worker: all the work
    assert simulate(units, sec, 2) == 8.0  # b and c side by side after a
    assert simulate(units, sec, 64) == 8.0  # never below the critical path


def test_dispatch_is_plan_order():
    # one long unit listed first keeps the only worker; the short one waits behind it
    units = [Unit("long", "x", "l"), Unit("short", "x", "s"), Unit("after", "x", "a", ("short",))]
    sec = {"long": 5.0, "short": 1.0, "after": 1.0}
    assert simulate(units, sec, 1) == 7.0
    assert simulate(units, sec, 2) == 5.0


def random_dag(rng: np.random.Generator, n: int) -> tuple[list[Unit], dict[str, float]]:
    units = []
    for i in range(n):
        deps = tuple(f"u{j}" for j in range(i) if rng.random() < 0.15)
        units.append(Unit(f"u{i}", "x", str(i), deps))
    return units, {u.name: float(rng.exponential(10.0)) for u in units}


@pytest.mark.parametrize("seed", range(20))
def test_list_schedule_between_its_bounds(seed):
    """Graham: max(work / w, path) <= list-schedule wall <= work / w + path (1 - 1/w)."""
    rng = np.random.default_rng(seed)
    units, sec = random_dag(rng, 30)
    work, (path, chain) = sum(sec.values()), critical_path(units, sec)
    assert path == pytest.approx(sum(sec[c] for c in chain))
    for w in (1, 2, 3, 8, 100):
        wall = simulate(units, sec, w)
        assert max(work / w, path) - 1e-9 <= wall <= work / w + path * (1 - 1 / w) + 1e-9
    assert simulate(units, sec, 1) == pytest.approx(work)
    assert simulate(units, sec, len(units)) == pytest.approx(path)


def test_reproduces_the_real_full_seed0_wall_time():
    """The committed full-budget seed-0 sweep ran its 35 units in 5,857 s on 2 workers (runs.csv); the
    simulation from its unit times and graph must give that wall time to within 1%."""
    sweep = SweepConfig.from_dict(json.loads((FULL_SEED0 / "sweep.json").read_text()))
    timings = pd.read_csv(FULL_SEED0 / "timings.csv")
    runs = pd.read_csv(FULL_SEED0 / "runs.csv")
    units = [u for u in plan(sweep) if u.kind in ("histories", "pretrain", "finetune")]
    real = float(runs["wall_s"].iloc[0])  # the invocation that trained every model
    assert simulate(units, unit_seconds(timings), 2) == pytest.approx(real, rel=0.01)


def test_cost_table_and_section():
    units, sec = diamond()
    table = cost_table(units, sec, (1, 2))
    assert list(table["wall_min"] * 60) == [10.0, 8.0]
    assert table["efficiency"].iloc[0] == pytest.approx(1.0)
    timings = pd.DataFrame(
        {"unit": list(sec), "kind": "x", "wall_s": list(sec.values()), "started": 0.0, "finished": 10.0}
    )
    text = "\n".join(cost_section(timings, units, (1, 2)))
    assert "2 workers 0 min" in text and "a → c → d" in text
    # a unit without a time: the compute-time paragraph only, no simulated wall
    text = "\n".join(cost_section(timings.iloc[:3], units, (2,)))
    assert "Unit compute time" in text and "workers" not in text


def test_bad_inputs_are_named():
    units, sec = diamond()
    with pytest.raises(ValueError, match="workers must be a positive integer, got 0"):
        simulate(units, sec, 0)
    with pytest.raises(ValueError, match=r"no time for 1 unit\(s\), e.g. \['d'\]"):
        simulate(units, {k: v for k, v in sec.items() if k != "d"}, 2)
    with pytest.raises(ValueError, match="must be >= 0"):
        critical_path(units, {**sec, "b": -1.0})
    with pytest.raises(ValueError, match="lacks columns"):
        unit_seconds(pd.DataFrame({"unit": ["a"]}))


def _cost_cli(*args: str, capsys) -> str:
    from agents.cli import main

    assert main(["cost", str(FULL_SEED0), *args]) == 0
    return capsys.readouterr().out


def test_cli_projects_seeds_and_budgets(capsys):
    timings = pd.read_csv(FULL_SEED0 / "timings.csv")
    per_seed = timings[timings["kind"].isin(["pretrain", "finetune", "measure"])]["wall_s"].sum()
    shared = timings[~timings["kind"].isin(["pretrain", "finetune", "measure"])]["wall_s"].sum()
    out = _cost_cli("--seeds", "0", "1", "2", "3", "4", capsys=capsys)
    # five seeds: each new seed's units timed as seed 0's, the shared units (histories, reference, report) once
    assert f"total work {(5 * per_seed + shared) / 60:.1f} unit-min" in out
    assert "128 projected" in out
    # at today's budgets: every training unit scaled by its steps now / steps as run (read here independently)
    from agents.pipeline.units import finetune_config, pretrain_config

    sweep = SweepConfig.from_preset("full", seeds=(0,))  # today's budgets
    expected = shared
    for row in timings.itertuples():
        if row.kind not in ("pretrain", "finetune", "measure"):
            continue
        ratio = 1.0
        if row.kind in ("pretrain", "finetune"):
            task = row.task if isinstance(row.task, str) else ""
            hist = pd.read_csv(
                FULL_SEED0 / "models" / f"{row.size}-s0" / f"{task or 'pretrained'}.pt.history.csv"
            )
            cfg = finetune_config(sweep, row.size, 0, task) if task else pretrain_config(sweep, row.size, 0)
            ratio = cfg.steps / hist["step"].iloc[-1]
        expected += row.wall_s * ratio
    out = _cost_cli("--budgets", "current", capsys=capsys)
    assert f"total work {expected / 60:.1f} unit-min" in out


def test_cli_refuses_a_directory_without_timings(tmp_path, capsys):
    from agents.cli import main

    assert main(["cost", str(tmp_path)]) == 2
    assert "has no sweep.json and timings.csv" in capsys.readouterr().err
