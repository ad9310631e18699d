"""The gRPC frontend: TF Serving's PredictionService and ModelService on ``grpc.aio``, plus health
and reflection. Each RPC is a thin codec call around one DataPlane method; every handler is wrapped
by the same error adapter, so codes come only from ``errors`` (``grpc.StatusCode[code.name]``).
With metrics on, Predict, Classify and Regress are counted as TF's ``PredictionServiceImpl`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Final, TypeVar

import grpc

from mlsrv.config import GrpcConfig
from mlsrv.errors import ConfigError, InvalidArgument, MlsrvError, UnknownError
from mlsrv.protocol import grpc_codec
from mlsrv.server.dataplane import DataPlane
from mlsrv.server.metrics import Metrics

if TYPE_CHECKING:
    from mlsrv.server.app import Server

log = logging.getLogger(__name__)

#: TF Serving sets INT32_MAX for both directions and no flag changes it.
MAX_MESSAGE_BYTES: Final = 2**31 - 1
SERVICE_NAMES: Final = ("tensorflow.serving.PredictionService", "tensorflow.serving.ModelService")

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Method = Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining: float | None = context.time_remaining()
    if remaining is None:
        return None
    return asyncio.get_running_loop().time() + remaining


def error_adapter(method: Method[Req, Resp]) -> Method[Req, Resp]:
    """Map MlsrvError to its gRPC status (message cut at 1024 chars); unknown errors become INTERNAL."""

    @functools.wraps(method)
    async def wrapped(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        try:
            async with self._slots:
                return await method(self, request, context)
        except MlsrvError as error:
            await context.abort(grpc.StatusCode[error.code.name], error.wire_message())
        except asyncio.CancelledError:
            raise
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("internal error in %s", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "Internal error")
        raise AssertionError("unreachable")  # pragma: no cover - abort always raises

    return wrapped


def counted(api: str) -> Callable[[Method[Req, Resp]], Method[Req, Resp]]:
    """Record ``request_count{model_name,status}`` and, on OK, ``request_latency{..., entrypoint="GRPC"}``.

    Applied inside :func:`error_adapter`, so it sees the ``MlsrvError`` before it becomes an abort.
    The servicer's ``_metrics`` is None when monitoring is off; then this adds one attribute read.
    """

    def decorate(method: Method[Req, Resp]) -> Method[Req, Resp]:
        @functools.wraps(method)
        async def wrapped(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
            metrics: Metrics | None = self._metrics
            if metrics is None:
                return await method(self, request, context)
            started = time.perf_counter_ns()
            name = _model_name(request)
            try:
                response = await method(self, request, context)
            except MlsrvError as error:
                metrics.record_request(name, error.code.name, api, "GRPC", 0)
                raise
            except Exception:
                metrics.record_request(name, "INTERNAL", api, "GRPC", 0)
                raise
            metrics.record_request(name, "OK", api, "GRPC", (time.perf_counter_ns() - started) // 1000)
            return response

        return wrapped

    return decorate


def _model_name(request: Any) -> str:
    """The name as sent (TF labels metrics with ``request->model_spec().name()``)."""
    return str(request.model_spec.name)


class PredictionServicer:
    """``tensorflow.serving.PredictionService``."""

    def __init__(
        self,
        dataplane: DataPlane,
        *,
        tensor_content: bool,
        metrics: Metrics | None = None,
        slots: AbstractAsyncContextManager[Any] | None = None,
    ) -> None:
        self._dataplane = dataplane
        self._tensor_content = tensor_content
        self._metrics = metrics
        self._slots = slots or contextlib.nullcontext()

    @error_adapter
    @counted("Predict")
    async def Predict(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        try:
            decoded = grpc_codec.predict_request_from_pb(request)
        except InvalidArgument:  # TF parses tensors after resolving the model: report those errors first
            self._dataplane.check_predict_target(grpc_codec.request_spec(request), request.inputs.keys())
            raise
        response = await self._dataplane.predict(decoded, _deadline(context))
        return grpc_codec.predict_response_to_pb(response, as_tensor_content=self._tensor_content)

    @error_adapter
    @counted("Classify")
    async def Classify(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        response = await self._dataplane.classify(grpc_codec.classify_request_from_pb(request), _deadline(context))
        return grpc_codec.classify_response_to_pb(response)

    @error_adapter
    @counted("Regress")
    async def Regress(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        response = await self._dataplane.regress(grpc_codec.regress_request_from_pb(request), _deadline(context))
        return grpc_codec.regress_response_to_pb(response)

    @error_adapter
    async def MultiInference(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        tasks, examples = grpc_codec.multi_inference_request_from_pb(request)
        results = await self._dataplane.multi_inference(tasks, examples, _deadline(context))
        return grpc_codec.multi_inference_response_to_pb(results)

    @error_adapter
    async def GetModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        spec = grpc_codec.metadata_request_from_pb(request)
        return grpc_codec.metadata_response_to_pb(self._dataplane.metadata(spec))


class ModelServicer:
    """``tensorflow.serving.ModelService``: status, and whole-config reload."""

    def __init__(
        self, dataplane: DataPlane, server: Server | None, slots: AbstractAsyncContextManager[Any] | None = None
    ) -> None:
        self._dataplane = dataplane
        self._server = server
        self._slots = slots or contextlib.nullcontext()

    @error_adapter
    async def GetModelStatus(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        spec = grpc_codec.spec_from_pb(request.model_spec, has_field=request.HasField("model_spec"), require_name=False)
        return grpc_codec.status_response_to_pb(self._dataplane.status(spec))

    async def HandleReloadConfigRequest(  # noqa: N802
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> Any:
        """Replace the model list; answers the status in the body and as the RPC status, as TF Serving."""
        from tensorflow_serving.apis import model_management_pb2

        response = model_management_pb2.ReloadConfigResponse()
        names = list(dict.fromkeys(request.metric_names))
        before = {name: self._metric_value(name) for name in names}
        try:
            await self._reload(request)
        except MlsrvError as error:
            response.status.error_code = error.code.value
            response.status.error_message = error.wire_message()
            await context.abort(grpc.StatusCode[error.code.name], error.wire_message())
        for name in names:  # TF's RecordMetricsIncrease: one entry per requested name, 0 when unknown
            metric = response.metric.add()
            metric.name, metric.int64_value_increase = name, self._metric_value(name) - before[name]
        return response

    def _metric_value(self, name: str) -> int:
        metrics = None if self._server is None else self._server.metrics
        return 0 if metrics is None else metrics.int64_value(name)

    async def _reload(self, request: Any) -> None:
        from mlsrv.config_loader import models_from_proto

        kind = request.config.WhichOneof("config")
        if kind != "model_config_list":  # an empty config too: TF's handler only takes a ModelConfigList
            raise InvalidArgument(
                "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                "Only ModelConfigList is currently supported"
            )
        if self._server is None:
            raise UnknownError("config reload is not available on this server")
        await self._server.reload_models(models_from_proto(request.config, validate=False))


class GrpcFrontend:
    """Owns the ``grpc.aio`` server: services, health, reflection, ports and socket."""

    def __init__(
        self,
        dataplane: DataPlane,
        config: GrpcConfig,
        *,
        server: Server | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._dataplane = dataplane
        self._config = config
        self._owner = server
        self._metrics = metrics
        self._server: grpc.aio.Server | None = None
        self._health: Any = None

    async def start(self) -> int:
        """Bind and start; returns the TCP port (0 when serving only on a UNIX socket)."""
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        options: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            *self._config.channel_arguments,
        ]
        server = grpc.aio.server(options=options)
        # --grpc_max_threads bounds TF's handler threads: further calls wait for one, they are not refused
        slots = asyncio.Semaphore(self._config.max_threads) if self._config.max_threads > 0 else None
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(
                self._dataplane,
                tensor_content=self._config.tensor_content_outputs,
                metrics=self._metrics,
                slots=slots,
            ),
            server,
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelServicer(self._dataplane, self._owner, slots), server
        )
        names = list(SERVICE_NAMES)
        if self._config.enable_health:
            names.append(self._add_health(server))
        from grpc_reflection.v1alpha import reflection

        reflection.enable_server_reflection([*names, reflection.SERVICE_NAME], server)
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

    async def stop(self, grace_s: float) -> None:
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(grace_s)
