"""Savepoints, cursors, intervals and regular expressions: the session engine, the PostgreSQL
endpoint with psycopg (in-memory backend), and both a real cluster's PostgreSQL endpoint and its
gRPC client (the corpus file tests/differential/corpus/12_expressions_session.sql compares the
answers themselves with PostgreSQL)."""
from __future__ import annotations

import datetime
import random

import psycopg
import pytest

from compute_node.sessions.session import Session
from compute_node.sql import interval as interval_mod
from compute_node.sql import regex as regex_mod
from quorumdb import limits
from quorumdb.client import connect as grpc_connect
from tests.pgwire_util import ServerThread
from tests.sql_memory_backend import MemoryBackend
from tests.test_pgwire_cluster import make_token


async def run(session: Session, sql: str):
    results = await session.execute(sql)
    assert results[-1].error is None, results[-1].error
    return results[-1]


# --- session engine ---------------------------------------------------------------------------
async def test_rollback_to_savepoint_restores_the_write_buffer_and_locks():
    session = Session(MemoryBackend(), "sp", rng=random.Random(1))
    await run(session, "CREATE TABLE t (id int PRIMARY KEY, v int)")
    await run(session, "INSERT INTO t VALUES (1, 1)")
    await run(session, "BEGIN")
    await run(session, "UPDATE t SET v = 2 WHERE id = 1")
    txn = session.transaction
    buffered = dict(txn.write_buffer)
    locks = set(txn.lock_keys)
    await run(session, "SAVEPOINT a")
    await run(session, "INSERT INTO t VALUES (2, 2)")
    await run(session, "SELECT * FROM t WHERE id = 1 FOR UPDATE")
    assert len(txn.write_buffer) > len(buffered)
    await run(session, "ROLLBACK TO SAVEPOINT a")
    assert txn.write_buffer == buffered, "the insert made after the savepoint is gone, the update stays"
    assert txn.lock_keys == locks | set(txn.schema_reads)
    await run(session, "COMMIT")
    assert (await run(session, "SELECT id, v FROM t ORDER BY id")).rows == [(1, 2)]


async def test_an_error_then_rollback_to_keeps_the_transaction_usable():
    session = Session(MemoryBackend(), "sp", rng=random.Random(1))
    await run(session, "CREATE TABLE t (id int PRIMARY KEY)")
    await run(session, "BEGIN; INSERT INTO t VALUES (1); SAVEPOINT s")
    failed = await session.execute("INSERT INTO t VALUES (1)")
    assert failed[-1].error.sqlstate == "23505"
    assert session.transaction_status == "E"
    await run(session, "ROLLBACK TO s")
    assert session.transaction_status == "T"
    await run(session, "INSERT INTO t VALUES (2); COMMIT")
    assert (await run(session, "SELECT id FROM t ORDER BY id")).rows == [(1,), (2,)]


async def test_savepoints_and_cursors_are_bounded(monkeypatch):
    monkeypatch.setattr(limits, "SAVEPOINTS_MAX", 2)
    monkeypatch.setattr(limits, "SESSION_CURSORS_MAX", 1)
    session = Session(MemoryBackend(), "bounds", rng=random.Random(1))
    await run(session, "BEGIN; SAVEPOINT a; SAVEPOINT b")
    third = await session.execute("SAVEPOINT c")
    assert third[-1].error.sqlstate == "54000"
    await run(session, "ROLLBACK; BEGIN; DECLARE one CURSOR FOR SELECT 1")
    second = await session.execute("DECLARE two CURSOR FOR SELECT 2")
    assert second[-1].error.sqlstate == "54000"
    await run(session, "ROLLBACK")


async def test_a_cursor_sees_the_transaction_as_it_was_at_declare():
    session = Session(MemoryBackend(), "cur", rng=random.Random(1))
    await run(session, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2), (3)")
    await run(session, "BEGIN; DECLARE c CURSOR FOR SELECT id FROM t ORDER BY id")
    await run(session, "INSERT INTO t VALUES (4)")
    fetched = await run(session, "FETCH 2 FROM c")
    assert (fetched.command_tag, fetched.rows) == ("FETCH 2", [(1,), (2,)])
    assert (await run(session, "MOVE 5 IN c")).command_tag == "MOVE 1"
    assert (await run(session, "FETCH ALL FROM c")).command_tag == "FETCH 0"
    await run(session, "COMMIT")
    missing = await session.execute("FETCH c")
    assert missing[-1].error.sqlstate == "34000", "a cursor ends with its transaction"


def test_interval_arithmetic_follows_postgres():
    parse, fmt = interval_mod.parse_interval, interval_mod.format_interval
    assert fmt(parse("1 day 02:03:00")) == "1 day 02:03:00"
    assert fmt(parse("-1 year 2 months")) == "-10 mons"
    assert fmt(interval_mod.multiply(parse("1 mon"), 0.5)) == "15 days"
    assert fmt(interval_mod.between_timestamps(datetime.datetime(2024, 1, 2, 3), datetime.datetime(2023, 1, 1))) \
        == "366 days 03:00:00"
    january_end = datetime.datetime(2024, 1, 31)
    assert interval_mod.add_to_timestamp(january_end, parse("1 month")) == datetime.datetime(2024, 2, 29)
    assert parse("1 mon") == parse("30 days") and hash(parse("1 mon")) == hash(parse("30 days"))


def test_regex_match_extent_is_postgres_leftmost_longest():
    pattern = regex_mod.compile_pattern("a|ab")
    assert regex_mod.substring(pattern, "xabc") == "ab", "a top-level alternation is greedy: longest wins"
    lazy = regex_mod.compile_pattern("a.*?c")
    assert regex_mod.substring(lazy, "xabcabc") == "abc"
    with pytest.raises(Exception) as refused:
        regex_mod.compile_pattern(r"[[.a.]]")
    assert refused.value.sqlstate == "0A000"


# --- the PostgreSQL endpoint with psycopg ----------------------------------------------------
def exercise_with_psycopg(dsn: str, table: str) -> None:
    """Nested psycopg transactions (savepoints), cursors and intervals through the wire protocol."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, note text)")
        with conn.transaction():
            conn.execute(f"INSERT INTO {table} VALUES (1, 'kept')")
            with pytest.raises(psycopg.errors.UniqueViolation):
                with conn.transaction():  # SAVEPOINT "_pg3_1" ... ROLLBACK TO SAVEPOINT
                    conn.execute(f"INSERT INTO {table} VALUES (2, 'rolled back')")
                    conn.execute(f"INSERT INTO {table} VALUES (1, 'duplicate')")
            with conn.transaction():  # SAVEPOINT ... RELEASE SAVEPOINT
                conn.execute(f"INSERT INTO {table} VALUES (3, 'released')")
        rows = conn.execute(f"SELECT id, note FROM {table} ORDER BY id").fetchall()
        assert rows == [(1, "kept"), (3, "released")]
        with conn.transaction():
            cursor = conn.cursor()
            cursor.execute(f"DECLARE c CURSOR FOR SELECT id, note FROM {table} ORDER BY id")
            cursor.execute("FETCH 1 FROM c")
            assert cursor.statusmessage == "FETCH 1"
            assert cursor.fetchall() == [(1, "kept")]
            cursor.execute("FETCH ALL FROM c")
            assert cursor.fetchall() == [(3, "released")]
            cursor.execute("CLOSE c")
            assert cursor.statusmessage == "CLOSE CURSOR"
            with pytest.raises(psycopg.errors.InvalidCursorName):
                cursor.execute("FETCH c")
        cursor = conn.execute("SELECT INTERVAL '1 day 02:03:00', now() - INTERVAL '1 hour' < now(), 'ab' ~ 'b'")
        assert cursor.description[0].type_code == 1186
        assert cursor.fetchone() == (datetime.timedelta(days=1, hours=2, minutes=3), True, True)
        with pytest.raises(psycopg.errors.InvalidRegularExpression):
            conn.execute("SELECT 'a' ~ '('")
        span = datetime.timedelta(days=-1, seconds=3, microseconds=5)  # psycopg sends it in binary
        assert conn.execute("SELECT %s::interval, TIMESTAMP '2024-01-02' + %s", [span, span]).fetchone() == (
            span, datetime.datetime(2024, 1, 1, 0, 0, 3, 5))
        binary = conn.cursor(binary=True)
        answer = binary.execute("SELECT INTERVAL '1 day 00:00:03.5'").fetchone()
        assert answer == (datetime.timedelta(days=1, seconds=3.5),)
        cursor = conn.execute(f"SELECT array_agg(id ORDER BY id DESC), array_agg(note ORDER BY id), "
                              f"regexp_match('k=v', '(\\w)=(\\w)') FROM {table}")
        assert [column.type_code for column in cursor.description] == [1007, 1009, 1009]
        assert cursor.fetchone() == ([3, 1], ["kept", "released"], ["k", "v"])


def test_psycopg_savepoints_cursors_and_intervals_in_memory():
    server = ServerThread()
    try:
        exercise_with_psycopg(server.dsn(), "pgsp")
    finally:
        server.stop()


@pytest.mark.cluster
def test_savepoints_and_cursors_on_a_cluster_through_postgres_and_grpc(shared_cluster):
    config = shared_cluster.config
    node = config.computes[0]
    token = make_token(config.data_dir)
    dsn = (f"host=127.0.0.1 port={config.pg_port(node.name)} user=admin password={token} dbname=postgres "
           "connect_timeout=10")
    exercise_with_psycopg(dsn, "clsp")
    client = grpc_connect(node.host, node.port)
    try:
        results = client.execute_script(
            "BEGIN; INSERT INTO clsp VALUES (10, 'grpc'); SAVEPOINT a; INSERT INTO clsp VALUES (11, 'gone'); "
            "ROLLBACK TO SAVEPOINT a; DECLARE g CURSOR FOR SELECT id FROM clsp WHERE id >= 10 ORDER BY id; "
            "FETCH ALL FROM g; COMMIT")
        assert [r.error for r in results] == [None] * len(results)
        assert results[-2].command_tag == "FETCH 1" and list(results[-2].rows) == [(10,)]
        after = client.execute_script("SELECT id FROM clsp WHERE id >= 10 ORDER BY id")[-1]
        assert list(after.rows) == [(10,)]
    finally:
        client.close()


def test_set_local_lasts_until_the_block_ends_and_follows_savepoints():
    server = ServerThread()
    try:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            def show() -> str:
                return conn.execute("SHOW statement_timeout").fetchone()[0]
            conn.execute("SET LOCAL statement_timeout = '5s'")  # outside a block: a warning, no effect
            assert show() == "0"
            conn.execute("BEGIN")
            conn.execute("SET LOCAL statement_timeout = '5s'")
            conn.execute("SAVEPOINT a")
            conn.execute("SET LOCAL statement_timeout = '7s'")
            conn.execute("SET application_name = 'inner'")
            assert show() == "7s"
            conn.execute("ROLLBACK TO a")
            assert show() == "5s"
            assert conn.execute("SHOW application_name").fetchone()[0] == ""
            conn.execute("SET application_name = 'kept'")
            conn.execute("COMMIT")
            assert show() == "0", "SET LOCAL ends with its transaction"
            assert conn.execute("SHOW application_name").fetchone()[0] == "kept", "a plain SET outlives it"
            conn.execute("BEGIN")
            conn.execute("SET application_name = 'lost'")
            conn.execute("ROLLBACK")
            assert conn.execute("SHOW application_name").fetchone()[0] == "kept", "a rolled-back SET is undone"
    finally:
        server.stop()
