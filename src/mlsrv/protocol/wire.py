"""Protobuf wire-format pieces for the few places that write bytes without a message class.

A length-delimited field is ``tag | length | payload``; an embedded message is exactly that, so a
message can be assembled from its parts' serializations without copying them into a parent
message (``tensor_codec`` for TF's ``tensor_content`` quirk, ``example_codec`` for tf.Examples, the
request log for ``PredictionLog``).
"""

from __future__ import annotations

from typing import Final

#: Wire types (``google/protobuf/wire_format``).
WIRE_VARINT: Final = 0
WIRE_FIXED64: Final = 1
WIRE_LEN: Final = 2
WIRE_FIXED32: Final = 5


def varint(value: int) -> bytes:
    """Base-128 varint; a negative int64 is written as its 10-byte two's complement, as protobuf does."""
    value &= (1 << 64) - 1
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def tag(field: int, wire: int) -> bytes:
    return varint(field << 3 | wire)


def length_delimited(field: int, payload: bytes) -> bytes:
    """Field ``field`` holding ``payload`` (bytes, a string or a serialized message)."""
    return tag(field, WIRE_LEN) + varint(len(payload)) + payload


__all__ = ["WIRE_FIXED32", "WIRE_FIXED64", "WIRE_LEN", "WIRE_VARINT", "length_delimited", "tag", "varint"]
