"""Training throughput per model size, in state tokens per second (context tokens through a full AdamW step).

Measured side by side in one run, interleaved repeats, best of each (the machine is shared, so absolute
numbers are noisy; the ratios are the point):

* ``naive``    — every block computes all 20 positions (what a plain encoder does);
* ``shortcut`` — the model as shipped: the last block computes only the read-out position (same outputs);
* ``2 threads`` — the shortcut with two intra-op threads instead of one;
* ``compiled`` — the shortcut under ``torch.compile`` (optional, ``--compile``: costs a minute or two of
  compilation per size, and is not used by the trainers).

The data generator (:class:`agents.data.NextTokenData`) is included in every step, as in training.
Each step is ``batch`` examples of 20 context tokens, so tokens/s = 20 * batch / step time.

    python scripts/bench_training.py                     # all sizes, batch 256
    python scripts/bench_training.py --sizes tiny large --batch 512 --compile
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from agents.data import NextTokenData
from agents.training import make_optimizer
from agents.transformer import SIZES, SplitSeqTransformer
from seqenv.sequence import CONTEXT


class NaiveTransformer(SplitSeqTransformer):
    """The same model computing every position in every block."""

    def features(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.tok_emb(idx) + self.pos_emb)
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x[:, -1])


def make_step(model: torch.nn.Module, batch: int, seed: int = 0):
    opt = make_optimizer(model, 1e-3, 0.01, (0.9, 0.99))
    data = NextTokenData(batch, seed)

    def step() -> None:
        x, y = data.batch()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return step


def time_steps(step, threads: int, n: int) -> float:
    torch.set_num_threads(threads)
    step()
    t = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - t) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0, help="approximate time per measurement")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    args = ap.parse_args()

    print(
        f"batch {args.batch}, {CONTEXT} tokens per example; tokens/s = best of {args.repeats} interleaved repeats"
    )
    header = f"{'size':<7} {'naive':>10} {'shortcut':>10} {'x':>5} {'2 threads':>10} {'x':>5}"
    if args.compile:
        header += f" {'compiled':>10} {'x':>5}"
    print(header)
    for size in args.sizes:
        torch.manual_seed(0)
        variants = {
            "naive": (make_step(NaiveTransformer(size).train(), args.batch), 1),
            "shortcut": (make_step(SplitSeqTransformer(size).train(), args.batch), 1),
            "2 threads": (make_step(SplitSeqTransformer(size).train(), args.batch), 2),
        }
        if args.compile:
            variants["compiled"] = (
                make_step(torch.compile(SplitSeqTransformer(size).train()), args.batch),
                1,
            )
        probe = time_steps(variants["shortcut"][0], 1, 2)
        n = max(3, int(args.seconds / probe))
        best = {k: float("inf") for k in variants}
        for _ in range(args.repeats):
            for name, (step, threads) in variants.items():
                best[name] = min(best[name], time_steps(step, threads, n))
        tok = {k: args.batch * CONTEXT / v for k, v in best.items()}
        line = (
            f"{size:<7} {tok['naive']:>10.0f} {tok['shortcut']:>10.0f} {tok['shortcut'] / tok['naive']:>5.2f}"
        )
        line += f" {tok['2 threads']:>10.0f} {tok['2 threads'] / tok['shortcut']:>5.2f}"
        if args.compile:
            line += f" {tok['compiled']:>10.0f} {tok['compiled'] / tok['shortcut']:>5.2f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
