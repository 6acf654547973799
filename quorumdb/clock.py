"""The clock: `now()` returns an interval (earliest, latest) in integer nanoseconds.

Like AWS ClockBound, the true time is guaranteed to lie inside the interval. All
timestamps in QuorumDB come from here:
  - a transaction reads at start_ts = now().latest;
  - the adjudicator acknowledges a commit only once now().earliest > commit_ts
    (commit-wait), so any transaction that starts afterwards sees it.
Services receive a clock object; protocol cores receive `now` values, never a clock.
Tests swap in `FakeClock`.
"""
from __future__ import annotations

import time
from typing import NamedTuple


class Interval(NamedTuple):
    earliest: int
    latest: int


class Clock:
    def __init__(self, error_ns: int = 1_000_000):
        assert error_ns >= 0
        self.error_ns = error_ns

    def now(self) -> Interval:
        t = time.time_ns()
        return Interval(t - self.error_ns, t + self.error_ns)

    def wait_until_past_s(self, ts: int) -> float:
        """Seconds to sleep until now().earliest > ts (0 if already past)."""
        earliest = self.now().earliest
        if earliest > ts:
            return 0.0
        return (ts - earliest + 1) / 1e9


class FakeClock(Clock):
    """A clock the test moves by hand."""

    def __init__(self, start_ns: int = 1_000_000_000_000, error_ns: int = 1_000):
        super().__init__(error_ns)
        self.t = start_ns

    def now(self) -> Interval:
        return Interval(self.t - self.error_ns, self.t + self.error_ns)

    def advance(self, ns: int) -> None:
        assert ns >= 0
        self.t += ns
