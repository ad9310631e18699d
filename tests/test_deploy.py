"""``deploy/``: the container entrypoint's tensorflow/serving contract, and every manifest valid offline.

The image itself cannot be built here (no container registry); its entrypoint is a script, tested
with a stand-in ``mlsrv`` that records its arguments and with the real one. Kubernetes objects are
validated against the schemas that ship in ``kubernetes-validate`` (strict: unknown fields fail); the
kustomize overlays are rendered here for the subset of kustomize they use (``resources``, JSON 6902
``patches``, ``images``), so each rendered object is validated too. KServe's ServingRuntime is a custom
resource: its fields are checked against KServe's own SDK models (kserve 0.21, vendored as a field
map), its container against Kubernetes' Container schema.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest
import yaml

from mlsrv.config_loader import parse_model_server_config
from mlsrv.monitoring_config import load_monitoring_config
from tests.conftest import EXAMPLES, REPO, free_port
from tests.server.process_server import http_get

DEPLOY = REPO / "deploy"
ENTRYPOINT = DEPLOY / "docker" / "mlsrv_entrypoint.sh"
KUBERNETES_VERSION = "1.33.0"
KSERVE_FIELDS = Path(__file__).parent / "testdata" / "kserve_servingruntime_fields.json"


# -------------------------------------------------------------------------------------- entrypoint


def entrypoint_argv(tmp_path: Path, env: dict[str, str], *args: str) -> list[str]:
    """What the entrypoint runs, with a stand-in ``mlsrv`` on PATH that prints its arguments."""
    fake = tmp_path / "bin" / "mlsrv"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    fake.chmod(0o755)
    clean = {k: v for k, v in os.environ.items() if k not in ("MODEL_NAME", "MODEL_BASE_PATH")}
    environment = {**clean, **env, "PATH": f"{fake.parent}:/usr/bin:/bin"}
    result = subprocess.run(["sh", str(ENTRYPOINT), *args], env=environment, capture_output=True, text=True,
                            timeout=30, check=True)  # fmt: skip
    return result.stdout.splitlines()


def test_the_entrypoint_keeps_tensorflow_servings_contract(tmp_path: Path) -> None:
    base = ["serve", "--port=8500", "--rest_api_port=8501"]
    assert entrypoint_argv(tmp_path, {}) == [*base, "--model_name=model", "--model_base_path=/models/model"]
    assert entrypoint_argv(tmp_path, {"MODEL_NAME": "m"}) == [*base, "--model_name=m", "--model_base_path=/models/m"]
    assert entrypoint_argv(tmp_path, {"MODEL_NAME": "m", "MODEL_BASE_PATH": "s3://bucket/models"})[-1] == (
        "--model_base_path=s3://bucket/models/m"
    )
    extra = ["--rest_api_port=9000", "--model_config_file=/c/models.config", "--enable_batching"]
    assert entrypoint_argv(tmp_path, {"MODEL_NAME": "m"}, *extra)[-3:] == extra  # appended, in order
    assert entrypoint_argv(tmp_path, {"MODEL_NAME": "my model"})[3] == "--model_name=my model"  # quoted


def test_the_entrypoint_serves_a_model_and_later_flags_win(tmp_path: Path) -> None:
    if not (EXAMPLES / "half_plus_two" / "00000123" / "saved_model.pb").is_file():
        pytest.skip("example models missing")
    rest, grpc_port = free_port(), free_port()
    mlsrv = Path(sys.executable).parent / "mlsrv"
    env = {**os.environ, "MODEL_NAME": "half_plus_two", "MODEL_BASE_PATH": str(EXAMPLES),
           "PATH": f"{mlsrv.parent}:{os.environ.get('PATH', '')}"}  # fmt: skip
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(["sh", str(ENTRYPOINT), "--host=127.0.0.1", f"--port={grpc_port}",
                                f"--rest_api_port={rest}"], env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while http_get(rest, "/v1/models/half_plus_two", timeout=2)[0] != 200:
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.2)
        status, body = http_get(rest, "/v1/models/half_plus_two", timeout=5)
        assert b"AVAILABLE" in body
        process.send_signal(signal.SIGTERM)  # exec: the signal reaches the server, which drains and exits 0
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        log.close()


# ------------------------------------------------------------------------------------- manifests


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def render(folder: Path) -> list[dict[str, Any]]:
    """``kustomize build`` for what these kustomizations use; anything else fails the test."""
    spec = documents(folder / "kustomization.yaml")[0]
    assert set(spec) <= {"apiVersion", "kind", "resources", "patches", "images"}, f"{folder}: {sorted(spec)}"
    objects: list[dict[str, Any]] = []
    for resource in spec.get("resources", []):
        target = (folder / resource).resolve()
        objects += render(target) if target.is_dir() else documents(target)
    for patch in spec.get("patches", []):
        matched = [o for o in objects if o["kind"] == patch["target"]["kind"]
                   and o["metadata"]["name"] == patch["target"]["name"]]  # fmt: skip
        assert len(matched) == 1, f"{folder}: patch target {patch['target']} matches {len(matched)} objects"
        index = objects.index(matched[0])
        objects[index] = jsonpatch.apply_patch(copy.deepcopy(matched[0]), yaml.safe_load(patch["patch"]))
    for image in spec.get("images", []):
        for obj in objects:
            for container in obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                name, _, _tag = container["image"].partition(":")
                if name == image["name"]:
                    container["image"] = f"{image.get('newName', name)}:{image['newTag']}"
    return objects


KUSTOMIZATIONS = ["base", "overlays/s3", "overlays/gpu"]


@pytest.mark.parametrize("folder", KUSTOMIZATIONS)
def test_every_rendered_object_is_valid_kubernetes(folder: str) -> None:
    objects = render(DEPLOY / "kubernetes" / folder)
    assert {o["kind"] for o in objects} == {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler",
                                            "PodDisruptionBudget"}  # fmt: skip
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_the_example_secret_is_valid() -> None:
    for obj in documents(DEPLOY / "kubernetes" / "overlays" / "s3" / "secret.example.yaml"):
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_a_broken_manifest_is_caught() -> None:
    """The validation is not a formality: a misspelt field or a wrong type fails."""
    deployment = next(o for o in render(DEPLOY / "kubernetes" / "base") if o["kind"] == "Deployment")
    misspelt = copy.deepcopy(deployment)
    misspelt["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = misspelt["spec"]["template"]["spec"][
        "containers"][0].pop("readinessProbe")  # fmt: skip
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "two"
    for broken in (misspelt, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("folder", KUSTOMIZATIONS)
def test_the_deployment_agrees_with_mlsrv(folder: str) -> None:
    """Config files parse as mlsrv parses them; probes, ports and the scrape path are mlsrv's."""
    objects = {o["kind"]: o for o in render(DEPLOY / "kubernetes" / folder)}
    data = objects["ConfigMap"]["data"]
    models = parse_model_server_config(data["models.config"], source="models.config")
    assert [c.name for c in models.model_config_list.config] == ["half_plus_two"]
    monitoring = Path(os.environ.get("TMPDIR", "/tmp")) / f"monitoring-{os.getpid()}.config"
    monitoring.write_text(data["monitoring.config"])
    try:
        settings = load_monitoring_config(str(monitoring))
    finally:
        monitoring.unlink()
    pod = objects["Deployment"]["spec"]["template"]
    assert pod["metadata"]["annotations"]["prometheus.io/path"] == settings.path
    container = pod["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"grpc": 8500, "http": 8501}
    from mlsrv import flags

    for arg in container["args"]:
        name = arg.removeprefix("--").split("=", 1)[0]
        assert name in flags.BY_NAME, f"{folder}: {arg} is not an mlsrv serve flag"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/etc/mlsrv" in mounts
    if folder == "overlays/s3":
        assert "s3://" in data["models.config"] and "--remote_cache_dir=/var/cache/mlsrv" in container["args"]
        assert "/var/cache/mlsrv" in mounts and container["envFrom"][0]["secretRef"]["name"] == "mlsrv-s3"
    hpa = objects["HorizontalPodAutoscaler"]
    adapter = documents(DEPLOY / "kubernetes" / "prometheus-adapter.yaml")[0]["rules"]["custom"][0]
    assert hpa["spec"]["metrics"][1]["pods"]["metric"]["name"] == adapter["name"]["as"]
    assert ":mlsrv:admission:in_flight_requests" in adapter["seriesQuery"]


def test_the_kserve_runtime_has_kserves_fields_and_tf_servings_arguments() -> None:
    fields = json.loads(KSERVE_FIELDS.read_text())
    runtime = documents(DEPLOY / "kserve" / "servingruntime.yaml")[0]
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1" and runtime["kind"] == "ClusterServingRuntime"
    assert set(runtime) <= set(fields["V1alpha1ServingRuntime"])
    spec = runtime["spec"]
    unknown = set(spec) - set(fields["V1alpha1ServingRuntimeSpec"])
    assert not unknown, sorted(unknown)
    for model_format in spec["supportedModelFormats"]:
        assert set(model_format) <= set(fields["V1alpha1SupportedModelFormat"])
        assert model_format["name"] == "tensorflow"
    for container in spec["containers"]:  # a ServingRuntime's containers are Kubernetes containers
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"}, "spec": {"containers": [container]}}
        kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
    args = spec["containers"][0]["args"]  # KServe's TF Serving runtime's arguments, which mlsrv takes as they are
    assert args == ["--model_name={{.Name}}", "--port=9000", "--rest_api_port=8080", "--model_base_path=/mnt/models",
                    "--rest_api_timeout_in_ms=60000"]  # fmt: skip
