"""``Recorder``: the mutable tally of one run, mergeable across worker processes, turned into a report once.

Kept apart from :class:`BenchReport` so reports stay pure data while the recorder holds histograms
(the full one plus a coarse one per second), which is what makes an exact merge of ``--workers`` possible.
"""

from __future__ import annotations

import os
from typing import Final

from mlsrv.client.bench_report import (
    CLIENT_BOUND_CPU,
    BenchReport,
    ClientStats,
    ErrorCount,
    LatencyStats,
    RequestCounts,
    SeriesPoint,
)
from mlsrv.client.bench_spec import BenchSpec
from mlsrv.client.histogram import LatencyHistogram
from mlsrv.errors import Code, MlsrvError, TransportError

#: (canonical code name, HTTP status or None, exception class name)
ErrorKey = tuple[str, int | None, str]

_SAMPLE_CHARS: Final = 200
_PERCENTILES: Final = (50.0, 90.0, 95.0, 99.0, 99.9)


def error_key(exc: BaseException) -> ErrorKey:
    """Classify a failed request: ``MlsrvError`` by its code, a client-side timeout as ``DEADLINE_EXCEEDED``,
    anything else as ``UNKNOWN`` (transport or bug). An integer ``http_status`` attribute is kept if present,
    except on ``TransportError``: no model server answered, so there is no status to report."""
    status = None if isinstance(exc, TransportError) else getattr(exc, "http_status", None)
    http_status = status if isinstance(status, int) and not isinstance(status, bool) else None
    if isinstance(exc, MlsrvError):
        return exc.code.name, http_status, type(exc).__name__
    if isinstance(exc, TimeoutError):
        return Code.DEADLINE_EXCEEDED.name, http_status, "ClientTimeout"
    return Code.UNKNOWN.name, http_status, type(exc).__name__


class _Second:
    """Completions in one wall-clock second of the measurement window."""

    __slots__ = ("hist", "errors")

    def __init__(self) -> None:
        self.hist = LatencyHistogram(digits=2)
        self.errors = 0


class Recorder:
    """Tally of measured requests. Loop-affine (no locks); picklable, so a worker process can return it.

    Times passed in are the recording process's ``loop.time()``; ``start`` is the measurement start on
    that clock, so per-second indexes line up across workers that start together.
    """

    def __init__(self, start: float = 0.0) -> None:
        self.start = start
        self.hist = LatencyHistogram()
        self.seconds: dict[int, _Second] = {}
        self.errors: dict[ErrorKey, int] = {}
        self.samples: dict[ErrorKey, str] = {}
        self.late = 0
        self.dropped = 0
        self.window_s = 0.0
        self.cpu: list[tuple[float, float]] = []

    @property
    def ok(self) -> int:
        return self.hist.total

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def _second(self, t_end: float) -> _Second:
        index = max(0, int(t_end - self.start))
        second = self.seconds.get(index)
        if second is None:
            second = self.seconds[index] = _Second()
        return second

    def record_ok(self, latency_s: float, t_end: float) -> None:
        self.hist.record(latency_s)
        self._second(t_end).hist.record(latency_s)

    def record_error(self, exc: BaseException, t_end: float) -> None:
        key = error_key(exc)
        self.errors[key] = self.errors.get(key, 0) + 1
        if key not in self.samples:
            self.samples[key] = str(exc)[:_SAMPLE_CHARS]
        self._second(t_end).errors += 1

    def merge(self, other: Recorder) -> None:
        """Add another process's tally; its window ran concurrently with this one."""
        self.hist.merge(other.hist)
        for index, theirs in other.seconds.items():
            mine = self.seconds.setdefault(index, _Second())
            mine.hist.merge(theirs.hist)
            mine.errors += theirs.errors
        for key, count in other.errors.items():
            self.errors[key] = self.errors.get(key, 0) + count
            self.samples.setdefault(key, other.samples.get(key, ""))
        self.late += other.late
        self.dropped += other.dropped
        self.window_s = max(self.window_s, other.window_s)
        self.cpu.extend(other.cpu)

    def to_report(self, spec: BenchSpec, *, started_at: str = "", meta: dict[str, str] | None = None) -> BenchReport:
        """Freeze the tally into a :class:`BenchReport` (rates over ``window_s``, latencies in ms)."""
        ok, errors = self.ok, self.error_count
        sent = ok + errors
        rps = ok / self.window_s if self.window_s > 0 else 0.0
        return BenchReport(
            mode=spec.mode,
            spec=spec,
            duration_s=self.window_s,
            requests=RequestCounts(sent=sent, ok=ok, errors=errors, late=self.late, dropped=self.dropped),
            rps=rps,
            inferences_per_s=rps * spec.batch_size,
            error_rate=errors / sent if sent else 0.0,
            latency=self._latency(),
            errors=tuple(
                ErrorCount(code=k[0], http_status=k[1], kind=k[2], count=n, sample=self.samples.get(k, ""))
                for k, n in sorted(self.errors.items(), key=lambda kv: (-kv[1], kv[0][0], kv[0][2]))
            ),
            series=self._series(),
            client=self._client(),
            started_at=started_at,
            meta=dict(meta or {}),
        )

    def _latency(self) -> LatencyStats:
        h = self.hist
        p50, p90, p95, p99, p999 = (x * 1e3 for x in h.percentiles(_PERCENTILES))
        return LatencyStats(
            count=h.total, min_ms=h.min * 1e3, mean_ms=h.mean * 1e3, p50_ms=p50, p90_ms=p90,
            p95_ms=p95, p99_ms=p99, p999_ms=p999, max_ms=h.max * 1e3,
        )  # fmt: skip

    def _series(self) -> tuple[SeriesPoint, ...]:
        points = []
        for index in range(max(self.seconds, default=-1) + 1):
            second = self.seconds.get(index) or _Second()
            p50, p99 = second.hist.percentiles((50.0, 99.0))
            points.append(
                SeriesPoint(
                    second=index,
                    completed=second.hist.total + second.errors,
                    errors=second.errors,
                    p50_ms=p50 * 1e3,
                    p99_ms=p99 * 1e3,
                )
            )
        return tuple(points)

    def _client(self) -> ClientStats:
        if not self.cpu:
            return ClientStats()
        fraction = max(cpu / wall if wall > 0 else 0.0 for cpu, wall in self.cpu)
        wall_s = max(wall for _, wall in self.cpu)
        cpu_s = sum(cpu for cpu, _ in self.cpu)
        # bound when one worker saturates its core, or all of them the cores they may run on together
        # (workers pinned to fewer cores than there are workers never reach a whole core each)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        together = cpu_s / wall_s / min(cores, len(self.cpu)) if wall_s > 0 else 0.0
        return ClientStats(
            workers=len(self.cpu),
            cpu_s=cpu_s,
            wall_s=wall_s,
            cpu_fraction=fraction,
            bound=fraction >= CLIENT_BOUND_CPU or together >= CLIENT_BOUND_CPU,
        )
