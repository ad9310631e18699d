"""Admission at the door: a bound on the inference requests, and their bytes, in the server at once.

Past its capacity a server that takes in every request decodes it, keeps its tensors in memory and
queues work whose callers may have given up; the only bound TF Serving has is the batch queue, at
the far end of that path. Here each inference request (REST predict/classify/regress, gRPC
Predict/Classify/Regress/MultiInference) is admitted before its body is read (REST, from
``Content-Length``) or its handler runs (gRPC, the message size), and released when answered. Past a
bound it is turned away at once, for a fraction of what serving it costs: REST 503 with
``Retry-After``, gRPC UNAVAILABLE (TF Serving's code for a full batch queue; clients and load
balancers retry it elsewhere). Status, metadata, health and metrics requests are never counted.

Bounds (flags ``--max_inflight_requests``, ``--max_inflight_bytes``; 0 means the default):

* requests: :data:`DEFAULT_MAX_REQUESTS`, far above what a closed-loop client fleet keeps in flight
  on one replica, low enough that a spike cannot queue unbounded work;
* bytes: an eighth of the host's memory, at most :data:`MAX_DEFAULT_BYTES`: what decoded tensors of
  admitted requests may pin at once (a decoded tensor is about as large as its wire form or smaller).

A request larger than the byte bound on its own is still admitted when nothing else is in flight,
so a legitimate large request is never refused on an idle server (the body cap still applies).
Loop-affine: every call comes from the event loop, so plain integers suffice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Final

from mlsrv.errors import Overloaded

DEFAULT_MAX_REQUESTS: Final = 1024
MAX_DEFAULT_BYTES: Final = 4 << 30
#: How long a turned-away client should wait before retrying (REST ``Retry-After``), in seconds.
RETRY_AFTER_S: Final = 1


def default_max_bytes() -> int:
    """An eighth of physical memory, at most 4 GiB (1 GiB where the size cannot be read)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 30
    return max(64 << 20, min(MAX_DEFAULT_BYTES, total // 8))


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    """The server-wide bounds; build with :meth:`resolve` so 0 means "the default"."""

    max_requests: int = DEFAULT_MAX_REQUESTS
    max_bytes: int = 1 << 30

    @classmethod
    def resolve(cls, max_requests: int, max_bytes: int) -> AdmissionLimits:
        return cls(max_requests or DEFAULT_MAX_REQUESTS, max_bytes or default_max_bytes())


class Admission:
    """Counts what is admitted; :meth:`admit` returns a ticket to release, or raises ``Overloaded``."""

    def __init__(self, limits: AdmissionLimits) -> None:
        self.limits = limits
        self.requests = 0
        self.bytes = 0
        #: requests turned away, by the bound they hit ("requests" or "bytes")
        self.rejected: dict[str, int] = {"requests": 0, "bytes": 0}

    def admit(self, size: int) -> Ticket:
        """Admit one request of ``size`` bytes (its body or message; 0 when unknown yet)."""
        if self.requests >= self.limits.max_requests:
            self.rejected["requests"] += 1
            raise Overloaded(
                f"The server is at its limit of {self.limits.max_requests} requests in progress "
                "(--max_inflight_requests); retry later"
            )
        if self.requests and self.bytes + size > self.limits.max_bytes:
            self.rejected["bytes"] += 1
            raise Overloaded(
                f"The server is at its limit of {self.limits.max_bytes} request bytes in progress "
                "(--max_inflight_bytes); retry later"
            )
        self.requests += 1
        self.bytes += size
        return Ticket(self, size)


class Ticket:
    """One admitted request: ``release()`` once when it is answered (``with`` does it)."""

    __slots__ = ("_admission", "size")

    def __init__(self, admission: Admission, size: int) -> None:
        self._admission = admission
        self.size = size

    def grow(self, extra: int) -> None:
        """Charge bytes learnt after admission (a chunked body's real size): never refused."""
        self._admission.bytes += extra
        self.size += extra

    def release(self) -> None:
        admission = self._admission
        admission.requests -= 1
        admission.bytes -= self.size
        self.size = 0

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
