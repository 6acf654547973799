"""COPY's pure core (quorumdb/copyformat.py): statement and options, text and CSV reading and writing.

Inputs are fed whole and one byte at a time: a CopyData message may end anywhere (inside an
escape, a quoted field, a CRLF or a UTF-8 character), and the records must not change.
"""
from __future__ import annotations

import random

import pytest

from quorumdb import copyformat
from quorumdb.copyformat import CopyOptions, CopyReader, encode_row, parse_statement, validate_options
from quorumdb.errors import SqlError


def read_all(data: bytes, options: CopyOptions, columns=("a", "b")):
    """Records of data fed whole, byte by byte and in random pieces: all three must agree."""
    results = []
    for pieces in ([data], [data[i:i + 1] for i in range(len(data))], _random_pieces(data)):
        reader = CopyReader(options, list(columns))
        results.append(list(copyformat.iter_records(reader, pieces)))
    assert results[0] == results[1] == results[2]
    return results[0]


def _random_pieces(data: bytes):
    rng = random.Random(len(data))
    pieces, position = [], 0
    while position < len(data):
        size = rng.randint(1, 7)
        pieces.append(data[position:position + size])
        position += size
    return pieces


def read_error(data: bytes, options: CopyOptions, columns=("a", "b")) -> SqlError:
    with pytest.raises(SqlError) as caught:
        list(copyformat.iter_records(CopyReader(options, list(columns)), [data]))
    return caught.value


TEXT = CopyOptions()
CSV = validate_options({"format": "csv"}, "from")


# --- statement ----------------------------------------------------------------------------------
def test_statement_forms_tools_send():
    new = parse_statement("COPY t (a, \"B c\") FROM STDIN WITH (FORMAT csv, HEADER match, DELIMITER ';', NULL 'x')")
    assert (new.direction, new.table, new.columns) == ("from", "t", ("a", "B c"))
    assert (new.options.format, new.options.header, new.options.delimiter, new.options.null) == ("csv", "match", ";", "x")
    pgbench = parse_statement("copy pgbench_accounts from stdin with (freeze on)")
    assert pgbench.table == "pgbench_accounts" and pgbench.options.freeze and pgbench.options.format == "text"
    psql_old_style = parse_statement("COPY  public.t TO STDOUT csv header delimiter as '|' null 'NULL'")
    assert (psql_old_style.direction, psql_old_style.table) == ("to", "t")
    assert (psql_old_style.options.csv, psql_old_style.options.header, psql_old_style.options.delimiter,
            psql_old_style.options.null) == (True, True, "|", "NULL")
    query = parse_statement("COPY (SELECT a, ')' FROM t WHERE (a > 1)) TO STDOUT WITH CSV;")
    assert query.table is None and query.query == "SELECT a, ')' FROM t WHERE (a > 1)"
    assert parse_statement("COPY t FROM STDIN (HEADER false, FREEZE 0, ENCODING 'utf-8')").options.header is False


@pytest.mark.parametrize("sql, sqlstate, words", [
    ("COPY t FROM '/etc/passwd'", "42501", "file"),
    ("COPY t TO '/tmp/x'", "42501", "file"),
    ("COPY t FROM PROGRAM 'ls'", "42501", "PROGRAM"),
    ("COPY t FROM STDIN (FORMAT binary)", "0A000", "binary"),
    ("COPY BINARY t FROM STDIN", "0A000", "binary"),
    ("COPY t FROM STDIN (FORCE_NOT_NULL (a))", "0A000", "CSV mode"),
    ("COPY t FROM STDIN CSV FORCE QUOTE *", "0A000", "using COPY TO"),
    ("COPY t TO STDOUT (FORMAT csv, FORCE_NULL (a))", "0A000", "using COPY FROM"),
    ("COPY t FROM STDIN (FORMAT csv, FORCE_NULL true)", "42601", "list of column names"),
    ("COPY t FROM STDIN (ON_ERROR ignore)", "0A000", "ON_ERROR"),
    ("COPY t FROM STDIN WHERE a > 1", "0A000", "WHERE"),
    ("COPY t FROM STDIN (ENCODING 'LATIN1')", "0A000", "LATIN1"),
    ("COPY t FROM STDIN (bogus 1)", "42601", "bogus"),
    ("COPY t FROM STDIN (FORMAT csv, FORMAT text)", "42601", "redundant"),
    ("COPY t FROM STDIN (FORMAT xml)", "22023", "xml"),
    ("COPY t FROM STDIN (QUOTE '''')", "0A000", "CSV mode"),
    ("COPY t FROM STDIN (FORMAT csv, DELIMITER ',,')", "0A000", "one-byte"),
    ("COPY t FROM STDIN (DELIMITER 'n')", "22023", "delimiter"),
    ("COPY t FROM STDIN (FORMAT csv, DELIMITER '\"')", "22023", "different"),
    ("COPY t FROM STDIN (DELIMITER ',', NULL 'a,b')", "22023", "NULL"),
    ("COPY t TO STDOUT (HEADER match)", "0A000", "match"),
    ("COPY t TO STDOUT (FREEZE)", "0A000", "FREEZE"),
    ("COPY t FROM STDIN (HEADER maybe)", "42601", "Boolean"),
    ("COPY (SELECT 1) FROM STDIN", "42601", "FROM"),
    ("COPY t INTO STDOUT", "42601", "INTO"),
    ("COPY other.t FROM STDIN", "3F000", "other"),
])
def test_statement_errors_name_what_is_wrong(sql, sqlstate, words):
    with pytest.raises(SqlError) as caught:
        parse_statement(sql)
    assert caught.value.sqlstate == sqlstate
    assert words.lower() in (caught.value.message + caught.value.hint).lower()


# --- text format --------------------------------------------------------------------------------
def test_text_escapes_nulls_and_end_marker():
    data = (b"1\tx\\ty\n"               # \t escape
            b"2\t\\N\n"                 # NULL
            b"3\ta\\\nb\n"              # a backslash before a newline: the newline is data
            b"4\t\\101\\x42\\303\\251\n"  # octal, hex, and two octal bytes making one UTF-8 character
            b"5\t\\\\N\n"               # an escaped backslash then N: the text \N, not NULL
            b"6\t\n"                    # empty string, not NULL
            b"7\t\xc3\xa9t\xc3\xa9\n"   # UTF-8 as is
            b"\\.\n"
            b"this is after the end marker and ignored\n")
    assert read_all(data, TEXT) == [
        (1, ["1", "x\ty"]), (2, ["2", None]), (3, ["3", "a\nb"]), (4, ["4", "ABé"]), (5, ["5", "\\N"]),
        (6, ["6", ""]), (7, ["7", "été"])]


def test_text_crlf_header_and_custom_null_and_delimiter():
    options = validate_options({"delimiter": "|", "null": "NULL", "header": True}, "from")
    data = b"a|b\r\n1|NULL\r\n2|x\\|y\r\n3|NULLx"
    assert read_all(data, options) == [(2, ["1", None]), (3, ["2", "x|y"]), (4, ["3", "NULLx"])]


@pytest.mark.parametrize("data, sqlstate, message, line", [
    (b"1\tx\n2\n", "22P04", 'missing data for column "b"', 2),
    (b"1\tx\textra\n", "22P04", "extra data after last expected column", 1),
    (b"1\tx\r\n2\ty\n", "22P04", "literal newline", 2),
    (b"1\tx\ry\n", "22P04", "carriage return", 1),
    (b"1\t\xff\n", "22021", "0xff", 1),
    (b"1\t\\000\n", "22021", "0x00", 1),
    (b"1\t\\377\n", "22021", "0xff", 1),
    (b"1\tx\n2\tab\\.\n", "22P04", "end-of-copy marker corrupt", 2),
])
def test_text_bad_input(data, sqlstate, message, line):
    error = read_error(data, TEXT)
    assert (error.sqlstate, error.line) == (sqlstate, line)
    assert message in error.message


def test_text_round_trip_of_awkward_values():
    rng = random.Random(7)
    alphabet = ["a", "\t", "\n", "\r", "\\", "N", "\\N", ".", "\\.", "é", "\b", "\v", "|", " ", "\x7f"]
    rows = [[str(n), "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))] for n in range(300)]
    rows += [["1000", None], ["1001", "\\N"], ["1002", ""]]
    for options in (TEXT, validate_options({"delimiter": "|"}, "from")):
        data = "".join(encode_row(row, options) for row in rows).encode()
        assert [fields for _, fields in read_all(data, options)] == rows


# --- CSV ----------------------------------------------------------------------------------------
def test_csv_quotes_nulls_and_multiline_fields():
    options = validate_options({"format": "csv", "header": True}, "from")
    data = (b'a,b\n'
            b'1,"x,""y"""\n'       # quoted delimiter and doubled quotes
            b'2,\n'                # unquoted empty: NULL
            b'3,""\n'              # quoted empty: empty string
            b'4,"multi\nline"\r\n'  # a newline inside quotes; CRLF record end
            b'5,ab"c,d"e\n'        # quotes may open mid-field
            b'"\\.",x\n'           # a quoted \. is data
            b'\\.\n'
            b'ignored,after\n')
    assert read_all(data, options) == [
        (2, ["1", 'x,"y"']), (3, ["2", None]), (4, ["3", ""]), (5, ["4", "multi\nline"]), (6, ["5", "abc,de"]),
        (7, ["\\.", "x"])]


def test_csv_escape_differs_from_quote_and_header_match():
    options = validate_options({"format": "csv", "escape": "\\", "header": "match"}, "from")
    data = b'a,b\n1,"q\\"q\\\\z\\n"\n'
    assert read_all(data, options) == [(2, ["1", 'q"q\\z\\n'])]
    mismatch = read_error(b"a,c\n1,2\n", options)
    assert mismatch.sqlstate == "22P04" and 'got "c", expected "b"' in mismatch.message
    assert read_error(b"a\n", options).message.startswith("wrong number of fields in header line")


def test_csv_bad_input():
    assert read_error(b'1,"open\n', CSV).message == "unterminated CSV quoted field"
    error = read_error(b'1,2\n3,4,5\n', CSV)
    assert (error.sqlstate, error.line, error.message) == ("22P04", 2, "extra data after last expected column")


def test_csv_round_trip_quotes_what_needs_quotes():
    rng = random.Random(11)
    alphabet = ["a", ",", '"', "\n", "\r\n", "\\", "", " ", "é", "\\."]
    rows = [[str(n), "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 5)))] for n in range(300)]
    rows += [["1000", None], ["1001", ""], ["1002", "\\."]]
    for raw in ({"format": "csv"}, {"format": "csv", "quote": "'", "escape": "\\", "delimiter": ";"}):
        options = validate_options(raw, "from")
        data = "".join(encode_row(row, options) for row in rows).encode()
        assert [fields for _, fields in read_all(data, options)] == rows
    assert encode_row(["x,y", 'q"q', None, "", "plain"], CSV) == '"x,y","q""q",,"",plain\n'


def test_reader_buffer_is_bounded(monkeypatch):
    monkeypatch.setattr(copyformat.limits, "COPY_LINE_BYTES_MAX", 100)
    reader = CopyReader(TEXT, ["a", "b"])
    reader.feed(b"1\t" + b"x" * 50)
    with pytest.raises(SqlError) as caught:
        reader.feed(b"x" * 60)
    assert caught.value.sqlstate == "54000"


def test_is_copy():
    assert copyformat.is_copy("  copy t from stdin")
    assert copyformat.is_copy("-- load\n/* a */ COPY t FROM STDIN")
    assert not copyformat.is_copy("COPYRIGHT")
    assert not copyformat.is_copy("SELECT 'COPY'")
    assert not copyformat.is_copy("-- COPY\nSELECT 1")


@pytest.mark.parametrize("raw", [{}, {"format": "csv"}, {"format": "csv", "escape": "\\", "header": "match"},
                                 {"delimiter": "|", "null": ""}])
def test_garbage_gives_records_or_a_clear_error(raw):
    """Random bytes (biased to the format's special characters), split at random: the reader
    returns records of the right width or raises SqlError with a line; nothing else."""
    options = validate_options(raw, "from")
    rng = random.Random(repr(sorted(raw.items())))  # a str seed: the same inputs in every run
    alphabet = [b"a", b"1", b"\t", b",", b"|", b'"', b"\\", b"\n", b"\r", b"\\.", b"\\N", b"\xc3\xa9", b"\xff",
                b"\\x4", b"\\0", b"\\377", b"\xc3"]
    for _ in range(400):
        data = b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        reader = CopyReader(options, ["a", "b"])
        try:
            records = list(copyformat.iter_records(reader, _random_pieces(data)))
        except SqlError as error:
            assert error.sqlstate in ("22P04", "22021", "54000"), error
            assert isinstance(error.line, int) and error.line >= 1
            continue
        assert all(len(fields) == 2 for _, fields in records)
        assert [line for line, _ in records] == sorted({line for line, _ in records})


def test_force_options_csv():
    statement = parse_statement("COPY t (a, b) FROM STDIN WITH CSV FORCE NOT NULL b")
    assert statement.options.force_not_null == ("b",)
    data = b'1,\n2,""\n,x\n'
    assert read_all(data, statement.options) == [(1, ["1", ""]), (2, ["2", ""]), (3, [None, "x"])]
    forced_null = parse_statement("COPY t FROM STDIN (FORMAT csv, FORCE_NULL (a, b))").options
    assert read_all(b'"",1\n,""\n', forced_null) == [(1, [None, "1"]), (2, [None, None])]
    with pytest.raises(SqlError) as caught:
        CopyReader(parse_statement("COPY t FROM STDIN (FORMAT csv, FORCE_NULL (zz))").options, ["a", "b"])
    assert (caught.value.sqlstate, caught.value.message) == ("42P10", 'FORCE_NULL column "zz" not referenced by COPY')
    quote_all = parse_statement("COPY t TO STDOUT (FORMAT csv, FORCE_QUOTE *)").options
    assert quote_all.force_quote == copyformat.ALL_COLUMNS
    assert encode_row(["1", None, "x"], quote_all, frozenset({0, 1, 2})) == '"1",,"x"\n'
    assert parse_statement("COPY t TO STDOUT CSV FORCE QUOTE a, b").options.force_quote == ("a", "b")
