"""TF Serving gRPC messages (``tensorflow_serving.apis``) <-> ``protocol.types``, for server and client.

The ``apis`` pb2 modules import all of TensorFlow (``tensor_pb2`` lives in the tensorflow package,
~1.8 s), so each function imports what it needs when called: importing this module stays TF-free and
the cost is paid once, on first use. ``*_from_pb`` on requests and ``*_to_pb`` on responses are the
server side; the inverses are the client side.

Only decoding, and the checks TF Serving makes before it looks at a model, live here. Everything that
needs the servable or its signature (version lookup, aliases, dtypes, output_filter, ``Input is
empty.`` which TF reports after the lookup) is the DataPlane's. Nothing here maps errors to codes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import numpy as np
from google.protobuf.message import DecodeError

from mlsrv.errors import Code, InvalidArgument, Unimplemented
from mlsrv.protocol import tensor_codec
from mlsrv.protocol.types import (
    CLASSIFY_METHOD,
    REGRESS_METHOD,
    ClassifyResponse,
    ExamplesRequest,
    InferenceMethod,
    ModelMetadata,
    ModelSpec,
    ModelStatus,
    PredictRequest,
    PredictResponse,
    RegressResponse,
    SignatureInfo,
    State,
    TensorInfo,
    VersionStatus,
)

#: The only metadata field TF Serving knows, and the key of the packed SignatureDefMap.
SIGNATURE_DEF: Final = "signature_def"

_METHODS: Final = {CLASSIFY_METHOD: InferenceMethod.CLASSIFY, REGRESS_METHOD: InferenceMethod.REGRESS}
_METHOD_NAMES: Final = {method: name for name, method in _METHODS.items()}

ExamplesResponse = ClassifyResponse | RegressResponse


# -- ModelSpec --------------------------------------------------------------------------------------


def spec_from_pb(pb: Any, *, has_field: bool, require_name: bool = True) -> ModelSpec:
    """A request's ModelSpec, with TF Serving's errors. GetModelStatus passes ``require_name=False``:
    TF answers it with NOT_FOUND for the empty name instead. ``version_label`` is kept even if empty."""
    if not has_field:
        raise InvalidArgument("Missing ModelSpec")
    if require_name and not pb.name:
        raise InvalidArgument("ModelSpec has no name specified.")
    return _spec(pb)


def spec_to_pb(spec: ModelSpec, pb: Any) -> None:
    """Fill ``pb`` (a ModelSpec, present afterwards even when empty). Version wins over label."""
    pb.SetInParent()
    pb.name = spec.name
    if spec.version is not None:
        pb.version.value = spec.version
    elif spec.label is not None:
        pb.version_label = spec.label
    pb.signature_name = spec.signature


def _spec(pb: Any) -> ModelSpec:
    choice = pb.WhichOneof("version_choice")
    return ModelSpec(
        name=pb.name,
        version=pb.version.value if choice == "version" else None,
        label=pb.version_label if choice == "version_label" else None,
        signature=pb.signature_name,
    )


def _request_spec(request: Any, *, require_name: bool = True) -> ModelSpec:
    return spec_from_pb(request.model_spec, has_field=request.HasField("model_spec"), require_name=require_name)


# -- Predict ----------------------------------------------------------------------------------------


def predict_request_from_pb(pb: Any) -> PredictRequest:
    """Server side. A tensor TF could not parse gives TF's ``tensor parsing error: <alias>``."""
    spec = _request_spec(pb)
    inputs = {}
    for alias in sorted(pb.inputs):
        try:
            inputs[alias] = tensor_codec.to_ndarray(pb.inputs[alias])
        except InvalidArgument as exc:
            raise InvalidArgument(f"tensor parsing error: {alias}") from exc
    return PredictRequest(spec, inputs, tuple(pb.output_filter))


def predict_request_to_pb(req: PredictRequest, *, as_tensor_content: bool = True) -> Any:
    """Client side; ``tensor_content`` by default, as ``tf.make_tensor_proto`` does for arrays."""
    from tensorflow_serving.apis import predict_pb2

    pb = predict_pb2.PredictRequest()
    spec_to_pb(req.spec, pb.model_spec)
    _tensors_to_pb(req.inputs, pb.inputs, as_tensor_content)
    pb.output_filter.extend(req.output_filter)
    return pb


def predict_response_to_pb(resp: PredictResponse, *, as_tensor_content: bool) -> Any:
    """Server side; typed fields unless ``--enable_serialization_as_tensor_content``."""
    from tensorflow_serving.apis import predict_pb2

    pb = predict_pb2.PredictResponse()
    spec_to_pb(resp.spec, pb.model_spec)
    _tensors_to_pb(resp.outputs, pb.outputs, as_tensor_content)
    return pb


def predict_response_from_pb(pb: Any) -> PredictResponse:
    """Client side. Raises ``InvalidArgument`` naming the output that could not be decoded."""
    outputs = {}
    for alias in sorted(pb.outputs):
        try:
            outputs[alias] = tensor_codec.to_ndarray(pb.outputs[alias])
        except InvalidArgument as exc:
            raise InvalidArgument(f"cannot decode output tensor {alias}: {exc.message}") from exc
    return PredictResponse(_spec(pb.model_spec), outputs)


def _tensors_to_pb(tensors: Mapping[str, np.ndarray], pb_map: Any, as_tensor_content: bool) -> None:
    for alias, array in tensors.items():
        tensor_codec.from_ndarray(array, pb_map[alias], as_tensor_content=as_tensor_content)


# -- Classify / Regress / MultiInference ------------------------------------------------------------


def examples_from_input_pb(input_pb: Any, *, allow_empty: bool = False) -> list[bytes]:
    """Serialized tf.Examples, as TF Serving feeds them: with a context, ``context + example`` bytes,
    which protobuf parses as the example merged over the context. Raises ``Input is empty.`` unless
    ``allow_empty`` (the request decoders allow it so that the DataPlane reports it in TF's order)."""
    kind = input_pb.WhichOneof("kind")
    if kind == "example_list":
        examples = [e.SerializeToString() for e in input_pb.example_list.examples]
    elif kind == "example_list_with_context":
        with_context = input_pb.example_list_with_context
        context = with_context.context.SerializeToString()
        examples = [context + e.SerializeToString() for e in with_context.examples]
    else:
        examples = []
    if not examples and not allow_empty:
        raise InvalidArgument("Input is empty.")
    return examples


def examples_to_input_pb(examples: Iterable[bytes], input_pb: Any) -> None:
    """Client side: parse each serialized tf.Example into an ``example_list``."""
    example_list = input_pb.example_list
    example_list.SetInParent()
    for i, data in enumerate(examples):
        try:
            example_list.examples.add().ParseFromString(data)
        except DecodeError as exc:
            raise InvalidArgument(f"example {i} is not a serialized tf.Example") from exc


def classify_request_from_pb(pb: Any) -> ExamplesRequest:
    return ExamplesRequest(_request_spec(pb), InferenceMethod.CLASSIFY, _examples(pb.input))


def regress_request_from_pb(pb: Any) -> ExamplesRequest:
    return ExamplesRequest(_request_spec(pb), InferenceMethod.REGRESS, _examples(pb.input))


def classify_request_to_pb(spec: ModelSpec, examples: Iterable[bytes]) -> Any:
    from tensorflow_serving.apis import classification_pb2

    return _examples_request(classification_pb2.ClassificationRequest(), spec, examples)


def regress_request_to_pb(spec: ModelSpec, examples: Iterable[bytes]) -> Any:
    from tensorflow_serving.apis import regression_pb2

    return _examples_request(regression_pb2.RegressionRequest(), spec, examples)


def _examples(input_pb: Any) -> list[bytes]:
    return examples_from_input_pb(input_pb, allow_empty=True)


def _examples_request(pb: Any, spec: ModelSpec, examples: Iterable[bytes]) -> Any:
    spec_to_pb(spec, pb.model_spec)
    examples_to_input_pb(examples, pb.input)
    return pb


def classify_response_to_pb(resp: ClassifyResponse) -> Any:
    """One ``Class`` per (example, k): label from ``classes`` (UTF-8, invalid bytes replaced) and score."""
    from tensorflow_serving.apis import classification_pb2

    pb = classification_pb2.ClassificationResponse()
    spec_to_pb(resp.spec, pb.model_spec)
    _classifications_to_pb(resp, pb.result)
    return pb


def classify_response_from_pb(pb: Any) -> ClassifyResponse:
    """Client side. ``classes`` is None when every label is empty; scores are always present."""
    return _classifications_from_pb(_spec(pb.model_spec), pb.result)


def regress_response_to_pb(resp: RegressResponse) -> Any:
    from tensorflow_serving.apis import regression_pb2

    pb = regression_pb2.RegressionResponse()
    spec_to_pb(resp.spec, pb.model_spec)
    _regressions_to_pb(resp, pb.result)
    return pb


def regress_response_from_pb(pb: Any) -> RegressResponse:
    return _regressions_from_pb(_spec(pb.model_spec), pb.result)


def _classifications_to_pb(resp: ClassifyResponse, result: Any) -> None:
    result.SetInParent()
    labels, scores = _rows(resp.classes), _rows(resp.scores)
    grid = labels if labels is not None else scores
    for i, row in enumerate(grid or ()):
        classes = result.classifications.add().classes
        for j in range(len(row)):
            item = classes.add()
            if labels is not None:
                item.label = _label(labels[i][j])
            if scores is not None:
                item.score = scores[i][j]


def _rows(array: np.ndarray | None) -> list[list[Any]] | None:
    if array is None:
        return None
    array = np.asarray(array)
    rows: list[list[Any]] = array.reshape(len(array), -1).tolist()
    return rows


def _label(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _classifications_from_pb(spec: ModelSpec, result: Any) -> ClassifyResponse:
    rows = result.classifications
    width = len(rows[0].classes) if rows else 0
    labels = np.empty((len(rows), width), dtype=object)
    scores = np.zeros((len(rows), width), dtype=np.float32)
    for i, row in enumerate(rows):
        if len(row.classes) != width:
            raise InvalidArgument("classifications have different numbers of classes")
        for j, item in enumerate(row.classes):
            labels[i, j] = item.label.encode("utf-8")
            scores[i, j] = item.score
    has_labels = any(label for label in labels.flat)
    return ClassifyResponse(spec, labels if has_labels else None, scores)


def _regressions_to_pb(resp: RegressResponse, result: Any) -> None:
    result.SetInParent()
    for value in np.asarray(resp.values).reshape(-1).tolist():
        result.regressions.add().value = value


def _regressions_from_pb(spec: ModelSpec, result: Any) -> RegressResponse:
    return RegressResponse(spec, np.array([r.value for r in result.regressions], dtype=np.float32))


def multi_inference_request_from_pb(
    pb: Any,
) -> tuple[list[tuple[ModelSpec, InferenceMethod]], list[bytes]]:
    """Tasks and examples, with TF Serving's task checks in its order. The servable is resolved from the
    first task's spec (TF's ``GetModelSpecFromRequest``), hence its error for a missing first name."""
    tasks = pb.tasks
    if not tasks or not tasks[0].model_spec.name:
        raise InvalidArgument("ModelSpec has no name specified.")
    model = tasks[0].model_spec.name
    decoded: list[tuple[ModelSpec, InferenceMethod]] = []
    signatures: set[str] = set()
    for task in tasks:
        spec = _spec(task.model_spec)
        if not spec.name:
            raise InvalidArgument("Found ModelSpec with an empty model name.")
        if spec.name != model:
            raise InvalidArgument("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
        if spec.signature_or_default in signatures:
            raise InvalidArgument(f"Duplicate evaluation of signature: {spec.signature_or_default}")
        signatures.add(spec.signature_or_default)
        method = _METHODS.get(task.method_name)
        if method is None:
            raise Unimplemented(f"Unsupported signature method_name: {task.method_name}")
        decoded.append((spec, method))
    return decoded, _examples(pb.input)


def multi_inference_request_to_pb(tasks: Sequence[tuple[ModelSpec, InferenceMethod]], examples: Iterable[bytes]) -> Any:
    from tensorflow_serving.apis import inference_pb2

    pb = inference_pb2.MultiInferenceRequest()
    for spec, method in tasks:
        task = pb.tasks.add()
        spec_to_pb(spec, task.model_spec)
        task.method_name = _METHOD_NAMES[method]
    examples_to_input_pb(examples, pb.input)
    return pb


def multi_inference_response_to_pb(results: Sequence[ExamplesResponse]) -> Any:
    """One InferenceResult per task, in task order, each with its (resolved) spec."""
    from tensorflow_serving.apis import inference_pb2

    pb = inference_pb2.MultiInferenceResponse()
    for result in results:
        item = pb.results.add()
        spec_to_pb(result.spec, item.model_spec)
        if isinstance(result, ClassifyResponse):
            _classifications_to_pb(result, item.classification_result)
        else:
            _regressions_to_pb(result, item.regression_result)
    return pb


def multi_inference_response_from_pb(pb: Any) -> list[ExamplesResponse]:
    results: list[ExamplesResponse] = []
    for item in pb.results:
        spec = _spec(item.model_spec)
        if item.WhichOneof("result") == "regression_result":
            results.append(_regressions_from_pb(spec, item.regression_result))
        else:
            results.append(_classifications_from_pb(spec, item.classification_result))
    return results


# -- GetModelMetadata -------------------------------------------------------------------------------


def metadata_request_check(pb: Any) -> None:
    """TF Serving's metadata_field validation (it runs after the ModelSpec presence check)."""
    if not pb.metadata_field:
        raise InvalidArgument("GetModelMetadataRequest must specify at least one metadata_field")
    for field in pb.metadata_field:
        if field != SIGNATURE_DEF:
            raise InvalidArgument(f"Metadata field {field} is not supported")


def metadata_request_from_pb(pb: Any) -> ModelSpec:
    """All of TF's request checks in its order: ModelSpec present, fields, then the name."""
    if not pb.HasField("model_spec"):
        raise InvalidArgument("Missing ModelSpec")
    metadata_request_check(pb)
    return spec_from_pb(pb.model_spec, has_field=True)


def metadata_request_to_pb(spec: ModelSpec) -> Any:
    from tensorflow_serving.apis import get_model_metadata_pb2

    pb = get_model_metadata_pb2.GetModelMetadataRequest()
    spec_to_pb(spec, pb.model_spec)
    pb.metadata_field.append(SIGNATURE_DEF)
    return pb


def metadata_response_to_pb(metadata: ModelMetadata) -> Any:
    """``metadata["signature_def"]`` packs a SignatureDefMap; the spec has name and version only."""
    from tensorflow_serving.apis import get_model_metadata_pb2

    pb = get_model_metadata_pb2.GetModelMetadataResponse()
    spec_to_pb(metadata.spec, pb.model_spec)
    pb.metadata[SIGNATURE_DEF].Pack(signature_def_map_to_pb(metadata.signatures))
    return pb


def metadata_response_from_pb(pb: Any) -> ModelMetadata:
    from tensorflow_serving.apis import get_model_metadata_pb2

    signatures: dict[str, SignatureInfo] = {}
    if SIGNATURE_DEF in pb.metadata:
        packed = get_model_metadata_pb2.SignatureDefMap()
        if not pb.metadata[SIGNATURE_DEF].Unpack(packed):
            raise InvalidArgument(f"metadata {SIGNATURE_DEF} is not a SignatureDefMap")
        signatures = signature_def_map_from_pb(packed)
    return ModelMetadata(_spec(pb.model_spec), signatures)


def signature_def_map_to_pb(signatures: Mapping[str, SignatureInfo]) -> Any:
    """A ``tensorflow.serving.SignatureDefMap``; reused wherever SignatureDefs go on the wire."""
    from tensorflow_serving.apis import get_model_metadata_pb2

    pb = get_model_metadata_pb2.SignatureDefMap()
    for name, signature in signatures.items():
        signature_pb = pb.signature_def[name]
        signature_pb.method_name = signature.method_name
        for alias, info in signature.inputs.items():
            _tensor_info_to_pb(info, signature_pb.inputs[alias])
        for alias, info in signature.outputs.items():
            _tensor_info_to_pb(info, signature_pb.outputs[alias])
        for alias, value in signature.defaults.items():
            tensor_codec.from_ndarray(value, signature_pb.defaults[alias], as_tensor_content=False)
    return pb


def signature_def_map_from_pb(pb: Any) -> dict[str, SignatureInfo]:
    return {
        name: SignatureInfo(
            inputs={alias: _tensor_info_from_pb(sd.inputs[alias]) for alias in sorted(sd.inputs)},
            outputs={alias: _tensor_info_from_pb(sd.outputs[alias]) for alias in sorted(sd.outputs)},
            method_name=sd.method_name,
            defaults={alias: tensor_codec.to_ndarray(sd.defaults[alias]) for alias in sorted(sd.defaults)},
        )
        for name, sd in sorted(pb.signature_def.items())
    }


def _tensor_info_to_pb(info: TensorInfo, pb: Any) -> None:
    pb.name = info.name
    # NOTE: the DataType enum comes from the message's descriptor, so no tensorflow module is named here.
    known = pb.DESCRIPTOR.fields_by_name["dtype"].enum_type.values_by_name.get(info.dtype)
    pb.dtype = known.number if known is not None else 0
    if not info.has_shape:
        return
    shape = pb.tensor_shape
    shape.SetInParent()
    if info.shape is None:
        shape.unknown_rank = True
    else:
        for size in info.shape:
            shape.dim.add().size = size


def _tensor_info_from_pb(pb: Any) -> TensorInfo:
    known = pb.DESCRIPTOR.fields_by_name["dtype"].enum_type.values_by_number.get(pb.dtype)
    shape = pb.tensor_shape
    return TensorInfo(
        name=pb.name,
        dtype=known.name if known is not None else "DT_INVALID",
        shape=None if shape.unknown_rank else tuple(d.size for d in shape.dim),
        has_shape=pb.HasField("tensor_shape"),
    )


# -- GetModelStatus ---------------------------------------------------------------------------------


def status_request_from_pb(pb: Any) -> ModelSpec:
    """``Missing ModelSpec`` only; an empty name is the DataPlane's NOT_FOUND, a label is ignored there."""
    return _request_spec(pb, require_name=False)


def status_request_to_pb(spec: ModelSpec) -> Any:
    from tensorflow_serving.apis import get_model_status_pb2

    pb = get_model_status_pb2.GetModelStatusRequest()
    spec_to_pb(spec, pb.model_spec)
    return pb


def status_response_to_pb(status: ModelStatus) -> Any:
    from tensorflow_serving.apis import get_model_status_pb2

    pb = get_model_status_pb2.GetModelStatusResponse()
    for version in status.versions:
        item = pb.model_version_status.add()
        item.version = version.version
        item.state = version.state.value
        item.status.SetInParent()
        item.status.error_code = version.error_code.value
        item.status.error_message = version.error_message
    return pb


def status_response_from_pb(pb: Any, *, name: str = "") -> ModelStatus:
    """Client side. The response does not carry the model name, so the caller passes it."""
    return ModelStatus(
        name,
        tuple(
            VersionStatus(
                version=item.version,
                state=_enum(State, item.state, State.UNKNOWN),
                error_code=_enum(Code, item.status.error_code, Code.UNKNOWN),
                error_message=item.status.error_message,
            )
            for item in pb.model_version_status
        ),
    )


def _enum(kind: Any, value: int, default: Any) -> Any:
    try:
        return kind(value)
    except ValueError:
        return default
