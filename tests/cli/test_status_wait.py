"""Runs ``test_status_wait.sh``: a shell script that starts ``mlsrv serve``, waits with
``mlsrv status --wait``, predicts over REST and gRPC, stops the server and checks exit code 3."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, free_port

SCRIPT = Path(__file__).with_suffix(".sh")


def test_status_wait_script(tmp_path: Path) -> None:
    if shutil.which("bash") is None or shutil.which("timeout") is None:
        pytest.skip("needs bash and coreutils timeout")
    model = EXAMPLES / "half_plus_two"
    if not (model / "00000123" / "saved_model.pb").is_file():
        pytest.skip("bundled example models are missing")
    log = tmp_path / "server.log"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHON": sys.executable,
        "MODEL_DIR": str(model),
        "REST_PORT": str(free_port()),
        "GRPC_PORT": str(free_port()),
        "LOG": str(log),
    }
    result = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=240)
    server_log = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n--- server log ---\n{server_log}"
    assert result.stdout.strip().endswith("status-wait script: ok")
