"""A native batched SplitSeq: all environments stepped by one numpy computation."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from seqenv.env import check_episode_length
from seqenv.sampler import HistorySampler
from seqenv.sequence import (
    CONTEXT,
    N_OUT,
    TOKEN_LOG,
    VOCAB,
    _check_actions,
    det_from_logsum,
    noise_draws,
    noisy,
    partial_logsum,
)
from seqenv.tasks import GoodSpec, good_mask, task_name


class SplitSeqVectorEnv(VectorEnv):
    """``num_envs`` independent :class:`~seqenv.env.SplitSeqEnv` copies stepped together in numpy.

    Served by ``gym.make_vec("SplitSeq-ngood4-v0", num_envs=N, vectorization_mode="vector_entry_point")``.
    Per-env statistics are those of the single environment. Autoreset is ``SAME_STEP``: an environment whose
    episode ends is reset within the same ``step`` call, so every step is a real decision; the observation
    that ended the episode is in ``info["final_obs"]`` (``(num_envs, 20)``, valid where ``info["_final_obs"]``)
    and its info in ``info["final_info"]``.

    ``info`` of ``step`` always holds ``next_token`` (``(num_envs,)`` int64) and ``success`` (bool).

    :param num_envs: number of environments.
    :param good: a task id or a custom good set (see :class:`~seqenv.env.SplitSeqEnv`).
    :param episode_length: steps per episode (default 1).
    :param history_batch: histories prepared per refill of the reset supply (default ``max(16384, num_envs)``).
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int = 1,
        good: GoodSpec | None = None,
        episode_length: int = 1,
        history_batch: int | None = None,
        render_mode: str | None = None,
        **kwargs: Any,
    ):
        if good is None:
            raise TypeError("SplitSeqVectorEnv needs good=: a task id like 'ngood4' or a good set such as (0, 3)")
        kwargs.pop("max_episode_steps", None)  # passed by gym.make_vec; episodes end by episode_length
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}")
        if render_mode is not None:
            raise ValueError(f"the vector env does not render; render_mode must be None, got {render_mode!r}")
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        self.num_envs = int(num_envs)
        self.good = tuple(int(v) for v in np.flatnonzero(good_mask(good)))
        self.task = task_name(self.good)
        self._good = good_mask(good)
        self.episode_length = check_episode_length(episode_length)
        self._history_batch = max(16384, self.num_envs) if history_batch is None else int(history_batch)
        if self._history_batch < 1:
            raise ValueError(f"history_batch must be a positive int, got {history_batch}")
        self.single_observation_space = spaces.MultiDiscrete(np.full(CONTEXT, VOCAB, dtype=np.int64))
        self.single_action_space = spaces.Discrete(N_OUT)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._sampler: HistorySampler | None = None
        self._obs = np.zeros((self.num_envs, CONTEXT), dtype=np.int64)
        self._partial = np.zeros(self.num_envs, dtype=np.uint8)
        self._t = np.zeros(self.num_envs, dtype=np.int64)
        self._action_log = TOKEN_LOG[N_OUT:]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is not None or self._sampler is None:
            self._sampler = HistorySampler(self._history_batch, self.np_random)
        self._obs, self._partial = (a.copy() for a in self._sampler.take(self.num_envs))
        self._t[:] = 0
        return self._obs.copy(), {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        if self._sampler is None:
            raise RuntimeError("call reset() before step()")
        a = _check_actions(np.asarray(actions).reshape(-1))
        if a.shape != (self.num_envs,):
            raise ValueError(f"actions must have shape ({self.num_envs},), got {np.shape(actions)}")
        u = noise_draws(self.np_random, self.num_envs)
        x = noisy(det_from_logsum(self._partial + self._action_log[a]), u).astype(np.int64)
        success = self._good[x]
        reward = success.astype(np.float64)
        moved = np.empty_like(self._obs)
        moved[:, :-2] = self._obs[:, 2:]
        moved[:, -2] = a + N_OUT
        moved[:, -1] = x
        self._t += 1
        done = self._t >= self.episode_length
        info: dict[str, Any] = {"next_token": x, "success": success}
        if self.episode_length == 1:  # every env ends: the whole batch resets
            self._obs, self._partial = (arr.copy() for arr in self._sampler.take(self.num_envs))
            self._t[:] = 0
        else:
            self._obs, self._partial = moved.copy(), partial_logsum(moved)
            n_done = int(done.sum())
            if n_done:
                self._obs[done], self._partial[done] = self._sampler.take(n_done)
                self._t[done] = 0
        if done.any():
            info["final_obs"] = moved
            info["_final_obs"] = done
            info["final_info"] = {"next_token": x, "success": success, "_next_token": done, "_success": done}
            info["_final_info"] = done
        return self._obs.copy(), reward, done, np.zeros(self.num_envs, dtype=bool), info
