"""Describe: a statement's parameter types and result columns, compiled, never run
(compute_node/sql/describe.py). Types follow PostgreSQL's inference: declared, else from the
column a parameter is compared with or assigned to, the type it is cast to, bigint for LIMIT,
text when nothing constrains it."""
from __future__ import annotations

import pytest

from compute_node.sessions.session import Session
from compute_node.sql import types
from quorumdb import errors
from quorumdb.errors import SqlError
from tests.sql_memory_backend import MemoryBackend


@pytest.fixture
async def session():
    backend = MemoryBackend()
    session = Session(backend, "d")
    for sql in ("CREATE TABLE t (id INT PRIMARY KEY, name TEXT, n BIGINT, at TIMESTAMP, price NUMERIC(8, 2))",
                "INSERT INTO t VALUES (1, 'a', 10, '2024-01-01', 1.50)"):
        assert (await session.execute(sql))[-1].error is None
    return session


async def described(session: Session, sql: str, count: int, declared=()):
    description = await session.describe(sql, count, declared)
    return [t.pg_name for t in description.param_types], description.columns


CASES = [
    ("SELECT name FROM t WHERE id = $1", 1, ["integer"], [("name", "text")]),
    ("SELECT * FROM t WHERE n BETWEEN $1 AND $2 LIMIT $3", 3, ["bigint", "bigint", "bigint"], None),
    ("SELECT id FROM t WHERE at > $1 AND name LIKE $2", 2, ["timestamp without time zone", "text"], [("id", "integer")]),
    ("SELECT $1::int + 1 AS x, $2", 2, ["integer", "text"], [("x", "integer"), ("?column?", "text")]),
    ("SELECT count(*) FROM t WHERE id IN ($1, $2)", 2, ["integer", "integer"], [("count", "bigint")]),
    ("INSERT INTO t (id, name, price) VALUES ($1, $2, $3)", 3, ["integer", "text", "numeric"], None),
    ("INSERT INTO t (id, n) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET name = $3 RETURNING id, n * 2 AS twice", 3,
     ["integer", "bigint", "text"], [("id", "integer"), ("twice", "bigint")]),
    ("UPDATE t SET at = $1 WHERE name = $2", 2, ["timestamp without time zone", "text"], None),
    ("DELETE FROM t WHERE id = $1 RETURNING name", 1, ["integer"], [("name", "text")]),
    ("SELECT 1 AS one", 0, [], [("one", "integer")]),
    ("BEGIN", 0, [], None),
]


@pytest.mark.parametrize("sql, count, param_types, columns", CASES)
async def test_types_and_columns_are_inferred(session, sql, count, param_types, columns):
    got_types, got_columns = await described(session, sql, count)
    assert got_types == param_types
    if columns is not None or sql.startswith(("BEGIN", "INSERT INTO t (id, name, price)", "UPDATE")):
        assert got_columns == columns
    else:
        assert got_columns and got_columns[0][0] == "id"


async def test_declared_types_win_and_nothing_runs(session):
    backend = session.backend
    commits, gets = len(backend.commits), backend.get_calls
    assert await described(session, "SELECT id FROM t WHERE id = $1", 1, [types.BIGINT]) == (["bigint"], [("id", "integer")])
    assert await described(session, "INSERT INTO t (id) VALUES ($1)", 1) == (["integer"], None)
    assert await described(session, "DELETE FROM t", 0) == ([], None)
    assert len(backend.commits) == commits, "Describe committed something"
    assert backend.get_calls - gets <= 3, "Describe read rows (only schema-version checks may read)"
    assert (await session.execute("SELECT count(*) FROM t"))[-1].rows == [(1,)]


async def test_errors_are_those_the_statement_would_raise(session):
    with pytest.raises(SqlError) as raised:
        await session.describe("SELECT nosuch FROM t WHERE id = $1", 1)
    assert raised.value.sqlstate == errors.UNDEFINED_COLUMN
    with pytest.raises(SqlError) as raised:
        await session.describe("SELECT * FROM missing", 0)
    assert raised.value.sqlstate == errors.UNDEFINED_TABLE
    with pytest.raises(SqlError) as raised:
        await session.describe("SELECT 1; SELECT 2", 0)
    assert raised.value.sqlstate == errors.SYNTAX_ERROR


async def test_a_described_statement_runs_with_parameters_afterwards(session):
    assert await described(session, "SELECT name FROM t WHERE id = $1", 1) == (["integer"], [("name", "text")])
    result = (await session.execute("SELECT name FROM t WHERE id = $1", ["1"]))[-1]
    assert result.error is None and result.rows == [("a",)]
    result = (await session.execute("SELECT name FROM t WHERE id = $1", ["'x'"]))[-1]
    assert result.error is not None and result.error.sqlstate == errors.INVALID_TEXT_REPRESENTATION
