"""completions/ and man/ are generated from the CLI; regenerating them must give the checked-in files."""

from __future__ import annotations

import pytest

from mlsrv.cli.app import app
from mlsrv.cli.docs import completion_scripts, man_pages
from tests.conftest import REPO


@pytest.mark.parametrize(("folder", "generate"), [("completions", completion_scripts), ("man", man_pages)])
def test_generated_files_are_current(folder: str, generate: object) -> None:
    expected = generate(app)  # type: ignore[operator]
    present = {path.name: path.read_text() for path in (REPO / folder).iterdir() if path.is_file()}
    assert sorted(present) == sorted(expected), "run `make docs` to regenerate"
    for name, text in expected.items():
        assert present[name] == text, f"{folder}/{name} is stale: run `make docs`"


def test_man_pages_cover_every_command_and_option() -> None:
    pages = man_pages(app)
    for command in ("serve", "show", "run", "predict", "metadata", "status", "bench"):
        assert f"mlsrv-{command}.1" in pages
    serve = pages["mlsrv-serve.1"]
    assert "\\-\\-model_config_file" in serve and "\\-\\-enable_batching" in serve and "EXIT STATUS" in serve


def test_completion_scripts_name_the_program() -> None:
    scripts = completion_scripts(app)
    assert "_MLSRV_COMPLETE" in scripts["mlsrv.bash"] and "compdef" in scripts["_mlsrv"]
    assert "complete --command mlsrv" in scripts["mlsrv.fish"]


def test_bash_completion_answers_with_tf_serving_flags() -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "COMP_WORDS": "mlsrv serve --model_c", "COMP_CWORD": "2", "_MLSRV_COMPLETE": "complete_bash"}
    result = subprocess.run([sys.executable, "-m", "mlsrv.cli"], env=env, capture_output=True, text=True, timeout=60)
    assert set(result.stdout.split()) == {"--model_config_file", "--model_config_file_poll_wait_seconds"}
