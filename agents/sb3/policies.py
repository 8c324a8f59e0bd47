"""The SB3 actor-critic policy whose actor is the SplitSeq transformer's odd-token head.

``PPO(TransformerPolicy, env, policy_kwargs={"pretrained": "tiny.pt"})`` starts PPO from the pretrained
predictor: the policy's action logits *are* the language model's odd-token logits (rows 8..15 of
``model.head``), so before the first update the action distribution equals the model's next-token
distribution restricted to the odd tokens (softmax over logits 8..15).

**Heads.** No MLP between the transformer and the heads (``net_arch=[]``). The action head is a copy of the
language-model head's odd-token rows; the value head is a linear probe of the same features initialised to
zero, so the value loss cannot disturb the pretrained features before the probe has learned something (its
gradient with respect to the features is proportional to its weights). SB3's orthogonal initialisation is
off: it would overwrite the pretrained transformer.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import CategoricalDistribution
from stable_baselines3.common.policies import ActorCriticPolicy, BaseModel, BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from agents.checkpoint import CheckpointError
from agents.sb3.torch_layers import TransformerExtractor
from agents.transformer import Edit, SplitSeqTransformer
from seqenv.sequence import N_OUT


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
            raise ValueError(
                f"TransformerPolicy needs the Discrete({N_OUT}) action space of SplitSeq, got {action_space}"
            )
        for key, allowed in (("net_arch", ([], None)), ("ortho_init", (False,)), ("use_sde", (False,))):
            if key in kwargs and kwargs[key] not in allowed:
                raise ValueError(
                    f"TransformerPolicy does not support {key}={kwargs[key]!r} (the heads sit on the transformer)"
                )
            kwargs.pop(key, None)
        for key in ("features_extractor_class", "features_extractor_kwargs"):
            if key in kwargs:
                raise ValueError(
                    f"TransformerPolicy sets {key} itself; pass size=, pretrained=, config=, dropout="
                )
        self._transformer_kwargs = {
            "size": size,
            "pretrained": pretrained,
            "config": config,
            "dropout": dropout,
        }
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
        for key in (
            "net_arch",
            "ortho_init",
            "use_sde",
            "features_extractor_class",
            "features_extractor_kwargs",
        ):
            data.pop(key, None)
        data.update(
            size=None,
            pretrained=None,
            config=self.transformer.cfg.to_dict(),
            dropout=self.transformer.cfg.dropout,
        )
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
        return self._logits(self.pi_features_extractor(obs))

    def _logits(self, features: th.Tensor) -> th.Tensor:
        # net_arch is empty (checked at construction), so the action head reads the features directly
        return th.cat([self.transformer.head(features)[:, :N_OUT], self.action_net(features)], dim=1)

    # measures.internal's InternalModel protocol: the actor's transformer with the trained action head
    def internal_sites(self) -> list[str]:
        """The actor transformer's sites (:meth:`SplitSeqTransformer.internal_sites`)."""
        return self.transformer.internal_sites()

    def input_embeddings(self, idx: th.Tensor) -> th.Tensor:
        """The actor transformer's token plus position embeddings ``(B, 20, C)``."""
        return self.transformer.input_embeddings(idx)

    def logits_from_embeddings(self, emb: th.Tensor, edits: Mapping[str, Edit] | None = None) -> th.Tensor:
        """:meth:`next_token_logits` from input embeddings, with the transformer's site edits."""
        return self._logits(self.transformer.features_from_embeddings(emb, edits))

    @classmethod
    def kwargs_from_saved(cls, policy_kwargs: dict[str, Any], policy_state: dict[str, Any]) -> dict[str, Any]:
        """``policy_kwargs`` that rebuild a saved policy from its own ``state_dict`` (no checkpoint needed)."""
        extra = policy_state.get("features_extractor._extra_state") or policy_state.get(
            "pi_features_extractor._extra_state"
        )
        if extra is None:
            raise CheckpointError("the saved TransformerPolicy has no transformer config in its state_dict")
        kwargs = {k: v for k, v in policy_kwargs.items() if k not in ("size", "pretrained", "config")}
        kwargs["config"] = dict(extra["config"])
        kwargs["dropout"] = kwargs["config"]["dropout"]
        return kwargs


def action_logits(policy: BasePolicy, obs: th.Tensor) -> th.Tensor:
    """Raw action logits ``(B, 8)`` of an SB3 actor-critic policy with a categorical action distribution."""
    if not isinstance(policy, ActorCriticPolicy) or not isinstance(
        policy.action_dist, CategoricalDistribution
    ):
        raise TypeError(
            f"expected an SB3 ActorCriticPolicy with a Discrete action space (PPO, A2C), got {type(policy).__name__}"
        )
    if isinstance(policy, TransformerPolicy):
        features = policy.pi_features_extractor(obs)
    else:
        features = BaseModel.extract_features(policy, obs, policy.pi_features_extractor)
    return policy.action_net(policy.mlp_extractor.forward_actor(features))


__all__ = ["TransformerPolicy", "action_logits"]
