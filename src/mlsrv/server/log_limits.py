"""Logging that a client cannot flood: one line per bad request at most, and bursts rate-limited.

A server on the internet sees garbage, port scans and descriptor exhaustion; each must cost a log
line at most, never a traceback per request (a slowloris run once grew the log by 53 MB in 13 s).
Two tools:

- :class:`RateLimitedLog` for mlsrv's own call sites: at most ``burst`` records per ``period_s``,
  then silence, then one record that says how many were dropped.
- :class:`FloodGuard` installs the same limit as a filter on the third-party loggers that report
  client behaviour (``asyncio``'s accept errors, ``aiohttp.server``'s bad requests), and cuts their
  tracebacks to one line. Logger filters are process-wide, so like ``GcTuning`` it is applied when a
  server starts and removed when it stops.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Final

#: Loggers that report what clients do to the server, not what the server does wrong.
CLIENT_NOISE_LOGGERS: Final = ("asyncio", "aiohttp.server", "aiohttp.web", "aiohttp.access")


class _Window:
    """Counts records of one kind in the current period."""

    __slots__ = ("burst", "dropped", "period_s", "sent", "start")

    def __init__(self, period_s: float, burst: int, clock: Callable[[], float]) -> None:
        self.period_s = period_s
        self.burst = burst
        self.start = clock()
        self.sent = 0
        self.dropped = 0

    def admit(self, now: float) -> tuple[bool, int]:
        """(whether this record passes, how many were dropped before it since the last that passed)."""
        if now - self.start >= self.period_s:
            self.start, self.sent = now, 0
        if self.sent >= self.burst:
            self.dropped += 1
            return False, 0
        self.sent += 1
        dropped, self.dropped = self.dropped, 0
        return True, dropped


class RateLimiter:
    """Per-key windows: at most ``burst`` records per ``period_s`` for each key."""

    def __init__(self, period_s: float = 10.0, burst: int = 5, clock: Callable[[], float] = time.monotonic) -> None:
        self._period_s = period_s
        self._burst = burst
        self._clock = clock
        self._windows: dict[object, _Window] = {}

    def admit(self, key: object) -> tuple[bool, int]:
        window = self._windows.get(key)
        if window is None:
            if len(self._windows) > 1000:  # keys are message templates, but never let them grow unbounded
                self._windows.clear()
            window = self._windows[key] = _Window(self._period_s, self._burst, self._clock)
        return window.admit(self._clock())


class RateLimitedLog:
    """A logger front for call sites a client can trigger at will (internal errors, parse errors)."""

    def __init__(self, logger: logging.Logger, limiter: RateLimiter | None = None) -> None:
        self._logger = logger
        self._limiter = limiter or RateLimiter()

    def log(self, level: int, msg: str, *args: object, exc_info: BaseException | None = None) -> None:
        if not self._logger.isEnabledFor(level):
            return
        admitted, dropped = self._limiter.admit(msg)
        if not admitted:
            return
        if dropped:
            msg = f"{msg} ({dropped} similar messages suppressed)"
        self._logger.log(level, msg, *args, exc_info=exc_info)

    def error(self, msg: str, *args: object, exc_info: BaseException | None = None) -> None:
        self.log(logging.ERROR, msg, *args, exc_info=exc_info)

    def warning(self, msg: str, *args: object) -> None:
        self.log(logging.WARNING, msg, *args)


class _FloodFilter(logging.Filter):
    """Rate-limits records by (logger, template) and folds a traceback into the record's one line."""

    def __init__(self, limiter: RateLimiter) -> None:
        super().__init__()
        self._limiter = limiter

    def filter(self, record: logging.LogRecord) -> bool:
        admitted, dropped = self._limiter.admit((record.name, str(record.msg)))
        if not admitted:
            return False
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            text = f"{text}: {type(error).__name__}: {str(error)[:200]}"
            record.exc_info = None
            record.exc_text = None
        if dropped:
            text = f"{text} ({dropped} similar messages suppressed)"
        record.msg, record.args = text.replace("\n", " "), None
        return True


class FloodGuard:
    """Installs the flood filter on :data:`CLIENT_NOISE_LOGGERS` while a server runs."""

    def __init__(self, limiter: RateLimiter | None = None) -> None:
        self._filter = _FloodFilter(limiter or RateLimiter())
        self._loggers: list[logging.Logger] = []

    def apply(self) -> None:
        if self._loggers:
            return
        self._loggers = [logging.getLogger(name) for name in CLIENT_NOISE_LOGGERS]
        for logger in self._loggers:
            logger.addFilter(self._filter)

    def restore(self) -> None:
        for logger in self._loggers:
            logger.removeFilter(self._filter)
        self._loggers = []


def one_line(error: BaseException) -> str:
    """``Type: message`` on one line, cut to 200 characters: for logging what a client caused."""
    text: Any = str(error).replace("\n", " ")
    return f"{type(error).__name__}: {text[:200]}"
