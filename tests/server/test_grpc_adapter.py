"""Every gRPC method is wrapped by the one CallAdapter at registration (issue #10, item 10).

The table is built from the service descriptors, so a method cannot be forgotten: here each method
of both services raises, and each answer must come from the error table: an MlsrvError's own code,
or INTERNAL "Internal error" for anything else, with no Python text. ``--grpc_max_threads`` slots
cover every method, HandleReloadConfigRequest included.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from tensorflow_serving.apis import model_management_pb2, model_service_pb2, predict_pb2, prediction_service_pb2

from mlsrv.errors import FailedPrecondition
from mlsrv.server.grpc import CallAdapter, service_handler
from tests.conftest import free_port

SERVICES = (
    prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"],
    model_service_pb2.DESCRIPTOR.services_by_name["ModelService"],
)
METHODS = [(service, method) for service in SERVICES for method in service.methods]


class _Raising:
    """A servicer whose every method raises ``error``."""

    def __init__(self, error: Exception) -> None:
        self._error = error

    def __getattr__(self, name: str) -> Callable[[Any, Any], Awaitable[Any]]:
        async def method(request: Any, context: Any) -> Any:
            raise self._error

        return method


async def _call_all(servicer: object, adapter: CallAdapter) -> dict[str, tuple[grpc.StatusCode, str]]:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(tuple(service_handler(service, servicer, adapter) for service in SERVICES))
    port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
    await server.start()
    answers = {}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            for service, method in METHODS:
                call = channel.unary_unary(f"/{service.full_name}/{method.name}")
                with pytest.raises(grpc.aio.AioRpcError) as failure:
                    await call(b"", timeout=10)
                answers[method.name] = (failure.value.code(), failure.value.details() or "")
    finally:
        await server.stop(0)
    return answers


def test_every_method_maps_unknown_errors_to_a_generic_internal() -> None:
    answers = asyncio.run(_call_all(_Raising(RuntimeError("secret detail")), CallAdapter(None, None)))
    assert sorted(answers) == sorted(method.name for _, method in METHODS)
    assert "HandleReloadConfigRequest" in answers
    assert set(answers.values()) == {(grpc.StatusCode.INTERNAL, "Internal error")}


def test_every_method_maps_mlsrv_errors_through_the_table() -> None:
    answers = asyncio.run(_call_all(_Raising(FailedPrecondition("not now")), CallAdapter(None, None)))
    assert set(answers.values()) == {(grpc.StatusCode.FAILED_PRECONDITION, "not now")}


def test_undecodable_bytes_are_invalid_argument_for_every_method() -> None:
    async def scenario() -> dict[str, tuple[grpc.StatusCode, str]]:
        server = grpc.aio.server()
        servicer = _Raising(AssertionError("never called"))
        server.add_generic_rpc_handlers(tuple(service_handler(s, servicer, CallAdapter(None, None)) for s in SERVICES))
        port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
        await server.start()
        answers = {}
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                for service, method in METHODS:
                    call = channel.unary_unary(f"/{service.full_name}/{method.name}")
                    with pytest.raises(grpc.aio.AioRpcError) as failure:
                        await call(b"\xff\xff\xff\xff garbage", timeout=10)
                    answers[method.name] = (failure.value.code(), failure.value.details() or "")
        finally:
            await server.stop(0)
        return answers

    for name, (code, details) in asyncio.run(scenario()).items():
        assert code is grpc.StatusCode.INVALID_ARGUMENT, name
        assert details.startswith("Failed to parse the request as tensorflow.serving."), details


def test_slots_cover_handle_reload_config_request() -> None:
    """With one slot, a reload waits for the Predict holding it (it bypassed --grpc_max_threads before)."""
    order: list[str] = []

    class Blocking:
        def __init__(self) -> None:
            self.release = asyncio.Event()
            self.entered = asyncio.Event()

        async def Predict(self, request: Any, context: Any) -> Any:  # noqa: N802
            order.append("predict in")
            self.entered.set()
            await self.release.wait()
            order.append("predict out")
            return predict_pb2.PredictResponse()

        async def HandleReloadConfigRequest(self, request: Any, context: Any) -> Any:  # noqa: N802
            order.append("reload in")
            return model_management_pb2.ReloadConfigResponse()

    async def scenario() -> None:
        servicer = Blocking()
        adapter = CallAdapter(None, asyncio.Semaphore(1))
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(tuple(service_handler(s, servicer, adapter) for s in SERVICES))
        port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                predict = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
                reload = channel.unary_unary("/tensorflow.serving.ModelService/HandleReloadConfigRequest")
                first = asyncio.ensure_future(predict(b"", timeout=10))
                await asyncio.wait_for(servicer.entered.wait(), 10)
                second = asyncio.ensure_future(reload(b"", timeout=10))
                await asyncio.sleep(0.3)  # time for the reload to reach the server and queue for the slot
                servicer.release.set()
                await asyncio.gather(first, second)
        finally:
            await server.stop(0)

    asyncio.run(scenario())
    assert order == ["predict in", "predict out", "reload in"]
