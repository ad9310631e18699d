"""Decides whether an unbatched model call runs on the event loop or on the executor.

Handing a call to a worker thread and back costs about 100-170 µs here (``call_soon_threadsafe``
wake-ups and GIL hand-offs), several times what a small model takes (half_plus_two: ~25-45 µs in a
TF Session). Measured with ``hey`` on half_plus_two, running them inline raised REST throughput from
~980 to ~1330 requests/s at concurrency 1 and from ~1270 to ~1980 at 32. Slow models must never run
inline: they would stall every other request. So each (version, signature) starts
on the executor, and moves inline only while the moving average of its measured run time stays
under ``threshold_s``; one slow call moves it back. Batches never run inline (see ``batcher``): a
loop busy with model calls stops reading the requests that would have joined the next batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

#: Calls measured on the executor before a signature may go inline.
WARMUP_CALLS: Final = 32
#: Run-time average (seconds) under which calls run inline: about one executor round trip under load.
DEFAULT_THRESHOLD_S: Final = 500e-6
#: A request this large is never run inline (copying it alone would cost more than the hop).
MAX_INLINE_BYTES: Final = 64 * 1024
_ALPHA: Final = 0.1


@dataclass(slots=True)
class _Estimate:
    calls: int = 0
    average_s: float = 0.0


@dataclass(slots=True)
class InlinePolicy:
    """Per-key moving average of run time. Loop-affine (no locking needed)."""

    threshold_s: float = DEFAULT_THRESHOLD_S
    _estimates: dict[object, _Estimate] = field(default_factory=dict)

    def inline(self, key: object, request_bytes: int) -> bool:
        """Whether the next call for ``key`` should run on the loop."""
        estimate = self._estimates.get(key)
        return (
            estimate is not None
            and estimate.calls >= WARMUP_CALLS
            and estimate.average_s < self.threshold_s
            and request_bytes <= MAX_INLINE_BYTES
        )

    def record(self, key: object, seconds: float) -> None:
        """Add one measured run time; a call over ten times the threshold resets the average to it."""
        estimate = self._estimates.setdefault(key, _Estimate())
        if estimate.calls == 0 or seconds > 10 * self.threshold_s:
            estimate.average_s = seconds
        else:
            estimate.average_s += _ALPHA * (seconds - estimate.average_s)
        estimate.calls += 1
