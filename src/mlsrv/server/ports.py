"""Are the serving ports free? Asked before anything loads, so a clash fails in a moment, not after
the models spent seconds loading, and never leaves two servers sharing a port.

gRPC sets ``SO_REUSEPORT`` on its listening sockets by default, so without this check a second
server on a taken gRPC port would start and the kernel would split clients between the two. The
check binds without ``SO_REUSEPORT``: a port anyone listens on is busy, whatever options they set.
(``--workers`` shares its ports on purpose: its supervisor checks once, before the workers start.)
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from mlsrv.config import ServerConfig
from mlsrv.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BusyPort:
    what: str
    port: int
    reason: str

    def error(self, host: str) -> ConfigError:
        return ConfigError(f"cannot serve {self.what} on {host}:{self.port}: {self.reason}")


def busy_ports(host: str, ports: Sequence[tuple[str, int]]) -> list[BusyPort]:
    """The ports (what, port) someone already listens on; port 0 (not served) is skipped."""
    busy = []
    for what, port in ports:
        if not port:
            continue
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as error:
                busy.append(BusyPort(what, port, error.strerror or str(error)))
    return busy


def check_ports(config: ServerConfig) -> bool:
    """Check both ports: ``ConfigError`` for a busy port that was asked for. Returns True when REST
    is to be left off: only the default REST port (8501, never asked for; TF Serving opens no REST
    port by default) is busy, so the server serves gRPC alone, after a warning."""
    skip_rest = False
    for busy in busy_ports(config.grpc.host, [("gRPC", config.grpc.port), ("REST", config.rest.port)]):
        if busy.what == "REST" and not config.rest.port_asked:
            log.warning(
                "REST port %d is busy (%s) and --rest_api_port was not given: serving gRPC only. "
                "Pass --rest_api_port=PORT to serve REST on another port.", busy.port, busy.reason,
            )  # fmt: skip
            skip_rest = True
            continue
        raise busy.error(config.grpc.host)
    return skip_rest
