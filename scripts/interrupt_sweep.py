"""Stop a sweep at random moments, over and over, and check that it always stops cleanly (issue 17).

Until ``--kills`` signals have stopped a running sweep, each round starts (or resumes) the same tiny sweep
with a 2-worker pool, waits a random time, then sends a random one of Ctrl-C (SIGINT to the whole process
group, as a terminal does), SIGTERM or SIGKILL. It measures
how long the sweep and every worker took to disappear, and reads back every file left in the directory
(checkpoints, CSVs, the histories, JSON): a file that does not load is corrupt. A sweep that finished before
its signal is compared with an uninterrupted reference run and started afresh::

    python scripts/interrupt_sweep.py --kills 50 --out /tmp/kills

Exit code 0 when every round stopped within ``--limit`` seconds with no process left, no file is corrupt and
every finished sweep matches the reference exactly.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from agents.checkpoint import load_checkpoint

ARGS = [
    "--preset",
    "quick",
    "--steps-scale",
    "0.02",
    "--n-histories",
    "512",
    "--workers",
    "2",
    "--no-progress",
]
SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM, "SIGKILL": signal.SIGKILL}


def _terminal_sigint() -> None:
    """In the sweep's process: Ctrl-C as in a terminal, even when this script runs in the background (a shell
    starts background jobs, and so their children, with SIGINT ignored, which splitseq then respects)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def alive_in_session(sid: int) -> list[int]:
    """Live (not zombie) processes of session ``sid``."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                state, _, _, session = (d / "stat").read_text().rsplit(")", 1)[1].split()[:4]
            except (OSError, ValueError):
                continue
            if int(session) == sid and state != "Z":
                pids.append(int(d.name))
    return pids


def corrupt_files(out: Path) -> list[str]:
    """Files in ``out`` that do not read back (temporaries and the lock aside)."""
    bad = []
    for path in out.rglob("*"):
        if not path.is_file() or ".tmp" in path.name or path.name == ".lock":
            continue
        try:
            if path.suffix == ".pt":
                load_checkpoint(path)
            elif path.suffix == ".csv":
                pd.read_csv(path)
            elif path.suffix == ".npy":
                np.load(path)
            elif path.suffix == ".json":
                json.loads(path.read_text())
        except Exception as e:  # noqa: BLE001 - whatever fails to read is corrupt
            bad.append(f"{path.relative_to(out)}: {type(e).__name__}: {e}")
    return bad


def same_results(a: Path, b: Path) -> bool:
    x = pd.read_csv(a / "results.csv").drop(columns="checkpoint")
    y = pd.read_csv(b / "results.csv").drop(columns="checkpoint")
    return x.equals(y)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50, help="signals that stop a sweep (default 50)")
    parser.add_argument("--out", type=Path, required=True, help="scratch directory (emptied first)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the moments and signals")
    parser.add_argument("--limit", type=float, default=10.0, help="seconds allowed to stop (default 10)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    ref, sweep = args.out / "reference", args.out / "sweep"
    cmd = [sys.executable, "-m", "agents", "reproduce", *ARGS]
    t0 = time.monotonic()
    subprocess.run([*cmd, "--out", str(ref)], env=env, check=True, capture_output=True)
    full = time.monotonic() - t0
    print(f"reference sweep: {full:.1f} s", flush=True)
    stops: dict[str, list[float]] = {name: [] for name in SIGNALS}
    left, corrupt, finished, mismatched, bad_lines = 0, [], 0, 0, []
    k = 0
    while sum(map(len, stops.values())) < args.kills and k < 4 * args.kills:  # until --kills actual stops
        k += 1
        name = rng.choice(list(SIGNALS))
        delay = rng.uniform(0.5, 0.6 * full)  # a resumed sweep has less left to do
        proc = subprocess.Popen(
            [*cmd, "--out", str(sweep)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            preexec_fn=_terminal_sigint,
        )
        time.sleep(delay)
        t = time.monotonic()
        if name == "SIGINT":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(SIGNALS[name])
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, err = proc.communicate()
        while alive_in_session(proc.pid) and time.monotonic() - t < 60:
            time.sleep(0.05)
        gone = time.monotonic() - t
        if alive_in_session(proc.pid):
            left += 1
            os.killpg(proc.pid, signal.SIGKILL)
        bad = corrupt_files(sweep)
        corrupt += bad
        if proc.returncode == 0:
            finished += 1
            mismatched += not same_results(ref, sweep)
            shutil.rmtree(sweep)
            status = "finished first"
        else:
            stops[name].append(gone)
            status = f"stopped in {gone:4.1f} s"
            last = (err.strip().splitlines() or [""])[-1]
            if name != "SIGKILL" and ("Traceback" in err or "rerun the same command to resume" not in last):
                bad_lines.append(f"{name}: {err.strip()[-300:]}")
        print(f"{k:3d} {name:7s} at {delay:5.1f} s: {status}, {len(bad)} corrupt", flush=True)
    done = subprocess.run([*cmd, "--out", str(sweep)], env=env, capture_output=True, text=True, check=False)
    final_ok = done.returncode == 0 and same_results(ref, sweep)
    print("\nstopped within (s):")
    for name, times in stops.items():
        if times:
            print(
                f"  {name:7s} n={len(times):2d}  median {statistics.median(times):.2f}  max {max(times):.2f}"
            )
    worst = max((t for times in stops.values() for t in times), default=0.0)
    print(
        f"processes left: {left}; corrupt files: {len(corrupt)}; finished before the signal: {finished} "
        f"({mismatched} differ from the reference); messages not one resume line: {len(bad_lines)}; "
        f"final resume matches the reference: {final_ok}"
    )
    for line in corrupt + bad_lines:
        print("  " + line)
    ok = worst <= args.limit and not left and not corrupt and not mismatched and not bad_lines and final_ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
