"""Helpers for the client command tests: run the CLI in-process, fake the server, compare golden files."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner, Result

from mlsrv.cli.app import app
from mlsrv.client import server_metrics
from mlsrv.client.api import Endpoint
from mlsrv.client.transports import Call, MockTransport, Op
from mlsrv.errors import ModelNotFound
from mlsrv.protocol.types import (
    CLASSIFY_METHOD,
    REGRESS_METHOD,
    ClassifyResponse,
    ModelMetadata,
    ModelSpec,
    ModelStatus,
    PredictResponse,
    RegressResponse,
    SignatureInfo,
    State,
    TensorInfo,
    VersionStatus,
)
from tests.fakes import HALF_PLUS_TWO_SIGNATURES

GOLDEN = Path(__file__).resolve().parent.parent / "testdata" / "golden" / "cli"

SIGNATURES = {
    **HALF_PLUS_TWO_SIGNATURES,
    "classify_x_to_y": SignatureInfo(
        inputs={"inputs": TensorInfo("classify_x_to_y_inputs:0", "DT_STRING", (-1,))},
        outputs={"scores": TensorInfo("scores:0", "DT_FLOAT", (-1, 1))},
        method_name=CLASSIFY_METHOD,
    ),
    "regress_x_to_y": SignatureInfo(
        inputs={"inputs": TensorInfo("regress_x_to_y_inputs:0", "DT_STRING", (-1,))},
        outputs={"outputs": TensorInfo("outputs:0", "DT_FLOAT", (-1, 1))},
        method_name=REGRESS_METHOD,
    ),
}


def invoke(*args: str, input: bytes | str | None = None) -> Result:
    """``mlsrv ARGS`` in this process; ``result.stdout`` / ``result.stderr`` / ``result.exit_code``."""
    return CliRunner().invoke(app, list(args), input=input, catch_exceptions=False)


def half_plus_two(call: Call) -> Any:
    """A MockTransport handler answering like mlsrv serving half_plus_two (version 123) over REST."""
    name = call.request.name if call.op in (Op.METADATA, Op.STATUS) else call.request.spec.name
    if name != "m":
        raise ModelNotFound(f"Servable not found for request: Latest({name})")
    if call.op is Op.METADATA:
        return ModelMetadata(ModelSpec("m", 123), SIGNATURES)
    if call.op is Op.STATUS:
        return ModelStatus("m", (VersionStatus(123, State.AVAILABLE),))
    if call.op is Op.PREDICT:
        x = call.request.inputs["x"]
        y = (x * np.float32(0.5) + np.float32(2)).astype(np.float64)  # REST: untyped, unnamed single output
        return PredictResponse(call.request.spec, {"": y})
    values = np.array([e["x"][0] * 0.5 + 2 for e in call.request.examples], dtype=np.float32)
    if call.op is Op.CLASSIFY:
        return ClassifyResponse(call.request.spec, None, values.reshape(-1, 1))
    return RegressResponse(call.request.spec, values)


def use_mock(monkeypatch: pytest.MonkeyPatch, handler: Callable[[Call], Any] = half_plus_two) -> MockTransport:
    """Make every CLI command talk to ``handler`` instead of a server; returns the transport (its calls)."""
    transport = MockTransport(handler)
    monkeypatch.setattr(Endpoint, "transport", lambda self: transport)
    # bench reads the server's metrics page: there is no server, and nothing else may be asked
    monkeypatch.setattr(server_metrics, "scrape", lambda url, context=None, token=None: "mock: no metrics page")
    return transport


def check_golden(name: str, text: str) -> None:
    """Compare with ``tests/testdata/golden/cli/<name>``; ``UPDATE_GOLDEN=1`` rewrites the file instead."""
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    assert path.is_file(), f"missing golden file {path}; run with UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{name} differs from the golden file (UPDATE_GOLDEN=1 to accept)"
