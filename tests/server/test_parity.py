"""REST vs gRPC parity on every bundled example model and every signature, with real TensorFlow.

The same inputs go through gRPC Predict (``tensor_content`` and typed fields) and REST predict (row and
columnar, bytes as ``{"b64": ...}``); every output must be equal, exactly, once the JSON is read back as
the gRPC tensor's dtype. Classify and regress signatures are also compared through Classify/Regress and
``:classify``/``:regress``, and MultiInference.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    inference_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from mlsrv.protocol import tensor_codec
from tests.server.harness import Running
from tests.server.test_reference_rest import BackgroundServer

pytestmark = pytest.mark.tf

MODELS = ("half_plus_two", "mlp_classifier", "string_input", "multi_io", "slow")
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"
INIT_OP = "__saved_model_init_op"


def example(x: list[float]) -> bytes:
    features = tf.train.Features(feature={"x": tf.train.Feature(float_list=tf.train.FloatList(value=x))})
    return bytes(tf.train.Example(features=features).SerializeToString())


ONE_X = [[1.0], [5.0], [1 / 3]]
FOUR_X = [[0.1, 0.2, 0.3, 0.4], [1.0, -1.0, 2.0, 0.5], [1 / 3, 2 / 3, 1e-9, 7e5]]


def examples(rows: list[list[float]]) -> np.ndarray:
    out = np.empty(len(rows), dtype=object)
    out[:] = [example(row) for row in rows]
    return out


def strings(*items: bytes) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = list(items)
    return out


#: Inputs for every (model, signature); ``test_samples_cover_every_signature`` keeps this complete.
SAMPLES: dict[tuple[str, str], dict[str, np.ndarray]] = {
    ("half_plus_two", "serving_default"): {"x": np.array(ONE_X, np.float32)},
    ("half_plus_two", "classify_x_to_y"): {"inputs": examples(ONE_X)},
    ("half_plus_two", "regress_x_to_y"): {"inputs": examples(ONE_X)},
    ("half_plus_two", "regress_x_to_y2"): {"inputs": examples(ONE_X)},
    ("mlp_classifier", "serving_default"): {"x": np.array(FOUR_X, np.float32)},
    ("mlp_classifier", "classify"): {"inputs": examples(FOUR_X)},
    ("string_input", "serving_default"): {"text": strings(b"hello", b"", "Gr\u00fc\u00dfe".encode(), b"\xff\x00")},
    ("multi_io", "serving_default"): {
        "a": np.array([[1.5, 2.0], [0.0, -1.0], [1 / 3, 1e30]], np.float32),
        "b": np.array([3, -4, 2**40], np.int64),
        "c": strings(b"abc", b"", b"\xc3\xa9"),
    },
    ("slow", "serving_default"): {"x": np.array([[1.0], [-2.5]], np.float32)},
}
#: Signatures that also serve Classify/Regress, with the features of their examples.
EXAMPLE_SIGNATURES: dict[tuple[str, str], tuple[str, list[list[float]]]] = {
    ("half_plus_two", "classify_x_to_y"): (CLASSIFY, ONE_X),
    ("half_plus_two", "regress_x_to_y"): (REGRESS, ONE_X),
    ("half_plus_two", "regress_x_to_y2"): (REGRESS, ONE_X),
    ("mlp_classifier", "classify"): (CLASSIFY, FOUR_X),
}


@pytest.fixture(scope="module")
def server(examples_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    config = tmp_path_factory.mktemp("parity") / "models.config"
    config.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{m}" base_path: "{examples_dir / m}" model_platform: "tensorflow" }}\n' for m in MODELS
    ) + "}\n")
    with BackgroundServer(model_config_file=str(config)) as background:
        yield background


def rpc(server: BackgroundServer, method: str, request: Any) -> Any:
    async def call(_: Running, channel: grpc.aio.Channel) -> Any:
        return await getattr(prediction_service_pb2_grpc.PredictionServiceStub(channel), method)(request, timeout=30)

    return server.call(call)


def test_samples_cover_every_signature(server: BackgroundServer) -> None:
    served = set()
    for model in MODELS:
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = model
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        assert rpc(server, "GetModelMetadata", request).metadata["signature_def"].Unpack(signature_map)
        served |= {(model, name) for name in signature_map.signature_def if name != INIT_OP}
        for (m, name), (method, _) in EXAMPLE_SIGNATURES.items():
            if m == model:
                assert signature_map.signature_def[name].method_name == method
    assert served == set(SAMPLES)


# -- Predict -------------------------------------------------------------------------------------------------


def grpc_predict(server: BackgroundServer, model: str, signature: str, inputs: dict[str, np.ndarray],
                 tensor_content: bool) -> dict[str, np.ndarray]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    for alias, array in inputs.items():
        if tensor_content:
            request.inputs[alias].CopyFrom(tf.make_tensor_proto(array))
        else:
            tensor_codec.from_ndarray(array, request.inputs[alias], as_tensor_content=False)
    response = rpc(server, "Predict", request)
    assert response.model_spec.signature_name == signature
    return {alias: tf.make_ndarray(tensor) for alias, tensor in response.outputs.items()}


def json_value(array: np.ndarray) -> Any:
    """A tensor as TF Serving's REST API takes it: numbers as they are, bytes as ``{"b64": ...}``."""
    if array.dtype == object:
        flat = [{"b64": base64.b64encode(item).decode()} for item in array.ravel()]
        out = np.empty(len(flat), dtype=object)
        out[:] = flat
        return out.reshape(array.shape).tolist()
    return array.tolist()


def from_json(value: Any, like: np.ndarray, alias: str) -> np.ndarray:
    """A REST output read back as the gRPC output's dtype; ``_bytes`` aliases come as b64."""
    if like.dtype == object:
        def leaf(item: Any) -> bytes:
            if alias.endswith("_bytes"):
                assert set(item) == {"b64"}
                return base64.b64decode(item["b64"])
            return str(item).encode("utf-8")

        flat = [leaf(item) for item in np.array(value, dtype=object).ravel()]
        out = np.empty(len(flat), dtype=object)
        out[:] = flat
        return out.reshape(like.shape)
    return np.array(value).astype(like.dtype)


def rest_predict(server: BackgroundServer, model: str, signature: str, inputs: dict[str, np.ndarray],
                 row: bool) -> Any:
    body: dict[str, Any] = {"signature_name": signature}
    if row:
        columns = {alias: json_value(array) for alias, array in inputs.items()}
        size = len(next(iter(inputs.values())))
        if len(columns) == 1:
            body["instances"] = next(iter(columns.values()))
        else:
            body["instances"] = [{alias: column[i] for alias, column in columns.items()} for i in range(size)]
    else:
        body["inputs"] = {alias: json_value(array) for alias, array in inputs.items()}
    status, parsed, _ = server.rest("POST", f"/v1/models/{model}:predict", body)
    assert status == 200, parsed
    return parsed


def rest_outputs(parsed: Any, like: dict[str, np.ndarray], row: bool) -> dict[str, np.ndarray]:
    names = sorted(like)
    if row:
        rows = parsed["predictions"]
        if len(names) == 1:
            return {names[0]: from_json(rows, like[names[0]], names[0])}
        assert all(sorted(item) == names for item in rows)
        return {name: from_json([item[name] for item in rows], like[name], name) for name in names}
    outputs = parsed["outputs"]
    if len(names) == 1:
        return {names[0]: from_json(outputs, like[names[0]], names[0])}
    assert sorted(outputs) == names
    return {name: from_json(outputs[name], like[name], name) for name in names}


@pytest.mark.parametrize(("model", "signature"), sorted(SAMPLES))
def test_predict_parity(server: BackgroundServer, model: str, signature: str) -> None:
    inputs = SAMPLES[(model, signature)]
    reference = grpc_predict(server, model, signature, inputs, tensor_content=True)
    assert reference and all(len(array) == len(next(iter(inputs.values()))) for array in reference.values())
    typed = grpc_predict(server, model, signature, inputs, tensor_content=False)
    assert typed.keys() == reference.keys()
    for alias, array in reference.items():
        np.testing.assert_array_equal(typed[alias], array)
        assert typed[alias].dtype == array.dtype
    for row in (True, False):
        got = rest_outputs(rest_predict(server, model, signature, inputs, row), reference, row)
        for alias, array in reference.items():
            assert got[alias].shape == array.shape, (alias, row)
            np.testing.assert_array_equal(got[alias], array, err_msg=f"{alias} row={row}")


# -- Classify / Regress / MultiInference ------------------------------------------------------------------------


def grpc_examples(server: BackgroundServer, model: str, signature: str, method: str,
                  rows: list[list[float]]) -> list[Any]:
    kind = classification_pb2.ClassificationRequest if method == CLASSIFY else regression_pb2.RegressionRequest
    request = kind()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    for row in rows:
        request.input.example_list.examples.add().ParseFromString(example(row))
    response = rpc(server, "Classify" if method == CLASSIFY else "Regress", request)
    assert (response.model_spec.name, response.model_spec.signature_name) == (model, signature)
    return results_of(response.result, method)


def results_of(result: Any, method: str) -> list[Any]:
    if method == CLASSIFY:
        return [[(c.label, c.score) for c in row.classes] for row in result.classifications]
    return [r.value for r in result.regressions]


@pytest.mark.parametrize(("model", "signature"), sorted(EXAMPLE_SIGNATURES))
def test_classify_regress_parity(server: BackgroundServer, model: str, signature: str) -> None:
    method, rows = EXAMPLE_SIGNATURES[(model, signature)]
    reference = grpc_examples(server, model, signature, method, rows)
    assert len(reference) == len(rows)
    verb = "classify" if method == CLASSIFY else "regress"
    body = {"signature_name": signature, "examples": [{"x": [float(np.float32(v)) for v in row]} for row in rows]}
    status, parsed, _ = server.rest("POST", f"/v1/models/{model}:{verb}", body)
    assert status == 200, parsed
    got: list[Any]
    if method == CLASSIFY:
        got = [[(label, float(np.float32(score))) for label, score in row] for row in parsed["results"]]
    else:
        got = [float(np.float32(value)) for value in parsed["results"]]
    assert got == reference

    # The same signature through Predict gives the same numbers (scores/outputs as float32 tensors).
    outputs = grpc_predict(server, model, signature, SAMPLES[(model, signature)], tensor_content=True)
    if method == CLASSIFY:
        assert [[score for _, score in row] for row in reference] == outputs["scores"].tolist()
    else:
        assert reference == outputs["outputs"].reshape(-1).tolist()

    # MultiInference with this one task answers as the single call does.
    request = inference_pb2.MultiInferenceRequest()
    task = request.tasks.add()
    task.model_spec.name, task.model_spec.signature_name, task.method_name = model, signature, method
    for row in rows:
        request.input.example_list.examples.add().ParseFromString(example(row))
    (result,) = rpc(server, "MultiInference", request).results
    inner = result.classification_result if method == CLASSIFY else result.regression_result
    assert results_of(inner, method) == reference


def test_signature_shape_errors_follow_tf_order(server: BackgroundServer) -> None:
    """Output counts are checked before the ``inputs`` key, with TF's messages, on both protocols."""
    body = {"signature_name": "classify", "examples": [{"x": [0.1, 0.2, 0.3, 0.4]}]}
    assert server.rest("POST", "/v1/models/mlp_classifier:regress", body)[:2] == (
        400, {"error": "Expected one output Tensor."})
    request = regression_pb2.RegressionRequest()
    request.model_spec.name, request.model_spec.signature_name = "mlp_classifier", "classify"
    request.input.example_list.examples.add().ParseFromString(example([0.1, 0.2, 0.3, 0.4]))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        rpc(server, "Regress", request)
    assert (raised.value.code(), raised.value.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT, "Expected one output Tensor.")
