"""Model warmup as TF Serving does it (``saved_model_warmup_util.cc``): replay the ``PredictionLog``
records of ``<version>/assets.extra/tf_serving_warmup_requests`` (a TFRecord file) before the version
becomes AVAILABLE, so the first real request does not pay for graph initialisation.

Any warmup error fails the load of that version, with TF Serving's messages and codes.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, Final

import numpy as np
import tensorflow as tf

from mlsrv.errors import DataLoss, InvalidArgument, Unimplemented
from mlsrv.protocol import grpc_codec, tensor_codec
from mlsrv.protocol.types import DEFAULT_SIGNATURE
from mlsrv.server.servable import Servable

log = logging.getLogger(__name__)

WARMUP_FILE: Final = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_RECORDS: Final = 1000


#: ``(model_path, status, microseconds)``: TF's ``model_warmup_latency`` cell, recorded when the file was
#: read to its end or failed to read ("OK", or the status as ``CODE: message``). Called on the loading thread.
WarmupObserver = Callable[[str, str, int], None]


def warmup(servable: Servable, version_dir: str, iterations: int = 1, observe: WarmupObserver | None = None) -> int:
    """Replay the warmup records (each ``iterations`` times); returns how many records were read.

    A missing file is fine (logged). Raises the MlsrvError TF Serving would report.
    """
    path = os.path.join(version_dir, WARMUP_FILE)
    if not os.path.exists(path):
        log.info("No warmup data file found at %s", path)
        return 0
    from tensorflow_serving.apis import prediction_log_pb2

    started = time.perf_counter()
    count = 0
    try:
        for record in _records(path):
            count += 1
            if count > MAX_RECORDS:
                raise InvalidArgument(f"Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {path}")
            entry = prediction_log_pb2.PredictionLog()
            try:
                entry.ParseFromString(record)
            except Exception:  # protobuf raises DecodeError (or its C++ twin); TF quotes the record itself
                text = record.decode("utf-8", "replace")
                raise InvalidArgument(f"Failed to parse warmup record: {text} from {path}") from None
            for _ in range(max(1, iterations)):
                _replay(servable, entry)
    except tf.errors.OpError as error:
        if observe is not None:
            observe(version_dir, f"DATA_LOSS: {error.message}", int((time.perf_counter() - started) * 1e6))
        raise DataLoss(f"{error.message}. Please verify your warmup data is in TFRecord format.") from None
    elapsed_us = int((time.perf_counter() - started) * 1e6)
    if observe is not None:
        observe(version_dir, "OK", elapsed_us)
    log.info("Finished reading warmup data for model at %s. Number of warmup records read: %d. "
             "Elapsed time (microseconds): %d.", path, count, elapsed_us)
    return count


def _replay(servable: Servable, entry: Any) -> None:
    kind = entry.WhichOneof("log_type")
    if kind == "predict_log":
        request = entry.predict_log.request
        inputs = {alias: tensor_codec.to_ndarray(proto) for alias, proto in request.inputs.items()}
        servable.run(request.model_spec.signature_name or DEFAULT_SIGNATURE, inputs, tuple(request.output_filter))
    elif kind in ("classify_log", "regress_log"):
        request = getattr(entry, kind).request
        _run_examples(servable, request.model_spec.signature_name, grpc_codec.examples_from_input_pb(request.input))
    elif kind == "multi_inference_log":
        request = entry.multi_inference_log.request
        examples = grpc_codec.examples_from_input_pb(request.input)
        for task in request.tasks:
            _run_examples(servable, task.model_spec.signature_name, examples)
    else:
        number = entry.DESCRIPTOR.fields_by_name[kind].number if kind else 0
        raise Unimplemented(f"Unsupported log_type for warmup: {number}")


def _run_examples(servable: Servable, signature: str, examples: list[bytes]) -> None:
    tensor = np.empty(len(examples), dtype=object)
    tensor[:] = examples
    servable.run(signature or DEFAULT_SIGNATURE, {"inputs": tensor})



def _records(path: str) -> Iterator[bytes]:
    """The file's records, read as TF Serving reads them (``io::RecordReader``: the same DATA_LOSS texts).

    ``tf_record_iterator`` is the reader whose errors match TF Serving's; it is deprecated in favour
    of ``tf.data``, whose errors carry op names, and its deprecation warning would reach the server's
    log on every load with warmup data: silenced here, where mlsrv chose it.
    """
    from tensorflow.python.util import deprecation

    with deprecation.silence():  # the warning is printed when the reader is created
        records = tf.compat.v1.io.tf_record_iterator(path)
    yield from records
