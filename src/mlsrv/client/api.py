"""``Client``: the async API for talking to any TensorFlow Serving-compatible server (mlsrv or TF Serving).

The client builds ``protocol.types`` requests and hands them to one :class:`~mlsrv.client.transports.Transport`
(REST, gRPC, in-process or a test's ``MockTransport``); it never sees a wire format. Errors arrive as
the ``mlsrv.errors`` class the server raised, whichever transport carried them; a client-side timeout
is ``DeadlineExceeded`` and an unreachable server ``TransportError``.

    async with Client("localhost:8500", protocol="grpc") as client:
        response = await client.predict(ModelSpec("half_plus_two"), {"x": np.array([[1.0]], np.float32)})

Loop-affine: create and use a Client inside one running event loop.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, TypeVar

import numpy as np

from mlsrv.client.transport_base import RESULT_TYPES
from mlsrv.client.transports import (
    Call,
    CallRequest,
    CallResult,
    ExamplesCall,
    GrpcCredentials,
    GrpcTransport,
    Op,
    RestTransport,
    SupportsClose,
    SupportsPrepare,
    Transport,
    check_output_filter,
)
from mlsrv.errors import (
    Code,
    DeadlineExceeded,
    InvalidArgument,
    MlsrvError,
    ModelNotFound,
    TransportError,
    UsageError,
    error_for_code,
)
from mlsrv.protocol import dtypes
from mlsrv.protocol.types import (
    ClassifyResponse,
    InferenceMethod,
    ModelMetadata,
    ModelSpec,
    ModelStatus,
    PredictRequest,
    PredictResponse,
    RegressResponse,
    RequestFormat,
    SignatureInfo,
    State,
)

_R = TypeVar("_R", PredictResponse, ClassifyResponse, RegressResponse, ModelMetadata, ModelStatus)

ProtocolName = Literal["rest", "grpc"]

DEFAULT_REST_PORT: Final = 8501
DEFAULT_GRPC_PORT: Final = 8500
DEFAULT_HOST: Final = "localhost"
_SCHEMES: Final[dict[str, ProtocolName]] = {"http": "rest", "https": "rest", "grpc": "grpc", "grpcs": "grpc"}


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """TLS for gRPC (and https REST): CA bundle, client certificate and key (PEM paths). ``enabled``
    with no files means TLS with the system's roots."""

    enabled: bool = False
    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    @property
    def active(self) -> bool:
        return self.enabled or any((self.ca, self.cert, self.key))

    def grpc_credentials(self) -> GrpcCredentials:
        if (self.cert is None) != (self.key is None):
            raise UsageError("--tls-cert and --tls-key must be given together")
        return GrpcCredentials(_read(self.ca, "--tls-ca"), _read(self.key, "--tls-key"), _read(self.cert, "--tls-cert"))

    def ssl_context(self) -> ssl.SSLContext:
        try:
            context = ssl.create_default_context(cafile=self.ca)
            if self.cert is not None:
                context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"cannot load TLS files: {exc}") from None
        return context


def _read(path: str | None, option: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"{option}: cannot read {path}: {exc.strerror or exc}") from None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to connect: ``protocol`` and ``address`` (a base URL for REST, ``host:port`` for
    gRPC). Picklable, so bench worker processes can each build their own transport from it."""

    protocol: ProtocolName
    address: str
    tls: TlsOptions = TlsOptions()
    #: a bearer token sent with every call (``--token`` / ``MLSRV_TOKEN``); never printed
    token: str | None = field(default=None, repr=False)

    @classmethod
    def parse(
        cls, target: str | None = None, protocol: ProtocolName | None = None, tls: TlsOptions = TlsOptions()
    ) -> Endpoint:
        """``host[:port]``, ``http(s)://host[:port]`` or ``grpc://host[:port]``; ports default to 8501 / 8500.

        ``protocol`` wins over a URL scheme only when they agree; a conflict is a ``UsageError``.
        """
        text = (target or "").strip()
        scheme, sep, rest = text.partition("://")
        if not sep:
            scheme, rest = "", text
        scheme = scheme.lower()
        implied = _SCHEMES.get(scheme)
        if sep and implied is None:
            raise UsageError(f"unsupported scheme in target {text!r}: use http://, https:// or grpc://")
        if protocol is not None and implied is not None and protocol != implied:
            raise UsageError(f"target {text!r} is a {implied} address but --protocol is {protocol}")
        chosen: ProtocolName = protocol or implied or "rest"
        hostport, _, path = rest.partition("/")
        host, port = _split_host_port(hostport or DEFAULT_HOST, text)
        hostport = f"{host}:{port or (DEFAULT_GRPC_PORT if chosen == 'grpc' else DEFAULT_REST_PORT)}"
        tls = replace(tls, enabled=tls.enabled or scheme in ("https", "grpcs"))
        if chosen == "grpc":
            if path.strip("/"):
                raise UsageError(f"a gRPC target is host:port, got {text!r}")
            return cls("grpc", hostport, tls)
        prefix = "/" + path.strip("/") if path.strip("/") else ""
        return cls("rest", f"{'https' if tls.active else 'http'}://{hostport}{prefix}", tls)

    def transport(self) -> Transport:
        """A fresh transport for this endpoint (cheap: connections open on first use)."""
        if self.protocol == "grpc":
            credentials = self.tls.grpc_credentials() if self.tls.active else None
            return GrpcTransport(self.address, credentials=credentials, token=self.token)
        context = self.tls.ssl_context() if self.address.startswith("https://") else None
        return RestTransport(self.address, ssl_context=context, token=self.token)

    def __str__(self) -> str:
        return f"{self.protocol}://{self.address.split('://')[-1]}"


_HOST: Final = re.compile(r"[^\s/?#@\[\]:]+")
_IPV6: Final = re.compile(r"\[[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*(%[\w.-]+)?\]")


def _split_host_port(hostport: str, target: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[ipv6]`` or ``[ipv6]:port`` -> (host, port or None); UsageError otherwise.

    The one check of an address for REST and gRPC alike, so a bad target fails here, as a usage error,
    and never later inside a transport (urllib's ``ValueError``, gRPC's silently wrapped port).
    """
    if hostport.startswith("["):
        end = hostport.find("]")
        host, rest = (hostport[: end + 1], hostport[end + 1 :]) if end > 0 else (hostport, "")
        if end < 0 or not _IPV6.fullmatch(host):
            raise UsageError(f"invalid IPv6 address in target {target!r}: expected [address] or [address]:port")
        if rest and not rest.startswith(":"):
            raise UsageError(f"invalid target {target!r}: expected [address]:port")
        port_text = rest[1:] if rest else None
    else:
        host, sep, port_text_or_empty = hostport.partition(":")
        if ":" in port_text_or_empty:
            raise UsageError(f"invalid target {target!r}: put an IPv6 address in brackets, e.g. [::1]:8501")
        port_text = port_text_or_empty if sep else None
        if not host:
            raise UsageError(f"invalid target {target!r}: no host name (e.g. localhost{hostport})")
        if not _HOST.fullmatch(host):
            raise UsageError(f"invalid host {host!r} in target {target!r}")
    if port_text is None:
        return host, None
    if not port_text.isascii() or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise UsageError(f"invalid port {port_text!r} in target {target!r}: expected a number from 1 to 65535")
    return host, int(port_text)


class Client:
    """Predict, classify, regress, metadata and status against one server, over one transport.

    ``target`` is an address (see :meth:`Endpoint.parse`) or a ready :class:`Transport`. ``timeout``
    (seconds, None = no limit) applies to every call unless a call passes its own. Use as an async
    context manager so connections are closed.
    """

    def __init__(
        self,
        target: str | Transport | None = None,
        *,
        protocol: ProtocolName | None = None,
        timeout: float | None = 30.0,
        tls: TlsOptions = TlsOptions(),
    ) -> None:
        if target is None or isinstance(target, str):
            self.endpoint: Endpoint | None = Endpoint.parse(target, protocol, tls)
            self.transport: Transport = self.endpoint.transport()
        else:
            self.endpoint = None
            self.transport = target
        self.timeout = timeout

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if isinstance(self.transport, SupportsClose):
            await self.transport.aclose()

    # -- the raw seam: bench uses prepare + send to encode each request once --

    def call(self, op: Op, request: CallRequest, *, timeout: float | None = None, prepare: bool = False) -> Call:
        """A :class:`Call` for ``request``; ``prepare=True`` pre-encodes it when the transport can."""
        call = Call(op, request, self.timeout if timeout is None else timeout)
        if prepare and isinstance(self.transport, SupportsPrepare):
            call = self.transport.prepare(call)
        return call

    async def send(self, call: Call) -> CallResult:
        """Send one call. Only ``MlsrvError`` subclasses escape: transports map their own failures to
        them, and whatever else escapes a transport is mapped here, by type: a timeout to
        ``DeadlineExceeded``, an ``OSError`` to ``TransportError``. A result of the wrong type for the
        call's operation is a ``TransportError`` too (no model server answered like that)."""
        try:
            result = await self.transport.send(call)
        except MlsrvError:
            raise
        except asyncio.TimeoutError:
            raise DeadlineExceeded(f"no response within {call.timeout_s} s") from None
        except OSError as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from None
        expected = RESULT_TYPES[call.op]
        if not isinstance(result, expected):
            raise TransportError(f"a {call.op.name} call returned a {type(result).__name__}, not a {expected.__name__}")
        return result

    async def _send(self, call: Call, expected: type[_R]) -> _R:
        """:meth:`send`, typed: the result as ``expected`` (which :meth:`send` has checked)."""
        result = await self.send(call)
        assert isinstance(result, expected)
        return result

    # -- operations --

    async def predict(
        self,
        spec: ModelSpec,
        inputs: Mapping[str, np.ndarray],
        *,
        output_filter: Sequence[str] = (),
        format: RequestFormat = RequestFormat.COLUMNAR,
        signature: SignatureInfo | None = None,
        timeout: float | None = None,
    ) -> PredictResponse:
        """Run ``spec``'s signature on ``inputs``. With ``signature`` (from :meth:`signature`), outputs are
        named and cast to the signature's dtypes, so REST (which loses dtypes) and gRPC give equal arrays,
        and ``output_filter`` is checked against it first (REST has no filter, so the server cannot)."""
        if signature is not None:
            check_output_filter(output_filter, signature.outputs)
        request = PredictRequest(spec, dict(inputs), tuple(output_filter), format)
        response = await self._send(self.call(Op.PREDICT, request, timeout=timeout), PredictResponse)
        if signature is not None:
            response = replace(response, outputs=conform_outputs(response.outputs, signature, output_filter))
        return response

    async def classify(
        self,
        spec: ModelSpec,
        examples: Sequence[Mapping[str, Any]],
        *,
        context: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> ClassifyResponse:
        """Classify tf.Examples given as TF Serving JSON feature dicts (``{"x": [1.0, 2.0]}``)."""
        call = ExamplesCall(spec, InferenceMethod.CLASSIFY, list(examples), context)
        return await self._send(self.call(Op.CLASSIFY, call, timeout=timeout), ClassifyResponse)

    async def regress(
        self,
        spec: ModelSpec,
        examples: Sequence[Mapping[str, Any]],
        *,
        context: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> RegressResponse:
        """Regress tf.Examples given as TF Serving JSON feature dicts."""
        call = ExamplesCall(spec, InferenceMethod.REGRESS, list(examples), context)
        return await self._send(self.call(Op.REGRESS, call, timeout=timeout), RegressResponse)

    async def metadata(self, spec: ModelSpec, *, timeout: float | None = None) -> ModelMetadata:
        """Every signature of the resolved version (``spec.signature`` is not sent, as TF Serving)."""
        request = ModelSpec(spec.name, spec.version, spec.label)
        return await self._send(self.call(Op.METADATA, request, timeout=timeout), ModelMetadata)

    async def signature(self, spec: ModelSpec, *, timeout: float | None = None) -> SignatureInfo:
        """The signature ``spec`` names (default ``serving_default``), with TF Serving's REST message if absent."""
        metadata = await self.metadata(spec, timeout=timeout)
        name = spec.signature_or_default
        found = metadata.signatures.get(name)
        if found is None:
            raise InvalidArgument(f'Serving signature name: "{name}" not found in signature def')
        return found

    async def status(self, spec: ModelSpec | str, *, timeout: float | None = None) -> ModelStatus:
        """Every version's state (or one version's with ``spec.version``)."""
        request = ModelSpec(spec) if isinstance(spec, str) else ModelSpec(spec.name, spec.version, spec.label)
        return await self._send(self.call(Op.STATUS, request, timeout=timeout), ModelStatus)

    async def wait_for(
        self,
        spec: ModelSpec,
        state: State = State.AVAILABLE,
        *,
        timeout_s: float,
        first_poll_s: float = 0.05,
        max_poll_s: float = 1.0,
    ) -> ModelStatus:
        """Poll status (backoff ``first_poll_s`` doubling to ``max_poll_s``) until ``state`` is reached.

        Reached means: the version ``spec.version`` is in ``state``, or without a version, any version
        is. While the server is starting, connection failures and "no versions yet" (NOT_FOUND) count as
        not ready. Raises ``DeadlineExceeded`` after ``timeout_s``, naming the last thing seen, and fails
        fast when waiting for AVAILABLE and every version has ended with a load error.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        delay = first_poll_s
        last = "no answer yet"
        while True:
            remaining = deadline - loop.time()
            try:
                status = await self.status(spec, timeout=max(0.05, min(remaining, 5.0)))
            except (TransportError, ModelNotFound, DeadlineExceeded) as exc:
                last = exc.message
            else:
                if reached(status, spec.version, state):
                    return status
                _raise_if_failed(status, spec, state)
                last = describe(status)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise DeadlineExceeded(
                    f"model {spec.name} did not become {state.name} within {timeout_s:g} s (last: {last})"
                )
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, max_poll_s)


def reached(status: ModelStatus, version: int | None, state: State) -> bool:
    """Whether ``version`` (or, without one, any version) is in ``state``."""
    return any(v.state is state and (version is None or v.version == version) for v in status.versions)


def describe(status: ModelStatus) -> str:
    """``"version 2 LOADING, version 1 END"``, for messages."""
    return ", ".join(f"version {v.version} {v.state.name}" for v in status.versions) or "no versions"


def _raise_if_failed(status: ModelStatus, spec: ModelSpec, state: State) -> None:
    if state is not State.AVAILABLE or not status.versions:
        return
    relevant = [v for v in status.versions if spec.version is None or v.version == spec.version]
    if relevant and all(v.state is State.END for v in relevant):
        failed = next((v for v in relevant if v.error_code is not Code.OK), None)
        if failed is not None:
            raise error_for_code(
                failed.error_code,
                f"model {spec.name} version {failed.version} failed to load: {failed.error_message}",
            )


def conform_outputs(
    outputs: Mapping[str, np.ndarray], signature: SignatureInfo, output_filter: Sequence[str] = ()
) -> dict[str, np.ndarray]:
    """Outputs named and typed as ``signature`` says: the unnamed single output of a REST response gets its
    alias, numbers are cast to the signature dtype (REST JSON carries no dtype), strings become bytes."""
    wanted = list(output_filter) or sorted(signature.outputs)
    named = dict(outputs)
    if set(named) == {""} and len(wanted) == 1:
        named = {wanted[0]: named[""]}
    result = {}
    for key in sorted(named):
        info = signature.outputs.get(key)
        result[key] = named[key] if info is None else _cast(named[key], info.dtype)
    return result


def _cast(array: np.ndarray, dtype_name: str) -> np.ndarray:
    target = dtypes.by_name(dtype_name).numpy
    if target is None or array.dtype == target or dtype_name == "DT_STRING":
        return array
    if array.dtype.kind in "OSU":
        return array
    with np.errstate(over="ignore", invalid="ignore"):
        return array.astype(target)


__all__ = ["Client", "Endpoint", "ProtocolName", "TlsOptions", "conform_outputs", "describe", "reached"]
