"""Transports against small fake servers: paths and bodies sent, responses decoded, errors mapped back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import numpy as np
import pytest
from aiohttp import web

from mlsrv import errors
from mlsrv.client.api import Client
from mlsrv.client.transports import (
    Call,
    ExamplesCall,
    InProcessTransport,
    MockTransport,
    Op,
    RestTransport,
    SupportsClose,
    SupportsPrepare,
)
from mlsrv.protocol.types import (
    ClassifyResponse,
    InferenceMethod,
    ModelMetadata,
    ModelSpec,
    ModelStatus,
    PredictRequest,
    PredictResponse,
    RequestFormat,
    State,
    VersionStatus,
)
from tests.conftest import free_port

Reply = tuple[int, bytes, str]  # status, body, content type
JSON = "application/json"


class FakeRest:
    """An aiohttp app answering every request with ``reply(request, body)``; records what it received."""

    def __init__(self, reply: Callable[[web.Request, bytes], Awaitable[Reply]]) -> None:
        self.reply = reply
        self.seen: list[tuple[str, str, bytes]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append((request.method, request.path_qs, body))
        status, payload, content_type = await self.reply(request, body)
        return web.Response(status=status, body=payload, content_type=content_type)


@asynccontextmanager
async def fake_rest(reply: Callable[[web.Request, bytes], Awaitable[Reply]]) -> AsyncIterator[tuple[FakeRest, str]]:
    fake = FakeRest(reply)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield fake, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def canned(status: int, body: Any, content_type: str = JSON) -> Callable[[web.Request, bytes], Awaitable[Reply]]:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()

    async def reply(request: web.Request, received: bytes) -> Reply:
        return status, payload, content_type

    return reply


async def rest_send(reply: Callable[[web.Request, bytes], Awaitable[Reply]], call: Call) -> tuple[Any, FakeRest]:
    async with fake_rest(reply) as (fake, url):
        transport = RestTransport(url)
        try:
            return await transport.send(call), fake
        finally:
            await transport.aclose()


X = {"x": np.array([[1.0], [2.0]], dtype=np.float32)}


def test_rest_predict_path_body_and_response() -> None:
    spec = ModelSpec("m", label="stable", signature="sig")
    call = Call(Op.PREDICT, PredictRequest(spec, X, (), RequestFormat.ROW))
    result, fake = asyncio.run(rest_send(canned(200, {"predictions": [[2.5], [3.0]]}), call))
    method, path, body = fake.seen[0]
    assert (method, path) == ("POST", "/v1/models/m/labels/stable:predict")
    assert json.loads(body) == {"signature_name": "sig", "instances": [{"x": [1.0]}, {"x": [2.0]}]}
    assert isinstance(result, PredictResponse) and result.spec == spec
    assert result.outputs[""].tolist() == [[2.5], [3.0]]


def test_rest_output_filter_is_applied_on_the_client() -> None:
    body = {"outputs": {"a": [1], "b": [2], "c": [3]}}
    call = Call(Op.PREDICT, PredictRequest(ModelSpec("m", 3), X, ("c", "a")))
    result, fake = asyncio.run(rest_send(canned(200, body), call))
    assert fake.seen[0][1] == "/v1/models/m/versions/3:predict"
    assert list(result.outputs) == ["c", "a"]
    bad = Call(Op.PREDICT, PredictRequest(ModelSpec("m"), X, ("z",)))
    with pytest.raises(errors.InvalidArgument, match=r"output tensor alias not found in signature: z .*\{a,b,c\}"):
        asyncio.run(rest_send(canned(200, body), bad))


def test_rest_prepared_call_reuses_the_encoded_body() -> None:
    async def scenario() -> list[bytes]:
        async with fake_rest(canned(200, {"outputs": [[1.0]]})) as (fake, url):
            transport = RestTransport(url)
            assert isinstance(transport, SupportsPrepare) and isinstance(transport, SupportsClose)
            call = transport.prepare(Call(Op.PREDICT, PredictRequest(ModelSpec("m"), X)))
            assert isinstance(call.payload, bytes)
            for _ in range(2):
                await transport.send(call)
            await transport.aclose()
            return [body for _, _, body in fake.seen]

    bodies = asyncio.run(scenario())
    assert bodies[0] == bodies[1] and json.loads(bodies[0]) == {"inputs": {"x": [[1.0], [2.0]]}}


def test_rest_status_metadata_and_classify() -> None:
    status_body = {
        "model_version_status": [
            {"version": "2", "state": "LOADING", "status": {"error_code": "OK", "error_message": ""}},
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
        ]
    }
    status, fake = asyncio.run(rest_send(canned(200, status_body), Call(Op.STATUS, ModelSpec("m"))))
    assert fake.seen[0][:2] == ("GET", "/v1/models/m")
    assert status == ModelStatus("m", (VersionStatus(2, State.LOADING), VersionStatus(1, State.AVAILABLE)))

    meta_body = {
        "model_spec": {"name": "m", "version": "7", "signature_name": ""},
        "metadata": {"signature_def": {"signature_def": {}}},
    }
    meta, fake = asyncio.run(rest_send(canned(200, meta_body), Call(Op.METADATA, ModelSpec("m", 7))))
    assert fake.seen[0][:2] == ("GET", "/v1/models/m/versions/7/metadata")
    assert isinstance(meta, ModelMetadata) and meta.spec.version == 7

    examples = ExamplesCall(ModelSpec("m", signature="cls"), InferenceMethod.CLASSIFY, [{"x": [1.0]}], {"c": "a"})
    result, fake = asyncio.run(rest_send(canned(200, {"results": [[["a", 0.25]]]}), Call(Op.CLASSIFY, examples)))
    assert fake.seen[0][1] == "/v1/models/m:classify"
    assert json.loads(fake.seen[0][2]) == {"examples": [{"x": [1.0]}], "signature_name": "cls", "context": {"c": "a"}}
    assert isinstance(result, ClassifyResponse) and result.classes is not None
    assert result.classes.tolist() == [[b"a"]] and result.scores is not None and result.scores.tolist() == [[0.25]]


#: Every code whose HTTP status maps back unambiguously (400 is shared by three codes; INVALID_ARGUMENT wins).
UNAMBIGUOUS = [
    c
    for c, s in errors.HTTP_STATUS.items()
    if c is not errors.Code.OK and list(errors.HTTP_STATUS.values()).count(s) == 1
]


@pytest.mark.parametrize("code", UNAMBIGUOUS, ids=lambda c: c.name)
def test_rest_error_round_trip_gives_the_server_class(code: errors.Code) -> None:
    raised = errors.error_for_code(code, f"boom {code.name}")
    call = Call(Op.STATUS, ModelSpec("m"))
    with pytest.raises(type(raised)) as info:
        asyncio.run(rest_send(canned(raised.http_status, {"error": raised.message}), call))
    assert info.value.message == f"boom {code.name}" and info.value.code is code


@pytest.mark.parametrize(
    ("status", "body", "content_type", "kind", "message"),
    [
        (400, b"", JSON, errors.InvalidArgument, "HTTP 400 with an empty body"),
        (404, b"<html>Not Found</html>", "text/html", errors.TransportError, "is not a model server response"),
        (503, b'{"error": "queue full"}', JSON, errors.Overloaded, "queue full"),
        (502, b'{"error": "bad gateway"}', JSON, errors.UnknownError, "bad gateway"),
    ],
)
def test_rest_odd_error_bodies(status: int, body: bytes, content_type: str, kind: type, message: str) -> None:
    with pytest.raises(kind, match=message):
        asyncio.run(rest_send(canned(status, body, content_type), Call(Op.STATUS, ModelSpec("m"))))


def test_rest_connection_refused_is_a_transport_error() -> None:
    async def scenario() -> None:
        transport = RestTransport(f"http://127.0.0.1:{free_port()}")
        try:
            await transport.send(Call(Op.STATUS, ModelSpec("m")))
        finally:
            await transport.aclose()

    with pytest.raises(errors.TransportError, match=r"^cannot connect to http://127\.0\.0\.1:\d+: ") as info:
        asyncio.run(scenario())
    assert info.value.exit_code == errors.EXIT_TRANSPORT and "\n" not in info.value.message


def test_rest_timeout_is_deadline_exceeded() -> None:
    async def scenario() -> None:
        release = asyncio.Event()

        async def stall(request: web.Request, body: bytes) -> Reply:
            await release.wait()
            return 200, b"{}", JSON

        async with fake_rest(stall) as (_, url):
            transport = RestTransport(url)
            try:
                await transport.send(Call(Op.STATUS, ModelSpec("m"), timeout_s=0.1))
            finally:
                release.set()  # let the server finish the stalled handler before it shuts down
                await transport.aclose()

    with pytest.raises(errors.DeadlineExceeded, match=r"no response from http://127\.0\.0\.1:\d+ within 0\.1 s"):
        asyncio.run(scenario())


class FakeDataPlane:
    """Records calls; answers like half_plus_two."""

    def __init__(self) -> None:
        self.deadlines: list[float | None] = []
        self.examples: list[Any] = []

    async def predict(self, request: PredictRequest, deadline: float | None = None) -> PredictResponse:
        self.deadlines.append(deadline)
        return PredictResponse(request.spec, {"y": request.inputs["x"] * 0.5 + 2})

    async def classify(self, request: Any, deadline: float | None = None) -> Any:
        self.examples.append(request)
        return ClassifyResponse(request.spec, None, np.ones((1, 1), np.float32))

    async def regress(self, request: Any, deadline: float | None = None) -> Any:
        self.examples.append(request)
        raise errors.InvalidArgument("no regress")

    def metadata(self, spec: ModelSpec) -> Any:
        raise errors.ModelNotFound(f"Servable not found for request: {spec.describe()}")

    def status(self, spec: ModelSpec) -> Any:
        return ModelStatus(spec.name, (VersionStatus(1, State.AVAILABLE),))


def test_in_process_transport_calls_the_dataplane() -> None:
    dataplane = FakeDataPlane()
    transport = InProcessTransport(dataplane)

    async def scenario() -> None:
        response = await transport.send(Call(Op.PREDICT, PredictRequest(ModelSpec("m"), X), timeout_s=5))
        assert response.outputs["y"].tolist() == [[2.5], [3.0]]
        examples = ExamplesCall(ModelSpec("m"), InferenceMethod.CLASSIFY, [{"x": 1.0}])
        await transport.send(Call(Op.CLASSIFY, examples))
        with pytest.raises(errors.InvalidArgument, match="no regress"):
            await transport.send(Call(Op.REGRESS, ExamplesCall(ModelSpec("m"), InferenceMethod.REGRESS, [{"x": 1.0}])))
        with pytest.raises(errors.ModelNotFound, match=r"Latest\(m\)"):
            await transport.send(Call(Op.METADATA, ModelSpec("m")))
        assert (await transport.send(Call(Op.STATUS, ModelSpec("m")))).versions[0].state is State.AVAILABLE

    asyncio.run(scenario())
    assert dataplane.deadlines[0] is not None
    assert dataplane.examples[0].examples == [
        ExamplesCall(ModelSpec("m"), InferenceMethod.CLASSIFY, [{"x": 1.0}]).serialized()[0]
    ]


def test_mock_transport_records_calls_and_accepts_sync_or_async_handlers() -> None:
    async def async_handler(call: Call) -> str:
        return f"async {call.op.value}"

    sync = MockTransport(lambda call: f"sync {call.op.value}")
    asynchronous = MockTransport(async_handler)

    async def scenario() -> tuple[Any, Any]:
        return await sync.send(Call(Op.STATUS, ModelSpec("m"))), await asynchronous.send(
            Call(Op.METADATA, ModelSpec("m"))
        )

    assert asyncio.run(scenario()) == ("sync status", "async metadata")
    assert [c.op for c in sync.calls] == [Op.STATUS]


# ---------------------------------------------------------------------------------------------- gRPC


class FakeGrpc:
    """PredictionService/ModelService: half_plus_two, or an abort with the code named by the model name."""

    def __init__(self) -> None:
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        self.requests: list[Any] = []
        owner = self

        class Prediction(prediction_service_pb2_grpc.PredictionServiceServicer):  # type: ignore[misc]
            async def Predict(self, request: Any, context: Any) -> Any:  # noqa: N802
                from mlsrv.protocol import grpc_codec

                owner.requests.append(request)
                if request.model_spec.name in errors.Code.__members__:
                    await context.abort(grpc.StatusCode[request.model_spec.name], "boom")
                req = grpc_codec.predict_request_from_pb(request)
                resolved = ModelSpec(req.spec.name, 1, None, "serving_default")
                response = PredictResponse(resolved, {"y": req.inputs["x"] * np.float32(0.5) + np.float32(2)})
                return grpc_codec.predict_response_to_pb(response, as_tensor_content=False)

        class Model(model_service_pb2_grpc.ModelServiceServicer):  # type: ignore[misc]
            async def GetModelStatus(self, request: Any, context: Any) -> Any:  # noqa: N802
                from mlsrv.protocol import grpc_codec

                return grpc_codec.status_response_to_pb(ModelStatus("", (VersionStatus(4, State.AVAILABLE),)))

        self.server = grpc.aio.server()
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Prediction(), self.server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(Model(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")


@asynccontextmanager
async def fake_grpc() -> AsyncIterator[tuple[FakeGrpc, Any]]:
    from mlsrv.client.transports import GrpcTransport

    fake = FakeGrpc()
    await fake.server.start()
    transport = GrpcTransport(f"127.0.0.1:{fake.port}")
    try:
        yield fake, transport
    finally:
        await transport.aclose()
        await fake.server.stop(None)


GRPC_CODES = [c for c in errors.Code if c is not errors.Code.OK]


def test_grpc_predict_sends_tensor_content_and_decodes() -> None:
    async def scenario() -> tuple[Any, Any]:
        async with fake_grpc() as (fake, transport):
            call = transport.prepare(Call(Op.PREDICT, PredictRequest(ModelSpec("m", label="stable"), X, ("y",))))
            response = await transport.send(call)
            status = await transport.send(Call(Op.STATUS, ModelSpec("m")))
            return response, (fake.requests[0], status)

    response, (request, status) = asyncio.run(scenario())
    assert request.inputs["x"].tensor_content and request.model_spec.version_label == "stable"
    assert list(request.output_filter) == ["y"]
    assert response.outputs["y"].dtype == np.float32 and response.outputs["y"].tolist() == [[2.5], [3.0]]
    assert response.spec == ModelSpec("m", 1, None, "serving_default")
    assert status == ModelStatus("m", (VersionStatus(4, State.AVAILABLE),))


def test_grpc_error_round_trip_gives_the_server_class_for_every_code() -> None:
    async def scenario() -> dict[errors.Code, errors.MlsrvError]:
        seen: dict[errors.Code, errors.MlsrvError] = {}
        async with fake_grpc() as (_, transport):
            for code in GRPC_CODES:
                try:
                    await transport.send(Call(Op.PREDICT, PredictRequest(ModelSpec(code.name), X)))
                except errors.MlsrvError as exc:
                    seen[code] = exc
        return seen

    seen = asyncio.run(scenario())
    for code in GRPC_CODES:
        expected = type(errors.error_for_code(code, ""))
        assert type(seen[code]) is expected and seen[code].code is code, code
        assert seen[code].message == "boom"


def test_grpc_connection_refused_is_a_transport_error() -> None:
    from mlsrv.client.transports import GrpcTransport

    async def scenario() -> None:
        transport = GrpcTransport(f"127.0.0.1:{free_port()}")
        try:
            await transport.send(Call(Op.STATUS, ModelSpec("m"), timeout_s=5))
        finally:
            await transport.aclose()

    with pytest.raises(errors.TransportError, match=r"^cannot connect to 127\.0\.0\.1:\d+: ") as info:
        asyncio.run(scenario())
    assert "\n" not in info.value.message


def test_rest_dns_failure_says_the_host_could_not_be_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    async def unresolvable(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(asyncio.BaseEventLoop, "create_connection", unresolvable)

    async def scenario() -> None:
        transport = RestTransport("http://nosuchhost.invalid:8501")
        try:
            await transport.send(Call(Op.STATUS, ModelSpec("m")))
        finally:
            await transport.aclose()

    with pytest.raises(errors.TransportError) as info:
        asyncio.run(scenario())
    assert info.value.message == (
        "cannot connect to http://nosuchhost.invalid:8501: the host 'nosuchhost.invalid' could not be resolved "
        "(Name or service not known)"
    )
    assert info.value.exit_code == errors.EXIT_TRANSPORT


class FakeRpcError:
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    "details",
    [
        "errors resolving nosuchhost.invalid:8500: ",  # gRPC's native resolver
        "DNS resolution failed for nosuchhost.invalid:8500: C-ares status is not ARES_SUCCESS qtype=A",
    ],
)
def test_grpc_dns_failure_is_a_transport_error(details: str) -> None:
    from mlsrv.client.grpc_transport import _grpc_error

    error = _grpc_error(
        FakeRpcError(grpc.StatusCode.UNAVAILABLE, details), "nosuchhost.invalid:8500", 3.0, connected=False
    )
    assert isinstance(error, errors.TransportError) and error.exit_code == errors.EXIT_TRANSPORT
    assert error.message.startswith("cannot connect to nosuchhost.invalid:8500: the host could not be resolved (")


def test_grpc_unavailable_is_the_transports_only_without_a_connection_whatever_its_text() -> None:
    """Decided by the channel's state, not by matching the message: a server may word its own
    UNAVAILABLE like a connection failure, and a connection failure may be worded in new ways."""
    from mlsrv.client.grpc_transport import _grpc_error

    for text in ("too many requests", "failed to connect to all addresses"):
        served = _grpc_error(FakeRpcError(grpc.StatusCode.UNAVAILABLE, text), "h:1", 3.0, connected=True)
        assert type(served) is errors.Overloaded and served.message == text
        cut = _grpc_error(FakeRpcError(grpc.StatusCode.UNAVAILABLE, text), "h:1", 3.0, connected=False)
        assert type(cut) is errors.TransportError and cut.message == f"cannot connect to h:1: {text}"


def test_a_call_carries_the_request_type_of_its_operation_and_a_wrong_result_is_a_transport_error() -> None:
    with pytest.raises(TypeError, match="a PREDICT call carries a PredictRequest, not ModelSpec"):
        Call(Op.PREDICT, ModelSpec("m"))
    assert Call(Op.STATUS, ModelSpec("m", 2)).spec == ModelSpec("m", 2)

    async def scenario() -> None:
        async with Client(MockTransport(lambda call: "not a status")) as client:
            await client.status("m")

    with pytest.raises(errors.TransportError, match="a STATUS call returned a str, not a ModelStatus"):
        asyncio.run(scenario())
