"""RestListener: a burst of connections is accepted in one readiness event, on uvloop and the stock loop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest

from mlsrv.server.rest_listener import RestListener

BURST = 200


class Counting(asyncio.Protocol):
    made: list[Counting] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        Counting.made.append(self)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data.upper())  # type: ignore[attr-defined]


def loops() -> list[tuple[str, Callable[[], asyncio.AbstractEventLoop]]]:
    found: list[tuple[str, Callable[[], asyncio.AbstractEventLoop]]] = [("asyncio", asyncio.new_event_loop)]
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return found
    return [*found, ("uvloop", uvloop.new_event_loop)]


@pytest.mark.parametrize(("name", "new_loop"), loops())
def test_a_burst_is_accepted_at_once_and_served(name: str, new_loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
    """uvloop's own server accepts one connection per loop iteration: 200 queued connections took
    200 iterations. Here they are all accepted on the first readiness event."""

    async def main() -> None:
        Counting.made = []
        loop = asyncio.get_running_loop()
        listener = RestListener(loop, Counting, batch=1024)
        listener.listen("127.0.0.1", 0, backlog=1024)
        port = listener.sockets[0].getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(BURST)]  # queued by the kernel
        try:
            for _ in range(6):  # a handful of iterations: accept, hand over, connection_made
                await asyncio.sleep(0)
            assert len(Counting.made) == BURST, f"{len(Counting.made)} of {BURST} connections set up"
            clients[-1].sendall(b"ping")
            reader_loop = asyncio.get_running_loop()
            answer = await asyncio.wait_for(reader_loop.sock_recv(_nonblocking(clients[-1]), 16), 5)
            assert answer == b"PING"
        finally:
            for client in clients:
                client.close()
            for protocol in Counting.made:
                protocol.transport.close()
            listener.close()
            await listener.wait_closed()
            await asyncio.sleep(0.05)  # transports finish closing
        assert listener.sockets == []
        with pytest.raises(OSError):  # closed: nothing listens on the port any more
            socket.create_connection(("127.0.0.1", port), timeout=2).close()

    loop = new_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def _nonblocking(sock: socket.socket) -> socket.socket:
    sock.setblocking(False)
    return sock


def test_a_busy_port_leaves_nothing_bound() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        first = RestListener(loop, Counting)
        first.listen("127.0.0.1", 0, backlog=8)
        port = first.sockets[0].getsockname()[1]
        second = RestListener(loop, Counting)
        with pytest.raises(OSError) as caught:
            second.listen("127.0.0.1", port, backlog=8)
        assert "Address already in use" in str(caught.value) and second.sockets == []
        first.close()

    asyncio.run(main())
