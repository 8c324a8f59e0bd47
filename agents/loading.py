"""``agents.load(path)``: any trained agent of this project as a policy, from its file.

The top of ``agents``' policy stack: it sits on :mod:`agents.policy` (the protocol and the transformer as a
policy), :mod:`agents.checkpoint` and :mod:`agents.sb3` (imported only when a ``.zip`` is loaded: it pulls
in Stable-Baselines3).
"""

from __future__ import annotations

import os
from pathlib import Path

from agents.checkpoint import load_model
from agents.policy import AgentPolicy, PolicyBase


def load(path: str | os.PathLike) -> PolicyBase:
    """Load a trained agent as a policy ``measures.measure`` accepts, with SB3-style ``predict``.

    ``.pt`` checkpoints of this project give a :class:`~agents.policy.AgentPolicy`; Stable-Baselines3 ``.zip``
    files go through :func:`agents.sb3.load_sb3` (an :class:`~agents.sb3.SB3Policy`). A missing, corrupt or
    mismatched file raises :class:`~agents.checkpoint.CheckpointError`.
    """
    path = Path(path)
    if path.suffix == ".zip":
        from agents.sb3 import load_sb3

        return load_sb3(path)
    model, ckpt = load_model(path)
    return AgentPolicy(model, {**ckpt["meta"], "kind": ckpt["kind"], "path": str(path)})


__all__ = ["load"]
