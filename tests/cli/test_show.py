"""``mlsrv show``: saved_model_cli's output and flags, base paths with versions, --json, one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mlsrv.cli.app import app

REFERENCE_MODEL = "saved_model_half_plus_two_cpu/00000123"

# What saved_model_cli 2.21 prints for two of the reference model's signatures (`show --all`).
SAVED_MODEL_CLI_CLASSIFY = """
signature_def['classify_x_to_y']:
  The given SavedModel SignatureDef contains the following input(s):
    inputs['inputs'] tensor_info:
        dtype: DT_STRING
        shape: unknown_rank
        name: tf_example:0
  The given SavedModel SignatureDef contains the following output(s):
    outputs['scores'] tensor_info:
        dtype: DT_FLOAT
        shape: (-1, 1)
        name: y:0
  Method name is: tensorflow/serving/classify
"""
SAVED_MODEL_CLI_SERVING_DEFAULT = """
signature_def['serving_default']:
  The given SavedModel SignatureDef contains the following input(s):
    inputs['x'] tensor_info:
        dtype: DT_FLOAT
        shape: (-1, 1)
        name: x:0
  The given SavedModel SignatureDef contains the following output(s):
    outputs['y'] tensor_info:
        dtype: DT_FLOAT
        shape: (-1, 1)
        name: y:0
  Method name is: tensorflow/serving/predict
The MetaGraph with tag set ['serve'] contains the following ops: {"""


def show(*args: str) -> Any:
    return CliRunner().invoke(app, ["show", *args])


def assert_one_line_error(result: Any, code: int, text: str) -> None:
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and text in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------------------------------- no TF needed


def test_missing_folder_and_folder_without_model(tmp_path: Path) -> None:
    assert_one_line_error(show("--dir", str(tmp_path / "nope")), 2, "SavedModel directory does not exist")
    assert_one_line_error(show("--dir", str(tmp_path)), 2, "no SavedModel in")
    (tmp_path / "7").mkdir()  # a numeric folder without saved_model.pb is no version
    assert_one_line_error(show("--dir", str(tmp_path)), 2, "no numeric version folders")


def test_signature_def_needs_tag_set(examples_dir: Path) -> None:
    result = show("--dir", str(examples_dir / "half_plus_two"), "--signature_def", "serving_default")
    assert_one_line_error(result, 2, "--signature_def needs --tag_set")


def test_help_does_not_import_tensorflow() -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from mlsrv.cli.app import app\n"
        "for cmd in ('show', 'run'):\n"
        "    assert CliRunner().invoke(app, [cmd, '--help']).exit_code == 0\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ------------------------------------------------------------------------------------------- reading models


@pytest.mark.tf
def test_all_on_reference_model_matches_saved_model_cli(reference_dir: Path) -> None:
    result = show("--dir", str(reference_dir / REFERENCE_MODEL), "--all")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("\nMetaGraphDef with tag-set: 'serve' contains the following SignatureDefs:\n")
    assert SAVED_MODEL_CLI_CLASSIFY in out and SAVED_MODEL_CLI_SERVING_DEFAULT in out
    for key in ("classify_x_to_y", "regress_x2_to_y3", "regress_x_to_y", "regress_x_to_y2", "serving_default"):
        assert f"signature_def['{key}']:" in out
    assert "'ParseExample'" in out


@pytest.mark.tf
def test_json_all_has_what_tf_serving_metadata_has(reference_dir: Path) -> None:
    result = show("--dir", str(reference_dir / REFERENCE_MODEL), "--all", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["version"] is None and document["versions"] == []
    (meta_graph,) = document["meta_graphs"]
    assert meta_graph["tags"] == ["serve"] and "ParseExample" in meta_graph["ops"]
    metadata = json.loads((reference_dir / "half_plus_two_model_metadata.json").read_text())
    expected = metadata["metadata"]["signature_def"]["signature_def"]
    assert sorted(meta_graph["signature_defs"]) == sorted(expected)
    for key, signature in expected.items():
        ours = meta_graph["signature_defs"][key]
        assert ours["method_name"] == signature["method_name"]
        for kind in ("inputs", "outputs"):
            for name, tensor in signature[kind].items():
                shape = tensor["tensor_shape"]
                dims = None if shape["unknown_rank"] else [int(d["size"]) for d in shape["dim"]]
                assert ours[kind][name] == {"dtype": tensor["dtype"], "shape": dims, "name": tensor["name"]}


@pytest.mark.tf
def test_saved_model_cli_flag_semantics(reference_dir: Path) -> None:
    model = str(reference_dir / REFERENCE_MODEL)
    assert show("--dir", model).stdout == "The given SavedModel contains the following tag-sets:\n'serve'\n"
    keys = show("--dir", model, "--tag_set", "serve").stdout
    assert keys.splitlines()[0] == "The given SavedModel MetaGraphDef contains SignatureDefs with the following keys:"
    assert 'SignatureDef key: "regress_x2_to_y3"' in keys
    one = show("--dir", model, "--tag_set", "serve", "--signature_def", "classify_x_to_y").stdout
    assert one == "\n".join(line[2:] for line in SAVED_MODEL_CLI_CLASSIFY.strip().splitlines()[1:]) + "\n"
    ops = show("--dir", model, "--tag_set", "serve", "--list_ops").stdout
    assert ops.startswith("The MetaGraph with tag set ['serve'] contains the following ops: {'Add', ")
    assert 'SignatureDef key: "serving_default"' in ops
    no_tags = show("--dir", model, "--list_ops")
    assert "--list_ops must be paired with a tag-set or with --all." in no_tags.stderr
    assert "'serve'" in no_tags.stdout


@pytest.mark.tf
def test_unknown_tag_set_and_signature(reference_dir: Path) -> None:
    model = str(reference_dir / REFERENCE_MODEL)
    assert_one_line_error(show("--dir", model, "--tag_set", "gpu"), 2, "tag-set 'gpu' could not be found")
    result = show("--dir", model, "--tag_set", "serve", "--signature_def", "nope")
    assert_one_line_error(result, 2, "signature_def 'nope' not found in MetaGraphDef with tag-set 'serve'")
    result = show("--dir", model, "--json", "--tag_set", "serve", "--signature_def", "nope")
    assert_one_line_error(result, 2, "available: classify_x_to_y, regress_x2_to_y3")


@pytest.mark.tf
def test_corrupt_saved_model(tmp_path: Path) -> None:
    (tmp_path / "saved_model.pb").write_bytes(b"\x0a\xff\xff\xff not a proto")
    assert_one_line_error(show("--dir", str(tmp_path)), 2, "cannot parse")


@pytest.mark.tf
@pytest.mark.parametrize("name", ["half_plus_two", "mlp_classifier", "string_input", "multi_io", "slow"])
def test_every_bundled_example(examples_dir: Path, name: str) -> None:
    result = show("--dir", str(examples_dir / name), "--all", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["version"] == document["versions"][-1]
    signatures = document["meta_graphs"][0]["signature_defs"]
    assert "serving_default" in signatures and "__saved_model_init_op" in signatures


@pytest.mark.tf
def test_bundled_half_plus_two_signatures(examples_dir: Path) -> None:
    document = json.loads(show("--dir", str(examples_dir / "half_plus_two"), "--tag_set", "serve", "--json").stdout)
    signatures = document["meta_graphs"][0]["signature_defs"]
    assert signatures["classify_x_to_y"]["method_name"] == "tensorflow/serving/classify"
    assert signatures["regress_x_to_y"]["method_name"] == "tensorflow/serving/regress"
    assert signatures["regress_x_to_y2"]["method_name"] == "tensorflow/serving/regress"
    assert signatures["classify_x_to_y"]["inputs"]["inputs"] == {
        "dtype": "DT_STRING",
        "shape": [-1],
        "name": "classify_x_to_y_inputs:0",
    }
    assert "ops" not in document["meta_graphs"][0]


@pytest.mark.tf
def test_base_path_lists_versions_and_picks_newest(tmp_path: Path, examples_dir: Path) -> None:
    for version in ("3", "20"):
        shutil.copytree(examples_dir / "half_plus_two" / "00000123", tmp_path / version)
    (tmp_path / "100").mkdir()  # no saved_model.pb: not a version
    (tmp_path / "notes").mkdir()
    text = show("--dir", str(tmp_path), "--tag_set", "serve")
    assert text.stdout.startswith(f"Versions: 3, 20 (showing 20: {tmp_path / '20'})\n\n")
    document = json.loads(show("--dir", str(tmp_path), "--json", "--version", "3").stdout)
    assert (document["version"], document["versions"], document["path"]) == (3, [3, 20], str(tmp_path / "3"))
    assert_one_line_error(show("--dir", str(tmp_path), "--version", "4"), 2, "version 4 not found")
    result = show("--dir", str(tmp_path / "3"), "--version", "3")
    assert_one_line_error(result, 2, "--version needs a model base path")


# ------------------------------------------------------------------------------------------- concrete functions


def saved_model_cli_show_all(model: Path) -> str:
    """What ``saved_model_cli show --dir MODEL --all`` prints (run in this process), its op sets sorted."""
    import contextlib
    import io
    import re

    from tensorflow.python.tools import saved_model_cli

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        saved_model_cli._show_all(str(model))

    def sort_ops(match: re.Match[str]) -> str:  # a Python set, printed in hash order; mlsrv sorts it
        return match.group(1) + "{" + ", ".join(sorted(match.group(2).split(", "))) + "}"

    return re.sub(r"(contains the following ops: )\{(.*)\}", sort_ops, buffer.getvalue())


@pytest.mark.tf
@pytest.mark.parametrize("name", ["half_plus_two", "mlp_classifier", "string_input", "multi_io", "slow"])
def test_all_matches_saved_model_cli_byte_for_byte(examples_dir: Path, name: str) -> None:
    model = max((examples_dir / name).iterdir())
    result = show("--dir", str(model), "--all")
    assert result.exit_code == 0, result.output
    expected = saved_model_cli_show_all(model)
    assert "\nConcrete Functions:\n  Function Name: " in expected
    assert result.stdout == expected


@pytest.mark.tf
def test_all_on_tf2_reference_model_matches_saved_model_cli(reference_dir: Path) -> None:
    model = reference_dir / "saved_model_half_plus_two_tf2_cpu" / "00000123"
    result = show("--dir", str(model), "--all")
    assert result.exit_code == 0, result.output
    assert result.stdout == saved_model_cli_show_all(model)
    assert result.stdout.endswith(
        "\n  Function Name: 'regress_xy2'\n    Option #1\n      Callable with:\n        Argument #1\n"
        "          inputs: TensorSpec(shape=(None,), dtype=tf.string, name='inputs')\n"
    )


@pytest.mark.tf
def test_tf1_models_have_no_concrete_functions(reference_dir: Path) -> None:
    model = reference_dir / REFERENCE_MODEL
    assert "Concrete Functions" not in show("--dir", str(model), "--all").stdout
    document = json.loads(show("--dir", str(model), "--all", "--json").stdout)
    assert document["concrete_functions"] is None and document["concrete_functions_error"] is None


@pytest.mark.tf
def test_json_all_lists_concrete_functions(examples_dir: Path) -> None:
    document = json.loads(show("--dir", str(examples_dir / "multi_io"), "--all", "--json").stdout)
    assert document["concrete_functions_error"] is None
    assert document["concrete_functions"] == [
        {
            "name": "predict",
            "options": [
                {
                    "arguments": [
                        {"kind": "TensorSpec", "name": "a", "dtype": "DT_FLOAT", "shape": [-1, 2]},
                        {"kind": "TensorSpec", "name": "b", "dtype": "DT_INT64", "shape": [-1]},
                        {"kind": "TensorSpec", "name": "c", "dtype": "DT_STRING", "shape": [-1]},
                    ],
                    "named_arguments": {},
                }
            ],
        }
    ]
    without_all = json.loads(show("--dir", str(examples_dir / "multi_io"), "--json").stdout)
    assert "concrete_functions" not in without_all


@pytest.mark.tf
def test_absl_boolean_spellings(reference_dir: Path) -> None:
    model = str(reference_dir / REFERENCE_MODEL)
    everything = show("--dir", model, "--all").stdout
    assert everything.startswith("\nMetaGraphDef with tag-set: 'serve'")
    for spelling in (["--all=true"], ["--all=1"], ["--noall", "--all"], ["--all=True"]):
        assert show("--dir", model, *spelling).stdout == everything, spelling
    tag_sets = "The given SavedModel contains the following tag-sets:\n'serve'\n"
    for spelling in (["--all=false"], ["--noall"], ["--all", "--noall"], ["--all", "--all=0"]):
        assert show("--dir", model, *spelling).stdout == tag_sets, spelling
    with_ops = show("--dir", model, "--tag_set", "serve", "--list_ops=true").stdout
    assert "contains the following ops" in with_ops
    assert "contains the following ops" not in show("--dir", model, "--tag_set", "serve", "--nolist_ops").stdout
    assert "contains the following ops" in show("--dir", model, "--tag_set", "serve", "--list-ops=yes").stdout


def test_bad_absl_boolean_is_a_one_line_usage_error(tmp_path: Path) -> None:
    assert_one_line_error(show("--dir", str(tmp_path), "--all=sometimes"), 2, "Illegal value 'sometimes'")
    # a value that merely looks like a flag is left alone
    assert_one_line_error(show("--dir", "--all=true"), 2, "SavedModel directory does not exist: --all=true")
