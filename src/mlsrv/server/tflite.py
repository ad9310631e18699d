"""TF Lite models: a version folder's ``model.tflite``, served with ``--prefer_tflite_model`` as TF Serving
does (``saved_model_bundle_factory.cc``, ``tflite_session.cc``).

The runtime is LiteRT (``ai-edge-litert``, ``pip install mlsrv[tflite]``): Google's maintained TF Lite
interpreter, with releases of its own, where TensorFlow's ``tf.lite.Interpreter`` is deprecated
("scheduled for deletion") and only kept for compatibility. The two have the same Python API; without
LiteRT installed, TensorFlow's is used (its deprecation notice silenced).

Signatures, as TF Serving gives them:

* a model converted with TF Serving's signature metadata (``signature_defs_metadata``: a FlexBuffer
  map of signature name -> serialized ``SignatureDef``) serves those SignatureDefs, their aliases
  mapped to the interpreter's tensors by name;
* any other model gets one ``serving_default`` predict signature, its aliases the tensors' own names
  and its shapes the model's (``-1`` for dynamic dims).

A request's input shapes resize the interpreter's inputs when they differ (so any batch size works,
and ``--enable_batching`` merges requests as for a SavedModel). Interpreters are not thread-safe: a
version keeps ``--num_tflite_pools`` x ``--num_tflite_interpreters_per_pool`` of them and each call
takes one. Custom ops TF Serving links into its binary (``ParseExample``, used by
``parse_example_tflite``) are not in the Python interpreters: such a model fails to load with the
interpreter's ``unresolved custom op`` message.
"""

from __future__ import annotations

import contextlib
import queue
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from mlsrv.errors import InvalidArgument, LoadError, ModelNotFound, first_line
from mlsrv.protocol import dtypes
from mlsrv.protocol.types import SignatureInfo, TensorInfo
from mlsrv.server.servable import checked_outputs

TFLITE_FILE: Final = "model.tflite"
SIGNATURE_METADATA: Final = b"signature_defs_metadata"
PREDICT_METHOD: Final = "tensorflow/serving/predict"
#: how long a call waits for a free interpreter before it is an error (all busy for this long is a bug)
INTERPRETER_WAIT_S: Final = 60.0


def has_tflite_model(version_dir: str) -> bool:
    return (Path(version_dir) / TFLITE_FILE).is_file()


def _interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # TensorFlow's own, deprecated one
        import tensorflow as tf

        return tf.lite.Interpreter
    return Interpreter


class TfLiteLoader:
    """Loads ``<version>/model.tflite`` into ``interpreters`` interpreters. ``load`` blocks."""

    def __init__(self, path: str, *, interpreters: int = 1, warmup_iterations: int | None = 1,
                 warmup_observer: Any = None) -> None:  # fmt: skip
        self.path = path
        self._interpreters = max(1, interpreters)
        self._warmup_iterations = warmup_iterations
        self._warmup_observer = warmup_observer
        self._servable: TfLiteServable | None = None

    def load(self) -> TfLiteServable:
        model = Path(self.path) / TFLITE_FILE
        if not model.is_file():
            raise ModelNotFound(f"Could not find TF Lite model file {model}")
        content = model.read_bytes()
        interpreter_class = _interpreter_class()
        interpreters = []
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
                for _ in range(self._interpreters):
                    interpreter = interpreter_class(model_content=content)
                    interpreter.allocate_tensors()
                    interpreters.append(interpreter)
        except (RuntimeError, ValueError) as error:
            raise LoadError(f"failed to load TF Lite model {model}: {first_line(error)}") from None
        details = interpreters[0]
        signatures = signatures_of(content, details.get_input_details(), details.get_output_details())
        servable = TfLiteServable(interpreters, signatures)
        if self._warmup_iterations is not None:
            from mlsrv.server import tf_warmup

            tf_warmup.warmup(servable, self.path, self._warmup_iterations, self._warmup_observer)
        self._servable = servable
        return servable

    def unload(self) -> None:
        self._servable = None


class TfLiteServable:
    """One loaded TF Lite version. ``run`` is blocking and thread-safe (one interpreter per call)."""

    def __init__(self, interpreters: Sequence[Any], signatures: Mapping[str, SignatureInfo]) -> None:
        self._free: queue.Queue[Any] = queue.Queue()
        for interpreter in interpreters:
            self._free.put(interpreter)
        self._signatures = dict(signatures)
        first = interpreters[0]
        self._inputs = {detail["name"]: detail["index"] for detail in first.get_input_details()}
        self._outputs = {detail["name"]: detail["index"] for detail in first.get_output_details()}

    def signatures(self) -> Mapping[str, SignatureInfo]:
        return self._signatures

    def run(
        self, signature: str, inputs: Mapping[str, np.ndarray], output_filter: Sequence[str] = ()
    ) -> dict[str, np.ndarray]:
        info = self._signatures.get(signature)
        outputs = checked_outputs(signature, info, inputs, output_filter)
        assert info is not None
        absent = sorted(set(info.inputs) - set(inputs))
        if absent:
            raise InvalidArgument(f"Missing input tensor: {absent[0]}")
        arrays = {
            self._inputs[_tensor_name(info.inputs[name])]: _feedable(value, info.inputs[name].dtype)
            for name, value in inputs.items()
        }
        with self._interpreter() as interpreter:
            try:
                shapes = {detail["index"]: tuple(detail["shape"]) for detail in interpreter.get_input_details()}
                changed = [index for index, array in arrays.items() if shapes[index] != array.shape]
                for index in changed:  # TF Serving's TfLiteSession resizes to what was fed
                    interpreter.resize_tensor_input(index, list(arrays[index].shape), strict=False)
                if changed:
                    interpreter.allocate_tensors()
                for index, array in arrays.items():
                    interpreter.set_tensor(index, array)
                interpreter.invoke()
                return {name: np.array(interpreter.get_tensor(self._outputs[_tensor_name(info.outputs[name])]))
                        for name in outputs}  # fmt: skip
            except (RuntimeError, ValueError) as error:
                raise InvalidArgument(first_line(error)) from None

    @contextlib.contextmanager
    def _interpreter(self) -> Iterator[Any]:
        interpreter = self._free.get(timeout=INTERPRETER_WAIT_S)
        try:
            yield interpreter
        finally:
            self._free.put(interpreter)

    def close(self) -> None:
        while not self._free.empty():
            self._free.get_nowait()


def signatures_of(content: bytes, inputs: Sequence[Mapping[str, Any]], outputs: Sequence[Mapping[str, Any]]
                  ) -> dict[str, SignatureInfo]:  # fmt: skip
    """TF Serving's signatures for a TF Lite model: its metadata's SignatureDefs, else one default."""
    stored = _stored_signature_defs(content)
    if stored:
        from mlsrv.server import tf_runtime

        return {name: tf_runtime.signature_info(definition) for name, definition in sorted(stored.items())}
    return {
        "serving_default": SignatureInfo(
            inputs={str(d["name"]): _tensor_info(d) for d in inputs},
            outputs={str(d["name"]): _tensor_info(d) for d in outputs},
            method_name=PREDICT_METHOD,
        )
    }


def _stored_signature_defs(content: bytes) -> dict[str, Any]:
    """The ``signature_defs_metadata`` entry of the flatbuffer, as SignatureDef protos (empty if none)."""
    from flatbuffers import flexbuffers
    from tensorflow.core.protobuf import meta_graph_pb2

    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        from tensorflow.lite.python import schema_py_generated as schema
    model = schema.Model.GetRootAsModel(content, 0)
    for index in range(model.MetadataLength()):
        entry = model.Metadata(index)
        if entry.Name() != SIGNATURE_METADATA:
            continue
        data = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
        root = flexbuffers.GetRoot(data).AsMap
        found = {}
        for key, value in zip(root.Keys, root.Values, strict=True):
            # the values are serialized protos: bytes, which flexbuffers' str accessors would decode
            raw = bytes(flexbuffers.String(value._Indirect(), value._byte_width).Bytes)
            found[str(key.AsKey)] = meta_graph_pb2.SignatureDef.FromString(raw)
        return found
    return {}


def _tensor_info(detail: Mapping[str, Any]) -> TensorInfo:
    shape = detail.get("shape_signature")  # -1 for dynamic dims; older runtimes lack it
    if shape is None or len(shape) != len(detail["shape"]):
        shape = detail["shape"]
    return TensorInfo(f"{detail['name']}", _dtype_name(detail["dtype"]), tuple(int(d) for d in shape))


def _dtype_name(numpy_type: Any) -> str:
    return dtypes.for_array(np.empty(0, dtype=numpy_type)).name


def _tensor_name(info: TensorInfo) -> str:
    """A SignatureDef names a tensor ``name:0``; the interpreter knows it as ``name``."""
    return info.name[:-2] if info.name.endswith(":0") else info.name


def _feedable(value: np.ndarray, dtype_name: str) -> np.ndarray:
    if dtype_name == "DT_STRING":
        return np.asarray(value, dtype=object)
    return np.ascontiguousarray(value, dtype=dtypes.by_name(dtype_name).numpy)
