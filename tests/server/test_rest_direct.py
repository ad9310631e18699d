"""The connection's direct path (``RestFrontend.answer_at_connection``): an inference request served
by the connection's own task gets the answer aiohttp's handler gives, in request order, and is
treated as an aiohttp request is (idle timer, disconnect, graceful stop)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlsrv.errors import InvalidArgument, Overloaded
from mlsrv.server import rest
from mlsrv.server.dataplane import DataPlane
from tests.fakes import FakeLoaderFactory, FakeServable
from tests.server.harness import running_server
from tests.server.test_admission import GatedServable
from tests.server.test_health_endpoints import _exchange, _without_date
from tests.server.test_lifecycle_server import version


def _post(path: bytes, body: bytes, *headers: bytes) -> bytes:
    extra = b"".join(h + b"\r\n" for h in headers)
    return b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s" % (
        path, extra, len(body), body
    )


PREDICT = b"/v1/models/m:predict"
#: Each answered directly, one per connection; between them every error kind a predict call can get.
REQUESTS = [
    _post(PREDICT, b'{"instances": [[1.0], [2.0]]}'),
    _post(PREDICT, b'{"inputs": {"x": [[1.0]]}}'),
    _post(b"/v1/models/m/versions/1:predict", b'{"instances": [[3.0]]}'),
    _post(PREDICT + b"?query=ignored", b'{"instances": [[3.0]]}'),
    _post(PREDICT, b'{"instances": ['),  # malformed JSON: 400
    _post(PREDICT, b'{"neither": 1}'),  # neither instances nor inputs: 400
    _post(PREDICT, b'{"inputs": {"z": [[1.0]]}}'),  # unknown input: 400
    _post(PREDICT, b'{"signature_name": "nope", "instances": [[1.0]]}'),  # unknown signature: 400
    _post(PREDICT, b""),  # empty body: 400
    _post(b"/v1/models/nope:predict", b'{"instances": [[1.0]]}'),  # unknown model: 404
    _post(b"/v1/models/m/versions/9:predict", b'{"instances": [[1.0]]}'),  # unknown version: 404
    _post(b"/v1/models/m/labels/stable:predict", b'{"instances": [[1.0]]}'),  # unknown label: 400
    _post(PREDICT, b'{"instances": [[1.0]]}', b"X-Request-Timeout-Ms: soon"),  # not milliseconds: 400
    _post(PREDICT, b'{"instances": [[1.0]]}', b"X-Request-Timeout-Ms: 5000"),
    _post(b"/v1/models/m:classify", b'{"examples": [{"x": [1.0]}]}'),  # no classify signature: 400
    _post(b"/v1/models/m:regress", b'{"examples": ['),  # malformed: 400
]


METRICS = "/monitoring/prometheus/metrics"


def _request_counts(page: str) -> dict[str, float]:
    """``request_count`` by labels, from a Prometheus page."""
    counts = {}
    for line in page.splitlines():
        if line.startswith(":tensorflow:serving:request_count{"):
            labels, value = line.rsplit(" ", 1)
            counts[labels] = float(value)
    return counts


@pytest.fixture
def direct_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts the requests the direct path answered (appends 1 per answer)."""
    calls: list[int] = []
    original = rest.RestFrontend._answer_inference

    async def counting(self: rest.RestFrontend, *args: Any) -> bytes:
        calls.append(1)
        return await original(self, *args)

    monkeypatch.setattr(rest.RestFrontend, "_answer_inference", counting)
    yield calls


def test_a_direct_answer_is_the_handlers_answer_byte_for_byte(tmp_path: Path, direct_calls: list[int]) -> None:
    version(tmp_path / "m", 1)
    monitoring = tmp_path / "monitoring.txt"
    monitoring.write_text("prometheus_config { enable: true }\n")

    async def answers(port: int) -> list[bytes]:
        return [(await _exchange(port, request))[0] for request in REQUESTS]

    async def main() -> None:
        async with running_server(loader_factory=FakeLoaderFactory(), model_name="m",
                                  model_base_path=str(tmp_path / "m"),
                                  monitoring_config_file=str(monitoring)) as s:  # fmt: skip
            port = s.server.rest_port
            direct = await answers(port)
            assert len(direct_calls) == len(REQUESTS)
            counted = _request_counts((await s.get(METRICS))[1])
            guard = s.server.rest_connections
            assert guard is not None
            guard.direct = None  # now aiohttp's handler answers each
            by_handler = await answers(port)
            assert len(direct_calls) == len(REQUESTS)
            assert [_without_date(a) for a in direct] == [_without_date(a) for a in by_handler]
            assert all(answer.count(b"\r\nDate: ") == 1 for answer in direct + by_handler)
            statuses = [answer.split(b" ", 2)[1] for answer in direct]
            assert statuses == [b"200"] * 4 + [b"400"] * 5 + [b"404"] * 2 + [b"400", b"400", b"200", b"400", b"400"]
            # the handler counted each call as the direct path had: every count doubled, none new
            assert counted and _request_counts((await s.get(METRICS))[1]) == {k: 2 * v for k, v in counted.items()}

    asyncio.run(main())


@pytest.mark.parametrize("error", [Overloaded("the batch queue is full; retry"), RuntimeError("a bug")])
def test_a_server_side_error_gets_the_handlers_answer(
    tmp_path: Path, direct_calls: list[int], monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    """503 with ``Retry-After`` (the error table), and 500 ``Internal error`` for an unexpected exception."""
    version(tmp_path / "m", 1)

    async def failing(self: DataPlane, *args: Any) -> Any:
        raise error

    monkeypatch.setattr(DataPlane, "predict", failing)

    async def main() -> None:
        async with running_server(loader_factory=FakeLoaderFactory(), model_name="m",
                                  model_base_path=str(tmp_path / "m")) as s:  # fmt: skip
            port = s.server.rest_port
            direct = await _exchange(port, REQUESTS[0])
            assert len(direct_calls) == 1
            guard = s.server.rest_connections
            assert guard is not None
            guard.direct = None
            by_handler = await _exchange(port, REQUESTS[0])
            assert [_without_date(a) for a in direct] == [_without_date(a) for a in by_handler]
            head = direct[0].split(b"\r\n")
            if isinstance(error, Overloaded):
                assert head[0] == b"HTTP/1.1 503 Service Unavailable" and b"Retry-After: 1" in head
            else:
                assert head[0] == b"HTTP/1.1 500 Internal Server Error"
                assert json.loads(direct[0].partition(b"\r\n\r\n")[2]) == {"error": "Internal error"}

    asyncio.run(main())


def test_requests_pipelined_behind_a_direct_one_are_answered_in_order(tmp_path: Path, direct_calls: list[int]) -> None:
    """The direct request waits for the model; a status and a metadata call behind it are answered by
    aiohttp at once, but written after it; a predict after those is direct again."""
    version(tmp_path / "m", 1)
    servable = GatedServable()
    status = b"GET /v1/models/m HTTP/1.1\r\nHost: x\r\n\r\n"
    metadata = b"GET /v1/models/m/metadata HTTP/1.1\r\nHost: x\r\n\r\n"

    async def main() -> None:
        async with running_server(loader_factory=FakeLoaderFactory(servable_for=lambda sid: servable),
                                  model_name="m", model_base_path=str(tmp_path / "m")) as s:  # fmt: skip
            reader, writer = await asyncio.open_connection("127.0.0.1", s.server.rest_port)
            writer.write(REQUESTS[0] + status + metadata)
            await writer.drain()
            assert await asyncio.to_thread(servable.entered.wait, 10)
            with pytest.raises(asyncio.TimeoutError):  # nothing overtakes the request the model holds
                await asyncio.wait_for(reader.read(1), 0.3)
            servable.gate.set()
            answers = [await _read_answer(reader) for _ in range(3)]
            writer.write(REQUESTS[1])
            answers.append(await _read_answer(reader))
            writer.close()
            assert json.loads(answers[0].partition(b"\r\n\r\n")[2]) == {"predictions": [[2.5], [3.0]]}
            assert b"model_version_status" in answers[1] and b"metadata" in answers[2]
            assert b'"outputs"' in answers[3]
            assert len(direct_calls) == 2  # the first and the last; the two GETs were aiohttp's

    asyncio.run(main())


async def _read_answer(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.split(b"\r\n")
    length = int(next(line.split(b":")[1] for line in lines if line.lower().startswith(b"content-length")))
    return head + await asyncio.wait_for(reader.readexactly(length), 10)


def test_a_direct_request_outlasts_the_idle_timeout_and_the_connection_idles_out_after(
    tmp_path: Path, direct_calls: list[int]
) -> None:
    """aiohttp sees no request of its own in flight, so its idle timer must not close the connection
    while the model works; once answered, the connection is idle and closes after the timeout."""
    version(tmp_path / "m", 1)
    slow = FakeServable(delay=1.0)

    async def main() -> None:
        async with running_server(loader_factory=FakeLoaderFactory(servable_for=lambda sid: slow), model_name="m",
                                  model_base_path=str(tmp_path / "m"), rest_idle_timeout_seconds=0.3) as s:  # fmt: skip
            reader, writer = await asyncio.open_connection("127.0.0.1", s.server.rest_port)
            loop = asyncio.get_running_loop()
            for _ in range(2):  # twice: the idle timer restarted after the first answer must not fire either
                writer.write(REQUESTS[0])
                assert b" 200 OK" in await _read_answer(reader)
            answered = loop.time()
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed as idle
            assert 0.2 < loop.time() - answered < 2.0
            writer.close()
            assert len(direct_calls) == 2

    asyncio.run(main())


def test_a_client_that_disconnects_cancels_its_direct_request(tmp_path: Path, direct_calls: list[int]) -> None:
    version(tmp_path / "m", 1)
    params = tmp_path / "batching.txt"
    params.write_text("max_batch_size { value: 8 } batch_timeout_micros { value: 0 } num_batch_threads { value: 1 }")
    servable = GatedServable()

    async def main() -> None:
        async with running_server(loader_factory=FakeLoaderFactory(servable_for=lambda sid: servable),
                                  model_name="m", model_base_path=str(tmp_path / "m"), enable_batching=True,
                                  batching_parameters_file=str(params)) as s:  # fmt: skip
            admission = s.server.admission
            assert admission is not None
            held = asyncio.create_task(_exchange(s.server.rest_port, _post(PREDICT, b'{"instances": [[1.0]]}')))
            assert await asyncio.to_thread(servable.entered.wait, 10)
            reader, writer = await asyncio.open_connection("127.0.0.1", s.server.rest_port)
            writer.write(_post(PREDICT, b'{"instances": [[2.0], [3.0]]}'))  # queued behind the running batch
            await writer.drain()
            await _until(lambda: admission.requests == 2)
            writer.close()
            await _until(lambda: admission.requests == 1)  # its client left: out of the server
            servable.gate.set()
            assert b" 200 OK" in (await held)[0]
            assert servable.batch_sizes == [1]  # the two rows nobody waited for were never computed
            assert len(direct_calls) == 2

    asyncio.run(main())


def test_a_graceful_stop_finishes_a_direct_request(tmp_path: Path, direct_calls: list[int]) -> None:
    version(tmp_path / "m", 1)
    slow = FakeServable(delay=0.5)

    async def main() -> None:
        async with running_server(loader_factory=FakeLoaderFactory(servable_for=lambda sid: slow), model_name="m",
                                  model_base_path=str(tmp_path / "m")) as s:  # fmt: skip
            reader, writer = await asyncio.open_connection("127.0.0.1", s.server.rest_port)
            writer.write(REQUESTS[0])
            await writer.drain()
            await _until(lambda: len(direct_calls) == 1)
            stopping = asyncio.create_task(s.server.stop(grace_s=10.0))
            answer = await _read_answer(reader)
            await asyncio.wait_for(stopping, 30)
            writer.close()
            assert b" 200 OK" in answer and b"predictions" in answer

    asyncio.run(main())


def test_a_request_the_direct_path_does_not_take_is_served_by_aiohttp(tmp_path: Path, direct_calls: list[int]) -> None:
    """HTTP/1.0, ``Connection: close``, gzip, a status call: aiohttp's handler answers each, as before."""
    import gzip

    version(tmp_path / "m", 1)
    body = b'{"instances": [[1.0]]}'
    zipped = gzip.compress(body)
    requests = [
        _post(PREDICT, body).replace(b"HTTP/1.1", b"HTTP/1.0", 1),
        _post(PREDICT, body, b"Connection: close"),
        b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
        % (PREDICT, len(zipped), zipped),
        b"GET /v1/models/m HTTP/1.1\r\nHost: x\r\n\r\n",
    ]

    async def main() -> None:
        async with running_server(loader_factory=FakeLoaderFactory(), model_name="m",
                                  model_base_path=str(tmp_path / "m")) as s:  # fmt: skip
            for request in requests:
                reader, writer = await asyncio.open_connection("127.0.0.1", s.server.rest_port)
                writer.write(request)
                answer = await _read_answer(reader)
                writer.close()
                assert answer.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200", b"HTTP/1.1 400")), answer
            assert direct_calls == []

    asyncio.run(main())


async def _until(condition: Any, timeout_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_an_error_raised_before_the_model_runs_is_counted_once(tmp_path: Path, direct_calls: list[int]) -> None:
    """InvalidArgument from the DataPlane: one 400, one count with its code."""
    version(tmp_path / "m", 1)
    monitoring = tmp_path / "monitoring.txt"
    monitoring.write_text("prometheus_config { enable: true }\n")

    async def invalid(self: DataPlane, *args: Any) -> Any:
        raise InvalidArgument("no good")

    async def main() -> None:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(DataPlane, "predict", invalid)
            async with running_server(loader_factory=FakeLoaderFactory(), model_name="m",
                                      model_base_path=str(tmp_path / "m"),
                                      monitoring_config_file=str(monitoring)) as s:  # fmt: skip
                answer = (await _exchange(s.server.rest_port, REQUESTS[0]))[0]
                assert answer.startswith(b"HTTP/1.1 400 Bad Request")
                assert json.loads(answer.partition(b"\r\n\r\n")[2]) == {"error": "no good"}
                page = (await s.get(METRICS))[1]
                assert 'request_count{model_name="m",status="INVALID_ARGUMENT"} 1' in page
                assert len(direct_calls) == 1

    asyncio.run(main())


def test_a_bug_in_the_direct_path_closes_that_connection_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception escaping the frontend's coroutine (none should: it answers every error itself)
    leaves nothing answered on that connection, so it is closed at once rather than left hanging."""
    version(tmp_path / "m", 1)

    async def broken(self: rest.RestFrontend, *args: Any) -> bytes:
        raise RuntimeError("a bug")

    async def main() -> None:
        async with running_server(loader_factory=FakeLoaderFactory(), model_name="m",
                                  model_base_path=str(tmp_path / "m")) as s:  # fmt: skip
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(rest.RestFrontend, "_answer_inference", broken)
                reader, writer = await asyncio.open_connection("127.0.0.1", s.server.rest_port)
                writer.write(REQUESTS[0])
                assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, not hanging
                writer.close()
            assert b" 200 OK" in (await _exchange(s.server.rest_port, REQUESTS[0]))[0]

    asyncio.run(main())


@pytest.mark.tf
def test_classify_and_regress_on_a_real_model_get_the_handlers_bytes(tmp_path: Path, direct_calls: list[int]) -> None:
    """The bundled half_plus_two (TensorFlow) has classify and regress signatures: their answers, and
    a few of their errors, are the same bytes from both paths."""
    from tests.conftest import EXAMPLES

    model = b"/v1/models/half_plus_two"
    requests = [
        _post(model + b":classify", b'{"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}, {"x": 3.0}]}'),
        _post(model + b":regress", b'{"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}'),
        _post(model + b":regress", b'{"signature_name": "regress_x_to_y2", "context": {"x": 2.0}, "examples": [{}]}'),
        _post(model + b":classify", b'{"examples": [{"x": 1.0}]}'),  # serving_default does not classify
        _post(model + b":regress", b'{"signature_name": "regress_x_to_y", "examples": [{"x": "text"}]}'),
    ]

    async def answers(port: int) -> list[bytes]:
        return [(await _exchange(port, request))[0] for request in requests]

    async def main() -> None:
        async with running_server(model_name="half_plus_two", model_base_path=str(EXAMPLES / "half_plus_two")) as s:
            port = s.server.rest_port
            direct = await answers(port)
            assert len(direct_calls) == len(requests)
            guard = s.server.rest_connections
            assert guard is not None
            guard.direct = None
            by_handler = await answers(port)
            assert [_without_date(a) for a in direct] == [_without_date(a) for a in by_handler]
            statuses = [answer.split(b" ", 2)[1] for answer in direct]
            assert statuses[:3] == [b"200"] * 3 and b"400" in statuses[3:], direct
            assert json.loads(direct[1].partition(b"\r\n\r\n")[2]) == {"results": [3.0]}

    asyncio.run(main())
