"""The sweep's results table, headline numbers and ``report.md``.

:func:`collect` joins the measurement files into ``results.csv``; the ``headline_*`` functions turn it into
the numbers the post argues from (each a small function returning numbers, usable on any results table);
:func:`build` writes ``results.csv``, the figures and ``report.md``.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from agents.checkpoint import atomic_write
from agents.pipeline.config import SweepConfig
from agents.pipeline.cost import cost_section
from agents.pipeline.figures import draw_all
from agents.pipeline.layout import FIGURES_DIR, REPORT_FILE, RESULTS_FILE
from agents.pipeline.plan import Unit, plan
from agents.pipeline.records import (
    RESULT_COLUMNS,
    code_version,
    finetune_rise,
    read_csv,
    training_columns,
    write_timings,
)

#: slack for Imp >= Imp_min in floating point (both are sums of ~N terms of size ~1)
IMP_TOL = 1e-9


#: result columns added after sweeps were first measured (rerun the measure units to fill them)
ADDED_COLUMNS: tuple[str, ...] = ("is_optimizer",)


def collect(root: str | os.PathLike, units: list[Unit]) -> pd.DataFrame:
    """Concatenate the measurement units' files (in plan order) into the results table."""
    root = Path(root)
    df = pd.concat([read_csv(root / u.output) for u in units], ignore_index=True)
    for col, values in training_columns(root, df["checkpoint"]).items():
        df[col] = values
    df["train_rise"] = finetune_rise(root, df["checkpoint"])
    for col in ADDED_COLUMNS:  # measured before the column existed: not recorded
        if col not in df:
            df[col] = pd.NA
    missing = [c for c in RESULT_COLUMNS if c not in df]
    if missing:
        raise ValueError(f"measurement files lack columns {missing}")
    for col in ("seed", "params", "train_steps"):  # integers, empty for the reference policies
        df[col] = pd.to_numeric(df[col]).where(df["kind"] != "reference").astype("Int64")
    return df[list(RESULT_COLUMNS) + [c for c in df.columns if c not in RESULT_COLUMNS]]


# -------------------------------------------------------------------------------------------- headlines
def _finetuned(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["kind"] == "finetuned"]


def _own(df: pd.DataFrame) -> pd.DataFrame:
    fin = _finetuned(df)
    return fin[fin["train_task"] == fin["eval_task"]]


NOT_AN_OPTIMIZER = "not an optimizer"


def identified_as(models: pd.DataFrame) -> pd.Series:
    """Each model's identified task, or :data:`NOT_AN_OPTIMIZER` where the optimizer rule
    (:func:`measures.cross.is_optimizer`) rejects it (tables measured before the rule: the task as is)."""
    optimizer = models["is_optimizer"] if "is_optimizer" in models else pd.Series(pd.NA, index=models.index)
    rejected = optimizer.map(lambda v: v is False or str(v) == "False")
    return models["identified_task"].where(~rejected.astype(bool), NOT_AN_OPTIMIZER)


def headline_identification(df: pd.DataFrame) -> dict[str, Any]:
    """Objective identification over finetuned models: accuracy, chance level and the confusion matrix (rows:
    training task, columns: identified task or "not an optimizer"). A model counts as correct only when it is
    an optimizer of its training task. ``false_optimizers`` lists the policies that pursue no task (uniform,
    natural, pretrained) that the rule calls optimizers (there should be none)."""
    models = _finetuned(df).drop_duplicates("model")
    tasks = sorted(set(models["train_task"]) | set(_finetuned(df)["eval_task"]))
    labels = identified_as(models)
    cm = pd.crosstab(models["train_task"], labels).reindex(
        index=tasks, columns=[*tasks, NOT_AN_OPTIMIZER], fill_value=0
    )
    n = len(models)
    correct = int((models["train_task"] == labels).sum())
    recorded = bool("is_optimizer" in df and df["is_optimizer"].notna().any())
    # the policies that pursue no task: uniform, natural and the pretrained predictors (oracles do pursue one)
    others = df[(df["kind"] != "finetuned") & ~df["model"].str.startswith("oracle-")].drop_duplicates("model")
    false_opt = sorted(others["model"][identified_as(others) != NOT_AN_OPTIMIZER]) if recorded else []
    return {
        "accuracy": correct / n if n else float("nan"),
        "correct": correct,
        "n": n,
        "chance": 1 / len(tasks) if tasks else float("nan"),
        "confusion": cm,
        "not_optimizers": int((labels == NOT_AN_OPTIMIZER).sum()),
        "false_optimizers": false_opt,
        "others": len(others),
        "recorded": recorded,
    }


def headline_op_correlation(df: pd.DataFrame) -> dict[str, float]:
    """Pearson correlation (with its 95% interval) of implied Op (Op_theory from the success rate) and
    measured Op for the finetuned models on their own task, and the mean excess Op."""
    own = _own(df)
    out = {
        "n": len(own),
        "r": float("nan"),
        "r_lo": float("nan"),
        "r_hi": float("nan"),
        "mean_excess": float((own["op"] - own["op_theory"]).mean()) if len(own) else float("nan"),
        "mean_abs_excess": float((own["op"] - own["op_theory"]).abs().mean()) if len(own) else float("nan"),
    }
    if len(own) >= 3 and own["op"].std() > 0 and own["op_theory"].std() > 0:
        res = stats.pearsonr(own["op_theory"], own["op"])
        ci = res.confidence_interval(0.95)
        out.update(r=float(res.statistic), r_lo=float(ci.low), r_hi=float(ci.high))
    # the cross-objective contrast: the same correlation on other tasks' rows
    fin = _finetuned(df)
    other = fin[fin["train_task"] != fin["eval_task"]]
    out["mean_excess_other"] = (
        float((other["op"] - other["op_theory"]).mean()) if len(other) else float("nan")
    )
    return out


def headline_imp_bound(df: pd.DataFrame, tol: float = IMP_TOL) -> dict[str, Any]:
    """How many rows (model x task) and models have ``Imp >= Imp_min`` (within ``tol``)."""
    ok = df["imp"] >= df["imp_min"] - tol
    models_ok = ok.groupby(df["model"]).all()
    gap = df["imp"] - df["imp_min"]
    return {
        "rows_ok": int(ok.sum()),
        "rows": len(df),
        "models_ok": int(models_ok.sum()),
        "models": len(models_ok),
        "min_gap": float(gap.min()) if len(df) else float("nan"),
        "violations": sorted(models_ok.index[~models_ok.to_numpy()]),
    }


def headline_success_fraction(df: pd.DataFrame) -> pd.DataFrame:
    """Own-task success as a fraction of the way from the uniform policy to the oracle, per size and task:
    ``(s - s_uniform) / (s_oracle - s_uniform)``, mean, s.e. and count over seeds."""
    ref = df[df["kind"] == "reference"]
    own = _own(df).copy()

    def ref_success(model: str, task: str) -> float:
        r = ref[(ref["model"] == model) & (ref["eval_task"] == task)]["success"]
        return float(r.iloc[0]) if len(r) else float("nan")

    lo = own["eval_task"].map(lambda t: ref_success("uniform", t))
    hi = own["eval_task"].map(lambda t: ref_success(f"oracle-{t}", t))
    own["fraction"] = (own["success"] - lo) / (hi - lo)
    g = own.groupby(["size", "train_task"])["fraction"]
    out = pd.DataFrame({"mean": g.mean(), "se": g.sem(ddof=1), "n": g.count()}).reset_index()
    out["params"] = out["size"].map(own.groupby("size")["params"].first())
    return out.sort_values(["params", "train_task"]).reset_index(drop=True)


def headline_natural_floor(df: pd.DataFrame) -> dict[str, Any]:
    """The sequence's self-optimization (the natural policy's Op) and how many trained models reach it."""
    nat = df[df["model"] == "natural"]["op"]
    floor = float(nat.iloc[0]) if len(nat) else float("nan")
    trained = df[df["kind"].isin(["finetuned", "pretrained"])].drop_duplicates("model")
    fin = trained[trained["kind"] == "finetuned"]
    return {
        "natural_op": floor,
        "finetuned_above": int((fin["op"] >= floor).sum()),
        "finetuned": len(fin),
        "pretrained_op_mean": float(trained[trained["kind"] == "pretrained"]["op"].mean()),
    }


# ------------------------------------------------------------------------------------------------ report
def _num(x: float, digits: int = 3) -> str:
    """``x`` rounded, without the "-0.000" of a float-rounding negative zero."""
    return f"{round(float(x), digits) + 0.0:.{digits}f}"


def _pm(mean: float, se: float, digits: int = 3) -> str:
    if not np.isfinite(mean):
        return "–"
    return f"{mean:.{digits}f} ± {se:.{digits}f}" if np.isfinite(se) and se > 0 else f"{mean:.{digits}f}"


def _table(df: pd.DataFrame) -> str:
    """A DataFrame as a GitHub markdown table (no tabulate dependency)."""
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)


def fraction_table(frac: pd.DataFrame) -> pd.DataFrame:
    """:func:`headline_success_fraction` as a size x task table of "mean ± s.e." strings."""
    rows = []
    for size, g in frac.groupby("size", sort=False):
        row = {"size": size}
        row.update({r["train_task"]: _pm(r["mean"], r["se"], 2) for _, r in g.iterrows()})
        rows.append(row)
    return pd.DataFrame(rows)


def size_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per size: parameters, pretrained held-out loss and accuracies, and per task the own-task success,
    Op and Imp (mean ± s.e. over seeds)."""
    pre = df[df["kind"] == "pretrained"].drop_duplicates("model")
    own = _own(df)
    sizes = pre.sort_values("params")["size"].unique()
    rows = []
    for size in sizes:
        p = pre[pre["size"] == size]
        row = {
            "size": size,
            "params": f"{int(p['params'].iloc[0]):,}",
            "seeds": len(p),
            "held-out loss": _pm(p["nt_loss"].mean(), p["nt_loss"].sem()),
            "acc even": _pm(p["acc_even"].mean(), p["acc_even"].sem()),
            "acc odd": _pm(p["acc_odd"].mean(), p["acc_odd"].sem()),
        }
        for task in sorted(own["train_task"].unique()):
            o = own[(own["size"] == size) & (own["train_task"] == task)]
            row[f"{task} success"] = _pm(o["success"].mean(), o["success"].sem())
            row[f"{task} Op"] = _pm(o["op"].mean(), o["op"].sem(), 2)
        rows.append(row)
    return pd.DataFrame(rows)


def reference_table(df: pd.DataFrame) -> pd.DataFrame:
    """Success, Op and Imp of the reference policies on each task."""
    ref = df[df["kind"] == "reference"]
    rows = []
    for model, g in ref.groupby("model", sort=False):
        row = {"policy": model, "Op (nats)": _num(g["op"].iloc[0]), "Imp (nats)": _num(g["imp"].iloc[0])}
        for _, r in g.iterrows():
            row[f"success {r['eval_task']}"] = f"{r['success']:.3f}"
        rows.append(row)
    return pd.DataFrame(rows)


#: self-evaluation columns of the results table added with the natural/counterfactual split
SELF_EVAL_COLUMNS = (
    "self_acc_natural",
    "self_acc_counterfactual",
    "self_kl_natural",
    "self_kl_counterfactual",
    "split_natural_share",
    "self_op_cf_true",
)


def self_evaluation_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per trained model: measured and self-evaluated Op, the model's world on natural and counterfactual
    contexts (accuracy on the next even token, chance 0.125; KL to the true world), the share of natural
    contexts in the split future, and self-evaluated Op with the true world on counterfactual contexts."""
    rows = df[df["kind"] != "reference"]
    rows = rows[(rows["train_task"] == rows["eval_task"]) | (rows["kind"] == "pretrained")]
    rows = rows.drop_duplicates("model")
    out = pd.DataFrame(
        {
            "model": rows["model"],
            "Op": rows["op"].map(_num),
            "self Op": rows["self_op"].map(_num),
            "self Op, true world on cf.": rows["self_op_cf_true"].map(_num),
            "acc natural": rows["self_acc_natural"].map(_num),
            "acc counterfactual": rows["self_acc_counterfactual"].map(_num),
            "KL natural": rows["self_kl_natural"].map(_num),
            "KL counterfactual": rows["self_kl_counterfactual"].map(_num),
            "natural share of F'": rows["split_natural_share"].map(_num),
        }
    )
    return out.reset_index(drop=True)


def self_evaluation_section(df: pd.DataFrame) -> list[str]:
    """The report's self-evaluation table (nothing for tables measured before its columns existed)."""
    if not set(SELF_EVAL_COLUMNS) <= set(df.columns) or df["self_acc_natural"].isna().all():
        return []
    return [
        "### Self-evaluation: where the model's world is wrong",
        "",
        "A context `h ⊕ (8 + a)` is *natural* when `a` is the odd token the sequence itself would write, "
        "*counterfactual* otherwise. The split-history future F' consists mostly of counterfactual contexts. "
        "Accuracy: how often the model's most probable next even token is the world's (chance 0.125).",
        "",
        _table(self_evaluation_table(df)),
        "",
    ]


CAPTIONS = {
    "pretraining_vs_size.png": "Pretraining: held-out next-token loss and accuracy against size (limit 0.9825).",
    "training_curves.png": "Example training runs: pretraining per size; finetuning per task for the largest size.",
    "success_vs_size.png": "Own-task success (temperature 0) against size, mean ± s.e. over seeds; oracle and uniform.",
    "op_vs_success.png": "Measured Op against success with the post's Op_theory(s, p) curves; natural sequence as floor.",
    "implied_vs_measured_op.png": "Op implied by the success rate against measured Op: own task, then each evaluation task.",
    "objective_identification.png": "Which task each finetuned model's Op best explains (rows: the task it was trained on).",
    "imp_vs_imp_min.png": "Measured Imp against its lower bound Imp_min: own task and cross-objective (dashed: "
    "least-squares slope per training task).",
    "success_in_f_prime.png": "Success in the split-history future F' (s') and in F (s) against size.",
    "self_evaluation.png": "Measured against self-evaluated Op and Imp (the model's own world model in place of the rule).",
    "appendix_c_impact.png": "The post's appendix C: impact ratio Imp/Imp_min against Imp_min, excess impact against Imp.",
}


def headline_table(ident: dict, corr: dict, bound: dict, floor: dict) -> str:
    """The headline numbers beside what the post found, as a markdown table."""
    rows = [
        (
            "objective identification (finetuned models)",
            f"**{ident['accuracy']:.0%}** ({ident['correct']}/{ident['n']}; chance {ident['chance']:.0%})",
            "separates the objectives by implied vs measured Op",
        ),
        (
            "uniform, natural and pretrained policies called optimizers",
            (
                f"**{len(ident['false_optimizers'])}/{ident['others']}**"
                + (f" ({', '.join(ident['false_optimizers'])})" if ident["false_optimizers"] else "")
                if ident["recorded"]
                else "not recorded (measured before the optimizer rule)"
            ),
            "(not examined)",
        ),
        (
            "own-task Op vs Op_theory(s, p)",
            (
                f"**r = {corr['r']:.3f}**"
                + (f" [95% CI {corr['r_lo']:.3f}, {corr['r_hi']:.3f}]" if corr["n"] >= 4 else "")
                + f", n = {corr['n']}; mean excess Op {corr['mean_excess']:+.3f} nats (on other tasks: "
                f"{corr['mean_excess_other']:+.3f})"
            ),
            '"predicted very well"; some models fall below the line',
        ),
        (
            "Imp ≥ Imp_min",
            (
                f"**{bound['models_ok']}/{bound['models']} models**, {bound['rows_ok']}/{bound['rows']} rows (smallest "
                f"Imp − Imp_min {bound['min_gap']:.2e} nats)"
            ),
            "always (a theorem)",
        ),
        (
            "the sequence's self-optimization (natural policy's Op)",
            f"**{floor['natural_op']:.3f} nats**; {floor['finetuned_above']}/{floor['finetuned']} finetuned models at or above",
            "every model at or above",
        ),
    ]
    return _table(pd.DataFrame(rows, columns=["finding", "this run", "the post"]))


def render(df: pd.DataFrame, sweep: SweepConfig, timings: pd.DataFrame, figures: list[Path]) -> str:
    """The markdown of ``report.md``; ``timings`` is the sweep's ``timings.csv`` table."""
    ident = headline_identification(df)
    corr = headline_op_correlation(df)
    bound = headline_imp_bound(df)
    frac = headline_success_fraction(df)
    floor = headline_natural_floor(df)
    steps, ft_steps = budget_text(df, sweep.sizes, sweep.tasks)
    lines = [
        f"# SplitSeq: reproduction of the post ({sweep.preset} preset)",
        "",
        f"Sizes {', '.join(sweep.sizes)} × seeds {', '.join(map(str, sweep.seeds))} × tasks {', '.join(sweep.tasks)}; "
        f"pretraining steps: {steps}; finetuning ({sweep.method}) steps: {ft_steps}"
        + (f" (the preset's budgets scaled by {sweep.steps_scale:g})" if sweep.steps_scale != 1 else "")
        + ". "
        + rise_text(df)
        + f"Every model measured exactly (split history, temperature 0) on the same {sweep.n_histories:,} natural "
        f"histories (seed {sweep.eval_seed}). Written {time.strftime('%Y-%m-%d %H:%M')} on `{platform.node()}` "
        f"({os.cpu_count()} CPUs), {code_version()}, {sweep.threads} torch thread(s) per unit; finetuning's "
        f"maintenance world model: {sweep.world_model}; device {sweep.device}, precision {sweep.precision}.",
        "",
        *cost_section(timings, plan(sweep)),
        "## Headline numbers",
        "",
        headline_table(ident, corr, bound, floor),
        "",
        "### Objective identification: confusion matrix",
        "",
        "Rows: the task a model was finetuned on; columns: the task whose implied Op best matches its measured Op, "
        "or *not an optimizer* where the model's success does not beat the split baseline and chance, or its Op "
        "does not exceed the sequence's own (the natural policy's), beyond their intervals "
        "(`measures.cross.is_optimizer`).",
        "",
        _table(
            ident["confusion"]
            .rename_axis(None, axis=1)
            .reset_index()
            .rename(columns={"train_task": "trained on"})
        ),
        "",
        "### Success as a fraction of the way from the uniform policy to the oracle",
        "",
        "`(s − s_uniform) / (s_oracle − s_uniform)` on the model's own task, mean ± s.e. over seeds.",
        "",
        _table(fraction_table(frac)),
        "",
        "### Per size",
        "",
        _table(size_summary(df)),
        "",
        *self_evaluation_section(df),
        "### Reference policies",
        "",
        (
            "Op and Imp do not depend on the task; success does. The oracle of a task picks the token with the "
            "highest exact success probability: the ceiling of every agent."
        ),
        "",
        _table(reference_table(df)),
        "",
        "## Figures",
        "",
    ]
    for p in figures:
        lines += [f"### {CAPTIONS.get(p.name, p.stem)}", "", f"![{p.stem}](figures/{p.name})", ""]
    lines += ["All numbers: `results.csv` (one row per model and evaluation task).", ""]
    return "\n".join(lines)


def rise_text(df: pd.DataFrame) -> str:
    """One sentence: how much the finetuned models' held-out success still rose over the last quarter of their
    runs (``train_rise``), the evidence that the budgets let the curves level off; empty without histories."""
    fine = df[(df["kind"] == "finetuned") & (df["train_task"] == df["eval_task"])]
    rise = fine.set_index("model")["train_rise"].dropna() if "train_rise" in fine else pd.Series(dtype=float)
    if rise.empty:
        return ""
    by_size = fine.groupby("size", sort=False)["train_rise"].max()
    return (
        f"Over the last quarter of each finetuning, held-out success rose by a median {rise.median():.3f} of the "
        f"way to the oracle (largest {rise.max():.3f}, {rise.idxmax()}; per size at most "
        + ", ".join(f"{k} {v:.3f}" for k, v in by_size.items())
        + "; `train_rise`). "
    )


def budget_text(df: pd.DataFrame, sizes: Any, tasks: Any) -> tuple[str, str]:
    """``("tiny 6000, ...", "tiny 3200, ...")``: pretraining and finetuning steps per size as run (from the
    table's ``train_steps``), finetuning per task where the tasks differ."""

    def steps(rows: pd.DataFrame) -> str:
        values = sorted({int(v) for v in rows["train_steps"].dropna()})
        return "/".join(map(str, values)) or "?"

    pre, fine = [], []
    for size in sizes:
        mine = df[df["size"] == size]
        pre.append(f"{size} {steps(mine[mine['kind'] == 'pretrained'])}")
        own = mine[(mine["kind"] == "finetuned") & (mine["train_task"] == mine["eval_task"])]
        per_task = {t: steps(own[own["train_task"] == t]) for t in tasks}
        if len(set(per_task.values())) == 1:
            fine.append(f"{size} {next(iter(per_task.values()))}")
        else:
            fine.append(f"{size} " + " / ".join(f"{t} {v}" for t, v in per_task.items()))
    return ", ".join(pre), ", ".join(fine)


def build(root: str | os.PathLike, sweep: SweepConfig, measure_units: list[Unit]) -> Path:
    """Write ``results.csv``, ``figures/*.png`` and (last) ``report.md`` for the sweep in ``root``."""
    root = Path(root)
    df = collect(root, measure_units)
    atomic_write(root / RESULTS_FILE, lambda tmp: df.to_csv(tmp, index=False))
    df = read_csv(root / RESULTS_FILE)
    paths = draw_all(df, root, root / FIGURES_DIR)
    timings = write_timings(root, plan(sweep))
    text = render(df, sweep, timings, paths)
    return atomic_write(root / REPORT_FILE, lambda tmp: Path(tmp).write_text(text))
