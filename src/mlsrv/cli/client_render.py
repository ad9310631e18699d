"""Output of the client commands: predict/classify/regress results, model status, TF Serving JSON.

Signatures are rendered by the shared :mod:`mlsrv.cli.render` (same as ``mlsrv show``). On a terminal
results are Rich tables; piped, they are plain stable text (what tests compare between REST and gRPC).
``--json`` prints TF Serving's own JSON bodies, byte for byte as the REST encoders write them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mlsrv.cli import render
from mlsrv.protocol import dtypes
from mlsrv.protocol.types import ClassifyResponse, ModelStatus, RegressResponse


def print_wire_json(console: Console, body: bytes) -> None:
    """A TF Serving JSON body exactly as the shared encoders write it (what the REST API would return)."""
    console.file.write(body.decode("utf-8", "replace").rstrip("\n") + "\n")


def render_outputs(console: Console, outputs: Mapping[str, np.ndarray]) -> None:
    """Output tensors: one table row each on a terminal; ``Result for output key`` blocks when piped."""
    if not console.is_terminal:
        render.render_tensors(console, outputs)
        return
    table = Table(show_edge=False, pad_edge=False)
    for column in ("output", "dtype", "shape", "value"):
        table.add_column(column)
    for key in sorted(outputs):
        array = outputs[key]
        table.add_row(
            Text(key),
            dtypes.for_array(array).name,
            str(tuple(array.shape)),
            Text(np.array2string(array, threshold=1000)),
        )
    console.print(table)


def _label(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def render_classify(console: Console, response: ClassifyResponse) -> None:
    """One row per (example, class): label (empty without a classes output) and score."""
    scores = response.scores
    classes = response.classes
    rows = scores.shape[0] if scores is not None else (classes.shape[0] if classes is not None else 0)
    width = (scores if scores is not None else classes).shape[1] if rows else 0  # type: ignore[union-attr]
    table = Table(show_edge=False, pad_edge=False) if console.is_terminal else None
    if table is not None:
        for column in ("example", "class", "score"):
            table.add_column(column)
    for i in range(rows):
        for j in range(width):
            label = "" if classes is None else _label(classes[i, j])
            score = "" if scores is None else f"{float(scores[i, j]):.6g}"
            if table is not None:
                table.add_row(str(i), Text(label), score)
            else:
                console.print(f"example {i}: class {label!r} score {score}", markup=False)
    if table is not None:
        console.print(table)


def render_regress(console: Console, response: RegressResponse) -> None:
    values = np.asarray(response.values).reshape(-1)
    if console.is_terminal:
        table = Table(show_edge=False, pad_edge=False)
        table.add_column("example")
        table.add_column("value")
        for i, value in enumerate(values):
            table.add_row(str(i), f"{float(value):.6g}")
        console.print(table)
        return
    for i, value in enumerate(values):
        console.print(f"example {i}: {float(value):.6g}", markup=False)


def render_status(console: Console, status: ModelStatus, label: str | None = None) -> None:
    """Every version, highest first: state, and the error code and message when there is one.

    ``label``: the status was asked for by version label; the server answered with the version the
    label points to, and the output says which label that was.
    """
    versions = sorted(status.versions, key=lambda v: v.version, reverse=True)
    labelled = f" (label {label})" if label else ""
    if console.is_terminal:
        title = Text(f"{status.name}{labelled}", style="bold")
        table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
        for column in ("version", "state", "error"):
            table.add_column(column)
        for v in versions:
            failed = v.error_code.name != "OK" or v.error_message
            error = f"{v.error_code.name}: {v.error_message}" if failed else ""
            style = "green" if v.state.name == "AVAILABLE" else ("red" if error else None)
            table.add_row(str(v.version), Text(v.state.name, style=style or ""), Text(error))
        console.print(table)
        return
    for v in versions:
        line = f"{status.name} version {v.version}{labelled}: {v.state.name}"
        if v.error_code.name != "OK" or v.error_message:
            line += f" ({v.error_code.name}: {v.error_message})"
        console.print(line, markup=False)
