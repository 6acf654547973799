"""Times on the command line: ISO 8601 UTC with milliseconds <-> commit timestamps (ns since the epoch).

Every timestamp in QuorumDB is integer nanoseconds of UTC wall time (quorumdb/clock.py), so a
commit_ts and the time a user types are the same axis. Recovery commands take and print times
as `2026-12-01T13:40:00.250Z`; a time without an explicit UTC offset is refused rather than
read in the machine's local zone, where it would name another moment.
"""
from __future__ import annotations

import datetime

_NS_PER_S = 1_000_000_000


class TimeFormatError(ValueError):
    """The text is not an ISO 8601 UTC time."""


def parse_utc(text: str) -> int:
    """'2026-12-01T13:40:00.250Z' -> ns since the epoch. Offsets other than UTC are converted."""
    raw = text.strip()
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    try:
        moment = datetime.datetime.fromisoformat(raw)
    except ValueError:
        raise TimeFormatError(f"bad time {text!r}: use ISO 8601 UTC with milliseconds, "
                              "for example 2026-12-01T13:40:00.250Z") from None
    if moment.tzinfo is None:
        raise TimeFormatError(f"time {text!r} has no zone: add Z for UTC (2026-12-01T13:40:00.250Z)")
    delta = moment - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * _NS_PER_S + delta.microseconds * 1_000


def format_utc(ts_ns: int) -> str:
    """ns since the epoch -> '2026-12-01T13:40:00.250Z' (milliseconds, truncated)."""
    seconds, rest_ns = divmod(int(ts_ns), _NS_PER_S)
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{rest_ns // 1_000_000:03d}Z"


def describe(ts_ns: int) -> str:
    """Both forms, for output: '2026-12-01T13:40:00.250Z (commit_ts 1796132400250000000)'."""
    return f"{format_utc(ts_ns)} (commit_ts {ts_ns})"
