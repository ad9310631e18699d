"""Manager transitions, retries, quiescing and shutdown, driven through set_aspired with fake loaders."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from mlsrv.errors import Code, InvalidArgument, LoadError, ModelNotFound
from mlsrv.protocol.types import ModelSpec, State
from mlsrv.server.ids import ServableId
from mlsrv.server.manager import Manager, SettleReport
from mlsrv.server.monitor import StateMonitor
from mlsrv.server.policy import resource_preserving
from tests.fakes import FakeLoaderFactory

AVAILABLE = {State.AVAILABLE}
SETTLED = {State.AVAILABLE, State.END}


@contextlib.asynccontextmanager
async def running(factory: FakeLoaderFactory, **options: Any) -> AsyncIterator[tuple[Manager, StateMonitor]]:
    executor = ThreadPoolExecutor(2)
    monitor = StateMonitor()
    options.setdefault("load_retry_interval_s", 0.01)
    manager = Manager(factory, executor, monitor, **options)
    try:
        yield manager, monitor
    finally:
        await manager.stop(timeout=2)
        executor.shutdown(wait=True)


def paths(*versions: int) -> Mapping[int, str]:
    return {v: f"/models/m/{v}" for v in versions}


def log_of(monitor: StateMonitor, name: str = "m") -> list[tuple[int, State]]:
    return [(e.id.version, e.state) for e in monitor.events() if e.id.name == name]


def test_load_serves_and_reports_every_transition() -> None:
    async def scenario() -> None:
        factory = FakeLoaderFactory()
        async with running(factory) as (manager, monitor):
            manager.set_aspired("m", paths(1))
            assert await monitor.wait_until("m", [1], AVAILABLE, timeout=2)
            with manager.lease(ModelSpec("m")) as lease:
                assert lease.id == ServableId("m", 1)
                y = lease.servable.run("serving_default", {"x": np.array([[1.0], [2.0]], np.float32)})
                np.testing.assert_allclose(y["y"], [[2.5], [3.0]])
            assert factory.loaders[ServableId("m", 1)].path == "/models/m/1"
            assert manager.model_names() == ["m"]
            manager.set_aspired("m", {})
            assert await monitor.wait_until("m", [1], {State.END}, timeout=2)
            assert manager.model_names() == []
        assert log_of(monitor) == [
            (1, State.START),
            (1, State.LOADING),
            (1, State.AVAILABLE),
            (1, State.UNLOADING),
            (1, State.END),
        ]
        assert factory.loaders[ServableId("m", 1)].unload_calls == 1

    asyncio.run(scenario())


def test_load_failure_ends_with_error_and_other_models_serve() -> None:
    async def scenario() -> None:
        factory = FakeLoaderFactory({"bad": {"always_fail": True, "error": OSError("disk on fire")}})
        async with running(factory, max_load_retries=0) as (manager, monitor):
            manager.set_aspired("bad", {1: "/b/1"})
            manager.set_aspired("good", {1: "/g/1"})
            report = await manager.wait_until_settled(None, timeout=2)
            assert report.failed == ((ServableId("bad", 1), report.failed[0][1]),)
            assert report.pending == ()
            status = monitor.states("bad").versions[0]
            assert (status.state, status.error_code) == (State.END, Code.INTERNAL)
            assert status.error_message == "OSError: disk on fire"
            assert monitor.states("good").versions[0].state is State.AVAILABLE
            with manager.lease(ModelSpec("good")) as lease:
                assert lease.id == ServableId("good", 1)
            with pytest.raises(ModelNotFound, match=r"^Servable not found for request: Latest\(bad\)$"):
                manager.peek(ModelSpec("bad"))
            # Re-sending the same aspired set does not retry a failed version (TF behaviour).
            manager.set_aspired("bad", {1: "/b/1"})
            await manager.wait_until_settled(["bad"], timeout=2)
            assert factory.loaders[ServableId("bad", 1)].load_attempts == 1

    asyncio.run(scenario())


def test_settle_report_message_matches_tf() -> None:
    report = SettleReport(((ServableId("m", 3), LoadError("boom")),), ("n",))
    assert not report.ok
    assert report.message() == (
        # Three braces, as real TF Serving output shows ("{" + "{name: .. version: ..}" + ...).
        "2 servable(s) did not become available: {{{name: m version: 3} due to error: INTERNAL: boom}, "
        "{{name: n} due to error: no version became available in time}, }"
    )
    assert SettleReport().ok


@pytest.mark.parametrize(
    ("fail_times", "retries", "state", "attempts"), [(2, 3, State.AVAILABLE, 3), (9, 2, State.END, 3)]
)
def test_load_retries(fail_times: int, retries: int, state: State, attempts: int) -> None:
    async def scenario() -> None:
        factory = FakeLoaderFactory(fail_times=fail_times)
        async with running(factory, max_load_retries=retries) as (manager, monitor):
            manager.set_aspired("m", paths(1))
            assert await monitor.wait_until("m", [1], SETTLED, timeout=2)
            assert monitor.states("m").versions[0].state is state
            assert factory.loaders[ServableId("m", 1)].load_attempts == attempts
            if state is State.END:
                assert monitor.states("m").versions[0].error_message == "fake load failure 3"

    asyncio.run(scenario())


def test_unaspiring_stops_retrying() -> None:
    async def scenario() -> None:
        factory = FakeLoaderFactory(always_fail=True)
        async with running(factory, load_retry_interval_s=60) as (manager, monitor):
            manager.set_aspired("m", paths(1))
            assert await monitor.wait_until("m", [1], {State.LOADING}, timeout=2)
            assert await asyncio.to_thread(factory.loaders[ServableId("m", 1)].attempted.wait, 2)
            manager.set_aspired("m", {})  # now in the 60 s retry wait
            assert await monitor.wait_until("m", [1], {State.END}, timeout=1)
            assert factory.loaders[ServableId("m", 1)].load_attempts == 1
            assert monitor.states("m").versions[0].error_message == "fake load failure 1"

    asyncio.run(scenario())


def test_unload_waits_for_in_flight_lease() -> None:
    async def scenario() -> None:
        factory = FakeLoaderFactory()
        async with running(factory) as (manager, monitor):
            manager.set_aspired("m", paths(1))
            assert await monitor.wait_until("m", [1], AVAILABLE, timeout=2)
            loader = factory.loaders[ServableId("m", 1)]
            with manager.lease(ModelSpec("m", version=1)):
                manager.set_aspired("m", {})
                assert await monitor.wait_until("m", [1], {State.UNLOADING}, timeout=2)
                with pytest.raises(ModelNotFound):  # no new leases on an unloading version
                    manager.peek(ModelSpec("m", version=1))
                assert not await monitor.wait_until("m", [1], {State.END}, timeout=0.2)
                assert loader.unload_calls == 0
                released_at = len(monitor.events())
            assert await monitor.wait_until("m", [1], {State.END}, timeout=2)
            assert loader.unload_calls == 1
            assert log_of(monitor)[released_at:] == [(1, State.END)]

    asyncio.run(scenario())


def test_new_version_replaces_old_only_once_available() -> None:
    async def scenario() -> None:
        gate = threading.Event()
        factory = FakeLoaderFactory({("m", 2): {"gate": gate}})
        async with running(factory) as (manager, monitor):
            manager.set_aspired("m", paths(1))
            assert await monitor.wait_until("m", [1], AVAILABLE, timeout=2)
            manager.set_aspired("m", paths(2))
            assert await monitor.wait_until("m", [2], {State.LOADING}, timeout=2)
            with manager.lease(ModelSpec("m")) as lease:  # the old version still serves
                assert lease.id.version == 1
            gate.set()
            assert await monitor.wait_until("m", [1], {State.END}, timeout=2)
            assert manager.peek(ModelSpec("m"))[0].version == 2
        events = log_of(monitor)
        assert events.index((2, State.AVAILABLE)) < events.index((1, State.UNLOADING))

    asyncio.run(scenario())


def test_resource_preserving_unloads_before_loading() -> None:
    async def scenario() -> None:
        async with running(FakeLoaderFactory(), policy=resource_preserving) as (manager, monitor):
            manager.set_aspired("m", paths(1))
            assert await monitor.wait_until("m", [1], AVAILABLE, timeout=2)
            manager.set_aspired("m", paths(2))
            assert await monitor.wait_until("m", [2], AVAILABLE, timeout=2)
        events = log_of(monitor)
        assert events.index((1, State.END)) < events.index((2, State.LOADING))

    asyncio.run(scenario())


def test_version_unaspired_before_loading_ends_without_loading() -> None:
    async def scenario() -> None:
        gate = threading.Event()
        factory = FakeLoaderFactory({("m", 2): {"gate": gate}})
        async with running(factory) as (manager, monitor):
            manager.set_aspired("m", paths(1, 2))  # 2 loads first; 1 waits in START
            assert await monitor.wait_until("m", [2], {State.LOADING}, timeout=2)
            assert monitor.state(ServableId("m", 1)) is not None
            manager.set_aspired("m", paths(2))
            assert monitor.states("m").versions[1].state is State.END
            gate.set()
            assert await monitor.wait_until("m", [2], AVAILABLE, timeout=2)
            assert ServableId("m", 1) not in factory.loaders
            assert [s.id.version for s in manager.versions("m")] == [2]

    asyncio.run(scenario())


def test_unloaded_version_loads_again_when_reaspired() -> None:
    async def scenario() -> None:
        factory = FakeLoaderFactory()
        async with running(factory) as (manager, monitor):
            manager.set_aspired("m", paths(1))
            assert await monitor.wait_until("m", [1], AVAILABLE, timeout=2)
            manager.set_aspired("m", {})
            assert await monitor.wait_until("m", [1], {State.END}, timeout=2)
            manager.set_aspired("m", paths(1))
            assert await monitor.wait_until("m", [1], AVAILABLE, timeout=2)
            assert log_of(monitor)[-3:] == [(1, State.START), (1, State.LOADING), (1, State.AVAILABLE)]

    asyncio.run(scenario())


def test_wait_until_settled_reports_models_without_versions() -> None:
    async def scenario() -> None:
        async with running(FakeLoaderFactory()) as (manager, _):
            manager.set_aspired("empty", {})
            manager.set_aspired("m", paths(1))
            report = await manager.wait_until_settled(["empty", "m", "unknown"], timeout=0.2)
            assert report.failed == ()
            assert report.pending == ("empty", "unknown")

    asyncio.run(scenario())


def test_stop_unloads_everything() -> None:
    async def scenario() -> None:
        factory = FakeLoaderFactory()
        executor = ThreadPoolExecutor(1)
        monitor = StateMonitor()
        manager = Manager(factory, executor, monitor)
        manager.set_aspired("a", {1: "/a/1", 2: "/a/2"})
        manager.set_aspired("b", {5: "/b/5"})
        assert (await manager.wait_until_settled(timeout=2)).ok
        await manager.stop(timeout=2)
        for name in ("a", "b"):
            assert {v.state for v in monitor.states(name).versions} == {State.END}
        assert all(loader.unload_calls == 1 for loader in factory.loaders.values())
        assert manager.model_names() == []
        manager.set_aspired("a", {3: "/a/3"})  # ignored after stop
        assert manager.versions("a") == ()
        executor.shutdown()

    asyncio.run(scenario())


def test_lease_errors_use_tf_messages() -> None:
    async def scenario() -> None:
        async with running(FakeLoaderFactory()) as (manager, monitor):
            manager.set_aspired("m", paths(1))
            assert await monitor.wait_until("m", [1], AVAILABLE, timeout=2)
            cases: list[tuple[ModelSpec, type[Exception], str]] = [
                (ModelSpec("nope"), ModelNotFound, "Servable not found for request: Latest(nope)"),
                (ModelSpec("nope", version=1), ModelNotFound, "Servable not found for request: Specific(nope, 1)"),
                (ModelSpec("m", version=7), ModelNotFound, "Servable not found for request: Specific(m, 7)"),
                (ModelSpec("m", label="x"), InvalidArgument, "Unrecognized servable version label: x"),
                (ModelSpec("nope", label="x"), InvalidArgument, "Unrecognized servable version label: x"),
                (ModelSpec(""), InvalidArgument, "ModelSpec has no name specified."),
            ]
            for spec, kind, message in cases:
                with pytest.raises(kind) as info:
                    with manager.lease(spec):
                        pass
                assert str(info.value) == message
                with pytest.raises(kind):
                    manager.peek(spec)

    asyncio.run(scenario())


class _GatedServable:
    """A servable whose ``run`` blocks until ``gate`` opens, and records whether unload came first."""

    def __init__(self, loader: _GatedLoader) -> None:
        self.loader = loader
        self.gate = threading.Event()
        self.started = threading.Event()
        self.unloaded_while_running: list[bool] = []

    def signatures(self) -> Mapping[str, Any]:
        return {}

    def run(self, signature: str, inputs: Mapping[str, np.ndarray], output_filter: Any = ()) -> dict[str, np.ndarray]:
        self.started.set()
        self.gate.wait(10)
        self.unloaded_while_running.append(self.loader.unloaded.is_set())
        return {}


class _GatedLoader:
    def __init__(self) -> None:
        self.unloaded = threading.Event()
        self.servable = _GatedServable(self)

    def load(self) -> _GatedServable:
        return self.servable

    def unload(self) -> None:
        self.unloaded.set()


def test_unload_waits_for_a_running_call_whose_lease_was_returned() -> None:
    """Issue #10 item 13: a request that times out returns its lease while its call still runs on a
    thread; the version must not unload under that call."""

    async def scenario() -> None:
        loader = _GatedLoader()
        executor = ThreadPoolExecutor(2)
        monitor = StateMonitor()
        manager = Manager(lambda _id, _path: loader, executor, monitor)
        try:
            manager.set_aspired("m", paths(1))
            assert await monitor.wait_until("m", [1], AVAILABLE, timeout=2)
            loop = asyncio.get_running_loop()
            with manager.lease(ModelSpec("m")) as lease:
                call = loop.run_in_executor(executor, lease.servable.run, "s", {}, ())
                with pytest.raises(asyncio.TimeoutError):  # the caller's deadline passes; its lease goes back
                    await asyncio.wait_for(asyncio.shield(call), 0.05)
            assert loader.servable.started.is_set()
            manager.set_aspired("m", {})
            assert await monitor.wait_until("m", [1], {State.UNLOADING}, timeout=2)
            assert manager.in_flight() == 1  # no lease, one running call
            loader.servable.gate.set()
            await call
            assert await monitor.wait_until("m", [1], {State.END}, timeout=2)
            assert loader.servable.unloaded_while_running == [False]
            assert loader.unloaded.is_set()
        finally:
            loader.servable.gate.set()
            await manager.stop(timeout=2)
            executor.shutdown(wait=True)

    asyncio.run(scenario())
