"""Run (or resume) a sweep: plan it, skip what is finished, run the rest on a backend, then the report.

A unit is finished when its file exists and is not older than the files it was made from, so re-running a
finished sweep does no work and re-running a killed one redoes at most the units that were in flight (and
the trainers resume those from their own checkpoints). An exclusive lock keeps two sweeps out of one
directory.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.checkpoint import atomic_write
from agents.pipeline.backends import BACKENDS, make_backend
from agents.pipeline.config import SweepConfig
from agents.pipeline.layout import LOCK_FILE, REPORT_FILE, SWEEP_FILE
from agents.pipeline.plan import Unit, plan, units_to_run
from agents.pipeline.records import git_commit, log_run, package_version, write_timings
from agents.pipeline.units import execute
from seqenv.validation import check_choice, check_number, check_positive_int


class SweepError(RuntimeError):
    """Some units of a sweep failed; the others finished (and stay finished)."""


class SweepLock:
    """An exclusive lock on the sweep directory, so two sweeps never write the same files."""

    def __init__(self, root: Path):
        self.path = root / LOCK_FILE
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = Path(self.path).read_text().strip() or "another process"
            os.close(self.fd)
            raise RuntimeError(
                f"{root} is in use by another reproduce run (pid {holder}); wait for it or stop it"
            ) from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, str(os.getpid()).encode())

    def release(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def check_sweep_file(root: Path, sweep: SweepConfig) -> None:
    """Write ``DIR/sweep.json``, or check that the one there holds the same settings."""
    path = root / SWEEP_FILE
    if path.exists():
        old = SweepConfig.from_dict(json.loads(path.read_text())).to_dict()  # added settings as they ran
        new = sweep.to_dict()
        diff = {k: (old.get(k), new.get(k)) for k in set(old) | set(new) if old.get(k) != new.get(k)}
        if diff:
            changes = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(diff.items()))
            raise ValueError(
                f"{root} holds a sweep with other settings ({changes}); use another --out, or delete {root} "
                "to start over"
            )
        return
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(sweep.to_dict(), indent=2) + "\n"))


def remove_temporaries(root: Path) -> None:
    """Delete the half-written temporary files a killed sweep leaves (``.<name>.<random>.tmp``); safe because
    the caller holds the directory's lock, so nothing else is writing them."""
    for path in root.rglob(".*.tmp*"):
        if path.is_file() and (path.name.endswith(".tmp") or path.name.endswith(".tmp.png")):
            path.unlink()


def default_workers(threads: int = 1) -> int:
    """The command line's local pool size: the CPUs this process may use, ``threads`` per unit."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // max(1, threads))


@dataclass
class SweepSummary:
    """What one call of :func:`run_sweep` did."""

    root: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    wall_s: float = 0.0


class _Log:
    """Per-unit log lines on stderr, and a progress bar when stderr is a terminal."""

    def __init__(self, progress: bool, total: int, t_start: float):
        from tqdm.auto import tqdm

        self.progress, self.t_start, self.total = progress, t_start, total
        self.tty = progress and sys.stderr.isatty()  # piped output gets the log lines only
        self.bar = tqdm(total=total, unit="unit", disable=not self.tty, dynamic_ncols=True, file=sys.stderr)
        self._write = tqdm.write

    def say(self, text: str) -> None:
        if self.tty:
            self._write(text, file=sys.stderr)
        elif self.progress:
            print(text, file=sys.stderr, flush=True)

    def done(self, n_done: int, unit: Unit, record: dict) -> None:
        self.bar.update(1)
        elapsed = time.perf_counter() - self.t_start
        self.say(
            f"  [{n_done}/{self.total}] {unit.name:<34} {record['wall_s']:8.1f} s   (elapsed {elapsed / 60:5.1f} min)"
        )


def _run_units(
    work: list[Unit], todo: list[Unit], be: Any, root: Path, sweep_d: dict, summary: SweepSummary, log: _Log
) -> set[str]:
    """Run ``work`` on backend ``be`` in dependency order; returns the units left waiting on a failure."""
    waiting = {u.name: u for u in work}
    running: dict[Any, Unit] = {}
    redo = {u.name for u in todo}
    while waiting or running:
        ready = [u for u in waiting.values() if all(d not in redo or d in summary.ran for d in u.deps)]
        for u in ready:
            if len(running) >= be.slots:
                break
            del waiting[u.name]
            log.bar.set_postfix_str(u.name)
            running[be.submit(str(root), u, sweep_d)] = u
        if not running:
            break  # everything left waits on a failed unit
        for fut in be.wait(list(running)):
            u = running.pop(fut)
            try:
                rec = be.result(fut)
            except Exception as e:  # noqa: BLE001 - a failed unit must not stop the others
                text = getattr(e, "__traceback_text__", None) or "".join(traceback.format_exception(e))
                summary.failed[u.name] = text
                log.say(f"  FAILED {u.name}: {type(e).__name__}: {e}")
                continue
            summary.ran.append(u.name)
            log.done(len(summary.ran), u, rec)
    return set(waiting)


def run_sweep(
    out: str | os.PathLike,
    sweep: SweepConfig,
    workers: int | None = None,
    backend: str = "local",
    progress: bool = True,
    ray_address: str | None = None,
    gpus_per_unit: float | None = None,
) -> SweepSummary:
    """Run (or resume) a sweep in directory ``out``.

    :param out: the sweep directory (created if needed).
    :param sweep: what to run; must match ``out/sweep.json`` when resuming.
    :param workers: units in flight at once. Local: default 1, which runs them in this process; more use a
        process pool. Ray: default as many as the cluster's CPUs allow (``threads`` CPUs per unit).
    :param backend: ``"local"`` (process pool) or ``"ray"``.
    :param progress: a log line per finished unit (and a progress bar on a terminal).
    :param ray_address: address of an existing Ray cluster (``backend="ray"``); default a local instance.
    :param gpus_per_unit: ``backend="ray"``: the GPU share (``num_gpus``, fractional allowed) each unit that
        runs a model requests; default 1 where the cluster has GPUs and ``sweep.device`` is not ``"cpu"``. The
        local backends spread those units over the GPUs instead (:mod:`agents.pipeline.backends`).
    :return: a :class:`SweepSummary`; raises :class:`SweepError` if units failed (after running the rest).
    """
    check_choice(backend, "backend", BACKENDS)
    if workers is not None:
        check_positive_int(workers, "workers")
    if gpus_per_unit is not None:
        share = check_number(gpus_per_unit, "gpus_per_unit", 0.0, strict=True, expected="a number in (0, 1]")
        if share > 1:
            raise ValueError(f"gpus_per_unit must be a number in (0, 1], got {gpus_per_unit!r}")
    root = Path(out).resolve()
    root.mkdir(parents=True, exist_ok=True)
    lock = SweepLock(root)
    t_start = time.perf_counter()
    started_at, commit = time.strftime("%Y-%m-%d %H:%M:%S"), git_commit()  # the code this invocation runs
    try:
        check_sweep_file(root, sweep)
        remove_temporaries(root)
        units = plan(sweep)
        todo = units_to_run(root, units)
        summary = SweepSummary(root, skipped=[u.name for u in units if u not in todo])
        sweep_d = sweep.to_dict()
        log = _Log(progress, len(todo), t_start)
        log.say(
            f"reproduce: {len(units)} units in {root}: {len(todo)} to run, {len(units) - len(todo)} finished already"
        )
        if not todo:
            log.bar.close()
            summary.wall_s = time.perf_counter() - t_start
            return summary
        # the report runs here, after everything else (it reads every file and draws the figures)
        work = [u for u in todo if u.kind != "report"]
        report = [u for u in todo if u.kind == "report"]
        blocked: set[str] = set()
        placement = ""
        if work:
            be = make_backend(
                backend, workers, sweep.threads, len(work), ray_address, sweep.device, gpus_per_unit
            )
            placement = be.placement
            try:
                blocked = _run_units(work, todo, be, root, sweep_d, summary, log)
            except BaseException:  # Ctrl-C, SIGTERM (raised as KeyboardInterrupt by the CLI): stop at once
                log.bar.close()
                be.abort()
                raise
            be.close()
        if not summary.failed:
            for u in report:
                try:
                    rec = execute(str(root), u, sweep_d)
                except Exception:  # noqa: BLE001 - recorded and raised as a SweepError below
                    summary.failed[u.name] = traceback.format_exc()
                    log.say(f"  FAILED {u.name}: {summary.failed[u.name].strip().splitlines()[-1]}")
                    continue
                summary.ran.append(u.name)
                log.done(len(summary.ran), u, rec)
            report = []
        log.bar.close()
        timings = write_timings(root, units)
        summary.wall_s = time.perf_counter() - t_start
        ran = timings[timings["unit"].isin(summary.ran)]
        log_run(
            root,
            {
                "started": started_at,
                "commit": commit,
                "workers": workers,
                "backend": backend,
                "device": placement,
                "precision": sweep.precision,
                "units_run": len(summary.ran),
                "units_failed": len(summary.failed),
                "wall_s": round(summary.wall_s, 2),
                "cpu_s": round(float(ran["cpu_s"].sum()), 2) if "cpu_s" in ran else float("nan"),
                "version": package_version(),
            },
        )
        log.say(
            f"reproduce: {len(summary.ran)} units in {summary.wall_s / 60:.1f} min -> {root / REPORT_FILE}"
        )
        if summary.failed:
            details = "\n\n".join(f"--- {k}\n{v}" for k, v in summary.failed.items())
            n_blocked = len(blocked) + len(report)
            waiting_txt = f"; {n_blocked} units not run because they depend on them" if n_blocked else ""
            raise SweepError(
                f"{len(summary.failed)} units failed{waiting_txt}. Rerun to retry them.\n{details}"
            )
        return summary
    finally:
        lock.release()
