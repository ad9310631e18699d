"""The statistics of ``mlsrv abtest``: confidence intervals, latency verdicts and the sample-ratio check.

Everything comes from SciPy (``scipy.stats``), not from hand-written formulas:

* a proportion (output agreement, top-1 agreement) gets a Wilson score interval
  (``binomtest(...).proportion_ci(method="wilson")``): well-behaved at 0% and 100%, where the normal
  approximation collapses to a zero-width interval;
* a latency percentile difference (B minus A, and B over A) gets a bootstrap percentile interval
  (``scipy.stats.bootstrap``), seeded so a run is reproducible; paired when each request went to both
  sides (the interleaved and shadow modes: resampling whole pairs keeps the drift both sides shared
  out of the interval), independent when each request went to one side (split mode);
* ``bench --compare``'s per-second throughput and latency get the same bootstrap interval for the
  difference of their means, so a difference inside the runs' own second-to-second noise says so;
* a split's observed counts are checked against the configured ratio with Pearson's chi-square test
  (``chisquare``): a sample ratio mismatch means the traffic that reached the two sides is not the
  split asked for (one side dropping or failing requests), so its comparisons are not to be trusted.

Imported only by ``abtest`` and ``bench --compare`` (SciPy takes ~0.5 s to import).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
from scipy import stats

#: Bootstrap resamples per interval: the percentile interval's end points move by well under 1% of
#: their width between seeds at this count.
RESAMPLES: Final = 2000
#: Resamples computed at once: bounds memory to BATCH x samples floats.
BATCH: Final = 200
#: A sample ratio mismatch is flagged below this p-value (the threshold A/B platforms use, e.g.
#: Kohavi, Tang and Xu, "Trustworthy Online Controlled Experiments", ch. 21): at 0.001 a correct
#: split is flagged once in a thousand runs.
SRM_P_VALUE: Final = 0.001

Verdict = Literal["better", "worse", "no detectable difference"]


@dataclass(frozen=True, slots=True)
class Interval:
    """An estimate with its confidence interval."""

    estimate: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high}


def proportion(successes: int, trials: int, confidence: float) -> Interval | None:
    """``successes / trials`` with its Wilson score interval; None without trials."""
    if trials == 0:
        return None
    ci = stats.binomtest(successes, trials).proportion_ci(confidence_level=confidence, method="wilson")
    return Interval(successes / trials, float(ci.low), float(ci.high))


@dataclass(frozen=True, slots=True)
class LatencyComparison:
    """B against A at one percentile: the difference in ms and the ratio, each with its interval."""

    percentile: float
    a_ms: float
    b_ms: float
    difference_ms: Interval
    ratio: Interval

    @property
    def verdict(self) -> Verdict:
        """``worse`` when B is slower beyond doubt (the interval of B - A is above 0), ``better`` when
        it is faster beyond doubt, else no detectable difference."""
        if self.difference_ms.low > 0:
            return "worse"
        if self.difference_ms.high < 0:
            return "better"
        return "no detectable difference"

    def to_dict(self) -> dict[str, object]:
        return {
            "percentile": self.percentile,
            "a_ms": self.a_ms,
            "b_ms": self.b_ms,
            "difference_ms": self.difference_ms.to_dict(),
            "ratio": self.ratio.to_dict(),
            "verdict": self.verdict,
        }


def compare_latency(
    a: np.ndarray, b: np.ndarray, percentile: float, *, paired: bool, confidence: float, seed: int
) -> LatencyComparison | None:
    """B against A at ``percentile`` (latencies in seconds); None with fewer than two samples a side.

    ``paired``: ``a[i]`` and ``b[i]`` were measured on the same request, so pairs are resampled
    together; otherwise each side is resampled on its own.
    """
    if len(a) < 2 or len(b) < 2:
        return None
    a_ms, b_ms = np.asarray(a, np.float64) * 1e3, np.asarray(b, np.float64) * 1e3

    def difference_and_ratio(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        px, py = np.percentile(x, percentile, axis=axis), np.percentile(y, percentile, axis=axis)
        return np.stack([py - px, py / px])

    result = stats.bootstrap(
        (a_ms, b_ms),
        difference_and_ratio,
        paired=paired,
        vectorized=True,
        n_resamples=RESAMPLES,
        batch=BATCH,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )  # one set of resamples for both statistics
    estimates, interval = difference_and_ratio(a_ms, b_ms), result.confidence_interval
    difference, ratio = (Interval(float(estimates[i]), float(interval.low[i]), float(interval.high[i])) for i in (0, 1))
    return LatencyComparison(
        percentile, float(np.percentile(a_ms, percentile)), float(np.percentile(b_ms, percentile)), difference, ratio
    )


def mean_difference(a: np.ndarray, b: np.ndarray, *, confidence: float, seed: int) -> Interval | None:
    """mean(b) - mean(a) of two independent samples with its bootstrap percentile interval (None with
    fewer than three values a side): for ``bench --compare``, whose samples are per-second figures."""
    if len(a) < 3 or len(b) < 3:
        return None
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)

    def difference(u: np.ndarray, v: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.asarray(np.mean(v, axis=axis) - np.mean(u, axis=axis))

    result = stats.bootstrap(
        (x, y), difference, vectorized=True, n_resamples=RESAMPLES, batch=BATCH, confidence_level=confidence,
        method="percentile", rng=np.random.default_rng(seed),
    )  # fmt: skip
    interval = result.confidence_interval
    return Interval(float(difference(x, y)), float(interval.low), float(interval.high))


@dataclass(frozen=True, slots=True)
class SampleRatio:
    """Requests each side answered against the split asked for, and the chi-square test's p-value."""

    a: int
    b: int
    expected_a_share: float
    p_value: float

    @property
    def mismatch(self) -> bool:
        return self.p_value < SRM_P_VALUE

    def to_dict(self) -> dict[str, object]:
        return {
            "a": self.a,
            "b": self.b,
            "expected_a_share": self.expected_a_share,
            "p_value": self.p_value,
            "mismatch": self.mismatch,
        }


def sample_ratio(a: int, b: int, expected_a_share: float) -> SampleRatio:
    """Pearson's chi-square test of the counts ``a``, ``b`` against ``expected_a_share`` of them on A."""
    total = a + b
    if total == 0 or expected_a_share in (0.0, 1.0):
        return SampleRatio(a, b, expected_a_share, 1.0)
    expected = [total * expected_a_share, total * (1.0 - expected_a_share)]
    return SampleRatio(a, b, expected_a_share, float(stats.chisquare([a, b], f_exp=expected).pvalue))
