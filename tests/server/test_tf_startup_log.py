"""TensorFlow's start-up lines: ``mlsrv serve`` prints each once (TF 2.21's import prints them twice)."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import os
from mlsrv.server.tf_startup_log import captured_tensorflow_import
with captured_tensorflow_import(echo_once=True):
    for stamp in ("1796617252.254827", "1796617254.851004"):  # what TF's two initialisations print
        os.write(2, f"I0000 00:00:{stamp}   11625 port.cc:153] oneDNN custom operations are on.\\n".encode())
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n")
    os.write(2, b"E0000 00:00:1796617255.3 11625 cuda_platform.cc:52] failed call to cuInit\\n")
os.write(2, b"after\\n")
"""


def test_each_start_up_line_is_written_once_in_order_and_later_output_is_untouched() -> None:
    done = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert [line.split("] ", 1)[-1] for line in lines] == [
        "oneDNN custom operations are on.",
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "failed call to cuInit",
        "after",
    ]
    assert "1796617252.254827" in lines[0]  # the first occurrence is the one kept
