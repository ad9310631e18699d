"""A bounded hand-off from the serving path to one writer thread, for logs that must never slow a request.

Request logs (``request_log.py``) and the access log (``access_log.py``) produce an item per call on
the event loop; encoding and writing it (protobuf serialization, CRCs, file I/O that a slow disk can
stall for seconds) happen on a thread of their own. :meth:`BackgroundWriter.offer` takes a lock
held only for a deque operation, never waits for the writer, and when the queue is full (by items
or by bytes) drops the item and counts it: a disk that stops does not grow memory or stall the loop.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Final, Generic, TypeVar

from mlsrv.server.log_limits import RateLimitedLog, one_line

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The writer wakes at least this often when idle, to flush what it buffered.
IDLE_FLUSH_S: Final = 1.0


class BackgroundWriter(Generic[T]):
    """Items offered on any thread are handed, in order and in batches, to ``write`` on one thread.

    ``write(batch)`` gets every item queued since the last call; ``flush()`` runs whenever the queue
    is empty (and at least every :data:`IDLE_FLUSH_S`), so what was written reaches the file soon
    without a flush per item. An exception from either is logged (rate-limited) and counted in
    :attr:`failed`; the thread goes on with the next batch.
    """

    def __init__(
        self,
        name: str,
        write: Callable[[Sequence[T]], None],
        *,
        max_items: int,
        max_bytes: int,
        flush: Callable[[], None] = lambda: None,
        close: Callable[[], None] = lambda: None,
    ) -> None:
        self._write = write
        self._flush = flush
        self._close = close
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._queue: collections.deque[T] = collections.deque()
        #: items and bytes queued or being written: what the bounds count
        self._held_items = 0
        self._held_bytes = 0
        self._wake = threading.Condition(threading.Lock())
        self._closing = False
        self._errors = RateLimitedLog(log)
        #: items refused because the queue was full, and batches whose write raised
        self.dropped = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def offer(self, item: T, size: int) -> bool:
        """Queue ``item`` (``size``: the bytes it holds alive) unless the queue is full; never waits."""
        with self._wake:
            if self._closing or self._held_items >= self._max_items or self._held_bytes + size > self._max_bytes:
                self.dropped += 1
                return False
            self._queue.append(item)
            self._held_items += 1
            self._held_bytes += size
            if len(self._queue) == 1:  # the writer may be waiting for work
                self._wake.notify()
        return True

    @property
    def held(self) -> tuple[int, int]:
        """Items and bytes queued or being written now."""
        return self._held_items, self._held_bytes

    def close(self, timeout_s: float) -> bool:
        """Write what is queued (within ``timeout_s``), flush, close; whether the thread finished."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _run(self) -> None:
        """Take everything queued, write it, and only then release its share of the bounds: the
        memory a batch holds counts until it is written."""
        written_items = written_bytes = 0
        while True:
            with self._wake:
                self._held_items -= written_items
                self._held_bytes -= written_bytes
                if not self._queue and not self._closing:
                    self._wake.wait(IDLE_FLUSH_S)
                batch = list(self._queue)
                self._queue.clear()
                written_items, written_bytes = len(batch), self._held_bytes
                closing = self._closing and not batch
            if batch:
                self._guarded(self._write, batch)
                del batch
                if self._queue:
                    continue
            self._guarded(self._flush)
            if closing:
                self._guarded(self._close)
                return

    def _guarded(self, call: Callable[..., None], *args: object) -> None:
        try:
            call(*args)
        except Exception as error:  # a full disk, a removed directory: reported, never fatal
            self.failed += 1
            self._errors.error("%s: writing failed: %s", self._thread.name, one_line(error))


__all__ = ["BackgroundWriter"]
