"""TF Lite models with ``--prefer_tflite_model``: TF Serving's reference models and one the tests convert.

As TF Serving's integration tests (``testPredictOnTfLite``, ``testPredictWithSignatureDefOnTfLite``):
a Predict of ``x = [2.0]`` answers ``y = [3.0]``, with and without an output filter; plus REST,
metadata, status, batching, and the model without signature metadata getting TF Serving's default
signature.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from mlsrv.protocol import tensor_codec
from tests.server.harness import Running, running_server

pytestmark = pytest.mark.tf


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """half_plus_two converted by the tests: input ``x`` [-1, 1], output ``y``, no signature metadata."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
    def half_plus_two(x: Any) -> Any:
        return tf.identity(0.5 * x + 2.0, name="y")

    converter = tf.lite.TFLiteConverter.from_concrete_functions([half_plus_two.get_concrete_function()])
    base = tmp_path_factory.mktemp("tflite") / "m"
    (base / "1").mkdir(parents=True)
    (base / "1" / "model.tflite").write_bytes(converter.convert())
    return base


async def grpc_predict(s: Running, value: Any, *, output_filter: tuple[str, ...] = ()) -> Any:
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    request.inputs["x"].dtype = 1  # DT_FLOAT, as TF Serving's test builds it
    request.inputs["x"].float_val.append(value)
    request.inputs["x"].tensor_shape.dim.add().size = 1
    request.output_filter.extend(output_filter)
    async with grpc.aio.insecure_channel(s.grpc_target) as channel:
        return await prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)


@pytest.mark.parametrize("model", ["saved_model_half_plus_two_tflite", "saved_model_half_plus_two_tflite_with_sigdef"])
def test_tf_servings_tflite_models_predict_as_in_its_integration_test(reference_dir: Path, model: str) -> None:
    async def main() -> None:
        async with running_server(model_name="m", model_base_path=str(reference_dir / model),
                                  prefer_tflite_model=True) as s:  # fmt: skip
            for output_filter in (("y",), ()):
                response = await grpc_predict(s, 2.0, output_filter=output_filter)
                assert list(response.outputs) == ["y"]
                assert response.outputs["y"].dtype == 1
                assert list(tensor_codec.to_ndarray(response.outputs["y"]).ravel()) == [3.0]
                assert response.model_spec.version.value == 123
                assert response.model_spec.signature_name == "serving_default"
            status, body = await s.post("/v1/models/m:predict", {"instances": [[1.0], [2.0]]})
            assert (status, body) == (200, {"predictions": [[2.5], [3.0]]})
            status, metadata = await s.get("/v1/models/m/metadata")
            signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
            assert list(signature["inputs"]) == ["x"] and list(signature["outputs"]) == ["y"]
            if model.endswith("with_sigdef"):  # the SignatureDef stored in the model's metadata
                assert signature["inputs"]["x"]["name"] == "tflite_input:0"

    asyncio.run(main())


def test_a_model_with_a_custom_op_the_interpreter_lacks_fails_to_load_clearly(reference_dir: Path) -> None:
    from mlsrv.errors import LoadError
    from mlsrv.server.tflite import TfLiteLoader

    with pytest.raises(LoadError, match="ParseExample"):
        TfLiteLoader(str(reference_dir / "parse_example_tflite" / "00000123")).load()


@pytest.mark.parametrize("batching", [False, True])
def test_a_converted_model_gets_tf_servings_default_signature(converted: Path, batching: bool) -> None:
    async def main() -> None:
        async with running_server(model_name="m", model_base_path=str(converted), prefer_tflite_model=True,
                                  enable_batching=batching, num_tflite_pools=2) as s:  # fmt: skip
            status, metadata = await s.get("/v1/models/m/metadata")
            signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
            assert [d["size"] for d in signature["inputs"]["x"]["tensor_shape"]["dim"]] == ["-1", "1"]
            assert signature["method_name"] == "tensorflow/serving/predict"
            [output] = list(signature["outputs"])
            answers = await asyncio.gather(*(s.post("/v1/models/m:predict", {"inputs": {"x": [[float(i)]] * (i + 1)}})
                                             for i in range(8)))  # fmt: skip
            for i, (status, body) in enumerate(answers):
                assert status == 200, body
                np.testing.assert_allclose(np.asarray(body["outputs"]), [[0.5 * i + 2.0]] * (i + 1))
            status, body = await s.get("/v1/models/m")
            assert body["model_version_status"][0]["state"] == "AVAILABLE"
            assert output

    asyncio.run(main())


def test_without_the_flag_a_tflite_only_folder_is_not_a_saved_model(converted: Path, tmp_path: Path) -> None:
    """TF Serving loads model.tflite only with --prefer_tflite_model; else it wants saved_model.pb."""
    shutil.copytree(converted, tmp_path / "m")
    from mlsrv.errors import UnknownError

    async def main() -> None:
        async with running_server(model_name="m", model_base_path=str(tmp_path / "m")):
            raise AssertionError("started")

    with pytest.raises(UnknownError, match="does not appear to contain a SavedModel bundle"):
        asyncio.run(main())
