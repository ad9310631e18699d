"""Export the small SavedModels bundled under ``examples/models/`` and prove TF Serving can load them.

Run ``python examples/export_models.py`` (add ``--out DIR`` to write elsewhere). It rewrites every model
from scratch, with fixed weights, so rerunning it gives the same files. Each model is then loaded twice,
with TF2's ``tf.saved_model.load`` and with the TF1 loader in a Graph/Session (the path
``tensorflow_model_server`` takes in C++), and both must give identical outputs on sample inputs.

Why plain ``tf.Module`` + ``tf.Variable`` and no Keras: the files stay a few kilobytes, and a module
that holds a Keras 3 model exports every variable twice, which TF1's loader rejects (see DESIGN.md).

Why the SavedModel is edited after ``tf.saved_model.save``: TF2 writes ``method_name =
"tensorflow/serving/predict"`` for every signature. TF Serving's Classify and Regress APIs look for
``tensorflow/serving/classify`` / ``regress`` (and check it with ``--enable_signature_method_name_check``),
so the script sets those method names in ``saved_model.pb`` and rewrites ``fingerprint.pb`` (whose
checksum covers ``saved_model.pb``) with TF's own fingerprinting helper. The fingerprint's random
``uuid`` is replaced by a hash of ``saved_model.pb`` so that reruns write byte-identical files.

Models:
  half_plus_two/00000123  y = 0.5x + 2, with the signatures of TF Serving's reference model
  mlp_classifier/1        4 -> 8 -> 3 softmax MLP, predict and classify signatures
  string_input/1          DT_STRING in; length (int32) and upper_bytes (DT_STRING) out
  multi_io/1              float32/int64/string inputs; float64/int64/int32/bool outputs
  slow/1                  y = x + 1 after a ~20 ms in-graph sleep (tf.data SleepDataset)
"""

# mypy: disable-error-code="misc, untyped-decorator"
# (tf.Module and tf.function are untyped: a script-only concession)
from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import fingerprint_pb2, saved_model_pb2
from tensorflow.python.saved_model import fingerprinting_utils

CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"
MLP_CLASSES = (b"0", b"1", b"2")
SLEEP_MICROS = 10_000  # SleepDataset sleeps on each of the two GetNext calls: ~20 ms per run.

Inputs = dict[str, np.ndarray]


def _example(**features: list[float]) -> bytes:
    """A serialized tf.Example with float features (what the classify/regress signatures parse)."""
    feature = {k: tf.train.Feature(float_list=tf.train.FloatList(value=v)) for k, v in features.items()}
    return bytes(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


def _parse_x(serialized: tf.Tensor, width: int) -> tf.Tensor:
    spec = {"x": tf.io.FixedLenFeature([width], tf.float32)}
    return tf.io.parse_example(serialized, spec)["x"]


_EXAMPLES = tf.TensorSpec([None], tf.string, name="inputs")


class HalfPlusTwo(tf.Module):
    """TF Serving's reference model: y = a*x + b (a=0.5, b=2), y2 = a*x + c (c=3)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = tf.Variable(0.5, name="a")
        self.b = tf.Variable(2.0, name="b")
        self.c = tf.Variable(3.0, name="c")

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
    def predict(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": self.a * x + self.b}

    @tf.function(input_signature=[_EXAMPLES])
    def classify(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"scores": self.a * _parse_x(inputs, 1) + self.b}

    @tf.function(input_signature=[_EXAMPLES])
    def regress(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"outputs": self.a * _parse_x(inputs, 1) + self.b}

    @tf.function(input_signature=[_EXAMPLES])
    def regress2(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"outputs": self.a * _parse_x(inputs, 1) + self.c}


class MlpClassifier(tf.Module):
    """4 features -> 8 ReLU units -> 3-way softmax; weights drawn from a fixed seed."""

    def __init__(self) -> None:
        super().__init__()
        rng = np.random.default_rng(20240601)
        self.w1 = tf.Variable(rng.normal(0.0, 0.5, (4, 8)).astype(np.float32), name="w1")
        self.b1 = tf.Variable(rng.normal(0.0, 0.1, (8,)).astype(np.float32), name="b1")
        self.w2 = tf.Variable(rng.normal(0.0, 0.5, (8, 3)).astype(np.float32), name="w2")
        self.b2 = tf.Variable(rng.normal(0.0, 0.1, (3,)).astype(np.float32), name="b2")

    def _probabilities(self, x: tf.Tensor) -> tf.Tensor:
        hidden = tf.nn.relu(tf.matmul(x, self.w1) + self.b1)
        return tf.nn.softmax(tf.matmul(hidden, self.w2) + self.b2)

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def predict(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        probabilities = self._probabilities(x)
        return {"probabilities": probabilities, "class_ids": tf.argmax(probabilities, axis=1)}

    @tf.function(input_signature=[_EXAMPLES])
    def classify(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        scores = self._probabilities(_parse_x(inputs, 4))
        classes = tf.tile(tf.constant([list(MLP_CLASSES)]), [tf.shape(scores)[0], 1])
        return {"classes": classes, "scores": scores}


class StringInput(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def predict(self, text: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"length": tf.strings.length(text), "upper_bytes": tf.strings.upper(text)}


class MultiIo(tf.Module):
    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 2], tf.float32, name="a"),
            tf.TensorSpec([None], tf.int64, name="b"),
            tf.TensorSpec([None], tf.string, name="c"),
        ]
    )
    def predict(self, a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) -> dict[str, tf.Tensor]:
        total = tf.reduce_sum(tf.cast(a, tf.float64), axis=1) + tf.cast(b, tf.float64)
        return {"sum": total, "b_times_2": b * 2, "c_len": tf.strings.length(c), "flag": b > 0}


class Slow(tf.Module):
    """y = x + 1 after an in-graph sleep: plain graph ops, so both loaders and TF Serving can run it."""

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
    def predict(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        shapes = [tf.TensorShape([None, 1])]
        dataset = tf.raw_ops.TensorDataset(components=[x], output_shapes=shapes)
        dataset = tf.raw_ops.SleepDataset(
            input_dataset=dataset,
            sleep_microseconds=SLEEP_MICROS,
            output_types=[tf.float32],
            output_shapes=shapes,
        )
        (slept,) = tf.raw_ops.DatasetToSingleElement(dataset=dataset, output_types=[tf.float32], output_shapes=shapes)
        return {"y": slept + 1.0}


class Spec:
    """One bundled model: how to build it, its signatures, method names and sample inputs per signature."""

    def __init__(
        self,
        path: str,
        build: Callable[[], tf.Module],
        signatures: Callable[[Any], Mapping[str, Any]],
        samples: Mapping[str, Inputs],
        methods: Mapping[str, str] | None = None,
    ) -> None:
        self.path, self.build, self.signatures, self.samples = path, build, signatures, samples
        self.methods = dict(methods or {})


def _specs() -> list[Spec]:
    one_x = np.array([_example(x=[1.0]), _example(x=[5.0])], dtype=object)
    four_x = np.array([_example(x=[0.1, 0.2, 0.3, 0.4]), _example(x=[1.0, -1.0, 2.0, 0.5])], dtype=object)
    return [
        Spec(
            "half_plus_two/00000123",
            HalfPlusTwo,
            lambda m: {
                "serving_default": m.predict,
                "classify_x_to_y": m.classify,
                "regress_x_to_y": m.regress,
                "regress_x_to_y2": m.regress2,
            },
            {
                "serving_default": {"x": np.array([[1.0], [5.0]], np.float32)},
                "classify_x_to_y": {"inputs": one_x},
                "regress_x_to_y": {"inputs": one_x},
                "regress_x_to_y2": {"inputs": one_x},
            },
            {"classify_x_to_y": CLASSIFY, "regress_x_to_y": REGRESS, "regress_x_to_y2": REGRESS},
        ),
        Spec(
            "mlp_classifier/1",
            MlpClassifier,
            lambda m: {"serving_default": m.predict, "classify": m.classify},
            {
                "serving_default": {"x": np.array([[0.1, 0.2, 0.3, 0.4], [1.0, -1.0, 2.0, 0.5]], np.float32)},
                "classify": {"inputs": four_x},
            },
            {"classify": CLASSIFY},
        ),
        Spec(
            "string_input/1",
            StringInput,
            lambda m: {"serving_default": m.predict},
            {"serving_default": {"text": np.array([b"hello", b"", "Grüße".encode()], dtype=object)}},
        ),
        Spec(
            "multi_io/1",
            MultiIo,
            lambda m: {"serving_default": m.predict},
            {
                "serving_default": {
                    "a": np.array([[1.5, 2.0], [0.0, -1.0]], np.float32),
                    "b": np.array([3, -4], np.int64),
                    "c": np.array([b"abc", b""], dtype=object),
                }
            },
        ),
        Spec(
            "slow/1",
            Slow,
            lambda m: {"serving_default": m.predict},
            {"serving_default": {"x": np.ones((1, 1), np.float32)}},
        ),
    ]


def _set_method_names(export_dir: Path, methods: Mapping[str, str]) -> None:
    """Give classify/regress signatures their TF Serving method names (TF2 writes predict for all)."""
    if not methods:
        return
    pb_path = export_dir / "saved_model.pb"
    saved_model = saved_model_pb2.SavedModel.FromString(pb_path.read_bytes())
    for meta_graph in saved_model.meta_graphs:
        for key, method in methods.items():
            meta_graph.signature_def[key].method_name = method
    pb_path.write_bytes(saved_model.SerializeToString(deterministic=True))
    fingerprinting_utils.write_fingerprint(str(export_dir))


def _fix_fingerprint_uuid(export_dir: Path) -> None:
    """Replace the random ``uuid`` in ``fingerprint.pb`` by one derived from ``saved_model.pb``.

    The uuid is informational (TF never compares it); a fixed one makes reruns byte-identical.
    """
    path = export_dir / "fingerprint.pb"
    fingerprint = fingerprint_pb2.FingerprintDef.FromString(path.read_bytes())
    digest = hashlib.sha256((export_dir / "saved_model.pb").read_bytes()).digest()
    fingerprint.uuid = str(int.from_bytes(digest[:16], "big"))
    path.write_bytes(fingerprint.SerializeToString(deterministic=True))


def export(spec: Spec, root: Path) -> Path:
    """Write one model to ``root/spec.path`` from scratch."""
    export_dir = root / spec.path
    if export_dir.exists():
        shutil.rmtree(export_dir)
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    module = spec.build()
    tf.saved_model.save(module, str(export_dir), signatures=dict(spec.signatures(module)))
    _set_method_names(export_dir, spec.methods)
    _fix_fingerprint_uuid(export_dir)
    assets = export_dir / "assets"
    if assets.is_dir() and not any(assets.iterdir()):
        assets.rmdir()  # git keeps no empty folders; both loaders treat a missing assets/ as empty
    return export_dir


def _run_tf2(export_dir: Path, samples: Mapping[str, Inputs]) -> dict[str, Inputs]:
    loaded = tf.saved_model.load(str(export_dir))
    return {
        key: {name: value.numpy() for name, value in loaded.signatures[key](**feed).items()}
        for key, feed in samples.items()
    }


def _run_tf1(export_dir: Path, samples: Mapping[str, Inputs]) -> dict[str, Inputs]:
    results: dict[str, Inputs] = {}
    with tf.compat.v1.Graph().as_default(), tf.compat.v1.Session() as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(export_dir))
        for key, feed in samples.items():
            signature = meta_graph.signature_def[key]
            names = sorted(signature.outputs)
            fetched = session.run(
                [signature.outputs[n].name for n in names],
                {signature.inputs[k].name: v for k, v in feed.items()},
            )
            results[key] = dict(zip(names, fetched, strict=True))
    return results


def check(spec: Spec, export_dir: Path) -> dict[str, Inputs]:
    """Both loaders must give identical outputs on the sample inputs; returns the TF2 outputs."""
    tf2 = _run_tf2(export_dir, spec.samples)
    tf1 = _run_tf1(export_dir, spec.samples)
    saved = saved_model_pb2.SavedModel.FromString((export_dir / "saved_model.pb").read_bytes())
    methods = {k: v.method_name for k, v in saved.meta_graphs[0].signature_def.items()}
    for key in spec.samples:
        assert methods[key] == spec.methods.get(key, "tensorflow/serving/predict"), (
            spec.path,
            key,
            methods[key],
        )
        assert tf1[key].keys() == tf2[key].keys(), (spec.path, key)
        for name, value in tf2[key].items():
            np.testing.assert_array_equal(tf1[key][name], value, err_msg=f"{spec.path} {key} {name}")
    return tf2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "models")
    args = parser.parse_args(argv)
    tf.get_logger().setLevel("ERROR")
    for spec in _specs():
        export_dir = export(spec, args.out)
        started = time.perf_counter()
        outputs = check(spec, export_dir)
        size = sum(p.stat().st_size for p in export_dir.rglob("*") if p.is_file())
        took = (time.perf_counter() - started) * 1000
        print(f"{spec.path}: {size / 1024:.1f} KiB, TF1 == TF2 on {len(outputs)} signature(s) ({took:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
