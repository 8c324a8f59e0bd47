"""The native vector env (docs/spec.md §3): statistics of the single env, SAME_STEP autoreset, errors."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode
from scipy import stats

from seqenv import SplitSeqVectorEnv
from seqenv.sampler import HistorySampler
from seqenv.sequence import (
    CONTEXT,
    N_OUT,
    P_MATCH,
    deterministic_next,
    natural_histories,
    next_deterministic,
    noisy,
    partial_logsum,
    transition_probs,
    validate_histories,
)
from seqenv.tasks import good_mask
from tests.conftest import P_ALPHA, Z, within


def make(num_envs: int, **kwargs) -> SplitSeqVectorEnv:
    kwargs.setdefault("good", "ngood4")
    good = kwargs.pop("good")
    return gym.make_vec(
        f"SplitSeq-{good}-v0", num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs
    )


def play(envs, steps: int, seed: int, policy=None):
    """``steps`` vector steps; returns stacked (obs, actions, next_token, reward, terminated, next_obs, info list)."""
    rng = np.random.default_rng(seed)
    obs, _ = envs.reset(seed=seed)
    out = []
    for _ in range(steps):
        a = rng.integers(0, N_OUT, size=envs.num_envs) if policy is None else policy(obs)
        nxt, reward, terminated, truncated, info = envs.step(a)
        assert not truncated.any()
        out.append((obs, a, info["next_token"], reward, terminated, nxt, info))
        obs = nxt
    return out


def fixed_policy(obs: np.ndarray) -> np.ndarray:
    """A deterministic function of the history (not the oracle): write 8 + (last token + 3) mod 8."""
    return (np.asarray(obs)[..., -1] + 3) % N_OUT


def test_make_vec_serves_the_native_env_with_same_step_autoreset():
    envs = make(8)
    assert isinstance(envs, SplitSeqVectorEnv)
    assert envs.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert envs.single_observation_space == gym.spaces.MultiDiscrete(np.full(CONTEXT, 16, dtype=np.int64))
    assert envs.single_action_space == gym.spaces.Discrete(N_OUT)
    obs, info = envs.reset(seed=0)
    assert (
        obs.shape == (8, CONTEXT) and obs.dtype == np.int64 and obs in envs.observation_space and info == {}
    )


def test_every_step_is_a_decision_with_the_final_observation_in_info():
    envs = make(512, good="ngood2")
    for obs, a, x, reward, terminated, nxt, info in play(envs, 40, seed=1):
        assert terminated.all()  # one-step episodes: every env ends and is reset within the same step
        validate_histories(nxt)
        final = info["final_obs"]
        assert info["_final_obs"].all() and info["_final_info"].all()
        np.testing.assert_array_equal(final[:, :-2], obs[:, 2:])
        np.testing.assert_array_equal(final[:, -2], N_OUT + a)
        np.testing.assert_array_equal(final[:, -1], x)
        np.testing.assert_array_equal(info["final_info"]["next_token"], x)
        np.testing.assert_array_equal(reward, good_mask("ngood2")[x].astype(np.float64))
        np.testing.assert_array_equal(info["success"], reward == 1.0)
        assert x.dtype == np.int64 and reward.dtype == np.float64


def test_world_tokens_and_reset_observations_follow_the_rule_at_p_match():
    rows = play(make(1024), 100, seed=2)
    obs = np.concatenate([r[0] for r in rows])
    a = np.concatenate([r[1] for r in rows])
    x = np.concatenate([r[2] for r in rows])
    match = x == next_deterministic(obs, a)
    assert within(match.mean(), P_MATCH, match.size), match.mean()
    windows = np.lib.stride_tricks.sliding_window_view(obs, 16, axis=1)[:, :4]
    in_history = deterministic_next(windows) == obs[:, 16:] % N_OUT
    assert within(in_history.mean(), P_MATCH, in_history.size), in_history.mean()


def test_outcomes_from_fixed_histories_follow_transition_probs():
    n = 16_384
    envs = make(n)
    envs.reset(seed=3)
    for h, a in zip(natural_histories(3, seed=4), (2, 7, 4)):
        counts = np.zeros(N_OUT, dtype=np.int64)
        for _ in range(2):
            envs.reset(options={"histories": np.repeat(h[None], n, axis=0)})
            counts += np.bincount(envs.step(np.full(n, a))[4]["next_token"], minlength=N_OUT)
        assert stats.chisquare(counts, transition_probs(h, np.int64(a)) * 2 * n).pvalue > P_ALPHA, counts


def test_per_env_statistics_match_the_single_env():
    """Success rate of a fixed policy and next-token frequencies: native vector env vs the single env."""
    rows = play(make(1000, good="ngood6"), 40, seed=5, policy=fixed_policy)
    vec_x = np.concatenate([r[2] for r in rows])
    single = gym.make("SplitSeq-ngood6-v0")
    obs, _ = single.reset(seed=6)
    one_x = []
    for _ in range(40_000):
        _, _, _, _, info = single.step(int(fixed_policy(obs)))
        one_x.append(info["next_token"])
        obs, _ = single.reset()
    one_x = np.array(one_x)
    mask = good_mask("ngood6")
    s1, s2 = mask[vec_x].mean(), mask[one_x].mean()
    pooled = (s1 * len(vec_x) + s2 * len(one_x)) / (len(vec_x) + len(one_x))
    assert abs(s1 - s2) <= Z * math.sqrt(pooled * (1 - pooled) * (1 / len(vec_x) + 1 / len(one_x))), (s1, s2)
    table = np.stack([np.bincount(vec_x, minlength=N_OUT), np.bincount(one_x, minlength=N_OUT)])
    assert stats.chi2_contingency(table).pvalue > P_ALPHA


def test_rewards_average_to_the_world_models_success_probability():
    """For any policy, the mean reward equals the mean exact success probability of the actions taken."""
    mask = good_mask("ngood2")

    def oracle(obs):  # the first action whose deterministic outcome is good
        return np.argmax(mask[next_deterministic(obs)], axis=1)

    for policy in (oracle, fixed_policy):
        rows = play(make(2048, good="ngood2"), 50, seed=11, policy=policy)
        p = np.concatenate([transition_probs(r[0], r[1])[:, mask].sum(axis=1) for r in rows])
        reward = np.concatenate([r[3] for r in rows])
        assert abs(reward.mean() - p.mean()) <= Z * math.sqrt((p * (1 - p)).sum()) / len(p)


@pytest.mark.parametrize("k", [2, 3])
def test_longer_episodes_autoreset_each_env_on_its_own_clock(k):
    envs = make(300, episode_length=k)
    rng = np.random.default_rng(7)
    obs, _ = envs.reset(seed=8)
    # desynchronise: restart a third of the envs after the first step
    nxt, *_ = envs.step(rng.integers(0, N_OUT, 300))
    mask = np.arange(300) % 3 == 0
    obs, _ = envs.reset(options={"reset_mask": mask})
    np.testing.assert_array_equal(obs[~mask], nxt[~mask])
    t = np.where(mask, 0, 1) % k
    matches = []
    for _ in range(6 * k):
        a = rng.integers(0, N_OUT, 300)
        nxt, _, terminated, _, info = envs.step(a)
        t += 1
        np.testing.assert_array_equal(terminated, t == k)
        shifted = np.concatenate([obs[:, 2:], (N_OUT + a)[:, None], info["next_token"][:, None]], axis=1)
        np.testing.assert_array_equal(nxt[~terminated], shifted[~terminated])  # the agent's tokens are kept
        if terminated.any():
            np.testing.assert_array_equal(info["_final_obs"], terminated)
            np.testing.assert_array_equal(info["final_obs"][terminated], shifted[terminated])
        else:
            assert "final_obs" not in info
        matches.append(info["next_token"] == next_deterministic(obs, a))
        t[terminated] = 0
        obs = nxt
    match = np.concatenate(matches)
    assert within(match.mean(), P_MATCH, match.size)


def test_same_seed_same_trajectories_different_seeds_different():
    def run(seed):
        return play(make(64, episode_length=2), 30, seed=seed)

    a, b, c = run(9), run(9), run(10)
    for ra, rb in zip(a, b):
        for xa, xb in zip(ra[:6], rb[:6]):
            np.testing.assert_array_equal(xa, xb)
    assert any((ra[0] != rc[0]).any() for ra, rc in zip(a, c))


@pytest.mark.parametrize(
    ("actions", "error", "match"),
    [
        (np.array([0, 1, 8, 2]), ValueError, "action 8 of env 2 is out of range: expected ints in 0..7"),
        (np.array([-1, 1, 3, 2]), ValueError, "action -1 of env 0 is out of range"),
        (np.array([0, 1, 2], dtype=np.int64), ValueError, r"shape \(4,\), one per env, got shape \(3,\)"),
        (np.zeros((4, 1), dtype=np.int64), ValueError, r"got shape \(4, 1\)"),
        (np.array([0.0, 1.0, 2.0, 3.0]), TypeError, "dtype float64"),
        (np.array([0, 1, 300, 2], dtype=np.int32), ValueError, "action 300 of env 2"),
    ],
)
def test_bad_actions_raise_naming_the_value(actions, error, match):
    envs = make(4)
    envs.reset(seed=0)
    with pytest.raises(error, match=match):
        envs.step(actions)


def test_actions_of_any_integer_type_are_accepted():
    for actions in ([3, 3, 3, 3], np.full(4, 3, dtype=np.uint8), np.full(4, 3, dtype=np.int32)):
        envs = make(4)
        envs.reset(seed=0)
        np.testing.assert_array_equal(envs.step(actions)[4]["final_obs"][:, -2], 11)


def test_step_before_reset_needs_a_reset():
    with pytest.raises(gym.error.ResetNeeded):
        make(2).step(np.zeros(2, dtype=np.int64))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_envs": 0}, ValueError, "num_envs must be an int >= 1, got 0"),
        ({"num_envs": 2.5}, TypeError, "num_envs must be an int >= 1, got 2.5"),
        ({"good": (0, 0)}, ValueError, r"repeats \[0\]"),
        ({"good": (8,)}, ValueError, "good set value must be an int in 0..7, got 8"),
        ({"good": tuple(range(8))}, ValueError, "is all of 0..7"),
        ({"good": ()}, ValueError, "good set is empty"),
        ({"episode_length": 0}, ValueError, "episode_length must be an int >= 1, got 0"),
        ({"history_batch": 0}, ValueError, "history_batch must be an int >= 1, got 0"),
        ({"render_mode": "ansi"}, ValueError, "does not render"),
        ({"colour": 1}, TypeError, r"unexpected arguments \['colour'\]"),
    ],
)
def test_bad_arguments_raise_naming_the_value(kwargs, error, match):
    kwargs = {"num_envs": 2, "good": "ngood4", **kwargs}
    with pytest.raises(error, match=match):
        SplitSeqVectorEnv(**kwargs)


def test_bad_reset_options_raise():
    envs = make(3)
    with pytest.raises(ValueError, match=r'options\["reset_mask"\] must be a bool array of shape \(3,\)'):
        envs.reset(seed=0, options={"reset_mask": np.array([1, 0, 1])})
    with pytest.raises(ValueError, match=r'options\["histories"\]\[1\] column 19 holds token 8'):
        h = natural_histories(3, seed=0)
        h[1, 19] = 8
        envs.reset(options={"histories": h})
    with pytest.raises(ValueError, match=r"must have shape \(3, 20\), got \(2, 20\)"):
        envs.reset(options={"histories": natural_histories(2, seed=0)})
    # a misspelt key is refused, not ignored (it would silently reset every env on fresh histories)
    with pytest.raises(
        ValueError, match=r"unknown reset option 'resetmask'; expected keys \['reset_mask', 'histories'\]"
    ):
        envs.reset(options={"resetmask": np.array([True, False, True])})
    with pytest.raises(ValueError, match=r"unknown reset option 'history'"):
        envs.reset(options={"history": natural_histories(3, seed=0)})


def test_sync_vector_env_of_the_single_env_works_too():
    envs = gym.make_vec("SplitSeq-ngood4-v0", num_envs=4, vectorization_mode="sync")
    obs, _ = envs.reset(seed=0)
    validate_histories(obs)
    _, reward, terminated, _, _ = envs.step(np.arange(4))
    assert terminated.all() and reward.shape == (4,)


def test_a_seed_fixes_every_observation_and_outcome():
    """Same seed, same numbers: runs, checkpoints and published tables depend on the env's exact stream. These
    values were recorded with the implementation before issue 16's speed-ups; only a deliberate, announced
    change may alter them."""
    envs = make(3, episode_length=2)
    obs, _ = envs.reset(seed=2024)
    np.testing.assert_array_equal(
        obs,
        [
            [8, 5, 13, 5, 10, 0, 11, 4, 10, 2, 13, 7, 15, 4, 9, 2, 10, 2, 13, 5],
            [12, 3, 8, 1, 14, 6, 14, 6, 10, 4, 8, 1, 11, 5, 13, 0, 10, 7, 13, 7],
            [14, 4, 10, 1, 9, 6, 14, 4, 15, 3, 10, 3, 12, 4, 8, 3, 11, 2, 8, 5],
        ],
    )
    expected = [  # actions, world's tokens, rewards, terminated, last 4 columns of the next observation
        ([0, 1, 2], [1, 5, 0], [0, 0, 1], False, [[13, 5, 8, 1], [13, 7, 9, 5], [8, 5, 10, 0]]),
        ([7, 6, 5], [6, 0, 1], [1, 1, 0], True, [[10, 0, 8, 5], [11, 7, 15, 7], [11, 7, 15, 7]]),
        ([3, 3, 3], [4, 1, 0], [1, 0, 1], False, [[8, 5, 11, 4], [15, 7, 11, 1], [15, 7, 11, 0]]),
    ]
    for a, x, r, ended, tail in expected:
        nxt, reward, terminated, _, info = envs.step(np.array(a))
        np.testing.assert_array_equal(info["next_token"], x)
        np.testing.assert_array_equal(reward, r)
        assert (terminated == ended).all()
        np.testing.assert_array_equal(nxt[:, -4:], tail)
    envs = make(1024)
    envs.reset(seed=7)
    rng = np.random.default_rng(7)
    total = 0
    for _ in range(40):
        nxt, *_, info = envs.step(rng.integers(0, N_OUT, 1024))
        total += int(info["next_token"].sum())
    assert (total, int(nxt.sum())) == (143321, 153374)
    np.testing.assert_array_equal(
        nxt[:2],
        [
            [8, 0, 10, 7, 11, 3, 14, 2, 10, 2, 10, 2, 11, 7, 14, 7, 8, 0, 8, 5],
            [15, 3, 13, 7, 13, 3, 13, 5, 14, 1, 14, 1, 13, 1, 10, 6, 13, 7, 13, 5],
        ],
    )


@pytest.mark.parametrize("k", [1, 2])
def test_arrays_handed_out_belong_to_the_caller(k):
    """Writing into whatever reset and step return (observations, rewards, flags, info arrays) changes nothing
    in the env: a scribbled-on env continues exactly like an untouched twin."""
    clean, scribbled = make(64, episode_length=k), make(64, episode_length=k)
    obs, _ = clean.reset(seed=4)
    mine, _ = scribbled.reset(seed=4)
    np.testing.assert_array_equal(obs, mine)
    mine[:] = 15
    rng = np.random.default_rng(4)
    for _ in range(12):
        a = rng.integers(0, N_OUT, 64)
        want, got = clean.step(a), scribbled.step(a)
        for x, y in zip(want[:4], got[:4]):
            np.testing.assert_array_equal(x, y)
        assert sorted(want[4]) == sorted(got[4])
        for key in ("next_token", "success", "final_obs", "_final_obs"):
            if key in want[4]:
                np.testing.assert_array_equal(want[4][key], got[4][key])
        for arr in (*got[:4], *(v for v in got[4].values() if isinstance(v, np.ndarray))):
            arr[...] = arr.dtype.type(True if arr.dtype == bool else 1)
        for arr in got[4].get("final_info", {}).values():
            arr[...] = arr.dtype.type(1)


def test_state_dict_holds_the_last_observation_as_int64_and_continues_exactly():
    """The state keeps the last observation as int64 and only the histories not handed out yet (uint8); a
    restored env continues exactly, from this state and from one in the earlier format (the whole refill as
    int64 with the index of the next history)."""
    envs = make(6, episode_length=3, history_batch=10)
    envs.reset(seed=5)
    rng = np.random.default_rng(5)
    for _ in range(4):
        obs, *_ = envs.step(rng.integers(0, N_OUT, 6))
    state = envs.state_dict()
    sampler = envs._sampler
    assert state["obs"].dtype == np.int64 and state["sampler"]["hist"].dtype == np.uint8
    assert (
        len(state["sampler"]["hist"]) == len(sampler._tokens) - sampler._next
        and state["sampler"]["next"] == 0
    )
    np.testing.assert_array_equal(state["obs"], obs)
    earlier = {
        **state,
        "sampler": {
            **state["sampler"],
            "hist": sampler._tokens.astype(np.int64),
            "partial": sampler._partial.copy(),
            "next": sampler._next,
        },
    }
    twins = [make(6, episode_length=3, history_batch=10) for _ in range(2)]
    twins[0].load_state_dict(state)
    twins[1].load_state_dict(earlier)
    for _ in range(25):  # across refills of the 10-history supply and episode ends
        a = rng.integers(0, N_OUT, 6)
        want = envs.step(a)[:4]
        for twin in twins:
            for x, y in zip(want, twin.step(a)[:4]):
                np.testing.assert_array_equal(x, y)


def test_history_sampler_serves_one_sequence_of_natural_histories_in_every_form():
    """take (int64), take_tokens (uint8) and take_one hand out the same histories in the same order, across
    refills, each with the log-sum of its last 15 tokens."""
    samplers = [HistorySampler(50, np.random.default_rng(1)) for _ in range(3)]
    sizes = (7, 50, 60, 3)
    h64, p64 = zip(*(samplers[0].take(k) for k in sizes))
    h8, p8 = zip(*(samplers[1].take_tokens(k) for k in sizes))
    one = [samplers[2].take_one() for _ in range(sum(sizes))]
    h64, h8 = np.concatenate(h64), np.concatenate(h8)
    assert h64.dtype == np.int64 and h8.dtype == np.uint8 and h64.shape == (sum(sizes), CONTEXT)
    np.testing.assert_array_equal(h64, h8)
    np.testing.assert_array_equal(h64, np.stack([h for h, _ in one]))
    validate_histories(h64)
    partial = partial_logsum(h64)
    np.testing.assert_array_equal(np.concatenate(p64), partial)
    np.testing.assert_array_equal(np.concatenate(p8), partial)
    assert [p for _, p in one] == partial.tolist()


def test_the_worlds_token_is_noisy_applied_to_the_rule_for_every_noise_draw():
    """Given the noise draw u of a step (0..399, from the state), the world writes exactly
    noisy(next_deterministic(h, a), u): u itself when u < 8, the rule's value otherwise."""
    n = 2 * 400
    envs = make(n, episode_length=2)
    obs, _ = envs.reset(seed=6)
    u = np.tile(np.arange(400, dtype=np.int16), 2)
    rng = np.random.default_rng(6)
    for _ in range(3):  # fresh histories, then a continuing episode, then fresh again
        state = envs.state_dict()
        state["noise"], state["noise_next"] = u[None, :], 0
        envs.load_state_dict(state)
        a = rng.integers(0, N_OUT, n)
        obs_next, *_, info = envs.step(a)
        np.testing.assert_array_equal(info["next_token"], noisy(next_deterministic(obs, a), u))
        obs = obs_next
