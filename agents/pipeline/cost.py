"""What a sweep costs: total work, critical path and wall time on any number of workers, from its unit graph
(:func:`~agents.pipeline.plan.plan`) and measured unit times (``timings.csv``).

Every unit runs on one worker with a fixed number of threads (``SweepConfig.threads``), so a worker is a
core. The wall time on ``w`` workers is simulated with the sweep's own dispatch rule
(:func:`agents.pipeline.sweep.run_sweep`): whenever a worker is free it takes the first unit, in plan order,
whose inputs are finished. Two bounds frame it: the total work divided by ``w`` and the critical path (the
longest chain of dependent units), which no number of workers can beat.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping

import pandas as pd

from agents.pipeline.plan import Unit


def unit_seconds(timings: pd.DataFrame) -> dict[str, float]:
    """Measured wall seconds per unit name, from a ``timings.csv`` table (columns ``unit``, ``wall_s``)."""
    missing = {"unit", "wall_s"} - set(timings.columns)
    if missing:
        raise ValueError(f"timings table lacks columns {sorted(missing)}; expected a sweep's timings.csv")
    return {str(u): float(s) for u, s in zip(timings["unit"], timings["wall_s"], strict=True)}


def _check(units: list[Unit], seconds: Mapping[str, float]) -> None:
    missing = [u.name for u in units if u.name not in seconds]
    if missing:
        raise ValueError(
            f"no time for {len(missing)} unit(s), e.g. {missing[:3]}; every planned unit needs one"
        )
    negative = {n: s for n, s in seconds.items() if not s >= 0}
    if negative:
        raise ValueError(f"unit times must be >= 0 seconds, got {negative}")


def critical_path(units: list[Unit], seconds: Mapping[str, float]) -> tuple[float, list[str]]:
    """Length (s) of the longest chain of dependent units, and the chain; ``units`` in plan order."""
    _check(units, seconds)
    finish: dict[str, float] = {}
    before: dict[str, str | None] = {}
    for u in units:
        prev = max(u.deps, key=lambda d: finish[d], default=None)
        finish[u.name] = (finish[prev] if prev else 0.0) + seconds[u.name]
        before[u.name] = prev
    last: str | None = max(finish, key=finish.__getitem__)
    length = finish[last]
    chain = []
    while last is not None:
        chain.append(last)
        last = before[last]
    return length, chain[::-1]


def simulate(units: list[Unit], seconds: Mapping[str, float], workers: int) -> float:
    """Wall seconds of the sweep on ``workers`` workers under the sweep's dispatch rule (first ready unit in
    plan order), with each unit taking ``seconds[unit]``."""
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    _check(units, seconds)
    done: set[str] = set()
    waiting = list(units)
    running: list[tuple[float, int, str]] = []  # (finish time, tie-break, name)
    now, k = 0.0, 0
    while waiting or running:
        for u in [u for u in waiting if all(d in done for d in u.deps)]:
            if len(running) >= workers:
                break
            waiting.remove(u)
            heapq.heappush(running, (now + seconds[u.name], k, u.name))
            k += 1
        if not running:
            raise ValueError("the unit graph has a dependency that is not a planned unit")
        now, _, name = heapq.heappop(running)
        done.add(name)
        while running and running[0][0] == now:
            done.add(heapq.heappop(running)[2])
    return now


def cost_table(
    units: list[Unit], seconds: Mapping[str, float], workers: Iterable[int] = (2, 16, 64)
) -> pd.DataFrame:
    """One row per worker count: simulated wall time, its two lower bounds and the parallel efficiency
    (total work / (workers × wall)); all times in minutes."""
    total = sum(seconds[u.name] for u in units)
    path, _ = critical_path(units, seconds)
    rows = []
    for w in workers:
        wall = simulate(units, seconds, w)
        rows.append(
            {
                "workers": w,
                "wall_min": wall / 60,
                "work_over_workers_min": total / w / 60,
                "critical_path_min": path / 60,
                "efficiency": total / (w * wall) if wall > 0 else 1.0,
            }
        )
    return pd.DataFrame(rows)


def seconds_by_kind(units: list[Unit], seconds: Mapping[str, float]) -> pd.DataFrame:
    """Total unit minutes per kind and size (``pretrain``/``finetune``/``measure`` ...): where the time goes."""
    rows = [{"kind": u.kind, "size": u.size or "-", "min": seconds[u.name] / 60} for u in units]
    return pd.DataFrame(rows).groupby(["kind", "size"], sort=False, as_index=False)["min"].sum()


def cost_section(timings: pd.DataFrame, units: list[Unit], workers: Iterable[int] = (2, 16, 64)) -> list[str]:
    """The report's cost paragraph (markdown lines): unit compute time per kind, the span of the units'
    clocks, and, when every training and measurement unit has a time, the wall time on ``workers`` workers
    from the unit graph (the report unit, still running when this is written, counts as 0 s)."""
    done = timings.dropna(subset=["wall_s"])
    if not len(done):
        return []
    per_kind = done.groupby("kind", sort=False)["wall_s"].agg(["count", "sum", "mean"])
    parts = ", ".join(f"{k}: {int(r['count'])} × {r['mean']:.0f} s" for k, r in per_kind.iterrows())
    span = (
        done["finished"].max() - done["started"].min()
        if {"started", "finished"} <= set(done)
        else float("nan")
    )
    cpu = done["cpu_s"].sum() / 60 if "cpu_s" in done and done["cpu_s"].notna().all() else None
    lines = [
        f"Unit compute time {done['wall_s'].sum() / 60:.1f} min ({parts}"
        + (f"; CPU time {cpu:.1f} min" if cpu is not None else "")
        + "); first unit start to last unit end "
        f"{span / 60:.1f} min (see `timings.csv`; `runs.csv` logs each invocation's wall time).",
        "",
    ]
    seconds = unit_seconds(done)
    seconds.update({u.name: seconds.get(u.name, 0.0) for u in units if u.kind == "report"})
    if any(u.name not in seconds for u in units):
        return lines
    table = cost_table(units, seconds, workers)
    _, chain = critical_path(units, seconds)
    walls = "; ".join(
        f"{int(r.workers)} workers {r.wall_min:.0f} min (efficiency {r.efficiency:.0%})"
        for r in table.itertuples()
    )
    lines += [
        f"From the unit graph and these unit times (one core per unit, the sweep's dispatch rule): {walls}. "
        f"Critical path {table['critical_path_min'].iloc[0]:.0f} min ({' → '.join(chain)}), the wall time "
        "no number of cores can beat.",
        "",
    ]
    return lines


def projected_seconds(
    units: list[Unit],
    measured: Mapping[str, float],
    by_name: Mapping[str, Unit],
    step_ratio: Mapping[tuple[str, str], float] | None = None,
) -> dict[str, float]:
    """Times for ``units`` (e.g. the plan of more seeds than were run) from ``measured`` ones: a unit's own time
    where it was measured, else the mean over the measured units of the same kind, size and task (other
    seeds); each training unit's time times ``step_ratio[(size, task)]`` (``task`` ``""`` for pretraining:
    steps now / steps as run, for budgets that changed), 1 by default. ``by_name`` maps measured unit names to their :class:`Unit`.

    :raises ValueError: naming the units no measured unit stands in for.
    """
    step_ratio = step_ratio or {}
    pools: dict[tuple[str, str, str], list[float]] = {}
    for name, s in measured.items():
        if name in by_name:
            u = by_name[name]
            pools.setdefault((u.kind, u.size, u.task), []).append(s)
    out, missing = {}, []
    for u in units:
        pool = pools.get((u.kind, u.size, u.task))
        if u.name in measured:
            s = measured[u.name]
        elif pool:
            s = sum(pool) / len(pool)
        else:
            missing.append(u.name)
            continue
        out[u.name] = s * step_ratio.get((u.size, u.task), 1.0) if u.kind in ("pretrain", "finetune") else s
    if missing:
        raise ValueError(
            f"no measured unit of the same kind, size and task for {missing[:3]} ({len(missing)} in all)"
        )
    return out
