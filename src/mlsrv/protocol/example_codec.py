"""A tiny hand-written ``tf.train.Example`` wire codec, so REST classify/regress never imports TensorFlow.

Messages (``tensorflow/core/example/{example,feature}.proto``)::

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }
    Feature  { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }   FloatList { repeated float value = 1 [packed]; }
    Int64List { repeated int64 value = 1 [packed]; }

The encoder writes features sorted by name, which is what ``SerializeToString(deterministic=True)``
gives, so its bytes equal TensorFlow's. Serialized messages concatenate as protobuf merges them: TF
Serving builds ``context + example`` for classify/regress with context, and a feature in the example
then replaces the context's feature of the same name. The decoder applies that rule too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal, NamedTuple

import numpy as np

from mlsrv.protocol.wire import WIRE_FIXED32, WIRE_FIXED64, WIRE_LEN, WIRE_VARINT, length_delimited, varint

FeatureKind = Literal["bytes", "float", "int64"]

_FIELD_OF: Final[dict[str, int]] = {"bytes": 1, "float": 2, "int64": 3}
_KIND_OF: Final[dict[int, FeatureKind]] = {1: "bytes", 2: "float", 3: "int64"}


class Feature(NamedTuple):
    """One feature: its kind (None for an empty ``Feature``) and its values (bytes, float or int)."""

    kind: FeatureKind | None
    values: list[Any]


class ExampleDecodeError(ValueError):
    """The bytes are not a well-formed serialized ``tf.train.Example``."""


def encode_feature(feature: Feature) -> bytes:
    """Serialize one ``Feature`` message."""
    if feature.kind is None:
        return b""
    values = feature.values
    if feature.kind == "bytes":
        body = b"".join(length_delimited(1, bytes(v)) for v in values)
    elif feature.kind == "float":
        with np.errstate(over="ignore"):
            packed = np.asarray(values, dtype=np.float64).astype("<f4").tobytes()
        body = length_delimited(1, packed) if values else b""
    else:
        body = length_delimited(1, b"".join(varint(int(v)) for v in values)) if values else b""
    return length_delimited(_FIELD_OF[feature.kind], body)


def encode_example(features: Mapping[str, Feature]) -> bytes:
    """Serialize an ``Example``; an Example without features serializes to ``b""`` (as TF's does)."""
    if not features:
        return b""
    entries = b"".join(
        length_delimited(
            1, length_delimited(1, name.encode("utf-8")) + length_delimited(2, encode_feature(features[name]))
        )
        for name in sorted(features, key=lambda n: n.encode("utf-8"))
    )
    return length_delimited(1, entries)


def encode_example_values(features: Mapping[str, Sequence[Any]]) -> bytes:
    """Convenience: infer each kind from Python values (bytes/str -> bytes, float -> float, int -> int64)."""
    out: dict[str, Feature] = {}
    for name, values in features.items():
        items = list(values)
        if not items:
            out[name] = Feature(None, [])
        elif isinstance(items[0], (bytes, str)):
            out[name] = Feature("bytes", [v.encode("utf-8") if isinstance(v, str) else v for v in items])
        elif isinstance(items[0], (float, np.floating)):
            out[name] = Feature("float", [float(v) for v in items])
        else:
            out[name] = Feature("int64", [int(v) for v in items])
    return encode_example(out)


class _Reader:
    """Protobuf wire reader over one message."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def done(self) -> bool:
        return self.pos >= len(self.data)

    def varint(self) -> int:
        result = shift = 0
        while True:
            if self.pos >= len(self.data) or shift > 63:
                raise ExampleDecodeError("truncated or overlong varint")
            byte = self.data[self.pos]
            self.pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7

    def field(self) -> tuple[int, int, Any]:
        """(field number, wire type, value): an int for varints, bytes otherwise."""
        key = self.varint()
        field, wire = key >> 3, key & 7
        if wire == WIRE_VARINT:
            return field, wire, self.varint()
        size = {WIRE_FIXED64: 8, WIRE_FIXED32: 4}.get(wire)
        if wire == WIRE_LEN:
            size = self.varint()
        if size is None or self.pos + size > len(self.data):
            raise ExampleDecodeError(f"bad wire type {wire} or truncated field {field}")
        value = self.data[self.pos : self.pos + size]
        self.pos += size
        return field, wire, value


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _list_values(kind: FeatureKind, data: bytes) -> list[Any]:
    """The values of a BytesList / FloatList / Int64List, packed or not.

    A value whose wire type does not fit its field is skipped, as protobuf skips it (as an unknown
    field): never trusted, so a varint can never become ``bytes(n)`` of attacker-chosen size.
    """
    reader = _Reader(data)
    values: list[Any] = []
    while not reader.done():
        field, wire, value = reader.field()
        if field != 1:
            continue
        if kind == "bytes":
            if wire == WIRE_LEN:
                values.append(bytes(value))
        elif kind == "float":
            if wire == WIRE_FIXED32 or (wire == WIRE_LEN and len(value) % 4 == 0):
                values.extend(float(v) for v in np.frombuffer(value, dtype="<f4"))
            elif wire == WIRE_LEN:
                raise ExampleDecodeError("packed float list is not a whole number of floats")
        elif wire == WIRE_VARINT:
            values.append(_signed64(value))
        elif wire == WIRE_LEN:  # packed int64
            inner = _Reader(value)
            while not inner.done():
                values.append(_signed64(inner.varint()))
    return values


def decode_feature(data: bytes) -> Feature:
    """Parse one ``Feature``; a repeated kind merges, a different kind replaces (oneof semantics)."""
    reader = _Reader(data)
    feature = Feature(None, [])
    while not reader.done():
        field, wire, value = reader.field()
        kind = _KIND_OF.get(field)
        if kind is None or wire != WIRE_LEN:
            continue
        values = _list_values(kind, value)
        feature = Feature(kind, feature.values + values if feature.kind == kind else values)
    return feature


def decode_example(data: bytes) -> dict[str, Feature]:
    """Parse a serialized ``Example`` (or several concatenated: later map entries win)."""
    features: dict[str, Feature] = {}
    reader = _Reader(bytes(data))
    while not reader.done():
        field, wire, value = reader.field()
        if field != 1 or wire != WIRE_LEN:
            continue
        entries = _Reader(value)
        while not entries.done():
            entry_field, entry_wire, entry = entries.field()
            if entry_field != 1 or entry_wire != WIRE_LEN:
                continue
            name, feature = _map_entry(entry)
            features[name] = feature
    return features


def _map_entry(data: bytes) -> tuple[str, Feature]:
    reader = _Reader(data)
    name = ""
    feature = Feature(None, [])
    while not reader.done():
        field, wire, value = reader.field()
        if wire != WIRE_LEN:
            continue
        if field == 1:
            try:
                name = bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                raise ExampleDecodeError("feature name is not UTF-8") from None
        elif field == 2:
            feature = decode_feature(value)
    return name, feature
