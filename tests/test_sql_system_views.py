"""information_schema views (tables, columns, key_column_usage) against the in-memory backend."""
from __future__ import annotations

import asyncio
import io

import pytest

from compute_node.sessions.session import Session
from tools import qsql
from tests.sql_memory_backend import MemoryBackend
from tests.test_sql_statements import fails, ok, rows

TABLES_QUERY = "SELECT table_schema, table_name FROM information_schema.tables ORDER BY table_schema, table_name"


def columns_query(table: str) -> str:  # exactly what qsql's \d sends
    return ("SELECT column_name, data_type, is_nullable FROM information_schema.columns "
            f"WHERE table_name = '{table}' ORDER BY ordinal_position")


def key_query(table: str) -> str:
    return ("SELECT column_name FROM information_schema.key_column_usage "
            f"WHERE table_name = '{table}' ORDER BY ordinal_position")


@pytest.fixture
def backend():
    return MemoryBackend()


@pytest.fixture
def session(backend):
    return Session(backend, "test")


async def make_schema(session):
    await ok(session, "CREATE TABLE accounts (id BIGINT PRIMARY KEY, owner TEXT NOT NULL, note VARCHAR(20), "
                      "balance DOUBLE PRECISION, open BOOLEAN, tier SMALLINT, ref INT, label CHARACTER VARYING)")
    await ok(session, "CREATE TABLE events (kind TEXT, seq INT, body TEXT, PRIMARY KEY (seq, kind))")


async def test_tables_view(session):
    assert await rows(session, TABLES_QUERY) == []
    await make_schema(session)
    result = await ok(session, TABLES_QUERY)
    assert result.rows == [("public", "accounts"), ("public", "events")]
    assert result.columns == [("table_schema", "text"), ("table_name", "text")]
    assert result.command_tag == "SELECT 2"
    assert await rows(session, "SELECT * FROM information_schema.tables WHERE table_name = 'events'") == [
        ("quorumdb", "public", "events", "BASE TABLE")]
    assert await rows(session, "SELECT count(*) FROM information_schema.tables") == [(2,)]
    assert await rows(session, "SELECT table_name FROM information_schema.tables ORDER BY table_name DESC LIMIT 1") == [
        ("events",)]
    assert await rows(session, "SELECT t.table_name FROM INFORMATION_SCHEMA.TABLES AS t "
                               "WHERE t.table_type = 'BASE TABLE' AND t.table_name LIKE 'acc%'") == [("accounts",)]


async def test_columns_view(session):
    await make_schema(session)
    assert await rows(session, columns_query("accounts")) == [
        ("id", "bigint", "NO"), ("owner", "text", "NO"), ("note", "character varying", "YES"),
        ("balance", "double precision", "YES"), ("open", "boolean", "YES"), ("tier", "smallint", "YES"),
        ("ref", "integer", "YES"), ("label", "character varying", "YES")]
    # Primary-key columns are NOT NULL even without the constraint written out.
    assert await rows(session, columns_query("events")) == [
        ("kind", "text", "NO"), ("seq", "integer", "NO"), ("body", "text", "YES")]
    assert await rows(session, "SELECT column_name, character_maximum_length, column_default, table_catalog, "
                               "table_schema FROM information_schema.columns WHERE table_name = 'accounts' "
                               "AND data_type = 'character varying' ORDER BY column_name") == [
        ("label", None, None, "quorumdb", "public"), ("note", 20, None, "quorumdb", "public")]
    assert await rows(session, "SELECT table_name, count(*) FROM information_schema.columns "
                               "GROUP BY table_name ORDER BY 1") == [("accounts", 8), ("events", 3)]
    assert await rows(session, columns_query("nope")) == []
    await fails(session, "SELECT bogus FROM information_schema.columns", "42703", 'column "bogus" does not exist')


async def test_key_column_usage_view(session):
    await make_schema(session)
    assert await rows(session, key_query("accounts")) == [("id",)]
    assert await rows(session, key_query("events")) == [("seq",), ("kind",)]  # key order, not column order
    assert await rows(session, "SELECT constraint_name, table_schema, table_name, column_name, ordinal_position "
                               "FROM information_schema.key_column_usage ORDER BY table_name, ordinal_position") == [
        ("accounts_pkey", "public", "accounts", "id", 1),
        ("events_pkey", "public", "events", "seq", 1),
        ("events_pkey", "public", "events", "kind", 2)]


async def test_views_see_own_uncommitted_ddl_and_are_snapshots(backend, session):
    other = Session(backend, "other")
    await ok(session, "CREATE TABLE kept (id INT PRIMARY KEY)")
    await ok(session, "CREATE TABLE gone (id INT PRIMARY KEY, v TEXT)")
    await ok(session, "BEGIN")
    await ok(session, "CREATE TABLE fresh (a TEXT, b INT, PRIMARY KEY (b))")
    await ok(session, "DROP TABLE gone")
    assert await rows(session, TABLES_QUERY) == [("public", "fresh"), ("public", "kept")]
    assert await rows(session, columns_query("fresh")) == [("a", "text", "YES"), ("b", "integer", "NO")]
    assert await rows(session, columns_query("gone")) == []
    assert await rows(session, key_query("fresh")) == [("b",)]
    # Another session sees only committed DDL ...
    assert await rows(other, TABLES_QUERY) == [("public", "gone"), ("public", "kept")]
    # ... and a transaction's snapshot does not move when others commit DDL.
    await ok(other, "BEGIN")
    assert await rows(other, "SELECT count(*) FROM information_schema.tables") == [(2,)]
    await ok(session, "COMMIT")
    assert await rows(other, "SELECT count(*) FROM information_schema.tables") == [(2,)]
    await ok(other, "ROLLBACK")
    assert await rows(other, TABLES_QUERY) == [("public", "fresh"), ("public", "kept")]


async def test_views_after_rollback(session):
    await ok(session, "CREATE TABLE kept (id INT PRIMARY KEY)")
    await ok(session, "BEGIN")
    await ok(session, "DROP TABLE kept")
    await ok(session, "CREATE TABLE temp (id INT PRIMARY KEY)")
    assert await rows(session, TABLES_QUERY) == [("public", "temp")]
    await ok(session, "ROLLBACK")
    assert await rows(session, TABLES_QUERY) == [("public", "kept")]
    assert await rows(session, key_query("temp")) == []


async def test_views_are_read_only(session):
    await make_schema(session)
    await fails(session, "INSERT INTO information_schema.tables VALUES ('a', 'b', 'c', 'd')", "0A000",
                'cannot insert into view "tables"')
    await fails(session, "UPDATE information_schema.columns SET column_name = 'x'", "0A000",
                'cannot update view "columns"')
    await fails(session, "DELETE FROM information_schema.key_column_usage", "0A000",
                'cannot delete from view "key_column_usage"')
    await fails(session, "DROP TABLE information_schema.tables", "42809", '"tables" is not a table')
    await fails(session, "CREATE TABLE information_schema.mine (id INT PRIMARY KEY)", "42809")
    await fails(session, "SELECT * FROM information_schema.tables FOR UPDATE", "0A000")
    await fails(session, "SELECT * FROM information_schema.nope", "42P01",
                'relation "information_schema.nope" does not exist')
    await ok(session, "DROP TABLE IF EXISTS information_schema.nope")
    assert await rows(session, "SELECT count(*) FROM information_schema.tables") == [(2,)]


async def test_user_tables_named_like_views_and_public_schema(session):
    await ok(session, "CREATE TABLE tables (id INT PRIMARY KEY, name TEXT)")
    await ok(session, "INSERT INTO public.tables VALUES (1, 'mine')")
    assert await rows(session, "SELECT name FROM tables") == [("mine",)]  # unqualified: the user table
    assert await rows(session, "SELECT id FROM public.tables WHERE id = 1") == [(1,)]
    assert await rows(session, TABLES_QUERY) == [("public", "tables")]
    # Views can feed INSERT ... SELECT.
    await ok(session, "CREATE TABLE names (name TEXT PRIMARY KEY)")
    await ok(session, "INSERT INTO names SELECT table_name FROM information_schema.tables")
    assert await rows(session, "SELECT name FROM names ORDER BY name") == [("names",), ("tables",)]


class _SessionConnection:
    """qsql's ConnectionLike over a Session, each call on its own event loop (the shell is synchronous)."""

    def __init__(self, session: Session):
        self.session = session
        self.transaction_status = "I"

    def execute_script(self, sql):
        results = asyncio.run(self.session.execute(sql))
        self.transaction_status = self.session.transaction_status
        return results

    def close(self):
        pass


def test_qsql_dt_and_d_against_the_engine():
    async def setup():
        session = Session(MemoryBackend(), "qsql")
        await make_schema(session)
        return session
    session = asyncio.run(setup())
    out, err = io.StringIO(), io.StringIO()
    shell = qsql.Shell(_SessionConnection(session), qsql.Settings(), out=out, err=err,
                       is_connection_error=lambda error: False)
    assert shell.run_meta("\\dt") is qsql.MetaOutcome.CONTINUE
    assert shell.run_meta("\\d events") is qsql.MetaOutcome.CONTINUE
    assert shell.run_meta("\\d nope") is qsql.MetaOutcome.FAILED
    text = out.getvalue()
    assert " public | accounts | table" in text and " public | events   | table" in text
    assert ' seq    | integer |           | not null | ' in text  # psql's Column|Type|Collation|Nullable|Default
    assert ' body   | text    |           |          | ' in text
    assert 'Table "public.events"' in text
    assert '"events_pkey" PRIMARY KEY, btree (seq, kind)' in text
    assert 'Did not find any relation named "nope".' in err.getvalue()
