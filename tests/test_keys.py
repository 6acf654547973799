"""Key encoding: byte order equals SQL order; row codec round-trips every type."""
from __future__ import annotations

import functools
import math
import random

import pytest

from quorumdb import keys

SEED = 20240601


def sql_compare(a, b) -> int:
    """PostgreSQL order for values of one type: NaN above every double, C collation for text."""
    if isinstance(a, float):
        a_key = (1, 0.0) if math.isnan(a) else (0, a)
        b_key = (1, 0.0) if math.isnan(b) else (0, b)
        return (a_key > b_key) - (a_key < b_key)
    return (a > b) - (a < b)


def tuple_compare(a: tuple, b: tuple) -> int:
    for x, y in zip(a, b):
        result = sql_compare(x, y)
        if result:
            return result
    return (len(a) > len(b)) - (len(a) < len(b))


def random_int(rng: random.Random) -> int:
    choice = rng.random()
    if choice < 0.1:
        return rng.choice([keys.INT_MIN, keys.INT_MAX, 0, -1, 1, 255, 256, -256])
    if choice < 0.5:
        return rng.randint(-1000, 1000)
    return rng.randint(keys.INT_MIN, keys.INT_MAX)


def random_float(rng: random.Random) -> float:
    choice = rng.random()
    if choice < 0.15:
        return rng.choice([0.0, -0.0, math.inf, -math.inf, math.nan, 5e-324, -5e-324, 1.7976931348623157e308])
    if choice < 0.5:
        return rng.uniform(-10, 10)
    return rng.choice([-1, 1]) * math.ldexp(rng.random(), rng.randint(-1000, 1000))


def random_text(rng: random.Random) -> str:
    alphabet = ["a", "b", "z", "\x00", "\x01", "\xff", "é", "€", "😀", " ", "A"]
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))


def random_bytes(rng: random.Random) -> bytes:
    return bytes(rng.choice([0, 1, 2, 0xFE, 0xFF]) for _ in range(rng.randint(0, 6)))


GENERATORS = {
    "int": random_int,
    "float": random_float,
    "text": random_text,
    "bytes": random_bytes,
    "bool": lambda rng: rng.random() < 0.5,
}


@pytest.mark.parametrize("kind", sorted(GENERATORS))
def test_single_values_sort_like_sql(kind):
    rng = random.Random(SEED)
    values = [GENERATORS[kind](rng) for _ in range(3000)]
    by_value = sorted(values, key=functools.cmp_to_key(sql_compare))
    by_bytes = sorted(values, key=keys.encode_key_element)
    for expected, got in zip(by_value, by_bytes):
        assert sql_compare(expected, got) == 0, f"seed {SEED}: {expected!r} vs {got!r}"
    # Pairwise check on a sample: encoding comparison agrees with value comparison.
    for _ in range(5000):
        a, b = rng.choice(values), rng.choice(values)
        expected = sql_compare(a, b)
        ea, eb = keys.encode_key_element(a), keys.encode_key_element(b)
        assert (ea > eb) - (ea < eb) == expected, f"seed {SEED}: {a!r} vs {b!r}"


def test_composite_tuples_sort_like_sql_and_round_trip():
    rng = random.Random(SEED + 1)
    shape = ["text", "int", "float"]
    tuples = [tuple(GENERATORS[k](rng) for k in shape) for _ in range(3000)]
    for _ in range(5000):
        a, b = rng.choice(tuples), rng.choice(tuples)
        ea, eb = keys.encode_key_tuple(a), keys.encode_key_tuple(b)
        assert (ea > eb) - (ea < eb) == tuple_compare(a, b), f"{a!r} vs {b!r}"
    for value in tuples[:500]:
        decoded = keys.decode_key_tuple(keys.encode_key_tuple(value))
        assert tuple_compare(decoded, value) == 0


def test_text_prefixes_sort_before_extensions():
    ordered = ["", "a", "a\x00", "a\x00\x00", "a\x01", "ab", "b"]
    encoded = [keys.encode_key_element(t) for t in ordered]
    assert encoded == sorted(encoded)
    # A tuple prefix bounds all keys that extend it.
    prefix = keys.encode_key_tuple(["a"])
    end = keys.prefix_end(prefix)
    assert prefix <= keys.encode_key_tuple(["a", 5]) < end
    assert not prefix <= keys.encode_key_tuple(["ab"]) < end


def test_negative_zero_and_nan_are_canonical():
    assert keys.encode_key_element(-0.0) == keys.encode_key_element(0.0)
    assert keys.encode_key_element(float("nan")) == keys.encode_key_element(-float("nan"))
    assert keys.encode_key_element(math.inf) < keys.encode_key_element(math.nan)


def test_key_space_layout():
    assert keys.catalog_table_key("zzz") < keys.table_prefix(1)
    assert keys.TABLE_ID_COUNTER_KEY < keys.table_prefix(1)
    assert keys.table_prefix(1) < keys.table_prefix(2) < keys.table_prefix(256)
    assert keys.prefix_end(keys.table_prefix(1)) <= keys.table_prefix(2)
    assert keys.row_key(1, [keys.INT_MAX]) < keys.table_prefix(2)
    assert keys.prefix_end(b"\x01\xff\xff") == b"\x02"
    assert keys.prefix_end(b"\xff") is None


ROWS = [
    (),
    (None,),
    (0, -1, 1, keys.INT_MIN, keys.INT_MAX, 2**31, -(2**31)),
    (1.5, -0.0, math.inf, -math.inf, 5e-324),
    ("", "héllo", "€😀", "a\x00b", "x" * 10_000),
    (True, False, None, b"", b"\x00\xff"),
]


@pytest.mark.parametrize("row", ROWS)
def test_row_codec_round_trip(row):
    assert keys.decode_row(keys.encode_row(row)) == row


def test_row_codec_nan_and_random_rows():
    decoded = keys.decode_row(keys.encode_row((math.nan, None)))
    assert math.isnan(decoded[0]) and decoded[1] is None
    rng = random.Random(SEED + 2)
    for _ in range(2000):
        kind = rng.choice(sorted(GENERATORS))
        row = tuple(GENERATORS[kind](rng) if rng.random() < 0.8 else None for _ in range(rng.randint(0, 5)))
        got = keys.decode_row(keys.encode_row(row))
        assert len(got) == len(row)
        for a, b in zip(got, row):
            assert (a is None and b is None) or sql_compare(a, b) == 0, (row, got)
    assert len(keys.encode_row((1, 2, 3))) <= 7  # compact: small ints take two bytes


# --- new value types --------------------------------------------------------------
def test_new_types_keep_sql_order_and_round_trip():
    import datetime
    import decimal
    import uuid
    D = decimal.Decimal
    ordered_groups = [
        [D("-1e10"), D("-100.5"), D("-100"), D("-99.99"), D("-1"), D("-0.001"), D(0), D("0.001"), D("0.5"),
         D("1"), D("1.5"), D("10"), D("99.9"), D("100"), D("12345678901234567890.123")],
        [datetime.date(1, 1, 1), datetime.date(1969, 12, 31), datetime.date(1970, 1, 1), datetime.date(2024, 2, 29)],
        [datetime.datetime(1900, 1, 1), datetime.datetime(2024, 1, 1, 0, 0, 0, 1), datetime.datetime(2024, 1, 1, 0, 0, 1)],
        [uuid.UUID(int=0), uuid.UUID(int=1), uuid.UUID(int=2**127)],
    ]
    for values in ordered_groups:
        encoded = [keys.encode_key_element(v) for v in values]
        assert encoded == sorted(encoded), values
        for value in values:
            assert keys.decode_key_tuple(keys.encode_key_tuple((value, "tail"))) == (value, "tail")
    assert keys.encode_key_element(D("1.0")) == keys.encode_key_element(D("1.00"))  # equal numerics, one key
    aware = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    row = (D("1.50"), datetime.date(2024, 1, 2), datetime.datetime(2024, 1, 2, 3, 4, 5, 6), aware, uuid.UUID(int=7),
           None, -3, "x", b"\x00", True, 1.5)
    assert keys.decode_row(keys.encode_row(row)) == row
    assert str(keys.decode_row(keys.encode_row((D("1.50"),)))[0]) == "1.50"  # the scale survives


def test_rows_and_catalogs_written_before_issue_4_still_decode():
    from compute_node.sql.catalog import TableDef
    old_row = bytes([3, keys.ROW_INT, 4, keys.ROW_TEXT, 1]) + b"a" + bytes([keys.ROW_NULL])
    assert keys.decode_row(old_row) == (2, "a", None)
    old_catalog = (b'{"columns": [{"name": "id", "not_null": true, "type": {"kind": "integer", "length": null}}, '
                   b'{"name": "v", "not_null": false, "type": {"kind": "text", "length": null}}], '
                   b'"name": "t", "primary_key": [0], "table_id": 7}')
    table = TableDef.decode(old_catalog)
    assert table.indexes == () and table.checks == () and table.identity_layout
    assert table.decode_row(keys.encode_row((1, "x"))) == (1, "x")
    assert TableDef.decode(table.encode()) == table
