"""Stress (bounded to well under a minute): mixed REST and gRPC clients with batching on and a version
swap in the middle must see zero failed requests and zero mismatched rows (issue 5)."""

from __future__ import annotations

import asyncio
import random
import shutil
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from mlsrv.protocol import tensor_codec
from tests.fakes import FakeLoaderFactory, FakeServable
from tests.server.harness import Running, running_server
from tests.server.test_lifecycle_server import version

DURATION_S = 6.0
MAX_REQUESTS_PER_CLIENT = 2000


def expected(rows: np.ndarray, offset: float) -> np.ndarray:
    return (rows * np.float32(0.5) + np.float32(offset)).astype(np.float32)


def test_mixed_clients_through_a_version_swap(tmp_path: Path) -> None:
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    base = tmp_path / "m"
    version(base, 1)
    params = tmp_path / "batching.txt"
    params.write_text("max_batch_size { value: 32 } batch_timeout_micros { value: 2000 } "
                      "max_enqueued_batches { value: 1000 } num_batch_threads { value: 1 }")
    factory = FakeLoaderFactory(servable_for=lambda sid: FakeServable(offset=float(sid.version), delay=0.001))
    failures: list[str] = []
    served: dict[int, int] = {1: 0, 2: 0}

    def check(rows: np.ndarray, got: np.ndarray) -> None:
        for offset in (1.0, 2.0):
            if got.shape == rows.shape and np.array_equal(got, expected(rows, offset)):
                served[int(offset)] += 1
                return
        failures.append(f"mismatch: sent {rows.ravel()[:3]} got {got.ravel()[:3]}")

    async def rest_client(s: Running, seed: int, stop_at: float) -> None:
        rng = random.Random(seed)
        for _ in range(MAX_REQUESTS_PER_CLIENT):
            if time.monotonic() > stop_at:
                return
            rows = np.array([[rng.randrange(1000)] for _ in range(rng.randrange(1, 5))], np.float32)
            status, body = await s.post("/v1/models/m:predict", {"instances": rows.tolist()})
            if status != 200:
                failures.append(f"REST {status}: {body}")
                continue
            check(rows, np.array(body["predictions"], np.float32))

    async def grpc_client(stub: Any, seed: int, stop_at: float) -> None:
        rng = random.Random(seed)
        for _ in range(MAX_REQUESTS_PER_CLIENT):
            if time.monotonic() > stop_at:
                return
            rows = np.array([[rng.randrange(1000)] for _ in range(rng.randrange(1, 5))], np.float32)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "m"
            tensor_codec.from_ndarray(rows, request.inputs["x"], as_tensor_content=True)
            try:
                response = await stub.Predict(request, timeout=10)
            except grpc.aio.AioRpcError as error:
                failures.append(f"gRPC {error.code()}: {error.details()}")
                continue
            check(rows, tensor_codec.to_ndarray(response.outputs["y"]))

    async def swap(stop_at: float) -> None:
        await asyncio.sleep(DURATION_S / 3)
        version(base, 2)  # the poller loads 2, then unloads 1 once 2 is AVAILABLE
        await asyncio.sleep(DURATION_S / 3)
        shutil.rmtree(base / "1", ignore_errors=True)

    async def main() -> None:
        async with running_server(loader_factory=factory, model_name="m", model_base_path=str(base),
                                  file_system_poll_wait_seconds=0.05, enable_batching=True,
                                  batching_parameters_file=str(params)) as s:
            async with grpc.aio.insecure_channel(s.grpc_target) as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                stop_at = time.monotonic() + DURATION_S
                clients = [rest_client(s, i, stop_at) for i in range(8)]
                clients += [grpc_client(stub, 100 + i, stop_at) for i in range(8)]
                await asyncio.wait_for(asyncio.gather(swap(stop_at), *clients), DURATION_S + 30)

    asyncio.run(main())
    assert failures == [], failures[:5]
    assert served[1] > 0 and served[2] > 0, served  # both versions answered: the swap happened mid-run
