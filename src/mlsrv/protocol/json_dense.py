"""The C fast path for the most common REST predict body: one dense tensor of numbers.

``{"instances": [[0.1, 0.2], [0.3, 0.4]]}`` or ``{"inputs": ...}``, with an optional string
``signature_name``, for a signature with one float input; also with that input named, as TF
Serving's documentation and most clients write it: ``{"inputs": {"x": [[0.1, 0.2]]}}`` and
``{"instances": [{"x": [0.1, 0.2]}, {"x": [0.3, 0.4]}]}``. simdjson (``pysimdjson``) validates the
whole document and writes every number into float64 buffers in C, so a 3 MB image decodes in a
few milliseconds instead of the ~30 ms that building and walking 50,000 Python lists costs (a
64x784 named body: ~9 ms -> ~3 ms).

It may only take a body that the exact path (``json_codec``) would accept with the same tensor, so
it is deliberately narrow and returns ``None`` for anything else; the exact path then runs and
gives TF Serving's error texts. What makes a body "plainly dense", all checked in C-speed steps:

* simdjson accepts it (strict JSON: no NaN/Infinity, no numbers beyond double or 64-bit range, no
  trailing bytes), it starts with ``{`` (no byte-order mark) and has no backslash (so every ``"``
  delimits a string, and the string count below is exact);
* its keys are ``signature_name`` (a string without ``[``, ``]`` or ``,``) and exactly one of
  ``instances``/``inputs``, each once: a duplicate key (which orjson and simdjson resolve
  differently) adds a member comma, or brackets, to the skeleton below and falls back;
* the value is a nest of arrays whose leaves are all numbers (``as_buffer`` refuses bools, nulls,
  strings and objects) and whose bracket skeleton is exactly that of a rectangular array of the
  shape read along its first elements: the body with everything but ``[``, ``]`` and ``,`` deleted
  must equal the skeleton built from the shape. Ragged nests (even ones with the right leaf count)
  and mixed depths therefore fall back;
* named, the value is an object whose only member is the input (``inputs``), or every row is one
  (``instances``; checked row by row, since braces and names leave no trace in the skeleton); an
  input called ``b64`` falls back (``{"b64": ...}`` is a base64 value to the exact path).

``tests/protocol/test_json_dense.py`` compares both paths on generated bodies.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

import numpy as np
import simdjson

from mlsrv.protocol.json_tensor import MAX_RANK
from mlsrv.protocol.types import DEFAULT_SIGNATURE, RequestFormat, SignatureInfo

_FLOAT_DTYPES: Final = {"DT_FLOAT": np.float32, "DT_DOUBLE": np.float64}
_KEYS: Final = frozenset({"instances", "inputs", "signature_name"})
#: ``bytes.translate`` deletes these: everything but the array skeleton ``[``, ``]`` and ``,``.
_NOT_SKELETON: Final = bytes(sorted(set(range(256)) - set(b"[],")))

DenseRequest = tuple[str, dict[str, np.ndarray], RequestFormat]


def decode_dense(body: bytes, signatures: Mapping[str, SignatureInfo]) -> DenseRequest | None:
    """(signature name as sent, inputs, format) for a plainly dense body; None: use the exact path."""
    if not body.startswith(b"{") or b"\\" in body:
        return None
    try:
        doc = simdjson.Parser().parse(body)
    except (ValueError, RuntimeError):  # malformed, NaN, huge numbers, bad UTF-8, too deep: the exact path says
        return None
    if not isinstance(doc, simdjson.Object):
        return None
    keys = set(doc.keys())
    value_keys = keys & {"instances", "inputs"}
    if not keys <= _KEYS or len(value_keys) != 1:
        return None
    signature_name = doc["signature_name"] if "signature_name" in keys else ""  # (doc.get: ~6 µs)
    if type(signature_name) is not str or any(c in signature_name for c in "[],"):
        return None
    signature = signatures.get(signature_name or DEFAULT_SIGNATURE)
    if signature is None or len(signature.inputs) != 1:
        return None
    (input_name, info), = signature.inputs.items()
    numpy_dtype = _FLOAT_DTYPES.get(info.dtype)
    if numpy_dtype is None or input_name == "b64":  # {"b64": ...} is a base64 value to the exact path
        return None
    key = value_keys.pop()
    nests = _nests(doc[key], key, input_name)
    if nests is None:
        return None
    tensor = _dense_array(body, *nests, len(keys) - 1, numpy_dtype)
    if tensor is None:
        return None
    fmt = RequestFormat.ROW if key == "instances" else RequestFormat.COLUMNAR
    return signature_name, {input_name: tensor}, fmt


def _nests(value: object, key: str, input_name: str) -> tuple[list[int], list[simdjson.Array]] | None:
    """The value's leading dims and the arrays that hold its numbers, in order: the value itself,
    its one named member (``{"inputs": {"x": [...]}}``), or every row's (``{"instances": [{"x":
    [...]}, ...]}``); None when the value is none of these."""
    if isinstance(value, simdjson.Object):
        if key != "inputs" or len(value) != 1 or input_name not in value:
            return None
        member = value[input_name]
        return ([], [member]) if isinstance(member, simdjson.Array) else None
    if not isinstance(value, simdjson.Array):
        return None
    if key == "instances" and len(value) > 0 and isinstance(value[0], simdjson.Object):
        rows: list[simdjson.Array] = []
        for row in value:
            if not isinstance(row, simdjson.Object) or len(row) != 1 or input_name not in row:
                return None
            nest = row[input_name]
            if not isinstance(nest, simdjson.Array):
                return None
            rows.append(nest)
        return [len(rows)], rows
    return [], [value]


def _dense_array(
    body: bytes, leading: list[int], parts: list[simdjson.Array], other_members: int, numpy_dtype: type
) -> np.ndarray | None:
    """The tensor whose leading dims are ``leading`` and whose numbers ``parts`` hold, if the body is plainly
    dense (see the module docstring); None otherwise."""
    shape = list(leading)
    node: object = parts[0]
    while isinstance(node, simdjson.Array):
        size = len(node)
        if size == 0 or len(shape) == MAX_RANK:
            return None
        shape.append(size)
        node = node[0]
    if type(node) not in (int, float):
        return None
    try:
        buffers = [part.as_buffer(of_type="d") for part in parts]
    except TypeError:  # a leaf that is not a number
        return None
    flat = np.frombuffer(buffers[0] if len(buffers) == 1 else b"".join(buffers), dtype=np.float64)
    if flat.size != math.prod(shape):
        return None
    skeleton = body.translate(None, _NOT_SKELETON)
    core = skeleton.strip(b",")
    if len(skeleton) - len(core) != other_members or core != _skeleton(shape):
        return None
    with np.errstate(over="ignore"):  # float32 overflow gives inf, as a C cast does (and the exact path)
        return flat.astype(numpy_dtype).reshape(shape)


def _skeleton(shape: list[int]) -> bytes:
    """``[``/``]``/``,`` of a rectangular array of ``shape`` with number leaves: ``(2, 2)`` -> ``[[,],[,]]``."""
    text = b""
    for size in reversed(shape):  # repetition, not join: one row of 784 numbers took ~20 µs with join
        text = b"[" + (text + b",") * (size - 1) + text + b"]"
    return text
