"""measures.worlds and measures.world_policies: tabular worlds from Gymnasium's toy-text ``P`` and from arrays,
terminal states made absorbing, the policy adapters on states, and one clear error per bad input."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

from measures.mdp import measure_mdp
from measures.world_policies import (
    StochasticTableWarning,
    epsilon_greedy,
    one_hot,
    uniform_policy,
    world_action_probs,
)
from measures.worlds import TabularWorld, tabular_rows, tabular_world


@pytest.fixture(scope="module")
def lake():
    return gym.make("FrozenLake-v1")  # 4x4, slippery


# --- building worlds ---------------------------------------------------------------------------------------


def test_frozen_lake_4x4_has_its_holes_and_goal_as_absorbing_states(lake):
    w = tabular_world(lake)
    assert (w.n_states, w.n_actions) == (16, 4)
    assert np.flatnonzero(w.terminal).tolist() == [5, 7, 11, 12, 15]  # H at 5, 7, 11, 12; G at 15
    assert np.allclose(w.P.sum(axis=2), 1.0)
    for t in (5, 15):
        assert (w.P[t, :, t] == 1).all() and (w.reward[t] == 0).all()
    # slippery: from state 0, LEFT (0) moves left/down/up with 1/3 each; left and up stay at 0
    assert w.P[0, 0].tolist() == pytest.approx([2 / 3, 0, 0, 0, 1 / 3] + [0] * 11)
    # reaching the goal from 14 by RIGHT (2): 1/3 (intended) -> reward 1/3
    assert w.reward[14, 2] == pytest.approx(1 / 3)
    assert w.initial.tolist() == [1.0] + [0.0] * 15
    assert w.name == "FrozenLake-v1(map_name=4x4)"


def test_cliff_walking_taxi_and_8x8_build_with_their_start_distributions():
    cliff = tabular_world(gym.make("CliffWalking-v1"))
    assert (cliff.n_states, cliff.terminal.sum()) == (48, 1) and cliff.terminal[47]
    assert cliff.reward[36, 1] == -100  # RIGHT from the start steps into the cliff (back to the start)
    assert cliff.P[36, 1, 36] == 1
    # the cliff cells 37..46 are states of P that no episode reaches
    assert set(np.flatnonzero(~cliff.terminal)) - set(cliff.reachable_states()) == set(range(37, 47))
    taxi = tabular_world(gym.make("Taxi-v4"))
    assert (taxi.n_states, taxi.n_actions, int(taxi.terminal.sum())) == (500, 6, 4)
    assert taxi.initial.sum() == pytest.approx(1) and len(taxi.reachable_states()) == 400
    big = tabular_world(gym.make("FrozenLake-v1", map_name="8x8", is_slippery=False))
    assert big.n_states == 64 and big.terminal[63] and ((big.P == 0) | (big.P == 1)).all()


def test_a_world_from_arrays_makes_its_terminal_states_absorbing():
    P = np.zeros((3, 2, 3))
    P[:, 0, 0] = 1.0
    P[:, 1, 2] = 1.0
    w = tabular_world(P, terminal=[2], reward=np.ones((3, 2)), initial=[1, 0, 0])
    assert w.terminal.tolist() == [False, False, True]
    assert w.P[2, 0].tolist() == [0, 0, 1] and w.reward[2].tolist() == [0, 0]
    assert w.reward[0].tolist() == [1, 1]
    assert tabular_world(w) is w
    d = {
        0: {0: [(0.5, 0, 1.0, False), (0.5, 0, 3.0, False)], 1: [(1.0, 1, 5.0, True)]},
        1: {0: [(1.0, 0, 7.0, False)], 1: [(1.0, 0, 7.0, False)]},
    }
    w2 = tabular_world(d)  # repeated next states add up; a terminated entry makes its target terminal
    assert w2.P[0, 0].tolist() == [1.0, 0.0] and w2.reward[0].tolist() == [2.0, 5.0]
    assert w2.terminal.tolist() == [False, True] and w2.P[1, :, 1].tolist() == [1, 1] and w2.reward[1, 0] == 0


def test_transition_matrix_and_action_step_are_the_contractions_they_name(lake):
    w = tabular_world(lake)
    pi = np.random.default_rng(0).dirichlet(np.ones(4), size=16)
    m = w.transition_matrix(pi).toarray()
    assert np.allclose(m, np.einsum("sa,sat->st", pi, w.P))
    v = np.random.default_rng(1).random((16, 3))
    assert np.allclose(w.action_step(np.array([0, 14]), v), np.einsum("sat,tx->sax", w.P[[0, 14]], v))


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.ones((2, 2, 3)) / 3, r"shape \(S, A, S\)"),
        (np.full((2, 1, 2), 0.6), r"sums to 1.2"),
        (np.array([[[1.5, -0.5]], [[0, 1]]]), r"is not a probability"),
        ({0: {0: [(1.0, 3, 0.0, False)]}}, r"next state in P\[0\]\[0\] must be an int in 0..0, got 3"),
        ({0: {0: [(0.7, 0, 0.0, False)]}}, r"probabilities sum to 0.7"),
        ({0: {0: [(1.0, 0, 0.0)]}}, r"expected \(prob, next_state, reward, terminated\)"),
        ({1: {0: [(1.0, 1, 0.0, False)]}}, r"states 0..S-1 as keys"),
    ],
)
def test_malformed_worlds_raise_naming_the_entry(bad, match):
    with pytest.raises(ValueError, match=match):
        tabular_world(bad)


def test_an_environment_without_P_is_refused_with_the_alternative():
    with pytest.raises(TypeError, match=r"no toy-text transition table env.unwrapped.P.*measure_simulator"):
        tabular_world(gym.make("CartPole-v1"))
    with pytest.raises(ValueError, match="terminal= and reward= only apply to a P array"):
        tabular_world(gym.make("FrozenLake-v1"), terminal=[1])
    with pytest.raises(ValueError, match=r"initial must be a probability distribution"):
        tabular_world(np.ones((2, 1, 2)) / 2, initial=[0.5, 0.6])


def test_a_state_both_terminal_and_live_from_a_reachable_state_is_refused():
    d = {
        0: {0: [(1.0, 1, 0.0, True)], 1: [(1.0, 2, 0.0, False)]},
        1: {0: [(1.0, 1, 0.0, True)], 1: [(1.0, 1, 0.0, True)]},
        2: {0: [(1.0, 1, 0.0, False)], 1: [(1.0, 2, 0.0, False)]},  # 2 -> 1 without termination
    }
    with pytest.raises(ValueError, match=r"state 1 is entered with terminated=True .* from state 2"):
        tabular_world(d)
    # harmless when no episode reaches the offending state (Taxi's delivered-passenger states)
    w = tabular_world(d, initial=np.array([0.0, 1.0, 0.0]))
    assert w.terminal.tolist() == [False, True, False]


def test_start_state_sets_and_their_errors(lake):
    w = tabular_world(lake)
    assert tabular_rows(w, None).tolist() == [0, 1, 2, 3, 4, 6, 8, 9, 10, 13, 14]
    assert tabular_rows(w, "reachable").tolist() == tabular_rows(w, "nonterminal").tolist()
    assert tabular_rows(w, [3, 3, 0]).tolist() == [3, 3, 0]
    with pytest.raises(ValueError, match=r"state 16 is out of range; .* has states 0..15"):
        tabular_rows(w, [0, 16])
    with pytest.raises(ValueError, match="at least 2 start states, got 1"):
        tabular_rows(w, [4])
    with pytest.raises(ValueError, match="integer state indices"):
        tabular_rows(w, [0.5, 1.0])
    with pytest.raises(ValueError, match="unknown states='all'"):
        tabular_rows(w, "all")
    no_start = TabularWorld(P=w.P, reward=w.reward, terminal=w.terminal, initial=None)
    with pytest.raises(ValueError, match="no start distribution, so 'reachable' is undefined"):
        no_start.reachable_states()


# --- policies on states ------------------------------------------------------------------------------------


def test_tables_callables_and_temperatures():
    s = np.array([0, 2, 1])
    table = np.array([[0.7, 0.3], [0.5, 0.5], [0.1, 0.9]])
    assert world_action_probs(table, s, 2, 1.0).tolist() == [[0.7, 0.3], [0.1, 0.9], [0.5, 0.5]]
    with pytest.warns(StochasticTableWarning, match="temperature=1 to measure the table as it is"):
        greedy = world_action_probs(table, s, 2)
    assert greedy.tolist() == [[1, 0], [0, 1], [1, 0]]  # ties to the lowest action
    assert world_action_probs(np.array([1, 0, 1]), s, 2).tolist() == [[0, 1], [0, 1], [1, 0]]
    t2 = world_action_probs(table, s, 2, 2.0)  # q^(1/2) renormalised
    assert t2[0, 0] == pytest.approx(np.sqrt(0.7) / (np.sqrt(0.7) + np.sqrt(0.3)))
    assert world_action_probs(lambda o: o % 2, s, 2).tolist() == [[1, 0], [1, 0], [0, 1]]
    assert world_action_probs(lambda o: table[o], s, 2, 1.0).tolist() == table[s].tolist()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        world_action_probs(one_hot(np.array([1, 0, 0]), 2), s, 2)  # a deterministic table: no warning


@pytest.mark.parametrize(
    "policy, temperature, err, match",
    [
        (lambda o: o + 5, 0.0, ValueError, r"returned action 5 for observation 0; expected 0..1"),
        (lambda o: o % 2, 1.0, ValueError, r"returned actions, which fix one action per observation"),
        (lambda o: np.full((len(o), 2), 0.6), 1.0, ValueError, r"sum to 1.2"),
        (lambda o: (o % 2).astype(float), 0.0, TypeError, r"expected integers in 0..1"),
        (np.full((2, 2), 0.5), 1.0, ValueError, r"state 2 is outside the policy table's 2 rows"),
        (np.full((3, 3), 1 / 3), 1.0, ValueError, r"shape \(3, 3\); expected \(3, 2\)"),
        (object(), 0.0, TypeError, r"cannot use object as a policy"),
    ],
)
def test_bad_policies_raise_naming_the_value(policy, temperature, err, match):
    with pytest.raises(err, match=match):
        world_action_probs(policy, np.array([0, 1, 2]), 2, temperature)


def test_torch_modules_take_long_states():
    module = torch.nn.Embedding(16, 4)
    states = np.arange(16)
    logits = module.weight.detach().double().numpy()
    expect = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert np.allclose(world_action_probs(module, states, 4, 1.0), expect)
    assert world_action_probs(module, states, 4).argmax(axis=1).tolist() == logits.argmax(axis=1).tolist()


def test_sb3_ppo_and_dqn_on_discrete_observations(lake):
    from stable_baselines3 import DQN, PPO

    torch.manual_seed(0)
    states = np.arange(16)
    ppo = PPO("MlpPolicy", lake, seed=0, device="cpu")
    assert (
        world_action_probs(ppo, states, 4).argmax(axis=1).tolist()
        == ppo.predict(states, deterministic=True)[0].tolist()
    )
    obs, _ = ppo.policy.obs_to_tensor(states)
    own = ppo.policy.get_distribution(obs).distribution.probs.detach().double().numpy()
    assert np.allclose(world_action_probs(ppo, states, 4, 1.0), own, atol=1e-6)
    dqn = DQN("MlpPolicy", lake, seed=0, device="cpu", learning_starts=0)
    q = dqn.q_net(dqn.policy.obs_to_tensor(states)[0]).detach().double().numpy()
    assert world_action_probs(dqn, states, 4).argmax(axis=1).tolist() == q.argmax(axis=1).tolist()
    boltz = np.exp(q / 0.5) / np.exp(q / 0.5).sum(axis=1, keepdims=True)
    assert np.allclose(world_action_probs(dqn, states, 4, 0.5), boltz, atol=1e-6)
    with pytest.raises(ValueError, match=r"action space Discrete\(4\); expected Discrete\(6\)"):
        world_action_probs(ppo, states, 6)
    # measure_mdp takes the model itself: the same numbers as its greedy table
    table = one_hot(ppo.predict(states, deterministic=True)[0], 4)
    a = measure_mdp(ppo, lake, {15}, horizon=3, n_bootstrap=0)
    assert a.op == measure_mdp(table, lake, {15}, horizon=3, n_bootstrap=0).op


def test_uniform_and_epsilon_greedy_tables():
    assert uniform_policy(2, 4).tolist() == [[0.25] * 4] * 2
    opt = one_hot(np.array([2, 0]), 3)
    assert np.allclose(epsilon_greedy(opt, 0.3), [[0.1, 0.1, 0.8], [0.8, 0.1, 0.1]])
    with pytest.raises(ValueError, match="epsilon must be in"):
        epsilon_greedy(opt, 1.5)
    with pytest.raises(ValueError, match="needs an \\(S, A\\) table"):
        epsilon_greedy(np.array([2, 0]), 0.1)
