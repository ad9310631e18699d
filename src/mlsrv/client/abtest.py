"""A/B test two versions (or labels) of one served model: output agreement, latency and errors, with
the uncertainty of each figure, and gates for CI. Pure: takes a :class:`~mlsrv.client.api.Client`
and returns an :class:`ABReport` (rendering is the CLI's; the statistics are :mod:`ab_stats`).

Three ways to send (``ABSpec.mode``):

* ``paired`` (default): request ``i`` goes to both sides back to back, A first on even ``i`` and B
  first on odd ``i``, so server warm-up, caches and load drift land on both sides alike and neither
  is always "second"; outputs are compared and latencies are paired;
* ``shadow``: request ``i`` goes to both sides at once (A answers, B is the mirror), as a shadow
  deployment sends production traffic; compared and paired as above;
* ``split``: request ``i`` goes to A with probability ``split`` and to B otherwise (seeded), as a
  canary split routes traffic; nothing to compare, latencies are independent samples, and the
  answered counts are checked against the split (sample ratio mismatch).

Outputs agree with ``numpy.isclose`` semantics, A being the reference: ``|b - a| <= atol + rtol * |a|``
element by element, NaN equal to NaN, text and shapes equal. A request pair agrees when every
output does; the agreement rate gets a Wilson interval. Outputs shaped like class scores (float,
``[n, k]`` with ``k >= 2``) also get top-1 agreement per row. The :data:`WORST` largest differences
are kept with the request that produced them.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

import numpy as np

from mlsrv.client.ab_stats import Interval, LatencyComparison, SampleRatio, compare_latency, proportion, sample_ratio
from mlsrv.client.api import Client
from mlsrv.client.inputs import Request
from mlsrv.errors import MlsrvError, UsageError
from mlsrv.protocol.types import ModelSpec, PredictResponse, SignatureInfo

#: Version of the ``to_dict`` layout (docs/cli-json.md).
SCHEMA_VERSION: Final = 2
#: The largest differences listed in the report.
WORST: Final = 5
#: Latency percentiles compared between the sides.
PERCENTILES: Final = (50.0, 95.0, 99.0)

Mode = Literal["paired", "shadow", "split"]
MODES: Final[tuple[Mode, ...]] = ("paired", "shadow", "split")


@dataclass(frozen=True, slots=True)
class Gates:
    """What makes a run fail. ``max_error_rate_diff`` None: any error on either side fails it."""

    min_agreement: float = 1.0
    max_p99_regression: float | None = None
    max_error_rate_diff: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        return {
            "min_agreement": self.min_agreement,
            "max_p99_regression": self.max_p99_regression,
            "max_error_rate_diff": self.max_error_rate_diff,
        }


@dataclass(frozen=True, slots=True)
class ABSpec:
    """The two sides, how to send (``mode``, ``split`` = A's share in split mode, ``seed``), how many
    requests and how many in flight, the agreement tolerances and the confidence of every interval."""

    a: ModelSpec
    b: ModelSpec
    requests: int = 100
    concurrency: int = 4
    mode: Mode = "paired"
    split: float = 0.5
    seed: int = 0
    atol: float = 1e-6
    rtol: float = 1e-6
    confidence: float = 0.95

    @property
    def compares_outputs(self) -> bool:
        return self.mode != "split"

    def validate(self) -> ABSpec:
        if self.requests < 1:
            raise UsageError(f"--requests must be >= 1, got {self.requests}")
        if self.concurrency < 1:
            raise UsageError(f"--concurrency must be >= 1, got {self.concurrency}")
        if self.mode not in MODES:
            raise UsageError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not 0.0 < self.split < 1.0:
            raise UsageError(f"--split must be between 0 and 1 (A's share), got {self.split:g}")
        if not 0.5 <= self.confidence < 1.0:
            raise UsageError(f"--confidence must be in [0.5, 1), got {self.confidence:g}")
        if self.atol < 0 or self.rtol < 0:
            raise UsageError("--atol and --rtol must be >= 0")
        return self


@dataclass(slots=True)
class SideReport:
    """One side's answers: requests sent, successes, errors by ``Code`` name, latency of successes (s)."""

    spec: ModelSpec
    sent: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def error_rate(self) -> float:
        return self.error_count / self.sent if self.sent else 0.0

    def to_dict(self) -> dict[str, Any]:
        samples = np.asarray(self.latencies, np.float64) * 1e3
        latency = (
            {f"p{p:g}": float(np.percentile(samples, p)) for p in PERCENTILES}
            | {"mean": float(samples.mean()), "min": float(samples.min()), "max": float(samples.max())}
            if samples.size
            else None
        )
        return {
            "model": self.spec.name,
            "version": self.spec.version,
            "label": self.spec.label or None,
            "signature": self.spec.signature_or_default,
            "sent": self.sent,
            "ok": self.ok,
            "errors": dict(sorted(self.errors.items())),
            "error_rate": self.error_rate,
            "latency_ms": latency,
        }


@dataclass(frozen=True, slots=True, order=True)
class Difference:
    """One of the largest differences: which request, output and element, and both values."""

    abs_diff: float
    request: int
    output: str
    index: tuple[int, ...]
    a: float
    b: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "request": self.request,
            "output": self.output,
            "index": list(self.index),
            "a": self.a,
            "b": self.b,
            "abs_diff": self.abs_diff,
        }


@dataclass(slots=True)
class OutputDiff:
    """How one output of B compares with A's over every compared request pair."""

    compared: int = 0
    elements: int = 0
    not_close: int = 0
    max_abs_diff: float = 0.0
    max_rel_diff: float = 0.0
    mismatched: int = 0
    shape_mismatches: int = 0
    top1_rows: int = 0
    top1_agree: int = 0

    def add(self, a: np.ndarray | None, b: np.ndarray | None, atol: float, rtol: float) -> Difference | None:
        """Fold one pair's arrays in (``None``: missing on that side); returns the pair's largest
        numeric difference (request and output left for the caller), None when there is none."""
        self.compared += 1
        if a is None or b is None or a.shape != b.shape:
            self.shape_mismatches += 1
            return None
        self.elements += a.size
        if not (_numeric(a) and _numeric(b)):
            differ = int(np.count_nonzero(np.asarray(a != b)))
            self.mismatched += differ
            self.not_close += differ
            return None
        kind = np.complex128 if "c" in (a.dtype.kind, b.dtype.kind) else np.float64
        x, y = a.astype(kind), b.astype(kind)
        close = np.isclose(y, x, rtol=rtol, atol=atol, equal_nan=True)
        self.not_close += int(np.count_nonzero(~close))
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.abs(x - y)
        same = (x == y) | (np.isnan(x) & np.isnan(y))
        finite = ~same & np.isfinite(diff)
        self.mismatched += int(np.count_nonzero(~same & ~finite))
        if _scores(a):
            self.top1_rows += int(np.prod(a.shape[:-1]))
            self.top1_agree += int(np.count_nonzero(np.argmax(a, axis=-1) == np.argmax(b, axis=-1)))
        if not finite.any():
            return None
        masked = np.where(finite, diff, -1.0)  # |x - y| is real even for complex values
        worst = np.unravel_index(int(np.argmax(masked)), a.shape)
        scale = np.maximum(np.abs(x[finite]), np.abs(y[finite]))
        self.max_abs_diff = max(self.max_abs_diff, float(diff[finite].max()))
        self.max_rel_diff = max(self.max_rel_diff, float((diff[finite] / scale).max()))
        index = tuple(int(i) for i in worst)
        return Difference(float(masked[worst]), -1, "", index, float(x[worst].real), float(y[worst].real))

    def top1(self, confidence: float) -> Interval | None:
        return proportion(self.top1_agree, self.top1_rows, confidence) if self.top1_rows else None

    def to_dict(self, confidence: float) -> dict[str, Any]:
        top1 = self.top1(confidence)
        return {
            "compared": self.compared,
            "elements": self.elements,
            "not_close": self.not_close,
            "max_abs_diff": self.max_abs_diff,
            "max_rel_diff": self.max_rel_diff,
            "mismatched": self.mismatched,
            "shape_mismatches": self.shape_mismatches,
            "top1": None if top1 is None else {"rows": self.top1_rows, "agree": self.top1_agree, **top1.to_dict()},
        }


def _numeric(a: np.ndarray) -> bool:
    return a.dtype.kind in "biufc"


def _scores(a: np.ndarray) -> bool:
    """Shaped like class scores: float, at least [n, k] with k >= 2."""
    return a.dtype.kind == "f" and a.ndim >= 2 and a.shape[-1] >= 2


@dataclass
class ABReport:
    """What a run saw; the statistics (computed once, on first use) and the verdict against gates."""

    spec: ABSpec
    a: SideReport
    b: SideReport
    compared: int = 0
    agreeing: int = 0
    outputs: dict[str, OutputDiff] = field(default_factory=dict)
    #: (A's, B's) latency in seconds of each request both sides answered (paired and shadow modes)
    pairs: list[tuple[float, float]] = field(default_factory=list)
    worst: list[Difference] = field(default_factory=list)

    @functools.cached_property
    def agreement(self) -> Interval | None:
        return proportion(self.agreeing, self.compared, self.spec.confidence) if self.spec.compares_outputs else None

    @functools.cached_property
    def latency(self) -> dict[float, LatencyComparison | None]:
        """B against A at each of :data:`PERCENTILES`: paired when both answered the same requests."""
        paired = self.spec.compares_outputs
        if paired:
            a = np.array([pair[0] for pair in self.pairs])
            b = np.array([pair[1] for pair in self.pairs])
        else:
            a, b = np.array(self.a.latencies), np.array(self.b.latencies)
        return {
            p: compare_latency(a, b, p, paired=paired, confidence=self.spec.confidence, seed=self.spec.seed)
            for p in PERCENTILES
        }

    @functools.cached_property
    def sample_ratio(self) -> SampleRatio | None:
        """Split mode: the answered counts against the split asked for."""
        return None if self.spec.compares_outputs else sample_ratio(self.a.ok, self.b.ok, self.spec.split)

    def failures(self, gates: Gates) -> list[str]:
        """Every reason the A/B test fails against ``gates`` (empty: it passes), one line each."""
        why = []
        confidence = f"{self.spec.confidence:.0%}"
        agreement = self.agreement
        if self.spec.compares_outputs and agreement is None:
            why.append("no request was answered by both sides")
        elif agreement is not None and agreement.estimate < gates.min_agreement:
            why.append(
                f"--min-agreement: {agreement.estimate:.2%} of request pairs agree ({confidence} CI "
                f"{agreement.low:.2%}-{agreement.high:.2%}), below {gates.min_agreement:.2%}"
            )
            why += [
                f"output {key}: {diff.not_close} of {diff.elements} elements not close (rtol {self.spec.rtol:g}, "
                f"atol {self.spec.atol:g}; max abs diff {diff.max_abs_diff:.6g}"
                + (f", {diff.shape_mismatches} shape mismatch(es)" if diff.shape_mismatches else "")
                + ")"
                for key, diff in sorted(self.outputs.items())
                if diff.not_close or diff.shape_mismatches
            ]
        p99 = self.latency[99.0]
        if gates.max_p99_regression is not None and p99 is not None:
            regression = p99.ratio.estimate - 1.0
            if p99.verdict == "worse" and regression > gates.max_p99_regression:
                why.append(
                    f"--max-p99-regression: B's p99 {p99.b_ms:.3f} ms against A's {p99.a_ms:.3f} ms is "
                    f"{regression:+.1%} ({confidence} CI {p99.ratio.low - 1:+.1%} to {p99.ratio.high - 1:+.1%}), "
                    f"above {gates.max_p99_regression:+.1%}"
                )
        if gates.max_error_rate_diff is None:
            for name, side in (("A", self.a), ("B", self.b)):
                if side.errors:
                    counts = ", ".join(f"{code} x{n}" for code, n in sorted(side.errors.items()))
                    why.append(f"side {name} had {side.error_count} error(s): {counts}")
        elif self.b.error_rate - self.a.error_rate > gates.max_error_rate_diff:
            why.append(
                f"--max-error-rate-diff: B's error rate {self.b.error_rate:.2%} against A's "
                f"{self.a.error_rate:.2%}, more than {gates.max_error_rate_diff:.2%} higher"
            )
        ratio = self.sample_ratio
        if ratio is not None and ratio.mismatch:
            why.append(
                f"sample ratio mismatch: A answered {ratio.a} and B {ratio.b} requests, not the "
                f"{ratio.expected_a_share:.0%}/{1 - ratio.expected_a_share:.0%} split asked for "
                f"(chi-square p = {ratio.p_value:.2g}); the traffic that reached the sides is not comparable"
            )
        return why

    def to_dict(self, gates: Gates) -> dict[str, Any]:
        """The ``mlsrv abtest --json`` document (docs/cli-json.md)."""
        failures = self.failures(gates)
        agreement = self.agreement
        ratio = self.sample_ratio
        return {
            "schema_version": SCHEMA_VERSION,
            "mode": self.spec.mode,
            "split": self.spec.split if self.spec.mode == "split" else None,
            "seed": self.spec.seed,
            "confidence": self.spec.confidence,
            "requests": self.spec.requests,
            "compared": self.compared,
            "a": self.a.to_dict(),
            "b": self.b.to_dict(),
            "agreement": None
            if not self.spec.compares_outputs
            else {
                "pairs": self.compared,
                "agreeing": self.agreeing,
                "rate": None if agreement is None else agreement.to_dict(),
                "atol": self.spec.atol,
                "rtol": self.spec.rtol,
            },
            "outputs": {key: self.outputs[key].to_dict(self.spec.confidence) for key in sorted(self.outputs)},
            "worst": [difference.to_dict() for difference in sorted(self.worst, reverse=True)],
            "latency": {
                "paired": self.spec.compares_outputs,
                **{f"p{p:g}": None if c is None else c.to_dict() for p, c in self.latency.items()},
            },
            "sample_ratio": None if ratio is None else ratio.to_dict(),
            "gates": gates.to_dict(),
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
    """Send ``spec.requests`` requests (request ``i`` uses ``inputs_list[i % len]``) with
    ``spec.concurrency`` in flight, as ``spec.mode`` says. ``signatures`` (A's, B's) name and type REST
    outputs like :meth:`Client.predict`."""
    spec.validate()
    if not inputs_list:
        raise UsageError("abtest needs at least one input request")
    requests = [item if isinstance(item, Request) else Request(dict(item)) for item in inputs_list]
    report = ABReport(spec, SideReport(spec.a), SideReport(spec.b))
    sides = ((report.a, signatures[0]), (report.b, signatures[1]))
    to_a = np.random.default_rng(spec.seed).random(spec.requests) < spec.split  # split mode's routing
    counter = iter(range(spec.requests))
    loop = asyncio.get_running_loop()

    async def one(
        side: SideReport, signature: SignatureInfo | None, request: Request
    ) -> tuple[PredictResponse, float] | None:
        side.sent += 1
        start = loop.time()
        try:
            response = await client.predict(
                side.spec, request.inputs, format=request.format, signature=signature, timeout=timeout
            )
        except MlsrvError as exc:
            side.errors[exc.code.name] = side.errors.get(exc.code.name, 0) + 1
            return None
        elapsed = loop.time() - start
        side.latencies.append(elapsed)
        side.ok += 1
        return response, elapsed

    async def worker() -> None:
        for i in counter:  # a shared iterator: each index is taken by exactly one worker
            request = requests[i % len(requests)]
            if spec.mode == "split":
                await one(*sides[0 if to_a[i] else 1], request)
                continue
            if spec.mode == "shadow":
                got_a, got_b = await asyncio.gather(one(*sides[0], request), one(*sides[1], request))
            else:
                order = sides if i % 2 == 0 else sides[::-1]
                first = await one(*order[0], request)
                second = await one(*order[1], request)
                got_a, got_b = (first, second) if i % 2 == 0 else (second, first)
            if got_a is not None and got_b is not None:
                report.pairs.append((got_a[1], got_b[1]))
                _compare(report, i, got_a[0].outputs, got_b[0].outputs)

    await asyncio.gather(*(worker() for _ in range(min(spec.concurrency, spec.requests))))
    return report


def _compare(report: ABReport, request: int, a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> None:
    report.compared += 1
    agrees = True
    for key in sorted(set(a) | set(b)):
        diff = report.outputs.setdefault(key, OutputDiff())
        before = (diff.not_close, diff.shape_mismatches)
        worst = diff.add(_array(a.get(key)), _array(b.get(key)), report.spec.atol, report.spec.rtol)
        agrees = agrees and (diff.not_close, diff.shape_mismatches) == before
        if worst is not None and worst.abs_diff > 0:
            found = replace(worst, request=request, output=key)
            if len(report.worst) < WORST:
                heapq.heappush(report.worst, found)
            else:
                heapq.heappushpop(report.worst, found)
    if agrees:
        report.agreeing += 1


def _array(value: Any) -> np.ndarray | None:
    return None if value is None else np.asarray(value)
