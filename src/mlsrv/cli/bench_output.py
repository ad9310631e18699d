"""Printing ``mlsrv bench`` results: live progress, reports, sweep tables, ``--compare`` and gate lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console

from mlsrv.cli import render
from mlsrv.client.bench import ProgressSnapshot
from mlsrv.client.bench_compare import check_gates, compare_reports
from mlsrv.client.bench_report import BenchReport, to_csv
from mlsrv.client.bench_spec import BenchSpec
from mlsrv.errors import UsageError


class Progress:
    """Live Rich progress on stderr (only on a terminal): elapsed against the planned time, counters."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[counts]}"),
            console=Console(stderr=True),
            transient=True,
        )
        self._task: Any = None

    def start(self, spec: BenchSpec) -> None:
        load = f"c={spec.concurrency}" if spec.mode == "closed" else f"rate={spec.rate:g}/s"
        total = spec.warmup_s + spec.duration_s if spec.duration_s is not None else None
        self._progress.start()
        self._task = self._progress.add_task(f"bench {load}", total=total, counts="")

    def update(self, snap: ProgressSnapshot) -> None:
        counts = f"{snap.phase}  done {snap.completed}  errors {snap.errors}  in flight {snap.in_flight}"
        if snap.late or snap.dropped:
            counts += f"  late {snap.late}  dropped {snap.dropped}"
        self._progress.update(self._task, completed=snap.elapsed_s, counts=counts)

    def stop(self) -> None:
        self._progress.stop()


def print_reports(console: Console, reports: list[BenchReport], *, as_json: bool, csv: bool, sweep: bool) -> None:
    """One report, or a sweep's table, as JSON (docs/bench-json.md), CSV or text."""
    if as_json:
        document: Any = [r.to_dict() for r in reports] if sweep else reports[0].to_dict()
        render.print_json(console, document)
        return
    if csv:
        console.file.write(to_csv(reports))
        return
    if sweep:
        _sweep_table(console, reports)
    for report in reports if not sweep else []:
        for line in report.summary_lines():
            console.print(line, markup=False)
    if sweep:
        for report in reports:
            for line in report.summary_lines():
                if line.startswith("warning") or line.startswith("error"):
                    console.print(f"{report.level:g}: {line}", markup=False)


def _sweep_table(console: Console, reports: list[BenchReport]) -> None:
    from rich.table import Table

    closed = reports[0].mode == "closed"
    table = Table(show_edge=False, pad_edge=False)
    columns = (
        "concurrency" if closed else "rate",
        "req/s",
        "inf/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "errors",
    )
    for column in columns:
        table.add_column(column, justify="right")
    for r in reports:
        lat = r.latency
        table.add_row(
            f"{r.level:g}", f"{r.rps:.1f}", f"{r.inferences_per_s:.1f}", f"{lat.p50_ms:.3f}", f"{lat.p90_ms:.3f}",
            f"{lat.p99_ms:.3f}", f"{lat.p999_ms:.3f}", f"{r.error_rate:.2%}",
        )  # fmt: skip
    console.print(table)


def gate_lines(report: BenchReport, gates: dict[str, Any], several: bool) -> list[str]:
    lines = check_gates(report, **gates)
    prefix = f"{'concurrency' if report.mode == 'closed' else 'rate'} {report.level:g}: " if several else ""
    return [prefix + line for line in lines]


def _read_reports(path: str) -> list[BenchReport]:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"--compare: file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"--compare: cannot read {path}: {exc}") from None
    items = data if isinstance(data, list) else [data]
    try:
        return [BenchReport.from_dict(item) for item in items]
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"--compare: {path} is not an mlsrv bench --json report: {exc}") from None


def compare_files(paths: tuple[str, str], *, as_json: bool, gates: dict[str, Any], console: Console) -> list[str]:
    """``--compare A B``: print the differences; return the gate violations of B."""
    a, b = _read_reports(paths[0]), _read_reports(paths[1])
    if len(a) != len(b):
        raise UsageError(f"--compare: {paths[0]} has {len(a)} runs but {paths[1]} has {len(b)}")
    comparisons = [compare_reports(x, y) for x, y in zip(a, b, strict=True)]
    if as_json:
        docs = [c.to_dict() for c in comparisons]
        render.print_json(console, docs if len(docs) > 1 else docs[0])
    else:
        for (x, _), comparison in zip(zip(a, b, strict=True), comparisons, strict=True):
            if len(comparisons) > 1:
                console.print(f"{'concurrency' if x.mode == 'closed' else 'rate'} {x.level:g}:", markup=False)
            for line in comparison.lines():
                console.print(line, markup=False)
    return [line for report in b for line in gate_lines(report, gates, len(b) > 1)]
