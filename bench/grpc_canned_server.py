"""The ceiling of Python gRPC on this machine: a ``grpc.aio`` PredictionService that returns a canned
response without decoding the request or running a model. Load it with bench/grpc_load.py to see how
much of mlsrv's gRPC cost is the framework itself (docs/benchmarks.md, batching section).

    python bench/grpc_canned_server.py --port 19700 --seconds 30 &
    python bench/grpc_load.py --target 127.0.0.1:19700 --model any -c 32 -d 10
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import grpc
import numpy as np


async def serve(port: int, seconds: float) -> None:
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from mlsrv.protocol import tensor_codec

    canned = predict_pb2.PredictResponse()
    tensor_codec.from_ndarray(np.array([[2.5]], np.float32), canned.outputs["y"], as_tensor_content=False)

    class Canned(prediction_service_pb2_grpc.PredictionServiceServicer):  # type: ignore[misc]
        async def Predict(self, request: Any, context: Any) -> Any:  # noqa: N802
            return canned

    server = grpc.aio.server()
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Canned(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await asyncio.sleep(seconds)  # bounded: the benchmark server stops by itself
    await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=19700)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.seconds))


if __name__ == "__main__":
    main()
