"""``mlsrv predict``: unit tests over a fake transport, then REST and gRPC against a real ``mlsrv serve``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mlsrv.protocol.types import RequestFormat
from tests.cli.client_cli import check_golden, invoke, use_mock
from tests.cli.conftest import Served
from tests.conftest import free_port

ROW = '{"instances": [[1.0], [2.0]]}'
PLAIN = "Result for output key y:\n[[2.5]\n [3. ]]\n"


# ------------------------------------------------------------------------------------- fake server


def test_data_is_typed_by_the_signature_and_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    transport = use_mock(monkeypatch)
    result = invoke("predict", "-m", "m", "-d", ROW)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == PLAIN
    metadata, predict = transport.calls
    assert metadata.op.value == "metadata"
    request = predict.request
    assert request.format is RequestFormat.ROW and request.inputs["x"].dtype == np.float32


def test_data_from_file_and_stdin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    use_mock(monkeypatch)
    body = tmp_path / "req.json"
    body.write_text(ROW)
    assert invoke("predict", "-m", "m", "--data", f"@{body}").stdout == PLAIN
    assert invoke("predict", "-m", "m", "--data", "-", input=ROW).stdout == PLAIN


def test_json_output_follows_the_request_format(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    use_mock(monkeypatch)
    row = invoke("predict", "-m", "m", "-d", ROW, "--json")
    assert json.loads(row.stdout) == {"predictions": [[2.5], [3.0]]}
    np.save(tmp_path / "x.npy", np.array([[3.0]]))
    columnar = invoke("predict", "-m", "m", "--input", f"x={tmp_path / 'x.npy'}", "--json")
    assert json.loads(columnar.stdout) == {"outputs": [[3.5]]}
    literal = invoke("predict", "-m", "m", "-i", "[[0.0]]", "--json")
    assert json.loads(literal.stdout) == {"outputs": [[2.0]]}


def test_outdir_writes_npy_and_refuses_to_overwrite(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    use_mock(monkeypatch)
    out = tmp_path / "out"
    first = invoke("predict", "-m", "m", "-d", ROW, "--outdir", str(out))
    assert first.exit_code == 0 and f"Output y is saved to {out / 'y.npy'}" in first.stdout
    saved = np.load(out / "y.npy")
    assert saved.dtype == np.float32 and saved.tolist() == [[2.5], [3.0]]
    again = invoke("predict", "-m", "m", "-d", ROW, "--outdir", str(out))
    assert again.exit_code == 2 and "add --overwrite" in again.stderr
    quiet = invoke("predict", "-m", "m", "-d", ROW, "--outdir", str(out), "--overwrite", "-q")
    assert quiet.exit_code == 0 and quiet.stdout == ""


def test_examples_pick_classify_or_regress(monkeypatch: pytest.MonkeyPatch) -> None:
    transport = use_mock(monkeypatch)
    examples = '[{"x": [1.0]}, {"x": [3.0]}]'
    classify = invoke("predict", "-m", "m", "-s", "classify_x_to_y", "--examples", examples)
    assert classify.stdout == "example 0: class '' score 2.5\nexample 1: class '' score 3.5\n"
    regress = invoke("predict", "-m", "m", "-s", "regress_x_to_y", "--examples", examples, "--json")
    assert json.loads(regress.stdout) == {"results": [2.5, 3.5]}
    body = '{"signature_name": "classify_x_to_y", "examples": [{"x": [1.0]}], "context": {"c": "a"}}'
    as_data = invoke("predict", "-m", "m", "-d", body, "--json")
    assert json.loads(as_data.stdout) == {"results": [[["", 2.5]]]}
    assert transport.calls[-1].request.context == {"c": "a"}
    explicit = invoke("predict", "-m", "m", "--method", "regress", "--examples", examples)
    assert explicit.exit_code == 0 and explicit.stdout.startswith("example 0: 2.5")
    needs_method = invoke("predict", "-m", "m", "--examples", examples)
    assert needs_method.exit_code == 2 and "give --method classify or --method regress" in needs_method.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "no inputs: give --data, --input or --examples"),
        (["-d", ROW, "-i", "x=[[1.0]]"], "only one of --data, --input or --examples"),
        (["-d", ROW, "--version", "1", "--label", "a"], "either --version or --label"),
        (["-d", ROW, "--method", "classify"], "--method classify needs --examples"),
        (["-d", "{oops"], "--data: JSON Parse error: Missing a name for object member. at offset: 1"),
        (["-i", "z=[1.0]"], "'z' is not an input of this signature"),
        (["-d", ROW, "--target", "h:1", "--rest", "http://h:2"], "either --target or --rest/--grpc"),
        (["-d", ROW, "--timeout", "soon"], "invalid duration 'soon'"),
        (["-d", ROW, "--rest", "http://h:1", "--grpc", "h:2"], "choose one with --protocol rest|grpc"),
        (["-d", ROW, "--rest", "http://h:1", "-p", "grpc"], "--rest is a rest address but --protocol is grpc"),
        (["-d", ROW, "--tls-cert", "c.pem"], "--tls-cert and --tls-key must be given together"),
        (["--examples", "[1", "-s", "classify_x_to_y"], "--examples: JSON Parse error"),
        (["-d", ROW, "-t", "http://127.0.0.1:99999"], "invalid port '99999' in target"),
        (["-d", ROW, "-t", "grpc://127.0.0.1:99999"], "invalid port '99999' in target"),
        (["-d", ROW, "-t", "127.0.0.1:abc"], "invalid port 'abc' in target"),
        (["-d", ROW, "-t", "http://[::1"], "invalid IPv6 address in target 'http://[::1'"),
        (["-d", ROW, "-t", ":8501"], "invalid target ':8501': no host name"),
        (["-d", ROW, "--rest", "http://127.0.0.1:99999"], "invalid port '99999' in target"),
        (["-d", ROW, "--grpc", "127.0.0.1:99999"], "invalid port '99999' in target"),
    ],
)
def test_usage_errors_exit_2_with_one_line(monkeypatch: pytest.MonkeyPatch, args: list[str], message: str) -> None:
    use_mock(monkeypatch)
    result = invoke("predict", "-m", "m", *args)
    assert result.exit_code == 2, result.stdout
    assert message in result.stderr and result.stderr.count("\n") == 1 and result.stdout == ""


def test_request_errors_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    use_mock(monkeypatch)
    missing = invoke("predict", "-m", "nope", "-d", ROW)
    assert missing.exit_code == 1
    assert missing.stderr == "ModelNotFound: Servable not found for request: Latest(nope)\n"
    bad = invoke("predict", "-m", "m", "-d", '{"instances": [["a"]]}')
    assert bad.exit_code == 1 and "is not of expected type: float" in bad.stderr


def test_rest_output_filter_is_client_side_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    transport = use_mock(monkeypatch)
    result = invoke("predict", "-m", "m", "-d", ROW, "--output-filter", "y")
    assert result.exit_code == 0 and result.stdout == PLAIN
    assert "REST API has no output filter" in result.stderr
    assert transport.calls[-1].request.output_filter == ("y",)
    unknown = invoke("predict", "-m", "m", "-d", ROW, "--output-filter", "z", "-q")
    assert unknown.exit_code == 1
    assert unknown.stderr == (
        "InvalidArgument: output tensor alias not found in signature: z Outputs expected to be in the set {y}.\n"
    )


def test_unreachable_server_exits_3() -> None:
    result = invoke("predict", "-m", "m", "-d", ROW, "--rest", f"http://127.0.0.1:{free_port()}")
    assert result.exit_code == 3
    assert (
        result.stderr.startswith("TransportError: cannot connect to http://127.0.0.1:")
        and result.stderr.count("\n") == 1
    )


# ------------------------------------------------------------------------------------- real server

PROTOCOLS = ["rest", "grpc"]
CASES = {
    "row": ["-d", ROW],
    "columnar": ["-i", "x=[[1.0], [5.0]]"],
    "classify": ["-s", "classify_x_to_y", "--examples", '[{"x": [1.0]}, {"x": [3.0]}]'],
    "regress": ["-s", "regress_x_to_y", "--examples", '[{"x": [4.0]}]'],
    "version": ["--version", "123", "-d", '{"inputs": {"x": [[0.5]]}}'],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rest_and_grpc_print_the_same_result(served: Served, case: str) -> None:
    outputs = {}
    for protocol in PROTOCOLS:
        for extra in ([], ["--json"]):
            result = invoke("predict", "-m", "half_plus_two", *served.args(protocol), *CASES[case], *extra)
            assert result.exit_code == 0, (protocol, result.stderr)
            outputs[protocol, bool(extra)] = result.stdout
    assert outputs["rest", False] == outputs["grpc", False]
    assert outputs["rest", True] == outputs["grpc", True]
    check_golden(f"predict_{case}.json", outputs["rest", True])


def test_errors_are_the_same_over_both_protocols(served: Served) -> None:
    """Same message and exit code; the label too, unless REST's status stands for several codes."""
    for args in (["-m", "nope", "-d", ROW], ["-m", "half_plus_two", "-d", '{"instances": [["a"]]}']):
        results = [invoke("predict", *args, *served.args(p)) for p in PROTOCOLS]
        assert [r.exit_code for r in results] == [1, 1]
        rest, grpc_ = (dict(zip(PROTOCOLS, results, strict=True))[p].stderr for p in ("rest", "grpc"))
        assert rest.split(": ", 1)[1] == grpc_.split(": ", 1)[1]
        assert rest == grpc_ or (rest.startswith("HTTP 400: ") and grpc_.startswith("InvalidArgument: "))


def test_grpc_output_filter_and_outdir(served: Served, tmp_path: Path) -> None:
    result = invoke(
        "predict",
        "-m",
        "half_plus_two",
        *served.args("grpc"),
        "-d",
        ROW,
        "--output-filter",
        "y",
        "--outdir",
        str(tmp_path),
    )
    assert result.exit_code == 0 and "REST API" not in result.stderr
    assert np.load(tmp_path / "y.npy").tolist() == [[2.5], [3.0]]


@pytest.mark.parametrize("key", ["../../evil", "a/b"])
def test_outdir_refuses_output_keys_that_are_not_file_names(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, key: str
) -> None:
    from mlsrv.client.transports import Call, Op
    from mlsrv.protocol.types import PredictResponse
    from tests.cli.client_cli import half_plus_two

    def odd_keys(call: Call) -> object:
        if call.op is Op.PREDICT:
            y = np.array([[2.5]], np.float32)
            return PredictResponse(call.request.spec, {"y": y, key: y})
        return half_plus_two(call)

    use_mock(monkeypatch, odd_keys)
    out = tmp_path / "a" / "out"
    result = invoke("predict", "-m", "m", "-d", '{"instances": [[1.0]]}', "--outdir", str(out))
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == (
        f"UsageError: output key {key!r} is not a plain file name, so it cannot be saved to --outdir (use --json)\n"
    )
    assert sorted(p.name for p in tmp_path.rglob("*.npy")) == []  # nothing written, not even y.npy


def test_outdir_with_a_folder_where_the_file_goes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    use_mock(monkeypatch)
    (tmp_path / "y.npy").mkdir()
    result = invoke("predict", "-m", "m", "-d", ROW, "--outdir", str(tmp_path), "--overwrite")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert f"cannot save to {tmp_path / 'y.npy'}: it exists and is not a file" in result.stderr


def test_a_rest_error_is_labelled_with_the_http_status_the_server_sent(served: Served) -> None:
    """HTTP 400 stands for several gRPC codes (INVALID_ARGUMENT, FAILED_PRECONDITION...): no guessing."""
    bad = invoke("predict", "-m", "half_plus_two", "--label", "nope", "-d", ROW, *served.args("rest"))
    assert bad.exit_code == 1 and bad.stderr == "HTTP 400: Unrecognized servable version label: nope\n", bad.stderr
    over_grpc = invoke("predict", "-m", "half_plus_two", "--label", "nope", "-d", ROW, *served.args("grpc"))
    assert over_grpc.stderr == "InvalidArgument: Unrecognized servable version label: nope\n"  # the code itself
    missing = invoke("predict", "-m", "nope", "-d", ROW, *served.args("rest"))  # 404 is NOT_FOUND only
    assert missing.stderr == "ModelNotFound: Servable not found for request: Latest(nope)\n"


def test_an_input_shape_the_signature_does_not_admit_is_sent_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    """TF Serving leaves shapes to the model (half_plus_two's (-1, 1) computes [1, 2] as well), so
    ``--input`` values are sent as given; a shape the signature does not admit gets a one-line note."""
    transport = use_mock(monkeypatch)
    flat = invoke("predict", "-m", "m", "-i", "[1.0, 2.0]")
    assert flat.exit_code == 0, flat.stderr
    assert flat.stderr.strip() == (
        "note: input 'x' has shape (2,); the signature says (-1, 1) (sent as given: the model decides)"
    )
    assert transport.calls[-1].request.inputs["x"].shape == (2,)
    admitted = invoke("predict", "-m", "m", "-i", "[[1.0], [2.0]]")
    assert admitted.exit_code == 0 and admitted.stderr == ""
    quiet = invoke("predict", "-m", "m", "-q", "-i", "[1.0, 2.0]")
    assert quiet.exit_code == 0 and quiet.stderr == ""
