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


def test_the_readmes_example_command_serves() -> None:
    """``mlsrv serve --config examples/mlsrv.toml`` (the README's command), ports moved to free ones."""
    from tests.conftest import EXAMPLES, free_port
    from tests.server.process_server import MLSRV, http_raw

    if not (EXAMPLES / "mlp_classifier" / "1" / "saved_model.pb").is_file():
        import pytest

        pytest.skip("example models missing")
    import subprocess
    import tempfile
    import time

    rest, grpc_port = free_port(), free_port()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen([*MLSRV, "serve", "--config", str(REPO / "examples" / "mlsrv.toml"),
                                    f"--port={grpc_port}", f"--rest_api_port={rest}", "--host=127.0.0.1"],
                                   stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            body = b'{"instances": [1.0]}'
            request = (b"POST /v1/models/half_plus_two/labels/stable:predict HTTP/1.1\r\nHost: x\r\n"
                       b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
            deadline = time.monotonic() + 120
            while (answer := http_raw(rest, request, timeout=5))[0] != 200:
                log.seek(0)
                assert process.poll() is None and time.monotonic() < deadline, log.read().decode()[-3000:]
                time.sleep(0.3)
            assert answer[1] == b'{"predictions":[2.5]}'
        finally:
            process.terminate()
            process.wait(60)
