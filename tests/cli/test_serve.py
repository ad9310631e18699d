"""`mlsrv serve` as a process: TF Serving's flags, fast clear failures, warnings, clean SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, free_port

MLSRV = [sys.executable, "-m", "mlsrv.cli"]


def mlsrv(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MLSRV, *args], capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr and "╭" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert text in last, result.stderr


def test_bad_model_config_fails_fast_and_clearly(tmp_path: Path) -> None:
    config = tmp_path / "bad_model_config.txt"
    config.write_text("improperly formatted file")
    started = time.monotonic()
    result = mlsrv("serve", f"--model_config_file={config}")
    assert time.monotonic() - started < 30
    assert_one_line_error(result, 2, "Error parsing text-format tensorflow.serving.ModelServerConfig")
    assert result.stderr.strip().splitlines()[-1].startswith("Failed to start server. Error: INVALID_ARGUMENT: ")
    assert str(config) in result.stderr


def test_unknown_flag_and_bad_value_are_errors() -> None:
    assert_one_line_error(mlsrv("serve", "--model_base_path=/x", "--not_a_flag=1"), 2,
                          "No such option: --not_a_flag")
    assert_one_line_error(mlsrv("serve", "--rest_api_prot=1"), 2, "Possible options: --rest_api_num_threads")
    assert_one_line_error(mlsrv("serve", "--model_base_path=/x", "--port=abc"), 2,
                          "Illegal value 'abc' specified for int flag 'port'")
    assert_one_line_error(mlsrv("serve", "--model_base_path=/x", "--port=99999999999"), 2,  # int32, as TF
                          "Illegal value '99999999999' specified for int flag 'port'")
    assert_one_line_error(mlsrv("serve"), 2,
                          "Both server_options.model_base_path and server_options.model_config_file are empty!")


def test_version_flag() -> None:
    result = mlsrv("serve", "--version")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0].startswith("TensorFlow ModelServer: ") and lines[1].startswith("TensorFlow Library: 2.")


@pytest.mark.tf
def test_serve_warns_predicts_and_stops_cleanly_on_sigterm() -> None:
    rest = free_port()
    process = subprocess.Popen(
        [*MLSRV, "serve", "--host", "127.0.0.1", f"--port={free_port()}", "--rest_api_port", str(rest),
         "--model_name=half_plus_two", f"--model_base_path={EXAMPLES / 'half_plus_two'}",
         "--enable_batching", "--xla_cpu_compilation_enabled"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 90
        body = None
        while time.monotonic() < deadline and body is None:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{rest}/v1/models/half_plus_two:predict",
                    data=json.dumps({"instances": [[1.0], [5.0]]}).encode(), method="POST")
                with urllib.request.urlopen(request, timeout=5) as response:
                    body = json.loads(response.read())
            except OSError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                time.sleep(0.3)
        assert body == {"predictions": [[2.5], [4.5]]}
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
        assert "--xla_cpu_compilation_enabled is accepted for compatibility but not implemented" in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_sigterm_during_the_initial_load_stops_the_server(tmp_path: Path) -> None:
    """A base path that never appears keeps start-up waiting (as TF); a signal must still end it."""
    process = subprocess.Popen(
        [*MLSRV, "serve", "--host=127.0.0.1", f"--port={free_port()}", f"--rest_api_port={free_port()}",
         "--model_name=m", f"--model_base_path={tmp_path / 'never'}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        time.sleep(3)
        assert process.poll() is None
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr
        assert "Traceback" not in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_a_label_of_a_version_not_loaded_yet_fails_start_up_as_configuration_and_names_the_fix(tmp_path: Path) -> None:
    config = tmp_path / "models.config"
    config.write_text(
        'model_config_list { config { name: "m" base_path: "%s" model_platform: "tensorflow" '
        'version_labels { key: "stable" value: 123 } } }' % (EXAMPLES / "half_plus_two")
    )
    result = mlsrv("serve", f"--model_config_file={config}", "--host=127.0.0.1", f"--port={free_port()}",
                   f"--rest_api_port={free_port()}")
    assert_one_line_error(
        result, 2, "Failed to start server. Error: FAILED_PRECONDITION: Request to assign label to version 123 of "
        "model m, which is not currently available for inference. Start with "
        "--allow_version_labels_for_unavailable_models",
    )  # fmt: skip
