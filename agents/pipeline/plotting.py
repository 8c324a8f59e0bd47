"""Drawing helpers shared by the sweep's figures: colours per task, markers per size, the style, and small
axes utilities. Figures are drawn on :class:`matplotlib.figure.Figure` objects (no pyplot state, no backend
chosen at import) inside :func:`matplotlib.rc_context` with :data:`STYLE`, so drawing changes nothing in the
caller's matplotlib settings.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from seqenv.sequence import N_OUT, P_MATCH
from seqenv.tasks import good_set

DPI = 100
TASK_COLORS = {"ngood2": "#1f77b4", "ngood4": "#ff7f0e", "ngood6": "#2ca02c"}
SIZE_MARKERS = {"tiny": "o", "small": "s", "medium": "^", "large": "D"}
#: irreducible next-token loss (nats): the entropy of 0.9825 on the rule's token and 0.0025 on each other
NT_LOSS_FLOOR = float(-(P_MATCH * np.log(P_MATCH) + (1 - P_MATCH) * np.log((1 - P_MATCH) / (N_OUT - 1))))

#: the figures' matplotlib settings, applied in a context while drawing
STYLE = {
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "font.size": 9,
    "axes.titlesize": 10,
    "legend.fontsize": 8,
    "legend.framealpha": 0.85,
    "figure.titlesize": 11,
}


def task_p(task: str) -> float:
    """Chance success rate ``|good| / 8`` of a task."""
    return len(good_set(task)) / N_OUT


def task_label(task: str) -> str:
    return f"{task} (p = {task_p(task):g})"


def task_color(task: str) -> str:
    return TASK_COLORS.get(task, "0.4")


def size_marker(size: str) -> str:
    return SIZE_MARKERS.get(size, "o")


def sizes_in(df: pd.DataFrame) -> list[str]:
    present = [s for s in df["size"].dropna().unique() if s]
    return sorted(present, key=lambda s: list(SIZE_MARKERS).index(s) if s in SIZE_MARKERS else 99)


def tasks_in(df: pd.DataFrame, col: str = "train_task") -> list[str]:
    return sorted(t for t in df[col].dropna().unique() if t)


def legend(
    ax: Axes, tasks: list[str], sizes: list[str], loc: str = "best", extra: list | None = None
) -> None:
    """One legend: task colours, then size markers (grey), then any extra handles."""
    handles = [Line2D([], [], color=task_color(t), marker="o", ls="", label=task_label(t)) for t in tasks]
    if len(sizes) > 1:
        handles += [Line2D([], [], color="0.35", marker=size_marker(s), ls="", label=s) for s in sizes]
    handles += extra or []
    ax.legend(handles=handles, loc=loc)


def identity_line(ax: Axes, lo: float | None = None, hi: float | None = None, label: str = "y = x") -> Line2D:
    xl, yl = ax.get_xlim(), ax.get_ylim()
    lo = min(xl[0], yl[0]) if lo is None else lo
    hi = max(xl[1], yl[1]) if hi is None else hi
    (line,) = ax.plot([lo, hi], [lo, hi], ls="--", color="0.3", lw=1, label=label, zorder=1)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    return line


def scatter(
    ax: Axes, df: pd.DataFrame, x: str, y: str, color_by: str, hollow: pd.Series | None = None
) -> None:
    """Scatter ``df[y]`` against ``df[x]``: colour from ``color_by`` (a task column), marker from size."""
    for (task, size), g in df.groupby([color_by, "size"], sort=False):
        c = task_color(task)
        if hollow is None:
            ax.scatter(
                g[x],
                g[y],
                color=c,
                marker=size_marker(size),
                s=28,
                alpha=0.85,
                edgecolor="white",
                lw=0.4,
                zorder=3,
            )
        else:
            h = hollow.loc[g.index]
            ax.scatter(
                g[x][~h],
                g[y][~h],
                color=c,
                marker=size_marker(size),
                s=28,
                alpha=0.85,
                edgecolor="white",
                lw=0.4,
                zorder=3,
            )
            ax.scatter(
                g[x][h],
                g[y][h],
                facecolor="none",
                edgecolor=c,
                marker=size_marker(size),
                s=28,
                lw=1.0,
                zorder=3,
            )


def per_size(df: pd.DataFrame, col: str, by: str = "train_task") -> pd.DataFrame:
    """Mean and standard error of ``col`` over seeds, per (task, size), sorted by parameter count."""
    g = df.groupby([by, "size"])[col]
    out = pd.DataFrame({"mean": g.mean(), "se": g.sem(ddof=1), "n": g.count()}).reset_index()
    params = df.groupby("size")["params"].first()
    out["params"] = out["size"].map(params)
    out["se"] = out["se"].fillna(0.0)
    return out.sort_values([by, "params"])


def size_axis(ax: Axes, df: pd.DataFrame) -> None:
    ax.set_xscale("log")
    params = df.groupby("size")["params"].first().dropna()
    if len(params):
        ticks = sorted(params.items(), key=lambda kv: kv[1])
        ax.set_xticks([v for _, v in ticks])
        ax.set_xticklabels([f"{k}\n{v / 1e3:.0f}k" for k, v in ticks])
        ax.minorticks_off()
        lo, hi = min(params), max(params)
        ax.set_xlim(lo / 1.6, hi * 1.6)
    ax.set_xlabel("model size (parameters)")


def subplots(*args: Any, figsize: tuple[float, float], **kwargs: Any) -> tuple[Figure, Any]:
    """A new figure and its axes, as ``pyplot.subplots`` without pyplot's global figure registry."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)


def save(fig: Figure, path: Path, tight: bool = True) -> Path:
    if tight:
        fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    os.replace(tmp, path)
    return path


def subsets(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    fin = df[df["kind"] == "finetuned"]
    own = fin[fin["train_task"] == fin["eval_task"]]
    pre = df[df["kind"] == "pretrained"]
    ref = df[df["kind"] == "reference"]
    return fin, own, pre, ref


def ref_value(ref: pd.DataFrame, model: str, task: str, col: str) -> float:
    r = ref[(ref["model"] == model) & (ref["eval_task"] == task)]
    return float(r[col].iloc[0]) if len(r) else float("nan")


# --------------------------------------------------------------------------------------------- figures


def cross_panels(
    df: pd.DataFrame,
    x: str,
    y: str,
    xlabel: str,
    ylabel: str,
    title: str,
    path: Path,
    log: bool = False,
    fit: bool = False,
) -> Path:
    """Own task in the first panel, then one panel per evaluation task coloured by training task; y = x.
    ``fit`` adds, per training task, the least-squares line through the origin (its slope in the legend)."""
    fin, own, _, _ = subsets(df)
    tasks = tasks_in(fin, "eval_task")
    sizes = sizes_in(fin)
    fig, axes = subplots(1, 1 + len(tasks), figsize=(3.6 * (1 + len(tasks)), 3.9))
    axes = np.atleast_1d(axes)
    vals = pd.concat([fin[x], fin[y]]).replace([np.inf, -np.inf], np.nan).dropna()
    lo, hi = (float(vals.min()), float(vals.max())) if len(vals) else (0.0, 1.0)
    pad = 0.05 * (hi - lo or 1.0)
    lo, hi = (max(lo / 1.5, 1e-4), hi * 1.5) if log else (min(lo - pad, 0.0), hi + pad)
    scatter(axes[0], own, x, y, "train_task")
    axes[0].set_title("own task")
    for ax, task in zip(axes[1:], tasks):
        d = fin[fin["eval_task"] == task]
        scatter(ax, d, x, y, "train_task", hollow=d["train_task"] != task)
        ax.set_title(f"evaluated on {task_label(task)}")
        if fit:
            fits = []
            for tt, g in d.groupby("train_task"):
                xx, yy = g[x].to_numpy(float), g[y].to_numpy(float)
                if len(xx) >= 3 and (xx**2).sum() > 0:  # a slope from fewer points says little
                    k = float((xx * yy).sum() / (xx**2).sum())
                    ax.plot(
                        [0, hi],
                        [0, k * hi],
                        color=task_color(tt),
                        lw=0.9,
                        ls=(0, (4, 2)),
                        alpha=0.8,
                        zorder=2,
                    )
                    fits.append(
                        Line2D([], [], color=task_color(tt), lw=0.9, ls=(0, (4, 2)), label=f"slope {k:.2f}")
                    )
            if fits:
                ax.legend(
                    handles=fits,
                    loc="lower right",
                    title="least squares through 0",
                    title_fontsize=7,
                    fontsize=7,
                )
    for ax in axes:
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log")
        line = identity_line(ax, lo, hi)
        ax.set_xlabel(xlabel)
    axes[0].set_ylabel(ylabel)
    # points sit on or above y = x, so the lower right corner is free for the legends
    legend(
        axes[0],
        tasks_in(own),
        sizes,
        loc="lower right",
        extra=[
            line,
            Line2D([], [], color="0.4", marker="o", ls="", label="evaluated on its own task"),
            Line2D([], [], color="0.4", marker="o", ls="", mfc="none", label="evaluated on another task"),
        ],
    )
    axes[0].text(
        0.02, 0.98, "colour: training task", transform=axes[0].transAxes, va="top", fontsize=8, color="0.3"
    )
    fig.suptitle(title)
    return save(fig, path)
