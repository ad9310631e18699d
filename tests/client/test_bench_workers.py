"""``--workers``: the split of a load pattern and the exact merge of results from spawned processes."""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from mlsrv.client.bench import SendFn
from mlsrv.client.bench_spec import BenchSpec
from mlsrv.client.bench_workers import run_bench_workers, split_spec
from mlsrv.errors import TransportError, UsageError


@asynccontextmanager
async def sleep_send(delay_s: float) -> AsyncIterator[SendFn]:
    """Picklable (top-level) factory: each worker process builds its own fake client here."""

    async def send(i: int) -> None:
        await asyncio.sleep(delay_s)

    yield send


@asynccontextmanager
async def unreachable(target: str) -> AsyncIterator[SendFn]:
    raise TransportError(f"cannot connect to {target}")
    yield  # pragma: no cover


def test_split_divides_load_evenly() -> None:
    shares = split_spec(BenchSpec(concurrency=5, requests=7, duration_s=1.0), 2)
    assert [(s.concurrency, s.requests) for s, _ in shares] == [(3, 4), (2, 3)]
    opened = split_spec(BenchSpec(rate=300.0, duration_s=1.0, max_in_flight=5, seed=1), 3)
    assert [s.rate for s, _ in opened] == [100.0, 100.0, 100.0]
    assert [phase for _, phase in opened] == pytest.approx([0.0, 1 / 300, 2 / 300])
    assert [(s.max_in_flight, s.seed) for s, _ in opened] == [(2, 1), (2, 2), (2, 3)]
    poisson = split_spec(BenchSpec(rate=300.0, arrival="poisson", duration_s=1.0), 3)
    assert {phase for _, phase in poisson} == {0.0} and len({s.seed for s, _ in poisson}) == 3


@pytest.mark.parametrize(
    ("spec", "workers", "message"),
    [
        (BenchSpec(concurrency=2, duration_s=1.0), 3, "--concurrency"),
        (BenchSpec(rate=10.0, requests=2), 3, "--requests"),
        (BenchSpec(rate=10.0, requests=2), 0, "--workers"),
    ],
)
def test_impossible_splits_are_usage_errors(spec: BenchSpec, workers: int, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        split_spec(spec, workers)


def test_one_worker_runs_in_process() -> None:
    report = run_bench_workers(BenchSpec(concurrency=2, requests=10), 1, functools.partial(sleep_send, 0.001))
    assert report.requests.ok == 10 and report.client.workers == 1


def test_two_processes_merge_histograms_counts_and_series() -> None:
    spec = BenchSpec(concurrency=4, duration_s=0.5)
    report = run_bench_workers(spec, 2, functools.partial(sleep_send, 0.005), meta={"target": "fake"})
    assert report.spec == spec and report.meta == {"target": "fake"}
    assert report.client.workers == 2 and report.client.cpu_s > 0
    assert report.requests.ok == report.latency.count == sum(p.completed for p in report.series)
    assert 0.4 * 4 / 0.005 < report.rps <= 1.05 * 4 / 0.005
    assert 5 <= report.latency.p50_ms < 15


def test_two_processes_open_loop_issue_exactly_n() -> None:
    report = run_bench_workers(BenchSpec(rate=400.0, requests=41), 2, functools.partial(sleep_send, 0.002))
    assert report.mode == "open" and report.requests.ok == 41 and report.requests.dropped == 0


def test_worker_client_errors_reach_the_caller() -> None:
    with pytest.raises(TransportError, match="cannot connect to http://nowhere"):
        run_bench_workers(BenchSpec(concurrency=2, requests=4), 2, functools.partial(unreachable, "http://nowhere"))


@asynccontextmanager
async def first_unreachable(index_file: str) -> AsyncIterator[SendFn]:
    """The first worker to get here cannot connect; the other is ready and waits for the start signal."""
    try:
        fd = os.open(index_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        async with sleep_send(0.001) as send:
            yield send
        return
    os.close(fd)
    raise TransportError("cannot connect")


def test_one_failing_worker_stops_the_others_without_waiting(tmp_path: Path) -> None:
    t0 = time.monotonic()
    with pytest.raises(TransportError, match="cannot connect"):
        factory = functools.partial(first_unreachable, str(tmp_path / "claimed"))
        run_bench_workers(BenchSpec(concurrency=2, requests=4), 2, factory, start_timeout_s=30)
    assert time.monotonic() - t0 < 10
