"""Secondary indexes read only matching rows; limits fire with their SQLSTATE; schema changes are OC001."""
from __future__ import annotations

import pytest

from compute_node.sessions.session import Session
from compute_node.sql.planner import PlanKind
from quorumdb import keys, limits
from tests.sql_memory_backend import MemoryBackend


class CountingBackend(MemoryBackend):
    """Counts the keys each read returns from storage (row keys and index entries apart)."""

    def __init__(self):
        super().__init__()
        self.row_keys_read = 0
        self.index_keys_read = 0
        self.scanned_rows = 0

    def reset_counts(self):
        self.row_keys_read = self.index_keys_read = self.scanned_rows = 0

    def _count(self, key: bytes, present: bool):
        if not present:
            return
        if key.startswith(keys.TABLE_ROWS_PREFIX):
            self.row_keys_read += 1
        elif key.startswith(keys.INDEX_ENTRIES_PREFIX):
            self.index_keys_read += 1

    async def get_many(self, keys_wanted, ts):
        found = await super().get_many(keys_wanted, ts)
        for key, value in found.items():
            self._count(key, value is not None)
        return found

    async def scan(self, start, end, ts, limit):
        rows, more = await super().scan(start, end, ts, limit)
        for key, _ in rows:
            self._count(key, True)
        self.scanned_rows += len(rows)
        return rows, more


@pytest.fixture
def backend():
    return CountingBackend()


@pytest.fixture
def session(backend):
    return Session(backend, "idx")


async def ok(session, sql):
    results = await session.execute(sql)
    for result in results:
        assert result.error is None, f"{sql}: {result.error!r}"
    return results[-1]


async def fails(session, sql, sqlstate):
    results = await session.execute(sql)
    error = results[-1].error
    assert error is not None and error.sqlstate == sqlstate, f"{sql}: {error!r}"
    return error


async def load_people(session, count=500):
    await ok(session, "CREATE TABLE people (id int PRIMARY KEY, city text, age int, email text)")
    values = ", ".join(f"({i}, 'city{i % 50}', {i % 90}, 'p{i}@x')" for i in range(count))
    await ok(session, f"INSERT INTO people VALUES {values}")


async def test_index_equality_reads_only_matching_rows(session, backend):
    await load_people(session)
    await ok(session, "CREATE INDEX people_city ON people (city)")
    backend.reset_counts()
    result = await ok(session, "SELECT id FROM people WHERE city = 'city7' ORDER BY id")
    assert [r[0] for r in result.rows] == list(range(7, 500, 50))
    assert session.last_plan.kind is PlanKind.INDEX and session.last_plan.index.name == "people_city"
    # 10 matching rows: 10 index entries scanned, 10 rows fetched, nothing else.
    assert (backend.index_keys_read, backend.row_keys_read) == (10, 10), (backend.index_keys_read, backend.row_keys_read)
    print(f"index lookup: {backend.index_keys_read} index entries + {backend.row_keys_read} rows read of 500")


async def test_index_range_and_unique_lookup(session, backend):
    await load_people(session)
    await ok(session, "CREATE INDEX people_age ON people (age)")
    await ok(session, "CREATE UNIQUE INDEX people_email ON people (email)")
    backend.reset_counts()
    result = await ok(session, "SELECT count(*) FROM people WHERE age >= 10 AND age < 12")
    expected = sum(1 for i in range(500) if 10 <= i % 90 < 12)
    assert result.rows == [(expected,)]
    assert backend.row_keys_read == expected and backend.index_keys_read == expected
    backend.reset_counts()
    result = await ok(session, "SELECT id FROM people WHERE email = 'p123@x'")
    assert result.rows == [(123,)] and (backend.index_keys_read, backend.row_keys_read) == (1, 1)
    # UPDATE and DELETE through the index, and the index stays in step.
    backend.reset_counts()
    await ok(session, "UPDATE people SET email = 'new@x' WHERE email = 'p123@x'")
    assert backend.row_keys_read == 1
    assert (await ok(session, "SELECT id FROM people WHERE email = 'p123@x'")).rows == []
    assert (await ok(session, "SELECT id FROM people WHERE email = 'new@x'")).rows == [(123,)]
    await fails(session, "INSERT INTO people VALUES (1000, 'c', 1, 'new@x')", "23505")
    await ok(session, "DELETE FROM people WHERE email = 'new@x'")
    await ok(session, "INSERT INTO people VALUES (1000, 'c', 1, 'new@x')")


async def test_explain_shows_the_chosen_plan(session):
    await load_people(session, 20)
    await ok(session, "CREATE INDEX people_city ON people (city)")
    plan = lambda sql: ok(session, "EXPLAIN " + sql)
    assert (await plan("SELECT * FROM people WHERE id = 3")).rows == [("Filter (WHERE)",),
                                                                      ("  ->  Point Lookup on people (1 key(s): id = 3)",)]
    text = "\n".join(r[0] for r in (await plan("SELECT * FROM people WHERE city = 'x' ORDER BY id LIMIT 2")).rows)
    assert "Index Scan using people_city on people (city = 'x')" in text and "Limit (2)" in text and "Sort" in text
    text = "\n".join(r[0] for r in (await plan("SELECT * FROM people WHERE id > 5")).rows)
    assert "Primary Key Range Scan on people (id > 5)" in text
    text = "\n".join(r[0] for r in (await plan("SELECT * FROM people WHERE age = 5")).rows)
    assert "Full Scan on people" in text
    text = "\n".join(r[0] for r in (await plan("SELECT * FROM people p JOIN people q ON q.id = p.age")).rows)
    assert "Hash Join" in text
    result = await plan("DELETE FROM people WHERE city = 'x'")
    assert result.command_tag == "EXPLAIN" and "Index Scan using people_city" in result.rows[-1][0]


async def test_limits_fire_with_their_sqlstate_and_the_session_continues(session, monkeypatch):
    await ok(session, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    await ok(session, "CREATE TABLE k (name text PRIMARY KEY)")
    monkeypatch.setattr(limits, "TXN_ROWS_MAX", 5)
    error = await fails(session, "INSERT INTO t VALUES " + ", ".join(f"({i}, 'x')" for i in range(6)), "54000")
    assert "modified rows" in error.message
    await ok(session, "INSERT INTO t VALUES (1, 'ok')")  # the session goes on
    monkeypatch.setattr(limits, "ROW_BYTES_MAX", 100)
    await fails(session, f"INSERT INTO t VALUES (2, '{'x' * 200}')", "54000")
    monkeypatch.setattr(limits, "ROW_BYTES_MAX", 2 * 1024 * 1024)
    monkeypatch.setattr(limits, "KEY_BYTES_MAX", 40)
    await fails(session, f"INSERT INTO k VALUES ('{'k' * 60}')", "54000")
    monkeypatch.setattr(limits, "TABLE_COLUMNS_MAX", 3)
    await fails(session, "CREATE TABLE wide (a int PRIMARY KEY, b int, c int, d int)", "54011")
    monkeypatch.setattr(limits, "TABLE_INDEXES_MAX", 1)
    await ok(session, "CREATE INDEX t_v ON t (v)")
    await fails(session, "CREATE INDEX t_v2 ON t (v, id)", "54000")
    monkeypatch.setattr(limits, "STATEMENT_BYTES_MAX", 50)
    await fails(session, "SELECT " + " + ".join(["1"] * 40), "54000")
    # In a transaction block the limit fails the statement; the block then needs ROLLBACK.
    await ok(session, "BEGIN")
    await fails(session, "INSERT INTO t VALUES (3, 'y'), (4, 'y'), (5, 'y'), (6, 'y'), (7, 'y')", "54000")
    await fails(session, "SELECT 1", "25P02")
    await ok(session, "ROLLBACK")
    assert (await ok(session, "SELECT id, v FROM t")).rows == [(1, "ok")]


async def test_transaction_that_used_a_changed_schema_fails_with_oc001(backend):
    a = Session(backend, "a")
    b = Session(backend, "b")
    await ok(a, "CREATE TABLE s (id int PRIMARY KEY, v int)")
    await ok(a, "BEGIN")
    await ok(a, "INSERT INTO s VALUES (1, 1)")
    await ok(b, "ALTER TABLE s ADD COLUMN w int")     # commits a schema change after a's start
    commit = (await a.execute("COMMIT"))[-1]
    assert commit.error is not None and commit.error.sqlstate == "40001"
    assert "OC001" in commit.error.message
    # A plain write-write conflict stays OC000.
    await ok(a, "BEGIN")
    await ok(a, "UPDATE s SET v = 2 WHERE id = 1")
    await ok(b, "INSERT INTO s VALUES (1, 5, 5)")
    await ok(a, "SELECT 1")
    commit = (await a.execute("COMMIT"))
    assert commit[-1].error is None or "OC000" in commit[-1].error.message


async def test_ddl_is_transactional_and_unique_inserts_conflict(backend):
    a = Session(backend, "a")
    b = Session(backend, "b")
    await ok(a, "CREATE TABLE u (id int PRIMARY KEY, email text UNIQUE)")
    await ok(a, "BEGIN")
    await ok(b, "BEGIN")
    await ok(a, "INSERT INTO u VALUES (1, 'same')")
    await ok(b, "INSERT INTO u VALUES (2, 'same')")
    assert (await a.execute("COMMIT"))[-1].error is None
    loser = (await b.execute("COMMIT"))[-1]
    assert loser.error is not None and loser.error.sqlstate == "40001"  # both wrote the same unique entry
    assert (await ok(a, "SELECT id FROM u WHERE email = 'same'")).rows == [(1,)]


async def test_existing_rows_survive_add_and_drop_column(session):
    await ok(session, "CREATE TABLE h (id int PRIMARY KEY, a text, b int)")
    await ok(session, "INSERT INTO h VALUES (1, 'x', 10)")
    await ok(session, "ALTER TABLE h ADD COLUMN c numeric DEFAULT 2.50")
    await ok(session, "ALTER TABLE h DROP COLUMN a")
    await ok(session, "INSERT INTO h VALUES (2, 20, 3)")
    result = await ok(session, "SELECT * FROM h ORDER BY id")
    assert result.columns == [("id", "integer"), ("b", "integer"), ("c", "numeric")]
    assert result.rows == [(1, 10, "2.50"), (2, 20, "3")]
