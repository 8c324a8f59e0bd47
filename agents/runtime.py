"""Where and how a run computes: its device, its numeric precision and its torch threads.

* **Device** (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:<i>"``, ``"mps"``): :func:`check_device` checks the
  spelling (configs call it, so a config can be written on a machine without the device), :func:`resolve_device`
  checks that the device is there and returns the ``torch.device``; ``"auto"`` is the first CUDA device if
  there is one, else MPS if available, else the CPU. Models live on the device; the data stays numpy on the
  CPU and moves there in batches; checkpoints always hold CPU tensors.
* **Precision** (``"fp32"``, ``"bf16"``): :func:`autocast` is ``torch.autocast(device, bfloat16)`` for bf16
  (forward pass and loss; weights, gradients, optimizer state and the loss value stay fp32) and nothing at
  all for fp32, so the default path computes exactly what it computed before devices existed.
  :func:`bf16_warning` names a device without native bf16 arithmetic, where autocast is emulated and slow.
* **Threads**: :func:`choose_threads` is the rule of the single-run commands when ``--threads`` is not given
  (one thread where a second measured < 1.5x, else the idle CPUs, at most :data:`MAX_AUTO_THREADS`).
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import re
from typing import Any

import torch

#: the device names a config or ``--device`` accepts (``cuda:<index>`` for any index)
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "cuda:<index>", "mps")
#: the numeric precisions of training (``--precision``)
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
#: CPU flags of native bf16 arithmetic (x86: AVX512-BF16, AMX-BF16; Arm: BF16)
BF16_CPU_FLAGS: tuple[str, ...] = ("avx512_bf16", "amx_bf16", "bf16")

_DEVICE_RE = re.compile(r"(auto|cpu|mps|cuda)(?::(\d+))?")


# ------------------------------------------------------------------------------------------------ devices
def check_device(value: Any, name: str = "device") -> str:
    """``value`` if it is spelled as a device (:data:`DEVICES`); ``ValueError`` naming it otherwise.

    Whether the device exists here is :func:`resolve_device`'s question.
    """
    m = _DEVICE_RE.fullmatch(value) if isinstance(value, str) else None
    if m is None or (m.group(2) is not None and m.group(1) != "cuda"):
        raise ValueError(
            f"unknown {name} {value!r}; expected auto, cpu, cuda, cuda:<index> (e.g. cuda:0) or mps"
        )
    return value


def cuda_count() -> int:
    """The CUDA devices this process sees (0 without CUDA)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def mps_available() -> bool:
    """Whether Apple's MPS backend is usable."""
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _no_cuda_reason() -> str:
    if torch.version.cuda is None:
        return f"this PyTorch ({torch.__version__}) is built without CUDA"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return "no GPU is visible" + (f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else "")


def resolve_device(spec: str | torch.device = "auto", name: str = "device") -> torch.device:
    """The ``torch.device`` of ``spec`` (:data:`DEVICES`), checked to exist here.

    ``"auto"``: the current CUDA device if CUDA is available, else MPS if available, else the CPU.

    :raises ValueError: an unknown name, CUDA or MPS asked for but not available, a CUDA index out of range.
    """
    text = check_device(str(spec) if isinstance(spec, torch.device) else spec, name)
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("mps") if mps_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        if not mps_available():
            raise ValueError(
                f"{name} 'mps' asked for, but MPS (Apple GPU) is not available here; use cpu or auto"
            )
        return torch.device("mps")
    if not torch.cuda.is_available():
        raise ValueError(
            f"{name} {text!r} asked for, but CUDA is not available: {_no_cuda_reason()}; use cpu or auto"
        )
    n = torch.cuda.device_count()
    index = torch.cuda.current_device() if text == "cuda" else int(text.split(":")[1])
    if index >= n:
        raise ValueError(
            f"{name} {text!r} asked for, but this process sees {n} CUDA device{'s' * (n != 1)} "
            f"(cuda:0 .. cuda:{n - 1}); expected an index below {n}"
        )
    return torch.device("cuda", index)


def device_name(device: torch.device) -> str:
    """A human name of ``device``: the GPU's model, or the CPU's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    return _cpu_info().get("model name") or platform.processor() or platform.machine()


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of ``model``'s parameters."""
    return next(model.parameters()).device


def device_rng_state(device: torch.device) -> dict[str, Any]:
    """The state of ``device``'s own generator (dropout and sampling on a GPU draw from it, not from the
    CPU's), as plain data for a train state: ``{}`` on the CPU."""
    if device.type == "cuda":
        return {"device_rng": {"type": "cuda", "state": torch.cuda.get_rng_state(device)}}
    if device.type == "mps":
        return {"device_rng": {"type": "mps", "state": torch.mps.get_rng_state()}}
    return {}


def set_device_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore :func:`device_rng_state` from a train ``state`` if it was saved on a device of this type (a run
    resumed on another kind of device continues, but not bit-identically)."""
    saved = state.get("device_rng")
    if not saved or saved["type"] != device.type:
        return
    if device.type == "cuda":
        torch.cuda.set_rng_state(saved["state"], device)
    elif device.type == "mps":
        torch.mps.set_rng_state(saved["state"])


# ---------------------------------------------------------------------------------------------- precision
def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The context of a forward pass and its loss: ``torch.autocast(device.type, torch.bfloat16)`` for
    ``"bf16"`` (matmuls in bf16, reductions and losses in fp32 by autocast's rules), nothing for ``"fp32"``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ValueError(f"unknown precision {precision!r}; expected one of {list(PRECISIONS)}")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _cpu_info() -> dict[str, str]:
    """The first processor's fields of ``/proc/cpuinfo`` (empty where there is none)."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                info[key.strip()] = value.strip()
    except OSError:
        pass
    return info


def cpu_has_native_bf16() -> bool | None:
    """Whether the CPU has bf16 arithmetic (:data:`BF16_CPU_FLAGS` in ``/proc/cpuinfo``); None if unknown."""
    info = _cpu_info()
    flags = info.get("flags") or info.get("Features")
    if flags is None:
        return None
    return bool(set(flags.split()) & set(BF16_CPU_FLAGS))


def bf16_warning(device: torch.device, precision: str) -> str | None:
    """A warning when ``precision="bf16"`` runs on a device without native bf16 (emulated: slower than fp32)."""
    if precision != "bf16":
        return None
    if device.type == "cpu" and cpu_has_native_bf16() is False:
        return (
            f"bf16 asked for on a CPU without native bf16 ({device_name(device)}: none of "
            f"{', '.join(BF16_CPU_FLAGS)}); autocast emulates it and is likely slower than fp32"
        )
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return f"bf16 asked for on {device_name(device)}, which has no native bf16; expect it to be slow"
    return None


# ------------------------------------------------------------------------------------------------ threads
#: Speed-up of a full fp32 training step (batch 256, AdamW, fresh data) from 1 to 2 torch threads per size:
#: ``python scripts/bench_training.py`` on the project's 2-core machine (AMD EPYC) with nothing else running
#: (docs: Benchmarks, training throughput; recorded by commit ``19fc88a``). The same script under load (load
#: average 5.5-6.6 on 2 cores) measured 0.13-0.29x for a second thread, fp32 and bf16 alike: hence idle CPUs
#: only. bf16 was not measured on an idle machine; its matmuls are faster, so its gain is likely smaller than
#: fp32's, which stands in for it.
TWO_THREAD_SPEEDUP: dict[str, float] = {"tiny": 1.33, "small": 1.43, "medium": 1.54, "large": 1.62}
#: a second thread must bring at least this speed-up to be worth taking from other work
MIN_THREAD_GAIN = 1.5
#: the most threads the rule gives a run (beyond 2 threads nothing was measured: a cap, not a result)
MAX_AUTO_THREADS = 4


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def load_average() -> float:
    """The 1-minute load average (0 where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def choose_threads(size: str | None, device: torch.device, precision: str = "fp32") -> tuple[int, str]:
    """Torch threads for one run when none were asked for, and why (one line's worth of text).

    One thread on a GPU (the CPU only feeds it), for models without a measured gain (custom sizes, no
    model) and for sizes where a second thread measured below :data:`MIN_THREAD_GAIN` in
    :data:`TWO_THREAD_SPEEDUP` (fp32's gain, for bf16 too); otherwise the idle CPUs (usable CPUs less the load average, rounded), at
    least 1 and at most :data:`MAX_AUTO_THREADS`. ``OMP_NUM_THREADS`` in the environment wins over the rule.
    """
    if os.environ.get("OMP_NUM_THREADS", "").strip().isdigit():
        n = max(1, int(os.environ["OMP_NUM_THREADS"]))
        return n, f"OMP_NUM_THREADS={n} is set"
    if device.type != "cpu":
        return 1, f"the model runs on {device}; one CPU thread feeds it"
    gain = TWO_THREAD_SPEEDUP.get(size or "")
    if gain is None:
        return 1, "no measured gain from a second thread for this model"
    what = f"{size}: a second thread measured {gain:.2f}x" + (" in fp32" if precision != "fp32" else "")
    if gain < MIN_THREAD_GAIN:
        return 1, f"{what}, below {MIN_THREAD_GAIN}x"
    cpus, load = usable_cpus(), load_average()
    idle = max(0, math.floor(cpus - load + 0.5))
    n = max(1, min(idle, MAX_AUTO_THREADS))
    return n, f"{what}; {idle} of {cpus} CPUs idle (load average {load:.1f}), at most {MAX_AUTO_THREADS}"


__all__ = [
    "DEVICES",
    "MAX_AUTO_THREADS",
    "MIN_THREAD_GAIN",
    "PRECISIONS",
    "TWO_THREAD_SPEEDUP",
    "autocast",
    "bf16_warning",
    "check_device",
    "choose_threads",
    "cpu_has_native_bf16",
    "cuda_count",
    "device_name",
    "device_rng_state",
    "model_device",
    "resolve_device",
    "set_device_rng_state",
]
