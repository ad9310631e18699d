"""grpc_codec: every message round-trips (server encode -> client decode gives equal types), TF Serving's
request errors are exact, and metadata matches TF Serving's own half_plus_two answer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf import json_format
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    input_pb2,
    predict_pb2,
)

from mlsrv.errors import Code, InvalidArgument
from mlsrv.protocol import grpc_codec as codec
from mlsrv.protocol.types import (
    ClassifyResponse,
    InferenceMethod,
    ModelMetadata,
    ModelSpec,
    ModelStatus,
    MultiInferenceTask,
    PredictRequest,
    PredictResponse,
    RegressResponse,
    SignatureInfo,
    State,
    TensorInfo,
    VersionStatus,
)

TFSERVING = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "tfserving"


def test_importing_the_codecs_does_not_import_tensorflow() -> None:
    code = (
        "import sys, mlsrv.protocol.grpc_codec, mlsrv.protocol.tensor_codec; "
        "assert 'tensorflow' not in sys.modules and 'tensorflow_serving.apis.predict_pb2' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- ModelSpec --------------------------------------------------------------------------------------

SPECS = [
    ModelSpec("m"),
    ModelSpec("m", version=3, signature="sig"),
    ModelSpec("m", version=0),
    ModelSpec("m", label="canary"),
    ModelSpec("m", label=""),
]


@pytest.mark.parametrize("spec", SPECS, ids=repr)
def test_spec_round_trip(spec: ModelSpec) -> None:
    request = predict_pb2.PredictRequest()
    codec.spec_to_pb(spec, request.model_spec)
    assert request.HasField("model_spec")
    assert codec.spec_from_pb(request.model_spec, has_field=True) == spec


def test_spec_errors() -> None:
    with pytest.raises(InvalidArgument, match="^Missing ModelSpec$"):
        codec.spec_from_pb(None, has_field=False)
    request = predict_pb2.PredictRequest()
    request.model_spec.version.value = 2
    with pytest.raises(InvalidArgument, match=r"^ModelSpec has no name specified\.$"):
        codec.spec_from_pb(request.model_spec, has_field=True)
    assert codec.spec_from_pb(request.model_spec, has_field=True, require_name=False) == ModelSpec("", 2)


# -- Predict ----------------------------------------------------------------------------------------

INPUTS: dict[str, np.ndarray] = {
    "x": np.arange(6, dtype=np.float32).reshape(2, 3),
    "ids": np.array([[1], [-2]], dtype=np.int64),
    "text": np.array([b"a", b"\xffb"], dtype=object),
}


def assert_tensors_equal(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for alias, array in want.items():
        assert got[alias].dtype == array.dtype and got[alias].tolist() == array.tolist(), alias


@pytest.mark.parametrize("as_tensor_content", [True, False])
def test_predict_request_round_trip(as_tensor_content: bool) -> None:
    request = PredictRequest(ModelSpec("m", label="stable"), INPUTS, ("y", "y"))
    pb = predict_pb2.PredictRequest.FromString(
        codec.predict_request_to_pb(request, as_tensor_content=as_tensor_content).SerializeToString()
    )
    assert bool(pb.inputs["x"].tensor_content) is as_tensor_content
    got = codec.predict_request_from_pb(pb)
    assert got.spec == request.spec
    assert got.output_filter == ("y", "y")  # duplicates are the DataPlane's to reject
    assert_tensors_equal(got.inputs, INPUTS)


def test_predict_request_errors() -> None:
    with pytest.raises(InvalidArgument, match="^Missing ModelSpec$"):
        codec.predict_request_from_pb(predict_pb2.PredictRequest())
    pb = codec.predict_request_to_pb(PredictRequest(ModelSpec(""), {}))
    with pytest.raises(InvalidArgument, match=r"^ModelSpec has no name specified\.$"):
        codec.predict_request_from_pb(pb)
    pb = codec.predict_request_to_pb(PredictRequest(ModelSpec("m"), {"x": INPUTS["x"]}))
    pb.inputs["x"].tensor_content = b"\x00" * 5
    with pytest.raises(InvalidArgument, match="^tensor parsing error: x$"):
        codec.predict_request_from_pb(pb)


@pytest.mark.parametrize("as_tensor_content", [True, False])
def test_predict_response_round_trip(as_tensor_content: bool) -> None:
    response = PredictResponse(ModelSpec("m", 7, signature="serving_default"), INPUTS)
    pb = codec.predict_response_to_pb(response, as_tensor_content=as_tensor_content)
    assert len(pb.outputs["x"].float_val) == (0 if as_tensor_content else 6)
    got = codec.predict_response_from_pb(predict_pb2.PredictResponse.FromString(pb.SerializeToString()))
    assert got.spec == response.spec
    assert_tensors_equal(got.outputs, INPUTS)


@pytest.mark.tf
def test_predict_response_reads_with_make_ndarray() -> None:
    import tensorflow as tf

    pb = codec.predict_response_to_pb(PredictResponse(ModelSpec("m", 1), INPUTS), as_tensor_content=False)
    assert_tensors_equal({k: tf.make_ndarray(v) for k, v in pb.outputs.items()}, INPUTS)


def test_predict_response_bad_output_names_the_alias() -> None:
    pb = predict_pb2.PredictResponse()
    pb.outputs["y"].dtype = 20  # DT_RESOURCE
    with pytest.raises(InvalidArgument, match="^cannot decode output tensor y: unsupported tensor dtype"):
        codec.predict_response_from_pb(pb)


# -- Classify / Regress / MultiInference ------------------------------------------------------------


def example(**features: float) -> example_pb2.Example:
    ex = example_pb2.Example()
    for key, value in features.items():
        ex.features.feature[key].float_list.value.append(value)
    return ex


def features(serialized: bytes) -> dict[str, list[float]]:
    parsed = example_pb2.Example.FromString(serialized)
    return {k: list(v.float_list.value) for k, v in parsed.features.feature.items()}


def test_examples_from_example_list() -> None:
    pb = input_pb2.Input()
    pb.example_list.examples.extend([example(x=1.0), example(x=2.0)])
    assert [features(b) for b in codec.examples_from_input_pb(pb)] == [{"x": [1.0]}, {"x": [2.0]}]


def test_examples_with_context_are_merged_like_tf_serving() -> None:
    pb = input_pb2.Input()
    pb.example_list_with_context.context.CopyFrom(example(c=9.0, x=0.0))
    pb.example_list_with_context.examples.extend([example(x=1.0), example(y=2.0)])
    got = codec.examples_from_input_pb(pb)
    context = pb.example_list_with_context.context.SerializeToString()
    assert all(b.startswith(context) for b in got)
    assert [features(b) for b in got] == [{"c": [9.0], "x": [1.0]}, {"c": [9.0], "x": [0.0], "y": [2.0]}]


def test_empty_input() -> None:
    for pb in (input_pb2.Input(), input_pb2.Input(example_list=input_pb2.ExampleList())):
        with pytest.raises(InvalidArgument, match=r"^Input is empty\.$"):
            codec.examples_from_input_pb(pb)
        assert codec.examples_from_input_pb(pb, allow_empty=True) == []
    # Request decoders leave the check to the DataPlane, which makes it after the model lookup as TF does.
    assert codec.classify_request_from_pb(codec.classify_request_to_pb(ModelSpec("m"), [])).examples == []


def test_classify_and_regress_requests_round_trip() -> None:
    spec = ModelSpec("m", 2, signature="classify_x_to_y")
    examples = [example(x=1.0).SerializeToString(), example(x=2.0, y=3.0).SerializeToString()]
    got = codec.classify_request_from_pb(codec.classify_request_to_pb(spec, examples))
    assert (got.spec, got.method) == (spec, InferenceMethod.CLASSIFY)
    assert [features(b) for b in got.examples] == [features(b) for b in examples]
    got = codec.regress_request_from_pb(codec.regress_request_to_pb(spec, examples))
    assert (got.spec, got.method, len(got.examples)) == (spec, InferenceMethod.REGRESS, 2)
    with pytest.raises(InvalidArgument, match="^Missing ModelSpec$"):
        codec.classify_request_from_pb(classification_pb2.ClassificationRequest())
    with pytest.raises(InvalidArgument, match="^example 1 is not a serialized tf.Example$"):
        codec.classify_request_to_pb(spec, [examples[0], b"\xff\xff"])


def assert_classify_equal(got: ClassifyResponse, want: ClassifyResponse) -> None:
    assert got.spec == want.spec
    for a, b in ((got.classes, want.classes), (got.scores, want.scores)):
        assert (a is None and b is None) or (a is not None and b is not None and a.tolist() == b.tolist())


CLASSES = np.array([[b"cat", b"dog"], [b"dog", b"cat"]], dtype=object)
SCORES = np.array([[0.75, 0.25], [0.5, 0.5]], dtype=np.float32)


@pytest.mark.parametrize("classes", [CLASSES, None])
def test_classify_response_round_trip(classes: np.ndarray | None) -> None:
    response = ClassifyResponse(ModelSpec("m", 1, signature="serving_default"), classes, SCORES)
    pb = codec.classify_response_to_pb(response)
    first = pb.result.classifications[0].classes[0]
    assert (first.label, first.score) == ("cat" if classes is not None else "", 0.75)
    wire = classification_pb2.ClassificationResponse.FromString(pb.SerializeToString())
    assert_classify_equal(codec.classify_response_from_pb(wire), response)


def test_classify_response_edge_cases() -> None:
    labels_only = codec.classify_response_to_pb(ClassifyResponse(ModelSpec("m"), CLASSES, None))
    got = codec.classify_response_from_pb(labels_only)
    assert got.classes is not None and got.classes.tolist() == CLASSES.tolist()
    assert got.scores is not None and got.scores.tolist() == [[0.0, 0.0], [0.0, 0.0]]  # proto3: score 0
    odd = np.array([[b"\xffx"]], dtype=object)
    assert codec.classify_response_to_pb(ClassifyResponse(ModelSpec("m"), odd, None)).result.classifications[
        0
    ].classes[0].label == "\ufffdx"
    ragged = codec.classify_response_to_pb(ClassifyResponse(ModelSpec("m"), CLASSES, SCORES))
    ragged.result.classifications[1].classes.add()
    with pytest.raises(InvalidArgument, match="different numbers of classes"):
        codec.classify_response_from_pb(ragged)


def test_regress_response_round_trip() -> None:
    response = RegressResponse(ModelSpec("m", 4, signature="regress_x_to_y"), np.array([2.5, -1.0], np.float32))
    pb = codec.regress_response_to_pb(response)
    assert [r.value for r in pb.result.regressions] == [2.5, -1.0]
    got = codec.regress_response_from_pb(pb)
    assert got.spec == response.spec and got.values.dtype == np.float32
    assert got.values.tolist() == [2.5, -1.0]


def test_multi_inference_request_round_trip() -> None:
    tasks = [
        (ModelSpec("m", 1, signature="classify_x_to_y"), InferenceMethod.CLASSIFY),
        (ModelSpec("m", 1), InferenceMethod.REGRESS),
    ]
    pb = codec.multi_inference_request_to_pb(tasks, [example(x=1.0).SerializeToString()])
    assert [t.method_name for t in pb.tasks] == ["tensorflow/serving/classify", "tensorflow/serving/regress"]
    got_tasks, got_examples = codec.multi_inference_request_from_pb(pb)
    assert got_tasks == [MultiInferenceTask(spec, method, pb.tasks[i].method_name)
                         for i, (spec, method) in enumerate(tasks)]
    assert [features(b) for b in got_examples] == [{"x": [1.0]}]


def task(name: str, signature: str = "", method: str = "tensorflow/serving/regress") -> Any:
    return inference_pb2.InferenceTask(
        model_spec={"name": name, "signature_name": signature}, method_name=method
    )


# Only what picks the servable is checked while decoding; the per-task checks need the model's
# signatures and run in the DataPlane (tests/server/test_grpc_fake.py).
MULTI_ERRORS = [
    ([], InvalidArgument, r"^ModelSpec has no name specified\.$"),
    ([task("")], InvalidArgument, r"^ModelSpec has no name specified\.$"),
]


@pytest.mark.parametrize(("tasks", "error", "message"), MULTI_ERRORS)
def test_multi_inference_request_errors(tasks: list[Any], error: type[Exception], message: str) -> None:
    pb = inference_pb2.MultiInferenceRequest(tasks=tasks)
    pb.input.example_list.examples.add()
    with pytest.raises(error, match=message):
        codec.multi_inference_request_from_pb(pb)


def test_multi_inference_response_round_trip() -> None:
    results: list[ClassifyResponse | RegressResponse] = [
        ClassifyResponse(ModelSpec("m", 1, signature="c"), CLASSES, SCORES),
        RegressResponse(ModelSpec("m", 1, signature="r"), np.array([1.0, 2.0], np.float32)),
        RegressResponse(ModelSpec("m", 1, signature="empty"), np.zeros(0, np.float32)),
    ]
    pb = codec.multi_inference_response_to_pb(results)
    assert [r.WhichOneof("result") for r in pb.results] == ["classification_result", *["regression_result"] * 2]
    got = codec.multi_inference_response_from_pb(pb)
    assert isinstance(got[0], ClassifyResponse)
    assert_classify_equal(got[0], results[0])  # type: ignore[arg-type]
    for g, r in zip(got[1:], results[1:], strict=True):
        assert isinstance(g, RegressResponse) and isinstance(r, RegressResponse)
        assert g.spec == r.spec and g.values.tolist() == r.values.tolist()


# -- GetModelMetadata -------------------------------------------------------------------------------


def test_metadata_request_errors_in_tf_serving_order() -> None:
    pb = get_model_metadata_pb2.GetModelMetadataRequest()
    with pytest.raises(InvalidArgument, match="^Missing ModelSpec$"):
        codec.metadata_request_from_pb(pb)
    pb.model_spec.SetInParent()
    with pytest.raises(InvalidArgument, match="^GetModelMetadataRequest must specify at least one metadata_field$"):
        codec.metadata_request_from_pb(pb)
    pb.metadata_field.extend(["signature_def", "bogus"])
    with pytest.raises(InvalidArgument, match="^Metadata field bogus is not supported$"):
        codec.metadata_request_from_pb(pb)
    del pb.metadata_field[1]
    with pytest.raises(InvalidArgument, match=r"^ModelSpec has no name specified\.$"):
        codec.metadata_request_from_pb(pb)
    assert codec.metadata_request_from_pb(codec.metadata_request_to_pb(ModelSpec("m", label="l"))) == ModelSpec(
        "m", label="l"
    )


def info(name: str, dtype: str = "DT_FLOAT", shape: tuple[int, ...] | None = (-1, 1)) -> TensorInfo:
    return TensorInfo(name, dtype, shape)


def regress(x: str, y: str) -> SignatureInfo:
    return SignatureInfo({"inputs": info(x)}, {"outputs": info(y)}, "tensorflow/serving/regress")


EXAMPLES_IN = {"inputs": info("tf_example:0", "DT_STRING", None)}
#: TF Serving's reference saved_model_half_plus_two, as tf_runtime reports it.
HALF_PLUS_TWO = {
    "regress_x2_to_y3": regress("x2:0", "y3:0"),
    "serving_default": SignatureInfo({"x": info("x:0")}, {"y": info("y:0")}, "tensorflow/serving/predict"),
    "classify_x_to_y": SignatureInfo(EXAMPLES_IN, {"scores": info("y:0")}, "tensorflow/serving/classify"),
    "regress_x_to_y2": SignatureInfo(EXAMPLES_IN, {"outputs": info("y2:0")}, "tensorflow/serving/regress"),
    "regress_x_to_y": SignatureInfo(EXAMPLES_IN, {"outputs": info("y:0")}, "tensorflow/serving/regress"),
}


def as_json(message: Any) -> Any:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


@pytest.mark.reference
def test_metadata_matches_tf_serving_half_plus_two() -> None:
    golden_path = TFSERVING / "half_plus_two_model_metadata.json"
    if not golden_path.exists():
        pytest.skip(f"{golden_path} not present")
    golden = json.loads(golden_path.read_text())
    pb = codec.metadata_response_to_pb(ModelMetadata(ModelSpec("default", 123), HALF_PLUS_TWO))
    assert as_json(pb.model_spec) == golden["model_spec"]
    packed = pb.metadata["signature_def"]
    assert packed.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    assert packed.Unpack(signature_defs)
    assert as_json(signature_defs) == golden["metadata"]["signature_def"]


def test_metadata_response_round_trip() -> None:
    signatures = {
        **HALF_PLUS_TWO,
        "__saved_model_init_op": SignatureInfo(
            {}, {"__saved_model_init_op": TensorInfo("NoOp", "DT_INVALID", (), has_shape=False)}, ""
        ),
        "odd": SignatureInfo({"r": info("r:0", "DT_RESOURCE", ())}, {"v": info("v:0", "DT_VARIANT", (2, 0))}),
    }
    metadata = ModelMetadata(ModelSpec("m", 5), signatures)
    pb = get_model_metadata_pb2.GetModelMetadataResponse.FromString(
        codec.metadata_response_to_pb(metadata).SerializeToString()
    )
    init = as_json(codec.signature_def_map_to_pb(signatures))["signature_def"]["__saved_model_init_op"]
    assert init["outputs"]["__saved_model_init_op"] == {"name": "NoOp", "dtype": "DT_INVALID"}  # no tensor_shape
    got = codec.metadata_response_from_pb(pb)
    assert got.spec == metadata.spec
    assert {k: v for k, v in got.signatures.items()} == signatures
    assert codec.metadata_response_from_pb(get_model_metadata_pb2.GetModelMetadataResponse()).signatures == {}


def test_unknown_dtype_names_and_numbers_become_invalid() -> None:
    pb = codec.signature_def_map_to_pb({"s": SignatureInfo({"a": info("a", "DT_NOPE")}, {})})
    assert pb.signature_def["s"].inputs["a"].dtype == 0
    pb.signature_def["s"].inputs["a"].dtype = 12345
    assert codec.signature_def_map_from_pb(pb)["s"].inputs["a"].dtype == "DT_INVALID"


# -- GetModelStatus ---------------------------------------------------------------------------------


def test_status_request() -> None:
    with pytest.raises(InvalidArgument, match="^Missing ModelSpec$"):
        codec.status_request_from_pb(get_model_status_pb2.GetModelStatusRequest())
    assert codec.status_request_from_pb(codec.status_request_to_pb(ModelSpec(""))) == ModelSpec("")
    spec = ModelSpec("m", label="canary")
    assert codec.status_request_from_pb(codec.status_request_to_pb(spec)) == spec


def test_status_response_round_trip() -> None:
    status = ModelStatus(
        "m",
        (
            VersionStatus(3, State.LOADING),
            VersionStatus(2, State.AVAILABLE),
            VersionStatus(1, State.END, Code.NOT_FOUND, "gone"),
        ),
    )
    pb = codec.status_response_to_pb(status)
    assert as_json(pb)["model_version_status"][2] == {
        "version": "1",
        "state": "END",
        "status": {"error_code": "NOT_FOUND", "error_message": "gone"},
    }
    assert as_json(pb)["model_version_status"][1]["status"] == {"error_code": "OK", "error_message": ""}
    wire = get_model_status_pb2.GetModelStatusResponse.FromString(pb.SerializeToString())
    assert codec.status_response_from_pb(wire, name="m") == status


def test_status_response_unknown_enum_values() -> None:
    pb = get_model_status_pb2.GetModelStatusResponse()
    item = pb.model_version_status.add(version=1, state=35)
    item.status.error_code = 99
    assert codec.status_response_from_pb(pb).versions == (VersionStatus(1, State.UNKNOWN, Code.UNKNOWN),)
