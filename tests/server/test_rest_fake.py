"""REST frontend against FakeServable (no TensorFlow): routes, formats, errors and HTTP details."""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path

import pytest

from tests.fakes import FakeLoaderFactory
from tests.server.harness import Running, running_server


def model_dir(tmp_path: Path, *versions: int) -> Path:
    for version in versions:
        (tmp_path / "m" / str(version)).mkdir(parents=True, exist_ok=True)
        (tmp_path / "m" / str(version) / "saved_model.pb").write_bytes(b"")
    return tmp_path / "m"


def serve(tmp_path: Path, scenario, **flags):  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with running_server(
            loader_factory=FakeLoaderFactory(), model_name="m", model_base_path=str(model_dir(tmp_path, 1)),
            **flags,
        ) as s:
            await scenario(s)

    asyncio.run(main())


def test_predict_row_and_columnar(tmp_path: Path) -> None:
    async def scenario(s: Running) -> None:
        assert await s.post("/v1/models/m:predict", {"instances": [[1.0], [5.0]]}) == (
            200, {"predictions": [[2.5], [4.5]]})
        assert await s.post("/v1/models/m/versions/1:predict", {"inputs": {"x": [[3.0]]}}) == (
            200, {"outputs": [[3.5]]})
        status, body, response = await s.request("POST", "/v1/models/m:predict", {"inputs": [[1.0]]})
        assert response.headers["Content-Type"] == "application/json"

    serve(tmp_path, scenario)


def test_status_metadata_and_list(tmp_path: Path) -> None:
    async def scenario(s: Running) -> None:
        assert await s.get("/v1/models/m") == (200, {"model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]})
        status, meta = await s.get("/v1/models/m/metadata")
        assert status == 200
        assert meta["model_spec"] == {"name": "m", "signature_name": "", "version": "1"}
        assert "serving_default" in meta["metadata"]["signature_def"]["signature_def"]
        status, listing = await s.get("/v1/models")
        assert status == 200 and listing["models"][0]["name"] == "m"

    serve(tmp_path, scenario)


@pytest.mark.parametrize(
    ("method", "path", "body", "code", "message"),
    [
        ("POST", "/v1/models/foo:predict", {"instances": [1]}, 404, "Servable not found for request: Latest(foo)"),
        ("POST", "/v1/models/m/versions/50:predict", {"instances": [1]}, 404,
         "Servable not found for request: Specific(m, 50)"),
        ("POST", "/v1/models/m/labels/nope:predict", {"instances": [1.0]}, 400,
         "Unrecognized servable version label: nope"),
        ("POST", "/v1/models/m:predict", {"signature_name": 100}, 400,
         "'signature_name' key must be a string value."),
        ("POST", "/v1/models/m:predict", {"signature_name": "zz", "instances": [1.0]}, 400,
         'Serving signature name: "zz" not found in signature def'),
        ("GET", "/v1/models/foo", None, 404, "Could not find any versions of model foo"),
        ("GET", "/v1/models/m/versions/9", None, 404, "Could not find version 9 of model m"),
        ("GET", "/v1/foo", None, 400, "Malformed request: GET /v1/foo"),
        ("POST", "/v1/models/m:predict", {"instances": ["x"]}, 400, "not of expected type: float"),
    ],
)
def test_errors(tmp_path: Path, method: str, path: str, body: object, code: int, message: str) -> None:
    async def scenario(s: Running) -> None:
        status, parsed, _ = await s.request(method, path, body)
        assert status == code
        assert message in parsed["error"]

    serve(tmp_path, scenario)


def test_empty_and_invalid_bodies(tmp_path: Path) -> None:
    async def scenario(s: Running) -> None:
        empty = (400, {"error": "JSON Parse error: The document is empty"})
        assert await s.post("/v1/models/m:predict", raw=b"") == empty
        status, body = await s.post("/v1/models/m:predict", raw=b"instances = [1, 2]")
        assert status == 400 and body["error"].startswith("JSON Parse error: Invalid value")
        status, body, _ = await s.request("POST", "/v1/models/foo/versions/18446744073709551615:regress", raw=b"{}")
        assert status == 400 and body is None  # TF Serving quirk: empty body

    serve(tmp_path, scenario)


def test_gzip_body_cors_and_plain_404(tmp_path: Path) -> None:
    async def scenario(s: Running) -> None:
        raw = gzip.compress(json.dumps({"instances": [[1.0]]}).encode())
        status, body, response = await s.request(
            "POST", "/v1/models/m:predict", raw=raw, headers={"Content-Encoding": "gzip"})
        assert (status, body) == (200, {"predictions": [[2.5]]})
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert response.headers["Access-Control-Allow-Methods"] == "POST, GET"
        status, _, _ = await s.request("OPTIONS", "/v1/models/m:predict", headers={"Origin": "https://a.b"})
        assert status == 200
        status, _, _ = await s.request("OPTIONS", "/v1/models/m:predict")
        assert status == 400
        status, text, response = await s.request("GET", "/nope")
        assert status == 404 and "Not Found" in text
        status, text, _ = await s.request("OPTIONS", "/nope", headers={"Origin": "https://a.b"})
        assert status == 404 and "Not Found" in text  # preflight handling is for /v1 paths only

    serve(tmp_path, scenario, rest_api_enable_cors_support=True)


def test_content_encoding_is_handled_as_tf_serving_does(tmp_path: Path) -> None:
    """Only a header containing "gzip" gunzips; a body that does not gunzip is empty; others stay raw."""
    body = json.dumps({"instances": [[1.0]]}).encode()
    ok = (200, {"predictions": [[2.5]]})
    empty = (400, {"error": "JSON Parse error: The document is empty"})

    async def scenario(s: Running) -> None:
        def post(raw: bytes, encoding: str) -> object:
            return s.post("/v1/models/m:predict", raw=raw, headers={"Content-Encoding": encoding})

        assert await post(gzip.compress(body), "x-gzip") == ok
        assert await post(b"notgzip", "gzip") == empty
        assert await post(gzip.compress(body)[:-8], "gzip") == empty  # truncated stream
        assert await post(body, "br") == ok  # not gzip: the body is taken as it is
        status, error = await post(gzip.compress(body), "GZIP")  # case-sensitive, as TF
        assert status == 400 and error["error"].startswith("JSON Parse error: Invalid value")
        assert await s.post("/v1/models/m:predict", {"instances": [[3.0]]}) == (200, {"predictions": [[3.5]]})

    serve(tmp_path, scenario)


@pytest.mark.parametrize(
    ("method", "path", "code", "message"),
    [
        ("GET", "/v1/models/modelname%21%23%24%25%26%27%28%29%2A%2B%2C%2F%3A%3B%3D%3F%40%5B%5D", 404,
         "Could not find any versions of model modelname!#$%&'()*+,/:;=?@[]"),
        ("GET", "/v1/models/foo%2Fbar", 404, "Could not find any versions of model foo/bar"),
        ("GET", "/v1/models/m%2Fmetadata", 404, "Could not find any versions of model m/metadata"),
        ("GET", "/v1/models/%2541", 404, "Could not find any versions of model %41"),
        ("POST", "/v1/models/m%3Apredict", 400, "Malformed request: POST /v1/models/m%3Apredict"),
        ("GET", "/v1/foo%20bar", 400, "Malformed request: GET /v1/foo%20bar"),
    ],
)
def test_paths_are_matched_encoded_and_names_decoded_once(
    tmp_path: Path, method: str, path: str, code: int, message: str
) -> None:
    async def scenario(s: Running) -> None:
        status, body, _ = await s.request(method, path, {"instances": [1.0]} if method == "POST" else None,
                                          encoded=True)
        assert (status, body) == (code, {"error": message})

    serve(tmp_path, scenario)


def test_long_messages_are_whole_over_rest_and_outside_v1_is_libevents_page(tmp_path: Path) -> None:
    async def scenario(s: Running) -> None:
        name = "a" * 1100
        status, body = await s.post(f"/v1/models/{name}:predict", {"instances": [1.0]})
        assert (status, body) == (404, {"error": f"Servable not found for request: Latest({name})"})
        status, text, response = await s.request("GET", "/nothing")
        assert status == 404
        assert text == "<HTML><HEAD>\n<TITLE>404 Not Found</TITLE>\n</HEAD><BODY>\n<H1>Not Found</H1>\n</BODY></HTML>\n"
        assert response.headers["Content-Type"] == "text/html"
        _, _, response = await s.request("GET", "/v1/models/m")
        assert "Server" not in response.headers

    serve(tmp_path, scenario)
