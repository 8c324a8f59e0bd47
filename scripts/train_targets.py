"""Reproduce the agents' targets (README "Training agents"): real runs, real numbers, wall and CPU times.

1. ``tiny`` quick preset: pretrain + finetune on ngood4 with the ``quick`` budget, once per method in
   ``--methods``; target <= 180 s of CPU.
2. every size in ``--sizes`` (default ``large``): pretrain with the full budget, report next-token accuracy
   on even targets (target >= 0.95 for large; the limit is 0.9825);
3. finetune it on every task with each method in ``--methods``; report the exact greedy success, the
   uniform and oracle levels on the same held-out histories, and ``frac_of_oracle =
   (s - s_uniform) / (s_oracle - s_uniform)`` (target >= 0.8 for large on every task).

Every run writes its checkpoint under ``--out`` and resumes from it, so an interrupted script picks up where
it stopped (finished runs are not redone). Results go to ``<out>/targets.json`` and ``<out>/targets.md``.

    python scripts/train_targets.py --out runs/targets                  # tiny quick + large, REINFORCE
    python scripts/train_targets.py --out runs/targets --sizes medium --methods positive reinforce
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from agents.finetune import FINETUNE_METHODS, FinetuneConfig, finetune
from agents.pretrain import PretrainConfig, pretrain
from agents.transformer import SIZES
from seqenv.tasks import TASKS


def timed(fn, *args, **kwargs):
    """Run ``fn`` and return its result with the wall and CPU seconds it took (CPU of all threads)."""
    w, c = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - w, time.process_time() - c


def quick_tiny(root: Path, seed: int, method: str, threads: int, progress: bool) -> dict:
    """The quick preset: tiny pretrained and finetuned on ngood4 with the quick budget, timed in CPU seconds."""
    pre, w1, c1 = timed(
        pretrain,
        PretrainConfig.preset("tiny", seed=seed, budget="quick", threads=threads),
        root / "tiny-quick.pt",
        progress=progress,
    )
    cfg = FinetuneConfig.preset(
        "tiny", task="ngood4", method=method, seed=seed, budget="quick", threads=threads
    )
    ft, w2, c2 = timed(
        finetune, root / "tiny-quick.pt", cfg, root / f"tiny-quick-ngood4-{method}.pt", progress=progress
    )
    return {
        "method": method,
        "acc_even": pre["acc_even"],
        "acc_odd": pre["acc_odd"],
        "success": ft["success"],
        "frac_of_oracle": ft["frac_of_oracle"],
        "pretrain_steps": pre["steps"],
        "finetune_steps": cfg.steps,
        "wall_s": w1 + w2,
        "cpu_s": c1 + c2,
        "note": "times are 0 when the runs were already finished (rerun with a fresh --out to time them)",
    }


def _finetune_job(
    pre_path: Path, cfg: FinetuneConfig, out: Path, progress: bool
) -> tuple[dict, float, float]:
    """One finetuning in a worker process (picklable top-level function for the process pool)."""
    torch.set_num_threads(cfg.threads or 1)
    return timed(finetune, pre_path, cfg, out, progress=progress)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="directory for checkpoints and results")
    ap.add_argument(
        "--sizes",
        nargs="*",
        default=["large"],
        choices=list(SIZES),
        help="sizes to pretrain and finetune (none: quick preset only)",
    )
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--methods", nargs="+", default=["reinforce"], choices=list(FINETUNE_METHODS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--jobs", type=int, default=1, help="finetunings of a size run this many at a time")
    ap.add_argument("--skip-quick", action="store_true", help="skip the tiny quick-preset timing")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    progress = not args.quiet
    results: dict = {"seed": args.seed, "threads": args.threads, "sizes": {}}
    if not args.skip_quick:
        results["tiny_quick"] = [
            quick_tiny(args.out, args.seed, m, args.threads, progress) for m in args.methods
        ]
        print(json.dumps(results["tiny_quick"], indent=2))
    for size in args.sizes:
        pre_path = args.out / f"{size}-s{args.seed}.pt"
        pre_cfg = PretrainConfig.preset(size, seed=args.seed, threads=args.threads)
        pre, w, c = timed(pretrain, pre_cfg, pre_path, progress=progress)
        entry = {"pretrain": {**pre, "this_call_wall_s": w, "this_call_cpu_s": c}, "finetune": {}}
        jobs = {
            f"{task}/{method}": (
                pre_path,
                FinetuneConfig.preset(
                    size, task=task, method=method, seed=args.seed, threads=args.threads, checkpoint_every=50
                ),
                args.out / f"{size}-s{args.seed}-{task}-{method}.pt",
                progress and args.jobs == 1,
            )
            for method in args.methods
            for task in args.tasks
        }
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
            futures = {key: pool.submit(_finetune_job, *job) for key, job in jobs.items()}
            for key, fut in futures.items():
                ft, w, c = fut.result()
                entry["finetune"][key] = {**ft, "this_call_wall_s": w, "this_call_cpu_s": c}
                print(f"{size} {key}: success {ft['success']:.4f} frac_of_oracle {ft['frac_of_oracle']:.3f}")
        results["sizes"][size] = entry
        (args.out / "targets.json").write_text(json.dumps(results, indent=2, default=str))
    (args.out / "targets.json").write_text(json.dumps(results, indent=2, default=str))
    (args.out / "targets.md").write_text(markdown(results))
    print(markdown(results))


def markdown(results: dict) -> str:
    lines = []
    if "tiny_quick" in results:
        lines += [
            "| quick preset (tiny) | method | acc_even | acc_odd | ngood4 success | frac_of_oracle | wall s | CPU s |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for q in results["tiny_quick"]:
            lines.append(
                f"| pretrain {q['pretrain_steps']} + finetune {q['finetune_steps']} steps | {q['method']} | "
                f"{q['acc_even']:.4f} | {q['acc_odd']:.4f} | {q['success']:.4f} | {q['frac_of_oracle']:.3f} | "
                f"{q['wall_s']:.0f} | {q['cpu_s']:.0f} |"
            )
        lines.append("")
    lines += [
        (
            "| size | acc_even | acc_odd | pretrain wall s | task | method | success | s_uniform | s_oracle | "
            "frac_of_oracle | finetune wall s |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size, entry in results["sizes"].items():
        p = entry["pretrain"]
        for key, f in entry["finetune"].items():
            task, method = key.split("/")
            lines.append(
                f"| {size} | {p['acc_even']:.4f} | {p['acc_odd']:.4f} | {p['wall_time_s']:.0f} | {task} | {method} | "
                f"{f['success']:.4f} | {f['s_uniform']:.4f} | {f['s_oracle']:.4f} | {f['frac_of_oracle']:.3f} | "
                f"{f['wall_time_s']:.0f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
