"""Version labels (TF ServerCore::UpdateModelVersionLabelMap semantics) and label resolution."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from mlsrv.errors import FailedPrecondition, InvalidArgument, ModelNotFound
from mlsrv.protocol.types import ModelSpec
from mlsrv.server.manager import Manager
from mlsrv.server.monitor import StateMonitor
from tests.fakes import FakeLoaderFactory


def unavailable(version: int) -> str:
    return f"^Request to assign label to version {version} of model m, which is not currently available for inference$"


async def two_versions() -> tuple[Manager, ThreadPoolExecutor]:
    """Model ``m`` with versions 1 and 2 AVAILABLE."""
    executor = ThreadPoolExecutor(1)
    manager = Manager(FakeLoaderFactory(), executor, StateMonitor())
    manager.set_aspired("m", {1: "/m/1", 2: "/m/2"})
    assert (await manager.wait_until_settled(["m"], timeout=2)).ok
    return manager, executor


def test_labels_resolve_to_versions() -> None:
    async def scenario() -> None:
        manager, executor = await two_versions()
        manager.replace_labels({"m": {"stable": 1, "canary": 2}}, allow_unavailable=False)
        with manager.lease(ModelSpec("m", label="stable")) as lease:
            assert lease.id.version == 1
        assert manager.peek(ModelSpec("m", label="canary"))[0].version == 2
        assert manager.labels("m") == {"stable": 1, "canary": 2}
        manager.replace_labels({"m": {}}, allow_unavailable=False)
        with pytest.raises(InvalidArgument, match="^Unrecognized servable version label: stable$"):
            manager.peek(ModelSpec("m", label="stable"))
        await manager.stop()
        executor.shutdown()

    asyncio.run(scenario())


def test_label_must_point_at_available_version() -> None:
    async def scenario() -> None:
        manager, executor = await two_versions()
        manager.replace_labels({"m": {"stable": 1}}, allow_unavailable=False)
        with pytest.raises(FailedPrecondition, match=unavailable(3)):
            manager.replace_labels({"m": {"stable": 1, "canary": 3}}, allow_unavailable=False)
        assert manager.labels("m") == {"stable": 1}  # all or nothing
        with pytest.raises(FailedPrecondition, match="version 1 of model other"):
            manager.validate_labels("other", {"x": 1}, allow_unavailable=False)
        await manager.stop()
        executor.shutdown()

    asyncio.run(scenario())


def test_allow_unavailable_only_for_new_or_unchanged_labels() -> None:
    async def scenario() -> None:
        manager, executor = await two_versions()
        manager.replace_labels({"m": {"stable": 1}}, allow_unavailable=False)
        manager.replace_labels({"m": {"stable": 1, "next": 3}}, allow_unavailable=True)  # new label: allowed
        with pytest.raises(ModelNotFound, match=r"^Servable not found for request: Specific\(m, 3\)$"):
            manager.peek(ModelSpec("m", label="next"))
        manager.replace_labels({"m": {"stable": 1, "next": 3}}, allow_unavailable=True)  # unchanged: allowed
        with pytest.raises(FailedPrecondition, match=unavailable(3)):  # moving to unavailable: refused
            manager.replace_labels({"m": {"stable": 3, "next": 3}}, allow_unavailable=True)
        with pytest.raises(FailedPrecondition, match=unavailable(3)):  # without the flag nothing goes
            manager.replace_labels({"m": {"stable": 1, "next": 3}}, allow_unavailable=False)
        manager.replace_labels({"m": {"stable": 2, "next": 3}}, allow_unavailable=True)  # moving to available
        assert manager.labels("m") == {"stable": 2, "next": 3}
        await manager.stop()
        executor.shutdown()

    asyncio.run(scenario())
