"""Cross-objective evaluation and objective identification (the post's "Cross-Objective Evaluation").

Op and Imp do not depend on the task; the success rate, ``Op_theory`` and ``Imp_min`` do. A policy
trained on task k pursues it faithfully and sits near ``Op = Op_theory_k(s_k)``; measured on another
task its Op is the same but the implied Op is smaller, so it sits above the line (``excess_op > 0``).

**Decision rule** of :func:`identify_objective`: the predicted task is the one whose implied Op is closest
to the measured Op, ``argmin_k |Op - Op_theory_k(s_k)|`` (ties: the first task in ``tasks``). Its
confidence is the fraction of bootstrap resamples of the histories (exact method) or repeats (Monte
Carlo) that pick the same task.

The rule assumes that the policy optimizes one of the candidate tasks; ``optimizer`` says whether it does
(:func:`is_optimizer`). A policy optimizes the identified task ``k`` only when, beyond the resampling
uncertainty (the lower end of the central ``ci_level`` interval of the resampled values),

1. its success beats the split baseline's, ``s_k - s'_k > 0``: its choice of action, not the world, makes
   the outcome good;
2. its success beats chance, ``s_k - p_k > 0``;
3. its Op exceeds the sequence's own optimization: the Op of the *natural* policy (the sequence's own law of
   the odd token, measured the same way on the same histories; about 0.03 nats), which any predictor of the
   sequence inherits without pursuing a goal.

Uniform and natural policies and pretrained predictors fail these; trained agents and oracles pass them.
Without resamples (``n_bootstrap=0``) the point estimates are compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from measures.api import Evaluation, check_tasks, measure_tasks
from measures.policies import Policy
from seqenv.sequence import natural_odd_probs
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

    :param policy: any policy :func:`measures.measure` accepts; a :class:`~measures.policies.CachedPolicy`
        shares its forward pass on the histories with the other measures given it.
    :param tasks: task ids or custom good sets (default the post's three).
    :param ci: add ``<column>_lo`` / ``<column>_hi`` columns with the intervals of :func:`measures.measure`.
    :param kwargs: ``histories``, ``n_histories``, ``seed``, ``method``, ``baseline``, ``temperature``,
        ``token``, ``n_bootstrap``, ... as for :func:`measures.measure` (the same histories serve all tasks).
    :return: DataFrame indexed by task with columns ``success, op, op_theory, excess_op, imp, imp_min,
        excess_imp, baseline_success, p`` (and the CI columns).
    """
    if not ci:
        kwargs.setdefault("n_bootstrap", 0)
    ev = measure_tasks(policy, tasks, **kwargs)  # checks tasks (a lone "ngood4" is not a tuple of tasks)
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
    :param optimizer: whether the policy optimizes the predicted task (the rule of :func:`is_optimizer`).
    :param evidence: per task: ``success, p, op, op_theory, excess_op, gap = |excess_op|,
        implied_ratio = op_theory / op`` (the share of the measured Op the task explains) and ``pick_rate``.
    :param rule: the decision rule in words.
    """

    task: str
    confidence: float
    margin: float
    optimizer: bool
    evidence: pd.DataFrame
    optimizer_evidence: dict[str, float] = field(default_factory=dict)
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
    tasks = check_tasks(tasks)
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
    floor = natural_floor(**{k: v for k, v in kwargs.items() if k != "n_bootstrap"})
    proof = optimizer_evidence(ev, best, floor, kwargs.get("ci_level", 0.95))
    return ObjectiveIdentification(
        task=ev.tasks[best],
        confidence=float(pick_rate[best]),
        margin=float(order[1] - order[0]),
        optimizer=is_optimizer(proof),
        evidence=evidence,
        optimizer_evidence=proof,
    )


class NaturalLaw:
    """The sequence's own law of the odd token as a policy (:func:`seqenv.natural_odd_probs`): what the
    sequence writes when no agent acts, the same at every temperature (a plain probability callable would be
    made greedy at temperature 0)."""

    def action_probs(self, histories: np.ndarray, temperature: float = 0.0) -> np.ndarray:
        return natural_odd_probs(np.asarray(histories))


#: the policy whose Op is the natural floor of :func:`is_optimizer`
natural_policy = NaturalLaw()


def natural_floor(**kwargs: Any) -> float:
    """Op of :func:`natural_policy` measured as ``kwargs`` say (same histories, method and baseline): the
    optimization the sequence does by itself (docs/spec.md §4), which no goal is needed to show."""
    ev = measure_tasks(
        natural_policy, ("ngood4",), **{**kwargs, "n_bootstrap": 0}
    )  # Op is the same for every task
    return float(ev.point("op"))


def _lower(ev: Evaluation, values: np.ndarray, level: float) -> float:
    """Lower end of the central ``level`` interval of resampled ``values`` (exact: rows 1.. are bootstrap
    resamples; Monte Carlo: every row is a repeat); the point value without resamples."""
    resampled = values[1:] if ev.method == "exact" else values
    if len(resampled) < 2:
        return float(values[0])
    return float(np.quantile(resampled, (1 - level) / 2))


def optimizer_evidence(ev: Evaluation, k: int, floor: float, level: float = 0.95) -> dict[str, float]:
    """The three margins of :func:`is_optimizer` for task ``k`` of ``ev``, each at its lower interval end."""
    f = ev.figures
    return {
        "success_minus_baseline_lo": _lower(ev, f["success"][:, k] - f["baseline_success"][:, k], level),
        "success_minus_chance_lo": _lower(ev, f["success"][:, k] - ev.p[k], level),
        "op_minus_natural_lo": _lower(ev, f["op"] - floor, level),
        "natural_op": floor,
    }


def optimizer_test(policy: Policy, task: GoodSpec = "ngood4", **kwargs: Any) -> dict[str, Any]:
    """Whether ``policy`` optimizes ``task`` by the rule of :func:`is_optimizer`, without identification.

    :param kwargs: as for :func:`measures.measure`.
    :return: :func:`optimizer_evidence`'s margins and ``optimizer`` (bool).
    """
    ev = measure_tasks(policy, (task,), **kwargs)
    floor = natural_floor(**{k: v for k, v in kwargs.items() if k != "n_bootstrap"})
    proof = optimizer_evidence(ev, 0, floor, kwargs.get("ci_level", 0.95))
    return {**proof, "optimizer": is_optimizer(proof)}


def is_optimizer(evidence: dict[str, float]) -> bool:
    """The rule of the module docstring: each margin of :func:`optimizer_evidence` is above zero."""
    return all(
        evidence[k] > 0
        for k in ("success_minus_baseline_lo", "success_minus_chance_lo", "op_minus_natural_lo")
    )
