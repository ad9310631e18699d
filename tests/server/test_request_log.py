"""Request logging (a model's ``logging_config``) against a real server and TensorFlow's own reader.

Covers issue #15's acceptance 3: every call of a run logged at rate 1.0 and parsed as
``PredictionLog`` by ``tf.data.TFRecordDataset``; a rate of 0.1 within a binomial bound; a full
queue (a log whose reader stopped reading) drops and counts while every request is answered; a
log replayed as warmup (``mlsrv warmup``) and as ``mlsrv bench`` input.
"""

from __future__ import annotations

import asyncio
import functools
import glob
import json
import logging
import os
import shutil
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf

from mlsrv.config_loader import parse_model_server_config
from mlsrv.protocol import tensor_codec
from mlsrv.server import tf_session
from tests.cli.client_cli import invoke
from tests.conftest import EXAMPLES
from tests.server.harness import Running, running_server
from tests.server.test_metrics_server import REFERENCE_CONFIG, config_file

pytestmark = pytest.mark.tf

MODEL = EXAMPLES / "half_plus_two"
LOG_COUNT = ":tensorflow:serving:request_log_count"


def synchronous(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test body on a fresh loop (the suite's tests are plain functions)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


def model_config(tmp_path: Path, rate: float | None, prefix: Path | None = None) -> str:
    """A model config for half_plus_two as ``m``, with a ``logging_config`` unless ``rate`` is None."""
    logging_config = ""
    if rate is not None:
        logging_config = (
            f'logging_config {{ log_collector_config {{ type: "tfrecord" filename_prefix: "{prefix}" }} '
            f"sampling_config {{ sampling_rate: {rate} }} }}"
        )
    return (
        f'model_config_list {{ config {{ name: "m" base_path: "{MODEL}" model_platform: "tensorflow" '
        f"{logging_config} }} }}"
    )


@asynccontextmanager
async def logging_server(tmp_path: Path, rate: float | None, **flags: Any) -> AsyncIterator[Running]:
    path = tmp_path / "models.config"
    path.write_text(model_config(tmp_path, rate, tmp_path / "logs" / "m"))
    monitoring = config_file(tmp_path, REFERENCE_CONFIG)
    async with running_server(model_config_file=str(path), monitoring_config_file=monitoring, **flags) as server:
        yield server


def log_files(tmp_path: Path) -> list[str]:
    return sorted(glob.glob(str(tmp_path / "logs" / "m-*.tfrecord")))


def read_logs(files: list[str]) -> list[Any]:
    """Every record, parsed by TensorFlow's TFRecord reader and the official PredictionLog class."""
    from tensorflow_serving.apis import prediction_log_pb2

    if not files:
        return []
    return [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(files)]


async def log_counts(server: Running) -> dict[str, int]:
    _, page = await server.get("/monitoring/prometheus/metrics")
    counts = {}
    for line in page.splitlines():
        if line.startswith(LOG_COUNT + "{"):
            labels, value = line.rsplit(" ", 1)
            counts[labels.split('status_code="')[1].rstrip('"}')] = int(value)
    return counts


def grpc_predict_request(values: list[float], version: int | None = None) -> Any:
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    if version is not None:
        request.model_spec.version.value = version
    tensor_codec.from_ndarray(np.array([[v] for v in values], np.float32), request.inputs["x"], as_tensor_content=False)
    return request


@synchronous
async def test_rate_1_logs_every_successful_call_and_tf_reads_them(tmp_path: Path) -> None:
    from tensorflow_serving.apis import inference_pb2, prediction_service_pb2_grpc

    rest_inputs = [[[float(i)]] for i in range(6)] + [[[1.0], [2.0], [3.0]]]
    async with logging_server(tmp_path, 1.0) as server:
        for instances in rest_inputs:
            status, _ = await server.post("/v1/models/m:predict", {"instances": instances})
            assert status == 200
        assert (await server.post("/v1/models/m:predict", {"instances": [["bad"]]}))[0] == 400  # failed: not logged
        assert (await server.post("/v1/models/m:classify", {"signature_name": "classify_x_to_y",
                                                            "examples": [{"x": 1.0}]}))[0] == 200  # fmt: skip
        regress_body = {"signature_name": "regress_x_to_y", "examples": [{"x": 4.0}, {"x": 5.0}]}
        assert (await server.post("/v1/models/m:regress", regress_body))[0] == 200
        async with grpc.aio.insecure_channel(server.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            grpc_answers = [await stub.Predict(grpc_predict_request([10.0, 20.0], version=123)) for _ in range(3)]
            multi = inference_pb2.MultiInferenceRequest()
            for signature, method in (("classify_x_to_y", "classify"), ("regress_x_to_y", "regress")):
                task = multi.tasks.add()
                task.model_spec.name, task.model_spec.signature_name = "m", signature
                task.method_name = f"tensorflow/serving/{method}"
            multi.input.example_list.examples.add().features.feature["x"].float_list.value.append(3.0)
            await stub.MultiInference(multi)
        counts_while_serving = await log_counts(server)
        stopped = server.server
    records = read_logs(log_files(tmp_path))
    kinds = [r.WhichOneof("log_type") for r in records]
    assert kinds.count("predict_log") == 10 and kinds.count("classify_log") == 1
    assert kinds.count("regress_log") == 1 and kinds.count("multi_inference_log") == 1 and len(records) == 13
    predicts = [r for r in records if r.HasField("predict_log")]
    logged_inputs = sorted(tensor_codec.to_ndarray(r.predict_log.request.inputs["x"]).tolist() for r in predicts)
    assert logged_inputs == sorted([*rest_inputs, *[[[10.0], [20.0]]] * 3])
    for record in predicts:  # the response logged is the one sent: y = x / 2 + 2
        x = tensor_codec.to_ndarray(record.predict_log.request.inputs["x"])
        assert np.allclose(tensor_codec.to_ndarray(record.predict_log.response.outputs["y"]), x / 2 + 2)
        metadata = record.log_metadata
        assert metadata.model_spec.name == "m" and metadata.model_spec.version.value == 123
        assert metadata.model_spec.signature_name == "serving_default"
        assert metadata.sampling_config.sampling_rate == 1.0 and list(metadata.saved_model_tags) == ["serve"]
        assert metadata.timestamp_secs > 1_700_000_000
    assert np.allclose(tensor_codec.to_ndarray(grpc_answers[0].outputs["y"]), [[7.0], [12.0]])
    regress = next(r for r in records if r.HasField("regress_log")).regress_log
    assert [e.features.feature["x"].float_list.value[0] for e in regress.request.input.example_list.examples] == [4, 5]
    assert list(regress.response.result.regressions) and regress.response.model_spec.version.value == 123
    multi_log = next(r for r in records if r.HasField("multi_inference_log")).multi_inference_log
    assert [t.model_spec.signature_name for t in multi_log.request.tasks] == ["classify_x_to_y", "regress_x_to_y"]
    assert len(multi_log.response.results) == 2
    # request_log_count counts records written: all 13 once the server stopped (some may still have
    # been queued when the page was read)
    assert stopped.request_log.counts() == {("m", "OK"): 13}
    assert counts_while_serving.get("OK", 0) <= 13 and "RESOURCE_EXHAUSTED" not in counts_while_serving


@synchronous
async def test_rate_one_tenth_logs_about_a_tenth(tmp_path: Path) -> None:
    sent = 1000
    async with logging_server(tmp_path, 0.1) as server:
        for start in range(0, sent, 50):
            answers = await asyncio.gather(
                *(server.post("/v1/models/m:predict", {"instances": [[float(i)]]}) for i in range(start, start + 50))
            )
            assert all(status == 200 for status, _ in answers)
    logged = len(read_logs(log_files(tmp_path)))
    # Binomial(1000, 0.1): mean 100, standard deviation 9.5; outside 5 deviations once in ~2 million runs
    deviation = (sent * 0.1 * 0.9) ** 0.5
    assert abs(logged - sent * 0.1) <= 5 * deviation, logged


@synchronous
async def test_a_full_queue_drops_and_counts_while_every_request_is_answered(tmp_path: Path) -> None:
    """The log's reader stops reading (a FIFO nobody drains: a stalled disk). The writer blocks,
    the queue fills, and from then on sampled calls are dropped and counted, never waited for."""
    (tmp_path / "logs").mkdir()
    fifo = tmp_path / "logs" / f"m-{os.getpid()}-00000.tfrecord"  # the file the in-process server writes first
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # held open, not read: the pipe fills and writes block
    drained = threading.Event()
    try:
        async with logging_server(tmp_path, 1.0, request_log_queue_bytes=64 << 10) as server:
            body = {"instances": [[float(i)] for i in range(1000)]}  # 4 KB of inputs and 4 KB of outputs
            for _ in range(60):
                status, answer = await server.post("/v1/models/m:predict", body)
                assert status == 200 and len(answer["predictions"]) == 1000
            counts = await log_counts(server)
            assert counts.get("RESOURCE_EXHAUSTED", 0) >= 30, counts  # at most ~8 queued + a pipe's worth written
            assert sum(counts.values()) <= 60
            threading.Thread(target=_drain, args=(reader, drained), daemon=True).start()  # so the server can stop
    finally:
        drained.set()
        os.close(reader)


def _drain(fd: int, stop: threading.Event) -> None:
    os.set_blocking(fd, True)
    while not stop.is_set():
        try:
            if not os.read(fd, 1 << 16):
                return
        except OSError:
            return


@synchronous
async def test_reload_turns_logging_on_and_off(tmp_path: Path) -> None:
    async with logging_server(tmp_path, None) as server:
        assert (await server.post("/v1/models/m:predict", {"instances": [[1.0]]}))[0] == 200
        await server.server.reload_config(parse_model_server_config(
            model_config(tmp_path, 1.0, tmp_path / "logs" / "m"), source="reload"))  # fmt: skip
        assert (await server.post("/v1/models/m:predict", {"instances": [[2.0]]}))[0] == 200
        await server.server.reload_config(parse_model_server_config(model_config(tmp_path, None), source="reload"))
        assert (await server.post("/v1/models/m:predict", {"instances": [[3.0]]}))[0] == 200
    records = read_logs(log_files(tmp_path))
    assert [tensor_codec.to_ndarray(r.predict_log.request.inputs["x"]).tolist() for r in records] == [[[2.0]]]


@synchronous
async def test_a_prefix_that_cannot_be_written_fails_start_up(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    path = tmp_path / "models.config"
    path.write_text(model_config(tmp_path, 1.0, tmp_path / "file" / "logs" / "m"))
    from mlsrv.errors import ConfigError

    with pytest.raises(ConfigError, match="logging_config of model m: cannot create the directory"):
        async with running_server(model_config_file=str(path)):
            pass


@synchronous
async def test_a_log_replays_as_warmup_and_as_bench_input(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with logging_server(tmp_path, 1.0) as server:
        for i in range(5):
            assert (await server.post("/v1/models/m:predict", {"instances": [[float(i)], [1.0]]}))[0] == 200
        assert (await server.post("/v1/models/m:regress", {"signature_name": "regress_x_to_y",
                                                           "examples": [{"x": 4.0}]}))[0] == 200  # fmt: skip
        [log] = log_files(tmp_path)
        # as bench input, against the server that wrote it: the 5 logged Predict calls, in turn
        bench = await asyncio.to_thread(
            invoke, "bench", "-m", "m", "--rest", server.rest_url, "-n", "10", "--input-file", log, "--json"
        )
        assert bench.exit_code == 0, bench.stderr
        report = json.loads(bench.stdout)
        assert report["requests"]["sent"] == report["requests"]["ok"] == 10
    version = tmp_path / "copy" / "124"
    shutil.copytree(MODEL / "00000123", version)
    made = invoke("warmup", log, "--to", str(version), "--records", "4", "--json")
    assert made.exit_code == 0, made.stderr
    assert json.loads(made.stdout) == {
        "path": str(version / "assets.extra" / "tf_serving_warmup_requests"), "records": 4, "eligible": 16,
    }  # fmt: skip
    assert invoke("warmup", log, "--to", str(version)).exit_code == 2  # exists: --force replaces it
    with caplog.at_level(logging.INFO, logger="mlsrv.server.tf_warmup"):
        tf_session.SavedModelLoader(str(version), warmup_iterations=1).load()
    assert "Number of warmup records read: 4." in caplog.text
    # the log file itself, copied as it is, is a valid warmup file too
    shutil.copy(log, version / "assets.extra" / "tf_serving_warmup_requests")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mlsrv.server.tf_warmup"):
        tf_session.SavedModelLoader(str(version), warmup_iterations=1).load()
    assert "Number of warmup records read: 16." in caplog.text  # 5 + 1 sent here, 10 by bench (logged too)


def test_files_rotate_by_size_and_a_restart_appends(tmp_path: Path) -> None:
    from mlsrv.protocol import tfrecord
    from mlsrv.server.request_log import RotatingFiles

    records = [tfrecord.frame(bytes([i]) * 300) for i in range(10)]  # 316 bytes each, framed
    files = RotatingFiles(str(tmp_path / "m"), max_bytes=1000)
    for record in records[:7]:
        files.write(record)
    files.write(tfrecord.frame(b"x" * 5000))  # larger than a file: a file of its own
    files.close()
    restarted = RotatingFiles(str(tmp_path / "m"), max_bytes=1000)  # same pid, as PID 1 after a restart
    for record in records[7:]:
        restarted.write(record)
    restarted.close()
    paths = log_files_at(tmp_path)
    # 3 records fill a file (948 bytes); the large one gets a file of its own; after the restart the
    # first file with room for a record is file 2, and the last record skips the large one's file
    assert [p.rsplit("-", 1)[1] for p in paths] == [f"{n:05d}.tfrecord" for n in range(5)]
    assert [os.path.getsize(path) for path in paths] == [948, 948, 948, 5016, 316]
    assert {os.stat(path).st_mode & 0o777 for path in paths} == {0o600}  # what clients sent: owner only
    read = [r.numpy() for r in tf.data.TFRecordDataset(paths)]
    assert read == [bytes([i]) * 300 for i in range(9)] + [b"x" * 5000, bytes([9]) * 300]


def log_files_at(directory: Path) -> list[str]:
    return sorted(glob.glob(str(directory / "m-*.tfrecord")))
