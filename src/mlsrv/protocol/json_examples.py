"""REST classify/regress: JSON examples -> serialized tf.Examples, and the ``{"results": ...}`` bodies.

Requests follow TF Serving's ``FillClassifyRegressRequestFromJson``: ``signature_name`` check,
then ``context`` (optional), then ``examples``; each JSON feature becomes a bytes, float or int64
list by its JSON types, with TF's messages for anything else. The output is what TF Serving feeds
the model: one serialized Example per example, prefixed with the serialized context when present
(protobuf merge semantics, as ``InputToSerializedExampleTensor`` does).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from mlsrv.errors import InvalidArgument, TransportError
from mlsrv.protocol.example_codec import Feature, FeatureKind, encode_example
from mlsrv.protocol.json_parse import loads
from mlsrv.protocol.json_value import (
    INT64_MAX,
    decode_b64_object,
    is_b64_object,
    is_json_double,
    json_type_name,
    signature_name_of,
    value_to_string,
)
from mlsrv.protocol.json_write import dumps, tf_float32_values
from mlsrv.protocol.types import ClassifyResponse, InferenceMethod, ModelSpec, RegressResponse


def decode_examples_request(doc: Mapping[str, Any], method: InferenceMethod) -> list[bytes]:
    """The serialized Examples of a classify/regress body (context merged into each one).

    ``method`` is accepted for symmetry; TF Serving's missing-``examples`` message says
    "classify" for both methods, and so does this one.
    """
    del method
    signature_name_of(doc)  # TF checks signature_name before anything else
    context = encode_example(_features(doc["context"])) if "context" in doc else None
    if "examples" not in doc:
        raise InvalidArgument(
            f"JSON Value: {value_to_string(doc)} When method is classify, key 'examples' is expected and was not found"
        )
    examples = doc["examples"]
    if type(examples) is not list:
        raise InvalidArgument(f"JSON Value: {value_to_string(doc)} Expecting 'examples' value to be an list/array")
    if not examples:
        raise InvalidArgument(f"JSON Value: {value_to_string(doc)} 'examples' value is an empty array")
    serialized = [encode_example(_features(example)) for example in examples]
    if context is not None:
        serialized = [context + example for example in serialized]
    return serialized


def _features(value: Any) -> dict[str, Feature]:
    """TF's ``MakeExampleFromJsonObject``."""
    if type(value) is not dict:
        raise InvalidArgument(f"Example must be JSON object but got JSON {json_type_name(value)}")
    features: dict[str, Feature] = {}
    for name, content in value.items():
        kind: FeatureKind | None = None
        values: list[Any] = []
        for item in content if type(content) is list else [content]:
            kind = _add_value(item, name, kind, values)
        features[name] = Feature(kind, values)
    return features


def _add_value(item: Any, name: str, kind: FeatureKind | None, values: list[Any]) -> FeatureKind:
    """TF's ``AddValueToFeature``: append one JSON scalar, returning the feature's kind."""
    t = type(item)
    want: FeatureKind
    value: Any
    if item is None or t is list or (t is dict and not is_b64_object(item)):
        raise InvalidArgument(f"Feature: {name} has element with unexpected JSON type: {json_type_name(item)}")
    if t is bool:
        want, value = "int64", int(item)
    elif t is dict or t is str:
        want, value = "bytes", None
    elif is_json_double(item):
        want, value = "float", float(item)
    else:
        want, value = "int64", item
    if kind is not None and kind != want:
        raise InvalidArgument(f"Unexpected element type in feature: {name} expecting type: {kind}")
    if t is dict:
        value = decode_b64_object(item)
    elif t is str:
        value = item.encode("utf-8")
    elif want == "int64" and value > INT64_MAX:
        raise InvalidArgument(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
    values.append(value)
    return want


def _scores(values: np.ndarray) -> list[Any]:
    """float32 scores or regression values as TF writes them (``WriteDecimal``), non-finite as tokens."""
    with np.errstate(over="ignore"):
        decimals = tf_float32_values(np.asarray(values, dtype=np.float32)).reshape(-1).tolist()
    return [_token(v) for v in decimals]


def _token(value: float) -> Any:
    if math.isfinite(value):
        return value
    return orjson.Fragment(b"NaN" if math.isnan(value) else (b"Infinity" if value > 0 else b"-Infinity"))


def _label(value: Any) -> str:
    raw = value if isinstance(value, bytes) else str(value).encode("utf-8")
    return raw.decode("utf-8", "replace")


def encode_classify_response(resp: ClassifyResponse) -> bytes:
    """``{"results": [[["label", score], ...] per example]}``; label ``""`` without a classes output."""
    ref = resp.scores if resp.scores is not None else resp.classes
    if ref is None or ref.shape[0] == 0:
        raise InvalidArgument("Cannot convert empty ClassificationResults to JSON")
    n = ref.shape[0]
    classes = None if resp.classes is None else resp.classes.reshape(n, -1)
    scores = None if resp.scores is None else resp.scores.reshape(n, -1)
    width = (scores if scores is not None else classes).shape[1]  # type: ignore[union-attr]
    values = _scores(np.zeros((n, width), np.float32) if scores is None else scores)
    results = [
        [["" if classes is None else _label(classes[i, j]), values[i * width + j]] for j in range(width)]
        for i in range(n)
    ]
    return dumps({"results": results})


def encode_regress_response(resp: RegressResponse) -> bytes:
    """``{"results": [v, ...]}``, one float per example."""
    values = np.asarray(resp.values).reshape(-1)
    if values.size == 0:
        raise InvalidArgument("Cannot convert empty RegressionResults to JSON")
    return dumps({"results": _scores(values)})


def _results(body: bytes) -> Any:
    try:
        doc = loads(body)
    except InvalidArgument as exc:
        raise TransportError(f"invalid JSON in response: {exc.message}") from None
    if type(doc) is not dict or "results" not in doc or type(doc["results"]) is not list:
        raise TransportError("response has no 'results' list")
    return doc["results"]


def decode_classify_response(body: bytes, spec: ModelSpec | None = None) -> ClassifyResponse:
    """Inverse of :func:`encode_classify_response`.

    ``classes`` is None when every label is empty (the signature had no classes output); a
    response without scores cannot be told apart, so ``scores`` is always an array (zeros then).
    """
    results = _results(body)
    try:
        rows = [[(pair[0], pair[1]) for pair in row] for row in results]
        width = len(rows[0]) if rows else 0
        if any(len(row) != width for row in rows):
            raise TransportError("classification results have different lengths")
        labels = [label.encode("utf-8") for row in rows for label, _ in row]
        with np.errstate(over="ignore"):
            scores = np.array([score for row in rows for _, score in row], dtype=np.float32)
    except (TypeError, IndexError, AttributeError, ValueError) as exc:
        raise TransportError(f"malformed classification results: {exc}") from None
    classes: np.ndarray | None = None
    if any(labels):
        classes = np.empty(len(labels), dtype=object)
        classes[:] = labels
        classes = classes.reshape(len(rows), width)
    return ClassifyResponse(spec or ModelSpec(""), classes, scores.reshape(len(rows), width))


def decode_regress_response(body: bytes, spec: ModelSpec | None = None) -> RegressResponse:
    """Inverse of :func:`encode_regress_response`: values as float32, one per example."""
    results = _results(body)
    try:
        with np.errstate(over="ignore"):
            values = np.array(results, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise TransportError(f"malformed regression results: {exc}") from None
    if values.ndim != 1:
        raise TransportError("regression results must be a flat list of numbers")
    return RegressResponse(spec or ModelSpec(""), values)
