"""Bearer-token authentication for REST and gRPC (an mlsrv addition: TF Serving has none).

``--auth_token_file`` names a file of tokens, one per line (blank lines and ``#`` comments ignored).
Every REST request and gRPC call must carry one (``Authorization: Bearer <token>``; gRPC metadata
``authorization``), except what probes need: ``/healthz``, ``/readyz`` and the gRPC health service,
and the Prometheus page with ``--auth_open_metrics``. ``--admin_token_file`` keeps model management
(``HandleReloadConfigRequest``) to its own tokens. The files are read again when they change
(checked at most once a second), so tokens rotate without a restart; a file that cannot be read
keeps the tokens last read (and says so), rather than locking everyone out or letting everyone in.

Comparisons take the same time whichever token is sent and however much of it matches: every
stored token is compared with ``hmac.compare_digest`` on SHA-256 digests (equal lengths).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from mlsrv.errors import ConfigError, PermissionDenied, Unauthenticated

log = logging.getLogger(__name__)

#: How often a token file's modification is looked for.
RELOAD_CHECK_S: Final = 1.0
#: gRPC methods any caller may call: what probes use.
OPEN_GRPC_PREFIXES: Final = ("/grpc.health.v1.Health/",)
#: The model-management method, which ``--admin_token_file`` reserves.
MANAGEMENT_METHOD: Final = "/tensorflow.serving.ModelService/HandleReloadConfigRequest"
#: REST paths any caller may request (probes).
OPEN_REST_PATHS: Final = frozenset({"/healthz", "/readyz"})
CHALLENGE: Final = 'Bearer realm="mlsrv"'


class TokenFile:
    """The tokens in one file, re-read when its size or modification time changes."""

    def __init__(self, path: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._digests: tuple[bytes, ...] = ()
        self._stamp: tuple[int, int] | None = None
        self._checked_at = float("-inf")
        if not self._reload():
            raise ConfigError(f"cannot read the token file {path}")
        if not self._digests:
            raise ConfigError(f"the token file {path} holds no token")

    def matches(self, token: str) -> bool:
        """Whether ``token`` is one of the file's, in time independent of which and how much matches."""
        now = self._clock()
        if now - self._checked_at >= RELOAD_CHECK_S:
            self._checked_at = now
            self._reload()
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        found = False
        for stored in self._digests:
            found |= hmac.compare_digest(stored, digest)
        return found

    def _reload(self) -> bool:
        """Read the file again if it changed; False when it cannot be read (the last tokens stay)."""
        try:
            status = os.stat(self.path)
            stamp = (status.st_mtime_ns, status.st_size)
            if stamp == self._stamp:
                return True
            with open(self.path, encoding="utf-8") as file:
                lines = file.read().splitlines()
        except (OSError, UnicodeDecodeError) as error:
            log.warning("cannot read the token file %s (%s); the tokens read before stay", self.path, error)
            return False
        tokens = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
        if self._stamp is not None:
            log.info("token file %s read again: %d token(s)", self.path, len(tokens))
        self._digests = tuple(hashlib.sha256(token.encode()).digest() for token in tokens)
        self._stamp = stamp
        return True


@dataclass(frozen=True, slots=True)
class Authenticator:
    """Who may call what: ``tokens`` for everything but probes, ``admin`` (when set) for management."""

    tokens: TokenFile
    admin: TokenFile | None = None
    open_metrics_path: str | None = None

    def rest_is_open(self, path: str) -> bool:
        return path in OPEN_REST_PATHS or path == self.open_metrics_path

    def grpc_is_open(self, method: str) -> bool:
        return method.startswith(OPEN_GRPC_PREFIXES)

    def check(self, authorization: str | None, *, management: bool = False) -> None:
        """Raise ``Unauthenticated`` (no or a wrong token) or ``PermissionDenied`` (a caller's token on
        the management method when admin tokens are configured); return when the call may go on."""
        token = bearer_token(authorization)
        if token is None:
            raise Unauthenticated("This server requires a bearer token (Authorization: Bearer <token>)")
        if management and self.admin is not None:
            if self.admin.matches(token):
                return
            if self.tokens.matches(token):
                raise PermissionDenied("Model management needs an admin token (--admin_token_file)")
            raise Unauthenticated("The bearer token is not valid")
        if not self.tokens.matches(token) and not (self.admin is not None and self.admin.matches(token)):
            raise Unauthenticated("The bearer token is not valid")


def bearer_token(authorization: str | None) -> str | None:
    """The token of ``Bearer <token>`` (scheme case-insensitive, RFC 6750); None otherwise."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
