"""Internal differential Op and Imp of every model of one or more sweeps (docs/internal.md, "Study").

    python scripts/study_internal.py DIR [DIR ...] --out OUT [--n 1024] [--output policy]

For every pretrained and finetuned checkpoint of ``DIR/results.csv``, ``measures.internal.site_measures`` on the
first ``--n`` histories of ``DIR/histories.npy`` (cached in ``OUT/per_history/``: a rerun only analyses).
Writes to ``OUT``:

* ``sites.csv``: per (model, site), mean internal Op and Imp over histories with 95% bootstrap intervals
  (``measures.intervals.bootstrap_interval``: BCa, or the jackknife fallback), the share of histories where
  ``J_g J_g^T`` is singular (Op undefined, left out of the means), the median condition number, and the
  model's behavioural ``op`` and own-task ``excess_op`` from ``results.csv``;
* ``finetune_delta.csv``: finetuned minus its own pretrained model, per site, paired over the same histories;
* ``correlations.csv``: across models, Pearson and Spearman correlation of the per-model mean internal Op
  (each site; ``last.attn`` / ``last.mlp``, the last block's sites whatever the depth; and the strongest site,
  the one with the largest mean internal Op) with behavioural Op (all models) and with own-task
  ``excess_op`` (finetuned models), with bootstrap intervals over models;
* ``separation.csv``: whether a site's internal Op separates the training objectives (finetuned models only;
  raw, and minus the model's own pretrained value): Kruskal-Wallis and one-way ANOVA p-values across
  ``train_task``, and leave-one-out nearest-centroid accuracy against its chance level, with the binomial
  tail probability of reaching it by chance;
* ``summary.md`` (these as markdown tables), ``internal_sites.png`` and ``internal_vs_behaviour.png``.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib import rc_context
from matplotlib.lines import Line2D
from scipy import stats

import agents
from agents.pipeline import plotting as pl
from agents.pipeline.layout import RESULTS_FILE, load_histories
from measures.internal import site_measures
from measures.intervals import bootstrap_interval

LEVEL = 0.95
PRETRAINED = Line2D([], [], color="0.5", marker="o", ls="", label="pretrained")


def models_of(sweep: Path) -> pd.DataFrame:
    """One row per pretrained or finetuned model: name, kind, size, seed, train_task, checkpoint, op, excess_op."""
    res = pd.read_csv(sweep / RESULTS_FILE)
    res = res[res["kind"].isin(["pretrained", "finetuned"])]
    own = res[res["train_task"] == res["eval_task"]].set_index("model")["excess_op"]
    out = res.groupby("model", sort=False).first().reset_index()
    out["excess_op"] = out["model"].map(own)  # NaN for pretrained models: they have no task of their own
    out["train_task"] = out["train_task"].fillna("")
    out["sweep"] = sweep.name
    return out[
        ["sweep", "model", "kind", "size", "params", "seed", "train_task", "checkpoint", "op", "excess_op"]
    ]


def per_history(
    sweep: Path, model: pd.Series, n: int, output: str, cache: Path, batch_size: int
) -> pd.DataFrame:
    path = cache / f"{sweep.name}--{model['model']}--{output}--{n}.csv"
    if path.exists():
        return pd.read_csv(path)
    h = load_histories(sweep)[:n]
    torch.manual_seed(0)
    df = site_measures(agents.load(sweep / model["checkpoint"]), h, output=output, batch_size=batch_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return df


def relabel(site: str, n_layer: int) -> str | None:
    """``last.attn`` / ``last.mlp`` for the last block's sites (comparable across depths), else ``None``."""
    m = re.fullmatch(r"block(\d+)\.(attn|mlp)", site)
    return f"last.{m.group(2)}" if m and int(m.group(1)) == n_layer - 1 else None


def mean_interval(x: np.ndarray, weights: np.ndarray) -> tuple[float, float, float]:
    """Mean of ``x`` (NaN left out) and its bootstrap interval from multinomial ``weights`` ``(B, N)``."""
    ok = np.isfinite(x)
    if ok.sum() < 2:
        return float(np.nanmean(x)) if ok.any() else np.nan, np.nan, np.nan
    v = np.where(ok, x, 0.0)
    boot = (weights @ v) / np.maximum(weights @ ok, 1)
    jack = (v.sum() - v[ok]) / (ok.sum() - 1)
    iv = bootstrap_interval(v.sum() / ok.sum(), boot, jack, level=LEVEL)
    return float(v.sum() / ok.sum()), float(iv.lo), float(iv.hi)


def site_table(models: pd.DataFrame, runs: dict[str, pd.DataFrame], n_boot: int, seed: int) -> pd.DataFrame:
    rows = []
    rng = np.random.default_rng(seed)
    for _, m in models.iterrows():
        df = runs[m["key"]]
        sites = list(dict.fromkeys(df["site"]))
        n_layer = 1 + max(int(s[5 : s.index(".")]) for s in sites)
        n = df["history"].nunique()
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)  # (B, N)
        for site, g in df.groupby("site", sort=False):
            row = {**m.to_dict(), "site": site, "label": relabel(site, n_layer), "n_layer": n_layer}
            for col in ("op", "imp"):
                row[col + "_int"], row[col + "_int_lo"], row[col + "_int_hi"] = mean_interval(
                    g[col].to_numpy(), weights
                )
            row["singular_share"] = float(g["singular"].mean())
            row["cond_g_median"] = float(g["cond_g"].median())
            row["cond_g_max"] = float(g["cond_g"].max())
            rows.append(row)
    return pd.DataFrame(rows)


def finetune_delta(
    models: pd.DataFrame, runs: dict[str, pd.DataFrame], n_boot: int, seed: int
) -> pd.DataFrame:
    rng = np.random.default_rng(seed + 1)
    pre = models[models["kind"] == "pretrained"].set_index(["sweep", "size", "seed"])["key"]
    rows = []
    for _, m in models[models["kind"] == "finetuned"].iterrows():
        base = pre.get((m["sweep"], m["size"], m["seed"]))
        if base is None:
            continue
        a, b = runs[m["key"]], runs[base]
        n = a["history"].nunique()
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)
        for site in dict.fromkeys(a["site"]):
            row = {k: m[k] for k in ("sweep", "model", "size", "seed", "train_task")} | {"site": site}
            for col in ("op", "imp"):
                d = (
                    a.loc[a.site == site, col].to_numpy() - b.loc[b.site == site, col].to_numpy()
                )  # same histories
                row[f"d{col}"], row[f"d{col}_lo"], row[f"d{col}_hi"] = mean_interval(d, weights)
            rows.append(row)
    return pd.DataFrame(rows)


def features(sites: pd.DataFrame, col: str = "op_int") -> pd.DataFrame:
    """Per model (rows) the internal measure on each site, last-block label and the strongest site (columns)."""
    wide = sites.pivot_table(index="key", columns="site", values=col, sort=False)
    last = sites.dropna(subset=["label"]).pivot_table(index="key", columns="label", values=col)
    out = wide.join(last)
    out["strongest"] = wide.max(axis=1)
    return out


def corr_interval(x: np.ndarray, y: np.ndarray, method: str, n_boot: int, rng: np.random.Generator) -> tuple:
    """Correlation of ``x`` and ``y`` and its bootstrap interval over the pairs (models)."""
    fn = stats.pearsonr if method == "pearson" else stats.spearmanr
    n = len(x)
    if n < 4 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return np.nan, np.nan, np.nan
    est = float(fn(x, y)[0])
    idx = rng.integers(0, n, size=(n_boot, n))
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = np.array([fn(x[i], y[i])[0] if np.ptp(x[i]) and np.ptp(y[i]) else np.nan for i in idx])
        jack = np.array([fn(np.delete(x, i), np.delete(y, i))[0] for i in range(n)])
    boot = boot[np.isfinite(boot)]
    iv = bootstrap_interval(est, boot, jack, level=LEVEL, bounds=(-1.0, 1.0))
    return est, float(iv.lo), float(iv.hi)


def correlations(models: pd.DataFrame, feats: pd.DataFrame, n_boot: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed + 2)
    beh = models.set_index("key")
    rows = []
    for feat in feats.columns:
        for target in ("op", "excess_op"):
            pair = pd.concat([feats[feat], beh[target]], axis=1, keys=["x", "y"]).dropna()
            for method in ("pearson", "spearman"):
                r, lo, hi = corr_interval(pair.x.to_numpy(), pair.y.to_numpy(), method, n_boot, rng)
                rows.append(
                    {
                        "feature": feat,
                        "behaviour": target,
                        "method": method,
                        "n_models": len(pair),
                        "r": r,
                        "lo": lo,
                        "hi": hi,
                    }
                )
    return pd.DataFrame(rows)


def nearest_centroid_loo(x: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out accuracy of the nearest class centroid (``x`` ``(n, d)``, standardised by the caller)."""
    hits = []
    for i in range(len(x)):
        rest = np.arange(len(x)) != i
        classes = [c for c in np.unique(labels) if (labels[rest] == c).any()]
        cents = np.array([x[rest & (labels == c)].mean(axis=0) for c in classes])
        hits.append(classes[int(np.argmin(((cents - x[i]) ** 2).sum(axis=1)))] == labels[i])
    return float(np.mean(hits))


def separation(models: pd.DataFrame, feats: pd.DataFrame) -> pd.DataFrame:
    beh = models.set_index("key")
    fin = beh[beh["kind"] == "finetuned"]
    pre = beh[beh["kind"] == "pretrained"].reset_index().set_index(["sweep", "size", "seed"])["key"]
    base = [pre.get((s, z, d)) for s, z, d in zip(fin["sweep"], fin["size"], fin["seed"], strict=True)]
    rows = []
    multi = [
        c for c in ("block0.attn", "block0.mlp", "last.attn", "last.mlp") if c in feats
    ]  # every model has them
    for variant in ("raw", "minus pretrained"):
        for feat in [*feats.columns, "+".join(multi)]:
            cols = multi if "+" in feat else [feat]
            x = feats.loc[fin.index, cols].to_numpy()
            if variant != "raw":
                x = x - np.array(
                    [feats.loc[b, cols].to_numpy() if b else np.full(len(cols), np.nan) for b in base]
                )
            ok = np.isfinite(x).all(axis=1)
            x, labels = x[ok], fin["train_task"].to_numpy()[ok]
            groups = [x[labels == t, 0] for t in np.unique(labels)]
            row = {"feature": feat, "variant": variant, "n_models": len(x), "n_tasks": len(groups)}
            if len(groups) >= 2 and min(len(g) for g in groups) >= 2 and len(cols) == 1:
                row["kruskal_p"] = float(stats.kruskal(*groups).pvalue)
                row["anova_p"] = float(stats.f_oneway(*groups).pvalue)
            if len(groups) >= 2 and len(x) > len(groups):
                z = (x - x.mean(axis=0)) / np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
                acc = nearest_centroid_loo(z, labels)
                chance = 1.0 / len(groups)
                row |= {
                    "loo_accuracy": acc,
                    "chance": chance,
                    "p_chance": float(stats.binomtest(round(acc * len(x)), len(x), chance, "greater").pvalue),
                }
            rows.append(row)
    return pd.DataFrame(rows)


def fmt(v: float, lo: float | None = None, hi: float | None = None, digits: int = 3) -> str:
    if not np.isfinite(v):
        return "—"
    if lo is None or not np.isfinite(lo):
        return f"{v:.{digits}g}"
    return f"{v:.{digits}g} [{lo:.{digits}g}, {hi:.{digits}g}]"


def markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def summary(
    sites: pd.DataFrame, delta: pd.DataFrame, corr: pd.DataFrame, sep: pd.DataFrame, args: argparse.Namespace
) -> str:
    order = {s: i for i, s in enumerate(pl.SIZE_MARKERS)}
    sites = sites.assign(column=np.where(sites["kind"] == "pretrained", "pretrained", sites["train_task"]))
    parts = [
        f"# Internal Op and Imp: {', '.join(map(str, args.sweeps))}\n",
        f"{args.n} histories per model, output `{args.output}`, {args.n_bootstrap} bootstrap resamples, {LEVEL:.0%} intervals.\n",
    ]
    for col, title in (("op", "Internal Op (nats)"), ("imp", "Internal Imp (nats)")):
        rows = []
        for (size, site), g in sorted(
            sites.groupby(["size", "site"]), key=lambda kv: (order.get(kv[0][0], 9), kv[0][1])
        ):
            row = {"size": size, "site": site}
            for c, gc in g.groupby("column"):
                if len(gc) == 1:
                    row[c] = fmt(
                        gc[col + "_int"].iloc[0], gc[col + "_int_lo"].iloc[0], gc[col + "_int_hi"].iloc[0]
                    )
                else:  # several seeds: mean over models, t interval across them
                    v = gc[col + "_int"].to_numpy()
                    half = stats.t.ppf((1 + LEVEL) / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
                    row[c] = fmt(v.mean(), v.mean() - half, v.mean() + half) + f" (n={len(v)})"
            rows.append(row)
        parts += [f"## {title} per site and size\n", markdown(pd.DataFrame(rows).fillna("—")), ""]
    if len(delta):
        d = delta.assign(
            **{
                "Δ Op": [fmt(*r) for r in delta[["dop", "dop_lo", "dop_hi"]].to_numpy()],
                "Δ Imp": [fmt(*r) for r in delta[["dimp", "dimp_lo", "dimp_hi"]].to_numpy()],
            }
        )
        parts += [
            "## Finetuned minus pretrained, paired over histories\n",
            markdown(d[["sweep", "model", "site", "Δ Op", "Δ Imp"]]),
            "",
        ]
    c = corr.assign(r=[fmt(*v) for v in corr[["r", "lo", "hi"]].to_numpy()])
    c = c.pivot_table(
        index=["feature", "n_models", "behaviour"], columns="method", values="r", aggfunc="first"
    ).reset_index()
    parts += ["## Correlation across models of internal Op with behaviour\n", markdown(c), ""]
    s = sep.copy()
    for k in ("kruskal_p", "anova_p", "loo_accuracy", "chance", "p_chance"):
        s[k] = [fmt(v) for v in s.get(k, pd.Series(np.nan, index=s.index)).astype(float)]
    parts += ["## Does a site's internal Op separate the objectives? (finetuned models)\n", markdown(s), ""]
    cond = (
        sites.groupby("site")
        .agg(
            singular_share=("singular_share", "mean"),
            cond_g_median=("cond_g_median", "median"),
            cond_g_max=("cond_g_max", "max"),
        )
        .reset_index()
    )
    parts += ["## Conditioning of J_g J_gᵀ\n", markdown(cond.round(4)), ""]
    return "\n".join(parts)


def figures(sites: pd.DataFrame, feats: pd.DataFrame, models: pd.DataFrame, out: Path) -> list[Path]:
    sizes = pl.sizes_in(sites)
    with rc_context(pl.STYLE):
        fig, axes = pl.subplots(1, len(sizes), figsize=(3.6 * len(sizes), 3.4), squeeze=False)
        for ax, size in zip(axes[0], sizes, strict=True):
            g = sites[sites["size"] == size]
            names = list(dict.fromkeys(g["site"]))
            for (_, task, kind), m in g.groupby(["key", "train_task", "kind"], sort=False):
                x = np.array([names.index(s) for s in m["site"]]) + (
                    0 if kind == "pretrained" else 0.08 * (1 + pl.tasks_in(g).index(task))
                )
                yerr = np.abs(m[["op_int_lo", "op_int_hi"]].to_numpy().T - m["op_int"].to_numpy())
                ax.errorbar(
                    x,
                    m["op_int"],
                    yerr=np.nan_to_num(yerr),
                    fmt=pl.size_marker(size),
                    ms=4,
                    lw=0.8,
                    color="0.5" if kind == "pretrained" else pl.task_color(task),
                )
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(names, rotation=60, ha="right")
            ax.set_title(size)
            ax.set_ylabel("internal Op (nats)")
        pl.legend(axes[0][-1], pl.tasks_in(sites), [], extra=[PRETRAINED])
        paths = [pl.save(fig, out / "internal_sites.png")]
        fig, axes = pl.subplots(1, 2, figsize=(8, 3.6))
        data = models.set_index("key").join(feats["strongest"]).reset_index()
        data["train_task"] = data["train_task"].replace("", "pretrained")
        for ax, target in zip(axes, ("op", "excess_op"), strict=True):
            pl.scatter(ax, data.dropna(subset=[target]), target, "strongest", "train_task")
            ax.set_xlabel(f"behavioural {target} (nats)")
            ax.set_ylabel("internal Op, strongest site (nats)")
        tasks = [t for t in pl.tasks_in(data) if t != "pretrained"]
        pl.legend(axes[0], tasks, pl.sizes_in(data), extra=[PRETRAINED])
        paths.append(pl.save(fig, out / "internal_vs_behaviour.png"))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "sweeps", nargs="+", type=Path, help="sweep directories (with results.csv, histories.npy)"
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for the tables and figures")
    parser.add_argument(
        "--n", type=int, default=1024, help="histories per model (the first N of histories.npy)"
    )
    parser.add_argument("--output", choices=("policy", "world"), default="policy", help="what F reads")
    parser.add_argument(
        "--n-bootstrap", type=int, default=2000, help="bootstrap resamples for every interval"
    )
    parser.add_argument("--batch-size", type=int, default=256, help="histories per batch of Jacobians")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    models = pd.concat([models_of(d) for d in args.sweeps], ignore_index=True)
    models["key"] = models["sweep"] + "/" + models["model"]
    runs = {}
    for i, (_, m) in enumerate(models.iterrows()):
        sweep = next(d for d in args.sweeps if d.name == m["sweep"])
        runs[m["key"]] = per_history(sweep, m, args.n, args.output, args.out / "per_history", args.batch_size)
        print(f"[{i + 1}/{len(models)}] {m['key']}", flush=True)
    sites = site_table(models, runs, args.n_bootstrap, args.seed)
    delta = finetune_delta(models, runs, args.n_bootstrap, args.seed)
    feats = features(sites)
    corr = correlations(models, feats, args.n_bootstrap, args.seed)
    sep = separation(models, feats)
    for name, df in (
        ("sites", sites),
        ("finetune_delta", delta),
        ("correlations", corr),
        ("separation", sep),
    ):
        df.to_csv(args.out / f"{name}.csv", index=False)
    (args.out / "summary.md").write_text(summary(sites, delta, corr, sep, args))
    for p in figures(sites, feats, models, args.out):
        print("wrote", p)
    print("wrote", args.out / "summary.md")


if __name__ == "__main__":
    main()
