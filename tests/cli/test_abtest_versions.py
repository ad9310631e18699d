"""``mlsrv abtest`` against a real ``mlsrv serve`` holding four versions of one model (issue #13,
acceptance 4): identical versions pass every gate and show no detectable latency difference, a
perturbed version fails ``--min-agreement``, a version ~20 ms slower fails ``--max-p99-regression``,
and a split whose B side answers nothing is flagged as a sample ratio mismatch.

Versions: 1 and 3 are ``y = x + 1`` (the same graph, exported twice), 2 is the bundled ``slow`` model
(``y = x + 1`` after a ~20 ms in-graph sleep), 4 is ``y = x + 1.5``, and 5 is ``y = x + w``: the
one-input requests made from A's signature all fail on it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from mlsrv.client.api import Client
from mlsrv.protocol.types import ModelSpec, State
from tests.cli.conftest import mlsrv_command
from tests.conftest import EXAMPLES, free_port

EXPORT = """
import sys, tensorflow as tf
offset, inputs, path = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
class Plus(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
    def predict(self, x):
        return {"y": x + offset}
class Sum(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name=n) for n in ("x", "w")])
    def predict(self, x, w):
        return {"y": x + w + offset}
module = Plus() if inputs == 1 else Sum()
tf.saved_model.save(module, path, signatures={"serving_default": module.predict})
"""


@pytest.fixture(scope="module")
def four_versions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A ``mlsrv serve`` with versions 1-5 of model ``ab``; yields its REST port."""
    if not (EXAMPLES / "slow" / "1" / "saved_model.pb").is_file():
        pytest.skip("bundled example models are missing (run examples/export_models.py)")
    base = tmp_path_factory.mktemp("ab") / "ab"
    for version, offset, inputs in ((1, 1.0, 1), (3, 1.0, 1), (4, 1.5, 1), (5, 0.0, 2)):
        done = subprocess.run(
            [sys.executable, "-c", EXPORT, str(offset), str(inputs), str(base / str(version))],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
    shutil.copytree(EXAMPLES / "slow" / "1", base / "2")
    config = base.parent / "models.config"
    config.write_text(
        f'model_config_list {{ config {{ name: "ab" base_path: "{base}" model_platform: "tensorflow" '
        "model_version_policy { all {} } } }\n"
    )
    rest, grpc_port = free_port(), free_port()
    log = (base.parent / "server.log").open("wb")
    process = subprocess.Popen(
        mlsrv_command(
            "serve", "--host=127.0.0.1", f"--port={grpc_port}", f"--rest_api_port={rest}",
            f"--model_config_file={config}",
        ),
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip

    async def ready() -> None:
        async with Client(f"127.0.0.1:{rest}", timeout=5) as client:
            for version in (1, 2, 3, 4, 5):
                await client.wait_for(ModelSpec("ab", version), State.AVAILABLE, timeout_s=120)

    try:
        asyncio.run(ready())
        yield rest
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


def abtest(rest: int, *args: str) -> tuple[int, dict[str, Any], str]:
    done = subprocess.run(
        mlsrv_command("abtest", "-m", "ab", "--rest", f"127.0.0.1:{rest}", "-d", '{"instances": [[1.0], [2.0]]}',
                      "--json", *args),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return done.returncode, json.loads(done.stdout), done.stderr


def test_identical_versions_pass_every_gate_with_no_detectable_latency_difference(four_versions: int) -> None:
    code, doc, stderr = abtest(
        four_versions, "--a-version", "1", "--b-version", "3", "-n", "80", "-c", "2",
        "--min-agreement", "100%", "--max-p99-regression", "10%", "--max-error-rate-diff", "0%", "--confidence", "0.99",
    )  # fmt: skip
    assert code == 0, stderr
    assert doc["passed"] and doc["agreement"]["agreeing"] == 80 and doc["agreement"]["rate"]["low"] > 0.9
    assert doc["latency"]["p99"]["verdict"] == "no detectable difference", doc["latency"]


def test_a_perturbed_version_fails_min_agreement(four_versions: int) -> None:
    code, doc, stderr = abtest(
        four_versions, "--a-version", "1", "--b-version", "4", "-n", "20", "--min-agreement", "99%"
    )
    assert code == 1 and not doc["passed"]
    assert doc["agreement"]["agreeing"] == 0 and doc["outputs"]["y"]["max_abs_diff"] == pytest.approx(0.5)
    assert doc["worst"][0]["a"] + 0.5 == pytest.approx(doc["worst"][0]["b"])
    assert "abtest failed: --min-agreement: 0.00% of request pairs agree" in stderr


def test_a_slower_version_fails_max_p99_regression_though_its_outputs_agree(four_versions: int) -> None:
    code, doc, stderr = abtest(
        four_versions, "--a-version", "1", "--b-version", "2", "-n", "40", "-c", "2", "--max-p99-regression", "10%"
    )
    assert code == 1 and doc["agreement"]["agreeing"] == 40
    p99 = doc["latency"]["p99"]
    assert p99["verdict"] == "worse" and p99["difference_ms"]["low"] > 5.0, p99
    assert "abtest failed: --max-p99-regression: B's p99" in stderr
    assert "--min-agreement" not in stderr


def test_a_split_whose_b_side_answers_nothing_is_a_sample_ratio_mismatch(four_versions: int) -> None:
    code, doc, stderr = abtest(
        four_versions, "--a-version", "1", "--b-version", "5", "--mode", "split", "--split", "0.5", "-n", "60",
        "--max-error-rate-diff", "100%",
    )  # fmt: skip
    assert doc["b"]["ok"] == 0 and doc["b"]["sent"] > 10, doc
    assert code == 1 and doc["sample_ratio"]["mismatch"], doc
    assert doc["b"]["errors"] == {"INVALID_ARGUMENT": doc["b"]["sent"]}
    assert "abtest failed: sample ratio mismatch: A answered" in stderr
