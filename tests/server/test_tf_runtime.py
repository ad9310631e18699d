"""tf_runtime against real SavedModels: TF Serving's TF1 reference model and the bundled TF2 examples."""

from __future__ import annotations

import gc
import json
import logging
import shutil
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from mlsrv.errors import InvalidArgument, LoadError, UsageError
from mlsrv.protocol.types import CLASSIFY_METHOD, PREDICT_METHOD, REGRESS_METHOD, SignatureInfo, TensorInfo
from mlsrv.server import tf_runtime, tf_session

pytestmark = pytest.mark.tf


HALF_PLUS_TWO_TF1 = "saved_model_half_plus_two_cpu/00000123"


def example(**features: list[float]) -> bytes:
    feature = {k: tf.train.Feature(float_list=tf.train.FloatList(value=v)) for k, v in features.items()}
    return bytes(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


def examples(*xs: float) -> np.ndarray:
    return np.array([example(x=[x]) for x in xs], dtype=object)


@pytest.fixture(scope="module")
def tf1_model(reference_dir: Path) -> Iterator[Any]:
    loader = tf_session.SavedModelLoader(str(reference_dir / HALF_PLUS_TWO_TF1))
    yield loader.load()
    loader.unload()


@pytest.fixture(scope="module")
def half_plus_two(examples_dir: Path) -> Iterator[Any]:
    loader = tf_session.SavedModelLoader(str(examples_dir / "half_plus_two" / "00000123"))
    yield loader.load()
    loader.unload()


def _metadata_signatures(path: Path) -> dict[str, SignatureInfo]:
    """TF Serving's GetModelMetadata JSON as protocol types (what inspect must produce)."""

    def tensor(t: dict[str, Any]) -> TensorInfo:
        shape = t["tensor_shape"]
        dims = None if shape["unknown_rank"] else tuple(int(d["size"]) for d in shape["dim"])
        return TensorInfo(name=t["name"], dtype=t["dtype"], shape=dims)

    defs = json.loads(path.read_text())["metadata"]["signature_def"]["signature_def"]
    return {
        key: SignatureInfo(
            inputs={k: tensor(v) for k, v in sig["inputs"].items()},
            outputs={k: tensor(v) for k, v in sig["outputs"].items()},
            method_name=sig["method_name"],
        )
        for key, sig in defs.items()
    }


# ------------------------------------------------------------------------------------------- inspect


def test_inspect_matches_tf_serving_metadata(reference_dir: Path) -> None:
    info = tf_runtime.inspect_saved_model(str(reference_dir / HALF_PLUS_TWO_TF1))
    assert info.tag_sets == [("serve",)]
    expected = _metadata_signatures(reference_dir / "half_plus_two_model_metadata.json")
    assert dict(info.meta_graph("serve").signatures) == expected
    assert {"ParseExample", "Mul", "Add"} <= set(info.meta_graphs[0].ops)


def test_inspect_bundled_example_signatures_and_ops(examples_dir: Path) -> None:
    meta_graph = tf_runtime.inspect_saved_model(str(examples_dir / "half_plus_two" / "00000123")).meta_graph("serve")
    signatures = meta_graph.signatures
    assert list(signatures) == sorted(signatures)
    assert signatures["__saved_model_init_op"].method_name == ""
    assert signatures["serving_default"].inputs["x"] == TensorInfo("serving_default_x:0", "DT_FLOAT", (-1, 1))
    assert signatures["classify_x_to_y"].method_name == CLASSIFY_METHOD
    assert signatures["regress_x_to_y"].method_name == REGRESS_METHOD
    assert signatures["regress_x_to_y2"].method_name == REGRESS_METHOD
    assert signatures["classify_x_to_y"].inputs["inputs"].dtype == "DT_STRING"
    # ops inside called functions are listed; the function names themselves are not
    assert {"ParseExampleV2", "Mul", "AddV2"} <= set(meta_graph.ops)
    assert not [op for op in meta_graph.ops if op.startswith("__inference")]


def test_inspect_reads_pbtxt(tmp_path: Path, reference_dir: Path) -> None:
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel.FromString((reference_dir / HALF_PLUS_TWO_TF1 / "saved_model.pb").read_bytes())
    (tmp_path / "saved_model.pbtxt").write_text(text_format.MessageToString(proto))
    info = tf_runtime.inspect_saved_model(str(tmp_path))
    assert "regress_x2_to_y3" in info.meta_graph("serve").signatures


def _with_file(name: str, data: bytes, result: str = "") -> Any:
    def setup(folder: Path) -> Path:
        (folder / name).write_bytes(data)
        return folder / result

    return setup


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: p / "missing", "SavedModel directory does not exist"),
        (_with_file("file", b"x", "file"), "not a directory"),
        (lambda p: p, "no SavedModel in"),
        (_with_file("saved_model.pb", b"\xff\xff garbage"), "cannot parse"),
        (_with_file("saved_model.pbtxt", b"meta_graphs {{"), "cannot parse"),
        (_with_file("saved_model.pb", b""), "contains no MetaGraphDef"),
    ],
)
def test_inspect_errors_are_one_line_usage_errors(tmp_path: Path, setup: Any, message: str) -> None:
    with pytest.raises(UsageError) as raised:
        tf_runtime.inspect_saved_model(str(setup(tmp_path)))
    assert message in raised.value.message
    assert "\n" not in raised.value.message


def test_unknown_tag_set_lists_available(reference_dir: Path) -> None:
    info = tf_runtime.inspect_saved_model(str(reference_dir / HALF_PLUS_TWO_TF1))
    assert info.meta_graph(" serve ,").tags == ("serve",)
    with pytest.raises(UsageError, match="tag-set 'serve,gpu' could not be found.*available tag-sets: 'serve'"):
        info.meta_graph("serve,gpu")
    with pytest.raises(UsageError, match="at least one"):
        info.meta_graph(" , ")


# ------------------------------------------------------------------------------------------- run: TF1 model


def test_tf1_reference_signatures_match_inspect(tf1_model: Any, reference_dir: Path) -> None:
    expected = tf_runtime.inspect_saved_model(str(reference_dir / HALF_PLUS_TWO_TF1)).meta_graph("serve")
    assert tf1_model.signatures() == expected.signatures
    assert tf1_model.signatures()["serving_default"].method_name == PREDICT_METHOD


def test_tf1_reference_predict_classify_regress(tf1_model: Any) -> None:
    out = tf1_model.run("serving_default", {"x": np.array([[1.0], [5.0]], np.float32)})
    np.testing.assert_array_equal(out["y"], [[2.5], [4.5]])
    assert out["y"].dtype == np.float32
    np.testing.assert_array_equal(
        tf1_model.run("classify_x_to_y", {"inputs": examples(1.0, 5.0)})["scores"], [[2.5], [4.5]]
    )
    np.testing.assert_array_equal(tf1_model.run("regress_x_to_y", {"inputs": examples(2.0)})["outputs"], [[3.0]])
    np.testing.assert_array_equal(tf1_model.run("regress_x_to_y2", {"inputs": examples(2.0)})["outputs"], [[4.0]])
    np.testing.assert_array_equal(
        tf1_model.run("regress_x2_to_y3", {"inputs": np.array([[2.0]], np.float32)})["outputs"], [[4.0]]
    )


def test_serialize_examples_feed_the_classify_signature(tf1_model: Any) -> None:
    serialized = tf_runtime.serialize_examples([{"x": [1.0]}, {"x": [3.0], "name": ["a"], "n": [1, 2]}])
    out = tf1_model.run("classify_x_to_y", {"inputs": np.array(serialized, dtype=object)})
    np.testing.assert_array_equal(out["scores"], [[2.5], [3.5]])
    parsed = tf.io.parse_single_example(serialized[1], {"name": tf.io.VarLenFeature(tf.string)})
    assert parsed["name"].values.numpy().tolist() == [b"a"]


@pytest.mark.parametrize(
    "bad",
    [[{"x": 1.0}], [{"x": []}], [{"x": [None]}], [{"x": [True]}], [{"x": [1.0, "a"]}], ["not a dict"]],
)
def test_serialize_examples_rejects_bad_features(bad: Any) -> None:
    with pytest.raises(UsageError):
        tf_runtime.serialize_examples(bad)


# ------------------------------------------------------------------------------------------- run: TF2 examples


def test_half_plus_two_example_signatures(half_plus_two: Any) -> None:
    x = np.array([[1.0], [5.0]], np.float32)
    np.testing.assert_array_equal(half_plus_two.run("serving_default", {"x": x})["y"], [[2.5], [4.5]])
    ex = examples(1.0, 5.0)
    np.testing.assert_array_equal(half_plus_two.run("classify_x_to_y", {"inputs": ex})["scores"], [[2.5], [4.5]])
    np.testing.assert_array_equal(half_plus_two.run("regress_x_to_y", {"inputs": ex})["outputs"], [[2.5], [4.5]])
    np.testing.assert_array_equal(half_plus_two.run("regress_x_to_y2", {"inputs": ex})["outputs"], [[3.5], [5.5]])


def test_inputs_are_cast_to_the_signature_dtype(half_plus_two: Any) -> None:
    out = half_plus_two.run("serving_default", {"x": np.array([[1.0]], np.float64)})
    assert out["y"].dtype == np.float32 and out["y"].tolist() == [[2.5]]


def test_other_bundled_models(examples_dir: Path) -> None:
    def load(name: str) -> Any:
        return tf_session.SavedModelLoader(str(examples_dir / name / "1")).load()

    mlp = load("mlp_classifier")
    x = np.array([[0.1, 0.2, 0.3, 0.4], [1.0, -1.0, 2.0, 0.5]], np.float32)
    predicted = mlp.run("serving_default", {"x": x})
    np.testing.assert_allclose(predicted["probabilities"].sum(axis=1), 1.0, rtol=1e-6)
    assert predicted["class_ids"].dtype == np.int64
    assert predicted["class_ids"].tolist() == predicted["probabilities"].argmax(axis=1).tolist()
    serialized = np.array(tf_runtime.serialize_examples([{"x": row.tolist()} for row in x]), dtype=object)
    classified = mlp.run("classify", {"inputs": serialized})
    assert classified["classes"].tolist() == [[b"0", b"1", b"2"]] * 2
    np.testing.assert_allclose(classified["scores"], predicted["probabilities"], rtol=1e-6)

    text = load("string_input").run("serving_default", {"text": np.array([b"abc", "é".encode()], dtype=object)})
    assert text["length"].tolist() == [3, 2] and text["length"].dtype == np.int32
    assert text["upper_bytes"].dtype == object and text["upper_bytes"].tolist() == [b"ABC", "é".encode()]

    multi = load("multi_io").run(
        "serving_default",
        {"a": np.array([[1.5, 2.0]], np.float32), "b": np.array([-4]), "c": np.array([b"xy"], dtype=object)},
    )
    assert multi["sum"].dtype == np.float64 and multi["sum"].tolist() == [-0.5]
    assert multi["b_times_2"].tolist() == [-8] and multi["c_len"].tolist() == [2] and multi["flag"].tolist() == [False]


@pytest.mark.slow
def test_slow_model_sleeps_in_graph(examples_dir: Path) -> None:
    slow = tf_session.SavedModelLoader(str(examples_dir / "slow" / "1")).load()
    x = np.ones((1, 1), np.float32)
    slow.run("serving_default", {"x": x})
    started = time.perf_counter()
    out = slow.run("serving_default", {"x": x})
    assert time.perf_counter() - started >= 0.015
    assert out["y"].tolist() == [[2.0]]


def test_output_filter(half_plus_two: Any, tf1_model: Any) -> None:
    x = {"x": np.array([[1.0]], np.float32)}
    assert list(half_plus_two.run("serving_default", x, ["y"])) == ["y"]
    with pytest.raises(InvalidArgument, match=r"output tensor alias not found in signature: z Outputs .*\{y\}"):
        tf1_model.run("serving_default", x, ["z"])


# ------------------------------------------------------------------------------------------- errors


def test_tf_errors_become_invalid_argument_with_the_kernel_message(half_plus_two: Any, tf1_model: Any) -> None:
    for model in (half_plus_two, tf1_model):
        with pytest.raises(InvalidArgument) as raised:
            model.run("classify_x_to_y", {"inputs": np.array([b"not an example"], dtype=object)})
        message = raised.value.message
        assert message.startswith("Could not parse example input, value: 'not an example'"), message
        assert "Graph execution error" not in message and "[Op:" not in message and "File " not in message


def test_wrong_input_keys_and_unknown_signatures(half_plus_two: Any) -> None:
    unknown = r"input tensor alias not found in signature: y\. Inputs expected to be in the set \{x\}\."
    with pytest.raises(InvalidArgument, match=unknown):
        half_plus_two.run("serving_default", {"y": np.ones((1, 1), np.float32)})
    with pytest.raises(InvalidArgument, match="No signature was found with the name: nope"):
        half_plus_two.run("nope", {})
    with pytest.raises(InvalidArgument, match="__saved_model_init_op"):
        half_plus_two.run("__saved_model_init_op", {})


def test_clean_tf_message_keeps_plain_messages() -> None:
    assert tf_runtime.clean_tf_message("plain message") == "plain message"
    eager = (
        "Graph execution error:\n\nDetected at node A defined at (most recent call last):\n"
        '  File "x.py", line 1, in <module>\n\n    code()\n\nboom\n\t [[{{node A}}]] [Op:__inference_f_12]'
    )
    assert tf_runtime.clean_tf_message(eager) == "boom\n\t [[{{node A}}]]"


def test_load_errors(tmp_path: Path, reference_dir: Path) -> None:
    from mlsrv.errors import ModelNotFound

    with pytest.raises(ModelNotFound, match="does not appear to contain a SavedModel bundle"):  # as TF
        tf_session.SavedModelLoader(str(tmp_path / "missing")).load()
    with pytest.raises(ModelNotFound) as missing_tags:
        tf_session.SavedModelLoader(str(reference_dir / HALF_PLUS_TWO_TF1), ("gpu",)).load()
    assert missing_tags.value.message == (
        "Could not find meta graph def matching supplied tags: { gpu }. To inspect available tag-sets in the "
        "SavedModel, please use the SavedModel CLI: `saved_model_cli`")
    broken = tmp_path / "broken"
    shutil.copytree(reference_dir / HALF_PLUS_TWO_TF1, broken)
    for data in (broken / "variables").glob("variables.data*"):
        data.write_bytes(b"")
    with pytest.raises(LoadError, match="failed to load SavedModel from") as raised:
        tf_session.SavedModelLoader(str(broken)).load()
    assert "\n" not in raised.value.message


def test_unload_drops_the_model(examples_dir: Path) -> None:
    loader = tf_session.SavedModelLoader(str(examples_dir / "string_input" / "1"))
    servable = loader.load()
    alive = weakref.ref(servable._session)
    loader.unload()
    gc.collect()
    assert alive() is None
    with pytest.raises(InvalidArgument):
        servable.run("serving_default", {"text": np.array([b"a"], dtype=object)})


def test_configure_is_idempotent_and_never_fails_after_start(caplog: pytest.LogCaptureFixture) -> None:
    threading = tf.config.threading
    current = (threading.get_intra_op_parallelism_threads(), threading.get_inter_op_parallelism_threads())
    tf_runtime.configure(*current)
    tf.constant(1.0) + 1  # the runtime is surely started now
    tf_runtime.configure(*current)
    with caplog.at_level(logging.WARNING, logger="mlsrv.server.tf_runtime"):
        tf_runtime.configure(current[0] + 3, current[1] + 3)
    assert "thread settings unchanged" in caplog.text
    assert threading.get_intra_op_parallelism_threads() == current[0]
    with pytest.raises(UsageError, match="gpu_memory_fraction"):
        tf_runtime.configure(*current, gpu_memory_fraction=1.5)


def test_signature_text_is_protobufs_text_format_of_every_signature(reference_dir: Path) -> None:
    """classify/regress errors quote ``SignatureDef::DebugString()``: our rendering must equal protobuf's."""
    from google.protobuf import text_format
    from tensorflow.python.saved_model import loader_impl

    from mlsrv.server.signature_checks import signature_text

    examples = Path(__file__).resolve().parents[2] / "examples" / "models"
    roots = [reference_dir / HALF_PLUS_TWO_TF1, *(v for m in examples.iterdir() for v in m.iterdir() if v.is_dir())]
    compared = 0
    for root in roots:
        for meta_graph in loader_impl.parse_saved_model(str(root)).meta_graphs:
            for key, definition in meta_graph.signature_def.items():
                if definition.defaults:  # not rendered (never on classify/regress signatures)
                    continue
                expected = text_format.MessageToString(definition)
                assert signature_text(tf_runtime.signature_info(definition)) == expected, (root, key)
                compared += 1
    assert compared >= 8


def test_loader_gives_tf_servings_verdict_on_what_is_not_a_savedmodel(tmp_path: Path, reference_dir: Path) -> None:
    from mlsrv.errors import ModelNotFound, Unimplemented

    with pytest.raises(Unimplemented, match=r"^Session Bundle is deprecated and removed\.$"):
        tf_session.SavedModelLoader(str(reference_dir / "bad_half_plus_two" / "00000123")).load()
    with pytest.raises(ModelNotFound) as raised:
        tf_session.SavedModelLoader(str(tmp_path)).load()
    assert raised.value.message == (
        "Specified file path does not appear to contain a SavedModel bundle (should have a file called "
        f"`saved_model.pb`)\nSpecified file path: {tmp_path}"
    )


def test_reference_dtypes_keep_their_names(reference_dir: Path) -> None:
    """TF1 variables' ``*_REF`` dtypes (saved_model_counter) are named as TF names them, not DT_INVALID."""
    from mlsrv.protocol import dtypes

    meta = tf_runtime.inspect_saved_model(str(reference_dir / "saved_model_counter" / "00000123")).meta_graph("serve")
    found = {key: s.outputs["output"].dtype for key, s in meta.signatures.items() if "output" in s.outputs}
    assert found == dict.fromkeys(("get_counter", "incr_counter", "incr_counter_by", "reset_counter"), "DT_FLOAT_REF")
    assert dtypes.by_name("DT_FLOAT_REF").enum == tf.float32._as_ref.as_datatype_enum
    assert dtypes.for_array(np.zeros(1, np.float32)).name == "DT_FLOAT"  # arrays never map to a ref type
