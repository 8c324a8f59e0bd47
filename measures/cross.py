"""Cross-objective evaluation and objective identification (the post's "Cross-Objective Evaluation").

Op and Imp do not depend on the task; the success rate, ``Op_theory`` and ``Imp_min`` do. A policy
trained on task k pursues it faithfully and sits near ``Op = Op_theory_k(s_k)``; measured on another
task its Op is the same but the implied Op is smaller, so it sits above the line (``excess_op > 0``).

**Decision rule** of :func:`identify_objective`: the predicted task is the one whose implied Op is closest
to the measured Op, ``argmin_k |Op - Op_theory_k(s_k)|`` (ties: the first task in ``tasks``). Its
confidence is the fraction of bootstrap resamples of the histories (exact method) or repeats (Monte
Carlo) that pick the same task. The rule assumes the policy optimizes one of the candidate tasks; a policy
that is at chance on every task (``success <= p``) has no objective to find, and ``optimizer`` says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from measures.api import measure_tasks
from measures.policies import Policy
from seqenv.tasks import TASKS, GoodSpec

COLUMNS = ("success", "op", "op_theory", "excess_op", "imp", "imp_min", "excess_imp", "baseline_success")


def cross_objective(
    policy: Policy,
    tasks: tuple[GoodSpec, ...] = tuple(TASKS),
    *,
    ci: bool = False,
    **kwargs: Any,
) -> pd.DataFrame:
    """Measure ``policy`` on every task at once: one row per task.

    :param policy: any policy :func:`measures.measure` accepts.
    :param tasks: task ids or custom good sets (default the post's three).
    :param ci: add ``<column>_lo`` / ``<column>_hi`` columns with the intervals of :func:`measures.measure`.
    :param kwargs: ``histories``, ``n_histories``, ``seed``, ``method``, ``baseline``, ``temperature``,
        ``token``, ``n_bootstrap``, ... as for :func:`measures.measure` (the same histories serve all tasks).
    :return: DataFrame indexed by task with columns ``success, op, op_theory, excess_op, imp, imp_min,
        excess_imp, baseline_success, p`` (and the CI columns).
    """
    if not ci:
        kwargs.setdefault("n_bootstrap", 0)
    ev = measure_tasks(policy, tuple(tasks), **kwargs)
    rows = []
    for k in range(len(ev.tasks)):
        r = ev.result(k)
        row = {c: getattr(r, c) for c in COLUMNS} | {"p": r.p}
        if ci:
            for c in COLUMNS:
                row[f"{c}_lo"], row[f"{c}_hi"] = r.ci.get(c, (np.nan, np.nan))
        rows.append(row)
    return pd.DataFrame(rows, index=pd.Index(ev.tasks, name="task"))


@dataclass(frozen=True)
class ObjectiveIdentification:
    """The task a policy most likely optimizes, with the evidence.

    :param task: the predicted task (``argmin_k |Op - Op_theory_k(s_k)|``).
    :param confidence: fraction of resamples (bootstrap or repeats) that pick ``task`` (NaN without resamples).
    :param margin: gap of the runner-up minus gap of the winner (nats); larger is clearer.
    :param optimizer: whether the policy beats chance (``success > p``) on the predicted task.
    :param evidence: per task: ``success, p, op, op_theory, excess_op, gap = |excess_op|,
        implied_ratio = op_theory / op`` (the share of the measured Op the task explains) and ``pick_rate``.
    :param rule: the decision rule in words.
    """

    task: str
    confidence: float
    margin: float
    optimizer: bool
    evidence: pd.DataFrame
    rule: str = "argmin over tasks of |Op - Op_theory_k(s_k)| (ties: first task)"


def identify_objective(
    policy: Policy,
    tasks: tuple[GoodSpec, ...] = tuple(TASKS),
    **kwargs: Any,
) -> ObjectiveIdentification:
    """Which task was ``policy`` trained on? The post's cross-objective argument as a classifier.

    :param policy: any policy :func:`measures.measure` accepts.
    :param tasks: the candidate tasks (at least 2).
    :param kwargs: as for :func:`measures.measure` (``n_bootstrap`` sets the resamples behind ``confidence``).
    """
    tasks = tuple(tasks)
    if len(tasks) < 2:
        raise ValueError(f"identify_objective needs at least 2 candidate tasks, got {len(tasks)}")
    ev = measure_tasks(policy, tasks, **kwargs)
    gaps = np.abs(ev.figures["excess_op"])  # (B, K)
    point = np.abs(ev.point("excess_op"))
    best = int(np.argmin(point))
    order = np.sort(point)
    resampled = gaps[1:] if ev.method == "exact" else gaps
    if len(resampled):
        pick_rate = np.bincount(np.argmin(resampled, axis=1), minlength=len(tasks)) / len(resampled)
    else:  # n_bootstrap=0: no resamples, no confidence
        pick_rate = np.full(len(tasks), np.nan)
    op = float(ev.point("op"))
    theory = ev.point("op_theory")
    success = ev.point("success")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = theory / op
    evidence = pd.DataFrame(
        {
            "success": success,
            "p": ev.p,
            "op": op,
            "op_theory": theory,
            "excess_op": ev.point("excess_op"),
            "gap": point,
            "implied_ratio": ratio,
            "pick_rate": pick_rate,
        },
        index=pd.Index(ev.tasks, name="task"),
    )
    return ObjectiveIdentification(
        task=ev.tasks[best],
        confidence=float(pick_rate[best]),
        margin=float(order[1] - order[0]),
        optimizer=bool(success[best] > ev.p[best]),
        evidence=evidence,
    )
