"""A minimal, independent gRPC load driver for cross-checking ``mlsrv bench --protocol grpc``.

Closed loop: ``--concurrency`` coroutines each send one pre-built ``PredictRequest`` at a time over one
channel with the official stubs, for ``--duration`` seconds (hard bounded). Prints one JSON line:
requests/s, p50/p99 in ms, error count. Deliberately tiny so its numbers are easy to trust.

    python bench/grpc_load.py --target 127.0.0.1:8500 --model half_plus_two --input x --shape 1,1 -c 32 -d 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import grpc
import numpy as np


async def run(args: argparse.Namespace) -> dict[str, float]:
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from mlsrv.protocol import tensor_codec

    shape = tuple(int(d) for d in args.shape.split(","))
    request = predict_pb2.PredictRequest()
    request.model_spec.name = args.model
    data = np.random.default_rng(0).random(shape, dtype=np.float32)
    tensor_codec.from_ndarray(data, request.inputs[args.input], as_tensor_content=True)
    latencies: list[float] = []
    errors = 0
    options = [("grpc.max_receive_message_length", 2**31 - 1), ("grpc.max_send_message_length", 2**31 - 1)]
    async with grpc.aio.insecure_channel(args.target, options=options) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        await stub.Predict(request, timeout=30)  # connect + first-call warmup, not measured
        stop_at = time.perf_counter() + args.duration

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                try:
                    await stub.Predict(request, timeout=10)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(args.concurrency))), args.duration + 30)
        elapsed = time.perf_counter() - began
    ms = np.array(latencies) * 1000.0
    return {
        "concurrency": args.concurrency,
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--input", default="x")
    parser.add_argument("--shape", default="1,1")
    parser.add_argument("-c", "--concurrency", type=int, default=1)
    parser.add_argument("-d", "--duration", type=float, default=10.0)
    print(json.dumps(asyncio.run(run(parser.parse_args()))))


if __name__ == "__main__":
    main()
