"""tensor_codec against TensorFlow itself: ``tf.make_ndarray``/``tf.make_tensor_proto`` (Python) and
``tf.io.parse_tensor`` (the C++ ``Tensor::FromProto`` that TF Serving runs)."""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, types_pb2

from mlsrv.errors import InvalidArgument
from mlsrv.protocol import tensor_codec

NUMERIC = [
    np.float32,
    np.float64,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.bool_,
    np.float16,
    ml_dtypes.bfloat16,
    np.complex64,
    np.complex128,
]
SHAPES = [(), (2, 3), (0, 3), (4,)]


def sample(dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Values that exercise sign, range and precision of ``dtype`` (strings: object array of bytes)."""
    count = int(np.prod(shape))
    if dtype is bytes:
        out = np.empty(count, dtype=object)
        out[:] = [f"s{i}\x00\xff".encode("latin-1") * (i % 3) for i in range(count)]
        strings: np.ndarray = out.reshape(shape)
        return strings
    dt = np.dtype(dtype)
    if dt.kind == "b":
        flags: np.ndarray = (np.arange(count) % 3 == 0).reshape(shape)
        return flags
    if dt.kind in "iu":
        info = np.iinfo(dt)
        base = np.array([info.min, info.max, 0, 1, 7, info.max // 3], dtype=dt)
    elif dt.kind == "c":
        base = np.array([1.5 - 2j, -0.25 + 8j, 0, 3e3j], dtype=dt)
    else:
        base = np.array([1.5, -2.25, 0, 1024, -0.125], dtype=dt)
    return np.resize(base, count).reshape(shape)


def tensor(dtype: int, dims: list[int], **fields: Any) -> Any:
    proto = tensor_pb2.TensorProto(dtype=dtype, **fields)
    for size in dims:
        proto.tensor_shape.dim.add().size = size
    return proto


def parse_with_tf(proto: Any) -> np.ndarray:
    import tensorflow as tf

    value = tf.io.parse_tensor(proto.SerializeToString(), tf.as_dtype(proto.dtype)).numpy()
    return np.array(value, dtype=object) if isinstance(value, bytes) else np.asarray(value)


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape
    assert got.tolist() == want.tolist()


@pytest.mark.tf
@pytest.mark.parametrize("as_tensor_content", [True, False], ids=["content", "fields"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [*NUMERIC, bytes], ids=lambda d: np.dtype(d).name)
def test_encode_is_read_back_by_tensorflow(dtype: Any, shape: tuple[int, ...], as_tensor_content: bool) -> None:
    import tensorflow as tf

    array = sample(dtype, shape)
    proto = tensor_pb2.TensorProto()
    tensor_codec.from_ndarray(array, proto, as_tensor_content=as_tensor_content)
    assert_same(tf.make_ndarray(proto), array)
    assert_same(parse_with_tf(proto), array)
    assert_same(tensor_codec.to_ndarray(proto), array)


@pytest.mark.tf
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [*NUMERIC, bytes], ids=lambda d: np.dtype(d).name)
def test_decode_what_tensorflow_encodes(dtype: Any, shape: tuple[int, ...]) -> None:
    import tensorflow as tf

    array = sample(dtype, shape)
    assert_same(tensor_codec.to_ndarray(tf.make_tensor_proto(array)), array)
    serialized = tf.io.serialize_tensor(tf.constant(array)).numpy()  # C++ AsProtoTensorContent
    assert_same(tensor_codec.to_ndarray(tensor_pb2.TensorProto.FromString(serialized)), array)


@pytest.mark.tf
def test_tensorflow_scalar_broadcast_proto() -> None:
    import tensorflow as tf

    proto = tf.make_tensor_proto(np.float32(2.5), shape=[2, 3])
    assert len(proto.float_val) == 1
    assert_same(tensor_codec.to_ndarray(proto), np.full((2, 3), 2.5, np.float32))


# The typed-field filling rules of C++ Tensor::FromProto, checked against it.
FILL_CASES = [
    pytest.param(tensor(types_pb2.DT_FLOAT, [2, 2], float_val=[7.0]), id="one-value-broadcast"),
    pytest.param(tensor(types_pb2.DT_INT32, [5], int_val=[1, 2]), id="last-value-repeated"),
    pytest.param(tensor(types_pb2.DT_INT64, [2], int64_val=[1, 2, 3, 4]), id="extra-values-ignored"),
    pytest.param(tensor(types_pb2.DT_DOUBLE, [3]), id="no-values-zero-filled"),
    pytest.param(tensor(types_pb2.DT_STRING, [3], string_val=[b"a", b"b"]), id="strings-last-repeated"),
    pytest.param(tensor(types_pb2.DT_STRING, [2]), id="strings-empty-filled"),
    pytest.param(tensor(types_pb2.DT_HALF, [3], half_val=[0x3C00]), id="half-bits-broadcast"),
    pytest.param(tensor(types_pb2.DT_BFLOAT16, [2], half_val=[0x3F80, 0x4000]), id="bfloat16-bits"),
    pytest.param(tensor(types_pb2.DT_COMPLEX64, [2], scomplex_val=[1, 2, 3]), id="complex-odd-count"),
    pytest.param(tensor(types_pb2.DT_UINT8, [2], int_val=[300, -1]), id="uint8-wraps"),
    pytest.param(tensor(types_pb2.DT_BOOL, [], bool_val=[True]), id="scalar"),
    pytest.param(tensor(types_pb2.DT_FLOAT, [0, 4], float_val=[1.0]), id="zero-size-ignores-values"),
    pytest.param(tensor(types_pb2.DT_FLOAT, [0], tensor_content=b"xyz"), id="zero-size-ignores-content"),
    pytest.param(tensor(types_pb2.DT_STRING, [2], tensor_content=b"\x01\x02abc"), id="string-content"),
    pytest.param(tensor(types_pb2.DT_STRING, [1], tensor_content=b"\x00"), id="string-content-empty"),
]


@pytest.mark.tf
@pytest.mark.parametrize("proto", FILL_CASES)
def test_decode_matches_tensorflow_from_proto(proto: Any) -> None:
    assert_same(tensor_codec.to_ndarray(proto), parse_with_tf(proto))


def test_one_value_fills_the_shape() -> None:
    got = tensor_codec.to_ndarray(tensor(types_pb2.DT_FLOAT, [2, 3], float_val=[1.0, 2.0]))
    assert got.tolist() == [[1.0, 2.0, 2.0], [2.0, 2.0, 2.0]]


def test_tensor_content_is_a_zero_copy_view() -> None:
    got = tensor_codec.to_ndarray(tensor(types_pb2.DT_FLOAT, [2], tensor_content=b"\x00\x00\x80?\x00\x00\x00@"))
    assert got.tolist() == [1.0, 2.0]
    assert not got.flags.writeable
    owner: object = got
    while isinstance(owner, np.ndarray):
        owner = owner.base
    assert isinstance(owner, bytes)  # a view of the message's bytes, not a copy


BAD = [
    pytest.param(tensor(types_pb2.DT_FLOAT, [3], tensor_content=b"\x00" * 8), "tensor_content has 8 bytes", id="short"),
    pytest.param(tensor(types_pb2.DT_FLOAT, [1, -1]), "negative dimension", id="negative-dim"),
    pytest.param(tensor(types_pb2.DT_FLOAT, [1] * 255), "more than 254", id="too-many-dims"),
    pytest.param(tensor(types_pb2.DT_INT8, [2**32, 2**32]), "too many elements", id="overflow"),
    pytest.param(tensor(types_pb2.DT_RESOURCE, [1]), "unsupported tensor dtype DT_RESOURCE", id="resource"),
    pytest.param(tensor(types_pb2.DT_QINT8, [1]), "unsupported tensor dtype DT_QINT8", id="quantized"),
    pytest.param(tensor(99, [1]), "unsupported tensor dtype DT_INVALID (99)", id="unknown-enum"),
    pytest.param(tensor(types_pb2.DT_STRING, [2], tensor_content=b"\x01\x05abc"), "malformed", id="str-long"),
    pytest.param(tensor(types_pb2.DT_STRING, [2], tensor_content=b"\x01"), "malformed", id="str-truncated"),
    pytest.param(tensor(types_pb2.DT_STRING, [1], tensor_content=b"\xff" * 6), "malformed", id="str-varint"),
]


@pytest.mark.parametrize(("proto", "message"), BAD)
def test_invalid_protos_raise_invalid_argument(proto: Any, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(").replace(")", r"\)")):
        tensor_codec.to_ndarray(proto)


# Tensor::AsProtoField: which typed field each dtype is written to.
FIELD_OF = {
    np.float32: "float_val",
    np.float64: "double_val",
    np.int8: "int_val",
    np.int16: "int_val",
    np.int32: "int_val",
    np.uint8: "int_val",
    np.uint16: "int_val",
    np.int64: "int64_val",
    np.uint32: "uint32_val",
    np.uint64: "uint64_val",
    np.bool_: "bool_val",
    np.float16: "half_val",
    ml_dtypes.bfloat16: "half_val",
    np.complex64: "scomplex_val",
    np.complex128: "dcomplex_val",
}


@pytest.mark.parametrize("dtype", NUMERIC, ids=lambda d: np.dtype(d).name)
def test_typed_fields_follow_as_proto_field(dtype: Any) -> None:
    array = sample(dtype, (2, 3))
    proto = tensor_pb2.TensorProto()
    tensor_codec.from_ndarray(array, proto, as_tensor_content=False)
    assert [f.name for f, _ in proto.ListFields()] == ["dtype", "tensor_shape", FIELD_OF[dtype]]
    values = list(getattr(proto, FIELD_OF[dtype]))
    if np.dtype(dtype).kind == "c":
        assert values == array.reshape(-1).view(array.real.dtype).tolist()  # real, imag pairs
    elif np.dtype(dtype).itemsize == 2 and np.dtype(dtype).kind not in "iu":
        assert values == array.reshape(-1).view(np.uint16).tolist()  # half/bfloat16 bit patterns
    else:
        assert values == array.reshape(-1).tolist()


@pytest.mark.parametrize("dtype", NUMERIC, ids=lambda d: np.dtype(d).name)
def test_tensor_content_is_raw_little_endian_bytes(dtype: Any) -> None:
    array = sample(dtype, (3, 2))
    proto = tensor_pb2.TensorProto()
    tensor_codec.from_ndarray(array, proto, as_tensor_content=True)
    assert proto.tensor_content == array.astype(array.dtype.newbyteorder("<")).tobytes()
    assert list(proto.tensor_shape.dim) == list(tensor(0, [3, 2]).tensor_shape.dim)


def test_strings_always_use_string_val() -> None:
    proto = tensor_pb2.TensorProto()
    tensor_codec.from_ndarray(np.array(["héllo", "x"]), proto, as_tensor_content=True)
    assert proto.dtype == types_pb2.DT_STRING
    assert not proto.tensor_content
    assert list(proto.string_val) == ["héllo".encode(), b"x"]


def test_string_inputs_of_every_kind() -> None:
    mixed = np.array([b"a", "b", bytearray(b"c"), memoryview(b"d")], dtype=object)
    for array in (mixed, np.array([b"a", b"b", b"c", b"d"])):
        proto = tensor_pb2.TensorProto()
        tensor_codec.from_ndarray(array, proto, as_tensor_content=False)
        assert tensor_codec.to_ndarray(proto).tolist() == [b"a", b"b", b"c", b"d"]


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.array([1, b"x"], dtype=object), "cannot hold a int"),
        (np.array(["2020-01-01"], dtype="datetime64[D]"), "cannot encode a numpy datetime64"),
    ],
)
def test_unencodable_arrays_raise(array: np.ndarray, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        tensor_codec.from_ndarray(array, tensor_pb2.TensorProto(), as_tensor_content=False)


@pytest.mark.parametrize("as_tensor_content", [True, False])
def test_non_native_and_strided_arrays(as_tensor_content: bool) -> None:
    for array in (np.arange(6, dtype=">f4").reshape(2, 3), np.arange(12.0).reshape(3, 4)[::2, ::-2]):
        proto = tensor_pb2.TensorProto()
        tensor_codec.from_ndarray(array, proto, as_tensor_content=as_tensor_content)
        got = tensor_codec.to_ndarray(proto)
        assert got.dtype.isnative
        assert got.tolist() == array.tolist()


@pytest.mark.parametrize("as_tensor_content", [True, False])
def test_large_image_round_trip(as_tensor_content: bool) -> None:
    image = np.random.default_rng(0).random((1, 224, 224, 3), dtype=np.float32)
    proto = tensor_pb2.TensorProto()
    tensor_codec.from_ndarray(image, proto, as_tensor_content=as_tensor_content)
    assert len(proto.float_val) == (0 if as_tensor_content else image.size)
    assert np.array_equal(tensor_codec.to_ndarray(proto), image)


def test_large_ints_beyond_one_byte_varints() -> None:
    array = np.array([-(2**31), 2**31 - 1, 200, 5], dtype=np.int32)
    proto = tensor_pb2.TensorProto()
    tensor_codec.from_ndarray(array, proto, as_tensor_content=False)
    assert list(proto.int_val) == array.tolist()


# -- fills (issue #10, item 3) ----------------------------------------------------------------------


def _claim(dtype: int, dims: tuple[int, ...], field: str, values: list[Any]) -> Any:
    proto = tensor_pb2.TensorProto(dtype=dtype)
    for size in dims:
        proto.tensor_shape.dim.add().size = size
    getattr(proto, field).extend(values)
    return proto


def test_a_fill_past_the_budget_is_refused_before_allocating() -> None:
    import tracemalloc

    proto = _claim(types_pb2.DT_DOUBLE, (250_000_000,), "double_val", [1.0])  # 33 bytes claim 2 GB
    assert proto.ByteSize() < 40
    tracemalloc.start()
    try:
        with pytest.raises(tensor_codec.TensorTooLarge, match=r"shape \[250000000\] with 1 value\(s\) sent"):
            tensor_codec.to_ndarray(proto, tensor_codec.FillBudget(256 << 20))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_the_budget_is_shared_by_a_requests_tensors_and_strings_count() -> None:
    budget = tensor_codec.FillBudget(1000)
    small = _claim(types_pb2.DT_FLOAT, (100,), "float_val", [1.0])  # fills 99 * 4 = 396 bytes
    tensor_codec.to_ndarray(small, budget)
    tensor_codec.to_ndarray(small, budget)
    with pytest.raises(tensor_codec.TensorTooLarge):
        tensor_codec.to_ndarray(small, budget)  # 3 * 396 > 1000
    strings = _claim(types_pb2.DT_STRING, (1000,), "string_val", [b"a"])
    with pytest.raises(tensor_codec.TensorTooLarge):
        tensor_codec.to_ndarray(strings, tensor_codec.FillBudget(1000))  # 999 pointers
    sent = _claim(types_pb2.DT_FLOAT, (1000,), "float_val", [1.0] * 1000)
    assert tensor_codec.to_ndarray(sent, tensor_codec.FillBudget(0)).shape == (1000,)  # nothing filled


def test_a_fill_within_the_budget_allocates_the_tensor_once() -> None:
    import tracemalloc

    proto = _claim(types_pb2.DT_DOUBLE, (4_000_000,), "double_val", [1.0, 2.0, 3.0])  # 32 MB
    tracemalloc.start()
    try:
        array = tensor_codec.to_ndarray(proto, tensor_codec.FillBudget(64 << 20))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert array[:4].tolist() == [1.0, 2.0, 3.0, 3.0] and array[-1] == 3.0
    assert peak < 1.2 * array.nbytes  # once: not a fill array plus a concatenated copy


@pytest.mark.parametrize("dtype", [101, 102, 119, 200, -1])
def test_ref_and_unknown_dtypes_are_invalid_argument(dtype: int) -> None:
    proto = tensor_pb2.TensorProto()
    proto.dtype = dtype if dtype >= 0 else 0
    proto.tensor_shape.dim.add().size = 1
    proto.float_val.append(1.0)
    with pytest.raises(InvalidArgument):
        tensor_codec.to_ndarray(proto)
