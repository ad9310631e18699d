"""Shared fixtures: where TF Serving's reference models are (optional), bundled examples, free ports."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "models"
REFERENCE = REPO.parent / "shared" / "testdata" / "tfserving"


#: Set by ``.ci/run``: CI has ``../shared``, so a missing reference folder there is a failure, not a skip.
REQUIRE_REFERENCE_ENV = "MLSRV_REQUIRE_REFERENCE"
REFERENCE_SKIP = "TF Serving reference models (../shared/testdata/tfserving) not present"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """TF Serving's own reference models; tests that need them skip when ../shared is absent (and
    fail instead under ``MLSRV_REQUIRE_REFERENCE=1``, as in CI)."""
    if not REFERENCE.is_dir():
        if os.environ.get(REQUIRE_REFERENCE_ENV) == "1":
            pytest.fail(f"{REFERENCE} is missing, and {REQUIRE_REFERENCE_ENV}=1 says it must be there (CI)")
        pytest.skip(REFERENCE_SKIP)
    return REFERENCE


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line saying how many tests skipped for want of ../shared, and how to run them."""
    skipped = terminalreporter.stats.get("skipped", [])
    count = sum(1 for report in skipped if REFERENCE_SKIP in str(getattr(report, "longrepr", "")))
    if count:
        terminalreporter.write_line(
            f"{count} tests skipped: {REFERENCE} is absent (TF Serving's reference models); CI runs them "
            f"with ../shared beside the clone ({REQUIRE_REFERENCE_ENV}=1 makes the absence a failure)"
        )


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    return EXAMPLES


#: Ports ``free_port`` has handed out in this test process: never handed out twice.
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, and not one this process was given before.

    The kernel may return the same port to two binds in a row once the first socket is closed, so
    ``free_port(), free_port()`` for a server's REST and gRPC ports came out equal now and then (a
    clean-clone CI run failed with "--rest_api_port cannot be the same as --port").
    """
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no port that was not handed out before in 100 tries")
