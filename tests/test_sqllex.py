"""quorumdb.sqllex's statement splitting (psql's rules) and what it reports open at the end.

tests/test_sqllex_psql_fuzz.py checks the same splits against real psql on random scripts;
these cases name the rules one by one.
"""
from __future__ import annotations

import random

import pytest

from quorumdb import sqllex
from quorumdb.sqllex import (OPEN_COMMENT, OPEN_DOLLAR, OPEN_NONE, OPEN_PAREN, OPEN_QUOTED_IDENT,
                             OPEN_STRING, Split)


@pytest.mark.parametrize(("sql", "statements", "rest"), [
    ("select 1; select 2;", ["select 1;", "select 2;"], ""),
    ("  \n-- lead; comment\n select 1 -- tail; comment\n;", ["select 1 -- tail; comment\n;"], ""),
    ("/* kept; */ select 1; /* rest */", ["/* kept; */ select 1;"], "/* rest */"),
    (";;", [";", ";"], ""),
    ("select 'it''s;'; select 'a\\'; x", ["select 'it''s;';", "select 'a\\';"], "x"),
    ("select E'\\';' ; select e'\\\\'; x", ["select E'\\';' ;", "select e'\\\\';"], "x"),
    ("select E'''\\';';", ["select E'''\\';';"], ""),
    ("select B'0;1', X'f;', N'n;', U&'u;'; x", ["select B'0;1', X'f;', N'n;', U&'u;';"], "x"),
    ('select "a;""b" from t; x', ['select "a;""b" from t;'], "x"),
    ("select $$a;b$$; select $t$ $$ ; $t$; x", ["select $$a;b$$;", "select $t$ $$ ; $t$;"], "x"),
    ("select $1; select a$1; select a$$; x", ["select $1;", "select a$1;", "select a$$;"], "x"),
    ("select $1$a;$1$", ["select $1$a;"], "$1$"),
    ("select $é$;$é$; x", ["select $é$;$é$;"], "x"),
    ("/* a; /* b; */ c; */ select 1; x", ["/* a; /* b; */ c; */ select 1;"], "x"),
    ("select (1; 2); select ((;)); x", ["select (1; 2);", "select ((;));"], "x"),
    ("select ) ; x", ["select ) ;"], "x"),
    ("select 1e'\\'; x", ["select 1e'\\';"], "x"),
    ("create function f() returns int begin atomic select 1; select case when a then 1 end; end; x",
     ["create function f() returns int begin atomic select 1; select case when a then 1 end; end;"], "x"),
    ("create or replace procedure p() begin atomic select 1; end; x",
     ["create or replace procedure p() begin atomic select 1; end;"], "x"),
    ("create table begin (a int); begin; select 1; end;",
     ["create table begin (a int);", "begin;", "select 1;", "end;"], ""),
    ("select 1 -- c\rselect 2; x", ["select 1 -- c\rselect 2;"], "x"),
])
def test_split_script(sql, statements, rest):
    split = sqllex.split_script(sql)
    assert (split.statements, split.rest) == (statements, rest)


@pytest.mark.parametrize(("sql", "rest", "open_"), [
    ("", "", OPEN_NONE),
    ("select 1; -- only a comment", "", OPEN_NONE),
    ("select 1", "select 1", OPEN_NONE),
    ("select 'ab", "select 'ab", OPEN_STRING),
    ("select 'a''", "select 'a''", OPEN_STRING),
    ("select 'a'''", "select 'a'''", OPEN_NONE),
    ("select E'a\\'", "select E'a\\'", OPEN_STRING),
    ("select E'a\\", "select E'a\\", OPEN_STRING),
    ("select E'a\\\\'", "select E'a\\\\'", OPEN_NONE),
    ("select U&'x", "select U&'x", OPEN_STRING),
    ('select "ab', 'select "ab', OPEN_QUOTED_IDENT),
    ('select "a"""', 'select "a"""', OPEN_NONE),
    ("select $$", "select $$", OPEN_DOLLAR),
    ("select $q$ a $$", "select $q$ a $$", OPEN_DOLLAR),
    ("select $q$ a $q", "select $q$ a $q", OPEN_DOLLAR),
    ("select $q$ a $q$", "select $q$ a $q$", OPEN_NONE),
    ("select $ab", "select $ab", OPEN_NONE),
    ("/* a /* b */", "/* a /* b */", OPEN_COMMENT),
    ("/* a /* b */ */", "/* a /* b */ */", OPEN_NONE),
    ("select (1, (2", "select (1, (2", OPEN_PAREN),
    ("select (1, 'x", "select (1, 'x", OPEN_STRING),
    ("select (1) -- c", "select (1) -- c", OPEN_NONE),
])
def test_what_is_open_at_the_end(sql, rest, open_):
    split = sqllex.split_script(sql)
    assert (split.rest, split.open) == (rest, open_)


def test_split_statements_drops_semicolons_blanks_and_empty_statements():
    assert sqllex.split_statements("select 1 ; ;\n -- c\n;/* c */; select (2;\n3) ") == \
        ["select 1", "select (2;\n3)"]
    assert sqllex.split_statements("-- c; \n /* ; */ ") == []


def test_statement_spans_point_into_the_text():
    sql = " -- c\n select 1 ; /* x */ select 2;  select 3 "
    spans = sqllex.statement_spans(sql)
    assert [sql[start:end] for start, end in spans] == ["select 1 ", "/* x */ select 2", "select 3 "]


def test_is_blank():
    assert sqllex.is_blank(" -- a\n /* b /* c */ */ \t")
    assert not sqllex.is_blank(" -- a\n ;")
    assert sqllex.is_blank("")


def test_whitespace_is_postgresql_s_not_unicode_s():
    # A no-break space is an identifier character for PostgreSQL: a\u00a0$b$ is one name and
    # does not open a dollar quote.
    assert sqllex.split_script("select a\u00a0$b$; x").statements == ["select a\u00a0$b$;"]
    assert [t.kind for t in sqllex.tokens("a\vb")] == [sqllex.WORD, sqllex.OTHER, sqllex.WORD]


def test_splitter_feeds_lines_and_tracks_what_is_open():
    splitter = sqllex.Splitter()
    assert (splitter.feed("select 'a;\n"), splitter.open) == ([], OPEN_STRING)
    assert (splitter.feed("b', (1;\n"), splitter.open) == ([], OPEN_PAREN)
    assert (splitter.feed("2) /* ; \n"), splitter.open) == ([], OPEN_COMMENT)
    assert (splitter.feed("*/ $x$\n"), splitter.open) == ([], OPEN_DOLLAR)
    assert (splitter.feed("; $x$ \"q\n"), splitter.open) == ([], OPEN_QUOTED_IDENT)
    assert splitter.feed('"; select 2; sel') == ["select 'a;\nb', (1;\n2) /* ; \n*/ $x$\n; $x$ \"q\n\";",
                                                 "select 2;"]
    assert (splitter.pending, splitter.open, splitter.pending_is_blank()) == ("sel", OPEN_NONE, False)
    splitter.reset()
    assert (splitter.pending, splitter.open, splitter.buffered) == ("", OPEN_NONE, 0)
    assert splitter.feed(" -- c\n /* c */") == []
    assert (splitter.pending, splitter.pending_is_blank()) == ("/* c */", True)


@pytest.mark.parametrize("sql", [
    "select 'a;b', $q$x;y$q$, \"c;d\" /* ; /* ; */ */ -- ;\n from t; select E'\\'';\n",
    "select a$1, $1, 1e'x', $ab$;$ab$; select x--y\n;z; /**/; create function f() begin atomic x; end; y",
    "select -/* x */-1; select $tag$ $ta $tag $tag$; select U&'a''b'; select (((;))); select 'open",
])
def test_feeding_in_any_pieces_gives_the_same_split(sql):
    whole = sqllex.split_script(sql)
    rng = random.Random(7)
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(sql)), rng.randint(1, len(sql) - 1)))
        splitter = sqllex.Splitter()
        statements = []
        for start, end in zip([0] + cuts, cuts + [len(sql)]):
            statements += splitter.feed(sql[start:end])
        assert Split(statements, splitter.pending, splitter.open) == whole


def test_feeding_a_long_statement_line_by_line_stays_linear():
    """Each feed rescans only the short tail after the last settled token, not the statement."""
    splitter = sqllex.Splitter()
    lines = ["insert into t values\n"] + [f"({n}, 'row {n};'),\n" for n in range(20000)] + ["(0, '');\n"]
    statements = []
    for line in lines:
        statements += splitter.feed(line)
        assert len(splitter._tail) <= len(line)
    assert len(statements) == 1 and statements[0] == "".join(lines)[:-1]
    assert splitter.buffered == 1 and splitter.pending == ""
