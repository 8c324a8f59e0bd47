"""agents.sb3: the transformer as an SB3 policy, PPO from a pretrained predictor, zips and the policy protocol."""

import shutil

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.preprocessing import preprocess_obs

import agents
from agents.checkpoint import CheckpointError, load_model
from agents.sb3 import (
    TransformerExtractor,
    TransformerPolicy,
    as_policy,
    export_checkpoint,
    load_ppo,
    load_sb3,
    make_sb3_vec_env,
    tokens_from_observation,
    train_ppo,
)
from agents.transformer import SplitSeqTransformer, count_parameters
from seqenv.sequence import natural_histories, transition_probs
from seqenv.tasks import good_mask

OBS_SPACE = spaces.MultiDiscrete(np.full(20, 16, dtype=np.int64))
HIST = natural_histories(2048, seed=99)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory):
    """A briefly pretrained tiny checkpoint (400 AdamW steps: odd-token accuracy ~0.6, real signal)."""
    from agents.pretrain import PretrainConfig, pretrain

    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("sb3") / "tiny.pt"
    cfg = PretrainConfig(
        size="tiny", seed=0, steps=400, warmup_steps=50, eval_every=400, eval_samples=1024, checkpoint_every=0
    )
    pretrain(cfg, path, progress=False)
    return path


def odd_token_probs(model: SplitSeqTransformer, histories: np.ndarray) -> np.ndarray:
    """The pretrained model's next-token distribution restricted to the odd tokens: softmax of logits 8..15."""
    with torch.no_grad():
        logits = model.eval()(torch.from_numpy(histories))[:, 8:].double()
    return torch.softmax(logits, dim=1).numpy()


def exact_success(policy, histories: np.ndarray, temperature: float, task: str = "ngood4") -> float:
    """Expected success of the policy on these histories from the exact world model (no sampling noise)."""
    p_good = transition_probs(histories) @ good_mask(task).astype(float)  # (N, 8)
    return float((as_policy(policy).action_probs(histories, temperature) * p_good).sum(1).mean())


def small_ppo(env, policy_kwargs, seed=0, **kw):
    args = {
        "n_steps": 8,
        "batch_size": 128,
        "n_epochs": 4,
        "learning_rate": 1e-3,
        "seed": seed,
        "device": "cpu",
    }
    return PPO(TransformerPolicy, env, policy_kwargs=policy_kwargs, **{**args, **kw})


# --- the extractor -----------------------------------------------------------------------------------------


def test_one_hot_observations_decode_to_the_exact_token_ids():
    ids = torch.from_numpy(HIST[:64])
    one_hot = preprocess_obs(ids, OBS_SPACE)  # what SB3 hands a features extractor
    assert one_hot.shape == (64, 320) and one_hot.dtype == torch.float32
    assert torch.equal(tokens_from_observation(one_hot), ids)
    assert torch.equal(tokens_from_observation(ids), ids)
    extractor = TransformerExtractor(OBS_SPACE, size="tiny")
    assert torch.equal(extractor(one_hot), extractor(ids))  # both routes give the same features


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.full((2, 320), 0.5), "one-hot"),
        (torch.zeros((2, 320)), "one-hot"),
        (torch.full((2, 20), 16), "0..15"),
        (torch.zeros((2, 21), dtype=torch.long), r"\(B, 20\)"),
        (torch.zeros(20, dtype=torch.long), "batch"),
    ],
)
def test_malformed_observations_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        tokens_from_observation(bad)


def test_extractor_rejects_other_observation_spaces():
    with pytest.raises(ValueError, match=r"MultiDiscrete\(\[16\] \* 20\)"):
        TransformerExtractor(spaces.MultiDiscrete([16] * 10), size="tiny")
    with pytest.raises(ValueError, match="MultiDiscrete"):
        TransformerExtractor(spaces.Box(0, 1, (20,)), size="tiny")


# --- the policy --------------------------------------------------------------------------------------------


def test_pretrained_policy_starts_as_the_models_odd_token_distribution(pretrained):
    model, _ = load_model(pretrained)
    ppo = small_ppo(make_sb3_vec_env("ngood4", 16, seed=0), {"pretrained": str(pretrained)})
    want = odd_token_probs(model, HIST)
    got = as_policy(ppo).action_probs(HIST, temperature=1.0)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    # SB3's own distribution object agrees (what PPO samples from and takes log-probs of)
    with torch.no_grad():
        sb3_probs = ppo.policy.get_distribution(torch.from_numpy(HIST)).distribution.probs.double().numpy()
    np.testing.assert_allclose(sb3_probs, want, rtol=0, atol=1e-6)
    # and greedy actions are the model's argmax over tokens 8..15
    np.testing.assert_array_equal(ppo.predict(HIST, deterministic=True)[0], want.argmax(1))


def test_dropout_is_off_so_the_first_ppo_ratio_is_exactly_one(pretrained):
    model, _ = load_model(pretrained)
    assert model.cfg.dropout == 0.1  # pretrained with dropout, as the post
    policy = small_ppo(make_sb3_vec_env("ngood4", 16, seed=0), {"pretrained": str(pretrained)}).policy
    assert policy.transformer.cfg.dropout == 0.0
    obs, actions = torch.from_numpy(HIST[:256]), torch.from_numpy(HIST[:256, -1] % 8)
    policy.set_training_mode(False)  # rollout collection
    with torch.no_grad():
        _, logp_rollout, _ = policy.evaluate_actions(obs, actions)
    policy.set_training_mode(True)  # PPO's update
    with torch.no_grad():
        _, logp_update, _ = policy.evaluate_actions(obs, actions)
    assert torch.equal(logp_rollout, logp_update)


def test_value_head_starts_at_zero_and_heads_sit_on_the_transformer(pretrained):
    policy = small_ppo(make_sb3_vec_env("ngood4", 16, seed=0), {"pretrained": str(pretrained)}).policy
    with torch.no_grad():
        assert torch.equal(policy.predict_values(torch.from_numpy(HIST[:16])), torch.zeros(16, 1))
    extra = sum(p.numel() for p in (*policy.action_net.parameters(), *policy.value_net.parameters()))
    n_embd = policy.transformer.cfg.n_embd
    assert extra == (n_embd + 1) * 8 + (n_embd + 1)  # linear heads only, no MLP in between
    assert count_parameters(policy) == count_parameters(policy.transformer) + extra


def test_size_without_pretraining_builds_a_fresh_model_of_that_size():
    policy = small_ppo(make_sb3_vec_env("ngood4", 16, seed=0), {"size": "small"}).policy
    assert count_parameters(policy.transformer) == count_parameters(SplitSeqTransformer("small"))
    # the action head is still the fresh model's odd-token rows (weights ~ N(0, 0.02)): a near-uniform start
    probs = as_policy(policy).action_probs(HIST, 1.0)
    np.testing.assert_allclose(probs, odd_token_probs(policy.transformer, HIST), atol=1e-6)
    entropy = -(probs * np.log(probs)).sum(1)
    assert entropy.mean() > np.log(8) - 0.05


def test_bad_policy_kwargs_raise_clear_errors(pretrained, tmp_path):
    env = make_sb3_vec_env("ngood4", 16, seed=0)
    with pytest.raises(ValueError, match="small"):
        small_ppo(env, {"pretrained": str(pretrained), "size": "small"})  # the checkpoint is tiny
    with pytest.raises(ValueError, match="net_arch"):
        small_ppo(env, {"size": "tiny", "net_arch": [64]})
    with pytest.raises(ValueError, match="unknown size"):
        small_ppo(env, {"size": "huge"})
    with pytest.raises(CheckpointError, match="no checkpoint"):
        small_ppo(env, {"pretrained": str(tmp_path / "missing.pt")})


# --- learning ----------------------------------------------------------------------------------------------


def test_ppo_from_pretrained_improves_exact_success(pretrained):
    """About 300 gradient steps (10k samples) raise the exact success on fixed histories by > 0.05.

    The evaluation is exact given the 2048 histories (no sampling of the world); 0.05 is ~6 standard errors
    of a success rate over 2048 histories, and the run is seeded (observed gain: ~0.15).
    """
    ppo = small_ppo(make_sb3_vec_env("ngood4", 64, seed=0), {"pretrained": str(pretrained)})
    before = {t: exact_success(ppo, HIST, t) for t in (0.0, 1.0)}
    ppo.learn(10_240)
    after = {t: exact_success(ppo, HIST, t) for t in (0.0, 1.0)}
    assert after[1.0] - before[1.0] > 0.05, (before, after)
    assert after[0.0] - before[0.0] > 0.05, (before, after)


# --- saving, loading, the protocol and measures ------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(pretrained, tmp_path_factory):
    """A briefly PPO-trained pretrained policy saved as a zip (and the model in memory)."""
    path = tmp_path_factory.mktemp("zip") / "ppo.zip"
    model = train_ppo("ngood4", 2048, out=path, pretrained=pretrained, n_envs=64, seed=1, eval_every=0)
    return model, path


def test_zip_round_trip_gives_identical_deterministic_actions(trained, tmp_path):
    model, path = trained
    want = model.predict(HIST, deterministic=True)[0]
    for loaded in (load_sb3(path), agents.load(path), load_ppo(path), PPO.load(path, device="cpu")):
        np.testing.assert_array_equal(loaded.predict(HIST, deterministic=True)[0], want)
    np.testing.assert_array_equal(
        load_sb3(path).action_probs(HIST, 1.0), as_policy(model).action_probs(HIST, 1.0)
    )
    # the zip alone suffices: move the pretrained checkpoint away
    moved = tmp_path / "elsewhere.zip"
    moved.write_bytes(path.read_bytes())
    src = model.policy.features_extractor.source["pretrained"]
    hidden = tmp_path / "hidden.pt"
    shutil.move(src, hidden)
    try:
        np.testing.assert_array_equal(load_sb3(moved).predict(HIST)[0], want)
        np.testing.assert_array_equal(load_ppo(moved).predict(HIST, deterministic=True)[0], want)
        with pytest.raises(CheckpointError, match="load_sb3"):
            PPO.load(moved, device="cpu")  # SB3's loader re-reads pretrained=, and says what to use instead
    finally:
        shutil.move(hidden, src)


def test_loaded_policy_implements_the_project_protocol(trained):
    _, path = trained
    pol = agents.load(path)
    assert pol.meta["task"] == "ngood4" and pol.meta["method"] == "ppo" and pol.meta["size"] == "tiny"
    greedy = pol.action_probs(HIST, 0.0)
    assert greedy.dtype == np.float64 and greedy.shape == (len(HIST), 8)
    np.testing.assert_array_equal(greedy.sum(1), 1.0)
    np.testing.assert_array_equal(greedy.argmax(1), pol.predict(HIST)[0])
    probs = pol.action_probs(HIST, 1.0)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-12)
    nt = pol.next_token_probs(HIST)
    assert nt.shape == (len(HIST), 16)
    # the odd part of the next-token distribution is the (trained) policy up to normalisation
    np.testing.assert_allclose(nt[:, 8:] / nt[:, 8:].sum(1, keepdims=True), probs, atol=1e-6)
    action, state = pol.predict(HIST[0])
    assert np.ndim(action) == 0 and state is None
    with pytest.raises(ValueError, match="shape"):
        pol.action_probs(HIST[:, :10])


def test_export_checkpoint_keeps_the_trained_policy(trained, tmp_path):
    model, _ = trained
    path = export_checkpoint(model, tmp_path / "ppo.pt")
    exported = agents.load(path)
    assert exported.meta["kind"] == "sb3"
    np.testing.assert_allclose(
        exported.action_probs(HIST, 1.0), as_policy(model).action_probs(HIST, 1.0), atol=1e-6
    )


def test_measure_of_the_sb3_model_equals_measure_of_the_loaded_zip(trained):
    from measures import measure

    model, path = trained
    for temperature in (0.0, 1.0):
        a = measure(model, "ngood4", histories=HIST, temperature=temperature, n_bootstrap=0)
        b = measure(agents.load(path), "ngood4", histories=HIST, temperature=temperature, n_bootstrap=0)
        for name in ("op", "imp", "success", "op_theory", "imp_min"):
            assert getattr(a, name) == pytest.approx(getattr(b, name), abs=1e-6), name


def test_agents_softmax_agrees_with_measures_probs_from_logits():
    """agents keeps torch's float64 softmax (the numbers its agents were measured with), measures scipy's.

    Greedy one-hots are identical; tempered softmaxes are the same law and differ only in the last bits.
    """
    from agents.policy import _torch_probs
    from measures.policies import probs_from_logits

    logits = np.random.default_rng(0).normal(size=(4096, 8)) * 5
    for t in (0.0, 1.0, 2.0):
        got, want = _torch_probs(torch.from_numpy(logits), t), probs_from_logits(logits, t)
        if t == 0:
            assert np.array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)
    with pytest.raises(TypeError, match="temperature"):
        _torch_probs(torch.from_numpy(logits), "1")
    with pytest.raises(ValueError, match="temperature"):
        _torch_probs(torch.from_numpy(logits), -1.0)


def test_sb3_policies_share_the_protocol_and_its_predict(trained):
    model, path = trained
    for pol in (as_policy(model), agents.load(path)):
        assert isinstance(pol, agents.Policy) and isinstance(pol, agents.PolicyBase)
    in_memory, loaded = (
        as_policy(model),
        agents.load(path),
    )  # (building a policy draws from torch's generator)
    torch.manual_seed(0)
    a = in_memory.predict(HIST, deterministic=False)[0]
    torch.manual_seed(0)
    b = loaded.predict(HIST, deterministic=False)[0]
    np.testing.assert_array_equal(a, b)  # sampling follows torch's global generator


def test_not_a_zip_raises_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no SB3 model"):
        load_sb3(tmp_path / "missing.zip")
    bad = tmp_path / "bad.zip"
    bad.write_text("not a zip")
    with pytest.raises(CheckpointError, match="not a readable Stable-Baselines3 zip"):
        agents.load(bad)
    with pytest.raises(TypeError, match="TransformerPolicy"):
        export_checkpoint(
            PPO("MlpPolicy", make_sb3_vec_env("ngood4", 2), n_steps=8, batch_size=16), tmp_path / "y.pt"
        )


def test_mlp_policy_zips_load_as_protocol_policies(tmp_path):
    path = tmp_path / "mlp.zip"
    model = train_ppo("ngood2", 512, out=path, policy="mlp", n_envs=64, seed=0, eval_every=0)
    pol = agents.load(path)
    assert pol.meta["policy"] == "mlp" and pol.meta["task"] == "ngood2"
    np.testing.assert_array_equal(pol.predict(HIST)[0], model.predict(HIST, deterministic=True)[0])
    assert not hasattr(pol, "next_token_probs")  # only the transformer predicts tokens


def test_cli_trains_saves_zip_and_tensorboard(pretrained, tmp_path, capsys):
    from agents.cli import main

    out = tmp_path / "run" / "agent.zip"
    rc = main(
        [
            "ppo",
            "--task",
            "ngood4",
            "--pretrained",
            str(pretrained),
            "--timesteps",
            "1024",
            "--out",
            str(out),
            "--n-envs",
            "64",
            "--seed",
            "2",
            "--n-steps",
            "8",
            "--batch-size",
            "128",
            "--eval-every",
            "512",
        ]
    )
    assert rc == 0 and out.exists()
    printed = capsys.readouterr().out
    assert "greedy success" in printed and str(out) in printed
    events = list((tmp_path / "run" / "runs").rglob("events.out.tfevents.*"))
    assert events, "TensorBoard event file missing"
    pol = agents.load(out)
    assert pol.meta["seed"] == 2 and pol.meta["pretrained"] == str(pretrained)
