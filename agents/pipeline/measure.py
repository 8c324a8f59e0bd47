"""One measurement batch of the sweep: a model (or the reference policies) on every task, as result rows.

Every number comes from :mod:`measures` on the sweep's fixed histories (``DIR/histories.npy``): the
cross-objective table (success, Op, Op_theory, Imp, Imp_min on every task, with bootstrap intervals seeded
by ``eval_seed``), objective identification, self-evaluation, and the held-out next-token loss and accuracy
(:func:`agents.data.heldout_metrics`).

The model runs once per input set: its policy pass on the ``N`` histories and its next-token pass on
self-evaluation's ``8 N`` contexts are shared by every measure (:class:`measures.policies.CachedPolicy`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import agents
import measures
from agents.data import eval_set, heldout_metrics
from agents.pipeline.config import SweepConfig
from agents.pipeline.layout import load_histories, model_name
from agents.reference import NaturalPolicy, OraclePolicy, UniformPolicy
from measures.cross import optimizer_test
from measures.policies import cached

#: bootstrap resamples behind the intervals and the identification confidence
N_BOOTSTRAP = 1000
#: held-out next-token examples (half even targets, half odd)
N_NEXT_TOKEN = 8192
#: rows per forward pass in a measure unit: 1.4-2.5x faster than one 8,192-row pass on a 2-core CPU, with
#: every number identical (each row is computed on its own; checked from 128 to 8,192 rows)
MEASURE_BATCH = 1024


def policy_rows(
    policy: Any, histories: np.ndarray, sweep: SweepConfig, *, share: bool = True
) -> pd.DataFrame:
    """Cross-objective rows of ``policy`` (one per task of the sweep) with objective identification.

    :param share: run the policy's forward pass on ``histories`` once for all the measures (a
        :class:`measures.policies.CachedPolicy`; the same numbers), not once per measure as before.

    :return: DataFrame with columns ``eval_task, p, success, success_lo, success_hi, baseline_success, op,
        op_lo, op_hi, op_theory, excess_op, imp, imp_lo, imp_hi, imp_min, excess_imp, identified_task,
        id_confidence, is_optimizer, natural_op, n_histories`` (``is_optimizer``: the policy optimizes the
        identified task by :func:`measures.cross.is_optimizer`'s rule; ``natural_op``: the floor it uses).
    """
    if share:
        policy = cached(policy)  # one forward pass on the histories, shared by every measure below
    kw = {"histories": histories, "seed": sweep.eval_seed, "n_bootstrap": N_BOOTSTRAP}
    cross = measures.cross_objective(policy, tuple(sweep.tasks), ci=True, **kw)
    df = pd.DataFrame(
        {
            "eval_task": list(cross.index),
            "p": cross["p"],
            "success": cross["success"],
            "success_lo": cross["success_lo"],
            "success_hi": cross["success_hi"],
            "baseline_success": cross["baseline_success"],
            "op": cross["op"],
            "op_lo": cross["op_lo"],
            "op_hi": cross["op_hi"],
            "op_theory": cross["op_theory"],
            "excess_op": cross["excess_op"],
            "imp": cross["imp"],
            "imp_lo": cross["imp_lo"],
            "imp_hi": cross["imp_hi"],
            "imp_min": cross["imp_min"],
            "excess_imp": cross["excess_imp"],
        }
    ).reset_index(drop=True)
    if len(sweep.tasks) >= 2:
        ident = measures.identify_objective(policy, tuple(sweep.tasks), **kw)
        df["identified_task"], df["id_confidence"] = ident.task, ident.confidence
        evidence = {**ident.optimizer_evidence, "optimizer": ident.optimizer}
    else:
        df["identified_task"], df["id_confidence"] = "", float("nan")
        evidence = optimizer_test(policy, sweep.tasks[0], **kw)
    df["is_optimizer"] = bool(evidence["optimizer"])
    df["natural_op"] = evidence["natural_op"]
    df["n_histories"] = len(histories)
    return df


def self_evaluation(policy: Any, histories: np.ndarray, sweep: SweepConfig) -> dict[str, float]:
    """Self-estimated Op and Imp (docs/spec.md §4: the model's own next-token prediction as the world model), how
    wrong that world is on the model's own actions (``self_world_kl``, nats), and on natural and
    counterfactual contexts (:class:`measures.SelfEvaluation`)."""
    # Op and Imp do not depend on the task, so one task serves; no bootstrap (the model's world does not
    # collapse into a few groups, and the intervals are not reported)
    r = measures.self_evaluate(
        policy, sweep.tasks[0], histories=histories, seed=sweep.eval_seed, n_bootstrap=0
    )
    return {
        "self_op": r.op_self,
        "self_imp": r.imp_self,
        "self_world_kl": r.world_kl,
        # where the model's world is wrong: after the sequence's own odd token, or after any other
        "self_kl_natural": r.world_kl_natural,
        "self_kl_counterfactual": r.world_kl_counterfactual,
        "self_acc_natural": r.world_acc_natural,
        "self_acc_counterfactual": r.world_acc_counterfactual,
        "natural_share": r.natural_share,
        "split_natural_share": r.split_natural_share,
        "self_op_cf_true": r.op_self_cf_true,
        "self_imp_cf_true": r.imp_self_cf_true,
    }


def next_token_quality(model: Any, sweep: SweepConfig) -> dict[str, float]:
    """Held-out next-token loss (nats) and accuracy on even and odd targets (limit 0.9825)."""
    x, y = eval_set(N_NEXT_TOKEN, sweep.eval_seed)
    ev = heldout_metrics(model, x, y)
    return {"nt_loss": ev["eval_loss"], "acc_even": ev["acc_even"], "acc_odd": ev["acc_odd"]}


def measure_model(root: str | os.PathLike, checkpoint: str, sweep: SweepConfig) -> pd.DataFrame:
    """All result rows of the model at ``root/checkpoint`` (a path relative to the sweep directory)."""
    root = Path(root)
    policy = agents.load(root / checkpoint, device=sweep.device)  # in a unit: the device it runs on
    policy.batch_size = MEASURE_BATCH
    meta = policy.meta
    h = load_histories(root)
    view = cached(policy)  # the policy's pass on h and the world's on the 8N contexts, run once for all
    df = policy_rows(view, h, sweep)
    kind = "finetuned" if meta["kind"] == "finetuned" else "pretrained"
    task = meta.get("task", "") if kind == "finetuned" else ""
    head = {
        "model": model_name(meta["size"], meta["seed"], task),
        "kind": kind,
        "size": meta["size"],
        "params": int(agents.count_parameters(policy.model)),
        "seed": int(meta["seed"]),
        "train_task": task,
    }
    tail = {
        **self_evaluation(view, h, sweep),
        **next_token_quality(policy.model, sweep),
        "checkpoint": checkpoint,
    }
    return df.assign(**head, **tail)


def reference_policies(sweep: SweepConfig) -> dict[str, Any]:
    """The reference policies, by the name their rows carry: uniform, natural and one oracle per task."""
    refs: dict[str, Any] = {"uniform": UniformPolicy(), "natural": NaturalPolicy()}
    for task in sweep.tasks:
        refs[f"oracle-{task}"] = OraclePolicy(task)
    return refs


def measure_references(root: str | os.PathLike, sweep: SweepConfig) -> pd.DataFrame:
    """Result rows of every reference policy (no checkpoint, no self-evaluation)."""
    h = load_histories(root)
    frames = []
    for name, policy in reference_policies(sweep).items():
        df = policy_rows(policy, h, sweep)
        frames.append(
            df.assign(
                model=name,
                kind="reference",
                size="",
                params=0,
                seed=-1,
                train_task="",
                self_op=np.nan,
                self_imp=np.nan,
                self_world_kl=np.nan,
                nt_loss=np.nan,
                acc_even=np.nan,
                acc_odd=np.nan,
                checkpoint="",
            )
        )
    return pd.concat(frames, ignore_index=True)
