"""Client-side $n parameter substitution and literal quoting (pure)."""
from __future__ import annotations

import datetime
import decimal
import random

import pytest
import sqlglot

from quorumdb import client as qclient
from quorumdb.client import quote_literal, substitute_params


def test_quote_literals():
    assert quote_literal(None) == "NULL"
    assert quote_literal(True) == "TRUE" and quote_literal(False) == "FALSE"
    assert quote_literal(42) == "42"
    assert quote_literal(-5) == " -5"
    assert quote_literal(1.25) == "1.25"
    assert quote_literal(float("nan")) == "'NaN'::float8"
    assert quote_literal(float("-inf")) == "'-Infinity'::float8"
    assert quote_literal(decimal.Decimal("-1.50")) == " -1.50"
    assert quote_literal("it's") == "'it''s'"
    assert quote_literal("back\\slash") == "'back\\slash'"
    assert quote_literal(b"\x00\xffA") == "'\\x00ff41'::bytea"
    assert quote_literal(datetime.date(2024, 2, 29)) == "'2024-02-29'"
    assert quote_literal(datetime.datetime(2024, 2, 29, 1, 2, 3)) == "'2024-02-29 01:02:03'"
    with pytest.raises(ValueError):
        quote_literal("nul\x00")
    with pytest.raises(TypeError):
        quote_literal(object())


def test_substitution_skips_literals_identifiers_and_comments():
    sql = "SELECT $1, '$1', \"$1\", $2 -- $1\n, /* $2 /* nested $1 */ */ $$ $1 $$, $tag$ $2 $tag$, E'\\' $1', a$1"
    out = substitute_params(sql, ["x", 7])
    assert out == "SELECT 'x', '$1', \"$1\", 7 -- $1\n, /* $2 /* nested $1 */ */ $$ $1 $$, $tag$ $2 $tag$, E'\\' $1', a$1"


def test_substitution_negative_number_never_makes_a_comment():
    assert substitute_params("SELECT 3-$1", [-2]) == "SELECT 3- -2"
    assert sqlglot.parse_one(substitute_params("SELECT 3-$1", [-2]), read="postgres").sql() == "SELECT 3 - -2"


def test_substitution_missing_parameter_is_42p02():
    with pytest.raises(qclient.DatabaseError) as raised:
        substitute_params("SELECT $1, $3", [1, 2])
    assert raised.value.sqlstate == "42P02"
    with pytest.raises(qclient.DatabaseError):
        substitute_params("SELECT $0", [1])


def test_quoted_strings_survive_a_sql_parser_randomized():
    """Any string, once quoted and substituted, parses back to exactly that string."""
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    alphabet = "ab'\"\\$-/*;\n\t é€1"
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 20)))
        sql = substitute_params("SELECT $1 AS v, $2 AS w", [text, rng.randrange(-100, 100)])
        parsed = sqlglot.parse_one(sql, read="postgres")
        literal = parsed.expressions[0].this
        assert literal.this == text, f"seed {seed}: {text!r} came back as {literal.this!r} from {sql!r}"
        assert len(parsed.expressions) == 2, f"seed {seed}: {sql!r}"


def test_rowcount_from_command_tag():
    assert qclient.Result([], [], "INSERT 0 3").rowcount == 3
    assert qclient.Result([], [], "UPDATE 2").rowcount == 2
    assert qclient.Result([], [], "SELECT 0").rowcount == 0
    assert qclient.Result([], [], "BEGIN").rowcount == -1
    assert qclient.Result([], [(1,)], "SELECT 1").scalar() == 1
