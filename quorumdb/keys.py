"""Key layout and codecs: order-preserving primary-key encoding and a compact row codec.

Theory of operation
-------------------
Storage orders keys by their bytes. SQL needs rows ordered by primary key, so a
primary-key tuple is encoded such that comparing two encodings byte by byte gives
the same answer as comparing the tuples in SQL (C collation for text):

  * every element starts with a one-byte type tag, then a body;
  * integers (smallint/integer/bigint): tag 0x20 + 8 bytes big-endian of value+2**63
    (the sign bit flipped, so negatives sort before positives);
  * doubles: tag 0x30 + the IEEE-754 bits big-endian, all bits inverted for negative
    numbers and only the sign bit flipped for positive ones; -0.0 is written as 0.0
    and every NaN as one canonical NaN, which sorts after +Infinity (PostgreSQL
    orders NaN above every number);
  * text (UTF-8) and bytes: tag 0x40/0x41, the bytes with 0x00 escaped as 0x00 0xFF,
    then the terminator 0x00 0x01. The terminator sorts below every escaped or
    ordinary byte, so "a" < "a\\0" < "ab" holds and no encoding is a prefix of another;
  * booleans: tag 0x10 (false) / 0x11 (true);
  * exact decimals (NUMERIC): tag 0x28, a sign byte (0x01 negative, 0x02 zero, 0x03
    positive), then for a positive value the decimal exponent of its first digit
    (4 bytes, biased) and its significant digits as ASCII ending in 0x00; a negative
    value writes the bitwise complement of its magnitude's encoding (so larger
    magnitudes sort first and the 0x00 end becomes 0xFF). 1.0 and 1.00 encode alike,
    as PostgreSQL compares them equal;
  * dates: tag 0x50 + 8-byte biased proleptic ordinal; timestamps without / with time
    zone: tag 0x51 / 0x52 + 8-byte biased microseconds since 0001-01-01 (UTC for the
    latter);
  * UUIDs: tag 0x60 + the 16 bytes;
  * NULL: tag 0xF0, after every other tag (PostgreSQL sorts NULL last ascending).
    Primary-key columns are never NULL; it is there for future secondary indexes.

Each element encoding is prefix-free and order-preserving, so the concatenation of
a tuple's elements orders tuples lexicographically, and every key that starts with
the encoding of a tuple prefix lies in [prefix, prefix_end(prefix)). Range scans on
leading primary-key columns use exactly that.

Key space:
  * 0x01 ...             system keys (the SQL catalog), sorting before every table;
  * 0x02 + table_id(8B)  + encoded primary key: the rows of table `table_id`;
  * 0x03 + index_id(8B)  + encoded index columns [+ encoded primary key]: secondary
    index entries, whose value is the encoded primary key of the row. A unique index
    entry whose columns hold no NULL omits the primary-key suffix, so two
    transactions inserting the same unique value write the same key and the
    adjudicator lets only the first commit.
Rows of a dropped table stay under their old table id, unreachable because the
catalog no longer names that id (garbage collection of them is not implemented).
Table and index ids at or above PRIVATE_ID_BASE come from PRIVATE_ID_COUNTER_KEY (TRUNCATE,
ALTER TABLE rewrites: compute_node/sql/bulk.py); below it from TABLE_ID_COUNTER_KEY.

Row values use a small tagged codec (`encode_row`/`decode_row`): a varint column
count, then per column a tag byte and a body (zigzag varint for integers, 8 bytes
for doubles, varint length + bytes for text and bytes; NULL and booleans are the tag
alone; NUMERIC as its text, dates as a zigzag varint day ordinal, timestamps as a
zigzag varint of microseconds, UUIDs as 16 bytes). It keeps the slot order of the
table definition; tags only ever get added, so rows written earlier still decode.
"""
from __future__ import annotations

import datetime
import decimal
import math
import struct
import uuid
from typing import Any, Sequence

# --- key space ------------------------------------------------------------------
SYSTEM_PREFIX = b"\x01"
TABLE_ROWS_PREFIX = b"\x02"
# Catalog: one key per table name, holding the table definition.
CATALOG_TABLE_PREFIX = SYSTEM_PREFIX + b"T"
# Catalog: the last table id handed out (read-modify-write, so concurrent DDL conflicts).
TABLE_ID_COUNTER_KEY = SYSTEM_PREFIX + b"N"
TABLE_ID_MAX = 2**64 - 1
INDEX_ENTRIES_PREFIX = b"\x03"
# Catalog: one key per index name, holding the name of the table that owns the index.
CATALOG_INDEX_PREFIX = SYSTEM_PREFIX + b"I"
# Catalog: the schema version, an 8-byte big-endian counter that every transaction writing a
# catalog key increments (absent = 0). A compute node's schema cache is valid for a snapshot
# exactly when this key holds the cache's version there (compute_node/sql/schema_cache.py).
SCHEMA_VERSION_KEY = SYSTEM_PREFIX + b"V"
# Catalog: one key per sequence name, holding its options (compute_node/sql/bulk.SequenceDef).
CATALOG_SEQUENCE_PREFIX = SYSTEM_PREFIX + b"S"
# The value of a sequence, by sequence id: written only by the small transactions of their own
# that reserve ranges and setval, never by a user's commit (compute_node/sql/bulk.py).
SEQUENCE_STATE_PREFIX = SYSTEM_PREFIX + b"Q"
# Ids of private keyspaces (TRUNCATE, ALTER TABLE rewrites): a second counter, advanced by a
# transaction of its own so that no two transactions ever write under the same private id even
# if one aborts. Its ids start at PRIVATE_ID_BASE, above anything TABLE_ID_COUNTER_KEY reaches.
PRIVATE_ID_COUNTER_KEY = SYSTEM_PREFIX + b"P"
PRIVATE_ID_BASE = 2**62

# --- element tags ---------------------------------------------------------------
TAG_FALSE = 0x10
TAG_TRUE = 0x11
TAG_INT = 0x20
TAG_DECIMAL = 0x28
TAG_FLOAT = 0x30
TAG_TEXT = 0x40
TAG_BYTES = 0x41
TAG_DATE = 0x50
TAG_TIMESTAMP = 0x51
TAG_TIMESTAMPTZ = 0x52
TAG_UUID = 0x60
TAG_NULL = 0xF0

INT_MIN = -(2**63)
INT_MAX = 2**63 - 1
_INT_BIAS = 2**63
_CANONICAL_NAN = struct.pack(">d", float("nan"))
_TERMINATOR = b"\x00\x01"


def catalog_table_key(table_name: str) -> bytes:
    return CATALOG_TABLE_PREFIX + encode_key_tuple((table_name,))


def catalog_sequence_key(sequence_name: str) -> bytes:
    return CATALOG_SEQUENCE_PREFIX + sequence_name.encode("utf-8")


def sequence_state_key(sequence_id: int) -> bytes:
    return SEQUENCE_STATE_PREFIX + sequence_id.to_bytes(8, "big")


def catalog_index_key(index_name: str) -> bytes:
    return CATALOG_INDEX_PREFIX + encode_key_tuple((index_name,))


def index_prefix(index_id: int) -> bytes:
    assert 0 < index_id <= TABLE_ID_MAX, index_id
    return INDEX_ENTRIES_PREFIX + index_id.to_bytes(8, "big")


_EPOCH_DATE = datetime.date(1, 1, 1)
_EPOCH = datetime.datetime(1, 1, 1)
_EPOCH_UTC = datetime.datetime(1, 1, 1, tzinfo=datetime.timezone.utc)
_DECIMAL_EXPONENT_BIAS = 2**31


def timestamp_micros(value: datetime.datetime) -> int:
    """Microseconds since 0001-01-01 (UTC for an aware value)."""
    delta = value - (_EPOCH_UTC if value.tzinfo is not None else _EPOCH)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def timestamp_from_micros(micros: int, aware: bool) -> datetime.datetime:
    return (_EPOCH_UTC if aware else _EPOCH) + datetime.timedelta(microseconds=micros)


def table_prefix(table_id: int) -> bytes:
    assert 0 < table_id <= TABLE_ID_MAX, table_id
    return TABLE_ROWS_PREFIX + table_id.to_bytes(8, "big")


def row_key(table_id: int, primary_key: Sequence[Any]) -> bytes:
    return table_prefix(table_id) + encode_key_tuple(primary_key)


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key that starts with `prefix` (None: no bound)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


# --- primary-key encoding -------------------------------------------------------
def encode_key_tuple(values: Sequence[Any]) -> bytes:
    return b"".join(encode_key_element(value) for value in values)


def encode_key_element(value: Any) -> bytes:
    if value is None:
        return bytes([TAG_NULL])
    if isinstance(value, bool):
        return bytes([TAG_TRUE if value else TAG_FALSE])
    if isinstance(value, int):
        assert INT_MIN <= value <= INT_MAX, value
        return bytes([TAG_INT]) + (value + _INT_BIAS).to_bytes(8, "big")
    if isinstance(value, float):
        return bytes([TAG_FLOAT]) + _float_body(value)
    if isinstance(value, decimal.Decimal):
        return bytes([TAG_DECIMAL]) + _decimal_body(value)
    if isinstance(value, datetime.datetime):  # before date: datetime is a date subclass
        tag = TAG_TIMESTAMPTZ if value.tzinfo is not None else TAG_TIMESTAMP
        return bytes([tag]) + (timestamp_micros(value) + _INT_BIAS).to_bytes(8, "big")
    if isinstance(value, datetime.date):
        return bytes([TAG_DATE]) + (value.toordinal() + _INT_BIAS).to_bytes(8, "big")
    if isinstance(value, uuid.UUID):
        return bytes([TAG_UUID]) + value.bytes
    if isinstance(value, str):
        return bytes([TAG_TEXT]) + _escape(value.encode("utf-8"))
    if isinstance(value, (bytes, bytearray)):
        return bytes([TAG_BYTES]) + _escape(bytes(value))
    raise TypeError(f"cannot encode {type(value).__name__} in a key")


def _float_body(value: float) -> bytes:
    if math.isnan(value):
        raw = _CANONICAL_NAN
    else:
        raw = struct.pack(">d", value + 0.0)  # -0.0 + 0.0 == 0.0
    if raw[0] & 0x80:
        return bytes(b ^ 0xFF for b in raw)
    return bytes([raw[0] ^ 0x80]) + raw[1:]


def _float_from_body(body: bytes) -> float:
    if body[0] & 0x80:
        raw = bytes([body[0] ^ 0x80]) + body[1:]
    else:
        raw = bytes(b ^ 0xFF for b in body)
    return struct.unpack(">d", raw)[0]


def _decimal_body(value: decimal.Decimal) -> bytes:
    assert value.is_finite(), value
    if value.is_zero():
        return b"\x02"
    sign, digits, _ = value.as_tuple()
    significant = "".join(map(str, digits)).rstrip("0")
    magnitude = (value.adjusted() + _DECIMAL_EXPONENT_BIAS).to_bytes(4, "big") + significant.encode() + b"\x00"
    if sign:
        return b"\x01" + bytes(b ^ 0xFF for b in magnitude)
    return b"\x03" + magnitude


def _decimal_from_body(data: bytes, position: int) -> tuple[decimal.Decimal, int]:
    sign = data[position]
    position += 1
    if sign == 0x02:
        return decimal.Decimal(0), position
    end = data.index(b"\xff" if sign == 0x01 else b"\x00", position + 4)
    raw = data[position:end + 1]
    if sign == 0x01:
        raw = bytes(b ^ 0xFF for b in raw)
    exponent = int.from_bytes(raw[:4], "big") - _DECIMAL_EXPONENT_BIAS
    digits = raw[4:-1].decode()
    value = decimal.Decimal(f"{'-' if sign == 0x01 else ''}{digits[0]}.{digits[1:] or '0'}E{exponent}")
    return value, end + 1


def _escape(data: bytes) -> bytes:
    return data.replace(b"\x00", b"\x00\xff") + _TERMINATOR


def decode_key_tuple(data: bytes) -> tuple:
    values = []
    position = 0
    while position < len(data):
        value, position = _decode_key_element(data, position)
        values.append(value)
    return tuple(values)


def _decode_key_element(data: bytes, position: int) -> tuple[Any, int]:
    tag = data[position]
    position += 1
    if tag == TAG_NULL:
        return None, position
    if tag in (TAG_FALSE, TAG_TRUE):
        return tag == TAG_TRUE, position
    if tag == TAG_INT:
        return int.from_bytes(data[position:position + 8], "big") - _INT_BIAS, position + 8
    if tag == TAG_FLOAT:
        return _float_from_body(data[position:position + 8]), position + 8
    if tag == TAG_DECIMAL:
        return _decimal_from_body(data, position)
    if tag == TAG_DATE:
        ordinal = int.from_bytes(data[position:position + 8], "big") - _INT_BIAS
        return datetime.date.fromordinal(ordinal), position + 8
    if tag in (TAG_TIMESTAMP, TAG_TIMESTAMPTZ):
        micros = int.from_bytes(data[position:position + 8], "big") - _INT_BIAS
        return timestamp_from_micros(micros, tag == TAG_TIMESTAMPTZ), position + 8
    if tag == TAG_UUID:
        return uuid.UUID(bytes=bytes(data[position:position + 16])), position + 16
    if tag in (TAG_TEXT, TAG_BYTES):
        body = bytearray()
        while True:
            byte = data[position]
            if byte != 0:
                body.append(byte)
                position += 1
                continue
            marker = data[position + 1]
            position += 2
            if marker == 0x01:
                break
            assert marker == 0xFF, f"bad escape in key at {position}"
            body.append(0)
        raw = bytes(body)
        return (raw.decode("utf-8") if tag == TAG_TEXT else raw), position
    raise ValueError(f"unknown key tag 0x{tag:02x} at {position - 1}")


# --- row codec --------------------------------------------------------------------
ROW_NULL = 0
ROW_INT = 1
ROW_FLOAT = 2
ROW_TEXT = 3
ROW_FALSE = 4
ROW_TRUE = 5
ROW_BYTES = 6
ROW_DECIMAL = 7
ROW_DATE = 8
ROW_TIMESTAMP = 9
ROW_TIMESTAMPTZ = 10
ROW_UUID = 11


def encode_row(values: Sequence[Any]) -> bytes:
    out = bytearray()
    _put_varint(out, len(values))
    for value in values:
        if value is None:
            out.append(ROW_NULL)
        elif isinstance(value, bool):
            out.append(ROW_TRUE if value else ROW_FALSE)
        elif isinstance(value, int):
            out.append(ROW_INT)
            _put_varint(out, (value << 1) if value >= 0 else ((-value << 1) - 1))
        elif isinstance(value, float):
            out.append(ROW_FLOAT)
            out += struct.pack(">d", value)
        elif isinstance(value, decimal.Decimal):
            assert value.is_finite(), value
            data = format(value, "f").encode("ascii")
            out.append(ROW_DECIMAL)
            _put_varint(out, len(data))
            out += data
        elif isinstance(value, datetime.datetime):
            out.append(ROW_TIMESTAMPTZ if value.tzinfo is not None else ROW_TIMESTAMP)
            _put_zigzag(out, timestamp_micros(value))
        elif isinstance(value, datetime.date):
            out.append(ROW_DATE)
            _put_zigzag(out, value.toordinal())
        elif isinstance(value, uuid.UUID):
            out.append(ROW_UUID)
            out += value.bytes
        elif isinstance(value, str):
            data = value.encode("utf-8")
            out.append(ROW_TEXT)
            _put_varint(out, len(data))
            out += data
        elif isinstance(value, (bytes, bytearray)):
            out.append(ROW_BYTES)
            _put_varint(out, len(value))
            out += value
        else:
            raise TypeError(f"cannot encode {type(value).__name__} in a row")
    return bytes(out)


def decode_row(data: bytes) -> tuple:
    count, position = _get_varint(data, 0)
    values = []
    for _ in range(count):
        tag = data[position]
        position += 1
        if tag == ROW_NULL:
            values.append(None)
        elif tag == ROW_TRUE or tag == ROW_FALSE:
            values.append(tag == ROW_TRUE)
        elif tag == ROW_INT:
            zigzag, position = _get_varint(data, position)
            values.append((zigzag >> 1) if not zigzag & 1 else -((zigzag + 1) >> 1))
        elif tag == ROW_FLOAT:
            values.append(struct.unpack(">d", data[position:position + 8])[0])
            position += 8
        elif tag == ROW_DECIMAL:
            length, position = _get_varint(data, position)
            values.append(decimal.Decimal(data[position:position + length].decode("ascii")))
            position += length
        elif tag == ROW_DATE:
            zigzag, position = _get_varint(data, position)
            values.append(datetime.date.fromordinal(_unzigzag(zigzag)))
        elif tag == ROW_TIMESTAMP or tag == ROW_TIMESTAMPTZ:
            zigzag, position = _get_varint(data, position)
            values.append(timestamp_from_micros(_unzigzag(zigzag), tag == ROW_TIMESTAMPTZ))
        elif tag == ROW_UUID:
            values.append(uuid.UUID(bytes=bytes(data[position:position + 16])))
            position += 16
        elif tag == ROW_TEXT or tag == ROW_BYTES:
            length, position = _get_varint(data, position)
            raw = data[position:position + length]
            assert len(raw) == length, "truncated row"
            position += length
            values.append(raw.decode("utf-8") if tag == ROW_TEXT else bytes(raw))
        else:
            raise ValueError(f"unknown row tag {tag} at {position - 1}")
    assert position == len(data), "trailing bytes after row"
    return tuple(values)


def _put_zigzag(out: bytearray, value: int) -> None:
    _put_varint(out, (value << 1) if value >= 0 else ((-value << 1) - 1))


def _unzigzag(zigzag: int) -> int:
    return (zigzag >> 1) if not zigzag & 1 else -((zigzag + 1) >> 1)


def _put_varint(out: bytearray, value: int) -> None:
    assert value >= 0
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _get_varint(data: bytes, position: int) -> tuple[int, int]:
    value = 0
    shift = 0
    for _ in range(20):  # 20 * 7 bits covers every zigzag 64-bit integer and more
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7
    raise ValueError("varint too long")


def decode_version(raw: bytes | None) -> int:
    """The catalog version stored under SCHEMA_VERSION_KEY (8-byte big-endian; missing = 0)."""
    return 0 if raw is None else int.from_bytes(raw, "big")


def encode_version(version: int) -> bytes:
    return version.to_bytes(8, "big")


# A backtrack moves the catalog version up to the next multiple of this step (DDL adds 1), so a
# compute node can tell a rewind, which may have undone its sequence reservations, from ordinary
# DDL, which has not (dropping the ranges on every DDL would leave gaps in serial columns).
BACKTRACK_VERSION_STEP = 1 << 32


def version_after_backtrack(newest: int) -> int:
    return (newest // BACKTRACK_VERSION_STEP + 1) * BACKTRACK_VERSION_STEP


def backtrack_generation(version: int) -> int:
    """How many backtracks the catalog version has been through."""
    return version // BACKTRACK_VERSION_STEP
