"""The load generator against fake async ``send`` functions: closed loop, open loop, counting rules."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time

import pytest

import mlsrv.client.bench as bench_module
from mlsrv.client.bench import ProgressSnapshot, arrival_offsets, level_spec, run_bench, run_sweep
from mlsrv.client.bench_report import BenchReport
from mlsrv.client.bench_spec import BenchSpec
from mlsrv.errors import Overloaded, UsageError


def _run(spec: BenchSpec, send: bench_module.SendFn, **kwargs: object) -> BenchReport:
    return asyncio.run(run_bench(spec, send, **kwargs))  # type: ignore[arg-type]


async def _sleep_5ms(i: int) -> None:
    await asyncio.sleep(0.005)


def test_closed_loop_throughput_matches_concurrency_over_latency() -> None:
    report = _run(BenchSpec(concurrency=4, duration_s=0.4), _sleep_5ms)
    assert report.mode == "closed"
    assert report.requests.errors == 0 and report.requests.ok == report.requests.sent > 0
    assert 0.005 <= report.latency.p50_ms / 1e3 < 0.015
    assert 0.4 * 4 / 0.005 < report.rps <= 1.05 * 4 / 0.005
    # Little's law: in-flight = throughput x latency = the concurrency.
    assert report.rps * report.latency.mean_ms / 1e3 == pytest.approx(4, rel=0.25)
    assert report.duration_s == pytest.approx(0.4, abs=0.05)
    assert report.inferences_per_s == report.rps


def test_open_loop_counts_queueing_that_closed_loop_hides() -> None:
    """No coordinated omission: a serial 10 ms server offered 200 req/s queues, and open loop shows it."""

    async def scenario() -> tuple[BenchReport, BenchReport]:
        lock = asyncio.Lock()

        async def serial_server(i: int) -> None:
            async with lock:
                await asyncio.sleep(0.010)

        closed = await run_bench(BenchSpec(concurrency=1, requests=20), serial_server)
        opened = await run_bench(BenchSpec(rate=200, requests=60), serial_server)
        return closed, opened

    closed, opened = asyncio.run(scenario())
    assert 10 <= closed.latency.p50_ms < 20 and closed.latency.p99_ms < 40
    # 60 arrivals in 0.3 s served one per ~10 ms: the last waits ~0.3 s, the median ~0.15 s.
    assert opened.latency.p50_ms > 5 * closed.latency.p50_ms
    assert opened.latency.p99_ms > 200
    assert opened.requests.ok == 60 and opened.requests.dropped == 0
    assert opened.rps < 120  # served rate, not offered rate


def test_requests_mode_stops_exactly_at_n() -> None:
    calls: list[int] = []

    async def send(i: int) -> None:
        calls.append(i)
        await asyncio.sleep(0.001)

    closed = _run(BenchSpec(concurrency=3, requests=10), send)
    assert closed.requests.sent == closed.requests.ok == 10 and len(calls) == 10
    calls.clear()
    opened = _run(BenchSpec(rate=1000, requests=25), send)
    assert opened.requests.sent == 25 and calls == list(range(25))
    calls.clear()
    warmed = _run(BenchSpec(concurrency=2, requests=10, warmup_s=0.05), send)
    assert warmed.requests.sent == 10 and len(calls) > 10


def test_warmup_requests_are_excluded() -> None:
    async def send(i: int) -> None:
        if i < 3:
            raise Overloaded("warming up")
        await asyncio.sleep(0.05 if i < 5 else 0.001)

    cold = _run(BenchSpec(concurrency=1, requests=20), send)
    assert cold.requests.errors == 3 and cold.latency.max_ms >= 50
    warm = _run(BenchSpec(concurrency=1, requests=20, warmup_s=0.15), send)
    assert warm.requests.errors == 0 and warm.requests.ok == 20
    assert warm.latency.max_ms < 50


class _BadGateway(Exception):
    http_status = 502


def test_error_breakdown_by_code_status_and_kind() -> None:
    async def send(i: int) -> None:
        await asyncio.sleep(0)
        if i % 4 == 0:
            raise Overloaded("batch queue full")
        if i % 4 == 1:
            raise ValueError("boom")
        if i % 8 == 2:
            raise _BadGateway("proxy")

    report = _run(BenchSpec(concurrency=2, requests=40), send)
    rows = {(e.code, e.http_status, e.kind): e.count for e in report.errors}
    assert rows == {
        ("UNAVAILABLE", 503, "Overloaded"): 10,
        ("UNKNOWN", None, "ValueError"): 10,
        ("UNKNOWN", 502, "_BadGateway"): 5,
    }
    assert report.errors[0].sample in ("batch queue full", "boom")
    assert report.requests.ok == 15 and report.error_rate == pytest.approx(25 / 40)
    assert sum(p.errors for p in report.series) == 25
    assert sum(p.completed for p in report.series) == 40


def test_request_timeout_counts_as_deadline_exceeded() -> None:
    async def send(i: int) -> None:
        await asyncio.sleep(5)

    report = _run(BenchSpec(concurrency=2, requests=2, timeout_s=0.05), send)
    assert [(e.code, e.kind, e.count) for e in report.errors] == [("DEADLINE_EXCEEDED", "ClientTimeout", 2)]


def test_hard_stop_cancels_requests_that_ignore_their_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_module, "HARD_STOP_SLACK_S", 0.1)

    async def stubborn(i: int) -> None:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            await asyncio.sleep(5)

    t0 = time.monotonic()
    report = _run(BenchSpec(concurrency=2, duration_s=0.1, timeout_s=0.1), stubborn)
    assert time.monotonic() - t0 < 2
    assert [(e.code, e.count) for e in report.errors] == [("CANCELLED", 2)]


def test_open_loop_drops_beyond_max_in_flight() -> None:
    async def send(i: int) -> None:
        await asyncio.sleep(0.05)

    report = _run(BenchSpec(rate=500, duration_s=0.2, max_in_flight=2), send)
    req = report.requests
    assert req.sent <= 2 * (0.2 / 0.05 + 2)
    assert req.dropped >= 60
    assert req.sent + req.dropped == pytest.approx(100, abs=2)
    assert report.latency.count == req.ok  # dropped requests record no latency


def test_open_loop_counts_late_starts_when_client_is_blocked() -> None:
    async def blocking(i: int) -> None:
        time.sleep(0.02)  # a CPU-bound client: the scheduler cannot start the next one on time

    report = _run(BenchSpec(rate=200, requests=10, late_threshold_s=0.005), blocking)
    assert report.requests.late >= 5
    assert report.latency.p99_ms > 20  # lateness is part of the latency


def test_progress_reports_phases_and_growing_counts() -> None:
    seen: list[ProgressSnapshot] = []
    spec = BenchSpec(concurrency=2, duration_s=0.2, warmup_s=0.2)
    _run(spec, _sleep_5ms, on_progress=seen.append, progress_interval_s=0.04)
    phases = [s.phase for s in seen]
    assert phases[0] == "warmup" and "measure" in phases
    completed = [s.completed for s in seen]
    assert completed == sorted(completed) and completed[-1] > 0


def test_progress_callback_errors_surface() -> None:
    def broken(snapshot: ProgressSnapshot) -> None:
        raise RuntimeError("render failed")

    with pytest.raises(RuntimeError, match="render failed"):
        _run(BenchSpec(concurrency=1, duration_s=0.1), _sleep_5ms, on_progress=broken, progress_interval_s=0.02)


def test_constant_arrivals_are_evenly_spaced() -> None:
    offsets = list(itertools.islice(arrival_offsets(400.0, "constant"), 5))
    assert offsets == pytest.approx([0.0, 0.0025, 0.005, 0.0075, 0.01])


def test_poisson_arrivals_are_seeded_exponential_gaps() -> None:
    first = list(itertools.islice(arrival_offsets(100.0, "poisson", seed=1), 5001))
    again = list(itertools.islice(arrival_offsets(100.0, "poisson", seed=1), 5001))
    other = list(itertools.islice(arrival_offsets(100.0, "poisson", seed=2), 5001))
    assert first == again and first != other
    gaps = [b - a for a, b in itertools.pairwise(first)]
    assert statistics.fmean(gaps) == pytest.approx(0.01, rel=0.05)
    assert statistics.stdev(gaps) / statistics.fmean(gaps) == pytest.approx(1.0, rel=0.1)  # exponential CV = 1


def test_poisson_run_issues_the_requested_count() -> None:
    report = _run(BenchSpec(rate=2000, arrival="poisson", requests=30, seed=5), _sleep_5ms)
    assert report.requests.ok == 30 and report.spec.arrival == "poisson"


def test_sweep_runs_each_level_in_order() -> None:
    async def send(i: int) -> None:
        await asyncio.sleep(0.001)

    reports = asyncio.run(run_sweep(BenchSpec(concurrency=1, requests=6), [1, 3], send))
    assert [r.spec.concurrency for r in reports] == [1, 3]
    assert all(r.requests.ok == 6 for r in reports)
    assert level_spec(BenchSpec(rate=10, requests=1), 50).rate == 50.0
    with pytest.raises(UsageError, match="integers"):
        level_spec(BenchSpec(concurrency=1, requests=1), 1.5)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (BenchSpec(requests=1), "exactly one"),
        (BenchSpec(concurrency=1, rate=5, requests=1), "exactly one"),
        (BenchSpec(concurrency=1), "--duration or --requests"),
        (BenchSpec(concurrency=0, requests=1), "--concurrency"),
        (BenchSpec(rate=-1, requests=1), "--rate"),
        (BenchSpec(rate=1, requests=1, arrival="burst"), "--arrival"),  # type: ignore[arg-type]
        (BenchSpec(concurrency=1, duration_s=0), "--duration"),
        (BenchSpec(concurrency=1, requests=0), "--requests"),
        (BenchSpec(concurrency=1, requests=1, batch_size=0), "--batch-size"),
        (BenchSpec(concurrency=1, requests=1, timeout_s=0), "--timeout"),
    ],
)
def test_invalid_specs_are_usage_errors(spec: BenchSpec, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        _run(spec, _sleep_5ms)
