"""``mlsrv abtest`` over the mock server: JSON schema, table, exit codes, option errors."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from mlsrv.client.abtest import SCHEMA_VERSION
from mlsrv.client.transports import Call, Op
from mlsrv.errors import Overloaded
from mlsrv.protocol.types import PredictResponse
from tests.cli.client_cli import half_plus_two, invoke, use_mock

SIDES = ("--a-version", "1", "--b-label", "canary")


def shifted(call: Call) -> Any:
    """half_plus_two, except that the canary label answers 0.1 higher."""
    response = half_plus_two(call)
    if call.op is Op.PREDICT and call.request.spec.label == "canary":
        return PredictResponse(call.request.spec, {"": response.outputs[""] + 0.1})
    return response


def test_equal_sides_pass_with_json(monkeypatch: pytest.MonkeyPatch) -> None:
    transport = use_mock(monkeypatch)
    result = invoke("abtest", "-m", "m", *SIDES, "-n", "6", "-c", "2", "-i", "x=[[1.0],[3.0]]", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["schema_version"] == SCHEMA_VERSION and doc["passed"] and doc["equal"]
    assert doc["requests"] == doc["compared"] == 6
    assert doc["a"]["version"] == 1 and doc["b"]["label"] == "canary" and doc["a"]["ok"] == 6
    assert doc["outputs"] == {
        "y": {"compared": 6, "max_abs_diff": 0.0, "max_rel_diff": 0.0, "mismatched": 0, "shape_mismatches": 0}
    }
    assert doc["failures"] == [] and doc["atol"] == doc["rtol"] == 1e-6
    predicts = [c for c in transport.calls if c.op is Op.PREDICT]
    assert len(predicts) == 12 and all(np.array_equal(c.request.inputs["x"], [[1.0], [3.0]]) for c in predicts)
    assert {(c.request.spec.version, c.request.spec.label) for c in predicts} == {(1, None), (None, "canary")}


def test_different_outputs_exit_1_with_table(monkeypatch: pytest.MonkeyPatch) -> None:
    use_mock(monkeypatch, shifted)
    result = invoke("abtest", "-m", "m", *SIDES, "-n", "4", "-d", '{"instances": [[1.0]]}')
    assert result.exit_code == 1
    assert "differs" in result.stdout and "FAIL" in result.stdout and "p99 ms" in result.stdout
    assert "abtest failed: output y: max abs diff 0.0999" in result.stderr
    # a generous tolerance turns the same run into a pass
    loose = invoke("abtest", "-m", "m", *SIDES, "-n", "4", "--atol", "0.2", "--json")
    assert loose.exit_code == 0, loose.stderr
    assert json.loads(loose.stdout)["outputs"]["y"]["max_abs_diff"] == pytest.approx(0.1)


def test_errors_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(call: Call) -> Any:
        if call.op is Op.PREDICT and call.request.spec.label == "canary":
            raise Overloaded("busy")
        return half_plus_two(call)

    use_mock(monkeypatch, failing)
    result = invoke("abtest", "-m", "m", *SIDES, "-n", "3", "--json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["b"]["errors"] == {"UNAVAILABLE": 3} and doc["compared"] == 0 and not doc["passed"]
    assert "side B had 3 error(s)" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--b-label", "canary"), "give --a-version or --a-label"),
        (("--a-version", "1", "--a-label", "x", "--b-version", "2"), "not both"),
        (("--a-version", "1", "--b-version", "1"), "same version"),
        ((*SIDES, "-d", '{"instances": [[1.0]]}', "-i", "x=[[1.0]]"), "only one of --data or --input"),
        ((*SIDES, "-i", "x=[[1.0]]", "--shape", "x:1"), "--shape applies to generated inputs only"),
    ],
)
def test_bad_options_exit_2(monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], message: str) -> None:
    transport = use_mock(monkeypatch)
    result = invoke("abtest", "-m", "m", *args)
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert transport.calls == []
