"""Admission at the door (issue #18): bounds on the inference requests and bytes in the server at once."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from mlsrv.errors import BatchQueueFull, DeadlineExceeded, Overloaded
from mlsrv.protocol import tensor_codec
from mlsrv.server import grpc as grpc_frontend
from mlsrv.server import rest_decode
from mlsrv.server.admission import Admission, AdmissionLimits, default_max_bytes
from tests.fakes import FakeLoaderFactory, FakeServable
from tests.server.harness import running_server


def test_requests_past_the_bound_are_refused_and_a_release_makes_room() -> None:
    admission = Admission(AdmissionLimits(max_requests=2, max_bytes=1000))
    first, second = admission.admit(10), admission.admit(10)
    with pytest.raises(Overloaded, match="--max_inflight_requests"):
        admission.admit(10)
    first.release()
    with admission.admit(10):
        assert admission.requests == 2 and admission.bytes == 20
    second.release()
    assert (admission.requests, admission.bytes) == (0, 0)
    assert admission.rejected == {"requests": 1, "bytes": 0, "model_queue": 0}


def test_bytes_past_the_bound_are_refused_but_one_large_request_alone_is_admitted() -> None:
    admission = Admission(AdmissionLimits(max_requests=10, max_bytes=100))
    alone = admission.admit(500)  # nothing else in flight: a legitimate large request is served
    with pytest.raises(Overloaded, match="--max_inflight_bytes"):
        admission.admit(1)
    alone.release()
    ticket = admission.admit(60)
    ticket.grow(30)  # a chunked body, charged once read
    assert admission.bytes == 90
    with pytest.raises(Overloaded):
        admission.admit(20)
    ticket.release()
    assert (admission.requests, admission.bytes, admission.rejected["bytes"]) == (0, 0, 2)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_past_capacity_the_bound_follows_what_the_server_completes_in_a_second() -> None:
    clock = Clock()
    admission = Admission(AdmissionLimits(max_requests=1024, max_bytes=1 << 30), clock)
    tickets = [admission.admit(0) for _ in range(900)]  # a burst: all admitted, the rate is not known yet
    clock.now = 0.5
    for ticket in tickets[:500]:  # the server completes 500 while never running dry
        ticket.release()
    tickets = tickets[500:]
    clock.now = 1.0
    tickets.append(admission.admit(0))  # the window closes: 500 per second, busy throughout
    assert admission.busy_rate == pytest.approx(500.0)
    assert admission.request_limit == 500  # 1 s of measured completions
    tickets += [admission.admit(0) for _ in range(500 - admission.requests)]
    with pytest.raises(Overloaded, match="in a second"):
        admission.admit(0)
    assert admission.rejected["requests"] == 1
    tickets.pop().release()
    tickets.append(admission.admit(0))  # room for one again
    for ticket in tickets:
        ticket.release()


def test_an_idle_spell_does_not_shrink_the_bound() -> None:
    clock = Clock()
    admission = Admission(AdmissionLimits(max_requests=1024, max_bytes=1 << 30), clock)
    for step in range(5):  # one request at a time, the server runs dry between them
        clock.now = step * 0.6
        admission.admit(0).release()
    clock.now = 10.0
    admission.admit(0)
    assert admission.busy_rate is None and admission.request_limit == 1024


def test_the_adaptive_bound_has_a_floor() -> None:
    clock = Clock()
    admission = Admission(AdmissionLimits(max_requests=1024, max_bytes=1 << 30), clock)
    slow = [admission.admit(0) for _ in range(10)]
    clock.now = 0.9
    slow.pop().release()  # one completion in a busy second: a very slow model
    clock.now = 1.0
    slow.append(admission.admit(0))
    assert admission.busy_rate == pytest.approx(1.0)
    assert admission.request_limit == 256


def test_a_full_batch_queue_teaches_the_door_what_the_model_holds_and_room_is_probed_again() -> None:
    admission = Admission(AdmissionLimits(max_requests=1024, max_bytes=1 << 30))
    held = [admission.admit(0, "mlp") for _ in range(12)]
    other = admission.admit(0, "other")
    overflowed = admission.admit(0, "mlp")
    overflowed.release(BatchQueueFull("The batch scheduling queue to which this task was submitted is full"))
    assert admission.models["mlp"].limit == 12.0  # what the server held when the queue overflowed
    with pytest.raises(Overloaded, match="Model mlp has as many requests in progress as its batch queue holds"):
        admission.admit(0, "mlp")  # turned away at the door: the queue would refuse it after decoding
    assert admission.rejected["model_queue"] == 1
    admission.admit(0, "other").release()  # another model is not limited by it
    assert admission.unnamed_limit == admission.request_limit  # "other" has no learnt limit
    other.release()
    assert "other" not in admission.models  # nothing kept for a name without requests or a limit
    assert admission.unnamed_limit == 12  # gRPC calls before their message: the sum of learnt limits
    for ticket in held:  # answered: each raises the limit by 1/limit
        ticket.release()
    assert 12.9 < admission.models["mlp"].limit < 13.0
    tickets = [admission.admit(0, "mlp") for _ in range(12)]
    with pytest.raises(Overloaded):
        admission.admit(0, "mlp")
    for ticket in tickets:
        ticket.release()


def test_an_unnamed_ticket_is_checked_once_its_model_is_known_and_odd_overflows_teach_nothing() -> None:
    admission = Admission(AdmissionLimits(max_requests=1024, max_bytes=1 << 30))
    alone = admission.admit(0, "mlp")  # one request no queue could hold: too few held to learn from
    alone.release(BatchQueueFull("full"))
    assert "mlp" not in admission.models
    for model in ("a", "b"):  # two models whose queues have overflowed, at 5 held each
        held = [admission.admit(0, model) for _ in range(5)]
        admission.admit(0, model).release(BatchQueueFull("full"))
        if model == "b":
            for ticket in held:
                ticket.release(DeadlineExceeded("late"))  # only answers raise the limit
    assert admission.models["a"].limit == admission.models["b"].limit == 5.0
    assert admission.unnamed_limit == 10
    unnamed = admission.admit(0)  # a gRPC call: admitted at the door against the sum, then named
    with pytest.raises(Overloaded, match="Model a"):
        unnamed.assign("a")
    unnamed.release(Overloaded("turned away"))
    admission.admit(0).assign("b")
    assert admission.requests == 6 and admission.models["a"].requests == 5


def test_zero_means_the_defaults() -> None:
    limits = AdmissionLimits.resolve(0, 0)
    assert limits.max_requests == 1024 and limits.max_bytes == default_max_bytes()
    assert 64 << 20 <= limits.max_bytes <= 4 << 30
    assert AdmissionLimits.resolve(3, 5) == AdmissionLimits(3, 5)


class GatedServable(FakeServable):
    """half_plus_two whose runs wait for ``release()``, so a test can hold requests in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.gate = threading.Event()

    def run(self, signature: str, inputs: Mapping[str, np.ndarray], output_filter: Sequence[str] = ()) -> Any:
        self.entered.set()
        assert self.gate.wait(30)
        return super().run(signature, inputs, output_filter)


def test_past_the_bound_rest_gets_503_unread_grpc_unavailable_and_probes_still_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "saved_model.pb").write_bytes(b"")
    monitoring = tmp_path / "monitoring.txt"
    monitoring.write_text("prometheus_config { enable: true }\n")
    servable = GatedServable()
    decoded: list[int] = []
    real_decode = rest_decode.predict_request

    def counting_decode(raw: bytes, *args: Any, **kw: Any) -> Any:
        decoded.append(len(raw))
        return real_decode(raw, *args, **kw)

    monkeypatch.setattr(rest_decode, "predict_request", counting_decode)
    parsed: list[str] = []  # gRPC messages parsed, by type
    real_parser = grpc_frontend.lenient_parser

    def counting_parser(message_class: Any) -> Any:
        parse = real_parser(message_class)

        def counting_parse(data: bytes) -> Any:
            parsed.append(message_class.DESCRIPTOR.name)
            return parse(data)

        return counting_parse

    monkeypatch.setattr(grpc_frontend, "lenient_parser", counting_parser)

    async def main() -> None:
        async with running_server(
            loader_factory=FakeLoaderFactory(servable_for=lambda sid: servable),
            model_name="m",
            model_base_path=str(tmp_path / "m"),
            max_inflight_requests=1,
            monitoring_config_file=str(monitoring),
        ) as s:
            held = asyncio.create_task(s.post("/v1/models/m:predict", {"instances": [[1.0]]}))
            assert await asyncio.to_thread(servable.entered.wait, 10)
            assert decoded == [len(b'{"instances": [[1.0]]}')]

            status, body, response = await s.request("POST", "/v1/models/m:predict", {"instances": [[2.0]] * 1000})
            assert status == 503 and "--max_inflight_requests" in body["error"]
            assert response.headers["Retry-After"] == "1"
            assert len(decoded) == 1  # turned away before its body was read or decoded

            request = predict_pb2.PredictRequest()
            request.model_spec.name = "m"
            tensor_codec.from_ndarray(np.array([[3.0]], np.float32), request.inputs["x"], as_tensor_content=True)
            async with grpc.aio.insecure_channel(s.grpc_target) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=10)
            assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
            assert "--max_inflight_requests" in (caught.value.details() or "")
            assert "PredictRequest" not in parsed  # turned away before its message was parsed

            for path in ("/healthz", "/readyz", "/v1/models/m", "/v1/models/m/metadata"):
                assert (await s.get(path))[0] == 200, path
            status, page = await s.get("/monitoring/prometheus/metrics")
            assert status == 200
            assert ':mlsrv:admission:rejected_count{reason="requests"} 2' in page
            assert ":mlsrv:admission:in_flight_requests 1" in page
            assert ":mlsrv:admission:request_limit 1" in page

            servable.gate.set()
            assert (await held)[0] == 200
            assert (await s.post("/v1/models/m:predict", {"instances": [[4.0]]}))[0] == 200  # room again
            async with grpc.aio.insecure_channel(s.grpc_target) as channel:
                reply = await prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=10)
            assert list(reply.outputs["y"].float_val) == [3.5] and parsed.count("PredictRequest") == 1
            status, page = await s.get("/monitoring/prometheus/metrics")
            assert ":mlsrv:admission:in_flight_requests 0" in page
            assert ":mlsrv:admission:in_flight_bytes 0" in page

    asyncio.run(main())


def test_a_rest_client_that_disconnects_takes_its_request_out_of_the_queue(tmp_path: Path) -> None:
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "saved_model.pb").write_bytes(b"")
    params = tmp_path / "batching.txt"
    params.write_text("max_batch_size { value: 8 } batch_timeout_micros { value: 0 } num_batch_threads { value: 1 }")
    servable = GatedServable()

    async def main() -> None:
        async with running_server(
            loader_factory=FakeLoaderFactory(servable_for=lambda sid: servable),
            model_name="m",
            model_base_path=str(tmp_path / "m"),
            enable_batching=True,
            batching_parameters_file=str(params),
        ) as s:
            admission = s.server.admission
            held = asyncio.create_task(s.post("/v1/models/m:predict", {"instances": [[1.0]]}))
            assert await asyncio.to_thread(servable.entered.wait, 10)
            port = int(s.rest_url.rsplit(":", 1)[1])
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            body = b'{"instances": [[2.0], [3.0]]}'
            writer.write(b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
            for _ in range(200):  # the second request is admitted and queued behind the running batch
                if admission.requests == 2:
                    break
                await asyncio.sleep(0.01)
            assert admission.requests == 2
            writer.close()
            for _ in range(200):  # its client is gone: the request leaves the server without running
                if admission.requests == 1:
                    break
                await asyncio.sleep(0.01)
            assert admission.requests == 1
            servable.gate.set()
            assert (await held)[0] == 200
            assert (await s.post("/v1/models/m:predict", {"instances": [[4.0]]}))[0] == 200
            assert servable.batch_sizes == [1, 1]  # the two rows nobody waited for were never computed

    asyncio.run(main())


def test_a_grpc_call_its_client_cancels_leaves_the_queue_without_running(tmp_path: Path) -> None:
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "saved_model.pb").write_bytes(b"")
    params = tmp_path / "batching.txt"
    params.write_text("max_batch_size { value: 8 } batch_timeout_micros { value: 0 } num_batch_threads { value: 1 }")
    servable = GatedServable()

    def request(value: float) -> predict_pb2.PredictRequest:
        message = predict_pb2.PredictRequest()
        message.model_spec.name = "m"
        tensor_codec.from_ndarray(np.array([[value]], np.float32), message.inputs["x"], as_tensor_content=True)
        return message

    async def main() -> None:
        async with running_server(
            loader_factory=FakeLoaderFactory(servable_for=lambda sid: servable),
            model_name="m",
            model_base_path=str(tmp_path / "m"),
            enable_batching=True,
            batching_parameters_file=str(params),
        ) as s:
            admission = s.server.admission
            async with grpc.aio.insecure_channel(s.grpc_target) as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                held = stub.Predict(request(1.0), timeout=30)
                assert await asyncio.to_thread(servable.entered.wait, 10)
                queued = stub.Predict(request(2.0), timeout=30)
                for _ in range(200):  # the second call is admitted, read and queued behind the running batch
                    if admission.requests == 2:
                        break
                    await asyncio.sleep(0.01)
                assert admission.requests == 2
                queued.cancel()
                for _ in range(200):  # its client gave up: the call leaves the server without running
                    if admission.requests == 1:
                        break
                    await asyncio.sleep(0.01)
                assert admission.requests == 1
                servable.gate.set()
                assert list((await held).outputs["y"].float_val) == [2.5]
                assert list((await stub.Predict(request(4.0), timeout=30)).outputs["y"].float_val) == [4.0]
            assert servable.batch_sizes == [1, 1]  # the cancelled call's row was never computed

    asyncio.run(main())


def test_an_oversized_body_is_413_even_when_the_server_is_full(tmp_path: Path) -> None:
    """A client's mistake is reported as such (413), not as a load the server could take later (503)."""
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "saved_model.pb").write_bytes(b"")
    servable = GatedServable()

    async def main() -> None:
        async with running_server(
            loader_factory=FakeLoaderFactory(servable_for=lambda sid: servable),
            model_name="m",
            model_base_path=str(tmp_path / "m"),
            max_inflight_requests=1,
            rest_max_body_bytes=1000,
        ) as s:
            held = asyncio.create_task(s.post("/v1/models/m:predict", {"instances": [[1.0]]}))
            assert await asyncio.to_thread(servable.entered.wait, 10)
            status, body, _ = await s.request("POST", "/v1/models/m:predict", {"instances": [[2.0]] * 1000})
            assert status == 413 and "--rest_max_body_bytes" in body["error"]
            servable.gate.set()
            assert (await held)[0] == 200

    asyncio.run(main())


def test_queue_depth_deadline_drops_cancellations_and_full_queue_rejections_are_on_the_metrics_page(
    tmp_path: Path,
) -> None:
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "saved_model.pb").write_bytes(b"")
    monitoring = tmp_path / "monitoring.txt"
    monitoring.write_text("prometheus_config { enable: true }\n")
    params = tmp_path / "batching.txt"  # a queue of one row: one waiting request fills it
    params.write_text(
        "max_batch_size { value: 1 } batch_timeout_micros { value: 0 } num_batch_threads { value: 1 } "
        "max_enqueued_batches { value: 1 }"
    )
    servable = GatedServable()

    def value(page: str, series: str) -> int:
        lines = [line for line in page.splitlines() if line.startswith(series + " ")]
        assert len(lines) == 1, (series, page)
        return int(lines[0].rsplit(" ", 1)[1])

    async def main() -> None:
        async with running_server(
            loader_factory=FakeLoaderFactory(servable_for=lambda sid: servable),
            model_name="m",
            model_base_path=str(tmp_path / "m"),
            enable_batching=True,
            batching_parameters_file=str(params),
            monitoring_config_file=str(monitoring),
        ) as s:
            held = asyncio.create_task(s.post("/v1/models/m:predict", {"instances": [[1.0]]}))
            assert await asyncio.to_thread(servable.entered.wait, 10)
            timed = asyncio.create_task(
                s.request(
                    "POST", "/v1/models/m:predict", {"instances": [[2.0]]}, headers={"X-Request-Timeout-Ms": "400"}
                )
            )
            page = ""
            for _ in range(200):  # the second request waits in the batch queue
                page = (await s.get("/monitoring/prometheus/metrics"))[1]
                if value(page, ':mlsrv:batching:queued_rows{model_name="m"}') == 1:
                    break
                await asyncio.sleep(0.01)
            assert value(page, ':mlsrv:batching:queued_rows{model_name="m"}') == 1
            status, body = await s.post("/v1/models/m:predict", {"instances": [[3.0]]})  # no room in the queue
            assert status == 503 and "batch scheduling queue" in body["error"]
            status, _, _ = await timed  # its deadline passes while it waits: answered then, not later
            assert status == 504 and not servable.gate.is_set()

            port = int(s.rest_url.rsplit(":", 1)[1])  # a client that queues a request and goes away
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            raw = b'{"instances": [[4.0]]}'
            head = b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(raw)
            writer.write(head + raw)
            await writer.drain()
            for _ in range(200):
                page = (await s.get("/monitoring/prometheus/metrics"))[1]
                if value(page, ':mlsrv:batching:queued_rows{model_name="m"}') == 1:
                    break
                await asyncio.sleep(0.01)
            writer.close()
            for _ in range(200):
                page = (await s.get("/monitoring/prometheus/metrics"))[1]
                if value(page, ':mlsrv:batching:cancelled_count{model_name="m"}') == 1:
                    break
                await asyncio.sleep(0.01)
            assert value(page, ':mlsrv:batching:cancelled_count{model_name="m"}') == 1
            assert value(page, ':mlsrv:batching:deadline_dropped_count{model_name="m"}') == 1
            assert value(page, ':mlsrv:admission:rejected_count{reason="batch_queue_full"}') == 1
            assert value(page, ':mlsrv:admission:rejected_count{reason="requests"}') == 0
            assert value(page, ':mlsrv:batching:queued_rows{model_name="m"}') == 0
            servable.gate.set()
            assert (await held)[0] == 200
            assert servable.batch_sizes == [1]  # neither dropped request ran

    asyncio.run(main())


def _predict_bytes(body: bytes, *headers: bytes) -> bytes:
    head = b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    return head + b"".join(h + b"\r\n" for h in headers) + b"Content-Length: %d\r\n\r\n" % len(body) + body


async def _answers(reader: asyncio.StreamReader, count: int) -> list[bytes]:
    answers = []
    for _ in range(count):
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.lower().split(b"\r\n")
        length = int(next(line.split(b":")[1] for line in lines if line.startswith(b"content-length")))
        answers.append(head + await asyncio.wait_for(reader.readexactly(length), 10))
    return answers


def _without_date(answer: bytes) -> bytes:
    return b"\r\n".join(line for line in answer.split(b"\r\n") if not line.startswith(b"Date: "))


def test_the_connection_turns_requests_away_with_the_handlers_answer_and_stays_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the bound, the connection answers 503 itself: no request object, task or handler is made
    for it (counted at the frontend's handler), the bytes are the handler's, its body is discarded
    however it arrives, and the connection serves what comes next in order."""
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "saved_model.pb").write_bytes(b"")
    monitoring = tmp_path / "monitoring.txt"
    monitoring.write_text("prometheus_config { enable: true }\n")
    tokens = tmp_path / "tokens"
    tokens.write_text("right\n")
    servable = GatedServable()
    from mlsrv.server.rest import RestFrontend

    handled: list[str] = []  # paths the frontend's handler was called for
    real_handle = RestFrontend.handle

    async def counting_handle(self: RestFrontend, request: Any) -> Any:
        handled.append(request.path)
        return await real_handle(self, request)

    monkeypatch.setattr(RestFrontend, "handle", counting_handle)

    async def main() -> None:
        async with running_server(
            loader_factory=FakeLoaderFactory(servable_for=lambda sid: servable),
            model_name="m",
            model_base_path=str(tmp_path / "m"),
            max_inflight_requests=1,
            monitoring_config_file=str(monitoring),
            auth_token_file=str(tokens),
        ) as s:
            auth = b"Authorization: Bearer right"
            held = asyncio.create_task(s.request("POST", "/v1/models/m:predict", {"instances": [[1.0]]},
                                                 headers={"Authorization": "Bearer right"}))  # fmt: skip
            assert await asyncio.to_thread(servable.entered.wait, 10)
            handled.clear()
            guard = s.server.rest_connections
            assert guard is not None and guard.door is not None
            reader, writer = await asyncio.open_connection("127.0.0.1", s.server.rest_port)
            small = _predict_bytes(b'{"instances": [[2.0]]}', auth)
            writer.write(small + small)  # two refusals pipelined in one segment
            at_door = await _answers(reader, 2)
            assert handled == []
            assert at_door[0].startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
            assert b"Retry-After: 1\r\n" in at_door[0]
            assert b"--max_inflight_requests" in at_door[0] and at_door[0] == at_door[1]

            # a body arriving in pieces after the refusal is read into nothing; the next request on the
            # connection (a status call, which the handler serves) is parsed where the body ends
            large = _predict_bytes(b'{"instances": [' + b"[2.0], " * 100_000 + b"[2.0]]}", auth)
            writer.write(large[:1000])
            await writer.drain()
            refused_large = (await _answers(reader, 1))[0]
            for start in range(1000, len(large), 65536):
                writer.write(large[start:start + 65536])
                await writer.drain()
            writer.write(b"GET /v1/models/m HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n\r\n")
            status_answer = (await _answers(reader, 1))[0]
            assert refused_large.startswith(b"HTTP/1.1 503 ") and status_answer.startswith(b"HTTP/1.1 200 OK")
            assert handled == ["/v1/models/m"]

            # behind a request the handler has not answered yet, a refusal waits its turn (HTTP/1.1 order)
            writer.write(b"GET /v1/models/m HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n\r\n" + small)
            in_order = await _answers(reader, 2)
            assert in_order[0].startswith(b"HTTP/1.1 200 OK") and in_order[1].startswith(b"HTTP/1.1 503 ")
            assert handled == ["/v1/models/m", "/v1/models/m", "/v1/models/m:predict"]

            # the handler's own refusal, with the door shut: the same bytes but the Date
            guard.door = None
            writer.write(small)
            by_handler = (await _answers(reader, 1))[0]
            assert _without_date(by_handler) == _without_date(at_door[0])
            guard.door = s.server._rest_frontend.refusal_at_door  # type: ignore[union-attr]
            handled.clear()

            # a request the handler would answer otherwise is left to it: no token (401), a bad path
            writer.write(_predict_bytes(b'{"instances": [[2.0]]}'))
            unauthenticated = (await _answers(reader, 1))[0]
            assert unauthenticated.startswith(b"HTTP/1.1 401 ") and handled == ["/v1/models/m:predict"]
            writer.write(_predict_bytes(b"{}", auth).replace(b":predict", b":predicted"))
            assert (await _answers(reader, 1))[0].startswith(b"HTTP/1.1 400 ")

            # Connection: close is honoured: the answer, then the end of the stream
            writer.write(_predict_bytes(b'{"instances": [[2.0]]}', auth, b"Connection: close"))
            closing = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            assert closing.startswith(b"HTTP/1.1 503 ") and b"Connection: close\r\n" in closing

            servable.gate.set()
            assert (await held)[0] == 200
            page = await asyncio.to_thread(_metrics_page, s.server.rest_port)
            # 6 refusals, 4 at the door and 2 by the handler, counted alike
            assert ':mlsrv:admission:rejected_count{reason="requests"} 6' in page
            assert ':tensorflow:serving:request_count{model_name="m",status="UNAVAILABLE"} 6' in page

    asyncio.run(main())


def _metrics_page(port: int) -> str:
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{port}/monitoring/prometheus/metrics",
                                     headers={"Authorization": "Bearer right"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(response.read().decode())


def test_a_connection_answered_at_the_door_still_times_out_idle_and_unfinished_bodies(tmp_path: Path) -> None:
    """After a refusal the connection is an idle keep-alive one (closed after --rest_idle_timeout_seconds);
    a refused body that never ends is cut off after --rest_header_timeout_seconds."""
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "saved_model.pb").write_bytes(b"")
    servable = GatedServable()

    async def closed_after(reader: asyncio.StreamReader) -> float:
        started = asyncio.get_running_loop().time()
        await asyncio.wait_for(reader.read(), 10)  # the rest of the stream, until the server closes it
        return asyncio.get_running_loop().time() - started

    async def main() -> None:
        async with running_server(
            loader_factory=FakeLoaderFactory(servable_for=lambda sid: servable),
            model_name="m",
            model_base_path=str(tmp_path / "m"),
            max_inflight_requests=1,
            rest_idle_timeout_seconds=0.6,
            rest_header_timeout_seconds=0.3,
        ) as s:
            held = asyncio.create_task(s.post("/v1/models/m:predict", {"instances": [[1.0]]}))
            assert await asyncio.to_thread(servable.entered.wait, 10)
            port = s.server.rest_port
            idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
            for i in range(3):  # each answer moves the idle deadline
                idle_writer.write(_predict_bytes(b'{"instances": [[2.0]]}'))
                assert (await _answers(idle_reader, 1))[0].startswith(b"HTTP/1.1 503 "), i
                await asyncio.sleep(0.4)  # past the header timeout, within the idle one
            cut_reader, cut_writer = await asyncio.open_connection("127.0.0.1", port)
            cut_writer.write(_predict_bytes(b'{"instances": [[2.0]]}' + b" " * 1000)[:-500])
            assert (await _answers(cut_reader, 1))[0].startswith(b"HTTP/1.1 503 ")
            idle_for, cut_after = await asyncio.gather(closed_after(idle_reader), closed_after(cut_reader))
            idle_writer.close()
            cut_writer.close()
            assert 0.1 <= idle_for <= 3 and cut_after <= 3
            servable.gate.set()
            assert (await held)[0] == 200

    asyncio.run(main())
