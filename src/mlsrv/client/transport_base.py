"""The transport seam's vocabulary: operations, calls, the ``Transport`` protocol and its optional extras.

Kept apart from :mod:`mlsrv.client.transports` so each transport module can import it without cycles.
See that module for the request/response pairs per :class:`Op`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from mlsrv.errors import InvalidArgument
from mlsrv.protocol import json_codec
from mlsrv.protocol.types import (
    ClassifyResponse,
    InferenceMethod,
    ModelMetadata,
    ModelSpec,
    ModelStatus,
    PredictRequest,
    PredictResponse,
    RegressResponse,
)


class Op(enum.Enum):
    PREDICT = "predict"
    CLASSIFY = "classify"
    REGRESS = "regress"
    METADATA = "metadata"
    STATUS = "status"


@dataclass(frozen=True, slots=True)
class ExamplesCall:
    """A classify/regress request as TF Serving's REST body carries it: JSON feature dicts.

    ``examples`` is a list of ``{feature: value | [values]}`` objects and ``context`` optional common
    features. gRPC and in-process transports serialize them with ``json_codec.decode_examples_request``,
    the same conversion the server applies to a REST body, so every transport sends the same tf.Examples.
    """

    spec: ModelSpec
    method: InferenceMethod
    examples: Sequence[Mapping[str, Any]]
    context: Mapping[str, Any] | None = None

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"examples": list(self.examples)}
        if self.spec.signature:
            doc["signature_name"] = self.spec.signature
        if self.context is not None:
            doc["context"] = dict(self.context)
        return doc

    def serialized(self) -> list[bytes]:
        return json_codec.decode_examples_request(self.document(), self.method)


#: What a :class:`Call` carries, by :class:`Op`: PREDICT a ``PredictRequest``, CLASSIFY and REGRESS an
#: :class:`ExamplesCall`, METADATA and STATUS a ``ModelSpec``.
CallRequest = PredictRequest | ExamplesCall | ModelSpec
#: What a transport returns, by :class:`Op`: ``PredictResponse``, ``ClassifyResponse``,
#: ``RegressResponse``, ``ModelMetadata``, ``ModelStatus``.
CallResult = PredictResponse | ClassifyResponse | RegressResponse | ModelMetadata | ModelStatus

_REQUEST_TYPES: dict[Op, type] = {
    Op.PREDICT: PredictRequest,
    Op.CLASSIFY: ExamplesCall,
    Op.REGRESS: ExamplesCall,
    Op.METADATA: ModelSpec,
    Op.STATUS: ModelSpec,
}
RESULT_TYPES: dict[Op, type] = {
    Op.PREDICT: PredictResponse,
    Op.CLASSIFY: ClassifyResponse,
    Op.REGRESS: RegressResponse,
    Op.METADATA: ModelMetadata,
    Op.STATUS: ModelStatus,
}


@dataclass(frozen=True, slots=True)
class Call:
    """One request: the operation, its typed request, a timeout in seconds (None: none) and, when a
    :class:`SupportsPrepare` transport encoded it ahead of time, the wire payload (``encoded_by`` names it).
    A request of the wrong type for its operation is refused here, where the call is made."""

    op: Op
    request: CallRequest
    timeout_s: float | None = None
    payload: bytes | None = field(default=None, compare=False)
    encoded_by: str = ""

    def __post_init__(self) -> None:
        expected = _REQUEST_TYPES[self.op]
        if not isinstance(self.request, expected):
            raise TypeError(f"a {self.op.name} call carries a {expected.__name__}, not {type(self.request).__name__}")

    @property
    def spec(self) -> ModelSpec:
        """The model the call is for."""
        return self.request if isinstance(self.request, ModelSpec) else self.request.spec


class Transport(Protocol):
    """Sends one :class:`Call` and returns its typed result; raises ``MlsrvError`` subclasses only."""

    async def send(self, call: Call) -> CallResult: ...


@runtime_checkable
class SupportsPrepare(Protocol):
    def prepare(self, call: Call) -> Call:
        """``call`` with its wire payload attached, so sending it many times encodes it once."""
        ...


@runtime_checkable
class SupportsClose(Protocol):
    async def aclose(self) -> None: ...


def check_output_filter(output_filter: Sequence[str], outputs: Iterable[str]) -> None:
    """The server's output_filter checks and messages (unknown alias, duplicate), for REST, which has none."""
    available = sorted(outputs)
    seen: set[str] = set()
    for alias in output_filter:
        if alias not in available:
            raise InvalidArgument(
                f"output tensor alias not found in signature: {alias} "
                f"Outputs expected to be in the set {{{','.join(available)}}}."
            )
        if alias in seen:
            raise InvalidArgument(f"duplicate output tensor alias: {alias}")
        seen.add(alias)
