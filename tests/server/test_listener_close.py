"""The REST listener's queue: connections queued on it are accepted a batch per loop iteration, and
closing the listener at a stop serves them instead of resetting them.

A listening socket's close resets every connection still in its accept queue. uvloop accepts one
connection per loop iteration, so a busy server always has some queued, and with ``--workers`` the
kernel keeps queueing on a worker's socket until it closes: a rolling restart lost requests
(``tests/server/test_workers.py::test_sighup_restarts_one_worker_at_a_time_without_failing_a_request``
failed about one run in four). Here the queue is filled deterministically: the clients connect and
send while the loop does not run.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import uvloop

from mlsrv.server.rest_connections import close_listener_serving_its_queue
from tests.fakes import FakeLoaderFactory
from tests.server.harness import running_server


class _Echo(asyncio.Protocol):
    """Answers each connection's first bytes with ``ok:`` and them, then closes."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(b"ok:" + data)  # type: ignore[attr-defined]
        self.transport.close()


async def _queued_clients(count: int, close: str, settle_s: float = 0.0) -> list[bytes | str]:
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(_Echo, "127.0.0.1", 0, backlog=count + 8)
    port = listener.sockets[0].getsockname()[1]
    clients = []
    for number in range(count):  # no await: the loop accepts nothing meanwhile, the kernel queues them all
        client = socket.create_connection(("127.0.0.1", port), timeout=10)
        client.sendall(b"%d" % number)
        clients.append(client)
    if close == "serving its queue":
        queued = await close_listener_serving_its_queue(listener, _Echo, None, settle_s=settle_s)
        assert 0 < queued <= count  # the loop ran for the settle time only: most were still queued
    else:
        listener.close()

    def read(client: socket.socket) -> bytes | str:
        try:
            return client.recv(100)
        except OSError as error:
            return type(error).__name__
        finally:
            client.close()

    return list(await asyncio.gather(*(asyncio.to_thread(read, client) for client in clients)))


def _run(loop: asyncio.AbstractEventLoop, close: str) -> list[bytes | str]:
    try:
        return loop.run_until_complete(_queued_clients(50, close, settle_s=0.0))
    finally:
        loop.close()


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_every_queued_connection_is_served(loop_factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
    assert _run(loop_factory(), "serving its queue") == [b"ok:%d" % number for number in range(50)]


def test_a_plain_close_resets_them_which_is_what_this_prevents() -> None:
    answers = _run(uvloop.new_event_loop(), "plain")
    assert not any(isinstance(answer, bytes) and answer.startswith(b"ok:") for answer in answers), answers


def test_a_busy_server_accepts_what_is_queued_each_iteration_not_one_connection(tmp_path: Path) -> None:
    """uvloop accepts one queued connection per loop iteration; a server whose iterations take
    milliseconds (under load) then accepted clients that connect per request slower than they came
    (the queue reached 434, a /healthz probe waited 2.6 s, issue #18). The server takes the rest of
    the queue in the next iteration: 40 clients queued while the loop did not run are accepted and
    answered within a few iterations, not one per iteration."""
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "saved_model.pb").write_bytes(b"")
    count = 40

    async def main() -> list[int]:
        async with running_server(
            loader_factory=FakeLoaderFactory(),
            model_name="m",
            model_base_path=str(tmp_path / "m"),
        ) as s:
            guard = s.server.rest_connections
            assert guard is not None
            opened_before = guard.open
            clients = []
            for _ in range(count):  # no await: the kernel queues them all, with their requests
                client = socket.create_connection(("127.0.0.1", s.server.rest_port), timeout=10)
                client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                clients.append(client)
            accepted_by_iteration: list[int] = []
            iterated = asyncio.get_running_loop().create_future()

            def each_iteration() -> None:  # call_soon from a callback: runs once per loop iteration
                accepted_by_iteration.append(guard.open - opened_before)
                if len(accepted_by_iteration) < 3 * count:
                    asyncio.get_running_loop().call_soon(each_iteration)
                else:
                    iterated.set_result(None)

            each_iteration()
            await iterated
            answers = await asyncio.gather(*(asyncio.to_thread(client.recv, 200) for client in clients))
            for client in clients:
                client.close()
            assert all(answer.startswith(b"HTTP/1.1 200 OK") for answer in answers)
            return accepted_by_iteration

    accepted = uvloop.run(main())
    assert accepted[-1] == count
    assert accepted.index(count) <= 5, accepted  # one per iteration would take about 40
