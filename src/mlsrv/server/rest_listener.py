"""The REST port's listening sockets: every pending connection accepted at once, whatever the loop.

Why not ``loop.create_server``: uvloop (0.23, libuv 1.52) accepts **one** connection per
listening socket per event-loop iteration. Idle, an iteration is microseconds; under load it is
milliseconds, so a burst of new connections (a client ramping up, reconnects after a network blip)
drains from the kernel's queue at a few hundred a second, and every connection behind it waits:
measured under an open-loop REST flood, fresh-connection `/healthz` probes (what kubelet sends)
waited up to 7 s while probes on kept-alive connections waited 40 ms; with the stock asyncio loop,
which accepts a batch per readiness event, the same probes waited at most 0.17 s
(docs/benchmarks.md, "the liveness probe"). Here the loop's reader callback accepts up to ``batch``
connections per readiness event and hands each to ``loop.connect_accepted_socket``, on uvloop and
on the stock loop alike.

Binding follows ``loop.create_server``: one socket per address ``host`` resolves to,
``SO_REUSEADDR``, ``IPV6_V6ONLY`` on IPv6 sockets, ``SO_REUSEPORT`` when asked (``--workers``).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Final

from mlsrv.server.log_limits import RateLimitedLog, one_line

log = logging.getLogger(__name__)

#: After ``accept`` fails for want of descriptors, accepting pauses this long (asyncio's own pause).
ACCEPT_PAUSE_S: Final = 1.0
_OUT_OF_DESCRIPTORS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class RestListener:
    """Listening sockets whose connections go to ``protocol_factory`` (TLS with ``ssl_context``)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        *,
        ssl_context: ssl.SSLContext | None = None,
        batch: int = 1024,
    ) -> None:
        """``batch``: connections accepted per readiness event at most (each holds a descriptor
        until its protocol runs; see ``rest_connections.accept_batch``)."""
        self._loop = loop
        self._factory = protocol_factory
        self._ssl = ssl_context
        self._batch = max(1, batch)
        self._sockets: list[socket.socket] = []
        self._handing_over: set[asyncio.Task[None]] = set()
        self._errors = RateLimitedLog(log)
        self._closed = False

    @property
    def sockets(self) -> list[socket.socket]:
        return list(self._sockets)

    def listen(self, host: str, port: int, *, backlog: int, reuse_port: bool = False) -> None:
        """Bind every address of ``host`` on ``port`` and start accepting. Raises ``OSError`` (the
        address is in use, cannot be assigned...) with nothing left bound."""
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        seen: set[tuple[int, object]] = set()
        try:
            for family, kind, proto, _, address in infos:
                if (family, address) in seen:
                    continue
                seen.add((family, address))
                sock = socket.socket(family, kind, proto)
                self._sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if reuse_port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(backlog)
                sock.setblocking(False)
        except BaseException:
            self._close_sockets()
            raise
        for sock in self._sockets:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def _accept(self, listening: socket.socket) -> None:
        for _ in range(self._batch):
            try:
                connection, _ = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                if error.errno in _OUT_OF_DESCRIPTORS:
                    self._errors.error("REST accept failed: %s; not accepting for %.0f s", one_line(error),
                                       ACCEPT_PAUSE_S)  # fmt: skip
                    self._loop.remove_reader(listening.fileno())
                    self._loop.call_later(ACCEPT_PAUSE_S, self._resume, listening)
                return  # ECONNABORTED and the like: the client left; the next event tries again
            connection.setblocking(False)
            task = self._loop.create_task(self._hand_over(connection))
            self._handing_over.add(task)
            task.add_done_callback(self._handing_over.discard)

    def _resume(self, listening: socket.socket) -> None:
        if not self._closed and listening.fileno() != -1:
            self._loop.add_reader(listening.fileno(), self._accept, listening)

    async def _hand_over(self, connection: socket.socket) -> None:
        """The accepted socket to a transport and its protocol (after the TLS handshake, with TLS)."""
        try:
            if self._ssl is not None:
                await self._loop.connect_accepted_socket(self._factory, connection, ssl=self._ssl)
            else:
                await self._loop.connect_accepted_socket(self._factory, connection)
        except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError) as error:
            # a client that left, or failed the TLS handshake (no certificate, a foreign CA, plain text)
            log.debug("REST connection not set up: %s", one_line(error))
            connection.close()

    def close(self) -> None:
        """Stop accepting; connections already accepted are not touched (the runner shuts them down)."""
        if self._closed:
            return
        self._closed = True
        for sock in self._sockets:
            if sock.fileno() != -1:
                self._loop.remove_reader(sock.fileno())
        self._close_sockets()

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets = []

    async def wait_closed(self) -> None:
        """Until the connections accepted before :meth:`close` have been handed over."""
        if self._handing_over:
            await asyncio.gather(*self._handing_over, return_exceptions=True)


__all__ = ["ACCEPT_PAUSE_S", "RestListener"]
