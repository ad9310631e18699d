"""numpy tensors -> JSON values as TF Serving writes them (``MakeJsonFromTensors``' value rules).

Tensors go through orjson's numpy support, which writes the shortest text that reads back as the
same float64 and always keeps a ``.0`` or exponent on floats. For float64 that is TF's value too (TF
writes ``%.6g`` when it round-trips, else ``%.17g``). For float32, TF writes ``%.6g`` or ``%.9g``,
whose value *as a JSON (double) number* differs from the float32's shortest text (1/3 is
``0.333333343``, not ``0.33333334``), so the server first maps float32 tensors to those decimal
values with :func:`tf_float32_values`. orjson writes NaN/Inf as ``null``, so a float tensor with non-finite
values is serialized alone and those ``null``s are replaced by TF Serving's bare ``NaN``,
``Infinity`` and ``-Infinity`` tokens. Strings become text, or ``{"b64": ...}`` when asked.
"""

from __future__ import annotations

import base64
import itertools
import math
import struct
from collections.abc import Callable
from typing import Any, Final

import numpy as np
import orjson

from mlsrv.errors import InvalidArgument
from mlsrv.protocol import dtypes

_WRITABLE: Final = frozenset(
    {
        "DT_FLOAT",
        "DT_DOUBLE",
        "DT_INT32",
        "DT_INT16",
        "DT_INT8",
        "DT_UINT8",
        "DT_INT64",
        "DT_UINT32",
        "DT_UINT64",
        "DT_BOOL",
        "DT_STRING",
    }
)
_OPTS: Final = orjson.OPT_SERIALIZE_NUMPY
_TOKENS: Final = np.array([b"NaN", b"Infinity", b"-Infinity"], dtype=object)
_chain = itertools.chain.from_iterable


_POW10: Final = 10.0 ** np.arange(23)  # exact doubles
_SMALL: Final = 48  # below this many values a Python loop beats the numpy version's fixed cost
_FLOAT32: Final = np.dtype(np.float32)
_F32: Final = struct.Struct("<f")
_MAX_EXACT_SCALE: Final = 12  # float32 mantissa (24 bits) * 5**12 (28 bits) fits a double's 53 bits


def tf_float32_values(arr: np.ndarray) -> np.ndarray:
    """The float64 values of the decimals TF Serving's ``WriteDecimal`` writes for a float32 tensor.

    TF writes ``%.6g`` if that parses back to the same float32, else ``%.9g``. Vectorised and exact:
    the rounding to 6/9 significant digits is done on exact products (or exact integers) and rounds
    half to even like printf; the rare values outside that range are formatted one by one.
    """
    if arr.size <= _SMALL:
        return np.array([_tf_float32(v) for v in arr.ravel().tolist()], dtype=np.float64).reshape(arr.shape)
    flat = arr.astype(np.float64).ravel()
    nonzero = np.flatnonzero(np.isfinite(flat) & (flat != 0))
    if nonzero.size:
        values = flat[nonzero]
        decimals = _round_significant(values, 6)
        retry = np.flatnonzero(decimals.astype(np.float32) != values.astype(np.float32))
        if retry.size:
            decimals[retry] = _round_significant(values[retry], 9)
        flat[nonzero] = decimals
    return flat.reshape(arr.shape)


def _tf_float32(value: float) -> float:
    """One value of :func:`tf_float32_values` (cheaper than numpy for a few values)."""
    if not math.isfinite(value) or value == 0:
        return value
    decimal = float(f"{value:.6g}")
    return decimal if _F32.pack(decimal) == _F32.pack(value) else float(f"{value:.9g}")


def small_float32_json(arr: np.ndarray) -> list[Any] | None:
    """TF's decimal values (:func:`tf_float32_values`) of a small float32 tensor, as nested lists of
    floats for orjson: at least one dimension, 1 to ``_SMALL`` values, all finite, native byte order.
    None for any other tensor.

    The answer of a small model (one score, a few logits) without the general path's numpy steps and
    checks, each of which such a tensor passes (it is writable, has a batch dimension, no ``NaN`` or
    ``Infinity``). orjson writes a float and a float64 array element alike (a test checks the bytes).
    """
    if arr.dtype is not _FLOAT32 or arr.ndim == 0 or not 0 < arr.size <= _SMALL:
        return None
    values = arr.ravel().tolist()
    if not all(map(math.isfinite, values)):
        return None
    decimals = [_tf_float32(value) for value in values]
    if arr.ndim == 1:
        return decimals
    if arr.ndim == 2:
        width = arr.shape[1]
        return [decimals[start : start + width] for start in range(0, len(decimals), width)]
    nested: list[Any] = np.array(decimals).reshape(arr.shape).tolist()
    return nested


def _round_significant(values: np.ndarray, digits: int) -> np.ndarray:
    """The doubles nearest to ``"%.<digits>g" % v`` for finite, non-zero float32 values ``v``."""
    mag = np.abs(values)
    exp10 = np.floor(np.log10(mag)).astype(np.int64)
    scale = digits - 1 - exp10
    if scale.min() >= 0 and scale.max() <= _MAX_EXACT_SCALE:  # the common case: no masks needed
        scaled = mag * _POW10[scale]  # exact
        scale -= (scaled >= _POW10[digits]).astype(np.int64) - (scaled < _POW10[digits - 1])
        if scale.min() >= 0 and scale.max() <= _MAX_EXACT_SCALE:
            result: np.ndarray = np.copysign(np.rint(mag * _POW10[scale]) / _POW10[scale], values)
            return result
        exp10 = digits - 1 - scale
    exact = mag < 1e18
    for _ in range(2):  # log10 may be one off next to a power of ten; exact comparisons fix it
        scale = digits - 1 - exp10
        low = exact & (scale >= 0) & (scale <= _MAX_EXACT_SCALE)
        scaled = mag[low] * _POW10[scale[low]]  # exact
        exp10[low] += (scaled >= _POW10[digits]).astype(np.int64) - (scaled < _POW10[digits - 1])
        high = exact & (scale < 0)
        above = mag[high] >= _POW10[exp10[high] + 1]
        exp10[high] += above.astype(np.int64) - (mag[high] < _POW10[exp10[high]])
    scale = digits - 1 - exp10
    low = exact & (scale >= 0) & (scale <= _MAX_EXACT_SCALE)
    high = exact & (scale < 0)
    out = np.empty_like(values)
    out[low] = np.rint(mag[low] * _POW10[scale[low]]) / _POW10[scale[low]]
    unit = 10 ** -scale[high]
    quotient, rest = np.divmod(mag[high].astype(np.int64), unit)  # a float32 this large is an integer
    quotient += (rest > unit // 2) | ((rest == unit // 2) & (quotient % 2 == 1))  # half to even
    out[high] = quotient * _POW10[-scale[high]]
    others = ~(low | high)  # tiny or huge: rare, so formatted one by one
    out[others] = [float(f"{v:.{digits}g}") for v in mag[others].tolist()]
    signed: np.ndarray = np.copysign(out, values)
    return signed


def check_writable(name: str, arr: np.ndarray) -> None:
    """TF writes only these dtypes; others fail with ``Failed to write JSON value for tensor type``."""
    dt = dtypes.for_array(arr)
    if dt.name not in _WRITABLE and arr.size:
        raise InvalidArgument(f"Failed to write JSON value for tensor type: {dt.short}")


def _as_bytes(item: Any) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode("utf-8")
    return str(item).encode("utf-8")


def _b64(item: Any) -> dict[str, str]:
    return {"b64": base64.b64encode(_as_bytes(item)).decode("ascii")}


def _text(item: Any) -> str:
    # NOTE: TF writes the raw bytes (invalid UTF-8 gives invalid JSON); we substitute U+FFFD instead.
    return item if isinstance(item, str) else _as_bytes(item).decode("utf-8", "replace")


def _strings(arr: np.ndarray, as_b64: bool) -> Any:
    convert: Callable[[Any], Any] = _b64 if as_b64 else _text
    out = np.empty(arr.size, dtype=object)
    out[:] = [convert(item) for item in arr.ravel()]
    return out.reshape(arr.shape).tolist()


def _float_tokens(arr: np.ndarray) -> list[bytes]:
    """TF's tokens for the non-finite values of ``arr``, in C order."""
    bad = arr[~np.isfinite(arr)]
    which = np.where(np.isnan(bad), 0, np.where(bad > 0, 1, 2))
    tokens: list[bytes] = _TOKENS[which].tolist()
    return tokens


def _native(arr: np.ndarray) -> np.ndarray:
    """C-contiguous and native byte order, which orjson's numpy support requires."""
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr if arr.flags.c_contiguous else arr.copy(order="C")  # keeps 0-d arrays 0-d


def _numeric(arr: np.ndarray) -> Any:
    """A numeric tensor as something orjson writes: the array, a numpy scalar, or a Fragment."""
    arr = _native(arr)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        if arr.ndim == 0:
            return orjson.Fragment(_float_tokens(arr.reshape(1))[0])
        pieces = orjson.dumps(arr, option=_OPTS).split(b"null")
        tokens = _float_tokens(arr)
        tokens.append(b"")
        return orjson.Fragment(b"".join(_chain(zip(pieces, tokens, strict=True))))
    if arr.ndim == 0:
        return arr[()]
    return arr


def tensor_json(arr: np.ndarray, *, as_b64: bool) -> Any:
    """The full tensor as an orjson-serializable value (nested lists; a scalar tensor is a bare value).

    Strings become ``{"b64": ...}`` objects when ``as_b64`` (TF's ``_bytes`` alias rule), else text.
    """
    if arr.dtype.kind in "OSU":
        return _strings(arr, as_b64)
    return _numeric(arr)


def tensor_rows(arr: np.ndarray, *, as_b64: bool) -> list[Any]:
    """One orjson-serializable value per dim-0 row, for row-format responses with several outputs."""
    if arr.dtype.kind in "OSU":
        rows: list[Any] = _strings(arr, as_b64)
        return rows
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        return [_numeric(arr[i, ...]) for i in range(arr.shape[0])]
    return list(_native(arr))


def dumps(doc: Any) -> bytes:
    """orjson with numpy support: the one serializer for response bodies."""
    return orjson.dumps(doc, option=_OPTS)
