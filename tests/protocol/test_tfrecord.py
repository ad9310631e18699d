"""TFRecord framing without TensorFlow, checked against TensorFlow's own writer and reader."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from mlsrv.errors import DataLoss
from mlsrv.protocol import tfrecord

RECORDS = [b"", b"x", b"hello world" * 100, bytes(range(256)) * 40]


def written(records: list[bytes]) -> bytes:
    return b"".join(tfrecord.frame(record) for record in records)


def test_known_checksum() -> None:
    # TF's crc32c_test: Value("123456789") == 0xe3069283; Mask(x) as in crc32c.h
    crc = 0xE3069283
    assert tfrecord.masked_crc(b"123456789") == ((((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def test_round_trip_and_framing_size() -> None:
    data = written(RECORDS)
    assert len(data) == sum(len(r) for r in RECORDS) + tfrecord.FRAMING_BYTES * len(RECORDS)
    assert list(tfrecord.read_records(io.BytesIO(data), "mem")) == RECORDS


@pytest.mark.tf
def test_tensorflow_reads_ours_and_we_read_tensorflows(tmp_path: Path) -> None:
    import tensorflow as tf

    ours = tmp_path / "ours.tfrecord"
    ours.write_bytes(written(RECORDS))
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(ours))] == RECORDS
    theirs = tmp_path / "theirs.tfrecord"
    with tf.io.TFRecordWriter(str(theirs)) as writer:
        for record in RECORDS:
            writer.write(record)
    assert theirs.read_bytes() == ours.read_bytes()  # byte for byte the same file
    with open(theirs, "rb") as file:
        assert list(tfrecord.read_records(file, str(theirs))) == RECORDS


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: d[:-3], "record 4 is truncated"),
        (lambda d: d[:5], "record 1 is truncated (a partial header)"),
        (lambda d: d[:8] + b"\0" + d[9:], "corrupted record 1 (its length fails the checksum)"),
        # record 1 is empty (16 bytes of framing): byte 19 is in record 2's length
        (lambda d: d[:19] + b"?" + d[20:], "corrupted record 2 (its length fails the checksum)"),
        (lambda d: b"\xff" * 8 + tfrecord.masked_crc(b"\xff" * 8).to_bytes(4, "little"), "claims"),
    ],
)
def test_damaged_files_are_data_loss(damage: object, message: str) -> None:
    data = damage(written(RECORDS))  # type: ignore[operator]
    with pytest.raises(DataLoss, match="^f.tfrecord: ") as caught:
        list(tfrecord.read_records(io.BytesIO(data), "f.tfrecord"))
    assert message in caught.value.message


def test_a_flipped_data_byte_is_caught() -> None:
    data = bytearray(written([b"payload"]))
    data[12] ^= 1
    with pytest.raises(DataLoss, match="corrupted record 1 \\(its data fails the checksum\\)"):
        list(tfrecord.read_records(io.BytesIO(bytes(data)), "f"))


def test_sniffing_tells_tfrecords_from_request_files(tmp_path: Path) -> None:
    assert tfrecord.looks_like_tfrecord(written([b"abc"]))
    assert tfrecord.looks_like_tfrecord(written([b""]))
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((2, 2)))
    for other in (b'{"instances": [[1.0]]}', buffer.getvalue(), b"PK\x03\x04" + bytes(20), b"", b"short"):
        assert not tfrecord.looks_like_tfrecord(other[:12])
