"""SB3 zips: the project's policy from any PPO/A2C zip on SplitSeq, PPO without its checkpoint, and export.

**Saving.** The transformer's config is part of the policy's ``state_dict`` (module extra state), so
:func:`load_sb3` and :func:`load_ppo` rebuild the policy from the zip alone, even when the pretrained
checkpoint it started from has moved. ``PPO.load`` also works while that checkpoint is still in place.

:func:`load_sb3` turns any SB3 zip with an actor-critic policy on SplitSeq (PPO/A2C, ``TransformerPolicy``
or ``MlpPolicy``) into the project's policy protocol (``action_probs``, ``predict``), which is what
``agents.load("x.zip")`` returns.

Zips pickle the policy class by its import path: zips written before ``agents.sb3`` became a package name
``agents.sb3.TransformerPolicy`` (and ``agents.sb3.TransformerExtractor``), which the package still
re-exports; zips written since name ``agents.sb3.policies.TransformerPolicy``. Both paths must stay importable.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.save_util import load_from_zip_file

from agents.checkpoint import CheckpointError, save_checkpoint
from agents.runtime import resolve_device
from agents.sb3.adapter import SB3Policy
from agents.sb3.policies import TransformerPolicy
from agents.transformer import SplitSeqTransformer
from seqenv.sequence import N_OUT


def _read_zip(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no SB3 model at {path}")
    try:
        data, params, _ = load_from_zip_file(path, device="cpu")
    except (
        ValueError,
        KeyError,
        OSError,
        RuntimeError,
        EOFError,
        zipfile.BadZipFile,
        pickle.UnpicklingError,
    ) as e:
        raise CheckpointError(
            f"{path} is not a readable Stable-Baselines3 zip ({type(e).__name__}: {e})"
        ) from None
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


def load_sb3(path: str | os.PathLike, device: str | th.device | None = None) -> SB3Policy:
    """Load an SB3 zip (PPO/A2C on SplitSeq) as the project's policy: what ``agents.load("x.zip")`` returns.

    Only the policy is rebuilt (no algorithm, no environment); a :class:`TransformerPolicy` is rebuilt from
    the config saved in the zip, without the checkpoint it was started from.

    :param path: the ``.zip`` written by ``model.save`` or ``splitseq ppo``.
    :param device: where the policy runs (:func:`agents.runtime.resolve_device`'s names); default the CPU.
    """
    data, params = _read_zip(path)
    policy_class = data["policy_class"]
    if not (isinstance(policy_class, type) and issubclass(policy_class, ActorCriticPolicy)):
        raise CheckpointError(
            f"{path}: policy class {policy_class!r} is not an SB3 ActorCriticPolicy (PPO, A2C)"
        )
    kwargs = _policy_kwargs(data, params)
    if "use_sde" in data and not issubclass(policy_class, TransformerPolicy):
        kwargs.setdefault("use_sde", data["use_sde"])
    policy = policy_class(
        data["observation_space"], data["action_space"], BasePolicy._dummy_schedule, **kwargs
    )
    try:
        policy.load_state_dict(params["policy"])
    except (RuntimeError, ValueError) as e:
        raise CheckpointError(f"{path}: saved weights do not fit {policy_class.__name__}: {e}") from None
    if device is not None:
        policy.to(resolve_device(device))
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


def export_checkpoint(
    model: BaseAlgorithm | TransformerPolicy, path: str | os.PathLike, meta: dict[str, Any] | None = None
) -> Path:
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
        out.head.weight[N_OUT:] = policy.action_net.weight.cpu()  # the policy may live on a GPU
        out.head.bias[N_OUT:] = policy.action_net.bias.cpu()
    info = {**getattr(model, "splitseq_meta", {}), **(meta or {})}
    return save_checkpoint(path, out.eval(), kind="sb3", meta=info)


__all__ = ["export_checkpoint", "load_ppo", "load_sb3"]
