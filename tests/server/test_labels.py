"""Version labels (TF ServerCore::UpdateModelVersionLabelMap semantics) and label resolution."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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


def test_the_model_listing_shows_each_labels_version(tmp_path: Path) -> None:
    """``GET /v1/models`` (mlsrv's listing) is where a label's version can be seen."""
    from tests.server.harness import running_server
    from tests.server.test_lifecycle_server import version, write_config

    version(tmp_path / "m", 1)
    version(tmp_path / "m", 2)
    config = write_config(tmp_path / "models.config", {"m": (tmp_path / "m", 'model_version_policy { all {} } '
                          'version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 2 }')})

    async def main() -> None:
        async with running_server(loader_factory=FakeLoaderFactory(), model_config_file=config,
                                  allow_version_labels_for_unavailable_models=True) as s:  # fmt: skip
            status, body = await s.get("/v1/models")
            assert status == 200
            assert body["models"][0]["version_labels"] == {"canary": "2", "stable": "1"}

    asyncio.run(main())
