"""The lean HTTP/1.1 client: keep-alive reuse, chunked bodies, servers that close, refused connections."""

from __future__ import annotations

import asyncio
import re

import pytest
from aiohttp import web

from mlsrv.client.http1 import Http1Pool, _Connection
from mlsrv.errors import TransportError
from tests.conftest import free_port


class _Written(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        pass


def test_a_chunked_response_split_at_every_byte_is_read_whole() -> None:
    raw = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
           b"4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n")  # fmt: skip

    async def main() -> object:
        connection = _Connection()
        connection.connection_made(_Written())
        pending = asyncio.ensure_future(connection.request(b"GET / HTTP/1.1\r\n\r\n"))
        await asyncio.sleep(0)
        for i in range(len(raw)):
            assert not pending.done()
            connection.data_received(raw[i : i + 1])
        return await pending

    response = asyncio.run(main())
    assert response.status == 200 and response.body == b"Wikipedia"  # type: ignore[attr-defined]
    assert response.headers["content-type"] == "application/json"  # type: ignore[attr-defined]


def test_keep_alive_chunked_and_close() -> None:
    connections: set[object] = set()

    async def plain(request: web.Request) -> web.StreamResponse:
        connections.add(request.transport)
        return web.Response(body=await request.read(), content_type="application/json")

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for part in (b'{"a":', b" 1}"):
            await response.write(part)
        await response.write_eof()
        return response

    async def closing(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"{}", headers={"Connection": "close"}, content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/echo", plain)
        app.router.add_get("/chunked", chunked)
        app.router.add_get("/close", closing)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        pool = Http1Pool("127.0.0.1", port)
        try:
            for index in range(5):
                reply = await pool.request("POST", "/echo", f'{{"n": {index}}}'.encode())
                assert (reply.status, reply.body) == (200, f'{{"n": {index}}}'.encode())
            assert len(connections) == 1  # one keep-alive connection served all five
            assert (await pool.request("GET", "/chunked")).body == b'{"a": 1}'
            assert (await pool.request("GET", "/close")).body == b"{}"
            assert (await pool.request("GET", "/missing")).status == 404
        finally:
            await pool.aclose()
            await runner.cleanup()

    asyncio.run(main())


def test_refused_connection_is_a_transport_error() -> None:
    async def main() -> None:
        await Http1Pool("127.0.0.1", free_port(), label="http://here").request("GET", "/")

    with pytest.raises(TransportError, match="^cannot connect to http://here: Connection refused"):
        asyncio.run(main())


def test_a_grpc_port_is_named_as_such() -> None:
    """REST sent to a gRPC port gets an HTTP/2 SETTINGS frame and a close: say what it looks like."""
    import grpc

    async def main() -> None:
        server = grpc.aio.server()
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            await Http1Pool("127.0.0.1", port, label="x").request("POST", "/v1/models/m:predict", b"{}")
        finally:
            await server.stop(0)

    with pytest.raises(TransportError, match="this looks like a gRPC port; give it with --grpc"):
        asyncio.run(main())


MALFORMED = {
    "truncated body": (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "after 3 of 10 body bytes"),
    "bad length": (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\nabc",
                   "malformed response: Invalid character in Content-Length"),
    "negative length": (b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n",
                        "malformed response: Invalid character in Content-Length"),
    "bad chunk size": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
                       "malformed response: Invalid character in chunk size"),
    "cut in a chunk": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc",
                       "in the middle of a chunked body"),
    "close before the headers end": (b"HTTP/1.1 200 OK\r\nContent-Le", "connection closed by the server"),
    "not http": (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "malformed response: Expected HTTP/"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_response_is_a_clear_error_at_once(case: str) -> None:
    """Each ends the request with a TransportError quickly, never a hang until the caller's timeout."""
    answer, expected = MALFORMED[case]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()  # a malformed head fails as it arrives; the rest fail at this close
        await writer.wait_closed()

    async def main() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            await asyncio.wait_for(Http1Pool("127.0.0.1", port).request("GET", "/"), 5)
        finally:
            server.close()
            await server.wait_closed()

    with pytest.raises(TransportError, match=re.escape(expected)):
        asyncio.run(main())


def test_an_ipv6_host_keeps_its_brackets() -> None:
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def main() -> None:
        try:
            server = await asyncio.start_server(serve, "::1", 0)
        except OSError:
            pytest.skip("no IPv6 loopback on this machine")
        port = server.sockets[0].getsockname()[1]
        try:
            assert (await Http1Pool("::1", port).request("GET", "/")).body == b"ok"
        finally:
            server.close()

    asyncio.run(main())
    assert b"Host: [::1]:" in seen[0]
