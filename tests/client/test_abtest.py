"""``run_abtest`` over a MockTransport: the three modes, numpy.isclose agreement, top-1, worst examples,
errors, the sample-ratio check and the gates."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from mlsrv.client.abtest import ABReport, ABSpec, Gates, OutputDiff, SideReport, run_abtest
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


def abtest(
    handler: Callable[[Call], Any], requests: int = 10, concurrency: int = 3, **spec: Any
) -> tuple[ABReport, MockTransport]:
    transport = MockTransport(handler)

    async def main() -> ABReport:
        async with Client(transport) as client:
            return await run_abtest(client, ABSpec(A, B, requests, concurrency, **spec), INPUTS)

    return asyncio.run(main()), transport


def test_equal_models_agree_and_pass_every_gate() -> None:
    report, transport = abtest(model({}))
    assert report.compared == report.agreeing == 10 and report.a.ok == report.b.ok == 10
    assert report.outputs["y"].max_abs_diff == 0.0 and report.outputs["y"].not_close == 0
    assert report.failures(Gates(max_p99_regression=0.1, max_error_rate_diff=0.0)) == []
    doc = report.to_dict(Gates())
    assert doc["passed"] and doc["mode"] == "paired" and doc["agreement"]["rate"]["estimate"] == 1.0
    assert doc["agreement"]["rate"]["low"] == pytest.approx(0.7225, abs=1e-4)  # Wilson, 10 of 10 at 95%
    assert doc["a"]["label"] == "stable" and doc["b"]["errors"] == {} and doc["worst"] == []
    assert set(doc["a"]["latency_ms"]) == {"p50", "p95", "p99", "mean", "min", "max"}
    assert doc["latency"]["paired"] and set(doc["latency"]) == {"paired", "p50", "p95", "p99"}
    # both sides get the very same tensors, in pairs, and the order alternates A,B / B,A
    calls = transport.calls
    assert len(calls) == 20
    for first, second in zip(calls[::2], calls[1::2], strict=True):
        assert first.request.inputs["x"] is second.request.inputs["x"]
    assert {c.request.spec.label for c in calls[:2]} == {"stable", "canary"}


def test_interleaving_alternates_which_side_goes_first() -> None:
    _, transport = abtest(model({}), requests=4, concurrency=1)
    assert [c.request.spec.label for c in transport.calls] == ["stable", "canary", "canary", "stable"] * 2


def test_an_offset_side_fails_min_agreement_with_the_elements_and_worst_examples_named() -> None:
    report, _ = abtest(model({"canary": 0.1}))
    diff = report.outputs["y"]
    assert diff.max_abs_diff == pytest.approx(0.1, rel=1e-5)
    assert diff.max_rel_diff == pytest.approx(0.1 / 0.6, rel=1e-5)  # x=-3: y=0.5 against 0.6
    assert (diff.elements, diff.not_close, report.agreeing) == (15, 15, 0)
    failures = report.failures(Gates())
    assert failures[0].startswith("--min-agreement: 0.00% of request pairs agree (95% CI 0.00%-27.75%)")
    assert failures[1].startswith("output y: 15 of 15 elements not close (rtol 1e-06, atol 1e-06")
    worst = report.to_dict(Gates())["worst"]
    assert len(worst) == 5 and worst[0]["output"] == "y" and worst[0]["abs_diff"] == pytest.approx(0.1, rel=1e-4)
    assert {w["request"] for w in worst} <= set(range(10)) and all("index" in w for w in worst)
    loose, _ = abtest(model({"canary": 0.1}), atol=0.2)
    assert loose.agreeing == 10 and loose.failures(Gates()) == []


def test_agreement_is_numpy_isclose_element_by_element() -> None:
    """The old rule (max abs diff and max rel diff, taken over different elements) failed this pair;
    numpy.isclose accepts every element: a large value off by 0.5 (relatively tiny) and a zero off
    by 1e-7 (absolutely tiny)."""
    a, b = np.array([1e6, 0.0]), np.array([1e6 + 0.5, 1e-7])
    assert np.isclose(b, a, rtol=1e-6, atol=1e-6).all()
    diff = OutputDiff()
    diff.add(a, b, atol=1e-6, rtol=1e-6)
    assert diff.not_close == 0 and diff.max_abs_diff == 0.5 and diff.max_rel_diff == 1.0
    diff.add(np.array([1.0]), np.array([1.0 + 3e-6]), atol=1e-6, rtol=1e-6)  # 3e-6 > 1e-6 + 1e-6 * 1
    assert diff.not_close == 1


def test_output_diff_handles_missing_shapes_nan_and_text() -> None:
    diff = OutputDiff()
    diff.add(np.array([1.0, np.nan, np.inf]), np.array([1.0, np.nan, np.inf]), 0.0, 0.0)
    assert (diff.max_abs_diff, diff.mismatched, diff.shape_mismatches, diff.not_close) == (0.0, 0, 0, 0)
    diff.add(np.array([0.0, np.nan]), np.array([0.0, 1.0]), 0.0, 0.0)
    diff.add(np.array([1.0]), None, 0.0, 0.0)
    diff.add(np.array([1.0]), np.array([1.0, 2.0]), 0.0, 0.0)
    diff.add(np.array([b"a", b"b"]), np.array([b"a", b"c"]), 0.0, 0.0)
    assert (diff.mismatched, diff.shape_mismatches, diff.compared, diff.not_close) == (2, 2, 5, 2)


def test_class_scores_get_top1_agreement_with_an_interval() -> None:
    scores = {
        "stable": np.array([[0.1, 0.7, 0.2], [0.5, 0.4, 0.1]], np.float32),
        "canary": np.array([[0.2, 0.6, 0.2], [0.3, 0.6, 0.1]], np.float32),  # row 2's top class changes
    }

    def classifier(call: Call) -> Any:
        return PredictResponse(call.request.spec, {"probs": scores[call.request.spec.label or ""]})

    report, _ = abtest(classifier, requests=20)
    top1 = report.outputs["probs"].top1(0.95)
    assert top1 is not None and (report.outputs["probs"].top1_rows, report.outputs["probs"].top1_agree) == (40, 20)
    assert top1.estimate == 0.5 and 0.35 < top1.low < 0.5 < top1.high < 0.65
    assert report.to_dict(Gates(min_agreement=0.0))["outputs"]["probs"]["top1"]["agree"] == 20


def test_errors_fail_by_default_and_pass_a_loose_error_rate_gate() -> None:
    report, _ = abtest(model({}, fail=lambda n: n % 3 == 0), requests=9)
    assert report.b.errors == {"UNAVAILABLE": 3} and report.b.ok == 6 and report.a.ok == 9
    assert report.compared == 6 and len(report.pairs) == 6 and report.b.sent == 9
    assert report.failures(Gates()) == ["side B had 3 error(s): UNAVAILABLE x3"]
    assert report.failures(Gates(max_error_rate_diff=0.5)) == []
    assert report.failures(Gates(max_error_rate_diff=0.2))[0].startswith(
        "--max-error-rate-diff: B's error rate 33.33% against A's 0.00%"
    )


def test_shadow_mode_sends_each_request_to_both_sides_at_once() -> None:
    entered: list[str] = []
    both_in_flight: list[bool] = []

    async def handler(call: Call) -> Any:
        entered.append(call.request.spec.label or "")
        await asyncio.sleep(0.01)
        both_in_flight.append(len(entered) % 2 == 0)  # the other side's call started while this one waited
        return model({})(call)

    transport = MockTransport(handler)

    async def main() -> ABReport:
        async with Client(transport) as client:
            return await run_abtest(client, ABSpec(A, B, 6, 1, mode="shadow"), INPUTS)

    report = asyncio.run(main())
    assert report.compared == report.agreeing == 6 and all(both_in_flight)
    assert report.failures(Gates()) == []


def test_split_mode_routes_by_seed_and_flags_a_sample_ratio_mismatch() -> None:
    report, transport = abtest(model({}), requests=400, concurrency=4, mode="split", split=0.9, seed=7)
    assert report.a.sent + report.b.sent == 400 == len(transport.calls) and report.compared == 0
    assert report.a.sent == int(np.count_nonzero(np.random.default_rng(7).random(400) < 0.9))
    assert 330 < report.a.sent < 390 and report.sample_ratio is not None and not report.sample_ratio.mismatch
    doc = report.to_dict(Gates())
    assert doc["agreement"] is None and doc["split"] == 0.9 and not doc["latency"]["paired"] and doc["passed"]
    # B drops most of its requests: the answered counts no longer follow the split
    lossy, _ = abtest(model({}, fail=lambda n: n % 4 != 0), requests=400, mode="split", split=0.9, seed=7)
    assert lossy.sample_ratio is not None and lossy.sample_ratio.mismatch
    failures = lossy.failures(Gates(max_error_rate_diff=1.0))
    assert any(line.startswith("sample ratio mismatch: A answered") for line in failures)


def test_a_p99_regression_fails_only_when_it_is_detectable_and_larger_than_the_gate() -> None:
    rng = np.random.default_rng(3)
    fast = rng.normal(0.010, 0.0005, 200).clip(0.008)

    def report_with(b_latencies: np.ndarray) -> ABReport:
        report = ABReport(ABSpec(A, B), SideReport(A), SideReport(B), compared=200, agreeing=200)
        report.pairs = list(zip(fast.tolist(), b_latencies.tolist(), strict=True))
        return report

    slower = report_with(fast + 0.003)
    p99 = slower.latency[99.0]
    assert p99 is not None and p99.verdict == "worse" and p99.difference_ms.low > 2.0
    assert slower.failures(Gates(max_p99_regression=0.1))[0].startswith("--max-p99-regression: B's p99")
    assert slower.failures(Gates(max_p99_regression=0.5)) == []  # +30%: detectable, but within a 50% gate
    same = report_with(fast.copy())
    assert same.latency[99.0] is not None and same.latency[99.0].verdict == "no detectable difference"
    assert same.failures(Gates(max_p99_regression=0.0)) == []


def test_bad_spec_and_empty_inputs_are_usage_errors() -> None:
    async def main(spec: ABSpec, inputs: list[Request]) -> None:
        async with Client(MockTransport(model({}))) as client:
            await run_abtest(client, spec, inputs)

    for spec in (ABSpec(A, B, requests=0), ABSpec(A, B, split=1.0), ABSpec(A, B, confidence=1.0)):
        with pytest.raises(UsageError):
            asyncio.run(main(spec, [Request(INPUTS[0])]))
    with pytest.raises(UsageError):
        asyncio.run(main(ABSpec(A, B), []))
