"""Models that use ops from a library outside TensorFlow (here TensorFlow Text's tokenizer), which TF
Serving serves only when rebuilt with it (issue #12 item 4).

The model is exported in a subprocess and served by ``mlsrv serve`` processes, so no test process
has imported ``tensorflow_text`` beforehand: what registers the op is what the server does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.server.process_server import MLSRV, http_raw, serve_process

pytestmark = pytest.mark.tf

EXPORT = """
import sys, tensorflow as tf, tensorflow_text as text
class M(tf.Module):
    def __init__(self):
        super().__init__()
        self.tokenizer = text.WhitespaceTokenizer()
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(self, s):
        return {"count": self.tokenizer.tokenize(s).row_lengths()}
m = M()
tf.saved_model.save(m, sys.argv[1], signatures={"serving_default": m.serve})
"""


@pytest.fixture(scope="module")
def text_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("optext") / "m"
    result = subprocess.run([sys.executable, "-c", EXPORT, str(base / "1")], capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return base


def count_tokens(port: int) -> tuple[int, object]:
    body = json.dumps({"instances": ["a b c", "d"]}).encode()
    request = (b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
    status, answer = http_raw(port, request, timeout=30)
    return status, json.loads(answer) if answer else None


def test_an_installed_op_library_is_found_and_imported_when_a_model_needs_it(text_model: Path, tmp_path: Path) -> None:
    with serve_process(tmp_path, model=text_model) as server:
        assert count_tokens(server.rest_port) == (200, {"predictions": [3, 1]})
        log = server.log_text()
    assert "Op TFText>WhitespaceTokenizeWithOffsetsV2 is not in TensorFlow: imported tensorflow_text" in log


def test_load_op_packages_imports_them_before_any_model(text_model: Path, tmp_path: Path) -> None:
    with serve_process(tmp_path, "--load_op_packages=tensorflow_text", model=text_model) as server:
        assert count_tokens(server.rest_port) == (200, {"predictions": [3, 1]})
        log = server.log_text()
    assert "Loaded op package tensorflow_text" in log and "is not in TensorFlow" not in log


def test_a_package_that_cannot_be_imported_is_a_one_line_configuration_error(text_model: Path) -> None:
    result = subprocess.run([*MLSRV, "serve", "--model_name=m", f"--model_base_path={text_model}", "--host=127.0.0.1",
                             f"--port={free_port()}", f"--rest_api_port={free_port()}",
                             "--load_op_packages=no_such_op_package"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(
        "Failed to start server. Error: INVALID_ARGUMENT: --load_op_packages: cannot import no_such_op_package"
    )


def test_without_the_library_the_load_fails_naming_the_op_and_the_package(text_model: Path, tmp_path: Path) -> None:
    shadow = tmp_path / "shadow" / "tensorflow_text"  # an install that cannot be imported
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('not built for this TensorFlow')\n")
    env = {**os.environ, "PYTHONPATH": str(shadow.parent)}
    result = subprocess.run([*MLSRV, "serve", "--model_name=m", f"--model_base_path={text_model}", "--port=0",
                             "--grpc_socket_path=" + str(tmp_path / "g.sock"), "--rest_api_port=0",
                             "--max_num_load_retries=0"],
                            capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "Op type not registered 'TFText>WhitespaceTokenizeWithOffsetsV2'" in last
    assert "the op is not part of TensorFlow; install the package that provides it: pip install tensorflow-text" in last
