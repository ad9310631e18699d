"""``mlsrv bench`` wired to the Client: options, inputs, JSON/CSV, compare, CI gates, and real runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlsrv.client.bench_report import CSV_COLUMNS, SCHEMA_VERSION
from mlsrv.client.transports import Call, Op
from mlsrv.protocol.types import PredictResponse
from tests.cli.client_cli import half_plus_two, invoke, use_mock
from tests.cli.conftest import Served

GOLDEN_REPORT = Path(__file__).resolve().parent.parent / "testdata" / "golden" / "bench_report.json"


def bench_json(*args: str) -> Any:
    result = invoke("bench", "-m", "m", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def keys(doc: Any) -> Any:
    """The key structure of a report (values dropped), to compare with the documented golden report."""
    if isinstance(doc, dict):
        skipped = ("errors", "series")
        return {k: None if k in ("meta", "rejected") else keys(v) for k, v in doc.items() if k not in skipped}
    return None


def test_json_report_has_the_documented_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    transport = use_mock(monkeypatch)
    report = bench_json("-c", "2", "-n", "20")
    assert keys(report) == keys(json.loads(GOLDEN_REPORT.read_text()))
    assert report["schema_version"] == SCHEMA_VERSION and report["mode"] == "closed"
    assert report["requests"]["sent"] == 20 and report["requests"]["ok"] == 20
    assert report["spec"]["concurrency"] == 2 and report["spec"]["batch_size"] == 1
    assert report["meta"]["protocol"] == "rest" and report["meta"]["model"] == "m"
    assert report["meta"]["inputs"] == "generated (random)"
    predicts = [c for c in transport.calls if c.op is Op.PREDICT]
    assert len(predicts) == 20 and predicts[0].request.inputs["x"].dtype == np.float32
    assert predicts[0].encoded_by == "" or predicts[0].payload is not None
    # the pool holds distinct generated requests, sent round-robin
    assert not np.array_equal(predicts[0].request.inputs["x"], predicts[1].request.inputs["x"])


def test_sweep_prints_one_report_per_level(monkeypatch: pytest.MonkeyPatch) -> None:
    use_mock(monkeypatch)
    reports = bench_json("-c", "1,3", "-n", "6")
    assert [r["spec"]["concurrency"] for r in reports] == [1, 3]
    table = invoke("bench", "-m", "m", "-c", "1,3", "-n", "6")
    assert table.exit_code == 0 and "concurrency" in table.stdout and "p99 ms" in table.stdout
    rates = bench_json("-r", "500,1000", "-n", "5")
    assert [r["spec"]["rate"] for r in rates] == [500.0, 1000.0] and rates[0]["mode"] == "open"


def test_csv_output(monkeypatch: pytest.MonkeyPatch) -> None:
    use_mock(monkeypatch)
    result = invoke("bench", "-m", "m", "-n", "5", "--csv")
    lines = result.stdout.splitlines()
    assert lines[0] == ",".join(CSV_COLUMNS) and len(lines) == 2 and lines[1].startswith("closed,1,,1,")


def test_batch_size_and_shapes_shape_the_generated_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    transport = use_mock(monkeypatch)
    report = bench_json("-n", "4", "--batch-size", "8", "--fill", "zeros")
    assert report["spec"]["batch_size"] == 8
    assert report["inferences_per_s"] == pytest.approx(8 * report["rps"], rel=1e-3)
    x = [c for c in transport.calls if c.op is Op.PREDICT][0].request.inputs["x"]
    assert x.shape == (8, 1) and not x.any()


def test_input_files_are_sent_round_robin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    transport = use_mock(monkeypatch)
    lines = tmp_path / "requests.json"
    lines.write_text('{"instances": [[1.0]]}\n{"instances": [[2.0], [3.0]]}\n')
    np.save(tmp_path / "x.npy", np.array([[7.0]], np.float32))
    report = bench_json("-n", "6", "--input-file", str(lines), "--input-file", str(tmp_path / "x.npy"))
    sent = [c.request.inputs["x"].reshape(-1).tolist() for c in transport.calls if c.op is Op.PREDICT]
    assert sent == [[1.0], [2.0, 3.0], [7.0]] * 2
    assert report["spec"]["batch_size"] == 1 and report["meta"]["inputs"].startswith("files: ")


def test_check_outputs_counts_mismatches(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter(range(1000))

    def flaky(call: Call) -> Any:
        result = half_plus_two(call)
        if call.op is Op.PREDICT and next(answers) % 4 == 3:  # every 4th answer is wrong (after the reference)
            return PredictResponse(result.spec, {"": result.outputs[""] + 1})
        return result

    use_mock(monkeypatch, flaky)
    report = bench_json("-n", "12", "-i", "x=[[1.0]]", "--check-outputs")
    assert report["requests"]["errors"] == 3
    assert report["errors"] == [
        {
            "code": "DATA_LOSS",
            "http_status": None,
            "kind": "OutputMismatch",
            "count": 3,
            "sample": "output y differs from the expected values",
        }
    ]


def test_gates_exit_1_when_violated(monkeypatch: pytest.MonkeyPatch) -> None:
    use_mock(monkeypatch)
    ok = invoke("bench", "-m", "m", "-n", "10", "--max-p99", "10s", "--max-error-rate", "0%", "--min-rps", "1")
    assert ok.exit_code == 0, ok.stderr
    bad = invoke("bench", "-m", "m", "-n", "10", "--min-rps", "1e9", "--max-p99", "1us", "-q")
    assert bad.exit_code == 1
    assert [line.split(":")[0] for line in bad.stderr.splitlines()] == ["gate failed", "gate failed"]
    assert "throughput" in bad.stderr and "p99 latency" in bad.stderr


def test_error_rate_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlsrv.errors import Overloaded

    def overloaded(call: Call) -> Any:
        if call.op is Op.PREDICT:
            raise Overloaded("queue full")
        return half_plus_two(call)

    use_mock(monkeypatch, overloaded)
    result = invoke("bench", "-m", "m", "-n", "5", "--max-error-rate", "0.1%")
    assert result.exit_code == 1 and "error: UNAVAILABLE HTTP 503 Overloaded x5: queue full" in result.stdout
    assert "gate failed: error rate 100.000% > limit 0.100%" in result.stderr


def test_data_is_a_request_body_as_in_predict_and_a_duration_given_to_it_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``-d`` is ``--data`` in every client command (it was ``--duration`` in bench alone)."""
    transport = use_mock(monkeypatch)
    result = invoke("bench", "-m", "m", "-n", "4", "-d", '{"instances": [[7.0]]}', "--json")
    assert result.exit_code == 0, result.stderr
    sent = [c.request.inputs["x"].tolist() for c in transport.calls if c.op is Op.PREDICT]
    assert sent and all(x == [[7.0]] for x in sent)
    assert json.loads(result.stdout)["meta"]["inputs"] == "--data (inline)"
    hint = invoke("bench", "-m", "m", "-d", "5s")
    assert hint.exit_code == 2 and "for a duration give --duration 5s" in hint.stderr
    both = invoke("bench", "-m", "m", "-d", '{"instances": [[1.0]]}', "-i", "x=[[1.0]]")
    assert both.exit_code == 2 and "give only one of --input-file, --input or --data" in both.stderr


def test_compare_reads_saved_reports(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    use_mock(monkeypatch)
    a, b, sweep = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "sweep.json"
    a.write_text(invoke("bench", "-m", "m", "-n", "5", "--json").stdout)
    b.write_text(invoke("bench", "-m", "m", "-n", "5", "-c", "2", "--json").stdout)
    sweep.write_text(invoke("bench", "-m", "m", "-n", "5", "-c", "1,2", "--json").stdout)
    text = invoke("bench", "--compare", str(a), str(b))
    assert text.exit_code == 0 and "note: the two runs used different load settings" in text.stdout
    doc = json.loads(invoke("bench", "--compare", str(a), str(a), "--json").stdout)
    assert doc["same_spec"] is True and doc["metrics"][0]["name"] == "rps" and doc["metrics"][0]["diff"] == 0
    gated = invoke("bench", "--compare", str(a), str(b), "--min-rps", "1e12")
    assert gated.exit_code == 1 and "gate failed: throughput" in gated.stderr
    mismatch = invoke("bench", "--compare", str(a), str(sweep))
    assert mismatch.exit_code == 2 and "has 1 runs but" in mismatch.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert invoke("bench", "--compare", str(a), str(bad)).exit_code == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-c", "2", "-r", "10"], "not both"),
        (["--arrival", "burst", "-r", "10"], "--arrival must be constant or poisson"),
        (["-c", "0"], "invalid level list"),
        (["-r", "fast"], "invalid --rate"),
        (["--input-file", "x.json", "--batch-size", "2"], "--batch-size applies to generated inputs"),
        (["--shape", "z:1"], "--shape z: no such input"),
        (["--json", "--csv"], "give --json or --csv"),
        (["--duration", "forever"], "invalid duration"),
        (["-b", "0"], "--batch-size must be >= 1, got 0"),
        (["-b", "-3"], "--batch-size must be >= 1, got -3"),
        (["-c", "1,,4"], "invalid level list '1,,4'"),
        (["-c", "1,4,"], "invalid level list"),
        (["-r", "10,,20"], "invalid --rate '10,,20'"),
        (["-r", "inf"], "rates must be positive numbers"),
        (["--min-rps", "-1"], "--min-rps must be a number >= 0, got -1"),
        (["--min-rps", "nan"], "--min-rps must be a number >= 0"),
        (["--workers", "0"], "--workers must be >= 1, got 0"),
    ],
)
def test_usage_errors_exit_2(monkeypatch: pytest.MonkeyPatch, args: list[str], message: str) -> None:
    use_mock(monkeypatch)
    result = invoke("bench", "-m", "m", "-n", "2", *args)
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == ""


def test_model_is_required_unless_comparing() -> None:
    result = invoke("bench", "-n", "1")
    assert result.exit_code == 2 and "--model is required" in result.stderr


# ------------------------------------------------------------------------------------- real server


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_real_run_with_checked_outputs(served: Served, protocol: str) -> None:
    result = invoke(
        "bench", "-m", "half_plus_two", *served.args(protocol), "-c", "4", "-n", "60", "--check-outputs", "--json"
    )
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["requests"] == {"sent": 60, "ok": 60, "errors": 0, "late": 0, "dropped": 0}
    assert report["meta"]["protocol"] == protocol and report["latency"]["p50_ms"] > 0


def test_real_run_with_two_worker_processes(served: Served) -> None:
    result = invoke(
        "bench", "-m", "half_plus_two", *served.args("rest"), "-c", "2", "-n", "40", "--workers", "2", "--json"
    )
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["client"]["workers"] == 2 and report["requests"]["ok"] == 40


def test_rate_mode_counts_queueing_that_concurrency_hides(served: Served) -> None:
    """The ``slow`` model takes ~20 ms a call. Offered 300 requests/s (more than the server can do), the
    open loop measures from each request's intended start, so queueing shows; one closed-loop client
    only ever waits for its own call."""
    common = ["-m", "slow", *served.args("rest"), "--input", "x=[[1.0]]", "--json", "--timeout", "20s"]
    closed = json.loads(invoke("bench", *common, "-c", "1", "--duration", "0.5s").stdout)
    opened = json.loads(invoke("bench", *common, "-r", "300", "--duration", "1s").stdout)
    assert closed["requests"]["errors"] == 0 and opened["requests"]["errors"] == 0
    assert 15 < closed["latency"]["p50_ms"] < 100
    assert opened["latency"]["p99_ms"] > 5 * closed["latency"]["p50_ms"]
    assert opened["rps"] < 250  # the server could not keep up, so requests queued


def test_the_servers_own_figures_are_read_from_its_metrics_page(served: Served) -> None:
    common = ["bench", "-m", "half_plus_two", "-c", "2", "-n", "20", "--json"]
    report = json.loads(invoke(*common, *served.args("rest")).stdout)
    server = report["server"]
    assert server["url"] == f"http://127.0.0.1:{served.rest_port}/monitoring/prometheus/metrics"
    assert server["note"] == "" and server["batches"] == 0 and server["mean_batch_size"] is None  # not batched
    assert server["rejected"] == {"batch_queue_full": 0, "bytes": 0, "model_queue": 0, "requests": 0}
    assert json.loads(invoke(*common, *served.args("grpc")).stdout)["server"] is None  # no REST address known
    both = [*served.args("rest"), *served.args("grpc"), "--protocol", "grpc"]
    assert json.loads(invoke(*common, *both).stdout)["server"]["url"] == server["url"]
    assert json.loads(invoke(*common, *served.args("rest"), "--server-metrics", "off").stdout)["server"] is None
    elsewhere = f"127.0.0.1:{served.rest_port}/nowhere"
    noted = json.loads(invoke(*common, *served.args("rest"), "--server-metrics", elsewhere).stdout)["server"]
    assert "HTTP 404" in noted["note"] and noted["batches"] == 0
    text = invoke("bench", "-m", "half_plus_two", "-c", "2", "-n", "20", *served.args("rest")).stdout
    assert "server: 0 batches; rejected: none; deadline drops 0, cancelled in queue 0" in text
