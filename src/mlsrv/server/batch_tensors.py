"""The numpy half of batching: merge tasks on dim 0, pad, run, split (runs on executor threads).

Pure functions with no asyncio, so the Batcher can hand one call per batch to the executor and never
block the event loop. Padding rules follow TF Serving's ``batching_session.cc`` / ``batching_util.cc``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from mlsrv.errors import FailedPrecondition, InvalidArgument

Tensors = dict[str, np.ndarray]
RunFn = Callable[[Tensors], Mapping[str, np.ndarray]]


def batch_size(inputs: Mapping[str, np.ndarray]) -> int:
    """dim 0 shared by every input, with TF's ``ComputeTensorBatchSize`` messages (``InvalidArgument``)."""
    if not inputs:
        raise InvalidArgument("Batching Run() must have at least one input tensor")
    size: int | None = None
    for array in inputs.values():
        if array.ndim == 0:
            raise InvalidArgument("Batching Run() input tensors must have at least one dimension")
        if size is None:
            size = array.shape[0]
        elif array.shape[0] != size:
            raise InvalidArgument("Batching Run() input tensors must have equal 0th-dimension size")
    assert size is not None
    return int(size)


def execute_batch(run: RunFn, inputs: list[Tensors], rows: list[int], padded: int, pad_variable: bool) -> list[Tensors]:
    """Merge, run and split one batch (executor thread). Returns one output dict per piece."""
    total = sum(rows)
    if len(inputs) == 1 and padded == total:
        merged = inputs[0]
    else:
        merged = merge(inputs, padded - total, pad_variable)
    outputs = run(merged)
    for name, array in outputs.items():
        if array.ndim == 0:
            raise FailedPrecondition(f"Batched output tensor has 0 dimensions (output '{name}')")
        if array.shape[0] != padded:
            raise FailedPrecondition(
                "Batched output tensor's 0th dimension does not equal the sum of the 0th dimension sizes "
                f"of the input tensors (output '{name}' has {array.shape[0]} rows; expected {padded})"
            )
    if len(inputs) == 1 and padded == total:
        return [dict(outputs)]
    result: list[Tensors] = []
    offset = 0
    for n in rows:
        result.append({name: array[offset : offset + n] for name, array in outputs.items()})
        offset += n
    return result


def merge(inputs: list[Tensors], padding: int, pad_variable: bool) -> Tensors:
    """Concatenate each input over the tasks; add ``padding`` copies of the last task's first row."""
    merged: Tensors = {}
    for name in inputs[0]:
        arrays = [task[name] for task in inputs]
        if pad_variable:
            arrays = pad_to_common_shape(arrays)
        if padding:
            first_row = arrays[-1][:1]
            arrays.append(np.broadcast_to(first_row, (padding, *first_row.shape[1:])))
        merged[name] = np.concatenate(arrays, axis=0)
    return merged


def pad_to_common_shape(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Pad dims 1.. of each array up to the largest, with its own first element (TF's ``AddPadding``)."""
    target = tuple(max(a.shape[d] for a in arrays) for d in range(1, arrays[0].ndim))
    out = []
    for a in arrays:
        if a.shape[1:] == target:
            out.append(a)
            continue
        fill: Any = a.flat[0] if a.size else (b"" if a.dtype == object else 0)
        padded = np.full((a.shape[0], *target), fill, dtype=a.dtype)
        padded[tuple(slice(0, s) for s in a.shape)] = a
        out.append(padded)
    return out


def join_parts(parts: list[Tensors]) -> Tensors:
    """Reassemble the outputs of a task that was split across batches."""
    return {name: np.concatenate([p[name] for p in parts], axis=0) for name in parts[0]}
