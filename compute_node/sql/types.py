"""SQL types, literal parsing, casts and the text PostgreSQL prints for each value.

Values travel as plain Python objects:
  smallint/integer/bigint -> int        numeric(p,s) -> decimal.Decimal (exact)
  real/double precision   -> float      (real values are rounded to 32-bit floats)
  text/varchar(n)/char(n) -> str        (char(n) is stored blank-padded to n)
  boolean -> bool   date -> datetime.date   timestamp -> naive datetime.datetime
  timestamptz -> aware datetime (UTC; the session time zone is UTC)
  uuid -> uuid.UUID   bytea -> bytes    NULL -> None
Two pseudo-types describe literals before context decides their type: UNKNOWN (a
quoted string, which PostgreSQL coerces to the type it meets) and NULL.

Type categories decide which operands may meet (numeric, string, boolean,
datetime, uuid, bytea); within the numeric category the result type follows
PostgreSQL's operator resolution: integers widen, numeric absorbs integers, any
double precision (or real meeting a non-real) makes double precision.
"""
from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import functools
import math
import re
import struct
import uuid
from typing import Any, Sequence

from compute_node.sql import interval as interval_mod
from quorumdb import errors
from quorumdb import pgtext
from quorumdb.errors import SqlError


class Kind(enum.Enum):
    SMALLINT = "smallint"
    INTEGER = "integer"
    BIGINT = "bigint"
    NUMERIC = "numeric"
    REAL = "real"
    DOUBLE = "double precision"
    TEXT = "text"
    VARCHAR = "character varying"
    CHAR = "character"
    BOOLEAN = "boolean"
    DATE = "date"
    TIMESTAMP = "timestamp without time zone"
    TIMESTAMPTZ = "timestamp with time zone"
    UUID = "uuid"
    BYTEA = "bytea"
    INTERVAL = "interval"  # compute_node/sql/interval.py (rows: catalog.storable_value; never in keys)
    # Arrays (never stored in tables): an ArrayValue (a list of element values), element type
    # in SqlType.element; pg_alias names int2vector/oidvector (catalog arrays counted from 0).
    ARRAY = "array"
    UNKNOWN = "unknown"  # an untyped string literal
    NULL = "null"        # an untyped NULL literal


INT_RANGES = {
    Kind.SMALLINT: (-(2**15), 2**15 - 1),
    Kind.INTEGER: (-(2**31), 2**31 - 1),
    Kind.BIGINT: (-(2**63), 2**63 - 1),
}
INT_KINDS = (Kind.SMALLINT, Kind.INTEGER, Kind.BIGINT)
FLOAT_KINDS = (Kind.REAL, Kind.DOUBLE)
NUMERIC_KINDS = INT_KINDS + (Kind.NUMERIC,) + FLOAT_KINDS
TEXT_KINDS = (Kind.TEXT, Kind.VARCHAR, Kind.CHAR)
DATETIME_KINDS = (Kind.DATE, Kind.TIMESTAMP, Kind.TIMESTAMPTZ)
UNTYPED_KINDS = (Kind.UNKNOWN, Kind.NULL)
_INT_WIDTH = {Kind.SMALLINT: 0, Kind.INTEGER: 1, Kind.BIGINT: 2}
# The names PostgreSQL's input functions put in "invalid input syntax for type X".
_INPUT_NAMES = {Kind.TIMESTAMP: "timestamp", Kind.CHAR: "character"}
# The names PostgreSQL gives a result column that is a bare cast (`x::int` -> int4).
CAST_COLUMN_NAMES = {
    Kind.SMALLINT: "int2", Kind.INTEGER: "int4", Kind.BIGINT: "int8", Kind.NUMERIC: "numeric",
    Kind.REAL: "float4", Kind.DOUBLE: "float8", Kind.TEXT: "text", Kind.VARCHAR: "varchar",
    Kind.CHAR: "bpchar", Kind.BOOLEAN: "bool", Kind.DATE: "date", Kind.TIMESTAMP: "timestamp",
    Kind.TIMESTAMPTZ: "timestamptz", Kind.UUID: "uuid", Kind.BYTEA: "bytea", Kind.INTERVAL: "interval",
}
NUMERIC_PRECISION_MAX = 1000
DECIMAL_CONTEXT = decimal.Context(prec=2000, rounding=decimal.ROUND_HALF_UP, Emax=999_999, Emin=-999_999)


@dataclasses.dataclass(frozen=True)
class SqlType:
    kind: Kind
    length: int | None = None     # varchar(n), char(n)
    precision: int | None = None  # numeric(p, s)
    scale: int | None = None
    # PostgreSQL's name for a catalog type the engine computes with as one of its own kinds:
    # oid and regclass are integers, name and "char" are text, arrays and int2vector are lists
    # (pg_catalog.py). It changes only what the wire and format_type report, so it is left out
    # of equality: an oid column compares, joins and hashes as the integer it holds.
    pg_alias: str | None = dataclasses.field(default=None, compare=False)
    element: "SqlType | None" = None  # ARRAY: the element type

    @property
    def pg_name(self) -> str:
        """The name PostgreSQL's protocol reports for a result column."""
        if self.pg_alias is not None:
            return self.pg_alias
        if self.kind in UNTYPED_KINDS:
            return "text"
        if self.kind is Kind.ARRAY:
            return self.element.pg_name + "[]"
        return self.kind.value

    @property
    def display_name(self) -> str:
        """The name used in error messages: `character varying(10)`, `numeric(5,2)`."""
        if self.pg_alias is not None:
            return self.pg_alias
        if self.kind in (Kind.VARCHAR, Kind.CHAR) and self.length is not None:
            return f"{self.kind.value}({self.length})"
        if self.kind is Kind.NUMERIC and self.precision is not None:
            return f"numeric({self.precision},{self.scale or 0})"
        if self.kind is Kind.NULL:
            return "unknown"
        if self.kind is Kind.ARRAY:
            return self.element.display_name + "[]"
        return self.kind.value

    @property
    def input_name(self) -> str:
        return _INPUT_NAMES.get(self.kind, self.kind.value)

    @property
    def base(self) -> "SqlType":
        """The type without modifiers (what an expression over this column has)."""
        return SqlType(self.kind, pg_alias=self.pg_alias) if self.kind not in (Kind.CHAR, Kind.ARRAY) else self

    def to_json(self) -> dict:
        doc: dict = {"kind": self.kind.value, "length": self.length}
        if self.precision is not None:
            doc["precision"] = self.precision
            doc["scale"] = self.scale
        return doc

    @staticmethod
    def from_json(data: dict) -> "SqlType":
        return SqlType(Kind(data["kind"]), data.get("length"), data.get("precision"), data.get("scale"))


SMALLINT = SqlType(Kind.SMALLINT)
INTEGER = SqlType(Kind.INTEGER)
BIGINT = SqlType(Kind.BIGINT)
NUMERIC = SqlType(Kind.NUMERIC)
REAL = SqlType(Kind.REAL)
DOUBLE = SqlType(Kind.DOUBLE)
TEXT = SqlType(Kind.TEXT)
BOOLEAN = SqlType(Kind.BOOLEAN)
DATE = SqlType(Kind.DATE)
TIMESTAMP = SqlType(Kind.TIMESTAMP)
TIMESTAMPTZ = SqlType(Kind.TIMESTAMPTZ)
UUID = SqlType(Kind.UUID)
BYTEA = SqlType(Kind.BYTEA)
INTERVAL = SqlType(Kind.INTERVAL)
UNKNOWN = SqlType(Kind.UNKNOWN)
NULL = SqlType(Kind.NULL)
# Catalog types (pg_catalog relations and functions), computed as the kind they wrap.
OID = SqlType(Kind.BIGINT, pg_alias="oid")
REGCLASS = SqlType(Kind.BIGINT, pg_alias="regclass")
REGTYPE = SqlType(Kind.BIGINT, pg_alias="regtype")
REGNAMESPACE = SqlType(Kind.BIGINT, pg_alias="regnamespace")
REGPROC = SqlType(Kind.BIGINT, pg_alias="regproc")
NAME = SqlType(Kind.TEXT, pg_alias="name")
CHAR1 = SqlType(Kind.TEXT, pg_alias='"char"')
INT2VECTOR = SqlType(Kind.ARRAY, pg_alias="int2vector", element=SMALLINT)
OIDVECTOR = SqlType(Kind.ARRAY, pg_alias="oidvector", element=OID)
TEXT_ARRAY = SqlType(Kind.ARRAY, element=TEXT)
NAME_ARRAY = SqlType(Kind.ARRAY, element=NAME)
OID_ARRAY = SqlType(Kind.ARRAY, element=OID)
SMALLINT_ARRAY = SqlType(Kind.ARRAY, element=SMALLINT)
CHAR1_ARRAY = SqlType(Kind.ARRAY, element=CHAR1)

# sqlglot DataType names -> our types (None: a known name we refuse with 0A000).
_TYPE_NAMES = {
    "INT": INTEGER, "INTEGER": INTEGER, "INT4": INTEGER,
    "BIGINT": BIGINT, "INT8": BIGINT,
    "SMALLINT": SMALLINT, "INT2": SMALLINT,
    "DECIMAL": NUMERIC, "NUMERIC": NUMERIC,
    "TEXT": TEXT,
    "VARCHAR": SqlType(Kind.VARCHAR), "CHARACTER VARYING": SqlType(Kind.VARCHAR),
    "CHAR": SqlType(Kind.CHAR), "BPCHAR": SqlType(Kind.CHAR), "CHARACTER": SqlType(Kind.CHAR),
    "BOOLEAN": BOOLEAN, "BOOL": BOOLEAN,
    "DOUBLE": DOUBLE, "DOUBLE PRECISION": DOUBLE, "FLOAT8": DOUBLE,
    "FLOAT": REAL, "REAL": REAL, "FLOAT4": REAL,
    "DATE": DATE, "TIMESTAMP": TIMESTAMP, "TIMESTAMPTZ": TIMESTAMPTZ,
    "UUID": UUID, "VARBINARY": BYTEA, "BYTEA": BYTEA, "INTERVAL": INTERVAL,
}


@functools.lru_cache(maxsize=256)
def type_from_name(name: str) -> SqlType:
    """The type a PostgreSQL type name (int4, text, timestamptz, ...) stands for; SqlError if none."""
    from sqlglot import exp
    from sqlglot.errors import ParseError
    try:
        data_type = exp.DataType.build(name, dialect="postgres")
    except ParseError:
        raise SqlError(errors.UNDEFINED_OBJECT, f'type "{name}" does not exist') from None
    return type_from_sqlglot(data_type)


def type_from_sqlglot(data_type) -> SqlType:
    """Maps a sqlglot DataType node to a SqlType; 0A000 for anything else."""
    name = data_type.this.name if hasattr(data_type.this, "name") else str(data_type.this)
    sql_type = _TYPE_NAMES.get(name)
    if sql_type is None and name == "USERDEFINED":
        kind_node = data_type.args.get("kind")
        shown = kind_node.name.lower() if kind_node is not None else data_type.sql(dialect="postgres").lower()
        raise SqlError(errors.UNDEFINED_OBJECT, f'type "{shown}" does not exist')
    if sql_type is None:
        shown = data_type.sql(dialect="postgres").lower()
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"type {shown} is not supported")
    params = [_type_param(p) for p in data_type.expressions]
    kind = sql_type.kind
    if kind in (Kind.VARCHAR, Kind.CHAR):
        if not params:
            return SqlType(kind, 1 if kind is Kind.CHAR and name != "BPCHAR" else None)
        if len(params) > 1:
            raise SqlError(errors.SYNTAX_ERROR, f"invalid type modifier for {kind.value}")
        if params[0] < 1:
            word = "varchar" if kind is Kind.VARCHAR else "char"
            raise SqlError(errors.INVALID_PARAMETER_VALUE, f"length for type {word} must be at least 1")
        if params[0] > 10_485_760:
            word = "varchar" if kind is Kind.VARCHAR else "char"
            raise SqlError(errors.INVALID_PARAMETER_VALUE, f"length for type {word} cannot exceed 10485760")
        return SqlType(kind, params[0])
    if kind is Kind.NUMERIC:
        if not params:
            return NUMERIC
        precision = params[0]
        scale = params[1] if len(params) > 1 else 0
        if len(params) > 2:
            raise SqlError(errors.SYNTAX_ERROR, "invalid NUMERIC type modifier")
        if not 1 <= precision <= NUMERIC_PRECISION_MAX:
            raise SqlError(errors.INVALID_PARAMETER_VALUE,
                           f"NUMERIC precision {precision} must be between 1 and {NUMERIC_PRECISION_MAX}")
        if not 0 <= scale <= precision:
            raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                           f"NUMERIC scale {scale} outside 0..precision is not supported")
        return SqlType(Kind.NUMERIC, None, precision, scale)
    if kind is Kind.INTERVAL and (params or data_type.args.get("kind") is not None):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "interval field restrictions and precision are not supported")
    if params:
        if kind in (Kind.TIMESTAMP, Kind.TIMESTAMPTZ) and params[0] == 6:
            return sql_type
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"type modifiers on {sql_type.pg_name} are not supported")
    return sql_type


def _type_param(param) -> int:
    node = param.this if hasattr(param, "this") else param
    text = node.this if hasattr(node, "this") else str(node)
    try:
        return int(str(text))
    except ValueError:
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"type modifier {text} is not supported") from None


# --- categories and common types -------------------------------------------------------
def category(kind: Kind) -> str:
    if kind in NUMERIC_KINDS:
        return "numeric"
    if kind in TEXT_KINDS:
        return "string"
    if kind in DATETIME_KINDS:
        return "datetime"
    return kind.value


def numeric_result(left: SqlType, right: SqlType) -> SqlType:
    """The type of a binary arithmetic/comparison over two numeric types, as PostgreSQL resolves it."""
    kinds = (left.kind, right.kind)
    if Kind.DOUBLE in kinds:
        return DOUBLE
    if Kind.REAL in kinds:
        return REAL if kinds == (Kind.REAL, Kind.REAL) else DOUBLE
    if Kind.NUMERIC in kinds:
        return NUMERIC
    return SqlType(max(kinds, key=lambda k: _INT_WIDTH[k]))


def datetime_result(left: SqlType, right: SqlType) -> SqlType:
    kinds = (left.kind, right.kind)
    if Kind.TIMESTAMPTZ in kinds:
        return TIMESTAMPTZ
    if Kind.TIMESTAMP in kinds:
        return TIMESTAMP
    return DATE


def common_type(sql_types: list[SqlType], construct: str) -> SqlType:
    """The type UNION/CASE/COALESCE/IN resolve their branches to (untyped ones follow)."""
    typed = [t for t in sql_types if t.kind not in UNTYPED_KINDS]
    if not typed:
        return TEXT
    categories = {category(t.kind) for t in typed}
    if len(categories) > 1:
        first = typed[0]
        other = next(t for t in typed if category(t.kind) != category(first.kind))
        raise SqlError(errors.DATATYPE_MISMATCH,
                       f"{construct} types {first.display_name} and {other.display_name} cannot be matched")
    result = typed[0].base
    for sql_type in typed[1:]:
        kind = category(sql_type.kind)
        if kind == "numeric":
            result = numeric_result(result, sql_type)
        elif kind == "string":
            if result.kind != sql_type.kind or result.kind is not Kind.CHAR:
                result = TEXT
        elif kind == "datetime":
            result = datetime_result(result, sql_type)
    if result.kind is Kind.VARCHAR:
        return TEXT
    return result


def convert(value: Any, source: SqlType, target: SqlType) -> Any:
    """An implicit, lossless-or-PostgreSQL-equivalent conversion within one category."""
    if value is None or source.kind == target.kind:
        return value
    dst = target.kind
    if dst is Kind.NUMERIC:
        return decimal.Decimal(value) if isinstance(value, int) else value
    if dst in FLOAT_KINDS:
        return float(value)
    if dst in INT_KINDS:
        return value
    if dst is Kind.TEXT:
        return value.rstrip(" ") if source.kind is Kind.CHAR else value
    if dst is Kind.TIMESTAMP and source.kind is Kind.DATE:
        return datetime.datetime(value.year, value.month, value.day)
    if dst is Kind.TIMESTAMPTZ:
        if source.kind is Kind.DATE:
            value = datetime.datetime(value.year, value.month, value.day)
        return value.replace(tzinfo=datetime.timezone.utc)
    return value


# --- literal parsing (PostgreSQL input functions) --------------------------------
_INT_TEXT = re.compile(r"^\s*[+-]?\d+\s*$")
_NUMERIC_TEXT = re.compile(r"^\s*[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?)\s*$")
_FLOAT_SPECIAL = {"nan": math.nan, "infinity": math.inf, "+infinity": math.inf, "-infinity": -math.inf,
                  "inf": math.inf, "+inf": math.inf, "-inf": -math.inf}
_BOOL_TRUE = ("true", "yes", "on", "1")
_BOOL_FALSE = ("false", "no", "off", "0")
_DATE_TEXT = re.compile(r"^\s*(\d{4,})-(\d{1,2})-(\d{1,2})")
_TIME_TEXT = re.compile(r"^[T ]\s*(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?")
_ZONE_TEXT = re.compile(r"^\s*(?:(Z|UTC|GMT)|([+-])(\d{1,2})(?::?(\d{2}))?)", re.IGNORECASE)
_HEX_UUID = re.compile(r"^[0-9a-fA-F]{32}$")


def parse_text_as(text: str, target: SqlType) -> Any:
    """Converts an untyped string literal (or a text value in a cast) to `target`."""
    kind = target.kind
    if kind in INT_KINDS:
        if not _INT_TEXT.match(text):
            raise invalid_input(target, text)
        value = int(text.strip())
        low, high = INT_RANGES[kind]
        if not low <= value <= high:
            raise SqlError(errors.NUMERIC_VALUE_OUT_OF_RANGE, f'value "{text}" is out of range for type {kind.value}')
        return value
    if kind is Kind.NUMERIC:
        stripped = text.strip()
        if stripped.lower() in ("nan", "infinity", "-infinity", "+infinity", "inf", "-inf"):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"numeric value {stripped} is not supported")
        if not _NUMERIC_TEXT.match(text):
            raise invalid_input(target, text)
        return check_numeric(decimal.Decimal(stripped), target)
    if kind in FLOAT_KINDS:
        stripped = text.strip()
        special = _FLOAT_SPECIAL.get(stripped.lower())
        if special is not None:
            return special
        if not _NUMERIC_TEXT.match(text):
            raise invalid_input(target, text)
        value = float(stripped)
        if kind is Kind.REAL:
            if math.isinf(to_real(value)) or (value != 0 and to_real(value) == 0):
                raise SqlError(errors.NUMERIC_VALUE_OUT_OF_RANGE, f'"{stripped}" is out of range for type real')
            return to_real(value)
        if math.isinf(value) or (value == 0 and _nonzero_digits(stripped)):
            raise SqlError(errors.NUMERIC_VALUE_OUT_OF_RANGE,
                           f'"{stripped}" is out of range for type double precision')
        return value
    if kind is Kind.BOOLEAN:
        word = text.strip().lower()
        if word and (word in _BOOL_TRUE or any(w.startswith(word) for w in ("true", "yes"))
                     or (len(word) >= 2 and "on".startswith(word))):
            return True
        if word and (word in _BOOL_FALSE or any(w.startswith(word) for w in ("false", "no"))
                     or (len(word) >= 2 and "off".startswith(word))):
            return False
        raise invalid_input(target, text)
    if kind in TEXT_KINDS:
        return check_string(text, target)
    if kind is Kind.DATE:
        return _parse_date(text, target)
    if kind in (Kind.TIMESTAMP, Kind.TIMESTAMPTZ):
        return _parse_timestamp(text, target)
    if kind is Kind.UUID:
        return _parse_uuid(text, target)
    if kind is Kind.BYTEA:
        return _parse_bytea(text)
    if kind is Kind.INTERVAL:
        return interval_mod.parse_interval(text)
    if kind in UNTYPED_KINDS:
        return text
    if kind is Kind.ARRAY:
        return _parse_catalog_array(text, target)
    raise AssertionError(f"no input function for {target}")


def _parse_catalog_array(text: str, target: SqlType) -> "ArrayValue":
    """'{a,b}' (arrays) or '1 2' (int2vector, oidvector): the arrays' input forms, each element
    read by its element type's input function; quoting is not supported."""
    stripped = text.strip()
    if stripped.startswith("{") and stripped.endswith("}"):
        items = [item.strip() for item in stripped[1:-1].split(",")] if stripped[1:-1].strip() else []
    elif target.pg_alias in ("int2vector", "oidvector"):
        items = stripped.split()
    else:
        raise invalid_input(target, text)
    if any('"' in item for item in items):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "quoted array elements are not supported")
    element = target.element or TEXT
    return ArrayValue([None if item.upper() == "NULL" else parse_text_as(item, element) for item in items], element)


def _nonzero_digits(text: str) -> bool:
    mantissa = re.split(r"[eE]", text)[0]
    return any(c in "123456789" for c in mantissa)


def invalid_input(target: SqlType, text: str) -> SqlError:
    sqlstate = errors.INVALID_DATETIME_FORMAT if target.kind in DATETIME_KINDS else errors.INVALID_TEXT_REPRESENTATION
    return SqlError(sqlstate, f'invalid input syntax for type {target.input_name}: "{text}"')


def _parse_date(text: str, target: SqlType) -> datetime.date:
    match = _DATE_TEXT.match(text)
    if match is None or text[match.end():].strip():
        if text.strip().lower() in ("infinity", "-infinity", "epoch", "today", "now", "tomorrow", "yesterday"):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, f'special date value "{text.strip()}" is not supported')
        raise invalid_input(target, text)
    return _make_date(match, text)


def _make_date(match: re.Match, text: str) -> datetime.date:
    year, month, day = (int(g) for g in match.groups()[:3])
    try:
        return datetime.date(year, month, day)
    except ValueError:
        raise SqlError(errors.DATETIME_FIELD_OVERFLOW, f'date/time field value out of range: "{text}"') from None


def _parse_timestamp(text: str, target: SqlType) -> datetime.datetime:
    match = _DATE_TEXT.match(text)
    if match is None:
        if text.strip().lower() in ("infinity", "-infinity", "epoch", "now", "today", "tomorrow", "yesterday"):
            raise SqlError(errors.FEATURE_NOT_SUPPORTED, f'special timestamp value "{text.strip()}" is not supported')
        raise invalid_input(target, text)
    day = _make_date(match, text)
    rest = text[match.end():]
    hour = minute = second = micro = 0
    time_match = _TIME_TEXT.match(rest)
    if time_match is not None:
        hour, minute = int(time_match.group(1)), int(time_match.group(2))
        second = int(time_match.group(3) or 0)
        fraction = time_match.group(4) or ""
        micro = int(decimal.Decimal("0." + fraction).quantize(decimal.Decimal("0.000001"),
                                                              rounding=decimal.ROUND_HALF_EVEN) * 1_000_000) \
            if fraction else 0
        rest = rest[time_match.end():]
    offset = None
    zone = _ZONE_TEXT.match(rest) if rest.strip() else None
    if zone is not None:
        if zone.group(1):
            offset = 0
        else:
            offset = int(zone.group(3)) * 60 + int(zone.group(4) or 0)
            if zone.group(2) == "-":
                offset = -offset
        rest = rest[zone.end():]
    if rest.strip():
        raise invalid_input(target, text)
    if hour > 24 or minute > 59 or second > 60 or (hour == 24 and (minute or second or micro)):
        raise SqlError(errors.DATETIME_FIELD_OVERFLOW, f'date/time field value out of range: "{text}"')
    value = datetime.datetime(day.year, day.month, day.day) + datetime.timedelta(
        hours=hour, minutes=minute, seconds=second, microseconds=micro)
    if target.kind is Kind.TIMESTAMP:
        return value  # PostgreSQL ignores a zone in timestamp-without-time-zone input
    value -= datetime.timedelta(minutes=offset or 0)
    return value.replace(tzinfo=datetime.timezone.utc)


def _parse_uuid(text: str, target: SqlType) -> uuid.UUID:
    stripped = text.strip()
    body = stripped[1:-1] if stripped.startswith("{") and stripped.endswith("}") else stripped
    compact = body.replace("-", "")
    groups_ok = re.fullmatch(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}", body) \
        or re.fullmatch(r"([0-9a-fA-F]{4}-?){7}[0-9a-fA-F]{4}", body)
    if not groups_ok or not _HEX_UUID.match(compact):
        raise invalid_input(target, text)
    return uuid.UUID(hex=compact)


def _parse_bytea(text: str) -> bytes:
    if text.startswith("\\x"):
        digits = re.sub(r"\s", "", text[2:])
        if len(digits) % 2 or not re.fullmatch(r"[0-9a-fA-F]*", digits):
            raise SqlError(errors.INVALID_TEXT_REPRESENTATION, "invalid hexadecimal data: odd number of digits"
                           if len(digits) % 2 else f'invalid hexadecimal digit: "{_first_bad_hex(digits)}"')
        return bytes.fromhex(digits)
    out = bytearray()
    index = 0
    while index < len(text):
        char = text[index]
        if char != "\\":
            out += char.encode("utf-8")
            index += 1
        elif text[index + 1:index + 2] == "\\":
            out.append(0x5C)
            index += 2
        elif re.fullmatch(r"[0-3][0-7][0-7]", text[index + 1:index + 4]):
            out.append(int(text[index + 1:index + 4], 8))
            index += 4
        else:
            raise SqlError(errors.INVALID_TEXT_REPRESENTATION, "invalid input syntax for type bytea")
    return bytes(out)


def _first_bad_hex(digits: str) -> str:
    return next((c for c in digits if c not in "0123456789abcdefABCDEF"), "")


# --- range and length checks ----------------------------------------------------------
def check_int_range(value: int, target: SqlType) -> int:
    low, high = INT_RANGES[target.kind]
    if not low <= value <= high:
        raise SqlError(errors.NUMERIC_VALUE_OUT_OF_RANGE, f"{target.kind.value} out of range")
    return value


def check_numeric(value: decimal.Decimal, target: SqlType) -> decimal.Decimal:
    """Rounds to numeric(p,s)'s scale; 22003 when the integer digits do not fit."""
    if target.precision is None:
        return value
    scale = target.scale or 0
    rounded = value.quantize(decimal.Decimal(1).scaleb(-scale), rounding=decimal.ROUND_HALF_UP,
                             context=DECIMAL_CONTEXT)
    if not rounded.is_zero() and rounded.adjusted() >= target.precision - scale:
        raise SqlError(errors.NUMERIC_VALUE_OUT_OF_RANGE, "numeric field overflow",
                       detail=f"A field with precision {target.precision}, scale {scale} must round to an "
                              f"absolute value less than {'1' if target.precision == scale else '10^' + str(target.precision - scale)}.")
    return rounded


def check_string(value: str, target: SqlType) -> str:
    """varchar(n)/char(n): longer values fail (22001) unless only spaces overflow; char pads."""
    if target.kind is Kind.TEXT or target.length is None:
        return value
    if len(value) > target.length:
        if value[target.length:].strip(" ") != "":
            raise SqlError(errors.STRING_DATA_RIGHT_TRUNCATION,
                           f"value too long for type {target.kind.value}({target.length})")
        value = value[:target.length]
    if target.kind is Kind.CHAR:
        return value.ljust(target.length)
    return value


def check_varchar(value: str, target: SqlType) -> str:
    return check_string(value, target)


def to_real(value: float) -> float:
    """Rounds a double to the nearest 32-bit float (inf when out of range)."""
    if math.isnan(value) or math.isinf(value):
        return value
    try:
        return struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:
        return math.copysign(math.inf, value)


def round_half_away(value: float) -> int:
    return int(math.floor(value + 0.5)) if value >= 0 else -int(math.floor(-value + 0.5))


def float_to_int(value: float, target: SqlType) -> int:
    if math.isnan(value) or math.isinf(value):
        raise SqlError(errors.NUMERIC_VALUE_OUT_OF_RANGE, f"{target.kind.value} out of range")
    rounded = int(round(value))  # PostgreSQL's float->int cast uses rint(): half to even
    return check_int_range(rounded, target)


double_to_int = float_to_int


def numeric_to_int(value: decimal.Decimal, target: SqlType) -> int:
    return check_int_range(int(value.to_integral_value(rounding=decimal.ROUND_HALF_UP)), target)


def float_to_numeric(value: float, source: SqlType, target: SqlType) -> decimal.Decimal:
    if math.isnan(value) or math.isinf(value):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "numeric NaN and Infinity are not supported")
    digits = 6 if source.kind is Kind.REAL else 15  # FLT_DIG / DBL_DIG, as float4/8_numeric
    return check_numeric(decimal.Decimal(f"{value:.{digits}g}"), target)


# --- output: the text PostgreSQL prints ------------------------------------------------
def format_value(value: Any, sql_type: SqlType | None = None) -> str:
    """The text output of a value (used by casts to text, ||, and results sent to clients)."""
    if isinstance(value, list):  # arrays (ArrayValue, or a catalog relation's plain list)
        return format_array(value, sql_type)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if sql_type is not None and sql_type.kind is Kind.REAL:
            return format_real(value)
        return format_double(value)
    if isinstance(value, decimal.Decimal):
        return format_numeric(value)
    if isinstance(value, datetime.datetime):
        return format_timestamp(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    if isinstance(value, interval_mod.Interval):
        return interval_mod.format_interval(value)
    return str(value)


class ArrayValue(list):
    """An array value: its elements (a list), and their type for the text output when no
    SqlType is at hand. Equal to, and hashed as, the sequence of its elements (NULL elements
    equal, as PostgreSQL groups); never mutated once built. Plain lists (catalog relations)
    are arrays too."""

    def __init__(self, values=(), element: "SqlType | None" = None):
        super().__init__(values)
        self.element = element

    def __hash__(self):
        return hash(tuple(self))


def format_array(values: list, sql_type: "SqlType | None" = None) -> str:
    """PostgreSQL's array_out: `{1,2,NULL}`, elements quoted when empty, NULL-like, or holding
    braces, quotes, commas, backslashes or white space; int2vector/oidvector space-separated."""
    if sql_type is not None and sql_type.pg_alias in ("int2vector", "oidvector"):
        return " ".join(str(value) for value in values)
    element = sql_type.element if sql_type is not None and sql_type.kind is Kind.ARRAY else None
    element = element or getattr(values, "element", None)
    parts = []
    for value in values:
        if value is None:
            parts.append("NULL")
            continue
        if isinstance(value, bool):
            text = "t" if value else "f"  # boolout, not the cast to text
        else:
            text = format_value(value, element)
        if text == "" or text.upper() == "NULL" or any(c in '{},"\\ \t\n\r\v\f' for c in text):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        parts.append(text)
    return "{" + ",".join(parts) + "}"


def format_numeric(value: decimal.Decimal) -> str:
    if value.is_zero():
        value = abs(value)  # numeric has no negative zero
    return format(value, "f")


def format_timestamp(value: datetime.datetime) -> str:
    text = value.strftime("%Y-%m-%d %H:%M:%S")
    if value.year < 1000:
        text = f"{value.year:04d}" + text[text.index("-"):]
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    if value.tzinfo is not None:
        text += "+00"
    return text


def format_double(value: float) -> str:
    """float8out (shortest exact digits), one implementation for engine, wire and qsql."""
    return pgtext.format_float(value)


def format_real(value: float) -> str:
    """float4out: the shortest digits that read back as the same 32-bit value."""
    return pgtext.format_float(value, single_precision=True)


# --- assignment (INSERT / UPDATE) and explicit casts ------------------------------
def assign(value: Any, source: SqlType, target: SqlType, column_name: str) -> Any:
    """The value stored when an expression of type `source` is assigned to a column of `target`.

    Follows PostgreSQL's assignment casts: unknown literals go through the input
    function, numbers convert among themselves (with range checks), anything converts
    to a string type, and everything else is 42804.
    """
    src, dst = source.kind, target.kind
    if value is None:
        return None
    if src is Kind.UNKNOWN:
        return parse_text_as(value, target)
    if dst in TEXT_KINDS:
        return check_string(value if src in TEXT_KINDS else format_value(value, source), target)
    if category(src) == category(dst) and category(src) in ("numeric", "datetime"):
        return cast(value, source, target)
    if src == dst:
        return value
    raise SqlError(
        errors.DATATYPE_MISMATCH,
        f'column "{column_name}" is of type {target.display_name} but expression is of type {source.display_name}',
        hint="You will need to rewrite or cast the expression.",
    )


def can_assign(source: SqlType, target: SqlType) -> bool:
    src, dst = source.kind, target.kind
    if src in UNTYPED_KINDS or dst in TEXT_KINDS or src == dst:
        return True
    return category(src) == category(dst) and category(src) in ("numeric", "datetime")


def cast(value: Any, source: SqlType, target: SqlType) -> Any:
    """An explicit CAST(value AS target) / value::target."""
    if value is None:
        return None
    src, dst = source.kind, target.kind
    if (src is Kind.UNKNOWN and dst not in TEXT_KINDS) or (src in TEXT_KINDS and dst not in TEXT_KINDS):
        return parse_text_as(value.rstrip(" ") if src is Kind.CHAR else value, target)
    if dst in TEXT_KINDS:
        text = value if src in TEXT_KINDS else format_value(value, source)
        if src is Kind.CHAR and dst is not Kind.CHAR:
            text = text.rstrip(" ")
        if target.length is not None:
            text = text[:target.length]  # an explicit cast truncates silently, as PostgreSQL
            if dst is Kind.CHAR:
                text = text.ljust(target.length)
        return text
    if dst in INT_KINDS:
        if src in INT_KINDS:
            return check_int_range(value, target)
        if src in FLOAT_KINDS:
            return float_to_int(value, target)
        if src is Kind.NUMERIC:
            return numeric_to_int(value, target)
        if src is Kind.BOOLEAN and dst is Kind.INTEGER:
            return 1 if value else 0
    if dst is Kind.NUMERIC:
        if src in INT_KINDS:
            return check_numeric(decimal.Decimal(value), target)
        if src is Kind.NUMERIC:
            return check_numeric(value, target)
        if src in FLOAT_KINDS:
            return float_to_numeric(value, source, target)
    if dst in FLOAT_KINDS and src in NUMERIC_KINDS:
        result = float(value)
        if dst is Kind.REAL:
            result = to_real(result)
            if math.isinf(result) and not math.isinf(float(value)):
                raise SqlError(errors.NUMERIC_VALUE_OUT_OF_RANGE, "value out of range: overflow")
        return result
    if dst is Kind.BOOLEAN and src is Kind.INTEGER:
        return value != 0
    if src == dst:
        return value
    if dst in DATETIME_KINDS and src in DATETIME_KINDS:
        if dst is Kind.DATE:
            return value.date() if isinstance(value, datetime.datetime) else value
        if dst is Kind.TIMESTAMP and src is Kind.TIMESTAMPTZ:
            return value.replace(tzinfo=None)
        return convert(value, source, target)
    raise SqlError(errors.CANNOT_COERCE, f"cannot cast type {source.display_name} to {target.display_name}")


def sort_by_keys(entries: list, order: Sequence[tuple[bool, bool]], field: int | None = None,
                 columns: Sequence[int] | None = None) -> list:
    """`entries` sorted by ORDER BY keys: key i is entry[columns[i]] (columns default: i; with
    `field`, of entry[field]), order[i] its (descending, nulls_first). One stable sort per key,
    the last key first, so earlier keys decide and ties keep their order; NULLs go first or last
    as asked."""
    for index in range(len(order) - 1, -1, -1):
        descending, nulls_first = order[index]
        null_rank = 1 if (not nulls_first) != descending else 0
        position = index if columns is None else columns[index]

        def key(entry, position=position, null_rank=null_rank):
            value = entry[position] if field is None else entry[field][position]
            if value is None:
                return (null_rank, 0)
            return (1 - null_rank, sort_key(value))
        entries = sorted(entries, key=key, reverse=descending)
    return entries


def sort_key(value: Any) -> Any:
    """A Python sort key that orders non-NULL values of one type as PostgreSQL does (NaN last)."""
    if isinstance(value, list):  # arrays: element by element, a NULL element after any value (array_cmp)
        return [(1, 0) if item is None else (0, sort_key(item)) for item in value]
    if isinstance(value, float):
        return (1, 0.0) if math.isnan(value) else (0, value)
    return value  # str: code point order is UTF-8 byte order (C collation)
