"""Reading ``PredictionLog`` TFRecord files (request logs, warmup files) in client processes.

``mlsrv serve`` writes sampled calls of a model with a ``logging_config`` as ``PredictionLog``
records (``server/request_log.py``), the format of TF Serving's warmup files. Here they become
inputs again: ``mlsrv bench`` / ``abtest --input-file LOG`` replay the logged Predict requests, and
``mlsrv warmup`` picks records for a version's ``assets.extra/tf_serving_warmup_requests``. Records
are read through a view of the message in the client's private descriptor pool
(``protocol/client_protos.py``): no TensorFlow.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from google.protobuf.message import DecodeError, Message

from mlsrv.errors import DataLoss, InvalidArgument, UsageError
from mlsrv.protocol import tensor_codec, tfrecord
from mlsrv.protocol.client_protos import LOG_TYPES, PREDICTION_LOG_VIEW, message_class
from mlsrv.protocol.types import SignatureInfo

#: Logged requests a bench pool takes from one file at most (each is kept encoded in memory).
MAX_REPLAYED_REQUESTS: Final = 10_000
#: The log types TF Serving's warmup replays (``saved_model_warmup_util.cc``).
WARMUP_LOG_TYPES: Final = frozenset({"predict_log", "classify_log", "regress_log", "multi_inference_log"})
#: TF Serving's cap on a warmup file (``Number of warmup records exceeds the maximum (1000)``).
MAX_WARMUP_RECORDS: Final = 1000


@dataclass(frozen=True, slots=True)
class LoggedCall:
    """One record: its log type (``predict_log`` ...), the model it was logged for, and its bytes."""

    kind: str
    model: str
    record: bytes
    view: Message


def is_prediction_log_file(path: str) -> bool:
    """Whether ``path`` is a TFRecord file (checked on its first record's framing)."""
    try:
        with open(path, "rb") as file:
            return tfrecord.looks_like_tfrecord(file.read(12))
    except OSError:
        return False


def read_calls(path: str) -> Iterator[LoggedCall]:
    """Every record of one file. A record that is not a ``PredictionLog`` or a damaged file raises
    ``DataLoss`` naming the file (a log cut by a crash ends in a partial record)."""
    view_class = message_class(PREDICTION_LOG_VIEW)
    try:
        with open(path, "rb") as file:
            for number, record in enumerate(tfrecord.read_records(file, path), start=1):
                try:
                    view = view_class.FromString(record)
                except DecodeError:
                    raise DataLoss(f"{path}: record {number} is not a PredictionLog") from None
                kind = next((name for name in LOG_TYPES if view.HasField(name)), "")
                model = str(view.log_metadata.model_spec.name)
                yield LoggedCall(kind, model, record, view)
    except FileNotFoundError:
        raise UsageError(f"{path}: file not found") from None
    except OSError as error:
        raise UsageError(f"{path}: cannot read: {error.strerror or error}") from None


def logged_predict_inputs(path: str, signature: SignatureInfo, where: str) -> list[dict[str, np.ndarray]]:
    """The inputs of the logged Predict calls that fit ``signature`` (their input names are its
    inputs), at most :data:`MAX_REPLAYED_REQUESTS`; other records are skipped. ``UsageError``
    when none fits."""
    pool: list[dict[str, np.ndarray]] = []
    skipped = 0
    for call in read_calls(path):
        if len(pool) >= MAX_REPLAYED_REQUESTS:
            break
        if call.kind != "predict_log":
            skipped += 1
            continue
        request = call.view.predict_log.request
        names = set(request.inputs)
        if not names or not names <= set(signature.inputs):
            skipped += 1
            continue
        try:
            pool.append({alias: tensor_codec.to_ndarray(request.inputs[alias]) for alias in sorted(names)})
        except InvalidArgument as error:
            raise DataLoss(f"{where}: a logged request's tensor does not decode: {error.message}") from None
    if not pool:
        raise UsageError(
            f"{where}: no logged Predict request fits the signature (inputs {sorted(signature.inputs)}; "
            f"{skipped} record(s) of other calls or other inputs)"
        )
    return pool


def sample_records(paths: Sequence[str], count: int, *, model: str | None, seed: int) -> tuple[list[bytes], int]:
    """Up to ``count`` records that warmup can replay, drawn uniformly from every file (reservoir
    sampling: memory for ``count`` records whatever the logs' size), in the order they were logged.
    Returns them and how many records were eligible."""
    rng = random.Random(seed)
    chosen: list[tuple[int, bytes]] = []
    seen = 0
    for call in _calls(paths):
        if call.kind not in WARMUP_LOG_TYPES or (model is not None and call.model != model):
            continue
        if len(chosen) < count:
            chosen.append((seen, call.record))
        else:
            slot = rng.randrange(seen + 1)
            if slot < count:
                chosen[slot] = (seen, call.record)
        seen += 1
    return [record for _, record in sorted(chosen)], seen


def _calls(paths: Iterable[str]) -> Iterator[LoggedCall]:
    for path in paths:
        if Path(path).is_dir():
            raise UsageError(f"{path}: a directory; give the log files (e.g. {path}/*.tfrecord)")
        yield from read_calls(path)


__all__ = [
    "MAX_REPLAYED_REQUESTS",
    "MAX_WARMUP_RECORDS",
    "WARMUP_LOG_TYPES",
    "LoggedCall",
    "is_prediction_log_file",
    "logged_predict_inputs",
    "read_calls",
    "sample_records",
]
