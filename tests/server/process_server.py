"""``mlsrv serve`` as a real process on free loopback ports, and a probe that measures its stalls.

Hardening tests need the server in its own process: a stall there (a regex holding the GIL, a big
body decoded on the loop) must be seen from outside, by a client that is not stalled with it. The
probe is a thread that asks ``/healthz`` every 20 ms over fresh connections and records the worst
wait; every loop is bounded in count and time.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import EXAMPLES, free_port

MLSRV = [sys.executable, "-m", "mlsrv.cli"]


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    rest_port: int
    grpc_port: int
    log_path: Path

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def peak_rss_bytes(self) -> int:
        """``VmHWM``: the most resident memory the process ever had."""
        return _status_kb(self.process.pid, "VmHWM") * 1024

    def rss_bytes(self) -> int:
        return _status_kb(self.process.pid, "VmRSS") * 1024


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


@contextmanager
def serve_process(tmp_path: Path, *flags: str, model: Path = EXAMPLES / "half_plus_two",
                  start_timeout: float = 120) -> Iterator[ServerProcess]:
    """Start ``mlsrv serve --model_name=m`` on ``model``; stop it with SIGTERM (then SIGKILL) after."""
    rest, grpc_port = free_port(), free_port()
    log_path = tmp_path / f"server-{rest}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*MLSRV, "serve", "--host=127.0.0.1", f"--port={grpc_port}", f"--rest_api_port={rest}",
             "--model_name=m", f"--model_base_path={model}", *flags],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    server = ServerProcess(process, rest, grpc_port, log_path)
    try:
        deadline = time.monotonic() + start_timeout
        while http_get(rest, "/readyz", timeout=2.0)[0] != 200:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{server.log_text()[-3000:]}")
            time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def http_get(port: int, path: str, *, timeout: float) -> tuple[int, bytes]:
    """One GET on a fresh connection: (status, body); status 0 when it failed or timed out."""
    return http_raw(port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(), timeout=timeout)


def http_raw(port: int, request: bytes, *, timeout: float) -> tuple[int, bytes]:
    """Send raw bytes, read the whole answer until the server closes: (status, body); 0 on failure."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(request)
            return parse_response(read_until_closed(sock, deadline=time.monotonic() + timeout))
    except OSError:
        return 0, b""


def read_until_closed(sock: socket.socket, *, deadline: float, limit: int = 1 << 26) -> bytes:
    data = bytearray()
    while time.monotonic() < deadline and len(data) < limit:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
        if _complete(bytes(data)):
            break
    return bytes(data)


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False


def parse_response(data: bytes) -> tuple[int, bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        return 0, data
    return int(parts[1]), body


class HealthProbe:
    """Background thread: GET /healthz every ``period_s``; ``worst_s`` is the longest wait seen.

    A probe that gets no answer within ``timeout_s`` counts as ``timeout_s``.
    """

    def __init__(self, port: int, *, period_s: float = 0.02, timeout_s: float = 30.0, max_probes: int = 20_000):
        self._port = port
        self._period_s = period_s
        self._timeout_s = timeout_s
        self._max_probes = max_probes
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health-probe", daemon=True)
        self.worst_s = 0.0
        self.probes = 0
        self.failures = 0

    def _run(self) -> None:
        while not self._stop.is_set() and self.probes < self._max_probes:
            started = time.monotonic()
            status, _ = http_get(self._port, "/healthz", timeout=self._timeout_s)
            waited = time.monotonic() - started
            self.probes += 1
            self.failures += status != 200
            self.worst_s = max(self.worst_s, waited if status == 200 else self._timeout_s)
            self._stop.wait(self._period_s)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(self._timeout_s + 5)
