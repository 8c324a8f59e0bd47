"""Where units run: in this process, in a local process pool, or as Ray tasks.

Every backend has the same small interface: ``slots`` (units in flight at once), ``submit(root, unit,
sweep) -> future``, ``wait(futures) -> finished futures``, ``result(future) -> timing record``, ``close()``
and ``abort()``. Each runs :func:`agents.pipeline.units.execute`, which workers import from the installed
package.

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
from agents.pipeline.units import execute

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


class InlineBackend:
    """Runs each unit in this process when it is submitted (``--workers 1``)."""

    slots = 1

    def submit(self, root: str, unit: Unit, sweep: dict) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(execute(root, unit, sweep))
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt):
                raise
            e.__traceback_text__ = traceback.format_exc()  # type: ignore[attr-defined]
            fut.set_exception(e)
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
    """A local process pool (spawned workers, each watching the sweep process)."""

    def __init__(self, workers: int):
        self.slots = workers
        self.pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=get_context("spawn"),
            initializer=watch_parent,
            initargs=(os.getpid(),),
        )

    def submit(self, root: str, unit: Unit, sweep: dict) -> Future:
        # workers start inside submit; they inherit an ignored SIGINT, so a Ctrl-C while one is still
        # importing cannot print its traceback (after start-up they ignore it themselves: _watch_parent)
        with _sigint_ignored():
            return self.pool.submit(execute, root, unit, sweep)

    def wait(self, pending: Iterable[Future]) -> set[Future]:
        done, _ = wait_futures(list(pending), return_when=FIRST_COMPLETED)
        return set(done)

    def result(self, fut: Future) -> dict:
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
    """

    def __init__(self, workers: int | None, threads: int, address: str | None = None):
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
        self.task = ray.remote(execute).options(num_cpus=threads, max_retries=0)
        self.pending: set[Any] = set()
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.slots = workers or max(1, cpus // threads)

    def submit(self, root: str, unit: Unit, sweep: dict) -> Any:
        ref = self.task.remote(root, unit, sweep)
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


def make_backend(
    backend: str, workers: int | None, threads: int, n_units: int, address: str | None = None
) -> Any:
    """The backend for ``n_units`` units: Ray, this process (one worker), or a pool of ``workers``."""
    if backend == "ray":
        return RayBackend(workers, threads, address)
    if (workers or 1) == 1:
        return InlineBackend()
    return PoolBackend(min(workers or 1, n_units))
