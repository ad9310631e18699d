"""Predict responses and the REST client's side (spec 2.4, 2.8, 2.10 #31-#34, #38)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mlsrv.errors import InvalidArgument, TransportError
from mlsrv.protocol.json_codec import (
    decode_error,
    decode_predict_inputs,
    decode_predict_response,
    encode_error,
    encode_predict_request,
    encode_predict_response,
    parse_body,
)
from mlsrv.protocol.types import RequestFormat, SignatureInfo, TensorInfo

ROW, COLUMNAR = RequestFormat.ROW, RequestFormat.COLUMNAR


def strings(*items: bytes, shape: tuple[int, ...] | None = None) -> np.ndarray:
    arr = np.empty(len(items), dtype=object)
    arr[:] = list(items)
    return arr.reshape(shape or (len(items),))


def as_json(body: bytes) -> object:
    return json.loads(body)  # the stdlib accepts NaN/Infinity tokens, like TF Serving's own python test


OUTPUTS = {
    "double_scalar_tensor": np.array([8.0, 9.0]),
    "float_tensor": np.array([[1.0], [2.0]], np.float32),
    "int_tensor": np.arange(1, 13, dtype=np.int32).reshape(2, 3, 2),
    "str_tensor": strings(b"foo", b"bar", b"baz", b"bat", shape=(2, 2)),
    "str_tensor_bytes": strings(b"hello", b"world", b"tf", b"serving", shape=(2, 2)),
}


def test_single_output_row_and_columnar() -> None:
    y = np.array([2.5, 3.0, 3.5], np.float32)
    assert encode_predict_response({"y": y}, ROW) == b'{"predictions":[2.5,3.0,3.5]}'
    assert encode_predict_response({"y": y}, COLUMNAR) == b'{"outputs":[2.5,3.0,3.5]}'
    assert encode_predict_response({"y": np.array([[2.5], [3.0]], np.float32)}, ROW) == b'{"predictions":[[2.5],[3.0]]}'


def test_bytes_suffix_outputs_are_base64() -> None:
    body = encode_predict_response({"str_tensor_bytes": OUTPUTS["str_tensor_bytes"]}, ROW)
    assert as_json(body) == {
        "predictions": [[{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}], [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}]]
    }


def test_multiple_outputs_columnar_and_row() -> None:
    columnar = as_json(encode_predict_response(OUTPUTS, COLUMNAR))
    assert columnar == {
        "outputs": {
            "double_scalar_tensor": [8.0, 9.0],
            "float_tensor": [[1.0], [2.0]],
            "int_tensor": [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 10], [11, 12]]],
            "str_tensor": [["foo", "bar"], ["baz", "bat"]],
            "str_tensor_bytes": [
                [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}],
                [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}],
            ],
        }
    }
    row = as_json(encode_predict_response(OUTPUTS, ROW))
    assert row == {
        "predictions": [
            {
                "double_scalar_tensor": 8.0,
                "float_tensor": [1.0],
                "int_tensor": [[1, 2], [3, 4], [5, 6]],
                "str_tensor": ["foo", "bar"],
                "str_tensor_bytes": [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}],
            },
            {
                "double_scalar_tensor": 9.0,
                "float_tensor": [2.0],
                "int_tensor": [[7, 8], [9, 10], [11, 12]],
                "str_tensor": ["baz", "bat"],
                "str_tensor_bytes": [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}],
            },
        ]
    }


def test_non_finite_floats_are_bare_tokens() -> None:
    x = np.array([[np.nan, np.inf], [3, -np.inf]], np.float32)
    assert encode_predict_response({"x": x}, ROW) == b'{"predictions":[[NaN,Infinity],[3.0,-Infinity]]}'
    two = {"a": np.array([1.0, np.nan]), "b": np.array([[1], [2]], np.uint64)}
    assert encode_predict_response(two, ROW) == b'{"predictions":[{"a":1.0,"b":[1]},{"a":NaN,"b":[2]}]}'
    assert encode_predict_response({"x": np.array(-np.inf, np.float32)}, COLUMNAR) == b'{"outputs":-Infinity}'


def test_float_values_round_trip_exactly() -> None:
    rng = np.random.default_rng(1)
    for dtype in (np.float32, np.float64):
        x = (rng.normal(size=1000) * 10.0 ** rng.integers(-30, 30, size=1000)).astype(dtype)
        x[:5] = [3, 9000000, 1 / 3, 0.1, 1e-7]
        back = np.array(json.loads(encode_predict_response({"x": x}, COLUMNAR))["outputs"], dtype=dtype)
        np.testing.assert_array_equal(back, x)
    # Whole floats keep a '.0' (or an exponent) so clients can tell them from integers.
    assert encode_predict_response({"x": np.array([3, 1e20], np.float32)}, COLUMNAR) == b'{"outputs":[3.0,1e+20]}'


def test_value_types() -> None:
    outputs = {
        "b": np.array([True, False]),
        "i64": np.array([2**62, -1], np.int64),
        "u8": np.array([255, 0], np.uint8),
        "s": strings(b"\xc3\xa9", b"\xff"),
    }
    assert as_json(encode_predict_response(outputs, COLUMNAR)) == {
        "outputs": {"b": [True, False], "i64": [2**62, -1], "u8": [255, 0], "s": ["é", "\ufffd"]}
    }
    assert encode_predict_response({"x": np.array(3, np.int32)}, COLUMNAR) == b'{"outputs":3}'


@pytest.mark.parametrize(
    ("outputs", "fmt", "message"),
    [
        ({}, ROW, "Cannot convert empty tensor map to JSON"),
        ({"x": np.array(3, np.int32)}, ROW, "Tensor name: x has no shape information "),
        ({"a": np.zeros(1), "b": np.zeros(2)}, ROW, "Tensor name: b has inconsistent batch size: 2 expecting: 1"),
        ({"x": np.zeros(2, np.complex64)}, COLUMNAR, "Failed to write JSON value for tensor type: complex64"),
        ({"x": np.zeros(2, np.float16)}, ROW, "Failed to write JSON value for tensor type: half"),
        ({"x": np.zeros(2, np.uint16)}, ROW, "Failed to write JSON value for tensor type: uint16"),
    ],
)
def test_response_errors(outputs: dict[str, np.ndarray], fmt: RequestFormat, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        encode_predict_response(outputs, fmt)
    assert info.value.message == message


def test_empty_batch() -> None:
    assert encode_predict_response({"x": np.zeros((0, 2), np.float32)}, ROW) == b'{"predictions":[]}'


def test_error_body_is_tf_servings_bytes() -> None:
    assert encode_error('Bad key: "key"') == b'{\n    "error": "Bad key: \\"key\\""\n}'
    assert encode_error("it's\n\x01é") == '{\n    "error": "it\'s\\n\\u0001é"\n}'.encode()
    assert decode_error(encode_error('Bad key: "key"')) == 'Bad key: "key"'
    assert decode_error(b"") == ""
    assert decode_error(b"<html>404</html>") == "<html>404</html>"


@pytest.mark.parametrize("fmt", [ROW, COLUMNAR])
def test_client_decode_is_the_inverse_of_the_server_encoder(fmt: RequestFormat) -> None:
    outputs = {**OUTPUTS, "f_nan": np.array([[np.nan], [-np.inf]], np.float32), "flag": np.array([True, False])}
    decoded, got_fmt = decode_predict_response(encode_predict_response(outputs, fmt))
    assert got_fmt is fmt and decoded.keys() == outputs.keys()
    for name, arr in outputs.items():
        back = decoded[name]
        assert back.shape == arr.shape, name
        if arr.dtype == object:  # b64 and valid UTF-8 text both come back as the same bytes
            assert back.tolist() == arr.tolist()
        else:
            np.testing.assert_array_equal(back.astype(arr.dtype), arr)
    single, _ = decode_predict_response(encode_predict_response({"y": OUTPUTS["float_tensor"]}, fmt), "y")
    np.testing.assert_array_equal(single["y"].astype(np.float32), OUTPUTS["float_tensor"])
    empty, _ = decode_predict_response(b'{"predictions": []}')
    assert empty[""].shape == (0,)


def test_client_decode_rejects_non_tensor_responses() -> None:
    for body in (b"[1]", b'{"error": "x"}', b'{"predictions": [[1], [1, 2]]}', b'{"outputs": [null]}', b"{"):
        with pytest.raises(TransportError):
            decode_predict_response(body)


@pytest.mark.parametrize("fmt", [ROW, COLUMNAR])
def test_client_request_decodes_on_the_server(fmt: RequestFormat) -> None:
    inputs: dict[str, np.ndarray] = {
        "img": np.array([[1.5, np.nan], [np.inf, -2.0]], np.float32),
        "ids": np.array([[1, 2], [3, 4]], np.int64),
        "raw": strings(b"\x00\xff", b"ok"),
        "text": np.array(["é", "b"]),
    }
    signature = SignatureInfo(
        inputs={
            "img": TensorInfo("img:0", "DT_FLOAT", (-1, 2)),
            "ids": TensorInfo("ids:0", "DT_INT64", (-1, 2)),
            "raw": TensorInfo("raw:0", "DT_STRING", (-1,)),
            "text": TensorInfo("text:0", "DT_STRING", (-1,)),
        },
        outputs={},
    )
    doc = parse_body(encode_predict_request(inputs, fmt, signature_name="sig"))
    assert doc["signature_name"] == "sig"
    decoded, got_fmt = decode_predict_inputs(doc, signature)
    assert got_fmt is fmt
    np.testing.assert_array_equal(decoded["img"], inputs["img"])
    np.testing.assert_array_equal(decoded["ids"], inputs["ids"])
    assert decoded["raw"].tolist() == [b"\x00\xff", b"ok"]
    assert decoded["text"].tolist() == ["é".encode(), b"b"]


def test_client_request_single_unnamed_input_is_sent_bare() -> None:
    x = np.array([[1.0, 2.0]], np.float32)
    assert encode_predict_request({"": x}, ROW) == b'{"instances":[[1.0,2.0]]}'
    assert encode_predict_request({"": x}, COLUMNAR) == b'{"inputs":[[1.0,2.0]]}'
    assert encode_predict_request({"x": x}, COLUMNAR) == b'{"inputs":{"x":[[1.0,2.0]]}}'
    with pytest.raises(InvalidArgument):
        encode_predict_request({"a": np.zeros(2), "b": np.zeros(3)}, ROW)
    with pytest.raises(InvalidArgument):
        encode_predict_request({"a": np.array(1.0)}, ROW)
    assert math.isnan(as_json(encode_predict_request({"": np.array([np.nan])}, ROW))["instances"][0])  # type: ignore[index]


@pytest.mark.parametrize("fmt", [ROW, COLUMNAR])
@pytest.mark.parametrize("shape", [(1,), (1, 1), (3,), (2, 4), (4, 3, 2), (1, 48), (48,)])
def test_the_small_float32_shortcut_writes_the_general_paths_bytes(fmt: RequestFormat, shape: tuple[int, ...]) -> None:
    """One small finite float32 output is written without the general path's steps: same bytes."""
    from mlsrv.protocol.json_codec import _encode_any_predict_response

    rng = np.random.default_rng(sum(shape))
    specials = np.array([0.0, -0.0, 1.0, 3.0, 0.1, 1 / 3, 16777216.0, 3.4028235e38, -1.1754944e-38, 1e-45, 2.5e-7],
                        np.float32)  # fmt: skip
    for scale in (1.0, 1e-30, 1e30, 1e6):
        values = (rng.standard_normal(shape) * scale).astype(np.float32)
        flat = values.reshape(-1)
        flat[: min(flat.size, specials.size)] = specials[: flat.size]
        outputs = {"y": values}
        assert encode_predict_response(outputs, fmt) == _encode_any_predict_response(outputs, fmt)


@pytest.mark.parametrize(
    "values",
    [
        np.array([[1.0, np.nan]], np.float32),  # non-finite: TF's bare tokens, from the general path
        np.array([[np.inf]], np.float32),
        np.ones((2, 25), np.float32),  # 50 values: more than the shortcut takes
        np.array(2.5, np.float32),  # no batch dimension
        np.zeros((0, 2), np.float32),
        np.array([[1.5]], np.dtype(">f4")),  # not native byte order
    ],
)
def test_what_the_small_float32_shortcut_leaves_to_the_general_path(values: np.ndarray) -> None:
    from mlsrv.protocol.json_write import small_float32_json

    assert small_float32_json(values) is None
