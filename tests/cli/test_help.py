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


def _help_in_fresh_process(preamble: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TERMINAL_WIDTH", "LINES")}
    code = (
        f"{preamble}\n"
        "import atexit, sys\n"
        "atexit.register(lambda: print('IMPORTED:', sorted(m for m in ('markdown_it', 'rich.markdown', "
        "'rich.traceback') if m in sys.modules), file=sys.stderr))\n"
        "from mlsrv.cli.app import main; main()\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, "serve", "--help"],
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_help_skips_richs_markdown_and_traceback_modules_and_looks_the_same() -> None:
    lean = _help_in_fresh_process("")
    full = _help_in_fresh_process("import rich.markdown, rich.traceback  # the real modules, loaded first")
    assert lean.returncode == 0 and full.returncode == 0, lean.stderr + full.stderr
    assert "IMPORTED: []" in lean.stderr
    assert "IMPORTED: ['markdown_it', 'rich.markdown', 'rich.traceback']" in full.stderr
    assert lean.stdout == full.stdout and "--enable_batching" in lean.stdout


def test_the_stand_ins_forward_to_richs_real_classes() -> None:
    code = (
        "import sys\n"
        "from mlsrv.cli import lean_help\n"
        "rich_utils = lean_help.import_help_renderer()\n"
        "assert 'rich.markdown' not in sys.modules and 'rich.traceback' not in sys.modules\n"
        "import rich.markdown, rich.traceback\n"
        "assert rich.markdown.Markdown is not rich_utils.Markdown  # the real module, not the stand-in\n"
        "assert isinstance(rich_utils.Markdown('# title'), rich.markdown.Markdown)\n"
        "try:\n"
        "    raise ValueError('boom')\n"
        "except ValueError as error:\n"
        "    drawn = rich_utils.Traceback.from_exception(type(error), error, error.__traceback__)\n"
        "assert isinstance(drawn, rich.traceback.Traceback)\n"
        "assert lean_help.import_help_renderer() is rich_utils\n"
        "print('OK')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "OK", result.stderr
