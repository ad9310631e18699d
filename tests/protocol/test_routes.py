"""REST path grammar: TF Serving's regexes, quirks and messages (spec 2.2, 2.10 #16-18)."""

from __future__ import annotations

import pytest

from mlsrv.errors import InvalidArgument
from mlsrv.protocol import routes
from mlsrv.protocol.routes import Verb
from mlsrv.protocol.types import ModelSpec


@pytest.mark.parametrize(
    ("method", "path", "verb", "spec"),
    [
        ("POST", "/v1/models/m:predict", Verb.PREDICT, ModelSpec("m")),
        ("POST", "/v1/models/m/versions/123:predict", Verb.PREDICT, ModelSpec("m", 123)),
        ("POST", "/v1/models/m/labels/stable:classify", Verb.CLASSIFY, ModelSpec("m", label="stable")),
        ("POST", "/v1/models/m:regress", Verb.REGRESS, ModelSpec("m")),
        ("GET", "/v1/models/m", Verb.STATUS, ModelSpec("m")),
        ("GET", "/v1/models/m/versions/7", Verb.STATUS, ModelSpec("m", 7)),
        ("GET", "/v1/models/m/labels/x", Verb.STATUS, ModelSpec("m", label="x")),
        ("GET", "/v1/models/m/metadata", Verb.METADATA, ModelSpec("m")),
        ("GET", "/v1/models/m/versions/00012/metadata", Verb.METADATA, ModelSpec("m", 12)),
        ("GET", "/V1/MODELS/m", Verb.STATUS, ModelSpec("m")),
        ("GET", "/v1/models/m/METADATA", Verb.STATUS, ModelSpec("m")),  # TF quirk: treated as status
        ("GET", "/v1/models", Verb.LIST, ModelSpec("")),
    ],
)
def test_parse_valid_paths(method: str, path: str, verb: Verb, spec: ModelSpec) -> None:
    route = routes.parse(method, path)
    assert route.verb is verb
    assert route.spec == spec


def test_names_and_labels_are_percent_decoded() -> None:
    encoded = "modelname%21%23%24%25%26%27%28%29%2A%2B%2C%2F%3A%3B%3D%3F%40%5B%5D"
    route = routes.parse("POST", f"/v1/models/{encoded}:predict")
    assert route.spec.name == "modelname!#$%&'()*+,/:;=?@[]"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/foo"),
        ("POST", "/v1/foo"),
        ("GET", "/v1/models/debug/model_name"),
        ("POST", "/v1/models"),
        ("GET", "/v1/models/foo:predict"),
        ("POST", "/v1/models/foo/version/50:predict"),
        ("POST", "/v1/models/foo/versions/HELLO:regress"),
        ("POST", "/v1/models/foo/metadata"),
        ("POST", "/v1/models/foo/label/x:regress"),
        ("POST", "/v1/models/foo/versions/50/labels/x:regress"),
        ("POST", "/v1/models/foo/versions/some_label:regress"),
        ("POST", "/v1/models/foo:PREDICT"),
        ("PUT", "/v1/models/foo:predict"),
    ],
)
def test_malformed_requests(method: str, path: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        routes.parse(method, path)
    assert info.value.message == f"Malformed request: {method} {path}"


def test_missing_model_name_with_version() -> None:
    with pytest.raises(InvalidArgument, match=r"^Missing model name in request\.$"):
        routes.parse("GET", "/v1/models/versions/1")


def test_version_overflow_has_empty_body() -> None:
    with pytest.raises(InvalidArgument) as info:
        routes.parse("POST", "/v1/models/foo/versions/18446744073709551615:regress")
    assert info.value.message == "Failed to convert version: 18446744073709551615 to numeric."
    assert info.value.empty_body


def test_is_api_path() -> None:
    assert routes.is_api_path("/v1/anything")
    assert routes.is_api_path("/V1/x")
    assert not routes.is_api_path("/healthz")
    assert not routes.is_api_path("/v2/models")


@pytest.mark.parametrize(
    ("verb", "spec", "path"),
    [
        (Verb.PREDICT, ModelSpec("m"), "/v1/models/m:predict"),
        (Verb.CLASSIFY, ModelSpec("m", 3), "/v1/models/m/versions/3:classify"),
        (Verb.METADATA, ModelSpec("m", label="a b"), "/v1/models/m/labels/a%20b/metadata"),
        (Verb.STATUS, ModelSpec("x/y"), "/v1/models/x%2Fy"),
        (Verb.LIST, ModelSpec(""), "/v1/models"),
    ],
)
def test_build_round_trips(verb: Verb, spec: ModelSpec, path: str) -> None:
    assert routes.build(verb, spec) == path
    method = "POST" if verb in (Verb.PREDICT, Verb.CLASSIFY, Verb.REGRESS) else "GET"
    assert routes.parse(method, path) == routes.Route(verb, spec)
