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
from tests.cli.client_cli import check_golden, half_plus_two, invoke, use_mock

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
    assert doc["schema_version"] == SCHEMA_VERSION and doc["passed"] and doc["mode"] == "paired"
    assert doc["requests"] == doc["compared"] == 6 and doc["agreement"]["agreeing"] == 6
    assert doc["a"]["version"] == 1 and doc["b"]["label"] == "canary" and doc["a"]["ok"] == doc["a"]["sent"] == 6
    assert doc["outputs"]["y"] | {"top1": None} == {
        "compared": 6, "elements": 12, "not_close": 0, "max_abs_diff": 0.0, "max_rel_diff": 0.0,
        "mismatched": 0, "shape_mismatches": 0, "top1": None,
    }  # fmt: skip
    assert doc["failures"] == [] and doc["agreement"]["atol"] == doc["agreement"]["rtol"] == 1e-6
    assert doc["gates"] == {"min_agreement": 1.0, "max_p99_regression": None, "max_error_rate_diff": None}
    predicts = [c for c in transport.calls if c.op is Op.PREDICT]
    assert len(predicts) == 12 and all(np.array_equal(c.request.inputs["x"], [[1.0], [3.0]]) for c in predicts)
    assert {(c.request.spec.version, c.request.spec.label) for c in predicts} == {(1, None), (None, "canary")}


def test_different_outputs_exit_1_with_table(monkeypatch: pytest.MonkeyPatch) -> None:
    use_mock(monkeypatch, shifted)
    result = invoke("abtest", "-m", "m", *SIDES, "-n", "4", "-d", '{"instances": [[1.0]]}')
    assert result.exit_code == 1
    assert "FAIL" in result.stdout and "p99 ms" in result.stdout and "verdict" in result.stdout
    assert "largest difference: request" in result.stdout and "agreement: 0/4 request pairs" in result.stdout
    assert "abtest failed: --min-agreement: 0.00% of request pairs agree" in result.stderr
    assert "abtest failed: output y: 4 of 4 elements not close" in result.stderr
    # a generous tolerance, or a lower agreement gate, turns the same run into a pass
    loose = invoke("abtest", "-m", "m", *SIDES, "-n", "4", "--atol", "0.2", "--json")
    assert loose.exit_code == 0, loose.stderr
    assert json.loads(loose.stdout)["outputs"]["y"]["max_abs_diff"] == pytest.approx(0.1)
    assert invoke("abtest", "-m", "m", *SIDES, "-n", "4", "--min-agreement", "0%").exit_code == 0


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


def _timings_masked(value: Any, timed: bool = False) -> Any:
    """The document with every measured time replaced: what is left is fixed by the inputs and seed."""
    if isinstance(value, dict):
        return {
            k: v if k in ("percentile", "paired") else _timings_masked(v, timed or k in ("latency_ms", "latency"))
            for k, v in value.items()
        }
    return "<timing>" if timed else value


def test_json_document_matches_the_documented_golden_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/cli-json.md shows this document; its timings are masked, everything else is exact."""
    use_mock(monkeypatch, shifted)
    result = invoke("abtest", "-m", "m", *SIDES, "-n", "4", "-c", "1", "-i", "x=[[1.0],[3.0]]", "--json",
                    "--min-agreement", "50%", "--max-error-rate-diff", "1%")  # fmt: skip
    assert result.exit_code == 1
    check_golden("abtest.json", json.dumps(_timings_masked(json.loads(result.stdout)), indent=2) + "\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--b-label", "canary"), "give --a-version or --a-label"),
        (("--a-version", "1", "--a-label", "x", "--b-version", "2"), "not both"),
        (("--a-version", "1", "--b-version", "1"), "same version"),
        ((*SIDES, "-d", '{"instances": [[1.0]]}', "-i", "x=[[1.0]]"), "(got --data and --input)"),
        ((*SIDES, "-i", "x=[[1.0]]", "--shape", "x:1"), "--shape applies to generated inputs only"),
        ((*SIDES, "--min-agreement", "120%"), "--min-agreement must be 0%..100%"),
        ((*SIDES, "--max-p99-regression", "fast"), "--max-p99-regression expects a percentage"),
        ((*SIDES, "--mode", "split", "--split", "1.5"), "--split must be between 0 and 1"),
        ((*SIDES, "--confidence", "1"), "--confidence must be in [0.5, 1)"),
    ],
)
def test_bad_options_exit_2(monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], message: str) -> None:
    transport = use_mock(monkeypatch)
    result = invoke("abtest", "-m", "m", *args)
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert transport.calls == []
