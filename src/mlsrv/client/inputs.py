"""Request inputs for the client commands: read them (TF Serving JSON, ``.npy``/``.npz``, JSON literals)
or generate them from a signature (``mlsrv bench``).

Every conversion to tensors goes through the shared codecs or the signature's dtypes, so a request
built here is exactly what the server would decode from the same JSON: ``--data`` bodies are decoded
by ``json_codec.decode_predict_inputs`` (TF Serving's own rules and messages), arrays from files are
cast to the signature dtype with numpy's ``same_kind`` rule. Problems with the command line (missing
files, bad syntax, unknown input names) raise ``UsageError``; problems TF Serving itself would report
raise its ``InvalidArgument``. No TensorFlow import.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final, Literal

import numpy as np

from mlsrv.errors import InvalidArgument, MlsrvError, UsageError
from mlsrv.protocol import dtypes, json_codec
from mlsrv.protocol.json_parse import loads
from mlsrv.protocol.json_tensor import fill_tensor
from mlsrv.protocol.types import RequestFormat, SignatureInfo, TensorInfo

Fill = Literal["random", "zeros"]

#: Bytes per generated DT_STRING element: long enough to be realistic, short enough for any model.
STRING_BYTES: Final = 16
_FILE_VALUE: Final = re.compile(r"^(?P<path>[^\[\]{}\"]+?\.(?:npy|npz|json))(?:\[(?P<key>[^\[\]]+)\])?$")
_AT_VALUE: Final = re.compile(r"^@(?P<path>[^\[\]]+?)(?:\[(?P<key>[^\[\]]+)\])?$")


@dataclass(frozen=True, slots=True)
class Request:
    """One predict request's tensors and its REST layout (which also decides the JSON output keys)."""

    inputs: dict[str, np.ndarray]
    format: RequestFormat = RequestFormat.COLUMNAR

    @property
    def rows(self) -> int:
        """dim 0 of the first batched input (1 when no input has a batch dimension)."""
        for array in self.inputs.values():
            if array.ndim:
                return int(array.shape[0])
        return 1


# --------------------------------------------------------------------------------------- raw text


def read_arg(value: str, what: str, stdin: IO[bytes] | None = None) -> bytes:
    """curl's convention: ``@path`` reads a file, ``-`` reads stdin, anything else is the data itself."""
    if value == "-":
        stream = stdin if stdin is not None else sys.stdin.buffer
        return stream.read()
    if value.startswith("@"):
        return _read_file(value[1:], what)
    return value.encode("utf-8")


def _read_file(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{what}: file not found: {path}") from None
    except OSError as exc:
        raise UsageError(f"{what}: cannot read {path}: {exc.strerror or exc}") from None


def parse_document(body: bytes, what: str = "--data") -> dict[str, Any]:
    """A TF Serving request body as a dict; JSON errors are TF Serving's, prefixed with ``what``."""
    try:
        return json_codec.parse_body(body)
    except InvalidArgument as exc:
        raise UsageError(f"{what}: {exc.message}") from None


def decode_request(doc: Mapping[str, Any], signature: SignatureInfo) -> Request:
    """``{"instances": ...}`` or ``{"inputs": ...}`` typed by the signature, with TF Serving's checks."""
    inputs, fmt = json_codec.decode_predict_inputs(doc, signature)
    return Request(inputs, fmt)


# ------------------------------------------------------------------------------------ --input items


@dataclass(frozen=True, slots=True)
class InputArg:
    """One ``--input``: ``name`` (empty: the signature's only input) and a file or a JSON literal."""

    name: str
    path: str | None = None
    key: str | None = None
    literal: str | None = None


def parse_input_arg(text: str) -> InputArg:
    """``x=@data.npz[x]``, ``x=x.npy`` (a path ending in .npy/.npz/.json) or ``x='[[1.0]]'`` (JSON)."""
    name, sep, value = text.partition("=")
    if not sep:
        name, value = "", text
    name, value = name.strip(), value.strip()
    if not value:
        raise UsageError(f'--input "{text}": expected NAME=FILE.npy, NAME=@FILE.npz[KEY] or NAME=JSON')
    match = _AT_VALUE.match(value) or _FILE_VALUE.match(value)
    if match is not None:
        return InputArg(name, match["path"].strip(), match["key"])
    return InputArg(name, literal=value)


def load_input(arg: InputArg) -> Any:
    """The value of one ``--input``: an ndarray from ``.npy``/``.npz``, or parsed JSON (lists, numbers, strings)."""
    where = f"--input {arg.name or arg.path or ''}".rstrip()
    if arg.literal is not None:
        try:
            return loads(arg.literal.encode("utf-8"))
        except InvalidArgument as exc:
            raise UsageError(f"{where}: not a file name and not JSON: {exc.message}") from None
    assert arg.path is not None
    if arg.path.endswith(".json"):
        try:
            return loads(_read_file(arg.path, where))
        except InvalidArgument as exc:
            raise UsageError(f"{where}: {arg.path}: {exc.message}") from None
    return load_array(arg.path, arg.key, where)


def load_array(path: str, key: str | None, where: str) -> np.ndarray:
    """One array from ``.npy`` or ``.npz`` (``key`` required when the archive holds several); no pickles."""
    data = _np_load(path, where)
    if isinstance(data, np.ndarray):
        return data
    with data:
        names = list(data.files)
        if key is None:
            if len(names) != 1:
                listed = ", ".join(names)
                raise UsageError(f"{where}: {path} holds {len(names)} arrays ({listed}); pick one with [name]")
            key = names[0]
        if key not in names:
            raise UsageError(f"{where}: {path} has no array named {key!r} (has: {', '.join(names)})")
        return np.asarray(data[key])


def _np_load(path: str, where: str) -> Any:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UsageError(f"{where}: file not found: {path}") from None
    except ValueError as exc:
        raise UsageError(f"{where}: cannot load {path} without pickle: {exc}") from None
    except OSError as exc:
        raise UsageError(f"{where}: cannot read {path}: {exc}") from None


def inputs_from_args(args: Sequence[InputArg], signature: SignatureInfo) -> Request:
    """All ``--input`` values as one columnar request, named and typed by ``signature``."""
    values: dict[str, Any] = {}
    for arg in args:
        name = arg.name or _only_input(signature, "--input without NAME=")
        if name in values:
            raise UsageError(f"--input {name} is given more than once")
        values[name] = load_input(arg)
    return Request(conform_inputs(values, signature), RequestFormat.COLUMNAR)


def shape_notes(inputs: Mapping[str, np.ndarray], signature: SignatureInfo) -> list[str]:
    """One line per input whose shape the signature's does not admit (``-1`` admits any size).

    Notes, not errors: TF Serving does not check shapes against the signature, the model does, and
    many models take more than their signature says (half_plus_two's ``(-1, 1)`` computes ``[1, 2, 5]``
    too); so the request is sent as given and the note says what to look at if the server refuses it.
    """
    notes = []
    for name, value in inputs.items():
        info = signature.inputs.get(name)
        if info is not None and info.shape is not None and not info.admits(value.shape):
            wanted = "(" + ", ".join(str(d) for d in info.shape) + ")"
            notes.append(f"note: input {name!r} has shape {tuple(value.shape)}; the signature says {wanted} "
                         "(sent as given: the model decides)")  # fmt: skip
    return notes


def _only_input(signature: SignatureInfo, what: str) -> str:
    if len(signature.inputs) != 1:
        raise UsageError(f"{what} needs a signature with one input; this one has {', '.join(sorted(signature.inputs))}")
    return next(iter(signature.inputs))


def conform_inputs(values: Mapping[str, Any], signature: SignatureInfo) -> dict[str, np.ndarray]:
    """Check names against ``signature`` and convert each value to its dtype.

    JSON values go through TF Serving's own JSON tensor rules (``{"b64": ...}`` included); arrays are
    cast with numpy's ``same_kind`` rule (float64 -> float32 is fine, float -> int is not).
    """
    expected = ", ".join(sorted(signature.inputs))
    unknown = sorted(set(values) - set(signature.inputs))
    if unknown:
        raise UsageError(f"{unknown[0]!r} is not an input of this signature; inputs: {expected}")
    missing = sorted(set(signature.inputs) - set(values))
    if missing:
        raise UsageError(f"missing input(s): {', '.join(missing)} (this signature takes {expected})")
    return {name: _conform(name, values[name], signature.inputs[name]) for name in sorted(values)}


def _conform(name: str, value: Any, info: TensorInfo) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        try:
            return fill_tensor(value, info.dtype)
        except MlsrvError as exc:
            raise UsageError(f"--input {name}: {exc.message}") from None
    if info.dtype == "DT_STRING":
        if value.dtype.kind not in "OSU":
            raise UsageError(f"--input {name} is DT_STRING, got {value.dtype} values")
        out = np.empty(value.shape, dtype=object)
        out.reshape(-1)[:] = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in value.reshape(-1)]
        return out
    target = dtypes.by_name(info.dtype).numpy
    if target is None:
        raise UsageError(f"--input {name}: dtype {info.dtype} cannot be sent")
    if value.dtype.kind in "OSU" or not np.can_cast(value.dtype, target, casting="same_kind"):
        raise UsageError(f"--input {name}: cannot convert {value.dtype} values to {info.dtype}")
    return value.astype(target, copy=False)


# ------------------------------------------------------------------------------------ bench inputs


def load_request_file(path: str, signature: SignatureInfo) -> list[Request]:
    """Requests from one file: TF Serving JSON (one object, or one per line), ``.npy`` (single-input
    signatures), ``.npz`` (one array per input name), or a ``PredictionLog`` TFRecord file (a request
    log of ``mlsrv serve``, or a warmup file): its logged Predict requests."""
    where = f"--input-file {path}"
    from mlsrv.client import prediction_logs

    if prediction_logs.is_prediction_log_file(path):
        return [Request(inputs) for inputs in prediction_logs.logged_predict_inputs(path, signature, where)]
    if path.endswith((".npy", ".npz")):
        data = _np_load(path, where)
        if isinstance(data, np.ndarray):
            values: dict[str, Any] = {_only_input(signature, f"{where} (.npy)"): data}
        else:
            with data:
                values = {name: np.asarray(data[name]) for name in data.files}
        return [Request(conform_inputs(values, signature))]
    text = _read_file(path, where)
    lines = [line for line in text.splitlines() if line.strip()]
    bodies = lines if len(lines) > 1 and all(line.lstrip().startswith(b"{") for line in lines) else [text]
    return [decode_request(parse_document(body, where), signature) for body in bodies]


def parse_shapes(items: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """``--shape x:224,224,3`` (repeatable) -> ``{"x": (224, 224, 3)}``: one instance's shape, no batch dim."""
    shapes: dict[str, tuple[int, ...]] = {}
    for item in items:
        name, sep, dims = item.rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.split(",") if d.strip()) if dims.strip() else ()
        except ValueError:
            shape = (-1,)
        if not sep or not name or any(d < 0 for d in shape):
            raise UsageError(f'--shape "{item}": expected NAME:D1,D2,... with non-negative integers')
        shapes[name] = shape
    return shapes


def instance_shape(name: str, info: TensorInfo, given: tuple[int, ...] | None) -> tuple[bool, tuple[int, ...]]:
    """(batched, shape of one instance): the signature's dims after a ``-1`` batch dim, ``--shape`` filling
    the unknown ones. Without a ``-1`` leading dim the input is not batched and the shape is the whole one."""
    if not info.has_shape or info.shape is None:
        if given is None:
            raise UsageError(f"input {name!r} has unknown rank; give its per-instance shape with --shape {name}:D1,D2")
        return True, given
    batched = bool(info.shape) and info.shape[0] == -1
    dims = info.shape[1:] if batched else info.shape
    if given is None:
        if -1 in dims:
            shown = ",".join("D" if d == -1 else str(d) for d in dims)
            raise UsageError(
                f"input {name!r} has unknown dimensions {info.shape}; give them with --shape {name}:{shown}"
            )
        return batched, tuple(dims)
    if len(given) != len(dims) or any(d not in (-1, g) for d, g in zip(dims, given, strict=True)):
        raise UsageError(f"--shape {name}:{','.join(map(str, given))} does not fit the signature shape {info.shape}")
    return batched, given


def generate_request(
    signature: SignatureInfo,
    *,
    batch_size: int = 1,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    fill: Fill = "random",
    seed: int = 0,
) -> Request:
    """Inputs built from the signature: ``batch_size`` rows of random values (or zeros) of each dtype.

    Floats are uniform in [0, 1), integers in [0, 100) (bool: coin flips), strings ``STRING_BYTES``
    random lowercase letters. Deterministic for a given ``seed``.
    """
    shapes = dict(shapes or {})
    unknown = sorted(set(shapes) - set(signature.inputs))
    if unknown:
        raise UsageError(f"--shape {unknown[0]}: no such input; inputs: {', '.join(sorted(signature.inputs))}")
    rng = np.random.default_rng(seed)
    inputs = {}
    for name in sorted(signature.inputs):
        info = signature.inputs[name]
        batched, shape = instance_shape(name, info, shapes.get(name))
        full = (batch_size, *shape) if batched else shape
        inputs[name] = _values(name, info.dtype, full, fill, rng)
    return Request(inputs)


def _values(name: str, dtype_name: str, shape: tuple[int, ...], fill: Fill, rng: np.random.Generator) -> np.ndarray:
    kind = dtypes.by_name(dtype_name)
    if dtype_name == "DT_STRING":
        out = np.empty(shape, dtype=object)
        count = int(np.prod(shape, dtype=np.int64))
        if fill == "zeros":
            out.reshape(-1)[:] = [b""] * count
        else:
            letters = rng.integers(ord("a"), ord("z") + 1, size=(count, STRING_BYTES), dtype=np.uint8)
            out.reshape(-1)[:] = [row.tobytes() for row in letters]
        return out
    target = kind.numpy
    if target is None:
        raise UsageError(f"input {name!r} has dtype {dtype_name}, which mlsrv cannot generate; use --input-file")
    if fill == "zeros":
        return np.zeros(shape, dtype=target)
    if target.kind == "b":
        return rng.random(shape) < 0.5
    if target.kind in "iu":
        return rng.integers(0, 100, size=shape).astype(target)
    if target.kind == "c":
        return (rng.random(shape) + 1j * rng.random(shape)).astype(target)
    return rng.random(shape).astype(target)


__all__ = [
    "Fill",
    "InputArg",
    "Request",
    "conform_inputs",
    "decode_request",
    "generate_request",
    "inputs_from_args",
    "instance_shape",
    "load_array",
    "load_input",
    "load_request_file",
    "parse_document",
    "parse_input_arg",
    "parse_shapes",
    "read_arg",
]
