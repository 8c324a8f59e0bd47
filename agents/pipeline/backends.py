"""Where units run: in this process, in a local process pool, or as Ray tasks.

Every backend has the same small interface: ``slots`` (units in flight at once), ``submit(root, unit,
sweep) -> future``, ``wait(futures) -> finished futures``, ``result(future) -> timing record`` and
``close()``. Each runs :func:`agents.pipeline.units.execute`, which workers import from the installed
package.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_futures
from multiprocessing import get_context
from typing import Any

from agents.pipeline.plan import Unit
from agents.pipeline.units import execute

#: the backends :func:`agents.pipeline.sweep.run_sweep` knows
BACKENDS: tuple[str, ...] = ("local", "ray")


def _watch_parent(parent: int) -> None:
    """In a pool worker: exit as soon as the sweep's process is gone (e.g. killed with SIGKILL), so no
    orphan keeps writing into the sweep directory while a resumed sweep runs."""

    def loop() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(0.2)

    threading.Thread(target=loop, daemon=True, name="parent-watch").start()


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


class PoolBackend:
    """A local process pool (spawned workers, each watching the sweep process)."""

    def __init__(self, workers: int):
        self.slots = workers
        self.pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=get_context("spawn"),
            initializer=_watch_parent,
            initargs=(os.getpid(),),
        )

    def submit(self, root: str, unit: Unit, sweep: dict) -> Future:
        return self.pool.submit(execute, root, unit, sweep)

    def wait(self, pending: Iterable[Future]) -> set[Future]:
        done, _ = wait_futures(list(pending), return_when=FIRST_COMPLETED)
        return set(done)

    def result(self, fut: Future) -> dict:
        return fut.result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


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
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.slots = workers or max(1, cpus // threads)

    def submit(self, root: str, unit: Unit, sweep: dict) -> Any:
        return self.task.remote(root, unit, sweep)

    def wait(self, pending: Iterable[Any]) -> set[Any]:
        done, _ = self.ray.wait(list(pending), num_returns=1)
        return set(done)

    def result(self, ref: Any) -> dict:
        return self.ray.get(ref)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def make_backend(
    backend: str, workers: int | None, threads: int, n_units: int, address: str | None = None
) -> Any:
    """The backend for ``n_units`` units: Ray, this process (one worker), or a pool of ``workers``."""
    if backend == "ray":
        return RayBackend(workers, threads, address)
    if (workers or 1) == 1:
        return InlineBackend()
    return PoolBackend(min(workers or 1, n_units))
