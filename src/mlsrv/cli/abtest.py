"""``mlsrv abtest``: send the same inputs to two versions (or labels) of a model and compare the answers.

Typical use is a canary check before moving a label: ``mlsrv abtest -m resnet --a-label stable
--b-label canary``. Inputs are given as in ``mlsrv predict`` (``--input``, ``-d/--data``) or generated
from A's signature (random, fixed seeds, so reruns send the same tensors). Exit code 1 when any output
differs beyond ``--atol``/``--rtol`` or either side returned an error, 0 when they agree; 2 for bad options
and 3 when the server cannot be reached, as the other client commands.
"""

from __future__ import annotations

import enum
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
from mlsrv.client.bench_spec import parse_fraction
from mlsrv.errors import EXIT_REQUEST_ERROR, UsageError
from mlsrv.protocol.types import ModelSpec, SignatureInfo

if TYPE_CHECKING:  # the client, numpy and rich tables are imported when the command runs: --help stays light
    from rich.console import Console

    from mlsrv.client import inputs as client_inputs
    from mlsrv.client.abtest import ABReport, Gates

INPUTS = "Inputs"
CHECK = "Comparison"
GATES = "CI gates"


class SendMode(str, enum.Enum):
    """How requests reach the sides (``client/abtest.py`` says why each exists)."""

    PAIRED = "paired"
    SHADOW = "shadow"
    SPLIT = "split"
#: Distinct generated requests, sent round-robin.
POOL_SIZE: Final = 8

_DATA_HELP = "Request body in TF Serving's REST format ('{\"instances\": [[1.0]]}' or '{\"inputs\": ...}'); @FILE, -."
_INPUT_HELP = "One input: NAME=FILE.npy, NAME=@FILE.npz[KEY] or NAME='[[1.0]]' (JSON). Repeatable."
_INPUT_FILE_HELP = (
    "Requests from a file: TF Serving JSON (one body, or one per line), .npy, .npz, or a request log "
    "of mlsrv serve (PredictionLog TFRecords: its Predict calls). Repeatable; sent in turn."
)


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
    requests: Annotated[int, typer.Option("--requests", "-n", help="Requests to send.", min=1)] = 100,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", help="Requests in flight at once.", min=1)] = 4,
    mode: Annotated[
        SendMode,
        typer.Option(
            "--mode",
            help="paired: each request to both sides in turn (interleaved); shadow: to both at once (A answers, "
            "B mirrors); split: each request to one side at random (--split).",
        ),
    ] = SendMode.PAIRED,
    split: Annotated[float, typer.Option("--split", help="split mode: A's share of the requests, e.g. 0.9.")] = 0.5,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split's routing and of the bootstrap.")] = 0,
    data: Annotated[str | None, typer.Option("--data", "-d", help=_DATA_HELP, rich_help_panel=INPUTS)] = None,
    input_: Annotated[list[str] | None, typer.Option("--input", "-i", help=_INPUT_HELP, rich_help_panel=INPUTS)] = None,
    input_file: Annotated[
        list[str] | None, typer.Option("--input-file", help=_INPUT_FILE_HELP, rich_help_panel=INPUTS)
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", "-b", help="Rows per generated request.", rich_help_panel=INPUTS, min=1)
    ] = 1,
    shape: Annotated[
        list[str] | None,
        typer.Option(
            "--shape", help="Generated input's instance shape NAME:D1,D2 (repeatable).", rich_help_panel=INPUTS
        ),
    ] = None,
    atol: Annotated[
        float, typer.Option("--atol", help="Absolute tolerance (numpy.isclose).", rich_help_panel=CHECK, min=0)
    ] = 1e-6,
    rtol: Annotated[
        float,
        typer.Option("--rtol", help="Relative tolerance, of A's value (numpy.isclose).", rich_help_panel=CHECK, min=0),
    ] = 1e-6,
    confidence: Annotated[
        float, typer.Option("--confidence", help="Confidence of every interval and verdict.", rich_help_panel=CHECK)
    ] = 0.95,
    min_agreement: Annotated[
        str,
        typer.Option(
            "--min-agreement",
            help="Fail below this share of agreeing request pairs (99% or 0.99).",
            rich_help_panel=GATES,
        ),
    ] = "100%",
    max_p99_regression: Annotated[
        str | None,
        typer.Option(
            "--max-p99-regression",
            help="Fail when B's p99 is detectably slower than A's by more than this (10%).",
            rich_help_panel=GATES,
        ),
    ] = None,
    max_error_rate_diff: Annotated[
        str | None,
        typer.Option(
            "--max-error-rate-diff",
            help="Fail when B's error rate exceeds A's by more than this (1%); without it any error fails.",
            rich_help_panel=GATES,
        ),
    ] = None,
    timeout: TimeoutOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    *,
    conn: ConnectionArgs,
) -> None:
    """Compare two versions or labels of a model on identical inputs: agreement, latency, errors, with confidence.

    Outputs agree element by element as numpy.isclose says (B against A: |b - a| <= atol + rtol * |a|);
    the share of agreeing request pairs, top-1 agreement for class scores and the p50/p95/p99
    differences come with confidence intervals, and each latency difference with a verdict: better,
    worse, or no detectable difference.

    Exit code 1 when a gate fails (--min-agreement, default 100%; --max-p99-regression;
    --max-error-rate-diff, default: any error), a split's sample ratio is off, or nothing was compared.
    """
    options = _Options(
        model, (a_version, a_label), (b_version, b_label), signature, requests, concurrency, mode, split, seed,
        data, tuple(input_ or ()), tuple(input_file or ()), batch_size, tuple(shape or ()), atol, rtol, confidence,
        (min_agreement, max_p99_regression, max_error_rate_diff), timeout, json_, quiet,
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
    mode: SendMode
    split: float
    seed: int
    data: str | None
    inputs: tuple[str, ...]
    input_files: tuple[str, ...]
    batch_size: int
    shapes: tuple[str, ...]
    atol: float
    rtol: float
    confidence: float
    gate_texts: tuple[str, str | None, str | None]
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

    def gates(self) -> Gates:
        from mlsrv.client.abtest import Gates

        agreement, p99, errors = self.gate_texts
        return Gates(
            min_agreement=_share(agreement, "--min-agreement"),
            max_p99_regression=None if p99 is None else _share(p99, "--max-p99-regression", upper=None),
            max_error_rate_diff=None if errors is None else _share(errors, "--max-error-rate-diff"),
        )


def _share(text: str, option: str, upper: float | None = 1.0) -> float:
    """``"10%"`` or ``"0.1"`` -> 0.1; ``UsageError`` naming ``option`` otherwise."""
    try:
        value = parse_fraction(text)
    except ValueError:
        raise UsageError(f"{option} expects a percentage (10%) or a fraction (0.1), got {text!r}") from None
    if not value >= 0.0 or (upper is not None and value > upper):
        limit = "0%..100%" if upper is not None else ">= 0%"
        raise UsageError(f"{option} must be {limit}, got {text!r}")
    return value


async def _main(conn: ConnectionArgs, options: _Options) -> list[str]:
    """Run the A/B test, print it, and return the failures (empty: it passes)."""
    from mlsrv.cli import render
    from mlsrv.client.abtest import ABSpec, run_abtest
    from mlsrv.client.api import Client

    given = [name for name, value in (("--data", options.data is not None), ("--input", options.inputs),
                                      ("--input-file", options.input_files)) if value]  # fmt: skip
    if len(given) > 1:
        raise UsageError(f"give inputs with only one of --data, --input or --input-file (got {' and '.join(given)})")
    if options.shapes and given:
        raise UsageError("--shape applies to generated inputs only")
    a, b = options.sides()
    gates = options.gates()
    spec = ABSpec(
        a, b, options.requests, options.concurrency, options.mode.value, options.split, options.seed,
        options.atol, options.rtol, options.confidence,
    ).validate()  # fmt: skip
    endpoint = conn.endpoint()
    timeout_s = timeout_seconds(options.timeout)
    async with Client(endpoint.transport(), timeout=timeout_s) as client:
        sig_a = await client.signature(a)
        sig_b = await client.signature(b)
        pool = _requests(options, sig_a)
        report = await run_abtest(client, spec, pool, signatures=(sig_a, sig_b))
    failures = report.failures(gates)
    console = render.make_console()
    if options.as_json:
        render.print_json(console, report.to_dict(gates))
    else:
        _render(console, report, failed=bool(failures), quiet=options.quiet)
    return failures


def _requests(options: _Options, signature: SignatureInfo) -> list[client_inputs.Request]:
    from mlsrv.client import inputs as client_inputs

    if options.data is not None:
        doc = client_inputs.parse_document(client_inputs.read_arg(options.data, "--data"), "--data")
        return [client_inputs.decode_request(doc, signature)]
    if options.inputs:
        args = [client_inputs.parse_input_arg(item) for item in options.inputs]
        return [client_inputs.inputs_from_args(args, signature)]
    if options.input_files:
        return [r for path in options.input_files for r in client_inputs.load_request_file(path, signature)]
    shapes = client_inputs.parse_shapes(options.shapes)
    return [
        client_inputs.generate_request(signature, batch_size=options.batch_size, shapes=shapes, seed=seed)
        for seed in range(POOL_SIZE)
    ]


def _describe(spec: ModelSpec) -> str:
    return f"label {spec.label}" if spec.label else f"version {spec.version}"


def _render(console: Console, report: ABReport, *, failed: bool, quiet: bool) -> None:
    from rich.table import Table
    from rich.text import Text

    confidence = f"{report.spec.confidence:.0%}"
    if not quiet:
        compared = (
            f"{report.compared}/{report.spec.requests} request pairs compared"
            if report.spec.compares_outputs
            else f"{report.spec.requests} requests split {report.spec.split:.0%}/{1 - report.spec.split:.0%}"
        )
        sides = Table(title=Text(f"{report.a.spec.name}, {report.spec.mode}: {compared}"))
        for column in ("side", "model", "ok", "errors", "p50 ms", "p95 ms", "p99 ms"):
            sides.add_column(column, justify="left" if column in ("side", "model", "errors") else "right")
        for name, side in (("A", report.a), ("B", report.b)):
            latency = side.to_dict()["latency_ms"] or {}
            errors = ", ".join(f"{code}: {n}" for code, n in sorted(side.errors.items())) or "0"
            cells = [f"{latency[key]:.3f}" if key in latency else "-" for key in ("p50", "p95", "p99")]
            sides.add_row(name, Text(_describe(side.spec)), str(side.ok), Text(errors), *cells)
        console.print(sides)
        latency_table = Table(title=Text(f"latency, B - A ({confidence} CI)"))
        for column in ("percentile", "A ms", "B ms", "B - A ms", "CI", "verdict"):
            latency_table.add_column(column, justify="left" if column in ("percentile", "verdict") else "right")
        for percentile, comparison in report.latency.items():
            if comparison is not None:
                span = comparison.difference_ms
                latency_table.add_row(
                    f"p{percentile:g}", f"{comparison.a_ms:.3f}", f"{comparison.b_ms:.3f}", f"{span.estimate:+.3f}",
                    f"{span.low:+.3f} .. {span.high:+.3f}", comparison.verdict,
                )  # fmt: skip
        console.print(latency_table)
        if report.outputs:
            tolerance = f"rtol {report.spec.rtol:g}, atol {report.spec.atol:g}"
            outputs = Table(title=Text(f"outputs (numpy.isclose, {tolerance})"))
            for column in ("output", "not close", "max abs diff", "max rel diff", "shape mismatches", "top-1 agree"):
                outputs.add_column(column, justify="left" if column == "output" else "right")
            for key, diff in sorted(report.outputs.items()):
                top1 = diff.top1(report.spec.confidence)
                top1_text = "-" if top1 is None else f"{top1.estimate:.2%} ({top1.low:.2%}-{top1.high:.2%})"
                outputs.add_row(
                    Text(key), f"{diff.not_close}/{diff.elements}", f"{diff.max_abs_diff:.6g}",
                    f"{diff.max_rel_diff:.6g}", str(diff.shape_mismatches), top1_text,
                )  # fmt: skip
            console.print(outputs)
        for worst in sorted(report.worst, reverse=True):
            console.print(
                f"largest difference: request {worst.request}, output {worst.output}{list(worst.index)}: "
                f"A {worst.a:.6g}, B {worst.b:.6g} (|diff| {worst.abs_diff:.6g})",
                markup=False,
            )
        agreement = report.agreement
        if agreement is not None:
            console.print(
                f"agreement: {report.agreeing}/{report.compared} request pairs = {agreement.estimate:.2%} "
                f"({confidence} CI {agreement.low:.2%}-{agreement.high:.2%})",
                markup=False,
            )
        ratio = report.sample_ratio
        if ratio is not None:
            console.print(
                f"sample ratio: A {ratio.a}, B {ratio.b} answered (chi-square p = {ratio.p_value:.3g})", markup=False
            )
    console.print("[red]FAIL[/]" if failed else "[green]PASS[/]")
