"""Keras 3 models saved with ``tf.saved_model.save`` are served (issue #19 item 1), which TF Serving cannot do.

The tests export the three kinds tutorials show (a Sequential, a functional model, a ``tf.Module``
wrapping a Keras model) with TensorFlow's own ``tf.saved_model.save`` and a ``model.export()``
version of the same weights, then serve them over REST and gRPC, with batching off and on, and
compare every answer with the Keras model's own output.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from mlsrv.errors import LoadError
from mlsrv.protocol import tensor_codec
from mlsrv.server import tf_function, tf_session
from tests.server.harness import Running, running_server

pytestmark = pytest.mark.tf

INPUTS = np.arange(12, dtype=np.float32).reshape(3, 4) / 7.0


@dataclass(frozen=True)
class Export:
    kind: str
    base: Path  # base path; version 1 is the tf.saved_model.save export
    exported: Path  # the same weights through model.export(), for the hot swap
    expected: np.ndarray  # the Keras model's own output on INPUTS
    input_name: str
    output_name: str


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Export]:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(7)
    folder = tmp_path_factory.mktemp("keras3")
    inputs = keras.Input((4,), name="features")
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    functional = keras.Model(inputs, keras.layers.Dense(2, name="probs")(hidden))
    sequential = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="tanh"), keras.layers.Dense(1)])

    class Wrapped(tf.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x: Any) -> Any:
            return {"y": self.model(x)}

    found: dict[str, Export] = {}
    for kind, model, input_name, output_name in (("sequential", sequential, "inputs", "output_0"),
                                                 ("functional", functional, "inputs", "output_0"),
                                                 ("module", sequential, "x", "y")):  # fmt: skip
        base = folder / kind
        if kind == "module":
            wrapped = Wrapped(model)
            tf.saved_model.save(wrapped, str(base / "1"), signatures={"serving_default": wrapped.serve})
        else:
            tf.saved_model.save(model, str(base / "1"))
        model.export(str(folder / f"{kind}-export"), verbose=False)
        expected = np.asarray(model(INPUTS))
        found[kind] = Export(kind, base, folder / f"{kind}-export", expected, input_name, output_name)
    return found


def test_the_session_path_cannot_run_them_and_the_function_path_can(exports: dict[str, Export]) -> None:
    for export in exports.values():
        servable = tf_session.SavedModelLoader(str(export.base / "1")).load()
        assert isinstance(servable, tf_function.FunctionServable), export.kind
        outputs = servable.run("serving_default", {export.input_name: INPUTS})
        np.testing.assert_allclose(outputs[export.output_name], export.expected, atol=1e-5)
        exported = tf_session.SavedModelLoader(str(export.exported)).load()  # model.export(): TF Serving's path
        assert isinstance(exported, tf_session.TfServable)
        servable.close()
        exported.close()


async def rest_and_grpc(s: Running, export: Export) -> None:
    """Row and columnar REST, and gRPC Predict, each equal to the Keras model's output.

    Input and output names come from the served metadata: ``model.export()`` names them after the
    Keras inputs (``features``), ``tf.saved_model.save`` does not (``inputs``).
    """
    status, metadata = await s.get("/v1/models/m/metadata")
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    [input_name], [output_name] = list(signature["inputs"]), list(signature["outputs"])
    status, body = await s.post("/v1/models/m:predict", {"instances": INPUTS.tolist()})
    assert status == 200, body
    np.testing.assert_allclose(np.asarray(body["predictions"]), export.expected, atol=1e-5)
    status, body = await s.post("/v1/models/m:predict", {"inputs": {input_name: INPUTS.tolist()}})
    assert status == 200, body
    np.testing.assert_allclose(np.asarray(body["outputs"]), export.expected, atol=1e-5)
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    tensor_codec.from_ndarray(INPUTS, request.inputs[input_name], as_tensor_content=True)
    async with grpc.aio.insecure_channel(s.grpc_target) as channel:
        response = await prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    np.testing.assert_allclose(tensor_codec.to_ndarray(response.outputs[output_name]), export.expected,
                               atol=1e-5)  # fmt: skip


@pytest.mark.parametrize("batching", [False, True])
@pytest.mark.parametrize("kind", ["sequential", "functional", "module"])
def test_served_over_rest_and_grpc_with_the_keras_models_outputs(
    exports: dict[str, Export], kind: str, batching: bool
) -> None:
    export = exports[kind]

    async def main() -> None:
        async with running_server(model_name="m", model_base_path=str(export.base), enable_batching=batching) as s:
            await rest_and_grpc(s, export)
            status, metadata = await s.get("/v1/models/m/metadata")
            signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
            assert list(signature["inputs"]) == [export.input_name]
            assert list(signature["outputs"]) == [export.output_name]

    asyncio.run(main())


def test_a_hot_swap_between_a_saved_and_an_exported_version(exports: dict[str, Export], tmp_path: Path) -> None:
    export = exports["functional"]
    base = tmp_path / "m"
    shutil.copytree(export.base / "1", base / "1")  # tf.saved_model.save: the function path

    async def available(s: Running) -> list[str]:
        status, body = await s.get("/v1/models/m")
        return sorted(v["version"] for v in body["model_version_status"] if v["state"] == "AVAILABLE")

    async def until(s: Running, versions: list[str]) -> None:
        for _ in range(600):
            if await available(s) == versions:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"versions {versions} never became the only ones AVAILABLE")

    async def main() -> None:
        async with running_server(model_name="m", model_base_path=str(base), file_system_poll_wait_seconds=0.1) as s:
            await rest_and_grpc(s, export)
            shutil.copytree(export.exported, base / "2")  # model.export(): the Session path
            await until(s, ["2"])
            await rest_and_grpc(s, export)
            shutil.copytree(export.base / "1", base / "3")  # and back to a saved one
            await until(s, ["3"])
            await rest_and_grpc(s, export)

    asyncio.run(main())


def test_the_log_says_which_loader_and_why(exports: dict[str, Export], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mlsrv.server.tf_session"):
        tf_session.SavedModelLoader(str(exports["sequential"].base / "1")).load().close()
    [line] = [r.getMessage() for r in caplog.records]
    assert "through tf.saved_model.load" in line and "sequential/dense" in line and "model.export()" in line


def test_a_model_neither_loader_can_run_fails_to_load_naming_the_fix(
    exports: dict[str, Export], monkeypatch: pytest.MonkeyPatch
) -> None:
    import tensorflow as tf

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("cannot restore")

    monkeypatch.setattr(tf.saved_model, "load", broken)
    with pytest.raises(LoadError, match=r"tf.saved_model.load too: cannot restore.*model.export\(path\)"):
        tf_session.SavedModelLoader(str(exports["sequential"].base / "1")).load()
