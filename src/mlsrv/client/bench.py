"""The load generator behind ``mlsrv bench``: closed loop (``--concurrency``) and open loop (``--rate``).

Transport-free: the caller passes ``send(i)``, an async function performing request ``i`` (choosing the
input, the client and the protocol is the caller's job). ``send`` signals failure by raising; an
:class:`~mlsrv.errors.MlsrvError` is classified by its code, anything else as ``UNKNOWN``.

Open loop follows wrk2 / perf_analyzer: a scheduler fixes each request's *intended* start time (constant
``1/rate`` spacing or seeded exponential gaps) and latency is measured from that time, so a slow server
that makes the client fall behind shows up as latency instead of being hidden (no coordinated omission).
Requests started more than ``late_threshold_s`` after their intended time are counted ``late``; when
``max_in_flight`` requests are outstanding, further ones are counted ``dropped``, not sent, and not in
the latency stats. Timing resolution is the event loop's timer, about 1 ms.

Measurement: requests whose (intended) start is inside the warmup are never counted, even if they end
after it; ``--requests N`` issues exactly N measured requests. A duration-bounded run also has a hard stop
at ``warmup + duration + timeout + 1 s``: requests still running then are cancelled and counted as
``CANCELLED``. Throughput counts successful requests over the measured window.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Final, Literal

from mlsrv.client.bench_record import Recorder
from mlsrv.client.bench_report import BenchReport
from mlsrv.client.bench_spec import Arrival, BenchSpec
from mlsrv.errors import Cancelled, UsageError

SendFn = Callable[[int], Awaitable[object]]

#: Extra time after ``duration + timeout`` before in-flight requests are cancelled.
HARD_STOP_SLACK_S: Final = 1.0


@dataclass(frozen=True)
class ProgressSnapshot:
    """Live counters handed to ``on_progress`` about once per ``progress_interval_s`` (measured requests only)."""

    elapsed_s: float
    phase: Literal["warmup", "measure", "drain"]
    completed: int
    errors: int
    in_flight: int
    late: int
    dropped: int


ProgressFn = Callable[[ProgressSnapshot], None]


def arrival_offsets(rate: float, arrival: Arrival, seed: int = 0) -> Iterator[float]:
    """Intended start offsets (seconds from the run start): ``k / rate``, or a seeded Poisson process."""
    if arrival == "constant":
        k = 0
        while True:
            yield k / rate
            k += 1
    rng = random.Random(seed)
    t = 0.0
    while True:
        yield t
        t += rng.expovariate(rate)


async def run_bench(
    spec: BenchSpec,
    send: SendFn,
    *,
    on_progress: ProgressFn | None = None,
    progress_interval_s: float = 1.0,
    meta: dict[str, str] | None = None,
) -> BenchReport:
    """Run one load pattern against ``send`` on the running loop and report it. Raises ``UsageError``."""
    spec.validate()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    recorder = await record_bench(spec, send, on_progress=on_progress, progress_interval_s=progress_interval_s)
    return recorder.to_report(spec, started_at=started_at, meta=meta)


async def run_sweep(
    spec: BenchSpec,
    levels: Sequence[float],
    send: SendFn,
    *,
    on_progress: ProgressFn | None = None,
    meta: dict[str, str] | None = None,
) -> list[BenchReport]:
    """One run per level, in order: concurrencies for a closed-loop ``spec``, rates for an open-loop one."""
    specs = [level_spec(spec, level) for level in levels]
    return [await run_bench(s, send, on_progress=on_progress, meta=meta) for s in specs]


def level_spec(spec: BenchSpec, level: float) -> BenchSpec:
    """``spec`` at one sweep level (validated); closed-loop levels must be whole numbers."""
    if spec.mode == "closed":
        if level != int(level):
            raise UsageError(f"concurrency levels must be integers, got {level}")
        return replace(spec, concurrency=int(level)).validate()
    return replace(spec, rate=float(level)).validate()


async def record_bench(
    spec: BenchSpec,
    send: SendFn,
    *,
    on_progress: ProgressFn | None = None,
    progress_interval_s: float = 1.0,
    phase_s: float = 0.0,
) -> Recorder:
    """Run ``spec`` and return the raw tally (what a worker process sends home to be merged).

    ``phase_s`` shifts an open loop's schedule so workers sharing one rate interleave their arrivals.
    """
    spec.validate()
    return await _Engine(spec, send, on_progress, progress_interval_s, phase_s).run()


if sys.version_info >= (3, 11):

    async def _call(send: SendFn, i: int, timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            await send(i)

else:  # pragma: no cover - Python 3.10

    async def _call(send: SendFn, i: int, timeout_s: float) -> None:
        await asyncio.wait_for(send(i), timeout_s)


class _Engine:
    """One run on one event loop: issues requests, records the measured ones into a ``Recorder``."""

    def __init__(
        self, spec: BenchSpec, send: SendFn, on_progress: ProgressFn | None, interval_s: float, phase_s: float
    ) -> None:
        self.spec = spec
        self.send = send
        self.on_progress = on_progress
        self.interval_s = interval_s
        self.phase_s = phase_s
        self.loop = asyncio.get_running_loop()
        self.t0 = self.loop.time()
        self.measure_start = self.t0 + spec.warmup_s
        self.issue_end = math.inf if spec.duration_s is None else self.measure_start + spec.duration_s
        self.rec = Recorder(self.measure_start)
        self.last_end = self.measure_start
        self.in_flight = 0
        self.issued = 0
        self.next_index = 0
        self.stopped = False
        self.hit_limit = False

    async def run(self) -> Recorder:
        cpu0 = time.process_time()
        # the client's CPU while it issues requests (the tail that only waits for the last answers would
        # dilute it): what says whether the client could keep up with the rate asked of it
        issuing: list[tuple[float, float]] = []
        if math.isfinite(self.issue_end):
            self.loop.call_at(
                self.issue_end, lambda: issuing.append((time.process_time() - cpu0, self.loop.time() - self.t0))
            )
        ticker = self.loop.create_task(self._tick()) if self.on_progress is not None else None
        body = self._closed() if self.spec.mode == "closed" else self._open()
        try:
            if math.isfinite(self.issue_end):
                limit = self.issue_end + self.spec.timeout_s + HARD_STOP_SLACK_S - self.loop.time()
                await asyncio.wait_for(body, limit)
            else:
                await body
        except asyncio.TimeoutError:
            pass  # hard stop: cancelled requests were recorded as CANCELLED
        finally:
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker  # re-raises an exception from on_progress
        end = self.last_end if self.hit_limit else max(self.last_end, min(self.issue_end, self.loop.time()))
        self.rec.window_s = max(0.0, end - self.measure_start)
        self.rec.cpu.append(issuing[0] if issuing else (time.process_time() - cpu0, self.loop.time() - self.t0))
        return self.rec

    def _may_issue(self, start: float) -> bool:
        """Claim a slot for a request starting at ``start``; False once the run should stop issuing."""
        if start >= self.issue_end:
            self.stopped = True
            return False
        if start >= self.measure_start:
            if self.spec.requests is not None and self.issued >= self.spec.requests:
                self.stopped = self.hit_limit = True
                return False
            self.issued += 1
        return True

    async def _closed(self) -> None:
        workers = [self.loop.create_task(self._closed_worker()) for _ in range(self.spec.concurrency or 0)]
        try:
            await asyncio.gather(*workers)
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _closed_worker(self) -> None:
        while True:
            start = self.loop.time()
            if not self._may_issue(start):
                return
            self.in_flight += 1
            self.next_index += 1
            await self._one(self.next_index - 1, start, start >= self.measure_start)

    async def _open(self) -> None:
        spec, loop = self.spec, self.loop
        tasks: set[asyncio.Task[None]] = set()
        try:
            for offset in arrival_offsets(spec.rate or 0.0, spec.arrival, spec.seed):
                intended = self.t0 + self.phase_s + offset
                if not self._may_issue(intended):
                    break
                now = loop.time()
                # NOTE: sleep(0) while catching up still lets responses be processed between sends.
                await asyncio.sleep(max(0.0, intended - now))
                measured = intended >= self.measure_start
                if measured and loop.time() - intended > spec.late_threshold_s:
                    self.rec.late += 1
                if self.in_flight >= spec.max_in_flight:
                    if measured:
                        self.rec.dropped += 1
                    continue
                self.in_flight += 1
                task = loop.create_task(self._one(self.next_index, intended, measured))
                self.next_index += 1
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            while tasks:
                await asyncio.wait(set(tasks))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _one(self, i: int, start: float, measured: bool) -> None:
        """Perform request ``i``; latency runs from ``start`` (the intended start in open loop)."""
        error: BaseException | None = None
        try:
            await _call(self.send, i, self.spec.timeout_s)
        except asyncio.CancelledError:
            if measured:
                self.rec.record_error(Cancelled("cancelled at the run's hard stop"), self.loop.time())
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is data for the error breakdown
            error = exc
        finally:
            self.in_flight -= 1
        if not measured:
            return
        end = self.loop.time()
        self.last_end = max(self.last_end, end)
        if error is None:
            self.rec.record_ok(end - start, end)
        else:
            self.rec.record_error(error, end)

    async def _tick(self) -> None:
        assert self.on_progress is not None
        while True:
            await asyncio.sleep(self.interval_s)
            now = self.loop.time()
            phase: Literal["warmup", "measure", "drain"] = (
                "warmup" if now < self.measure_start else "drain" if self.stopped else "measure"
            )
            rec = self.rec
            errors = rec.error_count
            self.on_progress(
                ProgressSnapshot(
                    elapsed_s=now - self.t0,
                    phase=phase,
                    completed=rec.ok + errors,
                    errors=errors,
                    in_flight=self.in_flight,
                    late=rec.late,
                    dropped=rec.dropped,
                )
            )
