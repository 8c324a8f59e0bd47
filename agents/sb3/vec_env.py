"""A Stable-Baselines3 ``VecEnv`` over a native batched Gymnasium ``VectorEnv`` (one numpy call per step).

SB3 normally vectorises with ``DummyVecEnv``: one Python ``env.step`` per environment per step. SplitSeq has
a native batched environment (:class:`seqenv.SplitSeqVectorEnv`) that steps every environment in one numpy
computation, so :class:`SB3VecEnv` only translates conventions:

* Gymnasium ``(obs, reward, terminated, truncated, info-of-arrays)`` -> SB3 ``(obs, reward, done, [info, ...])``;
* ``SAME_STEP`` autoreset: the observation that ended an episode (``info["final_obs"]``) becomes
  ``infos[i]["terminal_observation"]`` and the returned observation is already the next episode's first,
  which is exactly what SB3 expects of a ``VecEnv``; ``infos[i]["TimeLimit.truncated"]`` is set as
  ``DummyVecEnv`` sets it;
* ``infos[i]["is_success"]`` is the last step's ``success`` at the end of an episode, so SB3 logs
  ``rollout/success_rate``; ``infos[i]["episode"] = {"r": return, "l": length, "t": seconds}`` as SB3's
  ``Monitor``/``VecMonitor`` write it (so ``rollout/ep_rew_mean`` is logged), kept in numpy here because
  ``VecMonitor``'s per-env Python loop costs twice as much as everything else in a step;
* ``seed(s)`` keeps SB3's semantics (stored, used at the next ``reset()``, returns one seed per env);
  the batch draws all its randomness from one generator, seeded with the first of those seeds;
  ``set_options(dict)`` passes that dict to the batched env's next ``reset`` (one dict for the batch).

``make_sb3_vec_env("ngood4", n_envs)`` builds the SplitSeq one.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from seqenv.vector import SplitSeqVectorEnv

_FINAL_KEYS = ("final_obs", "_final_obs", "final_info", "_final_info")


class SB3VecEnv(VecEnv):
    """SB3 ``VecEnv`` view of a Gymnasium ``VectorEnv`` with ``SAME_STEP`` autoreset and array observations.

    :param venv: the batched environment, e.g. ``SplitSeqVectorEnv(1024, good="ngood4")``. Its
        ``metadata["autoreset_mode"]`` must be ``AutoresetMode.SAME_STEP``.
    :param record_episodes: add ``infos[i]["episode"]`` (return, length, time) at episode ends, as
        SB3's ``VecMonitor`` does (leave it on unless you wrap this env in a ``VecMonitor`` yourself).
    """

    def __init__(self, venv: gym.vector.VectorEnv, record_episodes: bool = True):
        mode = venv.metadata.get("autoreset_mode")
        if mode != AutoresetMode.SAME_STEP:
            raise ValueError(
                f"SB3VecEnv needs a vector env with AutoresetMode.SAME_STEP (SB3's own convention), got {mode!r}"
            )
        if isinstance(venv.single_observation_space, (gym.spaces.Dict, gym.spaces.Tuple)):
            raise TypeError(f"SB3VecEnv supports array observations, got {venv.single_observation_space}")
        self.venv = venv
        self.record_episodes = record_episodes
        self._actions: np.ndarray | None = None
        self._ep_return = np.zeros(venv.num_envs, dtype=np.float64)
        self._ep_length = np.zeros(venv.num_envs, dtype=np.int64)
        self._t0 = time.time()
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)

    # --- stepping ----------------------------------------------------------------------------------------
    def reset(self) -> VecEnvObs:
        obs, info = self.venv.reset(seed=self._seeds[0], options=self._batch_options())
        self.reset_infos = self._split_info(info)
        self._ep_return[:] = 0.0
        self._ep_length[:] = 0
        self._reset_seeds()
        self._reset_options()
        return obs

    def _batch_options(self) -> dict[str, Any] | None:
        """The one options dict of the batch: ``set_options(dict)`` gives every env the same (shared) dict."""
        given = [o for o in self._options if o]
        if not given:
            return None
        if len(given) == self.num_envs and all(o is given[0] for o in given):
            return given[0]
        raise ValueError(
            "SB3VecEnv resets all envs with one options dict (e.g. {'reset_mask': ...} or {'histories': ...} for the "
            "batch); pass it as set_options(dict), not a list of per-env dicts"
        )

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_wait() called without a pending step_async(actions)")
        actions, self._actions = self._actions, None
        obs, reward, terminated, truncated, info = self.venv.step(actions)
        dones = np.logical_or(terminated, truncated)
        self._ep_return += reward
        self._ep_length += 1
        columns, masked = self._columns(info)
        if dones.any():
            final_obs = info.get("final_obs")
            if final_obs is None:
                raise RuntimeError("the vector env ended episodes without info['final_obs'] (not SAME_STEP?)")
            done = np.flatnonzero(dones)
            extra: dict[str, list[Any]] = {
                "terminal_observation": list(final_obs[done]),
                "TimeLimit.truncated": np.logical_and(truncated, ~terminated)[done].tolist(),
            }
            if "success" in info:
                extra["is_success"] = np.asarray(info["success"], dtype=bool)[done].tolist()
            if self.record_episodes:
                t = round(time.time() - self._t0, 6)
                extra["episode"] = [
                    {"r": r, "l": n, "t": t}
                    for r, n in zip(self._ep_return[done].tolist(), self._ep_length[done].tolist())
                ]
                self._ep_return[done] = 0.0
                self._ep_length[done] = 0
            if len(done) == self.num_envs:  # one-step episodes: every env ends at every step
                columns.update(extra)
            else:
                idx = done.tolist()
                masked.extend((key, idx, values) for key, values in extra.items())
        return obs, np.asarray(reward, dtype=np.float32), dones, self._assemble(columns, masked)

    def _columns(
        self, info: dict[str, Any]
    ) -> tuple[dict[str, list[Any]], list[tuple[str, list[int], list[Any]]]]:
        """Split Gymnasium's dict of arrays into keys valid for every env and keys with a ``_key`` mask."""
        columns: dict[str, list[Any]] = {}
        masked: list[tuple[str, list[int], list[Any]]] = []
        for key, value in info.items():
            if key.startswith("_") or key in _FINAL_KEYS:
                continue
            values = value.tolist() if isinstance(value, np.ndarray) and value.ndim == 1 else list(value)
            mask = info.get("_" + key)
            if mask is None:
                columns[key] = values
            else:
                idx = np.flatnonzero(mask).tolist()
                masked.append((key, idx, [values[i] for i in idx]))
        return columns, masked

    def _assemble(
        self, columns: dict[str, list[Any]], masked: list[tuple[str, list[int], list[Any]]]
    ) -> list[dict[str, Any]]:
        """One info dict per env (built row-wise: the per-env Python work is what a step costs here)."""
        if columns:
            keys = list(columns)
            infos = [dict(zip(keys, row)) for row in zip(*columns.values())]
        else:
            infos = [{} for _ in range(self.num_envs)]
        for key, idx, values in masked:
            for i, v in zip(idx, values):
                infos[i][key] = v
        return infos

    def _split_info(self, info: dict[str, Any]) -> list[dict[str, Any]]:
        return self._assemble(*self._columns(info))

    def close(self) -> None:
        self.venv.close()

    # --- attributes and methods: the batch is one object ---------------------------------------------------
    def _indices(self, indices: VecEnvIndices) -> list[int]:
        idx = (
            list(range(self.num_envs))
            if indices is None
            else [indices]
            if isinstance(indices, int)
            else list(indices)
        )
        bad = [i for i in idx if not 0 <= i < self.num_envs]
        if bad:
            raise IndexError(f"env indices {bad} out of range for {self.num_envs} envs")
        return idx

    def _all(self, indices: VecEnvIndices, what: str) -> list[int]:
        idx = self._indices(indices)
        if sorted(set(idx)) != list(range(self.num_envs)):
            raise ValueError(
                f"{what} on a subset of envs ({idx}) is impossible: the {self.num_envs} envs are one batched object"
            )
        return idx

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The batched env's attribute, once per requested index (all envs share it)."""
        value = getattr(self.venv, attr_name)
        return [value for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute of the batched env; only for all envs at once."""
        self._all(indices, f"set_attr({attr_name!r})")
        setattr(self.venv, attr_name, value)

    def env_method(
        self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs
    ) -> list[Any]:
        """Call a method of the batched env once (for all envs) and return its result once per env."""
        idx = self._all(indices, f"env_method({method_name!r})")
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result for _ in idx]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """Always False: the batched env is no stack of ``gym.Wrapper``-wrapped single envs."""
        return [False for _ in self._indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        warnings.warn("SB3VecEnv: the batched environment does not render images", stacklevel=2)
        return [None for _ in range(self.num_envs)]


def make_sb3_vec_env(
    task: str | Sequence[int] = "ngood4",
    n_envs: int = 256,
    seed: int | None = None,
    episode_length: int = 1,
    record_episodes: bool = True,
) -> SB3VecEnv:
    """The SB3 ``VecEnv`` of ``n_envs`` SplitSeq environments stepped by one numpy computation.

    :param task: a task id (``"ngood4"``) or a custom good set.
    :param n_envs: environments in the batch.
    :param seed: seed for the first ``reset()`` (SB3 algorithms also seed it through ``seed=``).
    :param episode_length: steps per episode (1: the post's contextual bandit).
    :param record_episodes: episode return/length in ``infos[i]["episode"]`` (as ``VecMonitor`` writes it).
    """
    env = SB3VecEnv(SplitSeqVectorEnv(n_envs, good=task, episode_length=episode_length), record_episodes)
    if seed is not None:
        env.seed(seed)
    return env
