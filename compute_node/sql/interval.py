"""The interval type: PostgreSQL's months / days / microseconds triple (pure).

Theory of operation
-------------------
PostgreSQL keeps an interval as three separate fields because they do not convert
into each other exactly: a month is 28 to 31 days and a day is 23 to 25 hours across
a daylight-saving change. `timestamp + interval` therefore adds the months first (the
day of month clamped to the month's end: Jan 31 + 1 mon = Feb 29), then the days, then
the microseconds. Comparison, equality and hashing do convert, with PostgreSQL's fixed
ratios (1 month = 30 days, 1 day = 24 hours), so '1 mon' = '30 days' is true, as there.

Input follows PostgreSQL's `postgres` syntax: `[@] quantity unit [quantity unit ...]
[hh:mm[:ss[.frac]]] [ago]`, a bare number meaning seconds (days before a time field).
Fractions spill down as PostgreSQL's: '1.5 years' = 1 year 6 mons (rounded to whole
months), '1.5 months' = 1 mon 15 days, '1.5 days' = 1 day 12:00:00. ISO 8601
(`P1D`) and SQL-standard (`1-2`) inputs are refused with 0A000, never misread.

Output is IntervalStyle `postgres` (the only style): `1 year 2 mons 3 days 04:05:06.5`,
a negative field after a positive one gets an explicit `+` on the next positive one
(`-1 years +2 mons`), and a zero interval prints `00:00:00`.

Fields are int32 months, int32 days and int64 microseconds; any result outside is
22008 `interval out of range`.
"""
from __future__ import annotations

import calendar
import dataclasses
import datetime
import decimal
import math
import re

from quorumdb import errors
from quorumdb.errors import SqlError

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
USECS_PER_SEC = 1_000_000
USECS_PER_MINUTE = 60 * USECS_PER_SEC
USECS_PER_HOUR = 60 * USECS_PER_MINUTE
USECS_PER_DAY = 24 * USECS_PER_HOUR
DAYS_PER_MONTH = 30
INPUT_CHARS_MAX = 200  # PostgreSQL's own field buffer is MAXDATELEN-sized; longer input is garbage
D = decimal.Decimal


@dataclasses.dataclass(frozen=True, eq=False)
class Interval:
    months: int
    days: int
    micros: int

    def span(self) -> int:
        """The value comparisons use (PostgreSQL's interval_cmp_value): 30-day months, 24-hour days."""
        return (self.months * DAYS_PER_MONTH + self.days) * USECS_PER_DAY + self.micros

    def __eq__(self, other):
        return isinstance(other, Interval) and self.span() == other.span()

    def __ne__(self, other):
        return not self == other

    def __lt__(self, other):
        return self.span() < other.span()

    def __le__(self, other):
        return self.span() <= other.span()

    def __gt__(self, other):
        return self.span() > other.span()

    def __ge__(self, other):
        return self.span() >= other.span()

    def __hash__(self):
        return hash(("interval", self.span()))

    def __str__(self):
        return format_interval(self)


def checked(months: int, days: int, micros: int) -> Interval:
    if not (INT32_MIN <= months <= INT32_MAX and INT32_MIN <= days <= INT32_MAX and INT64_MIN <= micros <= INT64_MAX):
        raise out_of_range()
    return Interval(months, days, micros)


def out_of_range() -> SqlError:
    return SqlError(errors.DATETIME_FIELD_OVERFLOW, "interval out of range")


# --- input -----------------------------------------------------------------------------
# unit word -> (field, months, days, micros) per one unit
_UNITS: dict[str, tuple[str, int, int, int]] = {}
for _names, _field, _months, _days, _micros in (
        (("microsecond", "microseconds", "us", "usec", "usecs", "useconds"), "microsecond", 0, 0, 1),
        (("millisecond", "milliseconds", "ms", "msec", "msecs", "mseconds"), "millisecond", 0, 0, 1000),
        (("second", "seconds", "s", "sec", "secs"), "second", 0, 0, USECS_PER_SEC),
        (("minute", "minutes", "m", "min", "mins"), "minute", 0, 0, USECS_PER_MINUTE),
        (("hour", "hours", "h", "hr", "hrs"), "hour", 0, 0, USECS_PER_HOUR),
        (("day", "days", "d"), "day", 0, 1, 0),
        (("week", "weeks", "w"), "week", 0, 7, 0),
        (("month", "months", "mon", "mons"), "month", 1, 0, 0),
        (("year", "years", "y", "yr", "yrs"), "year", 12, 0, 0),
        (("decade", "decades", "dec", "decs"), "decade", 120, 0, 0),
        (("century", "centuries", "c", "cent"), "century", 1200, 0, 0),
        (("millennium", "millennia", "mil", "mils", "millenniums"), "millennium", 12000, 0, 0)):
    for _name in _names:
        _UNITS[_name] = (_field, _months, _days, _micros)

_TOKEN = re.compile(r"\s*(?:(?P<time>[+-]?\d+:\d+(?::\d+(?:\.\d*)?)?)|(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))"
                    r"|(?P<word>[a-z]+)|(?P<at>@)|(?P<other>[+-]))")


def parse_interval(text: str) -> Interval:
    """PostgreSQL's interval input (the `postgres` syntax; see the module docstring)."""
    source = text
    text = text.replace(",", " ").strip().lower()  # '1 day, 2:03:00' (Python's timedelta text) is accepted
    if len(text) > INPUT_CHARS_MAX:
        raise _invalid(source)
    if re.fullmatch(r"[+-]?p.*", text):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "ISO 8601 interval input is not supported")
    if re.search(r"\d-\d", text):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "SQL-standard year-month interval input is not supported")
    tokens = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            if text[position:].strip() == "":
                break
            raise _invalid(source)
        tokens.append((match.lastgroup, match.group(match.lastgroup)))
        position = match.end()
    if tokens and tokens[0][0] == "at":
        tokens = tokens[1:]
    negate = tokens.count(("word", "ago")) == 1  # 'ago' negates every field, wherever it stands
    if negate:
        tokens.remove(("word", "ago"))
    tokens = _join_signs(tokens, source)
    if not tokens:
        raise _invalid(source)
    months = days = micros = 0  # each field's fraction is rounded on its own, as PostgreSQL's
    seen: set[str] = set()
    index = 0
    while index < len(tokens):
        kind, value = tokens[index]
        if kind == "time":
            if seen & _TIME_FIELDS:
                raise _invalid(source)
            seen.update(_TIME_FIELDS)
            micros += _time_micros(value)
            index += 1
            continue
        if kind != "number":
            raise _invalid(source)
        following = tokens[index + 1] if index + 1 < len(tokens) else None
        if following is not None and following[0] == "word":
            unit = _UNITS.get(following[1])
            if unit is None:
                raise _invalid(source)
            index += 2
        elif following is not None and following[0] == "time":
            unit = _UNITS["day"]      # '1 2:03' is one day and a time
            index += 1
        elif following is None:
            unit = _UNITS["second"]   # a bare number is seconds
            index += 1
        else:
            raise _invalid(source)
        field, unit_months, unit_days, unit_micros = unit
        whole, fraction = _split_number(value)
        # Fractional seconds also fill the millisecond and microsecond fields (PostgreSQL's masks).
        fields = {"second", "millisecond", "microsecond"} if field == "second" and fraction else {field}
        if seen & fields:
            raise _invalid(source)
        seen.update(fields)
        # PostgreSQL keeps the fraction as a double and spills it down field by field (its
        # AdjustFract* steps, each rounded on its own): the same IEEE arithmetic gives its digits.
        if unit_months >= 12:
            months += whole * unit_months
            if fraction:
                months += int(round(fraction * (unit_months // 12) * 12))
        elif unit_months:
            months += whole
            days, micros = _fract_days(fraction, DAYS_PER_MONTH, days, micros)
        elif unit_days == 7:
            days += whole * 7
            days, micros = _fract_days(fraction, 7, days, micros)
        elif unit_days:
            days += whole
            micros += _fract_micros(fraction, USECS_PER_DAY)
        else:
            micros += whole * unit_micros + _fract_micros(fraction, unit_micros)
    micros_int = micros
    if not (INT32_MIN <= days <= INT32_MAX and INT64_MIN <= micros_int <= INT64_MAX):
        raise SqlError(errors.INTERVAL_FIELD_OVERFLOW, f'interval field value out of range: "{source}"')
    if negate:
        months, days, micros_int = -months, -days, -micros_int
    return checked(months, days, micros_int)


_TIME_FIELDS = {"hour", "minute", "second", "millisecond", "microsecond"}


def _split_number(text: str) -> tuple[int, float]:
    """(integer part, fraction as a double with the number's sign), as PostgreSQL parses it."""
    negative = text.startswith("-")
    integer, _, digits = text.lstrip("+-").partition(".")
    whole = int(integer or "0")
    fraction = float("0." + digits) if digits else 0.0
    return (-whole, -fraction) if negative else (whole, fraction)


def _fract_micros(fraction: float, scale: int) -> int:
    """PostgreSQL's AdjustFractMicroseconds: fraction * scale, truncated, the rest rounded (rint)."""
    if fraction == 0:
        return 0
    value = fraction * scale
    micros = int(value)
    return micros + int(round(value - micros))


def _fract_days(fraction: float, scale: int, days: int, micros: int) -> tuple[int, int]:
    """PostgreSQL's AdjustFractDays: whole days first, the rest of a day as microseconds."""
    if fraction == 0:
        return days, micros
    value = fraction * scale
    extra_days = int(value)
    return days + extra_days, micros + _fract_micros(value - extra_days, USECS_PER_DAY)


def _join_signs(tokens: list, source: str) -> list:
    """'- 5 min': a sign standing alone belongs to the number after it."""
    joined = []
    index = 0
    while index < len(tokens):
        kind, value = tokens[index]
        if kind == "other" and value in "+-":
            following = tokens[index + 1] if index + 1 < len(tokens) else None
            if following is None or following[0] not in ("number", "time") or following[1][0] in "+-":
                raise _invalid(source)
            joined.append((following[0], value + following[1]))
            index += 2
            continue
        joined.append((kind, value))
        index += 1
    return joined


def _time_micros(value: str) -> int:
    negative = value.startswith("-")
    parts = value.lstrip("+-").split(":")
    hours, minutes = int(parts[0]), int(parts[1])
    whole_seconds, _, digits = (parts[2] if len(parts) > 2 else "0").partition(".")
    seconds = int(whole_seconds)
    fraction_micros = int(round(float("0." + digits) * 1000000)) if digits else 0  # ParseFractionalSecond
    if minutes > 59 or seconds > 60 or (seconds == 60 and fraction_micros):
        raise SqlError(errors.INTERVAL_FIELD_OVERFLOW, f'interval field value out of range: "{value}"')
    total = hours * USECS_PER_HOUR + minutes * USECS_PER_MINUTE + seconds * USECS_PER_SEC + fraction_micros
    return -total if negative else total


def _invalid(text: str) -> SqlError:
    return SqlError(errors.INVALID_DATETIME_FORMAT, f'invalid input syntax for type interval: "{text}"')


# --- output ----------------------------------------------------------------------------
def _ctrunc_div(a: int, b: int) -> int:
    """C's integer division (toward zero), which PostgreSQL's field split uses."""
    quotient = abs(a) // abs(b)
    return quotient if (a >= 0) == (b >= 0) else -quotient


def format_interval(value: Interval) -> str:
    """IntervalStyle postgres, as PostgreSQL's EncodeInterval."""
    years = _ctrunc_div(value.months, 12)
    months = value.months - years * 12
    parts: list[str] = []
    state = {"zero": True, "before": False}

    def add(amount: int, unit: str) -> None:
        if amount == 0:
            return
        sign = "+" if state["before"] and amount > 0 else ""
        parts.append(f"{sign}{amount} {unit}{'' if amount == 1 else 's'}")
        state["before"] = amount < 0
        state["zero"] = False
    add(years, "year")
    add(months, "mon")
    add(value.days, "day")
    time = value.micros
    if state["zero"] or time != 0:
        hours = _ctrunc_div(time, USECS_PER_HOUR)
        rest = time - hours * USECS_PER_HOUR
        minutes = _ctrunc_div(rest, USECS_PER_MINUTE)
        rest -= minutes * USECS_PER_MINUTE
        seconds = _ctrunc_div(rest, USECS_PER_SEC)
        fraction = rest - seconds * USECS_PER_SEC
        minus = time < 0
        sign = "-" if minus else ("+" if state["before"] else "")
        text = f"{sign}{abs(hours):02d}:{abs(minutes):02d}:{abs(seconds):02d}"
        if fraction:
            text += f".{abs(fraction):06d}".rstrip("0")
        parts.append(text)
    return " ".join(parts)


# --- arithmetic ------------------------------------------------------------------------
def add(a: Interval, b: Interval) -> Interval:
    return checked(a.months + b.months, a.days + b.days, a.micros + b.micros)


def subtract(a: Interval, b: Interval) -> Interval:
    return checked(a.months - b.months, a.days - b.days, a.micros - b.micros)


def negate(a: Interval) -> Interval:
    return checked(-a.months, -a.days, -a.micros)


def _tsround(value: float) -> float:
    return round(value * 1e6) / 1e6  # PostgreSQL's TSROUND: to whole microseconds, half to even (rint)


def multiply(span: Interval, factor: float) -> Interval:
    """interval * float8, as PostgreSQL's interval_mul: fractional months and days spill down."""
    factor = float(factor)
    if math.isnan(factor) or math.isinf(factor):
        raise out_of_range()
    month_value = span.months * factor
    day_value = span.days * factor
    if not (INT32_MIN <= month_value <= INT32_MAX and INT32_MIN <= day_value <= INT32_MAX):
        raise out_of_range()
    months = int(month_value)
    days = int(day_value)
    month_remainder_days = _tsround((month_value - months) * DAYS_PER_MONTH)
    seconds_remainder = _tsround((day_value - days + month_remainder_days - int(month_remainder_days)) * 86400)
    if abs(seconds_remainder) >= 86400:
        days += int(seconds_remainder / 86400)
        seconds_remainder -= int(seconds_remainder / 86400) * 86400
    days += int(month_remainder_days)
    micros_value = span.micros * factor + seconds_remainder * USECS_PER_SEC
    if math.isnan(micros_value) or not (INT64_MIN <= micros_value < INT64_MAX):
        raise out_of_range()
    return checked(months, days, int(round(micros_value)))


def divide(span: Interval, factor: float) -> Interval:
    factor = float(factor)
    if factor == 0:
        raise SqlError(errors.DIVISION_BY_ZERO, "division by zero")
    return _divide(span, factor)


def _divide(span: Interval, factor: float) -> Interval:
    """interval / float8 as PostgreSQL's interval_div (the same spill-down as multiply)."""
    if math.isnan(factor):
        raise out_of_range()
    month_value = span.months / factor
    day_value = span.days / factor
    if not (INT32_MIN <= month_value <= INT32_MAX and INT32_MIN <= day_value <= INT32_MAX):
        raise out_of_range()
    months = int(month_value)
    days = int(day_value)
    month_remainder_days = _tsround((span.months / factor - months) * DAYS_PER_MONTH)
    seconds_remainder = _tsround((span.days / factor - days + month_remainder_days - int(month_remainder_days)) * 86400)
    if abs(seconds_remainder) >= 86400:
        days += int(seconds_remainder / 86400)
        seconds_remainder -= int(seconds_remainder / 86400) * 86400
    days += int(month_remainder_days)
    micros_value = span.micros / factor + seconds_remainder * USECS_PER_SEC
    if math.isnan(micros_value) or not (INT64_MIN <= micros_value < INT64_MAX):
        raise out_of_range()
    return checked(months, days, int(round(micros_value)))


def add_to_timestamp(value: datetime.datetime, span: Interval, sign: int = 1) -> datetime.datetime:
    """timestamp(tz) ± interval: months (day clamped to the month's end), then days, then time."""
    months, days, micros = sign * span.months, sign * span.days, sign * span.micros
    year = value.year
    try:
        if months:
            total = value.year * 12 + (value.month - 1) + months
            year, month = divmod(total, 12)
            month += 1
            if not 1 <= year <= 9999:
                raise OverflowError
            day = min(value.day, calendar.monthrange(year, month)[1])
            value = value.replace(year=year, month=month, day=day)
        year += (days + micros // USECS_PER_DAY) // 365
        return value + datetime.timedelta(days=days, microseconds=micros)
    except (OverflowError, ValueError):
        raise _timestamp_out_of_range(year) from None


def _timestamp_out_of_range(year: int) -> SqlError:
    """PostgreSQL's timestamps reach from 4713 BC to 294276 AD; Python's (and ours) years 1 to 9999."""
    if -4712 <= year <= 294276:
        return SqlError(errors.FEATURE_NOT_SUPPORTED, "timestamps outside the years 1 to 9999 are not supported")
    return SqlError(errors.DATETIME_FIELD_OVERFLOW, "timestamp out of range")


def between_timestamps(a: datetime.datetime, b: datetime.datetime) -> Interval:
    """timestamp - timestamp: the difference in microseconds, whole days moved to the day field
    (PostgreSQL's timestamp_mi then interval_justify_hours)."""
    delta = a - b
    micros = (delta.days * 86400 + delta.seconds) * USECS_PER_SEC + delta.microseconds
    days = _ctrunc_div(micros, USECS_PER_DAY)
    return checked(0, days, micros - days * USECS_PER_DAY)


# --- extract / date_part / date_trunc ------------------------------------------------
def part_float(span: Interval, field: str) -> float:
    """date_part(field, interval): double precision, computed as PostgreSQL's float path does
    (its rounding differs from the exact numeric EXTRACT for epoch and fractional seconds)."""
    years = _ctrunc_div(span.months, 12)
    second_micros = span.micros - _ctrunc_div(span.micros, USECS_PER_MINUTE) * USECS_PER_MINUTE
    seconds = _ctrunc_div(second_micros, USECS_PER_SEC)
    fraction = second_micros - seconds * USECS_PER_SEC
    if field == "epoch":
        result = span.micros / 1000000.0
        result += (365.25 * 86400) * years
        result += (30.0 * 86400) * (span.months - years * 12)
        result += 86400.0 * span.days
        return result
    if field == "second":
        return seconds + fraction / 1000000.0
    if field == "millisecond":
        return seconds * 1000.0 + fraction / 1000.0
    return float(extract(span, field))


EXTRACT_FIELDS = ("epoch", "year", "month", "day", "hour", "minute", "second", "millisecond", "milliseconds",
                  "microsecond", "microseconds", "quarter", "decade", "century", "millennium")


def extract(span: Interval, field: str) -> D:
    """EXTRACT(field FROM interval) as PostgreSQL 14+'s numeric interval_part."""
    years = _ctrunc_div(span.months, 12)
    months = span.months - years * 12
    time = span.micros
    hours = _ctrunc_div(time, USECS_PER_HOUR)
    minutes = _ctrunc_div(time - hours * USECS_PER_HOUR, USECS_PER_MINUTE)
    second_micros = time - hours * USECS_PER_HOUR - minutes * USECS_PER_MINUTE
    if field == "epoch":
        seconds = (D(span.micros) / USECS_PER_SEC + D(years) * D("365.25") * 86400
                   + D(months) * DAYS_PER_MONTH * 86400 + D(span.days) * 86400)
        return seconds.quantize(D("0.000001"))
    if field == "year":
        return D(years)
    if field == "month":
        return D(months)
    if field == "day":
        return D(span.days)
    if field == "hour":
        return D(hours)
    if field == "minute":
        return D(minutes)
    if field == "second":
        return (D(second_micros) / USECS_PER_SEC).quantize(D("0.000001"))
    if field in ("millisecond", "milliseconds"):
        return (D(second_micros) / 1000).quantize(D("0.001"))
    if field in ("microsecond", "microseconds"):
        return D(second_micros)
    if field == "quarter":
        return D(_ctrunc_div(months, 3) + 1)
    if field == "decade":
        return D(_ctrunc_div(years, 10))
    if field == "century":
        return D(_ctrunc_div(years, 100))
    if field == "millennium":
        return D(_ctrunc_div(years, 1000))
    if field in ("dow", "isodow", "doy", "week", "isoyear", "julian", "timezone", "timezone_hour", "timezone_minute"):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, f'unit "{field}" not supported for type interval')
    raise SqlError(errors.INVALID_PARAMETER_VALUE, f'unit "{field}" not recognized for type interval')


def unit_field(word: str) -> str:
    """The field a unit word names ('days' -> day, 'mon' -> month, 'ms' -> millisecond); other words as given."""
    found = _UNITS.get(word)
    return found[0] if found is not None else word


def truncate(span: Interval, unit: str) -> Interval:
    """date_trunc(unit, interval)."""
    years = _ctrunc_div(span.months, 12)
    order = ("millennium", "century", "decade", "year", "quarter", "month", "day", "hour", "minute", "second",
             "millisecond", "microsecond")
    if unit not in order:
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, f'unit "{unit}" not supported for type interval')
    if unit in ("millennium", "century", "decade", "year"):
        step = {"millennium": 1000, "century": 100, "decade": 10, "year": 1}[unit]
        return Interval(_ctrunc_div(years, step) * step * 12, 0, 0)
    if unit == "quarter":
        months = span.months - years * 12
        return Interval(years * 12 + _ctrunc_div(months, 3) * 3, 0, 0)
    if unit == "month":
        return Interval(span.months, 0, 0)
    if unit == "day":
        return Interval(span.months, span.days, 0)
    step = {"hour": USECS_PER_HOUR, "minute": USECS_PER_MINUTE, "second": USECS_PER_SEC, "millisecond": 1000,
            "microsecond": 1}[unit]
    return Interval(span.months, span.days, _ctrunc_div(span.micros, step) * step)
