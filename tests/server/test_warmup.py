"""Warmup replay of assets.extra/tf_serving_warmup_requests (spec 5.5), with real TensorFlow."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from mlsrv.errors import DataLoss, InvalidArgument, Unimplemented
from mlsrv.protocol import tensor_codec
from mlsrv.server import tf_session
from mlsrv.server.tf_warmup import WARMUP_FILE
from tests.conftest import EXAMPLES

pytestmark = pytest.mark.tf


def model_with_warmup(tmp_path: Path, records: list[bytes]) -> Path:
    version = tmp_path / "123"
    shutil.copytree(EXAMPLES / "half_plus_two" / "00000123", version)
    (version / "assets.extra").mkdir(exist_ok=True)
    with tf.io.TFRecordWriter(str(version / WARMUP_FILE)) as writer:
        for record in records:
            writer.write(record)
    return version


def predict_record(value: float = 1.0) -> bytes:
    from tensorflow_serving.apis import prediction_log_pb2

    entry = prediction_log_pb2.PredictionLog()
    entry.predict_log.request.model_spec.name = "m"
    tensor_codec.from_ndarray(np.array([[value]], np.float32), entry.predict_log.request.inputs["x"],
                              as_tensor_content=False)
    return entry.SerializeToString()


def regress_record() -> bytes:
    from tensorflow_serving.apis import prediction_log_pb2

    entry = prediction_log_pb2.PredictionLog()
    request = entry.regress_log.request
    request.model_spec.signature_name = "regress_x_to_y"
    example = request.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.append(2.0)
    return entry.SerializeToString()


def test_records_are_replayed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = model_with_warmup(tmp_path, [predict_record(), regress_record(), predict_record(3.0)])
    with caplog.at_level(logging.INFO, logger="mlsrv.server.tf_warmup"):
        servable = tf_session.SavedModelLoader(str(path), warmup_iterations=2).load()
    assert "Number of warmup records read: 3." in caplog.text
    assert servable.run("serving_default", {"x": np.array([[4.0]], np.float32)})["y"].tolist() == [[4.0]]


def test_warmup_can_be_turned_off(tmp_path: Path) -> None:
    path = model_with_warmup(tmp_path, [b"not a prediction log"])
    tf_session.SavedModelLoader(str(path), warmup_iterations=None).load()  # the broken file is not read


def test_too_many_records_fail_the_load(tmp_path: Path) -> None:
    path = model_with_warmup(tmp_path, [predict_record()] * 1001)
    with pytest.raises(InvalidArgument, match=r"Number of warmup records exceeds the maximum \(1000\) at"):
        tf_session.SavedModelLoader(str(path)).load()


def test_unsupported_and_corrupt_records_fail_the_load(tmp_path: Path) -> None:
    from tensorflow_serving.apis import prediction_log_pb2

    entry = prediction_log_pb2.PredictionLog()
    entry.session_run_log.SetInParent()
    with pytest.raises(Unimplemented, match="Unsupported log_type for warmup: 5"):
        tf_session.SavedModelLoader(str(model_with_warmup(tmp_path / "a", [entry.SerializeToString()]))).load()
    corrupt = model_with_warmup(tmp_path / "b", [])
    (corrupt / WARMUP_FILE).write_bytes(b"garbage, not a TFRecord file at all")
    with pytest.raises(DataLoss, match="Please verify your warmup data is in TFRecord format."):
        tf_session.SavedModelLoader(str(corrupt)).load()


def test_a_record_that_is_not_a_prediction_log_is_invalid_argument(tmp_path: Path) -> None:
    path = model_with_warmup(tmp_path, [b"\xff\xff\xff not a prediction log"])
    with pytest.raises(InvalidArgument, match=r"^Failed to parse warmup record: .* from .*tf_serving_warmup_requests$"):
        tf_session.SavedModelLoader(str(path)).load()


def test_warmup_latency_is_observed_with_tfs_status(tmp_path: Path) -> None:
    seen: list[tuple[str, str]] = []

    def observe(path: str, status: str, micros: int) -> None:
        assert micros >= 0
        seen.append((path, status))

    good = model_with_warmup(tmp_path / "a", [predict_record()])
    tf_session.SavedModelLoader(str(good), warmup_observer=observe).load()
    corrupt = model_with_warmup(tmp_path / "b", [])
    (corrupt / WARMUP_FILE).write_bytes(b"garbage, not a TFRecord file at all")
    with pytest.raises(DataLoss):
        tf_session.SavedModelLoader(str(corrupt), warmup_observer=observe).load()
    assert seen[0] == (str(good), "OK")
    assert seen[1][0] == str(corrupt) and seen[1][1].startswith("DATA_LOSS: ")


def test_warmup_latency_reaches_the_prometheus_page(tmp_path: Path) -> None:
    import asyncio

    from tests.server.harness import running_server

    version = model_with_warmup(tmp_path / "m", [predict_record()])
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }")

    async def main() -> None:
        async with running_server(model_name="m", model_base_path=str(version.parent),
                                  monitoring_config_file=str(monitoring)) as s:
            await asyncio.sleep(0.1)
            _, text, _ = await s.request("GET", "/monitoring/prometheus/metrics")
            assert f':tensorflow:serving:model_warmup_latency_count{{model_path="{version}",status="OK"}} 1' in text

    asyncio.run(main())


def test_reading_warmup_data_logs_no_deprecation_warning(tmp_path: Path) -> None:
    """TF's ``tf_record_iterator`` deprecation notice is mlsrv's choice, not the user's to read (issue #19)."""
    import subprocess
    import sys

    path = model_with_warmup(tmp_path, [predict_record()])
    code = ("import logging; logging.basicConfig(level=logging.INFO); from mlsrv.server import tf_session; "
            f"tf_session.SavedModelLoader({str(path)!r}).load()")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Number of warmup records read: 1." in result.stderr
    assert "deprecated" not in result.stderr, result.stderr[-2000:]
