"""The single environment (docs/spec.md §3): spaces, the world's response, resets, episodes, errors."""

from __future__ import annotations

import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import seqenv
from seqenv import SplitSeqEnv
from seqenv.sequence import (
    CONTEXT,
    N_OUT,
    P_MATCH,
    SequenceStreams,
    deterministic_next,
    natural_histories,
    next_deterministic,
    transition_probs,
    validate_histories,
)
from seqenv.tasks import TASKS, good_mask
from tests.conftest import P_ALPHA, within


def play(env: gym.Env, steps: int, seed: int, policy=None):
    """Run ``steps`` steps (resetting on termination); returns arrays of obs, actions, next tokens, rewards."""
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    rows = []
    for _ in range(steps):
        a = int(rng.integers(0, N_OUT)) if policy is None else policy(obs)
        nxt, reward, terminated, truncated, info = env.step(a)
        rows.append((obs, a, info["next_token"], reward, info["success"], nxt, terminated, truncated))
        obs = env.reset()[0] if terminated or truncated else nxt
    obs, a, x, r, ok, nxt, term, trunc = (np.array(c) for c in zip(*rows))
    return obs, a, x, r, ok, nxt, term, trunc


# --- spaces, registration, checkers -----------------------------------------------------------------------


def test_spaces_and_registered_ids():
    for task, values in TASKS.items():
        env = gym.make(f"SplitSeq-{task}-v0")
        assert env.unwrapped.good == values and env.unwrapped.task == task
        assert env.observation_space == gym.spaces.MultiDiscrete(np.full(CONTEXT, 16, dtype=np.int64))
        assert env.observation_space.dtype == np.int64
        assert env.action_space == gym.spaces.Discrete(N_OUT)
        obs, info = env.reset(seed=0)
        assert obs.dtype == np.int64 and obs in env.observation_space and info == {}
    custom = gym.make("SplitSeq-v0", good=(3, 0))
    assert custom.unwrapped.good == (0, 3) and custom.unwrapped.task == "good{0,3}"
    with pytest.raises(TypeError, match="needs good="):
        gym.make("SplitSeq-v0")


@pytest.mark.parametrize(
    "kwargs", [{}, {"episode_length": 3}, {"render_mode": "ansi"}, {"render_mode": "rgb_array"}]
)
def test_gymnasium_and_sb3_env_checkers_pass(kwargs):
    env = gym.make("SplitSeq-ngood4-v0", **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a checker warning is a failure
        check_env(env.unwrapped)
        sb3_check_env(env.unwrapped)


def test_make_with_module_prefix_needs_no_prior_import():
    code = (
        "import sys, gymnasium as gym\n"
        "assert 'seqenv' not in sys.modules\n"
        "env = gym.make('seqenv:SplitSeq-ngood4-v0')\n"
        "obs, _ = env.reset(seed=0)\n"
        "print(env.unwrapped.task, obs.shape, env.step(0)[2])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ngood4", "(20,)", "True"]


# --- the world's response ---------------------------------------------------------------------------------


def test_step_writes_the_action_then_the_world_token_at_the_rule_rate():
    env = gym.make("SplitSeq-ngood4-v0")
    obs, a, x, r, ok, nxt, term, trunc = play(env, 30_000, seed=1)
    d = next_deterministic(obs, a)
    match = x == d
    assert within(match.mean(), P_MATCH, len(x)), match.mean()
    # misses are noise drawing one of the 7 other values uniformly
    assert stats.chisquare(np.bincount((x[~match] - d[~match]) % N_OUT, minlength=N_OUT)[1:]).pvalue > P_ALPHA
    # the new observation: the history shifted by two, the agent's token 8 + a, the world's token
    np.testing.assert_array_equal(nxt[:, :-2], obs[:, 2:])
    np.testing.assert_array_equal(nxt[:, -2], N_OUT + a)
    np.testing.assert_array_equal(nxt[:, -1], x)
    # reward 1.0 exactly when the written token is good, and info says so
    assert r.dtype == np.float64 and set(np.unique(r)) <= {0.0, 1.0}
    np.testing.assert_array_equal(r, good_mask("ngood4")[x].astype(float))
    np.testing.assert_array_equal(ok, r == 1.0)
    assert term.all() and not trunc.any()  # one-step episodes by default


def test_outcomes_from_a_fixed_history_follow_transition_probs():
    env = gym.make("SplitSeq-ngood2-v0").unwrapped
    env.reset(seed=2)
    hist = natural_histories(2, seed=3)
    n = 8_000
    for h, a in ((hist[0], 0), (hist[1], 5)):
        counts = np.zeros(N_OUT, dtype=np.int64)
        for _ in range(n):
            env.reset(options={"history": h})
            counts[env.step(a)[4]["next_token"]] += 1
        expected = transition_probs(h, np.int64(a)) * n
        assert stats.chisquare(counts, expected).pvalue > P_ALPHA, (counts, expected)


def test_reset_observations_are_natural():
    env = gym.make("SplitSeq-ngood6-v0")
    env.reset(seed=4)
    obs = np.array([env.reset()[0] for _ in range(20_000)])
    validate_histories(obs)
    windows = np.lib.stride_tricks.sliding_window_view(obs, 16, axis=1)[:, :4]
    match = deterministic_next(windows) == obs[:, 16:] % N_OUT  # every position with 16 predecessors
    assert within(match.mean(), P_MATCH, match.size), match.mean()
    # marginals: each column against the tokens of independent streams far into their sequences
    far = SequenceStreams(20_000, 5, burn_in=4095).advance(2).T.astype(np.int64)
    for col in range(CONTEXT):
        ref = far[:, 0] - N_OUT if col % 2 == 0 else far[:, 1]
        table = np.stack(
            [np.bincount(obs[:, col] % N_OUT, minlength=N_OUT), np.bincount(ref, minlength=N_OUT)]
        )
        assert stats.chi2_contingency(table).pvalue > P_ALPHA / CONTEXT, col


def test_reset_history_option_is_validated():
    env = gym.make("SplitSeq-ngood4-v0").unwrapped
    h = natural_histories(1, seed=6)[0]
    obs, _ = env.reset(seed=0, options={"history": h})
    np.testing.assert_array_equal(obs, h)
    obs[:] = 0  # the caller's copy: the environment keeps its own
    assert env.step(1)[0][0] == h[2]
    with pytest.raises(ValueError, match="column 19 holds token 9, expected 0..7"):
        env.reset(options={"history": np.r_[h[:-1], 9]})
    with pytest.raises(ValueError, match=r"must have shape \(20,\), got \(2, 20\)"):
        env.reset(options={"history": natural_histories(2, seed=7)})


def test_a_misspelt_reset_option_is_refused_not_ignored():
    env = gym.make("SplitSeq-ngood4-v0")  # through gymnasium's wrappers, as a user calls it
    h = natural_histories(1, seed=6)[0]
    with pytest.raises(ValueError, match=r"unknown reset option 'histroy'; expected keys \['history'\]"):
        env.reset(options={"histroy": h})
    with pytest.raises(
        TypeError, match=r"options must be a dict with keys \['history'\] or None, got 'history'"
    ):
        env.reset(options="history")
    np.testing.assert_array_equal(env.reset(options={"history": h})[0], h)


# --- episodes ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 5])
def test_longer_episodes_keep_the_agents_tokens_and_follow_the_rule(k):
    env = gym.make("SplitSeq-ngood4-v0", episode_length=k)
    obs, a, x, r, _, nxt, term, trunc = play(env, 6_000 * k // 2, seed=8)
    steps = np.arange(len(a)) % k  # the step index within the episode
    np.testing.assert_array_equal(term, steps == k - 1)
    assert not trunc.any()
    later = steps > 0  # observations built from the agent's own tokens
    np.testing.assert_array_equal(obs[later], nxt[np.flatnonzero(later) - 1])
    match = x == next_deterministic(obs, a)
    for j in range(k):
        assert within(match[steps == j].mean(), P_MATCH, int((steps == j).sum())), (
            j,
            match[steps == j].mean(),
        )
    np.testing.assert_array_equal(r, good_mask("ngood4")[x].astype(float))


def test_step_after_the_episode_ended_needs_a_reset():
    env = SplitSeqEnv(good="ngood4", episode_length=2)
    with pytest.raises(gym.error.ResetNeeded):
        env.step(0)
    env.reset(seed=0)
    env.step(0)
    assert env.step(0)[2]
    with pytest.raises(gym.error.ResetNeeded, match="episode has ended"):
        env.step(0)


# --- seeding ----------------------------------------------------------------------------------------------


def _trajectory(seed: int, episode_length: int = 1):
    env = gym.make("SplitSeq-ngood2-v0", episode_length=episode_length)
    return play(env, 3_000, seed=seed)


def test_same_seed_same_trajectory_different_seed_different():
    for k in (1, 3):
        a, b, c = _trajectory(10, k), _trajectory(10, k), _trajectory(11, k)
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
        assert (a[0] != c[0]).any() and (a[2] != c[2]).any()


def test_reset_with_a_seed_restarts_the_same_trajectory():
    env = gym.make("SplitSeq-ngood4-v0")

    def run():
        out = [env.reset(seed=12)[0]]
        for i in range(50):
            out += [env.step(i % 8)[0], env.reset()[0]]
        return out

    np.testing.assert_array_equal(run(), run())


# --- render -----------------------------------------------------------------------------------------------


def test_render_ansi_shows_the_history_and_the_outcome():
    env = gym.make("SplitSeq-ngood4-v0", render_mode="ansi")
    obs, _ = env.reset(seed=0)
    text = env.render()
    assert "SplitSeq[ngood4]" in text and " ".join(f"{t:2d}" for t in obs) in text
    nxt, reward, *_, info = env.step(3)
    text = env.render()
    assert f"wrote 11 (action 3) -> world wrote {info['next_token']}" in text
    assert ("success" if reward else "failure") in text
    assert " ".join(f"{t:2d}" for t in nxt) in text
    plain = gym.make("SplitSeq-ngood4-v0")
    plain.reset(seed=0)
    assert plain.render() is None


def test_render_rgb_array_colours_each_token_and_marks_the_outcome():
    from seqenv.env import _CELL, _PALETTE

    env = gym.make("SplitSeq-ngood4-v0", render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    img = env.render()
    assert img.shape == (2 * _CELL, 20 * _CELL, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img[_CELL // 2, _CELL // 2 :: _CELL], _PALETTE[obs])
    assert len({tuple(c) for c in _PALETTE}) == 16  # every token has its own colour
    assert (img[_CELL:] == 255).all()  # no outcome before the first step
    _, reward, *_ = env.step(3)
    strip = env.render()[3 * _CELL // 2, -1]
    assert tuple(strip) == ((60, 180, 75) if reward else (220, 50, 47))


def test_sb3_make_vec_env_works_with_its_default_render_mode():
    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env("SplitSeq-ngood4-v0", n_envs=2, seed=0)  # asks for render_mode="rgb_array"
    assert venv.reset().shape == (2, 20)
    assert venv.render_mode == "rgb_array"


# --- bad input --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "error", "match"),
    [
        (8, ValueError, "action 8 is out of range: expected an int in 0..7"),
        (-1, ValueError, "action -1 is out of range"),
        (np.int64(9), ValueError, "action 9 is out of range"),
        (3.0, TypeError, "got 3.0 of type float"),
        ("2", TypeError, "got '2' of type str"),
        (np.array([1]), TypeError, r"got array\(\[1\]\) of type ndarray"),
        (None, TypeError, "got None"),
    ],
)
def test_bad_actions_raise_naming_the_value(action, error, match):
    env = gym.make("SplitSeq-ngood4-v0").unwrapped
    env.reset(seed=0)
    with pytest.raises(error, match=match):
        env.step(action)


def test_numpy_integer_actions_are_accepted():
    env = gym.make("SplitSeq-ngood4-v0").unwrapped
    for a in (np.int64(3), np.uint8(3), np.array(3)):
        env.reset(seed=0)
        assert env.step(a)[0][-2] == 11


@settings(max_examples=25, deadline=None)
@given(st.sets(st.integers(0, 7), min_size=1, max_size=7), st.integers(0, 2**31))
def test_custom_good_sets_reward_exactly_their_tokens(values, seed):
    env = gym.make("SplitSeq-v0", good=sorted(values))
    env.reset(seed=seed)
    for a in range(N_OUT):
        _, reward, *_, info = env.step(a)
        assert reward == float(info["next_token"] in values) and info["success"] == (reward == 1.0)
        env.reset()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"good": ()}, ValueError, "good set is empty"),
        ({"good": (0, 0, 1)}, ValueError, r"repeats \[0\]"),
        ({"good": tuple(range(8))}, ValueError, "is all of 0..7"),
        ({"good": (2, 9)}, ValueError, r"good set value must be an int in 0\.\.7, got 9"),
        ({"good": (1.5,)}, TypeError, r"good set value must be an int in 0\.\.7, got 1.5"),
        ({"good": "ngood4", "episode_length": 0}, ValueError, "episode_length must be an int >= 1, got 0"),
        ({"good": "ngood4", "episode_length": -2}, ValueError, "got -2"),
        ({"good": "ngood4", "episode_length": 2.0}, TypeError, "got 2.0"),
        (
            {"good": "ngood4", "render_mode": "video"},
            ValueError,
            "render_mode must be None or one of.*'video'",
        ),
        ({"good": "ngood4", "history_batch": 0}, ValueError, "history_batch must be an int >= 1, got 0"),
        (
            {"good": "ngood4", "history_batch": "big"},
            TypeError,
            "history_batch must be an int >= 1, got 'big'",
        ),
    ],
)
@pytest.mark.filterwarnings("ignore:.*render_mode='video'")
def test_bad_arguments_raise_naming_the_value(kwargs, error, match):
    with pytest.raises(error, match=match):
        SplitSeqEnv(**kwargs)
    with pytest.raises(error, match=match):
        gym.make("SplitSeq-v0", **kwargs)


def test_package_exports():
    assert seqenv.SplitSeqEnv is SplitSeqEnv
    assert {"SplitSeqEnv", "SplitSeqVectorEnv", "transition_probs", "natural_histories"} <= set(
        seqenv.__all__
    )


def test_demo_plays_both_policies_and_validates_its_arguments(capsys):
    from seqenv.demo import run_demo

    rates = run_demo("ngood4", steps=400, seed=1, show=1)
    assert set(rates) == {"uniform", "oracle"} and rates["oracle"] > rates["uniform"]
    assert capsys.readouterr().out.startswith("SplitSeq[ngood4]")
    with pytest.raises(ValueError, match="task must be one of 'ngood2', 'ngood4', 'ngood6'; got 'ngood3'"):
        run_demo("ngood3")
    with pytest.raises(ValueError, match="steps must be an int >= 1, got 0"):
        run_demo(steps=0)
    with pytest.raises(TypeError, match="seed must be an int >= 0, got 1.5"):
        run_demo(seed=1.5)
