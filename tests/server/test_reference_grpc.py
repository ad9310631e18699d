"""gRPC against TF Serving's reference models with the official stubs and real TensorFlow (spec 3, 3.3).

Requests are built with ``tf.make_tensor_proto``, by hand (typed fields) and with our tensor_codec.
Each error case of 3.3 also has its REST twin, which must answer with the HTTP status of the same code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from mlsrv.errors import HTTP_STATUS, Code
from mlsrv.protocol import tensor_codec
from tests.server.harness import Running
from tests.server.test_reference_rest import BackgroundServer, M, reference_config

pytestmark = pytest.mark.tf

CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"


@pytest.fixture(scope="module")
def server(reference_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    config = reference_config(reference_dir, tmp_path_factory.mktemp("grpc"))
    # The flag makes the label config valid for TF Serving too, which checks labels before loading (4.2).
    with BackgroundServer(model_config_file=config, allow_version_labels_for_unavailable_models=True) as background:
        yield background


def rpc(server: BackgroundServer, method: str, request: Any) -> Any:
    """Call ``method`` with the official stub on the module's channel."""

    async def call(_: Running, channel: grpc.aio.Channel) -> Any:
        stub_class = model_service_pb2_grpc.ModelServiceStub if method == "GetModelStatus" else (
            prediction_service_pb2_grpc.PredictionServiceStub)
        return await getattr(stub_class(channel), method)(request, timeout=30)

    return server.call(call)


def rpc_error(server: BackgroundServer, method: str, request: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        rpc(server, method, request)
    return info.value.code(), info.value.details() or ""


def set_spec(pb: Any, name: str, *, version: int | None = None, label: str | None = None,
             signature: str | None = None) -> None:
    pb.name = name
    if version is not None:
        pb.version.value = version
    if label is not None:
        pb.version_label = label
    if signature is not None:
        pb.signature_name = signature


# -- tensors, four ways -----------------------------------------------------------------------------------


def typed_by_hand(array: np.ndarray) -> Any:
    proto = tf.make_tensor_proto(np.zeros(0, np.float32))
    proto.Clear()
    proto.dtype = tf.float32.as_datatype_enum
    for size in array.shape:
        proto.tensor_shape.dim.add().size = size
    proto.float_val.extend(array.ravel().tolist())
    return proto


def via_codec(as_tensor_content: bool) -> Callable[[np.ndarray], Any]:
    def build(array: np.ndarray) -> Any:
        proto = predict_pb2.PredictRequest().inputs["x"]
        tensor_codec.from_ndarray(array, proto, as_tensor_content=as_tensor_content)
        return proto

    return build


BUILDERS: dict[str, Callable[[np.ndarray], Any]] = {
    "make_tensor_proto": lambda array: tf.make_tensor_proto(array),
    "typed_fields": typed_by_hand,
    "codec_tensor_content": via_codec(True),
    "codec_typed": via_codec(False),
}


def test_builders_cover_both_layouts() -> None:
    x = np.array([[1.0], [2.0]], np.float32)
    assert BUILDERS["make_tensor_proto"](x).tensor_content and BUILDERS["codec_tensor_content"](x).tensor_content
    assert not BUILDERS["typed_fields"](x).tensor_content and list(BUILDERS["codec_typed"](x).float_val) == [1, 2]


# -- Predict -------------------------------------------------------------------------------------------------

#: (model, spec options, x, expected version, output_filter); y = x/2 + 2 (half_plus_three: + 3).
PREDICT = [
    ("default", {}, [[1.0], [2.0]], 123, ["y"]),
    ("default", {}, [[1.0], [2.0]], 123, []),
    ("default", {}, [2.0, 3.0, 4.0], 123, ["y"]),  # no batch dimension
    ("default", {}, 2.0, 123, []),  # a scalar
    ("tf2", {}, [[1.0], [5.0]], 123, ["y"]),
    ("tf2", {}, [1.0, 5.0], 123, []),
    (M, {"version": 123}, [[1.0]], 123, []),
    (M, {"label": "Version_Label"}, [[1.0]], 123, ["y"]),
    ("both", {"label": "canary"}, [[1.0]], 124, []),
    ("both", {"version": 123, "signature": "serving_default"}, [[1.0]], 123, []),
    ("both", {}, [[1.0]], 124, []),  # latest
    ("half_plus_three", {}, [[1.0], [5.0]], 123, []),
]


@pytest.mark.parametrize("builder", sorted(BUILDERS))
@pytest.mark.parametrize(("model", "spec", "x", "version", "output_filter"), PREDICT)
def test_predict(server: BackgroundServer, builder: str, model: str, spec: dict[str, Any], x: Any,
                 version: int, output_filter: list[str]) -> None:
    request = predict_pb2.PredictRequest()
    set_spec(request.model_spec, model, **spec)
    array = np.array(x, np.float32)
    request.inputs["x"].CopyFrom(BUILDERS[builder](array))
    request.output_filter.extend(output_filter)
    response = rpc(server, "Predict", request)
    assert list(response.outputs) == ["y"]
    y = response.outputs["y"]
    assert y.dtype == tf.float32.as_datatype_enum
    assert not y.tensor_content and len(y.float_val) == array.size  # typed fields, as TF Serving's default
    expected = array / 2 + (3 if model == "half_plus_three" else 2)
    np.testing.assert_array_equal(tf.make_ndarray(y), expected)
    np.testing.assert_array_equal(tensor_codec.to_ndarray(y), expected)
    assert (response.model_spec.name, response.model_spec.version.value) == (model, version)
    assert response.model_spec.signature_name == "serving_default"


def test_predict_strings_and_several_inputs(server: BackgroundServer) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "multi_io"
    request.inputs["a"].CopyFrom(tf.make_tensor_proto(np.array([[1.5, 2.0], [0.0, -1.0]], np.float32)))
    request.inputs["b"].CopyFrom(tf.make_tensor_proto(np.array([3, -4], np.int64)))
    request.inputs["c"].CopyFrom(tf.make_tensor_proto([b"abc", b""]))
    request.output_filter.extend(["sum", "flag"])
    response = rpc(server, "Predict", request)
    assert sorted(response.outputs) == ["flag", "sum"]
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["sum"]), np.array([6.5, -5.0]))
    assert list(response.outputs["flag"].bool_val) == [True, False]
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "string_input"
    request.inputs["text"].CopyFrom(tf.make_tensor_proto(np.array([b"hello", "w\u00f6rld".encode()], object)))
    response = rpc(server, "Predict", request)
    assert list(response.outputs["upper_bytes"].string_val) == [b"HELLO", "W\u00f6RLD".encode()]
    assert list(response.outputs["length"].int_val) == [5, 6]


# -- Classify / Regress / MultiInference on TF1 and TF2 exports ----------------------------------------------


def add_examples(input_pb: Any, xs: list[float], context: float | None = None) -> None:
    if context is None:
        for x in xs:
            input_pb.example_list.examples.add().features.feature["x"].float_list.value.append(x)
        return
    with_context = input_pb.example_list_with_context
    with_context.context.features.feature["x"].float_list.value.append(context)
    for _ in xs:
        with_context.examples.add()


@pytest.mark.parametrize("model", [M, "default", "tf2"])
def test_classify_regress_multi_inference(server: BackgroundServer, model: str) -> None:
    # TF2 exports' classify/regress signatures have method_name predict: TF Serving's default does not check.
    request = classification_pb2.ClassificationRequest()
    set_spec(request.model_spec, model, signature="classify_x_to_y")
    add_examples(request.input, [2.0, 4.0])
    response = rpc(server, "Classify", request)
    assert [[(c.label, c.score) for c in row.classes] for row in response.result.classifications] == [
        [("", 3.0)], [("", 4.0)]]
    assert (response.model_spec.name, response.model_spec.version.value, response.model_spec.signature_name) == (
        model, 123, "classify_x_to_y")

    for signature, expected in (("regress_x_to_y", [3.0, 3.0]), ("regress_x_to_y2", [4.0, 4.0])):
        request = regression_pb2.RegressionRequest()
        set_spec(request.model_spec, model, signature=signature)
        add_examples(request.input, [0.0, 0.0], context=2.0)  # example_list_with_context
        response = rpc(server, "Regress", request)
        assert [r.value for r in response.result.regressions] == expected
        assert response.model_spec.signature_name == signature

    request = inference_pb2.MultiInferenceRequest()
    for signature, method in (("regress_x_to_y", REGRESS), ("classify_x_to_y", CLASSIFY)):
        task = request.tasks.add()
        set_spec(task.model_spec, model, signature=signature)
        task.method_name = method
    add_examples(request.input, [2.0])
    # a TF2 export's signatures each read their own input tensor: TF Serving >= 2.4 feeds the same
    # examples to each (testMultiInferenceTf2), so both exports answer alike
    response = rpc(server, "MultiInference", request)
    regression, classification = response.results
    assert [r.value for r in regression.regression_result.regressions] == [3.0]
    assert classification.classification_result.classifications[0].classes[0].score == 3.0
    assert [(r.model_spec.name, r.model_spec.version.value, r.model_spec.signature_name)
            for r in response.results] == [(model, 123, "regress_x_to_y"), (model, 123, "classify_x_to_y")]


# -- GetModelMetadata / GetModelStatus -------------------------------------------------------------------------


def saved_signatures(reference: Path, folder: str) -> Any:
    saved = saved_model_pb2.SavedModel.FromString((reference / folder / "saved_model.pb").read_bytes())
    return saved.meta_graphs[0].signature_def


def metadata(server: BackgroundServer, name: str, **spec: Any) -> tuple[Any, Any]:
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    set_spec(request.model_spec, name, **spec)
    request.metadata_field.append("signature_def")
    response = rpc(server, "GetModelMetadata", request)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    return response.model_spec, signature_map.signature_def


@pytest.mark.parametrize(("name", "spec", "folder", "version"), [
    ("default", {}, "saved_model_half_plus_two_cpu/00000123", 123),
    (M, {"label": "Version_Label"}, "saved_model_half_plus_two_2_versions/00000123", 123),
    ("both", {"version": 124}, "saved_model_half_plus_two_2_versions/00000124", 124),
    ("half_plus_three", {}, "saved_model_half_plus_three/00000123", 123),
])
def test_metadata_is_the_saved_signature_defs(server: BackgroundServer, reference_dir: Path, name: str,
                                              spec: dict[str, Any], folder: str, version: int) -> None:
    model_spec, signatures = metadata(server, name, **spec)
    assert (model_spec.name, model_spec.version.value, model_spec.signature_name) == (name, version, "")
    assert "serving_default" in signatures
    assert dict(signatures) == dict(saved_signatures(reference_dir, folder))


def test_tf2_metadata_is_the_saved_signature_defs(server: BackgroundServer, reference_dir: Path) -> None:
    _, signatures = metadata(server, "tf2")
    saved = saved_signatures(reference_dir, "saved_model_half_plus_two_tf2_cpu/00000123")
    assert saved["serving_default"].defaults  # this export has an input default, and it is kept
    assert dict(signatures) == dict(saved)


def test_tf2_signature_defaults(server: BackgroundServer, reference_dir: Path) -> None:
    _, signatures = metadata(server, "tf2")
    saved = saved_signatures(reference_dir, "saved_model_half_plus_two_tf2_cpu/00000123")
    assert signatures["serving_default"].defaults == saved["serving_default"].defaults
    request = predict_pb2.PredictRequest()  # no inputs: TF fills "x" from the signature's defaults
    request.model_spec.name = "tf2"
    response = rpc(server, "Predict", request)
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["y"]), [2.0])


def test_status(server: BackgroundServer) -> None:
    def versions(name: str, **spec: Any) -> list[tuple[int, int, int, str]]:
        request = get_model_status_pb2.GetModelStatusRequest()
        set_spec(request.model_spec, name, **spec)
        response = rpc(server, "GetModelStatus", request)
        return [(v.version, v.state, v.status.error_code, v.status.error_message)
                for v in response.model_version_status]

    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert versions("default") == [(123, available, 0, "")]
    assert versions("both") == [(124, available, 0, ""), (123, available, 0, "")]
    assert versions("both", label="no_such_label") == versions("both")  # a label is ignored
    assert versions("both", version=123) == [(123, available, 0, "")]


# -- errors (3.3), each with its REST twin --------------------------------------------------------------------


def predict(name: str = "default", x: Any = None, **spec: Any) -> Any:
    request = predict_pb2.PredictRequest()
    if name is not None:
        set_spec(request.model_spec, name, **{k: v for k, v in spec.items() if k != "output_filter"})
    inputs = {"x": tf.make_tensor_proto(np.array([[1.0]], np.float32))} if x is None else x
    for alias, proto in inputs.items():
        request.inputs[alias].CopyFrom(proto)
    request.output_filter.extend(spec.get("output_filter", []))
    return request


def no_spec(kind: Any) -> Any:
    return kind()


def examples_request(kind: Any, name: str, signature: str, xs: list[float]) -> Any:
    request = kind()
    set_spec(request.model_spec, name, signature=signature)
    add_examples(request.input, xs)
    return request


def multi(*tasks: tuple[str, str, str]) -> Any:
    request = inference_pb2.MultiInferenceRequest()
    for name, signature, method in tasks:
        task = request.tasks.add()
        set_spec(task.model_spec, name, signature=signature)
        task.method_name = method
    add_examples(request.input, [2.0])
    return request


def metadata_request(name: str, fields: tuple[str, ...] = ("signature_def",)) -> Any:
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    set_spec(request.model_spec, name)
    request.metadata_field.extend(fields)
    return request


def status_request(name: str, **spec: Any) -> Any:
    request = get_model_status_pb2.GetModelStatusRequest()
    set_spec(request.model_spec, name, **spec)
    return request


P = "/v1/models/default:predict"
ONE = {"instances": [1.0]}
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND

#: (id, gRPC method, request factory, code, message, REST twin (method, path, body) or None).
ERRORS: list[tuple[str, str, Callable[[], Any], grpc.StatusCode, str, tuple[str, str, Any] | None]] = [
    ("missing model", "Predict", lambda: predict("foo"), NOT_FOUND, "Servable not found for request: Latest(foo)",
     ("POST", "/v1/models/foo:predict", ONE)),
    ("missing version", "Predict", lambda: predict(M, version=124), NOT_FOUND,
     f"Servable not found for request: Specific({M}, 124)", ("POST", f"/v1/models/{M}/versions/124:predict", ONE)),
    ("missing label", "Predict", lambda: predict(M, label="nope"), INVALID,
     "Unrecognized servable version label: nope", ("POST", f"/v1/models/{M}/labels/nope:predict", ONE)),
    ("bad input alias", "Predict", lambda: predict(x={"z": tf.make_tensor_proto(np.ones((1, 1), np.float32))}),
     INVALID, "input tensor alias not found in signature: z. Inputs expected to be in the set {x}.",
     ("POST", P, {"inputs": {"z": [[1.0]]}})),
    ("extra input", "Predict",
     lambda: predict(x={"x": tf.make_tensor_proto([[1.0]]), "z": tf.make_tensor_proto([1.0])}), INVALID,
     "input size does not match signature: 2!=1 len({x,z}) != len({x}). Sent extra: {z}. Missing but required: {}.",
     ("POST", P, {"instances": [{"x": [1.0], "z": 1.0}]})),
    ("no inputs", "Predict", lambda: predict(x={}), INVALID,
     "input size does not match signature: 0!=1 len({}) != len({x}). Sent extra: {}. Missing but required: {x}.",
     ("POST", P, {"inputs": {}})),
    ("wrong dtype", "Predict", lambda: predict(x={"x": tf.make_tensor_proto([["a"]])}), INVALID,
     "Expects arg[0] to be float but string is provided", ("POST", P, {"instances": [["a"]]})),
    ("double for float", "Predict", lambda: predict(x={"x": tf.make_tensor_proto(np.ones((1, 1)))}), INVALID,
     "Expects arg[0] to be float but double is provided", ("POST", P, {"instances": [[True]]})),
    ("bad output_filter", "Predict", lambda: predict(output_filter=["z"]), INVALID,
     "output tensor alias not found in signature: z Outputs expected to be in the set {y}.", None),
    ("duplicate output_filter", "Predict", lambda: predict(output_filter=["y", "y"]), INVALID,
     "duplicate output tensor alias: y", None),
    ("missing ModelSpec", "Predict", lambda: no_spec(predict_pb2.PredictRequest), INVALID, "Missing ModelSpec",
     ("POST", "/v1/models/:predict", ONE)),
    ("empty name", "Predict", lambda: predict(""), INVALID, "ModelSpec has no name specified.",
     ("POST", "/v1/models/:predict", ONE)),
    ("unknown signature", "Predict", lambda: predict(signature="nope"), grpc.StatusCode.FAILED_PRECONDITION,
     'Serving signature key "nope" not found.', ("POST", P, {"signature_name": "nope", "instances": [1.0]})),
    ("classify: missing ModelSpec", "Classify", lambda: no_spec(classification_pb2.ClassificationRequest), INVALID,
     "Missing ModelSpec", ("POST", "/v1/models/:classify", {"examples": [{"x": 1.0}]})),
    ("classify: missing model", "Classify",
     lambda: examples_request(classification_pb2.ClassificationRequest, "foo", "classify_x_to_y", [1.0]),
     NOT_FOUND, "Servable not found for request: Latest(foo)",
     ("POST", "/v1/models/foo:classify", {"examples": [{"x": 1.0}]})),
    ("classify: unknown signature", "Classify",
     lambda: examples_request(classification_pb2.ClassificationRequest, "default", "nope", [1.0]), INVALID,
     "No signature was found with the name: nope",
     ("POST", "/v1/models/default:classify", {"signature_name": "nope", "examples": [{"x": 1.0}]})),
    ("regress: missing ModelSpec", "Regress", lambda: no_spec(regression_pb2.RegressionRequest), INVALID,
     "Missing ModelSpec", ("POST", "/v1/models/:regress", {"examples": [{"x": 1.0}]})),
    ("regress: empty input", "Regress",
     lambda: examples_request(regression_pb2.RegressionRequest, "default", "regress_x_to_y", []), INVALID,
     "Input is empty.", ("POST", "/v1/models/default:regress", {"signature_name": "regress_x_to_y", "examples": []})),
    ("regress: float signature input", "Regress",
     lambda: examples_request(regression_pb2.RegressionRequest, "default", "regress_x2_to_y3", [1.0]), INVALID,
     "Expects arg[0] to be float but string is provided",
     ("POST", "/v1/models/default:regress", {"signature_name": "regress_x2_to_y3", "examples": [{"x2": 1.0}]})),
    ("multi: two models", "MultiInference",
     lambda: multi(("default", "regress_x_to_y", REGRESS), ("tf2", "classify_x_to_y", CLASSIFY)), INVALID,
     "All ModelSpecs in a MultiInferenceRequest must access the same model name.", None),
    ("multi: empty second name", "MultiInference",
     lambda: multi(("default", "regress_x_to_y", REGRESS), ("", "classify_x_to_y", CLASSIFY)), INVALID,
     "Found ModelSpec with an empty model name.", None),
    ("multi: duplicate", "MultiInference",
     lambda: multi(("default", "regress_x_to_y", REGRESS), ("default", "regress_x_to_y", REGRESS)), INVALID,
     "Duplicate evaluation of signature: regress_x_to_y", None),
    ("multi: unknown signature", "MultiInference", lambda: multi(("default", "nope", REGRESS)), INVALID,
     "Requested signature not found in model graph: nope", None),
    ("multi: predict method", "MultiInference",
     lambda: multi(("default", "serving_default", "tensorflow/serving/predict")), grpc.StatusCode.UNIMPLEMENTED,
     "Unsupported signature method_name: tensorflow/serving/predict", None),
    ("metadata: missing ModelSpec", "GetModelMetadata", lambda: no_spec(get_model_metadata_pb2.GetModelMetadataRequest),
     INVALID, "Missing ModelSpec", ("GET", "/v1/models//metadata", None)),
    ("metadata: missing model", "GetModelMetadata", lambda: metadata_request("foo"), NOT_FOUND,
     "Servable not found for request: Latest(foo)", ("GET", "/v1/models/foo/metadata", None)),
    ("metadata: no field", "GetModelMetadata", lambda: metadata_request("default", ()), INVALID,
     "GetModelMetadataRequest must specify at least one metadata_field", None),
    ("metadata: other field", "GetModelMetadata", lambda: metadata_request("default", ("foo",)), INVALID,
     "Metadata field foo is not supported", None),
    ("status: missing ModelSpec", "GetModelStatus", lambda: no_spec(get_model_status_pb2.GetModelStatusRequest),
     INVALID, "Missing ModelSpec", None),
    ("status: missing model", "GetModelStatus", lambda: status_request("foo"), NOT_FOUND,
     "Could not find any versions of model foo", ("GET", "/v1/models/foo", None)),
    ("status: missing version", "GetModelStatus", lambda: status_request(M, version=124), NOT_FOUND,
     f"Could not find version 124 of model {M}", ("GET", f"/v1/models/{M}/versions/124", None)),
]


@pytest.mark.parametrize(("method", "factory", "code", "message", "twin"), [case[1:] for case in ERRORS],
                         ids=[case[0] for case in ERRORS])
def test_errors_and_rest_twins(server: BackgroundServer, method: str, factory: Callable[[], Any],
                               code: grpc.StatusCode, message: str, twin: tuple[str, str, Any] | None) -> None:
    assert rpc_error(server, method, factory()) == (code, message)
    if twin is not None:
        status, parsed, _ = server.rest(*twin)
        assert status == HTTP_STATUS[Code[code.name]], parsed
        assert parsed and parsed["error"]


def test_rest_has_no_output_filter(server: BackgroundServer) -> None:
    # TF Serving's REST API ignores unknown keys, so a REST "output_filter" changes nothing.
    body = {"instances": [2.0], "output_filter": ["z"]}
    assert server.rest("POST", P, body)[:2] == (200, {"predictions": [3.0]})
