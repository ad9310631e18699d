"""The A/B statistics against known values and fixed seeds (SciPy does the arithmetic)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlsrv.client import ab_stats


def test_wilson_intervals_match_the_published_values() -> None:
    # Wilson score interval, 95%: 95/100 -> 0.8882-0.9785 (Newcombe 1998, method 3); 0/10 -> 0-0.2775
    interval = ab_stats.proportion(95, 100, 0.95)
    assert interval is not None and interval.estimate == 0.95
    assert (interval.low, interval.high) == pytest.approx((0.88825, 0.97846), abs=1e-5)
    none_ok = ab_stats.proportion(0, 10, 0.95)
    assert none_ok is not None and none_ok.low == 0.0 and none_ok.high == pytest.approx(0.27753, abs=1e-5)
    assert ab_stats.proportion(0, 0, 0.95) is None


def test_latency_verdicts_and_reproducible_intervals() -> None:
    rng = np.random.default_rng(11)
    a = rng.lognormal(np.log(0.010), 0.2, 500)
    slower = ab_stats.compare_latency(a, a * 1.2, 50, paired=True, confidence=0.95, seed=1)
    assert slower is not None and slower.verdict == "worse"
    assert slower.ratio.estimate == pytest.approx(1.2) and slower.ratio.low == pytest.approx(1.2)  # exact: paired
    faster = ab_stats.compare_latency(a, a - 0.002, 99, paired=True, confidence=0.95, seed=1)
    assert faster is not None and faster.verdict == "better" and faster.difference_ms.estimate == pytest.approx(-2.0)
    b = rng.lognormal(np.log(0.010), 0.2, 500)  # the same distribution, drawn independently
    same = ab_stats.compare_latency(a, b, 50, paired=False, confidence=0.95, seed=1)
    again = ab_stats.compare_latency(a, b, 50, paired=False, confidence=0.95, seed=1)
    assert same is not None and same.verdict == "no detectable difference" and same == again
    assert same.difference_ms.low < 0 < same.difference_ms.high
    assert ab_stats.compare_latency(a[:1], b, 50, paired=False, confidence=0.95, seed=1) is None


def test_sample_ratio_mismatch_is_pearsons_chi_square() -> None:
    # one degree of freedom: p = erfc(sqrt(chi2 / 2)), with chi2 = sum((observed - expected)^2 / expected)
    for a, b, flagged in ((905, 95, False), (950, 50, True)):
        chi2 = (a - 900) ** 2 / 900 + (b - 100) ** 2 / 100
        ratio = ab_stats.sample_ratio(a, b, 0.9)
        assert ratio.p_value == pytest.approx(math.erfc(math.sqrt(chi2 / 2)), rel=1e-9)
        assert ratio.mismatch is flagged
    assert ab_stats.sample_ratio(0, 0, 0.5).p_value == 1.0
