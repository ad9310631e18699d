"""Are the serving ports free? Asked before anything loads, so a clash fails in a moment, not after
the models spent seconds loading, and never leaves two servers sharing a port.

gRPC sets ``SO_REUSEPORT`` on its listening sockets by default, so without this check a second
server on a taken gRPC port would start and the kernel would split clients between the two. The
check binds without ``SO_REUSEPORT``: a port anyone listens on is busy, whatever options they set.
(``--workers`` shares its ports on purpose: its supervisor checks once, before the workers start.)
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

from mlsrv.errors import ConfigError


def check_ports_free(host: str, ports: Sequence[tuple[str, int]]) -> None:
    """``ConfigError`` (exit 2) naming the first busy port; ``ports`` are (what, port), port 0 skipped."""
    for what, port in ports:
        if not port:
            continue
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as error:
                raise ConfigError(f"cannot serve {what} on {host}:{port}: {error.strerror or error}") from None
