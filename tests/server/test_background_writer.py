"""BackgroundWriter: order, batching, bounds by items and bytes, drop-and-count, failures, close."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest

from mlsrv.server.background_writer import BackgroundWriter

WAIT_S = 10.0


class GatedSink:
    """A write that blocks until released: a stalled disk, under the test's control."""

    def __init__(self) -> None:
        self.written: list[int] = []
        self.batches: list[list[int]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.flushes = 0
        self.closed = False

    def write(self, batch: Sequence[int]) -> None:
        self.entered.set()
        assert self.release.wait(WAIT_S), "the test never released the writer"
        self.batches.append(list(batch))
        self.written.extend(batch)

    def flush(self) -> None:
        self.flushes += 1

    def close(self) -> None:
        self.closed = True


def make(sink: GatedSink, *, max_items: int = 100, max_bytes: int = 10_000) -> BackgroundWriter[int]:
    return BackgroundWriter("test-writer", sink.write, max_items=max_items, max_bytes=max_bytes,
                            flush=sink.flush, close=sink.close)  # fmt: skip


def test_items_arrive_in_order_and_are_flushed_and_closed() -> None:
    sink = GatedSink()
    sink.release.set()
    writer = make(sink)
    for i in range(50):
        assert writer.offer(i, 10)
    assert writer.close(WAIT_S)
    assert sink.written == list(range(50)) and sink.flushes >= 1 and sink.closed
    assert writer.dropped == 0 and writer.held == (0, 0)
    assert not writer.offer(99, 1) and writer.dropped == 1  # closed: refused, counted, never waited for


def test_a_stalled_writer_never_blocks_offer_past_the_item_bound() -> None:
    sink = GatedSink()
    writer = make(sink, max_items=5)
    assert writer.offer(0, 1)
    assert sink.entered.wait(WAIT_S)  # the writer holds item 0 and is stuck in write()
    accepted = [writer.offer(i, 1) for i in range(1, 20)]
    # item 0 still counts (it is being written): 4 more fit, 15 are dropped, none waited
    assert accepted == [True] * 4 + [False] * 15
    assert writer.dropped == 15 and writer.held == (5, 5)
    sink.release.set()
    assert writer.close(WAIT_S)
    assert sink.written == [0, 1, 2, 3, 4] and writer.held == (0, 0)
    assert sink.batches[0] == [0] and sink.batches[1] == [1, 2, 3, 4]  # what waited goes in one batch


def test_bytes_bound_counts_what_is_being_written() -> None:
    sink = GatedSink()
    writer = make(sink, max_bytes=100)
    assert writer.offer(0, 60)
    assert sink.entered.wait(WAIT_S)
    assert not writer.offer(1, 41)  # 60 held by the batch in write() + 41 > 100
    assert writer.offer(2, 40)
    assert not writer.offer(3, 1)
    assert not writer.offer(4, 1000)  # larger than the whole bound: never queued
    sink.release.set()
    assert writer.close(WAIT_S)
    assert sink.written == [0, 2] and writer.dropped == 3


def test_a_failing_write_is_counted_and_the_writer_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    handled = threading.Semaphore(0)
    seen: list[int] = []

    def write(batch: Sequence[int]) -> None:
        try:
            if 3 in batch:
                raise OSError(28, "No space left on device")
            seen.extend(batch)
        finally:
            handled.release()

    writer: BackgroundWriter[int] = BackgroundWriter("flaky", write, max_items=10, max_bytes=100)
    for i in range(6):  # one item per batch: each is handled before the next is offered
        assert writer.offer(i, 1)
        assert handled.acquire(timeout=WAIT_S)
    assert writer.close(WAIT_S)
    assert seen == [0, 1, 2, 4, 5] and writer.failed == 1 and writer.dropped == 0
    assert "flaky: writing failed: OSError: [Errno 28] No space left on device" in caplog.text
