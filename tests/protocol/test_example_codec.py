"""The hand-written tf.train.Example codec, checked byte for byte against TensorFlow's protobufs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlsrv.protocol.example_codec import (
    ExampleDecodeError,
    Feature,
    decode_example,
    encode_example,
    encode_example_values,
)

FEATURES = {
    "names": Feature("bytes", [b"foo", b"", b"\x00\xff"]),
    "ratings": Feature("float", [8.0, 0.5, -math.inf]),
    "age": Feature("int64", [20, -1, 2**63 - 1, -(2**63)]),
    "empty": Feature(None, []),
    "é": Feature("int64", [0]),
}


def test_known_bytes() -> None:
    # Example{features{feature{key:"a" value{int64_list{value:[1]}}}}}, values packed
    assert encode_example({"a": Feature("int64", [1])}) == bytes.fromhex("0a0c0a0a0a016112051a030a0101")
    assert encode_example({}) == b""


def test_round_trip() -> None:
    decoded = decode_example(encode_example(FEATURES))
    assert decoded.keys() == FEATURES.keys()
    for name, feature in FEATURES.items():
        assert decoded[name].kind == feature.kind
        assert decoded[name].values == feature.values


def test_floats_are_float32() -> None:
    decoded = decode_example(encode_example({"f": Feature("float", [0.1, 1e300])}))
    assert decoded["f"].values == [float(np.float32(0.1)), math.inf]


def test_concatenation_merges_with_later_features_winning() -> None:
    context = encode_example({"q": Feature("bytes", [b"pizza"]), "shared": Feature("int64", [1])})
    example = encode_example({"shared": Feature("float", [2.0]), "x": Feature("int64", [5])})
    merged = decode_example(context + example)
    assert merged == {"q": Feature("bytes", [b"pizza"]), "shared": Feature("float", [2.0]), "x": Feature("int64", [5])}


def test_encode_example_values_infers_kinds() -> None:
    data = encode_example_values({"s": ["a", b"b"], "f": [1.5], "i": [np.int64(3)], "e": []})
    assert decode_example(data) == {
        "s": Feature("bytes", [b"a", b"b"]),
        "f": Feature("float", [1.5]),
        "i": Feature("int64", [3]),
        "e": Feature(None, []),
    }


def test_truncated_data_is_rejected() -> None:
    data = encode_example(FEATURES)
    with pytest.raises(ExampleDecodeError):
        decode_example(data[:-3])


@pytest.mark.tf
def test_bytes_equal_tensorflow_and_round_trip() -> None:
    example_pb2 = pytest.importorskip("tensorflow.core.example.example_pb2")
    proto = example_pb2.Example()
    for name, feature in FEATURES.items():
        target = proto.features.feature[name]
        if feature.kind == "bytes":
            target.bytes_list.value.extend(feature.values)
        elif feature.kind == "float":
            target.float_list.value.extend(feature.values)
        elif feature.kind == "int64":
            target.int64_list.value.extend(feature.values)
    ours = encode_example(FEATURES)
    assert ours == proto.SerializeToString(deterministic=True)
    parsed = example_pb2.Example.FromString(ours)
    assert list(parsed.features.feature["names"].bytes_list.value) == FEATURES["names"].values
    assert parsed.features.feature["empty"].WhichOneof("kind") is None
    # Decoding what TensorFlow wrote (its merge of two serialized messages included).
    other = example_pb2.Example()
    other.features.feature["age"].float_list.value.append(1.5)
    merged = decode_example(proto.SerializeToString() + other.SerializeToString())
    assert merged["age"] == Feature("float", [1.5])
    assert merged["names"] == FEATURES["names"]
