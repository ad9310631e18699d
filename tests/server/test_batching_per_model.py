"""Per-model batching: TF Serving's batching_params.pbtxt per version, and mlsrv.toml's per-model tables."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mlsrv.config_loader import load_config
from mlsrv.errors import ConfigError
from mlsrv.server.app import Server
from mlsrv.server.ids import ServableId
from tests.fakes import FakeLoaderFactory, FakeServable
from tests.server.harness import running_server
from tests.server.test_lifecycle_server import version, write_config


def test_batching_params_pbtxt_per_version(tmp_path: Path) -> None:
    batched, plain = tmp_path / "batched", tmp_path / "plain"
    version(batched, 1)
    version(plain, 1)
    (batched / "1" / "batching_params.pbtxt").write_text(
        "max_batch_size { value: 32 } batch_timeout_micros { value: 20000 } num_batch_threads { value: 1 }")
    servables = {"batched": FakeServable(delay=0.02), "plain": FakeServable(delay=0.02)}
    factory = FakeLoaderFactory(servable_for=lambda sid: servables[sid.name])
    config = write_config(tmp_path / "models.config", {"batched": (batched, ""), "plain": (plain, "")})

    async def main() -> None:
        async with running_server(loader_factory=factory, model_config_file=config, enable_batching=True,
                                  enable_per_model_batching_parameters=True) as s:
            for name in ("batched", "plain"):
                replies = await asyncio.gather(*(s.post(f"/v1/models/{name}:predict", {"instances": [[float(i)]]})
                                                 for i in range(8)))
                assert [body for _, body in replies] == [{"predictions": [[i / 2 + 2]]} for i in range(8)]
            assert sum(servables["batched"].batch_sizes) == 8 and len(servables["batched"].batch_sizes) < 8
            assert servables["plain"].batch_sizes == [1] * 8  # no file: not batched, as TF Serving

    asyncio.run(main())


def test_toml_per_model_batching(tmp_path: Path) -> None:
    version(tmp_path / "a", 1)
    version(tmp_path / "b", 1)
    toml = tmp_path / "mlsrv.toml"
    toml.write_text(
        '[[models]]\nname = "a"\nbase_path = "a"\nbatching = { max_batch_size = 8, batch_timeout_micros = 100 }\n'
        '[[models]]\nname = "b"\nbase_path = "b"\n'
    )
    config = load_config({"config": str(toml)})
    server = Server(config, loader_factory=FakeLoaderFactory())
    assert server.batching is not None
    options = server.batching._options_for(ServableId("a", 1))
    assert options is not None and options.max_batch_size == 8 and options.batch_timeout_s == 100e-6
    assert server.batching._options_for(ServableId("b", 1)) is None  # no global batching asked for


def test_bad_toml_model_batching_fails_at_startup(tmp_path: Path) -> None:
    toml = tmp_path / "mlsrv.toml"
    toml.write_text('[[models]]\nname = "a"\nbase_path = "/a"\nbatching = { max_batch_sise = 8 }\n')
    with pytest.raises(ConfigError, match="unknown batching parameter 'max_batch_sise'"):
        load_config({"config": str(toml)})


def test_a_bad_batching_params_pbtxt_fails_that_versions_load(tmp_path: Path) -> None:
    bad, good = tmp_path / "bad", tmp_path / "good"
    version(bad, 1)
    version(good, 1)
    (bad / "1" / "batching_params.pbtxt").write_text("max_batch_sise { value: 32 }")
    config = write_config(tmp_path / "models.config", {"bad": (bad, ""), "good": (good, "")})

    async def main() -> None:
        async with running_server(loader_factory=FakeLoaderFactory(), model_config_file=config, enable_batching=True,
                                  enable_per_model_batching_parameters=True) as s:
            code, status = await s.get("/v1/models/bad")
            (entry,) = status["model_version_status"]
            assert entry["state"] == "END" and entry["status"]["error_code"] == "INVALID_ARGUMENT"
            assert "batching_params.pbtxt" in entry["status"]["error_message"]
            assert (await s.post("/v1/models/bad:predict", {"instances": [[1.0]]}))[0] == 404
            assert await s.post("/v1/models/good:predict", {"instances": [[1.0]]}) == (200, {"predictions": [[2.5]]})

    asyncio.run(main())
