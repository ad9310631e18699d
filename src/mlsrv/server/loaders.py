"""Loader wrappers the Server puts around each version's loader, each adding one of TF Serving's load-time duties.

Both keep the ``Loader`` protocol (``load`` blocking on an executor thread, ``unload``), so the Manager
never knows they are there.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from mlsrv.server.batching_choice import check_per_model_file
from mlsrv.server.metrics import Metrics
from mlsrv.server.servable import Loader


class BatchingFileCheckedLoader:
    """With ``--enable_per_model_batching_parameters``, a version whose ``batching_params.pbtxt`` does not
    parse fails to load (TF reads it while loading), instead of being served unbatched."""

    def __init__(self, inner: Loader, path: str) -> None:
        self._inner, self._path = inner, path

    def load(self) -> Any:
        check_per_model_file(self._path)
        return self._inner.load()

    def unload(self) -> None:
        self._inner.unload()


class MeteredLoader:
    """A Loader that reports each load attempt to ``Metrics`` (TF's ``load_attempt_count``/``load_latency``).

    ``load`` runs on an executor thread; the numbers are handed to the loop, which owns ``Metrics``.
    """

    def __init__(self, inner: Loader, path: str, metrics: Metrics, loop: asyncio.AbstractEventLoop) -> None:
        self._inner, self._path, self._metrics, self._loop = inner, path, metrics, loop

    def load(self) -> Any:
        started = time.perf_counter_ns()
        try:
            servable = self._inner.load()
        except BaseException:
            self._report(ok=False, started=started)
            raise
        self._report(ok=True, started=started)
        return servable

    def unload(self) -> None:
        self._inner.unload()

    def _report(self, *, ok: bool, started: int) -> None:
        micros = (time.perf_counter_ns() - started) // 1000
        try:
            self._loop.call_soon_threadsafe(self._metrics.record_load, self._path, ok, micros)
        except RuntimeError:  # the loop closed while this load ran (shutdown): nothing left to report to
            pass
