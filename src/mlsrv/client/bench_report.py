"""``BenchReport``: the pure-data result of one ``mlsrv bench`` run, its JSON form, CSV and plain text.

The JSON shape is a public contract (``docs/bench-json.md``, ``schema_version``), read back by
``bench --compare`` and by users' CI scripts, so :meth:`BenchReport.to_dict` and
:meth:`BenchReport.from_dict` are the only (de)serialisers and a golden test pins them.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Final, Literal

from mlsrv.client.bench_spec import BenchSpec
from mlsrv.client.server_metrics import ServerStats

#: Bumped on any incompatible change to the JSON shape; additive fields keep the version.
SCHEMA_VERSION: Final = 1

#: The client process is called the bottleneck when it uses at least this share of one core.
CLIENT_BOUND_CPU: Final = 0.9

Mode = Literal["closed", "open"]


@dataclass(frozen=True)
class LatencyStats:
    """Latency of successful requests in milliseconds (all zero when ``count`` is 0)."""

    count: int = 0
    min_ms: float = 0.0
    mean_ms: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    p999_ms: float = 0.0
    max_ms: float = 0.0


@dataclass(frozen=True)
class RequestCounts:
    """``sent`` = ok + errors; ``late`` were started behind schedule; ``dropped`` were never sent.

    ``late`` and ``dropped`` only occur in open-loop (``--rate``) mode.
    """

    sent: int = 0
    ok: int = 0
    errors: int = 0
    late: int = 0
    dropped: int = 0


@dataclass(frozen=True)
class ErrorCount:
    """One row of the error breakdown: canonical code name, HTTP status when known, exception class."""

    code: str
    http_status: int | None
    kind: str
    count: int
    sample: str = ""


@dataclass(frozen=True)
class SeriesPoint:
    """Requests that completed during second ``second`` after measurement start (errors included)."""

    second: int
    completed: int
    errors: int
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True)
class ClientStats:
    """Client CPU: ``cpu_fraction`` is the busiest worker's CPU seconds per wall second (1.0 = one core)."""

    workers: int = 1
    cpu_s: float = 0.0
    wall_s: float = 0.0
    cpu_fraction: float = 0.0
    bound: bool = False


@dataclass(frozen=True)
class BenchReport:
    """Everything one run (or one sweep level) measured. Pure data; see ``docs/bench-json.md``."""

    mode: Mode
    spec: BenchSpec
    duration_s: float
    requests: RequestCounts
    rps: float
    inferences_per_s: float
    error_rate: float
    latency: LatencyStats
    errors: tuple[ErrorCount, ...] = ()
    series: tuple[SeriesPoint, ...] = ()
    client: ClientStats = field(default_factory=ClientStats)
    #: what the server's metrics page says about the run (None: not read)
    server: ServerStats | None = None
    started_at: str = ""
    meta: dict[str, str] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def level(self) -> float:
        """The sweep coordinate: concurrency in closed-loop mode, target rate in open-loop mode."""
        value = self.spec.concurrency if self.mode == "closed" else self.spec.rate
        return float(value or 0)

    def to_dict(self) -> dict[str, Any]:
        """The documented JSON object (``docs/bench-json.md``); floats rounded to 6 decimals."""
        data = _rounded(asdict(self))
        data["errors"] = list(data["errors"])
        data["series"] = list(data["series"])
        return {"schema_version": data.pop("schema_version"), **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchReport:
        """Inverse of :meth:`to_dict`; rejects a newer ``schema_version`` with ``ValueError``."""
        version = int(data.get("schema_version", 0))
        if version > SCHEMA_VERSION or version < 1:
            raise ValueError(f"unsupported bench schema_version {version} (this mlsrv reads {SCHEMA_VERSION})")
        return cls(
            mode=data["mode"],
            spec=BenchSpec(**_known(BenchSpec, data["spec"])),
            duration_s=float(data["duration_s"]),
            requests=RequestCounts(**_known(RequestCounts, data["requests"])),
            rps=float(data["rps"]),
            inferences_per_s=float(data["inferences_per_s"]),
            error_rate=float(data["error_rate"]),
            latency=LatencyStats(**_known(LatencyStats, data["latency"])),
            errors=tuple(ErrorCount(**_known(ErrorCount, e)) for e in data.get("errors", ())),
            series=tuple(SeriesPoint(**_known(SeriesPoint, s)) for s in data.get("series", ())),
            client=ClientStats(**_known(ClientStats, data.get("client", {}))),
            server=ServerStats(**_known(ServerStats, data["server"])) if data.get("server") else None,
            started_at=str(data.get("started_at", "")),
            meta={str(k): str(v) for k, v in data.get("meta", {}).items()},
            schema_version=version,
        )

    def summary_lines(self) -> list[str]:
        """A plain-text summary (the CLI may render richer tables from the same fields)."""
        s, lat, req = self.spec, self.latency, self.requests
        load = f"concurrency {s.concurrency}" if self.mode == "closed" else f"rate {s.rate:g}/s ({s.arrival})"
        lines = [
            f"{self.mode}-loop, {load}, {self.client.workers} worker(s), measured {self.duration_s:.2f} s",
            f"requests: {req.sent} sent, {req.ok} ok, {req.errors} errors ({self.error_rate:.2%})"
            + (f", {req.late} late, {req.dropped} dropped" if self.mode == "open" else ""),
            f"throughput: {self.rps:.1f} requests/s, {self.inferences_per_s:.1f} inferences/s",
            f"latency ms: min {lat.min_ms:.3f}  mean {lat.mean_ms:.3f}  p50 {lat.p50_ms:.3f}  "
            f"p90 {lat.p90_ms:.3f}  p95 {lat.p95_ms:.3f}  p99 {lat.p99_ms:.3f}  "
            f"p99.9 {lat.p999_ms:.3f}  max {lat.max_ms:.3f}",
        ]
        for e in self.errors:
            status = f" HTTP {e.http_status}" if e.http_status is not None else ""
            lines.append(f"error: {e.code}{status} {e.kind} x{e.count}" + (f": {e.sample}" if e.sample else ""))
        if self.server is not None:
            lines.append(self.server.summary_line())
        if req.dropped:
            lines.append(f"warning: {req.dropped} requests dropped (more than {s.max_in_flight} in flight)")
        if req.late:
            lines.append(f"warning: {req.late} requests started over {s.late_threshold_s * 1e3:g} ms late")
        if self.client.bound:
            lines.append(
                f"warning: the client used {self.client.cpu_s / max(self.client.wall_s, 1e-9):.2f} cores"
                f" ({self.client.cpu_fraction:.0%} of a core in its busiest worker); results may measure the"
                " client, not the server (try --workers, or more cores for the client)"
            )
        return lines


CSV_COLUMNS: Final = (
    "mode", "concurrency", "rate", "workers", "duration_s", "sent", "ok", "errors", "late", "dropped",
    "rps", "inferences_per_s", "error_rate", "min_ms", "mean_ms", "p50_ms", "p90_ms", "p95_ms",
    "p99_ms", "p999_ms", "max_ms", "client_cpu_fraction", "client_bound",
)  # fmt: skip


def to_csv(reports: Sequence[BenchReport]) -> str:
    """One CSV row per report (e.g. per sweep level), header first, columns as :data:`CSV_COLUMNS`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in reports:
        d = r.to_dict()
        row = {
            "mode": r.mode,
            "concurrency": "" if r.spec.concurrency is None else r.spec.concurrency,
            "rate": "" if r.spec.rate is None else d["spec"]["rate"],
            "workers": r.client.workers,
            "client_cpu_fraction": d["client"]["cpu_fraction"],
            "client_bound": str(r.client.bound).lower(),
            **{k: d[k] for k in ("duration_s", "rps", "inferences_per_s", "error_rate")},
            **d["requests"],
            **{k: v for k, v in d["latency"].items() if k != "count"},
        }
        writer.writerow([row[c] for c in CSV_COLUMNS])
    return out.getvalue()


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """Drop keys a newer writer added (additive schema changes keep ``schema_version``)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def _rounded(value: Any) -> Any:
    """Round floats to 6 decimals (1 ns in seconds, 1 µs·0.001 in ms) so golden files stay stable."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value
