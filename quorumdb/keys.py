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
  * NULL: tag 0xF0, after every other tag (PostgreSQL sorts NULL last ascending).
    Primary-key columns are never NULL; it is there for future secondary indexes.

Each element encoding is prefix-free and order-preserving, so the concatenation of
a tuple's elements orders tuples lexicographically, and every key that starts with
the encoding of a tuple prefix lies in [prefix, prefix_end(prefix)). Range scans on
leading primary-key columns use exactly that.

Key space:
  * 0x01 ...             system keys (the SQL catalog), sorting before every table;
  * 0x02 + table_id(8B)  + encoded primary key: the rows of table `table_id`.
Rows of a dropped table stay under their old table id, unreachable because the
catalog no longer names that id (garbage collection of them is not implemented).

Row values use a small tagged codec (`encode_row`/`decode_row`): a varint column
count, then per column a tag byte and a body (zigzag varint for integers, 8 bytes
for doubles, varint length + bytes for text and bytes; NULL and booleans are the tag
alone). It keeps the column order of the table definition.
"""
from __future__ import annotations

import math
import struct
from typing import Any, Sequence

# --- key space ------------------------------------------------------------------
SYSTEM_PREFIX = b"\x01"
TABLE_ROWS_PREFIX = b"\x02"
# Catalog: one key per table name, holding the table definition.
CATALOG_TABLE_PREFIX = SYSTEM_PREFIX + b"T"
# Catalog: the last table id handed out (read-modify-write, so concurrent DDL conflicts).
TABLE_ID_COUNTER_KEY = SYSTEM_PREFIX + b"N"
TABLE_ID_MAX = 2**64 - 1

# --- element tags ---------------------------------------------------------------
TAG_FALSE = 0x10
TAG_TRUE = 0x11
TAG_INT = 0x20
TAG_FLOAT = 0x30
TAG_TEXT = 0x40
TAG_BYTES = 0x41
TAG_NULL = 0xF0

INT_MIN = -(2**63)
INT_MAX = 2**63 - 1
_INT_BIAS = 2**63
_CANONICAL_NAN = struct.pack(">d", float("nan"))
_TERMINATOR = b"\x00\x01"


def catalog_table_key(table_name: str) -> bytes:
    return CATALOG_TABLE_PREFIX + encode_key_tuple((table_name,))


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
