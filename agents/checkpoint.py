"""Checkpoints: one ``torch.save`` file per model, written atomically, validated on load.

A checkpoint is a dict::

    {"format": "splitseq/1", "kind": "pretrained" | "finetuned" | ..., "config": TransformerConfig.to_dict(),
     "model": state_dict, "meta": {...}, "train_state": {...} | None}

``train_state`` holds what resuming needs (optimizer, step, generator and data-stream states) and is
optional. Everything in a checkpoint is plain data: tensors, numbers, strings, ``None``, lists, tuples and
dicts (:func:`to_plain`: numpy arrays are stored as tensors, numpy generators as their bit-generator state
dicts), so :func:`load_checkpoint` reads it with ``torch.load(..., weights_only=True)``, which runs no code
from the file. Files written before that (whose ``train_state`` pickled live objects such as the vector
environment) are refused with a message naming :func:`convert_checkpoint`, which rewrites them.
"""

from __future__ import annotations

import errno
import os
import pickle
import tempfile
import types
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.runtime import resolve_device
from agents.transformer import SplitSeqTransformer, TransformerConfig

FORMAT = "splitseq/1"


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or not what was expected."""


def _umask() -> int:
    """The process's umask: from ``/proc/self/status`` on Linux (no side effect), else by setting it and
    putting it back (the only portable way; another thread creating a file in between could see 0o022)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Any) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``: readers never see half a file.

    The file gets the permissions a plain ``open(path, "w")`` would give it (``0o666`` less the umask, e.g.
    ``rw-r--r--``), not the owner-only mode of the temporary file, so a shared directory stays readable.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def check_writable(path: str | os.PathLike) -> Path:
    """Fail now, not after hours of training, if ``path`` cannot be written: create its directory and a
    scratch file beside it (removed again). Raises the :class:`OSError` naming the path that is in the way."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)
    return path


def save_checkpoint(
    path: str | os.PathLike,
    model: SplitSeqTransformer,
    kind: str,
    meta: dict[str, Any] | None = None,
    train_state: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (its config and weights) with ``meta`` and optional ``train_state`` atomically.

    ``meta`` and ``train_state`` go through :func:`to_plain` (a ``TypeError`` names anything that is not data).
    """
    payload = {
        "format": FORMAT,
        "kind": kind,
        "config": model.cfg.to_dict(),
        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "meta": to_plain(dict(meta or {})),
        "train_state": to_plain(train_state),
    }
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a checkpoint dict; raises :class:`CheckpointError` naming the problem."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, expected a checkpoint file")
    if _is_sb3_zip(path):
        raise CheckpointError(
            f"{path} is a Stable-Baselines3 zip, expected a SplitSeq .pt checkpoint (from splitseq pretrain or "
            "finetune); agents.load and splitseq measure read SB3 zips, and splitseq ppo trains from a .pt"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        objects = _pickled_objects(path)
        if not objects:
            if not zipfile.is_zipfile(path):  # torch.save writes zip files: this one is something else
                raise CheckpointError(
                    f"{path} is not a readable checkpoint: not a file torch.save wrote (truncated, corrupt or "
                    "another format)"
                ) from None
            raise CheckpointError(f"{path} is not a readable checkpoint ({_first_line(e)})") from None
        raise CheckpointError(
            f"{path} pickles Python objects ({', '.join(objects[:4])}{', ...' if len(objects) > 4 else ''}): "
            f"it was written by an older splitseq, whose train_state held live objects, and it is not loaded "
            f"with weights_only=False because that can run code from the file. If you trust the file, "
            f"convert it once with agents.checkpoint.convert_checkpoint({str(path)!r}) (in place) or "
            f"convert_checkpoint(old, new)"
        ) from None
    except Exception as e:  # noqa: BLE001  torch raises several types for truncated or foreign files
        raise CheckpointError(f"{path} is not a readable checkpoint ({_first_line(e)})") from None
    return _validated(ckpt, path)


def _first_line(err: Exception) -> str:
    """``Type: first sentence of the message`` (torch's load errors run over paragraphs of advice)."""
    lines = str(err).strip().splitlines()
    first = lines[0].split(". ")[0].rstrip(".") if lines else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def _is_sb3_zip(path: Path) -> bool:
    """Whether ``path`` is a Stable-Baselines3 save: a zip holding ``data`` and ``policy.pth``."""
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False
    return "data" in names and "policy.pth" in names


def _validated(ckpt: Any, path: Path) -> dict[str, Any]:
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        got = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path} is not a SplitSeq checkpoint: format {got!r}, expected {FORMAT!r}")
    for key in ("kind", "config", "model", "meta"):
        if key not in ckpt:
            raise CheckpointError(f"{path} lacks {key!r}; expected keys kind, config, model, meta")
    return ckpt


def load_model(
    path: str | os.PathLike, device: str | torch.device | None = None
) -> tuple[SplitSeqTransformer, dict[str, Any]]:
    """The model of a checkpoint (in eval mode) and the checkpoint dict.

    :param device: where the model goes (a ``torch.device`` or a name :func:`agents.runtime.resolve_device`
        knows, ``"auto"`` included); default the CPU. Checkpoints hold CPU tensors, whatever they trained on.
    """
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
    if device is not None:
        model.to(resolve_device(device))
    model.eval()
    return model, ckpt


# ------------------------------------------------------------------------------------------- plain data
def to_plain(obj: Any) -> Any:
    """``obj`` as data that ``torch.load(..., weights_only=True)`` reads back: tensors, Python numbers,
    strings, ``None`` and lists, tuples and dicts of them.

    Tensors are moved to the CPU (a checkpoint loads on any device). Numpy arrays become tensors (copies,
    same dtype; :func:`numpy_arrays` turns them back), numpy scalars
    Python numbers, a ``numpy.random.Generator`` its ``bit_generator.state`` dict, and any other object with
    a ``state_dict()`` method (a vector environment, an optimizer) its converted state dict.

    :raises TypeError: naming the first object that is none of these.
    """
    if isinstance(obj, np.generic):  # before float: numpy.float64 subclasses it
        return obj.item()
    if isinstance(obj, torch.Tensor):  # a GPU run's optimizer state: saved on the CPU, loadable anywhere
        return obj if obj.device.type == "cpu" else obj.detach().cpu()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise TypeError("numpy arrays of Python objects are not plain data")
        return torch.from_numpy(obj.copy())
    if isinstance(obj, np.random.Generator):
        return obj.bit_generator.state
    if isinstance(obj, dict):
        return {key: to_plain(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(value) for value in obj)
    if callable(getattr(obj, "state_dict", None)):
        return to_plain(obj.state_dict())
    raise TypeError(
        f"{type(obj).__module__}.{type(obj).__qualname__} is not plain data and has no state_dict()"
    )


def numpy_arrays(obj: Any) -> Any:
    """``obj`` with every tensor turned into a numpy array (a copy, same dtype): the inverse of :func:`to_plain`
    for states made of numpy arrays (data streams, environments)."""
    if isinstance(obj, torch.Tensor):
        return obj.numpy().copy()
    if isinstance(obj, dict):
        return {key: numpy_arrays(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(numpy_arrays(value) for value in obj)
    return obj


def _pickled_objects(path: Path) -> list[str]:
    """The globals (classes, functions) that ``path`` needs beyond what ``weights_only=True`` allows."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # noqa: BLE001  not a zip checkpoint at all: nothing to name
        return []


# ------------------------------------------------------------------------------------ old-format files
class _Missing:
    """Stands in for a class that no longer exists while :func:`convert_checkpoint` reads an old file."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


class _TolerantUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type(name, (_Missing,), {"__module__": module})


_tolerant_pickle = types.ModuleType("splitseq_tolerant_pickle")
_tolerant_pickle.__dict__.update({k: getattr(pickle, k) for k in ("load", "loads", "UnpicklingError")})
_tolerant_pickle.Unpickler = _TolerantUnpickler  # type: ignore[attr-defined]


def convert_checkpoint(old: str | os.PathLike, new: str | os.PathLike | None = None) -> Path:
    """Rewrite a checkpoint written by an older splitseq (whose ``train_state`` pickled live objects: the
    vector environment, numpy generators) into the current, plain-data format; returns the new path.

    Only for files you trust: the old file is read with ``weights_only=False``, which can run code from it.
    Its ``train_state`` is converted with :func:`to_plain`, so an interrupted run still resumes, bit-identically,
    from the converted file. Should that fail (a class it pickled no longer exists, say), the ``train_state``
    is dropped with a warning: the weights, config and meta load as before, and the run can be restarted
    with ``resume=False``. A file that already loads is rewritten unchanged.

    :param old: the file to convert.
    :param new: where to write the result (default: over ``old``, atomically).
    """
    old = Path(old)
    new = old if new is None else Path(new)
    if not old.is_file():
        raise CheckpointError(f"no checkpoint at {old}")
    try:
        ckpt = torch.load(old, map_location="cpu", weights_only=False, pickle_module=_tolerant_pickle)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{old} is not a readable checkpoint ({type(e).__name__}: {e})") from None
    ckpt = _validated(ckpt, old)
    try:
        train_state = to_plain(ckpt.get("train_state"))
    except TypeError as e:
        warnings.warn(
            f"{old}: its train_state cannot be converted ({e}); dropped, the run cannot resume", stacklevel=2
        )
        train_state = None
    try:
        payload = {
            **ckpt,
            "meta": to_plain(ckpt["meta"]),
            "config": to_plain(ckpt["config"]),
            "train_state": train_state,
        }
    except TypeError as e:
        raise CheckpointError(f"{old}: cannot convert its meta or config ({e})") from None
    return atomic_write(new, lambda tmp: torch.save(payload, tmp))
