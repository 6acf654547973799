"""PostgreSQL's text output of values (pure), shared by the SQL engine, the wire protocol and qsql.

NULL is empty (or the caller's null display), booleans `t`/`f`, floats PostgreSQL's shortest
round-trip form with extra_float_digits = 1 (`1e+20`, `100`, `0.1`), bytea `\\x` + hex. It lives
in the library because the compute node answers in this form and the shell prints it; the shell's
table layout is tools/format.py.
"""
from __future__ import annotations

import decimal
import math
import struct
from typing import Any


def format_float(value: float, single_precision: bool = False) -> str:
    """PostgreSQL's float4out/float8out with extra_float_digits = 1 (shortest exact)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    if single_precision:
        shortest = _shortest_float4(value)
        max_fixed_exponent = 6  # FLT_DIG
    else:
        shortest = repr(value)
        max_fixed_exponent = 15  # DBL_DIG
    sign, digits, exponent = decimal.Decimal(shortest).normalize().as_tuple()
    digit_text = "".join(map(str, digits))
    point_exponent = len(digit_text) - 1 + exponent  # value = d.ddd * 10**point_exponent
    prefix = "-" if sign else ""
    if -4 <= point_exponent < max_fixed_exponent:
        if exponent >= 0:
            body = digit_text + "0" * exponent
        elif point_exponent >= 0:
            body = digit_text[: point_exponent + 1] + "." + digit_text[point_exponent + 1:]
        else:
            body = "0." + "0" * (-point_exponent - 1) + digit_text
        return prefix + body
    mantissa = digit_text[0] + ("." + digit_text[1:] if len(digit_text) > 1 else "")
    exponent_sign = "-" if point_exponent < 0 else "+"
    return f"{prefix}{mantissa}e{exponent_sign}{abs(point_exponent):02d}"


def _shortest_float4(value: float) -> str:
    as_float4 = struct.unpack("f", struct.pack("f", value))[0]
    for precision in range(1, 10):
        text = f"{as_float4:.{precision}g}"
        if struct.unpack("f", struct.pack("f", float(text)))[0] == as_float4:
            return text
    return repr(as_float4)


def format_value(value: Any, type_name: str = "", null_display: str = "") -> str:
    """One value as psql shows it (the text output of its type)."""
    if value is None:
        return null_display
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        single = type_name.strip().lower() in ("real", "float4")
        return format_float(value, single_precision=single)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    return str(value)
