"""``mlsrv metadata``: signatures rendered by the shared renderer; TF Serving JSON; same over REST and gRPC."""

from __future__ import annotations

import json

import pytest

from tests.cli.client_cli import check_golden, invoke, use_mock
from tests.cli.conftest import Served


def test_signatures_are_rendered_like_show(monkeypatch: pytest.MonkeyPatch) -> None:
    use_mock(monkeypatch)
    result = invoke("metadata", "-m", "m", "-s", "serving_default")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (
        "\nModel m version 123 has these signatures:\n"
        "\n"
        "signature_def['serving_default']:\n"
        "  The given SavedModel SignatureDef contains the following input(s):\n"
        "    inputs['x'] tensor_info:\n"
        "        dtype: DT_FLOAT\n"
        "        shape: (-1, 1)\n"
        "        name: x:0\n"
        "  The given SavedModel SignatureDef contains the following output(s):\n"
        "    outputs['y'] tensor_info:\n"
        "        dtype: DT_FLOAT\n"
        "        shape: (-1, 1)\n"
        "        name: y:0\n"
        "  Method name is: tensorflow/serving/predict\n"
    )


def test_json_is_tf_serving_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    transport = use_mock(monkeypatch)
    result = invoke("metadata", "-m", "m", "--label", "stable", "--json")
    doc = json.loads(result.stdout)
    assert doc["model_spec"] == {"name": "m", "signature_name": "", "version": "123"}
    signatures = doc["metadata"]["signature_def"]["signature_def"]
    assert sorted(signatures) == ["classify_x_to_y", "regress_x_to_y", "serving_default"]
    assert signatures["serving_default"]["inputs"]["x"]["tensor_shape"]["dim"][0] == {"size": "-1", "name": ""}
    assert transport.calls[0].request.label == "stable"


def test_unknown_signature_and_model(monkeypatch: pytest.MonkeyPatch) -> None:
    use_mock(monkeypatch)
    unknown = invoke("metadata", "-m", "m", "-s", "nope")
    assert unknown.exit_code == 1
    assert unknown.stderr == 'InvalidArgument: Serving signature name: "nope" not found in signature def\n'
    missing = invoke("metadata", "-m", "other")
    assert missing.exit_code == 1 and "Latest(other)" in missing.stderr


def test_rest_and_grpc_give_the_same_metadata(served: Served) -> None:
    out = {}
    for protocol in ("rest", "grpc"):
        for extra in ([], ["--json"]):
            result = invoke("metadata", "-m", "half_plus_two", *served.args(protocol), *extra)
            assert result.exit_code == 0, result.stderr
            out[protocol, bool(extra)] = result.stdout
    assert out["rest", False] == out["grpc", False]
    assert "signature_def['classify_x_to_y']:" in out["rest", False]
    assert json.loads(out["rest", True]) == json.loads(out["grpc", True])
    check_golden("metadata.json", out["grpc", True])


def test_metadata_asked_by_label_says_which_version_the_label_points_to(monkeypatch: pytest.MonkeyPatch) -> None:
    use_mock(monkeypatch)
    result = invoke("metadata", "-m", "m", "--label", "stable")
    assert result.exit_code == 0, result.stderr
    assert "Model m version 123 (label stable) has these signatures:" in result.stdout
