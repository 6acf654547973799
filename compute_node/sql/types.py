"""SQL types, literal parsing and the coercions PostgreSQL applies.

Values travel as plain Python objects: int (smallint/integer/bigint), float
(double precision; REAL is stored as double), str (text, varchar) and bool; NULL
is None. Two pseudo-types describe literals before context decides their type:
UNKNOWN (a quoted string, which PostgreSQL coerces to the type it meets) and NULL.
"""
from __future__ import annotations

import dataclasses
import enum
import math
import re
from typing import Any

from quorumdb import errors
from quorumdb.errors import SqlError


class Kind(enum.Enum):
    SMALLINT = "smallint"
    INTEGER = "integer"
    BIGINT = "bigint"
    DOUBLE = "double precision"
    TEXT = "text"
    VARCHAR = "character varying"
    BOOLEAN = "boolean"
    UNKNOWN = "unknown"  # an untyped string literal
    NULL = "null"        # an untyped NULL literal


INT_RANGES = {
    Kind.SMALLINT: (-(2**15), 2**15 - 1),
    Kind.INTEGER: (-(2**31), 2**31 - 1),
    Kind.BIGINT: (-(2**63), 2**63 - 1),
}
INT_KINDS = (Kind.SMALLINT, Kind.INTEGER, Kind.BIGINT)
NUMERIC_KINDS = INT_KINDS + (Kind.DOUBLE,)
TEXT_KINDS = (Kind.TEXT, Kind.VARCHAR)


@dataclasses.dataclass(frozen=True)
class SqlType:
    kind: Kind
    length: int | None = None  # varchar(n)

    @property
    def pg_name(self) -> str:
        """The name PostgreSQL's protocol reports for a result column."""
        if self.kind in (Kind.UNKNOWN, Kind.NULL):
            return "text"
        return self.kind.value

    @property
    def display_name(self) -> str:
        """The name used in error messages: `character varying(10)`."""
        if self.kind is Kind.VARCHAR and self.length is not None:
            return f"character varying({self.length})"
        if self.kind is Kind.NULL:
            return "unknown"
        return self.kind.value

    def to_json(self) -> dict:
        return {"kind": self.kind.value, "length": self.length}

    @staticmethod
    def from_json(data: dict) -> "SqlType":
        return SqlType(Kind(data["kind"]), data.get("length"))


SMALLINT = SqlType(Kind.SMALLINT)
INTEGER = SqlType(Kind.INTEGER)
BIGINT = SqlType(Kind.BIGINT)
DOUBLE = SqlType(Kind.DOUBLE)
TEXT = SqlType(Kind.TEXT)
BOOLEAN = SqlType(Kind.BOOLEAN)
UNKNOWN = SqlType(Kind.UNKNOWN)
NULL = SqlType(Kind.NULL)

# sqlglot DataType names -> our types.
_TYPE_NAMES = {
    "INT": INTEGER, "INTEGER": INTEGER, "INT4": INTEGER, "SERIAL": None,
    "BIGINT": BIGINT, "INT8": BIGINT,
    "SMALLINT": SMALLINT, "INT2": SMALLINT,
    "TEXT": TEXT,
    "VARCHAR": SqlType(Kind.VARCHAR), "CHARACTER VARYING": SqlType(Kind.VARCHAR),
    "BOOLEAN": BOOLEAN, "BOOL": BOOLEAN,
    "DOUBLE": DOUBLE, "DOUBLE PRECISION": DOUBLE, "FLOAT8": DOUBLE, "FLOAT": DOUBLE,
    "REAL": DOUBLE, "FLOAT4": DOUBLE,
}


def type_from_sqlglot(data_type) -> SqlType:
    """Maps a sqlglot DataType node to a SqlType; 0A000 for anything else."""
    name = data_type.this.name if hasattr(data_type.this, "name") else str(data_type.this)
    sql_type = _TYPE_NAMES.get(name)
    if sql_type is None:
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"type {data_type.sql(dialect='postgres').lower()} is not supported")
    if sql_type.kind is Kind.VARCHAR:
        params = data_type.expressions
        if not params:
            return SqlType(Kind.VARCHAR, None)
        length = int(params[0].this.this if hasattr(params[0].this, "this") else params[0].name)
        if length < 1:
            raise SqlError("22023", "length for type varchar must be at least 1")
        return SqlType(Kind.VARCHAR, length)
    if data_type.expressions:
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"type modifiers on {sql_type.pg_name} are not supported")
    return sql_type


# --- literal parsing (PostgreSQL input functions) --------------------------------
_INT_TEXT = re.compile(r"^\s*[+-]?\d+\s*$")
_FLOAT_TEXT = re.compile(r"^\s*[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?)\s*$")
_FLOAT_SPECIAL = {"nan": math.nan, "infinity": math.inf, "+infinity": math.inf, "-infinity": -math.inf,
                  "inf": math.inf, "+inf": math.inf, "-inf": -math.inf}
_BOOL_TRUE = ("true", "yes", "on", "1")
_BOOL_FALSE = ("false", "no", "off", "0")


def parse_text_as(text: str, target: SqlType) -> Any:
    """Converts an untyped string literal (or a text value in a cast) to `target`."""
    kind = target.kind
    if kind in INT_KINDS:
        if not _INT_TEXT.match(text):
            raise invalid_input(target, text)
        return check_int_range(int(text.strip()), target)
    if kind is Kind.DOUBLE:
        stripped = text.strip()
        special = _FLOAT_SPECIAL.get(stripped.lower())
        if special is not None:
            return special
        if not _FLOAT_TEXT.match(text):
            raise invalid_input(target, text)
        value = float(stripped)
        if math.isinf(value):
            raise SqlError(errors.NUMERIC_VALUE_OUT_OF_RANGE,
                           f'"{stripped}" is out of range for type double precision')
        return value
    if kind is Kind.BOOLEAN:
        word = text.strip().lower()
        if word and (word in _BOOL_TRUE or (len(word) >= 1 and any(w.startswith(word) for w in ("true", "yes")))
                     or (len(word) >= 2 and "on".startswith(word))):
            return True
        if word and (word in _BOOL_FALSE or any(w.startswith(word) for w in ("false", "no"))
                     or (len(word) >= 2 and "off".startswith(word))):
            return False
        raise invalid_input(target, text)
    if kind in TEXT_KINDS:
        return check_varchar(text, target)
    if kind in (Kind.UNKNOWN, Kind.NULL):
        return text
    raise AssertionError(f"no input function for {target}")


def invalid_input(target: SqlType, text: str) -> SqlError:
    return SqlError(errors.INVALID_TEXT_REPRESENTATION,
                    f'invalid input syntax for type {target.kind.value}: "{text}"')


def check_int_range(value: int, target: SqlType) -> int:
    low, high = INT_RANGES[target.kind]
    if not low <= value <= high:
        raise SqlError(errors.NUMERIC_VALUE_OUT_OF_RANGE, f"{target.kind.value} out of range")
    return value


def check_varchar(value: str, target: SqlType) -> str:
    """Enforces varchar(n): longer values fail (22001) unless only trailing spaces overflow."""
    if target.kind is not Kind.VARCHAR or target.length is None or len(value) <= target.length:
        return value
    if value[target.length:].strip(" ") == "":
        return value[:target.length]
    raise SqlError(errors.STRING_DATA_RIGHT_TRUNCATION,
                   f"value too long for type character varying({target.length})")


def round_half_away(value: float) -> int:
    return int(math.floor(value + 0.5)) if value >= 0 else -int(math.floor(-value + 0.5))


def double_to_int(value: float, target: SqlType) -> int:
    if math.isnan(value) or math.isinf(value):
        raise SqlError(errors.NUMERIC_VALUE_OUT_OF_RANGE, f"{target.kind.value} out of range")
    return check_int_range(round_half_away(value), target)


def format_value(value: Any) -> str:
    """The text PostgreSQL prints for a value (used by casts to text and ||)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format_double(value)
    return str(value)


def format_double(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    text = repr(value)
    if text.endswith(".0"):
        text = text[:-2]
    return text


# --- assignment (INSERT / UPDATE) and explicit casts ------------------------------
def assign(value: Any, source: SqlType, target: SqlType, column_name: str) -> Any:
    """The value stored when an expression of type `source` is assigned to a column of `target`.

    Follows PostgreSQL's assignment casts: unknown literals go through the input
    function, numbers convert among themselves (with range checks), anything converts
    to text, and everything else is 42804.
    """
    if value is None:
        return None
    src, dst = source.kind, target.kind
    if src is Kind.UNKNOWN:
        return parse_text_as(value, target)
    if dst in TEXT_KINDS:
        return check_varchar(value if src in TEXT_KINDS else format_value(value), target)
    if dst in INT_KINDS and src in INT_KINDS:
        return check_int_range(value, target)
    if dst in INT_KINDS and src is Kind.DOUBLE:
        return double_to_int(value, target)
    if dst is Kind.DOUBLE and src in NUMERIC_KINDS:
        return float(value)
    if dst is Kind.BOOLEAN and src is Kind.BOOLEAN:
        return value
    raise SqlError(
        errors.DATATYPE_MISMATCH,
        f'column "{column_name}" is of type {target.display_name} but expression is of type {source.display_name}',
        hint="You will need to rewrite or cast the expression.",
    )


def cast(value: Any, source: SqlType, target: SqlType) -> Any:
    """An explicit CAST(value AS target) / value::target."""
    if value is None:
        return None
    src, dst = source.kind, target.kind
    if src in (Kind.UNKNOWN,) or (src in TEXT_KINDS and dst not in TEXT_KINDS):
        return parse_text_as(value, target)
    if dst in TEXT_KINDS:
        text = value if src in TEXT_KINDS else format_value(value)
        if dst is Kind.VARCHAR and target.length is not None:
            return text[:target.length]  # an explicit cast truncates silently, as PostgreSQL
        return text
    if dst in INT_KINDS and src in INT_KINDS:
        return check_int_range(value, target)
    if dst in INT_KINDS and src is Kind.DOUBLE:
        return double_to_int(value, target)
    if dst is Kind.DOUBLE and src in NUMERIC_KINDS:
        return float(value)
    if dst is Kind.BOOLEAN and src is Kind.BOOLEAN:
        return value
    if dst is Kind.INTEGER and src is Kind.BOOLEAN:
        return 1 if value else 0
    if dst is Kind.BOOLEAN and src is Kind.INTEGER:
        return value != 0
    raise SqlError("42846", f"cannot cast type {source.display_name} to {target.display_name}")


def sort_key(value: Any) -> Any:
    """A Python sort key that orders non-NULL values of one type as PostgreSQL does (NaN last)."""
    if isinstance(value, float):
        return (1, 0.0) if math.isnan(value) else (0, value)
    return value
