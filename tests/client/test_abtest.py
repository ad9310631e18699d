"""``run_abtest`` over a MockTransport: identical inputs to both sides, interleaved, diffs and errors counted."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from mlsrv.client.abtest import ABReport, ABSpec, OutputDiff, run_abtest
from mlsrv.client.api import Client
from mlsrv.client.inputs import Request
from mlsrv.client.transports import Call, MockTransport, Op
from mlsrv.errors import Overloaded, UsageError
from mlsrv.protocol.types import ModelSpec, PredictResponse

A = ModelSpec("m", label="stable")
B = ModelSpec("m", label="canary")
INPUTS = [{"x": np.array([[1.0], [2.0]], np.float32)}, {"x": np.array([[-3.0]], np.float32)}]


def model(offsets: dict[str, float], fail: Callable[[int], bool] = lambda i: False) -> Callable[[Call], Any]:
    """half_plus_two per label, plus that label's offset; ``fail(n)`` makes canary's n-th call fail."""
    seen = {"canary": 0}

    def handler(call: Call) -> Any:
        assert call.op is Op.PREDICT
        label = call.request.spec.label
        if label == "canary":
            seen["canary"] += 1
            if fail(seen["canary"]):
                raise Overloaded("canary is reloading")
        y = call.request.inputs["x"] * np.float32(0.5) + np.float32(2 + offsets.get(label, 0.0))
        return PredictResponse(call.request.spec, {"y": y})

    return handler


def abtest(handler: Callable[[Call], Any], requests: int = 10, concurrency: int = 3) -> tuple[ABReport, MockTransport]:
    transport = MockTransport(handler)

    async def main() -> ABReport:
        async with Client(transport) as client:
            return await run_abtest(client, ABSpec(A, B, requests, concurrency), INPUTS)

    return asyncio.run(main()), transport


def test_equal_models_have_zero_diff_and_pass() -> None:
    report, transport = abtest(model({}))
    assert report.compared == 10 and report.a.ok == report.b.ok == 10
    assert report.outputs["y"].max_abs_diff == 0.0 and report.outputs["y"].max_rel_diff == 0.0
    assert report.equal_within(0.0, 0.0) and report.failures(0.0, 0.0) == []
    assert report.a.latency.total == report.b.latency.total == 10
    doc = report.to_dict()
    assert doc["passed"] and doc["equal"] and doc["a"]["label"] == "stable" and doc["b"]["errors"] == {}
    assert set(doc["a"]["latency_ms"]) == {"p50", "p99", "mean", "min", "max"}
    # both sides get the very same tensors, in pairs, and the order alternates A,B / B,A
    calls = transport.calls
    assert len(calls) == 20
    for first, second in zip(calls[::2], calls[1::2], strict=True):
        assert first.request.inputs["x"] is second.request.inputs["x"]
    assert {c.request.spec.label for c in calls[:2]} == {"stable", "canary"}


def test_interleaving_alternates_which_side_goes_first() -> None:
    _, transport = abtest(model({}), requests=4, concurrency=1)
    assert [c.request.spec.label for c in transport.calls] == ["stable", "canary", "canary", "stable"] * 2


def test_offset_side_is_reported_and_fails() -> None:
    report, _ = abtest(model({"canary": 0.1}))
    diff = report.outputs["y"]
    assert diff.max_abs_diff == pytest.approx(0.1, rel=1e-5)
    # largest relative diff is at the smallest |y|: x=-3 -> y=0.5 vs 0.6
    assert diff.max_rel_diff == pytest.approx(0.1 / 0.6, rel=1e-5)
    assert not report.equal_within(1e-6, 1e-6)
    assert report.equal_within(0.2, 0.0) and report.equal_within(0.0, 0.2)
    failures = report.failures(1e-6, 1e-6)
    assert len(failures) == 1 and failures[0].startswith("output y: max abs diff 0.0999")
    assert not report.to_dict()["passed"]


def test_errors_are_counted_by_code_and_fail_the_test() -> None:
    report, _ = abtest(model({}, fail=lambda n: n % 3 == 0), requests=9)
    assert report.b.errors == {"UNAVAILABLE": 3} and report.b.ok == 6 and report.a.ok == 9
    assert report.compared == 6 and report.b.latency.total == 6
    assert report.equal_within(0.0, 0.0)  # outputs that were compared agree...
    assert report.failures(0.0, 0.0) == ["side B had 3 error(s): UNAVAILABLE x3"]  # ...but errors fail it
    assert report.to_dict()["b"]["errors"] == {"UNAVAILABLE": 3}


def test_output_diff_handles_missing_shapes_nan_and_text() -> None:
    diff = OutputDiff()
    diff.add(np.array([1.0, np.nan, np.inf]), np.array([1.0, np.nan, np.inf]))
    assert (diff.max_abs_diff, diff.mismatched, diff.shape_mismatches) == (0.0, 0, 0)
    diff.add(np.array([0.0, np.nan]), np.array([0.0, 1.0]))
    diff.add(np.array([1.0]), None)
    diff.add(np.array([1.0]), np.array([1.0, 2.0]))
    diff.add(np.array([b"a", b"b"]), np.array([b"a", b"c"]))
    assert (diff.mismatched, diff.shape_mismatches, diff.compared) == (2, 2, 5)
    assert diff.max_abs_diff == 0.0 and diff.max_rel_diff == 0.0
    assert len(diff.failures(1.0, 1.0)) == 2


def test_bad_spec_and_empty_inputs_are_usage_errors() -> None:
    async def main(spec: ABSpec, inputs: list[Request]) -> None:
        async with Client(MockTransport(model({}))) as client:
            await run_abtest(client, spec, inputs)

    with pytest.raises(UsageError):
        asyncio.run(main(ABSpec(A, B, requests=0), [Request(INPUTS[0])]))
    with pytest.raises(UsageError):
        asyncio.run(main(ABSpec(A, B), []))
