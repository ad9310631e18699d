"""BatchingPool: one :class:`Batcher` per (model version, signature), created on first use.

The DataPlane asks for a batcher per request; the pool decides whether that model is batched (global
``--enable_batching`` options, per-model TOML or ``batching_params.pbtxt``) and stops a version's
batchers once the version starts unloading, so queued work drains before the model goes away.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from mlsrv.batching_params import BatchingOptions
from mlsrv.protocol.types import State
from mlsrv.server.batch_tensors import Tensors
from mlsrv.server.batcher import BatchCallback, Batcher, BatcherStats
from mlsrv.server.ids import ServableId
from mlsrv.server.monitor import StateEvent
from mlsrv.server.servable import Servable

log = logging.getLogger(__name__)

OptionsFor = Callable[[ServableId], BatchingOptions | None]
#: Builds a new batcher's ``on_batch`` hook from its options (metrics); None for no hook.
BatchHookFor = Callable[[BatchingOptions], BatchCallback | None]
_STOP_TIMEOUT_S: Final = 30.0


@dataclass(slots=True)
class QueueTotals:
    """One model's batch queues, summed over its versions and signatures (what the metrics page shows).

    ``queued_rows`` is the depth now; the counts are since start and never go down, because the
    counts of batchers already stopped (unloaded versions) are kept.
    """

    queued_rows: int = 0
    rejected_full: int = 0
    expired: int = 0
    cancelled: int = 0

    def add(self, stats: BatcherStats, *, with_depth: bool = True) -> None:
        if with_depth:
            self.queued_rows += stats.queued_rows
        self.rejected_full += stats.rejected_full
        self.expired += stats.expired
        self.cancelled += stats.cancelled


class BatchingPool:
    """Owns the batchers of one Server. Loop-affine."""

    def __init__(
        self,
        executor: concurrent.futures.Executor,
        options_for: OptionsFor,
        *,
        on_batch_for: BatchHookFor | None = None,
        requests_in_flight: Callable[[], int] | None = None,
    ) -> None:
        """``requests_in_flight``: the server's count, so a lone request skips the window (``Batcher``)."""
        self._executor = executor
        self._requests_in_flight = requests_in_flight
        self._options_for = options_for
        self._on_batch_for = on_batch_for
        self._batchers: dict[tuple[ServableId, str], Batcher] = {}
        self._closing: set[asyncio.Task[None]] = set()
        #: batchers of unloading versions, still draining (their counts stay in :meth:`queue_totals`)
        self._draining: dict[Batcher, str] = {}
        #: counts of batchers already stopped, per model name
        self._retired: dict[str, QueueTotals] = {}

    async def batcher_for(self, servable_id: ServableId, signature: str, servable: Servable) -> Batcher | None:
        """The running batcher for this version and signature, or None when the model is not batched."""
        key = (servable_id, signature)
        batcher = self._batchers.get(key)
        if batcher is not None:
            return batcher
        options = self._options_for(servable_id)
        if options is None:
            return None

        def run(inputs: Tensors) -> Tensors:
            return servable.run(signature, inputs)

        on_batch = self._on_batch_for(options) if self._on_batch_for is not None else None
        batcher = Batcher(
            run,
            self._executor,
            options,
            name=f"{servable_id}/{signature}",
            on_batch=on_batch,
            requests_in_flight=self._requests_in_flight,
        )
        self._batchers[key] = batcher
        await batcher.start()
        log.info(
            "Batching %s: max_batch_size=%d batch_timeout_micros=%d max_enqueued_batches=%d num_batch_threads=%d",
            batcher.name, options.max_batch_size, round(options.batch_timeout_s * 1e6), options.max_enqueued_batches,
            options.num_batch_threads,
        )  # fmt: skip
        return batcher

    def on_state(self, event: StateEvent) -> None:
        """Monitor listener: a version leaving service gets its batchers drained and stopped."""
        if event.state not in (State.UNLOADING, State.END):
            return
        for key in [k for k in self._batchers if k[0] == event.id]:
            batcher = self._batchers.pop(key)
            self._draining[batcher] = event.id.name
            task = asyncio.get_running_loop().create_task(batcher.stop(_STOP_TIMEOUT_S))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
            task.add_done_callback(functools.partial(self._retire, batcher))

    def _retire(self, batcher: Batcher, _stopped: object) -> None:
        name = self._draining.pop(batcher)
        self._retired.setdefault(name, QueueTotals()).add(batcher.stats(), with_depth=False)

    def stats(self) -> dict[tuple[ServableId, str], BatcherStats]:
        return {key: batcher.stats() for key, batcher in self._batchers.items()}

    def queue_totals(self) -> dict[str, QueueTotals]:
        """Per model name: queue depth now, and rejections, deadline drops and cancellations since start."""
        totals = {name: QueueTotals(0, r.rejected_full, r.expired, r.cancelled) for name, r in self._retired.items()}
        live = [(key[0].name, batcher) for key, batcher in self._batchers.items()]
        for name, batcher in [*live, *((n, b) for b, n in self._draining.items())]:
            totals.setdefault(name, QueueTotals()).add(batcher.stats())
        return totals

    async def stop(self) -> None:
        """Drain and stop every batcher (shutdown)."""
        batchers, self._batchers = list(self._batchers.values()), {}
        await asyncio.gather(*(b.stop(_STOP_TIMEOUT_S) for b in batchers), *self._closing, return_exceptions=True)
