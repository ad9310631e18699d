"""``--monitoring_config_file``: the Prometheus page on the REST port, fed by REST, gRPC and batching."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from mlsrv.errors import ConfigError
from mlsrv.monitoring_config import DEFAULT_PATH, load_monitoring_config
from mlsrv.protocol.types import REGRESS_METHOD, SignatureInfo, TensorInfo
from tests.fakes import HALF_PLUS_TWO_SIGNATURES, FakeLoaderFactory, FakeServable
from tests.server.harness import Running, running_server
from tests.server.test_grpc_fake import predict_request
from tests.server.test_rest_fake import model_dir

#: Verbatim copy of TF Serving's ``monitoring_config.txt`` test file, for checkouts without ../shared.
REFERENCE_CONFIG = """prometheus_config: {
  enable: true,
  path: "/monitoring/prometheus/metrics"
}
"""
REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
RUNTIME_LATENCY = ":tensorflow:serving:runtime_latency"


def reference_config_file() -> Path | None:
    path = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "tfserving" / "monitoring_config.txt"
    return path if path.is_file() else None


def config_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "monitoring.config"
    path.write_text(text)
    return str(path)


class RegressServable(FakeServable):
    """half_plus_two plus a ``regress`` signature that answers 1.5 per example."""

    def __init__(self, **kwargs: Any) -> None:
        regress = SignatureInfo(
            inputs={"inputs": TensorInfo("tf_example:0", "DT_STRING", (-1,))},
            outputs={"outputs": TensorInfo("y:0", "DT_FLOAT", (-1, 1))},
            method_name=REGRESS_METHOD,
        )
        super().__init__(signatures={**HALF_PLUS_TWO_SIGNATURES, "regress": regress}, **kwargs)

    def run(
        self, signature: str, inputs: Mapping[str, np.ndarray], output_filter: Sequence[str] = ()
    ) -> dict[str, np.ndarray]:
        if signature == "regress":
            return {"outputs": np.full((len(inputs["inputs"]), 1), 1.5, np.float32)}
        return super().run(signature, inputs, output_filter)


def serve(
    tmp_path: Path,
    scenario: Callable[[Running], Awaitable[None]],
    *,
    servable: FakeServable | None = None,
    **flags: Any,
) -> None:
    async def main() -> None:
        async with running_server(
            loader_factory=FakeLoaderFactory(servable=servable or RegressServable()),
            model_name="m",
            model_base_path=str(model_dir(tmp_path, 1)),
            **flags,
        ) as s:
            await scenario(s)

    asyncio.run(main())


def samples(text: str) -> dict[str, str]:
    """``name{labels}`` -> value for every sample line of a page."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = value
    return out


async def scrape(s: Running, path: str = DEFAULT_PATH, method: str = "GET") -> dict[str, str]:
    status, text, response = await s.request(method, path)
    assert status == 200
    assert response.headers["Content-Type"] == "text/plain"
    assert isinstance(text, str) and text.endswith("\n")
    assert f"# TYPE {REQUEST_COUNT} counter\n" in text and "# HELP" not in text
    return samples(text)


def regression_request(name: str, count: int) -> Any:
    from tensorflow_serving.apis import regression_pb2

    request = regression_pb2.RegressionRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = "regress"
    for i in range(count):
        request.input.example_list.examples.add().features.feature["x"].float_list.value.append(float(i))
    return request


def test_rest_and_grpc_calls_are_counted(tmp_path: Path) -> None:
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc, prediction_service_pb2_grpc

    async def scenario(s: Running) -> None:
        assert (await s.post("/v1/models/m:predict", {"instances": [[1.0]]}))[0] == 200
        assert (await s.post("/v1/models/nope:predict", {"instances": [[1.0]]}))[0] == 404
        assert (await s.post("/v1/models/m:predict", raw=b"{not json"))[0] == 400
        assert (await s.get("/v1/models/m"))[0] == 200
        assert (await s.get("/v1/foo"))[0] == 400  # Malformed request: counted with an empty model name
        assert (await s.get("/not/api"))[0] == 404  # the plain 404 page never reaches the API: not counted
        body = {"signature_name": "regress", "examples": [{"x": 1.0}, {"x": 2.0}, {"x": 3.0}]}
        assert await s.post("/v1/models/m:regress", body) == (200, {"results": [1.5, 1.5, 1.5]})
        async with grpc.aio.insecure_channel(s.grpc_target) as channel:
            predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            await predict.Predict(predict_request("m"))
            with pytest.raises(grpc.aio.AioRpcError):
                await predict.Predict(predict_request("gone"))
            await predict.Regress(regression_request("m", 2))
            status_request = get_model_status_pb2.GetModelStatusRequest()
            status_request.model_spec.name = "m"
            await model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status_request)  # not counted

        page = await scrape(s, "/metrics")
        counts = {k: v for k, v in page.items() if k.startswith(REQUEST_COUNT + "{")}
        assert counts == {
            f'{REQUEST_COUNT}{{model_name="",status="INVALID_ARGUMENT"}}': "1",
            f'{REQUEST_COUNT}{{model_name="gone",status="NOT_FOUND"}}': "1",
            f'{REQUEST_COUNT}{{model_name="m",status="INVALID_ARGUMENT"}}': "1",
            f'{REQUEST_COUNT}{{model_name="m",status="OK"}}': "5",
            f'{REQUEST_COUNT}{{model_name="nope",status="NOT_FOUND"}}': "1",
        }
        latency = {k: v for k, v in page.items() if k.startswith(REQUEST_LATENCY + "_count")}
        assert latency == {
            f'{REQUEST_LATENCY}_count{{model_name="m",API="",entrypoint="REST"}}': "1",
            f'{REQUEST_LATENCY}_count{{model_name="m",API="Predict",entrypoint="GRPC"}}': "1",
            f'{REQUEST_LATENCY}_count{{model_name="m",API="Regress",entrypoint="GRPC"}}': "1",
            f'{REQUEST_LATENCY}_count{{model_name="m",API="predict",entrypoint="REST"}}': "1",
            f'{REQUEST_LATENCY}_count{{model_name="m",API="regress",entrypoint="REST"}}': "1",
        }
        assert page[f'{REQUEST_LATENCY}_bucket{{model_name="m",API="predict",entrypoint="REST",le="+Inf"}}'] == "1"
        assert page[f'{RUNTIME_LATENCY}_count{{model_name="m",API="Predict",runtime="TF1"}}'] == "2"
        assert page[f'{RUNTIME_LATENCY}_count{{model_name="m",API="Regress",runtime="TF1"}}'] == "2"
        assert page[':tensorflow:serving:request_example_count_total{model="m"}'] == "5"
        assert page[':tensorflow:serving:request_example_counts_bucket{model="m",le="2"}'] == "0"
        assert page[':tensorflow:serving:request_example_counts_bucket{model="m",le="4"}'] == "2"
        assert (await scrape(s, "/metrics", "POST")) == page  # any method; scrapes are not counted

    config = config_file(tmp_path, 'prometheus_config { enable: true path: "/metrics" }')
    serve(tmp_path, scenario, monitoring_config_file=config)


def test_internal_errors_are_counted(tmp_path: Path) -> None:
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    async def scenario(s: Running) -> None:
        assert (await s.post("/v1/models/m:predict", {"instances": [[1.0]]}))[0] == 500
        async with grpc.aio.insecure_channel(s.grpc_target) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(predict_request("m"))
            assert info.value.code() is grpc.StatusCode.INTERNAL
        page = await scrape(s)
        assert page[f'{REQUEST_COUNT}{{model_name="m",status="INTERNAL"}}'] == "2"
        assert not any(k.startswith(REQUEST_LATENCY) or k.startswith(RUNTIME_LATENCY) for k in page)

    servable = RegressServable(error=RuntimeError("boom"))
    serve(tmp_path, scenario, servable=servable, monitoring_config_file=config_file(tmp_path, REFERENCE_CONFIG))


def test_batching_metrics(tmp_path: Path) -> None:
    async def scenario(s: Running) -> None:
        assert (await s.post("/v1/models/m:predict", {"instances": [[1.0], [2.0]]}))[0] == 200
        page = await scrape(s)
        pool = 'thread_pool_name="model_server_batch_threads"'
        assert page[f":tensorflow:serving:batching_session:queuing_latency_count{{{pool}}}"] == "1"
        assert page[":tensorflow:serving:batching_session:input_batch_size_count{}"] == "1"
        assert page[':tensorflow:serving:batching_session:processed_batch_size_bucket{le="2"}'] == "0"
        assert page[':tensorflow:serving:batching_session:processed_batch_size_bucket{le="4"}'] == "1"
        assert page[":tensorflow:serving:batching_session:wrapped_run_count{}"] == "1"

    serve(tmp_path, scenario, enable_batching=True, monitoring_config_file=config_file(tmp_path, REFERENCE_CONFIG))


@pytest.mark.parametrize("with_file", [False, True], ids=["no-flag", "enable-false"])
def test_no_page_unless_enabled(tmp_path: Path, with_file: bool) -> None:
    async def scenario(s: Running) -> None:
        assert s.server.metrics is None
        status, text, response = await s.request("GET", DEFAULT_PATH)
        assert status == 404 and response.headers["Content-Type"].startswith("text/html")
        assert "Not Found" in text

    flags: dict[str, Any] = {}
    if with_file:
        flags["monitoring_config_file"] = config_file(tmp_path, 'prometheus_config { enable: false path: "/x" }')
    serve(tmp_path, scenario, **flags)


def test_empty_path_means_default_and_exact_match_wins_over_v1(tmp_path: Path) -> None:
    async def scenario(s: Running) -> None:
        await scrape(s, "/v1/metrics")
        assert (await s.get("/v1/metrics/"))[0] == 400  # only the exact path is the page

    config = config_file(tmp_path, 'prometheus_config { enable: true path: "/v1/metrics" }')
    serve(tmp_path, scenario, monitoring_config_file=config)
    assert load_monitoring_config(config_file(tmp_path, "prometheus_config { enable: true }")) == (True, DEFAULT_PATH)


@pytest.mark.parametrize("source", ["reference", "inline"])
def test_reference_monitoring_config_loads(tmp_path: Path, source: str) -> None:
    path = reference_config_file() if source == "reference" else Path(config_file(tmp_path, REFERENCE_CONFIG))
    if path is None:
        pytest.skip("../shared/testdata/tfserving is not available")
    assert path.read_text() == REFERENCE_CONFIG
    assert load_monitoring_config(str(path)) == (True, "/monitoring/prometheus/metrics")

    async def scenario(s: Running) -> None:
        assert (await s.post("/v1/models/m:predict", {"instances": [[1.0]]}))[0] == 200
        assert (await scrape(s))[f'{REQUEST_COUNT}{{model_name="m",status="OK"}}'] == "1"

    serve(tmp_path, scenario, monitoring_config_file=str(path))


def test_bad_config_file_fails_at_startup_naming_the_file(tmp_path: Path) -> None:
    bad = config_file(tmp_path, "prometheus_config { enabled: true }")
    with pytest.raises(ConfigError, match=r"monitoring\.config:1:.*no field named \"enabled\""):
        serve(tmp_path, lambda s: asyncio.sleep(0), monitoring_config_file=bad)
    with pytest.raises(ConfigError, match="cannot read monitoring config file"):
        serve(tmp_path, lambda s: asyncio.sleep(0), monitoring_config_file=str(tmp_path / "missing.txt"))


def test_not_read_when_rest_is_off(tmp_path: Path) -> None:
    async def scenario(s: Running) -> None:
        assert s.server.metrics is None

    serve(tmp_path, scenario, rest_api_port=0, monitoring_config_file=str(tmp_path / "missing.txt"))


def test_load_attempts_are_counted_per_path_and_status(tmp_path: Path) -> None:
    """TF core's ``load_attempt_count{model_path,status}`` and ``load_latency{model_path}`` (success only)."""
    base = model_dir(tmp_path, 1)
    (base / "2").mkdir()
    (base / "2" / "saved_model.pb").write_bytes(b"")
    factory = FakeLoaderFactory({("m", 2): {"always_fail": True}})

    async def main() -> None:
        models = tmp_path / "models.config"
        models.write_text(f'model_config_list {{ config {{ name: "m" base_path: "{base}" model_platform: "tensorflow" '
                          "model_version_policy { all {} } } }")
        async with running_server(loader_factory=factory, model_config_file=str(models),
                                  monitoring_config_file=config_file(tmp_path, REFERENCE_CONFIG)) as s:
            await asyncio.sleep(0.2)  # the counts reach the loop with call_soon_threadsafe
            _, text, _ = await s.request("GET", "/monitoring/prometheus/metrics")
            attempts = ":tensorflow:cc:saved_model:load_attempt_count"
            assert f'{attempts}{{model_path="{base / "1"}",status="success"}} 1' in text
            assert f'{attempts}{{model_path="{base / "2"}",status="fail"}} 1' in text
            latency = [ln for ln in text.splitlines() if ln.startswith(":tensorflow:cc:saved_model:load_latency{")]
            assert len(latency) == 1 and f'model_path="{base / "1"}"' in latency[0]

    asyncio.run(main())
