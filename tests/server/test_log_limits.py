"""Rate-limited logging: what a client can trigger at will costs a few lines, never a flood."""

from __future__ import annotations

import logging

import pytest

from mlsrv.server.log_limits import FloodGuard, RateLimitedLog, RateLimiter


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_silence_then_a_count_of_what_was_dropped(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    log = RateLimitedLog(logging.getLogger("test.limits"), RateLimiter(period_s=10, burst=3, clock=clock))
    with caplog.at_level("WARNING", logger="test.limits"):
        for index in range(100):
            log.warning("bad request %d", index)
        clock.now = 10.0
        log.warning("bad request %d", 100)
    lines = [record.getMessage() for record in caplog.records]
    assert lines == ["bad request 0", "bad request 1", "bad request 2",
                     "bad request 100 (97 similar messages suppressed)"]


def test_flood_guard_folds_tracebacks_and_limits_third_party_loggers(caplog: pytest.LogCaptureFixture) -> None:
    guard = FloodGuard(RateLimiter(period_s=60, burst=2))
    noisy = logging.getLogger("aiohttp.server")
    guard.apply()
    try:
        with caplog.at_level("ERROR", logger="aiohttp.server"):
            for _ in range(50):
                try:
                    raise ValueError("Invalid method encountered:\n\nb'\\x16\\x03'")
                except ValueError:
                    noisy.exception("Error handling request from %s", "127.0.0.1")
    finally:
        guard.restore()
    assert len(caplog.records) == 2
    record = caplog.records[0]
    assert record.exc_info is None and "\n" not in record.getMessage()
    assert record.getMessage().startswith("Error handling request from 127.0.0.1: ValueError: Invalid method")
    assert guard._filter not in noisy.filters
