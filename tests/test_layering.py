"""The dependency rules of DESIGN.md, enforced: who may import whom, and where TensorFlow may appear."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "mlsrv"
#: The only modules allowed to import tensorflow at module level.
TF_MODULES = {
    "server/tf_runtime.py", "server/tf_session.py", "server/tf_function.py", "server/tf_warmup.py", "server/tflite.py"
}


def module_imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import in ``path``."""
    tree = ast.parse(path.read_text())
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, id(node) in top_level))
    return found


def sources() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(SRC)))
def test_layering(path: Path) -> None:
    relative = str(path.relative_to(SRC))
    package = relative.split("/")[0] if "/" in relative else relative.removesuffix(".py")
    for name, top in module_imports(path):
        if name == "tensorflow" or name.startswith("tensorflow."):
            assert relative in TF_MODULES, f"{relative} imports {name}"
        if not name.startswith("mlsrv."):
            continue
        target = name.split(".")[1]
        if package in ("errors", "protocol"):
            assert target in ("errors", "protocol"), f"{relative} may only import errors/protocol, not {name}"
        if package in ("config", "flags", "batching_params"):
            assert target in ("errors", "config", "flags", "batching_params"), f"{relative} imports {name}"
        if package == "client":
            assert target in ("errors", "protocol", "client"), f"{relative} imports {name}"
        if package == "server":
            assert target not in ("cli", "client"), f"{relative} imports {name}"
        if package == "cli" and target == "server":
            assert not top, f"{relative} imports {name} at module level; import the server lazily"


def test_cli_and_client_do_not_import_tensorflow() -> None:
    code = (
        "import sys, mlsrv.cli.app, mlsrv.client.api, mlsrv.client.transports, mlsrv.protocol.json_codec, "
        "mlsrv.protocol.grpc_codec, mlsrv.config_loader; assert 'tensorflow' not in sys.modules, 'tensorflow'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_cli_start_does_not_import_ml_dtypes() -> None:
    """``mlsrv --help`` and shell completion start the CLI on every TAB: ml_dtypes alone took 0.7 s
    (issue #11, P6). bfloat16's numpy dtype is resolved on first use instead."""
    code = (
        "import sys, mlsrv.cli.app, mlsrv.protocol.tensor_codec, mlsrv.protocol.json_codec; "
        "assert 'ml_dtypes' not in sys.modules and 'tensorflow' not in sys.modules, sorted(sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-500:]
    resolved = "from mlsrv.protocol import dtypes; assert dtypes.by_name('DT_BFLOAT16').numpy.name == 'bfloat16'"
    result = subprocess.run([sys.executable, "-c", resolved], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-500:]


def test_cli_help_and_completion_import_nothing_heavy() -> None:
    """``mlsrv --help`` and every TAB import the CLI: commands import numpy, asyncio, the client and the
    codecs when they run, not at import (issues #11 P6 and #13: --help under 0.3 s)."""
    heavy = ("numpy", "asyncio", "tensorflow", "ml_dtypes", "grpc", "orjson", "aiohttp", "mlsrv.client.api")
    code = (
        "import sys\n"
        "sys.argv = ['mlsrv', '--help']\n"
        "from mlsrv.cli.app import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print(sorted(set(sys.modules) & set({heavy!r})))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-500:]
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout[-500:]


def test_the_workers_supervisor_does_not_import_tensorflow() -> None:
    """``--workers N`` runs N servers: the supervisor beside them must not hold a copy of TensorFlow too."""
    code = "import sys, mlsrv.server.supervisor; assert 'tensorflow' not in sys.modules and 'numpy' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-500:]
