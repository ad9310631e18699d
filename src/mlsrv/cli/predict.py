"""``mlsrv predict``: one predict, classify or regress request to a running server, REST or gRPC.

Inputs come in TF Serving's own request format (``-d/--data`` like curl: a JSON string, ``@file`` or
``-`` for stdin), as ``--input NAME=...`` values (``.npy``, ``.npz[key]``, a JSON literal), or as
``--examples`` (tf.Example feature dicts, for classify/regress). The signature is read from the
server's metadata first, so every input is typed the way the server would type it and REST and gRPC
send, and print, the same thing. The REST API has no output filter: over REST ``--output-filter`` is
applied on the client (a note says so).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mlsrv.cli.client_options import (
    ConnectionArgs,
    JsonOpt,
    LabelOpt,
    ModelOpt,
    QuietOpt,
    SignatureOpt,
    TimeoutOpt,
    VersionOpt,
    model_spec,
    timeout_seconds,
    with_connection,
)
from mlsrv.cli.runner import run
from mlsrv.errors import InvalidArgument, UsageError
from mlsrv.protocol.types import CLASSIFY_METHOD, REGRESS_METHOD, ModelSpec

if TYPE_CHECKING:  # the client, codecs and numpy are imported when the command runs: --help stays light
    import numpy as np
    from rich.console import Console

    from mlsrv.client import inputs as client_inputs
    from mlsrv.client.api import Client

INPUTS = "Inputs"


class Method(str, enum.Enum):
    predict = "predict"
    classify = "classify"
    regress = "regress"


_DATA_HELP = (
    "Request body in TF Serving's REST format: '{\"instances\": [[1.0]]}', '{\"inputs\": ...}' or, for "
    "classify/regress, '{\"examples\": [...]}'. @FILE reads a file, - reads stdin."
)
_INPUT_HELP = "One input: NAME=FILE.npy, NAME=@FILE.npz[KEY] or NAME='[[1.0]]' (JSON). Repeatable."
_EXAMPLES_HELP = "tf.Examples for classify/regress as a JSON list of feature dicts: '[{\"x\": [1.0]}]' (or @FILE, -)."


@with_connection
def predict(
    model: ModelOpt,
    data: Annotated[str | None, typer.Option("--data", "-d", help=_DATA_HELP, rich_help_panel=INPUTS)] = None,
    input_: Annotated[list[str] | None, typer.Option("--input", "-i", help=_INPUT_HELP, rich_help_panel=INPUTS)] = None,
    examples: Annotated[str | None, typer.Option("--examples", help=_EXAMPLES_HELP, rich_help_panel=INPUTS)] = None,
    method: Annotated[
        Method | None,
        typer.Option("--method", help="predict, classify or regress (default: from the signature's method name)."),
    ] = None,
    output_filter: Annotated[
        list[str] | None,
        typer.Option(
            "--output-filter",
            help="Only these outputs (repeatable or comma-separated). Sent to the server over gRPC; REST has "
            "no output filter, so over REST the client drops the others.",
        ),
    ] = None,
    outdir: Annotated[str | None, typer.Option("--outdir", help="Write each output to OUTDIR/<key>.npy.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing files in --outdir.")] = False,
    version: VersionOpt = None,
    label: LabelOpt = None,
    signature: SignatureOpt = None,
    timeout: TimeoutOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    *,
    conn: ConnectionArgs,
) -> None:
    """Send one predict, classify or regress request to a TensorFlow Serving-compatible server."""
    options = _Options(method, tuple(output_filter or ()), outdir, overwrite, timeout, json_, quiet)
    run(_main(conn, (model, version, label, signature), (data, list(input_ or ()), examples), options))


@dataclass(frozen=True, slots=True)
class _Options:
    method: Method | None
    output_filter: tuple[str, ...]
    outdir: str | None
    overwrite: bool
    timeout: str | None
    as_json: bool
    quiet: bool

    @property
    def filters(self) -> tuple[str, ...]:
        return tuple(name.strip() for item in self.output_filter for name in item.split(",") if name.strip())


class _Sources:
    """Which input options were given; at most one kind."""

    def __init__(self, data: str | None, inputs: list[str], examples: str | None) -> None:
        given = [name for name, value in (("--data", data), ("--input", inputs), ("--examples", examples)) if value]
        if len(given) > 1:
            raise UsageError(f"give inputs with only one of --data, --input or --examples (got {' and '.join(given)})")
        if not given:
            raise UsageError("no inputs: give --data, --input or --examples (see mlsrv predict --help)")
        from mlsrv.client import inputs as client_inputs

        self.data = data
        self.inputs = [client_inputs.parse_input_arg(item) for item in inputs]
        self.examples = examples

    def document(self) -> dict[str, Any] | None:
        """The request body as a dict, for --data and --examples (None for --input)."""
        from mlsrv.client import inputs as client_inputs
        from mlsrv.protocol.json_parse import loads

        if self.data is not None:
            return client_inputs.parse_document(client_inputs.read_arg(self.data, "--data"), "--data")
        if self.examples is not None:
            raw = client_inputs.read_arg(self.examples, "--examples")
            try:
                value = loads(raw)
            except InvalidArgument as exc:
                raise UsageError(f"--examples: {exc.message}") from None
            if isinstance(value, list):
                return {"examples": value}
            if isinstance(value, dict) and "examples" in value:
                return value
            raise UsageError('--examples: expected a JSON list of feature dicts, or {"examples": [...]}')
        return None


async def _main(
    conn: ConnectionArgs,
    model: tuple[str, int | None, str | None, str | None],
    given: tuple[str | None, list[str], str | None],
    options: _Options,
) -> None:
    """Everything that can fail runs in here, under ``run``: a bad option is one line, never a traceback."""
    from mlsrv.cli import render
    from mlsrv.client import inputs as client_inputs
    from mlsrv.client.api import Client
    from mlsrv.protocol import json_codec

    endpoint = conn.endpoint()
    spec = model_spec(*model)
    timeout_s = timeout_seconds(options.timeout)
    sources = _Sources(*given)
    method, output_filter = options.method, options.filters
    doc = sources.document()
    if doc is not None and not spec.signature:
        spec = ModelSpec(spec.name, spec.version, spec.label, json_codec.signature_name_of(doc))
    is_examples = doc is not None and "examples" in doc and "instances" not in doc and "inputs" not in doc
    if method is not None and (method is not Method.predict) != is_examples:
        needs = "--examples (or a --data body with 'examples')" if method is not Method.predict else "tensor inputs"
        raise UsageError(f"--method {method.value} needs {needs}")
    if output_filter and is_examples:
        raise UsageError("--output-filter applies to predict only")
    outdir = _output_dir(options.outdir) if options.outdir else None
    console = render.make_console()
    if not options.quiet and output_filter and endpoint.protocol == "rest":
        typer.echo("note: the REST API has no output filter; the client keeps only the requested outputs", err=True)
    async with Client(endpoint.transport(), timeout=timeout_s) as client:
        signature = await client.signature(spec)
        if is_examples:
            assert doc is not None
            chosen = method.value if method is not None else _examples_method(spec, signature.method_name)
            await _examples(client, spec, chosen, doc, console, options.as_json)
            return
        request = (
            client_inputs.decode_request(doc, signature)
            if doc is not None
            else client_inputs.inputs_from_args(sources.inputs, signature)
        )
        if not options.quiet and doc is None:
            for note in client_inputs.shape_notes(request.inputs, signature):
                typer.echo(note, err=True)
        response = await client.predict(
            spec, request.inputs, output_filter=output_filter, format=request.format, signature=signature
        )
    _show_outputs(response.outputs, request, outdir, options, console)


def _examples_method(spec: ModelSpec, method_name: str) -> str:
    if method_name == CLASSIFY_METHOD:
        return "classify"
    if method_name == REGRESS_METHOD:
        return "regress"
    raise UsageError(
        f"signature {spec.signature_or_default!r} has method {method_name or 'none'!r}; "
        "give --method classify or --method regress for examples"
    )


async def _examples(
    client: Client, spec: ModelSpec, method: str, doc: dict[str, Any], console: Console, as_json: bool
) -> None:
    from mlsrv.cli import client_render
    from mlsrv.protocol import json_codec

    examples = doc.get("examples")
    if not isinstance(examples, list):
        examples = []  # the codec reports TF Serving's message for a missing or malformed list
    context = doc.get("context")
    if method == "classify":
        result = await client.classify(spec, examples, context=context)
        if as_json:
            client_render.print_wire_json(console, json_codec.encode_classify_response(result))
        else:
            client_render.render_classify(console, result)
        return
    regressed = await client.regress(spec, examples, context=context)
    if as_json:
        client_render.print_wire_json(console, json_codec.encode_regress_response(regressed))
    else:
        client_render.render_regress(console, regressed)


def _show_outputs(
    outputs: dict[str, np.ndarray],
    request: client_inputs.Request,
    outdir: Path | None,
    options: _Options,
    console: Console,
) -> None:
    from mlsrv.cli import client_render, render
    from mlsrv.protocol import json_codec

    saved = {}
    if outdir is not None:
        saved = render.output_files(outdir, outputs, options.overwrite)
        render.save_outputs(saved, outputs)
    if options.as_json:
        client_render.print_wire_json(console, json_codec.encode_predict_response(outputs, request.format))
        return
    if options.quiet and saved:
        return
    client_render.render_outputs(console, outputs)
    for key, path in saved.items():
        console.print(f"Output {key} is saved to {path}", markup=False)


def _output_dir(outdir: str) -> Path:
    folder = Path(outdir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create --outdir {outdir}: {exc.strerror or exc}") from None
    return folder
