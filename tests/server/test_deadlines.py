"""Request deadlines: REST's --rest_api_timeout_in_ms answers 504, a gRPC deadline DEADLINE_EXCEEDED."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import numpy as np
import pytest

from mlsrv.protocol import tensor_codec
from tests.fakes import FakeLoaderFactory, FakeServable
from tests.server.harness import running_server
from tests.server.test_rest_fake import model_dir


def test_rest_timeout_is_504_and_grpc_deadline_is_deadline_exceeded(tmp_path: Path) -> None:
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    factory = FakeLoaderFactory(servable_for=lambda _id: FakeServable(delay=0.5))

    async def main() -> None:
        async with running_server(loader_factory=factory, model_name="m", rest_api_timeout_in_ms=100,
                                  model_base_path=str(model_dir(tmp_path, 1))) as s:
            status, body = await s.post("/v1/models/m:predict", {"instances": [[1.0]]})
            assert status == 504 and body["error"]
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "m"
            tensor_codec.from_ndarray(np.array([[1.0]], np.float32), request.inputs["x"], as_tensor_content=True)
            async with grpc.aio.insecure_channel(s.grpc_target) as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.Predict(request, timeout=0.1)
                assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                response = await stub.Predict(request, timeout=10)  # and the server still serves
                assert list(response.outputs["y"].float_val) == [2.5]

    asyncio.run(main())


def test_a_rest_caller_can_send_its_own_deadline(tmp_path: Path) -> None:
    factory = FakeLoaderFactory(servable_for=lambda _id: FakeServable(delay=0.5))
    body = {"instances": [[1.0]]}

    async def main() -> None:
        async with running_server(loader_factory=factory, model_name="m",
                                  model_base_path=str(model_dir(tmp_path, 1))) as s:
            for header in ("X-Request-Timeout-Ms", "x-envoy-expected-rq-timeout-ms"):
                status, answer, _ = await s.request("POST", "/v1/models/m:predict", body, headers={header: "100"})
                assert status == 504 and answer["error"], header
            for bad in ("abc", "0", "-5", "1.5", "²", "9" * 13):
                status, answer, _ = await s.request(
                    "POST", "/v1/models/m:predict", body, headers={"X-Request-Timeout-Ms": bad}
                )
                assert status == 400 and "X-Request-Timeout-Ms must be a positive whole number" in answer["error"]
            status, answer, _ = await s.request(  # the shortest of the two wins
                "POST", "/v1/models/m:predict", body,
                headers={"X-Request-Timeout-Ms": "20000", "x-envoy-expected-rq-timeout-ms": "100"},
            )
            assert status == 504
            status, answer, _ = await s.request(
                "POST", "/v1/models/m:predict", body, headers={"X-Request-Timeout-Ms": "20000"}
            )
            assert status == 200 and answer == {"predictions": [[2.5]]}

    asyncio.run(main())
