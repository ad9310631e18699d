"""Shared fixtures: where TF Serving's reference models are (optional), bundled examples, free ports."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "models"
REFERENCE = REPO.parent / "shared" / "testdata" / "tfserving"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """TF Serving's own reference models; tests that need them skip when ../shared is absent."""
    if not REFERENCE.is_dir():
        pytest.skip("TF Serving reference models (../shared/testdata/tfserving) not present")
    return REFERENCE


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    return EXAMPLES


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
