"""RL finetuning: the losses, that it raises own-task success beyond chance, the checkpoint, and resume."""

import numpy as np
import pandas as pd
import pytest
import torch

import agents
from agents.checkpoint import CheckpointError, convert_checkpoint, load_checkpoint, numpy_arrays
from agents.finetune import (
    FINETUNE_BUDGETS,
    FINETUNE_METHODS,
    HISTORY_COLUMNS,
    FinetuneConfig,
    SuccessEvaluator,
    advantages,
    finetune,
    policy_loss,
)
from agents.pretrain import PretrainConfig, pretrain
from agents.training import history_path
from seqenv.sequence import natural_histories, transition_probs
from seqenv.tasks import TASKS, good_mask

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A tiny model pretrained briefly: it predicts the sequence well above chance (about 6 s of CPU)."""
    out = tmp_path_factory.mktemp("pre") / "tiny.pt"
    cfg = PretrainConfig(
        size="tiny",
        seed=0,
        steps=700,
        batch_size=128,
        lr=3e-3,
        warmup_steps=50,
        eval_every=700,
        eval_samples=1024,
        checkpoint_every=0,
    )
    pretrain(cfg, out, progress=False)
    return out


def ft_cfg(**kw) -> FinetuneConfig:
    base = {
        "task": "ngood4",
        "seed": 1,
        "steps": 12,
        "batch_size": 64,
        "lr": 1e-3,
        "maintenance_lr": 1e-4,
        "maintenance_batch": 32,
        "eval_every": 4,
        "eval_samples": 512,
        "warmup_steps": 2,
    }
    return FinetuneConfig(**{**base, **kw})


# -------------------------------------------------------------------------------------------- losses
def test_positive_loss_is_cross_entropy_on_the_successful_samples_only():
    torch.manual_seed(0)
    logits = torch.randn(6, 8)
    actions = torch.tensor([0, 3, 7, 1, 1, 5])
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    hit = rewards > 0
    expected = torch.nn.functional.cross_entropy(logits[hit], actions[hit])
    assert torch.allclose(policy_loss(logits, actions, advantages(rewards, "positive")), expected)
    lg = logits.clone().requires_grad_()
    none = policy_loss(lg, actions, advantages(torch.zeros(6), "positive"))
    none.backward()
    assert none.item() == 0 and torch.equal(lg.grad, torch.zeros(6, 8))


def test_reinforce_loss_uses_a_leave_one_out_baseline():
    torch.manual_seed(0)
    logits = torch.randn(5, 8)
    actions = torch.tensor([2, 2, 4, 6, 0])
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0])
    logp = torch.log_softmax(logits, -1)[torch.arange(5), actions]
    baseline = torch.tensor([(rewards.sum() - r) / 4 for r in rewards])
    expected = -((rewards - baseline) * logp).mean()
    adv = advantages(rewards, "reinforce")
    assert torch.allclose(policy_loss(logits, actions, adv), expected)
    # failures get a negative advantage: their token is pushed down
    lg = logits.clone().requires_grad_()
    policy_loss(lg, actions, adv).backward()
    assert (
        lg.grad[1, 2] > 0 and lg.grad[0, 2] < 0
    )  # gradient descent lowers a failure's logit, raises a success's
    # equal rewards carry no signal at all
    lg = logits.clone().requires_grad_()
    policy_loss(lg, actions, advantages(torch.ones(5), "reinforce")).backward()
    assert torch.allclose(lg.grad, torch.zeros(5, 8))
    with pytest.raises(ValueError, match="at least 2"):
        advantages(torch.ones(1), "reinforce")


def test_grouped_reinforce_baseline_is_the_mean_of_the_same_historys_other_samples():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0])  # 3 histories x 4
    adv = advantages(rewards, "reinforce", group_size=4)
    g = rewards.reshape(3, 4)
    expected = torch.stack([g[i, j] - (g[i].sum() - g[i, j]) / 3 for i in range(3) for j in range(4)])
    assert torch.allclose(adv, expected)
    assert torch.equal(adv[4:8], torch.zeros(4))  # every token of a history succeeded: nothing to learn
    assert torch.allclose(
        adv.reshape(3, 4).sum(1), torch.zeros(3), atol=1e-6
    )  # within a history the signal is relative
    assert torch.equal(advantages(rewards, "reinforce", group_size=1), advantages(rewards, "reinforce"))
    with pytest.raises(ValueError, match="group_size=5"):
        advantages(rewards, "reinforce", group_size=5)


def test_grouped_rollouts_replay_each_history(pretrained, tmp_path, monkeypatch):
    """With group_size K the policy sees B/K distinct histories, each K times in consecutive rows."""
    import agents.finetune as ft

    seen = []
    real = ft.policy_loss

    def spy(logits, actions, adv, old_logp=None, clip=0.2):
        seen.append(logits.detach().clone())
        return real(logits, actions, adv, old_logp, clip)

    monkeypatch.setattr(ft, "policy_loss", spy)
    cfg = ft_cfg(method="reinforce", steps=3, batch_size=64, group_size=8, minibatch_size=64, epochs=1)
    finetune(pretrained, cfg, tmp_path / "g.pt", progress=False)
    # dropout is 0 for reinforce, so equal histories give equal logits: 8 distinct rows, 8 copies each
    assert len(seen) == 3
    for logits in seen:
        _, counts = torch.unique(logits, dim=0, return_counts=True)
        assert sorted(counts.tolist()) == [8] * 8
    with pytest.raises(ValueError, match="must divide batch_size"):
        ft_cfg(method="reinforce", batch_size=64, group_size=6)


def test_method_defaults_resolve_and_explicit_values_win():
    r, p = FinetuneConfig(method="reinforce"), FinetuneConfig(method="positive")
    assert (r.batch_size, r.minibatch_size, r.epochs, r.group_size, r.dropout) == (2048, 256, 4, 1, 0.0)
    assert (p.batch_size, p.minibatch_size, p.epochs, p.group_size, p.dropout) == (256, 256, 1, 1, 0.1)
    assert r.lr < p.lr
    c = FinetuneConfig.preset("tiny", method="reinforce", batch_size=512, lr=1e-4, steps=7)
    assert (c.batch_size, c.minibatch_size, c.lr, c.steps) == (512, 256, 1e-4, 7)
    assert FinetuneConfig.preset("large", method="positive").checkpoint_every == 600  # a tenth of 6000 steps
    assert FinetuneConfig.preset("tiny", method="reinforce", budget="quick").steps < c.batch_size
    with pytest.raises(ValueError, match="minibatch_size=512 must be at most batch_size=256"):
        FinetuneConfig(method="reinforce", batch_size=256, minibatch_size=512)


def test_presets_are_the_budget_tables():
    assert FINETUNE_METHODS == ("positive", "reinforce")
    for budget, by_method in FINETUNE_BUDGETS.items():
        for method, by_size in by_method.items():
            for size, by_task in by_size.items():
                assert set(by_task) == set(TASKS)
                for task, steps in by_task.items():
                    cfg = FinetuneConfig.preset(size, task=task, method=method, budget=budget)
                    assert cfg.steps == steps and cfg.checkpoint_every == max(1, steps // 10)
    assert FinetuneConfig.preset("tiny", task="ngood6", method="reinforce").steps == 100  # half of 200
    with pytest.raises(ValueError, match="task"):
        FinetuneConfig.preset("tiny", task="ngood3")
    # exactly what the preset gave before the redesign (tiny quick, the quick-preset run), plus the settings
    # added since at the values that reproduce it
    assert FinetuneConfig.preset("tiny", method="positive", budget="quick").to_dict() == {
        "task": "ngood4",
        "method": "positive",
        "seed": 0,
        "steps": 3200,
        "batch_size": 256,
        "epochs": 1,
        "group_size": 1,
        "minibatch_size": 256,
        "clip": 0.2,
        "lr": 0.001,
        "warmup_steps": 20,
        "min_lr_ratio": 1.0,
        "temperature": 1.0,
        "dropout": 0.1,
        "maintenance_lr": 0.0001,
        "maintenance_batch": 32,
        "world_model": "natural",
        "counterfactual_share": 0.5,
        "weight_decay": 0.01,
        "grad_clip": 1.0,
        "eval_every": 320,
        "eval_samples": 8192,
        "checkpoint_every": 320,
        "threads": 0,
        "device": "auto",
        "precision": "fp32",
    }
    import agents.finetune as ft

    with pytest.warns(DeprecationWarning, match="FINETUNE_METHODS"):
        assert ft.METHODS is FINETUNE_METHODS


def test_clipped_surrogate_equals_the_plain_gradient_until_the_policy_moves_then_stops():
    torch.manual_seed(1)
    logits = torch.randn(64, 8)
    actions = torch.randint(0, 8, (64,))
    adv = advantages(torch.randint(0, 2, (64,)).float(), "reinforce")
    old = torch.log_softmax(logits, -1).gather(1, actions[:, None]).squeeze(1)
    g_plain, g_clip = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    policy_loss(g_plain, actions, adv).backward()
    policy_loss(g_clip, actions, adv, old_logp=old, clip=0.2).backward()
    assert torch.allclose(g_plain.grad, g_clip.grad, atol=1e-6)
    # once an action's probability ratio left [1 - c, 1 + c] in its advantage's direction, it gets no gradient
    moved = logits.clone()
    moved[torch.arange(64), actions] += torch.where(adv > 0, 1.0, -1.0)  # every ratio far past the clip
    g = moved.requires_grad_()
    policy_loss(g, actions, adv, old_logp=old, clip=0.2).backward()
    assert torch.allclose(g.grad, torch.zeros(64, 8), atol=1e-7)


def test_success_evaluator_is_exact():
    judge = SuccessEvaluator("ngood2", 256, seed=4)
    p_good = transition_probs(judge.histories)[..., good_mask("ngood2")].sum(-1)
    assert judge.s_uniform == pytest.approx(p_good.mean(), abs=1e-12)
    assert judge.s_oracle == pytest.approx(p_good.max(axis=1).mean(), abs=1e-12)


# ---------------------------------------------------------------------------------------------- runs
@pytest.mark.parametrize("method", ["positive", "reinforce"])
def test_finetuning_raises_own_task_success_beyond_chance(pretrained, tmp_path, method):
    """Greedy success, exact on 4096 held-out histories, rises well beyond the paired standard error."""
    out = tmp_path / f"{method}.pt"
    cfg = ft_cfg(method=method, steps=120, batch_size=256, lr=2e-3, eval_every=120, eval_samples=4096)
    s = finetune(pretrained, cfg, out, progress=False)
    before, after = agents.load(pretrained), agents.load(out)
    h = natural_histories(4096, seed=123)  # fresh histories, independent of training and of the evaluator
    p_good = transition_probs(h)[..., good_mask("ngood4")].sum(-1)
    diff = (after.action_probs(h) * p_good).sum(1) - (before.action_probs(h) * p_good).sum(1)
    se = diff.std(ddof=1) / np.sqrt(len(h))
    assert diff.mean() > 5 * se and diff.mean() > 0.03
    assert s["success"] > s["success_pretrained"] + 0.03


def test_maintenance_protects_next_token_prediction(pretrained, tmp_path):
    """Without maintenance the RL updates erode the even-token prediction; with it, much less is lost."""
    kw = {
        "steps": 120,
        "batch_size": 256,
        "lr": 2e-3,
        "maintenance_lr": 2e-4,
        "maintenance_batch": 128,
        "eval_every": 120,
        "eval_samples": 4096,
    }
    with_m = finetune(pretrained, ft_cfg(**kw), tmp_path / "m.pt", progress=False)
    without = finetune(
        pretrained, ft_cfg(**{**kw, "maintenance_batch": 0}), tmp_path / "n.pt", progress=False
    )
    base = with_m["maintenance_acc_pretrained"]
    se = np.sqrt(base * (1 - base) / 4096)
    assert with_m["maintenance_acc"] > without["maintenance_acc"] + 5 * se


def test_checkpoint_meta_history_and_tensorboard(pretrained, tmp_path):
    out = tmp_path / "ft.pt"
    s = finetune(pretrained, ft_cfg(), out, log_dir=tmp_path / "tb", progress=False)
    meta = load_checkpoint(out)["meta"]
    for key, value in {
        "size": "tiny",
        "seed": 1,
        "task": "ngood4",
        "method": "positive",
        "params": 17_980,
    }.items():
        assert meta[key] == value
    assert meta["pretrained"] == str(pretrained.resolve()) and meta["pretrain_seed"] == 0
    assert s["s_uniform"] < s["s_oracle"] and 0 <= s["success"] <= s["s_oracle"] + 1e-12
    hist = pd.read_csv(history_path(out))
    assert tuple(hist.columns) == HISTORY_COLUMNS and list(hist["step"]) == [4, 8, 12]
    assert hist["success"].between(0, 1).all() and hist["maintenance_acc"].between(0, 1).all()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("success", "sample_success", "frac_of_oracle", "maintenance_acc", "loss", "maintenance_loss"):
        assert f"finetune/{tag}" in tags
    policy = agents.load(out)
    assert policy.meta["task"] == "ngood4" and policy.meta["kind"] == "finetuned"


def test_resume_after_interruption_is_bit_identical(pretrained, tmp_path):
    cfg = ft_cfg(method="reinforce", checkpoint_every=5)
    full = finetune(pretrained, cfg, tmp_path / "full.pt", progress=False)
    part = finetune(pretrained, cfg, tmp_path / "res.pt", progress=False, stop_after=7)
    assert part["finished"] is False and load_checkpoint(tmp_path / "res.pt")["train_state"]["step"] == 7
    # the env, data streams and generators are stored as plain data: weights_only loading reads it all
    state = torch.load(tmp_path / "res.pt", weights_only=True)["train_state"]
    assert isinstance(state["env"]["rng"], dict) and isinstance(state["obs"], torch.Tensor)
    resumed = finetune(pretrained, cfg, tmp_path / "res.pt", progress=False)
    a, b = load_checkpoint(tmp_path / "full.pt")["model"], load_checkpoint(tmp_path / "res.pt")["model"]
    assert all(torch.equal(v, b[k]) for k, v in a.items())
    assert resumed["success"] == full["success"] and resumed["maintenance_acc"] == full["maintenance_acc"]
    with pytest.raises(CheckpointError, match=r"holds a run with other settings .*--restart"):
        finetune(
            pretrained, ft_cfg(method="positive", checkpoint_every=5), tmp_path / "res.pt", progress=False
        )


def test_bad_configs_and_inputs(pretrained, tmp_path):
    with pytest.raises(ValueError, match="unknown task"):
        FinetuneConfig(task="ngood5")
    with pytest.raises(ValueError, match="unknown method"):
        FinetuneConfig(method="ppo")
    with pytest.raises(ValueError, match="temperature"):
        FinetuneConfig(temperature=0.0)
    with pytest.raises(TypeError, match="steps must be an int >= 1, got 2.5"):
        FinetuneConfig(steps=2.5)
    with pytest.raises(TypeError, match="batch_size must be an int >= 1, got True"):
        FinetuneConfig(batch_size=True)
    with pytest.raises(ValueError, match="seed must be an int >= 0, got -1"):
        FinetuneConfig(seed=-1)
    with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\), got 1.0"):
        FinetuneConfig(dropout=1.0)
    with pytest.raises(ValueError, match="much lower"):
        finetune(pretrained, ft_cfg(maintenance_lr=1e-2), tmp_path / "x.pt", progress=False)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        finetune(tmp_path / "missing.pt", ft_cfg(), tmp_path / "x.pt", progress=False)
    with pytest.raises(ValueError, match="unknown size"):
        FinetuneConfig.preset("huge")
    assert FinetuneConfig.preset("large", task="ngood2").task == "ngood2"


def _as_old_format(path, cfg):
    """Rewrite an interrupted checkpoint as splitseq wrote them before train states were plain data: the live
    vector env, numpy arrays, and the maintenance streams' numpy generator were pickled."""
    import gymnasium as gym

    ckpt = load_checkpoint(path)
    state = ckpt["train_state"]
    env = gym.make_vec(
        f"SplitSeq-{cfg.task}-v0", num_envs=cfg.batch_size, vectorization_mode="vector_entry_point"
    )
    env.reset(seed=123)
    env.load_state_dict(numpy_arrays(state["env"]))
    streams = numpy_arrays(state["data"]["streams"])
    rng = np.random.default_rng()
    rng.bit_generator.state = streams["rng"]
    state.update(
        env=env, obs=numpy_arrays(state["obs"]), data={**state["data"], "streams": {**streams, "rng": rng}}
    )
    torch.save(ckpt, path)


def test_old_format_checkpoint_converts_and_resumes_bit_identically(pretrained, tmp_path):
    cfg = ft_cfg(method="reinforce", steps=8, eval_every=4, checkpoint_every=3, group_size=2)
    finetune(pretrained, cfg, tmp_path / "full.pt", progress=False)
    finetune(pretrained, cfg, tmp_path / "old.pt", progress=False, stop_after=5)
    _as_old_format(tmp_path / "old.pt", cfg)
    with pytest.raises(CheckpointError, match="convert_checkpoint"):
        finetune(pretrained, cfg, tmp_path / "old.pt", progress=False)
    convert_checkpoint(tmp_path / "old.pt")
    resumed = finetune(pretrained, cfg, tmp_path / "old.pt", progress=False)
    a, b = load_checkpoint(tmp_path / "full.pt")["model"], load_checkpoint(tmp_path / "old.pt")["model"]
    assert all(torch.equal(v, b[k]) for k, v in a.items())
    assert resumed["steps"] == 8


def test_counterfactual_maintenance_teaches_the_world_after_any_action(pretrained, tmp_path):
    """The post's maintenance only shows natural contexts, so after any other action the model's world is
    confidently wrong; world_model="counterfactual" also shows the world's answer to other actions."""
    import measures

    hist = natural_histories(1024, seed=3)
    err = {}
    for world in ("natural", "counterfactual"):
        cfg = ft_cfg(steps=150, eval_every=150, maintenance_lr=5e-4, world_model=world)
        finetune(pretrained, cfg, tmp_path / f"{world}.pt", progress=False)
        r = measures.self_evaluate(agents.load(tmp_path / f"{world}.pt"), histories=hist, n_bootstrap=0)
        err[world] = (r.world_kl_natural, r.world_kl_counterfactual)
    # measured (seed 1): counterfactual KL 3.9 -> 2.4 nats; natural KL 0.77 -> 1.19, the price of half the
    # maintenance batch at this high rate on a briefly pretrained tiny model
    assert err["counterfactual"][1] < err["natural"][1] - 1.0, err
    assert err["counterfactual"][0] < err["natural"][0] + 0.6, err


def test_the_world_model_option_is_recorded_and_resumes_bit_identically(pretrained, tmp_path):
    cfg = ft_cfg(world_model="policy", checkpoint_every=5)
    finetune(pretrained, cfg, tmp_path / "full.pt", progress=False)
    finetune(pretrained, cfg, tmp_path / "res.pt", progress=False, stop_after=7)
    finetune(pretrained, cfg, tmp_path / "res.pt", progress=False)
    a, b = load_checkpoint(tmp_path / "full.pt"), load_checkpoint(tmp_path / "res.pt")
    assert all(torch.equal(v, b["model"][k]) for k, v in a["model"].items())
    assert a["meta"]["finetune"]["world_model"] == "policy"
    # the option changes what maintenance trains on, so the weights; the post's default is unchanged by it
    finetune(pretrained, ft_cfg(checkpoint_every=5), tmp_path / "natural.pt", progress=False)
    c = load_checkpoint(tmp_path / "natural.pt")
    assert not all(torch.equal(v, c["model"][k]) for k, v in a["model"].items())
    assert c["meta"]["finetune"]["world_model"] == "natural"
    with pytest.raises(ValueError, match="world_model"):
        ft_cfg(world_model="imagined")


def test_a_run_checkpointed_before_the_world_model_setting_existed_resumes(pretrained, tmp_path):
    cfg = ft_cfg(checkpoint_every=5)
    finetune(pretrained, cfg, tmp_path / "full.pt", progress=False)
    finetune(pretrained, cfg, tmp_path / "old.pt", progress=False, stop_after=7)
    ckpt = torch.load(tmp_path / "old.pt", weights_only=True)
    for key in ("world_model", "counterfactual_share"):  # what a checkpoint of the older code holds
        del ckpt["train_state"]["config"][key]
    ckpt["train_state"]["data"].pop("counterfactual_rng")
    torch.save(ckpt, tmp_path / "old.pt")
    finetune(pretrained, cfg, tmp_path / "old.pt", progress=False)
    a, b = load_checkpoint(tmp_path / "full.pt")["model"], load_checkpoint(tmp_path / "old.pt")["model"]
    assert all(torch.equal(v, b[k]) for k, v in a.items())
