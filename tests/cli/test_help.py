"""``--help`` when stdout is not a terminal (piped to a file, ``less`` or ``grep``): nothing is cut off."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def piped_help(*args: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TERMINAL_WIDTH", "LINES")}
    code = "from mlsrv.cli.app import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", code, *args, "--help"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("command", ["run", "show", "predict", "bench"])
def test_piped_help_is_not_truncated(command: str) -> None:
    text = piped_help(command)
    assert "…" not in text
    if command == "run":
        assert "--signature_def,--signature-def" in text and "--input_examples,--input-examples" in text
        assert "np.array/asarray/ones/zeros/full/arange/linspace/eye/random.rand/randn/randint" in text


def test_an_explicit_width_is_respected() -> None:
    assert max(len(line) for line in piped_help("run", COLUMNS="70").splitlines()) <= 70


def test_serve_help_shows_tf_servings_defaults() -> None:
    text = piped_help("serve")
    port = next(line for line in text.splitlines() if "--port " in line)
    assert "[default: (8500)]" in port
    batching = next(line for line in text.splitlines() if "--enable_batching " in line)
    assert "[default: (false)]" in batching
