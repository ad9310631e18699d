"""rapidjson-style value printing (``JSON Value: ...``), TF's WriteDecimal and absl base64 (spec 2.4, 2.7, 2.8)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlsrv.protocol.json_value import (
    absl_b64decode,
    format_decimal,
    json_type_name,
    rapidjson_double,
    value_to_string,
)


def test_objects_are_multiline_and_arrays_single_line() -> None:
    value = {"a": [1, 2.5, {"b": None}], "c": {}, "d": [], "e": 'x"y\n\x01/é'}
    assert value_to_string(value) == (
        "{\n"
        '    "a": [1, 2.5, {\n'
        '            "b": null\n'
        "        }],\n"
        '    "c": {},\n'
        '    "d": [],\n'
        '    "e": "x\\"y\\n\\u0001/é"\n'
        "}"
    )


def test_top_level_decimals_use_write_decimal() -> None:
    assert value_to_string(1.0) == "1.0"
    assert value_to_string(0.1) == "0.1"
    assert value_to_string(1435774380.0) == "1.43577434e+09"  # printed as the float it becomes
    assert value_to_string(1e300) == "1e+300"  # outside float range: printed as a double
    assert value_to_string(math.nan) == "NaN"
    assert value_to_string(-math.inf) == "-Infinity"
    assert value_to_string(3) == "3"
    assert value_to_string(True) == "true"
    assert value_to_string(None) == "null"


def test_nested_decimals_use_rapidjson_shortest_form() -> None:
    assert value_to_string([1.0, 1e21, 1e-7, 0.000001, 123.456, 1.5e300, -0.0, 2**70]) == (
        "[1.0, 1e21, 1e-7, 0.000001, 123.456, 1.5e300, -0.0, 1.1805916207174113e21]"
    )


def test_nested_nan_aborts_the_print_like_rapidjson() -> None:
    assert value_to_string([1.0, math.nan, 2]) == "[1.0, "


def test_long_values_are_cut_at_256_bytes() -> None:
    text = value_to_string(list(range(1000)))
    assert len(text.encode()) == 256 and text.startswith("[0, 1, 2")
    assert len(value_to_string("é" * 300).encode()) <= 256


@pytest.mark.parametrize(
    ("value", "single", "text"),
    [
        (9000000.0, True, "9e+06"),
        (999999.0, True, "999999.0"),
        (0.5, True, "0.5"),
        (float(np.float32(0.00003)), True, "3e-05"),
        (555557.5, True, "555557.5"),
        (3.0, True, "3.0"),
        (float(np.float32(1 / 3)), True, "0.333333343"),
        (1 / 3, False, "0.33333333333333331"),
        (-0.0, False, "-0.0"),
    ],
)
def test_format_decimal_matches_tf_examples(value: float, single: bool, text: str) -> None:
    assert format_decimal(value, single=single) == text


def test_rapidjson_double_refuses_non_finite() -> None:
    assert rapidjson_double(math.inf) is None
    assert rapidjson_double(2.0) == "2.0"


def test_json_type_names() -> None:
    values: list[object] = [None, False, True, {}, [], "", 1, 1.5]
    names = [json_type_name(v) for v in values]
    assert names == ["Null", "False", "True", "Object", "Array", "String", "Number", "Number"]


@pytest.mark.parametrize(
    ("text", "decoded"),
    [
        ("aGVsbG8=", b"hello"),
        ("aGVsbG8", b"hello"),  # missing padding is accepted
        ("aGVs bG8=\n", b"hello"),  # whitespace is skipped
        ("aGVsbG8.", b"hello"),  # absl also takes '.' as padding
        ("", b""),
        ("aGVsbG8==", None),  # wrong amount of padding
        ("a-_b", None),  # web-safe alphabet is rejected
        ("a", None),
        ("aG=Vs", None),
        ("é", None),
    ],
)
def test_absl_base64(text: str, decoded: bytes | None) -> None:
    assert absl_b64decode(text) == decoded
