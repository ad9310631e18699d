"""Options shared by the client commands (``predict``, ``metadata``, ``status``, ``bench``).

Typer has no option groups shared between commands, so each option is an ``Annotated`` alias that
commands use in their signatures, and :func:`connection` / :func:`model_spec` turn the values into an
``Endpoint`` and a ``ModelSpec``. Conflicts (``--version`` with ``--label``, ``--target`` with
``--rest``) are ``UsageError`` (exit code 2).
"""

from __future__ import annotations

import enum
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

import typer

from mlsrv.client.bench_spec import parse_duration
from mlsrv.errors import UsageError
from mlsrv.protocol.types import ModelSpec

if TYPE_CHECKING:  # the client API imports numpy and asyncio: not needed to declare the options
    from mlsrv.client.api import Endpoint, ProtocolName

CONNECTION = "Connection"
MODEL = "Model"
OUTPUT = "Output"


class ProtocolChoice(str, enum.Enum):
    rest = "rest"
    grpc = "grpc"


TargetOpt = Annotated[
    str | None,
    typer.Option(
        "--target",
        "-t",
        help="Server address host:port, or a URL (http://, https://, grpc://). Default localhost, port 8501 "
        "for REST and 8500 for gRPC.",
        rich_help_panel=CONNECTION,
    ),
]
RestOpt = Annotated[
    str | None,
    typer.Option(
        "--rest",
        help="REST base URL, e.g. http://localhost:8501 (implies --protocol rest).",
        rich_help_panel=CONNECTION,
    ),
]
GrpcOpt = Annotated[
    str | None,
    typer.Option(
        "--grpc",
        help="gRPC address host:port, e.g. localhost:8500 (implies --protocol grpc).",
        rich_help_panel=CONNECTION,
    ),
]
ProtocolOpt = Annotated[
    ProtocolChoice | None,
    typer.Option(
        "--protocol",
        "-p",
        help="Wire protocol (default: from --rest/--grpc/the URL, else rest).",
        rich_help_panel=CONNECTION,
    ),
]
TimeoutOpt = Annotated[
    str | None,
    typer.Option(
        "--timeout", help="Per-request timeout, e.g. 30s or 500ms (default 30s).", rich_help_panel=CONNECTION
    ),
]
TlsOpt = Annotated[
    bool, typer.Option("--tls", help="Use TLS (system root certificates unless --tls-ca).", rich_help_panel=CONNECTION)
]
TlsCaOpt = Annotated[
    str | None,
    typer.Option("--tls-ca", help="CA bundle (PEM) to verify the server; implies --tls.", rich_help_panel=CONNECTION),
]
TlsCertOpt = Annotated[
    str | None, typer.Option("--tls-cert", help="Client certificate (PEM), with --tls-key.", rich_help_panel=CONNECTION)
]
TlsKeyOpt = Annotated[
    str | None, typer.Option("--tls-key", help="Client private key (PEM), with --tls-cert.", rich_help_panel=CONNECTION)
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="MLSRV_TOKEN",
        help="Bearer token for a server with --auth_token_file (default: $MLSRV_TOKEN).",
        rich_help_panel=CONNECTION,
        show_envvar=False,
    ),
]
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Model name, as served.", rich_help_panel=MODEL)]
VersionOpt = Annotated[
    int | None, typer.Option("--version", help="Model version (default: latest).", rich_help_panel=MODEL, min=0)
]
LabelOpt = Annotated[
    str | None,
    typer.Option("--label", help="Version label, e.g. stable (instead of --version).", rich_help_panel=MODEL),
]
SignatureOpt = Annotated[
    str | None,
    typer.Option("--signature", "-s", help="Signature name (default serving_default).", rich_help_panel=MODEL),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Machine-readable JSON on stdout (docs/cli-json.md).", rich_help_panel=OUTPUT)
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="Print only the result, no notes.", rich_help_panel=OUTPUT)
]


@dataclass(frozen=True, slots=True)
class ConnectionArgs:
    """The raw connection options of one command line."""

    target: str | None = None
    rest: str | None = None
    grpc: str | None = None
    protocol: ProtocolChoice | None = None
    tls: bool = False
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    token: str | None = field(default=None, repr=False)

    def endpoint(self) -> Endpoint:
        """Resolve to one :class:`Endpoint`, with the token if one was given; ``UsageError`` on conflicts."""
        endpoint = self._address()
        return replace(endpoint, token=self.token.strip()) if self.token and self.token.strip() else endpoint

    def _address(self) -> Endpoint:
        from mlsrv.client.api import Endpoint, TlsOptions

        tls = TlsOptions(self.tls, self.tls_ca, self.tls_cert, self.tls_key)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise UsageError("--tls-cert and --tls-key must be given together")
        protocol: ProtocolName | None = self.protocol.value if self.protocol is not None else None
        if self.target is not None and (self.rest is not None or self.grpc is not None):
            raise UsageError("give either --target or --rest/--grpc, not both")
        if self.rest is not None and self.grpc is not None:
            if protocol is None:
                raise UsageError("--rest and --grpc both given: choose one with --protocol rest|grpc")
            return Endpoint.parse(self.rest if protocol == "rest" else self.grpc, protocol, tls)
        if self.rest is not None:
            return Endpoint.parse(self.rest, _agree(protocol, "rest", "--rest"), tls)
        if self.grpc is not None:
            return Endpoint.parse(self.grpc, _agree(protocol, "grpc", "--grpc"), tls)
        return Endpoint.parse(self.target, protocol, tls)


#: The connection options every client command takes: (parameter, annotation, default).
_CONNECTION_PARAMETERS: tuple[tuple[str, object, object], ...] = (
    ("target", TargetOpt, None),
    ("rest", RestOpt, None),
    ("grpc", GrpcOpt, None),
    ("protocol", ProtocolOpt, None),
    ("tls", TlsOpt, False),
    ("tls_ca", TlsCaOpt, None),
    ("tls_cert", TlsCertOpt, None),
    ("tls_key", TlsKeyOpt, None),
    ("token", TokenOpt, None),
)

F = TypeVar("F", bound=Callable[..., None])


def with_connection(command: F) -> F:
    """Give a command the shared connection options, handed to it as one ``conn: ConnectionArgs``.

    The options are added to the command's signature (after its own), so Typer, ``--help``, the
    completions and the man pages see them exactly as if each command had declared them itself.
    """
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "conn"]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
        for name, annotation, default in _CONNECTION_PARAMETERS
    ]

    @functools.wraps(command)
    def wrapper(**values: Any) -> None:
        conn = ConnectionArgs(**{name: values.pop(name) for name, _, _ in _CONNECTION_PARAMETERS})
        command(conn=conn, **values)

    annotations = {k: v for k, v in command.__annotations__.items() if k != "conn"}
    wrapper.__signature__ = inspect.Signature([*own, *added])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {**annotations, **{name: ann for name, ann, _ in _CONNECTION_PARAMETERS}}
    return cast(F, wrapper)


def _agree(given: ProtocolName | None, implied: ProtocolName, option: str) -> ProtocolName:
    if given is not None and given != implied:
        raise UsageError(f"{option} is a {implied} address but --protocol is {given}")
    return implied


def model_spec(model: str, version: int | None, label: str | None, signature: str | None = None) -> ModelSpec:
    """``--model``/``--version``/``--label``/``--signature`` as a ModelSpec (version and label exclude each other)."""
    if version is not None and label is not None:
        raise UsageError("give either --version or --label, not both")
    if not model:
        raise UsageError("--model must not be empty")
    return ModelSpec(model, version, label, signature or "")


def timeout_seconds(text: str | None, default: float = 30.0) -> float:
    """``--timeout`` in seconds (``30s``, ``500ms``, a bare number of seconds)."""
    if text is None:
        return default
    value = parse_duration(text)
    if value <= 0:
        raise UsageError(f"--timeout must be > 0, got {text!r}")
    return value
