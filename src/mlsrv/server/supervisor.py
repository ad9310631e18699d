"""``mlsrv serve --workers N``: a small supervisor that runs N complete servers on the same ports.

Why processes: one server process has one event loop and one interpreter lock, so REST and gRPC
together use about one core however many the host has. N workers, each a complete ``mlsrv serve``
with its own models, listen on the same REST and gRPC ports (``SO_REUSEPORT``: the kernel spreads
new connections over them); what must agree across them is in ``server.siblings``.

The supervisor imports no TensorFlow and serves nothing. It:

* is started once the ports are known to be free (``server.ports``), so a busy port fails as it
  does for one process (exit 2);
* starts each worker as this same command (``python -m mlsrv.cli serve`` with the flags as given,
  without ``--workers``) with :data:`~mlsrv.server.siblings.ENV_DIR` and ``ENV_INDEX`` set, and
  logs its PID and resident memory once it is ready;
* restarts a worker that dies, after :data:`FIRST_BACKOFF_S` doubling up to :data:`MAX_BACKOFF_S`
  (back to the first once a worker stayed up :data:`STABLE_AFTER_S`), each restart logged;
* on SIGTERM or SIGINT forwards SIGTERM to every worker (each drains as one server does: readiness
  off, calls in flight finish), waits for them and exits 0;
* on SIGHUP restarts the workers one at a time, each replacement ready before the worker it
  replaces is told to stop, so the ports never have fewer than N workers serving;
* gives up at start-up if a worker exits before it was ever ready (a model that cannot load, a bad
  flag): the others are stopped and the supervisor exits with that worker's code;
* makes workers die with it (``PR_SET_PDEATHSIG``), so a killed supervisor leaves no orphans.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from mlsrv.server.siblings import ENV_DIR, ENV_INDEX, UNREACHABLE, Sibling, ask_worker, write_registry

log = logging.getLogger(__name__)

FIRST_BACKOFF_S: Final = 1.0
MAX_BACKOFF_S: Final = 30.0
STABLE_AFTER_S: Final = 60.0
#: how long a stopping worker gets before SIGKILL (its own drain is 5 s, then models unload)
STOP_TIMEOUT_S: Final = 60.0
READY_POLL_S: Final = 0.2
_PR_SET_PDEATHSIG: Final = 1


@dataclass
class Worker:
    """One worker process and its restart bookkeeping."""

    index: int
    process: asyncio.subprocess.Process
    started: float = field(default_factory=time.monotonic)
    ready: bool = False
    #: set when the supervisor itself stopped it (rolling restart, shutdown): not a death to restart
    retired: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def sibling(self) -> Sibling:
        return Sibling(self.index, self.pid)


def worker_arguments(given: Mapping[str, str | None]) -> list[str]:
    """The worker's command line: ``serve`` with every flag as the user typed it, except ``--workers``."""
    return ["serve", *(f"--{name}={value}" for name, value in given.items() if value is not None and name != "workers")]


class Supervisor:
    """Runs ``count`` workers until a signal says stop; :meth:`run` returns the exit code."""

    def __init__(self, count: int, arguments: Sequence[str], *, python: str = sys.executable) -> None:
        self.count = count
        self._command = [python, "-m", "mlsrv.cli", *arguments]
        self._directory = Path(tempfile.mkdtemp(prefix="mlsrv-workers-"))
        self._workers: dict[int, Worker] = {}
        self._stopping = asyncio.Event()
        self._rolling: asyncio.Task[None] | None = None
        #: a rolling restart's replacement while it starts (not yet in ``_workers``)
        self._replacement: Worker | None = None
        #: set whenever ``_workers`` changes, so the watch loop watches the new process too
        self._changed = asyncio.Event()
        self._backoff: dict[int, float] = {}

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._roll_soon)
        try:
            code = await self._start_all()
            if code is not None:
                return code
            self._report_memory()
            await self._watch()
            return 0
        finally:
            await self._stop_all()
            shutil.rmtree(self._directory, ignore_errors=True)

    # -- start-up --

    async def _start_all(self) -> int | None:
        """Start every worker and wait until each is ready; an exit code if one died first."""
        log.info("starting %d workers (control directory %s)", self.count, self._directory)
        for index in range(self.count):
            await self._spawn(index)
        pending = {index: asyncio.create_task(self._until_ready(worker)) for index, worker in self._workers.items()}
        stop = asyncio.create_task(self._stopping.wait())
        try:
            while pending:
                done, _ = await asyncio.wait({*pending.values(), stop}, return_when=asyncio.FIRST_COMPLETED)
                if stop in done:
                    log.info("signal received during start-up; stopping the workers")
                    return 0
                for index, task in list(pending.items()):
                    if task in done:
                        del pending[index]
                        if not task.result():
                            worker = self._workers[index]
                            code = worker.process.returncode or 1
                            log.error("worker %d (pid %d) exited with %d during start-up", index, worker.pid, code)
                            return code
            return None
        finally:
            stop.cancel()
            for task in pending.values():
                task.cancel()

    async def _spawn(self, index: int, *, listed: bool = True) -> Worker:
        """Start worker ``index``; ``listed`` puts it in the registry (and ``_workers``) at once.

        A rolling restart's replacement is listed only once ready, so siblings' readiness does not
        drop while it loads.
        """
        environment = {**os.environ, ENV_DIR: str(self._directory), ENV_INDEX: str(index)}
        process = await asyncio.create_subprocess_exec(
            *self._command, env=environment, preexec_fn=_die_with_parent, stdin=asyncio.subprocess.DEVNULL
        )
        worker = Worker(index, process)
        if listed:
            self._workers[index] = worker
            self._publish()
            self._changed.set()
        log.info("worker %d started (pid %d)", index, worker.pid)
        return worker

    def _publish(self) -> None:
        """Tell the workers who their siblings are: every worker that should be up."""
        workers = sorted((w for w in self._workers.values() if not w.retired), key=lambda w: w.index)
        write_registry(self._directory, [w.sibling() for w in workers])

    async def _until_ready(self, worker: Worker) -> bool:
        """Poll the worker's control socket until it answers ready (True) or the process ends (False)."""
        while worker.process.returncode is None:
            with contextlib.suppress(*UNREACHABLE):
                status, _ = await ask_worker(self._directory, worker.pid, "GET", "/ready", timeout_s=2)
                if status == 200:
                    worker.ready = True
                    return True
            await asyncio.sleep(READY_POLL_S)
        return False

    def _report_memory(self) -> None:
        for worker in sorted(self._workers.values(), key=lambda w: w.index):
            log.info("worker %d (pid %d) ready, resident memory %s", worker.index, worker.pid, _rss_text(worker.pid))

    # -- running --

    async def _watch(self) -> None:
        """Restart workers that die, until a stop signal."""
        stop = asyncio.create_task(self._stopping.wait())
        restarts: set[asyncio.Task[None]] = set()
        try:
            while not self._stopping.is_set():
                self._changed.clear()
                changed = asyncio.ensure_future(self._changed.wait())
                exits = {
                    asyncio.ensure_future(w.process.wait()): w for w in self._workers.values() if not w.retired
                }
                done, _ = await asyncio.wait({*exits, stop, changed}, return_when=asyncio.FIRST_COMPLETED)
                for future in [*exits, changed]:
                    future.cancel()
                for future, worker in exits.items():
                    if future in done and not worker.retired and not self._stopping.is_set():
                        worker.retired = True  # dead: out of the registry until its successor starts
                        self._publish()
                        restart = asyncio.create_task(self._restart(worker))
                        restarts.add(restart)
                        restart.add_done_callback(restarts.discard)
        finally:
            stop.cancel()
            for restart in restarts:
                restart.cancel()

    async def _restart(self, dead: Worker) -> None:
        lived = time.monotonic() - dead.started
        delay = FIRST_BACKOFF_S if lived >= STABLE_AFTER_S else self._backoff.get(dead.index, FIRST_BACKOFF_S)
        self._backoff[dead.index] = min(MAX_BACKOFF_S, delay * 2)
        log.warning(
            "worker %d (pid %d) exited with %s after %.0f s; restarting it in %.0f s",
            dead.index, dead.pid, _exit_text(dead.process.returncode), lived, delay,
        )  # fmt: skip
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)
        if self._stopping.is_set():
            return
        worker = await self._spawn(dead.index)
        await self._log_when_ready(worker, "restarted")

    async def _log_when_ready(self, worker: Worker, what: str) -> None:
        if await self._until_ready(worker):
            log.info("worker %d %s (pid %d), resident memory %s", worker.index, what, worker.pid, _rss_text(worker.pid))

    def _roll_soon(self) -> None:
        if self._rolling is not None and not self._rolling.done():
            log.info("SIGHUP: a rolling restart is already running")
            return
        self._rolling = asyncio.create_task(self._roll())

    async def _roll(self) -> None:
        """SIGHUP: replace each worker in turn; the replacement is ready before the old one stops."""
        log.info("SIGHUP: rolling restart of %d workers", len(self._workers))
        for index in sorted(self._workers):
            old = self._workers[index]
            if self._stopping.is_set() or old.retired:
                continue  # stopping, or dead and being restarted anyway
            self._replacement = replacement = await self._spawn(index, listed=False)
            ready = await self._until_ready(replacement)
            self._replacement = None
            if not ready:
                log.error("worker %d: its replacement exited with %s; keeping pid %d",
                          index, _exit_text(replacement.process.returncode), old.pid)  # fmt: skip
                return
            old.retired = True  # from here its exit is expected
            self._workers[index] = replacement
            self._publish()
            self._changed.set()
            log.info("worker %d replaced: pid %d -> %d, resident memory %s",
                     index, old.pid, replacement.pid, _rss_text(replacement.pid))  # fmt: skip
            await _stop(old)
        log.info("rolling restart done")

    # -- shutdown --

    async def _stop_all(self) -> None:
        if self._rolling is not None:
            self._rolling.cancel()
            await asyncio.gather(self._rolling, return_exceptions=True)
        workers = list(self._workers.values())
        if self._replacement is not None:
            workers.append(self._replacement)
        for worker in workers:
            worker.retired = True
        if workers:
            log.info("stopping %d workers", len(workers))
        await asyncio.gather(*(_stop(worker) for worker in workers))


async def _stop(worker: Worker) -> None:
    """SIGTERM (the worker drains), SIGKILL if it has not exited within :data:`STOP_TIMEOUT_S`."""
    if worker.process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        worker.process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(worker.process.wait(), STOP_TIMEOUT_S)
    except asyncio.TimeoutError:
        log.error("worker %d (pid %d) did not stop in %.0f s; killing it", worker.index, worker.pid, STOP_TIMEOUT_S)
        with contextlib.suppress(ProcessLookupError):
            worker.process.kill()
        await worker.process.wait()


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the supervisor dies (Linux; elsewhere a no-op)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _rss_text(pid: int) -> str:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return f"{int(line.split()[1]) / 1024:.0f} MiB"
    except (OSError, ValueError, IndexError):
        pass
    return "unknown"


def _exit_text(code: int | None) -> str:
    if code is None:
        return "no code"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
    return f"code {code}"
