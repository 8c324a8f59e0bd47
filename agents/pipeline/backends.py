"""Where units run: in this process, in a local process pool, or as Ray tasks.

Every backend has the same small interface: ``slots`` (units in flight at once), ``placement`` (where the
units' models run, in words), ``submit(root, unit, sweep) -> future``, ``wait(futures) -> finished
futures``, ``result(future) -> timing record``, ``close()`` and ``abort()``. Each runs
:func:`agents.pipeline.units.execute`, which workers import from the installed package.

**Devices.** The local backends spread the units that run a model (:data:`~agents.pipeline.units.MODEL_UNITS`)
over the sweep's devices (:func:`local_devices`: with ``device="auto"`` or ``"cuda"`` every GPU this process
sees): each goes to the device with the fewest units in flight, the lowest index on a tie, so units take the
GPUs in turn (:class:`DevicePlacer`). Ray places them itself: a model unit requests ``num_gpus`` (a share of
a GPU, e.g. 0.25 runs four units per GPU) and runs on the GPU Ray gives it.

``abort()`` is for an interrupted sweep (Ctrl-C, SIGTERM): it stops the units in flight at once instead of
waiting for them (a unit can train for minutes), and returns within seconds with every worker gone. Units
write their outputs atomically, so a stopped unit leaves at most a temporary file, which the next run
removes before it resumes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import traceback
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_futures
from multiprocessing import get_context
from typing import Any

from agents.parent_watch import watch_parent
from agents.pipeline.plan import Unit
from agents.pipeline.units import MODEL_UNITS, execute
from agents.runtime import cuda_count, resolve_device

#: the backends :func:`agents.pipeline.sweep.run_sweep` knows
BACKENDS: tuple[str, ...] = ("local", "ray")


#: seconds an aborted worker gets to exit after SIGTERM before it is killed
ABORT_GRACE_S = 3.0


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT in this (main) thread for the block; elsewhere, do nothing."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: signals are not ours to set
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def local_devices(spec: str) -> list[str]:
    """The devices a local backend spreads model units over, for the sweep's ``device`` setting: every GPU
    this process sees for ``"auto"`` (else MPS, else the CPU) and ``"cuda"``, else the one device named.

    :raises ValueError: the device is not available here (:func:`agents.runtime.resolve_device`).
    """
    if spec in ("auto", "cuda") and cuda_count():
        return [f"cuda:{i}" for i in range(cuda_count())]
    return [str(resolve_device(spec))]


class DevicePlacer:
    """Puts each model unit on the device with the fewest units in flight (the lowest index on a tie, so units
    take the devices in turn); other units get ``None`` (:func:`~agents.pipeline.units.execute` runs them on
    the CPU).

    :param devices: the devices, e.g. ``["cuda:0", "cuda:1"]`` or ``["cpu"]``.
    """

    def __init__(self, devices: list[str]):
        self.devices = list(devices)
        self.busy = dict.fromkeys(self.devices, 0)

    def take(self, unit: Unit) -> str | None:
        """The device of ``unit`` (counted as busy until :meth:`release`)."""
        if unit.kind not in MODEL_UNITS:
            return None
        device = min(self.devices, key=lambda d: (self.busy[d], self.devices.index(d)))
        self.busy[device] += 1
        return device

    def release(self, device: str | None) -> None:
        """A unit on ``device`` finished."""
        if device is not None:
            self.busy[device] -= 1

    def __str__(self) -> str:
        return ",".join(self.devices)


class InlineBackend:
    """Runs each unit in this process when it is submitted (``--workers 1``).

    :param devices: the devices of the model units (:func:`local_devices`).
    """

    slots = 1

    def __init__(self, devices: list[str] | None = None):
        self.placer = DevicePlacer(devices or ["cpu"])
        self.placement = str(self.placer)

    def submit(self, root: str, unit: Unit, sweep: dict) -> Future:
        fut: Future = Future()
        device = self.placer.take(unit)
        try:
            fut.set_result(execute(root, unit, sweep, device))
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt):
                raise
            e.__traceback_text__ = traceback.format_exc()  # type: ignore[attr-defined]
            fut.set_exception(e)
        finally:
            self.placer.release(device)
        return fut

    def wait(self, pending: Iterable[Future]) -> set[Future]:
        return {f for f in pending if f.done()}

    def result(self, fut: Future) -> dict:
        return fut.result()

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class PoolBackend:
    """A local process pool (spawned workers, each watching the sweep process).

    :param workers: processes.
    :param devices: the devices the model units are spread over (:class:`DevicePlacer`).
    """

    def __init__(self, workers: int, devices: list[str] | None = None):
        self.slots = workers
        self.placer = DevicePlacer(devices or ["cpu"])
        self.placement = str(self.placer)
        self.placed: dict[Future, str | None] = {}
        self.pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=get_context("spawn"),
            initializer=watch_parent,
            initargs=(os.getpid(),),
        )

    def submit(self, root: str, unit: Unit, sweep: dict) -> Future:
        # workers start inside submit; they inherit an ignored SIGINT, so a Ctrl-C while one is still
        # importing cannot print its traceback (after start-up they ignore it themselves: _watch_parent)
        device = self.placer.take(unit)
        with _sigint_ignored():
            fut = self.pool.submit(execute, root, unit, sweep, device)
        self.placed[fut] = device
        return fut

    def wait(self, pending: Iterable[Future]) -> set[Future]:
        done, _ = wait_futures(list(pending), return_when=FIRST_COMPLETED)
        return set(done)

    def result(self, fut: Future) -> dict:
        self.placer.release(self.placed.pop(fut, None))
        return fut.result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def abort(self) -> None:
        """Stop now: cancel queued units, SIGTERM the workers, SIGKILL any still alive after
        :data:`ABORT_GRACE_S`, and reap them (``shutdown(wait=True)`` would wait for the running units)."""
        procs = list(getattr(self.pool, "_processes", {}).values())  # the executor's own worker handles
        self.pool.shutdown(wait=False, cancel_futures=True)
        stop_processes(procs, ABORT_GRACE_S)
        # with every worker gone this returns at once; it lets the executor release its queues and
        # semaphores (else multiprocessing's resource tracker warns about them as the process exits)
        self.pool.shutdown(wait=True)


def stop_processes(procs: list[Any], grace: float) -> None:
    """SIGTERM ``procs`` (``multiprocessing.Process``), then SIGKILL those alive after ``grace`` seconds."""
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + grace
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(1.0)


class RayBackend:
    """Units as Ray tasks (``num_cpus = threads`` each) on the running Ray instance, or a new local one.

    The sweep directory must be visible to every node (a shared file system) for a multi-node cluster, and
    every node needs ``splitseq`` installed (workers import :mod:`agents.pipeline.units`).

    :param device: the sweep's ``device``: ``"auto"`` uses the cluster's GPUs if it has any, ``"cuda"``
        requires them, ``"cpu"`` never asks for one; Ray chooses the GPU (so no ``cuda:<i>``).
    :param gpus_per_unit: the share of a GPU each model unit requests (``num_gpus``, e.g. 0.25); default 1
        when GPUs are used. A task without a GPU share sees no GPU (Ray hides them).
    """

    def __init__(
        self,
        workers: int | None,
        threads: int,
        address: str | None = None,
        device: str = "auto",
        gpus_per_unit: float | None = None,
    ):
        if device.startswith("cuda:"):
            raise ValueError(
                f"device {device!r} with --backend ray: Ray chooses each unit's GPU; use --device cuda or auto"
            )
        try:
            import ray
        except ImportError:
            raise RuntimeError(
                "--backend ray needs Ray: pip install 'splitseq[ray]' (or pip install ray)"
            ) from None
        self.ray = ray
        self.started = False
        if not ray.is_initialized():
            ray.init(
                address=address,
                num_cpus=None if address else workers,
                include_dashboard=False,
                log_to_driver=False,
            )
            self.started = True
        remote = ray.remote(execute)
        self.task = remote.options(num_cpus=threads, max_retries=0)
        self.pending: set[Any] = set()
        resources = ray.cluster_resources()
        cpus = int(resources.get("CPU", 1))
        self.slots = workers or max(1, cpus // threads)
        try:
            self.gpus = ray_gpu_share(device, gpus_per_unit, float(resources.get("GPU", 0)))
        except ValueError:
            self.close()
            raise
        # a model unit with a GPU share runs on the GPU Ray gives it (the only one its task sees); without
        # one, "auto" finds no GPU in the task (Ray hides them) and runs on the CPU (or MPS)
        self.gpu_task = (
            remote.options(num_cpus=threads, num_gpus=self.gpus, max_retries=0) if self.gpus else None
        )
        self.device = "cuda" if self.gpus else device
        self.placement = f"ray: {self.gpus:g} GPU per unit" if self.gpus else f"ray: {device}"

    def submit(self, root: str, unit: Unit, sweep: dict) -> Any:
        if unit.kind in MODEL_UNITS and self.gpu_task is not None:
            ref = self.gpu_task.remote(root, unit, sweep, self.device)
        else:
            ref = self.task.remote(root, unit, sweep, self.device if unit.kind in MODEL_UNITS else None)
        self.pending.add(ref)
        return ref

    def wait(self, pending: Iterable[Any]) -> set[Any]:
        done, _ = self.ray.wait(list(pending), num_returns=1)
        return set(done)

    def result(self, ref: Any) -> dict:
        self.pending.discard(ref)
        return self.ray.get(ref)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()

    def abort(self) -> None:
        """Stop now: force-cancel the tasks in flight (Ray kills their workers), then shut down a Ray
        instance this backend started."""
        for ref in list(self.pending):
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - finished or already gone: nothing left to stop
                pass
        self.pending.clear()
        self.close()


def ray_gpu_share(device: str, gpus_per_unit: float | None, cluster_gpus: float) -> float:
    """The ``num_gpus`` of a model unit under Ray: 0 for ``device="cpu"`` or ``"mps"``; ``gpus_per_unit``
    (default 1) when the cluster has GPUs and ``device`` is ``"auto"`` or ``"cuda"``.

    :raises ValueError: ``"cuda"`` or a GPU share asked for on a cluster without GPUs.
    """
    if device in ("cpu", "mps"):
        if gpus_per_unit:
            raise ValueError(f"--gpus-per-unit {gpus_per_unit:g} with device {device!r}: drop one of them")
        return 0.0
    if cluster_gpus <= 0:
        if device == "cuda" or gpus_per_unit:
            raise ValueError(
                "the Ray cluster has no GPUs (ray.cluster_resources() lists none); use --device cpu or auto"
            )
        return 0.0
    return 1.0 if gpus_per_unit is None else float(gpus_per_unit)


def make_backend(
    backend: str,
    workers: int | None,
    threads: int,
    n_units: int,
    address: str | None = None,
    device: str = "auto",
    gpus_per_unit: float | None = None,
) -> Any:
    """The backend for ``n_units`` units: Ray, this process (one worker), or a pool of ``workers``.

    :param device: the sweep's ``device`` (:class:`~agents.pipeline.config.SweepConfig`).
    :param gpus_per_unit: Ray only: each model unit's GPU share (:func:`ray_gpu_share`).
    """
    if backend == "ray":
        return RayBackend(workers, threads, address, device, gpus_per_unit)
    if gpus_per_unit is not None:
        raise ValueError(
            "--gpus-per-unit is for --backend ray; the local pool spreads the units over the GPUs itself"
        )
    devices = local_devices(device)
    if (workers or 1) == 1:
        return InlineBackend(devices)
    return PoolBackend(min(workers or 1, n_units), devices)
