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

import typer

from mlsrv.cli.runner import run
from mlsrv.cli.show import pick_signature, resolve_model_dir
from mlsrv.cli.tf_import import tensorflow_import_muted
from mlsrv.errors import MlsrvError, UsageError
from mlsrv.protocol.types import SignatureInfo

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
    import numpy as np  # here, not at import: `mlsrv --help` and completion stay light

    from mlsrv.cli import input_exprs, render

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
    values.update({key: input_exprs.load_file_input(key, item) for key, item in files.items()})
    for key, examples_list in features.items():
        values[key] = np.array(tf_runtime.serialize_examples(examples_list), dtype=object)
    feeds = input_exprs.prepare_inputs(signature, values)
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


def _output_paths(outdir: Path, signature: SignatureInfo, overwrite: bool) -> dict[str, Path]:
    """``<outdir>/<key>.npy`` per output, checked before running so nothing is half-written."""
    from mlsrv.cli import render

    paths = render.output_files(outdir, signature.outputs, overwrite)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create --outdir {outdir}: {error.strerror or error}") from None
    return paths
