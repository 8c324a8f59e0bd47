"""Pretraining: fresh natural data, the schedule, learning, logging, and bit-identical resume after a crash."""

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch

from agents.checkpoint import CheckpointError, load_checkpoint
from agents.data import NextTokenData, eval_set
from agents.pretrain import HISTORY_COLUMNS, PRETRAIN_BUDGETS, PretrainConfig, pretrain
from agents.training import history_path, lr_at
from seqenv.sequence import P_MATCH, deterministic_next, validate_histories
from tests.conftest import within

torch.set_num_threads(1)


def small_cfg(**kw) -> PretrainConfig:
    base = {
        "size": "tiny",
        "seed": 3,
        "steps": 40,
        "batch_size": 32,
        "lr": 3e-3,
        "warmup_steps": 5,
        "eval_every": 10,
        "eval_samples": 256,
        "checkpoint_every": 10,
    }
    return PretrainConfig(**{**base, **kw})


# ---------------------------------------------------------------------------------------------- data
def test_batches_are_natural_contexts_with_both_target_parities():
    data = NextTokenData(2000, seed=1)
    for _ in range(2):
        x, y = data.batch_numpy()
        assert x.shape == (2000, 20) and y.shape == (2000,) and x.dtype == y.dtype == np.int64
        even = y < 8
        assert even.sum() == 1000  # exactly half of every batch has an even target
        # contexts alternate parity and the target continues it
        validate_histories(x[~even])  # ends on an even position: the next (odd) token is the target
        assert ((x[even][:, -1] >= 8) & (x[even][:, -2] < 8)).all()
        # the target is the recurrence's value with probability 0.98 + 0.02/8 (binomial, 5 sigma)
        d = deterministic_next(x[:, -16:]) + 8 * (~even)
        rate = np.mean(d == y)
        assert within(rate, P_MATCH, len(y))


def test_parity_option_and_fresh_batches():
    _, y_even = NextTokenData(64, seed=0, parity="even").batch_numpy()
    assert (y_even < 8).all()
    data = NextTokenData(64, seed=0, parity="odd")
    a, b = data.batch_numpy(), data.batch_numpy()
    assert (a[1] >= 8).all() and (b[1] >= 8).all()
    assert not np.array_equal(a[0], b[0])  # never the same data twice
    x_eval, _ = eval_set(64, seed=0)
    x_train, _ = NextTokenData(64, seed=0).batch_numpy()
    assert not np.array_equal(x_eval, x_train)  # the held-out streams differ from training's


def test_data_state_round_trip_continues_the_same_stream():
    data = NextTokenData(16, seed=7)
    data.batch_numpy()
    state = data.state_dict()
    expected = [data.batch_numpy() for _ in range(3)]
    other = NextTokenData(16, seed=99)
    other.load_state_dict(state)
    for (xe, ye), (xo, yo) in zip(expected, [other.batch_numpy() for _ in range(3)]):
        assert np.array_equal(xe, xo) and np.array_equal(ye, yo)
    with pytest.raises(ValueError, match="batch_size 16"):
        NextTokenData(8, seed=0).load_state_dict(state)


def test_bad_data_arguments():
    with pytest.raises(ValueError, match="even number"):
        NextTokenData(7)
    with pytest.raises(ValueError, match="parity"):
        NextTokenData(8, parity="both-ish")
    with pytest.raises(TypeError, match="batch_size must be an int >= 1, got 8.0"):
        NextTokenData(8.0)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        NextTokenData(0, parity="odd")


def test_data_state_is_plain_data(tmp_path):
    """The data state is arrays, ints and the generator's state dict: it survives weights_only loading."""
    from agents.checkpoint import numpy_arrays, to_plain

    data = NextTokenData(8, seed=2, parity="even")
    data.batch_numpy()
    torch.save(to_plain(data.state_dict()), tmp_path / "s.pt")
    state = numpy_arrays(torch.load(tmp_path / "s.pt", weights_only=True))
    expected = data.batch_numpy()
    other = NextTokenData(8, seed=5, parity="even")
    other.load_state_dict(state)
    assert all(np.array_equal(a, b) for a, b in zip(expected, other.batch_numpy()))


# ------------------------------------------------------------------------------------------ schedule
def test_warmup_then_cosine_schedule():
    peak, total, warm = 1e-3, 1000, 100
    lrs = [lr_at(s, total, peak, warm, 0.1) for s in range(total)]
    assert lrs[0] == pytest.approx(peak / warm) and lrs[warm - 1] == pytest.approx(peak)
    assert all(a <= b for a, b in itertools.pairwise(lrs[:warm]))
    assert all(a >= b for a, b in itertools.pairwise(lrs[warm:]))
    assert lr_at(total, total, peak, warm, 0.1) == pytest.approx(0.1 * peak)
    mid = warm + (total - warm) // 2
    assert lrs[mid] == pytest.approx(peak * (0.1 + 0.9 * 0.5), rel=1e-6)


def test_config_defaults_and_validation():
    cfg = PretrainConfig(size="large")
    assert cfg.steps > 0 and cfg.batch_size > 0 and cfg.lr > 0 and cfg.weight_decay == 0.01
    assert PretrainConfig.preset("tiny", budget="quick").steps <= PretrainConfig.preset("tiny").steps
    assert PretrainConfig.preset("small", budget="quick").steps == PRETRAIN_BUDGETS["quick"]["small"]
    with pytest.raises(ValueError, match="unknown size"):
        PretrainConfig(size="huge")
    with pytest.raises(ValueError, match="steps"):
        PretrainConfig(steps=0)
    with pytest.raises(ValueError, match="even"):
        PretrainConfig(batch_size=33)
    with pytest.raises(ValueError, match="lr"):
        PretrainConfig(lr=-1.0)
    with pytest.raises(ValueError, match="budget"):
        PretrainConfig.preset("tiny", budget="huge")
    with pytest.raises(TypeError, match="steps must be an int >= 1, got 1.5"):
        PretrainConfig(steps=1.5)
    with pytest.raises(TypeError, match="seed must be an int >= 0, got True"):
        PretrainConfig(seed=True)
    with pytest.raises(ValueError, match=r"min_lr_ratio must be a number in \[0, 1\], got 1.5"):
        PretrainConfig(min_lr_ratio=1.5)
    with pytest.raises(ValueError, match=r"beta2 must be a number in \[0, 1\), got 1.0"):
        PretrainConfig(beta2=1.0)


def test_renamed_names_still_resolve_with_a_warning():
    import agents.pretrain as pt
    from agents.data import heldout_metrics

    with pytest.warns(DeprecationWarning, match="heldout_metrics"):
        assert pt.evaluate is heldout_metrics
    with pytest.warns(DeprecationWarning, match="PRETRAIN_DEFAULTS"):
        assert pt.PRESETS is pt.PRETRAIN_DEFAULTS
    with pytest.raises(AttributeError):
        pt.no_such_name  # noqa: B018


# --------------------------------------------------------------------------------------------- runs
def test_pretraining_learns_logs_and_checkpoints(tmp_path):
    out = tmp_path / "tiny.pt"
    cfg = small_cfg(steps=400, batch_size=128, eval_every=100, eval_samples=2048, checkpoint_every=0)
    s = pretrain(cfg, out, log_dir=tmp_path / "tb", progress=False)
    # chance is 1/8 within the right parity; the recurrence is learnable well beyond it in 400 steps
    assert s["acc_even"] > 0.3 and s["acc_odd"] > 0.3 and s["eval_loss"] < math.log(8) - 0.4
    assert s["params"] == 17_980 and s["steps"] == 400 and s["tokens_per_s"] > 0
    ckpt = load_checkpoint(out)
    assert ckpt["kind"] == "pretrained" and ckpt["meta"]["size"] == "tiny" and ckpt["meta"]["seed"] == 3
    assert ckpt["meta"]["acc_even"] == s["acc_even"] and "optimizer" not in ckpt["train_state"]
    assert torch.load(out, weights_only=True)["train_state"]["finished"] is True
    hist = pd.read_csv(history_path(out))
    assert tuple(hist.columns) == HISTORY_COLUMNS and list(hist["step"]) == [100, 200, 300, 400]
    assert hist["eval_loss"].iloc[-1] < hist["eval_loss"].iloc[0]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("loss", "eval_loss", "acc_even", "acc_odd", "acc_limit", "lr", "tokens_per_s"):
        assert f"pretrain/{tag}" in tags
    assert acc.Scalars("pretrain/acc_limit")[0].value == pytest.approx(P_MATCH)
    # a finished run at the same path is returned as is, without training again
    assert pretrain(cfg, out, progress=False) == s


class Crash(RuntimeError):
    pass


def test_resume_after_a_crash_is_bit_identical(tmp_path, monkeypatch):
    cfg = small_cfg()
    full = pretrain(cfg, tmp_path / "full.pt", progress=False)

    # crash in the middle of step 26: the last checkpoint is the one of step 20
    original = NextTokenData.batch
    calls = {"n": 0}

    def flaky(self):
        calls["n"] += 1
        if calls["n"] == 26:
            raise Crash("power cut")
        return original(self)

    monkeypatch.setattr(NextTokenData, "batch", flaky)
    out = tmp_path / "resumed.pt"
    with pytest.raises(Crash):
        pretrain(cfg, out, progress=False)
    monkeypatch.setattr(NextTokenData, "batch", original)
    assert load_checkpoint(out)["train_state"]["step"] == 20
    assert torch.load(out, weights_only=True)["train_state"]["step"] == 20  # plain data: no objects pickled
    resumed = pretrain(cfg, out, progress=False)

    a, b = load_checkpoint(tmp_path / "full.pt"), load_checkpoint(out)
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    for key in ("loss", "eval_loss", "acc_even", "acc_odd", "steps"):
        assert resumed[key] == full[key]
    h_full, h_res = pd.read_csv(history_path(tmp_path / "full.pt")), pd.read_csv(history_path(out))
    pd.testing.assert_frame_equal(h_full.drop(columns="elapsed"), h_res.drop(columns="elapsed"))


def test_stop_after_then_resume_matches_and_mismatched_config_is_refused(tmp_path):
    cfg = small_cfg(steps=30, checkpoint_every=0)
    out = tmp_path / "a.pt"
    part = pretrain(cfg, out, progress=False, stop_after=13)
    assert part["finished"] is False and load_checkpoint(out)["train_state"]["step"] == 13
    with pytest.raises(CheckpointError, match=r"holds a run with other settings .*--restart"):
        pretrain(small_cfg(steps=30, checkpoint_every=0, lr=1e-3), out, progress=False)
    done = pretrain(cfg, out, progress=False)
    ref = pretrain(cfg, tmp_path / "b.pt", progress=False)
    assert done["eval_loss"] == ref["eval_loss"]
    for k, v in load_checkpoint(out)["model"].items():
        assert torch.equal(v, load_checkpoint(tmp_path / "b.pt")["model"][k])
    # resume=False starts afresh over a finished run
    again = pretrain(cfg, out, progress=False, resume=False)
    assert again["eval_loss"] == ref["eval_loss"]
