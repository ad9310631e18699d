"""gRPC frontend with the official tensorflow-serving-api stubs against FakeServable (spec section 3)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from mlsrv.protocol import tensor_codec
from tests.fakes import FakeLoaderFactory
from tests.server.harness import Running, running_server
from tests.server.test_rest_fake import model_dir


def serve(tmp_path: Path, scenario: Callable[[Running, Any], Awaitable[None]], **flags: Any) -> None:
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    async def main() -> None:
        async with running_server(
            loader_factory=FakeLoaderFactory(), model_name="m", model_base_path=str(model_dir(tmp_path, 1)), **flags
        ) as s:
            target = s.grpc_target if s.server.grpc_port else f"unix:{flags['grpc_socket_path']}"
            async with grpc.aio.insecure_channel(target) as channel:
                stubs = (prediction_service_pb2_grpc.PredictionServiceStub(channel),
                         model_service_pb2_grpc.ModelServiceStub(channel), channel)
                await scenario(s, stubs)

    asyncio.run(main())


def predict_request(name: str = "m", *, tensor_content: bool = True, **spec: Any) -> Any:
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if "version" in spec:
        request.model_spec.version.value = spec["version"]
    if "label" in spec:
        request.model_spec.version_label = spec["label"]
    if "signature" in spec:
        request.model_spec.signature_name = spec["signature"]
    tensor_codec.from_ndarray(np.array([[1.0], [5.0]], np.float32), request.inputs["x"],
                              as_tensor_content=tensor_content)
    return request


@pytest.mark.parametrize("tensor_content", [True, False])
def test_predict(tmp_path: Path, tensor_content: bool) -> None:
    async def scenario(s: Running, stubs: Any) -> None:
        predict, _, _ = stubs
        response = await predict.Predict(predict_request(tensor_content=tensor_content))
        np.testing.assert_array_equal(tensor_codec.to_ndarray(response.outputs["y"]), [[2.5], [4.5]])
        assert response.model_spec.name == "m"
        assert response.model_spec.version.value == 1
        assert response.model_spec.signature_name == "serving_default"

    serve(tmp_path, scenario)


def test_typed_outputs_by_default_and_tensor_content_with_flag(tmp_path: Path) -> None:
    async def typed(s: Running, stubs: Any) -> None:
        response = await stubs[0].Predict(predict_request())
        assert list(response.outputs["y"].float_val) == [2.5, 4.5]
        assert response.outputs["y"].tensor_content == b""

    async def content(s: Running, stubs: Any) -> None:
        response = await stubs[0].Predict(predict_request())
        assert response.outputs["y"].tensor_content and not response.outputs["y"].float_val

    serve(tmp_path, typed)
    serve(tmp_path, content, enable_serialization_as_tensor_content=True)


async def expect_error(call: Awaitable[Any], code: grpc.StatusCode, message: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code
    assert message in (info.value.details() or "")


def test_predict_errors(tmp_path: Path) -> None:
    from tensorflow_serving.apis import predict_pb2

    async def scenario(s: Running, stubs: Any) -> None:
        predict = stubs[0]
        await expect_error(predict.Predict(predict_request("nope")), grpc.StatusCode.NOT_FOUND,
                           "Servable not found for request: Latest(nope)")
        await expect_error(predict.Predict(predict_request(version=7)), grpc.StatusCode.NOT_FOUND,
                           "Servable not found for request: Specific(m, 7)")
        await expect_error(predict.Predict(predict_request(label="zz")), grpc.StatusCode.INVALID_ARGUMENT,
                           "Unrecognized servable version label: zz")
        await expect_error(predict.Predict(predict_request(signature="zz")), grpc.StatusCode.FAILED_PRECONDITION,
                           'Serving signature key "zz" not found.')
        await expect_error(predict.Predict(predict_pb2.PredictRequest()), grpc.StatusCode.INVALID_ARGUMENT,
                           "Missing ModelSpec")
        bad_alias = predict_request()
        bad_alias.inputs["z"].CopyFrom(bad_alias.inputs["x"])
        del bad_alias.inputs["x"]
        await expect_error(predict.Predict(bad_alias), grpc.StatusCode.INVALID_ARGUMENT,
                           "input tensor alias not found in signature: z. Inputs expected to be in the set {x}.")
        wrong_dtype = predict_request()
        wrong_dtype.inputs["x"].Clear()
        tensor_codec.from_ndarray(np.array([["a"]], object), wrong_dtype.inputs["x"], as_tensor_content=False)
        await expect_error(predict.Predict(wrong_dtype), grpc.StatusCode.INVALID_ARGUMENT,
                           "Expects arg[0] to be float but string is provided")
        bad_filter = predict_request()
        bad_filter.output_filter.append("w")
        await expect_error(predict.Predict(bad_filter), grpc.StatusCode.INVALID_ARGUMENT,
                           "output tensor alias not found in signature: w Outputs expected to be in the set {y}.")
        # the server keeps serving after all of that
        response = await predict.Predict(predict_request())
        assert list(response.outputs["y"].float_val) == [2.5, 4.5]

    serve(tmp_path, scenario)


def test_metadata_and_status(tmp_path: Path) -> None:
    from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

    async def scenario(s: Running, stubs: Any) -> None:
        predict, model, _ = stubs
        request = get_model_metadata_pb2.GetModelMetadataRequest()
        request.model_spec.name = "m"
        request.metadata_field.append("signature_def")
        response = await predict.GetModelMetadata(request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        assert "serving_default" in signature_map.signature_def
        assert response.model_spec.version.value == 1
        del request.metadata_field[:]
        await expect_error(predict.GetModelMetadata(request), grpc.StatusCode.INVALID_ARGUMENT,
                           "GetModelMetadataRequest must specify at least one metadata_field")
        status_request = get_model_status_pb2.GetModelStatusRequest()
        status_request.model_spec.name = "m"
        status = await model.GetModelStatus(status_request)
        assert [(v.version, v.state) for v in status.model_version_status] == [(1, 30)]
        status_request.model_spec.name = "zz"
        await expect_error(model.GetModelStatus(status_request), grpc.StatusCode.NOT_FOUND,
                           "Could not find any versions of model zz")

    serve(tmp_path, scenario)


def test_health_and_reflection(tmp_path: Path) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    async def scenario(s: Running, stubs: Any) -> None:
        channel = stubs[2]
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "PredictionService", "ModelService"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = set()
        async for item in responses:
            names |= {svc.name for svc in item.list_services_response.service}
        assert {"tensorflow.serving.PredictionService", "tensorflow.serving.ModelService"} <= names

    serve(tmp_path, scenario)


def test_unix_socket_only(tmp_path: Path) -> None:
    async def scenario(s: Running, stubs: Any) -> None:
        response = await stubs[0].Predict(predict_request())
        assert list(response.outputs["y"].float_val) == [2.5, 4.5]

    serve(tmp_path, scenario, port=0, grpc_socket_path=str(tmp_path / "grpc.sock"),
          grpc_channel_arguments="grpc.max_connection_age_ms=60000")


def test_reload_config_swaps_models(tmp_path: Path) -> None:
    from tensorflow_serving.apis import model_management_pb2
    from tensorflow_serving.config import model_server_config_pb2

    other = tmp_path / "other"
    (other / "3").mkdir(parents=True)
    (other / "3" / "saved_model.pb").write_bytes(b"")

    async def scenario(s: Running, stubs: Any) -> None:
        predict, model, _ = stubs
        request = model_management_pb2.ReloadConfigRequest()
        entry = request.config.model_config_list.config.add()
        entry.name, entry.base_path, entry.model_platform = "other", str(other), "tensorflow"
        response = await model.HandleReloadConfigRequest(request)
        assert response.status.error_code == 0
        reply = await predict.Predict(predict_request("other"))
        assert reply.model_spec.version.value == 3
        await expect_error(predict.Predict(predict_request("m")), grpc.StatusCode.NOT_FOUND, "Servable not found")
        custom = model_management_pb2.ReloadConfigRequest()
        custom.config.custom_model_config.CopyFrom(model_server_config_pb2.ModelServerConfig().custom_model_config)
        custom.config.custom_model_config.type_url = "x"
        await expect_error(model.HandleReloadConfigRequest(custom), grpc.StatusCode.INVALID_ARGUMENT,
                           "Only ModelConfigList is currently supported")

    serve(tmp_path, scenario)


def _reload_request(*models: tuple[str, Path, str]) -> Any:
    """A ReloadConfigRequest; each model is (name, base_path, extra text-proto for its ModelConfig)."""
    from google.protobuf import text_format
    from tensorflow_serving.apis import model_management_pb2

    request = model_management_pb2.ReloadConfigRequest()
    entries = ""
    for name, path, extra in models:
        platform = "" if "model_platform" in extra else 'model_platform: "tensorflow"'
        entries += f'config {{ name: "{name}" base_path: "{path}" {platform} {extra} }} '
    text_format.Parse(f"config {{ model_config_list {{ {entries} }} }}", request)
    return request


def _versions(root: Path, *versions: int) -> Path:
    for version in versions:
        (root / str(version)).mkdir(parents=True, exist_ok=True)
        (root / str(version) / "saved_model.pb").write_bytes(b"")
    return root


def test_reload_rebuilds_labels_first_and_waits_only_for_new_models(tmp_path: Path) -> None:
    """TF's ReloadConfig: labels checked (against AVAILABLE) before loading, removed models lose theirs,
    an unchanged model whose versions never appear does not block the call."""
    m = tmp_path / "m"
    two = _versions(tmp_path / "two", 1, 2)

    async def scenario(s: Running, stubs: Any) -> None:
        predict, model, _ = stubs
        labelled = 'model_version_policy { all {} } version_labels { key: "stable" value: 1 }'
        await expect_error(model.HandleReloadConfigRequest(_reload_request(("m", m, ""), ("two", two, labelled))),
                           grpc.StatusCode.FAILED_PRECONDITION,
                           "Request to assign label to version 1 of model two, which is not currently available "
                           "for inference")
        await expect_error(predict.Predict(predict_request("two")), grpc.StatusCode.NOT_FOUND, "Servable not found")
        unlabelled = "model_version_policy { all {} }"
        await model.HandleReloadConfigRequest(_reload_request(("m", m, ""), ("two", two, unlabelled)))
        await model.HandleReloadConfigRequest(_reload_request(("m", m, ""), ("two", two, labelled)))
        assert (await predict.Predict(predict_request("two", label="stable"))).model_spec.version.value == 1
        # m now asks for a version that does not exist: TF waits only for new models, so this returns
        await asyncio.wait_for(model.HandleReloadConfigRequest(
            _reload_request(("m", m, "model_version_policy { specific { versions: 99 } }"))), 10)
        await expect_error(predict.Predict(predict_request("two", label="stable")), grpc.StatusCode.INVALID_ARGUMENT,
                           "Unrecognized servable version label: stable")

    serve(tmp_path, scenario)


def test_reload_validation_order_empty_config_and_metric_names(tmp_path: Path) -> None:
    from tensorflow_serving.apis import model_management_pb2

    m = tmp_path / "m"

    async def scenario(s: Running, stubs: Any) -> None:
        _, model, _ = stubs
        cases = [
            ([("a", Path("rel"), ""), ("a", m, "")], "Illegal to list model a multiple times in config list"),
            ([("a", m, 'model_platform: "foo"'), ("b", Path("rel"), "")],
             "Expected model b to have an absolute path or URI; got base_path()=rel"),
            ([("m", m, 'model_platform: "foo"')],
             "Illegal to change a model's platform. For model m platform was tensorflow and new platform "
             "requested is foo"),
            ([("n", m, 'model_platform: "foo"')], "Model n requests unsupported platform foo"),
        ]
        for models, message in cases:
            request = _reload_request(*models)
            await expect_error(model.HandleReloadConfigRequest(request), grpc.StatusCode.INVALID_ARGUMENT, message)
        await expect_error(model.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest()),
                           grpc.StatusCode.INVALID_ARGUMENT,
                           "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                           "Only ModelConfigList is currently supported")
        request = _reload_request(("m", m, ""))
        request.metric_names.extend([":no:such:metric", "/tensorflow/serving/request_count"])
        response = await model.HandleReloadConfigRequest(request)
        assert [(x.name, x.int64_value_increase) for x in response.metric] == [
            (":no:such:metric", 0), ("/tensorflow/serving/request_count", 0)]

    serve(tmp_path, scenario)


def test_errors_tf_finds_before_parsing_tensors_come_first(tmp_path: Path) -> None:
    """TF resolves the model, signature and aliases before it parses a tensor, and checks
    output_filter before dtypes; an explicitly empty version_label is an unknown label."""
    from tensorflow_serving.apis import get_model_status_pb2

    def bad_tensor(name: str = "m", alias: str = "x", **spec: Any) -> Any:
        request = predict_request(name, **spec)
        request.inputs[alias].CopyFrom(request.inputs["x"])
        if alias != "x":
            del request.inputs["x"]
        request.inputs[alias].tensor_content = b"\x00\x01\x02"  # 3 bytes for 2 floats
        return request

    async def scenario(s: Running, stubs: Any) -> None:
        predict, model, _ = stubs
        await expect_error(predict.Predict(bad_tensor()), grpc.StatusCode.INVALID_ARGUMENT, "tensor parsing error: x")
        await expect_error(predict.Predict(bad_tensor("nope")), grpc.StatusCode.NOT_FOUND,
                           "Servable not found for request: Latest(nope)")
        await expect_error(predict.Predict(bad_tensor(signature="zz")), grpc.StatusCode.FAILED_PRECONDITION,
                           'Serving signature key "zz" not found.')
        await expect_error(predict.Predict(bad_tensor(label="zz")), grpc.StatusCode.INVALID_ARGUMENT,
                           "Unrecognized servable version label: zz")
        await expect_error(predict.Predict(bad_tensor(alias="z")), grpc.StatusCode.INVALID_ARGUMENT,
                           "input tensor alias not found in signature: z.")
        strings = predict_request()
        strings.inputs["x"].Clear()
        tensor_codec.from_ndarray(np.array([[b"a"]], dtype=object), strings.inputs["x"], as_tensor_content=False)
        strings.output_filter.append("q")
        await expect_error(predict.Predict(strings), grpc.StatusCode.INVALID_ARGUMENT,
                           "output tensor alias not found in signature: q")
        strings.output_filter[:] = ["y"]
        await expect_error(predict.Predict(strings), grpc.StatusCode.INVALID_ARGUMENT,
                           "Expects arg[0] to be float but string is provided")
        await expect_error(predict.Predict(predict_request(label="")), grpc.StatusCode.INVALID_ARGUMENT,
                           "Unrecognized servable version label: ")
        status = get_model_status_pb2.GetModelStatusRequest()
        status.model_spec.name, status.model_spec.version.value = "nope", 1
        await expect_error(model.GetModelStatus(status), grpc.StatusCode.NOT_FOUND,
                           "Could not find version 1 of model nope")

    serve(tmp_path, scenario)


def test_method_name_check_lets_predict_run_classify_and_regress_signatures(tmp_path: Path) -> None:
    from dataclasses import replace

    from mlsrv.protocol.types import CLASSIFY_METHOD
    from tests.fakes import HALF_PLUS_TWO_SIGNATURES, FakeServable

    plain = HALF_PLUS_TWO_SIGNATURES["serving_default"]
    signatures = {"serving_default": plain, "as_classify": replace(plain, method_name=CLASSIFY_METHOD),
                  "odd": replace(plain, method_name="custom/method")}

    async def main() -> None:
        factory = FakeLoaderFactory(servable=FakeServable(signatures=signatures))
        async with running_server(loader_factory=factory, model_name="m", model_base_path=str(model_dir(tmp_path, 1)),
                                  enable_signature_method_name_check=True) as s:
            assert (await s.post("/v1/models/m:predict", {"signature_name": "as_classify", "instances": [[1.0]]}))[
                0] == 200
            code, body = await s.post("/v1/models/m:predict", {"signature_name": "odd", "instances": [[1.0]]})
            assert code == 500 and body["error"].endswith("Was: custom/method")

    asyncio.run(main())


def test_multi_inference_checks_tasks_after_resolving_the_first_in_tf_order(tmp_path: Path) -> None:
    from tensorflow_serving.apis import inference_pb2

    regress, classify = "tensorflow/serving/regress", "tensorflow/serving/classify"

    def request(*tasks: tuple[str, str, str]) -> Any:
        pb = inference_pb2.MultiInferenceRequest()
        for name, signature, method in tasks:
            task = pb.tasks.add()
            task.model_spec.name, task.model_spec.signature_name, task.method_name = name, signature, method
        pb.input.example_list.examples.add()
        return pb

    cases = [
        ([("nope", "", regress), ("m", "", regress)], grpc.StatusCode.NOT_FOUND,
         "Servable not found for request: Latest(nope)"),
        ([("m", "zz", "foo")], grpc.StatusCode.INVALID_ARGUMENT, "Requested signature not found in model graph: zz"),
        ([("m", "", "foo")], grpc.StatusCode.UNIMPLEMENTED, "Unsupported signature method_name: foo"),
        ([("m", "", classify), ("", "", regress)], grpc.StatusCode.INVALID_ARGUMENT,
         "No classification inputs found in SignatureDef: "),
        ([("m", "zz", regress), ("", "", regress)], grpc.StatusCode.INVALID_ARGUMENT,
         "Requested signature not found in model graph: zz"),
        ([("m", "zz", "foo"), ("n", "", regress)], grpc.StatusCode.INVALID_ARGUMENT,
         "Requested signature not found in model graph: zz"),
    ]

    async def scenario(s: Running, stubs: Any) -> None:
        predict, _, _ = stubs
        for tasks, code, message in cases:
            await expect_error(predict.MultiInference(request(*tasks)), code, message)

    serve(tmp_path, scenario)


def test_grpc_max_threads_queues_calls_instead_of_refusing_them(tmp_path: Path) -> None:
    """TF's --grpc_max_threads bounds handler threads: extra calls wait (grpc.aio's own limit would refuse them)."""
    from tests.fakes import FakeServable

    async def main() -> None:
        factory = FakeLoaderFactory(servable=FakeServable(delay=0.2))
        async with running_server(loader_factory=factory, model_name="m", model_base_path=str(model_dir(tmp_path, 1)),
                                  grpc_max_threads=1) as s:
            from tensorflow_serving.apis import prediction_service_pb2_grpc

            async with grpc.aio.insecure_channel(s.grpc_target) as channel:
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                started = asyncio.get_running_loop().time()
                replies = await asyncio.gather(*(stub.Predict(predict_request(), timeout=30) for _ in range(4)))
                elapsed = asyncio.get_running_loop().time() - started
        assert [r.model_spec.version.value for r in replies] == [1, 1, 1, 1]
        assert elapsed >= 0.7  # one at a time: 4 x 0.2 s (unbounded, they would overlap in ~0.2 s)

    asyncio.run(main())
