"""render.py: the terminal (Rich) and piped (saved_model_cli) layouts and the JSON helpers, without TF."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from mlsrv.cli import render
from mlsrv.cli.app import app
from mlsrv.cli.runner import fail
from mlsrv.errors import UsageError
from mlsrv.protocol.types import SignatureInfo, TensorInfo

SIGNATURES = {
    "serving_default": SignatureInfo(
        inputs={"x": TensorInfo("x:0", "DT_FLOAT", (-1, 1)), "[b]": TensorInfo("b:0", "DT_STRING", None)},
        outputs={"y": TensorInfo("y:0", "DT_FLOAT", (), has_shape=False)},
    ),
    "__saved_model_init_op": SignatureInfo(
        inputs={}, outputs={"__saved_model_init_op": TensorInfo("NoOp", "DT_INVALID", None)}, method_name=""
    ),
}


def console(terminal: bool) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=terminal, width=200, highlight=False, soft_wrap=True), buffer


def test_plain_layout_is_saved_model_clis() -> None:
    out, buffer = console(terminal=False)
    render.render_signatures(out, SIGNATURES)
    text = buffer.getvalue()
    assert text.index("signature_def['__saved_model_init_op']:") < text.index("signature_def['serving_default']:")
    assert (
        "\nsignature_def['serving_default']:\n"
        "  The given SavedModel SignatureDef contains the following input(s):\n"
        "    inputs['[b]'] tensor_info:\n"
        "        dtype: DT_STRING\n"
        "        shape: unknown_rank\n"
        "        name: b:0\n"
        "    inputs['x'] tensor_info:\n"
        "        dtype: DT_FLOAT\n"
        "        shape: (-1, 1)\n"
        "        name: x:0\n"
        "  The given SavedModel SignatureDef contains the following output(s):\n"
        "    outputs['y'] tensor_info:\n"
        "        dtype: DT_FLOAT\n"
        "        shape: ()\n"
        "        name: y:0\n"
        "  Method name is: tensorflow/serving/predict\n"
    ) in text
    assert "\x1b[" not in text


def test_terminal_layout_is_a_table_per_signature() -> None:
    out, buffer = console(terminal=True)
    render.render_signatures(out, SIGNATURES)
    text = buffer.getvalue()
    assert "\x1b[" in text  # styled
    for cell in ("signature_def['serving_default']", "tensorflow/serving/predict", "[b]", "unknown_rank", "(-1, 1)"):
        assert cell in text
    assert "The given SavedModel SignatureDef" not in text


def test_shape_text() -> None:
    assert render.shape_text(TensorInfo("a", "DT_FLOAT", (-1,))) == "(-1)"
    assert render.shape_text(TensorInfo("a", "DT_FLOAT", None)) == "unknown_rank"
    assert render.shape_text(TensorInfo("a", "DT_FLOAT", None, has_shape=False)) == "()"


def test_signature_json() -> None:
    document = render.signatures_to_json(SIGNATURES)
    assert list(document) == ["__saved_model_init_op", "serving_default"]
    assert document["serving_default"]["inputs"] == {
        "[b]": {"dtype": "DT_STRING", "shape": None, "name": "b:0"},
        "x": {"dtype": "DT_FLOAT", "shape": [-1, 1], "name": "x:0"},
    }
    assert document["serving_default"]["outputs"]["y"]["shape"] is None
    assert document["__saved_model_init_op"]["method_name"] == ""


def test_tensor_json() -> None:
    strings = np.array([[b"a", "é".encode()], [b"\xff", b""]], dtype=object)
    assert render.tensor_to_json(strings) == {
        "dtype": "DT_STRING",
        "shape": [2, 2],
        "value": [["a", "é"], [{"b64": "/w=="}, ""]],
    }
    assert render.tensor_to_json(np.array(b"x", dtype=object))["value"] == "x"
    assert render.tensor_to_json(np.array([1 + 2j], np.complex64))["value"] == [[1.0, 2.0]]
    assert render.tensor_to_json(np.array([True]))["value"] == [True]
    value = render.tensor_to_json(np.array([np.nan], np.float32))["value"][0]
    assert math.isnan(value)


def test_print_json_is_plain_even_on_a_terminal() -> None:
    out, buffer = console(terminal=True)
    render.print_json(out, {"a": [1, 2.5], "b": "[red]x[/]"})
    assert buffer.getvalue() == '{\n  "a": [\n    1,\n    2.5\n  ],\n  "b": "[red]x[/]"\n}\n'


def test_print_json_is_strict_json() -> None:
    out, buffer = console(terminal=False)
    nested = {"x": [[float("nan"), float("inf")], (float("-inf"), 1.0)], "s": "NaN", "i": 3}
    render.print_json(out, nested)

    def refuse(token: str) -> None:
        raise AssertionError(f"bare {token}")

    assert json.loads(buffer.getvalue(), parse_constant=refuse) == {
        "x": [["NaN", "Infinity"], ["-Infinity", 1.0]],
        "s": "NaN",
        "i": 3,
    }
    array = render.tensor_to_json(np.array([np.nan, -np.inf, 0.5], np.float32))
    assert render.strict_json(array)["value"] == ["NaN", "-Infinity", 0.5]


def test_tensors_and_markup_escaping() -> None:
    out, buffer = console(terminal=False)
    render.render_tensors(out, {"[bold]y": np.array([[2.5], [4.5]], np.float32)})
    assert buffer.getvalue() == "Result for output key [bold]y:\n[[2.5]\n [4.5]]\n"


def test_user_and_server_text_is_never_markup_or_emoji(capsys: pytest.CaptureFixture[str]) -> None:
    render.render_tensors(render.make_console(), {":smile: [b]y[/b]": np.array([1.0])})
    assert capsys.readouterr().out == "Result for output key :smile: [b]y[/b]:\n[1.]\n"


@pytest.mark.parametrize(
    "message",
    [
        "--inputs x: two.npz holds 2 arrays (a, b); pick one with x=two.npz[name]",
        "a closing tag [/] and [/red] and [bold]",
        "an :abc: and :smile: code",
        "ends with a backslash \\",
    ],
)
def test_fail_prints_the_message_literally(capsys: pytest.CaptureFixture[str], message: str) -> None:
    with pytest.raises(typer.Exit) as raised:
        fail(UsageError(message))
    assert raised.value.exit_code == 2
    assert capsys.readouterr().err == f"UsageError: {message}\n"


def test_cli_error_with_brackets_keeps_them(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", "--dir", str(tmp_path / "[x]"), "--input_exprs", "x=[[1.0]]"])
    assert result.exit_code == 2
    assert result.stderr == f"UsageError: SavedModel directory does not exist: {tmp_path / '[x]'}\n"


def test_output_files_refuses_path_like_keys(tmp_path: Path) -> None:
    assert render.output_files(tmp_path, ["y", "..", ".hidden"], False) == {
        "..": tmp_path / "...npy",
        ".hidden": tmp_path / ".hidden.npy",
        "y": tmp_path / "y.npy",
    }
    for key in ("../x", "a/b", "a\\b", "", "nul\0"):
        with pytest.raises(UsageError, match="is not a plain file name"):
            render.output_files(tmp_path, ["y", key], True)


def test_keys_print_literally_in_every_layout(capsys: pytest.CaptureFixture[str]) -> None:
    out = render.make_console()
    render.render_signature_keys(out, ["a\\", ":smile:", "[b]c"])
    render.render_ops(out, ["serve", ":x:"], ["[Op]"])
    assert capsys.readouterr().out == (
        "The given SavedModel MetaGraphDef contains SignatureDefs with the following keys:\n"
        'SignatureDef key: ":smile:"\nSignatureDef key: "[b]c"\nSignatureDef key: "a\\"\n'
        "The MetaGraph with tag set ['serve', ':x:'] contains the following ops: {'[Op]'}\n"
    )
    terminal, buffer = console(terminal=True)
    terminal.print(render.signature_table("k\\", SIGNATURES["serving_default"]))
    assert "signature_def['k\\\\']" in buffer.getvalue() and "[b]" in buffer.getvalue()
