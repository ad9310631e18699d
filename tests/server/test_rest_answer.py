"""``JsonAnswer``: a plain JSON answer written in one piece is the answer aiohttp would have written."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from mlsrv.server import rest
from tests.fakes import FakeLoaderFactory
from tests.server.harness import running_server
from tests.server.test_health_endpoints import _exchange, _without_date
from tests.server.test_lifecycle_server import version

BODY = b'{"instances": [[1.0]]}'


def _request(path: bytes, *headers: bytes, method: bytes = b"POST", body: bytes = BODY,
             http: bytes = b"HTTP/1.1") -> bytes:  # fmt: skip
    extra = b"".join(h + b"\r\n" for h in headers)
    return b"%s %s %s\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n%s" % (method, path, http, extra, len(body), body)


PREDICT = _request(b"/v1/models/m:predict", b"Content-Type: application/json")
STATUS = _request(b"/v1/models/m", method=b"GET", body=b"")
METADATA = _request(b"/v1/models/m/metadata", method=b"GET", body=b"")


async def _answers(port: int) -> list[bytes]:
    """Predict, status and metadata on one kept-alive connection, then predict pipelined twice."""
    one_by_one = await _exchange(port, PREDICT, STATUS, METADATA)
    pipelined = await _exchange(port, PREDICT + PREDICT, answers_each=2)
    return one_by_one + pipelined


def test_an_answer_in_one_write_has_aiohttps_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    version(tmp_path / "m", 1)
    written: list[int] = []  # the size of each answer JsonAnswer wrote itself
    original = rest.JsonAnswer.prepare

    async def counting(self: rest.JsonAnswer, request: object) -> object:
        result = await original(self, request)  # type: ignore[arg-type]
        if self._eof_sent:
            written.append(len(self.body))
        return result

    monkeypatch.setattr(rest.JsonAnswer, "prepare", counting)

    async def main() -> None:
        async with running_server(loader_factory=FakeLoaderFactory(), model_name="m",
                                  model_base_path=str(tmp_path / "m")) as s:  # fmt: skip
            port = s.server.rest_port
            assert s.server.rest_connections is not None
            s.server.rest_connections.direct = None  # predict through aiohttp's handler too (see test_rest_direct)
            fast = await _answers(port)
            assert len(written) == 5  # every one of them written in one piece
            monkeypatch.setattr(rest, "ONE_WRITE_ANSWER_BYTES", -1)  # now none: aiohttp writes each
            slow = await _answers(port)
            assert len(written) == 5
            assert [_without_date(a) for a in fast] == [_without_date(a) for a in slow]
            for answer in fast:
                head = answer.partition(b"\r\n\r\n")[0].split(b"\r\n")
                assert head[0] == b"HTTP/1.1 200 OK"
                assert [line.split(b":")[0] for line in head[1:]] == [b"Content-Type", b"Content-Length", b"Date"]
            assert b'"predictions"' in fast[0] and b'"model_version_status"' in fast[1]

    asyncio.run(main())


def test_unusual_requests_get_aiohttps_own_answer(tmp_path: Path) -> None:
    """Connection: close, HTTP/1.0 and CORS headers: each handled as aiohttp handles it."""
    version(tmp_path / "m", 1)

    async def exchange_until_closed(port: int, data: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(data)
        answer = await asyncio.wait_for(reader.read(), 10)  # until the server closes the connection
        writer.close()
        return answer

    async def main() -> None:
        async with running_server(loader_factory=FakeLoaderFactory(), model_name="m",
                                  model_base_path=str(tmp_path / "m")) as s:  # fmt: skip
            port = s.server.rest_port
            closing = await exchange_until_closed(port, _request(b"/v1/models/m:predict", b"Connection: close"))
            assert closing.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\nConnection: close\r\n" in closing
            assert b'"predictions"' in closing
            old = await exchange_until_closed(port, _request(b"/v1/models/m:predict", http=b"HTTP/1.0"))
            assert old.startswith(b"HTTP/1.0 200 OK\r\n") and b'"predictions"' in old
        cors_on = {"rest_api_enable_cors_support": True}
        async with running_server(loader_factory=FakeLoaderFactory(), model_name="m",
                                  model_base_path=str(tmp_path / "m"), **cors_on) as s:  # fmt: skip
            (cors,) = await _exchange(s.server.rest_port, PREDICT)
            assert b"\r\nAccess-Control-Allow-Origin: *\r\n" in cors and b'"predictions"' in cors

    asyncio.run(main())


def test_an_answer_waits_while_the_client_is_not_reading() -> None:
    """A client pipelining requests without reading the answers: the one-write answer waits for the
    transport's buffer to drain, as aiohttp's write_eof does, so answers cannot pile up in memory."""
    from unittest import mock

    from aiohttp.test_utils import make_mocked_request

    async def main() -> None:
        transport = mock.Mock()
        transport.is_closing.return_value = False
        protocol = mock.Mock()
        protocol.transport = transport
        protocol.writing_paused = True
        drained = asyncio.get_running_loop().create_future()
        protocol._drain_helper = mock.Mock(return_value=drained)
        request = make_mocked_request("POST", "/v1/models/m:predict", protocol=protocol, transport=transport)
        answer = rest.JsonAnswer(b'{"predictions": [2.5]}', rest.HttpDate())
        sending = asyncio.ensure_future(answer.prepare(request))
        await asyncio.sleep(0.05)
        assert transport.write.call_count == 1 and transport.write.call_args[0][0].endswith(b'{"predictions": [2.5]}')
        assert not sending.done()  # held while the buffer is over its high-water mark
        drained.set_result(None)
        await asyncio.wait_for(sending, 5)
        protocol.writing_paused = False  # a reading client: no wait at all
        await asyncio.wait_for(rest.JsonAnswer(b"{}", rest.HttpDate()).prepare(request), 5)
        assert protocol._drain_helper.call_count == 1

    asyncio.run(main())


def test_pipelined_requests_are_answered_in_order_with_batching_on(tmp_path: Path) -> None:
    """300 predict requests in one write: each answer in the order asked, with its own value, every one
    written by ``JsonAnswer`` (a connection's requests are handled one after another by aiohttp)."""
    version(tmp_path / "m", 1)
    count = 300

    async def main() -> None:
        async with running_server(loader_factory=FakeLoaderFactory(), model_name="m", enable_batching=True,
                                  model_base_path=str(tmp_path / "m")) as s:  # fmt: skip
            bodies = [b'{"instances": [[%d.0]]}' % i for i in range(count)]
            requests = b"".join(_request(b"/v1/models/m:predict", body=body) for body in bodies)
            answers = await _exchange(s.server.rest_port, requests, answers_each=count)
            values = [json.loads(answer.partition(b"\r\n\r\n")[2])["predictions"][0][0] for answer in answers]
            assert values == [0.5 * i + 2 for i in range(count)]

    asyncio.run(main())
