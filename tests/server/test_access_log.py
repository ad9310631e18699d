"""``--access_log``: one line per REST request and gRPC call, plain or JSON, written off the loop."""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from mlsrv.protocol import tensor_codec
from mlsrv.server.access_log import AccessEntry, AccessLog, format_json, format_plain
from tests.fakes import FakeLoaderFactory
from tests.server.harness import running_server
from tests.server.process_server import http_raw, serve_process
from tests.server.test_metrics_server import REFERENCE_CONFIG, config_file
from tests.server.test_rest_fake import model_dir

_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def parse_plain(line: str) -> dict[str, Any]:
    """A plain line back to its fields (quoted values are JSON strings)."""
    fields: dict[str, Any] = {}
    for key, value in _PAIR.findall(line):
        fields[key] = json.loads(value) if value.startswith('"') else value
    assert " ".join(f"{k}={v}" for k, v in _PAIR.findall(line)) == line, "nothing outside key=value pairs"
    return fields


def serve_and_call(tmp_path: Path, fmt: str) -> list[str]:
    """REST and gRPC calls (answered, refused, probes) against a fake half_plus_two; the log's lines."""
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc, predict_pb2
    from tensorflow_serving.apis import prediction_service_pb2_grpc as prediction_grpc

    path = tmp_path / "access.log"

    async def main() -> None:
        async with running_server(
            loader_factory=FakeLoaderFactory(), model_name="m", model_base_path=str(model_dir(tmp_path, 1)),
            access_log=str(path), access_log_format=fmt, monitoring_config_file=config_file(tmp_path, REFERENCE_CONFIG),
        ) as s:  # fmt: skip
            assert (await s.post("/v1/models/m:predict", {"instances": [[1.0], [2.0]]}))[0] == 200
            assert (await s.post("/v1/models/m/labels/none:predict", {"instances": [[1.0]]}))[0] == 400
            assert (await s.post("/v1/models/m%0Aforged=1:predict", {"instances": [[1.0]]}))[0] == 404
            assert (await s.get("/healthz"))[0] == 200
            _, page = await s.get("/monitoring/prometheus/metrics")
            assert ":mlsrv:access_log:dropped_count 0" in page
            async with grpc.aio.insecure_channel(s.grpc_target) as channel:
                request = predict_pb2.PredictRequest()
                request.model_spec.name = "m"
                tensor_codec.from_ndarray(np.ones((1, 1), np.float32), request.inputs["x"], as_tensor_content=True)
                await prediction_grpc.PredictionServiceStub(channel).Predict(request)
                request.model_spec.name = "nope"
                with pytest.raises(grpc.aio.AioRpcError):
                    await prediction_grpc.PredictionServiceStub(channel).Predict(request)
                status = get_model_status_pb2.GetModelStatusRequest()
                status.model_spec.name = "m"
                await model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status)

    asyncio.run(main())
    return path.read_text().splitlines()


def check_fields(lines: list[dict[str, Any]]) -> None:
    assert len(lines) == 8, lines  # 5 REST (the metrics page too) + 3 gRPC, in order
    predict, label, forged, health, _metrics, grpc_ok, grpc_missing, status = lines
    assert predict["protocol"] == "rest" and predict["method"] == "POST" and predict["path"] == "/v1/models/m:predict"
    assert (predict["model"], predict["version"], predict["signature"]) == ("m", "1", "serving_default")
    assert predict["status"] == "200" and float(predict["latency_ms"]) >= 0
    assert int(predict["bytes_in"]) == len(json.dumps({"instances": [[1.0], [2.0]]}))
    assert int(predict["bytes_out"]) > 0 and re.fullmatch(r"127\.0\.0\.1:\d+", predict["peer"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", predict["time"])
    assert (label["version"], label["status"]) == ("none", "400")  # no version answered: the label asked for
    assert forged["model"] == "m\nforged=1" and forged["status"] == "404" and "forged" not in forged.get("version", "")
    assert health["path"] == "/healthz" and health.get("model", "") == "" and health["status"] == "200"
    assert grpc_ok["protocol"] == "grpc" and grpc_ok["method"] == "Predict" and grpc_ok["status"] == "OK"
    assert (grpc_ok["model"], grpc_ok["version"], grpc_ok["signature"]) == ("m", "1", "serving_default")
    assert int(grpc_ok["bytes_in"]) > 0 and int(grpc_ok["bytes_out"]) > 0
    assert grpc_missing["status"] == "NOT_FOUND" and grpc_missing["model"] == "nope"
    assert int(grpc_missing["bytes_out"]) == 0
    assert status["method"] == "GetModelStatus" and status["status"] == "OK" and int(status["bytes_in"]) > 0


def test_plain_lines_one_per_call(tmp_path: Path) -> None:
    lines = serve_and_call(tmp_path, "plain")
    check_fields([parse_plain(line) for line in lines])
    assert not any(line.startswith("forged=") for line in lines)  # the newline in the name stayed inside its value


def test_json_lines_one_per_call(tmp_path: Path) -> None:
    lines = serve_and_call(tmp_path, "json")
    check_fields([json.loads(line) for line in lines])


def test_standard_output(tmp_path: Path) -> None:
    with serve_process(tmp_path, "--access_log=-") as server:
        body = b'{"instances": [[1.0]]}'
        request = (b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                   b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
        assert http_raw(server.rest_port, request, timeout=10)[0] == 200
    lines = [line for line in server.log_text().splitlines() if line.startswith("time=")]
    predicts = [line for line in lines if "path=/v1/models/m:predict" in line]
    assert len(predicts) == 1 and "protocol=rest" in predicts[0]
    assert "version=123 signature=serving_default status=200" in predicts[0]
    assert all("path=/readyz" in line for line in lines if line not in predicts)  # the start-up probes


def test_a_stalled_destination_drops_and_counts_without_blocking(tmp_path: Path) -> None:
    """The log is a pipe nobody reads: once it and the queue are full, lines are dropped, never waited for."""
    fifo = tmp_path / "access.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        log = AccessLog(str(fifo), "plain", max_lines=10)
        entry = AccessEntry(0.0, "rest", "127.0.0.1:1", "POST", "/v1/models/m:predict", "m", "1", "s", "200",
                            0.001, 10, 10)  # fmt: skip
        for _ in range(5000):  # ~600 KB of lines: ten times what the pipe holds
            log.record(entry)
        assert log.dropped > 1000
        drained = threading.Thread(target=lambda: _read_all(reader), daemon=True)
        drained.start()
        log.close(10.0)
    finally:
        os.close(reader)


def _read_all(fd: int) -> None:
    os.set_blocking(fd, True)
    try:
        while os.read(fd, 1 << 16):
            pass
    except OSError:
        pass


def test_values_that_need_quotes() -> None:
    entry = AccessEntry(1796623000.5, "rest", "[::1]:80", "GET", "/v1/models/a b", 'q"x', "", "", "404", 0.0, 0, 0)
    line = format_plain(entry)
    assert line.startswith("time=2026-12-07T05:56:40.500Z ") and r'path="/v1/models/a b" model="q\"x"' in line
    assert "version=" not in line and parse_plain(line)["model"] == 'q"x'
    assert json.loads(format_json(entry))["version"] == ""
