"""numpy tensors -> JSON values as TF Serving writes them (``MakeJsonFromTensors``' value rules).

Tensors go through orjson's numpy support, which writes the shortest text that reads back as the
same float32/float64 (TF pads to ``%.9g``/``%.17g``; the values are identical) and always keeps a
``.0`` or exponent on floats. orjson writes NaN/Inf as ``null``, so a float tensor with non-finite
values is serialized alone and those ``null``s are replaced by TF Serving's bare ``NaN``,
``Infinity`` and ``-Infinity`` tokens. Strings become text, or ``{"b64": ...}`` when asked.
"""

from __future__ import annotations

import base64
import itertools
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
