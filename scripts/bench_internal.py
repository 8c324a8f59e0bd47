"""Benchmark ``measures.internal.site_measures``, in one run: ``python scripts/bench_internal.py``.

Prints two markdown tables (torch on ``--threads`` threads, 1 by default; random-initialised models, whose
cost is that of trained ones):

1. **target**: every site of one ``large`` model over ``--n`` (1,024) histories, end to end, wall and CPU
   time, and the same split into the Jacobian part (``site_jacobians``: ``J_h`` and one ``J_g`` per site,
   7 vjps each) and the determinant part (``site_terms``, float64). Target: ≤ 60 s on 2 cores.
2. **scaling with width** over ``--scaling-n`` histories: the four sizes of the experiment, then 3-block
   models of growing width (``n_head = 4``), per history: Jacobian time per Jacobian (one ``J_h`` or ``J_g``)
   and determinant time per site. The log-log slope of each against the width is printed below the table.

Timings are the best of ``--repeats`` runs (the machine is shared; the best run is the least disturbed).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from agents.transformer import SIZES, SplitSeqTransformer, TransformerConfig, count_parameters
from measures.internal import site_measures, site_terms
from measures.internal_sites import site_jacobians
from seqenv.sequence import natural_histories

WIDTHS = (32, 64, 128, 192, 256)  #: synthetic 3-block models of these widths


def split_times(model: SplitSeqTransformer, h: np.ndarray, batch_size: int) -> tuple[float, float, int]:
    """Seconds in Jacobians and in determinants for every site over ``h``, and the number of Jacobians."""
    sites = model.internal_sites()
    jac_s = det_s = 0.0
    for start in range(0, len(h), batch_size):
        tokens = torch.from_numpy(h[start : start + batch_size])
        t0 = time.perf_counter()
        jac = site_jacobians(model, tokens, sites)
        t1 = time.perf_counter()
        site_terms(jac, sites)
        det_s += time.perf_counter() - t1
        jac_s += t1 - t0
    return jac_s, det_s, len(sites) + 1


def best(repeats: int, fn, *args):  # noqa: ANN001, ANN202 - a timing helper
    """The run of ``fn(*args)`` with the least total time, as ``(wall, cpu, result)``."""
    runs = []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        out = fn(*args)
        runs.append((time.perf_counter() - w, time.process_time() - c, out))
    return min(runs, key=lambda r: r[0])


def target_table(n: int, batch_size: int, repeats: int) -> list[str]:
    torch.manual_seed(0)
    model = SplitSeqTransformer("large").eval()
    h = natural_histories(n, seed=0)
    site_measures(model, h[:8])  # warm-up
    wall, cpu, df = best(repeats, site_measures, model, h, None, "policy", batch_size)
    s_wall, s_cpu, (jac_s, det_s, n_jac) = best(repeats, split_times, model, h, batch_size)
    lines = [
        "| model | sites | histories | end to end, wall | CPU | Jacobians | determinants | singular J_g J_gᵀ |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| large ({count_parameters(model):,} parameters) | {n_jac - 1} | {n:,} | {wall:.1f} s | {cpu:.1f} s "
        f"| {jac_s:.1f} s | {det_s:.2f} s | {int(df.singular.sum())} of {len(df):,} |",
    ]
    lines.append("")
    lines.append(
        f"split run: {s_wall:.1f} s wall, {s_cpu:.1f} s CPU. cond(J_g J_gᵀ) per site, median [max]: "
        + "; ".join(
            f"{site} {g.median():.3g} [{g.max():.3g}]" for site, g in df.groupby("site", sort=False).cond_g
        )
    )
    return lines


def scaling_table(n: int, batch_size: int, repeats: int) -> tuple[list[str], str]:
    models = [(name, cfg) for name, cfg in SIZES.items()] + [
        (f"3 blocks, width {w}", TransformerConfig(n_layer=3, n_head=4, n_embd=w)) for w in WIDTHS
    ]
    h = natural_histories(n, seed=1)
    lines = [
        "| model | width | blocks | sites | ms per history, all sites | Jacobian, ms per history and Jacobian "
        "| determinant, µs per history and site |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    fit = []
    for name, cfg in models:
        torch.manual_seed(0)
        model = SplitSeqTransformer(cfg).eval()
        split_times(model, h[:8], batch_size)  # warm-up
        _, _, (jac_s, det_s, n_jac) = best(repeats, split_times, model, h, batch_size)
        per_jac = 1e3 * jac_s / (n * n_jac)
        per_det = 1e6 * det_s / (n * (n_jac - 1))
        lines.append(
            f"| {name} | {cfg.n_embd} | {cfg.n_layer} | {n_jac - 1} | {1e3 * (jac_s + det_s) / n:.2f} "
            f"| {per_jac:.3f} | {per_det:.1f} |"
        )
        if name.startswith("3 blocks"):
            fit.append((cfg.n_embd, per_jac, per_det))
    w, j, d = (np.log(np.array(x)) for x in zip(*fit, strict=True))
    slopes = (
        f"log-log slope against width ({WIDTHS[0]}..{WIDTHS[-1]}, 3 blocks): Jacobian "
        f"{np.polyfit(w, j, 1)[0]:.2f}, determinant {np.polyfit(w, d, 1)[0]:.2f}"
    )
    return lines, slopes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024, help="histories for the target (default 1024)")
    parser.add_argument("--scaling-n", type=int, default=256, help="histories per model in the scaling table")
    parser.add_argument("--batch-size", type=int, default=256, help="histories per batch of Jacobians")
    parser.add_argument("--repeats", type=int, default=1, help="runs per timing; the best is shown")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} CPUs, {platform.processor()}, "
        f"load average {os.getloadavg()[0]:.1f}\n"
    )
    print("\n".join(target_table(args.n, args.batch_size, args.repeats)))
    print()
    lines, slopes = scaling_table(args.scaling_n, args.batch_size, args.repeats)
    print("\n".join(lines))
    print()
    print(slopes)


if __name__ == "__main__":
    main()
