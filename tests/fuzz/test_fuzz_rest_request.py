"""The REST request decoder (``rest_decode``): any body gives a request or a 4xx error, never a crash."""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from mlsrv.errors import HTTP_STATUS, MlsrvError, ModelNotFound
from mlsrv.protocol.types import (
    ExamplesRequest,
    InferenceMethod,
    ModelSpec,
    PredictRequest,
    SignatureInfo,
    TensorInfo,
)
from mlsrv.server.rest_decode import RestTarget, examples_request, predict_request

SIGNATURES = {
    "serving_default": SignatureInfo(inputs={"x": TensorInfo("x:0", "DT_FLOAT", (-1, 1))},
                                     outputs={"y": TensorInfo("y:0", "DT_FLOAT", (-1, 1))}),
    "ints": SignatureInfo(inputs={"i": TensorInfo("i:0", "DT_INT64", (-1, 2))}, outputs={}),
    "strings": SignatureInfo(inputs={"s": TensorInfo("s:0", "DT_STRING", (-1,))}, outputs={}),
    "two": SignatureInfo(inputs={"a": TensorInfo("a:0", "DT_FLOAT", (-1,)), "b": TensorInfo("b:0", "DT_BOOL", (-1, 3))},
                         outputs={}),
    "scalar": SignatureInfo(inputs={"x": TensorInfo("x:0", "DT_DOUBLE", ())}, outputs={}),
    "unknown_rank": SignatureInfo(inputs={"x": TensorInfo("x:0", "DT_HALF", None)}, outputs={}),
}
TARGET = RestTarget(SIGNATURES)
SPEC = ModelSpec("m")

scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8)
    | st.builds(lambda raw: {"b64": base64.b64encode(raw).decode()}, st.binary(max_size=8))
    | st.sampled_from([{"b64": "!!"}, {"b64": 1}, "NaN", "Infinity", "-Infinity"])
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["x", "a", "b", "i", "s", "b64", "inputs", "z"]), inner, max_size=3),
    max_leaves=24,
)
keys = st.sampled_from(["instances", "inputs", "signature_name", "examples", "context", "other"])
documents = st.dictionaries(keys, values | st.sampled_from(list(SIGNATURES)), max_size=3)


def _dumps(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()  # the stdlib: big integers too, as a client may send them


def _assert_client_error(error: MlsrvError) -> None:
    assert 400 <= HTTP_STATUS[error.code] < 500 or error.code.name == "UNIMPLEMENTED", (error.code, error.message)
    assert isinstance(error.message, str) and "Traceback" not in error.message


@given(documents)
def test_predict_bodies(doc: dict[str, Any]) -> None:
    body = _dumps(doc)
    try:
        request = predict_request(body, "", SPEC, TARGET)
    except MlsrvError as error:
        _assert_client_error(error)
        return
    assert isinstance(request, PredictRequest)


@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_arbitrary_bytes(body: bytes) -> None:
    try:
        predict_request(body, "gzip" if body[:1] == b"\x1f" else "", SPEC, TARGET)
    except MlsrvError as error:
        _assert_client_error(error)


@settings(max_examples=40)
@given(st.integers(min_value=1, max_value=100_000))
def test_deep_nesting_is_a_client_error(depth: int) -> None:
    body = b'{"instances": ' + b"[" * depth + b"1.0" + b"]" * depth + b"}"
    try:
        predict_request(body, "", SPEC, TARGET)
    except MlsrvError as error:
        _assert_client_error(error)


@given(documents)
def test_an_unknown_model_is_reported_only_for_good_json(doc: dict[str, Any]) -> None:
    try:
        predict_request(_dumps(doc), "", SPEC, ModelNotFound("Servable not found for request: Latest(m)"))
    except MlsrvError as error:
        _assert_client_error(error)


@given(documents, st.sampled_from(list(InferenceMethod)))
def test_examples_bodies(doc: dict[str, Any], method: InferenceMethod) -> None:
    try:
        request = examples_request(_dumps(doc), "", SPEC, method)
    except MlsrvError as error:
        _assert_client_error(error)
        return
    assert isinstance(request, ExamplesRequest)
