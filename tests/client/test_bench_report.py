"""BenchReport's JSON schema (golden), CSV, text summary, compare, CI gates and the flag parsers."""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mlsrv.client.bench_compare import check_gates, compare_reports
from mlsrv.client.bench_record import Recorder
from mlsrv.client.bench_report import CSV_COLUMNS, SCHEMA_VERSION, BenchReport, SeriesPoint, to_csv
from mlsrv.client.bench_spec import BenchSpec, parse_duration, parse_latency, parse_levels, parse_rate_percent
from mlsrv.client.server_metrics import ServerStats
from mlsrv.errors import Overloaded, TransportError, UsageError

GOLDEN = Path(__file__).resolve().parents[1] / "testdata" / "golden" / "bench_report.json"


def _fixed_report(spec: BenchSpec | None = None, scale: float = 1.0) -> BenchReport:
    """A report built from fixed data through the real Recorder (no clocks, no randomness)."""
    spec = spec or BenchSpec(rate=100.0, duration_s=2.0, warmup_s=1.0, batch_size=4, seed=7)
    rec = Recorder(start=100.0)
    for k in range(200):
        rec.record_ok(scale * (0.002 + (k % 50) * 0.0002), 100.0 + k / 100.0)
    rec.record_error(Overloaded("batch queue full"), 100.5)
    rec.record_error(Overloaded("batch queue full"), 101.5)
    rec.record_error(TransportError("connection refused"), 101.6)
    rec.late, rec.dropped = 3, 1
    rec.window_s = 2.0
    rec.cpu = [(0.95, 3.0), (2.85, 3.0)]
    report = rec.to_report(spec, started_at="2025-01-02T03:04:05+00:00", meta={"target": "http://127.0.0.1:8501"})
    server = ServerStats(
        "http://127.0.0.1:8501/monitoring/prometheus/metrics", batches=40, mean_batch_size=5.0,
        mean_queue_wait_ms=1.25, rejected={"batch_queue_full": 2, "bytes": 0, "requests": 0},
    )  # fmt: skip
    return replace(report, server=server)


def test_json_matches_golden_schema() -> None:
    data = _fixed_report().to_dict()
    text = json.dumps(data, indent=2) + "\n"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(text)
    assert json.loads(GOLDEN.read_text()) == data
    assert GOLDEN.read_text() == text  # key order is part of the documented layout


def test_json_round_trips_and_values_are_consistent() -> None:
    report = _fixed_report()
    data = json.loads(json.dumps(report.to_dict()))
    back = BenchReport.from_dict(data)
    assert back.to_dict() == data
    assert data["schema_version"] == SCHEMA_VERSION
    assert data["requests"] == {"sent": 203, "ok": 200, "errors": 3, "late": 3, "dropped": 1}
    assert data["rps"] == 100.0 and data["inferences_per_s"] == 400.0
    assert data["latency"]["min_ms"] == 2.0 and data["latency"]["max_ms"] == 11.8
    assert [s["completed"] for s in data["series"]] == [101, 102]
    assert data["client"] == {"workers": 2, "cpu_s": 3.8, "wall_s": 3.0, "cpu_fraction": 0.95, "bound": True}


def test_from_dict_ignores_unknown_fields_and_rejects_newer_schema() -> None:
    data = _fixed_report().to_dict()
    data["latency"]["p75_ms"] = 1.0
    data["added_later"] = True
    assert BenchReport.from_dict(data).latency == BenchReport.from_dict(_fixed_report().to_dict()).latency
    with pytest.raises(ValueError, match="schema_version"):
        BenchReport.from_dict({**data, "schema_version": SCHEMA_VERSION + 1})


def test_csv_has_one_row_per_report() -> None:
    closed = _fixed_report(BenchSpec(concurrency=4, duration_s=1.0))
    rows = list(csv.DictReader(io.StringIO(to_csv([closed, _fixed_report()]))))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert (rows[0]["mode"], rows[0]["concurrency"], rows[0]["rate"]) == ("closed", "4", "")
    assert (rows[1]["mode"], rows[1]["rate"], rows[1]["dropped"]) == ("open", "100.0", "1")
    assert rows[1]["client_bound"] == "true" and float(rows[1]["p99_ms"]) > 0


def test_summary_lines_mention_errors_and_warnings() -> None:
    text = "\n".join(_fixed_report().summary_lines())
    assert "open-loop, rate 100/s (constant), 2 worker(s)" in text
    assert "100.0 requests/s, 400.0 inferences/s" in text
    assert "UNAVAILABLE HTTP 503 Overloaded x2: batch queue full" in text
    assert "UNAVAILABLE TransportError x1: connection refused" in text
    assert "1 requests dropped" in text and "3 requests started over 10 ms late" in text
    assert "client used 1.27 cores (95% of a core in its busiest worker)" in text


def test_workers_that_share_fewer_cores_than_they_are_count_as_client_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder(start=0.0)
    rec.cpu = [(2.9, 6.0), (2.9, 6.0)]  # two workers at 48% each: neither saturates a core alone
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert rec.to_report(BenchSpec(concurrency=1, duration_s=1.0), started_at="", meta={}).client.bound
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert not rec.to_report(BenchSpec(concurrency=1, duration_s=1.0), started_at="", meta={}).client.bound


def test_compare_gives_absolute_and_percent_differences() -> None:
    a, b = _fixed_report(), _fixed_report(scale=2.0)
    comparison = compare_reports(a, b)
    by_name = {m.name: m for m in comparison.metrics}
    assert by_name["p99_ms"].b == pytest.approx(2 * by_name["p99_ms"].a, rel=2e-3)
    assert by_name["p99_ms"].pct == pytest.approx(100.0, abs=0.3)
    assert by_name["p99_ms"].improved is False
    assert by_name["rps"].diff == 0 and by_name["rps"].improved is None
    assert comparison.same_spec
    assert comparison.to_dict()["metrics"][0]["name"] == "rps"
    assert any(line.startswith("p99_ms") for line in comparison.lines())
    other = compare_reports(a, replace(b, spec=replace(b.spec, rate=50.0)))
    assert not other.same_spec and other.lines()[0].startswith("note:")


def test_compare_says_whether_a_difference_is_inside_the_runs_own_noise() -> None:
    rng = np.random.default_rng(5)

    def with_seconds(rps: np.ndarray, p99: np.ndarray) -> BenchReport:
        points = tuple(
            SeriesPoint(second=i, completed=int(r), errors=0, p50_ms=float(q) / 2, p99_ms=float(q))
            for i, (r, q) in enumerate(zip(rps, p99, strict=True))
        )
        return replace(_fixed_report(), series=points)

    base = with_seconds(rng.normal(1000, 50, 20), rng.normal(10, 1, 20))
    noisy = with_seconds(rng.normal(1000, 50, 20), rng.normal(10, 1, 20))  # another draw of the same run
    by_name = {m.name: m for m in compare_reports(base, noisy).metrics}
    assert by_name["rps"].verdict == by_name["p99_ms"].verdict == "within noise"
    assert by_name["rps"].noise is not None and by_name["rps"].noise.low < 0 < by_name["rps"].noise.high
    assert by_name["mean_ms"].verdict is None  # no per-second figure behind it
    faster = with_seconds(rng.normal(1300, 50, 20), rng.normal(7, 1, 20))
    by_name = {m.name: m for m in compare_reports(base, faster).metrics}
    assert by_name["rps"].verdict == by_name["p99_ms"].verdict == by_name["p50_ms"].verdict == "better"
    assert {m.name: m.verdict for m in compare_reports(faster, base).metrics}["p99_ms"] == "worse"
    assert "within noise" in "\n".join(compare_reports(base, noisy).lines())
    assert compare_reports(base, noisy).to_dict()["metrics"][0]["verdict"] == "within noise"
    short = replace(base, series=base.series[:2])
    assert {m.name: m.verdict for m in compare_reports(short, noisy).metrics}["rps"] is None


def test_compare_with_zero_baseline_has_no_percentage() -> None:
    a = _fixed_report()
    zero = replace(a, rps=0.0)
    assert {m.name: m.pct for m in compare_reports(zero, a).metrics}["rps"] is None


def test_gates_pass_and_fail() -> None:
    report = _fixed_report()  # p99 ~11.8 ms, 100 rps, error rate 3/203
    assert check_gates(report, max_p99_ms=20, min_rps=50, max_error_rate=0.02) == []
    violations = check_gates(report, max_p99_ms=10, min_rps=1000, max_error_rate=0.001)
    assert len(violations) == 3
    assert violations[0].startswith("p99 latency 11.8")
    assert "throughput 100.0 requests/s < limit 1000" in violations[1]
    assert "error rate 1.478% > limit 0.100%" in violations[2]
    assert check_gates(report) == []


def test_latency_gate_fails_without_successful_requests() -> None:
    empty = Recorder().to_report(BenchSpec(concurrency=1, requests=1))
    assert check_gates(empty, max_p99_ms=20) == ["p99 latency: no successful requests to measure (limit 20 ms)"]


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30.0), ("500ms", 0.5), ("2m", 120.0), ("1h", 3600.0), ("1.5", 1.5), ("250us", 25e-5)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("text", "ms"), [("20ms", 20.0), ("1.5s", 1500.0), ("300us", 0.3), ("7", 7.0)])
def test_parse_latency_returns_milliseconds(text: str, ms: float) -> None:
    assert parse_latency(text) == pytest.approx(ms)


@pytest.mark.parametrize(("text", "fraction"), [("0.1%", 0.001), ("0.001", 0.001), ("5%", 0.05), ("0", 0.0)])
def test_parse_rate_percent(text: str, fraction: float) -> None:
    assert parse_rate_percent(text) == pytest.approx(fraction)


@pytest.mark.parametrize(
    ("parse", "text"),
    [
        (parse_duration, "soon"),
        (parse_duration, "5 days"),
        (parse_latency, "ms"),
        (parse_rate_percent, "lots"),
        (parse_rate_percent, "150%"),
        (parse_levels, "1,x"),
        (parse_levels, "0,4"),
    ],
)
def test_parsers_reject_bad_values(parse: object, text: str) -> None:
    with pytest.raises(UsageError, match="invalid|outside"):
        parse(text)  # type: ignore[operator]


def test_parse_levels() -> None:
    assert parse_levels("1,4,16,64") == [1, 4, 16, 64]
