"""The REST client's side of predict: request bodies out, response bodies back to numpy.

The client does not know output dtypes, so responses are typed by inspection: integers -> int64
(uint64 when above int64), any decimal or NaN/Infinity -> float64, booleans -> bool, strings and
``{"b64": ...}`` objects -> ``object`` arrays of ``bytes``. Float values read back equal to what
the server held (float32 outputs: compare after ``astype(np.float32)``).

Output names: a response with several outputs names them; one with a single output does not (TF
Serving writes the bare tensor), so that tensor is returned under ``output_name`` (default ``""``).
Inputs keyed ``""`` are sent the same way: as the bare value for a single-input signature.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from mlsrv.errors import InvalidArgument, TransportError
from mlsrv.protocol.json_model import response_object
from mlsrv.protocol.json_parse import loads
from mlsrv.protocol.json_tensor import flatten_dense
from mlsrv.protocol.json_value import absl_b64decode, is_b64_object
from mlsrv.protocol.json_write import dumps, tensor_json, tensor_rows
from mlsrv.protocol.types import RequestFormat


def _send_b64(arr: np.ndarray) -> bool:
    # bytes go as {"b64": ...} so that any byte string survives; numpy str arrays go as text.
    return arr.dtype.kind != "U"


def encode_predict_request(inputs: Mapping[str, np.ndarray], fmt: RequestFormat, signature_name: str = "") -> bytes:
    """A predict body in row (``instances``) or columnar (``inputs``) format.

    Raises InvalidArgument when row format cannot express the inputs (a scalar, or inputs whose
    dim 0 differ).
    """
    if not inputs:
        raise InvalidArgument("predict request needs at least one input")
    doc: dict[str, Any] = {}
    if signature_name:
        doc["signature_name"] = signature_name
    unnamed = len(inputs) == 1 and "" in inputs
    if fmt is RequestFormat.COLUMNAR:
        if unnamed:
            arr = inputs[""]
            doc["inputs"] = tensor_json(arr, as_b64=_send_b64(arr))
        else:
            doc["inputs"] = {name: tensor_json(arr, as_b64=_send_b64(arr)) for name, arr in inputs.items()}
        return dumps(doc)
    batch = {arr.shape[0] if arr.ndim else None for arr in inputs.values()}
    if None in batch or len(batch) != 1:
        raise InvalidArgument(
            "row format ('instances') needs every input to have the same dim 0; use columnar ('inputs')"
        )
    if unnamed:
        arr = inputs[""]
        doc["instances"] = tensor_json(arr, as_b64=_send_b64(arr))
    else:
        rows = {name: tensor_rows(arr, as_b64=_send_b64(arr)) for name, arr in inputs.items()}
        size = batch.pop() or 0
        doc["instances"] = [{name: column[i] for name, column in rows.items()} for i in range(size)]
    return dumps(doc)


def _leaf_bytes(item: Any) -> bytes:
    if type(item) is str:
        return item.encode("utf-8")
    decoded = absl_b64decode(item["b64"]) if is_b64_object(item) else None
    if decoded is None:
        raise TransportError(f"unexpected object in response: {item!r:.80}")
    return decoded


def json_to_array(value: Any) -> np.ndarray:
    """A response tensor (nested lists of scalars) as numpy, typed by inspection (see module doc)."""
    if type(value) is not list:
        return json_to_array([value]).reshape(())
    dense = flatten_dense(value)
    if dense is None:
        raise TransportError("response tensor is not rectangular")
    flat, shape = dense
    types = set(map(type, flat))
    try:
        if not types or types <= {int, float}:
            if types == {int}:
                try:
                    return np.array(flat, dtype=np.int64).reshape(shape)
                except OverflowError:
                    return np.array(flat, dtype=np.uint64).reshape(shape)
            return np.array(flat, dtype=np.float64).reshape(shape)
        if types == {bool}:
            return np.array(flat, dtype=np.bool_).reshape(shape)
        if types <= {str, dict}:
            arr = np.empty(len(flat), dtype=object)
            arr[:] = [_leaf_bytes(item) for item in flat]
            return arr.reshape(shape)
    except OverflowError:
        raise TransportError("integer out of range in response") from None
    raise TransportError(f"unexpected JSON types in response tensor: {sorted(t.__name__ for t in types)}")


def _named(value: Any) -> bool:
    return type(value) is dict and not is_b64_object(value)


def decode_predict_response(body: bytes, output_name: str = "") -> tuple[dict[str, np.ndarray], RequestFormat]:
    """Inverse of ``encode_predict_response``: the output tensors and the format of the body."""
    doc = response_object(body)
    if "predictions" in doc:
        rows = doc["predictions"]
        if type(rows) is not list:
            raise TransportError("'predictions' is not a list")
        if rows and _named(rows[0]):
            names = list(rows[0])
            if not all(_named(row) and list(row) == names for row in rows):
                raise TransportError("'predictions' rows do not all have the same outputs")
            return {name: json_to_array([row[name] for row in rows]) for name in names}, RequestFormat.ROW
        return {output_name: json_to_array(rows)}, RequestFormat.ROW
    if "outputs" in doc:
        outputs = doc["outputs"]
        if _named(outputs):
            return {name: json_to_array(value) for name, value in outputs.items()}, RequestFormat.COLUMNAR
        return {output_name: json_to_array(outputs)}, RequestFormat.COLUMNAR
    raise TransportError("response has neither 'predictions' nor 'outputs'")


def decode_error(body: bytes) -> str:
    """The message of an error body; TF Serving's empty-body errors give ``""``, non-JSON the text."""
    if not body.strip():
        return ""
    try:
        doc = loads(body)
    except InvalidArgument:
        return body.decode("utf-8", "replace").strip()
    if type(doc) is dict and type(doc.get("error")) is str:
        return str(doc["error"])
    return body.decode("utf-8", "replace").strip()
