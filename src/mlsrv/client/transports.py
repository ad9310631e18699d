"""Transports: how one typed request reaches a model server and comes back typed, or as an ``MlsrvError``.

A :class:`Transport` has one method, ``send(call)``, like httpx's ``handle_async_request``: the
:class:`Call` names the operation and carries a ``protocol.types`` request; the transport encodes it
with the shared codecs (``json_codec`` + ``routes`` for REST, ``grpc_codec`` for gRPC), sends it, and
returns the decoded response. Every foreign failure is translated here, once per transport, into the
``mlsrv.errors`` class the server raised (HTTP status / gRPC code -> ``Code`` -> class), or into
``TransportError`` when no model server answered, so callers see the same exception whichever wire
carried the request.

Optional capabilities, detected with ``isinstance``: :class:`SupportsPrepare` (encode a call once and
send it many times, which the load generator uses) and :class:`SupportsClose`.

Request/response pairs per :class:`Op`:

=========  ==========================  =====================
op         ``Call.request``            result
=========  ==========================  =====================
PREDICT    ``PredictRequest``          ``PredictResponse``
CLASSIFY   ``ExamplesCall``            ``ClassifyResponse``
REGRESS    ``ExamplesCall``            ``RegressResponse``
METADATA   ``ModelSpec``               ``ModelMetadata``
STATUS     ``ModelSpec``               ``ModelStatus``
=========  ==========================  =====================

The transports live in :mod:`~mlsrv.client.rest_transport` and :mod:`~mlsrv.client.grpc_transport`
(re-exported here), the in-process and mock ones below. Neither imports TensorFlow (the gRPC one
uses TF Serving's descriptors from a private pool, :mod:`mlsrv.protocol.client_protos`).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any, Final, Protocol

from mlsrv.client.grpc_transport import GrpcCredentials, GrpcTransport
from mlsrv.client.rest_transport import RestTransport
from mlsrv.client.transport_base import (
    Call,
    CallRequest,
    CallResult,
    ExamplesCall,
    Op,
    SupportsClose,
    SupportsPrepare,
    Transport,
    check_output_filter,
)
from mlsrv.protocol.types import (
    ClassifyResponse,
    ExamplesRequest,
    ModelMetadata,
    ModelSpec,
    ModelStatus,
    PredictRequest,
    PredictResponse,
    RegressResponse,
)

# ------------------------------------------------------------------------------------- in-process


class DataPlaneLike(Protocol):
    """What :class:`InProcessTransport` needs: the server's ``DataPlane`` (duck-typed, no server import)."""

    async def predict(self, request: PredictRequest, deadline: float | None = None) -> PredictResponse: ...
    async def classify(self, request: ExamplesRequest, deadline: float | None = None) -> ClassifyResponse: ...
    async def regress(self, request: ExamplesRequest, deadline: float | None = None) -> RegressResponse: ...
    def metadata(self, spec: ModelSpec) -> ModelMetadata: ...
    def status(self, spec: ModelSpec) -> ModelStatus: ...


class InProcessTransport:
    """Calls a ``DataPlane`` in this process: no sockets, no codecs but the examples one (for tests/embedding)."""

    name: Final = "inprocess"

    def __init__(self, dataplane: DataPlaneLike) -> None:
        self._dataplane = dataplane

    async def send(self, call: Call) -> CallResult:
        deadline = None if call.timeout_s is None else asyncio.get_running_loop().time() + call.timeout_s
        req = call.request
        if isinstance(req, PredictRequest):
            return await self._dataplane.predict(req, deadline)
        if isinstance(req, ExamplesCall):
            request = ExamplesRequest(req.spec, req.method, req.serialized())
            run = self._dataplane.classify if call.op is Op.CLASSIFY else self._dataplane.regress
            return await run(request, deadline)
        if call.op is Op.METADATA:
            return self._dataplane.metadata(req)
        return self._dataplane.status(req)


# ------------------------------------------------------------------------------------------- mock

Handler = Callable[[Call], Any]


class MockTransport:
    """Calls ``handler(call)`` (sync or async) for every request and returns what it returns; raising
    from the handler is how a test makes the server fail. ``calls`` records every call in order."""

    name: Final = "mock"

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.calls: list[Call] = []

    async def send(self, call: Call) -> Any:
        self.calls.append(call)
        result = self._handler(call)
        if inspect.isawaitable(result):
            result = await result
        return result


__all__ = [
    "Call",
    "CallRequest",
    "CallResult",
    "DataPlaneLike",
    "ExamplesCall",
    "GrpcCredentials",
    "GrpcTransport",
    "InProcessTransport",
    "MockTransport",
    "Op",
    "RestTransport",
    "SupportsClose",
    "SupportsPrepare",
    "Transport",
    "check_output_filter",
]
