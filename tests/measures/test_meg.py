"""measures.meg: maximum entropy goal-directedness against its closed forms and the paper's properties.

A one-state bandit has MEG = ln 2 - H(q) (for q >= 1/2; 0 below, unless beta < 0 is allowed), linear in the
horizon; the uniform policy has MEG 0; MEG is invariant to positive affine maps of the utility; the optimal
policy beats epsilon-greedy ones, which beat the uniform one; a deterministic optimal policy with unique best
actions reaches ln A per decision.
"""

import math

import gymnasium as gym
import numpy as np
import pytest

from measures.meg import log_soft_policy, meg, optimal_policy, q_values, soft_q
from measures.world_policies import epsilon_greedy, uniform_policy
from measures.worlds import tabular_world

BANDIT = tabular_world(np.ones((1, 2, 1)))  # one live state, two actions, both stay
U = np.array([[1.0, 0.0]])


def h2(q):
    return -q * math.log(q) - (1 - q) * math.log(1 - q)


@pytest.mark.parametrize("q", [0.5, 0.6, 0.8, 0.95, 0.3])
def test_bandit_closed_form(q):
    pi = np.array([[q, 1 - q]])
    r = meg(pi, BANDIT, U, horizon=1, temperature=1.0)
    # sigma(beta) = q at beta = logit(q), which is >= 0 only for q >= 1/2; below, beta = 0 (uniform) is best
    expect = math.log(2) - h2(q) if q >= 0.5 else 0.0
    assert r.meg == pytest.approx(expect, abs=1e-7) and r.meg_per_step == r.meg and r.decisions == 1
    if q > 0.5:
        assert r.beta == pytest.approx(math.log(q / (1 - q)), rel=2e-3)
    else:
        assert r.beta == 0.0
    both = meg(pi, BANDIT, U, horizon=1, temperature=1.0, negative=True)  # pursuing -U counts too
    assert both.meg == pytest.approx(math.log(2) - h2(q), abs=1e-7)
    # the soft-optimal policy is the same at every step of a bandit: the gain adds up over the horizon
    five = meg(pi, BANDIT, U, horizon=5, temperature=1.0)
    assert (five.meg, five.meg_per_step, five.decisions) == pytest.approx((5 * expect, expect, 5), abs=1e-6)
    disc = meg(pi, BANDIT, U, discount=0.9, temperature=1.0)  # sum_t 0.9^t = 10 decisions
    assert (disc.meg, disc.meg_per_step, disc.decisions) == pytest.approx((10 * expect, expect, 10), abs=1e-6)


@pytest.fixture(scope="module")
def lake():
    return tabular_world(gym.make("FrozenLake-v1"))


@pytest.mark.parametrize("name", ["FrozenLake-v1", "CliffWalking-v1"])
def test_uniform_policy_has_zero_meg(name):
    w = tabular_world(gym.make(name))
    r = meg(uniform_policy(w.n_states, 4), w, horizon=50, temperature=1.0)
    assert r.meg == 0.0 and r.beta == 0.0
    assert max(r.gains) == 0.0 and min(r.gains) < 0  # every other soft-optimal policy predicts worse


@pytest.mark.parametrize("a, b", [(3.0, 2.0), (0.5, -7.0), (40.0, 0.0)])
@pytest.mark.parametrize("schedule", [dict(horizon=30), dict(discount=0.9)])
def test_meg_is_invariant_to_positive_affine_maps_of_the_utility(lake, a, b, schedule):
    pi = epsilon_greedy(optimal_policy(lake), 0.2)
    u = lake.reward
    base = meg(pi, lake, u, temperature=1.0, **schedule)
    moved = meg(pi, lake, a * u + b, temperature=1.0, **schedule)
    assert moved.meg == pytest.approx(base.meg, rel=1e-9, abs=1e-12)
    assert moved.beta == pytest.approx(base.beta / a, rel=1e-9)  # the same soft-optimal policy


@pytest.mark.parametrize("name, horizon", [("FrozenLake-v1", 100), ("CliffWalking-v1", 60)])
def test_optimal_beats_epsilon_greedy_beats_uniform(name, horizon):
    w = tabular_world(gym.make(name))
    opt = optimal_policy(w)
    values = [
        meg(epsilon_greedy(opt, eps), w, horizon=horizon, temperature=1.0).meg_per_step
        for eps in (0, 0.1, 0.5, 1)
    ]
    assert values[0] > values[1] > values[2] > values[3] == 0


def test_a_unique_optimal_path_reaches_ln_a_per_decision():
    w = tabular_world(gym.make("CliffWalking-v1"))
    r = meg(optimal_policy(w), w, horizon=100)
    # 13 steps along the cliff edge, each the only optimal action: the hard-optimal limit predicts them all
    assert r.decisions == 13 and r.meg == pytest.approx(13 * math.log(4), abs=1e-9)


def test_soft_q_tends_to_the_hard_q_and_its_policy_is_normalised(lake):
    q_hard = soft_q(lake, lake.reward, np.inf, discount=0.95)
    assert np.allclose(q_hard, q_values(lake, discount=0.95))
    q_soft = soft_q(lake, lake.reward, 1e5, discount=0.95)
    assert np.abs(q_soft - q_hard).max() < 1e-3
    logp = log_soft_policy(soft_q(lake, lake.reward, 3.0, horizon=4), 3.0)
    assert logp.shape == (4, 16, 4) and np.allclose(np.exp(logp).sum(axis=-1), 1)


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(horizon=5, discount=0.9), ValueError, "give horizon= or discount=, not both"),
        (dict(discount=1.0), ValueError, r"discount must be in \[0, 1\)"),
        (dict(horizon=0), ValueError, "horizon must be an int >= 1, got 0"),
        (dict(horizon=5, utility=np.ones((16, 3))), ValueError, r"utility must have shape \(16, 4\)"),
        (dict(horizon=5, utility="goal"), ValueError, "unknown utility 'goal'"),
        (dict(horizon=5, start=np.full(16, 0.1)), ValueError, "start distribution must be"),
        (dict(horizon=5, start=[99]), ValueError, "state 99 is out of range"),
    ],
)
def test_bad_input_raises_one_clear_error(lake, kwargs, err, match):
    with pytest.raises(err, match=match):
        meg(uniform_policy(16, 4), lake, temperature=1.0, **kwargs)


def test_the_horizon_defaults_to_the_time_limit_or_must_be_given():
    assert meg(uniform_policy(16, 4), gym.make("FrozenLake-v1"), temperature=1.0).horizon == 100
    with pytest.raises(ValueError, match="has no time limit to take the horizon from; pass horizon="):
        meg(uniform_policy(48, 4), gym.make("CliffWalking-v1"), temperature=1.0)
