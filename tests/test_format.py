"""tools.format against psql's exact output.

PSQL_OUTPUT below is a recorded oracle: it was captured from real psql 15.18
(`psql -X [-A] [-t] [-x]`) against a throwaway PostgreSQL 15 server, running the
SQL given with each case; the Python columns/rows of each case are what that SQL
returns. The test formats the same values and compares byte for byte.
"""
from __future__ import annotations

import pytest

from tools import format as fmt

# name -> (SQL run in psql, columns (name, type), rows, command tag)
CASES = {
    "mixed": (
        "select * from (values (1,'alice',1.5::float8,true,10::bigint),(2,NULL,NULL,false,NULL),"
        "(3,'a much longer name here',-2.25,NULL,12345678901)) v(id,name,score,ok,big)",
        [("id", "integer"), ("name", "text"), ("score", "double precision"), ("ok", "boolean"), ("big", "bigint")],
        [(1, "alice", 1.5, True, 10), (2, None, None, False, None),
         (3, "a much longer name here", -2.25, None, 12345678901)],
        "SELECT 3",
    ),
    "empty": ("select 1 as id, 'x'::text as name where false", [("id", "integer"), ("name", "text")], [], "SELECT 0"),
    "text_last": (
        "select * from (values (1,'alice'),(2,NULL),(3,'bob')) v(id,name)",
        [("id", "integer"), ("name", "text")], [(1, "alice"), (2, None), (3, "bob")], "SELECT 3",
    ),
    "unicode": (
        "select 'x' as a, 'héllo wörld' as b, '日本語' as c, 'z' as d",
        [("a", "text"), ("b", "text"), ("c", "text"), ("d", "text")], [("x", "héllo wörld", "日本語", "z")], "SELECT 1",
    ),
    "wide_header": (
        "select 1 as n, 'a' as long_header_name_here",
        [("n", "integer"), ("long_header_name_here", "text")], [(1, "a")], "SELECT 1",
    ),
    "multiline": (
        "select 1 as a, E'x\\nyy' as bb, 3 as c",
        [("a", "integer"), ("bb", "text"), ("c", "integer")], [(1, "x\nyy", 3)], "SELECT 1",
    ),
    "multiline_last": ("select 1 as id, E'a\\nbb' as m", [("id", "integer"), ("m", "text")], [(1, "a\nbb")], "SELECT 1"),
    "floats": (
        "select x::float8 as x from (values (1.5),(100),(0.1),(1e20),(1e-5),(123456789012345678),(1e15),(1e14),"
        "(0.0001),(1/3.0),('infinity'),('nan')) v(x)",
        [("x", "double precision")],
        [(1.5,), (100.0,), (0.1,), (1e20,), (1e-5,), (123456789012345678.0,), (1e15,), (1e14,), (0.0001,),
         (1 / 3.0,), (float("inf"),), (float("nan"),)],
        "SELECT 12",
    ),
    "control": (
        "select E'a\\tb' as t, E'x\\ry' as r, E'q\\x01z' as c, 'e'||chr(769)||'x' as comb, 1 as n",
        [("t", "text"), ("r", "text"), ("c", "text"), ("comb", "text"), ("n", "integer")],
        [("a\tb", "x\ry", "q\x01z", "e\u0301x", 1)], "SELECT 1",
    ),
    "bytea_real": (
        "select '\\x0102ff'::bytea as b, 1.1::real as r, 2.5::numeric as n",
        [("b", "bytea"), ("r", "real"), ("n", "numeric")], [(b"\x01\x02\xff", 1.100000023841858, "2.5")], "SELECT 1",
    ),
    "insert": ("insert into scratch values (1),(2),(3)", [], [], "INSERT 0 3"),
    "create": ("create table scratch2 (id int)", [], [], "CREATE TABLE"),
    "update": ("update scratch set id = id", [], [], "UPDATE 0"),
    "returning": ("insert into scratch values (30) returning id", [("id", "integer")], [(30,)], "INSERT 0 1"),
    "multi_record": (
        "select 1 as a, 'w' as bb, E'long\\nvalue here' as ccc from generate_series(1,2)",
        [("a", "integer"), ("bb", "text"), ("ccc", "text")], [(1, "w", "long\nvalue here")] * 2, "SELECT 2",
    ),
}

FLAGS = {
    "default": fmt.PrintOptions(),
    "A": fmt.PrintOptions(aligned=False),
    "t": fmt.PrintOptions(tuples_only=True),
    "At": fmt.PrintOptions(aligned=False, tuples_only=True),
    "x": fmt.PrintOptions(expanded=True),
    "xt": fmt.PrintOptions(expanded=True, tuples_only=True),
    "xA": fmt.PrintOptions(expanded=True, aligned=False),
}

# Captured from psql 15.18; key = case/flags.
PSQL_OUTPUT = {
    'mixed/default': ' id |          name           | score | ok |     big     \n----+-------------------------+-------+----+-------------\n  1 | alice                   |   1.5 | t  |          10\n  2 |                         |       | f  |            \n  3 | a much longer name here | -2.25 |    | 12345678901\n(3 rows)\n\n',
    'mixed/A': 'id|name|score|ok|big\n1|alice|1.5|t|10\n2|||f|\n3|a much longer name here|-2.25||12345678901\n(3 rows)\n',
    'mixed/t': '  1 | alice                   |   1.5 | t  |          10\n  2 |                         |       | f  |            \n  3 | a much longer name here | -2.25 |    | 12345678901\n\n',
    'mixed/At': '1|alice|1.5|t|10\n2|||f|\n3|a much longer name here|-2.25||12345678901\n',
    'mixed/x': '-[ RECORD 1 ]------------------\nid    | 1\nname  | alice\nscore | 1.5\nok    | t\nbig   | 10\n-[ RECORD 2 ]------------------\nid    | 2\nname  | \nscore | \nok    | f\nbig   | \n-[ RECORD 3 ]------------------\nid    | 3\nname  | a much longer name here\nscore | -2.25\nok    | \nbig   | 12345678901\n\n',
    'mixed/xt': 'id    | 1\nname  | alice\nscore | 1.5\nok    | t\nbig   | 10\n------+------------------------\nid    | 2\nname  | \nscore | \nok    | f\nbig   | \n------+------------------------\nid    | 3\nname  | a much longer name here\nscore | -2.25\nok    | \nbig   | 12345678901\n\n',
    'mixed/xA': 'id|1\nname|alice\nscore|1.5\nok|t\nbig|10\n\nid|2\nname|\nscore|\nok|f\nbig|\n\nid|3\nname|a much longer name here\nscore|-2.25\nok|\nbig|12345678901\n',
    'empty/default': ' id | name \n----+------\n(0 rows)\n\n',
    'empty/A': 'id|name\n(0 rows)\n',
    'empty/t': '\n',
    'empty/At': '',
    'empty/x': '(0 rows)\n\n',
    'empty/xt': '\n',
    'empty/xA': '',
    'text_last/default': ' id | name  \n----+-------\n  1 | alice\n  2 | \n  3 | bob\n(3 rows)\n\n',
    'text_last/A': 'id|name\n1|alice\n2|\n3|bob\n(3 rows)\n',
    'text_last/t': '  1 | alice\n  2 | \n  3 | bob\n\n',
    'text_last/At': '1|alice\n2|\n3|bob\n',
    'text_last/x': '-[ RECORD 1 ]\nid   | 1\nname | alice\n-[ RECORD 2 ]\nid   | 2\nname | \n-[ RECORD 3 ]\nid   | 3\nname | bob\n\n',
    'text_last/xt': 'id   | 1\nname | alice\n-----+------\nid   | 2\nname | \n-----+------\nid   | 3\nname | bob\n\n',
    'text_last/xA': 'id|1\nname|alice\n\nid|2\nname|\n\nid|3\nname|bob\n',
    'unicode/default': ' a |      b      |   c    | d \n---+-------------+--------+---\n x | héllo wörld | 日本語 | z\n(1 row)\n\n',
    'unicode/A': 'a|b|c|d\nx|héllo wörld|日本語|z\n(1 row)\n',
    'unicode/t': ' x | héllo wörld | 日本語 | z\n\n',
    'unicode/At': 'x|héllo wörld|日本語|z\n',
    'unicode/x': '-[ RECORD 1 ]--\na | x\nb | héllo wörld\nc | 日本語\nd | z\n\n',
    'unicode/xt': 'a | x\nb | héllo wörld\nc | 日本語\nd | z\n\n',
    'unicode/xA': 'a|x\nb|héllo wörld\nc|日本語\nd|z\n',
    'wide_header/default': ' n | long_header_name_here \n---+-----------------------\n 1 | a\n(1 row)\n\n',
    'wide_header/A': 'n|long_header_name_here\n1|a\n(1 row)\n',
    'wide_header/t': ' 1 | a\n\n',
    'wide_header/At': '1|a\n',
    'wide_header/x': '-[ RECORD 1 ]---------+--\nn                     | 1\nlong_header_name_here | a\n\n',
    'wide_header/xt': 'n                     | 1\nlong_header_name_here | a\n\n',
    'wide_header/xA': 'n|1\nlong_header_name_here|a\n',
    'multiline/default': ' a | bb | c \n---+----+---\n 1 | x +| 3\n   | yy | \n(1 row)\n\n',
    'multiline/A': 'a|bb|c\n1|x\nyy|3\n(1 row)\n',
    'multiline/t': ' 1 | x +| 3\n   | yy | \n\n',
    'multiline/At': '1|x\nyy|3\n',
    'multiline/x': '-[ RECORD 1 ]\na  | 1\nbb | x +\n   | yy\nc  | 3\n\n',
    'multiline/xt': 'a  | 1\nbb | x +\n   | yy\nc  | 3\n\n',
    'multiline/xA': 'a|1\nbb|x\nyy\nc|3\n',
    'multiline_last/default': ' id | m  \n----+----\n  1 | a +\n    | bb\n(1 row)\n\n',
    'multiline_last/A': 'id|m\n1|a\nbb\n(1 row)\n',
    'multiline_last/t': '  1 | a +\n    | bb\n\n',
    'multiline_last/At': '1|a\nbb\n',
    'multiline_last/x': '-[ RECORD 1 ]\nid | 1\nm  | a +\n   | bb\n\n',
    'multiline_last/xt': 'id | 1\nm  | a +\n   | bb\n\n',
    'multiline_last/xA': 'id|1\nm|a\nbb\n',
    'floats/default': '           x            \n------------------------\n                    1.5\n                    100\n                    0.1\n                  1e+20\n                  1e-05\n 1.2345678901234568e+17\n                  1e+15\n        100000000000000\n                 0.0001\n     0.3333333333333333\n               Infinity\n                    NaN\n(12 rows)\n\n',
    'floats/A': 'x\n1.5\n100\n0.1\n1e+20\n1e-05\n1.2345678901234568e+17\n1e+15\n100000000000000\n0.0001\n0.3333333333333333\nInfinity\nNaN\n(12 rows)\n',
    'floats/t': '                    1.5\n                    100\n                    0.1\n                  1e+20\n                  1e-05\n 1.2345678901234568e+17\n                  1e+15\n        100000000000000\n                 0.0001\n     0.3333333333333333\n               Infinity\n                    NaN\n\n',
    'floats/At': '1.5\n100\n0.1\n1e+20\n1e-05\n1.2345678901234568e+17\n1e+15\n100000000000000\n0.0001\n0.3333333333333333\nInfinity\nNaN\n',
    'floats/x': '-[ RECORD 1 ]-------------\nx | 1.5\n-[ RECORD 2 ]-------------\nx | 100\n-[ RECORD 3 ]-------------\nx | 0.1\n-[ RECORD 4 ]-------------\nx | 1e+20\n-[ RECORD 5 ]-------------\nx | 1e-05\n-[ RECORD 6 ]-------------\nx | 1.2345678901234568e+17\n-[ RECORD 7 ]-------------\nx | 1e+15\n-[ RECORD 8 ]-------------\nx | 100000000000000\n-[ RECORD 9 ]-------------\nx | 0.0001\n-[ RECORD 10 ]------------\nx | 0.3333333333333333\n-[ RECORD 11 ]------------\nx | Infinity\n-[ RECORD 12 ]------------\nx | NaN\n\n',
    'floats/xt': 'x | 1.5\n--+-----------------------\nx | 100\n--+-----------------------\nx | 0.1\n--+-----------------------\nx | 1e+20\n--+-----------------------\nx | 1e-05\n--+-----------------------\nx | 1.2345678901234568e+17\n--+-----------------------\nx | 1e+15\n--+-----------------------\nx | 100000000000000\n--+-----------------------\nx | 0.0001\n--+-----------------------\nx | 0.3333333333333333\n--+-----------------------\nx | Infinity\n--+-----------------------\nx | NaN\n\n',
    'floats/xA': 'x|1.5\n\nx|100\n\nx|0.1\n\nx|1e+20\n\nx|1e-05\n\nx|1.2345678901234568e+17\n\nx|1e+15\n\nx|100000000000000\n\nx|0.0001\n\nx|0.3333333333333333\n\nx|Infinity\n\nx|NaN\n',
    'control/default': '     t     |  r   |   c    | comb | n \n-----------+------+--------+------+---\n a       b | x\\ry | q\\x01z | éx   | 1\n(1 row)\n\n',
    'control/A': 't|r|c|comb|n\na\tb|x\ry|q\x01z|éx|1\n(1 row)\n',
    'control/t': ' a       b | x\\ry | q\\x01z | éx   | 1\n\n',
    'control/At': 'a\tb|x\ry|q\x01z|éx|1\n',
    'control/x': '-[ RECORD 1 ]---\nt    | a       b\nr    | x\\ry\nc    | q\\x01z\ncomb | éx\nn    | 1\n\n',
    'control/xt': 't    | a       b\nr    | x\\ry\nc    | q\\x01z\ncomb | éx\nn    | 1\n\n',
    'control/xA': 't|a\tb\nr|x\ry\nc|q\x01z\ncomb|éx\nn|1\n',
    'bytea_real/default': '    b     |  r  |  n  \n----------+-----+-----\n \\x0102ff | 1.1 | 2.5\n(1 row)\n\n',
    'bytea_real/A': 'b|r|n\n\\x0102ff|1.1|2.5\n(1 row)\n',
    'bytea_real/t': ' \\x0102ff | 1.1 | 2.5\n\n',
    'bytea_real/At': '\\x0102ff|1.1|2.5\n',
    'bytea_real/x': '-[ RECORD 1 ]\nb | \\x0102ff\nr | 1.1\nn | 2.5\n\n',
    'bytea_real/xt': 'b | \\x0102ff\nr | 1.1\nn | 2.5\n\n',
    'bytea_real/xA': 'b|\\x0102ff\nr|1.1\nn|2.5\n',
    'insert/default': 'INSERT 0 3\n',
    'insert/A': 'INSERT 0 3\n',
    'insert/t': 'INSERT 0 3\n',
    'insert/At': 'INSERT 0 3\n',
    'insert/x': 'INSERT 0 3\n',
    'insert/xt': 'INSERT 0 3\n',
    'insert/xA': 'INSERT 0 3\n',
    'create/default': 'CREATE TABLE\n',
    'update/default': 'UPDATE 0\n',
    'update/A': 'UPDATE 0\n',
    'update/t': 'UPDATE 0\n',
    'update/At': 'UPDATE 0\n',
    'update/x': 'UPDATE 0\n',
    'update/xt': 'UPDATE 0\n',
    'update/xA': 'UPDATE 0\n',
    'returning/default': ' id \n----\n 30\n(1 row)\n\nINSERT 0 1\n',
    'returning/A': 'id\n30\n(1 row)\nINSERT 0 1\n',
    'returning/t': ' 30\n\nINSERT 0 1\n',
    'returning/At': '30\nINSERT 0 1\n',
    'returning/x': '-[ RECORD 1 ]\nid | 30\n\nINSERT 0 1\n',
    'returning/xt': 'id | 30\n\nINSERT 0 1\n',
    'returning/xA': 'id|30\nINSERT 0 1\n',
    'multi_record/default': ' a | bb |    ccc     \n---+----+------------\n 1 | w  | long      +\n   |    | value here\n 1 | w  | long      +\n   |    | value here\n(2 rows)\n\n',
    'multi_record/A': 'a|bb|ccc\n1|w|long\nvalue here\n1|w|long\nvalue here\n(2 rows)\n',
    'multi_record/t': ' 1 | w  | long      +\n   |    | value here\n 1 | w  | long      +\n   |    | value here\n\n',
    'multi_record/At': '1|w|long\nvalue here\n1|w|long\nvalue here\n',
    'multi_record/x': '-[ RECORD 1 ]---\na   | 1\nbb  | w\nccc | long      +\n    | value here\n-[ RECORD 2 ]---\na   | 1\nbb  | w\nccc | long      +\n    | value here\n\n',
    'multi_record/xt': 'a   | 1\nbb  | w\nccc | long      +\n    | value here\n----+-----------\na   | 1\nbb  | w\nccc | long      +\n    | value here\n\n',
    'multi_record/xA': 'a|1\nbb|w\nccc|long\nvalue here\n\na|1\nbb|w\nccc|long\nvalue here\n',
}


@pytest.mark.parametrize("key", sorted(PSQL_OUTPUT))
def test_matches_psql_byte_for_byte(key):
    case_name, flag = key.split("/")
    _, columns, rows, tag = CASES[case_name]
    assert fmt.format_result(columns, rows, tag, FLAGS[flag]) == PSQL_OUTPUT[key]


def test_every_case_and_flag_has_an_oracle():
    for case_name in CASES:
        assert f"{case_name}/default" in PSQL_OUTPUT


@pytest.mark.parametrize(
    ("value", "text"),
    [(1.5, "1.5"), (100.0, "100"), (-100.0, "-100"), (1e20, "1e+20"), (1e-5, "1e-05"), (0.0001, "0.0001"),
     (1e15, "1e+15"), (1e14, "100000000000000"), (123.456, "123.456"), (-0.0, "-0"), (2.5e-10, "2.5e-10")],
)
def test_float8_text_like_postgres(value, text):
    assert fmt.format_float(value) == text


def test_values():
    assert fmt.format_value(None) == ""
    assert fmt.format_value(None, null_display="NULL") == "NULL"
    assert fmt.format_value(True) == "t"
    assert fmt.format_value(False) == "f"
    assert fmt.format_value(b"\x00\xab") == "\\x00ab"
    assert fmt.format_value(7, "bigint") == "7"


def test_numeric_types_right_aligned_others_left():
    assert fmt.is_numeric_type("integer")
    assert fmt.is_numeric_type("numeric(10,2)")
    assert fmt.is_numeric_type("double precision")
    assert not fmt.is_numeric_type("text")
    assert not fmt.is_numeric_type("boolean")


def test_error_lines():
    assert fmt.format_error("42P01", 'relation "x" does not exist') == 'ERROR:  relation "x" does not exist\n'
    assert fmt.format_error("42P01", 'relation "x" does not exist', verbose=True) == (
        'ERROR:  42P01: relation "x" does not exist\n'
    )
    assert fmt.format_error("40001", "conflict", detail="key k", hint="retry") == (
        "ERROR:  conflict\nDETAIL:  key k\nHINT:  retry\n"
    )


def test_title_and_footers_like_psql_describe():
    """Recorded from psql 15.18: `\\dt` and `\\d accounts` (title centered over the table)."""
    listing = fmt.format_table(
        [("Schema", "text"), ("Name", "text"), ("Type", "text"), ("Owner", "text")],
        [("public", "accounts", "table", "postgres"), ("public", "scratch", "table", "postgres"),
         ("public", "t", "table", "postgres")],
        fmt.PrintOptions(), title="List of relations",
    )
    assert listing == (
        "          List of relations\n"
        " Schema |   Name   | Type  |  Owner   \n"
        "--------+----------+-------+----------\n"
        " public | accounts | table | postgres\n"
        " public | scratch  | table | postgres\n"
        " public | t        | table | postgres\n"
        "(3 rows)\n\n"
    )
    describe = fmt.format_table(
        [("Column", "text"), ("Type", "text"), ("Collation", "text"), ("Nullable", "text"), ("Default", "text")],
        [("id", "bigint", "", "not null", ""), ("owner", "text", "", "not null", ""),
         ("balance", "integer", "", "", "")],
        fmt.PrintOptions(), title='Table "public.accounts"',
        footers=["Indexes:", '    "accounts_pkey" PRIMARY KEY, btree (id)'],
    )
    assert describe == (
        '              Table "public.accounts"\n'
        " Column  |  Type   | Collation | Nullable | Default \n"
        "---------+---------+-----------+----------+---------\n"
        " id      | bigint  |           | not null | \n"
        " owner   | text    |           | not null | \n"
        " balance | integer |           |          | \n"
        "Indexes:\n"
        '    "accounts_pkey" PRIMARY KEY, btree (id)\n\n'
    )
