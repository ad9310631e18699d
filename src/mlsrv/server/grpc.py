"""The gRPC frontend: TF Serving's PredictionService and ModelService on ``grpc.aio``, plus health
and reflection.

Each RPC is a thin codec call around one DataPlane method. Handlers are not registered through the
generated ``add_*_to_server`` functions: :func:`service_handler` builds the table from the service
descriptor and wraps every method it finds in the one :class:`CallAdapter`, so no method (including
``HandleReloadConfigRequest``) can miss the error table, the ``--grpc_max_threads`` slots, the
request metrics or the guard against undecodable bytes. Codes come only from ``errors``
(``grpc.StatusCode[code.name]``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Final

import grpc
from google.protobuf import message as pb_message
from google.protobuf import message_factory

from mlsrv.config import GrpcConfig
from mlsrv.errors import ConfigError, InvalidArgument, MlsrvError, Overloaded, PermissionDenied, UnknownError
from mlsrv.protocol import grpc_codec, tensor_codec
from mlsrv.server.access_log import AccessEntry, AccessLog, grpc_peer_text
from mlsrv.server.admission import Admission, Ticket
from mlsrv.server.auth import MANAGEMENT_METHOD, Authenticator
from mlsrv.server.dataplane import DataPlane
from mlsrv.server.log_limits import RateLimitedLog
from mlsrv.server.metrics import Metrics

if TYPE_CHECKING:
    from google.protobuf.descriptor import ServiceDescriptor

    from mlsrv.server.app import Server
    from mlsrv.server.profiler import ProfilerForwarder

log = logging.getLogger(__name__)

#: TF Serving sets INT32_MAX for both directions and no flag changes it.
MAX_MESSAGE_BYTES: Final = 2**31 - 1
SERVICE_NAMES: Final = ("tensorflow.serving.PredictionService", "tensorflow.serving.ModelService")
#: When stopping, new calls are refused until none has arrived for this long (grpc's queue is empty).
DRAIN_QUIET_S: Final = 0.05
#: Methods TF's ``PredictionServiceImpl`` counts in ``request_count`` / ``request_latency``.
COUNTED_METHODS: Final = frozenset({"Predict", "Classify", "Regress"})
#: The inference methods, admitted (``server/admission.py``) before a byte of their message is read.
ADMITTED_METHODS: Final = frozenset({"Predict", "Classify", "Regress", "MultiInference"})

Implementation = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
#: What grpc calls: the request (grpc read it first), or for admitted methods the unread call's stream.
Behaviour = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining: float | None = context.time_remaining()
    if remaining is None:
        return None
    return asyncio.get_running_loop().time() + remaining


class Undecodable:
    """What the deserializer hands over for bytes that are not the method's request message."""

    __slots__ = ("type_name",)

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name


def lenient_parser(message_class: type[pb_message.Message]) -> Callable[[bytes], Any]:
    """``FromString`` that returns :class:`Undecodable` instead of raising (grpc would answer UNKNOWN
    with a Python class name); the adapter turns it into INVALID_ARGUMENT."""
    type_name = message_class.DESCRIPTOR.full_name

    def parse(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except (pb_message.DecodeError, RecursionError, ValueError):
            return Undecodable(type_name)

    return parse


def sized_parser(message_class: type[pb_message.Message]) -> Callable[[bytes], tuple[Any, int]]:
    """:func:`lenient_parser` that also hands over the message's size on the wire, for admission's
    byte bound (``ByteSize()`` would serialize the whole message again to learn it)."""
    parse = lenient_parser(message_class)

    def parse_sized(data: bytes) -> tuple[Any, int]:
        return parse(data), len(data)

    return parse_sized


async def _read_request(context: grpc.aio.ServicerContext) -> tuple[Any, int]:
    """The call's one request message and its size (the client sends exactly one to a unary method)."""
    received = await context.read()
    if received is grpc.aio.EOF:
        raise InvalidArgument("The call carried no request message")
    parsed: tuple[Any, int] = received
    return parsed


class CallAdapter:
    """Wraps every gRPC method once, at registration: slots, metrics, and the one error table.

    - ``MlsrvError`` becomes its status (message cut at 1024 chars, as TF's ``ToGRPCStatus``);
      anything else is logged (rate-limited) and answered ``INTERNAL "Internal error"``: no Python
      text reaches a client.
    - The abort happens *after* the ``except`` block and after dropping the request: an exception
      keeps its frames (and so a 7 MB request) alive, and one raised while handling another would
      chain them into reference cycles that only a full collection frees, which the serving GC
      tuning makes rare.
    - It counts the calls running and knows when the last one arrived, for a graceful stop
      (:meth:`GrpcFrontend.stop`); once :meth:`refuse_new_calls` is called, new calls are
      answered UNAVAILABLE, the code clients retry elsewhere.
    - It serializes the response itself (methods are registered without a response serializer),
      so the access log knows the bytes sent and a message that fails to serialize is an error
      of the table, not of grpc.
    """

    def __init__(
        self,
        metrics: Metrics | None,
        slots: AbstractAsyncContextManager[Any] | None,
        admission: Admission | None = None,
        access_log: AccessLog | None = None,
    ) -> None:
        """``admission``: inference calls are admitted before they run (UNAVAILABLE past its bounds);
        ``access_log``: a line per answered call."""
        self._access_log = access_log
        self._metrics = metrics
        self._admission = admission
        self._slots = slots or contextlib.nullcontext()
        self._internal_log = RateLimitedLog(log)
        self.running = 0
        self.last_call_at = float("-inf")
        self._refusing = False
        self._idle = asyncio.Event()
        self._idle.set()

    def refuse_new_calls(self) -> None:
        self._refusing = True

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no call is running (at most ``timeout_s``); whether that happened."""
        try:
            await asyncio.wait_for(self._idle.wait(), max(0.0, timeout_s))
        except asyncio.TimeoutError:
            return False
        return True

    def wrap(self, name: str, implementation: Implementation) -> Behaviour:
        """The grpc behaviour of one method. An inference method (:data:`ADMITTED_METHODS`) is
        registered request-streaming (the same bytes on the wire): grpc then calls it before reading
        the message, so a call past admission's bounds is answered UNAVAILABLE with its message
        unread and undecoded, and only admitted calls are read, counted while they arrive."""
        metrics = self._metrics if name in COUNTED_METHODS else None  # known here: no per-call test
        admission = self._admission
        access_log = self._access_log
        reads_itself = name in ADMITTED_METHODS

        async def call(received: Any, context: grpc.aio.ServicerContext) -> bytes | None:
            # ``received``: the request, or for a method that reads itself grpc's (unused) stream
            request: Any = None if reads_itself else received
            del received
            arrived = time.time() if access_log is not None else 0.0
            started = time.perf_counter_ns() if metrics is not None or access_log is not None else 0
            size = 0
            model = ""  # TF labels request_count with the name as sent; unknown for a call turned away unread
            self.last_call_at = time.monotonic()
            self.running += 1
            self._idle.clear()
            ticket: Ticket | None = None
            failure: BaseException | None = None
            try:
                if self._refusing:
                    raise Overloaded("Server is shutting down")
                if reads_itself:
                    if admission is not None:
                        ticket = admission.admit(0)  # its size and model are known once read
                    request, size = await _read_request(context)
                    if ticket is not None:
                        ticket.grow(size)
                model = _model_name(request)
                if isinstance(request, Undecodable):
                    raise InvalidArgument(f"Failed to parse the request as {request.type_name}")
                if ticket is not None:
                    ticket.assign(model)  # before its tensors are decoded
                async with self._slots:
                    response = await implementation(request, context)
                payload: bytes = response.SerializeToString()
                self._record(metrics, name, model, "OK", started)
                if access_log is not None:
                    access_log.record(_access_entry(name, context, request, response, "OK", arrived, started,
                                                    size, len(payload)))  # fmt: skip
                return payload
            except MlsrvError as error:
                failure = error
                code, text = grpc.StatusCode[error.code.name], error.wire_message()
                if request is not None:  # a call turned away unread is counted by admission only
                    self._record(metrics, name, model, error.code.name, None)
            except (asyncio.CancelledError, grpc.aio.AbortError) as error:
                failure = error
                raise
            except Exception as error:  # a bug: logged for us, a generic INTERNAL for the client
                failure = error
                self._internal_log.error("internal error in %s: %s", name, repr(error)[:200], exc_info=error)
                code, text = grpc.StatusCode.INTERNAL, "Internal error"
                self._record(metrics, name, model, "INTERNAL", None)
            finally:
                if ticket is not None:
                    ticket.release(failure)
                del failure
                self.running -= 1
                if self.running == 0:
                    self._idle.set()
            if access_log is not None:
                access_log.record(_access_entry(name, context, request, None, code.name, arrived, started, size, 0))
            del request
            context.set_code(code)  # not context.abort(): its AbortError would form a cycle with this frame
            context.set_details(text)
            return None

        call.__name__ = name
        return call

    @staticmethod
    def _record(metrics: Metrics | None, api: str, model: str, status: str, started: int | None) -> None:
        if metrics is None:
            return
        latency = 0 if started is None else (time.perf_counter_ns() - started) // 1000
        metrics.record_request(model, status, api, "GRPC", latency)


def _access_entry(
    method: str,
    context: grpc.aio.ServicerContext,
    request: Any,
    response: Any,
    code: str,
    arrived: float,
    started_ns: int,
    size: int,
    sent: int,
) -> AccessEntry:
    """The access-log line of one call: the model spec that answered (the response's) or was asked for."""
    asked = getattr(request, "model_spec", None)
    if asked is None and getattr(request, "tasks", None):  # MultiInference: the first task's
        asked = request.tasks[0].model_spec
    answered = getattr(response, "model_spec", None)
    if answered is None and getattr(response, "results", None):
        answered = response.results[0].model_spec
    spec = answered if answered is not None else asked
    version = ""
    if spec is not None:
        choice = spec.WhichOneof("version_choice")
        version = str(spec.version.value) if choice == "version" else spec.version_label if choice else ""
    if not size and request is not None and not isinstance(request, Undecodable):
        size = request.ByteSize()  # a small status or metadata request: grpc parsed it before the call
    return AccessEntry(
        arrived=arrived,
        protocol="grpc",
        peer=grpc_peer_text(str(context.peer())),
        method=method,
        path="",
        model="" if spec is None else str(spec.name),
        version=version,
        signature="" if spec is None else str(spec.signature_name),
        status=code,
        latency_s=(time.perf_counter_ns() - started_ns) / 1e9,
        bytes_in=size,
        bytes_out=sent,
    )


def _model_name(request: Any) -> str:
    """The name as sent (TF labels metrics with ``request->model_spec().name()``); "" for undecodable bytes."""
    spec = getattr(request, "model_spec", None)
    return "" if spec is None else str(spec.name)


def service_handler(service: ServiceDescriptor, servicer: object, adapter: CallAdapter) -> grpc.GenericRpcHandler:
    """The handler table of one service: every method the servicer implements, each wrapped by ``adapter``.

    Methods the servicer lacks stay unregistered, so grpc answers UNIMPLEMENTED for them.
    """
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in service.methods:
        implementation = getattr(servicer, method.name, None)
        if implementation is None:
            continue
        request_class = message_factory.GetMessageClass(method.input_type)
        behaviour = adapter.wrap(method.name, implementation)
        if method.name in ADMITTED_METHODS:  # reads its one message itself, after admission
            handlers[method.name] = grpc.stream_unary_rpc_method_handler(
                behaviour, request_deserializer=sized_parser(request_class)
            )
        else:  # the adapter serializes the response
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                behaviour, request_deserializer=lenient_parser(request_class)
            )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


class PredictionServicer:
    """``tensorflow.serving.PredictionService``. Errors are raised; :class:`CallAdapter` maps them."""

    def __init__(self, dataplane: DataPlane, *, tensor_content: bool, max_fill_bytes: int) -> None:
        self._dataplane = dataplane
        self._tensor_content = tensor_content
        self._max_fill_bytes = max_fill_bytes

    async def Predict(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        try:
            decoded = grpc_codec.predict_request_from_pb(request, tensor_codec.FillBudget(self._max_fill_bytes))
        except InvalidArgument:  # TF parses tensors after resolving the model: report those errors first
            self._dataplane.check_predict_target(grpc_codec.request_spec(request), request.inputs.keys())
            raise
        response = await self._dataplane.predict(decoded, _deadline(context))
        return grpc_codec.predict_response_to_pb(response, as_tensor_content=self._tensor_content)

    async def Classify(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        response = await self._dataplane.classify(grpc_codec.classify_request_from_pb(request), _deadline(context))
        return grpc_codec.classify_response_to_pb(response)

    async def Regress(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        response = await self._dataplane.regress(grpc_codec.regress_request_from_pb(request), _deadline(context))
        return grpc_codec.regress_response_to_pb(response)

    async def MultiInference(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        tasks, examples = grpc_codec.multi_inference_request_from_pb(request)
        results = await self._dataplane.multi_inference(tasks, examples, _deadline(context))
        return grpc_codec.multi_inference_response_to_pb(results)

    async def GetModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        spec = grpc_codec.metadata_request_from_pb(request)
        return grpc_codec.metadata_response_to_pb(self._dataplane.metadata(spec))


class ModelServicer:
    """``tensorflow.serving.ModelService``: status, and whole-config reload."""

    def __init__(self, dataplane: DataPlane, server: Server | None) -> None:
        self._dataplane = dataplane
        self._server = server

    async def GetModelStatus(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        spec = grpc_codec.spec_from_pb(request.model_spec, has_field=request.HasField("model_spec"), require_name=False)
        return grpc_codec.status_response_to_pb(self._dataplane.status(spec))

    async def HandleReloadConfigRequest(  # noqa: N802
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> Any:
        """Replace the model list. A failure is the RPC's status (TF also copies it into the body,
        which a failed call never delivers). ``--disable_model_management_api`` refuses it."""
        from tensorflow_serving.apis import model_management_pb2

        if self._server is not None and self._server.config.model_management_disabled:
            raise PermissionDenied("The model management API is disabled (--disable_model_management_api)")

        response = model_management_pb2.ReloadConfigResponse()
        names = list(dict.fromkeys(request.metric_names))
        before = {name: self._metric_value(name) for name in names}
        await self._reload(request)
        for name in names:  # TF's RecordMetricsIncrease: one entry per requested name, 0 when unknown
            metric = response.metric.add()
            metric.name, metric.int64_value_increase = name, self._metric_value(name) - before[name]
        return response

    def _metric_value(self, name: str) -> int:
        metrics = None if self._server is None else self._server.metrics
        return 0 if metrics is None else metrics.int64_value(name)

    async def _reload(self, request: Any) -> None:
        kind = request.config.WhichOneof("config")
        if kind != "model_config_list":  # an empty config too: TF's handler only takes a ModelConfigList
            raise InvalidArgument(
                "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                "Only ModelConfigList is currently supported"
            )
        if self._server is None:
            raise UnknownError("config reload is not available on this server")
        await self._server.reload_config(request.config)


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc.aio is untyped
    """Bearer tokens on every call but the health service's (``server/auth.py``), checked before grpc
    reads the call's message; a refused call is answered UNAUTHENTICATED (or PERMISSION_DENIED for a
    caller's token on model management) and its message is never read."""

    def __init__(self, auth: Authenticator) -> None:
        self._auth = auth

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = str(details.method)
        if self._auth.grpc_is_open(method):
            return await continuation(details)
        authorization = next(
            (str(value) for key, value in details.invocation_metadata or () if key == "authorization"), None
        )
        try:
            self._auth.check(authorization, management=method == MANAGEMENT_METHOD)
        except MlsrvError as error:
            return _refusal(grpc.StatusCode[error.code.name], error.wire_message())
        return await continuation(details)


def _refusal(code: grpc.StatusCode, text: str) -> grpc.RpcMethodHandler:
    """A handler that answers ``code`` at once, whatever the method's kind, without reading a message."""

    async def refuse(requests: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, text)

    return grpc.stream_unary_rpc_method_handler(refuse)


class GrpcFrontend:
    """Owns the ``grpc.aio`` server: services, health, reflection, ports and socket."""

    def __init__(
        self,
        dataplane: DataPlane,
        config: GrpcConfig,
        *,
        server: Server | None = None,
        metrics: Metrics | None = None,
        admission: Admission | None = None,
        auth: Authenticator | None = None,
        access_log: AccessLog | None = None,
    ) -> None:
        self._access_log = access_log
        self._admission = admission
        self._auth = auth
        self._dataplane = dataplane
        self._config = config
        self._owner = server
        self._metrics = metrics
        self._server: grpc.aio.Server | None = None
        self._adapter: CallAdapter | None = None
        self._health: Any = None
        self._profiler: ProfilerForwarder | None = None
        self.service_names: tuple[str, ...] = ()

    async def start(self) -> int:
        """Bind and start; returns the TCP port (0 when serving only on a UNIX socket)."""
        from tensorflow_serving.apis import model_service_pb2, prediction_service_pb2

        options: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            *self._config.channel_arguments,
        ]
        interceptors = [AuthInterceptor(self._auth)] if self._auth is not None else []
        server = grpc.aio.server(options=options, interceptors=interceptors)
        # --grpc_max_threads bounds TF's handler threads: further calls wait for one, they are not refused
        slots = asyncio.Semaphore(self._config.max_threads) if self._config.max_threads > 0 else None
        self._adapter = adapter = CallAdapter(self._metrics, slots, self._admission, self._access_log)
        predictions = PredictionServicer(
            self._dataplane,
            tensor_content=self._config.tensor_content_outputs,
            max_fill_bytes=self._config.max_fill_bytes,
        )
        prediction_service = prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"]
        model_service = model_service_pb2.DESCRIPTOR.services_by_name["ModelService"]
        server.add_generic_rpc_handlers(
            (
                service_handler(prediction_service, predictions, adapter),
                service_handler(model_service, ModelServicer(self._dataplane, self._owner), adapter),
            )
        )
        names = list(SERVICE_NAMES)
        if self._config.enable_health:
            names.append(self._add_health(server))
        if self._config.enable_profiler:
            from mlsrv.server import tf_runtime
            from mlsrv.server.profiler import SERVICE, ProfilerForwarder

            self._profiler = ProfilerForwarder(tf_runtime.start_profiler_server)
            server.add_generic_rpc_handlers((self._profiler.handler(),))
            names.append(SERVICE)
        from grpc_reflection.v1alpha import reflection

        #: every service this server answers (for reflection, and for tests that must cover all of them)
        self.service_names = (*names, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(list(self.service_names), server)
        credentials = self._credentials()
        port = 0
        address = f"{self._config.host}:{self._config.port}"
        try:
            if self._config.port:
                port = (
                    server.add_secure_port(address, credentials)
                    if credentials is not None
                    else server.add_insecure_port(address)
                )
            if self._config.socket_path:
                address = f"unix:{self._config.socket_path}"
                server.add_insecure_port(address)
        except RuntimeError as error:  # grpc reports bind failures as RuntimeError
            raise ConfigError(f"cannot serve gRPC on {address}: {error}") from None
        await server.start()
        self._server = server
        await self.mark_serving()
        log.info("Running gRPC ModelServer at %s:%d ...", self._config.host, port)
        return port

    def _add_health(self, server: grpc.aio.Server) -> str:
        from grpc_health.v1 import health, health_pb2_grpc

        servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        self._health = servicer
        return str(health.SERVICE_NAME)

    async def mark_serving(self) -> None:
        """Health: "" plus TF Serving's short names "ModelService" and "PredictionService" SERVING."""
        if self._health is None:
            return
        from grpc_health.v1 import health_pb2

        for name in ("", "ModelService", "PredictionService", *SERVICE_NAMES):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def _credentials(self) -> grpc.ServerCredentials | None:
        if not self._config.ssl_config_file:
            return None
        from mlsrv.ssl_config import load_server_credentials

        return load_server_credentials(self._config.ssl_config_file)

    async def enter_drain(self) -> None:
        """Health NOT_SERVING, so balancers that watch it move traffic away; calls are still served."""
        if self._health is not None:
            await self._health.enter_graceful_shutdown()

    @property
    def last_call_at(self) -> float:
        """``time.monotonic()`` of the latest call (-inf before the first)."""
        return float("-inf") if self._adapter is None else self._adapter.last_call_at

    async def stop(self, grace_s: float) -> None:
        """Refuse new calls (UNAVAILABLE) until grpc's queue is empty and running calls have
        finished, within ``grace_s``; only then stop grpc, which cancels whatever it still holds
        (only calls of clients that keep retrying past the grace)."""
        await self.enter_drain()
        if self._server is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        adapter = self._adapter
        if adapter is not None:
            adapter.refuse_new_calls()
            # until the queue is empty: nothing running, and nothing new for a moment
            while await adapter.wait_idle(deadline - loop.time()) and loop.time() < deadline:
                quiet_for = time.monotonic() - adapter.last_call_at
                if quiet_for >= DRAIN_QUIET_S:
                    break
                await asyncio.sleep(DRAIN_QUIET_S - quiet_for)
        await self._server.stop(max(0.0, deadline - loop.time()))
        if self._profiler is not None:
            await self._profiler.close()
