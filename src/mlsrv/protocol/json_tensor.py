"""JSON values <-> numpy tensors, with TF Serving's rules (``FillTensorProto``, ``AddValueToTensor``).

Decoding has two paths that give the same result. The fast path flattens a rectangular nest of
lists level by level and lets numpy convert the leaves in C; it checks leaf types in bulk and bails
out on anything unusual (ragged lists, strings or objects in numeric tensors, bools among numbers,
floats for integer dtypes, out-of-range integers). The exact path is a line-by-line port of
TF Serving's validation and produces its messages; it only runs when the fast path bails out, so
every error comes from it. Both are iterative, so nesting depth never overflows the stack.
Writing tensors back to JSON is in :mod:`json_write`.
"""

from __future__ import annotations

from functools import reduce
from operator import iconcat
from typing import Any, Final

import numpy as np

from mlsrv.errors import InvalidArgument, MlsrvError, Unimplemented
from mlsrv.protocol import dtypes
from mlsrv.protocol.json_value import (
    INT64_MAX,
    INT64_MIN,
    UINT64_MAX,
    absl_b64decode,
    decode_b64_object,
    is_b64_object,
    json_type_name,
    value_to_string,
)

MAX_RANK: Final = 64  # numpy's limit; TF would fail later in the session for such tensors
_FLOATS: Final = frozenset({"DT_FLOAT", "DT_DOUBLE"})
_FLOAT32_MAX: Final = float(np.finfo(np.float32).max)
_INT_RANGES: Final[dict[str, tuple[int, int]]] = {
    "DT_INT32": (-(1 << 31), (1 << 31) - 1),  # TF checks IsInt() for all four, then narrows with a C cast
    "DT_INT16": (-(1 << 31), (1 << 31) - 1),
    "DT_INT8": (-(1 << 31), (1 << 31) - 1),
    "DT_UINT8": (-(1 << 31), (1 << 31) - 1),
    "DT_INT64": (INT64_MIN, INT64_MAX),
    "DT_UINT32": (0, (1 << 32) - 1),
    "DT_UINT64": (0, UINT64_MAX),
}


def shape_to_string(shape: list[int]) -> str:
    """TF's ``ShapeToString``: ``[2,3]``; a scalar is ``[]``."""
    return "[" + ",".join(str(d) for d in shape) + "]"


def _type_error(value: Any, short: str) -> InvalidArgument:
    return InvalidArgument(
        f"JSON Value: {value_to_string(value)} Type: {json_type_name(value)} is not of expected type: {short}"
    )


def _leaf(value: Any, dt: str, short: str) -> Any:
    """TF's ``AddValueToTensor`` (plus the base64 branch of ``FillTensorProto``) for one JSON leaf."""
    t = type(value)
    if t is dict:
        if dt == "DT_STRING":
            return decode_b64_object(value)
        raise _type_error(value, short)
    if dt in _FLOATS:
        if t is float:
            return value
        if t is int:
            try:
                return float(value)
            except OverflowError:
                return float("inf") if value > 0 else float("-inf")
        raise _type_error(value, short)
    bounds = _INT_RANGES.get(dt)
    if bounds is not None:
        if t is int and bounds[0] <= value <= bounds[1]:
            return value
        raise _type_error(value, short)
    if dt == "DT_BOOL":
        if t is bool:
            return value
        raise _type_error(value, short)
    if dt == "DT_STRING":
        if t is str:
            return value.encode("utf-8")
        raise _type_error(value, short)
    raise Unimplemented(f"Conversion of JSON Value: {value_to_string(value)} to type: {short}")


def dense_shape(value: Any) -> list[int]:
    """TF's ``GetDenseTensorShape``: the sizes along the first-child path."""
    shape: list[int] = []
    while type(value) is list:
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def fill_exact(value: Any, dt: str) -> tuple[list[Any], list[int]]:
    """TF's ``FillTensorProto`` from level 0: the converted leaves in order and the tensor shape."""
    short = dtypes.by_name(dt).short
    shape = dense_shape(value)
    rank = len(shape)
    out: list[Any] = []

    def leaf(item: Any, level: int) -> None:
        if level != rank:
            raise InvalidArgument(
                f"JSON Value: {value_to_string(item)} found at incorrect level: {level + 1} "
                f"in the JSON DOM. Expected at level: {rank}"
            )
        out.append(_leaf(item, dt, short))

    def check_list(item: list[Any], level: int) -> None:
        if level >= rank:
            raise InvalidArgument(f"Encountered list at unexpected level: {level} expected < {rank}")
        if len(item) != shape[level]:
            raise InvalidArgument(
                f"Encountered list at unexpected size: {len(item)} at level: {level} expected size: {shape[level]}"
            )

    if type(value) is not list:
        leaf(value, 0)
        return out, shape
    check_list(value, 0)
    stack = [iter(value)]
    while stack:
        level = len(stack)
        for item in stack[-1]:
            if type(item) is list:
                check_list(item, level)
                stack.append(iter(item))
                break
            leaf(item, level)
        else:
            stack.pop()
    return out, shape


def to_array(values: list[Any], shape: list[int], dt: str) -> np.ndarray:
    """Build the numpy tensor from converted leaves (float32 overflow gives inf, as a C cast does)."""
    np_dtype = dtypes.by_name(dt).numpy
    arr: np.ndarray
    if dt == "DT_STRING" or np_dtype is None:
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
    elif dt in _FLOATS:
        arr = np.array(values, dtype=np.float64)
    elif dt == "DT_UINT64":
        arr = np.array(values, dtype=np.uint64)
    elif dt in _INT_RANGES or dt == "DT_BOOL":
        arr = np.array(values, dtype=np.int64 if dt != "DT_BOOL" else np.bool_)
    else:
        arr = np.empty(0, dtype=np_dtype)  # unsupported dtypes only get here without values
    if np_dtype is not None and arr.dtype != np_dtype:
        with np.errstate(over="ignore"):
            arr = arr.astype(np_dtype)
    if len(shape) > MAX_RANK:
        raise InvalidArgument(f"Tensor rank {len(shape)} exceeds the maximum of {MAX_RANK} dimensions")
    return arr.reshape(shape)


def flatten_dense(value: list[Any], *, strict: bool = True) -> tuple[list[Any], list[int]] | None:
    """Leaves and shape of a rectangular nest of lists; None when ragged or mixed with non-lists.

    ``strict=False`` skips checking that inner levels hold only lists. That is safe when numpy will
    type the leaves: a string or object among lists either breaks the sizes or adds str leaves.
    """
    shape = [len(value)]
    level = value
    while level and type(level[0]) is list:
        if strict and set(map(type, level)) != {list}:
            return None
        try:
            sizes = set(map(len, level))
        except TypeError:  # a number, bool or null among lists
            return None
        if len(sizes) != 1:
            return None
        shape.append(sizes.pop())
        level = reduce(iconcat, level, [])
    if len(shape) > MAX_RANK:
        return None
    return level, shape


#: Up to this many leaves, ``_has_bool`` looks at every leaf's type instead of at the 0s and 1s only.
_FEW_LEAVES: Final = 64


def _has_bool(flat: list[Any], arr: np.ndarray) -> bool:
    """Whether numeric leaves include JSON ``true``/``false`` (numpy silently turns them into 1/0)."""
    if len(flat) <= _FEW_LEAVES:  # the common small request: one pass over the leaves beats three numpy ops
        return bool in set(map(type, flat))
    candidates = np.flatnonzero((arr == 0) | (arr == 1))
    if candidates.size == 0:
        return False
    return bool in set(map(type, map(flat.__getitem__, candidates.tolist())))


def _strings_fast(flat: list[Any]) -> list[bytes] | None:
    """UTF-8 bytes of plain strings and well-formed ``{"b64": ...}`` objects; None on anything else."""
    types = set(map(type, flat))
    if types == {str}:
        return [s.encode("utf-8") for s in flat]
    if not types <= {str, dict}:
        return None
    out: list[bytes] = []
    for item in flat:
        if type(item) is str:
            out.append(item.encode("utf-8"))
            continue
        decoded = absl_b64decode(item["b64"]) if is_b64_object(item) else None
        if decoded is None:
            return None
        out.append(decoded)
    return out


def fill_fast(value: Any, dt: str) -> np.ndarray | None:
    """The tensor for ``value`` when it is plainly valid for ``dt``; None means "use :func:`fill_exact`"."""
    if type(value) is not list:
        return None
    np_dtype = dtypes.by_name(dt).numpy
    if np_dtype is None or (dt not in _FLOATS and dt not in _INT_RANGES and dt not in ("DT_BOOL", "DT_STRING")):
        return None
    dense = flatten_dense(value, strict=dt == "DT_STRING")
    if dense is None:
        return None
    flat, shape = dense
    if not flat:
        # Without leaves numpy cannot see a stray "" or {} among the lists: re-check strictly.
        if dt != "DT_STRING" and flatten_dense(value) is None:
            return None
        return np.empty(shape, dtype=np_dtype)
    if dt == "DT_STRING":
        converted = _strings_fast(flat)
        if converted is None:
            return None
        arr = np.empty(len(flat), dtype=object)
        arr[:] = converted
        return arr.reshape(shape)
    try:
        arr = np.array(flat)
    except (ValueError, TypeError, OverflowError):
        return None
    kind = arr.dtype.kind
    if dt == "DT_BOOL":
        return arr.reshape(shape) if kind == "b" else None
    if kind not in "iu" and not (kind == "f" and dt in _FLOATS):
        return None
    if _has_bool(flat, arr):
        return None
    if dt in _FLOATS:
        if kind != "f":
            arr = arr.astype(np.float64)
        if dt == "DT_DOUBLE" or (len(flat) <= _FEW_LEAVES and max(map(abs, flat)) <= _FLOAT32_MAX):
            return arr.astype(np_dtype, copy=False).reshape(shape)  # nothing can overflow: no errstate (~2 µs)
        with np.errstate(over="ignore"):  # TF parses a float beyond float32's range as infinity
            return arr.astype(np_dtype, copy=False).reshape(shape)
    low, high = _INT_RANGES[dt]
    if int(arr.min()) < low or int(arr.max()) > high:
        return None
    return arr.astype(np_dtype, copy=False).reshape(shape)


def fill_tensor(value: Any, dt: str) -> np.ndarray:
    """One JSON value as a tensor of signature dtype ``dt``; raises TF Serving's errors."""
    arr = fill_fast(value, dt)
    if arr is not None:
        return arr
    values, shape = fill_exact(value, dt)
    return to_array(values, shape, dt)


def status_text(error: MlsrvError) -> str:
    """absl ``Status::ToString()``: ``INVALID_ARGUMENT: <message>``, as TF nests inner errors."""
    return f"{error.code.name}: {error.message}"
