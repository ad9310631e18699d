"""Batcher test doubles: a gated numpy model and helpers to queue tasks in a controlled order.

``FakeModel`` computes y = 0.5 x + 2 (and appends b"!" to strings) on the executor thread. ``hold()``
blocks the next calls inside ``run`` until ``release()``, so a test can keep one batch running while it
queues more tasks behind it, with no sleeps.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from mlsrv.batching_params import BatchingOptions
from mlsrv.server.batcher import Batcher

Tensors = dict[str, np.ndarray]


class FakeModel:
    """y = 0.5 x + 2 per row. Records every batch; ``hold()`` makes the next calls block until ``release()``."""

    def __init__(self, fail: Callable[[Mapping[str, np.ndarray]], Exception | None] | None = None) -> None:
        self.batches: list[Tensors] = []
        self.threads: set[int] = set()
        self._gate = threading.Event()
        self._gate.set()
        self._fail = fail
        self._loop = asyncio.get_running_loop()
        self._started: asyncio.Queue[int] = asyncio.Queue()

    @property
    def sizes(self) -> list[int]:
        return [next(iter(b.values())).shape[0] for b in self.batches]

    def hold(self) -> None:
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    async def started(self) -> int:
        """Wait until a batch has entered ``run``; returns its size."""
        return await asyncio.wait_for(self._started.get(), 5)

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> Tensors:
        self.batches.append(dict(inputs))
        self.threads.add(threading.get_ident())
        size = next(iter(inputs.values())).shape[0]
        self._loop.call_soon_threadsafe(self._started.put_nowait, size)
        assert self._gate.wait(5)
        if self._fail is not None and (exc := self._fail(inputs)) is not None:
            raise exc
        out: Tensors = {}
        if "x" in inputs:
            out["y"] = inputs["x"] * 0.5 + 2
        if "s" in inputs:
            out["t"] = np.array([v + b"!" for v in inputs["s"].reshape(-1)], dtype=object).reshape(inputs["s"].shape)
        return out


def opts(**kw: Any) -> BatchingOptions:
    kw.setdefault("num_batch_threads", 1)
    return BatchingOptions(**kw)


def scenario(
    body: Callable[[Batcher, FakeModel], Awaitable[None]],
    fail: Any = None,
    **kw: Any,
) -> None:
    """Run ``body`` with a started Batcher over a FakeModel on a 1-thread executor."""

    async def main() -> None:
        model = FakeModel(fail)
        with ThreadPoolExecutor(1) as executor:
            batcher = Batcher(
                model, executor, opts(**kw), name="m/1/serving_default"
            )
            await batcher.start()
            try:
                await asyncio.wait_for(body(batcher, model), 10)
            finally:
                model.release()
                await batcher.stop(timeout=5)

    asyncio.run(main())


def x(value: float, rows: int = 1, cols: int = 2) -> Tensors:
    return {"x": np.full((rows, cols), value, dtype=np.float32)}


async def blocked_first(b: Batcher, model: FakeModel) -> asyncio.Task[Tensors]:
    """Start one 1-row task and hold it inside ``run`` so later submits queue up behind it."""
    model.hold()
    first = asyncio.ensure_future(b.submit(x(-1.0)))
    await model.started()
    return first


def spawn(b: Batcher, *inputs: Tensors, deadline: float | None = None) -> list[asyncio.Task[Tensors]]:
    return [asyncio.ensure_future(b.submit(i, deadline)) for i in inputs]


async def settle() -> None:
    """Let spawned submit() tasks run up to their enqueue (they enqueue on their first step)."""
    for _ in range(3):
        await asyncio.sleep(0)
