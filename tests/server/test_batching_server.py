"""Batching through the real frontends: REST and gRPC callers share one queue (issue 5)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from mlsrv.config_loader import load_config
from mlsrv.errors import ConfigError
from mlsrv.protocol import tensor_codec
from mlsrv.server.app import Server
from mlsrv.server.ids import ServableId
from tests.fakes import FakeLoaderFactory, FakeServable
from tests.server.harness import running_server, server_flags
from tests.server.test_rest_fake import model_dir


def write_params(tmp_path: Path, text: str) -> str:
    path = tmp_path / "batching.txt"
    path.write_text(text)
    return str(path)


def test_concurrent_rest_and_grpc_requests_share_batches(tmp_path: Path) -> None:
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    servable = FakeServable(delay=0.02)
    factory = FakeLoaderFactory(servable_for=lambda _id: servable)
    params = write_params(tmp_path, "max_batch_size { value: 64 } batch_timeout_micros { value: 5000 } "
                                    "num_batch_threads { value: 1 }")

    async def rest_call(s: Any, value: float) -> None:
        status, body = await s.post("/v1/models/m:predict", {"instances": [[value], [value + 1]]})
        assert status == 200 and body == {"predictions": [[value / 2 + 2], [(value + 1) / 2 + 2]]}

    async def grpc_call(stub: Any, value: float) -> None:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "m"
        tensor_codec.from_ndarray(np.array([[value]], np.float32), request.inputs["x"], as_tensor_content=True)
        response = await stub.Predict(request)
        assert tensor_codec.to_ndarray(response.outputs["y"]).tolist() == [[value / 2 + 2]]

    async def main() -> None:
        async with running_server(loader_factory=factory, model_name="m", enable_batching=True,
                                  batching_parameters_file=params,
                                  model_base_path=str(model_dir(tmp_path, 1))) as s:
            async with grpc.aio.insecure_channel(s.grpc_target) as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                calls = [rest_call(s, float(i)) for i in range(0, 40, 2)]
                calls += [grpc_call(stub, float(100 + i)) for i in range(20)]
                await asyncio.wait_for(asyncio.gather(*calls), 60)
            assert sum(servable.batch_sizes) == 60  # every row ran exactly once
            assert len(servable.batch_sizes) < 20  # 40 requests became far fewer model calls
            stats = next(iter(s.server.batching.stats().values()))  # type: ignore[union-attr]
            assert stats.input_rows >= 60

    asyncio.run(main())


def test_full_queue_answers_503_and_unavailable(tmp_path: Path) -> None:
    servable = FakeServable(delay=0.3)
    factory = FakeLoaderFactory(servable_for=lambda _id: servable)
    params = write_params(tmp_path, "max_batch_size { value: 1 } max_enqueued_batches { value: 1 } "
                                    "num_batch_threads { value: 1 }")

    async def main() -> None:
        async with running_server(loader_factory=factory, model_name="m", enable_batching=True,
                                  batching_parameters_file=params,
                                  model_base_path=str(model_dir(tmp_path, 1))) as s:
            results = await asyncio.gather(
                *(s.post("/v1/models/m:predict", {"instances": [[1.0]]}) for _ in range(6)))
            statuses = sorted(status for status, _ in results)
            assert 503 in statuses and 200 in statuses
            full = next(body for status, body in results if status == 503)
            assert "The batch scheduling queue to which this task was submitted is full" in full["error"]
            assert await s.post("/v1/models/m:predict", {"instances": [[2.0]]}) == (200, {"predictions": [[3.0]]})

    asyncio.run(main())


def test_failing_batch_fails_its_callers_then_recovers(tmp_path: Path) -> None:
    servable = FakeServable(delay=0.05)
    factory = FakeLoaderFactory(servable_for=lambda _id: servable)

    async def main() -> None:
        async with running_server(loader_factory=factory, model_name="m", enable_batching=True,
                                  model_base_path=str(model_dir(tmp_path, 1))) as s:
            servable.error = RuntimeError("boom")
            results = await asyncio.gather(*(s.post("/v1/models/m:predict", {"instances": [[1.0]]})
                                             for _ in range(4)))
            assert all(status == 500 and "boom" in body["error"] for status, body in results)
            servable.error = None
            assert await s.post("/v1/models/m:predict", {"instances": [[1.0]]}) == (200, {"predictions": [[2.5]]})

    asyncio.run(main())


def test_reference_batching_file_loads_unchanged(tmp_path: Path, reference_dir: Path) -> None:
    config = load_config(server_flags(model_base_path=str(model_dir(tmp_path, 1)), enable_batching=True,
                                      batching_parameters_file=str(reference_dir / "batching_config.txt")))
    server = Server(config, loader_factory=FakeLoaderFactory())
    options = server.batching._options_for(ServableId("m", 1))  # type: ignore[union-attr]
    assert options is not None and options.max_batch_size == 128 and options.max_enqueued_batches == 1000000


def test_bad_allowed_batch_sizes_fails_startup(tmp_path: Path) -> None:
    params = write_params(tmp_path, "max_batch_size { value: 8 } allowed_batch_sizes: 2 allowed_batch_sizes: 4")
    config = load_config(server_flags(model_base_path=str(model_dir(tmp_path, 1)), enable_batching=True,
                                      batching_parameters_file=params))
    with pytest.raises(ConfigError, match="Last entry in allowed_batch_sizes must match max_batch_size; "
                                          "last entry was 4; expected 8"):
        Server(config, loader_factory=FakeLoaderFactory())
