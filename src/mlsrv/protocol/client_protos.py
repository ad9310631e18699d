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

from google.protobuf import descriptor_pool, message, message_factory

from mlsrv.protocol.tfs_descriptors import FILES


@functools.cache
def _pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    for _name, serialized in FILES:
        pool.AddSerializedFile(serialized)
    return pool


@functools.cache
def message_class(full_name: str) -> type[message.Message]:
    """The class of message ``full_name`` (e.g. ``tensorflow.serving.PredictRequest``) in the private pool."""
    found: type[message.Message] = message_factory.GetMessageClass(_pool().FindMessageTypeByName(full_name))
    return found
