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
  ``rollout/success_rate``;
* ``seed(s)`` keeps SB3's semantics (stored, used at the next ``reset()``, returns one seed per env);
  the batch draws all its randomness from one generator, seeded with the first of those seeds.

``make_sb3_vec_env("ngood4", n_envs)`` builds the SplitSeq one (wrapped in SB3's ``VecMonitor`` so that
``rollout/ep_rew_mean`` is logged as with ``make_vec_env``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env import VecEnv, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from seqenv.vector import SplitSeqVectorEnv

_FINAL_KEYS = ("final_obs", "_final_obs", "final_info", "_final_info")


class SB3VecEnv(VecEnv):
    """SB3 ``VecEnv`` view of a Gymnasium ``VectorEnv`` with ``SAME_STEP`` autoreset and array observations.

    :param venv: the batched environment, e.g. ``SplitSeqVectorEnv(1024, good="ngood4")``. Its
        ``metadata["autoreset_mode"]`` must be ``AutoresetMode.SAME_STEP``.
    """

    def __init__(self, venv: gym.vector.VectorEnv):
        mode = venv.metadata.get("autoreset_mode")
        if mode != AutoresetMode.SAME_STEP:
            raise ValueError(
                f"SB3VecEnv needs a vector env with AutoresetMode.SAME_STEP (SB3's own convention), got {mode!r}"
            )
        if isinstance(venv.single_observation_space, (gym.spaces.Dict, gym.spaces.Tuple)):
            raise TypeError(f"SB3VecEnv supports array observations, got {venv.single_observation_space}")
        self.venv = venv
        self._actions: np.ndarray | None = None
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)

    # --- stepping ----------------------------------------------------------------------------------------
    def reset(self) -> VecEnvObs:
        seed = self._seeds[0]
        options = self._options[0] or None
        obs, info = self.venv.reset(seed=seed, options=options)
        self.reset_infos = self._split_info(info)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_wait() called without a pending step_async(actions)")
        actions, self._actions = self._actions, None
        obs, reward, terminated, truncated, info = self.venv.step(actions)
        dones = np.logical_or(terminated, truncated)
        infos = self._split_info(info)
        if dones.any():
            final_obs = info.get("final_obs")
            if final_obs is None:
                raise RuntimeError("the vector env ended episodes without info['final_obs'] (not SAME_STEP?)")
            time_limit = np.logical_and(truncated, ~terminated).tolist()
            success = info.get("success")
            for i in np.flatnonzero(dones).tolist():
                d = infos[i]
                d["terminal_observation"] = final_obs[i]
                d["TimeLimit.truncated"] = time_limit[i]
                if success is not None:
                    d["is_success"] = bool(success[i])
        return obs, np.asarray(reward, dtype=np.float32), dones, infos

    def _split_info(self, info: dict[str, Any]) -> list[dict[str, Any]]:
        """Gymnasium's dict of arrays (with optional ``_key`` validity masks) -> one dict per env."""
        n = self.num_envs
        infos: list[dict[str, Any]] = [{} for _ in range(n)]
        for key, value in info.items():
            if key.startswith("_") or key in _FINAL_KEYS:
                continue
            values = value.tolist() if isinstance(value, np.ndarray) and value.ndim == 1 else list(value)
            mask = info.get("_" + key)
            if mask is None:
                for d, v in zip(infos, values):
                    d[key] = v
            else:
                for i in np.flatnonzero(mask).tolist():
                    infos[i][key] = values[i]
        return infos

    def close(self) -> None:
        self.venv.close()

    # --- attributes and methods: the batch is one object ---------------------------------------------------
    def _indices(self, indices: VecEnvIndices) -> list[int]:
        idx = list(range(self.num_envs)) if indices is None else [indices] if isinstance(indices, int) else list(indices)
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

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        """Call a method of the batched env once (for all envs) and return its result once per env."""
        idx = self._all(indices, f"env_method({method_name!r})")
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result for _ in idx]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """Always False: the batched env is no stack of ``gym.Wrapper``-wrapped single envs."""
        return [False for _ in self._indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        warnings.warn("SB3VecEnv: the batched environment does not render images")
        return [None for _ in range(self.num_envs)]


def make_sb3_vec_env(
    task: str | Sequence[int] = "ngood4",
    n_envs: int = 256,
    seed: int | None = None,
    episode_length: int = 1,
    monitor: bool = True,
) -> VecEnv:
    """The SB3 ``VecEnv`` of ``n_envs`` SplitSeq environments stepped by one numpy computation.

    :param task: a task id (``"ngood4"``) or a custom good set.
    :param n_envs: environments in the batch.
    :param seed: seed for the first ``reset()`` (SB3 algorithms also seed it through ``seed=``).
    :param episode_length: steps per episode (1: the post's contextual bandit).
    :param monitor: wrap in SB3's ``VecMonitor`` (episode return/length in ``infos[i]["episode"]``).
    """
    env: VecEnv = SB3VecEnv(SplitSeqVectorEnv(n_envs, good=task, episode_length=episode_length))
    if seed is not None:
        env.seed(seed)
    return VecMonitor(env) if monitor else env
