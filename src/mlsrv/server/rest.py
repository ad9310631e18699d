"""The REST frontend: aiohttp handlers that decode with ``json_codec``, call the DataPlane, and encode.

One catch-all route dispatches like TF Serving's ``http_server.cc``: an exact ``extra_routes`` path
first (the Prometheus page), then ``/v1/...`` to the API, anything else gets a plain 404 page. One
middleware turns every ``MlsrvError`` into ``{"error": msg}`` with the status from
``errors.HTTP_STATUS``; nothing else maps codes. With metrics on, every API call is counted by model
name and status code name, as TF's ``RestApiRequestDispatcher`` does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from mlsrv.errors import MlsrvError
from mlsrv.protocol import json_codec, routes
from mlsrv.protocol.types import ExamplesRequest, InferenceMethod, ModelSpec, PredictRequest, RequestFormat
from mlsrv.server.dataplane import DataPlane
from mlsrv.server.metrics import Metrics

log = logging.getLogger(__name__)

JSON: Final = "application/json"
_CORS_HEADERS: Final = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, GET",
    "Access-Control-Allow-Headers": "Content-Type",
}
#: libevent's ``evhttp_send_error(req, 404, NULL)`` page, which TF Serving sends outside ``/v1``.
_NOT_FOUND_PAGE: Final = (
    b"<HTML><HEAD>\n<TITLE>404 Not Found</TITLE>\n</HEAD><BODY>\n<H1>Not Found</H1>\n</BODY></HTML>\n"
)
#: TF Serving has no request size cap; image requests are megabytes. Bound it anyway.
MAX_BODY_BYTES: Final = 1 << 31
#: TF Serving's cap on a gunzipped request body.
MAX_GUNZIPPED_BYTES: Final = 100 << 20
#: ``request_latency``'s API label: TF's URL method, empty for status and metadata.
_API_LABEL: Final = {routes.Verb.PREDICT: "predict", routes.Verb.CLASSIFY: "classify", routes.Verb.REGRESS: "regress"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RestFrontend:
    """Builds the aiohttp application for one Server. Holds no state besides its collaborators."""

    def __init__(
        self,
        dataplane: DataPlane,
        *,
        timeout_s: float,
        enable_cors: bool,
        model_names: Callable[[], list[str]],
        extra_routes: dict[str, Handler] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._dataplane = dataplane
        self._timeout_s = timeout_s
        self._enable_cors = enable_cors
        self._model_names = model_names
        self._extra = dict(extra_routes or {})
        self._metrics = metrics

    def application(self) -> web.Application:
        """The app; serve it with ``auto_decompress=False`` (see :func:`request_body`)."""
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._errors])
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        app.on_response_prepare.append(_drop_server_header)
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except MlsrvError as error:
            # REST carries the whole message: TF cuts messages at 1024 characters only for gRPC
            body = b"" if error.empty_body else json_codec.encode_error(error.message)
            response = web.Response(body=body, status=error.http_status, content_type=JSON)
        except web.HTTPException:
            raise
        except Exception:
            log.exception("internal error serving %s %s", request.method, request.path)
            response = web.Response(body=json_codec.encode_error("Internal error"), status=500, content_type=JSON)
        if self._enable_cors:
            response.headers.update(_CORS_HEADERS)
        return response

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = raw_path(request)
        extra = self._extra.get(path)
        if extra is not None:
            return await extra(request)
        if not routes.is_api_path(path):
            return web.Response(body=_NOT_FOUND_PAGE, status=404, headers={"Content-Type": "text/html"})
        if request.method == "OPTIONS":  # CORS preflight on /v1: answered before the API handler
            origin = request.headers.get("Origin", "")
            ok = origin.startswith(("http://", "https://"))
            return web.Response(status=200 if ok else 400, content_type=JSON)
        if self._metrics is None:
            return await self._api(request, routes.parse(request.method, path))
        return await self._counted(request, path, self._metrics)

    async def _counted(self, request: web.Request, path: str, metrics: Metrics) -> web.StreamResponse:
        """:meth:`_api` plus ``request_count`` / ``request_latency``, as TF's REST dispatcher records them."""
        started = time.perf_counter_ns()
        name = api = ""
        try:
            route = routes.parse(request.method, path)
            name, api = route.spec.name, _API_LABEL.get(route.verb, "")
            response = await self._api(request, route)
        except MlsrvError as error:
            metrics.record_request(name, error.code.name, api, "REST", 0)
            raise
        except web.HTTPException:  # aiohttp answered by itself (e.g. body too large): not a served call
            raise
        except Exception:
            metrics.record_request(name, "INTERNAL", api, "REST", 0)
            raise
        metrics.record_request(name, "OK", api, "REST", (time.perf_counter_ns() - started) // 1000)
        return response

    async def _api(self, request: web.Request, route: routes.Route) -> web.StreamResponse:
        if route.verb is routes.Verb.LIST:
            return self._json(
                json_codec.encode_model_list(
                    [self._dataplane.status_or_empty(name) for name in sorted(self._model_names())]
                )
            )
        if route.verb is routes.Verb.STATUS:
            return self._json(json_codec.encode_status(self._dataplane.status(route.spec)))
        if route.verb is routes.Verb.METADATA:
            return self._json(json_codec.encode_metadata(self._dataplane.metadata(route.spec)))
        body = request_body(await request.read(), request.headers.get("Content-Encoding", ""))
        deadline = asyncio.get_running_loop().time() + self._timeout_s if self._timeout_s > 0 else None
        if route.verb is routes.Verb.PREDICT:
            return self._json(await self._predict(route.spec, body, deadline))
        return self._json(await self._examples(route, body, deadline))

    async def _predict(self, spec: ModelSpec, body: bytes, deadline: float | None) -> bytes:
        request, fmt = self._predict_request(spec, body)
        response = await self._dataplane.predict(request, deadline)
        return json_codec.encode_predict_response(response.outputs, fmt)

    def _predict_request(self, spec: ModelSpec, body: bytes) -> tuple[PredictRequest, RequestFormat]:
        """Parse and decode in one synchronous step, so the parsed document dies before the model runs.

        A 1x224x224x3 image parses into ~50k lists; kept alive across the model call (one per
        request in flight), they would pile up in the cyclic GC's young generation and trigger the
        collections ``GcTuning`` is there to avoid. Only the numpy inputs outlive this call.
        """
        doc = json_codec.parse_body(body)
        signature_name = json_codec.signature_name_of(doc)
        spec = ModelSpec(spec.name, spec.version, spec.label, signature_name)
        resolved = self._dataplane.signature_for_rest(spec)
        inputs, fmt = json_codec.decode_predict_inputs(doc, resolved.signature)
        return PredictRequest(spec, inputs, (), fmt), fmt

    async def _examples(self, route: routes.Route, body: bytes, deadline: float | None) -> bytes:
        request = self._examples_request(route, body)
        if request.method is InferenceMethod.CLASSIFY:
            return json_codec.encode_classify_response(await self._dataplane.classify(request, deadline))
        return json_codec.encode_regress_response(await self._dataplane.regress(request, deadline))

    @staticmethod
    def _examples_request(route: routes.Route, body: bytes) -> ExamplesRequest:
        """Like :meth:`_predict_request`: the parsed document does not outlive decoding."""
        method = InferenceMethod.CLASSIFY if route.verb is routes.Verb.CLASSIFY else InferenceMethod.REGRESS
        doc = json_codec.parse_body(body)
        signature_name = json_codec.signature_name_of(doc)
        examples = json_codec.decode_examples_request(doc, method)
        spec = ModelSpec(route.spec.name, route.spec.version, route.spec.label, signature_name)
        return ExamplesRequest(spec, method, examples)

    @staticmethod
    def _json(body: bytes) -> web.Response:
        return web.Response(body=body, content_type=JSON)


def raw_path(request: web.Request) -> str:
    """The path as sent, still percent-encoded, without the query (which TF Serving ignores).

    TF matches its URL regexes on the encoded path and decodes only the captured model name and
    label, so ``%2F`` or ``%3A`` inside a name never split the path.
    """
    return request.raw_path.partition("?")[0]


def request_body(raw: bytes, content_encoding: str) -> bytes:
    """The body as TF Serving's ``EvHTTPRequest`` hands it over.

    It gunzips only when ``Content-Encoding`` contains ``gzip`` (case-sensitive) and takes any other
    encoding as raw bytes. A body that fails to gunzip, or grows past 100 MiB, becomes empty, so the
    JSON parser reports ``The document is empty``.
    """
    if "gzip" not in content_encoding:
        return raw
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        body = inflater.decompress(raw, MAX_GUNZIPPED_BYTES + 1)
    except zlib.error:
        return b""
    if len(body) > MAX_GUNZIPPED_BYTES or not inflater.eof:
        return b""
    return body


async def _drop_server_header(request: web.Request, response: web.StreamResponse) -> None:
    """libevent sends no ``Server`` header; aiohttp's would name our Python and aiohttp versions."""
    response.headers.pop("Server", None)


def prometheus_handler(metrics: Metrics) -> Handler:
    """The Prometheus page for ``extra_routes``: any method, ``Content-Type: text/plain`` exactly."""

    async def handle(request: web.Request) -> web.StreamResponse:
        return web.Response(body=metrics.render().encode(), headers={"Content-Type": "text/plain"})

    return handle


def health_handlers(ready: Callable[[], list[str]]) -> dict[str, Handler]:
    """mlsrv extras for probes, outside TF Serving's ``/v1`` namespace so no path can collide.

    ``/healthz`` (liveness): 200 while the process serves. ``/readyz`` (readiness): 200 when every
    configured model has an AVAILABLE version, else 503 listing the models that do not.
    """

    async def live(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b'{"status": "ok"}', content_type=JSON)

    async def readiness(request: web.Request) -> web.StreamResponse:
        waiting = ready()
        if waiting:
            body = json.dumps({"status": "not ready", "models_not_available": waiting}).encode()
            return web.Response(body=body, status=503, content_type=JSON)
        return web.Response(body=b'{"status": "ready"}', content_type=JSON)

    return {"/healthz": live, "/readyz": readiness}
