"""``mlsrv status``: per-version state, TF Serving JSON, and ``--wait`` with its exit codes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from mlsrv.client.transports import Call
from mlsrv.errors import Code, ModelNotFound, TransportError
from mlsrv.protocol.types import ModelStatus, State, VersionStatus
from tests.cli.client_cli import check_golden, invoke, use_mock
from tests.cli.conftest import Served
from tests.conftest import free_port


def test_plain_and_json_status(monkeypatch: pytest.MonkeyPatch) -> None:
    versions = (VersionStatus(2, State.END, Code.INTERNAL, "bad graph"), VersionStatus(1, State.AVAILABLE))
    use_mock(monkeypatch, lambda call: ModelStatus("m", versions))
    plain = invoke("status", "-m", "m")
    assert plain.exit_code == 0
    assert plain.stdout == "m version 2: END (INTERNAL: bad graph)\nm version 1: AVAILABLE\n"
    doc = json.loads(invoke("status", "-m", "m", "--json").stdout)
    assert doc["model_version_status"][0] == {
        "version": "2",
        "state": "END",
        "status": {"error_code": "INTERNAL", "error_message": "bad graph"},
    }


def steps(*answers: Any) -> Any:
    items: Iterator[Any] = iter(answers)
    last: list[Any] = [None]

    def handler(call: Call) -> Any:
        last[0] = next(items, last[0])
        if isinstance(last[0], BaseException):
            raise last[0]
        return last[0]

    return handler


def test_wait_until_available(monkeypatch: pytest.MonkeyPatch) -> None:
    transport = use_mock(
        monkeypatch,
        steps(
            TransportError("cannot connect"),
            ModelNotFound("Could not find any versions of model m"),
            ModelStatus("m", (VersionStatus(1, State.AVAILABLE),)),
        ),
    )
    result = invoke("status", "-m", "m", "--wait", "AVAILABLE", "--timeout", "30s", "-q")
    assert result.exit_code == 0 and result.stdout == ""
    assert len(transport.calls) == 3


def test_wait_timeout_exits_1_with_what_it_saw(monkeypatch: pytest.MonkeyPatch) -> None:
    use_mock(monkeypatch, steps(ModelStatus("m", (VersionStatus(1, State.LOADING),))))
    result = invoke("status", "-m", "m", "--wait", "available", "--timeout", "150ms")
    assert result.exit_code == 1
    assert result.stderr == (
        "DeadlineExceeded: model m did not become AVAILABLE within 0.15 s (last: version 1 LOADING)\n"
    )


def test_wait_on_a_closed_port_times_out_without_a_traceback() -> None:
    result = invoke(
        "status", "-m", "m", "--rest", f"http://127.0.0.1:{free_port()}", "--wait", "AVAILABLE", "--timeout", "0.3"
    )
    assert result.exit_code == 1
    assert "did not become AVAILABLE within 0.3 s (last: cannot connect to" in result.stderr
    assert result.stderr.count("\n") == 1


def test_status_without_wait_on_a_closed_port_exits_3() -> None:
    result = invoke("status", "-m", "m", "--grpc", f"127.0.0.1:{free_port()}", "--timeout", "5")
    assert result.exit_code == 3 and result.stderr.startswith("TransportError: cannot connect to 127.0.0.1:")


def test_rest_and_grpc_give_the_same_status(served: Served) -> None:
    out = {}
    for protocol in ("rest", "grpc"):
        for extra in ([], ["--json"], ["--wait", "AVAILABLE", "--timeout", "10s"]):
            result = invoke("status", "-m", "half_plus_two", *served.args(protocol), *extra)
            assert result.exit_code == 0, result.stderr
            out[protocol, tuple(extra)] = result.stdout
    assert out["rest", ()] == out["grpc", ()] == "half_plus_two version 123: AVAILABLE\n"
    assert out["rest", ("--json",)] == out["grpc", ("--json",)]
    check_golden("status.json", out["rest", ("--json",)])
    missing = [invoke("status", "-m", "nope", *served.args(p)) for p in ("rest", "grpc")]
    assert [r.exit_code for r in missing] == [1, 1] and missing[0].stderr == missing[1].stderr


def test_a_status_asked_by_label_says_which_version_the_label_points_to(monkeypatch: pytest.MonkeyPatch) -> None:
    transport = use_mock(monkeypatch, lambda call: ModelStatus("m", (VersionStatus(3, State.AVAILABLE),)))
    result = invoke("status", "-m", "m", "--label", "stable")
    assert result.stdout == "m version 3 (label stable): AVAILABLE\n"
    assert transport.calls[-1].request.label == "stable"
