"""Reference: a bare ``grpc.aio`` PredictionService over one SavedModel, for issue #11's ratios.

The same micro-batcher as ``bare_rest.py`` (<= 32 rows or 2 ms, one model thread), the official
TF Serving protos, dense ``tensor_content`` / ``float_val`` inputs of the model's one input, and
``tensor_content`` outputs. No model spec checks, no versions, no metrics, no error mapping.

    python bench/reference/bare_grpc.py --model-dir examples/models/half_plus_two/00000123 --port 8600
    python bench/reference/bare_grpc.py --canned ... # answer a fixed response, decode nothing, run nothing
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from pathlib import Path

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bare_rest import MicroBatcher, load  # noqa: E402


def to_tensor_proto(array: np.ndarray, proto: object) -> None:
    proto.dtype = tf.as_dtype(array.dtype).as_datatype_enum  # type: ignore[attr-defined]
    proto.tensor_shape.dim.extend(  # type: ignore[attr-defined]
        [proto.tensor_shape.Dim(size=d) for d in array.shape])  # type: ignore[attr-defined]
    proto.tensor_content = np.ascontiguousarray(array).tobytes()  # type: ignore[attr-defined]


async def serve(args: argparse.Namespace) -> None:
    function, input_name, dtype = load(args.model_dir)
    numpy_dtype = dtype.as_numpy_dtype

    def run(rows: np.ndarray) -> dict[str, np.ndarray]:
        return {key: value.numpy() for key, value in function(**{input_name: tf.constant(rows, dtype)}).items()}

    run(np.zeros((1, *function.structured_input_signature[1][input_name].shape[1:]), numpy_dtype))
    batcher = MicroBatcher(run)
    canned = predict_pb2.PredictResponse()
    to_tensor_proto(np.array([[2.5]], np.float32), canned.outputs["y"])

    class Bare(prediction_service_pb2_grpc.PredictionServiceServicer):  # type: ignore[misc]
        async def Predict(self, request: predict_pb2.PredictRequest, context: object) -> object:  # noqa: N802
            if args.canned:
                return canned
            tensor = request.inputs[input_name]
            shape = [d.size for d in tensor.tensor_shape.dim]
            if tensor.tensor_content:
                rows = np.frombuffer(tensor.tensor_content, numpy_dtype).reshape(shape)
            else:
                rows = np.array(tensor.float_val, numpy_dtype).reshape(shape)
            outputs = await batcher.submit(rows)
            response = predict_pb2.PredictResponse()
            for key, value in outputs.items():
                to_tensor_proto(value, response.outputs[key])
            return response

    server = grpc.aio.server(options=[("grpc.max_receive_message_length", -1)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Bare(), server)
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    loop_task = asyncio.create_task(batcher.loop())
    gc.freeze()
    await server.start()
    try:
        await server.wait_for_termination()
    finally:
        loop_task.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--canned", action="store_true")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
