"""The README's shell examples, executed (issue #12 item 6).

Every command in the README's ``sh`` blocks is accounted for: each ``mlsrv serve`` command and the
Makefile's ``make serve`` run as written (ports moved to free loopback ones, the ``/models/m``
placeholder pointed at the bundled model) and answer the quickstart's ``curl`` request with the
answer the README prints. A command this file does not know fails :func:`test_every_readme_command_is_accounted_for`,
so a new example cannot go untested. ``examples/mlsrv.toml``'s command is run by
``tests/test_example_toml.py``; the S3 one by ``tests/server/test_remote_storage.py`` (a real S3 server
on loopback); ``make test`` is what CI runs.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import tempfile
import time

import pytest

from tests.conftest import EXAMPLES, REPO, free_port
from tests.server.process_server import MLSRV, http_raw

README = (REPO / "README.md").read_text()
HALF_PLUS_TWO = EXAMPLES / "half_plus_two"


def shell_commands() -> list[str]:
    """The commands of the README's ``sh`` blocks: continuation lines joined, comments dropped."""
    commands: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", README, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            command = re.split(r"\s+#\s", line.strip(), maxsplit=1)[0].strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def _quickstart_request() -> tuple[bytes, str, str]:
    """The quickstart's curl: its body, its path, and the answer the README prints under it."""
    match = re.search(r"curl -s -d '([^']+)' http://localhost:8501(\S+)\n# (\{.*\})", README)
    assert match, "the README's quickstart curl example moved: update this test"
    return match.group(1).encode(), match.group(2), match.group(3)


def _make_serve_command() -> list[str]:
    """The Makefile's ``serve`` recipe, its variables expanded."""
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^serve:.*\n\t(.+)$", makefile, flags=re.M)
    assert recipe, "the Makefile has no serve recipe"
    words = shlex.split(recipe.group(1).replace("$(EXAMPLE)", str(HALF_PLUS_TWO)))
    assert words[0] == "$(BIN)/mlsrv", words
    return ["mlsrv", *words[1:]]


def test_every_readme_command_is_accounted_for() -> None:
    unknown = []
    for command in shell_commands():
        words = shlex.split(command)
        if words[:2] in (["make", "serve"], ["make", "test"]) or words[0] in ("curl", "tensorflow_model_server"):
            continue
        if words[:2] == ["pip", "install"]:
            extras = re.findall(r"mlsrv\[(\w+)\]", command)
            pyproject = (REPO / "pyproject.toml").read_text()
            assert extras and all(re.search(rf"^{extra} = \[", pyproject, flags=re.M) for extra in extras), command
            continue
        if "mlsrv" in words and words[words.index("mlsrv") + 1] == "serve":
            continue  # run below
        unknown.append(command)
    assert unknown == [], "README commands no test runs; add them to tests/test_readme_examples.py"


def _serve_commands() -> list[tuple[str, list[str]]]:
    """(README line, argv) of each ``mlsrv serve`` command this file runs."""
    runs = [("make serve", _make_serve_command())]
    for command in shell_commands():
        words = shlex.split(command.replace("$PWD", str(REPO)))
        if "mlsrv" not in words or words[words.index("mlsrv") + 1] != "serve":
            continue
        words = words[words.index("mlsrv"):]
        if any(word.startswith("--config") for word in words):
            continue  # tests/test_example_toml.py
        if any("s3://" in word for word in words):
            continue  # tests/server/test_remote_storage.py
        runs.append((command, [w.replace("/models/m", str(HALF_PLUS_TWO)) for w in words]))
    return runs


@pytest.mark.parametrize(("line", "argv"), [pytest.param(line, argv, id=line) for line, argv in _serve_commands()])
def test_each_readme_serve_command_answers_the_quickstart_request(line: str, argv: list[str]) -> None:
    body, path, printed = _quickstart_request()
    rest, grpc_port = free_port(), free_port()
    argv = [w for w in argv if not w.startswith(("--port=", "--rest_api_port="))]
    model = next(w.split("=", 1)[1] for w in argv if w.startswith("--model_name="))
    path = path.replace("/half_plus_two:", f"/{model}:")
    request = (b"POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
               % (path.encode(), len(body), body))  # fmt: skip
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen([*MLSRV, *argv[1:], "--host=127.0.0.1", f"--port={grpc_port}",
                                    f"--rest_api_port={rest}"], stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while (answer := http_raw(rest, request, timeout=5))[0] != 200:
                log.seek(0)
                assert process.poll() is None and time.monotonic() < deadline, (line, log.read().decode()[-3000:])
                time.sleep(0.3)
            assert json.loads(answer[1]) == json.loads(printed), line
        finally:
            process.terminate()
            process.wait(60)
