"""Version discovery on disk: parsing, policies, polling, config replacement, and the Manager end to end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mlsrv.config import All, Latest, ModelConfig, Specific, VersionPolicy
from mlsrv.protocol.types import ModelSpec, State
from mlsrv.server import source as source_module
from mlsrv.server.manager import Manager
from mlsrv.server.monitor import StateMonitor, Waiters
from mlsrv.server.source import FileSystemSource, parse_version, scan_versions
from tests.fakes import FakeLoaderFactory

POLL = 0.05


def make_version(base: Path, name: str | int, *, model_file: bool = True) -> Path:
    path = base / str(name)
    path.mkdir(parents=True)
    if model_file:
        (path / "saved_model.pb").write_bytes(b"")
    return path


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("1", 1),
        ("00000123", 123),
        (" 7 ", 7),
        ("\t5\n", 5),
        ("+8", 8),
        ("-1", -1),
        ("9223372036854775807", 2**63 - 1),
        ("9223372036854775808", None),
        ("tmp", None),
        (".DS_Store", None),
        ("1.0", None),
        ("v1", None),
        ("", None),
        ("1_0", None),
        ("\u0663", None),  # a non-ASCII digit: int() takes it, SimpleAtoi does not
    ],
)
def test_parse_version_like_simple_atoi(name: str, expected: int | None) -> None:
    assert parse_version(name) == expected


@pytest.mark.parametrize(
    ("policy", "expected"),
    [(Latest(), [10]), (Latest(0), [10]), (Latest(2), [2, 10]), (All(), [1, 2, 10]), (Specific((1, 10)), [1, 10])],
)
def test_scan_versions_policies(tmp_path: Path, policy: VersionPolicy, expected: list[int]) -> None:
    for name in ("1", "2", "10", "tmp", "v3", "1.0"):
        make_version(tmp_path, name)
    (tmp_path / ".DS_Store").write_bytes(b"")
    versions = scan_versions(str(tmp_path), policy)
    assert versions == {v: str(tmp_path / str(v)) for v in expected}


def test_scan_versions_warnings(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_version(tmp_path, "001")
    make_version(tmp_path, "1")
    make_version(tmp_path, "2", model_file=False)
    warned: set[str] = set()
    with caplog.at_level(logging.WARNING, logger="mlsrv.server.source"):
        assert scan_versions(str(tmp_path), All(), warned=warned) == {1: str(tmp_path / "1"), 2: str(tmp_path / "2")}
        assert scan_versions(str(tmp_path), Specific((2, 5)), warned=warned) == {2: str(tmp_path / "2")}
        scan_versions(str(tmp_path), All(), warned=warned)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        f"Duplicate version directories detected. Version 1 will be loaded from {tmp_path / '1'}, "
        f"{tmp_path / '001'} will be ignored.",
        f"Version directory {tmp_path / '2'} contains no saved_model.pb; its load will fail",
        f"Version 5 requested by the specific version policy was not found under {tmp_path}",
    ]


def test_scan_versions_missing_base_path(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        scan_versions(str(tmp_path / "nope"), Latest())


class RecordingSink:
    """Records set_aspired calls; ``wait_for`` waits on a predicate over them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[int, str]]] = []
        self._waiters = Waiters()

    def set_aspired(self, name: str, versions: Mapping[int, str]) -> None:
        self.calls.append((name, dict(versions)))
        self._waiters.notify()

    def last(self, name: str) -> list[int] | None:
        found = [sorted(v) for n, v in self.calls if n == name]
        return found[-1] if found else None

    async def wait_for(self, predicate: Callable[[], bool]) -> bool:
        return await self._waiters.wait_for(predicate, timeout=2)


def test_source_polls_new_and_removed_versions(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        make_version(tmp_path, 1)
        sink = RecordingSink()
        source = FileSystemSource([ModelConfig(name="m", base_path=str(tmp_path))], sink, POLL)
        await source.start()
        assert sink.calls == [("m", {1: str(tmp_path / "1")})]
        make_version(tmp_path, 2)
        assert await sink.wait_for(lambda: sink.last("m") == [2])
        shutil.rmtree(tmp_path / "1")
        shutil.rmtree(tmp_path / "2")
        assert await sink.wait_for(lambda: sink.last("m") == [])
        await source.stop()

    with caplog.at_level(logging.WARNING, logger="mlsrv.server.source"):
        asyncio.run(scenario())
    assert (
        f"No versions of servable m found under base path {tmp_path}. "
        "Did you forget to name your leaf directory as a number (eg. '/1/')?"
    ) in caplog.messages


@pytest.mark.parametrize("repeat_s", [0.0, 30.0])
def test_missing_base_path_is_logged_retried_and_isolated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, repeat_s: float
) -> None:
    """TF says it on every poll; mlsrv too, at most every REPEAT_ERROR_S, and readiness says why."""
    monkeypatch.setattr(source_module, "REPEAT_ERROR_S", repeat_s)
    ghost = tmp_path / "ghost"
    problems: list[dict[str, str]] = []

    async def scenario() -> None:
        make_version(tmp_path / "good", 1)
        models = [
            ModelConfig(name="ghost", base_path=str(ghost)),
            ModelConfig(name="good", base_path=str(tmp_path / "good")),
        ]
        sink = RecordingSink()
        source = FileSystemSource(models, sink, POLL)
        await source.start()
        assert sink.calls == [("good", {1: str(tmp_path / "good" / "1")})]
        problems.append(dict(source.problems))
        await asyncio.sleep(POLL * 5)  # a few polls while it is missing
        make_version(ghost, 4)
        assert await sink.wait_for(lambda: sink.last("ghost") == [4])
        problems.append(dict(source.problems))
        await source.stop()

    with caplog.at_level(logging.ERROR, logger="mlsrv.server.source"):
        asyncio.run(scenario())
    expected = (
        "FileSystemStoragePathSource encountered a filesystem access error: "
        f"Could not find base path {ghost} for servable ghost with error NOT_FOUND: {ghost} not found"
    )
    errors = [m for m in caplog.messages if m.startswith("FileSystemStoragePathSource encountered")]
    assert set(errors) == {expected}
    assert len(errors) >= 3 if repeat_s == 0 else len(errors) == 1  # every poll, or rate-limited
    assert problems == [{"ghost": expected.split("error: ", 1)[1]}, {}]


def test_set_models_removes_and_adds(tmp_path: Path) -> None:
    async def scenario() -> None:
        for name in "abc":
            make_version(tmp_path / name, 1)
        a, b, c = (ModelConfig(name=n, base_path=str(tmp_path / n)) for n in "abc")
        sink = RecordingSink()
        source = FileSystemSource([a, b], sink, 0)
        await source.start()
        assert [n for n, _ in sink.calls] == ["a", "b"]
        await source.set_models([b, c])
        assert sink.calls[2:] == [("a", {}), ("c", {1: str(tmp_path / "c" / "1")})]  # b unchanged: not rescanned
        await source.stop()

    asyncio.run(scenario())


@contextlib.asynccontextmanager
async def serving(
    models: list[ModelConfig], factory: FakeLoaderFactory | None = None
) -> AsyncIterator[tuple[FileSystemSource, Manager, StateMonitor]]:
    executor = ThreadPoolExecutor(2)
    monitor = StateMonitor()
    manager = Manager(factory or FakeLoaderFactory(), executor, monitor, load_retry_interval_s=0.01)
    source = FileSystemSource(models, manager, POLL)
    await source.start()
    try:
        yield source, manager, monitor
    finally:
        await source.stop()
        await manager.stop(timeout=2)
        executor.shutdown()


def order(monitor: StateMonitor) -> list[tuple[int, State]]:
    return [(e.id.version, e.state) for e in monitor.events()]


def test_new_version_on_disk_replaces_old_after_it_is_available(tmp_path: Path) -> None:
    async def scenario() -> None:
        make_version(tmp_path, 1)
        factory = FakeLoaderFactory({("m", 2): {"delay": 0.1}})
        async with serving([ModelConfig(name="m", base_path=str(tmp_path))], factory) as (_, manager, monitor):
            assert (await manager.wait_until_settled(timeout=2)).ok
            make_version(tmp_path, 2)
            assert await monitor.wait_until("m", [2], {State.LOADING}, timeout=2)
            assert manager.peek(ModelSpec("m"))[0].version == 1  # still serving while 2 loads
            assert await monitor.wait_until("m", [1], {State.END}, timeout=2)
            assert manager.peek(ModelSpec("m"))[0].version == 2
            events = order(monitor)
            assert events.index((2, State.AVAILABLE)) < events.index((1, State.UNLOADING))

    asyncio.run(scenario())


def test_deleting_version_dir_rolls_back(tmp_path: Path) -> None:
    async def scenario() -> None:
        make_version(tmp_path, 1)
        make_version(tmp_path, 2)
        async with serving([ModelConfig(name="m", base_path=str(tmp_path))]) as (_, manager, monitor):
            assert (await manager.wait_until_settled(timeout=2)).ok
            assert [s.id.version for s in manager.versions("m")] == [2]  # Latest(1): 1 never loads
            shutil.rmtree(tmp_path / "2")
            assert await monitor.wait_until("m", [2], {State.END}, timeout=2)
            assert manager.peek(ModelSpec("m"))[0].version == 1
            events = order(monitor)
            assert events.index((1, State.AVAILABLE)) < events.index((2, State.UNLOADING))

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("policy", "available"), [(Latest(2), [3, 2]), (All(), [3, 2, 1]), (Specific((1, 3, 9)), [3, 1])]
)
def test_version_policies_end_to_end(tmp_path: Path, policy: VersionPolicy, available: list[int]) -> None:
    async def scenario() -> None:
        for v in (1, 2, 3):
            make_version(tmp_path, v)
        model = ModelConfig(name="m", base_path=str(tmp_path), version_policy=policy)
        async with serving([model]) as (_, manager, monitor):
            assert (await manager.wait_until_settled(timeout=2)).ok
            assert [v.version for v in monitor.states("m").versions if v.state is State.AVAILABLE] == available

    asyncio.run(scenario())


def test_config_replacement_and_isolation(tmp_path: Path) -> None:
    async def scenario() -> None:
        for name in ("a", "b", "c", "broken"):
            make_version(tmp_path / name, 1)
        a, b, c, broken = (ModelConfig(name=n, base_path=str(tmp_path / n)) for n in ("a", "b", "c", "broken"))
        factory = FakeLoaderFactory({"broken": {"always_fail": True}})
        async with serving([a, b], factory) as (source, manager, monitor):
            assert (await manager.wait_until_settled(timeout=2)).ok
            await source.set_models([b, c, broken])
            report = await manager.wait_until_settled(["c", "broken"], timeout=2)
            assert [(sid.name, err.message) for sid, err in report.failed] == [("broken", "fake load failure 6")]
            assert await monitor.wait_until("a", [1], {State.END}, timeout=2)
            assert manager.model_names() == ["b", "broken", "c"]
            for name in ("b", "c"):
                assert manager.peek(ModelSpec(name))[0].version == 1

    asyncio.run(scenario())
