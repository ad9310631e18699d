"""Request logs (PredictionLog TFRecords) as client inputs: bench / abtest ``--input-file``, ``mlsrv warmup``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mlsrv.client.transports import Op
from mlsrv.protocol import tensor_codec, tfrecord
from tests.cli.client_cli import invoke, use_mock


def predict_record(model: str, values: list[list[float]], alias: str = "x") -> bytes:
    from tensorflow_serving.apis import prediction_log_pb2

    entry = prediction_log_pb2.PredictionLog()
    entry.log_metadata.model_spec.name = model
    entry.predict_log.request.model_spec.name = model
    tensor_codec.from_ndarray(np.array(values, np.float32), entry.predict_log.request.inputs[alias],
                              as_tensor_content=True)  # fmt: skip
    return entry.SerializeToString()


def regress_record(model: str) -> bytes:
    from tensorflow_serving.apis import prediction_log_pb2

    entry = prediction_log_pb2.PredictionLog()
    entry.log_metadata.model_spec.name = model
    entry.regress_log.request.input.example_list.examples.add().features.feature["x"].float_list.value.append(1)
    return entry.SerializeToString()


def session_run_record() -> bytes:
    from tensorflow_serving.apis import prediction_log_pb2

    entry = prediction_log_pb2.PredictionLog()
    entry.session_run_log.request.feed.add().name = "x"
    return entry.SerializeToString()


def write_log(path: Path, records: list[bytes]) -> str:
    path.write_bytes(b"".join(tfrecord.frame(r) for r in records))
    return str(path)


@pytest.fixture
def log(tmp_path: Path) -> str:
    return write_log(tmp_path / "m-1-00000.tfrecord", [
        predict_record("m", [[1.0]]),
        regress_record("m"),  # not a Predict call: skipped by bench, replayed by warmup
        predict_record("m", [[2.0], [3.0]]),
        predict_record("m", [[9.0]], alias="other"),  # another signature's inputs: skipped by bench
        session_run_record(),  # warmup cannot replay it
    ])  # fmt: skip


def test_bench_replays_the_logged_predict_calls_in_turn(monkeypatch: pytest.MonkeyPatch, log: str) -> None:
    transport = use_mock(monkeypatch)
    result = invoke("bench", "-m", "m", "-n", "4", "--input-file", log, "--json")
    assert result.exit_code == 0, result.stderr
    sent = [c.request.inputs["x"].reshape(-1).tolist() for c in transport.calls if c.op is Op.PREDICT]
    assert sent == [[1.0], [2.0, 3.0]] * 2
    assert json.loads(result.stdout)["meta"]["inputs"] == f"files: {log}"


def test_abtest_replays_a_log(monkeypatch: pytest.MonkeyPatch, log: str) -> None:
    transport = use_mock(monkeypatch)
    result = invoke("abtest", "-m", "m", "--a-version", "1", "--b-label", "canary", "-n", "2", "-c", "1",
                    "--input-file", log, "--json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    sent = sorted(c.request.inputs["x"].reshape(-1).tolist() for c in transport.calls if c.op is Op.PREDICT)
    assert sent == [[1.0], [1.0], [2.0, 3.0], [2.0, 3.0]]
    both = invoke("abtest", "-m", "m", "--a-version", "1", "--b-version", "2", "--input-file", log, "-i", "x=[[1]]")
    assert both.exit_code == 2 and "only one of --data, --input or --input-file" in both.stderr


def test_a_log_without_fitting_requests_or_a_damaged_one_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, log: str
) -> None:
    use_mock(monkeypatch)
    other = write_log(tmp_path / "other.tfrecord", [predict_record("m", [[1.0]], alias="z"), regress_record("m")])
    result = invoke("bench", "-m", "m", "-n", "1", "--input-file", other)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "no logged Predict request fits the signature (inputs ['x']; 2 record(s)" in result.stderr
    cut = tmp_path / "cut.tfrecord"
    cut.write_bytes(Path(log).read_bytes()[:-5])
    damaged = invoke("bench", "-m", "m", "-n", "1", "--input-file", str(cut))
    assert damaged.exit_code != 0 and "record 5 is truncated" in damaged.stderr and "Traceback" not in damaged.stderr


def test_warmup_draws_replayable_records(tmp_path: Path, log: str) -> None:
    version = tmp_path / "m" / "3"
    version.mkdir(parents=True)
    more = write_log(tmp_path / "m-2-00000.tfrecord", [predict_record("m", [[100.0 + i]]) for i in range(10)]
                     + [predict_record("other_model", [[5.0]])])  # fmt: skip
    result = invoke("warmup", log, more, "--to", str(version), "--records", "5", "--model", "m", "--seed", "7")
    assert result.exit_code == 0, result.stderr
    target = version / "assets.extra" / "tf_serving_warmup_requests"
    assert result.stdout.strip() == f"wrote 5 of 14 replayable records to {target}"
    with open(version / "assets.extra" / "tf_serving_warmup_requests", "rb") as file:
        written = list(tfrecord.read_records(file, "warmup"))
    every = [predict_record("m", [[1.0]]), regress_record("m"), predict_record("m", [[2.0], [3.0]]),
             predict_record("m", [[9.0]], alias="other"), *(predict_record("m", [[100.0 + i]]) for i in range(10))]
    assert len(written) == 5 and len(set(written)) == 5 and all(r in every for r in written)
    assert [every.index(r) for r in written] == sorted(every.index(r) for r in written)  # logged order kept
    again = invoke("warmup", log, more, "--to", str(version), "--records", "5", "--model", "m", "--seed", "7",
                   "--force")  # fmt: skip
    assert again.exit_code == 0
    with open(version / "assets.extra" / "tf_serving_warmup_requests", "rb") as file:
        assert list(tfrecord.read_records(file, "warmup")) == written  # same logs, same seed: same file


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--to", "nowhere"], "--to nowhere: not a directory"),
        (["--to", "{version}", "--model", "absent"], "no record of model absent that warmup can replay"),
        (["--to", "{version}", "--records", "1001"], "Invalid value for '--records'"),
    ],
)
def test_warmup_errors(tmp_path: Path, log: str, args: list[str], message: str) -> None:
    version = tmp_path / "v"
    version.mkdir()
    result = invoke("warmup", log, *[a.replace("{version}", str(version)) for a in args])
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert invoke("warmup", str(tmp_path), "--to", str(version)).exit_code == 2  # a directory, not log files
