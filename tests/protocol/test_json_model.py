"""Model status and metadata JSON against TF Serving's reference files (spec 2.5, 2.6, 2.10 #8, #39)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mlsrv.errors import Code, TransportError
from mlsrv.protocol.json_codec import decode_metadata, decode_status, encode_metadata, encode_status
from mlsrv.protocol.types import ModelMetadata, ModelSpec, ModelStatus, SignatureInfo, State, TensorInfo, VersionStatus


def test_status_layout_and_values() -> None:
    status = ModelStatus("default", (VersionStatus(123, State.AVAILABLE),))
    body = encode_status(status)
    assert body.decode() == (
        '{\n "model_version_status": [\n  {\n   "version": "123",\n   "state": "AVAILABLE",\n'
        '   "status": {\n    "error_code": "OK",\n    "error_message": ""\n   }\n  }\n ]\n}'
    )
    assert decode_status(body, "default") == status


def test_status_lists_versions_highest_first_with_errors() -> None:
    status = ModelStatus(
        "m",
        (
            VersionStatus(1, State.END),
            VersionStatus(3, State.END, Code.NOT_FOUND, 'Could not find "x"'),
            VersionStatus(2, State.AVAILABLE),
        ),
    )
    doc = json.loads(encode_status(status))
    assert [v["version"] for v in doc["model_version_status"]] == ["3", "2", "1"]
    assert doc["model_version_status"][0]["status"] == {
        "error_code": "NOT_FOUND",
        "error_message": 'Could not find "x"',
    }
    back = decode_status(encode_status(status), "m")
    assert back.versions == tuple(sorted(status.versions, key=lambda v: -v.version))


def test_metadata_shapes_and_init_op() -> None:
    meta = ModelMetadata(
        ModelSpec("m", version=7),
        {
            "serving_default": SignatureInfo(
                inputs={"x": TensorInfo("x:0", "DT_FLOAT", (-1, 1)), "s": TensorInfo("s:0", "DT_STRING", ())},
                outputs={"y": TensorInfo("y:0", "DT_FLOAT", None)},
            ),
            "__saved_model_init_op": SignatureInfo(
                inputs={}, outputs={"__saved_model_init_op": TensorInfo("NoOp", "DT_INVALID", None)}, method_name=""
            ),
            "no_shape": SignatureInfo(inputs={"t": TensorInfo("t:0", "DT_INT64", None, has_shape=False)}, outputs={}),
        },
    )
    doc = json.loads(encode_metadata(meta))
    assert doc["model_spec"] == {"name": "m", "signature_name": "", "version": "7"}
    sigs = doc["metadata"]["signature_def"]["signature_def"]
    assert sigs["serving_default"]["inputs"]["x"] == {
        "dtype": "DT_FLOAT",
        "tensor_shape": {"dim": [{"size": "-1", "name": ""}, {"size": "1", "name": ""}], "unknown_rank": False},
        "name": "x:0",
    }
    assert sigs["serving_default"]["inputs"]["s"]["tensor_shape"] == {"dim": [], "unknown_rank": False}
    assert sigs["serving_default"]["outputs"]["y"]["tensor_shape"] == {"dim": [], "unknown_rank": True}
    assert sigs["serving_default"]["method_name"] == "tensorflow/serving/predict"
    assert sigs["serving_default"]["defaults"] == {}
    assert sigs["__saved_model_init_op"]["inputs"] == {} and sigs["__saved_model_init_op"]["method_name"] == ""
    assert "tensor_shape" not in sigs["no_shape"]["inputs"]["t"]
    assert decode_metadata(encode_metadata(meta)) == meta


def _with_defaults(doc: Any) -> Any:
    """Older TF Serving wrote no ``defaults`` for some signatures; current versions always print it."""
    for sig in doc["metadata"]["signature_def"]["signature_def"].values():
        sig.setdefault("defaults", {})
    return doc


@pytest.mark.parametrize(
    "name",
    [
        "half_plus_two_model_metadata.json",
        "saved_model_half_plus_two_2_versions_metadata.json",
        "saved_model_half_plus_two_tf2_2_versions_metadata.json",
    ],
)
def test_reference_metadata_round_trips(reference_dir: Path, name: str) -> None:
    raw = (reference_dir / name).read_bytes()
    meta = decode_metadata(raw)
    assert meta.spec.version == 123 and meta.spec.signature == ""
    assert encode_metadata(meta) and json.loads(encode_metadata(meta)) == _with_defaults(json.loads(raw))


def test_reference_tf1_signatures(reference_dir: Path) -> None:
    meta = decode_metadata((reference_dir / "half_plus_two_model_metadata.json").read_bytes())
    assert meta.spec.name == "default"
    sig = meta.signatures["serving_default"]
    assert sig.inputs == {"x": TensorInfo("x:0", "DT_FLOAT", (-1, 1))}
    assert sig.outputs == {"y": TensorInfo("y:0", "DT_FLOAT", (-1, 1))}
    classify = meta.signatures["classify_x_to_y"]
    assert classify.method_name == "tensorflow/serving/classify"
    assert classify.inputs["inputs"] == TensorInfo("tf_example:0", "DT_STRING", None)


def test_reference_key_order_matches(reference_dir: Path) -> None:
    raw = (reference_dir / "half_plus_two_model_metadata.json").read_text()
    ours = encode_metadata(decode_metadata(raw.encode())).decode()
    assert ours == raw.rstrip("\n")  # same keys, order and 1-space layout as TF Serving's file


def test_malformed_bodies_are_transport_errors() -> None:
    for body in (b"[]", b"{", b'{"model_version_status": [{"version": "x"}]}'):
        with pytest.raises(TransportError):
            decode_status(body)
    with pytest.raises(TransportError):
        decode_metadata(b'{"metadata": {"signature_def": {"signature_def": {"s": {"inputs": 1}}}}}')
