"""mlsrv's probe endpoints: /healthz (liveness) and /readyz (every configured model AVAILABLE)."""

from __future__ import annotations

import asyncio
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
