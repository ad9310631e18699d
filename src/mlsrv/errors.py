"""One exception hierarchy and the one table that maps it to HTTP, gRPC and CLI exit codes.

Every error mlsrv reports on the wire is an :class:`MlsrvError`. Subclasses only choose a
:class:`Code` (named exactly like gRPC's canonical codes, so ``grpc.StatusCode[code.name]`` is the
gRPC mapping) and the message. ``HTTP_STATUS`` is TF Serving's absl-code -> HTTP table
(``http_server.cc``). The client maps wire errors back through :func:`error_for_code`, so the same
failure raises the same class whichever transport carried it. This module imports no framework.
"""

from __future__ import annotations

import enum
from typing import ClassVar, Final


class Code(enum.Enum):
    """Canonical status codes; values equal ``tensorflow.error.Code`` and gRPC's numbering."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


HTTP_STATUS: Final[dict[Code, int]] = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}

#: TF Serving's ``ToGRPCStatus`` cuts long messages; we cut the same way on every wire.
MAX_WIRE_MESSAGE: Final = 1024
TRUNCATED_SUFFIX: Final = "...TRUNCATED"

EXIT_OK: Final = 0
EXIT_REQUEST_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_TRANSPORT: Final = 3


class MlsrvError(Exception):
    """Base of every error mlsrv raises on purpose. ``code`` decides HTTP status, gRPC code and exit code.

    ``empty_body`` reproduces a TF Serving quirk: errors found while parsing a REST URL are returned
    with an empty body instead of ``{"error": ...}``.
    """

    code: ClassVar[Code] = Code.UNKNOWN
    exit_code: ClassVar[int] = EXIT_REQUEST_ERROR
    #: Only for HTTP-level failures that have their own status (413, 408); the code still decides gRPC.
    http_status_override: ClassVar[int | None] = None

    def __init__(self, message: str, *, empty_body: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.empty_body = empty_body
        #: client side: the HTTP status a REST server answered with, when several codes share it
        #: (400: INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE): the class is then a guess, and
        #: the CLI labels the error with the status it saw instead.
        self.received_http_status: int | None = None

    def wire_message(self) -> str:
        """The message as sent to clients: at most 1024 characters, marked when cut."""
        if len(self.message) <= MAX_WIRE_MESSAGE:
            return self.message
        return self.message[:MAX_WIRE_MESSAGE] + TRUNCATED_SUFFIX

    @property
    def http_status(self) -> int:
        return self.http_status_override or HTTP_STATUS.get(self.code, 500)


def first_line(error: BaseException) -> str:
    """The first line of an exception's text (its type name when it has none): for one-line messages."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


class Cancelled(MlsrvError):
    code = Code.CANCELLED


class UnknownError(MlsrvError):
    code = Code.UNKNOWN


class InvalidArgument(MlsrvError):
    code = Code.INVALID_ARGUMENT


class DeadlineExceeded(MlsrvError):
    code = Code.DEADLINE_EXCEEDED


class RequestTimeout(DeadlineExceeded):
    """A REST client too slow to send its body (``--rest_body_timeout_seconds``): HTTP 408."""

    http_status_override = 408


class ModelNotFound(MlsrvError):
    """No such model, version or servable; also a version that is not AVAILABLE yet (as TF Serving)."""

    code = Code.NOT_FOUND


class AlreadyExists(MlsrvError):
    code = Code.ALREADY_EXISTS


class PermissionDenied(MlsrvError):
    code = Code.PERMISSION_DENIED


class ResourceExhausted(MlsrvError):
    code = Code.RESOURCE_EXHAUSTED


class RequestTooLarge(ResourceExhausted):
    """A REST body over ``--rest_max_body_bytes``: HTTP 413 (a gRPC message over its limit is
    RESOURCE_EXHAUSTED, as grpc itself answers)."""

    http_status_override = 413


class FailedPrecondition(MlsrvError):
    code = Code.FAILED_PRECONDITION


class Aborted(MlsrvError):
    code = Code.ABORTED


class OutOfRange(MlsrvError):
    code = Code.OUT_OF_RANGE


class Unimplemented(MlsrvError):
    code = Code.UNIMPLEMENTED


class InternalError(MlsrvError):
    code = Code.INTERNAL


class LoadError(InternalError):
    """A SavedModel failed to load; reported through the version's status and at startup."""


class Overloaded(MlsrvError):
    """The batch queue is full or the server is shutting down; clients may retry."""

    code = Code.UNAVAILABLE


class BatchQueueFull(Overloaded):
    """TF's full batch queue: also what admission learns a model's holding capacity from."""


class DataLoss(MlsrvError):
    code = Code.DATA_LOSS


class Unauthenticated(MlsrvError):
    code = Code.UNAUTHENTICATED


class ConfigError(MlsrvError):
    """Invalid flags, TOML or text-proto. Never sent on the wire; the CLI exits with code 2."""

    code = Code.INVALID_ARGUMENT
    exit_code = EXIT_USAGE


class ConfigPreconditionError(ConfigError):
    """A configuration TF Serving refuses with FAILED_PRECONDITION at start-up (a version label for a
    version not loaded yet): TF's code in the message, a configuration error's exit code (2)."""

    code = Code.FAILED_PRECONDITION


class UsageError(MlsrvError):
    """A command line that cannot be acted on (bad file, bad expression). CLI exit code 2."""

    code = Code.INVALID_ARGUMENT
    exit_code = EXIT_USAGE


class TransportError(MlsrvError):
    """Client side only: cannot connect, or the peer did not answer like a model server. Exit code 3."""

    code = Code.UNAVAILABLE
    exit_code = EXIT_TRANSPORT


#: The class a wire code maps back to on the client (the reverse of the table above).
_CLASS_FOR_CODE: Final[dict[Code, type[MlsrvError]]] = {
    Code.CANCELLED: Cancelled,
    Code.UNKNOWN: UnknownError,
    Code.INVALID_ARGUMENT: InvalidArgument,
    Code.DEADLINE_EXCEEDED: DeadlineExceeded,
    Code.NOT_FOUND: ModelNotFound,
    Code.ALREADY_EXISTS: AlreadyExists,
    Code.PERMISSION_DENIED: PermissionDenied,
    Code.RESOURCE_EXHAUSTED: ResourceExhausted,
    Code.FAILED_PRECONDITION: FailedPrecondition,
    Code.ABORTED: Aborted,
    Code.OUT_OF_RANGE: OutOfRange,
    Code.UNIMPLEMENTED: Unimplemented,
    Code.INTERNAL: InternalError,
    Code.UNAVAILABLE: Overloaded,
    Code.DATA_LOSS: DataLoss,
    Code.UNAUTHENTICATED: Unauthenticated,
}

_CODE_FOR_HTTP: Final[dict[int, Code]] = {
    400: Code.INVALID_ARGUMENT,
    401: Code.UNAUTHENTICATED,
    403: Code.PERMISSION_DENIED,
    404: Code.NOT_FOUND,
    408: Code.DEADLINE_EXCEEDED,
    409: Code.ABORTED,
    413: Code.RESOURCE_EXHAUSTED,
    429: Code.RESOURCE_EXHAUSTED,
    499: Code.CANCELLED,
    500: Code.INTERNAL,
    501: Code.UNIMPLEMENTED,
    503: Code.UNAVAILABLE,
    504: Code.DEADLINE_EXCEEDED,
}


def error_for_code(code: Code, message: str) -> MlsrvError:
    """Rebuild the exception a server raised from its wire code (used by the client transports)."""
    return _CLASS_FOR_CODE.get(code, UnknownError)(message)


def http_status_is_ambiguous(status: int) -> bool:
    """Whether several codes share this status (400: INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE;
    409; 500), so an error read back from it cannot be named by its code."""
    return sum(1 for value in HTTP_STATUS.values() if value == status) > 1


def code_for_http_status(status: int) -> Code:
    """Best inverse of :data:`HTTP_STATUS` (400 is ambiguous in TF Serving; INVALID_ARGUMENT wins)."""
    return _CODE_FOR_HTTP.get(status, Code.UNKNOWN if status >= 500 else Code.INVALID_ARGUMENT)


def code_from_name(name: str) -> Code:
    """``Code`` from its canonical name (``"NOT_FOUND"``); unknown names give ``UNKNOWN``."""
    try:
        return Code[name]
    except KeyError:
        return Code.UNKNOWN
