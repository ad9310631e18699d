"""Dynamic batching: one Batcher per (model, version, signature), merged on dim 0, run on the executor.

TF Serving's ``SharedBatchScheduler`` + ``BatchingSession`` at Python size. Contract:

* ``submit`` is called on the event loop and never blocks it: merging (``np.concatenate``, padding), the
  model call and slicing the outputs happen in one executor job per batch (``batch_tensors``), even for
  a tiny model. That is where batches come from: while one batch runs on the executor the loop keeps
  reading requests, and they queue for the next batch. Batches run on the loop (an earlier design, for
  models faster than the executor hop) stopped the loop for every model call, so under gRPC load each
  request found itself alone and ran as a batch of one: measured on half_plus_two, gRPC c=32 went
  from ~2,200 req/s with batches of 1.0 row to ~4,200 req/s with ~10 rows (docs/benchmarks.md).
* When: a batch starts when a worker is free and either ``batch_timeout_s`` has passed since its first task
  was enqueued or the queued rows reach the execution batch size. With timeout 0 a free worker takes what
  is queued at once; the queue keeps filling while a batch runs, which is where the gain comes from.
  One exception to TF's rule: when every inference request in the server (the admission's count) is queued here
  or running in this batcher (``requests_in_flight``), nothing could join the batch, so it starts at
  once instead of waiting out the window: a lone request pays no batching latency, while under load
  (other requests being read, decoded or checked) the window applies as before.
* What: see ``batch_queue`` (queue bound, FIFO, splitting, cancelled and expired tasks, shape groups).
* A task with a deadline is answered ``DeadlineExceeded`` when it passes, wherever the task is: the
  caller is not held until a batch forms (a stuck or slow model would hold it indefinitely), and its
  rows not yet in a batch are never computed.
* At most ``num_batch_threads`` batches of this Batcher run at once. A failing batch fails every caller in
  it with the same error (``MlsrvError`` as raised, anything else as ``InternalError``); the next batch runs.
* ``stop`` rejects new tasks, flushes the gather window and finishes every queued and running task.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from mlsrv.batching_params import BatchingOptions
from mlsrv.errors import (
    DeadlineExceeded,
    InternalError,
    InvalidArgument,
    MlsrvError,
    Overloaded,
)
from mlsrv.server import batch_tensors
from mlsrv.server.batch_queue import DEADLINE_SLACK_S, QUEUE_TIMEOUT, BatchQueue, Piece, Task
from mlsrv.server.batch_tensors import RunFn, Tensors

log = logging.getLogger(__name__)

BatchCallback = Callable[[int, int, Sequence[float]], None]


@dataclass(frozen=True, slots=True)
class BatcherStats:
    """Counters since start; sums so a scraper can derive means (``processed_rows / batches``)."""

    batches: int
    failed_batches: int
    tasks: int
    input_rows: int
    processed_rows: int
    queue_delay_s_sum: float
    queue_delay_s_max: float
    rejected_full: int
    expired: int
    cancelled: int
    queued_rows: int
    running_batches: int

    @property
    def padding_rows(self) -> int:
        return self.processed_rows - self.input_rows


class Batcher:
    """Batches concurrent ``submit`` calls for one servable signature; see the module docstring.

    ``run`` is blocking (called on ``executor``) and must return arrays whose dim 0 equals the merged
    batch's. The caller (DataPlane) owns one Batcher per (model, version, signature) and calls
    ``start``/``stop`` around its life. ``on_batch(input_rows, processed_rows, queue_delays_s)`` is called
    on the loop after each executed batch, for metrics. All methods are loop-affine.
    """

    def __init__(
        self,
        run: RunFn,
        executor: Executor,
        options: BatchingOptions,
        *,
        name: str,
        on_batch: BatchCallback | None = None,
        requests_in_flight: Callable[[], int] | None = None,
    ) -> None:
        """``requests_in_flight`` counts the server's requests being handled (None: always wait)."""
        self._run = run
        self._requests_in_flight = requests_in_flight
        self._running_tasks = 0
        self._executor = executor
        self._options = options
        self.name = name
        self._on_batch = on_batch
        self._queue = BatchQueue(options)
        self._by_deadline: OrderedDict[Task, None] = OrderedDict()  # see _watch_deadline
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._wake_rows = 1
        self._gather_lock: asyncio.Lock | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self._stopping = False
        self._running_batches = 0
        self._counts = dict.fromkeys(("batches", "failed_batches", "tasks", "input_rows", "processed_rows"), 0)
        self._rejected_full = 0
        self._delay_sum = 0.0
        self._delay_max = 0.0

    @property
    def options(self) -> BatchingOptions:
        return self._options

    async def start(self) -> None:
        """Start ``num_batch_threads`` worker coroutines on the running loop."""
        if self._running:
            return
        self._loop = asyncio.get_running_loop()
        self._gather_lock = asyncio.Lock()
        self._running, self._stopping = True, False
        self._workers = [
            self._loop.create_task(self._worker(), name=f"batcher[{self.name}]#{i}")
            for i in range(self._options.num_batch_threads)
        ]

    async def stop(self, timeout: float | None = None) -> None:
        """Reject new tasks and finish every queued and running one, then end the workers.

        After ``timeout`` seconds the workers are cancelled and the callers still waiting get
        ``Overloaded`` (a batch already on the executor runs to completion, unobserved).
        """
        if not self._running:
            return
        self._stopping = True
        self._wake()
        try:
            _, pending = await asyncio.wait(self._workers, timeout=timeout)
            for worker in pending:
                worker.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for worker in self._workers:
                if not worker.cancelled() and worker.exception() is not None:
                    log.error("batcher %s worker failed", self.name, exc_info=worker.exception())
            self._queue.fail_all(self._shutting_down)
        finally:
            if self._deadline_timer is not None:
                self._deadline_timer.cancel()
                self._deadline_timer = None
            self._running = False
            self._workers = []

    async def __aenter__(self) -> Batcher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def submit(self, inputs: Mapping[str, np.ndarray], deadline: float | None = None) -> Tensors:
        """Queue ``inputs`` (rows on dim 0), wait for its batch, return this caller's output rows.

        ``deadline`` is in ``loop.time()`` seconds. Raises ``InvalidArgument`` (bad batch dims, task larger
        than ``max_batch_size``), ``Overloaded`` (queue full, not running, shutting down),
        ``DeadlineExceeded`` (expired in the queue) or whatever the batch's run raised.
        """
        loop = self._loop
        if loop is None or not self._running or self._stopping:
            raise Overloaded(f"Batcher {self.name} is not accepting requests (not started or shutting down)")
        rows = batch_tensors.batch_size(inputs)
        if rows > self._options.max_batch_size:
            raise InvalidArgument(
                f"Task size {rows} is larger than maximum input batch size {self._options.max_batch_size}"
            )
        now = loop.time()
        if deadline is not None and now >= deadline:
            raise DeadlineExceeded(QUEUE_TIMEOUT)
        if rows == 0:  # nothing to batch; TF would pad with a row that does not exist
            return dict(await loop.run_in_executor(self._executor, self._run, dict(inputs)))
        try:
            self._queue.check_room(rows)
        except Overloaded:
            self._rejected_full += 1
            raise
        future: asyncio.Future[list[Tensors]] = loop.create_future()
        task = Task(dict(inputs), rows, self._queue.key(inputs), future, deadline, now)
        self._queue.push(task)
        self._counts["tasks"] += 1
        if self._waiter is not None and self._queue.rows >= self._wake_rows:
            self._wake()
        own_timer = None if deadline is None else self._watch_deadline(task)
        try:
            parts = await future
        except asyncio.CancelledError:
            if future.cancelled():  # the caller stopped waiting (not: answered just as it went away)
                self._queue.withdraw(task, loop.time())
            raise
        finally:
            if own_timer is not None:
                own_timer.cancel()
            elif deadline is not None:
                self._by_deadline.pop(task, None)
        if len(parts) == 1:
            return parts[0]
        return await loop.run_in_executor(self._executor, batch_tensors.join_parts, parts)

    def stats(self) -> BatcherStats:
        """A snapshot of the counters (cheap; call it from the loop at any time)."""
        c = self._counts
        return BatcherStats(
            batches=c["batches"],
            failed_batches=c["failed_batches"],
            tasks=c["tasks"],
            input_rows=c["input_rows"],
            processed_rows=c["processed_rows"],
            queue_delay_s_sum=self._delay_sum,
            queue_delay_s_max=self._delay_max,
            rejected_full=self._rejected_full,
            expired=self._queue.expired,
            cancelled=self._queue.cancelled,
            queued_rows=self._queue.rows,
            running_batches=self._running_batches,
        )

    def _watch_deadline(self, task: Task) -> asyncio.TimerHandle | None:
        """Answer ``task`` ``DeadlineExceeded`` when its deadline passes, wherever it is then.

        A timer per task cost ~4 µs of the loop per request. Deadlines mostly come in arrival order
        (one timeout for every REST call), so tasks whose deadline is not earlier than the last
        watched one's join ``_by_deadline``, kept in deadline order, which one timer serves: set no
        later than its first task's deadline (a task answered early leaves it set for its own; a new
        task due sooner moves it), it answers every task then due and is set again for the next. A
        task due earlier than the last one watched gets a timer of its own, returned to be cancelled.
        """
        assert self._loop is not None and task.deadline is not None
        watched = self._by_deadline
        last = next(reversed(watched)).deadline if watched else None
        if last is not None and task.deadline < last:
            return self._loop.call_at(task.deadline, self._expire, task)
        watched[task] = None
        timer = self._deadline_timer
        if timer is None or task.deadline < timer.when():  # later: set for a task answered since
            if timer is not None:
                timer.cancel()
            self._deadline_timer = self._loop.call_at(task.deadline, self._expire_due)
        return None

    def _expire_due(self) -> None:
        """The shared deadline timer fired: answer the watched tasks now due; set it for the next."""
        assert self._loop is not None
        self._deadline_timer = None
        now = self._loop.time() + DEADLINE_SLACK_S
        watched = self._by_deadline
        while watched:
            task = next(iter(watched))
            assert task.deadline is not None
            if task.deadline > now:
                self._deadline_timer = self._loop.call_at(task.deadline, self._expire_due)
                return
            del watched[task]
            self._expire(task)

    def _expire(self, task: Task) -> None:
        """The task's deadline passed: its caller gets ``DeadlineExceeded`` now, not when a batch forms.

        Rows not yet in a batch are given back (never computed); rows already running finish unseen.
        """
        if task.future.done():
            return
        self._queue.expire(task, QUEUE_TIMEOUT if task.taken == 0 else "Deadline Exceeded")

    def _shutting_down(self) -> Overloaded:
        return Overloaded(f"Batcher {self.name} is shutting down")

    # -- gathering --------------------------------------------------------------------------------------

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _wait(self, min_rows: int, until: float | None) -> None:
        """Sleep until ``min_rows`` are queued, ``until`` (loop time) passes, or stop() is called."""
        assert self._loop is not None
        self._waiter = waiter = self._loop.create_future()
        self._wake_rows = min_rows
        timer = self._loop.call_at(until, self._wake) if until is not None else None
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    async def _gather(self) -> list[Piece] | None:
        """Wait for a batch per TF's rules and take it off the queue; ``None`` once stopped and drained."""
        assert self._loop is not None
        loop = self._loop
        queue = self._queue
        timeout = self._options.batch_timeout_s
        while True:
            first = queue.head(loop.time())
            if first is None:
                if self._stopping:
                    return None
                await self._wait(1, None)
                continue
            if timeout > 0 and not self._nothing_else_in_flight():
                until = first.enqueued + timeout
                while queue.rows < queue.execution_size and loop.time() < until and not self._stopping:
                    await self._wait(queue.execution_size, until)
            pieces = queue.take(loop.time())
            if pieces:  # empty when every waiting task was cancelled or expired meanwhile
                return pieces

    def _nothing_else_in_flight(self) -> bool:
        """Every request the server is handling is queued here or in one of this batcher's batches."""
        if self._requests_in_flight is None:
            return False
        return self._requests_in_flight() <= len(self._queue) + self._running_tasks

    # -- execution --------------------------------------------------------------------------------------

    async def _worker(self) -> None:
        assert self._gather_lock is not None
        while True:
            async with self._gather_lock:
                pieces = await self._gather()
            if pieces is None:
                return
            try:
                await self._process(pieces)
            except Exception:  # a bug here must not stall the queue or strand callers
                log.exception("batcher %s failed to process a batch", self.name)
                for piece in pieces:
                    self._queue.fail(piece.task, InternalError("Batch processing failed"))

    def _padded_size(self, rows: int) -> int:
        for size in self._options.allowed_batch_sizes:
            if size >= rows:
                return size
        return rows

    async def _process(self, pieces: list[Piece]) -> None:
        assert self._loop is not None
        loop = self._loop
        start = loop.time()
        rows = sum(p.rows for p in pieces)
        padded = self._padded_size(rows)
        delays = [start - p.task.enqueued for p in pieces]
        self._running_batches += 1
        self._running_tasks += len(pieces)
        error: MlsrvError | None = None
        outputs: list[Tensors] = []
        try:
            outputs = await self._execute([p.inputs() for p in pieces], [p.rows for p in pieces], padded)
        except MlsrvError as exc:
            error = exc
        except asyncio.CancelledError:
            error = self._shutting_down()
            raise
        except Exception as exc:
            log.exception("batch of %d rows failed in %s", rows, self.name)
            error = InternalError(f"{type(exc).__name__}: {exc}")
        finally:
            self._running_batches -= 1
            self._running_tasks -= len(pieces)
            self._record(rows, padded, delays, failed=error is not None)
            for i, piece in enumerate(pieces):
                if error is not None:
                    self._queue.fail(piece.task, copy.copy(error))  # one exception object per caller
                else:
                    piece.task.deliver(piece.start, piece.rows, outputs[i])
        log.debug("%s: ran batch of %d tasks, %d rows (padded to %d)", self.name, len(pieces), rows, padded)

    async def _execute(self, inputs: list[Tensors], rows: list[int], padded: int) -> list[Tensors]:
        """Run one batch on the executor (the loop keeps reading the requests that form the next one)."""
        assert self._loop is not None
        pad = self._options.pad_variable_length_inputs
        return await self._loop.run_in_executor(
            self._executor, batch_tensors.execute_batch, self._run, inputs, rows, padded, pad
        )

    def _record(self, rows: int, padded: int, delays: list[float], *, failed: bool) -> None:
        c = self._counts
        c["batches"] += 1
        c["failed_batches"] += failed
        c["input_rows"] += rows
        c["processed_rows"] += padded
        self._delay_sum += sum(delays)
        self._delay_max = max(self._delay_max, *delays)
        if self._on_batch is not None:
            try:
                self._on_batch(rows, padded, delays)
            except Exception:
                log.exception("on_batch callback of %s failed", self.name)
