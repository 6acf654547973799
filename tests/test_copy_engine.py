"""compute_node/sessions/copy.py on the engine Session over the in-memory backend (no protocol): the schema
cache, the snapshot the batches share, and the first read of more than GET_KEYS_MAX keys."""
from __future__ import annotations

import asyncio

from compute_node.sessions.session import Session
from compute_node.sql.engine import Engine
from compute_node.sql.transaction import Transaction
from quorumdb import copyformat, keys, limits
from tests.sql_memory_backend import MemoryBackend


def records(text: str, statement: copyformat.CopyStatement, columns: list[str]):
    reader = copyformat.CopyReader(statement.options, columns)
    return list(copyformat.iter_records(reader, [text.encode()]))


def test_first_read_of_many_keys_learns_the_catalog_version():
    async def main():
        backend = MemoryBackend()
        session = Session(backend, "s")
        await session.execute("CREATE TABLE t (id INT PRIMARY KEY)")
        txn = Transaction(backend, backend.start_ts(), "reader")
        many = [b"k%05d" % i for i in range(limits.GET_KEYS_MAX + 500)]
        await txn.get_many(many)
        # The version rides in the first request; read from a later one it was taken as 0.
        assert txn.schema_version == 1
        assert txn.reads_sent == 2
    asyncio.run(main())


def test_copy_plans_again_when_the_nodes_cached_definition_is_stale():
    async def main():
        backend = MemoryBackend()
        here, elsewhere = Session(backend, "here", engine=Engine()), Session(backend, "there", engine=Engine())
        await here.execute("CREATE TABLE t (id INT PRIMARY KEY, a TEXT)")
        statement = copyformat.parse_statement("COPY t FROM STDIN")
        assert await here.copy_columns(statement) == ["id", "a"]       # cached on this node now
        await elsewhere.execute("DROP TABLE t")
        await elsewhere.execute("CREATE TABLE t (id INT PRIMARY KEY, b INT, c INT)")
        columns = await here.copy_columns(statement)
        assert columns == ["id", "b", "c"], "the definition at the snapshot, not the node's stale copy"
        result = await here.copy_from(statement, records("1\t2\t3\n", statement, columns))
        assert (result.error, result.command_tag) == (None, "COPY 1")
        rows = (await elsewhere.execute("SELECT id, b, c FROM t"))[0].rows
        assert rows == [(1, 2, 3)]
    asyncio.run(main())


def test_batches_share_the_validation_snapshot_and_lock_the_table_definition(monkeypatch):
    monkeypatch.setattr(limits, "TXN_ROWS_MAX", 10)

    async def main():
        backend = MemoryBackend()
        session = Session(backend, "s")
        await session.execute("CREATE TABLE t (id INT PRIMARY KEY)")
        statement = copyformat.parse_statement("COPY t FROM STDIN")
        start_ts_seen = []
        real_commit = backend.commit

        async def commit(start_ts, writes, lock_keys, txn_id):
            start_ts_seen.append(start_ts)
            return await real_commit(start_ts, writes, lock_keys, txn_id)

        backend.commit = commit
        before = len(backend.commits)
        result = await session.copy_from(statement, records("".join(f"{i}\n" for i in range(35)), statement, ["id"]))
        assert result.command_tag == "COPY 35"
        batches = backend.commits[before:]
        assert [len(writes) for _, writes, _, _ in batches] == [10, 10, 10, 5]
        assert len(set(start_ts_seen)) == 1, "every batch commits at the snapshot its rows were checked at"
        # Every batch carries the table's catalog key as a lock key: a concurrent ALTER/DROP fails it.
        catalog_key = keys.catalog_table_key("t")
        assert all(catalog_key in lock_keys for _, _, lock_keys, _ in batches)
    asyncio.run(main())


def test_copy_in_a_block_reads_its_own_writes_and_checks_against_them():
    async def main():
        backend = MemoryBackend()
        session = Session(backend, "s")
        await session.execute("CREATE TABLE t (id INT PRIMARY KEY)")
        statement = copyformat.parse_statement("COPY t FROM STDIN")
        await session.execute("BEGIN")
        await session.execute("INSERT INTO t VALUES (5)")
        result = await session.copy_from(statement, records("4\n5\n", statement, ["id"]))
        assert result.error.sqlstate == "23505" and result.error.context == "COPY t, line 2"
        assert session.transaction_status == "E"
        await session.execute("ROLLBACK")
        assert (await session.execute("SELECT count(*) FROM t"))[0].rows == [(0,)]
    asyncio.run(main())


def test_render_writes_values_as_postgresql_prints_them_in_whole_record_chunks():
    from compute_node.sessions import copy as copy_mod

    columns = [("id", "integer"), ("r", "real"), ("d", "double precision"), ("ok", "boolean"), ("b", "bytea"),
               ("n", "numeric")]
    rows = [(i, 0.1, 0.1, i % 2 == 0, b"\x01", "1.50") for i in range(50)] + [(50, None, None, None, None, None)]
    options = copyformat.validate_options({"header": True}, "to")
    chunks = list(copy_mod.render(columns, rows, options, chunk_chars=100))
    assert len(chunks) > 5 and all(chunk.endswith("\n") for chunk in chunks)
    lines = "".join(chunks).splitlines()
    assert lines[0] == "id\tr\td\tok\tb\tn"
    assert lines[1] == "0\t0.1\t0.1\tt\t\\\\x01\t1.50"
    assert lines[-1] == "50\t\\N\t\\N\t\\N\t\\N\t\\N" and len(lines) == 52
