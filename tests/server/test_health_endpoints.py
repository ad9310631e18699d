"""mlsrv's probe endpoints: /healthz (liveness) and /readyz (every configured model AVAILABLE)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from tests.fakes import FakeLoaderFactory
from tests.server.harness import running_server
from tests.server.test_lifecycle_server import version, write_config


def test_liveness_and_readiness(tmp_path: Path) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    version(good, 1)
    version(bad, 1)
    config = write_config(tmp_path / "models.config", {"good": (good, ""), "bad": (bad, "")})

    async def main() -> None:
        factory = FakeLoaderFactory({"bad": {"always_fail": True}})
        async with running_server(loader_factory=factory, model_config_file=config) as s:
            assert await s.get("/healthz") == (200, {"status": "ok"})
            assert await s.get("/readyz") == (503, {"status": "not ready", "models_not_available": ["bad"]})
        async with running_server(loader_factory=FakeLoaderFactory(), model_name="good",
                                  model_base_path=str(good)) as s:
            assert await s.get("/readyz") == (200, {"status": "ready"})

    asyncio.run(main())


def test_readiness_says_why_when_a_base_path_is_missing(tmp_path: Path) -> None:
    good, gone = tmp_path / "good", tmp_path / "gone"
    version(good, 1)
    version(gone, 1)
    config = write_config(tmp_path / "models.config", {"good": (good, ""), "gone": (gone, "")})

    async def main() -> None:
        async with running_server(loader_factory=FakeLoaderFactory(), model_config_file=config,
                                  file_system_poll_wait_seconds=0.05) as s:  # fmt: skip
            assert await s.get("/readyz") == (200, {"status": "ready"})
            shutil.rmtree(gone / "1")  # its only version goes away (unloaded), then its folder too
            for _ in range(200):
                if (await s.get("/readyz"))[0] == 503:
                    break
                await asyncio.sleep(0.02)
            shutil.rmtree(gone)
            for _ in range(200):
                status, body = await s.get("/readyz")
                if status == 503 and "problems" in body:
                    break
                await asyncio.sleep(0.02)
            assert body == {
                "status": "not ready",
                "models_not_available": ["gone"],
                "problems": {"gone": f"Could not find base path {gone} for servable gone with error "
                                     f"NOT_FOUND: {gone} not found"},
            }  # fmt: skip

    asyncio.run(main())
