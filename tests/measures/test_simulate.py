"""measures.measure_simulator: the post's Monte Carlo estimator on a copyable environment agrees with the exact
tabular answer within its own standard error, draws independent futures from copies, and rejects bad input."""

import gymnasium as gym
import numpy as np
import pytest

from measures.mdp import measure_mdp
from measures.meg import optimal_policy
from measures.simulate import TOY_TEXT_STATE, measure_simulator
from measures.world_policies import epsilon_greedy
from measures.worlds import tabular_world

TERMINAL = (5, 7, 11, 12, 15)


def coarse(state):  # the terminal state reached, or -1 while the episode runs
    return int(state) if int(state) in TERMINAL else -1


@pytest.fixture(scope="module")
def lake():
    env = gym.make("FrozenLake-v1")  # 4x4 slippery
    w = tabular_world(env)
    live = w.nonterminal_states()

    def start(e, rng):  # a uniformly random non-terminal state: the exact measure's states, as a population
        e.reset(seed=int(rng.integers(2**31)))
        e.unwrapped.s = int(rng.choice(live))
        return e.unwrapped.s

    return env, w, start


CASES = [("greedy", 0.0, 0.0, "first"), ("eps", 0.3, 1.0, "every")]


@pytest.mark.parametrize("name, eps, temperature, split", CASES)
def test_monte_carlo_agrees_with_exact_within_four_standard_errors(lake, name, eps, temperature, split):
    env, w, start = lake
    policy = epsilon_greedy(optimal_policy(w), eps)
    kw = dict(horizon=2, split=split, temperature=temperature)
    exact = measure_mdp(policy, w, {15}, outcome=coarse, n_bootstrap=0, **kw)
    sim = dict(n_states=50, n_repeats=10, start=start, state=TOY_TEXT_STATE, outcomes=[-1, *TERMINAL], **kw)
    mc = measure_simulator(policy, env, {15}, coarse, seed=3, **sim)
    assert (mc.n, mc.n_resamples, mc.method) == (50, 10, "monte_carlo")
    for fig in ("op", "success", "baseline_success"):
        assert abs(getattr(mc, fig) - getattr(exact, fig)) <= 4 * mc.se[fig], fig
    # the plug-in KL against smoothed counts is biased up; the first-order correction removes it
    mm = measure_simulator(policy, env, {15}, coarse, seed=3, estimator="miller_madow", **sim)
    assert abs(mm.imp - exact.imp) <= 4 * mm.se["imp"]
    assert mc.imp > mm.imp
    assert 0 < mc.p < 1 and abs(mc.p - exact.p) < 0.05  # the uniform policy's success, sampled


def test_copies_draw_independent_futures_and_the_seed_fixes_them(lake):
    env, _, _ = lake

    def middle(e, rng):  # state 6; DOWN slips left, down or right with 1/3 each: to 5 (hole), 10 or 7 (hole)
        e.reset(seed=0)
        e.unwrapped.s = 6
        return 6

    down = np.ones(16, dtype=np.int64)
    kw = dict(n_states=12, n_repeats=2, start=middle, outcomes=range(16))
    a = measure_simulator(down, env, {10}, seed=5, **kw)  # default clone: copy.deepcopy, reseeded
    # 2 x 12 x 12 split rollouts from copies of one snapshot: all three slips, at their rates
    assert set(np.flatnonzero(a.baseline_future)) == {5, 7, 10}
    assert a.baseline_success == pytest.approx(1 / 3, abs=5 * np.sqrt(2 / 9 / 288))
    assert a == measure_simulator(down, env, {10}, seed=5, **kw)
    assert a.baseline_future != measure_simulator(down, env, {10}, seed=6, **kw).baseline_future
    # every history plays the same action: the split futures are the future itself (Op = 0 up to sampling)
    assert abs(a.op) <= 4 * a.se["op"] + 1e-12


def test_walks_reach_states_beyond_the_reset_and_truncation_does_not_end_a_rollout():
    env = gym.make("FrozenLake-v1", is_slippery=False)  # the optimal path from 0 reaches 15 in 6 steps
    policy = optimal_policy(tabular_world(env))
    kw = dict(horizon=3, n_states=20, n_repeats=2, state=TOY_TEXT_STATE)
    assert measure_simulator(policy, env, {15}, **kw).success == 0  # from the reset alone: too far
    r = measure_simulator(policy, env, {15}, walk=6, **kw)  # walks of 0..6 steps: some end 3 or fewer away
    assert 0 < r.success < 1
    short = gym.make(
        "FrozenLake-v1", is_slippery=False, max_episode_steps=2
    )  # a time limit below the horizon
    s = measure_simulator(policy, short, {15}, horizon=6, n_states=4, n_repeats=2, state=TOY_TEXT_STATE)
    assert s.success == 1 and s.good == (15,)


def test_start_dependent_outcomes_see_the_snapshot(lake):
    env, w, start = lake
    policy = optimal_policy(w)
    kw = dict(horizon=1, n_states=40, n_repeats=4, start=start, state=TOY_TEXT_STATE)
    exact = measure_mdp(policy, w, {True}, outcome=lambda a, s: s != a, n_bootstrap=0)
    mc = measure_simulator(policy, env, {True}, lambda a, s: s != a, outcomes=[False, True], **kw)
    assert abs(mc.success - exact.success) <= 4 * mc.se["success"] + 1e-9
    assert mc.outcomes == (False, True)


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(good=set()), ValueError, "at least one outcome class"),
        (dict(good=set(range(16)), outcomes=range(16)), ValueError, "good holds every outcome class"),
        (dict(good={99}, outcomes=range(16)), ValueError, "good holds 99, which is not among outcomes="),
        (dict(horizon=0), ValueError, "horizon must be an int >= 1, got 0"),
        (dict(n_states=1), ValueError, "n_states must be an int >= 2, got 1"),
        (dict(n_repeats=1), ValueError, "n_repeats must be an int >= 2"),
        (dict(split="all"), ValueError, "unknown split 'all'"),
        (dict(estimator="jackknife"), ValueError, "unknown estimator 'jackknife'"),
        (dict(clone=lambda e: e, state=TOY_TEXT_STATE), ValueError, "give clone= or state=, not both"),
        (dict(baseline="fixed"), ValueError, "baseline='fixed' needs action="),
    ],
)
def test_bad_input_raises_one_clear_error(lake, kwargs, err, match):
    env, _, _ = lake
    args = dict(good={15}) | kwargs
    with pytest.raises(err, match=match):
        measure_simulator(np.zeros(16, dtype=np.int64), env, **args)


def test_a_continuous_action_space_is_refused():
    env = gym.make("MountainCarContinuous-v0")
    with pytest.raises(TypeError, match="needs an environment with a Discrete action space"):
        measure_simulator(lambda o: np.zeros(len(o), int), env, {1})


@pytest.mark.slow
def test_the_posts_sample_size_agrees_with_exact(lake):
    env, w, start = lake
    policy = epsilon_greedy(optimal_policy(w), 0.1)
    exact = measure_mdp(policy, w, {15}, outcome=coarse, horizon=3, temperature=1.0, n_bootstrap=0)
    kw = dict(horizon=3, temperature=1.0, n_states=200, start=start, state=TOY_TEXT_STATE)
    mc = measure_simulator(policy, env, {15}, coarse, estimator="miller_madow", **kw)
    for fig in ("op", "imp", "success", "baseline_success"):
        assert abs(getattr(mc, fig) - getattr(exact, fig)) <= 4 * mc.se[fig], fig
