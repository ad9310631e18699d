"""``mlsrv run``'s inputs: parsers for ``--inputs``, ``--input_exprs`` and ``--input_examples``
(saved_model_cli syntax), and the checks and conversions against the signature (:func:`prepare_inputs`).

``--input_exprs`` is evaluated by walking the expression's AST against a whitelist; nothing is ever
passed to ``eval``. What an expression may contain:

* literals: numbers (``1``, ``-2.5``, ``1e3``, ``1j``), strings, bytes, ``True``/``False``/``None``;
* lists, tuples and dicts (dict keys must be literals), unary ``-``/``+`` on numbers;
* calls of these numpy functions, spelled ``np.`` or ``numpy.``: ``array asarray ones zeros full arange
  linspace eye`` and ``random.rand random.randn random.randint``, with positional arguments and the
  keywords in :data:`KEYWORDS`;
* numpy dtypes as values (``np.float32``, ``numpy.int64`` ...; see :data:`DTYPES`).

The ``np.random`` functions draw from ``RandomState(0)``, fresh for each expression, so a run is
reproducible. Anything else (other names or attributes, subscripts, operators, lambdas, comprehensions,
f-strings, starred arguments) is refused with a :class:`~mlsrv.errors.UsageError` before any call is made.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from mlsrv.cli import render
from mlsrv.errors import UsageError
from mlsrv.protocol import dtypes
from mlsrv.protocol.types import SignatureInfo, TensorInfo

MAX_EXPRESSION_CHARS: Final = 100_000
#: Largest array a constructor may build (elements); bigger inputs belong in a .npy file (--inputs).
MAX_ELEMENTS: Final = 1 << 26
#: Largest total an expression's numpy calls may allocate (bytes; a string dtype like U100000 counts in full).
MAX_BYTES: Final = 1 << 30

#: Numpy constructors an expression may call, by their name after ``np.``.
FUNCTIONS: Final[frozenset[str]] = frozenset(
    {"array", "asarray", "ones", "zeros", "full", "arange", "linspace", "eye"}
    | {"random.rand", "random.randn", "random.randint"}
)

#: Keyword arguments the whitelisted functions may take.
KEYWORDS: Final[frozenset[str]] = frozenset(
    {"dtype", "shape", "fill_value", "ndmin", "start", "stop", "step", "num", "endpoint", "k", "M"}
    | {"N", "low", "high", "size"}
)

#: numpy dtype names usable as ``np.<name>``.
DTYPES: Final[dict[str, type]] = {
    name: getattr(np, name)
    for name in (
        "float16 float32 float64 half single double int8 int16 int32 int64 uint8 uint16 uint32 uint64"
        " bool_ object_ str_ bytes_ complex64 complex128"
    ).split()
}

_MODULES: Final = ("np", "numpy")


@dataclass(frozen=True, slots=True)
class FileInput:
    """One ``--inputs`` item: ``key=path`` or ``key=path[variable]``."""

    path: str
    variable: str | None = None


def split_items(text: str, option: str) -> list[tuple[str, str]]:
    """``'a=1;b=[1, 2]'`` -> ``[("a", "1"), ("b", "[1, 2]")]``.

    Splits on ``;`` outside brackets and quotes (saved_model_cli splits on every ``;``). Empty items are
    skipped; a key given twice in one option is an error.
    """
    items: list[tuple[str, str]] = []
    for raw in _split_top_level(text):
        if not raw.strip():
            continue
        key, sep, value = raw.partition("=")
        key = key.strip()
        if not sep or not key or not value.strip():
            raise UsageError(f'{option} "{raw.strip()}" format is incorrect; expected "<input_key>=<value>"')
        if any(key == seen for seen, _ in items):
            raise UsageError(f"{option}: input key {key!r} is given more than once")
        items.append((key, value.strip()))
    return items


def _split_top_level(text: str) -> list[str]:
    parts, depth, quote, start = [], 0, "", 0
    escaped = False
    for index, char in enumerate(text):
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == ";" and depth <= 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


_FILE_ITEM: Final = re.compile(r"^(?P<path>[^\[\]]+?)(?:\[(?P<variable>[^\[\]]+)\])?$")


def parse_inputs(text: str) -> dict[str, FileInput]:
    """``--inputs 'x=x.npy;y=data.npz[y]'`` -> ``{"x": FileInput("x.npy"), "y": FileInput("data.npz", "y")}``."""
    parsed = {}
    for key, value in split_items(text, "--inputs"):
        match = _FILE_ITEM.match(value)
        if match is None:
            raise UsageError(
                f'--inputs "{key}={value}" format is incorrect; expected "<input_key>=<filename>" '
                'or "<input_key>=<filename>[<variable_name>]"'
            )
        parsed[key] = FileInput(match["path"].strip(), match["variable"])
    return parsed


def parse_input_exprs(text: str) -> dict[str, Any]:
    """``--input_exprs 'x=np.ones((2, 1))'`` -> ``{"x": array(...)}`` (values are numpy arrays or Python data)."""
    return {key: evaluate(expr, f"--input_exprs {key}") for key, expr in split_items(text, "--input_exprs")}


def parse_input_examples(text: str) -> dict[str, list[dict[str, list[Any]]]]:
    """``--input_examples 'inputs=[{"x": [1.0]}]'`` -> feature dicts per key (serialized later, with TF)."""
    parsed: dict[str, list[dict[str, list[Any]]]] = {}
    for key, expr in split_items(text, "--input_examples"):
        value = evaluate(expr, f"--input_examples {key}")
        if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
            raise UsageError(f"--input_examples {key}: expected a list of dicts of feature lists, got {expr}")
        parsed[key] = value
    return parsed


def evaluate(expression: str, where: str = "expression") -> Any:
    """Evaluate one whitelisted expression; UsageError (naming ``where``) for anything outside the whitelist."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise UsageError(f"{where}: expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as error:
        raise UsageError(f"{where}: invalid syntax in {expression!r}: {error.msg}") from None
    except (RecursionError, MemoryError):  # CPython's parser gives up on deep nesting (x=+++...+1)
        raise UsageError(f"{where}: expression nested too deeply") from None
    except ValueError as error:  # e.g. a NUL character
        raise UsageError(f"{where}: invalid expression: {error}") from None
    evaluator = _Evaluator(where, np.random.RandomState(0))
    try:
        return evaluator.visit(tree.body)
    except UsageError:
        raise
    except RecursionError:
        raise UsageError(f"{where}: expression nested too deeply") from None
    except (TypeError, ValueError, MemoryError, ArithmeticError) as error:
        raise UsageError(f"{where}: {type(error).__name__}: {error}") from None


#: Where each constructor takes ``dtype`` positionally (it may also come as a keyword).
_DTYPE_POSITION: Final[dict[str, int]] = {
    "array": 1, "asarray": 1, "ones": 1, "zeros": 1, "full": 2, "arange": 3, "linspace": 5, "eye": 3,
    "random.randint": 3,
}  # fmt: skip


class _Refused(Exception):
    """An argument the allocation estimate cannot account for (the evaluator turns it into a UsageError)."""


def _int(value: Any, what: str) -> int:
    """A dimension or count as an int: Python ints, numpy integers and 0-d integer arrays (what numpy takes)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)  # numpy refuses these itself; counted so the cap never depends on it
    try:
        return int(operator.index(value))
    except TypeError:
        raise _Refused(f"{what} must be an integer") from None


def _real(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _Refused(f"{what} must be a real number") from None
    if not math.isfinite(number):
        raise _Refused(f"{what} must be finite")
    return number


def _count(shape: Any) -> int:
    if isinstance(shape, np.ndarray):
        shape = shape.tolist()
    dims = shape if isinstance(shape, list | tuple) else [shape]
    total = 1
    for dim in dims:
        total *= max(_int(dim, "a shape"), 0)
    return total


def _leaves(value: Any) -> int:
    """Elements ``np.array(value)`` holds at most: literal leaves, plus the size of any array inside."""
    if isinstance(value, np.ndarray):
        return int(value.size)
    if isinstance(value, list | tuple):
        return sum(_leaves(item) for item in value)
    return 1


def _text_size(value: Any) -> int:
    """Bytes per item a text value needs as a numpy ``U`` array (the longest string or bytes inside, x4)."""
    if isinstance(value, str | bytes):
        return 4 * len(value)
    if isinstance(value, np.ndarray):
        return int(value.itemsize) if value.dtype.kind in "USV" else 0
    if isinstance(value, list | tuple):
        return max((_text_size(item) for item in value), default=0)
    if isinstance(value, dict):
        return max((_text_size(item) for item in (*value.keys(), *value.values())), default=0)
    return 0


def _elements(name: str, args: list[Any], kwargs: dict[str, Any]) -> int:
    """How many elements a whitelisted constructor would allocate, checked before calling it.

    Positional and keyword arguments are read alike (``np.arange(0, stop=10**10)`` counts 10**10).
    """

    def arg(index: int, keyword: str, default: Any = None) -> Any:
        return args[index] if len(args) > index else kwargs.get(keyword, default)

    if name in ("ones", "zeros", "full"):
        return _count(arg(0, "shape", 1))
    if name == "eye":
        rows = _int(arg(0, "N", 1), "N")
        columns = arg(1, "M", None)
        return _count([rows, rows if columns is None else _int(columns, "M")])
    if name in ("random.rand", "random.randn"):
        return _count(list(args))
    if name == "random.randint":
        size = arg(2, "size", None)
        return 1 if size is None else _count(size)
    if name == "linspace":
        return _count(arg(2, "num", 50))
    if name == "arange":
        return _arange_elements(args, kwargs)
    if name in ("array", "asarray"):
        return _leaves(arg(0, "object", None))
    return 0


def _arange_elements(args: list[Any], kwargs: dict[str, Any]) -> int:
    """numpy's reading of ``arange([start,] stop[, step])``, keywords included."""
    numbers = args[:3]
    start, stop, step = kwargs.get("start"), kwargs.get("stop"), kwargs.get("step")
    if len(numbers) == 1:
        if stop is None:
            stop = numbers[0]
        else:
            start = numbers[0]
    elif len(numbers) >= 2:
        start, stop = numbers[0], numbers[1]
        if len(numbers) == 3:
            step = numbers[2]
    if stop is None:  # np.arange(start=3): numpy refuses it; count the one-argument reading
        start, stop = None, start
    low, high = _real(0 if start is None else start, "start"), _real(stop, "stop")
    increment = _real(1 if step is None else step, "step")
    if increment == 0:
        raise _Refused("step must not be 0")
    return max(math.ceil((high - low) / increment), 0)


def _itemsize(name: str, args: list[Any], kwargs: dict[str, Any]) -> int:
    """Bytes per element the call may allocate: the dtype's size, or for text the longest string inside."""
    position = _DTYPE_POSITION.get(name)
    dtype = kwargs.get("dtype", args[position] if position is not None and len(args) > position else None)
    text = max(_text_size(args), _text_size(kwargs.get("fill_value")), _text_size(kwargs.get("object")))
    if dtype is None:
        return max(16, text)  # complex128 is numpy's widest default
    try:
        size = np.dtype(dtype).itemsize
    except (TypeError, ValueError):
        return max(16, text)  # numpy will refuse the dtype itself
    return size if size else 4 * max(text, 32)  # 'U', 'S', str_: sized by the data (32 covers a number)


class _Evaluator:
    """Evaluates an AST node by node; every node type it does not know is refused."""

    def __init__(self, where: str, rng: np.random.RandomState) -> None:
        self.where = where
        #: Bytes the numpy calls of this expression may have allocated so far (capped by MAX_BYTES).
        self.allocated = 0
        self.functions: dict[str, Callable[..., Any]] = {
            name: getattr(np, name) for name in FUNCTIONS if not name.startswith("random.")
        }
        self.functions.update({"random.rand": rng.rand, "random.randn": rng.randn, "random.randint": rng.randint})

    def refuse(self, node: ast.AST, why: str) -> UsageError:
        text = ast.unparse(node)
        shown = text if len(text) <= 60 else text[:57] + "..."
        return UsageError(f"{self.where}: {why}: {shown!r} (see 'mlsrv run --help' for what is allowed)")

    def visit(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.List):
            return [self.visit(e) for e in node.elts]
        if isinstance(node, ast.Tuple):
            return tuple(self.visit(e) for e in node.elts)
        if isinstance(node, ast.Dict):
            return self.visit_dict(node)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            return self.visit_sign(node)
        if isinstance(node, ast.Call):
            return self.visit_call(node)
        if isinstance(node, ast.Attribute):
            return self.visit_dtype(node)
        if isinstance(node, ast.Starred):
            raise self.refuse(node, "starred arguments are not allowed")
        raise self.refuse(node, f"{type(node).__name__} is not allowed")

    def visit_dict(self, node: ast.Dict) -> dict[Any, Any]:
        result = {}
        for key, value in zip(node.keys, node.values, strict=True):
            if key is None or not isinstance(key, ast.Constant):
                raise self.refuse(node, "dict keys must be literals")
            result[key.value] = self.visit(value)
        return result

    def visit_sign(self, node: ast.UnaryOp) -> Any:
        value = self.visit(node.operand)
        if isinstance(value, bool) or not isinstance(value, int | float | complex):
            raise self.refuse(node, "unary minus/plus applies to numbers only")
        return -value if isinstance(node.op, ast.USub) else value

    def visit_call(self, node: ast.Call) -> Any:
        name = self.numpy_name(node.func)
        function = self.functions.get(name) if name is not None else None
        if function is None:
            raise self.refuse(node.func, "only np.array, np.asarray, np.ones, ... calls are allowed")
        args = [self.visit(a) for a in node.args]
        kwargs = {}
        for keyword in node.keywords:
            if keyword.arg is None or keyword.arg not in KEYWORDS:
                raise self.refuse(node, f"keyword {keyword.arg or '**'!r} is not allowed")
            kwargs[keyword.arg] = self.visit(keyword.value)
        try:
            elements = _elements(name or "", args, kwargs)
            size = elements * _itemsize(name or "", args, kwargs)
        except _Refused as error:
            raise self.refuse(node, str(error)) from None
        if elements > MAX_ELEMENTS:
            raise self.refuse(node, f"arrays over {MAX_ELEMENTS} elements are not allowed (use --inputs)")
        self.allocated += size
        if self.allocated > MAX_BYTES:
            raise self.refuse(node, f"arrays over {MAX_BYTES >> 20} MiB in all are not allowed (use --inputs)")
        return function(*args, **kwargs)

    def visit_dtype(self, node: ast.Attribute) -> Any:
        name = self.numpy_name(node)
        if name is None or name not in DTYPES:
            raise self.refuse(node, "only numpy dtypes such as np.float32 may be used as values")
        return DTYPES[name]

    @staticmethod
    def numpy_name(node: ast.expr) -> str | None:
        """``np.random.rand`` -> ``"random.rand"``; None unless it is a plain ``np.``/``numpy.`` chain."""
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name) or node.id not in _MODULES or not parts:
            return None
        return ".".join(reversed(parts))


def load_file_input(key: str, item: FileInput) -> np.ndarray:
    """The array for ``key`` from a .npy or .npz file (pickles are refused: loading one runs code)."""
    try:
        data = np.load(item.path, allow_pickle=False)
    except FileNotFoundError:
        raise UsageError(f"--inputs {key}: file not found: {item.path}") from None
    except ValueError as error:
        raise UsageError(f"--inputs {key}: cannot load {item.path} without pickle: {error}") from None
    except OSError as error:
        raise UsageError(f"--inputs {key}: cannot read {item.path}: {error}") from None
    if isinstance(data, np.ndarray):
        return data  # a .npy holds one array; a [name] is ignored, as saved_model_cli does
    with data:
        names = list(data.files)
        if item.variable is None:
            if len(names) != 1:
                raise UsageError(
                    f"--inputs {key}: {item.path} holds {len(names)} arrays ({', '.join(names)}); "
                    f"pick one with {key}={item.path}[name]"
                )
            return np.asarray(data[names[0]])
        if item.variable not in names:
            raise UsageError(f"--inputs {key}: {item.path} has no array named {item.variable!r}")
        return np.asarray(data[item.variable])


def prepare_inputs(signature: SignatureInfo, values: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Check names, dtype and shape against the signature and convert; UsageError on the first mismatch."""
    unknown = [k for k in values if k not in signature.inputs]
    if unknown:
        choices = ", ".join(f'"{k}"' for k in signature.inputs)
        raise UsageError(f'"{unknown[0]}" is not a valid input key; choose from {choices} (see mlsrv show)')
    missing = [k for k in signature.inputs if k not in values]
    if missing:
        raise UsageError(f"missing input(s) for this signature: {', '.join(missing)}")
    return {key: _convert(key, signature.inputs[key], value) for key, value in values.items()}


def _convert(key: str, info: TensorInfo, value: Any) -> np.ndarray:
    is_string = info.dtype == "DT_STRING"
    try:  # object dtype keeps str and bytes items as they are (numpy cannot mix them otherwise)
        array = value if isinstance(value, np.ndarray) else np.asarray(value, dtype=object if is_string else None)
    except ValueError as error:  # ragged nested lists
        raise UsageError(f"input {key!r}: not a rectangular array: {error}") from None
    wanted = dtypes.by_name(info.dtype)
    if is_string:
        array = _as_strings(key, array)
    elif wanted.numpy is None:
        raise UsageError(f"input {key!r}: dtype {info.dtype} is not supported by mlsrv run")
    else:
        array = _as_numbers(key, array, wanted.numpy, info.dtype)
    if not info.admits(array.shape):
        raise UsageError(f"input {key!r}: expected shape {render.shape_text(info)}, got {tuple(array.shape)}")
    return array


def _as_strings(key: str, array: np.ndarray) -> np.ndarray:
    if array.dtype.kind not in "OSU":
        raise UsageError(f"input {key!r} is DT_STRING, got {array.dtype} values")
    flat = array.reshape(-1)
    out = np.empty(flat.shape, dtype=object)
    for index, item in enumerate(flat):
        if isinstance(item, str):
            out[index] = item.encode("utf-8")
        elif isinstance(item, bytes):
            out[index] = item
        else:
            raise UsageError(f"input {key!r} is DT_STRING, got a {type(item).__name__} item")
    return out.reshape(array.shape)


def _as_numbers(key: str, array: np.ndarray, target: np.dtype, name: str) -> np.ndarray:
    if array.dtype.kind in "OSU" or not np.can_cast(array.dtype, target, casting="same_kind"):
        raise UsageError(f"input {key!r}: cannot convert {array.dtype} values to {name}")
    if array.dtype.kind in "iu" and target.kind in "iu" and array.size:
        info = np.iinfo(target)
        if array.min() < info.min or array.max() > info.max:
            raise UsageError(f"input {key!r}: values out of range for {name}")
    return array.astype(target, copy=False)
