"""Checkpoints: exact round trips, atomic writes, and clear errors for missing, corrupt or mismatched files."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import agents
from agents.checkpoint import (
    FORMAT,
    CheckpointError,
    atomic_write,
    check_writable,
    convert_checkpoint,
    load_checkpoint,
    load_model,
    numpy_arrays,
    save_checkpoint,
)
from agents.policy import AgentPolicy
from agents.transformer import SplitSeqTransformer
from seqenv.sequence import natural_histories

torch.set_num_threads(1)
H = natural_histories(512, seed=3)


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = SplitSeqTransformer("tiny")
    with torch.no_grad():  # move away from the init so a lost weight would show
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m.eval()


def test_round_trip_gives_identical_weights_and_outputs(model, tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", model, "pretrained", {"size": "tiny", "seed": 0})
    loaded, ckpt = load_model(path)
    assert ckpt["format"] == FORMAT and ckpt["kind"] == "pretrained" and ckpt["meta"]["size"] == "tiny"
    assert not loaded.training
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    x = torch.from_numpy(H)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_agents_load_returns_a_policy_with_the_models_exact_behaviour(model, tmp_path):
    path = save_checkpoint(
        tmp_path / "m.pt", model, "finetuned", {"size": "tiny", "seed": 1, "task": "ngood4"}
    )
    policy = agents.load(path)
    assert isinstance(policy, AgentPolicy)
    assert policy.meta["task"] == "ngood4" and policy.meta["kind"] == "finetuned"
    with torch.no_grad():
        logits = model(torch.from_numpy(H)).double()
    greedy = policy.action_probs(H)
    assert np.array_equal(greedy.argmax(axis=1), logits[:, 8:].argmax(dim=1).numpy())
    assert np.array_equal(greedy.sum(axis=1), np.ones(len(H)))
    assert np.allclose(policy.action_probs(H, 1.0), torch.softmax(logits[:, 8:], -1).numpy(), atol=1e-6)
    assert np.allclose(policy.next_token_probs(H), torch.softmax(logits, -1).numpy(), atol=1e-6)
    actions, state = policy.predict(H)
    assert state is None and np.array_equal(actions, greedy.argmax(axis=1))
    single, _ = policy.predict(H[0])
    assert single == actions[0]


def test_policy_rejects_bad_histories(model):
    policy = AgentPolicy(model)
    with pytest.raises(ValueError, match=r"shape \(N, 20\)"):
        policy.action_probs(H[:, :10])
    with pytest.raises(TypeError, match="integer"):
        policy.action_probs(H.astype(float))
    with pytest.raises(ValueError, match="outside 0..15"):
        policy.action_probs(np.full((2, 20), 16))
    with pytest.raises(ValueError, match="temperature"):
        policy.action_probs(H, temperature=-0.5)


def test_missing_and_directory_paths(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        agents.load(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)


def test_corrupt_files_raise_checkpoint_errors(model, tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a torch file at all" * 10)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        agents.load(garbage)
    good = save_checkpoint(tmp_path / "good.pt", model, "pretrained")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        agents.load(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": model.state_dict()}, foreign)
    with pytest.raises(CheckpointError, match="not a SplitSeq checkpoint"):
        agents.load(foreign)
    torch.save([1, 2, 3], foreign)
    with pytest.raises(CheckpointError, match="not a SplitSeq checkpoint"):
        agents.load(foreign)


def test_mismatched_checkpoints_raise_checkpoint_errors(model, tmp_path):
    ckpt = load_checkpoint(save_checkpoint(tmp_path / "m.pt", model, "pretrained"))
    bad = tmp_path / "bad.pt"
    torch.save(
        {**ckpt, "config": SplitSeqTransformer("small").cfg.to_dict()}, bad
    )  # tiny weights, small config
    with pytest.raises(CheckpointError, match="weights do not match its config"):
        agents.load(bad)
    torch.save({**ckpt, "config": {**ckpt["config"], "n_head": 5}}, bad)
    with pytest.raises(CheckpointError, match="invalid model config"):
        agents.load(bad)
    torch.save({**ckpt, "config": {**ckpt["config"], "n_heads": 2}}, bad)
    with pytest.raises(CheckpointError, match="invalid model config"):
        agents.load(bad)
    partial = {k: v for k, v in ckpt.items() if k != "model"}
    torch.save(partial, bad)
    with pytest.raises(CheckpointError, match="lacks 'model'"):
        agents.load(bad)


def test_atomic_write_never_leaves_half_a_file(model, tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", model, "pretrained", {"version": 1})

    def crash(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, crash)
    assert load_checkpoint(path)["meta"] == {"version": 1}  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # no temporary left behind


# ----------------------------------------------------------------------- plain data and old-format files
def test_train_state_is_plain_data_and_loads_with_weights_only(model, tmp_path):
    """Arrays, numpy scalars and generators are stored as tensors, numbers and state dicts."""
    rng = np.random.default_rng(5)
    state = {"obs": np.arange(6, dtype=np.uint8).reshape(2, 3), "n": np.int64(4), "rng": rng, "t": (1, [2.5])}
    path = save_checkpoint(tmp_path / "m.pt", model, "pretrained", {"x": np.float64(0.5)}, state)
    raw = torch.load(path, weights_only=True)  # no code from the file runs
    saved = raw["train_state"]
    assert torch.equal(saved["obs"], torch.arange(6, dtype=torch.uint8).reshape(2, 3))
    assert saved["n"] == 4 and type(saved["n"]) is int and raw["meta"] == {"x": 0.5}
    assert saved["rng"] == rng.bit_generator.state and saved["t"] == (1, [2.5])
    back = numpy_arrays(saved["obs"])
    assert isinstance(back, np.ndarray) and back.dtype == np.uint8 and np.array_equal(back, state["obs"])
    with pytest.raises(TypeError, match="not plain data"):
        save_checkpoint(tmp_path / "bad.pt", model, "pretrained", train_state={"x": object()})


def test_vector_env_state_survives_a_checkpoint_exactly(model, tmp_path):
    from seqenv.vector import SplitSeqVectorEnv

    a = SplitSeqVectorEnv(6, good="ngood4", episode_length=2, history_batch=10)
    a.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(5):
        a.step(rng.integers(0, 8, 6))
    path = save_checkpoint(tmp_path / "m.pt", model, "finetuned", train_state={"env": a.state_dict()})
    b = SplitSeqVectorEnv(6, good="ngood4", episode_length=2, history_batch=10)
    b.load_state_dict(numpy_arrays(load_checkpoint(path)["train_state"]["env"]))
    for _ in range(30):  # several refills of the 10-history supply, and episode ends
        actions = rng.integers(0, 8, 6)
        for x, y in zip(a.step(actions)[:4], b.step(actions)[:4]):
            assert np.array_equal(x, y)
    with pytest.raises(ValueError, match="env state is for"):
        SplitSeqVectorEnv(4, good="ngood4").load_state_dict(a.state_dict())


def _old_format(path, model, train_state):
    """A checkpoint as splitseq wrote them before train states were plain data (live objects pickled)."""
    payload = {
        "format": FORMAT,
        "kind": "finetuned",
        "config": model.cfg.to_dict(),
        "model": model.state_dict(),
        "meta": {"size": "tiny"},
        "train_state": train_state,
    }
    torch.save(payload, path)
    return path


def test_old_format_files_are_refused_with_the_converter_named_then_converted(model, tmp_path):
    old = _old_format(tmp_path / "old.pt", model, {"step": 3, "rng": np.random.default_rng(1), "config": {}})
    for load in (load_checkpoint, load_model, agents.load):
        with pytest.raises(CheckpointError, match=r"older splitseq.*convert_checkpoint\("):
            load(old)
    new = convert_checkpoint(old, tmp_path / "new.pt")
    ckpt = load_checkpoint(new)
    assert ckpt["train_state"]["rng"] == np.random.default_rng(1).bit_generator.state
    loaded, _ = load_model(new)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    assert convert_checkpoint(old) == old and load_checkpoint(old)["train_state"]["step"] == 3  # in place


def test_converter_drops_a_train_state_whose_classes_are_gone(model, tmp_path, monkeypatch):
    import sys
    import types

    gone = types.ModuleType("splitseq_gone_module")

    class Env:  # stands for a class that has since moved
        def __init__(self):
            self.obs = np.zeros(3)

    Env.__module__, Env.__qualname__ = gone.__name__, "Env"
    gone.Env = Env
    monkeypatch.setitem(sys.modules, gone.__name__, gone)
    old = _old_format(tmp_path / "old.pt", model, {"step": 3, "env": Env()})
    monkeypatch.delitem(sys.modules, gone.__name__)
    with pytest.raises(CheckpointError, match="convert_checkpoint"):
        load_checkpoint(old)
    with pytest.warns(UserWarning, match="dropped"):
        new = convert_checkpoint(old, tmp_path / "new.pt")
    ckpt = load_checkpoint(new)
    assert ckpt["train_state"] is None and ckpt["meta"] == {"size": "tiny"}
    assert all(torch.equal(v, ckpt["model"][k]) for k, v in model.state_dict().items())
    with pytest.raises(CheckpointError, match="no checkpoint"):
        convert_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_writes_get_the_mode_of_a_plain_write(model, tmp_path, umask):
    old = os.umask(umask)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        text = atomic_write(tmp_path / "a.txt", lambda tmp: Path(tmp).write_text("x"))
        ckpt = save_checkpoint(tmp_path / "m.pt", model, "pretrained")
    finally:
        os.umask(old)
    want = 0o666 & ~umask
    assert (plain.stat().st_mode & 0o777) == want
    assert (text.stat().st_mode & 0o777) == want and (ckpt.stat().st_mode & 0o777) == want


def test_check_writable_fails_before_any_work(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(FileExistsError):
        check_writable(tmp_path / "afile" / "x.pt")
    with pytest.raises(IsADirectoryError):
        check_writable(tmp_path)
    assert check_writable(tmp_path / "new" / "x.pt") == tmp_path / "new" / "x.pt"
    assert list((tmp_path / "new").iterdir()) == []  # its scratch file is gone again


def test_an_sb3_zip_is_named_as_such(tmp_path):
    import zipfile

    path = tmp_path / "model.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("data", "{}")
        z.writestr("policy.pth", b"")
    with pytest.raises(
        CheckpointError, match=r"model.zip is a Stable-Baselines3 zip, expected a SplitSeq .pt"
    ):
        load_checkpoint(path)
