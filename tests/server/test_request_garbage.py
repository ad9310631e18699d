"""Failed gRPC calls and refused REST bodies leave no request in reference cycles (issue #10, item 2).

The serving GC tuning (a 100k young threshold, ``gc.freeze()``) means cyclic garbage is collected
rarely; a failed call whose exception kept the request's frames alive once pinned every 7 MB
request until a full collection (RSS 588 MB -> 2.9 GB after 150 calls). These tests turn the
collector off, send failing calls, and look at what a collection finds: no request message and no
large buffer may be among the garbage.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.fakes import FakeLoaderFactory
from tests.server.harness import running_server

PAYLOAD_BYTES = 2_000_000


def _request(model: str, *, alias: str = "x", content_bytes: int = PAYLOAD_BYTES, rows: int = 500_000) -> Any:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    tensor = request.inputs[alias]
    tensor.dtype = 1  # DT_FLOAT
    tensor.tensor_shape.dim.add().size = rows
    tensor.tensor_shape.dim.add().size = 1
    tensor.tensor_content = b"\0" * content_bytes
    return request


CASES: dict[str, Callable[[], Any]] = {
    "tensor parsing error": lambda: _request("m", rows=PAYLOAD_BYTES),  # content too short for the shape
    "unknown model": lambda: _request("nosuch"),
    "unknown input alias": lambda: _request("m", alias="nosuch"),
}


def _size(item: bytes | bytearray | list[Any]) -> int:
    if isinstance(item, list):
        return sum(len(chunk) for chunk in item if isinstance(chunk, (bytes, bytearray)))
    return len(item)


def _pinned(garbage: list[Any]) -> list[str]:
    """Request messages and large buffers among ``garbage``."""
    found = []
    for frame in [item for item in garbage if isinstance(item, types.FrameType)]:
        for name, value in frame.f_locals.items():  # buffers are not tracked by the collector themselves
            if isinstance(value, (bytes, bytearray, list)) and _size(value) >= PAYLOAD_BYTES // 2:
                found.append(f"{frame.f_code.co_name}.{name}")
    for item in garbage:
        if type(item).__name__ == "PredictRequest":
            found.append("PredictRequest")
        elif isinstance(item, (bytes, bytearray, list)) and _size(item) >= PAYLOAD_BYTES // 2:
            found.append(f"{type(item).__name__}[{len(item)}]")
    return found


@pytest.mark.parametrize("case", sorted(CASES))
def test_failed_calls_leave_no_request_in_garbage(tmp_path: Path, case: str) -> None:
    (tmp_path / "m" / "1").mkdir(parents=True)

    async def scenario() -> tuple[grpc.StatusCode, list[str]]:
        async with running_server(loader_factory=FakeLoaderFactory(), model_name="m",
                                  model_base_path=str(tmp_path / "m")) as s:
            options = [("grpc.max_send_message_length", 1 << 30)]
            async with grpc.aio.insecure_channel(s.grpc_target, options=options) as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                await stub.Predict(_request("m", content_bytes=8, rows=2))  # warm: lazy imports, channel
                gc.collect()
                gc.disable()
                gc.set_debug(gc.DEBUG_SAVEALL)
                try:
                    code = grpc.StatusCode.OK
                    for _ in range(5):
                        with pytest.raises(grpc.aio.AioRpcError) as failure:
                            await stub.Predict(CASES[case]())
                        code = failure.value.code()
                    del failure
                    await asyncio.sleep(0.05)  # let the server finish its side of the last call
                    gc.collect()
                    pinned = _pinned(gc.garbage)
                finally:
                    gc.set_debug(0)
                    gc.garbage.clear()
                    gc.enable()
                return code, pinned

    code, pinned = asyncio.run(scenario())
    assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
    assert pinned == []


def test_a_chunked_body_refused_at_the_cap_leaves_nothing_behind(tmp_path: Path) -> None:
    """A body counted past ``--rest_max_body_bytes`` is dropped before the 413, not kept by an exception."""
    (tmp_path / "m" / "1").mkdir(parents=True)

    def send_chunked(port: int) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            chunk = b"x" * (256 << 10)
            try:
                for _ in range(4 * PAYLOAD_BYTES // len(chunk)):
                    sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:
                pass  # the server answered and closed
            return sock.recv(100)

    async def scenario() -> tuple[bytes, list[str]]:
        async with running_server(loader_factory=FakeLoaderFactory(), model_name="m",
                                  model_base_path=str(tmp_path / "m"), rest_max_body_bytes=2 * PAYLOAD_BYTES) as s:
            gc.collect()
            gc.disable()
            gc.set_debug(gc.DEBUG_SAVEALL)
            try:
                answer = await asyncio.to_thread(send_chunked, s.server.rest_port)
                await asyncio.sleep(0.1)
                gc.collect()
                return answer, _pinned(gc.garbage)
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
                gc.enable()

    answer, pinned = asyncio.run(scenario())
    assert answer.startswith(b"HTTP/1.1 413")
    assert pinned == []
