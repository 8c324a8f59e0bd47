"""``agents.load(path)``: any trained agent of this project as a policy, from its file.

The top of ``agents``' policy stack: it sits on :mod:`agents.policy` (the protocol and the transformer as a
policy), :mod:`agents.checkpoint` and :mod:`agents.sb3` (imported only when a ``.zip`` is loaded: it pulls
in Stable-Baselines3).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from agents.checkpoint import load_model
from agents.policy import AgentPolicy, PolicyBase


def load(path: str | os.PathLike, device: str | torch.device | None = None) -> PolicyBase:
    """Load a trained agent as a policy ``measures.measure`` accepts, with SB3-style ``predict``.

    ``.pt`` checkpoints of this project give a :class:`~agents.policy.AgentPolicy`; Stable-Baselines3 ``.zip``
    files go through :func:`agents.sb3.load_sb3` (an :class:`~agents.sb3.SB3Policy`). A missing, corrupt or
    mismatched file raises :class:`~agents.checkpoint.CheckpointError`.

    :param device: where the model runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"auto"`` or a
        ``torch.device``); default the CPU. Whatever it trained on, a checkpoint loads on any device; the
        policy's inputs and outputs stay numpy on the CPU.
    """
    path = Path(path)
    if path.suffix == ".zip":
        from agents.sb3 import load_sb3

        return load_sb3(path, device=device)
    model, ckpt = load_model(path, device=device)
    return AgentPolicy(model, {**ckpt["meta"], "kind": ckpt["kind"], "path": str(path)})


__all__ = ["load"]
