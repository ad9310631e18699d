"""``bench --compare a.json b.json`` and the CI gates (``--max-p99``, ``--min-rps``, ``--max-error-rate``).

Two runs differ by noise too. For throughput, p50 and p99 each report holds a value per second of
its run (``series``); the difference of their per-second means gets a bootstrap interval
(:func:`~mlsrv.client.ab_stats.mean_difference`, 95%, seeded) and a verdict: better, worse, or
within noise when the interval holds 0. That is the noise inside each run (second to second), not
between runs on different days; runs shorter than 3 seconds get no verdict.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from mlsrv.client.bench_report import BenchReport

if TYPE_CHECKING:
    from mlsrv.client.ab_stats import Interval

#: Confidence of the noise verdicts.
CONFIDENCE: Final = 0.95
#: The metrics each report also holds per second of its run (``SeriesPoint``): those get a verdict.
_PER_SECOND: Final = frozenset({"rps", "p50_ms", "p99_ms"})

#: (metric name, unit, getter, higher is better)
_METRICS: Final[tuple[tuple[str, str, Callable[[BenchReport], float], bool], ...]] = (
    ("rps", "req/s", lambda r: r.rps, True),
    ("inferences_per_s", "inf/s", lambda r: r.inferences_per_s, True),
    ("error_rate", "", lambda r: r.error_rate, False),
    ("min_ms", "ms", lambda r: r.latency.min_ms, False),
    ("mean_ms", "ms", lambda r: r.latency.mean_ms, False),
    ("p50_ms", "ms", lambda r: r.latency.p50_ms, False),
    ("p90_ms", "ms", lambda r: r.latency.p90_ms, False),
    ("p95_ms", "ms", lambda r: r.latency.p95_ms, False),
    ("p99_ms", "ms", lambda r: r.latency.p99_ms, False),
    ("p999_ms", "ms", lambda r: r.latency.p999_ms, False),
    ("max_ms", "ms", lambda r: r.latency.max_ms, False),
)


@dataclass(frozen=True)
class MetricDiff:
    """``b - a`` for one metric; ``pct`` is relative to ``a`` (None when ``a`` is 0)."""

    name: str
    unit: str
    a: float
    b: float
    diff: float
    pct: float | None
    higher_is_better: bool
    #: the per-second means' difference and its interval (None: no per-second figures to judge by)
    noise: Interval | None = None

    @property
    def verdict(self) -> str | None:
        """``better``/``worse`` when the interval excludes 0, ``within noise`` otherwise, None without one."""
        if self.noise is None:
            return None
        if self.noise.low <= 0 <= self.noise.high:
            return "within noise"
        return "better" if (self.noise.low > 0) == self.higher_is_better else "worse"

    @property
    def improved(self) -> bool | None:
        """True when ``b`` is better than ``a``, False when worse, None when equal."""
        if self.diff == 0:
            return None
        return (self.diff > 0) == self.higher_is_better


@dataclass(frozen=True)
class Comparison:
    """Metric-by-metric differences of run ``b`` against baseline ``a``."""

    metrics: tuple[MetricDiff, ...]
    same_spec: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "same_spec": self.same_spec,
            "metrics": [
                {
                    "name": m.name,
                    "unit": m.unit,
                    "a": round(m.a, 6),
                    "b": round(m.b, 6),
                    "diff": round(m.diff, 6),
                    "pct": None if m.pct is None else round(m.pct, 3),
                    "improved": m.improved,
                    "noise": None if m.noise is None else {k: round(v, 6) for k, v in m.noise.to_dict().items()},
                    "verdict": m.verdict,
                }  # fmt: skip
                for m in self.metrics
            ],
        }

    def lines(self) -> list[str]:
        """Plain text table: metric, a, b, difference and percentage."""
        out = [f"{'metric':<18}{'a':>14}{'b':>14}{'diff':>14}{'%':>10}  verdict ({CONFIDENCE:.0%}, per-second)"]
        if not self.same_spec:
            out.insert(0, "note: the two runs used different load settings")
        for m in self.metrics:
            pct = "n/a" if m.pct is None else f"{m.pct:+.1f}%"
            verdict = "" if m.verdict is None else f"  {m.verdict}"
            out.append(f"{m.name:<18}{m.a:>14.3f}{m.b:>14.3f}{m.diff:>+14.3f}{pct:>10}{verdict}")
        return out


def compare_reports(a: BenchReport, b: BenchReport) -> Comparison:
    """Differences of ``b`` against baseline ``a`` for throughput, error rate and every latency statistic."""
    from mlsrv.client.ab_stats import mean_difference  # here: SciPy is for comparisons, not every bench run

    metrics = []
    for name, unit, get, higher in _METRICS:
        va, vb = get(a), get(b)
        pct = (vb - va) / va * 100.0 if va else None
        noise = None
        if name in _PER_SECOND:
            noise = mean_difference(_per_second(a, name), _per_second(b, name), confidence=CONFIDENCE, seed=0)
        metrics.append(MetricDiff(name, unit, va, vb, vb - va, pct, higher, noise))
    return Comparison(metrics=tuple(metrics), same_spec=a.spec == b.spec)


def _per_second(report: BenchReport, name: str) -> np.ndarray:
    """A metric's value in each whole second of the run (seconds without a success have no latency)."""
    if name == "rps":
        return np.array([point.completed - point.errors for point in report.series], np.float64)
    return np.array([getattr(point, name) for point in report.series if point.completed > point.errors], np.float64)


def check_gates(
    report: BenchReport,
    *,
    max_p99_ms: float | None = None,
    min_rps: float | None = None,
    max_error_rate: float | None = None,
) -> list[str]:
    """CI gates: one message per violated limit (empty list = pass). ``max_error_rate`` is a fraction.

    A latency gate with no successful request to measure is a violation, not a vacuous pass.
    """
    violations = []
    if max_p99_ms is not None:
        if report.latency.count == 0:
            violations.append(f"p99 latency: no successful requests to measure (limit {max_p99_ms:g} ms)")
        elif report.latency.p99_ms > max_p99_ms:
            violations.append(f"p99 latency {report.latency.p99_ms:.3f} ms > limit {max_p99_ms:g} ms")
    if min_rps is not None and report.rps < min_rps:
        violations.append(f"throughput {report.rps:.1f} requests/s < limit {min_rps:g} requests/s")
    if max_error_rate is not None and report.error_rate > max_error_rate:
        violations.append(f"error rate {report.error_rate:.3%} > limit {max_error_rate:.3%}")
    return violations
