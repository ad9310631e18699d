"""TF Serving's REST JSON <-> mlsrv types: the one entry point for the REST handler and the REST client.

Server side, called in TF Serving's processing order (``FillPredictRequestFromJson``):

1. :func:`parse_body` - parse; ``JSON Parse error: ...`` and ``Is not object`` errors;
2. :func:`signature_name_of` - ``signature_name`` must be a string;
3. (the handler resolves the servable, 404, and the signature, 400);
4. :func:`decode_predict_inputs` - empty input map, ``instances``/``inputs`` key checks, then the
   row or columnar tensors converted by the signature's input dtypes.

Then :func:`encode_predict_response` (or the classify/regress encoders) and :func:`encode_error`.
Every error is an :class:`~mlsrv.errors.MlsrvError` carrying TF Serving's exact message and code.
Client-side encoders/decoders live in :mod:`json_client`, status/metadata in :mod:`json_model`,
classify/regress in :mod:`json_examples`; all are re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from mlsrv.errors import InvalidArgument, MlsrvError
from mlsrv.protocol.json_client import (
    decode_error,
    decode_predict_response,
    encode_predict_request,
)
from mlsrv.protocol.json_examples import (
    decode_classify_response,
    decode_examples_request,
    decode_regress_response,
    encode_classify_response,
    encode_regress_response,
)
from mlsrv.protocol.json_model import (
    decode_metadata,
    decode_model_list,
    decode_status,
    encode_metadata,
    encode_model_list,
    encode_status,
)
from mlsrv.protocol.json_parse import loads
from mlsrv.protocol.json_tensor import fill_exact, fill_fast, fill_tensor, shape_to_string, status_text, to_array
from mlsrv.protocol.json_value import escape_string, is_b64_object, signature_name_of, value_to_string
from mlsrv.protocol.json_write import (
    check_writable,
    dumps,
    small_float32_json,
    tensor_json,
    tensor_rows,
    tf_float32_values,
)
from mlsrv.protocol.types import RequestFormat, SignatureInfo, TensorInfo

__all__ = [
    "decode_classify_response",
    "decode_error",
    "decode_examples_request",
    "decode_metadata",
    "decode_model_list",
    "decode_predict_inputs",
    "decode_predict_response",
    "decode_regress_response",
    "decode_status",
    "encode_classify_response",
    "encode_error",
    "encode_metadata",
    "encode_model_list",
    "encode_predict_request",
    "encode_predict_response",
    "encode_regress_response",
    "encode_status",
    "parse_body",
    "request_format_of",
    "signature_name_of",
]

BYTES_SUFFIX = "_bytes"


def parse_body(body: bytes | bytearray | memoryview, *, exact: bool = True) -> dict[str, Any]:
    """Parse a request body as TF Serving does (step 1); the top level must be an object.

    ``exact=False``: raise ``ExactParseNeeded`` rather than run the slow exact parser (see ``loads``).
    """
    doc = loads(body, exact=exact)
    if type(doc) is not dict:
        raise InvalidArgument(f"JSON Value: {value_to_string(doc)} Is not object")
    return doc


def request_format_of(doc: Mapping[str, Any]) -> RequestFormat:
    """Row (``instances``) or columnar (``inputs``); exactly one of the two keys must be present."""
    has_instances = "instances" in doc
    if has_instances and "inputs" in doc:
        raise InvalidArgument(
            f"JSON Value: {value_to_string(doc)} Not formatted correctly expecting only one of "
            "'inputs' or 'instances' keys to exist "
        )
    if has_instances:
        return RequestFormat.ROW
    if "inputs" in doc:
        return RequestFormat.COLUMNAR
    raise InvalidArgument("Missing 'inputs' or 'instances' key")


def decode_predict_inputs(
    doc: Mapping[str, Any], signature: SignatureInfo
) -> tuple[dict[str, np.ndarray], RequestFormat]:
    """Steps 3b-8: the input tensors, typed by the signature's input dtypes, and the request format."""
    if not signature.inputs:
        name = signature_name_of(doc)
        raise InvalidArgument(f"Failed to get input map for signature: {name or 'DEFAULT'}")
    fmt = request_format_of(doc)
    if fmt is RequestFormat.ROW:
        return _decode_instances(doc, signature.inputs), fmt
    return _decode_columnar(doc["inputs"], signature.inputs), fmt


def _is_named(value: Any) -> bool:
    """An object that holds named inputs, as opposed to a ``{"b64": ...}`` value."""
    return type(value) is dict and not is_b64_object(value)


def _decode_columnar(value: Any, inputs: Mapping[str, TensorInfo]) -> dict[str, np.ndarray]:
    if not _is_named(value):
        if len(inputs) > 1:
            raise InvalidArgument(
                "inputs is a plain value/list, but expecting an object as multiple input tensors "
                "required as per tensorinfo_map"
            )
        name, info = next(iter(inputs.items()))
        return {name: fill_tensor(value, info.dtype)}
    out: dict[str, np.ndarray] = {}
    for name in sorted(inputs):
        if name not in value:
            raise InvalidArgument(f"Missing named input: {name} in 'inputs' object.")
        out[name] = fill_tensor(value[name], inputs[name].dtype)
    return out


def _decode_instances(doc: Mapping[str, Any], inputs: Mapping[str, TensorInfo]) -> dict[str, np.ndarray]:
    instances = doc["instances"]
    if type(instances) is not list:
        raise InvalidArgument(f"JSON Value: {value_to_string(doc)} Expecting 'instances' to be an list/array")
    if not instances:
        raise InvalidArgument(f"JSON Value: {value_to_string(doc)} No values in 'instances' array")
    if type(instances[0]) is not dict and len(inputs) > 1:
        raise InvalidArgument(
            "instances is a plain list, but expecting list of objects as multiple input tensors "
            "required as per tensorinfo_map"
        )
    named = _is_named(instances[0])
    fast = _instances_fast(instances, inputs, named)
    if fast is not None:
        return fast
    return _instances_exact(instances, inputs, named)


def _instances_fast(
    instances: list[Any], inputs: Mapping[str, TensorInfo], named: bool
) -> dict[str, np.ndarray] | None:
    """Whole-batch conversion when every element is plainly valid (the common case)."""
    if not named:
        arr = fill_fast(instances, next(iter(inputs.values())).dtype) if len(inputs) == 1 else None
        return None if arr is None else {next(iter(inputs)): arr}
    names = inputs.keys()
    if "b64" in names or not all(type(e) is dict and e.keys() == names for e in instances):
        return None
    out: dict[str, np.ndarray] = {}
    for name, info in inputs.items():
        arr = fill_fast([e[name] for e in instances], info.dtype)
        if arr is None:
            return None
        out[name] = arr
    return out


class _Batch:
    """Per-input accumulation for row format (TF's ``AddInstanceItem`` size/shape maps)."""

    def __init__(self, inputs: Mapping[str, TensorInfo]) -> None:
        self.inputs = inputs
        self.values: dict[str, list[Any]] = {}
        self.sizes: dict[str, int] = {}
        self.shapes: dict[str, list[int]] = {}

    def add(self, item: Any, name: str) -> None:
        if name not in self.inputs:
            raise InvalidArgument(f"JSON object: does not have named input: {name}")
        values, shape = fill_exact(item, self.inputs[name].dtype)
        if name not in self.values:
            self.values[name] = values
            self.sizes[name] = len(values)
            self.shapes[name] = shape
            return
        if self.sizes[name] != len(values):
            raise InvalidArgument(f"Expecting tensor size: {self.sizes[name]} but got: {len(values)}")
        if self.shapes[name] != shape:
            raise InvalidArgument(
                f"Expecting shape {shape_to_string(self.shapes[name])} but got: {shape_to_string(shape)}"
            )
        self.values[name].extend(values)


def _instances_exact(instances: list[Any], inputs: Mapping[str, TensorInfo], named: bool) -> dict[str, np.ndarray]:
    """TF's ``FillTensorMapFromInstancesList``, element by element, with its wrapped messages."""
    batch = _Batch(inputs)
    names = sorted(inputs)
    for i, element in enumerate(instances):
        if named:
            if not _is_named(element):
                raise InvalidArgument(f"Expecting object but got list at item {i} of input list")
            for key, value in element.items():
                try:
                    batch.add(value, key)
                except MlsrvError as exc:
                    raise InvalidArgument(
                        f"Failed to process element: {i} key: {key} of 'instances' list. Error: {status_text(exc)}"
                    ) from None
            if set(element) != set(names):
                raise InvalidArgument(
                    f"Failed to process element: {i} of 'instances' list. JSON object: "
                    f"{value_to_string(element)} keys must be equal to: {','.join(names)}"
                )
        else:
            if _is_named(element):
                raise InvalidArgument(f"Expecting value/list but got object at item {i} of input list")
            try:
                batch.add(element, names[0])
            except MlsrvError as exc:
                raise InvalidArgument(
                    f"Failed to process element: {i} of 'instances' list. Error: {status_text(exc)}"
                ) from None
    return {
        name: to_array(values, [len(instances), *batch.shapes[name]], inputs[name].dtype)
        for name, values in batch.values.items()
    }


def encode_predict_response(outputs: Mapping[str, np.ndarray], fmt: RequestFormat) -> bytes:
    """TF's ``MakeJsonFromTensors``: ``{"predictions": ...}`` for row requests, ``{"outputs": ...}`` else.

    Strings in outputs whose alias ends in ``_bytes`` are written as ``{"b64": ...}``. Floats carry
    TF's decimal values (float32 through :func:`tf_float32_values`), non-finite ones as bare
    ``NaN``/``Infinity``/``-Infinity``.
    """
    if not outputs:
        raise InvalidArgument("Cannot convert empty tensor map to JSON")
    if len(outputs) == 1:  # the common answer of a small model: straight to orjson
        (arr,) = outputs.values()
        values = small_float32_json(arr)
        if values is not None:
            return dumps({"predictions" if fmt is RequestFormat.ROW else "outputs": values})
    return _encode_any_predict_response(outputs, fmt)


def _encode_any_predict_response(outputs: Mapping[str, np.ndarray], fmt: RequestFormat) -> bytes:
    """:func:`encode_predict_response` for any outputs (what it does when its shortcut does not apply)."""
    outputs = {name: _tf_values(arr) for name, arr in outputs.items()}
    if fmt is RequestFormat.ROW:
        return _row_response(outputs)
    for name, arr in outputs.items():
        check_writable(name, arr)
    if len(outputs) == 1:
        name, arr = next(iter(outputs.items()))
        return dumps({"outputs": tensor_json(arr, as_b64=name.endswith(BYTES_SUFFIX))})
    return dumps(
        {"outputs": {name: tensor_json(arr, as_b64=name.endswith(BYTES_SUFFIX)) for name, arr in outputs.items()}}
    )


def _tf_values(arr: np.ndarray) -> np.ndarray:
    return tf_float32_values(arr) if arr.dtype == np.float32 else arr


def _row_response(outputs: Mapping[str, np.ndarray]) -> bytes:
    batch: int | None = None
    for name, arr in outputs.items():
        if arr.ndim == 0:
            raise InvalidArgument(f"Tensor name: {name} has no shape information ")
        if batch is None:
            batch = arr.shape[0]
        elif arr.shape[0] != batch:
            raise InvalidArgument(f"Tensor name: {name} has inconsistent batch size: {arr.shape[0]} expecting: {batch}")
    for name, arr in outputs.items():
        check_writable(name, arr)
    if len(outputs) == 1:
        name, arr = next(iter(outputs.items()))
        return dumps({"predictions": tensor_json(arr, as_b64=name.endswith(BYTES_SUFFIX))})
    rows = {name: tensor_rows(arr, as_b64=name.endswith(BYTES_SUFFIX)) for name, arr in outputs.items()}
    return dumps({"predictions": [{name: column[i] for name, column in rows.items()} for i in range(batch or 0)]})


def encode_error(message: str) -> bytes:
    """TF's error body, byte for byte: ``{\\n    "error": "<message>"\\n}`` (rapidjson PrettyWriter)."""
    return ('{\n    "error": ' + escape_string(message) + "\n}").encode("utf-8", "replace")
