"""Session transactions: blocks, read-your-writes, rollback, failed blocks, OCC, DDL, limits."""
from __future__ import annotations

import pytest

from compute_node.sessions.session import Session
from quorumdb import errors, limits
from quorumdb.errors import SqlError
from tests.sql_memory_backend import MemoryBackend
from tests.test_sql_statements import ok, rows


@pytest.fixture
def backend():
    return MemoryBackend()


@pytest.fixture
def session(backend):
    return Session(backend, "a")


@pytest.fixture
def other(backend):
    return Session(backend, "b")


async def error_of(session: Session, sql: str) -> SqlError:
    results = await session.execute(sql)
    assert results[-1].error is not None, f"{sql} should fail"
    return results[-1].error


async def setup_table(session):
    await ok(session, "CREATE TABLE t (id INT PRIMARY KEY, v TEXT)")
    await ok(session, "INSERT INTO t VALUES (1, 'one'), (2, 'two'), (3, 'three')")


async def test_status_and_tags(session):
    assert session.transaction_status == "I"
    results = await session.execute("BEGIN; SELECT 1; COMMIT")
    assert [r.command_tag for r in results] == ["BEGIN", "SELECT 1", "COMMIT"]
    assert session.transaction_status == "I"
    for begin in ("BEGIN", "BEGIN WORK", "START TRANSACTION", "BEGIN ISOLATION LEVEL REPEATABLE READ"):
        expected = "START TRANSACTION" if begin.startswith("START") else "BEGIN"  # PostgreSQL's tags
        assert (await ok(session, begin)).command_tag == expected
        assert session.transaction_status == "T"
        assert (await ok(session, "END")).command_tag == "COMMIT"
    await ok(session, "BEGIN")
    assert (await ok(session, "ABORT")).command_tag == "ROLLBACK"
    assert session.transaction_status == "I"
    # COMMIT / ROLLBACK outside a block only warn in PostgreSQL.
    assert (await ok(session, "COMMIT")).command_tag == "COMMIT"
    assert (await ok(session, "ROLLBACK")).command_tag == "ROLLBACK"
    assert (await error_of(session, "BEGIN ISOLATION LEVEL SERIALIZABLE")).sqlstate == "0A000"
    # Savepoints exist only inside a block (tests/test_sql_session_commands.py has the rest).
    assert (await error_of(session, "SAVEPOINT s")).sqlstate == "25P01"


async def test_read_your_writes_and_commit(session, other, backend, monkeypatch):
    monkeypatch.setattr(limits, "SCAN_PAGE_MAX", 2)  # scans merge the buffer across pages
    await setup_table(session)
    await ok(session, "BEGIN")
    await ok(session, "INSERT INTO t VALUES (0, 'zero'), (5, 'five')")
    await ok(session, "UPDATE t SET v = 'TWO' WHERE id = 2")
    await ok(session, "DELETE FROM t WHERE id = 3")
    expected = [(0, "zero"), (1, "one"), (2, "TWO"), (5, "five")]
    assert await rows(session, "SELECT * FROM t") == expected
    assert await rows(session, "SELECT v FROM t WHERE id = 3") == []
    assert await rows(session, "SELECT v FROM t WHERE id IN (2, 5)") == [("TWO",), ("five",)]
    assert await rows(session, "SELECT count(*) FROM t WHERE id >= 1") == [(3,)]
    # Another session sees none of it until COMMIT.
    assert await rows(other, "SELECT * FROM t") == [(1, "one"), (2, "two"), (3, "three")]
    commits = len(backend.commits)
    assert (await ok(session, "COMMIT")).command_tag == "COMMIT"
    assert len(backend.commits) == commits + 1
    assert await rows(other, "SELECT * FROM t") == expected


async def test_rollback_discards(session, backend):
    await setup_table(session)
    commits = len(backend.commits)
    await ok(session, "BEGIN; INSERT INTO t VALUES (9, 'x'); DELETE FROM t WHERE id = 1")
    assert (await ok(session, "ROLLBACK")).command_tag == "ROLLBACK"
    assert len(backend.commits) == commits
    assert await rows(session, "SELECT id FROM t") == [(1,), (2,), (3,)]


async def test_close_rolls_back(session, other):
    await setup_table(session)
    await ok(session, "BEGIN; INSERT INTO t VALUES (9, 'x')")
    await session.close()
    assert session.transaction_status == "I"
    assert await rows(other, "SELECT id FROM t WHERE id = 9") == []


async def test_failed_block(session):
    await setup_table(session)
    await ok(session, "BEGIN; INSERT INTO t VALUES (7, 'seven')")
    results = await session.execute("SELECT 1; SELECT nope FROM t; SELECT 2")
    assert len(results) == 2 and results[1].error.sqlstate == "42703"
    assert session.transaction_status == "E"
    error = await error_of(session, "SELECT 1")
    assert error.sqlstate == errors.IN_FAILED_SQL_TRANSACTION
    assert error.message == "current transaction is aborted, commands ignored until end of transaction block"
    assert (await error_of(session, "BEGIN")).sqlstate == errors.IN_FAILED_SQL_TRANSACTION
    assert (await ok(session, "COMMIT")).command_tag == "ROLLBACK"
    assert session.transaction_status == "I"
    assert await rows(session, "SELECT id FROM t WHERE id = 7") == []
    # A syntax error inside a block fails it too; ROLLBACK leaves it.
    await ok(session, "BEGIN")
    assert (await error_of(session, "SELEC")).sqlstate == "42601"
    assert session.transaction_status == "E"
    assert (await ok(session, "ROLLBACK")).command_tag == "ROLLBACK"
    assert session.transaction_status == "I"


async def test_autocommit_statements_are_separate(session):
    await setup_table(session)
    results = await session.execute("INSERT INTO t VALUES (4, 'four'); INSERT INTO t VALUES (1, 'dup'); "
                                    "INSERT INTO t VALUES (5, 'five')")
    assert [r.command_tag for r in results] == ["INSERT 0 1", ""]
    assert results[1].error.sqlstate == "23505"
    assert session.transaction_status == "I"
    assert await rows(session, "SELECT id FROM t") == [(1,), (2,), (3,), (4,)]


async def test_syntax_error_anywhere_runs_nothing(session):
    await setup_table(session)
    results = await session.execute("INSERT INTO t VALUES (4, 'four'); SELEC 1")
    assert len(results) == 1 and results[0].error.sqlstate == "42601"
    assert await rows(session, "SELECT count(*) FROM t") == [(3,)]
    assert await session.execute("") == []
    assert await session.execute(" ; ;") == []


async def test_snapshot_isolation_and_first_committer_wins(session, other):
    await setup_table(session)
    await ok(session, "BEGIN")
    assert await rows(session, "SELECT v FROM t WHERE id = 1") == [("one",)]
    await ok(other, "UPDATE t SET v = 'other' WHERE id = 1")
    # The snapshot does not move.
    assert await rows(session, "SELECT v FROM t WHERE id = 1") == [("one",)]
    await ok(session, "UPDATE t SET v = 'mine' WHERE id = 1")
    results = await session.execute("COMMIT")
    assert results[0].error.sqlstate == errors.SERIALIZATION_FAILURE
    assert "OC000" in results[0].error.message
    assert session.transaction_status == "I"
    assert await rows(session, "SELECT v FROM t WHERE id = 1") == [("other",)]


async def test_write_skew_allowed_but_for_update_prevents_it(session, other):
    await setup_table(session)
    await ok(session, "BEGIN; SELECT v FROM t WHERE id = 1; UPDATE t SET v = 'a' WHERE id = 2")
    await ok(other, "UPDATE t SET v = 'b' WHERE id = 1")
    assert (await ok(session, "COMMIT")).command_tag == "COMMIT"  # plain write skew is allowed
    await ok(session, "BEGIN; SELECT v FROM t WHERE id = 1 FOR UPDATE; UPDATE t SET v = 'c' WHERE id = 2")
    await ok(other, "UPDATE t SET v = 'd' WHERE id = 1")
    assert (await error_of(session, "COMMIT")).sqlstate == errors.SERIALIZATION_FAILURE


async def test_duplicate_within_transaction_and_after_delete(session):
    await setup_table(session)
    await ok(session, "BEGIN; INSERT INTO t VALUES (8, 'x')")
    assert (await error_of(session, "INSERT INTO t VALUES (8, 'y')")).sqlstate == "23505"
    await ok(session, "ROLLBACK")
    await ok(session, "BEGIN; DELETE FROM t WHERE id = 1; INSERT INTO t VALUES (1, 'again'); COMMIT")
    assert await rows(session, "SELECT v FROM t WHERE id = 1") == [("again",)]
    # Moving a key onto a key deleted earlier in the same transaction works.
    await ok(session, "BEGIN; DELETE FROM t WHERE id = 2; UPDATE t SET id = 2 WHERE id = 3; COMMIT")
    assert await rows(session, "SELECT * FROM t ORDER BY id") == [(1, "again"), (2, "three")]


async def test_read_only_transaction_commits_locally(session, backend):
    await setup_table(session)
    commits = len(backend.commits)
    await ok(session, "BEGIN; SELECT * FROM t; SELECT count(*) FROM t; COMMIT")
    await ok(session, "SELECT * FROM t")
    assert len(backend.commits) == commits


async def test_commit_errors_end_the_transaction(session, backend):
    await setup_table(session)
    for sqlstate in (errors.STATEMENT_COMPLETION_UNKNOWN, errors.CONNECTION_FAILURE, errors.CANNOT_CONNECT_NOW):
        await ok(session, "BEGIN; INSERT INTO t VALUES (10, 'x')")
        backend.fail_next_commit = SqlError(sqlstate, "from the backend")
        error = await error_of(session, "COMMIT")
        assert error.sqlstate == sqlstate
        assert session.transaction_status == "I"
    backend.fail_next_commit = SqlError(errors.CONNECTION_FAILURE, "down")
    assert (await error_of(session, "INSERT INTO t VALUES (11, 'x')")).sqlstate == errors.CONNECTION_FAILURE
    assert await rows(session, "SELECT count(*) FROM t") == [(3,)]


# --- transactional DDL ---------------------------------------------------------------------
async def test_ddl_is_transactional(session, other):
    await ok(session, "BEGIN; CREATE TABLE n (id INT PRIMARY KEY); INSERT INTO n VALUES (1)")
    assert await rows(session, "SELECT * FROM n") == [(1,)]
    assert (await error_of(other, "SELECT * FROM n")).sqlstate == "42P01"
    await ok(session, "ROLLBACK")
    assert (await error_of(session, "SELECT * FROM n")).sqlstate == "42P01"
    await ok(session, "BEGIN; CREATE TABLE n (id INT PRIMARY KEY); INSERT INTO n VALUES (1); COMMIT")
    assert await rows(other, "SELECT * FROM n") == [(1,)]
    await ok(session, "BEGIN; DROP TABLE n")
    assert (await error_of(session, "SELECT * FROM n")).sqlstate == "42P01"
    await ok(session, "ROLLBACK")
    assert await rows(session, "SELECT * FROM n") == [(1,)]


async def test_concurrent_ddl_conflicts(session, other):
    await ok(session, "BEGIN; CREATE TABLE a1 (id INT PRIMARY KEY)")
    await ok(other, "BEGIN; CREATE TABLE a2 (id INT PRIMARY KEY)")
    await ok(session, "COMMIT")
    assert (await error_of(other, "COMMIT")).sqlstate == errors.SERIALIZATION_FAILURE  # both took the table-id counter
    await ok(other, "CREATE TABLE a2 (id INT PRIMARY KEY)")
    # Writing rows of a table whose definition changed meanwhile is a conflict.
    await ok(session, "BEGIN; INSERT INTO a1 VALUES (1)")
    await ok(other, "DROP TABLE a1")
    assert (await error_of(session, "COMMIT")).sqlstate == errors.SERIALIZATION_FAILURE


# --- limits ----------------------------------------------------------------------------------
async def test_rows_per_transaction_limit(session, monkeypatch):
    monkeypatch.setattr(limits, "TXN_ROWS_MAX", 5)
    await ok(session, "CREATE TABLE t (id INT PRIMARY KEY)")
    await ok(session, "INSERT INTO t VALUES (1), (2), (3), (4), (5)")
    error = await error_of(session, "INSERT INTO t VALUES (11), (12), (13), (14), (15), (16)")
    assert error.sqlstate == errors.PROGRAM_LIMIT_EXCEEDED and "5" in error.message
    await ok(session, "BEGIN; UPDATE t SET id = id + 100 WHERE id <= 2")  # 4 keys changed
    assert (await error_of(session, "DELETE FROM t WHERE id = 3; DELETE FROM t WHERE id = 4")).sqlstate == "54000"
    assert session.transaction_status == "E"
    await ok(session, "ROLLBACK")


async def test_byte_key_and_row_limits(session, monkeypatch):
    await ok(session, "CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT)")
    error = await error_of(session, f"INSERT INTO t VALUES ('{'k' * (limits.KEY_BYTES_MAX + 1)}', 'x')")
    assert error.sqlstate == "54000" and "key size" in error.message
    monkeypatch.setattr(limits, "ROW_BYTES_MAX", 100)
    error = await error_of(session, f"INSERT INTO t VALUES ('a', '{'v' * 200}')")
    assert error.sqlstate == "54000" and "row size" in error.message
    monkeypatch.setattr(limits, "ROW_BYTES_MAX", 10_000)
    monkeypatch.setattr(limits, "TXN_BYTES_MAX", 1_000)
    await ok(session, "BEGIN")
    await ok(session, f"INSERT INTO t VALUES ('a', '{'v' * 400}')")
    await ok(session, f"UPDATE t SET v = '{'w' * 400}' WHERE k = 'a'")  # overwriting does not double count
    error = await error_of(session, f"INSERT INTO t VALUES ('b', '{'v' * 700}')")
    assert error.sqlstate == "54000" and "bytes" in error.message
    await ok(session, "ROLLBACK")
    assert await session.execute("SELECT count(*) FROM t") and (await rows(session, "SELECT count(*) FROM t")) == [(0,)]


async def test_transaction_age_limit(session, backend):
    await ok(session, "CREATE TABLE t (id INT PRIMARY KEY)")
    await ok(session, "BEGIN; INSERT INTO t VALUES (1)")
    backend.advance(limits.TXN_AGE_MAX_NS + 1)
    error = await error_of(session, "SELECT 1")
    assert error.sqlstate == errors.SERIALIZATION_FAILURE and "age" in error.message
    assert session.transaction_status == "E"
    await ok(session, "ROLLBACK")
    await ok(session, "BEGIN; INSERT INTO t VALUES (2)")
    backend.advance(limits.TXN_AGE_MAX_NS + 1)
    assert (await error_of(session, "COMMIT")).sqlstate == errors.SERIALIZATION_FAILURE
    assert session.transaction_status == "I"
    assert await rows(session, "SELECT * FROM t") == []
