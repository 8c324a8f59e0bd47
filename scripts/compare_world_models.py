"""Self-evaluation with and without counterfactual world-model training: sweeps side by side.

::

    python scripts/compare_world_models.py runs/natural runs/counterfactual --out docs/results/world-model

Reads each sweep's ``results.csv`` (``splitseq reproduce ... --world-model natural|counterfactual``); sweeps of
the same world model (e.g. one for tiny and small, one for medium) are pooled. Writes
``self_evaluation.csv`` (one row per world model, then one per world model and size: how well self-evaluated Op and Imp track the measured ones over the
finetuned models on their own task, and how wrong the models' world is on natural and counterfactual contexts),
``per_model.csv`` and ``self_evaluation.png`` (self-evaluated against measured Op and Imp).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats

from agents.pipeline.plotting import STYLE, task_color

#: the target of the issue: own-task self-evaluated Op within this many nats of the measured Op
TOLERANCE = 0.05


def own_rows(results: pd.DataFrame) -> pd.DataFrame:
    """Finetuned models on their own task."""
    fin = results[results["kind"] == "finetuned"]
    return fin[fin["train_task"] == fin["eval_task"]].copy()


def summary(rows: pd.DataFrame, label: str) -> dict:
    """Agreement of self-evaluated with measured Op and Imp, and the world error by context."""
    out: dict = {"world_model": label, "models": len(rows)}
    for fig in ("op", "imp"):
        x, y = rows[fig].to_numpy(float), rows[f"self_{fig}"].to_numpy(float)
        err = y - x
        out[f"{fig}_mean_error"] = float(err.mean())
        out[f"{fig}_mean_abs_error"] = float(np.abs(err).mean())
        out[f"{fig}_within_{TOLERANCE}"] = float((np.abs(err) <= TOLERANCE).mean())
        if len(rows) >= 3 and x.std() > 0 and y.std() > 0:
            out[f"{fig}_r"] = float(stats.pearsonr(x, y).statistic)
            out[f"{fig}_slope"] = float(stats.linregress(x, y).slope)
    for col in ("self_acc_natural", "self_acc_counterfactual", "self_kl_natural", "self_kl_counterfactual"):
        # sweeps from before these columns existed leave them empty: the mean is over the models that have them
        out[col] = float(rows[col].mean()) if col in rows else float("nan")
    for task, g in rows.groupby("train_task"):
        out[f"op_gap_{task}"] = float((g["op"] - g["self_op"]).mean())
    return out


def draw(sweeps: dict[str, pd.DataFrame], path: Path) -> None:
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(10, 4.4))
        axes = fig.subplots(1, 2)
        markers = dict(zip(sweeps, ("o", "^", "s", "D")))
        for ax, f in zip(axes, ("op", "imp")):
            lo, hi = 0.0, 0.0
            for label, rows in sweeps.items():
                for _, r in rows.iterrows():
                    filled = label == list(sweeps)[-1]
                    c = task_color(r["train_task"])
                    ax.scatter(
                        r[f],
                        r[f"self_{f}"],
                        marker=markers[label],
                        s=46,
                        facecolors=c if filled else "none",
                        edgecolors=c,
                    )
                lo = min(lo, rows[f].min(), rows[f"self_{f}"].min())
                hi = max(hi, rows[f].max(), rows[f"self_{f}"].max())
            ax.plot([lo, hi], [lo, hi], color="0.5", lw=1, ls="--", label="y = x")
            ax.set_xlabel(f"measured {f.capitalize()} (nats)")
            ax.set_ylabel(f"self-evaluated {f.capitalize()} (nats)")
        for label, m in markers.items():
            filled = label == list(sweeps)[-1]
            axes[0].scatter(
                [], [], marker=m, facecolors="0.3" if filled else "none", edgecolors="0.3", label=label
            )
        axes[0].legend(title="world model (colour: task)")
        fig.suptitle(
            "Self-evaluation: the model's own world in place of the rule (finetuned models, own task)"
        )
        fig.tight_layout()
        fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "sweeps",
        nargs="+",
        help="sweep directories (each with results.csv and sweep.json); DIR:medium,large keeps those sizes only",
    )
    ap.add_argument("--out", required=True, help="directory for the table and the figure")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pooled: dict[str, list[pd.DataFrame]] = {}
    for arg in args.sweeps:
        path, _, sizes = arg.partition(":")
        d = Path(path)
        label = json.loads((d / "sweep.json").read_text()).get("world_model", "natural")
        own = own_rows(pd.read_csv(d / "results.csv"))
        if sizes:
            own = own[own["size"].isin(sizes.split(","))]
        pooled.setdefault(label, []).append(own)
    sweeps = {k: pd.concat(v, ignore_index=True) for k, v in pooled.items()}
    rows = []
    for label, own in sweeps.items():
        rows.append({**summary(own, label), "size": "all"})
        for size, g in own.groupby("size", sort=False):
            rows.append({**summary(g, label), "size": size})
    table = pd.DataFrame(rows)
    table.to_csv(out / "self_evaluation.csv", index=False)
    cols = [
        "model",
        "size",
        "train_task",
        "op",
        "self_op",
        "self_op_cf_true",
        "imp",
        "self_imp",
        "self_acc_natural",
        "self_acc_counterfactual",
        "self_kl_natural",
        "self_kl_counterfactual",
    ]
    per = pd.concat(
        [g.reindex(columns=cols).assign(world_model=k) for k, g in sweeps.items()], ignore_index=True
    )
    per.to_csv(out / "per_model.csv", index=False)
    draw(sweeps, out / "self_evaluation.png")
    print(table.T.to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
