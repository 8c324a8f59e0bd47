"""``splitseq pretrain / finetune / measure``: end to end on ``tiny``, ``--help`` everywhere, clear errors."""

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch

from agents.checkpoint import load_checkpoint
from agents.cli import main
from agents.training import history_path

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``splitseq pretrain`` then ``splitseq finetune`` with small step counts."""
    root = tmp_path_factory.mktemp("cli")
    pre, fin = root / "tiny.pt", root / "tiny-ngood4.pt"
    assert (
        main(
            [
                "pretrain",
                "--size",
                "tiny",
                "--seed",
                "2",
                "--out",
                str(pre),
                "--steps",
                "30",
                "--batch-size",
                "64",
                "--threads",
                "1",
                "--quiet",
                "--json",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "finetune",
                str(pre),
                "--task",
                "ngood4",
                "--out",
                str(fin),
                "--steps",
                "6",
                "--batch-size",
                "64",
                "--method",
                "reinforce",
                "--quiet",
                "--log-dir",
                str(root / "tb"),
            ]
        )
        == 0
    )
    return pre, fin


def test_pretrain_and_finetune_write_what_they_say(trained, capsys):
    pre, fin = trained
    ckpt = load_checkpoint(pre)
    assert ckpt["kind"] == "pretrained" and ckpt["meta"]["seed"] == 2 and ckpt["train_state"]["step"] == 30
    assert pd.read_csv(history_path(pre))["step"].iloc[-1] == 30
    meta = load_checkpoint(fin)["meta"]
    assert (meta["task"], meta["method"], meta["size"], meta["steps"]) == ("ngood4", "reinforce", "tiny", 6)
    assert list((fin.parent / "tb").iterdir())  # TensorBoard events
    # rerunning a finished command is a no-op that prints the same summary
    capsys.readouterr()
    assert (
        main(
            [
                "pretrain",
                "--size",
                "tiny",
                "--seed",
                "2",
                "--out",
                str(pre),
                "--steps",
                "30",
                "--batch-size",
                "64",
                "--threads",
                "1",
                "--quiet",
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["steps"] == 30


def test_measure_prints_a_table_and_json(trained, capsys):
    _, fin = trained
    assert main(["measure", str(fin), "--task", "all", "--json", "--n-histories", "512"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["tasks"]) == {"ngood2", "ngood4", "ngood6"}
    for row in data["tasks"].values():
        assert {"success", "op", "op_theory", "imp", "imp_min"} <= set(row)
        assert row["imp"] >= row["imp_min"] - 1e-9
    assert main(["measure", str(fin), "--task", "ngood2", "--n-histories", "256"]) == 0
    out = capsys.readouterr().out
    assert (
        "op_theory" in out and "imp_min" in out and "ngood2" in out and "ngood4" not in out.split("\n", 2)[2]
    )


def test_measure_reference_policies(capsys):
    assert main(["measure", "oracle-ngood4", "--task", "ngood4", "--json", "--n-histories", "1024"]) == 0
    oracle = json.loads(capsys.readouterr().out)["tasks"]["ngood4"]["success"]
    assert main(["measure", "uniform", "--task", "ngood4", "--json", "--n-histories", "1024"]) == 0
    uniform = json.loads(capsys.readouterr().out)["tasks"]["ngood4"]
    assert oracle > 0.85 and abs(uniform["success"] - 0.5) < 0.05 and abs(uniform["op"]) < 1e-12


@pytest.mark.parametrize("command", [[], ["pretrain"], ["finetune"], ["measure"]])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([*command, "--help"])
    assert e.value.code == 0
    assert "usage: splitseq" in capsys.readouterr().out


def test_console_script_help():
    out = subprocess.run(
        [sys.executable, "-m", "agents.cli", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("pretrain", "finetune", "measure"):
        assert command in out.stdout


@pytest.mark.parametrize(
    "argv, message",
    [
        (["pretrain", "--size", "huge", "--out", "x.pt"], "invalid choice: 'huge'"),
        (
            ["pretrain", "--size", "tiny", "--out", "x.pt", "--steps", "0"],
            "expected a positive integer, got 0",
        ),
        (["pretrain", "--size", "tiny"], "required: --out"),
        (["finetune", "x.pt", "--task", "ngood5", "--out", "y.pt"], "invalid choice: 'ngood5'"),
        (
            ["finetune", "x.pt", "--task", "ngood4", "--out", "y.pt", "--lr", "-1"],
            "expected a positive number",
        ),
        (["measure", "x.pt", "--task", "ngood9"], "invalid choice: 'ngood9'"),
    ],
)
def test_bad_arguments_exit_2_naming_the_problem(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_checkpoints_give_clear_errors(tmp_path, trained, capsys):
    assert (
        main(["finetune", str(tmp_path / "missing.pt"), "--task", "ngood4", "--out", str(tmp_path / "o.pt")])
        == 2
    )
    assert "no checkpoint at" in capsys.readouterr().err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"definitely not a checkpoint")
    assert main(["measure", str(bad)]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err
    # resuming into a checkpoint of another kind is refused, not overwritten
    _, fin = trained
    assert main(["pretrain", "--size", "tiny", "--out", str(fin), "--steps", "5", "--quiet"]) == 2
    assert "not a resumable pretrained checkpoint" in capsys.readouterr().err
    assert load_checkpoint(fin)["kind"] == "finetuned"
