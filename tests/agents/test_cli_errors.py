"""Every user error of every ``splitseq`` command is one line on stderr naming the value and what was expected,
with exit code 2; an interrupt is one line saying how to resume (issue 17).

Each case runs ``agents.cli.main`` in this process, as the console script does. The same bad inputs, run as
separate processes from a scratch directory and counted: ``python scripts/check_bad_inputs.py``.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
from pathlib import Path

import pytest
import torch

import agents.cli.reproduce
import agents.cli.train
from agents.checkpoint import load_checkpoint
from agents.cli import main
from agents.cli.interrupts import Terminated
from agents.pretrain import PretrainConfig, pretrain

torch.set_num_threads(1)

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


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A plain file, a corrupt checkpoint, a 2-step pretrained checkpoint and a tiny SB3 zip."""
    root = tmp_path_factory.mktemp("bad")
    (root / "afile").write_text("not a directory\n")
    (root / "corrupt.pt").write_bytes(b"garbage")
    cfg = PretrainConfig.preset("tiny", seed=0, budget="quick")
    pretrain(PretrainConfig(**{**cfg.to_dict(), "steps": 2}), root / "same.pt", progress=False)
    from agents.sb3 import train_ppo

    train_ppo(timesteps=16, n_envs=4, n_steps=4, batch_size=4, out=root / "sb3.zip", eval_every=0)
    return root


def one_line(capsys, pattern: str) -> str:
    """The only line on stderr, which must match ``pattern``."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in err
    return lines[0]


def run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse errors
        return int(e.code)


BAD = [
    # reproduce
    (["reproduce", "--out", "r", "--steps-scale", "0"], r"--steps-scale: expected a positive number, got 0"),
    (["reproduce", "--out", "r", "--steps-scale", "nan"], r"--steps-scale: .*got nan"),
    (["reproduce", "--out", "r", "--steps-scale", "abc"], r"--steps-scale: .*got 'abc'"),
    (["reproduce", "--out", "r", "--sizes", "huge"], r"unknown size 'huge'; expected"),
    (["reproduce", "--out", "r", "--tasks", "ngood5"], r"unknown task 'ngood5'; expected"),
    (["reproduce", "--out", "r", "--seeds", "-1"], r"--seeds: expected an integer >= 0, got -1"),
    (["reproduce", "--out", "r", "--seeds", "x"], r"--seeds: .*got 'x'"),
    (["reproduce", "--out", "r", "--workers", "0"], r"--workers: expected a positive integer, got 0"),
    (["reproduce", "--out", "r", "--n-histories", "1"], r"--n-histories: expected an integer >= 2, got 1"),
    (["reproduce", "--out", "r", "--threads", "0"], r"--threads: expected a positive integer, got 0"),
    (["reproduce", "--out", "afile", *QUICK], r"afile exists and is a file, expected a (sweep )?directory"),
    (["reproduce", "--out", "afile/x", *QUICK], r"afile.* expected a directory"),
    (["reproduce", "--out", "/proc/version/x", *QUICK], r"/proc/version.*expected a directory"),
    (["reproduce", "--merge", "afile", "--out", "m"], r"at least two"),
    # ppo
    (["ppo", "--timesteps", "0", "--out", "p"], r"--timesteps: expected a positive integer, got 0"),
    (
        ["ppo", "--timesteps", "10", "--n-envs", "0", "--out", "p"],
        r"--n-envs: expected a positive integer, got 0",
    ),
    (
        ["ppo", "--timesteps", "10", "--threads", "0", "--out", "p"],
        r"--threads: expected a positive integer, got 0",
    ),
    ([*PPO, "--out", "p", "--pretrained", "missing.pt"], r"no checkpoint at missing.pt"),
    ([*PPO, "--out", "p", "--pretrained", "corrupt.pt"], r"corrupt.pt is not a readable checkpoint"),
    ([*PPO, "--out", "p", "--learning-rate", "-1"], r"--learning-rate: expected a finite number > 0, got -1"),
    ([*PPO, "--out", "p", "--gamma", "2"], r"--gamma: expected a number in \[0, 1\], got 2"),
    ([*PPO, "--out", "p", "--n-steps", "0"], r"--n-steps: expected an integer >= 1, got 0"),
    ([*PPO, "--out", "p", "--batch-size", "1"], r"--batch-size: expected an integer >= 2, got 1"),
    ([*PPO, "--out", "p", "--n-envs", "1", "--n-steps", "1"], r"n_steps \* n_envs must be at least 2"),
    ([*PPO, "--out", "afile/p"], r"afile exists and is a file, expected a directory"),
    # pretrain, finetune, measure
    (["pretrain", "--size", "tiny", "--steps", "2", "--out", "afile/x.pt"], r"afile exists and is a file"),
    (
        ["pretrain", "--size", "tiny", "--steps", "2", "--out", "/proc/version/x.pt"],
        r"/proc/version.*directory",
    ),
    (
        ["pretrain", "--size", "tiny", "--out", "t.pt", "--threads", "0"],
        r"--threads: expected a positive integer",
    ),
    (
        ["pretrain", "--size", "tiny", "--out", "t.pt", "--checkpoint-every", "0"],
        r"--checkpoint-every: .*got 0",
    ),
    (["pretrain", "--size", "tiny", "--steps", "3", "--out", "same.pt"], r"steps 2 -> 3.*--restart"),
    (
        ["pretrain", "--size", "tiny", "--steps", "2", "--out", "afile"],
        r"afile exists and is not a resumable.*--restart",
    ),
    (
        ["finetune", "same.pt", "--task", "ngood4", "--out", "f.pt", "--threads", "0"],
        r"--threads: expected a pos",
    ),
    (
        ["finetune", "same.pt", "--task", "ngood4", "--out", "same.pt", "--restart"],
        r"same.pt is the pretrained checkpoint itself",
    ),
    (
        ["finetune", "sb3.zip", "--task", "ngood4", "--out", "f.pt"],
        r"sb3.zip is a Stable-Baselines3 zip, expected a SplitSeq .pt",
    ),
    (["finetune", "missing.pt", "--task", "ngood4", "--out", "f.pt"], r"no checkpoint at missing.pt"),
    (
        ["finetune", "corrupt.pt", "--task", "ngood4", "--out", "f.pt"],
        r"corrupt.pt is not a readable checkpoint: not a file torch.save wrote",
    ),
    (["measure", "corrupt.pt"], r"corrupt.pt is not a readable checkpoint"),
    (["measure", "oracle-ngood5"], r"unknown task 'ngood5'"),
    (
        ["measure", "uniform", "--n-histories", "1"],
        r"--n-histories: expected an integer >= 2, got 1",
    ),
    (["demo", "--steps", "0"], r"--steps: expected a positive integer, got 0"),
]


@pytest.mark.parametrize("argv, pattern", BAD, ids=[" ".join(a)[:60] for a, _ in BAD])
def test_a_bad_input_is_one_line_and_exit_code_2(argv, pattern, files, capsys, monkeypatch):
    monkeypatch.chdir(files)
    assert run(argv) == 2
    line = one_line(capsys, pattern)
    assert line.startswith(f"splitseq {argv[0]}: error: ")


def test_argparse_errors_point_to_help(capsys):
    assert run(["reproduce", "--out", "r", "--workers", "0"]) == 2
    one_line(capsys, r"\(see 'splitseq reproduce --help'\)$")


def test_a_rerun_with_other_settings_names_them(files, tmp_path, capsys):
    out = tmp_path / "s"
    out.mkdir()
    (out / "sweep.json").write_text(
        '{"preset": "quick", "sizes": ["tiny"], "seeds": [0], "tasks": ["ngood4"], "n_histories": 512, '
        '"steps_scale": 0.5, "threads": 1}\n'
    )
    assert run(["reproduce", "--out", str(out), *QUICK]) == 2
    one_line(capsys, r"holds a sweep with other settings \(.*steps_scale: 0.5 -> 0.02")


def test_a_locked_directory_is_one_line(tmp_path, capsys):
    fd = os.open(tmp_path / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert run(["reproduce", "--out", str(tmp_path), *QUICK]) == 2
    finally:
        os.close(fd)
    one_line(capsys, r"is in use by another reproduce run")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_out_is_one_line(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    assert run(["reproduce", "--out", str(ro / "x"), *QUICK]) == 2
    one_line(capsys, r"cannot write .*ro/x: permission denied")
    assert run(["pretrain", "--size", "tiny", "--steps", "2", "--out", str(ro / "x.pt")]) == 2
    one_line(capsys, r"cannot write .*ro.*: permission denied")


def test_ray_missing_is_one_line(tmp_path, capsys):
    try:
        import ray  # noqa: F401
    except ImportError:
        assert run(["reproduce", "--out", str(tmp_path / "r"), "--backend", "ray", *QUICK]) == 2
        one_line(capsys, r"--backend ray needs Ray: pip install")
    else:
        pytest.skip("Ray is installed")


@pytest.mark.parametrize("command", ["reproduce", "pretrain", "finetune"])
@pytest.mark.parametrize(
    "exc, code, word", [(KeyboardInterrupt, 130, "interrupted"), (Terminated, 143, "terminated")]
)
def test_an_interrupt_says_how_to_resume(command, exc, code, word, files, monkeypatch, capsys):
    def stop(*args, **kwargs):
        raise exc()

    module = agents.cli.reproduce if command == "reproduce" else agents.cli.train
    target = {"reproduce": "run_sweep", "pretrain": "pretrain", "finetune": "finetune"}[command]
    monkeypatch.setattr(module, target, stop)
    monkeypatch.chdir(files)
    argv = {
        "reproduce": ["reproduce", "--out", "r", *QUICK],
        "pretrain": ["pretrain", "--size", "tiny", "--out", "t.pt"],
        "finetune": ["finetune", "same.pt", "--task", "ngood4", "--out", "f.pt"],
    }[command]
    assert main(argv) == code
    one_line(capsys, rf"^splitseq {command}: {word}; rerun the same command to resume")


def test_changing_checkpoint_every_resumes(files, tmp_path, capsys):
    out = tmp_path / "r.pt"
    base = ["pretrain", "--size", "tiny", "--budget", "quick", "--steps", "4", "--out", str(out), "--quiet"]
    assert main([*base, "--checkpoint-every", "2"]) == 0
    assert main([*base, "--checkpoint-every", "3"]) == 0  # finished: nothing to redo, and no refusal
    assert load_checkpoint(out)["train_state"]["finished"]
    capsys.readouterr()


def test_finetuning_its_own_input_leaves_it_untouched(files, capsys, monkeypatch):
    monkeypatch.chdir(files)
    before = (files / "same.pt").read_bytes()
    assert (
        run(["finetune", "./same.pt", "--task", "ngood4", "--out", str(files / "same.pt"), "--restart"]) == 2
    )
    one_line(capsys, r"is the pretrained checkpoint itself")
    assert (files / "same.pt").read_bytes() == before
    assert Path(files / "same.pt").exists()


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_an_interrupt_that_c_code_turns_into_another_error_is_still_an_interrupt(
    sig, code, monkeypatch, capsys
):
    # matplotlib's renderer once reported a SIGTERM arriving mid-draw as "ValueError: Invalid affine
    # transformation matrix": the report unit failed, and the sweep printed its traceback
    def draw(*args, **kwargs):
        try:
            signal.raise_signal(sig)
        except BaseException:
            raise ValueError("Invalid affine transformation matrix") from None

    monkeypatch.setattr(agents.cli.reproduce, "run_sweep", draw)
    # a job started in the background by a shell without job control ignores SIGINT, and main() keeps an
    # ignored signal ignored; this test is about a signal that arrives, so give it its default handler
    default = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
    previous = signal.signal(sig, default)
    try:
        assert main(["reproduce", "--out", "r", *QUICK]) == code
    finally:
        signal.signal(sig, previous)
    one_line(capsys, r"^splitseq reproduce: (interrupted|terminated); rerun the same command to resume")
