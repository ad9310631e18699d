"""Loading and running SavedModels the way TF Serving does: the MetaGraph in a TF Session, fed and
fetched by the SignatureDef's tensor names.

Why a Session and not ``tf.saved_model.load``'s concrete functions: it is TF Serving's own execution
path (``LoadSavedModel`` + ``Session::Run``), so TF1 and TF2 exports behave exactly as under
``tensorflow_model_server`` (no Python-side signature binding that rejects, for example, a ``[2]``
input for a ``[-1, 1]`` signature that TF Serving accepts), and a pre-built callable costs about
25 µs per call instead of 200-300 µs. Together with ``tf_runtime`` this is the only code importing
TensorFlow.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2

from mlsrv.errors import (
    InvalidArgument,
    LoadError,
    MlsrvError,
    ModelNotFound,
    Unimplemented,
    UsageError,
    first_line,
)
from mlsrv.protocol import dtypes
from mlsrv.protocol.types import INIT_OP_SIGNATURE, SignatureInfo
from mlsrv.server import op_packages, tf_function, tf_runtime, tf_warmup
from mlsrv.server.servable import checked_outputs

log = logging.getLogger(__name__)

DEFAULT_TAGS: Final = ("serve",)
RunCallable = Callable[..., list[np.ndarray]]


class SavedModelLoader:
    """Loads one SavedModel version into its own Graph and Session. ``load`` blocks; raises LoadError."""

    def __init__(
        self,
        path: str,
        tags: Sequence[str] = DEFAULT_TAGS,
        *,
        intra_op: int = 0,
        inter_op: int = 0,
        gpu_memory_fraction: float = 0.0,
        warmup_iterations: int | None = 1,
        warmup_observer: tf_warmup.WarmupObserver | None = None,
    ) -> None:
        """``warmup_iterations`` None turns warmup off (``--enable_model_warmup=false``)."""
        self.path = path
        self._warmup_iterations = warmup_iterations
        self._warmup_observer = warmup_observer
        self.tags = tf_runtime.parse_tags(tags)
        self._config = config_pb2.ConfigProto(
            intra_op_parallelism_threads=intra_op, inter_op_parallelism_threads=inter_op, allow_soft_placement=True
        )
        if gpu_memory_fraction > 0:
            self._config.gpu_options.per_process_gpu_memory_fraction = gpu_memory_fraction
        else:
            self._config.gpu_options.allow_growth = True
        self._servable: TfServable | tf_function.FunctionServable | None = None

    def load(self) -> TfServable | tf_function.FunctionServable:
        _check_bundle_kind(self.path)
        try:
            info = tf_runtime.inspect_saved_model(self.path)
            wanted = tf_runtime.parse_tags(self.tags)
        except UsageError as error:
            raise LoadError(error.message) from None
        if not any(set(m.tags) == set(wanted) for m in info.meta_graphs):  # TF's FindMetaGraphDef verdict
            raise ModelNotFound(
                f"Could not find meta graph def matching supplied tags: {{ {' '.join(wanted)} }}. To inspect "
                "available tag-sets in the SavedModel, please use the SavedModel CLI: `saved_model_cli`"
            )
        meta_graph = info.meta_graph(wanted)
        try:
            graph, session, meta_graph_def = self._session_load()
        except LoadError as error:
            op = op_packages.unregistered_op(error.message)
            if op is None:
                raise
            if not op_packages.register_for(op):  # an op library that is installed registers on import
                raise LoadError(f"{error.message.split('. Make sure', 1)[0]}: the op is not part of TensorFlow; "
                                f"{op_packages.advice(op)}") from None  # fmt: skip
            graph, session, meta_graph_def = self._session_load()
        unrestored = _unrestored_variables(session, graph, meta_graph_def)
        servable: TfServable | tf_function.FunctionServable
        if unrestored:  # the Session cannot run this export; TF's object-based loader can (tf_function)
            session.close()
            log.warning(
                "Serving %s through tf.saved_model.load: its signatures read variables TF Serving's loader "
                "leaves uninitialized (%s), as a Keras 3 model saved with tf.saved_model.save does; "
                "model.export() makes a SavedModel TF Serving can serve too",
                self.path, ", ".join(unrestored[:3]) + (", ..." if len(unrestored) > 3 else ""),
            )  # fmt: skip
            servable = tf_function.load(self.path, self.tags, meta_graph.signatures)
        else:
            servable = TfServable(session, meta_graph_def, meta_graph.signatures, meta_graph.tags)
        if self._warmup_iterations is not None:
            try:
                tf_warmup.warmup(servable, self.path, self._warmup_iterations, self._warmup_observer)
            except MlsrvError:
                servable.close()
                raise
        self._servable = servable
        return servable

    def _session_load(self) -> tuple[Any, Any, Any]:
        """The MetaGraph loaded into a new Graph and Session (TF's ``LoadSavedModel``); LoadError if not."""
        graph = tf.Graph()
        session = tf.compat.v1.Session(graph=graph, config=self._config)
        try:
            with graph.as_default():
                return graph, session, _load_into(session, self.tags, self.path)
        except Exception as error:  # TF raises many types here (OpError, RuntimeError, ValueError ...)
            session.close()
            raise LoadError(f"failed to load SavedModel from {self.path}: {first_line(error)}") from None

    def unload(self) -> None:
        """Close the Session so TF frees the model's memory now."""
        if self._servable is not None:
            self._servable.close()
            self._servable = None
        gc.collect()


def _unrestored_variables(session: Any, graph: Any, meta_graph_def: Any) -> list[str]:
    """Resource variables the signatures read that the load left uninitialized (their shared names).

    Static and side-effect free (no signature runs: a signature may change state, as a counter
    does): walk back from every signature output to the ``VarHandleOp``s it depends on and ask TF
    whether each is initialized. A SavedModel TF Serving can serve has none; a Keras 3 model saved
    with ``tf.saved_model.save`` has all of its weights here.
    """
    with graph.as_default():
        outputs = []
        for key, definition in meta_graph_def.signature_def.items():
            if key == INIT_OP_SIGNATURE:
                continue
            for tensor_info in definition.outputs.values():
                try:
                    outputs.append(graph.as_graph_element(tensor_info.name).op)
                except (KeyError, ValueError):
                    continue  # a dangling output fails its requests as in TF Serving; not this check's business
        handles, seen, stack = [], set(), outputs
        while stack:
            op = stack.pop()
            if op.name in seen:
                continue
            seen.add(op.name)
            if op.type == "VarHandleOp":
                handles.append(op)
            stack.extend(tensor.op for tensor in op.inputs)
            stack.extend(op.control_inputs)
        if not handles:
            return []
        checks = [tf.raw_ops.VarIsInitializedOp(resource=handle.outputs[0]) for handle in handles]
        try:
            initialized = session.run(checks)
        except tf.errors.OpError:
            return []  # cannot tell: keep TF Serving's path, which reports its own errors
    return sorted(h.get_attr("shared_name").decode() for h, ok in zip(handles, initialized, strict=True) if not ok)


def _load_into(session: Any, tags: Sequence[str], path: str) -> Any:
    """TF's SavedModel loader (restores variables, runs the init/main op) without its deprecation log."""
    try:
        from tensorflow.python.saved_model import loader_impl

        return loader_impl.SavedModelLoader(path).load(session, list(tags))
    except ImportError:  # pragma: no cover - private module moved; the public (deprecated) alias still works
        return tf.compat.v1.saved_model.loader.load(session, list(tags), path)


class TfServable:
    """One loaded model version. ``run`` is thread-safe and blocking: call it on the executor."""

    def __init__(
        self,
        session: Any,
        meta_graph_def: Any,
        signatures: Mapping[str, SignatureInfo],
        tags: tuple[str, ...] = DEFAULT_TAGS,
    ) -> None:
        self._session = session
        self._defs = dict(meta_graph_def.signature_def)
        self._signatures = signatures
        self.tags = tags
        self._callables: dict[tuple[str, tuple[str, ...], tuple[str, ...]], RunCallable] = {}
        self._lock = threading.Lock()

    def signatures(self) -> Mapping[str, SignatureInfo]:
        return self._signatures

    def run(
        self, signature: str, inputs: Mapping[str, np.ndarray], output_filter: Sequence[str] = ()
    ) -> dict[str, np.ndarray]:
        """Run ``signature``; DT_STRING outputs come back as object arrays of bytes.

        Raises InvalidArgument for unknown names, or the MlsrvError matching TF's error code.
        """
        names = tuple(sorted(inputs))
        outputs = checked_outputs(signature, self._signatures.get(signature), names, output_filter)
        definition = self._defs.get(signature)
        if definition is None:  # closed (unloaded) under a late call
            raise InvalidArgument(f"No signature was found with the name: {signature}")
        call = self._callable(signature, definition, names, outputs)
        feeds = [_feedable(inputs[name], definition.inputs[name].dtype, i) for i, name in enumerate(names)]
        try:
            results = call(*feeds)
        except tf.errors.OpError as error:
            raise tf_runtime.translate_op_error(error) from None
        except (TypeError, ValueError) as error:
            raise InvalidArgument(first_line(error)) from None
        return {name: np.asarray(value) for name, value in zip(outputs, results, strict=True)}

    def _callable(
        self, signature: str, definition: Any, inputs: tuple[str, ...], outputs: tuple[str, ...]
    ) -> RunCallable:
        key = (signature, inputs, outputs)
        found = self._callables.get(key)
        if found is not None:
            return found
        with self._lock:
            found = self._callables.get(key)
            if found is None:
                feeds = [definition.inputs[name].name for name in inputs]
                fetches = [definition.outputs[name].name for name in outputs]
                found = _make_callable(self._session, feeds, fetches)
                self._callables[key] = found
        return found

    def close(self) -> None:
        with self._lock:
            self._callables.clear()
            self._defs.clear()
            if self._session is not None:
                self._session.close()
                self._session = None


def _check_bundle_kind(path: str) -> None:
    """TF Serving's ``LoadSessionBundleOrSavedModelBundle`` verdicts, with its codes and messages."""
    folder = Path(path)
    if (folder / "export.meta").exists():
        raise Unimplemented("Session Bundle is deprecated and removed.")
    if not any((folder / name).exists() for name in ("saved_model.pb", "saved_model.pbtxt")):
        raise ModelNotFound(
            "Specified file path does not appear to contain a SavedModel bundle (should have a file called "
            f"`saved_model.pb`)\nSpecified file path: {path}"
        )


def _make_callable(session: Any, feeds: list[str], fetches: list[str]) -> RunCallable:
    """A pre-compiled Session callable (TF's C++ ``MakeCallable``): no per-call Python graph lookups.

    ``_make_callable_from_options`` is the Session's own fast path (used by Keras 2 for years) and,
    unlike ``Session.run``, does not re-check feed shapes in Python, which TF Serving never does.
    """
    options = config_pb2.CallableOptions(feed=feeds, fetch=fetches)
    make = getattr(session, "_make_callable_from_options", None)
    if make is not None:
        fast = make(options)

        def call(*values: np.ndarray) -> list[np.ndarray]:
            return list(fast(*values))

        return call
    slow = session.make_callable(fetches, feed_list=feeds)  # pragma: no cover - older/newer TF fallback
    return lambda *values: list(slow(*values))  # pragma: no cover


def _feedable(value: np.ndarray, dtype_enum: int, index: int) -> np.ndarray:
    """The array TF can feed: strings as object arrays of bytes; numbers cast to the signature dtype.

    Strings fed to a numeric input (or numbers to a string input) get ``Session::Run``'s message,
    ``Expects arg[i] to be float but string is provided``: TF Serving reports it, for example, for a
    regress signature whose ``inputs`` tensor is not DT_STRING. A pre-built callable would instead
    fail inside the graph with ``Type mismatch: actual string vs. expect float``.
    """
    array = np.asarray(value)
    want = dtypes.by_enum(dtype_enum)
    got = dtypes.for_array(array)
    if (got.name == "DT_STRING") != (want.name == "DT_STRING"):
        raise InvalidArgument(f"Expects arg[{index}] to be {want.short} but {got.short} is provided")
    if want.name == "DT_STRING":
        if array.dtype.kind == "U":
            return np.char.encode(array, "utf-8").astype(object)
        if array.dtype.kind == "S":
            return array.astype(object)
        return array
    if want.numpy is not None and array.dtype != want.numpy and array.dtype.kind in "biuf":
        return array.astype(want.numpy)
    return array

