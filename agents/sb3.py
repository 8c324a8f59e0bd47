"""The SplitSeq transformer as a Stable-Baselines3 policy, PPO on the native vector env, and loading SB3 zips.

``PPO(TransformerPolicy, env, policy_kwargs={"pretrained": "tiny.pt"})`` starts PPO from the pretrained
predictor: the policy's action logits *are* the language model's odd-token logits (rows 8..15 of
``model.head``), so before the first update the action distribution equals the model's next-token
distribution restricted to the odd tokens (softmax over logits 8..15). ``policy_kwargs={"size": "tiny"}``
starts from a freshly initialised transformer instead.

Design choices (each measured or argued):

* **Observations.** SB3 one-hot encodes ``MultiDiscrete`` observations before the features extractor
  (``(B, 320)`` floats). :class:`TransformerPolicy` skips that step and hands the ``(B, 20)`` token ids
  straight to the transformer (measured: the one-hot plus the argmax back cost 15-40% of a tiny model's
  forward pass at batch 64-256). :class:`TransformerExtractor` still accepts SB3's one-hot (it recovers
  the ids by an exact argmax over each 16-block, checking that each block is one-hot), so it also works as
  ``features_extractor_class`` inside SB3's own policies.
* **Dropout off** (``dropout=0.0`` by default, whatever the checkpoint was pretrained with). SB3 collects
  rollouts in eval mode and updates in train mode: with dropout the PPO ratio ``pi_new / pi_old`` would be
  a ratio of two differently-noised networks, not 1 at the first minibatch, and clipping would fire on
  noise. ``dropout=`` can be set explicitly to study that.
* **Heads.** No MLP between the transformer and the heads (``net_arch=[]``). The action head is a copy of
  the language-model head's odd-token rows; the value head is a linear probe of the same features
  initialised to zero, so the value loss cannot disturb the pretrained features before the probe has
  learned something (its gradient with respect to the features is proportional to its weights). SB3's
  orthogonal initialisation is off: it would overwrite the pretrained transformer.
* **Saving.** The transformer's config is part of the policy's ``state_dict`` (module extra state), so
  :func:`load_sb3` and :func:`load_ppo` rebuild the policy from the zip alone, even when the pretrained
  checkpoint it started from has moved. ``PPO.load`` also works while that checkpoint is still in place.

:func:`load_sb3` turns any SB3 zip with an actor-critic policy on SplitSeq (PPO/A2C, ``TransformerPolicy``
or ``MlpPolicy``) into the project's policy protocol (``action_probs``, ``predict``), which is what
``agents.load("x.zip")`` returns; :func:`as_policy` does the same for a model in memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pickle
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.distributions import CategoricalDistribution
from stable_baselines3.common.logger import HumanOutputFormat, Logger
from stable_baselines3.common.policies import ActorCriticPolicy, BaseModel, BasePolicy
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from agents.checkpoint import CheckpointError, load_model, save_checkpoint
from agents.policy import _as_tokens, predict_actions, probs_from_logits
from agents.sb3_vec_env import SB3VecEnv, make_sb3_vec_env
from agents.transformer import SIZES, SplitSeqTransformer, TransformerConfig, config_for
from seqenv.sequence import CONTEXT, N_OUT, VOCAB, natural_histories, transition_probs
from seqenv.tasks import TASKS, good_mask, task_name

__all__ = [
    "PPO_DEFAULTS",
    "ExactSuccessCallback",
    "SB3Policy",
    "SB3VecEnv",
    "TransformerExtractor",
    "TransformerPolicy",
    "action_logits",
    "as_policy",
    "build_transformer",
    "export_checkpoint",
    "load_ppo",
    "load_sb3",
    "make_sb3_vec_env",
    "tokens_from_observation",
    "train_ppo",
]

_ARCH_FIELDS = ("n_layer", "n_head", "n_embd", "mlp_ratio", "context", "vocab")


def _arch(cfg: TransformerConfig) -> dict[str, int]:
    return {k: getattr(cfg, k) for k in _ARCH_FIELDS}


def build_transformer(
    size: str | None = None,
    pretrained: str | os.PathLike | None = None,
    config: dict[str, Any] | TransformerConfig | None = None,
    dropout: float = 0.0,
) -> tuple[SplitSeqTransformer, dict[str, Any]]:
    """The transformer a :class:`TransformerExtractor` wraps, and a description of where it came from.

    :param size: one of :data:`agents.transformer.SIZES` (default ``"tiny"`` when nothing else is given).
    :param pretrained: a ``.pt`` checkpoint of this project whose weights are loaded; if ``size`` or
        ``config`` is also given, the checkpoint's architecture must match it.
    :param config: an explicit :class:`TransformerConfig` (or its dict).
    :param dropout: dropout of the returned model (replaces the checkpoint's; 0 keeps PPO's ratio exact).
    :return: ``(model, source)`` with ``source = {"config": ..., "pretrained": path or None}``.
    """
    if config is not None and size is not None:
        raise ValueError(f"give size={size!r} or config=, not both")
    want: TransformerConfig | None = None
    if config is not None:
        want = config if isinstance(config, TransformerConfig) else TransformerConfig(**config)
    elif size is not None:
        want = config_for(size)
    state = None
    if pretrained is not None:
        try:
            loaded, _ = load_model(pretrained)
        except CheckpointError as e:
            raise CheckpointError(
                f"{e} (TransformerPolicy pretrained=). To load a saved SB3 zip without the checkpoint it "
                "started from, use agents.sb3.load_ppo or agents.sb3.load_sb3."
            ) from None
        if want is not None and _arch(loaded.cfg) != _arch(want):
            raise ValueError(
                f"checkpoint {pretrained} holds architecture {_arch(loaded.cfg)}, but {size or config!r} asks "
                f"for {_arch(want)}"
            )
        want, state = loaded.cfg, loaded.state_dict()
    if want is None:
        want = SIZES["tiny"]
    cfg = dataclasses.replace(want, dropout=float(dropout))
    model = SplitSeqTransformer(cfg)
    if state is not None:
        model.load_state_dict(state)
    source = {"config": cfg.to_dict(), "pretrained": None if pretrained is None else str(pretrained)}
    return model, source


def tokens_from_observation(obs: th.Tensor, context: int = CONTEXT, vocab: int = VOCAB) -> th.Tensor:
    """``(B, context)`` int64 token ids from raw ids ``(B, context)`` or SB3's one-hot ``(B, context*vocab)``.

    The one-hot is decoded by an argmax over each ``vocab``-block, which is exact; anything that is not a
    one-hot block (or an id outside ``0..vocab-1``) raises ``ValueError``.
    """
    if obs.dim() != 2:
        raise ValueError(f"expected a batch of observations (B, {context}) or (B, {context * vocab}), got {tuple(obs.shape)}")
    if obs.shape[1] == context and not obs.is_floating_point():
        ids = obs.long()
        if ids.numel() and (ids.min() < 0 or ids.max() >= vocab):
            raise ValueError(f"token ids must be in 0..{vocab - 1}, got min {int(ids.min())}, max {int(ids.max())}")
        return ids
    if obs.shape[1] == context * vocab:
        blocks = obs.view(obs.shape[0], context, vocab)
        top, ids = blocks.max(dim=-1)
        if not (bool((top == 1).all()) and bool((blocks.sum(dim=-1) == 1).all())):
            raise ValueError("one-hot observation expected: each block of 16 must hold a single 1 and zeros")
        return ids
    raise ValueError(
        f"expected integer token ids (B, {context}) or SB3's one-hot floats (B, {context * vocab}), "
        f"got {tuple(obs.shape)} {obs.dtype}"
    )


def _check_observation_space(observation_space: spaces.Space, cfg: TransformerConfig) -> None:
    ok = (
        isinstance(observation_space, spaces.MultiDiscrete)
        and observation_space.shape == (cfg.context,)
        and bool(np.all(observation_space.nvec == cfg.vocab))
    )
    if not ok:
        raise ValueError(
            f"TransformerExtractor needs MultiDiscrete([{cfg.vocab}] * {cfg.context}) observations (SplitSeq), "
            f"got {observation_space}"
        )


class TransformerExtractor(BaseFeaturesExtractor):
    """SB3 features extractor: the SplitSeq transformer's final residual stream at the last position.

    :param observation_space: ``MultiDiscrete([16] * 20)``.
    :param size: model size (see :func:`build_transformer`).
    :param pretrained: path of a pretrained ``.pt`` checkpoint.
    :param config: explicit :class:`TransformerConfig` or its dict.
    :param dropout: dropout inside the transformer (default 0: see the module docstring).
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        size: str | None = None,
        pretrained: str | os.PathLike | None = None,
        config: dict[str, Any] | None = None,
        dropout: float = 0.0,
    ):
        model, source = build_transformer(size=size, pretrained=pretrained, config=config, dropout=dropout)
        _check_observation_space(observation_space, model.cfg)
        super().__init__(observation_space, features_dim=model.cfg.n_embd)
        self.model = model
        self.source = source

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.model.features(tokens_from_observation(observations, self.model.cfg.context, self.model.cfg.vocab))

    # The architecture travels inside the state_dict, so a saved policy can be rebuilt from its zip alone.
    def get_extra_state(self) -> dict[str, Any]:
        return {"config": self.model.cfg.to_dict(), "pretrained": self.source["pretrained"]}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        saved = TransformerConfig(**state["config"])
        if _arch(saved) != _arch(self.model.cfg):
            raise ValueError(f"saved transformer has architecture {_arch(saved)}, this policy {_arch(self.model.cfg)}")


class TransformerPolicy(ActorCriticPolicy):
    """SB3 actor-critic policy whose actor is the SplitSeq transformer's odd-token head.

    Use with PPO or A2C on a SplitSeq env (``MultiDiscrete([16]*20)`` observations, ``Discrete(8)`` actions)::

        PPO(TransformerPolicy, env, policy_kwargs={"pretrained": "tiny.pt"})   # start from the predictor
        PPO(TransformerPolicy, env, policy_kwargs={"size": "small"})           # fresh weights

    :param observation_space: ``MultiDiscrete([16] * 20)``.
    :param action_space: ``Discrete(8)``.
    :param lr_schedule: learning-rate schedule (given by the algorithm).
    :param size: model size when not pretrained (default ``"tiny"``).
    :param pretrained: ``.pt`` checkpoint to start from; the action head becomes rows 8..15 of its LM head.
    :param config: explicit transformer config (how saved zips are rebuilt).
    :param dropout: transformer dropout (default 0 so that PPO's probability ratio is exact).
    :param kwargs: the remaining :class:`~stable_baselines3.common.policies.ActorCriticPolicy` arguments
        (optimizer, ``share_features_extractor``, ...); ``net_arch`` must be empty and ``ortho_init`` False.
    """

    features_extractor: TransformerExtractor

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Any,
        size: str | None = None,
        pretrained: str | os.PathLike | None = None,
        config: dict[str, Any] | None = None,
        dropout: float = 0.0,
        **kwargs: Any,
    ):
        if not (isinstance(action_space, spaces.Discrete) and int(action_space.n) == N_OUT):
            raise ValueError(f"TransformerPolicy needs the Discrete({N_OUT}) action space of SplitSeq, got {action_space}")
        for key, allowed in (("net_arch", ([], None)), ("ortho_init", (False,)), ("use_sde", (False,))):
            if key in kwargs and kwargs[key] not in allowed:
                raise ValueError(f"TransformerPolicy does not support {key}={kwargs[key]!r} (the heads sit on the transformer)")
            kwargs.pop(key, None)
        for key in ("features_extractor_class", "features_extractor_kwargs"):
            if key in kwargs:
                raise ValueError(f"TransformerPolicy sets {key} itself; pass size=, pretrained=, config=, dropout=")
        self._transformer_kwargs = {"size": size, "pretrained": pretrained, "config": config, "dropout": dropout}
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=[],
            ortho_init=False,
            features_extractor_class=TransformerExtractor,
            features_extractor_kwargs=dict(self._transformer_kwargs),
            **kwargs,
        )
        self._init_heads()

    @th.no_grad()
    def _init_heads(self) -> None:
        head = self.pi_features_extractor.model.head
        self.action_net.weight.copy_(head.weight[N_OUT:])
        self.action_net.bias.copy_(head.bias[N_OUT:])
        nn.init.zeros_(self.value_net.weight)
        nn.init.zeros_(self.value_net.bias)

    @property
    def transformer(self) -> SplitSeqTransformer:
        """The actor's transformer (its ``head`` rows 8..15 are the *initial* action head; see ``action_net``)."""
        return self.pi_features_extractor.model

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        for key in ("net_arch", "ortho_init", "use_sde", "features_extractor_class", "features_extractor_kwargs"):
            data.pop(key, None)
        data.update(size=None, pretrained=None, config=self.transformer.cfg.to_dict(), dropout=self.transformer.cfg.dropout)
        return data

    # SB3 one-hot encodes MultiDiscrete observations in BaseModel.extract_features; the transformer wants ids.
    def extract_features(  # type: ignore[override]
        self, obs: th.Tensor, features_extractor: BaseFeaturesExtractor | None = None
    ) -> th.Tensor | tuple[th.Tensor, th.Tensor]:
        if self.share_features_extractor:
            return (features_extractor or self.features_extractor)(obs)
        return self.pi_features_extractor(obs), self.vf_features_extractor(obs)

    def get_distribution(self, obs: th.Tensor) -> Any:
        latent_pi = self.mlp_extractor.forward_actor(self.pi_features_extractor(obs))
        return self._get_action_dist_from_latent(latent_pi)

    def predict_values(self, obs: th.Tensor) -> th.Tensor:
        return self.value_net(self.mlp_extractor.forward_critic(self.vf_features_extractor(obs)))

    def next_token_logits(self, obs: th.Tensor) -> th.Tensor:
        """``(B, 16)`` next-token logits: the LM head's even-token rows 0..7 and the (trained) action head."""
        features = self.pi_features_extractor(obs)
        return th.cat([self.transformer.head(features)[:, :N_OUT], self.action_net(features)], dim=1)

    @classmethod
    def kwargs_from_saved(cls, policy_kwargs: dict[str, Any], policy_state: dict[str, Any]) -> dict[str, Any]:
        """``policy_kwargs`` that rebuild a saved policy from its own ``state_dict`` (no checkpoint needed)."""
        extra = policy_state.get("features_extractor._extra_state") or policy_state.get("pi_features_extractor._extra_state")
        if extra is None:
            raise CheckpointError("the saved TransformerPolicy has no transformer config in its state_dict")
        kwargs = {k: v for k, v in policy_kwargs.items() if k not in ("size", "pretrained", "config")}
        kwargs["config"] = dict(extra["config"])
        kwargs["dropout"] = kwargs["config"]["dropout"]
        return kwargs


def action_logits(policy: BasePolicy, obs: th.Tensor) -> th.Tensor:
    """Raw action logits ``(B, 8)`` of an SB3 actor-critic policy with a categorical action distribution."""
    if not isinstance(policy, ActorCriticPolicy) or not isinstance(policy.action_dist, CategoricalDistribution):
        raise TypeError(
            f"expected an SB3 ActorCriticPolicy with a Discrete action space (PPO, A2C), got {type(policy).__name__}"
        )
    if isinstance(policy, TransformerPolicy):
        features = policy.pi_features_extractor(obs)
    else:
        features = BaseModel.extract_features(policy, obs, policy.pi_features_extractor)
    return policy.action_net(policy.mlp_extractor.forward_actor(features))


class SB3Policy:
    """An SB3 actor-critic policy seen through the project's policy protocol (see :mod:`agents.policy`).

    ``action_probs`` uses the policy's raw action logits (temperature 0: greedy one-hot, ties to the lowest
    action; temperature 1: the policy's own distribution). ``next_token_probs`` exists for
    :class:`TransformerPolicy` only.

    :param policy: an SB3 ``ActorCriticPolicy`` on SplitSeq's spaces (put in eval mode).
    :param meta: what is known about it (path, task, size, seed, method, ...).
    :param batch_size: histories per forward pass.
    """

    def __init__(self, policy: BasePolicy, meta: dict[str, Any] | None = None, batch_size: int = 8192):
        if not isinstance(policy, ActorCriticPolicy):
            raise TypeError(f"expected an SB3 ActorCriticPolicy (PPO, A2C), got {type(policy).__name__}")
        if not (isinstance(policy.action_space, spaces.Discrete) and int(policy.action_space.n) == N_OUT):
            raise ValueError(f"expected SplitSeq's Discrete({N_OUT}) action space, got {policy.action_space}")
        obs_space = policy.observation_space
        if not (isinstance(obs_space, spaces.MultiDiscrete) and obs_space.shape == (CONTEXT,)):
            raise ValueError(f"expected SplitSeq's MultiDiscrete([16] * {CONTEXT}) observations, got {obs_space}")
        self.policy = policy
        self.policy.set_training_mode(False)
        self.meta = dict(meta or {})
        self.batch_size = batch_size
        if isinstance(policy, TransformerPolicy):
            self.next_token_probs = self._next_token_probs

    @th.no_grad()
    def _batched(self, fn: Any, tokens: th.Tensor, width: int) -> th.Tensor:
        self.policy.set_training_mode(False)
        device = self.policy.device
        outs = [fn(tokens[i : i + self.batch_size].to(device)).cpu() for i in range(0, len(tokens), self.batch_size)]
        return th.cat(outs) if outs else th.zeros((0, width))

    def action_probs(self, histories: np.ndarray, temperature: float = 0.0) -> np.ndarray:
        """``(N, 8)`` distribution over actions for ``(N, 20)`` histories (temperature 0 = greedy)."""
        tokens = _as_tokens(histories, "histories")
        return probs_from_logits(self._batched(lambda x: action_logits(self.policy, x), tokens, N_OUT), temperature)

    def _next_token_probs(self, contexts: np.ndarray) -> np.ndarray:
        """``(N, 16)`` predictive distribution of the next token (TransformerPolicy only)."""
        tokens = _as_tokens(contexts, "contexts")
        return probs_from_logits(self._batched(self.policy.next_token_logits, tokens, VOCAB), 1.0)

    def predict(
        self,
        observation: np.ndarray,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, None]:
        """Actions for one observation ``(20,)`` or a batch ``(N, 20)``, as SB3's ``predict``."""
        return predict_actions(self.action_probs, observation, deterministic), None

    def __repr__(self) -> str:
        desc = ", ".join(f"{k}={self.meta[k]!r}" for k in ("method", "policy", "size", "task", "seed") if k in self.meta)
        return f"SB3Policy({desc})"


def as_policy(model: BaseAlgorithm | BasePolicy, meta: dict[str, Any] | None = None) -> SB3Policy:
    """The project's policy protocol for an SB3 algorithm (``PPO``, ``A2C``) or its policy, in memory."""
    if isinstance(model, BaseAlgorithm):
        meta = {**getattr(model, "splitseq_meta", {}), **(meta or {})}
        model = model.policy
    return SB3Policy(model, meta)


def _read_zip(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no SB3 model at {path}")
    try:
        data, params, _ = load_from_zip_file(path, device="cpu")
    except (ValueError, KeyError, OSError, RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as e:
        raise CheckpointError(f"{path} is not a readable Stable-Baselines3 zip ({type(e).__name__}: {e})") from None
    if not data or not params or "policy" not in params or "policy_class" not in data:
        raise CheckpointError(f"{path} lacks the policy of a Stable-Baselines3 model (data/policy.pth)")
    return data, params


def _policy_kwargs(data: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    kwargs = dict(data.get("policy_kwargs") or {})
    kwargs.pop("device", None)
    policy_class = data["policy_class"]
    if isinstance(policy_class, type) and issubclass(policy_class, TransformerPolicy):
        kwargs = policy_class.kwargs_from_saved(kwargs, params["policy"])
    return kwargs


def load_sb3(path: str | os.PathLike) -> SB3Policy:
    """Load an SB3 zip (PPO/A2C on SplitSeq) as the project's policy: what ``agents.load("x.zip")`` returns.

    Only the policy is rebuilt (no algorithm, no environment); a :class:`TransformerPolicy` is rebuilt from
    the config saved in the zip, without the checkpoint it was started from.

    :param path: the ``.zip`` written by ``model.save`` or ``splitseq ppo``.
    """
    data, params = _read_zip(path)
    policy_class = data["policy_class"]
    if not (isinstance(policy_class, type) and issubclass(policy_class, ActorCriticPolicy)):
        raise CheckpointError(f"{path}: policy class {policy_class!r} is not an SB3 ActorCriticPolicy (PPO, A2C)")
    kwargs = _policy_kwargs(data, params)
    if "use_sde" in data and not issubclass(policy_class, TransformerPolicy):
        kwargs.setdefault("use_sde", data["use_sde"])
    policy = policy_class(data["observation_space"], data["action_space"], BasePolicy._dummy_schedule, **kwargs)
    try:
        policy.load_state_dict(params["policy"])
    except (RuntimeError, ValueError) as e:
        raise CheckpointError(f"{path}: saved weights do not fit {policy_class.__name__}: {e}") from None
    policy.set_training_mode(False)
    meta = {"policy": policy_class.__name__, **(data.get("splitseq_meta") or {}), "path": str(path)}
    return SB3Policy(policy, meta)


def load_ppo(path: str | os.PathLike, env: Any = None, device: str = "cpu", **kwargs: Any) -> PPO:
    """``PPO.load`` that also rebuilds a :class:`TransformerPolicy` without its original pretrained checkpoint.

    :param path: the ``.zip``.
    :param env: environment to continue training on (optional, as in ``PPO.load``).
    :param device: torch device.
    :param kwargs: passed to ``PPO.load``.
    """
    data, params = _read_zip(path)
    custom = dict(kwargs.pop("custom_objects", None) or {})
    custom.setdefault("policy_kwargs", _policy_kwargs(data, params))
    return PPO.load(path, env=env, device=device, custom_objects=custom, **kwargs)


def export_checkpoint(model: BaseAlgorithm | TransformerPolicy, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> Path:
    """Write a trained :class:`TransformerPolicy` as a project ``.pt`` checkpoint (kind ``"sb3"``).

    The transformer's LM head gets the trained action head in its odd-token rows 8..15, so the checkpoint's
    ``policy_logits`` are exactly the SB3 policy's action logits and every project tool can read it.
    """
    policy = model.policy if isinstance(model, BaseAlgorithm) else model
    if not isinstance(policy, TransformerPolicy):
        raise TypeError(f"export_checkpoint needs a TransformerPolicy, got {type(policy).__name__}")
    out = SplitSeqTransformer(policy.transformer.cfg)
    out.load_state_dict(policy.transformer.state_dict())
    with th.no_grad():
        out.head.weight[N_OUT:] = policy.action_net.weight
        out.head.bias[N_OUT:] = policy.action_net.bias
    info = {**getattr(model, "splitseq_meta", {}), **(meta or {})}
    return save_checkpoint(path, out.eval(), kind="sb3", meta=info)


# --- training ----------------------------------------------------------------------------------------------

#: PPO hyperparameters of ``splitseq ppo`` (every one visible; override through ``train_ppo(**ppo_kwargs)``).
#: One-step episodes make ``gamma``/``gae_lambda`` irrelevant there: the advantage is ``r - V(h)``.
PPO_DEFAULTS: dict[str, Any] = {
    "n_steps": 8,  # per env: 8 x 256 envs = 2048 samples per rollout
    "batch_size": 256,
    "n_epochs": 4,
    "learning_rate": 1e-3,  # 3e-4 (SB3 default) learns ~3x slower here, for the transformer and the MLP alike
    "clip_range": 0.2,
    "ent_coef": 0.0,
    "vf_coef": 0.5,
    "max_grad_norm": 0.5,
    "gamma": 0.99,
    "gae_lambda": 0.95,
}


class ExactSuccessCallback(BaseCallback):
    """Logs the exact expected success of the policy on fixed natural histories to TensorBoard.

    ``eval/greedy_success`` = mean over histories ``h`` of ``T(good | h, argmax pi(.|h))`` from the exact world
    model (no sampling noise), ``eval/sampled_success`` the same for the temperature-1 policy. Each record is
    indexed by the samples the evaluated policy was *trained* on (the last rollout, not yet learned from, is
    not counted): 0 for the initial policy, then every ``every`` samples, and the final policy.

    :param task: the task whose good set counts.
    :param every: evaluate once every ``every`` trained-on samples (checked at the end of each rollout).
    :param n_histories: histories evaluated (fixed, drawn once from ``seed``).
    :param seed: seed of the histories.
    :param histories: explicit ``(N, 20)`` histories instead (e.g. another method's held-out set).
    """

    def __init__(
        self, task: str, every: int = 10_000, n_histories: int = 4096, seed: int = 12345, histories: np.ndarray | None = None
    ):
        super().__init__()
        if int(every) < 1:
            raise ValueError(f"every must be a positive number of samples, got {every}")
        self.histories = natural_histories(n_histories, seed) if histories is None else np.asarray(histories)
        self.p_good = transition_probs(self.histories) @ good_mask(task).astype(np.float64)  # (N, 8)
        self.every = int(every)
        self._next = 0
        #: ``(samples trained on, greedy success, sampled success, seconds since training started)``
        self.records: list[tuple[int, float, float, float]] = []

    def _on_training_start(self) -> None:
        self._t0 = time.perf_counter()
        self._eval_time = 0.0

    def _record(self, trained: int) -> None:
        t = time.perf_counter()
        pol = as_policy(self.model)
        greedy = float((pol.action_probs(self.histories, 0.0) * self.p_good).sum(1).mean())
        sampled = float((pol.action_probs(self.histories, 1.0) * self.p_good).sum(1).mean())
        self.records.append((trained, greedy, sampled, t - self._t0))
        self.logger.record("eval/greedy_success", greedy)
        self.logger.record("eval/sampled_success", sampled)
        self._eval_time += time.perf_counter() - t

    def _on_rollout_end(self) -> None:
        trained = self.num_timesteps - self.model.n_steps * self.model.n_envs
        if trained >= self._next:
            self._record(trained)
            self._next = trained + self.every

    def _on_training_end(self) -> None:
        if not self.records or self.records[-1][0] != self.num_timesteps:
            self._record(self.num_timesteps)
            self.logger.dump(self.num_timesteps)

    def _on_step(self) -> bool:
        return True


def train_ppo(
    task: str | tuple[int, ...] = "ngood4",
    timesteps: int = 200_000,
    out: str | os.PathLike | None = None,
    pretrained: str | os.PathLike | None = None,
    size: str | None = None,
    policy: str = "transformer",
    n_envs: int = 256,
    seed: int = 0,
    tensorboard_log: str | os.PathLike | None = None,
    eval_every: int | None = None,
    episode_length: int = 1,
    eval_histories: np.ndarray | None = None,
    verbose: int = 0,
    **ppo_kwargs: Any,
) -> PPO:
    """Train PPO on SplitSeq's native vector env; save the SB3 zip to ``out`` if given.

    :param task: a task id or a custom good set (e.g. ``(0, 3)``).
    :param timesteps: environment samples (rounded up to whole rollouts of ``n_steps * n_envs``).
    :param out: where to save the zip (``.zip`` appended by SB3 if missing).
    :param pretrained: ``.pt`` checkpoint to start the :class:`TransformerPolicy` from.
    :param size: model size without ``pretrained`` (default tiny).
    :param policy: ``"transformer"`` (:class:`TransformerPolicy`) or ``"mlp"`` (SB3's ``MlpPolicy`` on the
        one-hot observation, from scratch).
    :param n_envs: environments stepped together.
    :param seed: seeds torch, the env and SB3.
    :param tensorboard_log: TensorBoard directory (``None``: no TensorBoard).
    :param eval_every: log the exact greedy success every this many samples (default ``timesteps // 10``;
        0 disables).
    :param episode_length: steps per episode (1: the post's bandit).
    :param eval_histories: histories of the exact success evaluation (default: 4096 drawn with seed 12345).
    :param verbose: SB3 verbosity.
    :param ppo_kwargs: overrides of :data:`PPO_DEFAULTS` (and other ``PPO`` arguments).
    """
    name = task_name(task)  # validates a task id or a custom good set
    if int(timesteps) < 1:
        raise ValueError(f"timesteps must be a positive int, got {timesteps}")
    env = make_sb3_vec_env(task, n_envs, seed=seed, episode_length=episode_length)
    kwargs = {**PPO_DEFAULTS, **ppo_kwargs}
    if policy == "transformer":
        policy_cls: Any = TransformerPolicy
        kwargs["policy_kwargs"] = {"pretrained": None if pretrained is None else str(pretrained), "size": size, **kwargs.get("policy_kwargs", {})}
    elif policy == "mlp":
        if pretrained is not None or size is not None:
            raise ValueError("policy='mlp' is SB3's MlpPolicy from scratch; it takes no pretrained= or size=")
        policy_cls = "MlpPolicy"
    else:
        raise ValueError(f"policy must be 'transformer' or 'mlp', got {policy!r}")
    model = PPO(policy_cls, env, seed=seed, tensorboard_log=None if tensorboard_log is None else str(tensorboard_log),
                verbose=verbose, device="cpu", **kwargs)
    if tensorboard_log is None:  # SB3 would otherwise create an empty tempdir/SB3-<date> folder per learn()
        model.set_logger(Logger(folder=None, output_formats=[HumanOutputFormat(sys.stdout)] if verbose else []))
    model.splitseq_meta = {
        "method": "ppo",
        "policy": policy,
        "task": name,
        "seed": int(seed),
        "size": _size_name(model.policy.transformer.cfg) if policy == "transformer" else None,
        "pretrained": None if pretrained is None else str(pretrained),
        "timesteps": int(timesteps),
        "n_envs": int(n_envs),
    }
    every = max(1, int(timesteps) // 10) if eval_every is None else int(eval_every)
    callbacks = [ExactSuccessCallback(task, every=every, histories=eval_histories)] if every > 0 else []
    run_name = Path(out).stem if out is not None else f"ppo_{name}"
    t0 = time.perf_counter()
    model.learn(int(timesteps), callback=callbacks, tb_log_name=run_name, progress_bar=False)
    model.splitseq_meta["wall_time_s"] = time.perf_counter() - t0
    if callbacks:
        model.splitseq_meta["eval"] = [list(r) for r in callbacks[0].records]
        model.splitseq_meta["eval_time_s"] = callbacks[0]._eval_time
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        model.save(out)
    return model


def _size_name(cfg: TransformerConfig) -> str:
    for name, c in SIZES.items():
        if _arch(c) == _arch(cfg):
            return name
    return "custom"


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ppo",
        help="train PPO (Stable-Baselines3) on SplitSeq's native vector env",
        description="Train PPO with the transformer policy (optionally from a pretrained checkpoint) or SB3's "
        "MlpPolicy on SplitSeq's native vector env; save SB3's zip (agents.load reads it); TensorBoard logs "
        "SB3's rollout/train scalars and eval/greedy_success (exact, on fixed histories).",
    )
    p.add_argument("--task", choices=sorted(TASKS), default="ngood4")
    p.add_argument("--pretrained", default=None, help="pretrained .pt checkpoint to start from")
    p.add_argument("--size", choices=sorted(SIZES), default=None, help="model size without --pretrained (default tiny)")
    p.add_argument("--policy", choices=("transformer", "mlp"), default="transformer")
    p.add_argument("--timesteps", type=int, required=True, help="environment samples")
    p.add_argument("--out", required=True, help="output .zip")
    p.add_argument("--n-envs", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tensorboard", default=None, help="TensorBoard directory (default: runs/ beside --out; '' disables)")
    p.add_argument("--eval-every", type=int, default=None, help="samples between exact greedy-success evaluations")
    p.add_argument("--episode-length", type=int, default=1)
    for key, value in PPO_DEFAULTS.items():
        p.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")

    def func(args: argparse.Namespace) -> int:
        if args.threads:
            th.set_num_threads(args.threads)
        tb = str(Path(args.out).parent / "runs") if args.tensorboard is None else (args.tensorboard or None)
        hyper = {key: getattr(args, key) for key in PPO_DEFAULTS}
        model = train_ppo(
            task=args.task, timesteps=args.timesteps, out=args.out, pretrained=args.pretrained, size=args.size,
            policy=args.policy, n_envs=args.n_envs, seed=args.seed, tensorboard_log=tb, eval_every=args.eval_every,
            episode_length=args.episode_length, **hyper,
        )
        meta = model.splitseq_meta
        for samples, greedy, sampled, seconds in meta.get("eval", []):
            print(f"{samples:>9d} samples {seconds:7.1f}s  greedy success {greedy:.4f}  sampled success {sampled:.4f}")
        saved = args.out if str(args.out).endswith(".zip") else f"{args.out}.zip"
        print(f"trained {model.num_timesteps} samples in {meta['wall_time_s']:.1f}s "
              f"({model.num_timesteps / meta['wall_time_s']:.0f} samples/s); saved {saved}")
        if tb:
            print(f"TensorBoard: tensorboard --logdir {tb}")
        return 0

    p.set_defaults(func=func)
