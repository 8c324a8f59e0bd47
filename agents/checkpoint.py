"""Checkpoints: one ``torch.save`` file per model, written atomically, validated on load.

A checkpoint is a dict::

    {"format": "splitseq/1", "kind": "pretrained" | "finetuned" | ..., "config": TransformerConfig.to_dict(),
     "model": state_dict, "meta": {...}, "train_state": {...} | None}

``train_state`` holds what resuming needs (optimizer, step, RNG states) and is optional.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from agents.transformer import SplitSeqTransformer, TransformerConfig

FORMAT = "splitseq/1"


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or not what was expected."""


def atomic_write(path: str | os.PathLike, write: Any) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_checkpoint(
    path: str | os.PathLike,
    model: SplitSeqTransformer,
    kind: str,
    meta: dict[str, Any] | None = None,
    train_state: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (its config and weights) with ``meta`` and optional ``train_state`` atomically."""
    payload = {
        "format": FORMAT,
        "kind": kind,
        "config": model.cfg.to_dict(),
        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "meta": dict(meta or {}),
        "train_state": train_state,
    }
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a checkpoint dict; raises :class:`CheckpointError` naming the problem."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, expected a checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001  torch raises several types for truncated or foreign files
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        got = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path} is not a SplitSeq checkpoint: format {got!r}, expected {FORMAT!r}")
    for key in ("kind", "config", "model", "meta"):
        if key not in ckpt:
            raise CheckpointError(f"{path} lacks {key!r}; expected keys kind, config, model, meta")
    return ckpt


def load_model(path: str | os.PathLike) -> tuple[SplitSeqTransformer, dict[str, Any]]:
    """The model of a checkpoint (in eval mode) and the checkpoint dict."""
    ckpt = load_checkpoint(path)
    try:
        cfg = TransformerConfig(**ckpt["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path} has an invalid model config {ckpt['config']!r}: {e}") from None
    model = SplitSeqTransformer(cfg)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not match its config {cfg}: {e}") from None
    model.eval()
    return model, ckpt
