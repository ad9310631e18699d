"""The REST frontend: aiohttp handlers that decode with ``json_codec``, call the DataPlane, and encode.

One handler on aiohttp's low-level server dispatches like TF Serving's ``http_server.cc``: an exact
``extra_routes`` path first (the Prometheus page), then ``/v1/...`` to the API, anything else gets
a plain 404 page. Every ``MlsrvError`` becomes ``{"error": msg}`` with the status from
``errors.HTTP_STATUS`` through one function, :func:`error_answer`; nothing else maps codes. With
metrics on, every API call is counted by model name and status code name, as TF's
``RestApiRequestDispatcher`` does.

The common request, an inference call whose body came with its head, skips aiohttp's request machinery:
the connection (``rest_connections``) asks :meth:`RestFrontend.answer_at_connection` for its answer
and writes it. Both paths share everything after routing (:meth:`RestFrontend._inference`), so they
differ only in what they are handed (aiohttp's request, or the parsed head and body) and in who writes.

Bodies are read under a size cap (checked against ``Content-Length`` before reading, and counted
for chunked bodies) and a time limit. A large body is decoded, and a large response encoded, in a
worker process (``worker_pool``), so one 50 MB request never stalls the loop that serves every
other REST and gRPC client; small requests stay on the loop, where they cost least. Both run the
same pure functions (``rest_decode``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Final, TypeVar, cast

from aiohttp import HttpVersion11, StreamReader, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import RawRequestMessage
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_response import REASON_PHRASES

from mlsrv.errors import (
    InternalError,
    InvalidArgument,
    MlsrvError,
    Overloaded,
    RequestTimeout,
    RequestTooLarge,
    Unauthenticated,
)
from mlsrv.protocol import json_codec, routes
from mlsrv.protocol.json_parse import ExactParseNeeded
from mlsrv.protocol.types import ExamplesRequest, InferenceMethod, ModelSpec, PredictRequest
from mlsrv.server import rest_decode
from mlsrv.server.access_log import AccessEntry, AccessLog, peer_text
from mlsrv.server.admission import RETRY_AFTER_S, Admission, Ticket
from mlsrv.server.auth import CHALLENGE, Authenticator
from mlsrv.server.dataplane import DataPlane
from mlsrv.server.log_limits import RateLimitedLog, one_line
from mlsrv.server.metrics import Metrics
from mlsrv.server.process_tuning import trim_heap
from mlsrv.server.rest_connections import HttpDate
from mlsrv.server.worker_pool import WorkerPool

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
#: Bodies up to this size are decoded on the loop (~8 ms of orjson at most); larger ones in a worker.
OFF_LOOP_BODY_BYTES: Final = 256 << 10
#: Bodies orjson refuses are parsed by the exact (pure-Python) parser on the loop up to this size only.
ON_LOOP_EXACT_BYTES: Final = 16 << 10
#: Responses with more output elements (or examples) than this are encoded in a worker.
OFF_LOOP_OUTPUT_ELEMENTS: Final = 64 << 10
#: After a request whose body was at least this large, free heap memory is handed back to the system.
TRIM_AFTER_BODY_BYTES: Final = 64 << 20
#: Where ``read_body`` leaves the size it read on the request, for the trim.
BODY_SIZE: Final = web.RequestKey("mlsrv_body_size", int)
#: Where an inference call leaves the spec that answered it (resolved version, signature), for the access log.
SERVED_SPEC: Final = web.RequestKey("mlsrv_served_spec", ModelSpec)
#: Routes parsed from paths up to this long are remembered, at most this many (then forgotten at once).
ROUTE_CACHE_PATH_CHARS: Final = 256
ROUTE_CACHE_ENTRIES: Final = 1024
#: ``request_latency``'s API label: TF's URL method, empty for status and metadata.
_API_LABEL: Final = {routes.Verb.PREDICT: "predict", routes.Verb.CLASSIFY: "classify", routes.Verb.REGRESS: "regress"}

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
T = TypeVar("T")


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
        max_body_bytes: int = 1 << 30,
        body_timeout_s: float = 60.0,
        workers: WorkerPool | None = None,
        admission: Admission | None = None,
        auth: Authenticator | None = None,
        access_log: AccessLog | None = None,
    ) -> None:
        """``workers`` decode large bodies and encode large responses (None: everything on the loop);
        ``admission`` admits inference requests before their body is read (503 past its bounds);
        ``access_log`` gets a line for every answered request."""
        self._access_log = access_log
        self._admission = admission
        self._auth = auth
        self._dataplane = dataplane
        self._timeout_s = timeout_s
        self._enable_cors = enable_cors
        self._model_names = model_names
        self._extra = dict(extra_routes or {})
        self._metrics = metrics
        self._max_body_bytes = max_body_bytes
        self._body_timeout_s = body_timeout_s
        self._workers = workers
        self._internal_log = RateLimitedLog(log)
        #: ``time.monotonic()`` of the latest request (for a graceful stop: see ``Server._drain``)
        self.last_request_at = float("-inf")
        self._routes: dict[tuple[str, str], routes.Route] = {}
        self._date = HttpDate()
        #: a refusal's status line and headers up to ``Date``, and its body, by error message
        self._refusal_heads: dict[str, tuple[bytes, bytes]] = {}

    @property
    def extra_paths(self) -> tuple[str, ...]:
        """The paths served beside TF Serving's API (probes, the Prometheus page)."""
        return tuple(self._extra)

    def web_server(self) -> web.Server:
        """aiohttp's low-level server around :meth:`handle`; serve it with ``auto_decompress=False``
        (see ``rest_decode.request_body``).

        No ``web.Application``: its router, middleware chain and signals cost every request and do
        nothing here, since :meth:`handle` routes by TF Serving's own rules and maps errors itself.
        """
        loop = asyncio.get_running_loop()

        def make_request(
            message: RawRequestMessage,
            payload: StreamReader,
            protocol: RequestHandler,
            writer: AbstractStreamWriter,
            task: asyncio.Task[None],
        ) -> web.BaseRequest:
            return _Request(message, payload, protocol, writer, task, loop)

        # handler_cancellation: a client that disconnects cancels its request, wherever it waits (body
        # read, decoder, batch queue), so no model time is spent on an answer nobody will read
        return web.Server(self.handle, request_factory=make_request, handler_cancellation=True)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Every REST request: route, answer, and turn every ``MlsrvError`` into its JSON error here."""
        arrived, started = (time.time(), time.perf_counter()) if self._access_log is not None else (0.0, 0.0)
        try:
            response = await self._dispatch(request)
        except MlsrvError as error:
            status, headers, body = error_answer(error, authorization_sent="Authorization" in request.headers)
            response = web.Response(body=body, status=status, content_type=JSON)
            response.headers.update(headers)
        except web.HTTPException:
            raise
        except ConnectionError as error:  # the client went away: nothing to answer, nothing wrong here
            log.debug("REST client disconnected during %s %s: %s", request.method, request.path, one_line(error))
            raise
        except Exception as error:
            self._internal_log.error(
                "internal error serving %s %s: %s", request.method, request.path, one_line(error), exc_info=error
            )
            status, _, body = error_answer(InternalError("Internal error"), authorization_sent=False)
            response = web.Response(body=body, status=status, content_type=JSON)
        if not request.content.is_eof() or getattr(request.protocol, "health_only", False):
            response.force_close()  # the rest of an unread body must not be parsed as the next request
        if request.get(BODY_SIZE, 0) >= TRIM_AFTER_BODY_BYTES:  # also after a body refused at the cap
            asyncio.get_running_loop().run_in_executor(None, trim_heap)
        if self._enable_cors:
            response.headers.update(_CORS_HEADERS)
        if self._access_log is not None:
            self._access_log.record(self._access_entry(request, response, arrived, time.perf_counter() - started))
        return response

    def _access_entry(
        self, request: web.BaseRequest, response: web.StreamResponse, arrived: float, latency_s: float
    ) -> AccessEntry:
        path = raw_path(request)
        spec = request.get(SERVED_SPEC)
        if spec is None and routes.is_api_path(path):
            try:
                spec = self._route(request.method, path).spec
            except MlsrvError:  # a path outside TF Serving's API: no model to name
                spec = None
        version = "" if spec is None else str(spec.version) if spec.version is not None else spec.label or ""
        body = response.body if isinstance(response, (web.Response, JsonAnswer)) else None
        transport = request.transport
        return AccessEntry(
            arrived=arrived,
            protocol="rest",
            peer=peer_text(transport.get_extra_info("peername") if transport is not None else None),
            method=request.method,
            path=path,
            model="" if spec is None else spec.name,
            version=version,
            signature="" if spec is None else spec.signature,
            status=str(response.status),
            latency_s=latency_s,
            bytes_in=request.get(BODY_SIZE, 0),
            bytes_out=len(body) if isinstance(body, (bytes, bytearray)) else 0,
        )

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        self.last_request_at = time.monotonic()
        path = raw_path(request)
        if self._auth is not None and not self._auth.rest_is_open(path):  # before a byte of the body is read
            self._auth.check(request.headers.get("Authorization"))
        extra = self._extra.get(path)
        if extra is not None:
            return await extra(request)
        if getattr(request.protocol, "health_only", False):  # a connection past --rest_max_connections
            raise Overloaded("too many open connections; retry")
        if not routes.is_api_path(path):
            return web.Response(body=_NOT_FOUND_PAGE, status=404, headers={"Content-Type": "text/html"})
        if request.method == "OPTIONS":  # CORS preflight on /v1: answered before the API handler
            origin = request.headers.get("Origin", "")
            ok = origin.startswith(("http://", "https://"))
            return web.Response(status=200 if ok else 400, content_type=JSON)
        if self._metrics is None:
            return await self._api(request, self._route(request.method, path))
        return await self._counted(request, path, self._metrics)

    def _route(self, method: str, path: str) -> routes.Route:
        """``routes.parse``, remembered: clients send the same few paths again and again.

        Only successful parses of short paths are kept, and the table is emptied when full, so
        unique paths from a client cost it nothing but their parse.
        """
        key = (method, path)
        route = self._routes.get(key)
        if route is None:
            route = routes.parse(method, path)
            if len(path) <= ROUTE_CACHE_PATH_CHARS:
                if len(self._routes) >= ROUTE_CACHE_ENTRIES:
                    self._routes.clear()
                self._routes[key] = route
        return route

    def refusal_at_door(self, message: RawRequestMessage) -> bytes | None:
        """The whole HTTP answer for an inference request that admission turns away, decided from its
        parsed head alone; None to serve it as usual (``ConnectionGuard.door``).

        The connection sends it without aiohttp making a request, a task or a response of it, so a
        refusal costs a fraction of what the handler spends on one (issue #18: past capacity, the
        loop's time goes to the requests it can finish). It makes the handler's checks (token, route,
        declared size, admission; a refusal's token before it is counted), and anything it does not take on
        (an unauthenticated or malformed request, a body over the cap) is left to the handler, so the
        answer is the one the handler would give, byte for byte but the ``Date``.
        """
        admission = self._admission
        if admission is None or message.version != HttpVersion11:
            return None
        path = message.path.partition("?")[0]
        if path in self._extra or not routes.is_api_path(path):
            return None
        try:
            route = self._route("POST", path)
        except MlsrvError:
            return None
        api = _API_LABEL.get(route.verb)
        declared = message.headers.get("Content-Length", "0")
        if api is None or not declared.isdigit() or int(declared) > self._max_body_bytes:
            return None
        size, model = int(declared), route.spec.name
        # an admitted request (the common case) is not refused here: its token is checked once, by
        # the handler; a refusal checks the token first, as the handler would
        if admission.refusal(size, model, count=False) is None:
            return None
        if self._auth is not None and not self._auth.rest_is_open(path):
            try:
                self._auth.check(message.headers.get("Authorization"))
            except MlsrvError:
                return None
        refused = admission.refusal(size, model)
        if refused is None:
            return None
        self.last_request_at = time.monotonic()
        if self._metrics is not None:
            self._metrics.record_request(route.spec.name, refused.code.name, api, "REST", 0)
        head = self._refusal_heads.get(refused.message)
        if head is None:  # a few distinct messages (the bound in force is in the text): encoded once each
            if len(self._refusal_heads) >= 64:
                self._refusal_heads.clear()
            status, headers, body = error_answer(refused, authorization_sent=False)
            head = self._refusal_heads[refused.message] = (head_until_date(status, headers, len(body)), body)
        close = b"Connection: close\r\n" if message.should_close else b""
        return b"%s%sDate: %s\r\n\r\n%s" % (head[0], close, self._date.now(), head[1])

    def answer_at_connection(
        self, message: RawRequestMessage, payload: StreamReader
    ) -> Coroutine[None, None, bytes] | None:
        """The whole HTTP answer to an inference request (predict, classify, regress) whose body came
        with its head, as a coroutine the connection runs itself; None to let aiohttp serve the
        request (``ConnectionGuard.direct``).

        That is nearly every request, and for it aiohttp's request object, handler task, connection
        task wake-ups and response object cost more of the loop than mlsrv's own work (issue #11;
        docs/benchmarks.md). The answer is :meth:`handle`'s: the same checks in the same order
        (route, token, declared size, admission, the caller's deadline), the same inference code
        (:meth:`_inference`), the same metrics and the same error table (:func:`error_answer`);
        ``tests/server/test_rest_direct.py`` compares the bytes of both paths. Anything else is left
        to aiohttp: another method or path, a body still arriving or compressed, HTTP/1.0 or
        ``Connection: close``, a body over the cap or large enough to trim the heap after, a
        missing or wrong token (the handler answers 401 with its challenge).
        """
        if message.version != HttpVersion11 or message.should_close or message.method != "POST":
            return None
        if message.chunked or not payload.is_eof():
            return None
        path = message.path.partition("?")[0]
        if path in self._extra or not routes.is_api_path(path):
            return None
        try:
            route = self._route("POST", path)
        except MlsrvError:
            return None
        headers = message.headers
        size = payload.total_bytes
        api = _API_LABEL.get(route.verb)
        if api is None or "Content-Encoding" in headers:
            return None
        if size > self._max_body_bytes or size >= TRIM_AFTER_BODY_BYTES:
            return None
        if self._auth is not None and not self._auth.rest_is_open(path):
            try:
                self._auth.check(headers.get("Authorization"))
            except MlsrvError:
                return None
        self.last_request_at = time.monotonic()
        return self._answer_inference(route, api, headers, payload)

    async def _answer_inference(
        self, route: routes.Route, api: str, headers: Mapping[str, str], payload: StreamReader
    ) -> bytes:
        """:meth:`answer_at_connection`'s coroutine: the answer, its head formatted as aiohttp formats it."""
        started = time.perf_counter_ns()
        name = route.spec.name
        metrics = self._metrics
        # read here, in the connection's task, not in the parser's callback: taking bytes out of the
        # payload may resume the connection's reading, which parses again (and would re-enter the parser)
        raw = payload.read_nowait(-1)
        del payload
        try:
            work = self._inference(route, headers, len(raw), raw)
            del raw  # the body does not live through the model (see _infer)
            body, _ = await work
        except MlsrvError as error:
            return self._failed_answer(error, name, api, headers)
        except Exception as error:  # noqa: BLE001 - answered 500 and logged, as handle() does
            self._internal_log.error(
                "internal error serving a %s call for %s: %s", api, name, one_line(error), exc_info=error
            )
            return self._failed_answer(InternalError("Internal error"), name, api, headers)
        if metrics is not None:
            metrics.record_request(name, "OK", api, "REST", (time.perf_counter_ns() - started) // 1000)
        return ok_answer(body, self._date)

    def _failed_answer(self, error: MlsrvError, name: str, api: str, headers: Mapping[str, str]) -> bytes:
        """A direct call's whole answer to ``error``, counted as the handler counts it."""
        if self._metrics is not None:
            self._metrics.record_request(name, error.code.name, api, "REST", 0)
        status, extra, body = error_answer(error, authorization_sent="Authorization" in headers)
        return head_until_date(status, extra, len(body)) + b"Date: %s\r\n\r\n" % self._date.now() + body

    async def _counted(self, request: web.BaseRequest, path: str, metrics: Metrics) -> web.StreamResponse:
        """:meth:`_api` plus ``request_count`` / ``request_latency``, as TF's REST dispatcher records them."""
        started = time.perf_counter_ns()
        name = api = ""
        try:
            route = self._route(request.method, path)
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

    async def _api(self, request: web.BaseRequest, route: routes.Route) -> web.StreamResponse:
        if route.verb is routes.Verb.LIST:
            names = sorted(self._model_names())
            return self._json(
                json_codec.encode_model_list(
                    [self._dataplane.status_or_empty(name) for name in names],
                    {name: self._dataplane.labels(name) for name in names},
                )
            )
        if route.verb is routes.Verb.STATUS:
            return self._json(json_codec.encode_status(self._dataplane.status(route.spec)))
        if route.verb is routes.Verb.METADATA:
            return self._json(json_codec.encode_metadata(self._dataplane.metadata(route.spec)))
        # the client's mistake (413) comes before the server's load (503)
        length = refuse_declared_oversize(request, self._max_body_bytes)
        body, served = await self._inference(route, request.headers, length, request)
        request[SERVED_SPEC] = served
        return self._json(body)

    async def _inference(
        self, route: routes.Route, headers: Mapping[str, str], length: int, body: bytes | web.BaseRequest
    ) -> tuple[bytes, ModelSpec]:
        """An inference call from its route on, for both paths (aiohttp's handler and the connection's
        :meth:`answer_at_connection`): admission before a byte of the body is read, then :meth:`_infer`.
        The answer's body, and the spec that answered (resolved version, signature)."""
        admitted = nullcontext() if self._admission is None else self._admission.admit(length, route.spec.name)
        with admitted as ticket:
            work = self._infer(route, headers, body, ticket)
            del body
            return await work

    async def _infer(
        self, route: routes.Route, headers: Mapping[str, str], body: bytes | web.BaseRequest, ticket: Ticket | None
    ) -> tuple[bytes, ModelSpec]:
        """``body`` is the body itself when it came with the head, else the request to read it from."""
        loop = asyncio.get_running_loop()
        asked = caller_timeout_s(headers)  # the caller's own deadline counts from arrival
        caller_deadline = None if asked is None else loop.time() + asked
        if isinstance(body, bytes):
            raw = body
        else:
            raw = await read_body(body, self._max_body_bytes, self._body_timeout_s)
            if ticket is not None and len(raw) > ticket.size:  # a chunked body: charged as it turned out
                ticket.grow(len(raw) - ticket.size)
        del body
        encoding = headers.get("Content-Encoding", "")
        deadline = loop.time() + self._timeout_s if self._timeout_s > 0 else None
        if caller_deadline is not None:
            deadline = caller_deadline if deadline is None else min(deadline, caller_deadline)
        if route.verb is routes.Verb.PREDICT:
            answer = self._predict(route.spec, raw, encoding, deadline)
        else:
            answer = self._examples(route, raw, encoding, deadline)
        del raw  # the coroutine drops its own reference once decoded: the body does not live through the model
        return await answer

    async def _predict(
        self, spec: ModelSpec, raw: bytes, encoding: str, deadline: float | None
    ) -> tuple[bytes, ModelSpec]:
        found = self._dataplane.signatures_or_error(spec)
        target = found if isinstance(found, MlsrvError) else rest_decode.RestTarget(found)
        request: PredictRequest
        if self._decodes_here(raw, encoding):  # the common case, without a coroutine
            request = rest_decode.predict_request(raw, encoding, spec, target)
        else:
            request = await self._decode(rest_decode.predict_request, raw, encoding, spec, target)
        del raw
        response = await self._dataplane.predict(request, deadline)
        fmt = request.format
        del request
        outputs = response.outputs
        if sum(value.size for value in outputs.values()) <= OFF_LOOP_OUTPUT_ELEMENTS:
            return rest_decode.predict_response(outputs, fmt), response.spec
        return await self._encode(True, rest_decode.predict_response, outputs, fmt), response.spec

    async def _examples(
        self, route: routes.Route, raw: bytes, encoding: str, deadline: float | None
    ) -> tuple[bytes, ModelSpec]:
        method = InferenceMethod.CLASSIFY if route.verb is routes.Verb.CLASSIFY else InferenceMethod.REGRESS
        request: ExamplesRequest = await self._decode(rest_decode.examples_request, raw, encoding, route.spec, method)
        del raw
        large = len(request.examples) > OFF_LOOP_OUTPUT_ELEMENTS
        if method is InferenceMethod.CLASSIFY:
            classified = await self._dataplane.classify(request, deadline)
            return await self._encode(large, json_codec.encode_classify_response, classified), classified.spec
        regressed = await self._dataplane.regress(request, deadline)
        return await self._encode(large, json_codec.encode_regress_response, regressed), regressed.spec

    async def _encode(self, large: bool, encode: Callable[..., bytes], *args: object) -> bytes:
        """``encode(*args)``: in a worker process for a large answer, here otherwise."""
        if large and self._workers is not None:
            return await self._workers.run(encode, *args)
        return encode(*args)

    def _decodes_here(self, raw: bytes, encoding: str) -> bool:
        """Whether :meth:`_decode` would decode this body on the loop without trying anything first."""
        return self._workers is None or (len(raw) <= ON_LOOP_EXACT_BYTES and "gzip" not in encoding)

    async def _decode(self, decode: Callable[..., T], raw: bytes, encoding: str, *args: object) -> T:
        """``decode(raw, encoding, *args)`` here for a small body, in a worker process for a large one.

        A gzipped body always goes to the worker: 256 KiB can inflate to TF's 100 MiB cap. A body
        orjson refuses (malformed, or NaN/Infinity) needs the pure-Python exact parser: above
        :data:`ON_LOOP_EXACT_BYTES` that parse moves to the worker too (a malformed 256 KiB body took
        132 ms of the loop).
        """
        if self._workers is None:
            return decode(raw, encoding, *args)
        if len(raw) > OFF_LOOP_BODY_BYTES or "gzip" in encoding:
            return await self._workers.run(decode, raw, encoding, *args)
        if len(raw) <= ON_LOOP_EXACT_BYTES:
            return decode(raw, encoding, *args)
        try:
            return decode(raw, encoding, *args, exact=False)
        except ExactParseNeeded:
            return await self._workers.run(decode, raw, encoding, *args)

    def _json(self, body: bytes) -> web.StreamResponse:
        return JsonAnswer(body, self._date)


def error_answer(error: MlsrvError, *, authorization_sent: bool) -> tuple[int, dict[str, str], bytes]:
    """The REST answer to an error: status, headers beside ``Content-Type: application/json``, body.

    The one place an error becomes an answer, for aiohttp's handler and the connection's direct path
    alike. REST carries the whole message: TF cuts messages at 1024 characters only for gRPC.
    """
    body = b"" if error.empty_body else json_codec.encode_error(error.message)
    headers: dict[str, str] = {}
    if error.http_status == 503:  # overloaded or shutting down: when to come back
        headers["Retry-After"] = str(RETRY_AFTER_S)
    elif isinstance(error, Unauthenticated):  # RFC 6750: the scheme to use, and why it failed
        headers["WWW-Authenticate"] = CHALLENGE + (', error="invalid_token"' if authorization_sent else "")
    return error.http_status, headers, body


#: Headers that carry the caller's deadline in milliseconds: mlsrv's own, and the one Envoy (and so
#: Istio) adds to every request it forwards with a route timeout.
TIMEOUT_HEADERS: Final = ("X-Request-Timeout-Ms", "x-envoy-expected-rq-timeout-ms")


def caller_timeout_s(headers: Mapping[str, str]) -> float | None:
    """The shortest deadline the caller sent in :data:`TIMEOUT_HEADERS`, in seconds; None without one.

    It bounds the request like ``--rest_api_timeout_in_ms`` (504 once it passes; a request whose
    deadline passed while it waited never runs). A value that is not a positive whole number of
    milliseconds is the client's mistake: 400.
    """
    shortest: float | None = None
    for header in TIMEOUT_HEADERS:
        text = headers.get(header)
        if text is None:
            continue
        digits = text.strip()
        if not (digits.isascii() and digits.isdigit()) or len(digits) > 12 or int(digits) == 0:
            raise InvalidArgument(f"{header} must be a positive whole number of milliseconds, got {text[:40]!r}")
        seconds = int(digits) / 1000
        shortest = seconds if shortest is None else min(shortest, seconds)
    return shortest


def raw_path(request: web.BaseRequest) -> str:
    """The path as sent, still percent-encoded, without the query (which TF Serving ignores).

    TF matches its URL regexes on the encoded path and decodes only the captured model name and
    label, so ``%2F`` or ``%3A`` inside a name never split the path.
    """
    return request.raw_path.partition("?")[0]


async def read_body(request: web.BaseRequest, max_bytes: int, timeout_s: float) -> bytes:
    """The whole body, within ``max_bytes`` and ``timeout_s``.

    A ``Content-Length`` over the cap is refused before a byte is read; a chunked body is counted as
    it arrives. A body already received completely is returned at once, without a timer. The read
    loop is ours, not ``request.read()``: an exception raised inside that method keeps its frame,
    and with it the partial body (up to the cap), alive in a reference cycle until a full
    collection; here the chunks are dropped before anything is raised.
    """
    refuse_declared_oversize(request, max_bytes)
    stream = request.content
    chunks: list[bytes] = []
    size = 0
    try:
        if stream.is_eof():  # all here already (the common case): no timer
            size = await _collect(stream, chunks, max_bytes)
        else:
            async with _timeout(timeout_s):
                size = await _collect(stream, chunks, max_bytes)
    except asyncio.TimeoutError:
        chunks.clear()
        raise RequestTimeout(f"The request body was not received within {timeout_s:g} seconds") from None
    except HttpProcessingError as error:
        chunks.clear()
        raise InvalidArgument(f"Malformed request body: {error.message}") from None
    request[BODY_SIZE] = size
    if size > max_bytes:
        chunks.clear()
        raise RequestTooLarge(_too_large(None, max_bytes))
    return b"".join(chunks)


def refuse_declared_oversize(request: web.BaseRequest, max_bytes: int) -> int:
    """The declared ``Content-Length`` (0 when none); ``RequestTooLarge`` when it is over the cap."""
    length = request.content_length or 0
    if length > max_bytes:
        raise RequestTooLarge(_too_large(length, max_bytes))
    return length


async def _collect(stream: StreamReader, chunks: list[bytes], max_bytes: int) -> int:
    """Append the body's chunks to ``chunks``; the bytes seen (stops once past ``max_bytes``)."""
    size = 0
    while chunk := await stream.readany():
        size += len(chunk)
        if size > max_bytes:
            break
        chunks.append(chunk)
    return size


def _timeout(seconds: float) -> AbstractAsyncContextManager[object]:
    """``asyncio.timeout`` (3.11+); on 3.10, aiohttp's equivalent."""
    timeout = getattr(asyncio, "timeout", None)
    if timeout is not None:
        return cast(AbstractAsyncContextManager[object], timeout(seconds))
    from aiohttp.helpers import ceil_timeout  # pragma: no cover - Python 3.10

    return cast(AbstractAsyncContextManager[object], ceil_timeout(seconds, ceil_threshold=0))  # pragma: no cover


def _too_large(length: int | None, max_bytes: int) -> str:
    size = "is" if length is None else f"of {length} bytes is"
    return f"The request body {size} larger than the limit of {max_bytes} bytes (--rest_max_body_bytes)"


#: Answers up to this size are formatted with their head in one bytes object by ``JsonAnswer``; larger
#: ones go through aiohttp's writer, which sends the body without copying it.
ONE_WRITE_ANSWER_BYTES: Final = 64 << 10


def head_until_date(status: int, headers: Mapping[str, str], length: int) -> bytes:
    """A JSON answer's status line and headers up to ``Date``, in aiohttp's order (``Content-Type``,
    ``headers``, ``Content-Length``); the caller adds ``Date`` (and ``Connection: close`` before it)."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n" % (
        status, REASON_PHRASES.get(status, "").encode(), extra.encode("latin-1"), length
    )


def ok_answer(body: bytes, date: HttpDate) -> bytes:
    """A whole ``200 application/json`` HTTP/1.1 answer: the bytes aiohttp sends for it (no ``Server``)."""
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\nDate: %s\r\n\r\n%s" % (
        len(body), date.now(), body
    )


class JsonAnswer(web.StreamResponse):
    """A ``200 application/json`` answer, written in one transport write when nothing is unusual.

    That is the answer to nearly every request (an HTTP/1.1 keep-alive request, no header added, a
    small body): its status line and headers are the bytes aiohttp would send (``Content-Type``,
    ``Content-Length``, ``Date``; no ``Server``, see ``_Request``), formatted with one bytes
    operation instead of aiohttp's header map, payload writer and buffers (issue #11; A/B in
    docs/benchmarks.md: 2% less server CPU per request). Anything else (HTTP/1.0, ``Connection:
    close``, ``force_close()``, a header added such as CORS, a large body) takes aiohttp's own
    path. Like aiohttp's, it waits while the transport's buffer is over its high-water mark (a
    client that pipelines requests without reading the answers holds its own request loop, not
    the server's memory).
    """

    def __init__(self, body: bytes, date: HttpDate) -> None:
        super().__init__()
        self.body = body
        self._date = date

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        transport = request.transport
        if (
            self._keep_alive is None
            and not self._headers
            and len(self.body) <= ONE_WRITE_ANSWER_BYTES
            and request.version == HttpVersion11
            and request.keep_alive
            and request.method != "HEAD"
            and transport is not None
            and not transport.is_closing()
        ):
            transport.write(ok_answer(self.body, self._date))
            self._keep_alive = True
            self._eof_sent = True
            self._body_length = len(self.body)
            protocol = request.protocol
            if protocol.writing_paused:  # the client is not reading its answers: wait until it does, as
                await protocol._drain_helper()  # aiohttp's write_eof does, so pipelined answers cannot pile up
            return None
        self.content_type = JSON
        self.content_length = len(self.body)
        return await super().prepare(request)

    async def write_eof(self, data: bytes = b"") -> None:
        if not self._eof_sent:
            await super().write_eof(self.body)


class _Request(web.BaseRequest):
    """aiohttp's request, whose one hook runs after the response headers are set and before they are sent."""

    async def _prepare_hook(self, response: web.StreamResponse) -> None:
        """libevent sends no ``Server`` header; aiohttp's would name our Python and aiohttp versions."""
        response.headers.pop("Server", None)


def prometheus_handler(page: Callable[[], Awaitable[str]]) -> Handler:
    """The Prometheus page for ``extra_routes``: any method, ``Content-Type: text/plain`` exactly."""

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(body=(await page()).encode(), headers={"Content-Type": "text/plain"})

    return handle


def health_handlers(
    not_ready: Callable[[], list[str]],
    workers_not_ready: Callable[[], Awaitable[list[str]]] | None = None,
    draining: Callable[[], bool] = lambda: False,
    problems: Callable[[], Mapping[str, str]] = dict,
) -> dict[str, Handler]:
    """mlsrv extras for probes, outside TF Serving's ``/v1`` namespace so no path can collide.

    ``/healthz`` (liveness): 200 while the process serves. ``/readyz`` (readiness): 200 when every
    configured model has an AVAILABLE version, else 503 listing the models that do not (and, under
    ``problems``, why, when it is known: a base path that does not exist); with
    ``--workers``, also only when every sibling worker is ready (503 lists those that are not); and
    503 ``draining`` from the moment the server is told to stop, while it still serves, so a load
    balancer that polls it takes the server out before it stops taking requests.
    """

    async def live(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(body=b'{"status": "ok"}', content_type=JSON)

    async def readiness(request: web.BaseRequest) -> web.StreamResponse:
        if draining():
            return web.Response(body=b'{"status": "draining"}', status=503, content_type=JSON)
        waiting = not_ready()
        workers = await workers_not_ready() if workers_not_ready is not None else []
        if waiting or workers:
            answer: dict[str, object] = {"status": "not ready", "models_not_available": waiting}
            known = problems()
            if any(name in known for name in waiting):
                answer["problems"] = {name: known[name] for name in waiting if name in known}
            if workers:
                answer["workers_not_ready"] = workers
            return web.Response(body=json.dumps(answer).encode(), status=503, content_type=JSON)
        return web.Response(body=b'{"status": "ready"}', content_type=JSON)

    return {"/healthz": live, "/readyz": readiness}
