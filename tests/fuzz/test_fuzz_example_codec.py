"""The tf.Example codec: any bytes decode to features or ExampleDecodeError; encoding round-trips."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from tensorflow.core.example import example_pb2

from mlsrv.protocol.example_codec import ExampleDecodeError, decode_example, encode_example_values

feature_values = (
    st.lists(st.floats(width=32, allow_nan=False), min_size=1, max_size=4)
    | st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=4)
    | st.lists(st.binary(max_size=6), min_size=1, max_size=4)
)


@given(st.binary(max_size=400))
def test_arbitrary_bytes(data: bytes) -> None:
    """Ours decodes what protobuf decodes, to the same features; it may refuse more (a bad UTF-8 name)."""
    try:
        features = decode_example(data)
    except ExampleDecodeError:
        return
    assert isinstance(features, dict)
    assert sum(len(feature.values) for feature in features.values()) <= len(data)  # no value out of nothing
    try:
        reference = example_pb2.Example.FromString(data)
    except Exception:
        return
    assert set(features) == set(reference.features.feature)


@given(st.dictionaries(st.text(max_size=6), feature_values, max_size=4))
def test_round_trip_and_agreement_with_protobuf(values: dict[str, list[object]]) -> None:
    data = encode_example_values(values)
    decoded = decode_example(data)
    reference = example_pb2.Example.FromString(data)
    assert set(decoded) == set(reference.features.feature) == set(values)
    for name, feature in decoded.items():
        kind = reference.features.feature[name].WhichOneof("kind")
        assert list(feature.values) == list(getattr(reference.features.feature[name], kind).value)
