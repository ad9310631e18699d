"""TF Serving's profiler service on the gRPC port: ``tensorflow.ProfilerService``, served by TensorFlow.

TF Serving registers ``tensorflow.ProfilerService`` on its gRPC port (``model_servers/server.cc``, on
by default, ``--enable_profiler``), so TensorBoard's profile plugin and
``tf.profiler.experimental.client.trace("grpc://host:8500", ...)`` trace the model calls it makes.
TensorFlow's Python API offers that service only as a server of its own
(``tf.profiler.experimental.server.start(port)``), so mlsrv starts it once per process, on a free
loopback port, on the first profiler call, and forwards the calls to it byte for byte: the messages
are never parsed here and stay whatever this TensorFlow defines. Its traces cover this process: the
model calls of every version served.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final

import grpc

SERVICE: Final = "tensorflow.ProfilerService"
METHODS: Final = ("Profile", "Terminate", "Monitor")


class ProfilerForwarder:
    """The service's handler for the gRPC server; ``start_backend`` starts TF's profiler server (once)
    and returns its port. Loop-affine."""

    def __init__(self, start_backend: Callable[[], int]) -> None:
        self._start_backend = start_backend
        self._channel: grpc.aio.Channel | None = None
        self._starting = asyncio.Lock()

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {name: grpc.unary_unary_rpc_method_handler(self._forwarder(name)) for name in METHODS},
        )

    def _forwarder(self, name: str) -> Callable[[bytes, grpc.aio.ServicerContext], Any]:
        path = f"/{SERVICE}/{name}"

        async def forward(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            channel = await self._backend()
            call = channel.unary_unary(path)  # no serializers: bytes in, bytes out
            try:
                return bytes(await call(request, timeout=context.time_remaining()))
            except grpc.aio.AioRpcError as error:
                await context.abort(error.code(), error.details() or "")
                raise  # abort raises; this is for the type checker

        return forward

    async def _backend(self) -> grpc.aio.Channel:
        async with self._starting:
            if self._channel is None:
                port = await asyncio.to_thread(self._start_backend)
                self._channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
            return self._channel

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
