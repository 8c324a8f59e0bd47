"""How ``splitseq`` takes Ctrl-C (SIGINT) and SIGTERM: as an exception in the main thread, remembered.

:func:`agents.cli.main` installs :func:`on_signal` for both signals. It records the signal and raises
:class:`KeyboardInterrupt` (:class:`Terminated` for SIGTERM), so clean-up code runs (a sweep stops its
workers, atomic writes remove their temporary files) and the command prints one line saying how to resume.
"""

from __future__ import annotations

import signal
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C so that the same clean-up runs."""


#: the signals (SIGINT, SIGTERM) this run of :func:`main` received: an exception raised while one was being
#: handled is the interrupt, whatever C code turned it into (matplotlib reports one as "Invalid affine
#: transformation matrix")
SIGNALS_SEEN: list[int] = []


def interrupted() -> int | None:
    """The first signal this run of :func:`main` received, or None."""
    return SIGNALS_SEEN[0] if SIGNALS_SEEN else None


def on_signal(signum: int, frame: Any) -> None:
    """The handler: remember ``signum``, then raise the interrupt."""
    SIGNALS_SEEN.append(signum)
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


__all__ = ["SIGNALS_SEEN", "Terminated", "interrupted", "on_signal"]
