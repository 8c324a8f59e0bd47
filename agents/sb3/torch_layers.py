"""The SplitSeq transformer as an SB3 features extractor, and how it is built.

* **Observations.** SB3 one-hot encodes ``MultiDiscrete`` observations before the features extractor
  (``(B, 320)`` floats). :class:`~agents.sb3.policies.TransformerPolicy` skips that step and hands the
  ``(B, 20)`` token ids straight to the transformer (measured: the one-hot plus the argmax back cost 15-40% of
  a tiny model's forward pass at batch 64-256). :class:`TransformerExtractor` still accepts SB3's one-hot (it
  recovers the ids by an exact argmax over each 16-block, checking that each block is one-hot), so it also
  works as ``features_extractor_class`` inside SB3's own policies.
* **Dropout off** (``dropout=0.0`` by default, whatever the checkpoint was pretrained with). SB3 collects
  rollouts in eval mode and updates in train mode: with dropout the PPO ratio ``pi_new / pi_old`` would be
  a ratio of two differently-noised networks, not 1 at the first minibatch, and clipping would fire on
  noise. ``dropout=`` can be set explicitly to study that.
* **Architecture in the state_dict.** The transformer's config is module extra state of
  :class:`TransformerExtractor`, so a saved policy is rebuilt from its zip alone (:mod:`agents.sb3.save_util`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

from agents.checkpoint import CheckpointError, load_model
from agents.transformer import SIZES, SplitSeqTransformer, TransformerConfig, config_for
from seqenv.sequence import CONTEXT, VOCAB

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
        raise ValueError(
            f"expected a batch of observations (B, {context}) or (B, {context * vocab}), got {tuple(obs.shape)}"
        )
    if obs.shape[1] == context and not obs.is_floating_point():
        ids = obs.long()
        if ids.numel() and (ids.min() < 0 or ids.max() >= vocab):
            raise ValueError(
                f"token ids must be in 0..{vocab - 1}, got min {int(ids.min())}, max {int(ids.max())}"
            )
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
        return self.model.features(
            tokens_from_observation(observations, self.model.cfg.context, self.model.cfg.vocab)
        )

    # The architecture travels inside the state_dict, so a saved policy can be rebuilt from its zip alone.
    def get_extra_state(self) -> dict[str, Any]:
        return {"config": self.model.cfg.to_dict(), "pretrained": self.source["pretrained"]}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        saved = TransformerConfig(**state["config"])
        if _arch(saved) != _arch(self.model.cfg):
            raise ValueError(
                f"saved transformer has architecture {_arch(saved)}, this policy {_arch(self.model.cfg)}"
            )


__all__ = ["TransformerExtractor", "build_transformer", "tokens_from_observation"]
