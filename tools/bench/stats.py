"""Latency statistics for `quorumdb bench`: a bounded log-bucket histogram (pure, no clock).

Latencies are recorded in microseconds into buckets whose width grows by BUCKET_GROWTH (1%),
so memory is fixed (at most BUCKETS_MAX counters) however long the run, and a percentile is
exact to within 1% (it is the upper edge of its bucket, never above the exact maximum,
which is kept separately).
"""
from __future__ import annotations

import math
from typing import Iterable

BUCKET_GROWTH = 1.01  # relative width of a bucket: percentiles are exact to 1%
LATENCY_US_MAX = 600 * 1_000_000  # larger latencies land in the last bucket (600 s is beyond any deadline)
BUCKETS_MAX = int(math.log(LATENCY_US_MAX) / math.log(BUCKET_GROWTH)) + 2
_LOG_GROWTH = math.log(BUCKET_GROWTH)


def bucket_of(latency_us: float) -> int:
    """The bucket index of a latency: 0 holds everything up to 1 us."""
    if latency_us <= 1.0:
        return 0
    return min(BUCKETS_MAX - 1, int(math.ceil(math.log(latency_us) / _LOG_GROWTH)))


def bucket_upper_us(index: int) -> float:
    """The largest latency bucket `index` holds."""
    return BUCKET_GROWTH ** index


class Histogram:
    """Counts of latencies per bucket plus the exact count, sum, min and max."""

    __slots__ = ("counts", "count", "total_us", "min_us", "max_us")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}  # sparse: at most BUCKETS_MAX keys
        self.count = 0
        self.total_us = 0.0
        self.min_us = math.inf
        self.max_us = 0.0

    def record(self, latency_us: float) -> None:
        assert latency_us >= 0, latency_us
        index = bucket_of(latency_us)
        self.counts[index] = self.counts.get(index, 0) + 1
        self.count += 1
        self.total_us += latency_us
        self.min_us = min(self.min_us, latency_us)
        self.max_us = max(self.max_us, latency_us)

    def merge(self, other: "Histogram") -> None:
        for index, count in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + count
        self.count += other.count
        self.total_us += other.total_us
        self.min_us = min(self.min_us, other.min_us)
        self.max_us = max(self.max_us, other.max_us)

    def percentile_us(self, fraction: float) -> float:
        """The latency at or below which `fraction` (0..1) of the samples lie; 0.0 when empty.
        Nearest-rank: the smallest bucket whose cumulative count reaches ceil(fraction * count)."""
        assert 0.0 <= fraction <= 1.0, fraction
        if self.count == 0:
            return 0.0
        if fraction >= 1.0:
            return self.max_us
        rank = max(1, math.ceil(fraction * self.count))
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                return max(self.min_us, min(bucket_upper_us(index), self.max_us))
        raise AssertionError("unreachable: the counts add up to self.count")

    def mean_us(self) -> float:
        return self.total_us / self.count if self.count else 0.0


def histogram_of(latencies_us: Iterable[float]) -> Histogram:
    histogram = Histogram()
    for latency in latencies_us:
        histogram.record(latency)
    return histogram


def exact_percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of a list (the reference the histogram is tested against)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(histogram: Histogram, ops: int, aborts: int, errors: int, elapsed_s: float) -> dict[str, float | int]:
    """The figures a run reports, in milliseconds and transactions per second."""
    assert elapsed_s > 0, elapsed_s
    p50, p95, p99 = (histogram.percentile_us(f) / 1000.0 for f in (0.50, 0.95, 0.99))
    return {
        "ops": ops,
        "throughput_tps": ops / elapsed_s,
        "latency_ms_mean": histogram.mean_us() / 1000.0,
        "latency_ms_p50": p50,
        "latency_ms_p95": p95,
        "latency_ms_p99": p99,
        "latency_ms_max": histogram.max_us / 1000.0,
        "aborts": aborts,
        "errors": errors,
    }
