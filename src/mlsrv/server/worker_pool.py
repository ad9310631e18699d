"""Worker processes for work too big for the event loop: decoding large REST bodies, encoding large responses.

Why processes, not threads: JSON parsing is C code that holds the GIL from start to end
(``orjson.loads`` of a 15 MB body: 0.45 s; 57 MB: ~1.7 s), so on a thread it still stops the loop
that serves every REST and gRPC client, by whole seconds. In a worker process it costs the loop only
the pickling of the body and of the resulting arrays (milliseconds, and releasing the GIL), and on
a multi-core host it runs beside the loop instead of taking turns with it.

The pool uses ``spawn`` (forking a process that has loaded TensorFlow is unsafe), imports only
``mlsrv.server.rest_decode`` (numpy, orjson, protobuf-free), tunes its own collector the way the
server does, and keeps its large blocks for reuse (``process_tuning.tune_codec_worker``). A worker
that dies (out of memory on an absurd body) costs that request a 503 and is replaced; the server and
its other clients are unaffected. A worker ends with the server, however the server ends.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Final, TypeVar

from mlsrv.errors import Overloaded
from mlsrv.server.log_limits import RateLimitedLog

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The collector settings of a worker: its documents are acyclic lists and dicts (see GcTuning).
_WORKER_GC_THRESHOLD: Final = (100_000, 10, 10)


def _initialize_worker(server_pid: int) -> None:
    import mlsrv.server.rest_decode  # noqa: F401  (imported once, before the first job)
    from mlsrv.server.process_tuning import tune_codec_worker

    tune_codec_worker(server_pid)
    gc.set_threshold(*_WORKER_GC_THRESHOLD)
    gc.freeze()


def _ready() -> bool:
    return True


class WorkerPool:
    """A small process pool, started in the background and replaced when a worker dies."""

    def __init__(self, workers: int = 1) -> None:
        self._workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._log = RateLimitedLog(log)

    def start(self) -> None:
        """Create the pool and start its workers in the background (their imports take ~0.5 s)."""
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self._workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_initialize_worker,
                initargs=(os.getpid(),),
            )
            for _ in range(self._workers):
                self._pool.submit(_ready)

    async def run(self, function: Callable[..., T], *args: object) -> T:
        """``function(*args)`` in a worker; its ``MlsrvError`` is raised here unchanged."""
        self.start()
        pool = self._pool
        assert pool is not None
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, function, *args)
        except BrokenProcessPool:
            self._log.error("a REST codec worker died (out of memory?); starting a new one")
            if self._pool is pool:
                pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
            raise Overloaded("The request could not be decoded: its worker process failed") from None

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
