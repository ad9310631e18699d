"""``GrpcTransport``: TF Serving's PredictionService/ModelService over ``grpc.aio`` with the shared ``grpc_codec``.

Messages come from :mod:`mlsrv.protocol.client_protos` (TF Serving's descriptors in a private pool), so a
client process never imports TensorFlow; requests go to grpc already serialized, over multicallables
named by method path (no generated stubs). Predict requests carry ``tensor_content`` by default. A
gRPC status maps back to the server's exception class by code name; channel failures (refused, DNS,
TLS) are ``TransportError``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Final

from mlsrv.client.transport_base import Call, CallResult, ExamplesCall, Op
from mlsrv.errors import Code, DeadlineExceeded, MlsrvError, TransportError, code_from_name, error_for_code
from mlsrv.protocol.types import PredictRequest

#: How gRPC's resolvers word a name that did not resolve: only to say so in the message (whether a
#: failure is the transport's comes from the channel state).
_RESOLVE_WORDING: Final = ("dns", "errors resolving", "name resolution")

#: TF Serving allows messages up to INT32_MAX in both directions; so does the client.
_MAX_MESSAGE: Final = 2**31 - 1


@dataclass(frozen=True, slots=True)
class GrpcCredentials:
    """TLS material as bytes (PEM); all None with ``tls=True`` means system roots, no client cert."""

    root_certificates: bytes | None = None
    private_key: bytes | None = None
    certificate_chain: bytes | None = None


class GrpcTransport:
    """TF Serving's PredictionService/ModelService over one ``grpc.aio`` channel (opened on first use).

    Predict requests carry ``tensor_content`` by default (``tensor_content=False`` for typed fields).
    ``credentials`` switches to a TLS channel. Loop-affine; close with :meth:`aclose`.
    """

    name: Final = "grpc"

    def __init__(
        self,
        target: str,
        *,
        credentials: GrpcCredentials | None = None,
        tensor_content: bool = True,
        token: str | None = None,
    ) -> None:
        """``token``: sent with every call as ``authorization: Bearer <token>`` metadata."""
        self.target = target
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._credentials = credentials
        self._tensor_content = tensor_content
        self._channel: Any = None
        self._multicallables: dict[Op, Any] | None = None

    def _methods(self) -> dict[Op, Any]:
        """One multicallable per operation, taking the request already serialized (see :meth:`prepare`)."""
        if self._multicallables is None:
            import grpc

            from mlsrv.protocol.client_protos import message_class

            options = [
                ("grpc.max_send_message_length", _MAX_MESSAGE),
                ("grpc.max_receive_message_length", _MAX_MESSAGE),
            ]
            if self._credentials is None:
                self._channel = grpc.aio.insecure_channel(self.target, options=options)
            else:
                creds = grpc.ssl_channel_credentials(
                    self._credentials.root_certificates,
                    self._credentials.private_key,
                    self._credentials.certificate_chain,
                )
                self._channel = grpc.aio.secure_channel(self.target, creds, options=options)
            prediction, model = "/tensorflow.serving.PredictionService/", "/tensorflow.serving.ModelService/"
            paths = {
                Op.PREDICT: (prediction + "Predict", "PredictResponse"),
                Op.CLASSIFY: (prediction + "Classify", "ClassificationResponse"),
                Op.REGRESS: (prediction + "Regress", "RegressionResponse"),
                Op.METADATA: (prediction + "GetModelMetadata", "GetModelMetadataResponse"),
                Op.STATUS: (model + "GetModelStatus", "GetModelStatusResponse"),
            }
            # no request serializer: requests go out as bytes (prepare() makes them once per workload)
            self._multicallables = {
                op: self._channel.unary_unary(
                    path, response_deserializer=message_class(f"tensorflow.serving.{response}").FromString
                )
                for op, (path, response) in paths.items()
            }
        return self._multicallables

    def _request_pb(self, call: Call) -> Any:
        from mlsrv.protocol import grpc_codec

        req = call.request
        if isinstance(req, PredictRequest):
            return grpc_codec.predict_request_to_pb(req, as_tensor_content=self._tensor_content)
        if isinstance(req, ExamplesCall):
            build = grpc_codec.classify_request_to_pb if call.op is Op.CLASSIFY else grpc_codec.regress_request_to_pb
            return build(req.spec, req.serialized())
        if call.op is Op.METADATA:
            return grpc_codec.metadata_request_to_pb(req)
        return grpc_codec.status_request_to_pb(req)

    def prepare(self, call: Call) -> Call:
        """The request serialized once: a load test resending it costs no encoding per call."""
        return replace(call, payload=self._request_pb(call).SerializeToString(), encoded_by=self.name)

    async def send(self, call: Call) -> CallResult:
        import grpc

        from mlsrv.protocol import grpc_codec

        method = self._methods()[call.op]
        wire = call.payload
        if call.encoded_by != self.name or wire is None:
            wire = self._request_pb(call).SerializeToString()
        try:
            response = await method(wire, timeout=call.timeout_s, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            raise _grpc_error(exc, self.target, call.timeout_s, connected=self._connected()) from None
        op = call.op
        if op is Op.PREDICT:
            return grpc_codec.predict_response_from_pb(response)
        if op is Op.CLASSIFY:
            return grpc_codec.classify_response_from_pb(response)
        if op is Op.REGRESS:
            return grpc_codec.regress_response_from_pb(response)
        if op is Op.METADATA:
            return grpc_codec.metadata_response_from_pb(response)
        return grpc_codec.status_response_from_pb(response, name=call.spec.name)

    def _connected(self) -> bool:
        """Whether the channel holds a working connection now: a call that failed UNAVAILABLE on a
        channel that is not READY never reached a server (refused, unresolved, TLS, or cut)."""
        import grpc

        channel = self._channel
        return channel is not None and channel.get_state(try_to_connect=False) is grpc.ChannelConnectivity.READY

    async def aclose(self) -> None:
        if self._channel is not None:
            channel, self._channel, self._multicallables = self._channel, None, None
            await channel.close()


def _grpc_error(exc: Any, target: str, timeout_s: float | None, *, connected: bool) -> MlsrvError:
    """gRPC status -> the same exception class as over REST. Which failures are the transport's is
    decided by the channel's state (``connected``), not by the message: UNAVAILABLE without a
    connection is ``TransportError`` (the message only words it), UNAVAILABLE from a connected
    server is the server's own (a full batch queue, a draining server)."""
    code = code_from_name(exc.code().name)
    details = exc.details() or ""
    if code is Code.UNAVAILABLE and not connected:
        first = details.splitlines()[0].strip().rstrip(":") if details else "unavailable"
        if any(word in details.lower() for word in _RESOLVE_WORDING):
            return TransportError(f"cannot connect to {target}: the host could not be resolved ({first})")
        return TransportError(f"cannot connect to {target}: {first}")
    if code is Code.DEADLINE_EXCEEDED and details == "Deadline Exceeded" and timeout_s is not None:
        return DeadlineExceeded(f"no response from {target} within {timeout_s:g} s")
    return error_for_code(code, details)
