"""The second way to run a SavedModel: TensorFlow 2's ``tf.saved_model.load``, for exports that the
Session path (TF Serving's own, ``tf_session``) cannot run.

Why it exists: since TF 2.16 ``import keras`` is Keras 3, and a Keras 3 model saved the way most
tutorials show, ``tf.saved_model.save(model, path)`` (a Sequential, a functional model, or a
``tf.Module`` that wraps one), loads into a Session with the variables its signatures read left
uninitialized: every request then fails with ``Could not find variable ...``
(keras-team/keras#19274). TF Serving and ``saved_model_cli run`` fail the same way. TensorFlow's
object-based loader restores those variables by object identity and runs the signatures correctly,
so a version the Session cannot serve is served through it instead (``tf_session`` decides, with
one log line). Everything around the call is the same: the signatures (metadata) come from the
MetaGraph as for every model, and requests reach :meth:`FunctionServable.run` with the same checks
and TF error codes as :class:`~mlsrv.server.tf_session.TfServable`. A call costs about 100-300 µs of
Python more than the Session's pre-built callable, which is why this is the exception, not the rule.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from mlsrv.errors import InvalidArgument, LoadError, first_line
from mlsrv.protocol import dtypes
from mlsrv.protocol.types import INIT_OP_SIGNATURE, SignatureInfo
from mlsrv.server import tf_runtime
from mlsrv.server.servable import checked_outputs

#: What to tell the owner of a model neither loader can run.
EXPORT_ADVICE = (
    "A Keras 3 model saved with tf.saved_model.save may need this; export it with model.export(path) "
    "instead, which writes a SavedModel TF Serving can serve"
)


def load(path: str, tags: Sequence[str], signatures: Mapping[str, SignatureInfo]) -> FunctionServable:
    """Load ``path`` with ``tf.saved_model.load``; ``LoadError`` naming the problem and the fix if it fails."""
    try:
        loaded = tf.saved_model.load(path, tags=list(tags))
    except Exception as error:  # TF raises many types here
        raise LoadError(f"failed to load SavedModel from {path} with tf.saved_model.load too: "
                        f"{first_line(error)}. {EXPORT_ADVICE}") from None  # fmt: skip
    functions = {name: loaded.signatures[name] for name in signatures if name in loaded.signatures}
    missing = sorted(set(signatures) - set(functions) - {INIT_OP_SIGNATURE})
    if missing:
        raise LoadError(f"tf.saved_model.load of {path} has no function for signature(s) {', '.join(missing)}. "
                        f"{EXPORT_ADVICE}")  # fmt: skip
    return FunctionServable(loaded, functions, signatures)


class FunctionServable:
    """One version run through its restored signature functions. ``run`` is thread-safe and blocking."""

    def __init__(self, loaded: Any, functions: Mapping[str, Any], signatures: Mapping[str, SignatureInfo]) -> None:
        self._loaded = loaded
        self._functions = dict(functions)
        self._signatures = signatures
        self._lock = threading.Lock()

    def signatures(self) -> Mapping[str, SignatureInfo]:
        return self._signatures

    def run(
        self, signature: str, inputs: Mapping[str, np.ndarray], output_filter: Sequence[str] = ()
    ) -> dict[str, np.ndarray]:
        """As :meth:`TfServable.run`: same checks, same messages, TF's error codes."""
        info = self._signatures.get(signature)
        outputs = checked_outputs(signature, info if signature in self._functions else None, inputs, output_filter)
        assert info is not None
        function = self._functions[signature]
        absent = sorted(set(info.inputs) - set(inputs))
        if absent:  # a function needs every argument; the Session would fail on the placeholder
            raise InvalidArgument(f"You must feed a value for placeholder tensor '{info.inputs[absent[0]].name}'")
        try:
            arguments = {name: _tensor(value, info.inputs[name].dtype) for name, value in inputs.items()}
            results = function(**arguments)
        except tf.errors.OpError as error:
            raise tf_runtime.translate_op_error(error) from None
        except (TypeError, ValueError) as error:
            raise InvalidArgument(first_line(error)) from None
        return {name: np.asarray(results[name].numpy()) for name in outputs}

    def close(self) -> None:
        with self._lock:
            self._functions.clear()
            self._loaded = None
        gc.collect()


def _tensor(value: np.ndarray, dtype_name: str) -> tf.Tensor:
    """The argument tensor: the signature's dtype (strings as bytes), as the Session path feeds it."""
    dtype = tf.dtypes.as_dtype(dtypes.by_name(dtype_name).enum)
    if dtype == tf.string:
        return tf.constant(np.asarray(value, dtype=object), dtype=tf.string)
    return tf.convert_to_tensor(np.asarray(value), dtype=dtype)
