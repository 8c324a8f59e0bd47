"""The figures of a sweep: the post's plots and a few more, drawn from ``results.csv`` and the training logs.

Every function takes the results table (one row per model and evaluation task, see
:data:`agents.pipeline.records.RESULT_COLUMNS`) and writes one PNG; :func:`draw_all` writes them all and
returns their paths. Colour always encodes a task (chance rate ``p``), marker shape a model size.

The figures are drawn with :mod:`agents.pipeline.plotting` inside its style context: nothing in the caller's
matplotlib settings changes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from agents.pipeline.plotting import (
    NT_LOSS_FLOOR,
    STYLE,
    TASK_COLORS,
    cross_panels,
    identity_line,
    legend,
    per_size,
    ref_value,
    save,
    scatter,
    size_axis,
    size_marker,
    sizes_in,
    subplots,
    subsets,
    task_color,
    task_label,
    task_p,
    tasks_in,
)
from agents.pipeline.records import read_history
from measures.theory import op_theory
from seqenv.sequence import P_MATCH


def fig_pretraining(df: pd.DataFrame, root: Path, path: Path) -> Path:
    """Held-out next-token loss and accuracy (even and odd targets) against size: pretrained models, and the
    even-target accuracy the finetuned models keep (the maintenance training's job)."""
    fin, _, pre, _ = subsets(df)
    one = pre.drop_duplicates("model")
    after = fin.drop_duplicates("model")
    fig, (a, b) = subplots(1, 2, figsize=(10, 4.2))
    series = (
        (a, one, "nt_loss", "pretrained", "C3", "o", "-"),
        (b, one, "acc_even", "even targets (world model), pretrained", "C0", "o", "-"),
        (b, one, "acc_odd", "odd targets (policy's token), pretrained", "C1", "o", "-"),
        (b, after, "acc_even", "even targets after finetuning", "C0", "s", "--"),
    )
    for ax, data, col, label, color, marker, ls in series:
        if not len(data):
            continue
        ax.scatter(data["params"], data[col], color=color, alpha=0.3, s=12, marker=marker, zorder=2)
        s = per_size(data.assign(_all=""), col, by="_all")
        ax.errorbar(
            s["params"],
            s["mean"],
            yerr=s["se"],
            color=color,
            marker=marker,
            ls=ls,
            capsize=3,
            label=label,
            mfc="white" if ls == "--" else color,
            zorder=3,
        )
    for ax in (a, b):
        size_axis(ax, one)
    a.axhline(NT_LOSS_FLOOR, ls="-.", color="0.3", lw=1, label=f"irreducible loss {NT_LOSS_FLOOR:.3f}")
    b.axhline(P_MATCH, ls="-.", color="0.3", lw=1, label=f"limit {P_MATCH:.4f}")
    a.set(title="Held-out next-token loss", ylabel="cross-entropy (nats / token)")
    b.set(title="Held-out next-token accuracy", ylabel="accuracy")
    a.legend(loc="best")
    b.legend(loc="best", fontsize=7)
    fig.suptitle("Pretraining on natural sequences (small dots: seeds; line: mean ± s.e.)")
    return save(fig, path)


def fig_training_curves(df: pd.DataFrame, root: Path, path: Path) -> Path:
    """Example runs (the first seed): pretraining loss and held-out accuracy per size; finetuning success,
    maintenance accuracy and policy loss per task for the largest size."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    _, _, pre, ref = subsets(df)
    fin = df[df["kind"] == "finetuned"].drop_duplicates("model")
    sizes = sizes_in(pre)
    seed = int(pre["seed"].min()) if len(pre) else 0
    fig, axes = subplots(2, 3, figsize=(12, 7.2))
    size_colors = dict(
        zip(sizes, matplotlib.colormaps["viridis"](np.linspace(0.1, 0.85, max(len(sizes), 1))))
    )
    for size in sizes:
        row = pre[(pre["size"] == size) & (pre["seed"] == seed)].drop_duplicates("model")
        h = read_history(root, row["checkpoint"].iloc[0]) if len(row) else None
        if h is None:
            continue
        c = size_colors[size]
        axes[0, 0].plot(h["step"], h["loss"], color=c, lw=1.2, label=f"{size} train")
        axes[0, 0].plot(h["step"], h["eval_loss"], color=c, lw=1, ls="--", label=f"{size} held-out")
        axes[0, 1].plot(h["step"], h["acc_even"], color=c, lw=1.2, label=f"{size} even")
        axes[0, 1].plot(h["step"], h["acc_odd"], color=c, lw=1, ls=":", label=f"{size} odd")
        axes[0, 2].plot(h["step"], h["lr"], color=c, lw=1.2, label=size)
    axes[0, 0].axhline(NT_LOSS_FLOOR, ls="-.", color="0.3", lw=1, label=f"irreducible {NT_LOSS_FLOOR:.3f}")
    axes[0, 0].set(
        title=f"Pretraining loss (seed {seed})",
        xlabel="step",
        ylabel="cross-entropy (nats / token)",
        yscale="log",
    )
    axes[0, 0].yaxis.set_major_formatter(ScalarFormatter())
    axes[0, 0].yaxis.set_minor_formatter(NullFormatter())
    axes[0, 1].axhline(P_MATCH, ls="-.", color="0.3", lw=1, label=f"limit {P_MATCH:.4f}")
    axes[0, 1].set(title="Pretraining: held-out accuracy", xlabel="step", ylabel="next-token accuracy")
    axes[0, 2].set(title="Pretraining learning rate", xlabel="step", ylabel="learning rate")
    big = sizes[-1] if sizes else ""
    tasks = tasks_in(fin)
    for task in tasks:
        row = fin[(fin["size"] == big) & (fin["seed"] == seed) & (fin["train_task"] == task)]
        h = read_history(root, row["checkpoint"].iloc[0]) if len(row) else None
        if h is None:
            continue
        c = task_color(task)
        axes[1, 0].plot(h["step"], h["success"], color=c, lw=1.4)
        axes[1, 0].plot(h["step"], h["sample_success"], color=c, lw=0.8, alpha=0.6)
        axes[1, 0].axhline(ref_value(ref, f"oracle-{task}", task, "success"), color=c, ls="--", lw=0.8)
        axes[1, 0].axhline(task_p(task), color=c, ls=":", lw=0.8)
        axes[1, 1].plot(h["step"], h["maintenance_acc"], color=c, lw=1.2)
        axes[1, 2].plot(h["step"], h["loss"], color=c, lw=1.2)
    axes[1, 0].set(title=f"Finetuning success ({big}, seed {seed})", xlabel="step", ylabel="success rate")
    axes[1, 1].axhline(P_MATCH, ls="-.", color="0.3", lw=1)
    axes[1, 1].set(
        title="Maintenance: held-out accuracy, even targets", xlabel="step", ylabel="next-token accuracy"
    )
    axes[1, 2].set(
        title="Finetuning policy loss (successful samples)", xlabel="step", ylabel="cross-entropy (nats)"
    )
    for ax in axes[0]:
        if ax.has_data():
            ax.legend(ncol=2 if len(sizes) > 2 else 1, fontsize=7)
    handles = [Line2D([], [], color=task_color(t), lw=1.4, label=task_label(t)) for t in tasks] + [
        Line2D([], [], color="0.4", lw=1.4, label="greedy success (exact, held-out)"),
        Line2D([], [], color="0.4", lw=0.8, alpha=0.6, label="sampled success (temperature 1)"),
        Line2D([], [], color="0.4", ls="--", lw=0.8, label="oracle"),
        Line2D([], [], color="0.4", ls=":", lw=0.8, label="chance p"),
        Line2D([], [], color="0.3", ls="-.", lw=1, label=f"accuracy limit {P_MATCH:.4f}"),
    ]
    fig.suptitle("Example training runs")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.legend(handles=handles, loc="lower center", ncol=4, frameon=False)
    return save(fig, path, tight=False)


def fig_success_vs_size(df: pd.DataFrame, root: Path, path: Path) -> Path:
    """Own-task success (temperature 0) against size per task, mean ± s.e., with chance and the oracle."""
    _, own, _, ref = subsets(df)
    fig, ax = subplots(figsize=(6.4, 4.4))
    for task in tasks_in(own):
        s = per_size(own[own["train_task"] == task], "success")
        c = task_color(task)
        ax.scatter(
            own[own["train_task"] == task]["params"],
            own[own["train_task"] == task]["success"],
            color=c,
            alpha=0.3,
            s=12,
        )
        ax.errorbar(
            s["params"], s["mean"], yerr=s["se"], color=c, marker="o", capsize=3, label=task_label(task)
        )
        ax.axhline(ref_value(ref, f"oracle-{task}", task, "success"), color=c, ls="--", lw=0.9)
        ax.axhline(ref_value(ref, "uniform", task, "success"), color=c, ls=":", lw=0.9)
    size_axis(ax, own)
    ax.set(ylabel="success rate on own task", title="RL success against model size (mean ± s.e. over seeds)")
    ax.legend(
        handles=ax.get_legend_handles_labels()[0]
        + [
            Line2D([], [], color="0.4", ls="--", lw=0.9, label="oracle (ceiling)"),
            Line2D([], [], color="0.4", ls=":", lw=0.9, label="uniform policy"),
        ],
        loc="lower right",
    )
    return save(fig, path)


def fig_op_vs_success(df: pd.DataFrame, root: Path, path: Path) -> Path:
    """Measured Op against success with the post's Op_theory(s, p) curves: own task and cross-objective."""
    fin, own, _, ref = subsets(df)
    sizes = sizes_in(fin)
    fig, axes = subplots(1, 2, figsize=(11, 4.4), sharey=True)
    s = np.linspace(0.0, 1.0, 401)
    nat = ref[ref["model"] == "natural"]["op"]
    for ax, data, title in ((axes[0], own, "own task"), (axes[1], fin, "every task (cross-objective)")):
        for task in TASK_COLORS:
            ax.plot(s, op_theory(s, task_p(task)), color=task_color(task), lw=1.2, alpha=0.7)
        if title.startswith("own"):
            scatter(ax, data, "success", "op", "train_task")
        else:
            scatter(ax, data, "success", "op", "eval_task", hollow=data["train_task"] != data["eval_task"])
        if len(nat):
            ax.axhline(float(nat.iloc[0]), color="0.5", ls="-.", lw=1)
        ax.set(xlabel="success rate s (temperature 0)", title=f"Op against success: {title}", xlim=(0, 1))
    axes[0].set_ylabel("measured Op (nats)")
    ymax = max(float(np.nanmax(fin["op"])) if len(fin) else 1.0, 1.0) * 1.1
    axes[0].set_ylim(min(0.0, float(np.nanmin(fin["op"])) if len(fin) else 0.0) - 0.05, ymax)
    extra = [
        Line2D([], [], color="0.4", lw=1.2, label="Op_theory(s, p)"),
        Line2D([], [], color="0.5", ls="-.", lw=1, label="natural sequence (floor)"),
    ]
    legend(axes[0], tasks_in(own), sizes, loc="upper left", extra=extra)
    legend(
        axes[1],
        tasks_in(fin, "eval_task"),
        sizes,
        loc="upper left",
        extra=extra
        + [Line2D([], [], color="0.4", marker="o", ls="", mfc="none", label="evaluated on another task")],
    )
    axes[1].text(
        0.99,
        0.02,
        "colour: evaluation task",
        transform=axes[1].transAxes,
        ha="right",
        fontsize=8,
        color="0.3",
    )
    return save(fig, path)


def fig_implied_vs_measured_op(df: pd.DataFrame, root: Path, path: Path) -> Path:
    """Op implied by the success rate (Op_theory) against measured Op, own task and cross-objective."""
    return cross_panels(
        df,
        "op_theory",
        "op",
        "implied Op = Op_theory(s, p) (nats)",
        "measured Op (nats)",
        "Implied against measured optimization: models sit on y = x only for their own task",
        path,
    )


def fig_imp_vs_impmin(df: pd.DataFrame, root: Path, path: Path) -> Path:
    """Measured Imp against its lower bound Imp_min(s, s'), own task and cross-objective."""
    return cross_panels(
        df,
        "imp_min",
        "imp",
        "Imp_min(s, s') (nats)",
        "measured Imp (nats)",
        "Impact against its lower bound (Imp ≥ Imp_min: every point on or above y = x)",
        path,
        fit=True,
    )


def fig_success_fprime(df: pd.DataFrame, root: Path, path: Path) -> Path:
    """Success rate in the split-history future F' (s') against size, with s and the chance rate."""
    _, own, _, _ = subsets(df)
    fig, ax = subplots(figsize=(6.4, 4.4))
    for task in tasks_in(own):
        c = task_color(task)
        d = own[own["train_task"] == task]
        s1 = per_size(d, "baseline_success")
        ax.errorbar(
            s1["params"], s1["mean"], yerr=s1["se"], color=c, marker="o", capsize=3, label=f"{task}: s' in F'"
        )
        s0 = per_size(d, "success")
        ax.errorbar(
            s0["params"],
            s0["mean"],
            yerr=s0["se"],
            color=c,
            marker="o",
            mfc="none",
            ls=":",
            capsize=3,
            alpha=0.6,
            label=f"{task}: s in F",
        )
        ax.axhline(task_p(task), color=c, ls="--", lw=0.8)
    size_axis(ax, own)
    ax.set(ylabel="success rate", title="Success in the split-history future F' against size (mean ± s.e.)")
    ax.legend(
        handles=ax.get_legend_handles_labels()[0]
        + [Line2D([], [], color="0.4", ls="--", lw=0.8, label="chance p")],
        ncol=2,
        fontsize=7,
        loc="lower right",
    )
    return save(fig, path)


def fig_self_evaluation(df: pd.DataFrame, root: Path, path: Path) -> Path:
    """Measured against self-evaluated Op and Imp (the model's own world model in place of the rule)."""
    fin, _, pre, _ = subsets(df)
    models = pd.concat(
        [fin.drop_duplicates("model"), pre.drop_duplicates("model").assign(train_task="pretrained")]
    )
    fig, axes = subplots(1, 2, figsize=(10, 4.3))
    sizes = sizes_in(models)
    for ax, m, name in ((axes[0], "op", "Op"), (axes[1], "imp", "Imp")):
        for task, g in models.groupby("train_task"):
            for size, gs in g.groupby("size"):
                ax.scatter(
                    gs[f"self_{m}"],
                    gs[m],
                    color=task_color(task) if task != "pretrained" else "0.55",
                    marker=size_marker(size),
                    s=28,
                    alpha=0.85,
                    edgecolor="white",
                    lw=0.4,
                    zorder=3,
                )
        vals = pd.concat([models[m], models[f"self_{m}"]]).dropna()
        lo, hi = (float(vals.min()), float(vals.max())) if len(vals) else (0, 1)
        pad = 0.05 * (hi - lo or 1)
        line = identity_line(ax, min(lo - pad, 0), hi + pad)
        ax.set(
            xlabel=f"self-evaluated {name} (nats)",
            ylabel=f"measured {name} (nats)",
            title=f"{name}: measured against self-evaluated",
        )
    handles = [
        Line2D([], [], color=task_color(t), marker="o", ls="", label=task_label(t)) for t in tasks_in(fin)
    ]
    handles += [Line2D([], [], color="0.55", marker="o", ls="", label="pretrained only")]
    if len(sizes) > 1:
        handles += [Line2D([], [], color="0.35", marker=size_marker(s), ls="", label=s) for s in sizes]
    fig.suptitle("Self-evaluation: above y = x a model underestimates itself, below it overestimates")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.legend(handles=[*handles, line], loc="lower center", ncol=min(len(handles) + 1, 8), frameon=False)
    return save(fig, path, tight=False)


def fig_appendix_c(df: pd.DataFrame, root: Path, path: Path) -> Path:
    """The post's appendix C: impact ratio Imp/Imp_min against Imp_min, excess impact against Imp."""
    _, own, _, _ = subsets(df)
    fig, (a, b) = subplots(1, 2, figsize=(10, 4.2))
    d = own.assign(ratio=own["imp"] / own["imp_min"], excess=own["imp"] - own["imp_min"])
    scatter(a, d, "imp_min", "ratio", "train_task")
    a.axhline(1.0, ls="--", color="0.3", lw=1)
    a.set(
        xlabel="Imp_min (nats)",
        ylabel="impact ratio Imp / Imp_min",
        title="Impact ratio against Imp_min (own task)",
    )
    scatter(b, d, "imp", "excess", "train_task")
    b.axhline(0.0, ls="--", color="0.3", lw=1)
    b.set(
        xlabel="Imp (nats)",
        ylabel="excess impact Imp − Imp_min (nats)",
        title="Excess impact against Imp (own task)",
    )
    legend(a, tasks_in(own), sizes_in(own), loc="upper right")
    fig.suptitle("Appendix C: two more views of impact")
    return save(fig, path)


def fig_identification(df: pd.DataFrame, root: Path, path: Path) -> Path:
    """Objective identification: confusion matrix of training task against the identified task."""
    fin, _, _, _ = subsets(df)
    models = fin.drop_duplicates("model")
    tasks = sorted(set(tasks_in(fin)) | set(tasks_in(fin, "eval_task")))
    cm = pd.crosstab(models["train_task"], models["identified_task"]).reindex(
        index=tasks, columns=tasks, fill_value=0
    )
    fig, ax = subplots(figsize=(4.6, 3.9))
    im = ax.imshow(cm.to_numpy(), cmap="Blues", vmin=0)
    for i in range(len(tasks)):
        for j in range(len(tasks)):
            v = int(cm.iat[i, j])
            ax.text(
                j,
                i,
                str(v),
                ha="center",
                va="center",
                color="white" if v > cm.to_numpy().max() / 2 else "black",
            )
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_yticks(range(len(tasks)), tasks)
    ax.grid(False)
    acc = float((models["train_task"] == models["identified_task"]).mean()) if len(models) else float("nan")
    ax.set(
        xlabel="identified objective",
        ylabel="training task",
        title=f"Objective identification: {acc:.0%} of {len(models)} models",
    )
    fig.colorbar(im, ax=ax, shrink=0.8, label="models")
    return save(fig, path)


#: file name -> figure function, in the order the report shows them
FIGURES: dict[str, Callable[[pd.DataFrame, Path, Path], Path]] = {
    "pretraining_vs_size.png": fig_pretraining,
    "training_curves.png": fig_training_curves,
    "success_vs_size.png": fig_success_vs_size,
    "op_vs_success.png": fig_op_vs_success,
    "implied_vs_measured_op.png": fig_implied_vs_measured_op,
    "objective_identification.png": fig_identification,
    "imp_vs_imp_min.png": fig_imp_vs_impmin,
    "success_in_f_prime.png": fig_success_fprime,
    "self_evaluation.png": fig_self_evaluation,
    "appendix_c_impact.png": fig_appendix_c,
}


def draw_all(
    df: pd.DataFrame, root: str | os.PathLike, out_dir: str | os.PathLike | None = None
) -> list[Path]:
    """Draw every figure of :data:`FIGURES` for results ``df`` of the sweep in ``root``.

    :param df: the results table.
    :param root: the sweep directory (for the training logs next to the checkpoints).
    :param out_dir: where to write the PNGs (default ``root/figures``).
    :return: the paths written, in :data:`FIGURES` order.
    """
    root = Path(root)
    out = Path(out_dir) if out_dir is not None else root / "figures"
    out.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context(STYLE):
        return [fn(df, root, out / name) for name, fn in FIGURES.items()]
