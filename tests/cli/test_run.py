"""``mlsrv run`` on the bundled examples and TF Serving's reference model (loads TensorFlow)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from mlsrv.cli.app import app

pytestmark = pytest.mark.tf


@pytest.fixture(scope="module")
def half_plus_two(examples_dir: Path) -> str:
    return str(examples_dir / "half_plus_two" / "00000123")


def run(*args: str) -> Any:
    return CliRunner().invoke(app, ["run", *args])


def assert_one_line_error(result: Any, code: int, text: str) -> None:
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and text in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_input_exprs_prints_outputs(half_plus_two: str) -> None:
    result = run("--dir", half_plus_two, "--input_exprs", "x=np.array([[1.0],[5.0]])")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Result for output key y:\n[[2.5]\n [4.5]]\n"


def test_inputs_file_outdir_and_overwrite(half_plus_two: str, tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.array([[1.0], [5.0]], np.float32))
    args = ["--dir", half_plus_two, "--inputs", f"x={tmp_path / 'x.npy'}", "--outdir", str(tmp_path / "out")]
    first = run(*args)
    assert first.exit_code == 0, first.output
    saved = tmp_path / "out" / "y.npy"
    assert f"Output y is saved to {saved}" in first.stdout
    np.testing.assert_array_equal(np.load(saved), np.array([[2.5], [4.5]], np.float32))

    np.save(tmp_path / "x.npy", np.array([[3.0]], np.float32))
    assert_one_line_error(run(*args), 2, f"output file {saved} already exists; add --overwrite")
    np.testing.assert_array_equal(np.load(saved), [[2.5], [4.5]])  # untouched
    assert run(*args, "--overwrite").exit_code == 0
    np.testing.assert_array_equal(np.load(saved), [[3.5]])


def test_npz_inputs(half_plus_two: str, tmp_path: Path) -> None:
    np.savez(tmp_path / "one.npz", only=np.array([[2.0]], np.float32))
    np.savez(tmp_path / "two.npz", a=np.array([[4.0]], np.float32), b=np.array([[6.0]], np.float32))
    single = run("--dir", half_plus_two, "--inputs", f"x={tmp_path / 'one.npz'}", "--json")
    assert json.loads(single.stdout)["outputs"]["y"]["value"] == [[3.0]]
    picked = run("--dir", half_plus_two, "--inputs", f"x={tmp_path / 'two.npz'}[b]", "--json")
    assert json.loads(picked.stdout)["outputs"]["y"]["value"] == [[5.0]]
    ambiguous = run("--dir", half_plus_two, "--inputs", f"x={tmp_path / 'two.npz'}")
    assert_one_line_error(ambiguous, 2, "holds 2 arrays (a, b); pick one with")
    absent = run("--dir", half_plus_two, "--inputs", f"x={tmp_path / 'two.npz'}[c]")
    assert_one_line_error(absent, 2, "has no array named 'c'")
    assert_one_line_error(run("--dir", half_plus_two, "--inputs", "x=/no/such.npy"), 2, "file not found")


def test_pickled_inputs_are_refused(half_plus_two: str, tmp_path: Path) -> None:
    np.save(tmp_path / "obj.npy", np.array([[1.0]], dtype=object), allow_pickle=True)
    result = run("--dir", half_plus_two, "--inputs", f"x={tmp_path / 'obj.npy'}")
    assert_one_line_error(result, 2, "without pickle")


def test_input_examples_on_regress_signatures(half_plus_two: str, reference_dir: Path) -> None:
    examples = 'inputs=[{"x":[1.0]},{"x":[5.0]}]'
    ours = run("--dir", half_plus_two, "--signature_def", "regress_x_to_y2", "--input_examples", examples, "--json")
    assert ours.exit_code == 0, ours.output
    assert json.loads(ours.stdout)["outputs"]["outputs"]["value"] == [[3.5], [5.5]]
    reference = str(reference_dir / "saved_model_half_plus_two_cpu")  # a base path: newest version is used
    theirs = run("--dir", reference, "--signature_def", "regress_x_to_y", "--input_examples", examples)
    assert theirs.exit_code == 0, theirs.output
    assert theirs.stdout == "Result for output key outputs:\n[[2.5]\n [4.5]]\n"


def test_combined_options_and_json(examples_dir: Path) -> None:
    result = run(
        "--dir",
        str(examples_dir / "multi_io" / "1"),
        "--input_exprs",
        "a=[[1, 2], [0.5, 0.5]];b=np.array([3, -1])",
        "--input_exprs",  # the last occurrence wins, as with any option
        "a=[[1, 2], [0.5, 0.5]];b=np.array([3, -1]);c=['héllo', b'\\xff']",
        "--json",
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["signature_def"] == "serving_default" and document["saved"] == {}
    outputs = document["outputs"]
    assert list(outputs) == ["b_times_2", "c_len", "flag", "sum"]
    assert outputs["sum"] == {"dtype": "DT_DOUBLE", "shape": [2], "value": [6.0, 0.0]}
    assert outputs["b_times_2"]["value"] == [6, -2] and outputs["flag"]["value"] == [True, False]
    assert outputs["c_len"] == {"dtype": "DT_INT32", "shape": [2], "value": [6, 1]}


def test_string_outputs(examples_dir: Path) -> None:
    args = ["--dir", str(examples_dir / "string_input" / "1"), "--input_exprs", "text=['abc', b'\\xff']"]
    text = run(*args)
    assert "Result for output key upper_bytes:\n[b'ABC' b'\\xff']\n" in text.stdout
    document = json.loads(run(*args, "--json").stdout)
    assert document["outputs"]["upper_bytes"]["value"] == ["ABC", {"b64": "/w=="}]


@pytest.mark.parametrize(
    ("exprs", "message"),
    [
        ("y=[[1.0]]", '"y" is not a valid input key; choose from "x"'),
        ("x=[1.0]", "input 'x': expected shape (-1, 1), got (1,)"),
        ("x=[[1.0, 2.0]]", "input 'x': expected shape (-1, 1), got (1, 2)"),
        ("x=[['a']]", "input 'x': cannot convert <U1 values to DT_FLOAT"),
        ("x=[[1.0], [2.0, 3.0]]", "not a rectangular array"),
    ],
)
def test_inputs_are_checked_against_the_signature(half_plus_two: str, exprs: str, message: str) -> None:
    assert_one_line_error(run("--dir", half_plus_two, "--input_exprs", exprs), 2, message)


def test_dtype_and_range_checks(examples_dir: Path) -> None:
    model = str(examples_dir / "multi_io" / "1")
    base = "a=[[1.0, 2.0]];c=['x'];"
    assert_one_line_error(run("--dir", model, "--input_exprs", base + "b=[1.5]"), 2, "cannot convert float64")
    assert run("--dir", model, "--input_exprs", base + "b=np.array([1], dtype=np.uint64)").exit_code == 0
    too_big = base + f"b=np.array([{2**63}], dtype=np.uint64)"
    assert_one_line_error(run("--dir", model, "--input_exprs", too_big), 2, "values out of range for DT_INT64")
    assert_one_line_error(run("--dir", model, "--input_exprs", "a=[[1.0, 2.0]];b=[1];c=[1]"), 2, "is DT_STRING")
    assert_one_line_error(run("--dir", model, "--input_exprs", "a=[[1.0, 2.0]];b=[1]"), 2, "missing input(s)")


def test_option_errors(half_plus_two: str, tmp_path: Path) -> None:
    assert_one_line_error(run("--dir", half_plus_two), 2, "at least one of --inputs, --input_exprs or --input_examples")
    np.save(tmp_path / "x.npy", np.ones((1, 1), np.float32))
    both = run("--dir", half_plus_two, "--inputs", f"x={tmp_path / 'x.npy'}", "--input_exprs", "x=[[1.0]]")
    assert_one_line_error(both, 2, "input key 'x' is given by both --inputs and --input_exprs")
    unknown = run("--dir", half_plus_two, "--signature_def", "nope", "--input_exprs", "x=[[1.0]]")
    assert_one_line_error(unknown, 2, "signature_def 'nope' not found")
    assert_one_line_error(run("--dir", half_plus_two, "--tag_set", "gpu", "--input_exprs", "x=[[1.0]]"), 2, "'gpu'")


def test_model_errors_are_one_line_with_exit_code_1(half_plus_two: str) -> None:
    args = ["--dir", half_plus_two, "--signature_def", "classify_x_to_y", "--input_exprs", "inputs=['junk']"]
    result = run(*args)
    assert_one_line_error(result, 1, "InvalidArgument: Name: <unknown>, Feature: x (data type: float) is required")
    assert "{{node ParseExample/ParseExampleV2}}]]" in result.stderr  # TF's two lines, joined


def build_tf1_model(folder: Path, output_keys: list[str]) -> str:
    """A tiny TF1 SavedModel (tags serve) whose serving_default outputs ``x + 1`` under each of ``output_keys``."""
    import tensorflow as tf

    v1 = tf.compat.v1
    with tf.Graph().as_default() as graph, v1.Session(graph=graph) as session:
        x = v1.placeholder(tf.float32, [None, 1], name="x")
        y = tf.add(x, 1.0, name="y")
        signature = v1.saved_model.signature_def_utils.predict_signature_def({"x": x}, dict.fromkeys(output_keys, y))
        builder = v1.saved_model.Builder(str(folder))
        builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={"serving_default": signature})
        builder.save()
    return str(folder)


@pytest.mark.parametrize("key", ["../../evil", "a/b", "back\\slash"])
def test_outdir_refuses_output_keys_that_are_not_file_names(tmp_path: Path, key: str) -> None:
    model = build_tf1_model(tmp_path / "model", ["ok", key])
    out = tmp_path / "deep" / "er" / "out"
    result = run("--dir", model, "--input_exprs", "x=[[1.0]]", "--outdir", str(out))
    assert_one_line_error(result, 2, f"output key {key!r} is not a plain file name")
    assert not (tmp_path / "evil.npy").exists() and not (tmp_path / "deep" / "evil.npy").exists()
    assert not out.exists()  # refused before anything was written (or created)
    document = json.loads(run("--dir", model, "--input_exprs", "x=[[1.0]]", "--json").stdout)
    assert document["outputs"][key]["value"] == [[2.0]]  # --json still works for such models


def test_outdir_with_a_folder_where_the_file_goes(half_plus_two: str, tmp_path: Path) -> None:
    (tmp_path / "y.npy").mkdir()
    args = ["--dir", half_plus_two, "--input_exprs", "x=[[1.0]]", "--outdir", str(tmp_path)]
    assert_one_line_error(run(*args, "--overwrite"), 2, f"cannot save to {tmp_path / 'y.npy'}: it exists and is not")


def test_outdir_write_errors_are_one_line(half_plus_two: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", full_disk)
    result = run("--dir", half_plus_two, "--input_exprs", "x=[[1.0]]", "--outdir", str(tmp_path))
    assert_one_line_error(result, 2, f"cannot write {tmp_path / 'y.npy'}: No space left on device")


def test_json_is_strict_for_non_finite_values(half_plus_two: str) -> None:
    result = run("--dir", half_plus_two, "--input_exprs", "x=[[1e400], [1.0], [-1e400]]", "--json")
    assert result.exit_code == 0, result.output
    assert "Infinity" in result.stdout

    def refuse(token: str) -> None:
        raise AssertionError(f"bare {token} in --json output")

    document = json.loads(result.stdout, parse_constant=refuse)
    assert document["outputs"]["y"]["value"] == [["Infinity"], [2.5], ["-Infinity"]]


def test_absl_boolean_spellings(half_plus_two: str, tmp_path: Path) -> None:
    args = ["--dir", half_plus_two, "--input_exprs", "x=[[1.0]]", "--outdir", str(tmp_path)]
    assert run(*args).exit_code == 0
    assert_one_line_error(run(*args, "--overwrite=false"), 2, "add --overwrite")
    assert_one_line_error(run(*args, "--overwrite", "--nooverwrite"), 2, "add --overwrite")
    assert run(*args, "--overwrite=true").exit_code == 0
    assert run(*args, "--nooverwrite", "--overwrite").exit_code == 0
    assert_one_line_error(run(*args, "--overwrite=perhaps"), 2, "Illegal value 'perhaps' specified for bool flag")


def test_no_tensorflow_log_lines_on_stderr(half_plus_two: str) -> None:
    """TF logs ``E0000 ... failed call to cuInit`` on machines without a GPU; ``mlsrv run`` keeps it quiet."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    code = "from mlsrv.cli.app import main; main()"
    command = [sys.executable, "-c", code, "run", "--dir", half_plus_two, "--input_exprs", "x=[[1.0]]"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout == "Result for output key y:\n[[2.5]]\n"
    assert result.stderr == ""


def test_tf_debug_is_accepted_and_says_in_one_line_why_it_is_not_available(half_plus_two: str) -> None:
    assert_one_line_error(run("--dir", half_plus_two, "--input_exprs", "x=[[1.0]]", "--tf_debug"), 2,
                          "--tf_debug is not available: the TensorFlow debugger it opens (tfdbg v1) fails")
