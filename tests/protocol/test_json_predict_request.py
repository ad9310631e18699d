"""Predict request bodies -> tensors, with TF Serving's checks and messages (spec 2.7, 2.10 #14-#30)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from mlsrv.errors import InvalidArgument, MlsrvError, Unimplemented
from mlsrv.protocol import json_tensor
from mlsrv.protocol.json_codec import decode_predict_inputs, parse_body, signature_name_of
from mlsrv.protocol.types import RequestFormat, SignatureInfo, TensorInfo

ROW, COLUMNAR = RequestFormat.ROW, RequestFormat.COLUMNAR
WRAP = "Failed to process element: {i} of 'instances' list. Error: INVALID_ARGUMENT: "


def sig(**inputs: str) -> SignatureInfo:
    return SignatureInfo(inputs={k: TensorInfo(f"{k}:0", dt, None) for k, dt in inputs.items()}, outputs={})


FLOAT = sig(x="DT_FLOAT")
INT32 = sig(x="DT_INT32")
MULTI = sig(int_tensor="DT_INT32", str_tensor="DT_STRING", float_tensor="DT_FLOAT", double_tensor="DT_DOUBLE")


def decode(body: bytes, signature: SignatureInfo) -> tuple[dict[str, np.ndarray], RequestFormat]:
    doc = parse_body(body)
    signature_name_of(doc)
    return decode_predict_inputs(doc, signature)


def error(body: bytes, signature: SignatureInfo, kind: type[MlsrvError] = InvalidArgument) -> str:
    with pytest.raises(MlsrvError) as info:
        decode(body, signature)
    assert type(info.value) is kind
    return info.value.message


def test_row_and_columnar_float() -> None:
    inputs, fmt = decode(b'{"instances": [[1.0, 2.0], [3.0, 4.0]]}', FLOAT)
    assert fmt is ROW and inputs["x"].dtype == np.float32
    np.testing.assert_array_equal(inputs["x"], [[1, 2], [3, 4]])
    inputs, fmt = decode(b'{"signature_name": "serving_default", "inputs": [3.0, 4.0]}', FLOAT)
    assert fmt is COLUMNAR
    np.testing.assert_array_equal(inputs["x"], np.array([3, 4], np.float32))


@pytest.mark.parametrize(
    ("body", "signature", "message"),
    [
        (
            b'{"instances": ["x", "y"]}',
            FLOAT,
            WRAP.format(i=0) + 'JSON Value: "x" Type: String is not of expected type: float',
        ),
        (b'{"instances": [[1,2],[3,4],[5,6,7]]}', INT32, WRAP.format(i=2) + "Expecting tensor size: 2 but got: 3"),
        (b'{"instances": [[1,2],[3,4],[[5,6]]]}', INT32, WRAP.format(i=2) + "Expecting shape [2] but got: [1,2]"),
        (b'{"instances": [1, [1]]}', INT32, WRAP.format(i=1) + "Expecting shape [] but got: [1]"),
        (
            b'{"instances": [[1,2],["a","b"]]}',
            INT32,
            WRAP.format(i=1) + 'JSON Value: "a" Type: String is not of expected type: int32',
        ),
        (
            b'{"instances": [1, 1.0]}',
            INT32,
            WRAP.format(i=1) + "JSON Value: 1.0 Type: Number is not of expected type: int32",
        ),
        (
            b'{"instances": [2147483648]}',
            INT32,
            WRAP.format(i=0) + "JSON Value: 2147483648 Type: Number is not of expected type: int32",
        ),
        (
            b'{"instances": [1.0, true]}',
            FLOAT,
            WRAP.format(i=1) + "JSON Value: true Type: True is not of expected type: float",
        ),
        (
            b'{"instances": [[1.0, 2.0], [3.0, null]]}',
            FLOAT,
            WRAP.format(i=1) + "JSON Value: null Type: Null is not of expected type: float",
        ),
        (
            b'{"instances": [0, 1]}',
            sig(b="DT_BOOL"),
            WRAP.format(i=0) + "JSON Value: 0 Type: Number is not of expected type: bool",
        ),
        (
            b'{"instances": [-1]}',
            sig(u="DT_UINT32"),
            WRAP.format(i=0) + "JSON Value: -1 Type: Number is not of expected type: uint32",
        ),
        (
            b'{"instances": [18446744073709551615]}',
            sig(i="DT_INT64"),
            WRAP.format(i=0) + "JSON Value: 18446744073709551615 Type: Number is not of expected type: int64",
        ),
        (
            b'{"instances": [{"b64": "aGVsbG8="}]}',
            FLOAT,
            WRAP.format(i=0) + 'JSON Value: {\n    "b64": "aGVsbG8="\n} Type: Object is not of expected type: float',
        ),
        (b'{"instances": [{"b64": "a-_b"}]}', sig(s="DT_STRING"), WRAP.format(i=0) + "Unable to base64 decode"),
        (
            b'{"instances": [[{"b64": "aGk=", "x": 1}]]}',
            sig(s="DT_STRING"),
            WRAP.format(i=0)
            + 'JSON Value: {\n    "b64": "aGk=",\n    "x": 1\n} not formatted correctly for base64 data',
        ),
        (
            b'{"instances": [1.5]}',
            sig(h="DT_HALF"),
            "Failed to process element: 0 of 'instances' list. Error: UNIMPLEMENTED: "
            "Conversion of JSON Value: 1.5 to type: half",
        ),
        (
            b'{"instances": [1], "inputs": [1]}',
            FLOAT,
            'JSON Value: {\n    "instances": [1],\n    "inputs": [1]\n} Not formatted correctly expecting only one of '
            "'inputs' or 'instances' keys to exist ",
        ),
        (b'{"foo": 1}', FLOAT, "Missing 'inputs' or 'instances' key"),
        (
            b'{"instances": 5}',
            FLOAT,
            "JSON Value: {\n    \"instances\": 5\n} Expecting 'instances' to be an list/array",
        ),
        (b'{"instances": []}', FLOAT, "JSON Value: {\n    \"instances\": []\n} No values in 'instances' array"),
        (
            b'{"instances": [1, 2]}',
            sig(a="DT_FLOAT", b="DT_FLOAT"),
            "instances is a plain list, but expecting list of objects as multiple input tensors required as per "
            "tensorinfo_map",
        ),
        (
            b'{"instances": [{"a": 1, "b": 2}, [1, 2]]}',
            sig(a="DT_FLOAT", b="DT_FLOAT"),
            "Expecting object but got list at item 1 of input list",
        ),
        (
            b'{"instances": [["baz", "bar"], {"str_tensor": ["x"]}]}',
            sig(s="DT_STRING"),
            "Expecting value/list but got object at item 1 of input list",
        ),
        (
            b'{"instances": [{"a": 1, "c": 2}]}',
            sig(a="DT_FLOAT", b="DT_FLOAT"),
            "Failed to process element: 0 key: c of 'instances' list. Error: INVALID_ARGUMENT: "
            "JSON object: does not have named input: c",
        ),
        (
            b'{"instances": [{"a": 1, "b": 2}, {"a": 3}]}',
            sig(a="DT_FLOAT", b="DT_FLOAT"),
            "Failed to process element: 1 of 'instances' list. "
            'JSON object: {\n    "a": 3\n} keys must be equal to: a,b',
        ),
        (
            b'{"inputs": [1, 2]}',
            sig(a="DT_FLOAT", b="DT_FLOAT"),
            "inputs is a plain value/list, but expecting an object as multiple input tensors required as per "
            "tensorinfo_map",
        ),
        (
            b'{"inputs": {"a": [1], "z": 1}}',
            sig(a="DT_FLOAT", b="DT_FLOAT"),
            "Missing named input: b in 'inputs' object.",
        ),
        (b'{"inputs": [[1,2],[3]]}', FLOAT, "Encountered list at unexpected size: 1 at level: 1 expected size: 2"),
        (b'{"inputs": [[[1]],[[[2]]]]}', FLOAT, "Encountered list at unexpected level: 3 expected < 3"),
        (
            b'{"inputs": [[1,2],3]}',
            FLOAT,
            "JSON Value: 3 found at incorrect level: 2 in the JSON DOM. Expected at level: 2",
        ),
        (
            b'{"inputs": [[], ""]}',
            FLOAT,
            'JSON Value: "" found at incorrect level: 2 in the JSON DOM. Expected at level: 2',
        ),
        (
            b'{"inputs": [["a"], "bc"]}',
            sig(s="DT_STRING"),
            'JSON Value: "bc" found at incorrect level: 2 in the JSON DOM. Expected at level: 2',
        ),
        (b'{"inputs": "x"}', FLOAT, 'JSON Value: "x" Type: String is not of expected type: float'),
    ],
)
def test_invalid_requests(body: bytes, signature: SignatureInfo, message: str) -> None:
    assert error(body, signature) == message


def test_unsupported_dtype_is_unimplemented_in_columnar_format() -> None:
    message = error(b'{"inputs": [1.5]}', sig(h="DT_HALF"), Unimplemented)
    assert message == "Conversion of JSON Value: 1.5 to type: half"
    assert error(b'{"inputs": [[1, 2]]}', sig(c="DT_COMPLEX64"), Unimplemented).endswith("to type: complex64")


def test_signature_without_inputs() -> None:
    empty = SignatureInfo(inputs={}, outputs={})
    assert error(b'{"instances": [1]}', empty) == "Failed to get input map for signature: DEFAULT"
    assert error(b'{"signature_name": "s", "inputs": 1}', empty) == "Failed to get input map for signature: s"


def test_signature_name_must_be_a_string() -> None:
    with pytest.raises(InvalidArgument) as info:
        signature_name_of(parse_body(b'{"signature_name": 100}'))
    assert info.value.message == (
        'JSON Value: {\n    "signature_name": 100\n} not formatted correctly. '
        "'signature_name' key must be a string value."
    )
    assert signature_name_of({"instances": [1]}) == ""


def test_b64_strings_in_row_format() -> None:
    inputs, _ = decode(b'{"instances": [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}]}', sig(s="DT_STRING"))
    assert inputs["s"].shape == (2,) and inputs["s"].dtype == object
    assert inputs["s"].tolist() == [b"hello", b"world"]


def test_named_row_inputs_with_nan_and_infinity() -> None:
    body = (
        b'{"instances": [{"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"], '
        b'"float_tensor": [1.0, NaN], "double_tensor": [1.0]}, '
        b'{"int_tensor": [[7,8],[9,10],[11,12]], "str_tensor": ["baz", "bat"], '
        b'"float_tensor": [2.0, Infinity], "double_tensor": [-Infinity]}]}'
    )
    inputs, fmt = decode(body, MULTI)
    assert fmt is ROW
    assert {k: v.shape for k, v in inputs.items()} == {
        "int_tensor": (2, 3, 2),
        "str_tensor": (2, 2),
        "float_tensor": (2, 2),
        "double_tensor": (2, 1),
    }
    assert math.isnan(inputs["float_tensor"][0, 1]) and inputs["float_tensor"][1, 1] == math.inf
    assert inputs["double_tensor"].dtype == np.float64 and inputs["double_tensor"][1, 0] == -math.inf
    assert inputs["str_tensor"].tolist() == [[b"foo", b"bar"], [b"baz", b"bat"]]


def test_columnar_shapes_as_given() -> None:
    body = (
        b'{"inputs": {"int_tensor": [[[1,2],[3,4],[5,6]]], "str_tensor": ["foo","bar"], '
        b'"bin_tensor": {"b64": "aGVsbG8="}, "extra": 1}}'
    )
    inputs, _ = decode(body, sig(int_tensor="DT_INT32", str_tensor="DT_STRING", bin_tensor="DT_STRING"))
    assert inputs["int_tensor"].shape == (1, 3, 2) and inputs["int_tensor"].dtype == np.int32
    assert inputs["str_tensor"].shape == (2,)
    assert inputs["bin_tensor"].shape == () and inputs["bin_tensor"][()] == b"hello"
    assert decode(b'{"inputs": 3}', FLOAT)[0]["x"].shape == ()
    assert decode(b'{"inputs": []}', FLOAT)[0]["x"].shape == (0,)
    assert decode(b'{"inputs": [[], []]}', FLOAT)[0]["x"].shape == (2, 0)


def test_float_conversion_edges() -> None:
    body = (
        b'{"instances": [1435774380, 1435774380.0, 1.7976931348623157e308, -1.7976931348623157e308, '
        b"2.2250738585072014e-308]}"
    )
    x = decode(body, FLOAT)[0]["x"]
    assert x.tolist() == [1435774336.0, 1435774336.0, math.inf, -math.inf, 0.0]


def test_integer_narrowing_is_a_c_cast() -> None:
    assert decode(b'{"instances": [300, -1]}', sig(u="DT_UINT8"))[0]["u"].tolist() == [44, 255]
    assert decode(b'{"instances": [4294967295]}', sig(u="DT_UINT32"))[0]["u"].tolist() == [4294967295]
    u64 = decode(b'{"instances": [18446744073709551615, 1]}', sig(u="DT_UINT64"))[0]["u"]
    assert u64.dtype == np.uint64 and u64.tolist() == [18446744073709551615, 1]
    assert decode(b'{"instances": [true, false]}', sig(b="DT_BOOL"))[0]["b"].tolist() == [True, False]


def test_unsupported_dtype_with_no_values_is_accepted() -> None:
    assert decode(b'{"inputs": []}', sig(h="DT_HALF"))[0]["h"].dtype == np.float16


def test_string_inputs_keep_utf8_bytes() -> None:
    inputs, _ = decode('{"inputs": ["é", "\\u0000"]}'.encode(), sig(s="DT_STRING"))
    assert inputs["s"].tolist() == ["é".encode(), b"\x00"]


def test_large_valid_tensors_never_take_the_exact_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Performance contract: valid numeric/string tensors convert in numpy, not per element in Python."""

    def fail(*_: object) -> None:
        raise AssertionError("exact (per-element) path used for a valid tensor")

    monkeypatch.setattr(json_tensor, "fill_exact", fail)
    monkeypatch.setattr("mlsrv.protocol.json_codec.fill_exact", fail)
    image = np.random.default_rng(0).random((2, 64, 64, 3)).astype(np.float32)
    for key in ("instances", "inputs"):
        doc = {key: image.tolist()}
        np.testing.assert_array_equal(decode_predict_inputs(doc, FLOAT)[0]["x"], image)
    ints = np.arange(4096, dtype=np.int64).reshape(64, 64)
    assert decode_predict_inputs({"inputs": ints.tolist()}, INT32)[0]["x"].dtype == np.int32
    named = {"instances": [{"a": row, "b": [b % 7 for b in row]} for row in ints.tolist()]}
    out = decode_predict_inputs(named, sig(a="DT_INT64", b="DT_UINT8"))[0]
    assert out["a"].shape == (64, 64) and out["b"].dtype == np.uint8
    strings = decode_predict_inputs({"inputs": [["a", "b"]] * 100}, sig(s="DT_STRING"))[0]["s"]
    assert strings.shape == (100, 2)
    images = decode_predict_inputs({"instances": [{"b64": "aGk="}, "x"] * 50}, sig(s="DT_STRING"))[0]["s"]
    assert images.tolist() == [b"hi", b"x"] * 50


@pytest.mark.parametrize("seed", range(70))
def test_fast_and_exact_paths_agree(seed: int) -> None:
    rng = np.random.default_rng(seed)
    dt = ["DT_FLOAT", "DT_DOUBLE", "DT_INT32", "DT_INT64", "DT_UINT8", "DT_BOOL", "DT_STRING"][seed % 7]
    shape = tuple(int(d) for d in rng.integers(0, 4, size=int(rng.integers(0, 4))))
    leaf: Callable[[], object] = {
        "DT_BOOL": lambda: bool(rng.integers(2)),
        "DT_STRING": lambda: "s" + str(rng.integers(100)),
        "DT_FLOAT": lambda: float(rng.normal()) if rng.integers(2) else int(rng.integers(-5, 5)),
        "DT_DOUBLE": lambda: float(rng.normal()),
    }.get(dt, lambda: int(rng.integers(0, 200)))
    value = np.empty(shape, dtype=object)
    for index in np.ndindex(shape):
        value[index] = leaf()
    nested = value.tolist()
    if rng.integers(3) == 0 and value.size:  # plant one bad leaf
        flat_index = np.unravel_index(int(rng.integers(value.size)), shape)
        planted: list[object] = [True, "x", None, 1.5, {"b64": 1}, {"b64": "aGk="}, {"b64": "a-_b"}, [1]]
        value[flat_index] = planted[int(rng.integers(len(planted)))]
        nested = value.tolist()
    fast = json_tensor.fill_fast(nested, dt)
    try:
        values, exact_shape = json_tensor.fill_exact(nested, dt)
        exact: np.ndarray | None = json_tensor.to_array(values, exact_shape, dt)
    except MlsrvError:
        exact = None
    if fast is None:
        return  # the exact path decides; nothing to compare
    assert exact is not None, f"fast path accepted what TF rejects: {nested!r:.200}"
    assert fast.dtype == exact.dtype and fast.shape == exact.shape
    np.testing.assert_array_equal(fast, exact)


@pytest.mark.parametrize("leaves", [1, 2, 64, 65])  # up to 64 the values are checked; past that numpy's errstate
def test_floats_at_and_beyond_float32s_range_without_a_warning(leaves: int) -> None:
    """float32's largest value is kept, larger ones round to it or become infinity, as numpy's cast
    does; and no "overflow encountered in cast" warning (pytest turns warnings into errors)."""
    edge = [3.4028234663852886e38, -3.4028234663852886e38, 1.0, 3.4028235677973366e38, 1e39, -1e300]
    values = (edge * leaves)[:leaves]
    body = b'{"instances": [%s]}' % ", ".join(map(repr, values)).encode()
    x = decode(body, FLOAT)[0]["x"]
    with np.errstate(over="ignore"):
        expected = np.array(values, np.float64).astype(np.float32)
    assert x.dtype == np.float32 and x.tobytes() == expected.tobytes()
    assert x[0] == np.finfo(np.float32).max
