"""Classify, Regress and MultiInference messages <-> ``protocol.types`` (TF-free at import: the server
side imports the official pb2 modules inside its functions, the client side builds its requests from
:mod:`client_protos`, as in :mod:`grpc_codec`, which re-exports everything here)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

import numpy as np
from google.protobuf.message import DecodeError

from mlsrv.errors import InvalidArgument
from mlsrv.protocol.client_protos import message_class
from mlsrv.protocol.grpc_spec import request_spec, spec_of, spec_to_pb
from mlsrv.protocol.types import (
    CLASSIFY_METHOD,
    REGRESS_METHOD,
    ClassifyResponse,
    ExamplesRequest,
    InferenceMethod,
    ModelSpec,
    MultiInferenceTask,
    RegressResponse,
)

_METHODS: Final = {CLASSIFY_METHOD: InferenceMethod.CLASSIFY, REGRESS_METHOD: InferenceMethod.REGRESS}
_METHOD_NAMES: Final = {method: name for name, method in _METHODS.items()}

ExamplesResponse = ClassifyResponse | RegressResponse


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
    return ExamplesRequest(request_spec(pb), InferenceMethod.CLASSIFY, _examples(pb.input))


def regress_request_from_pb(pb: Any) -> ExamplesRequest:
    return ExamplesRequest(request_spec(pb), InferenceMethod.REGRESS, _examples(pb.input))


def classify_request_to_pb(spec: ModelSpec, examples: Iterable[bytes]) -> Any:
    """Client side (private pool, no TensorFlow)."""
    return _examples_request(message_class("tensorflow.serving.ClassificationRequest")(), spec, examples)


def regress_request_to_pb(spec: ModelSpec, examples: Iterable[bytes]) -> Any:
    """Client side (private pool, no TensorFlow)."""
    return _examples_request(message_class("tensorflow.serving.RegressionRequest")(), spec, examples)


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
    return _classifications_from_pb(spec_of(pb.model_spec), pb.result)


def regress_response_to_pb(resp: RegressResponse) -> Any:
    from tensorflow_serving.apis import regression_pb2

    pb = regression_pb2.RegressionResponse()
    spec_to_pb(resp.spec, pb.model_spec)
    _regressions_to_pb(resp, pb.result)
    return pb


def regress_response_from_pb(pb: Any) -> RegressResponse:
    return _regressions_from_pb(spec_of(pb.model_spec), pb.result)


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


def multi_inference_request_from_pb(pb: Any) -> tuple[list[MultiInferenceTask], list[bytes]]:
    """Tasks and examples. The servable is resolved from the first task's spec (TF's
    ``GetModelSpecFromRequest``), hence its error for a missing first name; the per-task checks
    come after that resolution, in the DataPlane. An unknown method name is kept as None."""
    tasks = pb.tasks
    if not tasks or not tasks[0].model_spec.name:
        raise InvalidArgument("ModelSpec has no name specified.")
    decoded = [
        MultiInferenceTask(spec_of(task.model_spec), _METHODS.get(task.method_name), task.method_name)
        for task in tasks
    ]
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
        spec = spec_of(item.model_spec)
        if item.WhichOneof("result") == "regression_result":
            results.append(_regressions_from_pb(spec, item.regression_result))
        else:
            results.append(_classifications_from_pb(spec, item.classification_result))
    return results
