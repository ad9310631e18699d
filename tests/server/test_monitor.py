"""StateMonitor: the states table, the bounded log, and event-driven waiting."""

from __future__ import annotations

import asyncio
import itertools

from mlsrv.errors import Code, LoadError
from mlsrv.protocol.types import ModelStatus, State, VersionStatus
from mlsrv.server.ids import ServableId
from mlsrv.server.monitor import StateMonitor, Waiters


def test_states_highest_version_first_with_errors() -> None:
    monitor = StateMonitor()
    monitor.on_event(ServableId("m", 1), State.AVAILABLE)
    monitor.on_event(ServableId("m", 3), State.END, LoadError("boom"))
    monitor.on_event(ServableId("m", 2), State.LOADING)
    monitor.on_event(ServableId("other", 7), State.START)
    assert monitor.states("m") == ModelStatus(
        "m",
        (
            VersionStatus(3, State.END, Code.INTERNAL, "boom"),
            VersionStatus(2, State.LOADING),
            VersionStatus(1, State.AVAILABLE),
        ),
    )
    assert monitor.states("missing") == ModelStatus("missing", ())
    assert monitor.model_names() == ["m", "other"]
    assert monitor.state(ServableId("m", 2)) == VersionStatus(2, State.LOADING)
    assert monitor.state(ServableId("m", 9)) is None


def test_latest_event_wins_and_clean_end_has_ok_code() -> None:
    monitor = StateMonitor()
    sid = ServableId("m", 1)
    for state in (State.START, State.LOADING, State.AVAILABLE, State.UNLOADING, State.END):
        monitor.on_event(sid, state)
    assert monitor.states("m").versions == (VersionStatus(1, State.END, Code.OK, ""),)


def test_event_log_is_bounded_and_ordered() -> None:
    ticks = itertools.count()
    monitor = StateMonitor(max_events=3, clock=lambda: float(next(ticks)))
    for v in range(5):
        monitor.on_event(ServableId("m", v), State.START)
    events = monitor.events()
    assert [e.id.version for e in events] == [2, 3, 4]
    assert [e.time for e in events] == [2.0, 3.0, 4.0]


def test_wait_until_is_woken_by_events() -> None:
    async def scenario() -> None:
        monitor = StateMonitor()
        waiter = asyncio.create_task(monitor.wait_until("m", [1, 2], {State.AVAILABLE}, timeout=5))
        await asyncio.sleep(0)
        monitor.on_event(ServableId("m", 1), State.AVAILABLE)
        await asyncio.sleep(0)
        assert not waiter.done()  # version 2 not there yet
        monitor.on_event(ServableId("m", 2), State.AVAILABLE)
        assert await waiter is True

    asyncio.run(scenario())


def test_wait_until_any_version_and_timeouts() -> None:
    async def scenario() -> None:
        monitor = StateMonitor()
        monitor.on_event(ServableId("m", 1), State.LOADING)
        assert await monitor.wait_until("m", None, {State.AVAILABLE}, timeout=0.01) is False
        assert await monitor.wait_until("m", None, {State.AVAILABLE}, timeout=0) is False
        assert await monitor.wait_until("m", None, {State.LOADING}, timeout=0) is True
        monitor.on_event(ServableId("m", 2), State.END, LoadError("x"))
        assert await monitor.wait_until("m", None, {State.AVAILABLE, State.END}, timeout=0) is True
        assert await monitor.wait_until("m", [1], {State.AVAILABLE, State.END}, timeout=0.01) is False
        assert await monitor.wait_until("nope", None, {State.END}, timeout=0.01) is False

    asyncio.run(scenario())


def test_waiters_cleanup_after_cancel() -> None:
    async def scenario() -> None:
        waiters = Waiters()
        task = asyncio.create_task(waiters.wait_for(lambda: False, None))
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        waiters.notify()  # no stale entry left behind
        assert waiters._waiting == []

    asyncio.run(scenario())


def test_a_failing_listener_does_not_stop_the_others() -> None:
    """Issue #10 item 13: one broken listener must not kill the Manager's reconcile (which reports
    every transition through ``on_event``) nor starve the listeners after it."""
    monitor = StateMonitor()
    seen: list[State] = []

    def broken(event: object) -> None:
        raise RuntimeError("listener bug")

    monitor.subscribe(broken)
    monitor.subscribe(lambda event: seen.append(event.state))
    monitor.on_event(ServableId("m", 1), State.LOADING)
    monitor.on_event(ServableId("m", 1), State.AVAILABLE)
    assert seen == [State.LOADING, State.AVAILABLE]
    assert monitor.states("m").versions[0].state is State.AVAILABLE
