"""A small HDR-style latency histogram: fixed memory, O(1) record, mergeable, percentiles to N digits.

Why not a list of samples: a 10-minute run at 20k requests/s is 12 M floats per process, and merging the
workers of ``bench --workers`` would ship them all. Why not the ``hdrhistogram`` package: one more
dependency for ~100 lines. The layout is HdrHistogram's log-linear one (Gil Tene): values are integer
microseconds; bucket ``b`` holds ``half`` sub-buckets of width ``2**b``, so the width of the bucket that
holds ``v`` is at most ``v / 2**(half_magnitude)`` (1/1024 of the value for 3 significant digits).
Values above the highest trackable value are counted in its bucket (the exact max is kept);
negative values count as 0.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

#: One hour in microseconds: the default highest trackable latency.
HIGHEST_US: Final = 3_600_000_000


class LatencyHistogram:
    """Counts of latencies (seconds in, seconds out) with ``digits`` significant decimal digits.

    Not thread-safe: one instance per event loop or process; combine them with :meth:`merge`. Exact
    ``min``, ``max`` and ``mean`` are kept beside the buckets; percentiles are HdrHistogram's
    "highest equivalent value" of the bucket holding the rank, clamped to the exact min/max
    (the 100th percentile is the exact max).
    """

    __slots__ = ("digits", "highest_us", "_half_mag", "_half", "_mask", "_counts", "total", "_min", "_max", "_sum")

    def __init__(self, digits: int = 3, highest_us: int = HIGHEST_US) -> None:
        if not 1 <= digits <= 5:
            raise ValueError(f"digits must be 1..5, got {digits}")
        if highest_us < 2:
            raise ValueError(f"highest_us must be >= 2, got {highest_us}")
        self.digits = digits
        self.highest_us = highest_us
        count_mag = math.ceil(math.log2(2 * 10**digits))
        self._half_mag = count_mag - 1
        self._half = 1 << self._half_mag
        self._mask = (1 << count_mag) - 1
        buckets, limit = 1, 1 << count_mag
        while limit <= highest_us:
            limit <<= 1
            buckets += 1
        self._counts = array("q", bytes(8 * (buckets + 1) * self._half))
        self.total = 0
        self._min = math.inf
        self._max = 0.0
        self._sum = 0.0

    def __len__(self) -> int:
        """Number of bucket counters (fixed by ``digits`` and ``highest_us``)."""
        return len(self._counts)

    def record(self, seconds: float) -> None:
        """Count one latency; O(1), a few integer operations."""
        if seconds < 0.0:
            seconds = 0.0
        v = int(seconds * 1e6 + 0.5)
        if v > self.highest_us:
            v = self.highest_us
        b = (v | self._mask).bit_length() - self._half_mag - 1
        self._counts[((b + 1) << self._half_mag) + (v >> b) - self._half] += 1
        self.total += 1
        self._sum += seconds
        if seconds < self._min:
            self._min = seconds
        if seconds > self._max:
            self._max = seconds

    def merge(self, other: LatencyHistogram) -> None:
        """Add ``other``'s counts into this histogram; both must have the same digits and range."""
        if (other.digits, len(other)) != (self.digits, len(self)):
            raise ValueError("cannot merge histograms with different precision or range")
        mine = np.frombuffer(self._counts, dtype=np.int64)
        mine += np.frombuffer(other._counts, dtype=np.int64)
        self.total += other.total
        self._sum += other._sum
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)

    @property
    def min(self) -> float:
        return self._min if self.total else 0.0

    @property
    def max(self) -> float:
        return self._max if self.total else 0.0

    @property
    def mean(self) -> float:
        return self._sum / self.total if self.total else 0.0

    def percentile(self, p: float) -> float:
        """The latency (seconds) at percentile ``p`` (0..100); 0.0 when empty."""
        return self.percentiles([p])[0]

    def percentiles(self, ps: Sequence[float]) -> list[float]:
        """Latencies (seconds) at each percentile in ``ps`` with one cumulative pass; zeros when empty.

        The rank of ``p`` is ``ceil(p/100 * total)`` (at least 1), the same sample that
        ``numpy.percentile(..., method="inverted_cdf")`` picks, so results agree to the bucket width.
        """
        if any(not 0.0 <= p <= 100.0 for p in ps):
            raise ValueError(f"percentiles must be within 0..100, got {list(ps)}")
        if not self.total:
            return [0.0 for _ in ps]
        cum = np.cumsum(np.frombuffer(self._counts, dtype=np.int64))
        ranks = np.maximum(1, np.ceil(np.asarray(ps, dtype=np.float64) / 100.0 * self.total)).astype(np.int64)
        idx = np.searchsorted(cum, ranks, side="left")
        highest = np.clip(self._highest_equivalent_us(idx) / 1e6, self._min, self._max)
        return [float(x) for x in np.where(ranks >= self.total, self._max, highest)]

    def _highest_equivalent_us(self, idx: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Largest microsecond value that lands in each bucket index (the inverse of :meth:`record`)."""
        bucket = (idx >> self._half_mag) - 1
        sub = (idx & (self._half - 1)) + self._half
        low_region = bucket < 0
        sub = np.where(low_region, sub - self._half, sub)
        bucket = np.maximum(bucket, 0)
        return np.asarray((sub << bucket) + (1 << bucket) - 1, dtype=np.int64)
