"""Shared output for CLI commands: signatures and tensors as Rich (terminal), plain text (piped) or JSON.

Plain text follows ``saved_model_cli`` line for line, so scripts written against it keep working. On a
terminal the same data is shown as tables. JSON shapes are documented in ``docs/cli-json.md``; the
per-signature object (:func:`signature_to_json`) is shared by ``mlsrv show`` and ``mlsrv metadata``.
Everything here takes protocol types and numpy arrays only (no TensorFlow).
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mlsrv.errors import UsageError
from mlsrv.protocol import dtypes
from mlsrv.protocol.types import SignatureInfo, TensorInfo


def make_console() -> Console:
    """stdout console: colours and tables on a terminal, plain unwrapped text when piped.

    ``emoji=False``: model, tensor and server text such as ``:abc:`` must print as it is, never as an emoji.
    """
    return Console(highlight=False, soft_wrap=True, emoji=False)


def shape_text(info: TensorInfo) -> str:
    """saved_model_cli's shape notation: ``(-1, 1)``, ``(-1)``, ``()`` or ``unknown_rank``."""
    if info.has_shape and info.shape is None:
        return "unknown_rank"
    return "(" + ", ".join(str(d) for d in info.shape or ()) + ")"


def render_tag_sets(console: Console, tag_sets: Iterable[Sequence[str]]) -> None:
    console.print("The given SavedModel contains the following tag-sets:", style="bold")
    for tags in sorted(", ".join(sorted(t)) for t in tag_sets):
        console.print(repr(tags), markup=False)


def render_signature_keys(console: Console, keys: Iterable[str]) -> None:
    console.print("The given SavedModel MetaGraphDef contains SignatureDefs with the following keys:", style="bold")
    for key in sorted(keys):
        console.print(f'SignatureDef key: "{key}"', markup=False)


def render_ops(console: Console, tags: Sequence[str], ops: Iterable[str]) -> None:
    listed = ", ".join(repr(op) for op in sorted(ops))
    console.print(f"The MetaGraph with tag set {list(tags)!r} contains the following ops: {{{listed}}}", markup=False)


def render_signatures(console: Console, signatures: Mapping[str, SignatureInfo], *, header: str | None = None) -> None:
    """Every signature: ``signature_def['k']:`` blocks (plain) or one table per signature (terminal)."""
    if header:
        console.print()
        console.print(header, style="bold", markup=False)
    for key in sorted(signatures):
        if console.is_terminal:
            console.print()
            console.print(signature_table(key, signatures[key]))
        else:
            console.print()
            console.print(f"signature_def['{key}']:", markup=False)
            render_signature(console, signatures[key], indent=1)


def render_signature(console: Console, signature: SignatureInfo, *, indent: int = 0) -> None:
    """One signature's inputs, outputs and method name, as saved_model_cli's ``--signature_def`` prints it."""
    pad = "  " * indent
    lines = [f"{pad}The given SavedModel SignatureDef contains the following input(s):"]
    lines += _tensor_lines(pad, "inputs", signature.inputs)
    lines.append(f"{pad}The given SavedModel SignatureDef contains the following output(s):")
    lines += _tensor_lines(pad, "outputs", signature.outputs)
    lines.append(f"{pad}Method name is: {signature.method_name}")
    for line in lines:
        console.print(line, markup=False)


def _tensor_lines(pad: str, kind: str, tensors: Mapping[str, TensorInfo]) -> list[str]:
    lines = []
    for key, info in sorted(tensors.items()):
        lines += [
            f"{pad}  {kind}['{key}'] tensor_info:",
            f"{pad}      dtype: {info.dtype}",
            f"{pad}      shape: {shape_text(info)}",
            f"{pad}      name: {info.name}",
        ]
    return lines


def signature_table(key: str, signature: SignatureInfo) -> Table:
    """A terminal table: one row per input and output, with dtype, shape and graph tensor name."""
    title = Text.assemble((f"signature_def[{key!r}]", "bold"), "  ", (signature.method_name or "-", "dim"))
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for column in ("", "key", "dtype", "shape", "tensor name"):
        table.add_column(column)
    for kind, tensors in (("input", signature.inputs), ("output", signature.outputs)):
        for name, info in sorted(tensors.items()):
            table.add_row(kind, Text(name), info.dtype, shape_text(info), Text(info.name))
    return table


# --------------------------------------------------------------------------------------------- tensors


def render_tensors(console: Console, tensors: Mapping[str, np.ndarray]) -> None:
    """``Result for output key y:`` followed by numpy's printout, per tensor (sorted by key)."""
    for key in sorted(tensors):
        console.print(f"Result for output key {key}:", style="bold" if console.is_terminal else None, markup=False)
        console.print(np.array2string(tensors[key], threshold=1000), markup=False)


def output_files(outdir: Path, keys: Iterable[str], overwrite: bool) -> dict[str, Path]:
    """``<outdir>/<key>.npy`` per output key (sorted), checked before anything is written.

    Output keys come from the model (or the server), so each must be a plain file name, without ``/`` or
    ``\\``: a key such as ``../x`` or ``a/b`` would write outside ``outdir`` or into a folder that does not
    exist. Existing files need ``overwrite``; an existing non-file (a folder named ``y.npy``) is refused.
    """
    paths = {}
    for key in sorted(keys):
        if not key or any(c in key for c in "/\\\0"):
            raise UsageError(
                f"output key {key!r} is not a plain file name, so it cannot be saved to --outdir (use --json)"
            )
        paths[key] = outdir / f"{key}.npy"
    for path in paths.values():
        try:
            exists, is_file = path.exists(), path.is_file()
        except OSError as error:  # e.g. a name too long for the file system
            raise UsageError(f"cannot save to {path}: {error.strerror or error}") from None
        if exists and not is_file:
            raise UsageError(f"cannot save to {path}: it exists and is not a file")
        if exists and not overwrite:
            raise UsageError(f"output file {path} already exists; add --overwrite to replace it")
    return paths


def save_outputs(paths: Mapping[str, Path], outputs: Mapping[str, np.ndarray]) -> None:
    """``np.save`` each output to its path; an OS error (permissions, disk full) is one UsageError line."""
    for key, path in paths.items():
        try:
            np.save(path, outputs[key])
        except OSError as error:
            raise UsageError(f"cannot write {path}: {error.strerror or error}") from None


# --------------------------------------------------------------------------------------------- JSON


def tensor_info_to_json(info: TensorInfo) -> dict[str, Any]:
    """``{"dtype": "DT_FLOAT", "shape": [-1, 1] | null, "name": "x:0"}``; null shape = unknown or absent."""
    shape = list(info.shape) if info.has_shape and info.shape is not None else None
    return {"dtype": info.dtype, "shape": shape, "name": info.name}


def signature_to_json(signature: SignatureInfo) -> dict[str, Any]:
    return {
        "method_name": signature.method_name,
        "inputs": {k: tensor_info_to_json(v) for k, v in sorted(signature.inputs.items())},
        "outputs": {k: tensor_info_to_json(v) for k, v in sorted(signature.outputs.items())},
    }


def signatures_to_json(signatures: Mapping[str, SignatureInfo]) -> dict[str, Any]:
    return {key: signature_to_json(signatures[key]) for key in sorted(signatures)}


def tensor_to_json(array: np.ndarray) -> dict[str, Any]:
    """``{"dtype": "DT_FLOAT", "shape": [2, 1], "value": [[2.5], [4.5]]}``.

    Strings are UTF-8 text when they decode, else ``{"b64": "..."}``; complex numbers are ``[re, im]``.
    """
    kind = dtypes.for_array(array)
    return {"dtype": kind.name, "shape": list(array.shape), "value": _value(array)}


def _value(array: np.ndarray) -> Any:
    if array.dtype.kind in "OSU":
        return np.frompyfunc(_text, 1, 1)(array).tolist() if array.ndim else _text(array.item())
    if array.dtype.kind == "c":
        return np.stack([array.real, array.imag], axis=-1).tolist()
    if array.dtype.kind == "V" or array.dtype.name == "bfloat16":
        return array.astype(np.float32).tolist()
    return array.tolist()


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode("ascii")}
    return str(value)


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float replaced by the string ``"NaN"``, ``"Infinity"`` or ``"-Infinity"``.

    JSON has no such numbers (Python's ``json`` writes bare tokens that ``jq`` and most parsers reject);
    the strings are what protobuf's JSON mapping uses for them.
    """
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(item) for item in value]
    return value


def print_json(console: Console, document: Any) -> None:
    """Indented, strict JSON on stdout (non-finite floats as strings), no colours or wrapping: stable for ``jq``."""
    text = json.dumps(strict_json(document), indent=2, allow_nan=False)
    console.print(text, markup=False, highlight=False, soft_wrap=True)
