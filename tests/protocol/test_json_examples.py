"""Classify/regress bodies: JSON examples -> serialized tf.Examples and ``results`` (spec 2.9, 2.10 #5, #6, #35-#37)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlsrv.errors import InvalidArgument, TransportError
from mlsrv.protocol.example_codec import Feature, decode_example, encode_example
from mlsrv.protocol.json_codec import (
    decode_classify_response,
    decode_examples_request,
    decode_regress_response,
    encode_classify_response,
    encode_regress_response,
    parse_body,
)
from mlsrv.protocol.types import ClassifyResponse, InferenceMethod, ModelSpec, RegressResponse

CLASSIFY = InferenceMethod.CLASSIFY


def examples(body: bytes) -> list[dict[str, Feature]]:
    return [decode_example(e) for e in decode_examples_request(parse_body(body), CLASSIFY)]


def error(body: bytes) -> str:
    with pytest.raises(InvalidArgument) as info:
        decode_examples_request(parse_body(body), InferenceMethod.REGRESS)
    return info.value.message


def test_example_list() -> None:
    body = (
        b'{"examples": [{"names": ["foo", "bar"], "ratings": [8.0, 9.0], "age": 20}, '
        b'{"names": ["baz"], "ratings": 6.0}]}'
    )
    assert examples(body) == [
        {
            "names": Feature("bytes", [b"foo", b"bar"]),
            "ratings": Feature("float", [8.0, 9.0]),
            "age": Feature("int64", [20]),
        },
        {"names": Feature("bytes", [b"baz"]), "ratings": Feature("float", [6.0])},
    ]


def test_example_list_with_context() -> None:
    body = (
        b'{"context": {"query": "pizza", "location": ["sfo"]}, "examples": ['
        b'{"names": ["foo", {"b64": "aGVsbG8="}], "intboolmix": [1, true, false], "x": -Infinity, "e": [], '
        b'"big": 18446744073709551616, "query": "override"}]}'
    )
    serialized = decode_examples_request(parse_body(body), CLASSIFY)
    context = encode_example({"location": Feature("bytes", [b"sfo"]), "query": Feature("bytes", [b"pizza"])})
    assert serialized[0].startswith(context)  # context + example, merged by protobuf parsing
    (merged,) = [decode_example(e) for e in serialized]
    assert merged == {
        "location": Feature("bytes", [b"sfo"]),
        "query": Feature("bytes", [b"override"]),
        "names": Feature("bytes", [b"foo", b"hello"]),
        "intboolmix": Feature("int64", [1, 1, 0]),
        "x": Feature("float", [-math.inf]),
        "e": Feature(None, []),
        "big": Feature("float", [float(np.float32(2.0**64))]),  # beyond uint64: a double, so a float
    }


def test_regress_example_half_plus_two() -> None:
    body = b'{"signature_name": "regress_x_to_y", "examples": [{"x": 80.0}]}'
    assert examples(body) == [{"x": Feature("float", [80.0])}]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b'{"signature_name": ["hello"], "examples": []}',
            'JSON Value: {\n    "signature_name": ["hello"],\n    "examples": []\n} not formatted correctly. '
            "'signature_name' key must be a string value.",
        ),
        (b'{"context": [1], "examples": [{}]}', "Example must be JSON object but got JSON Array"),
        (
            b'{"examples": {"a": 1}}',
            'JSON Value: {\n    "examples": {\n        "a": 1\n    }\n} '
            "Expecting 'examples' value to be an list/array",
        ),
        (b'{"examples": [[1]]}', "Example must be JSON object but got JSON Array"),
        (b'{"examples": [1]}', "Example must be JSON object but got JSON Number"),
        (b'{"examples": []}', "JSON Value: {\n    \"examples\": []\n} 'examples' value is an empty array"),
        (
            b'{"foo": 1}',
            "JSON Value: {\n    \"foo\": 1\n} When method is classify, key 'examples' is expected and was not found",
        ),
        (b'{"examples": [{"names": [10, null]}]}', "Feature: names has element with unexpected JSON type: Null"),
        (b'{"examples": [{"names": [10, 10.0]}]}', "Unexpected element type in feature: names expecting type: int64"),
        (b'{"examples": [{"names": ["a", 1]}]}', "Unexpected element type in feature: names expecting type: bytes"),
        (b'{"examples": [{"names": [1.5, true]}]}', "Unexpected element type in feature: names expecting type: float"),
        (
            b'{"examples": [{"names": [10, {"test": 10}]}]}',
            "Feature: names has element with unexpected JSON type: Object",
        ),
        (b'{"examples": [{"names": [[10], 20]}]}', "Feature: names has element with unexpected JSON type: Array"),
        (
            b'{"examples": [{"names": [20, 18446744073709551603]}]}',
            "Feature: names has uint64_t element. Only int64_t is supported.",
        ),
        (b'{"examples": [{"names": [{"b64": "a-_b"}]}]}', "Unable to base64 decode"),
        (
            b'{"examples": [{"names": [1, {"b64": "aGk="}]}]}',
            "Unexpected element type in feature: names expecting type: int64",
        ),
    ],
)
def test_errors(body: bytes, message: str) -> None:
    assert error(body) == message


def test_classify_response() -> None:
    scores_only = ClassifyResponse(ModelSpec("m"), None, np.array([[12.0]], np.float32))
    assert encode_classify_response(scores_only) == b'{"results":[[["",12.0]]]}'
    classes = np.empty((2, 2), dtype=object)
    classes[:] = [[b"cat", b"dog"], [b"\xc3\xa9", b"x"]]
    both = ClassifyResponse(ModelSpec("m"), classes, np.array([[0.25, np.nan], [1 / 3, -np.inf]], np.float32))
    body = encode_classify_response(both)
    assert body == '{"results":[[["cat",0.25],["dog",NaN]],[["é",0.333333343],["x",-Infinity]]]}'.encode()
    back = decode_classify_response(body, ModelSpec("m"))
    assert back.classes is not None and back.classes.tolist() == classes.tolist()
    assert back.scores is not None
    np.testing.assert_array_equal(back.scores, both.scores)
    assert decode_classify_response(encode_classify_response(scores_only)).classes is None
    classes_only = decode_classify_response(encode_classify_response(ClassifyResponse(ModelSpec("m"), classes, None)))
    assert classes_only.scores is not None and not classes_only.scores.any()


def test_regress_response() -> None:
    resp = RegressResponse(ModelSpec("m"), np.array([[42.0], [3.5]], np.float32))
    body = encode_regress_response(resp)
    assert body == b'{"results":[42.0,3.5]}'
    np.testing.assert_array_equal(decode_regress_response(body).values, [42.0, 3.5])
    assert encode_regress_response(RegressResponse(ModelSpec("m"), np.array([np.nan]))) == b'{"results":[NaN]}'


def test_empty_results_are_errors() -> None:
    with pytest.raises(InvalidArgument, match="^Cannot convert empty ClassificationResults to JSON$"):
        encode_classify_response(ClassifyResponse(ModelSpec("m"), None, np.zeros((0, 1), np.float32)))
    with pytest.raises(InvalidArgument, match="^Cannot convert empty RegressionResults to JSON$"):
        encode_regress_response(RegressResponse(ModelSpec("m"), np.zeros(0, np.float32)))


def test_malformed_results_are_transport_errors() -> None:
    for body in (b"{}", b'{"results": 1}', b'{"results": [[["a", 1]], []]}', b"nope"):
        with pytest.raises(TransportError):
            decode_classify_response(body)
    with pytest.raises(TransportError):
        decode_regress_response(b'{"results": [[1]]}')
