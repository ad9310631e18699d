"""A/B test two versions (or labels) of one served model: identical inputs, compared outputs and latency.

Why interleaved: request ``i`` goes to both sides back to back, A first on even ``i`` and B first on odd
``i``, so server warm-up, caches and load drift land on both sides equally and neither is always "second".
Pure: takes a :class:`~mlsrv.client.api.Client` and returns an :class:`ABReport` (rendering is the CLI's).

Output difference, per output key, over every request both sides answered:

* ``max_abs_diff`` = max ``|a - b|``; ``max_rel_diff`` = max ``|a - b| / max(|a|, |b|)`` (0 where both are 0),
  so it is symmetric and at most 2;
* ``mismatched`` counts elements that cannot be compared numerically and differ (NaN against a number,
  an infinity against anything else, unequal strings);
* ``shape_mismatches`` counts responses where the output is missing on one side or the shapes differ.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from mlsrv.client.api import Client
from mlsrv.client.histogram import LatencyHistogram
from mlsrv.client.inputs import Request
from mlsrv.errors import MlsrvError, UsageError
from mlsrv.protocol.types import ModelSpec, PredictResponse, SignatureInfo

#: Version of the ``to_dict`` layout (docs/cli-json.md).
SCHEMA_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class ABSpec:
    """The two sides, how many request pairs to send and how many pairs are in flight at once."""

    a: ModelSpec
    b: ModelSpec
    requests: int = 100
    concurrency: int = 4

    def validate(self) -> ABSpec:
        if self.requests < 1:
            raise UsageError(f"--requests must be >= 1, got {self.requests}")
        if self.concurrency < 1:
            raise UsageError(f"--concurrency must be >= 1, got {self.concurrency}")
        return self


@dataclass(slots=True)
class SideReport:
    """One side's answers: successes, errors by ``Code`` name, and latency of successful calls."""

    spec: ModelSpec
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def to_dict(self) -> dict[str, Any]:
        p50, p99 = self.latency.percentiles([50.0, 99.0])
        return {
            "model": self.spec.name,
            "version": self.spec.version,
            "label": self.spec.label or None,
            "signature": self.spec.signature_or_default,
            "ok": self.ok,
            "errors": dict(sorted(self.errors.items())),
            "latency_ms": {
                "p50": p50 * 1e3,
                "p99": p99 * 1e3,
                "mean": self.latency.mean * 1e3,
                "min": self.latency.min * 1e3,
                "max": self.latency.max * 1e3,
            },
        }


@dataclass(slots=True)
class OutputDiff:
    """How far one output of B is from the same output of A, over every compared response."""

    compared: int = 0
    max_abs_diff: float = 0.0
    max_rel_diff: float = 0.0
    mismatched: int = 0
    shape_mismatches: int = 0

    def add(self, a: np.ndarray | None, b: np.ndarray | None) -> None:
        """Fold one response pair's arrays in (``None``: the output was missing on that side)."""
        self.compared += 1
        if a is None or b is None or a.shape != b.shape:
            self.shape_mismatches += 1
            return
        if _numeric(a) and _numeric(b):
            kind = np.complex128 if "c" in (a.dtype.kind, b.dtype.kind) else np.float64
            x, y = a.astype(kind), b.astype(kind)
            same = (x == y) | (np.isnan(x) & np.isnan(y))
            with np.errstate(invalid="ignore", over="ignore"):
                diff = np.abs(x - y)
            comparable = ~same & np.isfinite(diff)
            self.mismatched += int(np.count_nonzero(~same & ~comparable))
            if comparable.any():
                d = diff[comparable]
                scale = np.maximum(np.abs(x[comparable]), np.abs(y[comparable]))
                self.max_abs_diff = max(self.max_abs_diff, float(d.max()))
                self.max_rel_diff = max(self.max_rel_diff, float((d / scale).max()))
            return
        self.mismatched += int(np.count_nonzero(np.asarray(a != b)))

    def failures(self, atol: float, rtol: float) -> list[str]:
        """Why this output is not equal within tolerance (empty: it is)."""
        why = []
        if self.shape_mismatches:
            why.append(f"missing or differently shaped in {self.shape_mismatches} response(s)")
        if self.mismatched:
            why.append(f"{self.mismatched} element(s) differ non-numerically (NaN, Inf or text)")
        if self.max_abs_diff > atol and self.max_rel_diff > rtol:
            why.append(
                f"max abs diff {self.max_abs_diff:.6g} > atol {atol:g} "
                f"and max rel diff {self.max_rel_diff:.6g} > rtol {rtol:g}"
            )
        return why

    def to_dict(self) -> dict[str, Any]:
        return {
            "compared": self.compared,
            "max_abs_diff": self.max_abs_diff,
            "max_rel_diff": self.max_rel_diff,
            "mismatched": self.mismatched,
            "shape_mismatches": self.shape_mismatches,
        }


def _numeric(a: np.ndarray) -> bool:
    return a.dtype.kind in "biufc"


@dataclass(slots=True)
class ABReport:
    """Both sides' latency and errors, and the per-output difference of B from A."""

    a: SideReport
    b: SideReport
    requests: int = 0
    compared: int = 0
    outputs: dict[str, OutputDiff] = field(default_factory=dict)

    def equal_within(self, atol: float, rtol: float) -> bool:
        """Outputs agree: for every output, ``max_abs_diff <= atol`` or ``max_rel_diff <= rtol``, and nothing
        missing, misshapen or non-numerically different. Errors are not looked at (see :meth:`failures`)."""
        return all(not diff.failures(atol, rtol) for diff in self.outputs.values())

    def failures(self, atol: float, rtol: float) -> list[str]:
        """Every reason the A/B test fails: output differences, errors on either side, nothing compared."""
        why = [
            f"output {key}: {reason}"
            for key, diff in sorted(self.outputs.items())
            for reason in diff.failures(atol, rtol)
        ]
        for name, side in (("A", self.a), ("B", self.b)):
            if side.errors:
                counts = ", ".join(f"{code} x{n}" for code, n in sorted(side.errors.items()))
                why.append(f"side {name} had {side.error_count} error(s): {counts}")
        if not self.compared and not why:
            why.append("no request was answered by both sides")
        return why

    def to_dict(self, atol: float = 1e-6, rtol: float = 1e-6) -> dict[str, Any]:
        """The ``mlsrv abtest --json`` document (docs/cli-json.md), with the verdict for ``atol``/``rtol``."""
        failures = self.failures(atol, rtol)
        return {
            "schema_version": SCHEMA_VERSION,
            "requests": self.requests,
            "compared": self.compared,
            "a": self.a.to_dict(),
            "b": self.b.to_dict(),
            "outputs": {key: self.outputs[key].to_dict() for key in sorted(self.outputs)},
            "atol": atol,
            "rtol": rtol,
            "equal": self.equal_within(atol, rtol),
            "passed": not failures,
            "failures": failures,
        }


async def run_abtest(
    client: Client,
    spec: ABSpec,
    inputs_list: Sequence[Request | Mapping[str, np.ndarray]],
    *,
    signatures: tuple[SignatureInfo | None, SignatureInfo | None] = (None, None),
    timeout: float | None = None,
) -> ABReport:
    """Send ``spec.requests`` pairs (request ``i`` uses ``inputs_list[i % len]``) with ``spec.concurrency``
    pairs in flight. ``signatures`` (A's, B's) name and type REST outputs like :meth:`Client.predict`."""
    spec.validate()
    if not inputs_list:
        raise UsageError("abtest needs at least one input request")
    requests = [item if isinstance(item, Request) else Request(dict(item)) for item in inputs_list]
    report = ABReport(SideReport(spec.a), SideReport(spec.b), requests=spec.requests)
    sides = ((report.a, signatures[0]), (report.b, signatures[1]))
    counter = iter(range(spec.requests))
    loop = asyncio.get_running_loop()

    async def one(side: SideReport, signature: SignatureInfo | None, request: Request) -> PredictResponse | None:
        start = loop.time()
        try:
            response = await client.predict(
                side.spec, request.inputs, format=request.format, signature=signature, timeout=timeout
            )
        except MlsrvError as exc:
            side.errors[exc.code.name] = side.errors.get(exc.code.name, 0) + 1
            return None
        side.latency.record(loop.time() - start)
        side.ok += 1
        return response

    async def worker() -> None:
        for i in counter:  # a shared iterator: each index is taken by exactly one worker
            request = requests[i % len(requests)]
            order = sides if i % 2 == 0 else sides[::-1]
            first = await one(*order[0], request)
            second = await one(*order[1], request)
            got_a, got_b = (first, second) if i % 2 == 0 else (second, first)
            if got_a is not None and got_b is not None:
                _compare(report, got_a.outputs, got_b.outputs)

    await asyncio.gather(*(worker() for _ in range(min(spec.concurrency, spec.requests))))
    return report


def _compare(report: ABReport, a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> None:
    report.compared += 1
    for key in sorted(set(a) | set(b)):
        report.outputs.setdefault(key, OutputDiff()).add(_array(a.get(key)), _array(b.get(key)))


def _array(value: Any) -> np.ndarray | None:
    return None if value is None else np.asarray(value)
