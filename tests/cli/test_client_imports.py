"""Client commands over gRPC never import TensorFlow (issue #13, item 1): a real ``mlsrv serve``, each
command in a fresh process where ``import tensorflow`` fails, ``sys.modules`` inspected at exit."""

from __future__ import annotations

import subprocess

import pytest

from tests.cli.conftest import Served, mlsrv_command

PROBE = (
    "import atexit, sys\n"
    "sys.modules['tensorflow'] = None  # import tensorflow raises ImportError from here on\n"
    "atexit.register(lambda: print('NO-TENSORFLOW' if sys.modules.get('tensorflow') is None else 'TENSORFLOW',"
    " file=sys.stderr))\n"
)


@pytest.mark.parametrize("command", ["predict", "metadata", "status"])
def test_client_commands_over_grpc_do_not_import_tensorflow(served: Served, command: str) -> None:
    args = {"predict": ["-d", '{"instances": [[1.0]]}'], "metadata": [], "status": []}[command]
    base = mlsrv_command(command, "-m", "half_plus_two", *served.args("grpc"), *args)
    done = subprocess.run(
        [base[0], "-c", PROBE + base[2], *base[3:]], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.strip().endswith("NO-TENSORFLOW"), done.stderr[-2000:]
