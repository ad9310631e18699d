"""The access log: one line per REST request and gRPC call (``--access_log``), off by default.

Each line says when the call arrived, over which protocol and from which peer, what it asked for
(HTTP method and path, or the gRPC method; the model, the version that answered, or the version or
label asked for when none did, and the signature), how it ended (HTTP status, or gRPC code name),
how long the server took to answer (not counting the time to send the answer) and the bytes in
and out of the message bodies.

``--access_log_format=plain`` writes ``key=value`` pairs (logfmt: a value with a space, a quote,
``=`` or a control character is written as a JSON string, so a model name sent in a URL can never
forge a line); ``json`` writes one JSON object per line with the same keys. Lines are formatted and
written on a thread of their own (``background_writer``); when it falls behind by
:data:`MAX_QUEUED_LINES`, lines are dropped and counted (``:mlsrv:access_log:dropped_count``),
never waited for. ``-`` is standard output.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from mlsrv.server.background_writer import BackgroundWriter

#: Lines waiting for the writer at most; past it they are dropped (a line holds ~200 bytes).
MAX_QUEUED_LINES: Final = 65536
_LINE_BYTES: Final = 256
#: Lines go out in writes of at most this many bytes (whole lines): ``PIPE_BUF``, up to which a write
#: to a pipe is atomic, so the lines of ``--workers`` processes sharing one log never interleave.
_WRITE_BYTES: Final = 4096
#: How long a stopping server waits for queued lines to be written.
CLOSE_TIMEOUT_S: Final = 2.0
_PLAIN_SAFE: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:/[]@%+,;~*!$&'()?#")


@dataclass(frozen=True, slots=True)
class AccessEntry:
    """One answered call. ``status``: the HTTP status (REST) or the gRPC code name."""

    arrived: float  # time.time()
    protocol: str  # "rest" | "grpc"
    peer: str
    method: str  # HTTP method, or the gRPC method's name
    path: str  # REST: the path as sent; gRPC: ""
    model: str
    version: str
    signature: str
    status: str
    latency_s: float
    bytes_in: int
    bytes_out: int


class AccessLog:
    """Formats and writes :class:`AccessEntry` lines on a writer thread; :meth:`record` never blocks."""

    def __init__(self, destination: str, fmt: str, *, max_lines: int = MAX_QUEUED_LINES) -> None:
        """``destination``: ``-`` (standard output) or a file, appended to; ``fmt``: plain or json;
        ``max_lines``: lines waiting at most. The file is opened now, so a path that cannot be
        written fails start-up."""
        self._json = fmt == "json"
        self._owned = destination != "-"
        if self._owned:  # O_APPEND: each write lands at the end, also beside other processes' writes
            self._fd = os.open(destination, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        else:
            sys.stdout.flush()
            self._fd = sys.stdout.fileno()
        self._writer: BackgroundWriter[AccessEntry] = BackgroundWriter(
            "mlsrv-access-log",
            self._write,
            max_items=max_lines,
            max_bytes=max_lines * _LINE_BYTES,
            close=self._close_file,
        )

    @property
    def dropped(self) -> int:
        return self._writer.dropped

    def record(self, entry: AccessEntry) -> None:
        self._writer.offer(entry, _LINE_BYTES)

    def _write(self, entries: Sequence[AccessEntry]) -> None:
        line = format_json if self._json else format_plain
        lines = [line(entry).encode("utf-8", "backslashreplace") + b"\n" for entry in entries]
        for chunk in _chunks(lines, _WRITE_BYTES):
            view = memoryview(chunk)
            while view:
                view = view[os.write(self._fd, view) :]

    def _close_file(self) -> None:
        if self._owned:
            os.close(self._fd)

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        self._writer.close(timeout_s)


def _chunks(lines: Sequence[bytes], limit: int) -> Iterator[bytes]:
    """Consecutive whole lines joined up to ``limit`` bytes (a longer line goes alone)."""
    start, size = 0, 0
    for index, line in enumerate(lines):
        if size and size + len(line) > limit:
            yield b"".join(lines[start:index])
            start, size = index, 0
        size += len(line)
    if start < len(lines):
        yield b"".join(lines[start:])


def _fields(entry: AccessEntry) -> dict[str, str | int | float]:
    return {
        "time": _timestamp(entry.arrived),
        "protocol": entry.protocol,
        "peer": entry.peer,
        "method": entry.method,
        "path": entry.path,
        "model": entry.model,
        "version": entry.version,
        "signature": entry.signature,
        "status": entry.status,
        "latency_ms": round(entry.latency_s * 1000, 3),
        "bytes_in": entry.bytes_in,
        "bytes_out": entry.bytes_out,
    }


def format_json(entry: AccessEntry) -> str:
    return json.dumps(_fields(entry), ensure_ascii=False, separators=(",", ":"))


def format_plain(entry: AccessEntry) -> str:
    """``key=value`` pairs; empty values are left out (a REST probe has no model)."""
    return " ".join(f"{key}={_plain(value)}" for key, value in _fields(entry).items() if value != "")


def _plain(value: str | int | float) -> str:
    text = str(value)
    if text and all(char in _PLAIN_SAFE for char in text):
        return text
    return json.dumps(text, ensure_ascii=False)


def _timestamp(seconds: float) -> str:
    """RFC 3339 in UTC with milliseconds: ``2026-12-07T06:01:29.123Z``."""
    whole = int(seconds)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((seconds - whole) * 1000):03d}Z"


def peer_text(peername: object) -> str:
    """A socket's peer as ``host:port`` (``[v6]:port``); a UNIX socket or an unknown peer as given."""
    if isinstance(peername, tuple) and len(peername) >= 2:
        host, port = peername[0], peername[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return "" if peername is None else str(peername)


def grpc_peer_text(peer: str) -> str:
    """grpc's ``ipv4:127.0.0.1:5000`` / ``ipv6:[::1]:5000`` as ``127.0.0.1:5000`` / ``[::1]:5000``."""
    for scheme in ("ipv4:", "ipv6:"):
        if peer.startswith(scheme):
            return peer[len(scheme) :]
    return peer


__all__ = ["AccessEntry", "AccessLog", "format_json", "format_plain", "grpc_peer_text", "peer_text"]
