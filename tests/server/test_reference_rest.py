"""REST against TF Serving's own reference models with real TensorFlow (spec 2, the 2.10 edge-case table).

One server per module (TF import and model loads cost seconds): :class:`BackgroundServer` runs it on
its own event loop in a thread, and each test submits a coroutine to that loop. The gRPC and parity
modules reuse the helper and :func:`reference_config`.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
import pytest

from mlsrv import flags
from tests.conftest import EXAMPLES
from tests.server.harness import Running, running_server

pytestmark = pytest.mark.tf

T = TypeVar("T")

#: 2.10's model: saved_model_half_plus_two_2_versions with only v123 and label Version_Label -> 123.
M = "saved_model_half_plus_two_2_versions"


class BackgroundServer:
    """A started Server plus one gRPC channel, living on an event loop in a daemon thread.

    ``call(fn)`` runs ``fn(running, channel)`` on that loop and returns its result (or raises its
    error) in the calling thread, so plain synchronous tests can share one server.
    """

    def __init__(self, **given: flags.FlagValue) -> None:
        self._flags = given
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.running: Running | None = None
        self.channel: grpc.aio.Channel | None = None
        self._thread = threading.Thread(target=self._main, name="reference-server", daemon=True)

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        if not self._ready.wait(180):
            raise TimeoutError("server did not start within 180 s")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # reported to the test thread, never left unhandled in this one
            self._error = error
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        given: dict[str, Any] = dict(self._flags)
        async with running_server(**given) as running:
            async with grpc.aio.insecure_channel(running.grpc_target) as channel:
                self.running, self.channel = running, channel
                self._ready.set()
                await self._stop.wait()

    def call(self, fn: Callable[[Running, grpc.aio.Channel], Awaitable[T]], timeout: float = 60) -> T:
        assert self._loop is not None and self.running is not None and self.channel is not None
        running, channel = self.running, self.channel

        async def run() -> T:
            return await fn(running, channel)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def rest(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None) -> tuple[int, Any, str]:
        """One REST call: (status, parsed JSON or None, Content-Type)."""

        async def send(s: Running, _: grpc.aio.Channel) -> tuple[int, Any, str]:
            status, parsed, response = await s.request(method, path, body, raw=raw)
            return status, parsed, response.headers.get("Content-Type", "")

        return self.call(send)


def reference_config(reference: Path, out: Path) -> str:
    """The model config used by the reference modules; returns its path.

    ``M``: 2.10's handler-test setup. ``both``: both versions, labels stable->123 and canary->124.
    ``default``: TF1 half_plus_two (TF Serving's python test). ``tf2``: the TF2 export.
    Plus half_plus_three and two bundled examples (strings and several inputs).
    """
    two = reference / "saved_model_half_plus_two_2_versions"
    models = [
        f'name: "{M}" base_path: "{two}" model_version_policy {{ specific {{ versions: 123 }} }} '
        'version_labels { key: "Version_Label" value: 123 }',
        f'name: "both" base_path: "{two}" model_version_policy {{ all {{}} }} '
        'version_labels { key: "stable" value: 123 } version_labels { key: "canary" value: 124 }',
        f'name: "default" base_path: "{reference / "saved_model_half_plus_two_cpu"}"',
        f'name: "tf2" base_path: "{reference / "saved_model_half_plus_two_tf2_cpu"}"',
        f'name: "half_plus_three" base_path: "{reference / "saved_model_half_plus_three"}"',
        f'name: "string_input" base_path: "{EXAMPLES / "string_input"}"',
        f'name: "multi_io" base_path: "{EXAMPLES / "multi_io"}"',
    ]
    text = "model_config_list {\n" + "".join(
        f'  config {{ {m} model_platform: "tensorflow" }}\n' for m in models
    ) + "}\n"
    path = out / "models.config"
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="module")
def server(reference_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    config = reference_config(reference_dir, tmp_path_factory.mktemp("rest"))
    # The flag makes the label config valid for TF Serving too, which checks labels before loading (4.2).
    with BackgroundServer(model_config_file=config, allow_version_labels_for_unavailable_models=True) as background:
        yield background


# -- predict (2.10 #1-#4, #7) -------------------------------------------------------------------------

PREDICT_OK = [
    (f"/v1/models/{M}:predict", {"instances": [[1.0, 2.0], [3.0, 4.0]]}, {"predictions": [[2.5, 3.0], [3.5, 4.0]]}),
    (f"/v1/models/{M}/versions/123:predict", {"instances": [1.0, 2.0]}, {"predictions": [2.5, 3.0]}),
    (f"/v1/models/{M}/labels/Version_Label:predict", {"instances": [1.0, 2.0]}, {"predictions": [2.5, 3.0]}),
    (f"/v1/models/{M}:predict", {"signature_name": "serving_default", "inputs": [3.0, 4.0]}, {"outputs": [3.5, 4.0]}),
    ("/v1/models/default:predict", {"instances": [2.0, 3.0, 4.0]}, {"predictions": [3.0, 3.5, 4.0]}),
    ("/v1/models/default:predict", {"inputs": [2.0, 3.0, 4.0]}, {"outputs": [3.0, 3.5, 4.0]}),
    ("/v1/models/default:predict", {"instances": [[2.0], [3.0]]}, {"predictions": [[3.0], [3.5]]}),
    ("/v1/models/default:predict", {"inputs": {"x": [[2.0]]}, "extra": 1}, {"outputs": [[3.0]]}),
    ("/v1/models/default:predict", {"inputs": 3.0}, {"outputs": 3.5}),  # scalar in, bare scalar out
    ("/v1/models/default:predict", {"inputs": []}, {"outputs": []}),  # shape [0]
    ("/v1/models/tf2:predict", {"instances": [1.0, 2.0, 5.0]}, {"predictions": [2.5, 3.0, 4.5]}),
    ("/v1/models/tf2:predict", {"inputs": [[1.0], [5.0]]}, {"outputs": [[2.5], [4.5]]}),
    ("/v1/models/half_plus_three:predict", {"instances": [1.0, 5.0]}, {"predictions": [3.5, 5.5]}),
    ("/v1/models/both/labels/canary:predict", {"instances": [2.0]}, {"predictions": [3.0]}),
    ("/v1/models/both/versions/124:predict", {"inputs": [2.0]}, {"outputs": [3.0]}),
    # A float input takes any JSON number (2.10 #29): precision is lost, values beyond float32 become inf.
    ("/v1/models/default:predict", {"instances": [1435774380, 1e40]},
     {"predictions": [float(np.float32(1435774380) * np.float32(0.5) + np.float32(2)), float("inf")]}),
]


@pytest.mark.parametrize(("path", "body", "expected"), PREDICT_OK)
def test_predict(server: BackgroundServer, path: str, body: Any, expected: Any) -> None:
    status, parsed, content_type = server.rest("POST", path, body)
    assert (status, parsed) == (200, expected)
    assert content_type == "application/json"


def _printf_float32(value: float) -> float:
    """TF's ``WriteDecimal`` for a float, by its definition: ``%.6g`` if it reads back, else ``%.9g``."""
    text = f"{value:.6g}"
    if np.float32(float(text)) != np.float32(value):
        text = f"{value:.9g}"
    return float(text)


def test_float32_outputs_carry_tf_serving_decimals(server: BackgroundServer) -> None:
    # 2.8: float32 values are written as %.6g when that round-trips, else %.9g. As JSON (double)
    # numbers those differ from the float32's shortest text: 1/3 is 0.333333343, not 0.33333334.
    third = float(np.float32(1 / 3))
    y = np.float32(third) * np.float32(0.5) + np.float32(2)
    body = {"signature_name": "regress_x_to_y", "examples": [{"x": third}]}
    assert server.rest("POST", "/v1/models/default:regress", body)[:2] == (200, {"results": [2.16666675]})
    body = {"signature_name": "classify_x_to_y", "examples": [{"x": third}]}
    assert server.rest("POST", "/v1/models/tf2:classify", body)[:2] == (200, {"results": [[["", 2.16666675]]]})
    status, parsed, _ = server.rest("POST", "/v1/models/default:predict", {"inputs": [third] * 60})
    assert (status, parsed["outputs"]) == (200, [_printf_float32(float(y))] * 60)


def test_float32_decimals_match_printf_on_any_bits() -> None:
    from mlsrv.protocol.json_write import tf_float32_values

    rng = np.random.default_rng(7)
    values = rng.integers(0, 2**32, size=20000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    values = values[np.isfinite(values)]
    values[:8] = [0.0, -0.0, 9e6, 999999, 3e-5, 555557.5, 1e-45, 3.4028235e38]
    expected = [_printf_float32(v) for v in values.tolist()]
    for chunk in (values, values[:20]):  # the numpy path and the small-tensor path
        got = tf_float32_values(chunk)
        assert got.tolist() == expected[: len(chunk)]
        assert np.signbit(got).tolist() == np.signbit(expected[: len(chunk)]).tolist()


def test_non_finite_tokens_round_trip(server: BackgroundServer) -> None:
    raw = b'{"instances": [NaN, Infinity, -Infinity]}'
    status, parsed, _ = server.rest("POST", "/v1/models/default:predict", raw=raw)
    assert status == 200
    assert repr(parsed["predictions"]) == "[nan, inf, -inf]"


# -- classify / regress (2.10 #5, #6, #35, #36) on TF1 and TF2 exports -----------------------------------

EXAMPLES_OK = [
    ("regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 80.0}]}, [42.0]),
    ("classify", {"signature_name": "classify_x_to_y", "examples": [{"x": 20.0}]}, [[["", 12.0]]]),
    ("regress", {"signature_name": "regress_x_to_y2", "examples": [{"x": 2.0}, {"x": [4.0]}]}, [4.0, 5.0]),
    ("classify", {"signature_name": "classify_x_to_y", "context": {"x": 2.0}, "examples": [{}, {}]},
     [[["", 3.0]], [["", 3.0]]]),
    # 2.10 #35 / #36 bodies (plus the model's "x"): every feature kind decodes; unknown features are ignored.
    ("classify", {"signature_name": "classify_x_to_y", "examples": [
        {"names": ["foo", "bar"], "ratings": [8.0, 9.0], "age": 20, "x": 1.0},
        {"names": ["baz"], "ratings": 6.0, "x": 3.0}]}, [[["", 2.5]], [["", 3.5]]]),
    ("regress", {"signature_name": "regress_x_to_y", "context": {"query": "pizza", "location": ["sfo"]},
                 "examples": [{"names": [{"b64": "aGVsbG8="}], "intboolmix": [1, True, False],
                               "neg": float("-inf"), "x": 6.0}]}, [5.0]),
]


@pytest.mark.parametrize("model", [M, "default", "tf2"])
@pytest.mark.parametrize(("verb", "body", "results"), EXAMPLES_OK)
def test_classify_and_regress(server: BackgroundServer, model: str, verb: str, body: Any, results: Any) -> None:
    # TF2 exports' classify/regress signatures say method_name "predict"; TF Serving does not check by default.
    status, parsed, content_type = server.rest("POST", f"/v1/models/{model}:{verb}", body)
    assert (status, parsed) == (200, {"results": results})
    assert content_type == "application/json"


def test_classify_and_regress_with_versions_and_labels(server: BackgroundServer) -> None:
    body = {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}
    for path in (f"/v1/models/{M}/labels/Version_Label:regress", "/v1/models/both/versions/124:regress",
                 "/v1/models/both/labels/stable:regress"):
        assert server.rest("POST", path, body)[:2] == (200, {"results": [3.0]})
    body = {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}
    assert server.rest("POST", "/v1/models/both/labels/canary:classify", body)[:2] == (200, {"results": [[["", 3.0]]]})


# -- status (#8) and metadata (#39) ------------------------------------------------------------------------


def _version(v: int) -> dict[str, Any]:
    return {"version": str(v), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}


def test_status(server: BackgroundServer) -> None:
    assert server.rest("GET", "/v1/models/default")[:2] == (200, {"model_version_status": [_version(123)]})
    assert server.rest("GET", f"/v1/models/{M}/versions/123")[:2] == (200, {"model_version_status": [_version(123)]})
    both = (200, {"model_version_status": [_version(124), _version(123)]})  # descending
    assert server.rest("GET", "/v1/models/both")[:2] == both
    assert server.rest("GET", "/v1/models/both/labels/no_such_label")[:2] == both  # the label is ignored
    assert server.rest("GET", "/v1/models/both/versions/124")[:2] == (200, {"model_version_status": [_version(124)]})


def _expected(reference: Path, name: str) -> Any:
    return json.loads((reference / name).read_text())


def test_metadata_equals_tf_serving_files(server: BackgroundServer, reference_dir: Path) -> None:
    # TF Serving's python test serves saved_model_half_plus_two_cpu as "default".
    expected = _expected(reference_dir, "half_plus_two_model_metadata.json")
    assert server.rest("GET", "/v1/models/default/metadata")[:2] == (200, expected)
    expected = _expected(reference_dir, "saved_model_half_plus_two_2_versions_metadata.json")
    for path in (f"/v1/models/{M}/metadata", f"/v1/models/{M}/versions/123/metadata",
                 f"/v1/models/{M}/labels/Version_Label/metadata"):
        assert server.rest("GET", path)[:2] == (200, expected)
    # The same SignatureDefs from version 124, reached by label: only the spec's version differs.
    status, parsed, _ = server.rest("GET", "/v1/models/both/labels/canary/metadata")
    assert status == 200 and parsed["model_spec"] == {"name": "both", "signature_name": "", "version": "124"}
    assert parsed["metadata"] == expected["metadata"]


def test_tf2_metadata_equals_tf_serving_file(server: BackgroundServer, reference_dir: Path) -> None:
    expected = _expected(reference_dir, "saved_model_half_plus_two_tf2_2_versions_metadata.json")
    # The file was written for this TF2 export served under the 2_versions name.
    expected["model_spec"]["name"] = "tf2"
    # NOTE: the file's __saved_model_init_op entry alone lacks "defaults": {}; TF Serving prints every
    # field without presence (an empty map included) for every signature, so the file was hand-edited.
    signatures = expected["metadata"]["signature_def"]["signature_def"]
    assert "defaults" not in signatures["__saved_model_init_op"]
    signatures["__saved_model_init_op"]["defaults"] = {}
    assert server.rest("GET", "/v1/models/tf2/metadata")[:2] == (200, expected)


# -- strings: b64 inputs, `_bytes` outputs (#26, #28, #31) ----------------------------------------------------

STRINGS_OK = [
    ({"instances": [{"b64": "aGVsbG8="}, "world"]},
     {"predictions": [{"length": 5, "upper_bytes": {"b64": "SEVMTE8="}},
                      {"length": 5, "upper_bytes": {"b64": "V09STEQ="}}]}),
    ({"inputs": [{"b64": "aGVsbG8="}, "w\u00f6rld", ""]},
     {"outputs": {"length": [5, 6, 0], "upper_bytes": [{"b64": "SEVMTE8="}, {"b64": "V8O2UkxE"}, {"b64": ""}]}}),
    ({"inputs": {"text": [{"b64": "dGY="}]}}, {"outputs": {"length": [2], "upper_bytes": [{"b64": "VEY="}]}}),
    ({"inputs": {"b64": "aGVsbG8="}}, {"outputs": {"length": 5, "upper_bytes": {"b64": "SEVMTE8="}}}),  # scalar
    ({"instances": [{"b64": "aGVsbG8"}]},  # absl accepts missing padding
     {"predictions": [{"length": 5, "upper_bytes": {"b64": "SEVMTE8="}}]}),
]


@pytest.mark.parametrize(("body", "expected"), STRINGS_OK)
def test_b64_inputs_and_bytes_outputs(server: BackgroundServer, body: Any, expected: Any) -> None:
    assert server.rest("POST", "/v1/models/string_input:predict", body)[:2] == (200, expected)


def test_several_inputs_and_output_dtypes(server: BackgroundServer) -> None:
    row = {"instances": [{"a": [1.5, 2.0], "b": 3, "c": "abc"}, {"a": [0, -1], "b": -4, "c": {"b64": ""}}]}
    expected_rows = [{"b_times_2": 6, "c_len": 3, "flag": True, "sum": 6.5},
                     {"b_times_2": -8, "c_len": 0, "flag": False, "sum": -5.0}]
    assert server.rest("POST", "/v1/models/multi_io:predict", row)[:2] == (200, {"predictions": expected_rows})
    columnar = {"inputs": {"a": [[1.5, 2.0], [0, -1]], "b": [3, -4], "c": ["abc", ""], "ignored": 0}}
    expected_columns = {"b_times_2": [6, -8], "c_len": [3, 0], "flag": [True, False], "sum": [6.5, -5.0]}
    assert server.rest("POST", "/v1/models/multi_io:predict", columnar)[:2] == (200, {"outputs": expected_columns})


# -- errors (#9-#25, #37, and TF's Session::Run dtype check) -----------------------------------------------------

P = f"/v1/models/{M}:predict"
C = f"/v1/models/{M}:classify"

#: The SignatureDefs as C++ DebugString() prints them (TF quotes them in classify/regress errors).
_SHAPE_N_1 = ("    tensor_shape {\n      dim {\n        size: -1\n      }\n"
              "      dim {\n        size: 1\n      }\n    }\n")
SERVING_DEFAULT = (
    'inputs {\n  key: "x"\n  value {\n    name: "x:0"\n    dtype: DT_FLOAT\n' + _SHAPE_N_1 + "  }\n}\n"
    'outputs {\n  key: "y"\n  value {\n    name: "y:0"\n    dtype: DT_FLOAT\n' + _SHAPE_N_1 + "  }\n}\n"
    'method_name: "tensorflow/serving/predict"\n'
)
REGRESS_X_TO_Y = (
    'inputs {\n  key: "inputs"\n  value {\n    name: "tf_example:0"\n    dtype: DT_STRING\n'
    "    tensor_shape {\n      unknown_rank: true\n    }\n  }\n}\n"
    'outputs {\n  key: "outputs"\n  value {\n    name: "y:0"\n    dtype: DT_FLOAT\n' + _SHAPE_N_1 + "  }\n}\n"
    'method_name: "tensorflow/serving/regress"\n'
)
FLOAT_ELEMENT_0 = ("Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
                   'JSON Value: "x" Type: String is not of expected type: float')

#: (method, path, body or raw bytes, status, message). A message starting with "~" need only be contained;
#: "" means TF Serving's empty body.
ERRORS: list[tuple[str, str, Any, int, str]] = [
    ("POST", "/v1/models/foo:predict", {"instances": [1]}, 404, "Servable not found for request: Latest(foo)"),
    ("POST", "/v1/models/foo/versions/50:predict", {"instances": [1]}, 404,
     "Servable not found for request: Specific(foo, 50)"),
    ("POST", f"/v1/models/{M}/versions/124:predict", {"instances": [1.0]}, 404,
     f"Servable not found for request: Specific({M}, 124)"),
    ("POST", f"/v1/models/{M}/labels/Version_Nonexistent:predict", {"instances": [1.0]}, 400,
     "Unrecognized servable version label: Version_Nonexistent"),
    ("POST", P, b"", 400, "JSON Parse error: The document is empty"),
    ("POST", P, b"instances = [1, 2]", 400, "JSON Parse error: Invalid value. at offset: 0"),
    ("POST", P, {"instances": ["x", "y"]}, 400, FLOAT_ELEMENT_0),
    ("POST", P, {"signature_name": 100}, 400,
     'JSON Value: {\n    "signature_name": 100\n} not formatted correctly. '
     "'signature_name' key must be a string value."),
    ("POST", P, [1], 400, "JSON Value: [1] Is not object"),
    ("POST", P, {"signature_name": "nope", "instances": [1.0]}, 400,
     'Serving signature name: "nope" not found in signature def'),
    ("POST", P, {"signature_name": "__saved_model_init_op", "instances": [1.0]}, 400,  # TF1 exports have none
     'Serving signature name: "__saved_model_init_op" not found in signature def'),
    ("POST", "/v1/models/tf2:predict", {"signature_name": "__saved_model_init_op", "instances": [1.0]}, 400,
     "Failed to get input map for signature: __saved_model_init_op"),
    ("POST", P, {"signature_name": "serving_default"}, 400, "Missing 'inputs' or 'instances' key"),
    ("POST", P, {"instances": []}, 400, 'JSON Value: {\n    "instances": []\n} No values in \'instances\' array'),
    ("POST", P, {"instances": {"x": 1}}, 400, "~Expecting 'instances' to be an list/array"),
    ("POST", P, {"inputs": {"y": [1.0]}}, 400, "Missing named input: x in 'inputs' object."),
    ("POST", P, {"instances": [{"x": 1.0, "y": 2.0}]}, 400,
     "Failed to process element: 0 key: y of 'instances' list. Error: INVALID_ARGUMENT: "
     "JSON object: does not have named input: y"),
    ("POST", P, {"instances": [{"b64": "aGVsbG8="}]}, 400,
     "~Type: Object is not of expected type: float"),
    ("GET", "/v1/foo", None, 400, "Malformed request: GET /v1/foo"),
    ("POST", "/v1/foo", {}, 400, "Malformed request: POST /v1/foo"),
    ("GET", "/v1/models/debug/model_name", None, 400, "Malformed request: GET /v1/models/debug/model_name"),
    ("POST", "/v1/models", {}, 400, "Malformed request: POST /v1/models"),
    ("GET", "/v1/models/foo:predict", None, 400, "Malformed request: GET /v1/models/foo:predict"),
    ("POST", "/v1/models/foo/version/50:predict", {}, 400, "Malformed request: POST /v1/models/foo/version/50:predict"),
    ("POST", "/v1/models/foo/versions/HELLO:regress", {}, 400,
     "Malformed request: POST /v1/models/foo/versions/HELLO:regress"),
    ("POST", "/v1/models/foo/metadata", {}, 400, "Malformed request: POST /v1/models/foo/metadata"),
    ("POST", "/v1/models/foo/label/x:regress", {}, 400, "Malformed request: POST /v1/models/foo/label/x:regress"),
    ("POST", "/v1/models/foo/versions/50/labels/x:regress", {}, 400,
     "Malformed request: POST /v1/models/foo/versions/50/labels/x:regress"),
    ("POST", f"/v1/models/{M}:PREDICT", {}, 400, f"Malformed request: POST /v1/models/{M}:PREDICT"),
    ("POST", "/v1/models/foo/versions/18446744073709551615:regress", {}, 400, ""),  # empty body
    ("POST", P, {"instances": [[1, 2], [3, 4], [5, 6, 7]]}, 400,
     "Failed to process element: 2 of 'instances' list. Error: INVALID_ARGUMENT: Expecting tensor size: 2 but got: 3"),
    ("POST", P, {"instances": [[1, 2], [3, 4], [[5, 6]]]}, 400,
     "Failed to process element: 2 of 'instances' list. Error: INVALID_ARGUMENT: Expecting shape [2] but got: [1,2]"),
    ("POST", P, {"instances": [1, [1]]}, 400,
     "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: Expecting shape [] but got: [1]"),
    ("POST", P, {"instances": [[1, 2], ["a", "b"]]}, 400, "~not of expected type"),
    ("POST", P, {"instances": [1], "inputs": [1]}, 400,
     'JSON Value: {\n    "instances": [1],\n    "inputs": [1]\n} Not formatted correctly expecting only one of '
     "'inputs' or 'instances' keys to exist "),
    ("POST", "/v1/models/multi_io:predict", {"instances": [{"a": [1.0, 2.0], "b": 1, "c": "x"}, [1]]}, 400,
     "Expecting object but got list at item 1 of input list"),
    ("POST", "/v1/models/multi_io:predict", {"instances": [[1.0, 2.0]]}, 400,
     "instances is a plain list, but expecting list of objects as multiple input tensors required as per "
     "tensorinfo_map"),
    ("POST", "/v1/models/multi_io:predict", {"instances": [{"a": [1.0, 2.0], "b": 1}]}, 400,
     "Failed to process element: 0 of 'instances' list. JSON object: {\n    \"a\": [1.0, 2.0],\n    \"b\": 1\n} "
     "keys must be equal to: a,b,c"),
    ("POST", "/v1/models/multi_io:predict", {"instances": [{"a": [1.0, 2.0], "b": 1.5, "c": "x"}]}, 400,
     "Failed to process element: 0 key: b of 'instances' list. Error: INVALID_ARGUMENT: "
     "JSON Value: 1.5 Type: Number is not of expected type: int64"),
    ("POST", "/v1/models/string_input:predict", {"instances": [["baz", "bar"], {"text": ["x"]}]}, 400,
     "Expecting value/list but got object at item 1 of input list"),
    ("POST", "/v1/models/string_input:predict", {"instances": [{"b64": "!!!"}]}, 400,
     "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: Unable to base64 decode"),
    ("POST", "/v1/models/string_input:predict", {"inputs": [{"b64": "aGVs-G8="}]}, 400, "~Unable to base64 decode"),
    ("POST", "/v1/models/string_input:predict", {"inputs": [{"b64": 1}]}, 400,
     'JSON Value: {\n    "b64": 1\n} not formatted correctly for base64 data'),
    # classify / regress request errors (#37)
    ("POST", C, {"signature_name": ["hello"], "examples": [{"x": 1.0}]}, 400,
     "~'signature_name' key must be a string value."),
    ("POST", C, {"signature_name": "classify_x_to_y", "context": [1], "examples": [{"x": 1.0}]}, 400,
     "Example must be JSON object but got JSON Array"),
    ("POST", C, {"signature_name": "classify_x_to_y", "examples": {"x": 1.0}}, 400,
     "~Expecting 'examples' value to be an list/array"),
    ("POST", C, {"signature_name": "classify_x_to_y", "examples": []}, 400, "~'examples' value is an empty array"),
    ("POST", C, {"signature_name": "classify_x_to_y", "examples": [[1.0]]}, 400,
     "Example must be JSON object but got JSON Array"),
    ("POST", C, {"signature_name": "classify_x_to_y", "examples": [{"x": [10, None]}]}, 400,
     "Feature: x has element with unexpected JSON type: Null"),
    ("POST", C, {"signature_name": "classify_x_to_y", "examples": [{"x": [10, 10.0]}]}, 400,
     "Unexpected element type in feature: x expecting type: int64"),
    ("POST", C, {"signature_name": "classify_x_to_y", "examples": [{"x": [10, {"test": 10}]}]}, 400,
     "Feature: x has element with unexpected JSON type: Object"),
    ("POST", C, {"signature_name": "classify_x_to_y", "examples": [{"x": [[10], 20]}]}, 400,
     "Feature: x has element with unexpected JSON type: Array"),
    ("POST", C, {"signature_name": "classify_x_to_y", "examples": [{"x": [20, 18446744073709551603]}]}, 400,
     "Feature: x has uint64_t element. Only int64_t is supported."),
    ("POST", f"/v1/models/{M}:regress", {"signature_name": "regress_x_to_y"}, 400,
     "JSON Value: {\n    \"signature_name\": \"regress_x_to_y\"\n} When method is classify, key 'examples' is "
     "expected and was not found"),
    ("POST", C, {"signature_name": "nope", "examples": [{"x": 1.0}]}, 400,
     "No signature was found with the name: nope"),
    ("POST", C, {"examples": [{"x": 1.0}]}, 400, "No classification inputs found in SignatureDef: " + SERVING_DEFAULT),
    ("POST", f"/v1/models/{M}:regress", {"examples": [{"x": 1.0}]}, 400,
     "No regression inputs found in SignatureDef: " + SERVING_DEFAULT),
    ("POST", C, {"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}]}, 400,
     'Expected classification signature outputs to contain at least one of "classes" or "scores". '
     "Signature was: " + REGRESS_X_TO_Y),
    # A regress signature whose "inputs" is DT_FLOAT: TF's Session::Run rejects the serialized Examples.
    ("POST", f"/v1/models/{M}:regress", {"signature_name": "regress_x2_to_y3", "examples": [{"x2": 1.0}]}, 400,
     "Expects arg[0] to be float but string is provided"),
    ("POST", "/v1/models/tf2:regress", {"signature_name": "regress_x2_to_y3", "examples": [{"x2": 1.0}]}, 400,
     "Expects arg[0] to be float but string is provided"),
    ("POST", "/v1/models/default:classify", {"signature_name": "classify_x_to_y", "examples": [{"x": [1.0, 2.0]}]},
     400, "~Number of float values != expected.  Values size: 2 but output shape: [1]"),
    ("GET", "/v1/models/foo", None, 404, "Could not find any versions of model foo"),
    ("GET", f"/v1/models/{M}/versions/124", None, 404, f"Could not find version 124 of model {M}"),
    ("GET", "/v1/models/foo/metadata", None, 404, "Servable not found for request: Latest(foo)"),
    ("GET", f"/v1/models/{M}/labels/nope/metadata", None, 400, "Unrecognized servable version label: nope"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "message"), ERRORS)
def test_errors(server: BackgroundServer, method: str, path: str, body: Any, status: int, message: str) -> None:
    raw = body if isinstance(body, bytes) else None
    got_status, parsed, content_type = server.rest(method, path, None if raw is not None else body, raw=raw)
    assert got_status == status
    assert content_type == "application/json"
    if message == "":
        assert parsed is None  # TF Serving writes no body for URL parse errors
    elif message.startswith("~"):
        assert message[1:] in parsed["error"]
    else:
        assert parsed == {"error": message}
    # the server keeps serving after every error
    assert server.rest("POST", "/v1/models/default:predict", {"instances": [2.0]})[:2] == (200, {"predictions": [3.0]})
