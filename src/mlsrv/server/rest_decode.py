"""A REST body to a request, and outputs to a response body, as pure functions (no aiohttp, no TF).

The steps follow TF Serving's REST handler: the body as its transport hands it over (gzip rules),
the JSON document (errors in it come first), the signature name, then the model (an unknown model
is reported only once the JSON is known to be good), then the inputs. Being pure, the same
functions run on the event loop for small bodies and in a worker process for large ones
(``worker_pool``), with identical results and error texts.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import replace
from typing import Final

import numpy as np

from mlsrv.errors import InvalidArgument, MlsrvError
from mlsrv.protocol import json_codec
from mlsrv.protocol.json_dense import decode_dense
from mlsrv.protocol.types import (
    ExamplesRequest,
    InferenceMethod,
    ModelSpec,
    PredictRequest,
    RequestFormat,
    SignatureInfo,
)

#: TF Serving's cap on a gunzipped request body.
MAX_GUNZIPPED_BYTES: Final = 100 << 20
#: Bodies from this size try ``json_dense`` first: below it, its fixed cost (~8 µs) loses to orjson
#: (measured: 22 B 10.8 vs 8.2 µs, 1.3 KB 12.1 vs 10.3 µs, 16 KB 40 vs 44 µs, 3 MB 11 vs 25 ms).
DENSE_MIN_BYTES: Final = 8 << 10


class RestTarget:
    """The signatures of the version a REST request resolved to.

    Held as the servable's own mapping on the loop (no copy per request); pickled as plain dicts
    when the request is decoded in a worker process.
    """

    __slots__ = ("signatures",)

    def __init__(self, signatures: Mapping[str, SignatureInfo]) -> None:
        self.signatures = signatures

    def __reduce__(self) -> tuple[type[RestTarget], tuple[dict[str, SignatureInfo]]]:
        plain = {
            name: replace(sig, inputs=dict(sig.inputs), outputs=dict(sig.outputs), defaults=dict(sig.defaults))
            for name, sig in self.signatures.items()
        }
        return RestTarget, (plain,)


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


def predict_request(
    raw: bytes, content_encoding: str, spec: ModelSpec, target: RestTarget | MlsrvError, *, exact: bool = True
) -> PredictRequest:
    """Parse and decode in one step, so the parsed document dies before the model runs.

    A 1x224x224x3 image parses into ~50k lists; kept alive across the model call (one per request
    in flight), they would pile up in the cyclic GC's young generation. Only the numpy inputs
    outlive this call. ``target`` is the resolved version's signatures, or the error resolving it.
    ``exact=False`` raises ``ExactParseNeeded`` for a body only the slow exact parser can read.
    A plainly dense body of one float tensor takes the C path (``json_dense``) and never builds
    the document at all.
    """
    body = request_body(raw, content_encoding)
    if len(body) >= DENSE_MIN_BYTES and not isinstance(target, MlsrvError):
        dense = decode_dense(body, target.signatures)  # the C path for one dense float tensor
        if dense is not None:
            name, inputs, fmt = dense
            return PredictRequest(_with_signature(spec, name), inputs, (), fmt)
    doc = json_codec.parse_body(body, exact=exact)
    del body
    spec = _with_signature(spec, json_codec.signature_name_of(doc))
    if isinstance(target, MlsrvError):
        raise target
    name = spec.signature_or_default
    signature = target.signatures.get(name)
    if signature is None:
        raise InvalidArgument(f'Serving signature name: "{name}" not found in signature def')
    inputs, fmt = json_codec.decode_predict_inputs(doc, signature)
    return PredictRequest(spec, inputs, (), fmt)


def _with_signature(spec: ModelSpec, signature: str) -> ModelSpec:
    """``spec`` naming the signature the body asked for (the same object when it already does: the URL
    names none, and neither do most bodies; a frozen dataclass costs ~1.5 µs to build)."""
    return spec if signature == spec.signature else ModelSpec(spec.name, spec.version, spec.label, signature)


def examples_request(
    raw: bytes, content_encoding: str, spec: ModelSpec, method: InferenceMethod, *, exact: bool = True
) -> ExamplesRequest:
    """``:classify`` / ``:regress``: like :func:`predict_request`, the document does not outlive decoding."""
    doc = json_codec.parse_body(request_body(raw, content_encoding), exact=exact)
    signature_name = json_codec.signature_name_of(doc)
    examples = json_codec.decode_examples_request(doc, method)
    return ExamplesRequest(_with_signature(spec, signature_name), method, examples)


def predict_response(outputs: Mapping[str, np.ndarray], fmt: RequestFormat) -> bytes:
    return json_codec.encode_predict_response(outputs, fmt)
