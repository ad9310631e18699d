"""Client processes use TF Serving's messages without TensorFlow (issue #13, item 1).

The descriptors in ``protocol/tfs_descriptors.py`` must be byte-identical to the installed official
ones (re-run ``scripts/gen_client_protos.py`` when this fails), and the requests the client builds
must be the bytes the official classes would send. That client commands do not import the
``tensorflow`` package is checked in ``tests/cli/test_client_imports.py``.
"""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
from google.protobuf import descriptor_pool
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    predict_pb2,
    regression_pb2,
)

from mlsrv.protocol import grpc_codec, tensor_codec
from mlsrv.protocol.client_protos import message_class
from mlsrv.protocol.tfs_descriptors import FILES
from mlsrv.protocol.types import ModelSpec, PredictRequest, SignatureInfo, TensorInfo

ROOT = Path(__file__).resolve().parents[2]


def _generator() -> object:
    spec = importlib.util.spec_from_file_location("gen_client_protos", ROOT / "scripts" / "gen_client_protos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_descriptors_are_the_installed_official_ones_byte_for_byte() -> None:
    generator = _generator()
    roots = [importlib.import_module(name).DESCRIPTOR for name in generator.ROOTS]  # type: ignore[attr-defined]
    official = generator.closure(roots)  # type: ignore[attr-defined]
    assert [name for name, _ in FILES] == [file.name for file in official]
    default = descriptor_pool.Default()
    for name, serialized in FILES:
        assert default.FindFileByName(name).serialized_pb == serialized, name


def test_requests_are_the_bytes_the_official_classes_send() -> None:
    inputs = {
        "x": np.array([[1.0, 2.5]], np.float32),
        "ids": np.array([[1, 2]], np.int64),
        "text": np.array([b"a", b"bc"], object),
        "flag": np.array([True, False]),
    }
    spec = ModelSpec("m", version=3, signature="serving_default")
    for as_tensor_content in (True, False):
        ours = grpc_codec.predict_request_to_pb(
            PredictRequest(spec, inputs, ("y",)), as_tensor_content=as_tensor_content
        )
        official = predict_pb2.PredictRequest()
        official.model_spec.name, official.model_spec.signature_name = "m", "serving_default"
        official.model_spec.version.value = 3
        for alias, array in inputs.items():
            tensor_codec.from_ndarray(array, official.inputs[alias], as_tensor_content=as_tensor_content)
        official.output_filter.append("y")
        assert type(ours) is not predict_pb2.PredictRequest  # the private pool's class, not TF's
        assert ours.SerializeToString(deterministic=True) == official.SerializeToString(deterministic=True)

    examples = [b"\n\x00", b"\n\x02\n\x00"]
    for build, official_class in (
        (grpc_codec.classify_request_to_pb, classification_pb2.ClassificationRequest),
        (grpc_codec.regress_request_to_pb, regression_pb2.RegressionRequest),
    ):
        wire = build(ModelSpec("m", label="stable"), examples).SerializeToString()
        assert official_class.FromString(wire).SerializeToString() == wire
        expected = official_class()
        expected.model_spec.name, expected.model_spec.version_label = "m", "stable"
        for raw in examples:
            expected.input.example_list.examples.add().MergeFromString(raw)
        assert wire == expected.SerializeToString()

    metadata = grpc_codec.metadata_request_to_pb(ModelSpec("m"))
    official_metadata = get_model_metadata_pb2.GetModelMetadataRequest()
    official_metadata.model_spec.name = "m"
    official_metadata.metadata_field.append("signature_def")
    assert metadata.SerializeToString() == official_metadata.SerializeToString()
    status = grpc_codec.status_request_to_pb(ModelSpec("m", version=1))
    official_status = get_model_status_pb2.GetModelStatusRequest()
    official_status.model_spec.name, official_status.model_spec.version.value = "m", 1
    assert status.SerializeToString() == official_status.SerializeToString()


def test_responses_of_the_official_classes_are_read_through_the_private_pool() -> None:
    signatures = {
        "serving_default": SignatureInfo(
            inputs={"x": TensorInfo("x:0", "DT_FLOAT", (-1, 1))},
            outputs={"y": TensorInfo("y:0", "DT_FLOAT", (-1, 1))},
            method_name="tensorflow/serving/predict",
        )
    }
    from mlsrv.protocol.types import ModelMetadata

    sent = grpc_codec.metadata_response_to_pb(ModelMetadata(ModelSpec("m", version=1), signatures))
    received = message_class("tensorflow.serving.GetModelMetadataResponse").FromString(sent.SerializeToString())
    assert grpc_codec.metadata_response_from_pb(received).signatures == signatures


def test_the_private_pool_and_the_official_modules_live_in_one_process() -> None:
    code = (
        "from mlsrv.protocol.client_protos import message_class\n"
        "ours = message_class('tensorflow.serving.PredictRequest')(output_filter=['y'])\n"
        "from tensorflow_serving.apis import predict_pb2\n"
        "assert predict_pb2.PredictRequest(output_filter=['y']).SerializeToString() == ours.SerializeToString()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
