"""``mlsrv run``: run one signature of a SavedModel on inputs from files, expressions or tf.Examples.

Same flags as ``saved_model_cli run``, with three differences: ``--input_exprs`` is evaluated by an AST
whitelist (never ``eval``); an input key given by two options is an error instead of a warning; and the
inputs are checked against the signature (names, dtype, rank, fixed dimensions) before TF runs.
The model runs through ``tf_session.SavedModelLoader``/``TfServable.run``, the same code the server uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from mlsrv.cli import input_exprs, render
from mlsrv.cli.runner import run
from mlsrv.cli.show import pick_signature, resolve_model_dir, tensorflow_import_muted
from mlsrv.errors import MlsrvError, UsageError
from mlsrv.protocol import dtypes
from mlsrv.protocol.types import SignatureInfo, TensorInfo

_HELP_INPUTS = "Inputs from files: 'x=x.npy;y=data.npz\\[y]' (an .npz without \\[name] must hold one array)."
_HELP_EXPRS = (
    "Inputs as expressions: 'x=np.array([[1.0],[5.0]])'. Literals, lists, and np.array/asarray/ones/zeros/"
    "full/arange/linspace/eye/random.rand/randn/randint with numpy dtypes; nothing else is evaluated."
)
_HELP_EXAMPLES = 'Serialized tf.Examples: \'inputs=[{"x":[1.0],"label":["a"]}]\' (lists of float, int or str).'


def run_command(
    dir: Annotated[str, typer.Option("--dir", help="SavedModel folder, or a model base path with numbered versions.")],
    tag_set: Annotated[str, typer.Option("--tag_set", "--tag-set", help="MetaGraph to load.")] = "serve",
    signature_def: Annotated[
        str, typer.Option("--signature_def", "--signature-def", help="Signature to run.")
    ] = "serving_default",
    inputs: Annotated[str | None, typer.Option("--inputs", help=_HELP_INPUTS)] = None,
    input_exprs: Annotated[str | None, typer.Option("--input_exprs", "--input-exprs", help=_HELP_EXPRS)] = None,
    input_examples: Annotated[
        str | None, typer.Option("--input_examples", "--input-examples", help=_HELP_EXAMPLES)
    ] = None,
    outdir: Annotated[
        str | None, typer.Option("--outdir", help="Write each output to <outdir>/<output_key>.npy.")
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite/--nooverwrite", help="Replace existing files in --outdir.", show_default=False),
    ] = False,
    version: Annotated[
        int | None, typer.Option("--version", help="Version to run when --dir is a base path (default: newest).")
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="Machine-readable output (docs/cli-json.md).")] = False,
    tf_debug: Annotated[
        bool,
        typer.Option(
            "--tf_debug", "--tf-debug", help="saved_model_cli's tfdbg option: not available (the error says why)."
        ),
    ] = False,
) -> None:
    """Run a SavedModel signature on the given inputs and print or save its outputs (saved_model_cli run).

    Examples:

      mlsrv run --dir models/half_plus_two/123 --input_exprs 'x=np.array([[1.0],[5.0]])'

      mlsrv run --dir models/half_plus_two --inputs x=x.npy --outdir out

      mlsrv run --dir models/half_plus_two --signature_def regress_x_to_y --input_examples 'inputs=[{"x":[1.0]}]'

    Inputs are checked against the signature (names, dtype, shape) first.

    Exit codes: 0 ok, 1 the model failed, 2 bad flags or inputs.
    """
    run(
        lambda: _run(
            dir, tag_set, signature_def, inputs, input_exprs, input_examples, outdir, overwrite, version, json_,
            tf_debug,
        )
    )  # fmt: skip


def _run(
    directory: str,
    tag_set: str,
    signature_key: str,
    inputs: str | None,
    exprs: str | None,
    examples: str | None,
    outdir: str | None,
    overwrite: bool,
    version: int | None,
    as_json: bool,
    tf_debug: bool = False,
) -> None:
    if tf_debug:
        raise UsageError(_NO_TF_DEBUG)
    files = input_exprs.parse_inputs(inputs or "")
    values: dict[str, Any] = dict(input_exprs.parse_input_exprs(exprs or ""))
    features = input_exprs.parse_input_examples(examples or "")
    _check_disjoint({"--inputs": files.keys(), "--input_exprs": values.keys(), "--input_examples": features.keys()})
    if not (files or values or features):
        raise UsageError("at least one of --inputs, --input_exprs or --input_examples is required")
    model = resolve_model_dir(directory, version)
    with tensorflow_import_muted():
        from mlsrv.server import tf_runtime, tf_session

    meta_graph = tf_runtime.inspect_saved_model(str(model.path)).meta_graph(tag_set)
    signature = pick_signature(meta_graph, signature_key)
    values.update({key: load_file_input(key, item) for key, item in files.items()})
    for key, examples_list in features.items():
        values[key] = np.array(tf_runtime.serialize_examples(examples_list), dtype=object)
    feeds = prepare_inputs(signature, values)
    targets = _output_paths(Path(outdir), signature, overwrite) if outdir else {}

    servable = tf_session.SavedModelLoader(str(model.path), meta_graph.tags).load()
    try:
        outputs = servable.run(signature_key, feeds)
    except MlsrvError as error:  # TF's messages span lines ("\n\t [[{{node ...}}]]"); the CLI prints one
        raise type(error)(" ".join(line.strip() for line in error.message.splitlines())) from None
    render.save_outputs(targets, outputs)
    console = render.make_console()
    if as_json:
        document = {
            "path": str(model.path),
            "version": model.version,
            "signature_def": signature_key,
            "outputs": {key: render.tensor_to_json(outputs[key]) for key in sorted(outputs)},
            "saved": {key: str(path) for key, path in targets.items()},
        }
        render.print_json(console, document)
        return
    render.render_tensors(console, outputs)
    for key, path in targets.items():
        console.print(f"Output {key} is saved to {path}", markup=False)


#: Why ``--tf_debug`` is refused. saved_model_cli wraps its session in tfdbg v1's
#: ``LocalCLIDebugWrapperSession``; tried the same way here (TF 2.21), the debugger crashed on its
#: first run with ``TypeError: 'NoneType' object is not iterable`` (a graph imported from a
#: SavedModel has no Python tracebacks, which tfdbg reads), and TF 2's debugger instruments
#: tf.function and eager code, not the graph session a SavedModel runs in.
_NO_TF_DEBUG = (
    "--tf_debug is not available: the TensorFlow debugger it opens (tfdbg v1) fails on graphs loaded from a "
    "SavedModel in TensorFlow 2, and TF 2's debugger does not instrument them; use `mlsrv show --all` and "
    "--outdir to look at a run"
)


def _check_disjoint(keys_by_option: Mapping[str, Any]) -> None:
    seen: dict[str, str] = {}
    for option, keys in keys_by_option.items():
        for key in keys:
            if key in seen:
                raise UsageError(f"input key {key!r} is given by both {seen[key]} and {option}")
            seen[key] = option


def load_file_input(key: str, item: input_exprs.FileInput) -> np.ndarray:
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
    if info.has_shape and info.shape is not None:
        expected = info.shape
        if len(expected) != array.ndim or any(e not in (-1, a) for e, a in zip(expected, array.shape, strict=True)):
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


def _output_paths(outdir: Path, signature: SignatureInfo, overwrite: bool) -> dict[str, Path]:
    """``<outdir>/<key>.npy`` per output, checked before running so nothing is half-written."""
    paths = render.output_files(outdir, signature.outputs, overwrite)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create --outdir {outdir}: {error.strerror or error}") from None
    return paths
