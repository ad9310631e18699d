"""``mlsrv bench``: load-test a served model over REST or gRPC (closed loop, open loop, sweeps, CI gates).

The measuring engine is :mod:`mlsrv.client.bench` (pure, transport-free); this module only builds the
workload and wires it to a :class:`~mlsrv.client.api.Client`: it reads the signature from the server,
prepares a small pool of requests (generated from the signature, or read from files) and encodes each
once (JSON body or protobuf with ``tensor_content``), then sends them round-robin. ``--check-outputs``
compares every response with a reference answer taken before the run (or ``--expected``) and counts
a difference as an ``OutputMismatch`` error.

Exit codes: 0 ok; 1 when a CI gate (``--max-p99``, ``--min-rps``, ``--max-error-rate``) is violated or
a request error stops the set-up; 2 for bad options; 3 when the server cannot be reached.
"""

from __future__ import annotations

import functools
import math
import sys
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Annotated, Final

import typer

from mlsrv.cli.client_options import (
    ConnectionArgs,
    JsonOpt,
    LabelOpt,
    QuietOpt,
    SignatureOpt,
    TimeoutOpt,
    VersionOpt,
    model_spec,
    timeout_seconds,
    with_connection,
)
from mlsrv.cli.runner import print_error, run
from mlsrv.client.bench_spec import Arrival, BenchSpec, parse_duration, parse_latency, parse_levels, parse_rate_percent
from mlsrv.errors import EXIT_REQUEST_ERROR, UsageError

if TYPE_CHECKING:  # the engine, the client and numpy are imported when the command runs: --help stays light
    from mlsrv.cli import bench_output
    from mlsrv.cli.bench_workload import InputOptions
    from mlsrv.client.api import Endpoint
    from mlsrv.client.server_metrics import ServerProbe

LOAD = "Load"
INPUTS = "Inputs"
GATES = "CI gates"
DEFAULT_DURATION_S: Final = 10.0


@with_connection
def bench(
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model name, as served.")] = None,
    concurrency: Annotated[
        str | None,
        typer.Option(
            "--concurrency",
            "-c",
            help="Closed loop: requests kept in flight; a list (1,4,16,64) runs a sweep. Default 1.",
            rich_help_panel=LOAD,
        ),
    ] = None,
    rate: Annotated[
        str | None,
        typer.Option(
            "--rate",
            "-r",
            help="Open loop: requests/s, latency measured from the intended send time; a list sweeps.",
            rich_help_panel=LOAD,
        ),
    ] = None,
    arrival: Annotated[
        str, typer.Option("--arrival", help="Open-loop spacing: constant or poisson.", rich_help_panel=LOAD)
    ] = "constant",
    duration: Annotated[
        str | None,
        typer.Option("--duration", help="Measured time, e.g. 30s (default 10s).", rich_help_panel=LOAD),
    ] = None,
    requests: Annotated[
        int | None, typer.Option("--requests", "-n", help="Measured requests to send.", rich_help_panel=LOAD)
    ] = None,
    warmup: Annotated[
        str, typer.Option(
            "--warmup",
            help="Unmeasured time before measuring, e.g. 2s. Open-loop past capacity, use 0s: requests "
            "sent while warming up are still queued once measuring starts, and take server time that "
            "is not counted.",
            rich_help_panel=LOAD,
        )
    ] = "0s",
    workers: Annotated[
        int,
        typer.Option("--workers", help="Client processes (when one core cannot make the load).", rich_help_panel=LOAD),
    ] = 1,
    max_in_flight: Annotated[
        int,
        typer.Option(
            "--max-in-flight", help="Open loop: drop requests beyond this many outstanding.", rich_help_panel=LOAD
        ),
    ] = 1000,
    batch_size: Annotated[
        int | None,
        typer.Option("--batch-size", "-b", help="Rows per generated request (default 1).", rich_help_panel=INPUTS),
    ] = None,
    input_file: Annotated[
        list[str] | None,
        typer.Option(
            "--input-file",
            help="Requests from a file: TF Serving JSON (one body, or one per line), .npy, .npz, or a request log "
            "of mlsrv serve (PredictionLog TFRecords: its Predict calls). Repeatable; sent round-robin.",
            rich_help_panel=INPUTS,
        ),
    ] = None,
    input_: Annotated[
        list[str] | None,
        typer.Option(
            "--input", "-i", help="One input as in mlsrv predict: NAME=FILE.npy | NAME=JSON.", rich_help_panel=INPUTS
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data", "-d", help="One request body in TF Serving's REST format, as in mlsrv predict; @FILE, -.",
            rich_help_panel=INPUTS,
        ),
    ] = None,
    shape: Annotated[
        list[str] | None,
        typer.Option(
            "--shape", help="Per-instance shape for generated inputs with -1 dims: NAME:D1,D2.", rich_help_panel=INPUTS
        ),
    ] = None,
    fill: Annotated[
        str, typer.Option("--fill", help="Generated values: random or zeros.", rich_help_panel=INPUTS)
    ] = "random",
    check: Annotated[
        bool,
        typer.Option(
            "--check-outputs",
            help="Check every response against a reference answer taken before the run (or --expected).",
            rich_help_panel=INPUTS,
        ),
    ] = False,
    expected: Annotated[
        str | None,
        typer.Option(
            "--expected",
            help="Expected outputs (.npz, one array per output) for --check-outputs.",
            rich_help_panel=INPUTS,
        ),
    ] = None,
    server_metrics: Annotated[
        str | None,
        typer.Option(
            "--server-metrics",
            help="The server's Prometheus page, read before and after each run for its mean batch size, queue"
            " wait and rejections: a URL, or 'off'. Default: the REST endpoint's"
            " /monitoring/prometheus/metrics.",
            rich_help_panel=LOAD,
        ),
    ] = None,
    csv: Annotated[bool, typer.Option("--csv", help="CSV on stdout, one row per run (docs/bench-json.md).")] = False,
    compare: Annotated[
        tuple[str, str] | None,
        typer.Option("--compare", help="Compare two saved --json reports (A B) instead of running.", metavar="A B"),
    ] = None,
    max_p99: Annotated[
        str | None,
        typer.Option("--max-p99", help="Fail (exit 1) if p99 latency exceeds this, e.g. 20ms.", rich_help_panel=GATES),
    ] = None,
    min_rps: Annotated[
        float | None, typer.Option("--min-rps", help="Fail (exit 1) below this many requests/s.", rich_help_panel=GATES)
    ] = None,
    max_error_rate: Annotated[
        str | None,
        typer.Option("--max-error-rate", help="Fail (exit 1) above this error rate, e.g. 0.1%.", rich_help_panel=GATES),
    ] = None,
    version: VersionOpt = None,
    label: LabelOpt = None,
    signature: SignatureOpt = None,
    timeout: TimeoutOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    *,
    conn: ConnectionArgs,
) -> None:
    """Load-test a served model: throughput, latency percentiles and errors (like perf_analyzer / wrk2).

    Exit code 1 when a CI gate is violated, 2 for bad options, 3 when the server cannot be reached.
    """
    options = _Options(
        model=model, version=version, label=label, signature=signature,
        concurrency=concurrency, rate=rate, arrival=arrival, duration=duration, requests=requests,
        warmup=warmup, workers=workers, max_in_flight=max_in_flight, batch_size=batch_size,
        input_files=tuple(input_file or ()), inputs=tuple(input_ or ()), data=data, shapes=tuple(shape or ()),
        fill=fill, check=check, expected=expected, timeout=timeout,
        as_json=json_, csv=csv, quiet=quiet, max_p99=max_p99, min_rps=min_rps, max_error_rate=max_error_rate,
        server_metrics=server_metrics,
    )  # fmt: skip
    violations = run(lambda: _main(conn, options, compare))
    if violations:
        for line in violations:
            print_error("gate failed", line)
        raise typer.Exit(EXIT_REQUEST_ERROR)


@dataclass(frozen=True)
class _Options:
    model: str | None
    version: int | None
    label: str | None
    signature: str | None
    concurrency: str | None
    rate: str | None
    arrival: str
    duration: str | None
    requests: int | None
    warmup: str
    workers: int
    max_in_flight: int
    batch_size: int | None
    input_files: tuple[str, ...]
    inputs: tuple[str, ...]
    data: str | None
    shapes: tuple[str, ...]
    fill: str
    check: bool
    expected: str | None
    timeout: str | None
    as_json: bool
    csv: bool
    quiet: bool
    max_p99: str | None
    min_rps: float | None
    max_error_rate: str | None
    server_metrics: str | None

    def input_options(self) -> InputOptions:
        from mlsrv.cli.bench_workload import InputOptions

        return InputOptions(
            self.input_files, self.inputs, self.data, self.shapes, self.fill, self.batch_size, self.check,
            self.expected,
        )

    def gates(self) -> dict[str, float | None]:
        if self.min_rps is not None and not (self.min_rps >= 0 and math.isfinite(self.min_rps)):
            raise UsageError(f"--min-rps must be a number >= 0, got {self.min_rps:g}")
        return {
            "max_p99_ms": None if self.max_p99 is None else parse_latency(self.max_p99),
            "min_rps": self.min_rps,
            "max_error_rate": None if self.max_error_rate is None else parse_rate_percent(self.max_error_rate),
        }


def _main(conn: ConnectionArgs, options: _Options, compare: tuple[str, str] | None) -> list[str]:
    """Run (or compare), print, and return the gate violations (empty: pass)."""
    import asyncio

    from mlsrv.cli import bench_output, render
    from mlsrv.cli.bench_workload import build_workload, open_send, run_here
    from mlsrv.client.bench import level_spec
    from mlsrv.client.bench_workers import run_bench_workers

    if options.as_json and options.csv:
        raise UsageError("give --json or --csv, not both")
    gates = options.gates()
    console = render.make_console()
    if compare is not None:
        return bench_output.compare_files(compare, as_json=options.as_json, gates=gates, console=console)
    if not options.model:
        raise UsageError("--model is required (except with --compare)")
    spec, levels = _bench_spec(options)
    endpoint = conn.endpoint()
    model = model_spec(options.model, options.version, options.label, options.signature)
    inputs = options.input_options()
    workload = asyncio.run(build_workload(endpoint, model, inputs, spec.timeout_s))
    spec = replace(spec, batch_size=workload.requests[0].rows).validate()
    meta = {
        "target": str(endpoint),
        "protocol": endpoint.protocol,
        "model": model.name,
        "version": "" if model.version is None else str(model.version),
        "label": model.label or "",
        "signature": model.signature_or_default,
        "inputs": inputs.note(),
    }
    probe = _server_probe(conn, endpoint, options.server_metrics, model.name)
    if options.workers == 1:
        reports = asyncio.run(run_here(workload, spec, levels, meta, _progress(options), probe))
    else:
        make_send = functools.partial(open_send, workload)
        reports = []
        for level in levels:
            before = probe.read() if probe is not None else ""
            report = run_bench_workers(level_spec(spec, level), options.workers, make_send, meta=meta)
            reports.append(report if probe is None else replace(report, server=probe.since(before)))
    bench_output.print_reports(console, reports, as_json=options.as_json, csv=options.csv, sweep=len(levels) > 1)
    return [line for report in reports for line in bench_output.gate_lines(report, gates, len(reports) > 1)]


def _server_probe(conn: ConnectionArgs, endpoint: Endpoint, asked: str | None, model: str) -> ServerProbe | None:
    """Where the server's metrics page is: ``--server-metrics``, else the REST endpoint's default path.

    A gRPC run knows a REST address only when ``--rest`` is given too; without one the page is not read.
    """
    from mlsrv.client import server_metrics
    from mlsrv.client.api import Endpoint

    if asked is not None and asked.strip().lower() == "off":
        return None
    if asked is not None:
        url = asked.strip()
        if "://" not in url:
            url = "http://" + url
        scheme, _, rest = url.partition("://")
        if scheme.lower() not in ("http", "https") or not rest.strip("/"):
            raise UsageError(f"--server-metrics must be an http(s) URL or 'off', got {asked!r}")
        if "/" not in rest:
            url = server_metrics.metrics_url(url)
    elif endpoint.protocol == "rest":
        url = server_metrics.metrics_url(endpoint.address)
    elif conn.rest is not None:
        url = server_metrics.metrics_url(Endpoint.parse(conn.rest, "rest", endpoint.tls).address)
    else:
        return None
    context = endpoint.tls.ssl_context() if url.lower().startswith("https") else None
    return server_metrics.ServerProbe(url, model, context, token=endpoint.token)


def _bench_spec(options: _Options) -> tuple[BenchSpec, list[float]]:
    if options.concurrency is not None and options.rate is not None:
        raise UsageError("give --concurrency (closed loop) or --rate (open loop), not both")
    if options.arrival not in ("constant", "poisson"):
        raise UsageError(f"--arrival must be constant or poisson, got {options.arrival!r}")
    if options.fill not in ("random", "zeros"):
        raise UsageError(f"--fill must be random or zeros, got {options.fill!r}")
    if options.batch_size is not None and options.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {options.batch_size}")
    if options.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {options.workers}")
    duration = None if options.duration is None else parse_duration(options.duration)
    if duration is None and options.requests is None:
        duration = DEFAULT_DURATION_S
    arrival: Arrival = "poisson" if options.arrival == "poisson" else "constant"
    base = BenchSpec(
        arrival=arrival,
        duration_s=duration,
        requests=options.requests,
        warmup_s=parse_duration(options.warmup),
        batch_size=1 if options.batch_size is None else options.batch_size,
        timeout_s=timeout_seconds(options.timeout),
        max_in_flight=options.max_in_flight,
    )
    if options.rate is not None:
        rates = _parse_rates(options.rate)
        return replace(base, rate=rates[0]).validate(), rates
    levels: list[float] = [float(x) for x in parse_levels(options.concurrency or "1")]
    return replace(base, concurrency=int(levels[0])).validate(), levels


def _parse_rates(text: str) -> list[float]:
    try:
        rates = [float(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"invalid --rate {text!r}: expected requests/s like 100 or a list like 100,200,400") from None
    if any(not (r > 0 and math.isfinite(r)) for r in rates):
        raise UsageError(f"invalid --rate {text!r}: rates must be positive numbers")
    return rates


def _progress(options: _Options) -> bench_output.Progress | None:
    if options.quiet or not sys.stderr.isatty():
        return None
    from mlsrv.cli import bench_output

    return bench_output.Progress()
