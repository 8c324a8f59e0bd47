"""A native batched SplitSeq: all environments stepped by one numpy computation."""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from seqenv.env import _history_option, check_episode_length, check_options
from seqenv.sampler import HistorySampler
from seqenv.sequence import (
    CONTEXT,
    N_OUT,
    ORDER,
    TOKEN_LOG,
    VOCAB,
    det_from_logsum,
    noise_draws,
    noisy,
    partial_logsum,
)
from seqenv.tasks import GoodSpec, good_mask, task_name
from seqenv.validation import check_positive_int

_NOISE_STEPS = 64  # steps whose noise is drawn at once
# The world's token for every (noise draw u, log-sum of the history's last 15 tokens, action), at index
# min(u, 8) * 128 + 8 * logsum + action: noisy() only tells u < 8 (u is the token) from the rest (the rule's
# value), so min(u, 8) loses nothing. One look-up then replaces the rule, the noise and their temporaries
# (int64: the dtype of info["next_token"]).
_WORLD = (
    noisy(
        det_from_logsum(np.arange(VOCAB)[:, None] + TOKEN_LOG[N_OUT + np.arange(N_OUT)]),
        np.arange(N_OUT + 1)[:, None, None],
    )
    .ravel()
    .astype(np.int64)
)
_THREE = np.uint8(3)  # a numpy scalar: a Python int costs the ufunc a conversion
_FIRST_KEPT = CONTEXT - ORDER + 1  # first column of the 15 tokens that partial_logsum sums


class SplitSeqVectorEnv(VectorEnv):
    """``num_envs`` independent :class:`~seqenv.env.SplitSeqEnv` copies stepped together in numpy.

    Served by ``gym.make_vec("SplitSeq-ngood4-v0", num_envs=N, vectorization_mode="vector_entry_point")``.
    Per-env statistics are those of the single environment. Autoreset is ``SAME_STEP``: an environment whose
    episode ends is reset within the same ``step`` call, so every step is a real decision; the observation
    that ended the episode is in ``info["final_obs"]`` (``(num_envs, 20)``, valid where ``info["_final_obs"]``)
    and its info in ``info["final_info"]``.

    ``info`` of ``step`` always holds ``next_token`` (``(num_envs,)`` int64) and ``success`` (bool).
    ``reset(options={"reset_mask": m})`` resets only the envs where the bool array ``m`` is True;
    ``options={"histories": H}`` (``(num_envs, 20)``) starts them from given histories.

    Reset histories come from ``history_batch`` sequences burnt in at ``reset(seed=...)``, 20 new tokens per
    history (see :class:`seqenv.sampler.HistorySampler`), so every step costs a fresh natural history, not a
    burn-in.

    :param num_envs: number of environments.
    :param good: a task id or a custom good set (see :class:`~seqenv.env.SplitSeqEnv`).
    :param episode_length: steps per episode (default 1).
    :param history_batch: histories prepared per refill of the reset supply (default ``max(32768, num_envs)``).
    """

    metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

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
            raise TypeError(
                "SplitSeqVectorEnv needs good=: a task id like 'ngood4' or a good set such as (0, 3)"
            )
        kwargs.pop("max_episode_steps", None)  # passed by gym.make_vec; episodes end by episode_length
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}")
        if render_mode is not None:
            raise ValueError(f"the vector env does not render; render_mode must be None, got {render_mode!r}")
        self.num_envs = check_positive_int(num_envs, "num_envs")
        self.good = tuple(int(v) for v in np.flatnonzero(good_mask(good)))
        self.task = task_name(self.good)
        self._good = good_mask(good)
        self.episode_length = check_episode_length(episode_length)
        self._history_batch = (
            max(32768, self.num_envs)
            if history_batch is None
            else check_positive_int(history_batch, "history_batch")
        )
        self.single_observation_space = spaces.MultiDiscrete(np.full(CONTEXT, VOCAB, dtype=np.int64))
        self.single_action_space = spaces.Discrete(N_OUT)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._action_shape = (self.num_envs,)
        self._all_done = np.ones(self.num_envs, dtype=bool)  # copied: cheaper than np.ones
        self._sampler: HistorySampler | None = None
        self._obs = np.zeros((self.num_envs, CONTEXT), dtype=np.uint8)  # tokens; never handed out
        self._partial = np.zeros(self.num_envs, dtype=np.uint8)
        self._t = np.zeros(self.num_envs, dtype=np.int64)
        self._noise = np.empty((0, self.num_envs), dtype=np.int16)  # noise draws for the coming steps
        self._noise_index = self._noise.astype(np.int64)  # their part of the _WORLD index: min(u, 8) * 128
        self._noise_next = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict]:
        """Reset all environments, or those of ``options["reset_mask"]`` (a bool array ``(num_envs,)``), on fresh
        natural histories, or on ``options["histories"]`` (``(num_envs, 20)``; with a mask, its masked rows)."""
        options = check_options(options, ("reset_mask", "histories"))
        super().reset(seed=seed)
        if seed is not None or self._sampler is None:
            self._sampler = HistorySampler(self._history_batch, self.np_random)
            self._set_noise(self._noise[:0], 0)
        mask = options.get("reset_mask")
        if mask is not None:
            mask = np.asarray(mask)
            if mask.dtype != np.bool_ or mask.shape != (self.num_envs,):
                raise ValueError(
                    f'options["reset_mask"] must be a bool array of shape ({self.num_envs},), '
                    f"got dtype {mask.dtype} shape {mask.shape}"
                )
        histories = _history_option(options, "histories", (self.num_envs, CONTEXT))
        if histories is None:
            n = self.num_envs if mask is None else int(np.count_nonzero(mask))
            histories, partial = self._sampler.take_tokens(n)
        else:
            partial = partial_logsum(histories)
            histories = histories.astype(np.uint8)  # validated tokens 0..15
            if mask is not None:
                histories, partial = histories[mask], partial[mask]
        if mask is None:
            self._obs, self._partial = histories, partial  # arrays nothing else writes
            self._t[:] = 0
        else:
            self._obs, self._partial = self._obs.copy(), self._partial.copy()
            self._obs[mask], self._partial[mask] = histories, partial
            self._t[mask] = 0
        return self._obs.astype(np.int64), {}

    def state_dict(self) -> dict[str, Any]:
        """Everything that decides the coming resets and steps, as plain data: ints, numpy arrays and the
        generator's bit-generator state dict (no objects). :meth:`load_state_dict` on an env made with the
        same arguments continues exactly as this one would."""
        if self._sampler is None:
            raise gym.error.ResetNeeded("call reset() before state_dict()")
        return {
            **self._settings(),
            "rng": self.np_random.bit_generator.state,  # also the sampler's generator
            "rng_seed": self._np_random_seed,
            "sampler": self._sampler.state_dict(),
            "obs": self._obs.astype(np.int64),
            "partial": self._partial.copy(),
            "t": self._t.copy(),
            "noise": self._noise.copy(),
            "noise_next": self._noise_next,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the env then continues exactly as the one that wrote it."""
        saved = {key: state.get(key) for key in self._settings()}
        if saved != self._settings():
            raise ValueError(f"env state is for {saved}; this env has {self._settings()}")
        if self._sampler is None:
            self._sampler = HistorySampler(self._history_batch, self.np_random)
        self.np_random.bit_generator.state = state["rng"]  # in place: the sampler draws from it too
        self._np_random_seed = state["rng_seed"]
        self._sampler.load_state_dict(state["sampler"])
        self._sampler.streams.rng = self.np_random
        self._obs = np.asarray(state["obs"]).astype(np.uint8)  # tokens 0..15
        self._partial = np.array(state["partial"], dtype=np.uint8)
        self._t = np.array(state["t"], dtype=np.int64)
        self._set_noise(np.array(state["noise"], dtype=np.int16), int(state["noise_next"]))

    def _set_noise(self, noise: np.ndarray, next_step: int) -> None:
        """Noise draws ``(steps, num_envs)`` for the coming steps, from row ``next_step`` on."""
        self._noise, self._noise_next = noise, next_step
        self._noise_index = np.minimum(noise, N_OUT).astype(np.int64)
        self._noise_index <<= 7

    def _settings(self) -> dict[str, Any]:
        return {
            "num_envs": self.num_envs,
            "good": list(self.good),
            "episode_length": self.episode_length,
            "history_batch": self._history_batch,
        }

    def _check_actions(self, actions: Any) -> np.ndarray:
        a = actions if type(actions) is np.ndarray else np.asarray(actions)
        if a.dtype.kind not in "iu":
            raise TypeError(f"actions must be integers in 0..{N_OUT - 1}, got {actions!r} of dtype {a.dtype}")
        if a.shape != self._action_shape:
            raise ValueError(f"actions must have shape ({self.num_envs},), one per env, got shape {a.shape}")
        if a.dtype.char != "l":
            a = a.astype(np.int64)
        # as unsigned 64-bit, negative actions are huge: one reduction checks both bounds
        if a.view(np.uint64).max() >= N_OUT:
            i = int(np.flatnonzero((a < 0) | (a >= N_OUT))[0])
            raise ValueError(
                f"action {a[i]} of env {i} is out of range: expected ints in 0..{N_OUT - 1} (token 8 + action)"
            )
        return a

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        if self._sampler is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        a = self._check_actions(actions)
        n = self.num_envs
        if self._noise_next >= len(self._noise):
            self._set_noise(noise_draws(self.np_random, (_NOISE_STEPS, n)), 0)
        index = self._noise_index[self._noise_next] + np.left_shift(self._partial, _THREE)
        index += a
        self._noise_next += 1
        # the world's token: noisy(det_from_logsum(partial + log factor of 8 + a), u)
        next_token = x = _WORLD.take(index)
        success = self._good.take(x)
        obs = self._obs
        final_obs = np.empty((n, CONTEXT), dtype=np.int64)
        final_obs.ravel()[:-2] = obs.ravel()[2:]  # shift every row by 2; columns 18, 19 are set next
        np.add(a, N_OUT, out=final_obs[:, -2])
        final_obs[:, -1] = next_token
        if self.episode_length == 1:  # every env ends: the whole batch resets
            done = self._all_done.copy()
            self._obs, self._partial = self._sampler.take_tokens(n)
        else:
            self._t += 1
            done = self._t >= self.episode_length
            # the log-sum of the new last 15 tokens: two tokens leave it, 8 + a and x enter
            partial = self._partial - TOKEN_LOG.take(obs[:, _FIRST_KEPT])
            partial -= TOKEN_LOG.take(obs[:, _FIRST_KEPT + 1])
            partial += TOKEN_LOG.take(a + N_OUT)
            partial += TOKEN_LOG.take(x)
            self._obs, self._partial = final_obs.astype(np.uint8), partial & 15
            n_done = int(np.count_nonzero(done))
            if n_done:
                self._obs[done], self._partial[done] = self._sampler.take_tokens(n_done)
                self._t[done] = 0
        info: dict[str, Any] = {"next_token": next_token, "success": success}
        if self.episode_length == 1 or n_done:
            info["final_obs"] = final_obs
            info["_final_obs"] = done
            info["final_info"] = {
                "next_token": next_token,
                "success": success,
                "_next_token": done,
                "_success": done,
            }
            info["_final_info"] = done
        return self._obs.astype(np.int64), success.astype(np.float64), done, np.zeros(n, dtype=bool), info
