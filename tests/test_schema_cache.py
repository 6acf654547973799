"""The node-wide schema cache: a statement on a known table reads no catalog, and a stale cache
never yields a wrong answer or a wrong error (compute_node/sql/schema_cache.py)."""
from __future__ import annotations

import pytest

from compute_node.sessions.session import Session
from compute_node.sql.engine import Engine
from compute_node.sql.schema_cache import SchemaCache
from quorumdb import errors, keys
from tests.sql_memory_backend import MemoryBackend


class RecordingBackend(MemoryBackend):
    """MemoryBackend that keeps every get request (its keys)."""

    def __init__(self) -> None:
        super().__init__()
        self.get_requests: list[list[bytes]] = []

    async def get_many(self, keys_, ts):
        self.get_requests.append(list(keys_))
        return await super().get_many(keys_, ts)


@pytest.fixture
def backend():
    return RecordingBackend()


def node(backend) -> tuple[Engine, Session]:
    engine = Engine()
    return engine, Session(backend, "s", engine=engine)


async def ok(session: Session, sql: str):
    results = await session.execute(sql)
    for result in results:
        assert result.error is None, f"{sql}: {result.error!r}"
    return results[-1]


def catalog_reads(requests: list[list[bytes]]) -> int:
    return sum(1 for request in requests for key in request if key.startswith(keys.CATALOG_TABLE_PREFIX))


async def test_repeated_point_statements_read_no_catalog_and_one_request_each(backend):
    _, session = node(backend)
    await ok(session, "CREATE TABLE kv (k BIGINT PRIMARY KEY, v BIGINT)")
    await ok(session, "INSERT INTO kv VALUES (1, 10)")
    await ok(session, "SELECT v FROM kv WHERE k = 1")  # the definition is cached now
    backend.get_requests.clear()
    for value in range(5):
        await ok(session, f"INSERT INTO kv VALUES (1, {value}) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v")
        assert (await ok(session, "SELECT v FROM kv WHERE k = 1")).rows == [(value,)]
    # 10 statements, each its own transaction: one request each, the row plus the schema version.
    assert len(backend.get_requests) == 10, backend.get_requests
    assert catalog_reads(backend.get_requests) == 0
    assert all(keys.SCHEMA_VERSION_KEY in request for request in backend.get_requests)


async def test_a_transaction_reads_a_key_once(backend):
    _, session = node(backend)
    await ok(session, "CREATE TABLE kv (k BIGINT PRIMARY KEY, v BIGINT)")
    await ok(session, "INSERT INTO kv VALUES (1, 10)")
    await ok(session, "BEGIN")
    await ok(session, "SELECT v FROM kv WHERE k = 1")
    backend.get_requests.clear()
    await ok(session, "SELECT v FROM kv WHERE k = 1")
    await ok(session, "UPDATE kv SET v = v + 1 WHERE k = 1")
    assert backend.get_requests == []  # the version is known and the row remembered
    await ok(session, "COMMIT")
    assert (await ok(session, "SELECT v FROM kv WHERE k = 1")).rows == [(11,)]


async def test_other_node_sees_added_column_not_a_stale_error(backend):
    engine_a, a = node(backend)
    engine_b, b = node(backend)
    await ok(a, "CREATE TABLE t (id INT PRIMARY KEY, x INT)")
    await ok(a, "INSERT INTO t VALUES (1, 5)")
    assert (await ok(b, "SELECT x FROM t WHERE id = 1")).rows == [(5,)]  # b caches t
    await ok(a, "ALTER TABLE t ADD COLUMN y INT")
    await ok(a, "UPDATE t SET y = 7 WHERE id = 1")
    # b's cached t has no column y: compiling fails, and the check of the version runs it again.
    assert (await ok(b, "SELECT x, y FROM t WHERE id = 1")).rows == [(5, 7)]
    assert engine_b.statement_retries == 1
    assert engine_b.schema_cache.version == engine_a.schema_cache.version
    # The cache moved: the next statement needs no retry.
    assert (await ok(b, "SELECT y FROM t WHERE id = 1")).rows == [(7,)]
    assert engine_b.statement_retries == 1


async def test_recreated_table_never_shows_old_rows(backend):
    _, a = node(backend)
    engine_b, b = node(backend)
    await ok(a, "CREATE TABLE t (id INT PRIMARY KEY, x TEXT)")
    await ok(a, "INSERT INTO t VALUES (1, 'old')")
    assert (await ok(b, "SELECT x FROM t WHERE id = 1")).rows == [("old",)]
    await ok(a, "DROP TABLE t")
    await ok(a, "CREATE TABLE t (id INT PRIMARY KEY, x TEXT)")  # a new table id: new row keys
    assert (await ok(b, "SELECT x FROM t WHERE id = 1")).rows == []
    assert (await ok(b, "SELECT count(*) FROM t")).rows == [(0,)]
    await ok(a, "DROP TABLE t")
    results = await b.execute("SELECT x FROM t WHERE id = 1")
    assert results[-1].error is not None and results[-1].error.sqlstate == errors.UNDEFINED_TABLE


async def test_new_table_is_visible_at_once_on_another_node(backend):
    _, a = node(backend)
    _, b = node(backend)
    await ok(a, "CREATE TABLE t1 (id INT PRIMARY KEY)")
    assert (await ok(b, "SELECT count(*) FROM t1")).rows == [(0,)]
    results = await b.execute("SELECT * FROM t2")
    assert results[-1].error.sqlstate == errors.UNDEFINED_TABLE
    await ok(a, "CREATE TABLE t2 (id INT PRIMARY KEY)")
    assert (await ok(b, "SELECT count(*) FROM t2")).rows == [(0,)]  # missing tables are not cached


async def test_schema_change_after_start_fails_the_commit_with_oc001(backend):
    _, a = node(backend)
    _, b = node(backend)
    await ok(a, "CREATE TABLE t (id INT PRIMARY KEY, x INT)")
    await ok(b, "SELECT * FROM t")  # cached on b
    await ok(b, "BEGIN")
    await ok(b, "INSERT INTO t VALUES (1, 1)")
    await ok(a, "ALTER TABLE t ADD COLUMN y INT")
    results = await b.execute("COMMIT")
    error = results[-1].error
    assert error is not None and error.sqlstate == errors.SERIALIZATION_FAILURE and "OC001" in error.message


async def test_ddl_increments_the_schema_version(backend):
    engine, a = node(backend)
    await ok(a, "CREATE TABLE t (id INT PRIMARY KEY)")
    first = engine.schema_cache.version
    await ok(a, "CREATE INDEX t_id ON t (id)")
    # The index build marks the table in a small transaction of its own first: two versions.
    assert engine.schema_cache.version == first + 2
    await ok(a, "BEGIN")
    await ok(a, "CREATE TABLE u (id INT PRIMARY KEY)")
    await ok(a, "ROLLBACK")
    assert engine.schema_cache.version == first + 2  # nothing committed, nothing changed


def test_cache_keeps_one_version_and_is_bounded():
    cache = SchemaCache(tables_max=2)
    cache.store(3, "a", "A3", b"a")
    assert cache.lookup("a", 3) == ("A3", b"a") and cache.lookup("a", None) == ("A3", b"a")
    assert cache.lookup("a", 4) is None
    cache.store(2, "b", "B2", b"b")  # an older snapshot's read does not go in
    assert cache.lookup("b", None) is None and cache.version == 3
    cache.store(4, "b", "B4", b"b")  # a newer version replaces everything
    assert cache.lookup("a", 4) is None and cache.lookup("b", 4) == ("B4", b"b")
    cache.store(4, "c", "C4", b"c")
    cache.store(4, "d", "D4", b"d")
    assert len(cache) == 2 and cache.lookup("b", 4) is None
    cache.observe(5)
    assert len(cache) == 0 and cache.version == 5


async def test_a_transaction_takes_one_snapshot_however_many_statements_it_runs(backend):
    """Each start_ts asks the adjudicator leader to close a timestamp (a journal append): only a
    new snapshot may take one, not a statement of an open transaction checking its age."""
    _, session = node(backend)
    await ok(session, "CREATE TABLE t (id int PRIMARY KEY, v int)")
    await ok(session, "INSERT INTO t VALUES (1, 10)")
    before = backend.snapshots
    await ok(session, "BEGIN")
    for _ in range(3):
        assert (await ok(session, "SELECT v FROM t WHERE id = 1")).rows == [(10,)]
    await ok(session, "UPDATE t SET v = 11 WHERE id = 1")
    await ok(session, "COMMIT")
    assert backend.snapshots - before == 1
    before = backend.snapshots
    await ok(session, "SELECT v FROM t WHERE id = 1")  # autocommit: one snapshot
    assert backend.snapshots - before == 1
