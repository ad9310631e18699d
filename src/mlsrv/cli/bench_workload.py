"""The bench workload: a pool of pre-built requests, and ``open_send`` that sends them round-robin.

``Workload`` is picklable, so ``--workers`` processes each rebuild a Client from it (``open_send`` is
the ``make_send`` factory of :mod:`mlsrv.client.bench_workers`). Requests are built once, before the run,
from the signature the server reports: generated (random or zeros), or read from files. ``--check-outputs``
compares every response with a reference answer taken before the run (or ``--expected``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np

from mlsrv.client import inputs as client_inputs
from mlsrv.client.api import Client, Endpoint, conform_outputs
from mlsrv.client.bench import SendFn, level_spec, run_bench
from mlsrv.client.bench_report import BenchReport
from mlsrv.client.bench_spec import BenchSpec
from mlsrv.client.server_metrics import ServerProbe
from mlsrv.client.transports import Op
from mlsrv.errors import Code, MlsrvError, UsageError
from mlsrv.protocol.types import ModelSpec, PredictRequest, PredictResponse, SignatureInfo

if TYPE_CHECKING:
    from mlsrv.cli.bench_output import Progress

#: Distinct generated requests, sent round-robin (so no server cache sees one repeated input).
POOL_SIZE: Final = 8


class OutputMismatch(MlsrvError):
    """A response differed from the expected outputs (``--check-outputs``); client-side, no HTTP status."""

    code = Code.DATA_LOSS

    @property
    def http_status(self) -> None:  # type: ignore[override]
        return None


@dataclass(frozen=True)
class Workload:
    """Everything a (possibly separate) bench process needs to send requests; picklable."""

    endpoint: Endpoint
    spec: ModelSpec
    requests: tuple[client_inputs.Request, ...]
    timeout_s: float
    signature: SignatureInfo | None = None
    expected: tuple[dict[str, np.ndarray], ...] | None = None


@asynccontextmanager
async def open_send(workload: Workload) -> AsyncIterator[SendFn]:
    """A ``send(i)`` over a fresh Client: request ``i % pool`` pre-encoded, outputs checked if asked."""
    async with Client(workload.endpoint.transport(), timeout=workload.timeout_s) as client:
        calls = [
            client.call(Op.PREDICT, PredictRequest(workload.spec, r.inputs, (), r.format), prepare=True)
            for r in workload.requests
        ]
        count = len(calls)

        async def send(i: int) -> None:
            k = i % count
            response = await client.send(calls[k])
            if workload.expected is not None and workload.signature is not None:
                assert isinstance(response, PredictResponse)  # send() checked it against the call's operation
                check_outputs(conform_outputs(response.outputs, workload.signature), workload.expected[k])

        yield send


def check_outputs(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    """Raise ``OutputMismatch`` unless ``got`` has the expected outputs, equal (floats within 1e-5 relative)."""
    for key, want in expected.items():
        have = got.get(key)
        if have is None:
            raise OutputMismatch(f"output {key} is missing")
        if have.shape != want.shape:
            raise OutputMismatch(f"output {key} has shape {have.shape}, expected {want.shape}")
        if want.dtype.kind in "fc":
            equal = np.allclose(have, want, rtol=1e-5, atol=1e-6, equal_nan=True)
        else:
            equal = np.array_equal(have, want)
        if not equal:
            raise OutputMismatch(f"output {key} differs from the expected values")


@dataclass(frozen=True)
class InputOptions:
    """The bench options that decide what is sent."""

    input_files: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    data: str | None = None
    shapes: tuple[str, ...] = ()
    fill: str = "random"
    batch_size: int | None = None
    check: bool = False
    expected: str | None = None

    def note(self) -> str:
        """For the report's ``meta.inputs``."""
        if self.input_files:
            return "files: " + ", ".join(self.input_files)
        if self.data is not None:
            return "--data " + (self.data if self.data.startswith("@") or self.data == "-" else "(inline)")
        if self.inputs:
            return "--input " + " ".join(self.inputs)
        return f"generated ({self.fill})"


async def build_workload(endpoint: Endpoint, model: ModelSpec, options: InputOptions, timeout_s: float) -> Workload:
    """Read the signature, build the request pool and, for --check-outputs, the expected answers."""
    if options.batch_size is not None and (options.input_files or options.inputs or options.data is not None):
        raise UsageError("--batch-size applies to generated inputs; requests from files keep their own rows")
    async with Client(endpoint.transport(), timeout=timeout_s) as client:
        signature = await client.signature(model)
        pool = request_pool(signature, options)
        expected: tuple[dict[str, np.ndarray], ...] | None = None
        if options.expected is not None:
            if len(pool) != 1:
                raise UsageError("--expected needs exactly one request (one --input-file or --input set)")
            expected = (load_expected(options.expected),)
        elif options.check:
            answers = []
            for request in pool:
                response = await client.predict(model, request.inputs, format=request.format, signature=signature)
                answers.append(response.outputs)
            expected = tuple(answers)
    return Workload(endpoint, model, tuple(pool), timeout_s, signature, expected)


def request_pool(signature: SignatureInfo, options: InputOptions) -> list[client_inputs.Request]:
    """The requests to cycle through: from files, from ``--input``, or generated (several seeds)."""
    given = [name for name, value in (("--input-file", options.input_files), ("--input", options.inputs),
                                      ("--data", options.data is not None)) if value]  # fmt: skip
    if len(given) > 1:
        raise UsageError(f"give only one of --input-file, --input or --data (got {' and '.join(given)})")
    if options.data is not None:
        pool = [client_inputs.decode_request(_data_document(options.data), signature)]
    elif options.input_files:
        pool = [r for path in options.input_files for r in client_inputs.load_request_file(path, signature)]
    elif options.inputs:
        args = [client_inputs.parse_input_arg(item) for item in options.inputs]
        pool = [client_inputs.inputs_from_args(args, signature)]
    else:
        shapes = client_inputs.parse_shapes(options.shapes)
        fill: client_inputs.Fill = "zeros" if options.fill == "zeros" else "random"
        count = 1 if fill == "zeros" else POOL_SIZE
        rows = 1 if options.batch_size is None else options.batch_size
        pool = [
            client_inputs.generate_request(signature, batch_size=rows, shapes=shapes, fill=fill, seed=seed)
            for seed in range(count)
        ]
    if options.shapes and given:
        raise UsageError("--shape applies to generated inputs only")
    return pool


def load_expected(path: str) -> dict[str, np.ndarray]:
    """``--expected``: an ``.npz`` with one array per output name."""
    if Path(path).suffix != ".npz":
        raise UsageError(f"--expected {path}: expected an .npz file with one array per output")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--expected {path}: cannot read: {exc}") from None
    with data:
        return {name: np.asarray(data[name]) for name in data.files}


async def run_here(
    workload: Workload,
    spec: BenchSpec,
    levels: Sequence[float],
    meta: dict[str, str],
    progress: Progress | None,
    probe: ServerProbe | None = None,
) -> list[BenchReport]:
    """``--workers 1``: each level in this process, with live progress when given.

    With a ``probe``, the server's metrics page is read before and after each level (off the
    measured time) and its figures attached to the level's report.
    """
    reports = []
    async with open_send(workload) as send:
        for level in levels:
            one = level_spec(spec, level)
            before = await asyncio.to_thread(probe.read) if probe is not None else None
            if progress is not None:
                progress.start(one)
            try:
                on_progress = progress.update if progress is not None else None
                report = await run_bench(one, send, on_progress=on_progress, progress_interval_s=0.25, meta=meta)
            finally:
                if progress is not None:
                    progress.stop()
            if probe is not None and before is not None:
                report = replace(report, server=await asyncio.to_thread(probe.since, before))
            reports.append(report)
    return reports


def _data_document(data: str) -> dict[str, object]:
    """``--data``: a TF Serving request body, as ``mlsrv predict -d`` takes it. ``-d`` meant
    ``--duration`` before it meant ``--data`` here too, so a duration given to it says so."""
    if re.fullmatch(r"\d+(\.\d+)?(ms|s|m|h)", data.strip()):
        raise UsageError(f"-d/--data takes a request body, as in mlsrv predict; for a duration give --duration {data}")
    return client_inputs.parse_document(client_inputs.read_arg(data, "--data"), "--data")

