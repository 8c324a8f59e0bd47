"""The SplitSeq Gymnasium environment (docs/spec.md §3)."""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from seqenv.sampler import HistorySampler
from seqenv.sequence import (
    CONTEXT,
    N_OUT,
    TOKEN_LOG,
    VOCAB,
    det_from_logsum,
    noise_draws,
    noisy,
    partial_logsum,
    validate_histories,
)
from seqenv.tasks import GoodSpec, good_mask, task_name
from seqenv.validation import check_positive_int

# The rule as Python lists for the scalar step (built from the rule itself, not re-implemented):
_DET = det_from_logsum(np.arange(16)).tolist()  # deterministic value of each log-sum mod 16
_ACTION_LOG = TOKEN_LOG[N_OUT:].tolist()  # log factor of odd token 8 + a
_VALUES = np.arange(N_OUT, dtype=np.uint8)
_NOISE_CHUNK = 4096
_CELL = 16  # pixels per token in rgb_array renders
# even tokens 0..7 in shades of blue, odd tokens 8..15 in shades of orange (darker = larger value)
_PALETTE = np.array(
    [(200 - 20 * v, 220 - 15 * v, 255) for v in range(N_OUT)]
    + [(255, 210 - 18 * v, 150 - 18 * v) for v in range(N_OUT)],
    dtype=np.uint8,
)


def check_episode_length(episode_length: int) -> int:
    """Validate ``episode_length``: a positive int."""
    return check_positive_int(episode_length, "episode_length")


def check_options(options: Any, known: tuple[str, ...]) -> dict[str, Any]:
    """``reset(options=...)`` as a dict whose keys are all in ``known`` (a misspelt key is not ignored)."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise TypeError(f"options must be a dict with keys {list(known)} or None, got {options!r}")
    unknown = [key for key in options if key not in known]
    if unknown:
        raise ValueError(f"unknown reset option {unknown[0]!r}; expected keys {list(known)}")
    return options


def _history_option(options: dict[str, Any] | None, key: str, shape: tuple[int, ...]) -> np.ndarray | None:
    """``options[key]`` validated as natural-looking histories of ``shape`` (a private int64 copy), or None."""
    if not options or key not in options:
        return None
    hist = np.array(validate_histories(options[key], f'options["{key}"]'), dtype=np.int64)
    if hist.shape != shape:
        raise ValueError(f'options["{key}"] must have shape {shape}, got {hist.shape}')
    return hist


def check_action(action: Any) -> int:
    """One action as an int in 0..7; raises naming the bad value otherwise."""
    if type(action) is not int:
        if isinstance(action, np.integer) or (
            isinstance(action, np.ndarray) and action.shape == () and action.dtype.kind in "iu"
        ):
            action = int(action)
        else:
            raise TypeError(
                f"action must be an int in 0..{N_OUT - 1} (token 8 + a), got {action!r} of type {type(action).__name__}"
            )
    if not 0 <= action < N_OUT:
        raise ValueError(f"action {action} is out of range: expected an int in 0..{N_OUT - 1} (token 8 + a)")
    return action


class SplitSeqEnv(gym.Env[np.ndarray, np.int64]):
    """Write the odd token of the mod-17 sequence so that the world's next even token is a success.

    ## Description
    The world is the stochastic sequence of docs/spec.md §1: each token is a deterministic function of the 16
    before it (``(prod (s+1) mod 17) mod 8``, plus 8 on odd positions), replaced by a uniform draw 2% of the
    time. The agent sees the last 20 tokens, ending on an even position, and writes the next (odd) token;
    the world then writes the following even token, which succeeds if it is in the task's good set.

    ## Action Space
    ``Discrete(8)``: action ``a`` writes token ``8 + a``.

    ## Observation Space
    ``MultiDiscrete([16] * 20)``, int64: the last 20 tokens, oldest first. The last token is on an even
    position (0..7) and tokens alternate parity, so the next position is odd.

    ## Rewards
    1.0 when the even token written by the world is in the good set, else 0.0.

    ## Starting State
    A natural history: a 20-token window of the stationary sequence, not a fixed warm-up. ``reset(seed=...)``
    burns in ``history_batch`` sequences once (:data:`seqenv.sequence.BURN_IN` tokens each, ~7 ms); every
    reset then takes the next 20 tokens of one of them (see :class:`seqenv.sampler.HistorySampler`).
    ``reset(options={"history": h})`` starts from the history ``h`` instead (validated).

    ## Episode End
    The episode terminates after ``episode_length`` steps (default 1: the post's contextual bandit).
    With ``episode_length > 1`` the history keeps the agent's own tokens: each step appends ``8 + a`` and
    the world's token.

    ## Information
    ``info["next_token"]`` the even token the world wrote (0..7), ``info["success"]`` whether it is good.
    The exact law of ``next_token`` given the observation and the action is
    :func:`seqenv.sequence.transition_probs`.

    ## Arguments
    ``gym.make("SplitSeq-ngood4-v0")`` (also ``ngood2``, ``ngood6``) or ``gym.make("SplitSeq-v0", good=...)``

    * ``good``: a task id (``"ngood2"``, ``"ngood4"``, ``"ngood6"``) or a custom good set, a non-empty
      proper subset of 0..7.
    * ``episode_length``: steps per episode, a positive int (default 1).
    * ``render_mode``: ``None``, ``"ansi"`` (text) or ``"rgb_array"`` (a ``(32, 320, 3)`` uint8 image: one cell
      per token, even tokens blue and odd ones orange, darker for larger values; after a step the strip under
      the last two tokens is green on success, red on failure).
    * ``history_batch``: histories prepared per refill of the reset supply (default 1024).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(
        self,
        good: GoodSpec | None = None,
        episode_length: int = 1,
        render_mode: str | None = None,
        history_batch: int = 1024,
    ):
        if good is None:
            raise TypeError("SplitSeqEnv needs good=: a task id like 'ngood4' or a good set such as (0, 3)")
        self.good = tuple(int(v) for v in np.flatnonzero(good_mask(good)))
        self.task = task_name(self.good)
        self._good = [bool(x) for x in good_mask(good)]
        self.episode_length = check_episode_length(episode_length)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}"
            )
        self.render_mode = render_mode
        self._history_batch = check_positive_int(history_batch, "history_batch")
        self.observation_space = spaces.MultiDiscrete(np.full(CONTEXT, VOCAB, dtype=np.int64))
        self.action_space = spaces.Discrete(N_OUT)
        self._sampler: HistorySampler | None = None
        self._obs: np.ndarray | None = None
        self._partial = 0
        self._t = 0
        # per coming step: the world's token for each deterministic value
        self._outcomes: list[list[int]] = []
        self._ui = 0
        self._last: tuple[int, int, bool] | None = None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict]:
        """Start an episode on a fresh natural history, or on ``options["history"]`` (20 tokens ending on an even
        position). ``seed`` re-seeds the environment and re-builds its supply of histories (a burn-in of
        ~7 ms); resets without a seed take the next history of the supply (~1 µs)."""
        options = check_options(options, ("history",))
        super().reset(seed=seed)
        if seed is not None or self._sampler is None:
            self._sampler = HistorySampler(self._history_batch, self.np_random)
            self._outcomes, self._ui = [], 0
        history = _history_option(options, "history", (CONTEXT,))
        if history is None:
            self._obs, self._partial = self._sampler.take_one()  # a view the sampler never writes again
        else:
            self._obs, self._partial = history, int(partial_logsum(history))
        self._t = 0
        self._last = None
        return self._obs.copy(), {}

    def step(self, action: int | np.integer) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = check_action(action)
        if self._obs is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        if self._t >= self.episode_length:
            raise gym.error.ResetNeeded("the episode has ended; call reset() before step()")
        if self._ui >= len(self._outcomes):
            # noisy() over a chunk of noise draws, for each deterministic value at once
            u = noise_draws(self.np_random, _NOISE_CHUNK)
            self._outcomes, self._ui = noisy(_VALUES[None, :], u[:, None]).tolist(), 0
        x = self._outcomes[self._ui][_DET[(self._partial + _ACTION_LOG[a]) & 15]]
        self._ui += 1
        success = self._good[x]
        obs = self._obs.copy()
        obs[:-2] = obs[2:]
        obs[-2] = N_OUT + a
        obs[-1] = x
        self._obs = obs
        self._t += 1
        self._last = (a, x, success)
        terminated = self._t >= self.episode_length
        if not terminated:
            self._partial = int(partial_logsum(obs))
        return obs.copy(), 1.0 if success else 0.0, terminated, False, {"next_token": x, "success": success}

    def render(self) -> str | np.ndarray | None:
        if self.render_mode is None:
            return None
        if self._obs is None:
            raise gym.error.ResetNeeded("call reset() before render()")
        if self.render_mode == "rgb_array":
            img = np.full((2 * _CELL, CONTEXT * _CELL, 3), 255, dtype=np.uint8)
            img[: _CELL - 1] = np.repeat(_PALETTE[self._obs], _CELL, axis=0)[None]
            img[: _CELL - 1, _CELL - 1 :: _CELL] = 255  # thin separators between cells
            if self._last is not None:
                img[_CELL + 2 : 2 * _CELL - 2, -2 * _CELL :] = (
                    (60, 180, 75) if self._last[2] else (220, 50, 47)
                )
            return img
        toks = " ".join(f"{int(t):2d}" for t in self._obs)
        line = f"SplitSeq[{self.task}] t={self._t}/{self.episode_length} history: {toks}\n"
        if self._last is not None:
            a, x, ok = self._last
            line += f"  wrote {N_OUT + a} (action {a}) -> world wrote {x}: {'success' if ok else 'failure'}\n"
        return line
