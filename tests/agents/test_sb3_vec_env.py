"""agents.sb3.vec_env.SB3VecEnv: SB3's VecEnv contract over the native batched SplitSeq environment."""

import numpy as np
import pytest
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv

import seqenv
from agents.sb3.vec_env import SB3VecEnv, make_sb3_vec_env
from seqenv.sequence import CONTEXT, N_OUT, P_MATCH, next_deterministic
from seqenv.tasks import good_mask
from tests.conftest import Z, within

GOOD = good_mask("ngood4")


def test_step_follows_sb3_vec_env_contract():
    n = 32
    env = make_sb3_vec_env("ngood4", n, seed=3)
    assert isinstance(env, VecEnv) and env.num_envs == n
    obs = env.reset()
    assert obs.shape == (n, CONTEXT) and obs.dtype == np.int64
    assert env.observation_space == seqenv.SplitSeqEnv(good="ngood4").observation_space
    assert env.action_space.n == N_OUT
    actions = np.arange(n) % N_OUT
    new_obs, rewards, dones, infos = env.step(actions)
    assert new_obs.shape == (n, CONTEXT) and new_obs.dtype == np.int64
    assert rewards.shape == (n,) and rewards.dtype == np.float32  # as DummyVecEnv
    assert dones.shape == (n,) and dones.dtype == bool and dones.all()  # one-step episodes
    assert isinstance(infos, list) and len(infos) == n
    for i, info in enumerate(infos):
        term = info["terminal_observation"]
        assert isinstance(term, np.ndarray) and term.shape == (CONTEXT,) and term.dtype == np.int64
        # the terminal observation is the old history shifted by the agent's token and the world's token
        np.testing.assert_array_equal(term[:-2], obs[i, 2:])
        assert term[-2] == 8 + actions[i] and term[-1] == info["next_token"]
        assert info["TimeLimit.truncated"] is False
        assert info["is_success"] == info["success"] == bool(GOOD[info["next_token"]]) == (rewards[i] == 1.0)
        assert info["episode"]["r"] == rewards[i] and info["episode"]["l"] == 1
    # autoreset: the returned observations are fresh natural histories, not the terminal ones
    seqenv.validate_histories(new_obs)
    assert not all(np.array_equal(new_obs[i], infos[i]["terminal_observation"]) for i in range(n))


def test_identical_to_native_vector_env_with_same_seed():
    n, seed = 64, 11
    native = seqenv.SplitSeqVectorEnv(n, good="ngood4")
    sb3 = SB3VecEnv(seqenv.SplitSeqVectorEnv(n, good="ngood4"))
    assert sb3.seed(seed) == [seed + i for i in range(n)]  # SB3's return value: one seed per env
    obs_n, _ = native.reset(seed=seed)
    np.testing.assert_array_equal(sb3.reset(), obs_n)
    rng = np.random.default_rng(0)
    for _ in range(5):
        a = rng.integers(0, N_OUT, n)
        obs_n, r_n, term, trunc, info = native.step(a)
        obs_s, r_s, d_s, infos = sb3.step(a)
        np.testing.assert_array_equal(obs_s, obs_n)
        np.testing.assert_array_equal(r_s, r_n.astype(np.float32))
        np.testing.assert_array_equal(d_s, term | trunc)
        np.testing.assert_array_equal(np.stack([i["terminal_observation"] for i in infos]), info["final_obs"])
        np.testing.assert_array_equal([i["next_token"] for i in infos], info["next_token"])


def test_seed_is_used_once_at_the_next_reset():
    env = make_sb3_vec_env("ngood4", 8)
    env.seed(5)
    first = env.reset()
    np.testing.assert_array_equal(make_sb3_vec_env("ngood4", 8, seed=5).reset(), first)
    assert not np.array_equal(env.reset(), first)  # the seed was consumed; the next reset moves on
    env.seed(5)
    np.testing.assert_array_equal(env.reset(), first)


def test_options_go_to_the_batched_reset_once():
    n = 4
    env = make_sb3_vec_env("ngood4", n, seed=0)
    env.reset()
    histories = seqenv.natural_histories(n, seed=7)
    env.set_options({"histories": histories})  # SB3 hands the same dict to every env
    np.testing.assert_array_equal(env.reset(), histories)
    assert not np.array_equal(env.reset(), histories)  # used once, like seeds
    env.set_options([{"histories": histories}, {}, {}, {}])
    with pytest.raises(ValueError, match="one options dict"):
        env.reset()


def test_longer_episodes_end_together_with_their_returns():
    n, k = 16, 3
    env = make_sb3_vec_env("ngood4", n, seed=0, episode_length=k)
    obs = env.reset()
    total = np.zeros(n)
    for step in range(1, 2 * k + 1):
        a = np.full(n, step % N_OUT)
        new_obs, r, dones, infos = env.step(a)
        total += r
        ended = step % k == 0
        assert dones.all() == ended and dones.any() == ended
        for i, info in enumerate(infos):
            assert ("terminal_observation" in info) == ended and ("episode" in info) == ended
            if ended:
                assert info["episode"] == {"r": total[i], "l": k, "t": info["episode"]["t"]}
            else:  # mid-episode the history keeps the agent's own token
                assert new_obs[i, -2] == 8 + a[i] and np.array_equal(new_obs[i, :-2], obs[i, 2:])
        if ended:
            total[:] = 0
        obs = new_obs


def test_statistics_match_dummy_vec_env_of_single_envs():
    """Same world as SB3's usual DummyVecEnv of single envs: match rate and success rate agree."""
    rng = np.random.default_rng(1)
    stats = {}
    for name, env, steps in (
        ("native", make_sb3_vec_env("ngood4", 512, seed=1), 20),
        (
            "dummy",
            make_vec_env("SplitSeq-ngood4-v0", n_envs=16, seed=1, env_kwargs={"render_mode": None}),
            320,
        ),
    ):
        obs = env.reset()
        match = success = 0
        for _ in range(steps):
            a = rng.integers(0, N_OUT, env.num_envs)
            det = next_deterministic(obs, a)
            obs, r, _, infos = env.step(a)
            x = np.array([info["next_token"] for info in infos])
            match += int((x == det).sum())
            success += int(r.sum())
        stats[name] = (match, success, steps * env.num_envs)
    for match, _success, n in stats.values():
        assert within(match / n, P_MATCH, n)  # the world writes d with prob 0.98 + 0.02/8
    (_, s1, n1), (_, s2, n2) = stats["native"], stats["dummy"]
    pooled = (s1 + s2) / (n1 + n2)
    assert abs(s1 / n1 - s2 / n2) <= Z * np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))


def test_attribute_access_treats_the_batch_as_one_object():
    env = make_sb3_vec_env("ngood2", 4)
    assert env.get_attr("task") == ["ngood2"] * 4
    assert env.get_attr("task", indices=[1, 3]) == ["ngood2"] * 2
    assert env.env_is_wrapped(object) == [False] * 4
    env.set_attr("episode_length", 2)
    assert env.venv.episode_length == 2
    with pytest.raises(ValueError, match="subset of envs"):
        env.set_attr("episode_length", 1, indices=[0])
    with pytest.raises(IndexError, match="out of range"):
        env.get_attr("task", indices=[4])
    with pytest.raises(AttributeError):
        env.get_attr("no_such_attribute")


def test_rejects_vector_envs_with_other_autoreset_modes():
    import gymnasium as gym

    sync = gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync")  # NEXT_STEP autoreset
    with pytest.raises(ValueError, match="SAME_STEP"):
        SB3VecEnv(sync)
    sync.close()


def test_step_wait_without_step_async_raises():
    env = make_sb3_vec_env("ngood4", 2, seed=0)
    env.reset()
    with pytest.raises(RuntimeError, match="step_async"):
        env.step_wait()
