"""``mlsrv abtest``: send the same inputs to two versions (or labels) of a model and compare the answers.

Typical use is a canary check before moving a label: ``mlsrv abtest -m resnet --a-label stable
--b-label canary``. Inputs are given as in ``mlsrv predict`` (``--input``, ``-d/--data``) or generated
from A's signature (random, fixed seeds, so reruns send the same tensors). Exit code 1 when any output
differs beyond ``--atol``/``--rtol`` or either side returned an error, 0 when they agree; 2 for bad options
and 3 when the server cannot be reached, as the other client commands.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Final

import typer

from mlsrv.cli.client_options import (
    MODEL,
    ConnectionArgs,
    JsonOpt,
    ModelOpt,
    QuietOpt,
    SignatureOpt,
    TimeoutOpt,
    model_spec,
    timeout_seconds,
    with_connection,
)
from mlsrv.cli.runner import print_error, run
from mlsrv.errors import EXIT_REQUEST_ERROR, UsageError
from mlsrv.protocol.types import ModelSpec, SignatureInfo

if TYPE_CHECKING:  # the client, numpy and rich tables are imported when the command runs: --help stays light
    from rich.console import Console

    from mlsrv.client import inputs as client_inputs
    from mlsrv.client.abtest import ABReport

INPUTS = "Inputs"
CHECK = "Comparison"
#: Distinct generated requests, sent round-robin.
POOL_SIZE: Final = 8

_DATA_HELP = "Request body in TF Serving's REST format ('{\"instances\": [[1.0]]}' or '{\"inputs\": ...}'); @FILE, -."
_INPUT_HELP = "One input: NAME=FILE.npy, NAME=@FILE.npz[KEY] or NAME='[[1.0]]' (JSON). Repeatable."


@with_connection
def abtest(
    model: ModelOpt,
    a_version: Annotated[
        int | None, typer.Option("--a-version", help="Version for side A.", rich_help_panel=MODEL, min=0)
    ] = None,
    a_label: Annotated[
        str | None, typer.Option("--a-label", help="Version label for side A, e.g. stable.", rich_help_panel=MODEL)
    ] = None,
    b_version: Annotated[
        int | None, typer.Option("--b-version", help="Version for side B.", rich_help_panel=MODEL, min=0)
    ] = None,
    b_label: Annotated[
        str | None, typer.Option("--b-label", help="Version label for side B, e.g. canary.", rich_help_panel=MODEL)
    ] = None,
    signature: SignatureOpt = None,
    requests: Annotated[int, typer.Option("--requests", "-n", help="Request pairs to send.", min=1)] = 100,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", help="Request pairs in flight at once.", min=1)
    ] = 4,
    data: Annotated[str | None, typer.Option("--data", "-d", help=_DATA_HELP, rich_help_panel=INPUTS)] = None,
    input_: Annotated[list[str] | None, typer.Option("--input", "-i", help=_INPUT_HELP, rich_help_panel=INPUTS)] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", "-b", help="Rows per generated request.", rich_help_panel=INPUTS, min=1)
    ] = 1,
    shape: Annotated[
        list[str] | None,
        typer.Option(
            "--shape", help="Generated input's instance shape NAME:D1,D2 (repeatable).", rich_help_panel=INPUTS
        ),
    ] = None,
    atol: Annotated[float, typer.Option("--atol", help="Absolute tolerance.", rich_help_panel=CHECK, min=0)] = 1e-6,
    rtol: Annotated[float, typer.Option("--rtol", help="Relative tolerance.", rich_help_panel=CHECK, min=0)] = 1e-6,
    timeout: TimeoutOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    *,
    conn: ConnectionArgs,
) -> None:
    """Compare two versions or labels of a model on identical inputs: output differences, latency, errors.

    An output agrees when its max abs diff is within --atol or its max relative diff is within --rtol.

    Exit code 1 when an output differs or either side had errors, 0 when A and B agree.
    """
    options = _Options(
        model, (a_version, a_label), (b_version, b_label), signature, requests, concurrency,
        data, tuple(input_ or ()), batch_size, tuple(shape or ()), atol, rtol, timeout, json_, quiet,
    )  # fmt: skip
    failures = run(_main(conn, options))
    if failures:
        for line in failures:
            print_error("abtest failed", line)
        raise typer.Exit(EXIT_REQUEST_ERROR)


@dataclass(frozen=True, slots=True)
class _Options:
    model: str
    a: tuple[int | None, str | None]
    b: tuple[int | None, str | None]
    signature: str | None
    requests: int
    concurrency: int
    data: str | None
    inputs: tuple[str, ...]
    batch_size: int
    shapes: tuple[str, ...]
    atol: float
    rtol: float
    timeout: str | None
    as_json: bool
    quiet: bool

    def sides(self) -> tuple[ModelSpec, ModelSpec]:
        specs = []
        for name, (version, label) in (("a", self.a), ("b", self.b)):
            if version is None and label is None:
                raise UsageError(f"give --{name}-version or --{name}-label")
            if version is not None and label is not None:
                raise UsageError(f"give either --{name}-version or --{name}-label, not both")
            specs.append(model_spec(self.model, version, label, self.signature))
        if specs[0] == specs[1]:
            raise UsageError("A and B name the same version; nothing to compare")
        return specs[0], specs[1]


async def _main(conn: ConnectionArgs, options: _Options) -> list[str]:
    """Run the A/B test, print it, and return the failures (empty: A and B agree)."""
    from mlsrv.cli import render
    from mlsrv.client.abtest import ABSpec, run_abtest
    from mlsrv.client.api import Client

    if options.data is not None and options.inputs:
        raise UsageError("give inputs with only one of --data or --input")
    if options.shapes and (options.data is not None or options.inputs):
        raise UsageError("--shape applies to generated inputs only")
    a, b = options.sides()
    spec = ABSpec(a, b, options.requests, options.concurrency).validate()
    endpoint = conn.endpoint()
    timeout_s = timeout_seconds(options.timeout)
    async with Client(endpoint.transport(), timeout=timeout_s) as client:
        sig_a = await client.signature(a)
        sig_b = await client.signature(b)
        pool = _requests(options, sig_a)
        report = await run_abtest(client, spec, pool, signatures=(sig_a, sig_b))
    console = render.make_console()
    if options.as_json:
        render.print_json(console, report.to_dict(options.atol, options.rtol))
    else:
        _render(console, report, options)
    return report.failures(options.atol, options.rtol)


def _requests(options: _Options, signature: SignatureInfo) -> list[client_inputs.Request]:
    from mlsrv.client import inputs as client_inputs

    if options.data is not None:
        doc = client_inputs.parse_document(client_inputs.read_arg(options.data, "--data"), "--data")
        return [client_inputs.decode_request(doc, signature)]
    if options.inputs:
        args = [client_inputs.parse_input_arg(item) for item in options.inputs]
        return [client_inputs.inputs_from_args(args, signature)]
    shapes = client_inputs.parse_shapes(options.shapes)
    return [
        client_inputs.generate_request(signature, batch_size=options.batch_size, shapes=shapes, seed=seed)
        for seed in range(POOL_SIZE)
    ]


def _describe(spec: ModelSpec) -> str:
    return f"label {spec.label}" if spec.label else f"version {spec.version}"


def _render(console: Console, report: ABReport, options: _Options) -> None:
    from rich.table import Table
    from rich.text import Text

    failures = report.failures(options.atol, options.rtol)
    if not options.quiet:
        sides = Table(title=Text(f"{report.a.spec.name}: {report.compared}/{report.requests} request pairs compared"))
        for column in ("side", "model", "ok", "errors", "p50 ms", "p99 ms", "mean ms"):
            sides.add_column(column, justify="left" if column in ("side", "model", "errors") else "right")
        for name, side in (("A", report.a), ("B", report.b)):
            p50, p99 = side.latency.percentiles([50.0, 99.0])
            errors = ", ".join(f"{code}: {n}" for code, n in sorted(side.errors.items())) or "0"
            sides.add_row(
                name, Text(_describe(side.spec)), str(side.ok), Text(errors),
                f"{p50 * 1e3:.3f}", f"{p99 * 1e3:.3f}", f"{side.latency.mean * 1e3:.3f}",
            )  # fmt: skip
        console.print(sides)
        outputs = Table()
        for column in ("output", "max abs diff", "max rel diff", "mismatched", "shape mismatches", "verdict"):
            outputs.add_column(column, justify="left" if column in ("output", "verdict") else "right")
        for key, diff in sorted(report.outputs.items()):
            ok = not diff.failures(options.atol, options.rtol)
            outputs.add_row(
                Text(key), f"{diff.max_abs_diff:.6g}", f"{diff.max_rel_diff:.6g}", str(diff.mismatched),
                str(diff.shape_mismatches), "[green]equal[/]" if ok else "[red]differs[/]",
            )  # fmt: skip
        if report.outputs:
            console.print(outputs)
    tolerance = f"atol={options.atol:g}, rtol={options.rtol:g}"
    if failures:
        console.print(f"[red]FAIL[/]: A and B differ ({tolerance})")
    else:
        console.print(f"[green]PASS[/]: A and B agree ({tolerance})")
