"""Training speed per model size, precision and thread count, against what the machine's matmuls can do; and
the quality bf16 training reaches against fp32.

**Speed** (default). For every size, precision (``fp32``, ``bf16`` = ``torch.autocast("cpu", bfloat16)``
around forward pass and loss, as the trainers do) and thread count (1, 2): milliseconds per optimizer step
at the training batch size (a full AdamW step with gradient clipping on a fresh batch from
:class:`agents.data.NextTokenData`, data generation included, as in training). Beside it, the machine's
matmul throughput at the same precision and thread count (a square ``--matmul``-sized matmul, GFLOP/s),
and the share of it a training step achieves: the step's FLOPs counted from the layer shapes
(:func:`step_flops`: every matmul of the forward pass, attention included, with the last block computing
only the read-out position as the model does; backward = 2 x forward; LayerNorm, GELU, softmax, dropout,
AdamW and data generation counted as zero FLOPs) over its time. Every variant, matmuls included, is timed in
windows of ``--seconds`` that take turns, ``--repeats`` rounds; the table shows the best window (and the
median) of each, so the ratios compare windows that saw the same load.

**Quality** (``--quality``). The sweep's pretraining and finetuning (:func:`agents.pipeline.pretrain_config`,
:func:`agents.pipeline.finetune_config`, the post's method, task ngood4) at a reduced ``--steps-scale`` of
the full budget, once in fp32 and once in bf16 at the same seed, one thread: final held-out next-token loss
and accuracy, finetuned greedy success (exact, held-out) and the way from uniform to oracle.

    python scripts/bench_training.py                                   # all sizes, fp32/bf16, 1/2 threads
    python scripts/bench_training.py --sizes tiny large --threads 1 --repeats 5
    python scripts/bench_training.py --naive --compile                 # also all positions, torch.compile
    python scripts/bench_training.py --quality --sizes tiny small --steps-scale 0.2 --out /tmp/bfq
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from agents.data import NextTokenData
from agents.runtime import autocast, cpu_has_native_bf16, device_name, load_average
from agents.training import make_optimizer
from agents.transformer import SIZES, SplitSeqTransformer, TransformerConfig, count_parameters
from seqenv.sequence import CONTEXT

CPU = torch.device("cpu")


class NaiveTransformer(SplitSeqTransformer):
    """The same model computing every position in every block."""

    def features(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.tok_emb(idx) + self.pos_emb)
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x[:, -1])


def forward_flops(cfg: TransformerConfig, naive: bool = False) -> int:
    """Matmul FLOPs (2 per multiply-add) of one example's forward pass, from the layer shapes."""
    c, t, h, v = cfg.n_embd, cfg.context, cfg.mlp_ratio * cfg.n_embd, cfg.vocab
    full = (
        2 * t * c * 3 * c + 2 * 2 * t * t * c + 2 * t * c * c + 2 * 2 * t * c * h
    )  # qkv, qk^T and av, proj, mlp
    # the last block: keys and values of every position, the query, attention, projection and MLP of one
    last = 2 * t * c * 2 * c + 2 * c * c + 2 * 2 * t * c + 2 * c * c + 2 * 2 * c * h
    blocks = cfg.n_layer * full if naive else (cfg.n_layer - 1) * full + last
    return blocks + 2 * c * v  # + the head


def step_flops(cfg: TransformerConfig, batch: int, naive: bool = False) -> int:
    """FLOPs of one training step: forward + backward (twice the forward: input and weight gradients)."""
    return 3 * batch * forward_flops(cfg, naive)


def make_step(model: torch.nn.Module, batch: int, precision: str, seed: int = 0) -> Callable[[], None]:
    """One training step as the trainers take it (fresh batch, autocast, AdamW, clipping)."""
    opt = make_optimizer(model, 1e-3, 0.01, (0.9, 0.99))
    data = NextTokenData(batch, seed)

    def step() -> None:
        x, y = data.batch()
        with autocast(CPU, precision):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return step


def make_matmul(n: int, precision: str) -> Callable[[], None]:
    """A square ``n x n`` matmul in ``precision`` (bf16 under autocast, as the model's matmuls)."""
    a, b = torch.randn(n, n), torch.randn(n, n)

    def mm() -> None:
        with autocast(CPU, precision):
            torch.mm(a, b)

    return mm


def window(fn: Callable[[], None], threads: int, seconds: float) -> float:
    """Seconds per call of ``fn`` over a window of about ``seconds`` (after one warm-up call)."""
    torch.set_num_threads(threads)
    fn()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds and n >= 3:
            return elapsed / n


def machine_line() -> str:
    native = {True: "native bf16", False: "no native bf16", None: "bf16 support unknown"}[
        cpu_has_native_bf16()
    ]
    return (
        f"{device_name(CPU)} ({native}; torch CPU capability {torch.backends.cpu.get_cpu_capability()}), "
        f"{len(os.sched_getaffinity(0))} usable CPUs, torch {torch.__version__}, Python {platform.python_version()}"
    )


def speed(args: argparse.Namespace) -> None:
    """The speed table: ms/step, tokens/s, GFLOP/s and the share of the matmul peak, side by side."""
    variants = [(p, t) for p in args.precisions for t in args.threads]
    steps: dict[tuple, Callable[[], None]] = {}
    for size in args.sizes:
        for precision, threads in variants:
            torch.manual_seed(0)
            steps[(size, "shortcut", precision, threads)] = make_step(
                SplitSeqTransformer(size).train(), args.batch, precision
            )
        if args.naive:
            torch.manual_seed(0)
            steps[(size, "naive", "fp32", 1)] = make_step(NaiveTransformer(size).train(), args.batch, "fp32")
        if args.compile:
            torch.manual_seed(0)
            model = torch.compile(SplitSeqTransformer(size).train())
            steps[(size, "compiled", "fp32", 1)] = make_step(model, args.batch, "fp32")
    matmuls = {(p, t): make_matmul(args.matmul, p) for p, t in variants}
    times: dict[tuple, list[float]] = {k: [] for k in [*steps, *matmuls]}
    loads = [load_average()]
    print(machine_line())
    print(
        f"batch {args.batch} x {CONTEXT} tokens; {args.repeats} rounds of {args.seconds:g} s windows taking turns; "
        f"matmul {args.matmul}x{args.matmul}",
        flush=True,
    )
    for r in range(args.repeats):
        for key, fn in [*steps.items(), *matmuls.items()]:
            threads = key[-1]
            times[key].append(window(fn, threads, args.seconds))
        loads.append(load_average())
        print(f"  round {r + 1}/{args.repeats} done (load average {loads[-1]:.1f})", flush=True)
    peak = {k: 2 * args.matmul**3 / min(v) / 1e9 for k, v in times.items() if len(k) == 2}
    print(f"\nload average during the run: {min(loads):.1f}-{max(loads):.1f}")
    print("\nmatmul throughput (best window), GFLOP/s:")
    for (p, t), g in peak.items():
        print(f"  {p} {t} thread{'s' * (t > 1)}: {g:8.1f}")
    header = (
        "| size | params | GFLOP/step | precision | threads | ms/step best | median | tokens/s | "
        "GFLOP/s | share of matmul peak | bf16 speed-up | 2-thread speed-up |"
    )
    print("\n" + header)
    print("|" + "---|" * (header.count("|") - 1))
    for size in args.sizes:
        cfg = SIZES[size]
        flops = step_flops(cfg, args.batch)
        params = count_parameters(SplitSeqTransformer(size))
        for precision, threads in variants:
            key = (size, "shortcut", precision, threads)
            best, med = min(times[key]), statistics.median(times[key])
            gflops = flops / best / 1e9
            fp32_key = (size, "shortcut", "fp32", threads)
            one_key = (size, "shortcut", precision, 1)
            bf16_x = (
                f"{min(times[fp32_key]) / best:.2f}x" if precision == "bf16" and fp32_key in times else ""
            )
            two_x = f"{min(times[one_key]) / best:.2f}x" if threads == 2 and one_key in times else ""
            print(
                f"| {size} | {params:,} | {flops / 1e9:.3f} | {precision} | {threads} | {best * 1e3:.1f} | "
                f"{med * 1e3:.1f} | {args.batch * CONTEXT / best:,.0f} | {gflops:.1f} | "
                f"{gflops / peak[(precision, threads)]:.1%} | {bf16_x} | {two_x} |"
            )
        short = min(times[(size, "shortcut", "fp32", 1)]) if ("fp32", 1) in variants else float("nan")
        for kind, what in (("naive", "every block on all positions"), ("compiled", "torch.compile")):
            if (size, kind, "fp32", 1) in times:
                other = min(times[(size, kind, "fp32", 1)])
                print(
                    f"|   {size}, {what} (fp32, 1 thread): {other * 1e3:.1f} ms/step, {other / short:.2f}x the shipped model's time |"
                )
    print(
        "\nFLOPs counted from the layer shapes (matmuls incl. attention; backward = 2x forward; elementwise, "
        "optimizer and data generation not counted); the share is GFLOP/s over the matmul peak at the same "
        "precision and threads."
    )


def quality(args: argparse.Namespace) -> None:
    """bf16 against fp32 at the same seed: the sweep's configs at ``--steps-scale``, one thread."""
    from agents.finetune import finetune
    from agents.pipeline import SweepConfig, finetune_config, pretrain_config
    from agents.pretrain import pretrain

    torch.set_num_threads(1)
    out = Path(args.out or tempfile.mkdtemp(prefix="bench_quality_"))
    print(machine_line())
    print(
        f"steps scale {args.steps_scale:g} of the full budget, seed {args.seed}, task {args.task}, 1 thread; {out}"
    )
    rows = []
    for size in args.sizes:
        for precision in ("fp32", "bf16"):
            sweep = SweepConfig.from_preset(
                "full", steps_scale=args.steps_scale, device="cpu", precision=precision
            )
            pcfg = pretrain_config(sweep, size, args.seed)
            fcfg = finetune_config(sweep, size, args.seed, args.task)
            pre = out / f"{size}-{precision}.pt"
            t0 = time.perf_counter()
            p = pretrain(pcfg, pre, progress=False)
            t1 = time.perf_counter()
            f = finetune(pre, fcfg, out / f"{size}-{precision}-{args.task}.pt", progress=False)
            t2 = time.perf_counter()
            rows.append((size, precision, pcfg.steps, p, fcfg.steps, f, t1 - t0, t2 - t1))
            print(
                f"  {size} {precision}: pretrain {p['eval_loss']:.4f} nats in {t1 - t0:.0f} s, finetune success "
                f"{f['success']:.4f} in {t2 - t1:.0f} s (load average {load_average():.1f})",
                flush=True,
            )
    print(
        "\n| size | precision | pretraining steps | held-out loss | acc even | acc odd | finetuning steps | "
        "success | way to oracle | wall pretrain / finetune (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for size, precision, ps, p, fs, f, tp, tf in rows:
        print(
            f"| {size} | {precision} | {ps:,} | {p['eval_loss']:.4f} | {p['acc_even']:.4f} | {p['acc_odd']:.4f} | "
            f"{fs:,} | {f['success']:.4f} | {f['frac_of_oracle']:.3f} | {tp:.0f} / {tf:.0f} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--batch", type=int, default=256, help="examples per step (the trainers' 256)")
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="thread counts (default 1 2)")
    ap.add_argument("--repeats", type=int, default=3, help="rounds of windows")
    ap.add_argument("--seconds", type=float, default=2.0, help="length of each window")
    ap.add_argument("--matmul", type=int, default=1024, help="size of the square matmul of the peak")
    ap.add_argument("--naive", action="store_true", help="also time every block on all positions")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    ap.add_argument("--quality", action="store_true", help="bf16 vs fp32 training quality instead of speed")
    ap.add_argument("--steps-scale", type=float, default=0.2, help="quality: share of the full step budget")
    ap.add_argument("--seed", type=int, default=0, help="quality: the training seed")
    ap.add_argument("--task", default="ngood4", help="quality: the finetuning task")
    ap.add_argument("--out", default=None, help="quality: where the checkpoints go (default a temp dir)")
    args = ap.parse_args()
    quality(args) if args.quality else speed(args)


if __name__ == "__main__":
    main()
