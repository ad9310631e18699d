"""TensorFlow ``DataType`` <-> numpy dtype table, shared by every codec (never imports TensorFlow).

Strings are numpy ``object`` arrays of ``bytes`` (what ``tf.Tensor.numpy()`` returns). bfloat16 uses
``ml_dtypes`` when it is importable (it ships with TensorFlow); without it bfloat16 is unsupported.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Final

import numpy as np


@dataclass(frozen=True, slots=True)
class DType:
    """One TF dtype: its enum value, ``DT_*`` name, TF's short name (used in messages) and numpy dtype.

    ``lazy`` marks bfloat16, whose numpy dtype comes from ``ml_dtypes``: importing it takes ~0.7 s,
    so it happens on first use of :attr:`numpy`, not when the CLI starts (``mlsrv --help``).
    """

    enum: int
    name: str
    short: str
    eager_numpy: np.dtype | None
    lazy: bool = False

    @property
    def numpy(self) -> np.dtype | None:
        return _bfloat16() if self.lazy else self.eager_numpy


@functools.cache
def _bfloat16() -> np.dtype | None:
    try:
        import ml_dtypes
    except ImportError:  # pragma: no cover - ml_dtypes ships with TensorFlow
        return None
    bfloat16: np.dtype = np.dtype(ml_dtypes.bfloat16)
    return bfloat16


_TABLE: Final[tuple[DType, ...]] = (
    DType(0, "DT_INVALID", "invalid", None),
    DType(1, "DT_FLOAT", "float", np.dtype(np.float32)),
    DType(2, "DT_DOUBLE", "double", np.dtype(np.float64)),
    DType(3, "DT_INT32", "int32", np.dtype(np.int32)),
    DType(4, "DT_UINT8", "uint8", np.dtype(np.uint8)),
    DType(5, "DT_INT16", "int16", np.dtype(np.int16)),
    DType(6, "DT_INT8", "int8", np.dtype(np.int8)),
    DType(7, "DT_STRING", "string", np.dtype(object)),
    DType(8, "DT_COMPLEX64", "complex64", np.dtype(np.complex64)),
    DType(9, "DT_INT64", "int64", np.dtype(np.int64)),
    DType(10, "DT_BOOL", "bool", np.dtype(np.bool_)),
    DType(11, "DT_QINT8", "qint8", None),
    DType(12, "DT_QUINT8", "quint8", None),
    DType(13, "DT_QINT32", "qint32", None),
    DType(14, "DT_BFLOAT16", "bfloat16", None, lazy=True),
    DType(15, "DT_QINT16", "qint16", None),
    DType(16, "DT_QUINT16", "quint16", None),
    DType(17, "DT_UINT16", "uint16", np.dtype(np.uint16)),
    DType(18, "DT_COMPLEX128", "complex128", np.dtype(np.complex128)),
    DType(19, "DT_HALF", "half", np.dtype(np.float16)),
    DType(20, "DT_RESOURCE", "resource", None),
    DType(21, "DT_VARIANT", "variant", None),
    DType(22, "DT_UINT32", "uint32", np.dtype(np.uint32)),
    DType(23, "DT_UINT64", "uint64", np.dtype(np.uint64)),
)

#: TF1 variables' reference types (``DT_FLOAT_REF`` = 101 ...): they appear in old graphs' signatures and
#: read as their base type, but no numpy dtype maps back to them.
_REF_OFFSET: Final = 100
_REFS: Final[tuple[DType, ...]] = tuple(
    DType(d.enum + _REF_OFFSET, f"{d.name}_REF", f"{d.short}_ref", d.eager_numpy, d.lazy) for d in _TABLE if d.enum
)

BY_NAME: Final[dict[str, DType]] = {d.name: d for d in (*_TABLE, *_REFS)}
BY_ENUM: Final[dict[int, DType]] = {d.enum: d for d in (*_TABLE, *_REFS)}
_BY_NUMPY: Final[dict[np.dtype, DType]] = {d.eager_numpy: d for d in _TABLE if d.eager_numpy is not None}


def by_name(name: str) -> DType:
    """Look up ``DT_FLOAT``-style names; unknown names give ``DT_INVALID``."""
    return BY_NAME.get(name, BY_NAME["DT_INVALID"])


def by_enum(value: int) -> DType:
    return BY_ENUM.get(value, BY_NAME["DT_INVALID"])


def for_array(array: np.ndarray) -> DType:
    """The TF dtype of a numpy array; ``str_``/``bytes_`` arrays count as DT_STRING."""
    if array.dtype.kind in ("U", "S", "O"):
        return BY_NAME["DT_STRING"]
    found = _BY_NUMPY.get(array.dtype)
    if found is None:  # a bfloat16 array exists only once ml_dtypes is imported: no import here
        return BY_NAME["DT_BFLOAT16"] if array.dtype.name == "bfloat16" else BY_NAME["DT_INVALID"]
    return found
