"""LatencyHistogram against numpy on random data: percentiles agree to the bucket precision."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from mlsrv.client.histogram import HIGHEST_US, LatencyHistogram

PERCENTILES = [0.0, 1.0, 10.0, 50.0, 90.0, 95.0, 99.0, 99.9, 100.0]


def _filled(samples: np.ndarray, digits: int = 3) -> LatencyHistogram:
    h = LatencyHistogram(digits)
    for x in samples:
        h.record(float(x))
    return h


def _assert_close(got: list[float], want: np.ndarray, digits: int) -> None:
    # One bucket is at most value / 2**ceil(log2(10**digits)) wide, plus the 0.5 µs rounding to integers.
    for g, w in zip(got, want, strict=True):
        assert abs(g - w) <= w * 10.0**-digits + 1e-6, (g, w)


@pytest.mark.parametrize("digits", [2, 3])
def test_percentiles_match_numpy_within_precision(digits: int) -> None:
    rng = np.random.default_rng(7)
    samples = rng.lognormal(mean=-5.0, sigma=1.5, size=20_000)  # ~7 ms median, µs .. seconds
    h = _filled(samples, digits)
    want = np.percentile(samples, PERCENTILES, method="inverted_cdf")
    _assert_close(h.percentiles(PERCENTILES), want, digits)
    assert h.total == len(samples)
    assert h.min == samples.min() and h.max == samples.max()
    assert h.mean == pytest.approx(samples.mean(), rel=1e-9)


def test_single_percentile_and_small_counts() -> None:
    h = _filled(np.array([0.010, 0.020, 0.030]))
    assert h.percentile(50) == pytest.approx(0.020, rel=1e-3)
    assert h.percentile(0) == pytest.approx(0.010, rel=1e-3)
    assert h.percentile(100) == 0.030


def test_empty_histogram_reports_zeros() -> None:
    h = LatencyHistogram()
    assert h.percentiles([50.0, 99.0]) == [0.0, 0.0]
    assert (h.min, h.max, h.mean, h.total) == (0.0, 0.0, 0.0, 0)


def test_merge_equals_recording_everything_in_one() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.exponential(0.01, 5000), rng.exponential(0.1, 3000)
    merged = _filled(a)
    merged.merge(_filled(b))
    whole = _filled(np.concatenate([a, b]))
    assert merged.percentiles(PERCENTILES) == whole.percentiles(PERCENTILES)
    assert (merged.total, merged.min, merged.max) == (whole.total, whole.min, whole.max)
    assert merged.mean == pytest.approx(whole.mean)


def test_merge_rejects_different_precision() -> None:
    with pytest.raises(ValueError, match="different precision"):
        LatencyHistogram(3).merge(LatencyHistogram(2))


def test_memory_is_fixed_and_out_of_range_values_are_clamped() -> None:
    h = LatencyHistogram()
    size = len(h)
    for x in (-1.0, 1e-3, 5000.0, 7200.0):
        h.record(x)
    assert len(h) == size
    assert h.total == 4
    assert h.percentile(100) == 7200.0  # exact max is kept, the bucket is clamped to one hour
    assert h.percentile(75) == pytest.approx(HIGHEST_US / 1e6, rel=1e-3)
    assert h.percentile(25) == 0.0 and h.min == 0.0


def test_pickle_round_trip_keeps_counts() -> None:
    h = _filled(np.linspace(0.001, 0.1, 100))
    copy = pickle.loads(pickle.dumps(h))
    assert copy.percentiles(PERCENTILES) == h.percentiles(PERCENTILES)
    copy.record(0.5)
    assert copy.total == h.total + 1


@pytest.mark.parametrize("bad", [0, 6])
def test_digits_are_validated(bad: int) -> None:
    with pytest.raises(ValueError, match="digits"):
        LatencyHistogram(bad)


def test_percentiles_are_validated() -> None:
    with pytest.raises(ValueError, match="0..100"):
        LatencyHistogram().percentiles([101.0])
