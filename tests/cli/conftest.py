"""A real ``mlsrv serve`` subprocess shared by the client command tests (one per session: TF loads once).

It serves the bundled ``half_plus_two`` and ``slow`` example models on free 127.0.0.1 ports (REST and
gRPC), with its Prometheus page at TF Serving's default path. Tests reach it through :class:`Served`;
``served.args(protocol)`` gives the connection options.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlsrv.client.api import Client
from mlsrv.protocol.types import ModelSpec, State
from tests.conftest import EXAMPLES, free_port

START_TIMEOUT_S = 90.0
MAIN = "from mlsrv.cli.app import main; main()"


@dataclass(frozen=True)
class Served:
    rest_port: int
    grpc_port: int

    def args(self, protocol: str) -> list[str]:
        """Connection options for the CLI: ``--rest URL`` or ``--grpc host:port``."""
        if protocol == "rest":
            return ["--rest", f"http://127.0.0.1:{self.rest_port}"]
        return ["--grpc", f"127.0.0.1:{self.grpc_port}"]


def mlsrv_command(*args: str) -> list[str]:
    """``mlsrv ARGS`` with this interpreter, whatever is on PATH."""
    return [sys.executable, "-c", MAIN, *args]


async def _wait_ready(rest_port: int, names: list[str]) -> None:
    async with Client(f"127.0.0.1:{rest_port}", timeout=5) as client:
        for name in names:
            await client.wait_for(ModelSpec(name), State.AVAILABLE, timeout_s=START_TIMEOUT_S)


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A running ``mlsrv serve`` with half_plus_two and slow; stopped at the end of the session."""
    if not (EXAMPLES / "half_plus_two" / "00000123" / "saved_model.pb").is_file():
        pytest.skip("bundled example models are missing (run examples/export_models.py)")
    folder = tmp_path_factory.mktemp("served")
    config = folder / "models.config"
    config.write_text(
        "model_config_list {\n"
        + "".join(
            f'  config {{ name: "{name}" base_path: "{EXAMPLES / name}" model_platform: "tensorflow" }}\n'
            for name in ("half_plus_two", "slow")
        )
        + "}\n"
    )
    monitoring = folder / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }\n")
    served = Served(free_port(), free_port())
    log = (folder / "server.log").open("wb")
    process = subprocess.Popen(
        mlsrv_command(
            "serve",
            "--host=127.0.0.1",
            f"--port={served.grpc_port}",
            f"--rest_api_port={served.rest_port}",
            f"--model_config_file={config}",
            f"--monitoring_config_file={monitoring}",
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        try:
            asyncio.run(_wait_ready(served.rest_port, ["half_plus_two", "slow"]))
        except Exception:
            process.kill()
            process.wait(10)
            log.close()
            pytest.fail("mlsrv serve did not start:\n" + Path(log.name).read_text(errors="replace")[-3000:])
        yield served
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()
