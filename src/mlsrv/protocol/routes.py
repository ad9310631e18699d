"""TF Serving's REST paths as data: parse a request path into a :class:`Route`, or build one.

The regexes are TF Serving's (``http_rest_api_handler.cc``), matched case-insensitively over the
whole path; names and labels are percent-decoded afterwards, as TF Serving does. Shared by the
server (parsing) and the client (building).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, unquote_to_bytes

from mlsrv.errors import InvalidArgument
from mlsrv.protocol.types import ModelSpec

_PREDICT_RE: Final = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE,
)
_STATUS_RE: Final = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)
_API_PREFIX_RE: Final = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
_INT64_MAX: Final = 2**63 - 1


class Verb(enum.Enum):
    PREDICT = "predict"
    CLASSIFY = "classify"
    REGRESS = "regress"
    STATUS = "status"
    METADATA = "metadata"
    LIST = "list"  # mlsrv extra: GET /v1/models


@dataclass(frozen=True, slots=True)
class Route:
    verb: Verb
    spec: ModelSpec


def is_api_path(path: str) -> bool:
    """Whether TF Serving would hand this path to its REST handler (otherwise: a plain 404 page)."""
    return _API_PREFIX_RE.fullmatch(path) is not None


def parse(method: str, path: str) -> Route:
    """Route a REST request; raises ``InvalidArgument`` with TF Serving's messages.

    ``Malformed request: <METHOD> <path>`` for anything that does not match, and the version-overflow
    error with an empty body (a TF Serving quirk kept for byte compatibility).
    """
    if method == "POST":
        match = _PREDICT_RE.fullmatch(path)
        if match is None:
            raise _malformed(method, path)
        name, version, label, verb = match.groups()
        if verb not in ("predict", "classify", "regress"):  # TF compares case-sensitively
            raise _malformed(method, path)
        return Route(Verb(verb), _spec(name, version, label))
    if method == "GET":
        match = _STATUS_RE.fullmatch(path)
        if match is None:
            raise _malformed(method, path)
        name, version, label, sub = match.groups()
        if name is None:
            if version is None and label is None and sub is None:
                return Route(Verb.LIST, ModelSpec(""))
            raise InvalidArgument("Missing model name in request.")
        verb = Verb.METADATA if sub == "metadata" else Verb.STATUS
        return Route(verb, _spec(name, version, label))
    raise _malformed(method, path)


def _malformed(method: str, path: str) -> InvalidArgument:
    return InvalidArgument(f"Malformed request: {method} {path}")


def _spec(name: str, version: str | None, label: str | None) -> ModelSpec:
    number = None
    if version is not None:
        number = int(version)
        if number > _INT64_MAX:
            raise InvalidArgument(f"Failed to convert version: {version} to numeric.", empty_body=True)
    return ModelSpec(_decode(name), number, _decode(label) if label is not None else None)


def _decode(text: str) -> str:
    try:
        return unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument(f"Failed to decode: {text}", empty_body=True) from None


def build(verb: Verb, spec: ModelSpec) -> str:
    """The path for ``verb`` on ``spec`` (client side). Names and labels are percent-encoded."""
    if verb is Verb.LIST:
        return "/v1/models"
    path = f"/v1/models/{quote(spec.name, safe='')}"
    if spec.version is not None:
        path += f"/versions/{spec.version}"
    elif spec.label is not None:
        path += f"/labels/{quote(spec.label, safe='')}"
    if verb is Verb.METADATA:
        return path + "/metadata"
    if verb is Verb.STATUS:
        return path
    return f"{path}:{verb.value}"
