"""Keep a process pool's workers from outliving the process that started them.

:func:`watch_parent` is the pool's initializer (:class:`agents.pipeline.backends.PoolBackend`). It lives in
this small module, away from the heavy pipeline, so that a freshly spawned worker runs it within a fraction
of a second: a worker still importing torch when the sweep's process dies would otherwise run on, unwatched,
for seconds.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time


def watch_parent(parent: int) -> None:
    """In a pool worker: leave Ctrl-C to the sweep's process (which stops the workers itself: a terminal's
    Ctrl-C reaches every process of the foreground group), and exit as soon as the sweep's process is gone
    (e.g. killed with SIGKILL), so no orphan keeps writing into the sweep directory while a resumed sweep
    runs."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # tqdm would create a multiprocessing lock here, a named semaphore that a worker stopped by abort()
    # never unlinks (multiprocessing's resource tracker then warns as the sweep exits); a worker writes its
    # progress alone, so a thread lock does
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())

    def loop() -> None:  # elsewhere (and as a second line of defence): poll for the parent
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(0.2)

    threading.Thread(target=loop, daemon=True, name="parent-watch").start()


def die_with_parent() -> None:
    """On Linux, have the kernel SIGKILL this worker the moment the sweep's process dies: a thread that
    polls for it can be starved for seconds while the worker imports torch (C code holding the GIL)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return


__all__ = ["die_with_parent", "watch_parent"]
