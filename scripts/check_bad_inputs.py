"""Count how many bad inputs end in a traceback, a silent acceptance, or an unclear message (issue 17).

Every case runs in a fresh process, as a user would run it, from a scratch directory::

    python scripts/check_bad_inputs.py                  # the installed package
    python scripts/check_bad_inputs.py --root /tmp/old  # another source tree (put first on the path)

A command-line case passes when it exits with the expected code and prints exactly one line on stderr that
matches the expected text; a Python case passes when it raises the expected type with a message matching
the expected text. Everything else is reported: ``traceback`` (stderr shows a Python traceback), ``silent``
(no error at all), ``unclear`` (an error, but not one line naming the value and what was expected).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

#: seconds after which a case that has not stopped counts as accepted (it is training on the bad input)
ACCEPTED_S = 60.0
QUICK = ["--preset", "quick", "--steps-scale", "0.02", "--n-histories", "512", "--no-progress"]
PPO = [
    "ppo",
    "--timesteps",
    "16",
    "--n-envs",
    "4",
    "--n-steps",
    "4",
    "--batch-size",
    "4",
    "--tensorboard",
    "",
]

#: (name, argv after ``splitseq``, expected exit code, regex the one stderr line must match)
CLI_CASES: list[tuple[str, list[str], int, str]] = [
    (
        "reproduce --steps-scale 0",
        ["reproduce", "--out", "r", "--steps-scale", "0"],
        2,
        r"--steps-scale.*got 0",
    ),
    ("reproduce --steps-scale nan", ["reproduce", "--out", "r", "--steps-scale", "nan"], 2, r"got nan"),
    ("reproduce --steps-scale abc", ["reproduce", "--out", "r", "--steps-scale", "abc"], 2, r"'abc'"),
    ("reproduce --sizes huge", ["reproduce", "--out", "r", "--sizes", "huge"], 2, r"'huge'.*expected"),
    ("reproduce --tasks ngood5", ["reproduce", "--out", "r", "--tasks", "ngood5"], 2, r"'ngood5'.*expected"),
    ("reproduce --seeds -1", ["reproduce", "--out", "r", "--seeds", "-1"], 2, r"--seeds.*got -1"),
    ("reproduce --seeds x", ["reproduce", "--out", "r", "--seeds", "x"], 2, r"--seeds.*'x'"),
    ("reproduce --seeds 0 0", ["reproduce", "--out", "r", "--seeds", "0", "0"], 2, r"repeats"),
    ("reproduce --workers 0", ["reproduce", "--out", "r", "--workers", "0"], 2, r"--workers.*got 0"),
    (
        "reproduce --n-histories 1",
        ["reproduce", "--out", "r", "--n-histories", "1"],
        2,
        r"n.histories.*got 1",
    ),
    ("reproduce --threads 0", ["reproduce", "--out", "r", "--threads", "0"], 2, r"--threads.*got 0"),
    (
        "reproduce, other settings",
        ["reproduce", "--out", "other", *QUICK],
        2,
        r"other settings.*--restart|other settings",
    ),
    ("reproduce, locked --out", ["reproduce", "--out", "locked", *QUICK], 2, r"in use by another"),
    ("reproduce --out is a file", ["reproduce", "--out", "afile", *QUICK], 2, r"afile.*(file|directory)"),
    (
        "reproduce --out under a file",
        ["reproduce", "--out", "afile/x", *QUICK],
        2,
        r"afile.*(file|directory)",
    ),
    ("reproduce --out unwritable", ["reproduce", "--out", "/proc/version/x", *QUICK], 2, r"/proc/version"),
    ("reproduce --merge one dir", ["reproduce", "--merge", "afile", "--out", "m"], 2, r"at least two"),
    (
        "reproduce --backend ray (no Ray)",
        ["reproduce", "--out", "r", "--backend", "ray", *QUICK],
        2,
        r"[Rr]ay",
    ),
    ("ppo --timesteps 0", ["ppo", "--timesteps", "0", "--out", "p"], 2, r"--timesteps.*got 0"),
    ("ppo --n-envs 0", ["ppo", "--timesteps", "10", "--n-envs", "0", "--out", "p"], 2, r"--n-envs.*got 0"),
    ("ppo --threads 0", ["ppo", "--timesteps", "10", "--threads", "0", "--out", "p"], 2, r"--threads.*got 0"),
    ("ppo --pretrained missing", [*PPO, "--out", "p", "--pretrained", "missing.pt"], 2, r"missing.pt"),
    ("ppo --pretrained corrupt", [*PPO, "--out", "p", "--pretrained", "corrupt.pt"], 2, r"corrupt.pt"),
    ("ppo --learning-rate -1", [*PPO, "--out", "p", "--learning-rate", "-1"], 2, r"learning.rate.*-1"),
    ("ppo --gamma 2", [*PPO, "--out", "p", "--gamma", "2"], 2, r"gamma.*2"),
    ("ppo --n-steps 0", [*PPO[:7], "--out", "p", "--n-steps", "0"], 2, r"n.steps.*0"),
    ("ppo --batch-size 0", [*PPO[:7], "--out", "p", "--batch-size", "0"], 2, r"batch.size.*0"),
    ("ppo --out under a file", [*PPO, "--out", "afile/p"], 2, r"afile"),
    (
        "pretrain --out under a file",
        ["pretrain", "--size", "tiny", "--steps", "2", "--out", "afile/x.pt"],
        2,
        r"afile",
    ),
    (
        "pretrain --out unwritable",
        ["pretrain", "--size", "tiny", "--steps", "2", "--out", "/proc/version/x.pt"],
        2,
        r"/proc/version",
    ),
    (
        "pretrain --threads 0",
        ["pretrain", "--size", "tiny", "--out", "t.pt", "--threads", "0"],
        2,
        r"--threads.*got 0",
    ),
    (
        "pretrain --checkpoint-every 0",
        ["pretrain", "--size", "tiny", "--out", "t.pt", "--checkpoint-every", "0"],
        2,
        r"--checkpoint-every.*got 0",
    ),
    (
        "pretrain over a run of other settings",
        ["pretrain", "--size", "tiny", "--steps", "3", "--out", "same.pt", "--quiet"],
        2,
        r"--restart",
    ),
    (
        "finetune --threads 0",
        ["finetune", "same.pt", "--task", "ngood4", "--out", "f.pt", "--threads", "0"],
        2,
        r"--threads.*got 0",
    ),
    (
        "finetune same.pt --out same.pt --restart",
        ["finetune", "same.pt", "--task", "ngood4", "--out", "same.pt", "--restart", "--steps", "1"],
        2,
        r"same.pt.*(input|itself)",
    ),
    (
        "finetune from an SB3 zip",
        ["finetune", "sb3.zip", "--task", "ngood4", "--out", "f.pt", "--steps", "1"],
        2,
        r"sb3.zip.*(SB3|Stable)",
    ),
    ("finetune missing", ["finetune", "missing.pt", "--task", "ngood4", "--out", "f.pt"], 2, r"missing.pt"),
    ("finetune corrupt", ["finetune", "corrupt.pt", "--task", "ngood4", "--out", "f.pt"], 2, r"corrupt.pt"),
    ("measure corrupt", ["measure", "corrupt.pt"], 2, r"corrupt.pt"),
    ("measure oracle-ngood5", ["measure", "oracle-ngood5"], 2, r"ngood5"),
]

#: (name, argv, signal, seconds before it, regex of the one stderr line)
INTERRUPT_CASES: list[tuple[str, list[str], int, float, str]] = [
    (
        "reproduce, Ctrl-C",
        ["reproduce", "--out", "intr", *QUICK[:-1], "--workers", "2"],
        signal.SIGINT,
        8.0,
        r"rerun the same command to resume",
    ),
    (
        "reproduce, SIGINT to the main process only (timeout -s INT)",
        ["reproduce", "--out", "intr3", *QUICK[:-1], "--workers", "2"],
        signal.SIGINT,
        8.0,
        r"rerun the same command to resume",
    ),
    (
        "reproduce, SIGTERM",
        ["reproduce", "--out", "intr2", *QUICK[:-1], "--workers", "2"],
        signal.SIGTERM,
        8.0,
        r"rerun the same command to resume",
    ),
    (
        "pretrain, Ctrl-C",
        ["pretrain", "--size", "tiny", "--out", "intr.pt", "--quiet"],
        signal.SIGINT,
        6.0,
        r"rerun the same command to resume",
    ),
]

#: (name, Python code, expected exception type name, regex of its message)
API_CASES: list[tuple[str, str, str, str]] = [
    (
        "measure, torch module expecting float input",
        "measures.measure(torch.nn.Linear(20, 8), n_histories=64)",
        "TypeError",
        r"Linear.*(float|dtype)",
    ),
    (
        "cross_objective(tasks='ngood4')",
        "measures.cross_objective(lambda h: h[:, 0] % 8, tasks='ngood4', n_histories=64)",
        "ValueError",
        r"tasks.*'ngood4'",
    ),
    (
        "cross_objective(tasks=())",
        "measures.cross_objective(lambda h: h[:, 0] % 8, tasks=(), n_histories=64)",
        "ValueError",
        r"tasks.*\(\)",
    ),
    (
        "measure(histories=..., n_histories=...)",
        "measures.measure(lambda h: h[:, 0] % 8, histories=natural_histories(64, 0), n_histories=128)",
        "ValueError",
        r"n_histories.*128.*64",
    ),
    (
        "measure(n_bootstrap=1)",
        "measures.measure(lambda h: h[:, 0] % 8, n_histories=64, n_bootstrap=1)",
        "ValueError",
        r"n_bootstrap.*got 1",
    ),
    (
        "env.reset(options={'histroy': h})",
        "gym.make('SplitSeq-ngood4-v0').reset(options={'histroy': natural_histories(1, 0)[0]})",
        "ValueError",
        r"'histroy'.*'history'",
    ),
    (
        "vector env reset(options={'histories_': H})",
        "SplitSeqVectorEnv(4, 'ngood4').reset(options={'histories_': natural_histories(4, 0)})",
        "ValueError",
        r"'histories_'.*'histories'",
    ),
    (
        "vector env reset(options={'reset_mask': ...}) misspelt 'resetmask'",
        "SplitSeqVectorEnv(4, 'ngood4').reset(options={'resetmask': np.ones(4, bool)})",
        "ValueError",
        r"'resetmask'.*'reset_mask'",
    ),
]

API_PRELUDE = """
import numpy as np, torch, gymnasium as gym
import measures, seqenv
from seqenv.sequence import natural_histories
from seqenv.vector import SplitSeqVectorEnv
"""


def setup(work: Path, env: dict) -> None:
    """The files the cases use: a plain file, a corrupt checkpoint, a tiny pretrained one, an SB3 zip, a sweep
    directory of other settings."""
    (work / "afile").write_text("not a directory\n")
    (work / "corrupt.pt").write_bytes(b"garbage")
    run = [sys.executable, "-m", "agents"]
    subprocess.run(
        [*run, "pretrain", "--size", "tiny", "--steps", "2", "--out", "same.pt", "--quiet"],
        cwd=work,
        env=env,
        check=True,
        capture_output=True,
    )
    subprocess.run([*run, *PPO, "--out", "sb3"], cwd=work, env=env, check=True, capture_output=True)
    (work / "other").mkdir()
    (work / "other" / "sweep.json").write_text(
        '{"preset": "quick", "sizes": ["tiny"], "seeds": [0], "tasks": ["ngood4"], "n_histories": 64, "steps_scale": 0.5, "threads": 1, "budget": "quick"}\n'
    )
    (work / "locked").mkdir()


def hold_lock(work: Path) -> subprocess.Popen:
    code = "import fcntl, os, sys, time; fd = os.open('locked/.lock', os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); print('ok', flush=True); time.sleep(600)"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=work, stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()
    return proc


def _default_sigint() -> None:
    """In a child: Ctrl-C as in a terminal, even when this script runs in the background (where the shell
    starts it, and so its children, with SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_case(cmd: list[str], work: Path, env: dict) -> tuple[int | None, str]:
    """Run one case; ``(None, stderr)`` if it is still running after :data:`ACCEPTED_S` (it took the bad
    input and started working: killed, with its process group)."""
    p = subprocess.Popen(
        cmd,
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, err = p.communicate(timeout=ACCEPTED_S)
        return p.returncode, err
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        _, err = p.communicate()
        return None, err


def classify(rc: int, err: str, want_rc: int, pattern: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    if "Traceback (most recent call last)" in err:
        return "traceback"
    if rc == 0:
        return "silent"
    if rc != want_rc or len(lines) != 1 or not re.search(pattern, lines[0]):
        return "unclear"
    return "ok"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="source tree to test (default: the installed package)")
    parser.add_argument("--only", default=None, help="run the cases whose name contains this text")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    if args.root:
        env["PYTHONPATH"] = str(Path(args.root).resolve())
    results: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        setup(work, env)
        lock = hold_lock(work)
        try:
            for name, argv, want_rc, pattern in CLI_CASES:
                if args.only and args.only not in name:
                    continue
                rc, err = run_case([sys.executable, "-m", "agents", *argv], work, env)
                verdict = "silent" if rc is None else classify(rc, err, want_rc, pattern)
                last = err.strip().splitlines()[-1:] or [f"(exit {rc})"]
                results.append((name, verdict, last[0] if rc is not None else "(still running: accepted)"))
        finally:
            lock.kill()
        for name, argv, sig, delay, pattern in INTERRUPT_CASES:
            if args.only and args.only not in name:
                continue
            p = subprocess.Popen(
                [sys.executable, "-m", "agents", *argv],
                cwd=work,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
                preexec_fn=_default_sigint,
            )
            time.sleep(delay)
            t0 = time.perf_counter()
            # Ctrl-C in a terminal signals the whole foreground group; timeout(1) and kill(1) the process only
            if sig == signal.SIGINT and "main process only" not in name:
                os.killpg(p.pid, sig)
            else:
                p.send_signal(sig)
            try:
                _, err = p.communicate(timeout=60)
                took = time.perf_counter() - t0
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                _, err = p.communicate()
                took = float("inf")
            # the shell reports 128 + signal for a process killed by it; a handled interrupt exits with that too.
            # Progress lines may come first: the interrupt's own line is the last.
            rc = p.returncode if p.returncode >= 0 else 128 - p.returncode
            lines = err.strip().splitlines()
            verdict = classify(
                rc, "\n".join(lines[-1:]) if "Traceback" not in err else err, 128 + sig, pattern
            )
            if rc == 0:
                verdict = "finished"  # before the signal: not an interrupt
            if took > 10:
                verdict = "hang"
            last = err.strip().splitlines()[-1:] or [f"(exit {p.returncode})"]
            results.append((name, verdict, f"{last[0]}  [stopped in {took:.1f} s]"))
        for name, code, exc, pattern in API_CASES:
            if args.only and args.only not in name:
                continue
            snippet = API_PRELUDE + textwrap.dedent(f"""
                try:
                    {code}
                except Exception as e:
                    print(type(e).__name__ + ": " + str(e).splitlines()[0] if str(e) else type(e).__name__)
                else:
                    print("no error")
            """)
            p = subprocess.run(
                [sys.executable, "-c", snippet],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            line = (p.stdout.strip().splitlines() or ["(nothing)"])[-1]
            if line == "no error":
                verdict = "silent"
            elif line.startswith(exc + ":") and re.search(pattern, line):
                verdict = "ok"
            else:
                verdict = "unclear"
            results.append((name, verdict, line))
    width = max(len(n) for n, _, _ in results)
    for name, verdict, line in results:
        print(f"{verdict:<9} {name:<{width}}  {line[:160]}")
    verdicts = ("ok", "traceback", "silent", "unclear", "hang", "finished")
    counts = {v: sum(1 for _, x, _ in results if x == v) for v in verdicts}
    print(f"\n{len(results)} bad inputs: " + ", ".join(f"{v} {n}" for v, n in counts.items()))
    return 0 if counts["ok"] == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
