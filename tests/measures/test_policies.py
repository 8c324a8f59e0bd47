"""Any policy: the same policy as an action callable, a probability callable, a torch module (8 or 16 logits),
an SB3 model/policy and the project's agents gives the same numbers; bad policy output raises clearly."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO

import measures
import seqenv  # noqa: F401  (registers the environments)
from agents.policy import AgentPolicy
from agents.transformer import SplitSeqTransformer
from measures.policies import action_probabilities
from seqenv.sequence import natural_histories

torch.set_num_threads(1)
HIST = natural_histories(1024, seed=21)
FIGS = ("op", "imp", "success", "baseline_success", "imp_min", "op_theory")


class OneHotLinear(torch.nn.Module):
    """Logits = W . onehot(history) + b, with the one-hot laid out as SB3 lays out MultiDiscrete([16]*20)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, pad_to_16: bool = False):
        super().__init__()
        self.weight, self.bias, self.pad = torch.nn.Parameter(weight), torch.nn.Parameter(bias), pad_to_16

    def forward(self, idx):
        x = torch.nn.functional.one_hot(idx, 16).float().reshape(len(idx), 320)
        logits = torch.nn.functional.linear(x, self.weight, self.bias)
        if self.pad:  # next-token logits: 8 arbitrary even-token logits in front of the odd-token ones
            logits = torch.cat([torch.full_like(logits, 7.0), logits], dim=1)
        return logits


@pytest.fixture(scope="module")
def linear():
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 320, generator=g) * 0.5, torch.randn(8, generator=g)


@pytest.fixture(scope="module")
def ppo(linear):
    """A PPO whose policy logits are exactly OneHotLinear's: no hidden layers, action_net = (W, b)."""
    model = PPO(
        "MlpPolicy",
        gym.make("SplitSeq-ngood4-v0"),
        policy_kwargs={"net_arch": {"pi": [], "vf": []}},
        seed=0,
        device="cpu",
    )
    with torch.no_grad():
        model.policy.action_net.weight.copy_(linear[0])
        model.policy.action_net.bias.copy_(linear[1])
    return model


def _measure(policy, temperature):
    return measures.measure(policy, histories=HIST, temperature=temperature, n_bootstrap=0)


def test_action_callable_probability_callable_torch_module_and_sb3_agree(linear, ppo):
    module, module16 = OneHotLinear(*linear), OneHotLinear(*linear, pad_to_16=True)

    def logits(h):
        with torch.no_grad():
            return module(torch.from_numpy(h)).double().numpy()

    def actions(h):
        return logits(h).argmax(axis=1)

    def probs(h):
        z = logits(h)
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    greedy = [_measure(p, 0.0) for p in (actions, probs, module, module16, ppo, ppo.policy)]
    sb3_predict = measures.measure(
        lambda h: ppo.predict(h, deterministic=True)[0], histories=HIST, n_bootstrap=0
    )
    for r in greedy[1:] + [sb3_predict]:
        for name in FIGS:
            assert getattr(r, name) == getattr(greedy[0], name), name
    assert len(np.unique(actions(HIST))) == 8  # a policy that does depend on the history
    for t in (1.0, 0.3):
        tempered = [_measure(p, t) for p in (probs, module, module16, ppo)]
        for r in tempered[1:]:
            for name in FIGS:  # float32 logits inside torch and SB3: agreement to ~1e-7
                assert getattr(r, name) == pytest.approx(getattr(tempered[0], name), abs=1e-6), (t, name)
    # at temperature 1 the SB3 probabilities are its distribution's own
    obs, _ = ppo.policy.obs_to_tensor(HIST[:50])
    with torch.no_grad():
        sb3_probs = ppo.policy.get_distribution(obs).distribution.probs.double().numpy()
    np.testing.assert_allclose(action_probabilities(ppo, HIST[:50], 1.0), sb3_probs, atol=1e-6)


def test_project_agents_equal_their_transformer_module():
    torch.manual_seed(1)
    model = SplitSeqTransformer("tiny")
    model.train()  # measures must switch dropout off (or results would be random) and restore the flag
    a = [_measure(model, t) for t in (0.0, 1.0)]
    assert model.training
    b = [_measure(AgentPolicy(model), t) for t in (0.0, 1.0)]
    for ra, rb in zip(a, b):
        for name in FIGS:
            assert getattr(ra, name) == pytest.approx(getattr(rb, name), abs=1e-12), name


def test_temperature_tempers_probabilities_as_logits_over_temperature():
    q = np.random.default_rng(0).dirichlet(np.ones(8), size=len(HIST))
    for t in (0.25, 1.0, 3.0):
        expected = q ** (1 / t) / (q ** (1 / t)).sum(axis=1, keepdims=True)
        np.testing.assert_allclose(action_probabilities(lambda h: q, HIST, t), expected, atol=1e-12)
    onehot = action_probabilities(lambda h: q, HIST, 0.0)
    assert (onehot.argmax(axis=1) == q.argmax(axis=1)).all() and (onehot.sum(axis=1) == 1).all()


class NaNModule(torch.nn.Module):
    def forward(self, idx):
        out = torch.zeros(len(idx), 8)
        out[3, 5] = float("nan")
        return out


def _bad_probs(h):
    p = np.full((len(h), 8), 1 / 8)
    p[2, 0] = -0.1
    p[2, 1] += 0.1
    return p


@pytest.mark.parametrize(
    "policy, temperature, error, match",
    [
        (_bad_probs, 0.0, ValueError, "negative probability -0.1 for history 2, action 0"),
        (lambda h: np.full((len(h), 8), 0.2), 1.0, ValueError, "history 0 that sum to 1.6"),
        (lambda h: np.full((len(h), 8), np.nan), 1.0, ValueError, "returned probability nan for history 0"),
        (lambda h: np.full((len(h), 7), 1 / 7), 1.0, ValueError, r"shape \(64, 7\); expected \(64, 8\)"),
        (NaNModule(), 0.0, ValueError, "non-finite logit nan \\(history 3, output 5\\)"),
        (lambda h: np.full(len(h), 8), 0.0, ValueError, "action 8 for history 0; expected 0..7"),
        (lambda h: np.full(len(h), -1), 0.0, ValueError, "action -1 for history 0"),
        (lambda h: np.zeros(len(h)), 0.0, TypeError, "actions of dtype float64; expected integers"),
        (
            lambda h: np.zeros(len(h), dtype=int),
            1.0,
            ValueError,
            "returned actions.*temperature=1.0 needs a distribution",
        ),
        (lambda h: np.zeros((len(h), 8, 1)), 0.0, ValueError, r"shape \(64, 8, 1\)"),
        (lambda h: (np.zeros(len(h), dtype=int), None), 0.0, TypeError, r"tuple \(actions, state\)"),
        ("not a policy", 0.0, TypeError, "cannot use str as a policy"),
    ],
)
def test_bad_policy_output_raises_naming_the_value(policy, temperature, error, match):
    with pytest.raises(error, match=match):
        measures.measure(policy, histories=HIST[:64], temperature=temperature, n_bootstrap=0)


def test_module_with_wrong_width_and_sb3_with_wrong_action_space_raise():
    class Wide(torch.nn.Module):
        def forward(self, idx):
            return torch.zeros(len(idx), 12)

    with pytest.raises(ValueError, match=r"logits of shape \(64, 12\); expected \(64, 8\).*or \(64, 16\)"):
        measures.measure(Wide(), histories=HIST[:64], n_bootstrap=0)
    env = gym.make("CartPole-v1")
    with pytest.raises(ValueError, match="action space Discrete\\(2\\); expected Discrete\\(8\\)"):
        measures.measure(PPO("MlpPolicy", env, device="cpu"), histories=HIST[:64], n_bootstrap=0)


def test_a_torch_module_that_wants_floats_gets_a_clear_error():
    # measures passes token ids as a LongTensor; a float network fails inside torch with a raw dtype error
    with pytest.raises(
        TypeError,
        match=r"policy Linear cannot take the histories as given: a LongTensor of token ids \(64, 20\).*torch says: .*dtype.*torch.softmax",
    ):
        measures.measure(torch.nn.Linear(20, 8), n_histories=64, n_bootstrap=0)
    net = torch.nn.Sequential(
        torch.nn.Embedding(16, 4), torch.nn.Flatten(), torch.nn.Linear(40, 8)
    )  # wrong width
    with pytest.raises(
        ValueError,
        match=r"policy Sequential cannot take the histories as given.*torch says: mat1 and mat2 shapes",
    ):
        measures.measure(net, n_histories=64, n_bootstrap=0)
    # the suggested wrapper works
    lin = torch.nn.Linear(20, 8)
    r = measures.measure(
        lambda h: torch.softmax(lin(torch.as_tensor(h, dtype=torch.float32)), -1),
        n_histories=64,
        n_bootstrap=0,
    )
    assert np.isfinite(r.op)
