"""``RestTransport``: TF Serving's REST API over a lean HTTP/1.1 pool (``http1``), with the shared codecs.

REST has no output filter (TF Serving's API has none), so ``PredictRequest.output_filter`` is applied
on the client after the response arrives. Error bodies ``{"error": msg}`` plus the HTTP status map back
to the server's exception class; a refused connection or a non-JSON answer is ``TransportError``.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Sequence
from dataclasses import replace
from typing import Final
from urllib.parse import urlsplit

from mlsrv.client.http1 import Http1Pool
from mlsrv.client.transport_base import Call, CallResult, ExamplesCall, Op, check_output_filter
from mlsrv.errors import (
    DeadlineExceeded,
    MlsrvError,
    TransportError,
    UsageError,
    code_for_http_status,
    error_for_code,
    http_status_is_ambiguous,
)
from mlsrv.protocol import json_codec, routes
from mlsrv.protocol.types import PredictRequest, PredictResponse

_REST_VERBS: Final = {
    Op.PREDICT: routes.Verb.PREDICT,
    Op.CLASSIFY: routes.Verb.CLASSIFY,
    Op.REGRESS: routes.Verb.REGRESS,
    Op.METADATA: routes.Verb.METADATA,
    Op.STATUS: routes.Verb.STATUS,
}


def _rest_body(call: Call) -> bytes:
    req = call.request
    if isinstance(req, PredictRequest):
        return json_codec.encode_predict_request(req.inputs, req.format, req.spec.signature)
    if isinstance(req, ExamplesCall):
        # NOTE: stdlib json writes NaN/Infinity as the bare tokens TF Serving reads in features.
        return json.dumps(req.document()).encode("utf-8")
    return b""


class RestTransport:
    """TF Serving's REST API over keep-alive HTTP/1.1 connections (opened on first use, in the running loop).

    ``base_url`` is ``http(s)://host:port``. ``ssl_context`` is used for https URLs; ``token`` goes in
    every request's ``Authorization: Bearer`` header. Loop-affine: use it from one event loop and close
    it with :meth:`aclose`.
    """

    name: Final = "rest"

    def __init__(self, base_url: str, *, ssl_context: ssl.SSLContext | None = None, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        try:  # Endpoint.parse validates CLI targets; this guards direct callers (urllib raises ValueError)
            parsed = urlsplit(self.base_url)
            port = parsed.port
        except ValueError as error:
            raise UsageError(f"invalid URL {base_url!r}: {error}") from None
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise UsageError(f"not an http(s) URL: {base_url}")
        if parsed.scheme == "https" and ssl_context is None:
            ssl_context = ssl.create_default_context()
        self._pool = Http1Pool(
            parsed.hostname,
            port or (443 if parsed.scheme == "https" else 80),
            ssl_context=ssl_context if parsed.scheme == "https" else None,
            label=self.base_url,
            headers={"Authorization": f"Bearer {token}"} if token else None,
        )
        self._prefix = parsed.path.rstrip("/")

    def prepare(self, call: Call) -> Call:
        return replace(call, payload=_rest_body(call), encoded_by=self.name)

    async def send(self, call: Call) -> CallResult:
        path = self._prefix + routes.build(_REST_VERBS[call.op], call.spec)
        body = call.payload if call.encoded_by == self.name and call.payload is not None else _rest_body(call)
        method = "GET" if call.op in (Op.METADATA, Op.STATUS) else "POST"
        try:
            response = await asyncio.wait_for(
                self._pool.request(method, path, body if method == "POST" else None), call.timeout_s
            )
        except asyncio.TimeoutError:
            raise DeadlineExceeded(f"no response from {self.base_url} within {call.timeout_s:g} s") from None
        except OSError as exc:
            raise TransportError(f"{method} {self.base_url}{path} failed: {exc.strerror or exc}") from None
        if response.status != 200:
            raise _rest_error(response.status, response.body, response.headers.get("content-type", ""),
                              self.base_url + path)
        return _rest_result(call, response.body)

    async def aclose(self) -> None:
        await self._pool.aclose()


def _rest_error(status: int, body: bytes, content_type: str, url: str) -> MlsrvError:
    """HTTP status + ``{"error": msg}`` -> the server's exception class (TransportError if not JSON)."""
    if body.strip() and "json" not in content_type:
        return TransportError(f"HTTP {status} from {url} is not a model server response ({content_type or 'no type'})")
    message = json_codec.decode_error(body) or f"HTTP {status} with an empty body"
    error = error_for_code(code_for_http_status(status), message)
    if http_status_is_ambiguous(status):
        error.received_http_status = status
    return error


def _rest_result(call: Call, body: bytes) -> CallResult:
    req = call.request
    if isinstance(req, PredictRequest):
        outputs, _ = json_codec.decode_predict_response(body)
        return _cut_filter(PredictResponse(req.spec, outputs), req.output_filter)
    if call.op is Op.CLASSIFY:
        return json_codec.decode_classify_response(body, call.spec)
    if call.op is Op.REGRESS:
        return json_codec.decode_regress_response(body, call.spec)
    if call.op is Op.METADATA:
        return json_codec.decode_metadata(body)
    return json_codec.decode_status(body, call.spec.name)


def _cut_filter(response: PredictResponse, output_filter: Sequence[str]) -> PredictResponse:
    """REST has no output_filter: keep only the requested outputs."""
    outputs = response.outputs
    if not output_filter or set(outputs) == {""}:  # a single unnamed output: the caller names it
        return response
    check_output_filter(output_filter, outputs)
    return replace(response, outputs={alias: outputs[alias] for alias in output_filter})
