"""The REST port's connection policy: what a client may hold open, and for how long.

aiohttp parses HTTP well but leaves three doors open that a server on the internet must close:

- **No header timeout.** A client sending a byte a second (slowloris) keeps its connection, and its
  file descriptor, forever. :class:`GuardedRequestHandler` gives each request ``header_timeout_s``
  from its first byte (or from the connection's opening) to complete its headers, and closes idle
  keep-alive connections after ``idle_timeout_s``. Bodies are bounded by the handler
  (``rest.read_body``), which knows when a body is wanted.
- **No connection cap.** With descriptors exhausted, every new REST *and gRPC* client fails, and
  asyncio logs each failed ``accept``. :class:`ConnectionGuard` keeps at most ``max_connections``
  open and answers the rest with a short 503 and ``Connection: close``. Past the cap, a small
  reserve of :data:`HEALTH_RESERVE` connections (with a short header timeout) is still accepted
  for health, readiness and metrics only, so probes see a live server while slow clients hold
  every ordinary slot; any other path on them gets the 503.
- **A bad chunked body hangs the request.** When the parser rejects bytes inside a body, aiohttp
  queues a 400 *behind* the request being read, whose ``read()`` then waits forever. The handler
  here fails that body instead, so the request's own handler answers 400 at once.

This leans on two attributes of aiohttp's ``RequestHandler`` (``_messages``, the queue of parsed
requests, and ``_ErrInfo``, a parse failure in it); ``tests/server/test_hardening.py`` pins
both behaviours, so an aiohttp upgrade that moves them fails loudly instead of silently.
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import logging
import os
import resource
import socket
import time
from dataclasses import dataclass
from typing import Any, Final, cast

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.web_protocol import RequestHandler, _ErrInfo

from mlsrv.server.log_limits import RateLimitedLog

log = logging.getLogger(__name__)

#: Descriptors kept out of the REST cap's reach: gRPC connections, model files, logs.
_RESERVED_FDS: Final = 64
#: Connections accepted past the cap for probes only, and how long they get to send their headers.
HEALTH_RESERVE: Final = 8
HEALTH_HEADER_TIMEOUT_S: Final = 2.0
#: How long a refused connection is kept, at most, so its 503 is read before the socket closes; and
#: how many may linger at once (past that, in a flood, they are closed at once: descriptors first).
REFUSAL_LINGER_S: Final = 0.25
MAX_LINGERING_REFUSALS: Final = 16
_AUTO_MAX_CONNECTIONS: Final = 10_000
_MAX_BACKLOG: Final = 1024
_REFUSAL: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 47\r\n"
    b"Retry-After: 1\r\nConnection: close\r\n\r\n"
    b'{"error": "too many open connections; retry"}\r\n'
)


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The policy's numbers (idle keep-alive is aiohttp's own ``keepalive_timeout``)."""

    header_timeout_s: float
    max_connections: int


def default_max_connections() -> int:
    """Half of the descriptors still free (after those in use and a reserve), so REST alone can never
    exhaust them: gRPC clients, model loads and ``accept`` itself keep working under a connection flood."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return _AUTO_MAX_CONNECTIONS
    free = soft - _descriptors_in_use() - _RESERVED_FDS
    return max(8, min(_AUTO_MAX_CONNECTIONS, free // 2))


def accept_backlog(max_connections: int) -> int:
    """How many connections asyncio accepts in one go (its ``create_server`` backlog; the kernel's
    queue is widened afterwards by :func:`widen_listen_queue`).

    asyncio hands an accepted socket to its protocol two loop iterations later, and a refused one
    is closed one iteration after that, so up to about three batches of accepts hold descriptors at
    once. They must fit in what the cap leaves free, or ``accept`` fails with EMFILE and asyncio
    stops accepting for a whole second (measured: 260 slow clients with 256 descriptors).
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return _MAX_BACKLOG
    spare = soft - _descriptors_in_use() - max_connections - HEALTH_RESERVE
    return max(8, min(_MAX_BACKLOG, spare // 4))


def widen_listen_queue(listener: asyncio.Server, backlog: int = _MAX_BACKLOG) -> None:
    """Let the kernel queue ``backlog`` pending connections although asyncio accepts fewer per batch.

    asyncio uses one number for both ``listen()`` and its accept batch; the batch must stay small
    (:func:`accept_backlog`), but a small kernel queue drops connection attempts in a flood, and a
    dropped SYN costs its client a one-second retransmit (measured: a health probe waited 1.01 s).
    Calling ``listen()`` again on the bound socket only changes the queue length.
    """
    for transport_socket in listener.sockets:
        with socket.socket(fileno=os.dup(transport_socket.fileno())) as sock:
            sock.listen(backlog)


def _descriptors_in_use() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # not Linux: count none, the reserve still applies
        return 0


class ConnectionGuard:
    """Protocol factory for ``loop.create_server``: guarded handlers up to the cap, refusals beyond."""

    def __init__(self, server: web.Server, limits: ConnectionLimits, handler_args: dict[str, Any]) -> None:
        self._server = server
        self.limits = limits
        self._handler_args = handler_args
        #: ``GET /healthz`` is answered by the connection handler (off when an access log or CORS
        #: headers must see every response: the frontend then answers it like any request)
        self.answers_liveness = True
        self.date = _HttpDate()
        self.open = 0
        self.health_only_open = 0
        self.refused = 0
        self.lingering = 0
        self.log = RateLimitedLog(log)

    def __call__(self) -> asyncio.Protocol:
        if self.open < self.limits.max_connections:
            self.open += 1
            return GuardedRequestHandler(self, self._server, health_only=False, **self._handler_args)
        self.refused += 1
        self.log.warning("REST connection refused: %d connections open (--rest_max_connections)", self.open)
        if self.health_only_open < HEALTH_RESERVE:
            self.health_only_open += 1
            return GuardedRequestHandler(self, self._server, health_only=True, **self._handler_args)
        return _Refusal(self)

    def closed(self, health_only: bool) -> None:
        if health_only:
            self.health_only_open -= 1
        else:
            self.open -= 1


#: The one request the connection handler answers itself: the liveness probe, as kubelet sends it.
_LIVENESS_LINE: Final = b"GET /healthz HTTP/1.1\r\n"
_LIVENESS_HEAD: Final = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\nDate: "
_LIVENESS_BODY: Final = b'{"status": "ok"}'


def is_liveness_request(data: bytes) -> bool:
    """Whether ``data`` is exactly one whole ``GET /healthz HTTP/1.1`` request without a body."""
    if len(data) > 4096 or not data.startswith(_LIVENESS_LINE) or not data.endswith(b"\r\n\r\n"):
        return False
    lowered = data.lower()
    has_body = b"content-length:" in lowered or b"transfer-encoding:" in lowered
    return lowered.count(b"\r\n\r\n") == 1 and not has_body


class _HttpDate:
    """The ``Date`` header's value, formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._text = b""

    def now(self) -> bytes:
        second = int(time.time())
        if second != self._second:
            self._second, self._text = second, email.utils.formatdate(second, usegmt=True).encode()
        return self._text


class _Refusal(asyncio.Protocol):
    """Answers 503 and closes, without parsing: the cheapest honest answer past the cap.

    Closing a socket whose request is still unread makes the kernel send a reset, which can destroy
    the 503 before the client reads it; so the write side is shut first and the request discarded
    until the client closes, for :data:`REFUSAL_LINGER_S` at most (the descriptor is held that long),
    for at most :data:`MAX_LINGERING_REFUSALS` connections at once.
    """

    def __init__(self, guard: ConnectionGuard) -> None:
        self._guard = guard
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio.Transport subclasses
        transport.write(_REFUSAL)
        if self._guard.lingering >= MAX_LINGERING_REFUSALS:  # a flood: descriptors matter more than the 503
            transport.close()
            return
        self._guard.lingering += 1
        self._transport = transport
        if transport.can_write_eof():
            transport.write_eof()
        self._timer = asyncio.get_running_loop().call_later(REFUSAL_LINGER_S, transport.close)

    def data_received(self, data: bytes) -> None:
        pass  # the request is not read: discarded

    def eof_received(self) -> bool:
        if self._transport is not None:
            self._transport.close()
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._transport is not None:
            self._guard.lingering -= 1
        self._transport = None


class GuardedRequestHandler(RequestHandler):
    """aiohttp's connection handler plus a header deadline and failing of bodies the parser rejected."""

    def __init__(self, guard: ConnectionGuard, server: web.Server, *, health_only: bool, **kwargs: Any) -> None:
        """``health_only``: a connection past the cap; the REST frontend serves it probes only."""
        super().__init__(server, **kwargs)
        self._guard = guard
        self.health_only = health_only
        self._header_timeout_s = HEALTH_HEADER_TIMEOUT_S if health_only else guard.limits.header_timeout_s
        self._header_timer: asyncio.TimerHandle | None = None
        self._last_payload: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._start_header_timer()  # a connection that never sends a request is timed out too

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_header_timer()
        self._last_payload = None
        if self._guard is not None:
            self._guard.closed(self.health_only)
            self._guard = None  # type: ignore[assignment]
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        idle = not self._messages and self._current_request is None
        if idle and self._guard is not None and self._guard.answers_liveness and is_liveness_request(data):
            self._answer_liveness(data)
            return
        queued = len(self._messages)
        super().data_received(data)
        new = list(itertools.islice(self._messages, queued, None))
        for message, payload in new:
            if isinstance(message, _ErrInfo):
                self._fail_body(message)
            else:
                self._last_payload = payload
        if new:
            self._cancel_header_timer()  # headers complete: the body's time is the handler's business
        elif idle and self._header_timer is None and data:
            self._start_header_timer()  # the first bytes of a new request on a kept-alive connection

    def _answer_liveness(self, request: bytes) -> None:
        """The liveness probe answered in the callback that received it, with the bytes the
        ``/healthz`` handler would send: no handler task waits its turn behind every request in
        flight (under overload, a kept-alive probe's p99 fell from 124-147 to 43-54 ms; docs/benchmarks.md)."""
        transport = self.transport
        if transport is None:
            return
        transport.write(_LIVENESS_HEAD + self._guard.date.now() + b"\r\n\r\n" + _LIVENESS_BODY)
        if b"\r\nconnection: close\r\n" in request.lower():
            transport.close()
        else:  # an idle keep-alive connection again: closed after the keep-alive time, as by aiohttp
            self._cancel_header_timer()
            self._header_timer = self._loop.call_later(self._keepalive_timeout, self._header_timeout)

    def _fail_body(self, error: _ErrInfo) -> None:
        """The parser gave up inside the body of the request being read: make its ``read()`` fail."""
        payload = self._last_payload
        if payload is not None and not payload.is_eof():
            payload.set_exception(BadHttpMessage(f"malformed request body: {error.message}"))

    def _start_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self._loop.call_later(self._header_timeout_s, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self._messages or self._current_request is not None:
            return  # a request is being served: not waiting for headers any more
        log.debug("closing a REST connection without headers after %.1f s", self._header_timeout_s)
        self.force_close()
        if self.transport is not None:
            self.transport.close()
