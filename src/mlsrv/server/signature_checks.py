"""TF Serving's request checks against a SignatureDef (``predict_util.cc``, ``classifier.cc``,
``regressor.cc``), written once for both frontends. Pure functions; the DataPlane calls them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from mlsrv.errors import InvalidArgument
from mlsrv.protocol import dtypes
from mlsrv.protocol.types import SignatureInfo


def check_input_names(sent: Iterable[str], signature: SignatureInfo) -> None:
    """TF's ``VerifyRequestInputsSize`` and alias checks, which come before any tensor is parsed."""
    expected = signature.inputs
    names = list(sent)
    if len(names) == len(expected) and expected.keys() == set(names):
        return  # every input (the common request): nothing to report
    required = len(expected) - len(signature.defaults)
    if not required <= len(names) <= len(expected):
        extra = sorted(set(names) - set(expected))
        raise _size_mismatch(names, expected, extra, sorted(set(expected) - set(names) - set(signature.defaults)))
    for alias in names:
        if alias not in expected:
            raise InvalidArgument(
                f"input tensor alias not found in signature: {alias}. "
                f"Inputs expected to be in the set {{{','.join(sorted(expected))}}}."
            )
    for alias in sorted(set(expected) - set(names)):
        if alias not in signature.defaults:
            raise _size_mismatch(names, expected, [], [alias])


def _size_mismatch(
    names: Sequence[str], expected: Mapping[str, object], extra: Sequence[str], missing: Sequence[str]
) -> InvalidArgument:
    return InvalidArgument(
        f"input size does not match signature: {len(names)}!={len(expected)} "
        f"len({{{','.join(sorted(names))}}}) != len({{{','.join(sorted(expected))}}}). "
        f"Sent extra: {{{','.join(extra)}}}. Missing but required: {{{','.join(missing)}}}."
    )


def check_inputs(inputs: Mapping[str, np.ndarray], signature: SignatureInfo) -> dict[str, np.ndarray]:
    """:func:`check_input_names`, then the inputs with signature ``defaults`` filled in for the ones
    the request left out. Dtypes are checked later (:func:`check_input_dtypes`), as TF's Session does."""
    check_input_names(inputs, signature)
    complete = dict(inputs)
    for alias in signature.defaults:
        complete.setdefault(alias, signature.defaults[alias])
    return complete


def check_input_dtypes(inputs: Mapping[str, np.ndarray], signature: SignatureInfo) -> None:
    """The Session's ``Expects arg[i] to be <dtype> but <dtype> is provided`` (args in sorted alias order)."""
    for index, alias in enumerate(sorted(inputs)):
        want = dtypes.by_name(signature.inputs[alias].dtype)
        got = dtypes.for_array(inputs[alias])
        if want.enum != got.enum:
            raise InvalidArgument(f"Expects arg[{index}] to be {want.short} but {got.short} is provided")


def check_output_filter(output_filter: Sequence[str], signature: SignatureInfo) -> tuple[str, ...]:
    seen: set[str] = set()
    for alias in output_filter:
        if alias not in signature.outputs:
            raise InvalidArgument(
                f"output tensor alias not found in signature: {alias} "
                f"Outputs expected to be in the set {{{','.join(sorted(signature.outputs))}}}."
            )
        if alias in seen:
            raise InvalidArgument(f"duplicate output tensor alias: {alias}")
        seen.add(alias)
    return tuple(output_filter)


def batch_output(outputs: Mapping[str, np.ndarray], key: str, examples: int, what: str) -> np.ndarray:
    array = outputs[key]
    if array.ndim == 0 or array.shape[0] != examples:
        raise InvalidArgument(
            f"Expected {what} output batch size of {examples}, got {array.shape[0] if array.ndim else 0}"
        )
    if array.ndim == 1 and what != "outputs":
        array = array.reshape(examples, 1)
    return array


def signature_text(signature: SignatureInfo) -> str:
    """The SignatureDef as C++ ``DebugString()`` prints it, which TF quotes in classify/regress errors.

    Protobuf text format: fields in number order, map entries sorted by key, two-space indent, and
    proto3 defaults (empty name, ``DT_INVALID``, a dim of size 0) left out. ``defaults`` and sparse
    or composite tensor encodings are not rendered.
    """
    lines: list[str] = []
    for field, tensors in (("inputs", signature.inputs), ("outputs", signature.outputs)):
        for key in sorted(tensors):
            info = tensors[key]
            lines += [f"{field} {{", f"  key: {_quoted(key)}", "  value {"]
            if info.name:
                lines.append(f"    name: {_quoted(info.name)}")
            if info.dtype != "DT_INVALID":
                lines.append(f"    dtype: {info.dtype}")
            if info.has_shape:
                lines.append("    tensor_shape {")
                if info.shape is None:
                    lines.append("      unknown_rank: true")
                else:
                    for size in info.shape:
                        lines += ["      dim {", *([f"        size: {size}"] if size else []), "      }"]
                lines.append("    }")
            lines += ["  }", "}"]
    if signature.method_name:
        lines.append(f"method_name: {_quoted(signature.method_name)}")
    return "\n".join(lines) + "\n" if lines else ""


def _quoted(text: str) -> str:
    """A text-format string literal (C-style escapes, as protobuf's ``CEscape``)."""
    escaped = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        if char in "\"'\\":
            escaped.append("\\" + char)
        elif char == "\n":
            escaped.append("\\n")
        elif char == "\r":
            escaped.append("\\r")
        elif char == "\t":
            escaped.append("\\t")
        elif 0x20 <= byte < 0x7F:
            escaped.append(char)
        else:
            escaped.append(f"\\{byte:03o}")
    return '"' + "".join(escaped) + '"'
