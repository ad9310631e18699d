"""The Batcher's queue: FIFO tasks with row accounting, the queue bound and TF's batch-forming rules.

Synchronous and loop-affine (no awaits, no threads): the Batcher decides *when* to form a batch, this
module decides *what* goes in it. Rules, following TF's ``SharedBatchScheduler``:

* the queue holds at most ``max_enqueued_batches * execution_batch_size`` rows; beyond that the task is
  refused with TF's ``UNAVAILABLE`` message;
* a batch takes tasks in FIFO order up to the execution batch size; with ``enable_large_batch_splitting`` a
  task that does not fit is split and its first part fills the batch (TF's eager split), otherwise it waits
  for the next batch;
* cancelled tasks are skipped and tasks past their deadline fail with ``DeadlineExceeded``, both when a
  batch is formed (as TF checks at ``ProcessBatch``); ``expired`` and ``cancelled`` count them (the
  metrics' deadline drops and cancellations);
* only tasks with the same input names, dtypes and non-batch dims (or rank, when padding variable-length
  inputs) share a batch; TF instead fails the whole batch, punishing every caller for one odd request.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Final

import numpy as np

from mlsrv.batching_params import BatchingOptions
from mlsrv.errors import BatchQueueFull, DeadlineExceeded, MlsrvError
from mlsrv.server.batch_tensors import Tensors

QUEUE_FULL: Final = "The batch scheduling queue to which this task was submitted is full"
QUEUE_TIMEOUT: Final = "Run() timeout exceeded while waiting in batching queue"
#: This close to its deadline a task counts as due: timers fire a little early (uvloop keeps time in
#: milliseconds), so a cancellation or a timer this close to the deadline is the deadline's doing.
DEADLINE_SLACK_S: Final = 0.002


class Task:
    """One ``submit`` call. ``taken`` rows are already in batches; ``parts`` collects split results."""

    __slots__ = ("inputs", "rows", "key", "future", "deadline", "enqueued", "taken", "done_rows", "parts")

    def __init__(
        self,
        inputs: Tensors,
        rows: int,
        key: tuple[Any, ...],
        future: asyncio.Future[list[Tensors]],
        deadline: float | None,
        enqueued: float,
    ) -> None:
        self.inputs = inputs
        self.rows = rows
        self.key = key
        self.future = future
        self.deadline = deadline
        self.enqueued = enqueued
        self.taken = 0
        self.done_rows = 0
        self.parts: list[tuple[int, Tensors]] = []

    def deliver(self, start: int, rows: int, outputs: Tensors) -> None:
        """Record the outputs of rows ``start:start+rows``; resolve the future once every row is back."""
        if self.future.done():
            return
        if rows == self.rows:  # the common case: the whole task in one batch
            self.future.set_result([outputs])
            return
        self.parts.append((start, outputs))
        self.done_rows += rows
        if self.done_rows == self.rows:
            self.parts.sort(key=lambda part: part[0])
            self.future.set_result([out for _, out in self.parts])


class Piece:
    """Rows ``start:start+rows`` of a task, as placed in one batch (a plain slotted class: one per
    task per batch, on the loop)."""

    __slots__ = ("task", "start", "rows")

    def __init__(self, task: Task, start: int, rows: int) -> None:
        self.task = task
        self.start = start
        self.rows = rows

    def inputs(self) -> Tensors:
        """The piece's input rows (views, no copies)."""
        if self.start == 0 and self.rows == self.task.rows:
            return self.task.inputs
        end = self.start + self.rows
        return {name: a[self.start : end] for name, a in self.task.inputs.items()}


class BatchQueue:
    """Tasks waiting for a batch. ``rows`` counts rows not yet taken by a batch (nor cancelled)."""

    def __init__(self, options: BatchingOptions) -> None:
        self._options = options
        self.execution_size = options.execution_batch_size
        self.capacity = options.queue_capacity_rows
        self._tasks: deque[Task] = deque()
        self.rows = 0
        self.expired = 0
        self.cancelled = 0

    def __len__(self) -> int:
        return len(self._tasks)

    def key(self, inputs: Mapping[str, np.ndarray]) -> tuple[Any, ...]:
        """What must agree for tasks to share a batch: names, dtypes and trailing dims (or rank)."""
        items = sorted(inputs.items()) if len(inputs) > 1 else inputs.items()
        if self._options.pad_variable_length_inputs:
            return tuple((n, a.dtype, a.ndim) for n, a in items)
        return tuple((n, a.dtype, a.shape[1:]) for n, a in items)

    def check_room(self, rows: int) -> None:
        """Raise ``BatchQueueFull`` (TF's queue-full message) if ``rows`` more would exceed the bound."""
        if self.rows + rows <= self.capacity:
            return
        batches = math.ceil(self.rows / self.execution_size)
        limit = self._options.max_enqueued_batches
        if self._options.enable_large_batch_splitting:
            raise BatchQueueFull(
                f"{QUEUE_FULL}; task size is {rows} but scheduling capacity is only "
                f"{self.capacity - self.rows} (num_enqueued_batches={batches}, "
                f"max_enqueued_batches={limit}, max_execution_batch_size={self.execution_size})"
            )
        raise BatchQueueFull(f"{QUEUE_FULL}; currently {batches} batches enqueued and max_enqueued_batches is {limit}")

    def push(self, task: Task) -> None:
        self._tasks.append(task)
        self.rows += task.rows

    def fail(self, task: Task, error: MlsrvError) -> None:
        """Answer ``task`` with ``error`` (unless already answered) and give back its rows not yet in a batch.

        The one way a task fails, so no caller can fail it and leave its rows counted as queued.
        """
        self._release(task)
        if not task.future.done():
            task.future.set_exception(error)

    def expire(self, task: Task, message: str) -> None:
        """Answer ``task`` ``DeadlineExceeded`` (its deadline passed) and count it as a deadline drop."""
        self.expired += 1
        self.fail(task, DeadlineExceeded(message))

    def withdraw(self, task: Task, now: float) -> None:
        """The caller stopped waiting (its future was cancelled): give back its rows not yet in a batch.

        A task cancelled at its deadline (the caller's own timeout fired while it waited) counts as
        ``expired``, like one found expired when a batch is formed; any other cancellation (the
        client went away) as ``cancelled``.
        """
        self._release(task)
        if task.deadline is not None and now >= task.deadline - DEADLINE_SLACK_S:
            self.expired += 1
        else:
            self.cancelled += 1

    def _release(self, task: Task) -> None:
        left = task.rows - task.taken
        if left:
            task.taken = task.rows
            self.rows -= left

    def head(self, now: float) -> Task | None:
        """The first live task, after dropping cancelled ones and failing expired ones."""
        tasks = self._tasks
        while tasks:
            task = tasks[0]
            if task.future.done():
                tasks.popleft()
            elif task.deadline is not None and now >= task.deadline:
                tasks.popleft()
                self.expire(task, QUEUE_TIMEOUT)
            else:
                return task
        return None

    def take(self, now: float) -> list[Piece]:
        """Form one batch from the head of the queue (may be empty if every task was dropped)."""
        pieces: list[Piece] = []
        room = self.execution_size
        first = self.head(now)
        while first is not None and room > 0:
            task = self.head(now)
            if task is None or task.key != first.key:
                break
            left = task.rows - task.taken
            if left > room and not self._options.enable_large_batch_splitting:
                break  # never for the first task: tasks are at most max_batch_size rows
            n = min(left, room)
            pieces.append(Piece(task, task.taken, n))
            task.taken += n
            self.rows -= n
            room -= n
            if task.taken == task.rows:
                self._tasks.popleft()
        return pieces

    def fail_all(self, error: Callable[[], MlsrvError]) -> None:
        """Fail and drop every queued task (used when a stop times out)."""
        while self._tasks:
            self.fail(self._tasks.popleft(), error())
