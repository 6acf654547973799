"""Admission of new PostgreSQL connections: a connection cap and a token-bucket rate (pure).

DSQL bounds both how many connections a cluster holds and how fast new ones arrive. Each
compute node applies the same two bounds to its own connections: at most `connections_max`
open (53300 too_many_connections beyond), and new connections at `rate_per_s` with bursts up
to `burst` (53400 configuration_limit_exceeded beyond: PostgreSQL has no rate limit of its own,
and this is its code for "a configured limit was hit"). `now_s` is passed in.
"""
from __future__ import annotations

from quorumdb import errors


class Admission:
    def __init__(self, connections_max: int, rate_per_s: float, burst: int, now_s: float):
        assert connections_max > 0 and rate_per_s > 0 and burst >= 1
        self.connections_max = connections_max
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.open = 0
        self._tokens = float(burst)
        self._refilled_s = now_s

    def admit(self, now_s: float) -> tuple[str, str] | None:
        """None: admitted (count it; call release() when it closes). Else (sqlstate, message)."""
        elapsed = max(0.0, now_s - self._refilled_s)
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate_per_s)
        self._refilled_s = now_s
        if self.open >= self.connections_max:
            return errors.TOO_MANY_CONNECTIONS, (f"sorry, too many clients already (this node allows "
                                          f"{self.connections_max} connections)")
        if self._tokens < 1.0:
            return errors.CONFIGURATION_LIMIT_EXCEEDED, (f"too many new connections: this node accepts "
                                                  f"{self.rate_per_s:g} per second (bursts of {self.burst})")
        self._tokens -= 1.0
        self.open += 1
        return None

    def release(self) -> None:
        assert self.open > 0
        self.open -= 1
