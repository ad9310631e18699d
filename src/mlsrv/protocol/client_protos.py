"""TF Serving's request and response messages for client processes, without importing TensorFlow.

The official ``tensorflow_serving.apis`` modules import the whole ``tensorflow`` package (4-5 s and
~600 MB per process) because ``tensor.proto`` lives in it. The client needs only the messages: the
serialized descriptors in :mod:`mlsrv.protocol.tfs_descriptors` (copied byte for byte from the
official modules by ``scripts/gen_client_protos.py``) are loaded into a private descriptor pool, so
a process that also imports the official modules (the server, tests) sees no duplicate definitions.
Messages built here serialize to the same bytes as the official ones; they are not instances of the
official classes, so they go to grpc as bytes (``client/grpc_transport.py``), never to an official
stub. The server keeps using the official modules.
"""

from __future__ import annotations

import functools

from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory

from mlsrv.protocol.tfs_descriptors import FILES

#: ``PredictionLog`` field numbers (``prediction_log.proto``) and the fields of each log type.
LOG_TYPES = {"classify_log": 2, "regress_log": 3, "multi_inference_log": 4, "session_run_log": 5,
             "predict_log": 6, "predict_streamed_log": 7}  # fmt: skip
#: The message ``PredictionLogView`` (see :func:`_log_view_file`) is read as.
PREDICTION_LOG_VIEW = "mlsrv.view.PredictionLogView"


@functools.cache
def _pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    for _name, serialized in FILES:
        pool.AddSerializedFile(serialized)
    pool.Add(_log_view_file())
    return pool


def _log_view_file() -> descriptor_pb2.FileDescriptorProto:
    """A view of ``tensorflow.serving.PredictionLog`` for reading request logs and warmup files.

    The real message's file pulls in TF's whole ``config.proto`` (for ``session_run_log``). The view
    declares only what a reader needs, with the real field numbers: the metadata's model spec, and
    the Predict request; every log type is also readable as plain bytes, so a record keeps its kind.
    Records parse as the view exactly as they parse as the real message (unknown fields are skipped).
    """
    optional, message_type, bytes_type = (
        descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
        descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
        descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
    )
    view = descriptor_pb2.FileDescriptorProto(
        name="mlsrv/prediction_log_view.proto",
        package="mlsrv.view",
        syntax="proto2",  # optional bytes fields with presence: which log type a record holds
        dependency=["tensorflow_serving/apis/model.proto", "tensorflow_serving/apis/predict.proto"],
    )
    metadata = view.message_type.add(name="LogMetadataView")
    metadata.field.add(name="model_spec", number=1, label=optional, type=message_type,
                       type_name=".tensorflow.serving.ModelSpec")  # fmt: skip
    predict = view.message_type.add(name="PredictLogView")
    predict.field.add(name="request", number=1, label=optional, type=message_type,
                      type_name=".tensorflow.serving.PredictRequest")  # fmt: skip
    log = view.message_type.add(name="PredictionLogView")
    log.field.add(name="log_metadata", number=1, label=optional, type=message_type,
                  type_name=".mlsrv.view.LogMetadataView")  # fmt: skip
    log.field.add(name="predict_log", number=LOG_TYPES["predict_log"], label=optional, type=message_type,
                  type_name=".mlsrv.view.PredictLogView")  # fmt: skip
    for name, number in LOG_TYPES.items():
        if name != "predict_log":
            log.field.add(name=name, number=number, label=optional, type=bytes_type)
    return view


@functools.cache
def message_class(full_name: str) -> type[message.Message]:
    """The class of message ``full_name`` (e.g. ``tensorflow.serving.PredictRequest``) in the private pool."""
    found: type[message.Message] = message_factory.GetMessageClass(_pool().FindMessageTypeByName(full_name))
    return found
