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
- **One connection accepted per loop iteration.** uvloop (libuv) accepts one queued connection each
  time the loop comes round; under load an iteration takes milliseconds, so clients that open a
  connection per request (open-loop load, a kubelet's probes) queue in the kernel faster than they are
  accepted: measured, the accept queue grew to 434 connections and a ``/healthz`` probe waited 2.6 s
  (MLP over REST at 3x, issue #18). :meth:`ConnectionGuard.accept_queued` takes what else is queued,
  up to the accept batch, once per iteration in which a connection arrived.
- **A bad chunked body hangs the request.** When the parser rejects bytes inside a body, aiohttp
  queues a 400 *behind* the request being read, whose ``read()`` then waits forever. The handler
  here fails that body instead, so the request's own handler answers 400 at once.

Three kinds of request are answered by the connection itself, from what aiohttp's parser hands
over, instead of by aiohttp's request object, handler task and response object:

- the liveness probe (``GET /healthz``), in the callback that received it, so it never waits its
  turn behind every request in flight;
- an inference request the door turns away (:class:`ConnectionGuard` ``door``, see
  ``RestFrontend.refusal_at_door``): what keeps a server past its capacity serving, since each
  refusal costs a parse by aiohttp's C parser and a write (issue #18); a refused body still
  arriving is read and discarded, so the connection stays usable;
- an inference request (predict, classify, regress) whose body came with its head (``direct``, see
  ``RestFrontend.answer_at_connection``): one task of the connection's runs the frontend's coroutine
  and writes the answer it returns. That is the common request, and aiohttp's objects around it
  cost more of the loop than the request's own work (issue #11, docs/benchmarks.md).

HTTP/1.1 answers go out in request order: a request is answered here only when every request before
it on the connection has been answered, and a request handed to aiohttp behind a direct one writes
its answer only after the direct one's (:meth:`GuardedRequestHandler.finish_response`). A direct
request is the connection's business as an aiohttp request is aiohttp's: cancelled when its client
disconnects, finished before a graceful stop closes the connection, never closed as idle.

This leans on attributes of aiohttp's ``RequestHandler`` (``_messages``, the queue of parsed
requests, ``_ErrInfo``, a parse failure in it, ``_parser`` and its ``feed_data`` /
``message_consumed``); ``tests/server/test_hardening.py`` and ``tests/server/test_admission.py`` pin
these behaviours, so an aiohttp upgrade that moves them fails loudly instead of silently.
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import logging
import os
import resource
import socket
import ssl
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final, cast

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
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
#: At a stop, how long handshakes already under way get to complete once the listener takes no new ones.
HANDSHAKE_SETTLE_S: Final = 0.05
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
    _listen(listener, backlog)


def _listen(listener: asyncio.Server, backlog: int) -> None:
    """``listen(backlog)`` again on each of the listener's bound sockets: only the queue length changes."""
    for transport_socket in listener.sockets:
        with socket.socket(fileno=os.dup(transport_socket.fileno())) as sock:
            sock.listen(backlog)


async def close_listener_serving_its_queue(
    listener: asyncio.Server,
    protocol_factory: Callable[[], asyncio.Protocol],
    ssl_context: ssl.SSLContext | None,
    settle_s: float = 0.0,
) -> int:
    """Close the REST listener without resetting a connection the kernel has taken for it; how many
    were still queued (each is then served like any other).

    Closing a listening socket resets every connection in its accept queue and every handshake
    under way on it, so their clients see a reset from a server that is stopping gracefully.
    uvloop accepts one connection per loop iteration, so under load the queue is rarely empty, and
    with ``--workers`` (``SO_REUSEPORT``) the kernel keeps routing new connections to this worker's
    socket until it closes: a rolling restart reset about one request in four runs of
    ``tests/server/test_workers.py``'s test, and one in seven with the queue emptied alone (0 in 10
    with the kernel's ``net.ipv4.tcp_migrate_req=1``, which migrates both to a sibling). So:

    1. ``listen(0)``: the kernel starts no new handshake on this socket (it drops or SYN-cookies the
       SYN; the client's retransmission finds a sibling once the socket is closed);
    2. ``settle_s`` (the server passes :data:`HANDSHAKE_SETTLE_S`) for the handshakes under way to
       complete into the queue;
    3. the queue is emptied in one synchronous pass that ends with the close (nothing else runs in
       between), and the accepted connections are handed to the loop.
    """
    loop = asyncio.get_running_loop()
    _listen(listener, 0)  # no new handshakes on this socket (see above)
    await asyncio.sleep(settle_s)  # the handshakes under way complete into the queue
    accepted: list[socket.socket] = []
    for transport_socket in listener.sockets:
        with socket.socket(fileno=os.dup(transport_socket.fileno())) as sock:
            sock.setblocking(False)
            while True:
                try:
                    connection, _ = sock.accept()
                except OSError:  # EAGAIN: the queue is empty (EMFILE and the like: the rest is reset)
                    break
                accepted.append(connection)
    listener.close()
    for connection in accepted:
        connection.setblocking(False)
        try:
            await loop.connect_accepted_socket(protocol_factory, connection, ssl=ssl_context)
        except (OSError, ssl.SSLError):  # the client left, or its TLS handshake failed: nothing to serve
            connection.close()
    return len(accepted)


def _descriptors_in_use() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # not Linux: count none, the reserve still applies
        return 0


#: Decides, from a parsed request's head alone, whether the door turns it away: the whole HTTP
#: answer to send, or None to serve it as usual.
Door = Callable[[RawRequestMessage], bytes | None]
#: Takes a parsed request with its body: a coroutine giving the whole HTTP answer, or None to leave it to aiohttp.
Direct = Callable[[RawRequestMessage, StreamReader], Coroutine[None, None, bytes] | None]


class ConnectionGuard:
    """Protocol factory for ``loop.create_server``: guarded handlers up to the cap, refusals beyond."""

    def __init__(self, server: web.Server, limits: ConnectionLimits, handler_args: dict[str, Any]) -> None:
        self._server = server
        self.limits = limits
        self._handler_args = handler_args
        #: ``GET /healthz`` is answered by the connection handler (off when an access log or CORS
        #: headers must see every response: the frontend then answers it like any request)
        self.answers_liveness = True
        #: inference requests past the admission bounds, answered by the connection (None: never)
        self.door: Door | None = None
        #: requests served by the connection's own task instead of aiohttp's (None: never)
        self.direct: Direct | None = None
        self.date = HttpDate()
        self.open = 0
        #: connections open that have not sent a byte yet (a stop lets them send their request first)
        self.silent = 0
        self.health_only_open = 0
        self.refused = 0
        self.lingering = 0
        self.log = RateLimitedLog(log)
        #: the listening sockets' queues, taken from beside the loop's accepts (``listen_on``)
        self._queues: list[socket.socket] = []
        self._ssl_context: ssl.SSLContext | None = None
        self._accept_batch = 0
        self._accept_scheduled = False
        self._adopting: set[asyncio.Task[None]] = set()

    def listen_on(self, listener: asyncio.Server, ssl_context: ssl.SSLContext | None, batch: int) -> None:
        """Take connections queued on ``listener``'s sockets beside the loop's own accepts, ``batch``
        at a time at most (``accept_backlog``: what the descriptors left free allow); undone by
        :meth:`stop_accepting`, which must come before the listener is closed."""
        self._queues = [socket.socket(fileno=os.dup(listening.fileno())) for listening in listener.sockets]
        for queue in self._queues:
            queue.setblocking(False)
        self._ssl_context = ssl_context
        self._accept_batch = batch

    def stop_accepting(self) -> None:
        """No more connections taken here (the listener's descriptor is then closed by its own close)."""
        queues, self._queues = self._queues, []
        for queue in queues:
            queue.close()

    def accept_queued(self) -> None:
        """Accept the connections still queued on the listening sockets (see the module's docstring).

        Each is handed to the loop as uvloop's own accept would be (``connect_accepted_socket`` with
        this guard as the protocol factory, so the cap applies), as a task kept until it is made.
        """
        self._accept_scheduled = False
        loop = asyncio.get_running_loop()
        for queue in self._queues:
            for _ in range(self._accept_batch):
                try:
                    connection, _ = queue.accept()
                except BlockingIOError:
                    break
                except OSError as error:  # EMFILE and the like: the loop's own accept meets it too
                    self.log.warning("REST accept failed: %s", error)
                    break
                connection.setblocking(False)
                task = loop.create_task(self._adopt(connection))
                self._adopting.add(task)
                task.add_done_callback(self._adopting.discard)

    async def _adopt(self, connection: socket.socket) -> None:
        try:
            await asyncio.get_running_loop().connect_accepted_socket(self, connection, ssl=self._ssl_context)
        except (OSError, ssl.SSLError):  # the client left, or its TLS handshake failed: nothing to serve
            connection.close()

    def __call__(self) -> asyncio.Protocol:
        if self._queues and not self._accept_scheduled:  # once per iteration in which connections arrive
            self._accept_scheduled = True
            asyncio.get_running_loop().call_soon(self.accept_queued)
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


#: The liveness probe's answer, byte for byte what the ``/healthz`` handler sends (``Date`` between).
_LIVENESS_HEAD: Final = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\nDate: "
_LIVENESS_BODY: Final = b'{"status": "ok"}'


def is_liveness_request(message: RawRequestMessage, payload: StreamReader) -> bool:
    """Whether a parsed request is the liveness probe: ``GET /healthz`` without a body."""
    return (
        message.method == "GET"
        and message.path.partition("?")[0] == "/healthz"
        and not message.chunked
        and payload.is_eof()
        and payload.total_bytes == 0
    )


class HttpDate:
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
    """aiohttp's connection handler plus a header deadline, failing of bodies the parser rejected, and
    the answers given on the connection itself (the liveness probe, the door's refusals)."""

    def __init__(self, guard: ConnectionGuard, server: web.Server, *, health_only: bool, **kwargs: Any) -> None:
        """``health_only``: a connection past the cap; the REST frontend serves it probes only."""
        super().__init__(server, **kwargs)
        self._guard = guard
        self.health_only = health_only
        self._header_timeout_s = HEALTH_HEADER_TIMEOUT_S if health_only else guard.limits.header_timeout_s
        self._header_timer: asyncio.TimerHandle | None = None
        self._last_payload: Any = None
        #: requests handed to aiohttp whose response is not finished: an answer given here must not
        #: overtake one of them on the wire
        self._unanswered = 0
        self._silent = False
        #: requests answered here (their timers are set where they are answered)
        self._answered_here = 0
        #: the body of a refused request still arriving: emptied as it comes, never read by a task
        self._refused_body: StreamReader | None = None
        self._parser = cast(Any, _DoorParser(self._parser, self))  # aiohttp types it as its own parser
        #: the request being served by ``guard.direct``, if any (at most one: answers go out in order)
        self._direct: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._silent = True
        self._guard.silent += 1
        self._start_header_timer()  # a connection that never sends a request is timed out too

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_header_timer()
        if self._direct is not None:  # its client left: out of the queue, no model time for it
            self._direct.cancel()
        self._last_payload = self._refused_body = None
        if self._guard is not None:
            if self._silent:
                self._guard.silent -= 1
            self._guard.closed(self.health_only)
            self._guard = None  # type: ignore[assignment]
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._silent and self._guard is not None:
            self._silent = False
            self._guard.silent -= 1
        idle = not self._messages and self._current_request is None
        queued, answered = len(self._messages), self._answered_here
        super().data_received(data)  # parsed by aiohttp; what is answered here never reaches _messages
        if self._refused_body is not None:
            self._drop_refused_body()
        new = list(itertools.islice(self._messages, queued, None))
        for message, payload in new:
            if isinstance(message, _ErrInfo):
                self._fail_body(message)
            else:
                self._last_payload = payload
        if new:
            self._cancel_header_timer()  # headers complete: the body's time is the handler's business
        elif idle and self._header_timer is None and data and self._answered_here == answered:
            self._start_header_timer()  # the first bytes of a new request on a kept-alive connection

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        try:
            direct = self._direct
            if direct is not None:  # a request before this one is being answered here: it goes first
                await asyncio.wait({direct})
            return await super().finish_response(request, resp, start_time)
        finally:
            self._unanswered -= 1

    async def shutdown(self, timeout: float | None = 15.0) -> None:
        """A graceful stop finishes a request served here, as aiohttp finishes its own, within ``timeout``."""
        direct = self._direct
        if direct is not None:
            started = self._loop.time()
            await asyncio.wait({direct}, timeout=timeout)
            if timeout is not None:  # one grace for both waits, not one each
                timeout = max(0.0, timeout - (self._loop.time() - started))
        await super().shutdown(timeout)

    def _pass_or_answer(self, messages: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
        """What aiohttp's parser just parsed, less the requests answered here.

        A request is answered here only when every request before it on the connection has been
        answered (HTTP/1.1 answers in order); the others go to aiohttp as usual.
        """
        passed: list[tuple[Any, Any]] = []
        for message, payload in messages:
            if not passed and self._unanswered == 0 and self._direct is None and self._answer_here(message, payload):
                continue
            passed.append((message, payload))
            self._unanswered += 1
        return passed

    def _answer_here(self, message: RawRequestMessage | _ErrInfo, payload: StreamReader) -> bool:
        """Answer the liveness probe, a request the door turns away, or a direct request; False:
        aiohttp serves it."""
        guard = self._guard
        if guard is None or self.transport is None or isinstance(message, _ErrInfo) or message.upgrade:
            return False
        if guard.answers_liveness and is_liveness_request(message, payload):
            # no handler task waits its turn behind every request in flight: under overload, a
            # kept-alive probe's p99 fell from 124-147 to 43-54 ms (docs/benchmarks.md, issue #18)
            self._answer_now(message, payload, _LIVENESS_HEAD + guard.date.now() + b"\r\n\r\n" + _LIVENESS_BODY)
            return True
        if message.method != "POST" or self.health_only or message.chunked or "Expect" in message.headers:
            return False
        if guard.door is not None and (refusal := guard.door(message)) is not None:
            self._answer_now(message, payload, refusal)
            return True
        if guard.direct is not None and (work := guard.direct(message, payload)) is not None:
            self._take_message()
            self._cancel_header_timer()
            self._direct = self._loop.create_task(self._serve_directly(work))
            return True
        return False

    async def _serve_directly(self, work: Coroutine[None, None, bytes]) -> None:
        """Run a direct request's coroutine and write its answer; then the connection is free again."""
        try:
            answer = await work
            transport = self.transport
            if transport is None:  # the client left while the model ran
                return
            transport.write(answer)
            if self.writing_paused:  # a client that does not read its answers waits for them to drain,
                await self._drain_helper()  # before its next request is taken (as JsonAnswer does)
        except ConnectionError:
            return
        except Exception as error:  # a bug: nothing was answered, so the connection is out of step: close it
            if self._guard is not None:
                self._guard.log.error("unhandled error serving a REST request: %s", error, exc_info=error)
            self.force_close()
            return
        finally:
            self._direct = None
        if self._unanswered == 0 and self.transport is not None:
            self._start_keepalive_timer()

    def _take_message(self) -> None:
        """The request just parsed is answered here: counted, and its parser slot freed as aiohttp frees it."""
        self._answered_here += 1
        cast(_DoorParser, self._parser).message_consumed()

    def _answer_now(self, message: RawRequestMessage, payload: StreamReader, answer: bytes) -> None:
        """Send an answer made at once (no request in flight before it: see :meth:`_pass_or_answer`)."""
        transport = cast(asyncio.Transport, self.transport)
        self._take_message()
        transport.write(answer)
        if message.should_close:
            self.force_close()
            transport.close()
        elif not payload.is_eof():  # a refused body still arriving: dropped as it comes, within the
            self._start_header_timer()  # header timeout (past it the connection closes; the 503 is sent)
            self._refused_body = payload  # emptied by data_received once the parser returns
        else:
            self._start_keepalive_timer()

    def _drop_refused_body(self) -> None:
        """Empty a refused request's body of what has arrived, in the callback that received it.

        Read into nothing by a task, each chunk of a large refused body cost a task wake-up, a copy
        (``readany`` joins what is buffered) and, past aiohttp's buffer limit, a pause and a resume
        of the socket; past capacity a server refuses more requests than it serves, so that was
        paid for most of them (issue #18: with the allocator settings of ``process_tuning``, a
        refused 536 KB body costs the server ~0.2 ms instead of ~1 ms, ``bench/door_refusal.py``).
        Here each chunk is dropped in the callback that parsed it.
        """
        body = cast(StreamReader, self._refused_body)
        if body.exception() is not None:  # malformed: the header timer closes the connection
            self._refused_body = None
            return
        body.read_nowait()
        if body.is_eof():
            self._refused_body = None
            if self._unanswered == 0 and self._direct is None and self.transport is not None:
                self._start_keepalive_timer()

    def _process_keepalive(self) -> None:
        """aiohttp's idle check, which sees no request of its own while a direct one is served: that
        connection is not idle (the timer is made again, from its answer, by ``_start_keepalive_timer``)."""
        if self._direct is not None:
            self._keepalive_handle = None
            return
        super()._process_keepalive()

    def _start_keepalive_timer(self) -> None:
        """An idle keep-alive connection again: aiohttp closes it after the keep-alive time, counted
        from now (its timer moves lazily: a number here, no timer made per answer)."""
        self._cancel_header_timer()
        self._next_keepalive_close_time = self._loop.time() + self._keepalive_timeout
        if self._keepalive_handle is None and self._keepalive_timeout > 0:
            self._keepalive_handle = self._loop.call_at(self._next_keepalive_close_time, self._process_keepalive)

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
        if self._messages or self._current_request is not None or self._direct is not None:
            return  # a request is being served: not waiting for headers any more (idle time is aiohttp's)
        log.debug("closing a REST connection without headers after %.1f s", self._header_timeout_s)
        self.force_close()
        if self.transport is not None:
            self.transport.close()


class _DoorParser:
    """aiohttp's request parser, less the requests its connection answered at the door.

    aiohttp queues what ``feed_data`` returns and wakes its request loop for it; filtering here,
    between the two, is the one place where a parsed request can be answered without aiohttp ever
    creating a request, a task or a response for it.
    """

    __slots__ = ("_parser", "_connection")

    def __init__(self, parser: Any, connection: GuardedRequestHandler) -> None:
        self._parser = parser
        self._connection = connection

    def message_consumed(self) -> None:
        self._parser.message_consumed()

    def feed_data(self, data: bytes) -> tuple[list[tuple[Any, Any]], bool, bytes]:
        messages, upgraded, tail = self._parser.feed_data(data)
        if messages:
            messages = self._connection._pass_or_answer(messages)
        return messages, upgraded, tail

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)
