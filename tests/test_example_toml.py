"""The documented example TOML loads and serves (guards examples/mlsrv.toml against rot)."""

from __future__ import annotations

from mlsrv.config import Latest
from mlsrv.config_loader import load_config
from tests.conftest import REPO


def test_example_toml_loads() -> None:
    config = load_config({"config": str(REPO / "examples" / "mlsrv.toml")})
    assert [m.name for m in config.models] == ["half_plus_two", "mlp"]
    assert config.models[0].base_path == str(REPO / "examples" / "models" / "half_plus_two")
    assert config.models[0].version_policy == Latest(1)
    assert dict(config.models[0].version_labels) == {"stable": 123}
    assert config.enable_batching and dict(config.batching_toml or {})["max_batch_size"] == 32
