"""``bench --workers N``: one load pattern split over N client processes, results merged exactly.

One Python process tops out at a few thousand requests/s of client work; past that the client, not the
server, is measured. Each worker process (``spawn`` context, so no forked event loops or sockets) builds its
own client through ``make_send``, reports ready, waits for a common start signal, runs its share with
:func:`~mlsrv.client.bench.record_bench` and sends its :class:`Recorder` home, where histograms,
counts and per-second series are merged.

The seam: ``make_send`` is a picklable zero-argument callable (a top-level function, or
``functools.partial`` of one, e.g. ``partial(open_send, target, protocol, input_file)``) returning an
async context manager that yields ``send(i)``. It is called inside the worker's event loop, so clients
that need a running loop (aiohttp sessions, grpc.aio channels) are created where they are used.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import pickle
import queue
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from multiprocessing.synchronize import Event
from typing import TYPE_CHECKING, Any, Final

from mlsrv.client.bench import HARD_STOP_SLACK_S, SendFn, record_bench
from mlsrv.client.bench_record import Recorder
from mlsrv.client.bench_report import BenchReport
from mlsrv.client.bench_spec import BenchSpec
from mlsrv.errors import MlsrvError, UnknownError, UsageError

SendFactory = Callable[[], AbstractAsyncContextManager[SendFn]]
if TYPE_CHECKING:
    import multiprocessing.queues

    _Results = multiprocessing.queues.Queue[tuple[int, str, Any]]  # (worker index, status, payload)

#: Time a finished worker gets to exit before it is terminated.
_JOIN_S: Final = 5.0


@dataclass(frozen=True)
class _Job:
    index: int
    spec: BenchSpec
    phase_s: float
    make_send: SendFactory
    start_timeout_s: float


def split_spec(spec: BenchSpec, workers: int) -> list[tuple[BenchSpec, float]]:
    """Each worker's ``(spec, phase_s)``: concurrency, requests and in-flight bound divided as evenly as
    integers allow; the rate divided equally, constant arrivals phase-shifted so merged arrivals stay
    evenly spaced, Poisson streams given distinct seeds (their sum is again Poisson at the full rate)."""
    spec.validate()
    if workers < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    if spec.concurrency is not None and spec.concurrency < workers:
        raise UsageError(f"--workers ({workers}) must not exceed --concurrency ({spec.concurrency})")
    if spec.requests is not None and spec.requests < workers:
        raise UsageError(f"--workers ({workers}) must not exceed --requests ({spec.requests})")
    shares = []
    for k in range(workers):
        share = replace(
            spec,
            concurrency=None if spec.concurrency is None else _part(spec.concurrency, k, workers),
            requests=None if spec.requests is None else _part(spec.requests, k, workers),
            rate=None if spec.rate is None else spec.rate / workers,
            max_in_flight=math.ceil(spec.max_in_flight / workers),
            seed=spec.seed + k,
        )
        phase = k / spec.rate if spec.rate is not None and spec.arrival == "constant" else 0.0
        shares.append((share, phase))
    return shares


def run_bench_workers(
    spec: BenchSpec,
    workers: int,
    make_send: SendFactory,
    *,
    meta: dict[str, str] | None = None,
    start_timeout_s: float = 60.0,
) -> BenchReport:
    """Blocking: run ``spec`` over ``workers`` processes (1 = in this process) and merge the results.

    Raises ``UsageError`` for an impossible split, and re-raises a worker's ``MlsrvError`` (for instance a
    ``TransportError`` from building its client); other worker failures become ``UnknownError``.
    """
    shares = split_spec(spec, workers)
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if workers == 1:
        merged = asyncio.run(_run_share(make_send, shares[0][0], 0.0))
    else:
        jobs = [_Job(k, s, phase, make_send, start_timeout_s) for k, (s, phase) in enumerate(shares)]
        merged = _run_processes(jobs, spec, start_timeout_s)
    return merged.to_report(spec, started_at=started_at, meta=meta)


def _part(total: int, k: int, workers: int) -> int:
    return total // workers + (1 if k < total % workers else 0)


async def _run_share(make_send: SendFactory, spec: BenchSpec, phase_s: float) -> Recorder:
    async with make_send() as send:
        return await record_bench(spec, send, phase_s=phase_s)


def _run_processes(jobs: list[_Job], spec: BenchSpec, start_timeout_s: float) -> Recorder:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    results: _Results = ctx.Queue()
    procs = [
        ctx.Process(target=_worker_main, args=(job, start, results), name=f"mlsrv-bench-{job.index}", daemon=True)
        for job in jobs
    ]
    for proc in procs:
        proc.start()
    finished = False
    try:
        _collect(results, procs, "ready", time.monotonic() + start_timeout_s)
        start.set()
        run_s = None if spec.duration_s is None else spec.warmup_s + spec.duration_s + spec.timeout_s
        deadline = math.inf if run_s is None else time.monotonic() + run_s + HARD_STOP_SLACK_S + start_timeout_s
        recorders = _collect(results, procs, "done", deadline)
        finished = True
    finally:
        for proc in procs:
            proc.join(_JOIN_S if finished else 0)  # after a failure, do not wait for the others
            if proc.is_alive():
                proc.terminate()
                proc.join()
    merged: Recorder = recorders[0]
    for other in recorders[1:]:
        merged.merge(other)
    return merged


def _collect(results: _Results, procs: list[Any], want: str, deadline: float) -> list[Any]:
    """Wait until every worker reported ``want``; raise on a worker error, death or the deadline."""
    got: dict[int, Any] = {}
    while len(got) < len(procs):
        try:
            index, status, payload = results.get(timeout=0.2)
        except queue.Empty:
            dead = [p for k, p in enumerate(procs) if k not in got and p.exitcode is not None]
            if dead:
                raise UnknownError(f"bench worker {dead[0].name} exited with code {dead[0].exitcode}") from None
            if time.monotonic() > deadline:
                raise UnknownError(f"bench workers did not report {want!r} in time") from None
            continue
        if status == "error":
            if isinstance(payload, MlsrvError):
                raise payload
            raise UnknownError(f"bench worker {index} failed: {payload}")
        if status == want:
            got[index] = payload
    return [got[k] for k in range(len(procs))]


def _worker_main(job: _Job, start: Event, results: _Results) -> None:
    """Entry point of a worker process: reports ``ready``, then ``done`` with a Recorder, or ``error``."""
    try:
        recorder = asyncio.run(_worker(job, start, results))
    except BaseException as exc:  # noqa: BLE001 - everything is reported to the parent
        results.put((job.index, "error", _picklable(exc)))
    else:
        results.put((job.index, "done", recorder))


async def _worker(job: _Job, start: Event, results: _Results) -> Recorder:
    async with job.make_send() as send:
        results.put((job.index, "ready", None))
        started = await asyncio.get_running_loop().run_in_executor(None, start.wait, job.start_timeout_s)
        if not started:
            raise TimeoutError("no start signal from the bench parent process")
        return await record_bench(job.spec, send, phase_s=job.phase_s)


def _picklable(exc: BaseException) -> object:
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 - fall back to text for exceptions that do not pickle
        return f"{type(exc).__name__}: {exc}"
    return exc if isinstance(exc, MlsrvError) else f"{type(exc).__name__}: {exc}"
