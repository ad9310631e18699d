"""StateMonitor: the record of every version-state transition, and the way to wait for one.

TF Serving's ``ServableStateMonitor``: the manager reports each transition through ``on_event``; the
monitor keeps the latest state of every version it has seen (END versions included, with their
error, so ``GetModelStatus`` can explain a failed load) and a bounded log of recent events.
``wait_until`` is TF's ``WaitUntilServablesReachState``; it is woken by events, never by polling.
Everything here runs on the event-loop thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from mlsrv.errors import MlsrvError
from mlsrv.protocol.types import ModelStatus, State, VersionStatus
from mlsrv.server.ids import ServableId

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StateEvent:
    """One transition. ``error`` is set only for a version that ended because it failed."""

    id: ServableId
    state: State
    error: MlsrvError | None
    time: float


class Waiters:
    """Waiters on predicates over loop-owned state; ``notify()`` after each change wakes the satisfied ones.

    The owner calls ``notify`` whenever its state changes; each waiter's predicate is re-checked then,
    so waiting costs nothing between changes. Loop thread only.
    """

    def __init__(self) -> None:
        self._waiting: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []

    async def wait_for(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Return True once ``predicate()`` holds, False if ``timeout`` seconds pass first (None: forever)."""
        if predicate():
            return True
        if timeout is not None and timeout <= 0:
            return False
        entry = (predicate, asyncio.get_running_loop().create_future())
        self._waiting.append(entry)
        try:
            await asyncio.wait({entry[1]}, timeout=timeout)
            return entry[1].done() and not entry[1].cancelled()
        finally:
            self._waiting.remove(entry)

    def notify(self) -> None:
        for predicate, fut in self._waiting:
            if not fut.done() and predicate():
                fut.set_result(None)


class StateMonitor:
    """Latest state per version plus a bounded event log (``max_events``, oldest dropped first)."""

    def __init__(self, *, max_events: int = 1000, clock: Callable[[], float] = time.time) -> None:
        self._states: dict[str, dict[int, StateEvent]] = {}
        self._log: deque[StateEvent] = deque(maxlen=max_events)
        self._clock = clock
        self._waiters = Waiters()
        self._listeners: list[Callable[[StateEvent], None]] = []

    def subscribe(self, listener: Callable[[StateEvent], None]) -> None:
        """Call ``listener`` after every recorded transition (the Server wires batchers and metrics here)."""
        self._listeners.append(listener)

    def on_event(self, id: ServableId, state: State, error: MlsrvError | None = None) -> None:
        """Record a transition (called by the Manager on every state change)."""
        event = StateEvent(id, state, error, self._clock())
        self._states.setdefault(id.name, {})[id.version] = event
        self._log.append(event)
        self._waiters.notify()
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # one broken listener must not stop the others, nor the Manager's reconcile
                log.exception("state listener %r failed on %s %s", listener, id, state.name)

    def model_names(self) -> list[str]:
        """Every model that has reported at least one version, sorted."""
        return sorted(self._states)

    def state(self, id: ServableId) -> VersionStatus | None:
        """The latest status of one version, or None if it was never seen."""
        event = self._states.get(id.name, {}).get(id.version)
        return None if event is None else _status(event)

    def states(self, name: str) -> ModelStatus:
        """Every version seen for ``name``, highest first (empty ``versions`` for an unknown model)."""
        by_version = self._states.get(name, {})
        return ModelStatus(name, tuple(_status(by_version[v]) for v in sorted(by_version, reverse=True)))

    def events(self) -> list[StateEvent]:
        """The retained event log, oldest first."""
        return list(self._log)

    async def wait_until(
        self, name: str, versions: Iterable[int] | None, states: set[State], timeout: float | None
    ) -> bool:
        """Wait until the versions of ``name`` are in one of ``states``; False when ``timeout`` passes.

        ``versions=None`` means any one version of the model (TF's ``Latest`` request); otherwise every
        listed version must be in one of ``states``. Include ``State.END`` in ``states`` to also stop
        waiting on versions that failed or were unloaded.
        """
        wanted = None if versions is None else frozenset(versions)

        def reached() -> bool:
            by_version = self._states.get(name, {})
            if wanted is None:
                return any(e.state in states for e in by_version.values())
            return all(v in by_version and by_version[v].state in states for v in wanted)

        return await self._waiters.wait_for(reached, timeout)


def _status(event: StateEvent) -> VersionStatus:
    if event.error is None:
        return VersionStatus(event.id.version, event.state)
    return VersionStatus(event.id.version, event.state, event.error.code, event.error.message)
