"""Loader wrappers the Server puts around each version's loader, each adding one of TF Serving's load-time duties.

Both keep the ``Loader`` protocol (``load`` blocking on an executor thread, ``unload``), so the Manager
never knows they are there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from mlsrv.server.batching_choice import check_per_model_file
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
    """A Loader that reports each load attempt (TF's ``load_attempt_count``/``load_latency``).

    ``record_load(path, ok, micros)`` must be safe to call from the loading thread: see :func:`on_loop`.
    """

    def __init__(self, inner: Loader, path: str, record_load: Callable[[str, bool, int], None]) -> None:
        self._inner, self._path, self._record_load = inner, path, record_load

    def load(self) -> Any:
        started = time.perf_counter_ns()
        try:
            servable = self._inner.load()
        except BaseException:
            self._record_load(self._path, False, (time.perf_counter_ns() - started) // 1000)
            raise
        self._record_load(self._path, True, (time.perf_counter_ns() - started) // 1000)
        return servable

    def unload(self) -> None:
        self._inner.unload()


def on_loop(loop: asyncio.AbstractEventLoop, record: Callable[..., None]) -> Callable[..., None]:
    """``record`` called on ``loop`` (which owns ``Metrics``) from a loading thread; a no-op once the loop
    has closed, when a load outlives shutdown and there is nothing left to report to."""

    def call(*args: Any) -> None:
        try:
            loop.call_soon_threadsafe(record, *args)
        except RuntimeError:
            pass

    return call
