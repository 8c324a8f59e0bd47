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

Timings are the best of ``--repeats`` runs (the machine is shared; the best run is the least disturbed).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

import numpy as np

import measures
from agents.reference import NaturalPolicy, OraclePolicy, UniformPolicy
from seqenv.sequence import natural_histories, next_deterministic, transition_probs
from seqenv.tasks import TASKS, good_mask


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds for the spread of exact vs Monte Carlo")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure (best is reported)")
    parser.add_argument("--max-n", type=int, default=1_000_000, help="largest N of the scaling table")
    parser.add_argument("--reference-n", type=int, default=65_536, help="histories for the reference table")
    args = parser.parse_args()
    h = natural_histories(4096, seed=1)
    assert (
        fast_oracle("ngood4")(h) == OraclePolicy("ngood4", tie_break="lowest").action_probs(h).argmax(1)
    ).all()
    print(
        f"# measures benchmark — {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared)\n"
    )
    print("## exact vs Monte Carlo (ngood4 oracle, ties to the lowest action)\n")
    print("\n".join(exact_vs_monte_carlo(args.seeds, (200, 1000), args.repeats)))
    sizes = tuple(n for n in (10**3, 10**4, 10**5, 10**6) if n <= args.max_n)
    print("\n## exact estimator scaling (trivial callable policy)\n")
    print("\n".join(exact_scaling(sizes, args.repeats)))
    print(
        f"\n## reference policies ({args.reference_n:,} histories, seed 0, greedy, split history, 95% CI)\n"
    )
    print("\n".join(reference_policies(args.reference_n)))


if __name__ == "__main__":
    main()
