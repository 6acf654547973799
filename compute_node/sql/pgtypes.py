"""PostgreSQL type OIDs and the text/binary formats of values, both ways (pure).

Results: the engine names each column's type the way PostgreSQL's format_type does ("integer",
"character varying", ...); `oid_of` maps the name to the OID a driver expects, and `encode_text`
/ `encode_binary` write a Python value (int, float, Decimal, str, bool, bytes, date, datetime,
UUID) in that type's wire format.

Parameters: the engine takes no parameters, so a bound value becomes a SQL literal that the
statement text carries (`param_literal`). Safety rests on two rules: numbers and booleans are
re-printed from the parsed value (never copied from the client's text), and everything else is a
standard string literal, `'...'` with every quote doubled (standard_conforming_strings is on, so
a backslash is an ordinary character), wrapped in CAST(... AS type) when the type is known. NUL
characters, which no PostgreSQL text value may hold, are refused (22021).
"""
from __future__ import annotations

import datetime
import decimal
import re
import struct
import uuid

from quorumdb import errors
from quorumdb.pgtext import format_float
from quorumdb.errors import SqlError

BOOL = 16
BYTEA = 17
NAME = 19
INT8 = 20
INT2 = 21
INT4 = 23
TEXT = 25
OID = 26
JSON = 114
FLOAT4 = 700
FLOAT8 = 701
UNKNOWN = 705
BPCHAR = 1042
VARCHAR = 1043
DATE = 1082
TIME = 1083
TIMESTAMP = 1114
TIMESTAMPTZ = 1184
INTERVAL = 1186
NUMERIC = 1700
UUID = 2950
JSONB = 3802
REGCLASS = 2205
REGTYPE = 2206
CHAR = 18
INT2VECTOR = 22
OIDVECTOR = 30
TEXT_ARRAY = 1009
INT2_ARRAY = 1005
INT4_ARRAY = 1007
OID_ARRAY = 1028
BOOL_ARRAY = 1000
NAME_ARRAY = 1003
INT8_ARRAY = 1016
VOID = 2278


# Engine / format_type names (and common aliases) -> OID.
_NAME_TO_OID = {
    "boolean": BOOL, "bool": BOOL,
    "bytea": BYTEA,
    "name": NAME,
    "bigint": INT8, "int8": INT8,
    "smallint": INT2, "int2": INT2,
    "integer": INT4, "int": INT4, "int4": INT4,
    "text": TEXT,
    "oid": OID,
    "json": JSON, "jsonb": JSONB,
    "real": FLOAT4, "float4": FLOAT4,
    "double precision": FLOAT8, "float8": FLOAT8, "double": FLOAT8,
    "unknown": TEXT,
    "character": BPCHAR, "char": BPCHAR, "bpchar": BPCHAR, '"char"': CHAR,
    "character varying": VARCHAR, "varchar": VARCHAR,
    "date": DATE,
    "time without time zone": TIME, "time": TIME,
    "timestamp without time zone": TIMESTAMP, "timestamp": TIMESTAMP,
    "timestamp with time zone": TIMESTAMPTZ, "timestamptz": TIMESTAMPTZ,
    "interval": INTERVAL,
    "numeric": NUMERIC, "decimal": NUMERIC,
    "uuid": UUID,
    "regclass": REGCLASS, "regtype": REGTYPE,
    "int2vector": INT2VECTOR, "oidvector": OIDVECTOR,
    "text[]": TEXT_ARRAY, "smallint[]": INT2_ARRAY, "integer[]": INT4_ARRAY, "oid[]": OID_ARRAY,
    "boolean[]": BOOL_ARRAY, "name[]": NAME_ARRAY, "bigint[]": INT8_ARRAY,
    "void": VOID,
}

# OID -> (typname, typlen): what pg_type holds and RowDescription reports.
TYPES: dict[int, tuple[str, int]] = {
    BOOL: ("bool", 1), BYTEA: ("bytea", -1), NAME: ("name", 64), INT8: ("int8", 8), INT2: ("int2", 2),
    INT4: ("int4", 4), TEXT: ("text", -1), OID: ("oid", 4), JSON: ("json", -1), FLOAT4: ("float4", 4),
    FLOAT8: ("float8", 8), BPCHAR: ("bpchar", -1), VARCHAR: ("varchar", -1), DATE: ("date", 4),
    TIME: ("time", 8), TIMESTAMP: ("timestamp", 8), TIMESTAMPTZ: ("timestamptz", 8), INTERVAL: ("interval", 16),
    NUMERIC: ("numeric", -1), UUID: ("uuid", 16), JSONB: ("jsonb", -1), CHAR: ('char', 1),
    REGCLASS: ("regclass", 4), REGTYPE: ("regtype", 4), INT2VECTOR: ("int2vector", -1),
    OIDVECTOR: ("oidvector", -1), TEXT_ARRAY: ("_text", -1), INT2_ARRAY: ("_int2", -1),
    INT4_ARRAY: ("_int4", -1), OID_ARRAY: ("_oid", -1), BOOL_ARRAY: ("_bool", -1), NAME_ARRAY: ("_name", -1),
    INT8_ARRAY: ("_int8", -1), UNKNOWN: ("unknown", -2), VOID: ("void", 4),
}

# Arrays the engine computes (compute_node/sql/types.py Kind.ARRAY): element name + "[]".
_ENGINE_ARRAYS = {
    "real[]": (1021, "_float4"), "double precision[]": (1022, "_float8"), "numeric[]": (1231, "_numeric"),
    "character varying[]": (1015, "_varchar"), "character[]": (1014, "_bpchar"), "date[]": (1182, "_date"),
    "timestamp without time zone[]": (1115, "_timestamp"), "timestamp with time zone[]": (1185, "_timestamptz"),
    "uuid[]": (2951, "_uuid"), "interval[]": (1187, "_interval"), "bytea[]": (1001, "_bytea"),
    '"char"[]': (1002, "_char"),
}
for _name, (_oid, _typname) in _ENGINE_ARRAYS.items():
    _NAME_TO_OID.setdefault(_name, _oid)
    TYPES.setdefault(_oid, (_typname, -1))

_ARRAY_OF = {TEXT: TEXT_ARRAY, INT2: INT2_ARRAY, INT4: INT4_ARRAY, OID: OID_ARRAY, BOOL: BOOL_ARRAY,
             NAME: NAME_ARRAY, INT8: INT8_ARRAY}


def regtype_name(oid: int) -> str:
    """The name PostgreSQL's regtype prints for a type OID (the first engine name mapping to it)."""
    for name, candidate in _NAME_TO_OID.items():
        if candidate == oid:
            return name
    return TYPES.get(oid, ("", 0))[0]


def array_oid(oid: int) -> int:
    """The OID of the array type of `oid`, 0 where QuorumDB has none."""
    return _ARRAY_OF.get(oid, 0)


def lookup_type(name: str) -> int | None:
    """The OID of a type named as to_regtype() would accept it, or None if there is no such type."""
    name = name.strip().lower()
    if name in _NAME_TO_OID and name != "unknown":
        return _NAME_TO_OID[name]
    for oid, (typname, _length) in TYPES.items():
        if typname == name:
            return oid
    return None


# OID -> the SQL type name used in CAST(... AS name) for a bound parameter.
_CAST_NAMES = {
    DATE: "DATE", TIME: "TIME", TIMESTAMP: "TIMESTAMP", TIMESTAMPTZ: "TIMESTAMPTZ",
    INTERVAL: "INTERVAL", UUID: "UUID", BYTEA: "BYTEA", NUMERIC: "NUMERIC",
}

POSTGRES_EPOCH = datetime.datetime(2000, 1, 1)
POSTGRES_EPOCH_UTC = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
POSTGRES_EPOCH_DATE = datetime.date(2000, 1, 1)


def sql_type_of_oid(oid: int):
    """The engine type a declared parameter type stands for (None: unspecified or unknown here)."""
    if not oid or oid not in TYPES:
        return None
    from compute_node.sql import types as sql_types  # the engine's types: only for declared parameters
    try:
        return sql_types.type_from_name(TYPES[oid][0])
    except Exception:  # a type the engine does not have: leave the parameter's type to inference
        return None


def oid_of(type_name: str, sample=None) -> int:
    """The OID of an engine type name; for a name we do not know, guess from a value."""
    name = type_name.lower().strip()
    if name in _NAME_TO_OID:
        return _NAME_TO_OID[name]
    base = re.sub(r"\(.*\)", "", name).strip()
    if base in _NAME_TO_OID:
        return _NAME_TO_OID[base]
    return _oid_of_value(sample)


def _oid_of_value(value) -> int:
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        return INT8
    if isinstance(value, float):
        return FLOAT8
    if isinstance(value, decimal.Decimal):
        return NUMERIC
    if isinstance(value, (bytes, bytearray, memoryview)):
        return BYTEA
    if isinstance(value, datetime.datetime):
        return TIMESTAMPTZ if value.tzinfo is not None else TIMESTAMP
    if isinstance(value, datetime.date):
        return DATE
    if isinstance(value, uuid.UUID):
        return UUID
    return TEXT


def type_size(oid: int) -> int:
    return TYPES.get(oid, ("", -1))[1]


# --- results: Python value -> wire ----------------------------------------------------------
def _format_timestamp(value: datetime.datetime) -> str:
    text = value.strftime("%Y-%m-%d %H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    if value.year < 1:
        text += " BC"
    return text


def encode_text(value, oid: int) -> bytes:
    if isinstance(value, bool):
        return b"t" if value else b"f"
    if isinstance(value, float):
        # PostgreSQL's float4out/float8out text, as psql shows it (shortest exact digits).
        return format_float(value, single_precision=oid == FLOAT4).encode()
    if isinstance(value, decimal.Decimal):
        return (format(value, "f") if value.is_finite() else ("NaN" if value.is_nan() else str(value))).encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return b"\\x" + bytes(value).hex().encode()
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            utc = value.astimezone(datetime.timezone.utc)
            return (_format_timestamp(utc) + "+00").encode()
        return _format_timestamp(value).encode()
    if isinstance(value, datetime.date):
        return value.isoformat().encode()
    if isinstance(value, (list, tuple)) and oid in (INT2VECTOR, OIDVECTOR):
        return " ".join(str(v) for v in value).encode()  # int2vector/oidvector print space-separated
    if isinstance(value, (list, tuple)):
        return ("{" + ",".join(_array_element(v) for v in value) + "}").encode()
    return str(value).encode("utf-8")


def _array_element(value) -> str:
    if value is None:
        return "NULL"
    text = encode_text(value, TEXT).decode()
    if text == "" or any(ch in text for ch in ' ",{}\\') or text.upper() == "NULL":
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def _from_wire_text(value, oid: int):
    """Numeric, date, time stamp and uuid values reach the wire layer as their PostgreSQL text
    (compute_node/sessions/session.py _wire_values); the binary formats need the value back."""
    if not isinstance(value, str):
        return value
    match oid:
        case 1700:
            return decimal.Decimal(value)
        case 2950:
            return uuid.UUID(value)
        case 1082:
            return datetime.date.fromisoformat(value)
        case 1114:
            return datetime.datetime.fromisoformat(value)
        case 1184:
            return datetime.datetime.fromisoformat(value + ":00" if re.search(r"[+-]\d\d$", value) else value)
    return value


def encode_binary(value, oid: int) -> bytes:
    """The binary send format of `value` as type `oid`; types without one fall back to text bytes."""
    try:
        value = _from_wire_text(value, oid)
        match oid:
            case 16:
                return b"\x01" if value else b"\x00"
            case 21:
                return struct.pack("!h", int(value))
            case 23 | 26 | 2205 | 2206:
                return struct.pack("!i" if oid == INT4 else "!I", int(value))
            case 20:
                return struct.pack("!q", int(value))
            case 700:
                return struct.pack("!f", float(value))
            case 701:
                return struct.pack("!d", float(value))
            case 17:
                return bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else str(value).encode()
            case 2950:
                return (value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))).bytes
            case 1082:
                return struct.pack("!i", (value - POSTGRES_EPOCH_DATE).days)
            case 1114:
                delta = value.replace(tzinfo=None) - POSTGRES_EPOCH
                return struct.pack("!q", _micros(delta))
            case 1184:
                aware = value if value.tzinfo is not None else value.replace(tzinfo=datetime.timezone.utc)
                return struct.pack("!q", _micros(aware - POSTGRES_EPOCH_UTC))
            case 1186:  # the engine sends interval values as their text (compute_node/sessions/session.py)
                from compute_node.sql.interval import Interval, parse_interval
                span = value if isinstance(value, Interval) else parse_interval(str(value))
                return struct.pack("!qii", span.micros, span.days, span.months)
            case 1700:
                return encode_numeric_binary(decimal.Decimal(value) if not isinstance(value, decimal.Decimal)
                                             else value)
    except (struct.error, TypeError, ValueError, AttributeError, OverflowError) as error:
        raise SqlError(errors.INTERNAL_ERROR, f"cannot send {value!r} as type {oid} in binary: {error}") from None
    return encode_text(value, oid)


def _micros(delta: datetime.timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def encode_numeric_binary(value: decimal.Decimal) -> bytes:
    if value.is_nan():
        return struct.pack("!hhHH", 0, 0, 0xC000, 0)
    if value.is_infinite():
        return struct.pack("!hhHH", 0, 0, 0xD000 if value > 0 else 0xF000, 0)
    sign, digits, exponent = value.as_tuple()
    dscale = max(0, -exponent)
    text = "".join(map(str, digits))
    # Place the digits around the decimal point, padded to groups of 4.
    if exponent >= 0:
        integer_part, fraction_part = text + "0" * exponent, ""
    else:
        split = len(text) + exponent
        integer_part = text[:split] if split > 0 else ""
        fraction_part = ("0" * -split + text) if split < 0 else text[split:]
    integer_part = integer_part.lstrip("0")
    integer_part = "0" * (-len(integer_part) % 4) + integer_part
    fraction_part = fraction_part + "0" * (-len(fraction_part) % 4)
    groups = [int(integer_part[i:i + 4]) for i in range(0, len(integer_part), 4)]
    weight = len(groups) - 1
    groups += [int(fraction_part[i:i + 4]) for i in range(0, len(fraction_part), 4)]
    while groups and groups[0] == 0:
        groups.pop(0)
        weight -= 1
    while groups and groups[-1] == 0:
        groups.pop()
    if not groups:
        weight = 0
    return struct.pack("!hhHH", len(groups), weight, 0x4000 if sign else 0, dscale) + b"".join(
        struct.pack("!H", g) for g in groups)


def decode_numeric_binary(data: bytes) -> decimal.Decimal:
    if len(data) < 8:
        raise _bad_binary("numeric")
    count, weight, sign, dscale = struct.unpack("!hhHH", data[:8])
    if count < 0 or len(data) != 8 + 2 * count:
        raise _bad_binary("numeric")
    if sign == 0xC000:
        return decimal.Decimal("NaN")
    if sign in (0xD000, 0xF000):
        return decimal.Decimal("Infinity" if sign == 0xD000 else "-Infinity")
    if sign not in (0, 0x4000) or dscale > 16383:
        raise _bad_binary("numeric")
    groups = struct.unpack(f"!{count}H", data[8:])
    if any(group > 9999 for group in groups):
        raise _bad_binary("numeric")
    value = decimal.Decimal(0)
    with decimal.localcontext() as context:
        context.prec = 4 * count + 10
        for index, group in enumerate(groups):
            value += decimal.Decimal(group).scaleb(4 * (weight - index))
        value = -value if sign == 0x4000 else value
        return value.quantize(decimal.Decimal(1).scaleb(-dscale)) if count else decimal.Decimal(0).scaleb(-dscale)


# --- parameters: wire -> SQL literal ---------------------------------------------------------
_INT_RE = re.compile(r"^\s*[+-]?\d+\s*$")
_NUMERIC_RE = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$")
_FLOAT_SPECIAL = {"nan": "NaN", "infinity": "Infinity", "+infinity": "Infinity", "-infinity": "-Infinity",
                  "inf": "Infinity", "+inf": "Infinity", "-inf": "-Infinity"}
_INT_RANGES = {INT2: (-(2**15), 2**15 - 1), INT4: (-(2**31), 2**31 - 1), INT8: (-(2**63), 2**63 - 1),
               OID: (0, 2**32 - 1)}
_INT_NAMES = {INT2: "smallint", INT4: "integer", INT8: "bigint", OID: "oid"}
_BOOL_WORDS = {"t": True, "true": True, "y": True, "yes": True, "on": True, "1": True,
               "f": False, "false": False, "n": False, "no": False, "off": False, "0": False}


def _bad_binary(type_name: str) -> SqlError:
    return SqlError(errors.INVALID_BINARY_REPRESENTATION, f"incorrect binary data format in bind parameter of type {type_name}")


def quote_literal(text: str) -> str:
    """A standard-conforming string literal for `text`."""
    if "\0" in text:
        raise SqlError(errors.CHARACTER_NOT_IN_REPERTOIRE, 'invalid byte sequence for encoding "UTF8": 0x00')
    return "'" + text.replace("'", "''") + "'"


def _int_literal(value: int, oid: int) -> str:
    low, high = _INT_RANGES[oid]
    if not low <= value <= high:
        raise SqlError(errors.NUMERIC_VALUE_OUT_OF_RANGE, f'value "{value}" is out of range for type {_INT_NAMES[oid]}')
    return str(value) if value >= 0 else f"({value})"


def _float_literal(value: float, oid: int) -> str:
    name = "REAL" if oid == FLOAT4 else "DOUBLE PRECISION"
    return f"CAST('{format_float(value)}' AS {name})"


def _decode_utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SqlError(errors.CHARACTER_NOT_IN_REPERTOIRE, 'invalid byte sequence for encoding "UTF8"') from None


def param_literal(data: bytes | None, format_code: int, oid: int) -> str:
    """The SQL text standing for one bound parameter."""
    if data is None:
        return "NULL"
    if format_code == 1:
        return _binary_param_literal(data, oid)
    if format_code != 0:
        raise SqlError(errors.PROTOCOL_VIOLATION, f"unsupported format code: {format_code}")
    return text_param_literal(_decode_utf8(data), oid)


def text_param_literal(text: str, oid: int) -> str:
    if oid in _INT_RANGES:
        if not _INT_RE.match(text):
            raise SqlError(errors.INVALID_TEXT_REPRESENTATION,
                           f'invalid input syntax for type {_INT_NAMES[oid]}: "{text}"')
        return _int_literal(int(text.strip()), oid)
    if oid in (FLOAT4, FLOAT8):
        special = _FLOAT_SPECIAL.get(text.strip().lower())
        if special is None and not _NUMERIC_RE.match(text):
            raise SqlError(errors.INVALID_TEXT_REPRESENTATION,
                           f'invalid input syntax for type double precision: "{text}"')
        return _float_literal(float(special or text.strip()), oid)
    if oid == NUMERIC:
        stripped = text.strip()
        if _NUMERIC_RE.match(stripped):
            number = decimal.Decimal(stripped)
            return format(number, "f") if number >= 0 else f"({format(number, 'f')})"
        if stripped.lower() == "nan":
            return "CAST('NaN' AS NUMERIC)"
        raise SqlError(errors.INVALID_TEXT_REPRESENTATION, f'invalid input syntax for type numeric: "{text}"')
    if oid == BOOL:
        word = text.strip().lower()
        if word not in _BOOL_WORDS:
            raise SqlError(errors.INVALID_TEXT_REPRESENTATION, f'invalid input syntax for type boolean: "{text}"')
        return "TRUE" if _BOOL_WORDS[word] else "FALSE"
    if oid in _CAST_NAMES:
        return f"CAST({quote_literal(text)} AS {_CAST_NAMES[oid]})"
    # text, varchar, name, json, unknown (0) and the rest: an untyped literal, which the engine
    # coerces to the type it meets, as PostgreSQL does with an unknown-typed parameter.
    return quote_literal(text)


def _binary_param_literal(data: bytes, oid: int) -> str:
    sizes = {BOOL: 1, INT2: 2, INT4: 4, OID: 4, INT8: 8, FLOAT4: 4, FLOAT8: 8, UUID: 16, DATE: 4,
             TIMESTAMP: 8, TIMESTAMPTZ: 8, TIME: 8, INTERVAL: 16}
    if oid in sizes and len(data) != sizes[oid]:
        raise _bad_binary(TYPES[oid][0])
    match oid:
        case 16:
            if data not in (b"\x00", b"\x01"):
                raise _bad_binary("boolean")
            return "TRUE" if data == b"\x01" else "FALSE"
        case 21 | 23 | 20:
            fmt = {INT2: "!h", INT4: "!i", INT8: "!q"}[oid]
            return _int_literal(struct.unpack(fmt, data)[0], oid)
        case 26:
            return _int_literal(struct.unpack("!I", data)[0], oid)
        case 700 | 701:
            return _float_literal(struct.unpack("!f" if oid == FLOAT4 else "!d", data)[0], oid)
        case 1700:
            number = decode_numeric_binary(data)
            if not number.is_finite():
                return f"CAST('{number}' AS NUMERIC)"
            return format(number, "f") if number >= 0 else f"({format(number, 'f')})"
        case 17:
            return f"CAST('\\x{data.hex()}' AS BYTEA)"
        case 1186:  # microseconds, days, months: written in the engine's own interval output
            from compute_node.sql.interval import Interval, format_interval
            micros, days, months = struct.unpack("!qii", data)
            return f"CAST('{format_interval(Interval(months, days, micros))}' AS INTERVAL)"
        case 2950:
            return f"CAST('{uuid.UUID(bytes=data)}' AS UUID)"
        case 1082:
            days = struct.unpack("!i", data)[0]
            try:
                return f"CAST('{POSTGRES_EPOCH_DATE + datetime.timedelta(days=days)}' AS DATE)"
            except OverflowError:
                raise _bad_binary("date") from None
        case 1114 | 1184:
            micros = struct.unpack("!q", data)[0]
            try:
                moment = POSTGRES_EPOCH + datetime.timedelta(microseconds=micros)
            except OverflowError:
                raise _bad_binary("timestamp") from None
            text = moment.isoformat(sep=" ")
            return f"CAST('{text}+00' AS TIMESTAMPTZ)" if oid == TIMESTAMPTZ else f"CAST('{text}' AS TIMESTAMP)"
        case 1083:
            micros = struct.unpack("!q", data)[0]
            if not 0 <= micros <= 86_400_000_000:
                raise _bad_binary("time")
            seconds, micro = divmod(micros, 1_000_000)
            return f"CAST('{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}.{micro:06d}' AS TIME)"
        case 25 | 1043 | 1042 | 19 | 0 | 705 | 114:
            return quote_literal(_decode_utf8(data))
        case 3802:
            if not data or data[0] != 1:
                raise _bad_binary("jsonb")
            return quote_literal(_decode_utf8(data[1:]))
    raise SqlError(errors.UNDEFINED_FUNCTION, f"no binary input function available for type {oid}")
