"""Benchmark the measures side by side, in one run: ``python scripts/bench_measures.py``.

Prints three markdown tables:

1. **exact vs Monte Carlo** at the post's setting (200 histories) and at N = 1,000: wall time per
   measurement and the spread (standard deviation) of Op and Imp across ``--seeds`` seeds, for the ngood4
   oracle (a real optimizer). Each seed draws its own histories. Monte Carlo runs the post's 10 repeats of
   N histories each (10N histories in all), so the exact estimator is shown on N and on 10N histories.
   Times: on pre-drawn histories (the estimators alone; Monte Carlo reuses them in each repeat, the same
   sampling work) and end to end (``measures.measure(..., seed=s)``, history generation included). The exact
   estimator runs without bootstrap intervals here. Targets: exact ≥ 100x faster than Monte Carlo at
   N = 1,000, with a smaller spread.
2. **exact scaling** at N = 10^3 .. 10^6 on pre-drawn histories: the world-model part
   (``transition_probs``), the estimate end to end with a trivial callable policy (Op + Imp, no intervals),
   and with the default 1,000 bootstrap resamples. Target: Op + Imp over 100,000 histories ≤ 1 s, linear in N.
3. **reference policies**: Op, Imp, success and the post's theory for the uniform, natural and oracle
   policies (``agents.reference``) on every task.
4. **the sweep's measure unit** per model size (a random-init transformer, the sweep's 8,192 histories and
   three tasks, one torch thread): the cross-objective table, objective identification, self-evaluation
   and the held-out next-token metrics, with the model's forward passes shared
   (``measures.policies.CachedPolicy``, the pipeline's path) and without (each measure runs its own, as
   before), side by side and interleaved, with the transformer rows each path runs and a check that both
   give the same numbers bit for bit. Times are the process's CPU time (what an idle core would take; wall
   time on a loaded machine swings with the load), the speedup also in wall time. A third column runs the
   shared path with 1,024-row forward batches
   instead of the policy's 8,192 (faster on a CPU, where big batches spill the caches; the numbers are
   checked against the default batches, which is what keeps them identical elsewhere).

Timings are the best of ``--repeats`` runs (the machine is shared; the best run is the least disturbed).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch

import measures
from agents.pipeline.config import SIZE_ORDER, SweepConfig
from agents.pipeline.measure import next_token_quality, policy_rows, self_evaluation
from agents.policy import AgentPolicy
from agents.reference import NaturalPolicy, OraclePolicy, UniformPolicy
from agents.transformer import SplitSeqTransformer, count_parameters
from measures.api import IntervalWarning
from measures.policies import cached
from seqenv.sequence import natural_histories, next_deterministic, transition_probs
from seqenv.tasks import TASKS, good_mask

#: the tables :func:`main` can print
SECTIONS = ("exact", "scaling", "reference", "unit")


def best_time(repeats: int, fn: Callable[..., object], *args: object, **kwargs: object) -> float:
    """Best wall time of ``repeats`` calls ``fn(*args, **kwargs)`` (seconds)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args, **kwargs)
        times.append(time.perf_counter() - t0)
    return min(times)


def fast_oracle(task: str) -> Callable[[np.ndarray], np.ndarray]:
    """The greedy oracle from the deterministic outcomes alone: the lowest action whose outcome is good.

    ``P(good | h, a) = 0.98 [d(h, a) in good] + 0.02 p`` is largest for exactly those actions (all tie when
    none is good: action 0), so this is ``agents.reference.OraclePolicy(task, tie_break="lowest")``, checked
    in :func:`main`, at a fraction of its cost: the benchmark times the estimators, not the policy.
    """
    good = good_mask(task)
    return lambda h: good[next_deterministic(h)].argmax(axis=1)


def exact_vs_monte_carlo(seeds: int, sizes: tuple[int, ...], repeats: int) -> list[str]:
    policy = fast_oracle("ngood4")
    lines = [
        (
            "| N | estimator | histories per measurement | time, histories given | time end to end "
            "| Op mean | Op sd | Imp mean | Imp sd |"
        ),
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for n in sizes:
        setups = [  # (label, method, histories per measurement, kwargs)
            ("exact", "exact", n, {"n_bootstrap": 0}),
            ("exact", "exact", 10 * n, {"n_bootstrap": 0}),
            ("Monte Carlo, 10 repeats", "monte_carlo", n, {}),
        ]
        stats = {}
        for label, method, n_hist, kw in setups:
            results = [
                measures.measure(policy, n_histories=n_hist, seed=s, method=method, **kw)
                for s in range(seeds)
            ]
            h = natural_histories(n_hist, seed=0)
            t_given = best_time(repeats, measures.measure, policy, histories=h, method=method, **kw)
            t_end = best_time(
                repeats, measures.measure, policy, n_histories=n_hist, seed=0, method=method, **kw
            )
            op, imp = np.array([r.op for r in results]), np.array([r.imp for r in results])
            used = n_hist if method == "exact" else 10 * n_hist
            stats[(method, n_hist)] = (t_given, t_end, op.std(ddof=1), imp.std(ddof=1))
            lines.append(
                f"| {n:,} | {label} | {used:,} | {t_given * 1e3:,.2f} ms | {t_end * 1e3:,.1f} ms | {op.mean():.4f} | "
                f"{op.std(ddof=1):.4f} | {imp.mean():.4f} | {imp.std(ddof=1):.4f} |"
            )
        mc, ex, ex10 = stats[("monte_carlo", n)], stats[("exact", n)], stats[("exact", 10 * n)]
        notes.append(
            f"N = {n:,}: on given histories exact is {mc[0] / ex[0]:,.0f}x faster than Monte Carlo "
            f"({mc[0] / ex10[0]:,.0f}x with the same 10N histories; end to end, history generation included: "
            f"{mc[1] / ex[1]:,.0f}x and {mc[1] / ex10[1]:,.0f}x). Spread ratio Monte Carlo / exact: "
            f"Op {mc[2] / ex[2]:.2f} (N histories) and {mc[2] / ex10[2]:.2f} (10N), "
            f"Imp {mc[3] / ex[3]:.2f} and {mc[3] / ex10[3]:.2f}."
        )
    return lines + [""] + notes


def exact_scaling(sizes: tuple[int, ...], repeats: int) -> list[str]:
    def trivial(h: np.ndarray) -> np.ndarray:
        return h[:, -1] % 8

    lines = [
        "| N | world model `transition_probs` | Op + Imp end to end | per 10^5 histories | with 1,000 bootstrap resamples |",
        "|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        h = natural_histories(n, seed=0)
        r = max(1, repeats if n <= 100_000 else 1)
        t_world = best_time(r, transition_probs, h)
        t_end = best_time(r, measures.measure, trivial, histories=h, n_bootstrap=0)
        t_boot = best_time(r, measures.measure, trivial, histories=h)
        lines.append(
            f"| {n:,} | {t_world * 1e3:,.1f} ms | {t_end * 1e3:,.1f} ms | {t_end / n * 1e5 * 1e3:,.1f} ms | "
            f"{t_boot * 1e3:,.1f} ms |"
        )
    return lines


def reference_policies(n: int) -> list[str]:
    policies = {
        "uniform": UniformPolicy(),
        "natural": NaturalPolicy(),
    }
    h = natural_histories(n, seed=0)
    lines = [
        "| policy | task | success | Op | Op_theory | excess Op | Imp | Imp_min | s' (split) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for task in TASKS:
        rows = dict(policies)
        rows["oracle (ties: lowest)"] = OraclePolicy(task, tie_break="lowest")
        rows["oracle (ties: random)"] = OraclePolicy(task, tie_break="random")
        for name, policy in rows.items():
            r = measures.measure(policy, task=task, histories=h, n_bootstrap=200)

            def fig(key: str, r: measures.MeasureResult = r) -> str:
                lo, hi = r.ci[key]
                return f"{getattr(r, key):.4f} [{lo:.4f}, {hi:.4f}]"

            lines.append(
                f"| {name} | {task} | {fig('success')} | {fig('op')} | {r.op_theory:.4f} | {r.excess_op:+.4f} | "
                f"{fig('imp')} | {r.imp_min:.4f} | {r.baseline_success:.4f} |"
            )
    return lines


def measure_unit(policy: AgentPolicy, sweep: SweepConfig, histories: np.ndarray, share: bool) -> tuple:
    """The rows and per-model figures of the sweep's measure unit (``agents.pipeline.measure.measure_model``
    without the checkpoint file), the forward passes shared or run by each measure as before."""
    view = cached(policy) if share else policy
    rows = policy_rows(view, histories, sweep, share=share)
    return rows, self_evaluation(view, histories, sweep), next_token_quality(policy.model, sweep)


def same_numbers(a: tuple, b: tuple) -> bool:
    """Bit-for-bit equality of two :func:`measure_unit` results (NaN equal to NaN)."""
    try:
        pd.testing.assert_frame_equal(a[0], b[0], check_exact=True)
    except AssertionError:
        return False
    return all(
        np.array_equal(list(x.values()), list(y.values()), equal_nan=True) for x, y in zip(a[1:], b[1:])
    )


def speedup(cpu: dict[str, float], wall: dict[str, float], name: str) -> str:
    """CPU-time speedup of setup ``name`` over ``"own"``, with the wall-time one in parentheses."""
    return f"{cpu['own'] / cpu[name]:.2f}x ({wall['own'] / wall[name]:.2f}x)"


def measure_units(sizes: tuple[str, ...], n: int, repeats: int) -> list[str]:
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", IntervalWarning)  # random-init models: rough intervals, not timed here
    sweep = SweepConfig(n_histories=n)
    h = natural_histories(n, seed=sweep.eval_seed)
    lines = [
        "| size | params | transformer rows, each measure its own | shared | CPU time, each its own | shared "
        "| speedup, CPU (wall) | same numbers | shared, 1,024-row batches | speedup, CPU (wall) | same numbers |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for size in sizes:
        torch.manual_seed(0)
        policy = AgentPolicy(SplitSeqTransformer(size))
        rows: list[int] = []
        policy.model.register_forward_hook(lambda module, args, out, rows=rows: rows.append(len(args[0])))
        setups = {"own": (False, 8192), "shared": (True, 8192), "small batches": (True, 1024)}
        cpu, wall = dict.fromkeys(setups, np.inf), dict.fromkeys(setups, np.inf)
        results, n_rows = {}, {}
        for _ in range(repeats):  # interleaved: the machine's load falls on every setup alike
            for name, (share, batch) in setups.items():
                policy.batch_size = batch
                rows.clear()
                t0, c0 = time.perf_counter(), time.process_time()
                results[name] = measure_unit(policy, sweep, h, share)
                cpu[name] = min(cpu[name], time.process_time() - c0)
                wall[name] = min(wall[name], time.perf_counter() - t0)
                n_rows[name] = sum(rows)
        same = {name: "yes" if same_numbers(results["own"], results[name]) else "**no**" for name in setups}

        lines.append(
            f"| {size} | {count_parameters(policy.model):,} | {n_rows['own']:,} | {n_rows['shared']:,} | "
            f"{cpu['own']:.2f} s | {cpu['shared']:.2f} s | {speedup(cpu, wall, 'shared')} | {same['shared']} | "
            f"{cpu['small batches']:.2f} s | {speedup(cpu, wall, 'small batches')} | {same['small batches']} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds for the spread of exact vs Monte Carlo")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure (best is reported)")
    parser.add_argument("--max-n", type=int, default=1_000_000, help="largest N of the scaling table")
    parser.add_argument("--reference-n", type=int, default=65_536, help="histories for the reference table")
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=SECTIONS,
        default=list(SECTIONS),
        help="which tables to print (default all)",
    )
    parser.add_argument("--unit-sizes", nargs="+", choices=SIZE_ORDER, default=list(SIZE_ORDER))
    parser.add_argument(
        "--unit-n", type=int, default=8192, help="histories of the measure unit (the sweep's)"
    )
    args = parser.parse_args()
    h = natural_histories(4096, seed=1)
    assert (
        fast_oracle("ngood4")(h) == OraclePolicy("ngood4", tie_break="lowest").action_probs(h).argmax(1)
    ).all()
    print(
        f"# measures benchmark — {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared)\n"
    )
    if "exact" in args.sections:
        print("## exact vs Monte Carlo (ngood4 oracle, ties to the lowest action)\n")
        print("\n".join(exact_vs_monte_carlo(args.seeds, (200, 1000), args.repeats)) + "\n")
    if "scaling" in args.sections:
        sizes = tuple(n for n in (10**3, 10**4, 10**5, 10**6) if n <= args.max_n)
        print("## exact estimator scaling (trivial callable policy)\n")
        print("\n".join(exact_scaling(sizes, args.repeats)) + "\n")
    if "reference" in args.sections:
        print(
            f"## reference policies ({args.reference_n:,} histories, seed 0, greedy, split history, 95% CI)\n"
        )
        print("\n".join(reference_policies(args.reference_n)) + "\n")
    if "unit" in args.sections:
        print(
            f"## the sweep's measure unit ({args.unit_n:,} histories, 3 tasks, 1,000 bootstrap resamples, "
            f"random-init models, 1 torch thread, best of {args.repeats})\n"
        )
        print("\n".join(measure_units(tuple(args.unit_sizes), args.unit_n, args.repeats)))


if __name__ == "__main__":
    main()
