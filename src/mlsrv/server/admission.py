"""Admission at the door: a bound on the inference requests, and their bytes, in the server at once.

Past its capacity a server that takes in every request decodes it, keeps its tensors in memory and
queues work whose callers may have given up; the only bound TF Serving has is the batch queue, at
the far end of that path. Here each inference request (REST predict/classify/regress, gRPC
Predict/Classify/Regress/MultiInference) is admitted before its body is read (REST, from
``Content-Length``) or its message is read (gRPC; its size is charged once read), and released when
answered. Past a bound it is turned away at once, for a fraction of what serving it costs: REST 503 with
``Retry-After``, gRPC UNAVAILABLE (TF Serving's code for a full batch queue; clients and load
balancers retry it elsewhere). Status, metadata, health and metrics requests are never counted.

Bounds (flags ``--max_inflight_requests``, ``--max_inflight_bytes``; 0 means the default):

* requests: at most :data:`DEFAULT_MAX_REQUESTS`, and, once the server has been measured busy for a
  whole second, no more than it completes in :data:`TARGET_WAIT_S` (the measured completion rate
  times that wait, at least :data:`MIN_ADAPTIVE_REQUESTS`): past capacity, requests that would only
  wait until their callers give up are turned away at once instead. The rate is measured only over
  windows in which the server never ran dry, so an idle spell cannot shrink the bound;
* bytes: an eighth of the host's memory, at most :data:`MAX_DEFAULT_BYTES`: what decoded tensors of
  admitted requests may pin at once (a decoded tensor is about as large as its wire form or smaller).

A request larger than the byte bound on its own is still admitted when nothing else is in flight,
so a legitimate large request is never refused on an idle server (the body cap still applies).

Per model, the door also learns what the model's batch queue holds (TF's ``max_enqueued_batches``
bound, in requests of the size clients send): when a request fails with a full batch queue, the
model's limit becomes the number of its requests the server held at that moment, less that one; each
request answered afterwards raises it by ``1/limit`` (additive increase, as TCP probes for room). So
past capacity the requests the queue would turn away after reading and decoding them are turned
away at the door instead, unread. REST names the model in the URL, so the check is before the body;
a gRPC call names it inside its message, so before the message is read the door holds calls to the
sum of the learnt limits (when every model in the server has one) and checks the model's own limit
once the message is parsed, before its tensors are decoded.

Loop-affine: every call comes from the event loop, so plain integers suffice.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from mlsrv.errors import BatchQueueFull, Overloaded

DEFAULT_MAX_REQUESTS: Final = 1024
#: The queueing an admitted request may expect past capacity: the adaptive bound admits this many
#: seconds of measured completions (overload bench, MLP over REST at 2/3/5x: goodput 81/60/70% with
#: 1 s, 76/54/18% with 5 s, against 73/63/33% with the static bound alone).
TARGET_WAIT_S: Final = 1.0
#: The adaptive bound never goes below this many requests: up to this many concurrent clients are
#: never turned away by it, however slow the model.
MIN_ADAPTIVE_REQUESTS: Final = 256
#: Completions are counted over windows this long.
RATE_WINDOW_S: Final = 1.0
MAX_DEFAULT_BYTES: Final = 4 << 30
#: How long a turned-away client should wait before retrying (REST ``Retry-After``), in seconds.
RETRY_AFTER_S: Final = 1
#: A model's learnt limit never goes below this many requests (one odd request that no queue could
#: hold, e.g. larger than its capacity, cannot close the door on the model).
MIN_MODEL_LIMIT: Final = 4


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

    max_requests: int
    max_bytes: int

    @classmethod
    def resolve(cls, max_requests: int, max_bytes: int) -> AdmissionLimits:
        return cls(max_requests or DEFAULT_MAX_REQUESTS, max_bytes or default_max_bytes())


@dataclass(slots=True)
class ModelLoad:
    """One model's admitted requests, and its limit once its batch queue has overflowed."""

    requests: int = 0
    limit: float | None = None


class Admission:
    """Counts what is admitted; :meth:`admit` returns a ticket to release, or raises ``Overloaded``."""

    def __init__(self, limits: AdmissionLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.requests = 0
        self.bytes = 0
        #: requests turned away, by the bound they hit ("requests", "bytes" or "model_queue")
        self.rejected: dict[str, int] = {"requests": 0, "bytes": 0, "model_queue": 0}
        #: completions per second measured while the server was busy throughout (None: not yet)
        self.busy_rate: float | None = None
        #: models with requests in the server or a learnt limit (so bounded by both, not by names sent)
        self.models: dict[str, ModelLoad] = {}
        self._clock = clock
        self._window_start = clock()
        self._window_done = 0
        self._window_ran_dry = False

    @property
    def request_limit(self) -> int:
        """The bound now: the configured one, or less once the busy completion rate is known."""
        if self.busy_rate is None:
            return self.limits.max_requests
        adaptive = max(MIN_ADAPTIVE_REQUESTS, math.ceil(self.busy_rate * TARGET_WAIT_S))
        return min(self.limits.max_requests, adaptive)

    @property
    def unnamed_limit(self) -> int:
        """The bound for a request whose model is not known yet (a gRPC call before its message)."""
        limit = self.request_limit
        learnt = [load.limit for load in self.models.values()]
        if learnt and None not in learnt:
            return min(limit, sum(math.floor(value) for value in learnt if value is not None))
        return limit

    def admit(self, size: int, model: str | None = None) -> Ticket:
        """Admit one request of ``size`` bytes (its body or message; 0 when unknown yet) for ``model``
        (None when not known yet: :meth:`Ticket.assign` names it later)."""
        refused = self.refusal(size, model)
        if refused is not None:
            raise refused
        self.requests += 1
        self.bytes += size
        ticket = Ticket(self, size)
        if model is not None:
            ticket.model = model
            self._load(model).requests += 1
        return ticket

    def refusal(self, size: int, model: str | None = None, *, count: bool = True) -> Overloaded | None:
        """The error a request of ``size`` bytes for ``model`` is turned away with now (counted as
        turned away unless ``count`` is False), or None if it would be admitted: what :meth:`admit`
        checks, for a caller that answers a refusal without ever making a request of it (the REST
        connection's door)."""
        self._roll_window()
        limit = self.request_limit if model is not None else self.unnamed_limit
        if self.requests >= limit:
            self.rejected["requests"] += int(count)
            return Overloaded(
                f"The server is at its limit of {limit} requests in progress "
                "(--max_inflight_requests, and what it completes in a second); retry later"
            )
        if self.requests and self.bytes + size > self.limits.max_bytes:
            self.rejected["bytes"] += int(count)
            return Overloaded(
                f"The server is at its limit of {self.limits.max_bytes} request bytes in progress "
                "(--max_inflight_bytes); retry later"
            )
        return None if model is None else self._model_refusal(model, count)

    def _load(self, model: str) -> ModelLoad:
        load = self.models.get(model)
        if load is None:
            load = self.models[model] = ModelLoad()
        return load

    def _model_refusal(self, model: str, count: bool = True) -> Overloaded | None:
        load = self.models.get(model)
        if load is not None and load.limit is not None and load.requests >= math.floor(load.limit):
            self.rejected["model_queue"] += int(count)
            return Overloaded(
                f"Model {model} has as many requests in progress as its batch queue holds "
                f"({math.floor(load.limit)}); retry later"
            )
        return None

    def _completed(self, model: str | None, failure: BaseException | None) -> None:
        if model is not None:
            load = self.models[model]
            if isinstance(failure, BatchQueueFull):
                held = load.requests - 1  # what the server held besides the request that overflowed
                if held >= MIN_MODEL_LIMIT:
                    load.limit = float(held) if load.limit is None else min(load.limit, float(held))
            elif failure is None and load.limit is not None:
                load.limit += 1.0 / load.limit
                if load.limit >= self.limits.max_requests:
                    load.limit = None
            load.requests -= 1
            if load.requests == 0 and load.limit is None:
                del self.models[model]
        self._window_done += 1
        if self.requests == 0:
            self._window_ran_dry = True
        self._roll_window()

    def _roll_window(self) -> None:
        now = self._clock()
        elapsed = now - self._window_start
        if elapsed < RATE_WINDOW_S:
            return
        if not self._window_ran_dry and self.requests > 0 and self._window_done > 0:
            rate = self._window_done / elapsed
            self.busy_rate = rate if self.busy_rate is None else 0.5 * (self.busy_rate + rate)
        self._window_start, self._window_done, self._window_ran_dry = now, 0, self.requests == 0


class Ticket:
    """One admitted request: ``release()`` once when it is answered (``with`` does it)."""

    __slots__ = ("_admission", "size", "model")

    def __init__(self, admission: Admission, size: int) -> None:
        self._admission = admission
        self.size = size
        self.model: str | None = None

    def grow(self, extra: int) -> None:
        """Charge bytes learnt after admission (a chunked body's real size): never refused."""
        self._admission.bytes += extra
        self.size += extra

    def assign(self, model: str) -> None:
        """Name the model of a request admitted unnamed; raises ``Overloaded`` past the model's limit
        (the ticket stays to be released)."""
        admission = self._admission
        refused = admission._model_refusal(model)
        if refused is not None:
            raise refused
        self.model = model
        admission._load(model).requests += 1

    def release(self, failure: BaseException | None = None) -> None:
        """``failure``: the error the request was answered with (None: a result), to learn from."""
        admission = self._admission
        admission.requests -= 1
        admission.bytes -= self.size
        self.size = 0
        admission._completed(self.model, failure)

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, exc_type: object, failure: BaseException | None, traceback: object) -> None:
        self.release(failure)
