"""``Client`` over ``MockTransport``: endpoints, typed results, error mapping and ``wait_for``."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from mlsrv import errors
from mlsrv.client.api import Client, Endpoint, TlsOptions, conform_outputs
from mlsrv.client.transports import Call, GrpcTransport, MockTransport, Op, RestTransport
from mlsrv.protocol.types import (
    ClassifyResponse,
    ModelMetadata,
    ModelSpec,
    ModelStatus,
    PredictResponse,
    RequestFormat,
    SignatureInfo,
    State,
    TensorInfo,
    VersionStatus,
)

M = ModelSpec("m")
HALF = SignatureInfo(
    inputs={"x": TensorInfo("x:0", "DT_FLOAT", (-1, 1))}, outputs={"y": TensorInfo("y:0", "DT_FLOAT", (-1, 1))}
)


@pytest.mark.parametrize(
    ("target", "protocol", "expected"),
    [
        (None, None, Endpoint("rest", "http://localhost:8501")),
        (None, "grpc", Endpoint("grpc", "localhost:8500")),
        ("example.com", None, Endpoint("rest", "http://example.com:8501")),
        ("example.com:9000", "grpc", Endpoint("grpc", "example.com:9000")),
        ("http://h:1/", None, Endpoint("rest", "http://h:1")),
        ("http://h:1/prefix/", None, Endpoint("rest", "http://h:1/prefix")),
        ("https://h", None, Endpoint("rest", "https://h:8501", TlsOptions(enabled=True))),
        ("grpc://h", None, Endpoint("grpc", "h:8500")),
        ("[::1]", "grpc", Endpoint("grpc", "[::1]:8500")),
        ("[::1]:7", None, Endpoint("rest", "http://[::1]:7")),
    ],
)
def test_endpoint_parse(target: str | None, protocol: Any, expected: Endpoint) -> None:
    assert Endpoint.parse(target, protocol) == expected


@pytest.mark.parametrize(
    ("target", "protocol", "message"),
    [
        ("grpc://h:1", "rest", "is a grpc address but --protocol is rest"),
        ("ftp://h", None, "unsupported scheme"),
        ("h:1/path", "grpc", "a gRPC target is host:port"),
        ("http://127.0.0.1:99999", None, r"invalid port '99999' in target 'http://127.0.0.1:99999'"),
        ("grpc://127.0.0.1:99999", None, "invalid port '99999'"),
        ("127.0.0.1:99999", "grpc", "invalid port '99999'"),
        ("127.0.0.1:abc", None, "invalid port 'abc'"),
        ("127.0.0.1:", "grpc", "invalid port ''"),
        ("h:0", None, "invalid port '0'"),
        ("h:+80", None, r"invalid port '\+80'"),
        ("h:８０", None, "invalid port"),
        ("http://[::1", None, "invalid IPv6 address in target 'http://\\[::1'"),
        ("[::1]x", "grpc", "invalid target"),
        ("[]:80", None, "invalid IPv6 address"),
        ("::1", None, "put an IPv6 address in brackets"),
        ("::1", "grpc", "put an IPv6 address in brackets"),
        (":8501", None, "no host name"),
        ("grpc://:8500", None, "no host name"),
        ("user@h:1", None, "invalid host 'user@h'"),
        ("h h:1", None, "invalid host"),
    ],
)
def test_endpoint_parse_errors(target: str, protocol: Any, message: str) -> None:
    with pytest.raises(errors.UsageError, match=message) as raised:
        Endpoint.parse(target, protocol)
    assert raised.value.exit_code == errors.EXIT_USAGE


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("http://[fe80::1%eth0]:9", Endpoint("rest", "http://[fe80::1%eth0]:9")),
        ("[::ffff:127.0.0.1]", Endpoint("rest", "http://[::ffff:127.0.0.1]:8501")),
        ("my_host.local:65535", Endpoint("rest", "http://my_host.local:65535")),
        ("h:1/v1/", Endpoint("rest", "http://h:1/v1")),
    ],
)
def test_endpoint_parse_accepts_valid_addresses(target: str, expected: Endpoint) -> None:
    assert Endpoint.parse(target) == expected


def test_rest_transport_refuses_a_bad_url_without_a_traceback() -> None:
    with pytest.raises(errors.UsageError, match="invalid URL 'http://h:99999'"):
        RestTransport("http://h:99999")
    with pytest.raises(errors.UsageError, match="not an http"):
        RestTransport("ftp://h:1")


def test_endpoint_builds_the_matching_transport() -> None:
    assert isinstance(Endpoint.parse("h:1", "rest").transport(), RestTransport)
    assert isinstance(Endpoint.parse("h:1", "grpc").transport(), GrpcTransport)
    with pytest.raises(errors.UsageError, match="--tls-ca: cannot read"):
        Endpoint.parse("h:1", "grpc", TlsOptions(ca="/no/such/ca.pem")).transport()
    assert str(Endpoint.parse("h:1", "grpc")) == "grpc://h:1"
    assert Endpoint.parse("h:1", "rest", TlsOptions(enabled=True)).address == "https://h:1"
    secure = Endpoint.parse("h:1", "grpc", TlsOptions(enabled=True)).transport()
    assert isinstance(secure, GrpcTransport) and secure._credentials is not None


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def answering(table: dict[Op, Callable[[Call], Any]]) -> MockTransport:
    def handler(call: Call) -> Any:
        return table[call.op](call)

    return MockTransport(handler)


def test_predict_conforms_rest_outputs_to_the_signature() -> None:
    # REST bodies carry no dtype and no name for a single output; the signature restores both.
    transport = answering({Op.PREDICT: lambda call: PredictResponse(call.request.spec, {"": np.array([[2.5]])})})

    async def scenario() -> tuple[PredictResponse, PredictResponse]:
        async with Client(transport, timeout=3) as client:
            x = {"x": np.array([[1.0]], np.float32)}
            typed = await client.predict(ModelSpec("m"), x, signature=HALF, format=RequestFormat.ROW)
            raw = await client.predict(ModelSpec("m"), x, output_filter=["y"], timeout=9)
            return typed, raw

    typed, raw = run(scenario())
    assert list(typed.outputs) == ["y"] and typed.outputs["y"].dtype == np.float32
    assert raw.outputs[""].dtype == np.float64
    first, second = transport.calls
    assert first.request.format is RequestFormat.ROW and first.timeout_s == 3
    assert second.request.output_filter == ("y",) and second.timeout_s == 9


def test_conform_outputs_keeps_unknown_names_and_strings() -> None:
    sig = SignatureInfo(
        inputs={}, outputs={"a": TensorInfo("a", "DT_INT32", (-1,)), "s": TensorInfo("s", "DT_STRING", (-1,))}
    )
    out = conform_outputs({"a": np.array([1]), "s": np.array([b"x"], dtype=object), "extra": np.array([1.5])}, sig)
    assert out["a"].dtype == np.int32 and out["s"].tolist() == [b"x"] and out["extra"].dtype == np.float64


def test_signature_and_metadata_requests() -> None:
    meta = ModelMetadata(ModelSpec("m", 3), {"serving_default": HALF})
    transport = answering({Op.METADATA: lambda call: meta})

    async def scenario() -> SignatureInfo:
        async with Client(transport) as client:
            found = await client.signature(ModelSpec("m", label="canary"))
            with pytest.raises(
                errors.InvalidArgument, match='Serving signature name: "nope" not found in signature def'
            ):
                await client.signature(ModelSpec("m", signature="nope"))
            return found

    assert run(scenario()) is HALF
    # metadata never sends the signature name (TF Serving ignores it there)
    assert [c.request for c in transport.calls] == [ModelSpec("m", label="canary"), ModelSpec("m")]


def test_classify_and_regress_send_feature_dicts() -> None:
    transport = answering(
        {Op.CLASSIFY: lambda call: ClassifyResponse(call.request.spec, None, np.zeros((1, 1), np.float32))}
    )

    async def scenario() -> None:
        async with Client(transport) as client:
            await client.classify(ModelSpec("m"), [{"x": [1.0]}], context={"c": 1})

    run(scenario())
    sent = transport.calls[0].request
    assert sent.document() == {"examples": [{"x": [1.0]}], "context": {"c": 1}}


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (errors.ModelNotFound("gone"), errors.ModelNotFound),
        (asyncio.TimeoutError(), errors.DeadlineExceeded),
        (ConnectionResetError("reset"), errors.TransportError),
    ],
)
def test_send_lets_mlsrv_errors_through_and_translates_foreign_ones(raised: BaseException, expected: type) -> None:
    def handler(call: Call) -> Any:
        raise raised

    async def scenario() -> None:
        async with Client(MockTransport(handler)) as client:
            await client.status("m")

    with pytest.raises(expected):
        run(scenario())


def sequence(*answers: Any) -> MockTransport:
    """A status transport that gives each answer in turn (raising exceptions), repeating the last."""
    items: Iterator[Any] = iter(answers)
    last: list[Any] = [None]

    def handler(call: Call) -> Any:
        last[0] = next(items, last[0])
        if isinstance(last[0], BaseException):
            raise last[0]
        return last[0]

    return MockTransport(handler)


def status(*versions: tuple[int, State] | VersionStatus) -> ModelStatus:
    return ModelStatus("m", tuple(v if isinstance(v, VersionStatus) else VersionStatus(*v) for v in versions))


def wait(
    transport: MockTransport, spec: ModelSpec = M, timeout: float = 5.0, state: State = State.AVAILABLE
) -> ModelStatus:
    async def scenario() -> ModelStatus:
        async with Client(transport) as client:
            return await client.wait_for(spec, state, timeout_s=timeout, first_poll_s=0.001, max_poll_s=0.004)

    result: ModelStatus = run(scenario())
    return result


def test_wait_for_treats_refused_and_not_found_as_not_ready() -> None:
    transport = sequence(
        errors.TransportError("cannot connect"),
        errors.ModelNotFound("Could not find any versions of model m"),
        status((1, State.LOADING)),
        status((1, State.AVAILABLE)),
    )
    assert wait(transport).versions[0].state is State.AVAILABLE
    assert len(transport.calls) == 4
    assert all(c.timeout_s is not None and c.timeout_s <= 5.0 for c in transport.calls)


def test_wait_for_a_specific_version() -> None:
    transport = sequence(
        status((2, State.LOADING), (1, State.AVAILABLE)), status((2, State.AVAILABLE), (1, State.AVAILABLE))
    )
    wait(transport, ModelSpec("m", 2))
    assert len(transport.calls) == 2


def test_wait_for_times_out_naming_what_it_saw() -> None:
    transport = sequence(status((1, State.LOADING)))
    with pytest.raises(
        errors.DeadlineExceeded, match=r"model m did not become AVAILABLE within 0\.05 s \(last: version 1 LOADING\)"
    ):
        wait(transport, timeout=0.05)


def test_wait_for_fails_fast_when_every_version_failed_to_load() -> None:
    failed = VersionStatus(1, State.END, errors.Code.INTERNAL, "bad graph")
    transport = sequence(status(failed))
    with pytest.raises(errors.InternalError, match="model m version 1 failed to load: bad graph"):
        wait(transport, timeout=30)
    assert len(transport.calls) == 1


def test_wait_for_other_errors_stop_the_wait() -> None:
    transport = sequence(errors.InvalidArgument("bad request"))
    with pytest.raises(errors.InvalidArgument, match="bad request"):
        wait(transport)


def test_wait_for_end_state() -> None:
    transport = sequence(status((1, State.UNLOADING)), status((1, State.END)))
    assert wait(transport, state=State.END).versions[0].state is State.END


def test_client_and_cli_app_do_not_import_tensorflow() -> None:
    code = (
        "import sys, asyncio\n"
        "import mlsrv.client.api, mlsrv.client.transports, mlsrv.cli.app\n"
        "assert 'tensorflow' not in sys.modules, 'import'\n"
        "from aiohttp import web\n"
        "import numpy as np\n"
        "from mlsrv.client.api import Client\n"
        "from mlsrv.protocol.types import ModelSpec\n"
        "async def main():\n"
        "    async def handle(request):\n"
        "        return web.json_response({'outputs': [[2.5]]})\n"
        "    app = web.Application(); app.router.add_post('/v1/models/m:predict', handle)\n"
        "    runner = web.AppRunner(app); await runner.setup()\n"
        "    site = web.TCPSite(runner, '127.0.0.1', 0); await site.start()\n"
        "    port = site._server.sockets[0].getsockname()[1]\n"
        "    async with Client(f'127.0.0.1:{port}') as client:\n"
        "        r = await client.predict(ModelSpec('m'), {'x': np.ones((1, 1), np.float32)})\n"
        "    await runner.cleanup()\n"
        "    assert r.outputs[''].tolist() == [[2.5]]\n"
        "asyncio.run(main())\n"
        "assert 'tensorflow' not in sys.modules, 'predict'\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
