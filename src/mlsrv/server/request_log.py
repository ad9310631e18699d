"""Request logging: TF Serving's ``logging_config``, with the log collector stock TF Serving lacks.

TF Serving's ``ServerRequestLogger`` samples each successful Predict, Classify, Regress and
MultiInference call of a model whose config has a ``logging_config`` (``sampling_config {
sampling_rate }``) and hands a ``PredictionLog`` (request, response, and ``LogMetadata``: the
resolved model spec, the sampling config, the SavedModel tags) to a log collector. The stock
binary has no collector (any ``logging_config`` fails with ``No request-logger-creator
provided.``); mlsrv has one, type ``tfrecord``: records go to TFRecord files
``<filename_prefix>-<pid>-<NNNNN>.tfrecord``, the format of warmup files, so a log can be replayed
as warmup (``mlsrv warmup``) or as ``mlsrv bench`` / ``abtest`` input (``--input-file``).

The serving path only samples (one random number) and queues references to the call's decoded
tensors; building the protobufs, framing and writing happen on one writer thread
(``background_writer``). Past ``--request_log_queue_bytes`` of waiting records, a sampled call is
dropped and counted, never waited for: ``request_log_count{status_code="RESOURCE_EXHAUSTED"}``
(TF's metric, whose ``OK`` cell counts records written). Files are opened in append mode, so a
restart with the same pid (PID 1 in a container) never overwrites a log, and move to a new file
past ``--request_log_file_bytes``. Old files are not deleted: that is the log shipper's job.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Final

import numpy as np
from google.protobuf.message import Message

from mlsrv.config import ModelConfig, RequestLogging
from mlsrv.errors import ConfigError
from mlsrv.protocol import grpc_codec, tfrecord
from mlsrv.protocol.types import (
    ClassifyResponse,
    ExamplesRequest,
    InferenceMethod,
    ModelSpec,
    MultiInferenceTask,
    PredictRequest,
    PredictResponse,
    RegressResponse,
)
from mlsrv.protocol.wire import length_delimited
from mlsrv.server.background_writer import BackgroundWriter

log = logging.getLogger(__name__)

#: ``PredictionLog`` field numbers (``prediction_log.proto``) of each log type, and of its metadata.
_METADATA_FIELD: Final = 1
_LOG_FIELDS: Final = {"classify": 2, "regress": 3, "multi_inference": 4, "predict": 6}
#: Most records waiting for the writer, whatever their size (each holds a call's tensors alive).
MAX_QUEUED_RECORDS: Final = 65536
#: What a queued record holds besides its tensors' data: the request, response, spec and entry
#: objects, dicts and array headers (about 1 KB for a one-input Predict, measured with tracemalloc).
RECORD_OVERHEAD_BYTES: Final = 1024
#: How long a stopping server waits for queued records to be written.
CLOSE_TIMEOUT_S: Final = 5.0

ExamplesResponse = ClassifyResponse | RegressResponse


class RotatingFiles:
    """``<prefix>-<pid>-<NNNNN>.tfrecord``, appended to; the next number once one passes ``max_bytes``.

    Used by the writer thread only. A record larger than ``max_bytes`` gets a file of its own.
    """

    def __init__(self, prefix: str, max_bytes: int) -> None:
        self.prefix = prefix
        self._max_bytes = max_bytes
        self._pid = os.getpid()
        self._number = 0
        self._file: BinaryIO | None = None
        self._size = 0

    def path(self, number: int) -> str:
        return f"{self.prefix}-{self._pid}-{number:05d}.tfrecord"

    def write(self, framed: bytes) -> None:
        if self._file is not None and self._size and self._size + len(framed) > self._max_bytes:
            self.close()
            self._number += 1
        if self._file is None:
            self._open(len(framed))
        assert self._file is not None
        self._file.write(framed)
        self._size += len(framed)

    def _open(self, incoming: int) -> None:
        """The first file from the current number on with room for ``incoming`` bytes (or empty):
        one of a previous run with this pid may be full already. Created owner-only: a request
        log holds what clients sent."""
        while True:
            path = self.path(self._number)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                size = os.fstat(fd).st_size  # a pipe or a device has no size: 0
            except OSError:
                os.close(fd)
                raise
            if size == 0 or size + incoming <= self._max_bytes:
                break
            os.close(fd)
            self._number += 1
        if size == 0:
            log.info("Request log: writing %s", path)
        self._file, self._size = os.fdopen(fd, "ab"), size

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass(frozen=True, slots=True)
class _Sampled:
    """One sampled call, as the loop hands it to the writer (the tensors are referenced, not copied)."""

    files: RotatingFiles
    kind: str
    spec: ModelSpec  # resolved: name, version, signature
    rate: float
    seconds: int
    request: PredictRequest | ExamplesRequest | tuple[Sequence[MultiInferenceTask], list[bytes]]
    response: PredictResponse | ExamplesResponse | Sequence[ExamplesResponse]


@dataclass(frozen=True, slots=True)
class _ModelLog:
    config: RequestLogging
    files: RotatingFiles


class RequestLogger:
    """One server's request logs: per-model sampling on the loop, one writer thread for every file.

    :meth:`update` (start and every config reload, like TF's ``ServerRequestLogger::Update``)
    replaces the table of logged models; the DataPlane calls :meth:`predict`, :meth:`examples`
    (classify and regress) and :meth:`multi_inference` after a call succeeds.
    """

    def __init__(
        self,
        *,
        saved_model_tags: Sequence[str],
        max_file_bytes: int,
        max_queue_bytes: int,
        sample: Callable[[], float] | None = None,
    ) -> None:
        """``sample``: a uniform [0, 1) source (a seeded one makes the sampling reproducible)."""
        self._tags = tuple(saved_model_tags)
        self._max_file_bytes = max_file_bytes
        self._max_queue_bytes = max_queue_bytes
        self._sample = sample or random.Random().random
        self._models: dict[str, _ModelLog] = {}
        self._files: dict[str, RotatingFiles] = {}  # by prefix: models sharing one share the files
        self._writer: BackgroundWriter[_Sampled] | None = None
        self._counts_lock = threading.Lock()
        #: ``(model_name, status_code) -> records``: written ("OK"), dropped at the queue
        #: ("RESOURCE_EXHAUSTED") or failed to write ("INTERNAL"); read by the metrics page
        self._counts: dict[tuple[str, ...], int] = {}

    def update(self, models: Sequence[ModelConfig]) -> None:
        """The models to log from now on. Their directories are created now, so a prefix that
        cannot be written fails the config (start-up or reload), not every write after it."""
        table: dict[str, _ModelLog] = {}
        for model in models:
            if model.logging is None:
                continue
            prefix = os.path.abspath(model.logging.filename_prefix)
            try:
                os.makedirs(os.path.dirname(prefix), exist_ok=True)
            except OSError as error:
                raise ConfigError(
                    f"logging_config of model {model.name}: cannot create the directory of "
                    f"{model.logging.filename_prefix}: {error.strerror or error}"
                ) from None
            files = self._files.get(prefix)
            if files is None:
                files = self._files[prefix] = RotatingFiles(prefix, self._max_file_bytes)
            table[model.name] = _ModelLog(model.logging, files)
            log.info("Request logging for model %s: sampling rate %g, files %s-*.tfrecord",
                     model.name, model.logging.sampling_rate, prefix)  # fmt: skip
        if table and self._writer is None:
            self._writer = BackgroundWriter(
                "mlsrv-request-log",
                self._write,
                max_items=MAX_QUEUED_RECORDS,
                max_bytes=self._max_queue_bytes,
                flush=self._flush,
                close=self._close_files,
            )
        self._models = table  # one assignment: the loop sees the old table or the new one

    # -- the serving path (event loop): sample, and queue references --

    def predict(self, request: PredictRequest, response: PredictResponse) -> None:
        self._offer(request.spec.name, "predict", response.spec, request, response)

    def examples(self, request: ExamplesRequest, response: ExamplesResponse) -> None:
        kind = "classify" if request.method is InferenceMethod.CLASSIFY else "regress"
        self._offer(request.spec.name, kind, response.spec, request, response)

    def multi_inference(
        self, tasks: Sequence[MultiInferenceTask], examples: list[bytes], results: Sequence[ExamplesResponse]
    ) -> None:
        # TF logs a MultiInference under the first task's (resolved) spec, without a signature
        spec = ModelSpec(results[0].spec.name, results[0].spec.version) if results else tasks[0].spec
        self._offer(tasks[0].spec.name, "multi_inference", spec, (tasks, examples), results)

    def _offer(
        self,
        model: str,
        kind: str,
        spec: ModelSpec,
        request: PredictRequest | ExamplesRequest | tuple[Sequence[MultiInferenceTask], list[bytes]],
        response: PredictResponse | ExamplesResponse | Sequence[ExamplesResponse],
    ) -> None:
        logged = self._models.get(model)
        if logged is None or self._writer is None:
            return
        rate = logged.config.sampling_rate
        if not self._sample() < rate:
            return
        entry = _Sampled(logged.files, kind, spec, rate, int(time.time()), request, response)
        if not self._writer.offer(entry, _held_bytes(request, response)):
            self._count(model, "RESOURCE_EXHAUSTED")

    # -- the writer thread --

    def _write(self, batch: Sequence[_Sampled]) -> None:
        for entry in batch:
            try:
                entry.files.write(tfrecord.frame(self._record(entry)))
            except Exception as error:  # one bad record (or a full disk) costs that record only
                self._count(entry.spec.name, "INTERNAL")
                log.error("Request log: cannot write a record of model %s to %s: %s",
                          entry.spec.name, entry.files.prefix, error)  # fmt: skip
                continue
            self._count(entry.spec.name, "OK")

    def _record(self, entry: _Sampled) -> bytes:
        """A serialized ``PredictionLog``: metadata plus the log type's request and response,
        assembled from their own serializations (embedded messages are length-delimited fields)."""
        from tensorflow_serving.apis import logging_pb2

        metadata = logging_pb2.LogMetadata()
        grpc_codec.spec_to_pb(entry.spec, metadata.model_spec)
        metadata.sampling_config.sampling_rate = entry.rate
        metadata.saved_model_tags.extend(self._tags)
        metadata.timestamp_secs = entry.seconds
        request, response = _messages(entry)
        body = length_delimited(1, request.SerializeToString()) + length_delimited(2, response.SerializeToString())
        return length_delimited(_METADATA_FIELD, metadata.SerializeToString()) + length_delimited(
            _LOG_FIELDS[entry.kind], body
        )

    def _flush(self) -> None:
        for files in list(self._files.values()):
            files.flush()

    def _close_files(self) -> None:
        for files in list(self._files.values()):
            files.close()

    def _count(self, model: str, status: str) -> None:
        with self._counts_lock:
            key = (model, status)
            self._counts[key] = self._counts.get(key, 0) + 1

    # -- reading and stopping --

    def counts(self) -> dict[tuple[str, ...], int]:
        """``request_log_count`` cells: ``(model_name, status_code) -> records``."""
        with self._counts_lock:
            return dict(self._counts)

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Write what is queued (within ``timeout_s``) and close the files."""
        if self._writer is not None:
            if not self._writer.close(timeout_s):
                log.warning("Request log: records still queued after %.0f s were not written", timeout_s)
            self._writer = None


def _messages(entry: _Sampled) -> tuple[Message, Message]:
    """The request and response protobufs of one sampled call (built on the writer thread)."""
    if entry.kind == "predict":
        assert isinstance(entry.request, PredictRequest) and isinstance(entry.response, PredictResponse)
        return (
            grpc_codec.predict_request_to_pb(entry.request),
            grpc_codec.predict_response_to_pb(entry.response, as_tensor_content=True),
        )
    if entry.kind == "multi_inference":
        assert isinstance(entry.request, tuple) and isinstance(entry.response, Sequence)
        tasks, examples = entry.request
        pairs = [(task.spec, task.method or InferenceMethod.CLASSIFY) for task in tasks]
        return (
            grpc_codec.multi_inference_request_to_pb(pairs, examples),
            grpc_codec.multi_inference_response_to_pb(entry.response),
        )
    assert isinstance(entry.request, ExamplesRequest)
    if isinstance(entry.response, ClassifyResponse):
        return (
            grpc_codec.classify_request_to_pb(entry.request.spec, entry.request.examples),
            grpc_codec.classify_response_to_pb(entry.response),
        )
    assert isinstance(entry.response, RegressResponse)
    return (
        grpc_codec.regress_request_to_pb(entry.request.spec, entry.request.examples),
        grpc_codec.regress_response_to_pb(entry.response),
    )


def _held_bytes(request: object, response: object) -> int:
    """About the memory a queued record keeps alive: its tensors and examples, and the objects
    around them (queue accounting)."""
    total = RECORD_OVERHEAD_BYTES
    for part in (request, response):
        if isinstance(part, PredictRequest):
            total += _arrays_bytes(part.inputs)
        elif isinstance(part, PredictResponse):
            total += _arrays_bytes(part.outputs)
        elif isinstance(part, ExamplesRequest):
            total += sum(len(example) for example in part.examples)
        elif isinstance(part, tuple):
            total += sum(len(example) for example in part[1])
        else:
            responses = part if isinstance(part, Sequence) else [part]
            for item in responses:
                if isinstance(item, ClassifyResponse):
                    total += sum(a.nbytes for a in (item.classes, item.scores) if a is not None)
                elif isinstance(item, RegressResponse):
                    total += item.values.nbytes
    return total


def _arrays_bytes(arrays: Mapping[str, np.ndarray]) -> int:
    total = 0
    for array in arrays.values():
        if array.dtype == object:  # strings: the pointers' bytes say nothing of the strings'
            total += sum(len(value) if isinstance(value, (bytes, str)) else 8 for value in array.flat)
        else:
            total += array.nbytes
    return total


__all__ = ["CLOSE_TIMEOUT_S", "MAX_QUEUED_RECORDS", "RequestLogger", "RotatingFiles"]
