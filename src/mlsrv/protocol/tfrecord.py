"""TFRecord framing, without TensorFlow: what request logs are written as and warmup files are read as.

A TFRecord file is a sequence of ``uint64 length | uint32 masked_crc32c(length) | data |
uint32 masked_crc32c(data)``, little-endian (``tensorflow/core/lib/io/record_writer.cc``), where the
mask is ``((crc >> 15 | crc << 17) + 0xa282ead8) mod 2**32`` (``crc32c.h``). The CRC is CRC-32C
(Castagnoli), which the standard library lacks: ``google-crc32c`` computes it in C.

Shared by the server (request logs, ``server/request_log.py``) and client processes (``mlsrv bench
--input-file`` and ``mlsrv warmup`` read logs), which must not import TensorFlow.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO, Final

import google_crc32c

from mlsrv.errors import DataLoss

_MASK_DELTA: Final = 0xA282EAD8
_LENGTH: Final = struct.Struct("<Q")
_CRC: Final = struct.Struct("<I")
#: Bytes around each record: length, its CRC, and the data's CRC.
FRAMING_BYTES: Final = _LENGTH.size + 2 * _CRC.size
#: The largest record read: protobuf messages cannot be larger, so a longer length is a corrupt file.
MAX_RECORD_BYTES: Final = 2**31 - 1


def masked_crc(data: bytes | memoryview) -> int:
    """TF's ``crc32c::Mask(crc32c::Value(data))``."""
    crc = int(google_crc32c.value(bytes(data)))
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(record: bytes) -> bytes:
    """One record as it goes into a TFRecord file (no compression, TF's default)."""
    length = _LENGTH.pack(len(record))
    return b"".join((length, _CRC.pack(masked_crc(length)), record, _CRC.pack(masked_crc(record))))


def looks_like_tfrecord(head: bytes) -> bool:
    """Whether a file that starts with ``head`` is a TFRecord file: its first 12 bytes are a length
    and that length's masked CRC, which no JSON, ``.npy`` or ``.npz`` file starts with."""
    if len(head) < _LENGTH.size + _CRC.size:
        return False
    (crc,) = _CRC.unpack_from(head, _LENGTH.size)
    return bool(crc == masked_crc(head[: _LENGTH.size]))


def read_records(stream: BinaryIO, where: str) -> Iterator[bytes]:
    """Every record of ``stream``, checked as TF's ``RecordReader`` checks them.

    A cut or corrupted file raises ``DataLoss`` naming ``where`` and the record's number: a log
    whose writer was killed mid-record ends in a partial record, which is reported, not skipped.
    """
    number = 0
    while True:
        header = stream.read(_LENGTH.size + _CRC.size)
        if not header:
            return
        number += 1
        if len(header) < _LENGTH.size + _CRC.size:
            raise DataLoss(f"{where}: record {number} is truncated (a partial header)")
        (length,) = _LENGTH.unpack_from(header)
        (length_crc,) = _CRC.unpack_from(header, _LENGTH.size)
        if length_crc != masked_crc(header[: _LENGTH.size]):
            raise DataLoss(f"{where}: corrupted record {number} (its length fails the checksum)")
        if length > MAX_RECORD_BYTES:
            raise DataLoss(f"{where}: record {number} claims {length} bytes, more than any record can hold")
        data = stream.read(length)
        footer = stream.read(_CRC.size)
        if len(data) < length or len(footer) < _CRC.size:
            raise DataLoss(f"{where}: record {number} is truncated")
        if _CRC.unpack(footer)[0] != masked_crc(data):
            raise DataLoss(f"{where}: corrupted record {number} (its data fails the checksum)")
        yield data


__all__ = ["FRAMING_BYTES", "MAX_RECORD_BYTES", "frame", "looks_like_tfrecord", "masked_crc", "read_records"]
