"""Tables without a primary key, the bulk path (TRUNCATE, ALTER TABLE ADD PRIMARY KEY) and
sequences, against the in-memory backend; the pure parts (compute_node/sql/bulk.py) directly."""
from __future__ import annotations

import itertools
import random

import pytest

from compute_node.sessions.session import Session
from compute_node.sql import bulk, executor
from compute_node.sql.engine import Engine
from compute_node.sql.planner import PlanKind
from quorumdb import keys, limits
from tests.sql_memory_backend import MemoryBackend
from tests.test_sql_statements import fails, ok, rows


@pytest.fixture
def backend():
    return MemoryBackend(unique_txn_ids=True)  # every session below has its own id


@pytest.fixture
def session(backend):
    return Session(backend, "s1", rng=random.Random(1))


def values(start: int, stop: int) -> str:
    return ", ".join(f"({i}, {i % 10}, 'f{i}')" for i in range(start, stop))


# --- pure parts --------------------------------------------------------------------------------
def test_plan_batches_keeps_order_and_every_batch_within_the_quotas():
    rng = random.Random(7)
    for _ in range(200):
        writes = [(bytes([rng.randrange(256)]) * rng.randrange(1, 20),
                   None if rng.random() < 0.1 else b"v" * rng.randrange(0, 50)) for _ in range(rng.randrange(0, 80))]
        rows_max, bytes_max = rng.randrange(1, 10), rng.randrange(70, 300)
        batches = bulk.plan_batches(writes, rows_max, bytes_max)
        assert [w for batch in batches for w in batch] == writes
        for batch in batches:
            assert 0 < len(batch) <= rows_max
            assert sum(len(k) + len(v or b"") for k, v in batch) <= bytes_max
        for first, second in itertools.pairwise(batches):  # a batch closes only when the next write would not fit
            size = len(second[0][0]) + len(second[0][1] or b"")
            assert len(first) == rows_max or sum(len(k) + len(v or b"") for k, v in first) + size > bytes_max


def test_rowid_start_is_seeded_and_leaves_room_for_a_whole_load():
    assert bulk.rowid_start(random.Random(3)) == bulk.rowid_start(random.Random(3))
    starts = {bulk.rowid_start(random.Random(seed)) for seed in range(1000)}
    assert len(starts) == 1000
    assert all(bulk.ROWID_START_MIN <= s < bulk.ROWID_START_MAX for s in starts)
    assert (bulk.ROWID_START_MAX - 1) + 2**62 <= 2**63 - 1


def test_sequence_reservation_arithmetic():
    seq = bulk.SequenceDef("s", 1, start=10, increment=10, min_value=5, max_value=35)
    state = bulk.SequenceState.decode(None, seq)
    assert state == bulk.SequenceState(10, 0, 0)
    reserved, state = bulk.reserve(seq, state, 2, new_incarnation=99)
    assert (reserved.next_value, reserved.last_value, reserved.remaining, reserved.incarnation) == (10, 20, 2, 99)
    assert state == bulk.SequenceState(30, 0, 99, called=True)
    reserved, state = bulk.reserve(seq, state, 5, new_incarnation=7)   # stops at MAXVALUE, keeps the incarnation
    assert [reserved.take() for _ in range(reserved.remaining)] == [30]
    assert state.next_value is None and state.incarnation == 99
    assert bulk.reserve(seq, state, 1)[0] is None                      # exhausted
    after = bulk.after_setval(seq, state, 20, True)
    assert after == bulk.SequenceState(30, 1, 99, called=True)
    assert bulk.after_setval(seq, state, 20, False) == bulk.SequenceState(20, 1, 99, called=False)
    descending = bulk.SequenceDef("d", 2, start=-1, increment=-2, min_value=-6, max_value=-1)
    reserved, state = bulk.reserve(descending, bulk.SequenceState.decode(None, descending), 10)
    assert [reserved.take() for _ in range(reserved.remaining)] == [-1, -3, -5] and state.next_value is None
    decoded = bulk.SequenceDef.decode(bulk.SequenceDef("o", 3, 1, 1, 1, 9, 4, ("t", "id")).encode())
    assert decoded.owned_by == ("t", "id") and decoded.cache == 4


def test_a_sequence_read_as_a_relation_shows_the_last_value_any_node_reserved():
    seq = bulk.SequenceDef("s", 1, start=10, increment=10, min_value=5, max_value=95)
    fresh = bulk.SequenceState.decode(None, seq)
    assert bulk.relation_row(seq, fresh) == (10, 0, False)              # nothing reserved: start, not called
    _, state = bulk.reserve(seq, fresh, 3, new_incarnation=5)           # a node took 10, 20, 30
    assert bulk.relation_row(seq, state) == (30, 0, True)               # all three, taken or still cached
    assert bulk.relation_row(seq, bulk.after_setval(seq, state, 50, False)) == (50, 0, False)
    assert bulk.relation_row(seq, bulk.after_setval(seq, state, 50, True)) == (50, 0, True)
    assert bulk.relation_row(seq, bulk.after_setval(seq, state, 90, True)) == (90, 0, True)  # next is past the bound
    _, exhausted = bulk.reserve(seq, state, 100)
    assert exhausted.next_value is None and bulk.relation_row(seq, exhausted) == (90, 0, True)
    descending = bulk.SequenceDef("d", 2, start=-1, increment=-2, min_value=-6, max_value=-1)
    _, state = bulk.reserve(descending, bulk.SequenceState.decode(None, descending), 2)
    assert bulk.relation_row(descending, state) == (-3, 0, True)
    # A state stored before `called` was kept: called once a node reserved from it.
    old = b'{"next": 40, "epoch": 0, "incarnation": 5}'
    assert bulk.relation_row(seq, bulk.SequenceState.decode(old, seq)) == (30, 0, True)
    assert bulk.relation_row(seq, bulk.SequenceState.decode(b'{"next": 10, "epoch": 0}', seq)) == (10, 0, False)


def test_a_sequence_keeps_its_type_and_reads_old_entries_without_one():
    typed = bulk.SequenceDef("s", 3, 1, 1, 1, 32767, 1, ("t", "id"), "smallint")
    assert bulk.SequenceDef.decode(typed.encode()).data_type == "smallint"
    old = b'{"cache": 1, "increment": 1, "max": 9, "min": 1, "name": "o", "sequence_id": 3, "start": 1}'
    assert bulk.SequenceDef.decode(old).data_type is None   # the catalog reads it as its column's type


def test_a_range_serves_only_its_own_incarnation_and_epoch():
    current = bulk.SequenceRange(epoch=2, next_value=5, last_value=9, increment=1, incarnation=11)
    assert current.usable_for(2, 11) and current.usable_for(1, 11)
    assert not current.usable_for(3, 11)    # setval committed after the range was reserved
    assert not current.usable_for(2, 12)    # another database reusing the sequence id
    assert not current.usable_for(2, 0)     # the snapshot sees no reservation at all


def test_reserve_size_grows_for_a_busy_sequence_and_covers_the_demand():
    assert bulk.next_reserve_size(0, None, 1, 1) == limits.SEQUENCE_RESERVE_MIN
    assert bulk.next_reserve_size(32, 0.1, 1, 1) == 64
    assert bulk.next_reserve_size(limits.SEQUENCE_RESERVE_MAX, 0.1, 1, 1) == limits.SEQUENCE_RESERVE_MAX
    assert bulk.next_reserve_size(64, 5.0, 1, 1) == limits.SEQUENCE_RESERVE_MIN
    assert bulk.next_reserve_size(32, 0.1, 500, 1) == 500
    assert bulk.next_reserve_size(32, 0.1, 1, 5000) == 5000


def test_old_catalog_entries_decode_and_new_ones_round_trip():
    from compute_node.sql.catalog import TableDef
    old = (b'{"columns": [{"name": "id", "not_null": true, "type": {"kind": "integer"}}, '
           b'{"name": "v", "not_null": false, "type": {"kind": "text"}}], "name": "t", "primary_key": [0], '
           b'"table_id": 3}')
    table = TableDef.decode(old)
    assert not table.has_rowid and table.rewrite_by is None
    assert [c.name for c in table.visible_columns] == ["id", "v"]
    assert all(c.identity is None and c.sequence is None and not c.hidden for c in table.columns)
    assert table.encode() == TableDef.decode(table.encode()).encode()


# --- tables without a primary key ---------------------------------------------------------------------
async def test_table_without_primary_key_hides_its_row_id(session, backend):
    await ok(session, "CREATE TABLE h (tid INT, delta INT)")
    await ok(session, "INSERT INTO h VALUES (1, 10), (1, 10), (2, -5)")
    result = await ok(session, "SELECT * FROM h ORDER BY tid")
    assert result.columns == [("tid", "integer"), ("delta", "integer")]
    assert result.rows == [(1, 10), (1, 10), (2, -5)]
    returned = await ok(session, "INSERT INTO h VALUES (3, 3) RETURNING *")
    assert returned.columns == [("tid", "integer"), ("delta", "integer")] and returned.rows == [(3, 3)]
    assert await rows(session, "SELECT column_name FROM information_schema.columns WHERE table_name = 'h'") == [
        ("tid",), ("delta",)]
    assert await rows(session, "SELECT count(*) FROM information_schema.table_constraints WHERE table_name = 'h'") \
        == [(0,)]
    assert await rows(session, "SELECT count(*) FROM pg_indexes WHERE tablename = 'h'") == [(0,)]
    # Four distinct row keys although two rows are identical.
    row_keys = [k for k in backend.live_keys() if k.startswith(keys.TABLE_ROWS_PREFIX)]
    assert len(row_keys) == 4
    assert (await ok(session, "UPDATE h SET delta = delta + 1 WHERE tid = 1")).command_tag == "UPDATE 2"
    assert (await ok(session, "DELETE FROM h WHERE delta = 11")).command_tag == "DELETE 2"
    assert await rows(session, "SELECT tid, delta FROM h ORDER BY tid") == [(2, -5), (3, 3)]
    await fails(session, "UPDATE h SET quorumdb_rowid = 1", "0A000")
    await fails(session, "INSERT INTO h (quorumdb_rowid, tid) VALUES (1, 1)", "0A000")


async def test_columns_added_and_dropped_before_add_primary_key(session):
    await ok(session, "CREATE TABLE p (a INT, b TEXT, c INT)")
    await ok(session, "INSERT INTO p VALUES (1, 'x', 10), (2, 'y', 20)")
    await ok(session, "ALTER TABLE p ADD COLUMN d TEXT DEFAULT 'dd'")
    await ok(session, "ALTER TABLE p DROP COLUMN b")
    await ok(session, "INSERT INTO p VALUES (3, 30, 'z')")
    assert await rows(session, "SELECT * FROM p ORDER BY a") == [(1, 10, "dd"), (2, 20, "dd"), (3, 30, "z")]
    await ok(session, "ALTER TABLE p ADD PRIMARY KEY (a, c)")
    assert await rows(session, "SELECT * FROM p ORDER BY a") == [(1, 10, "dd"), (2, 20, "dd"), (3, 30, "z")]
    assert await rows(session, "SELECT d FROM p WHERE a = 2 AND c = 20") == [("dd",)]
    assert session.last_plan.kind is PlanKind.POINT
    assert await rows(session, "SELECT column_name FROM information_schema.key_column_usage "
                               "WHERE table_name = 'p' ORDER BY ordinal_position") == [("a",), ("c",)]


async def test_indexes_on_a_table_without_primary_key(session):
    await ok(session, "CREATE TABLE u (code TEXT, grp INT)")
    await ok(session, "CREATE UNIQUE INDEX u_code ON u (code)")
    await ok(session, "CREATE INDEX u_grp ON u (grp)")
    await ok(session, "INSERT INTO u VALUES " + ", ".join(f"('c{i}', {i % 5})" for i in range(50)))
    await fails(session, "INSERT INTO u VALUES ('c7', 1)", "23505",
                'duplicate key value violates unique constraint "u_code"')
    assert await rows(session, "SELECT count(*) FROM u WHERE grp = 3") == [(10,)]
    assert session.last_plan.kind is PlanKind.INDEX
    await ok(session, "UPDATE u SET grp = 9 WHERE code = 'c3'")
    assert await rows(session, "SELECT code FROM u WHERE grp = 9") == [("c3",)]
    await ok(session, "INSERT INTO u VALUES ('x', 1) ON CONFLICT (code) DO NOTHING")
    await ok(session, "INSERT INTO u VALUES ('x', 2) ON CONFLICT (code) DO UPDATE SET grp = EXCLUDED.grp")
    assert await rows(session, "SELECT grp FROM u WHERE code = 'x'") == [(2,)]


async def test_a_taken_row_id_is_drawn_again_never_overwritten(session, monkeypatch):
    starts = iter([bulk.ROWID_START_MIN, bulk.ROWID_START_MIN, bulk.ROWID_START_MIN + 10_000])
    monkeypatch.setattr(bulk, "rowid_start", lambda rng: next(starts))
    await ok(session, "CREATE TABLE r (v INT)")
    await ok(session, "INSERT INTO r VALUES (1)")
    await ok(session, "INSERT INTO r VALUES (2)")  # drew the same id: must draw again
    assert await rows(session, "SELECT v FROM r ORDER BY v") == [(1,), (2,)]


# --- the bulk path -------------------------------------------------------------------------------------
@pytest.fixture
def small_limits(monkeypatch):
    monkeypatch.setattr(limits, "TXN_ROWS_MAX", 100)
    return 100


async def test_truncate_then_load_flushes_ahead_within_the_limits(session, backend, small_limits):
    await ok(session, "CREATE TABLE acc (aid INT NOT NULL, bid INT, filler CHAR(20)) WITH (fillfactor = 100)")
    await ok(session, "CREATE INDEX acc_bid ON acc (bid)")
    await ok(session, "INSERT INTO acc VALUES (-1, 0, 'old')")
    other = Session(backend, "s2")
    await fails(session, f"INSERT INTO acc VALUES {values(0, 200)}", "54000")   # the quota still holds
    commits_before = len(backend.commits)
    await ok(session, "BEGIN")
    assert (await ok(session, "TRUNCATE acc")).command_tag == "TRUNCATE TABLE"
    for start in range(0, 1000, 250):
        await ok(session, f"INSERT INTO acc VALUES {values(start, start + 250)}")
    # Reads inside the transaction see flushed and pending rows; nobody else sees them.
    assert await rows(session, "SELECT count(*), sum(aid) FROM acc") == [(1000, sum(range(1000)))]
    assert await rows(session, "SELECT count(*) FROM acc WHERE bid = 4") == [(100,)]
    assert await rows(session, "SELECT aid FROM acc WHERE aid = 777") == [(777,)]
    assert await rows(other, "SELECT aid FROM acc") == [(-1,)]
    await ok(session, "DELETE FROM acc WHERE aid >= 990")
    await ok(session, "UPDATE acc SET filler = 'new' WHERE aid = 5")
    assert (await ok(session, "COMMIT")).command_tag == "COMMIT"
    new_commits = backend.commits[commits_before:]
    assert all(len(writes) <= small_limits for _, writes, _, _ in new_commits)
    assert len(new_commits) >= 2000 // small_limits   # 1000 rows + 1000 index entries, in batches
    final = new_commits[-1]
    assert any(key.startswith(keys.CATALOG_TABLE_PREFIX) for key, _ in final[1])
    assert not any(key.startswith(keys.TABLE_ROWS_PREFIX) for key, _ in final[1])
    assert await rows(other, "SELECT count(*), min(aid), max(aid) FROM acc") == [(990, 0, 989)]
    assert await rows(other, "SELECT filler FROM acc WHERE aid = 5") == [("new".ljust(20),)]
    assert await rows(other, "SELECT count(*) FROM acc WHERE bid = 4") == [(99,)]


async def test_a_rolled_back_load_leaves_nothing_visible(session, backend, small_limits):
    await ok(session, "CREATE TABLE acc (aid INT, bid INT, filler TEXT)")
    await ok(session, "INSERT INTO acc VALUES (1, 1, 'kept')")
    await ok(session, "BEGIN")
    await ok(session, "TRUNCATE acc")
    await ok(session, f"INSERT INTO acc VALUES {values(0, 500)}")
    assert await rows(session, "SELECT count(*) FROM acc") == [(500,)]
    await ok(session, "ROLLBACK")
    assert await rows(session, "SELECT aid, filler FROM acc") == [(1, "kept")]
    # A failed block's COMMIT is a ROLLBACK too.
    await ok(session, "BEGIN")
    await ok(session, "TRUNCATE acc")
    await ok(session, f"INSERT INTO acc VALUES {values(0, 300)}")
    await fails(session, "SELECT 1/0", "22012")
    assert (await ok(session, "COMMIT")).command_tag == "ROLLBACK"
    assert await rows(session, "SELECT aid, filler FROM acc") == [(1, "kept")]


async def test_uniqueness_holds_across_flushed_batches(session, small_limits):
    await ok(session, "CREATE TABLE k (id INT PRIMARY KEY, code TEXT UNIQUE)")
    await ok(session, "BEGIN")
    await ok(session, "TRUNCATE k")
    await ok(session, "INSERT INTO k VALUES " + ", ".join(f"({i}, 'c{i}')" for i in range(300)))
    await fails(session, "INSERT INTO k VALUES (5, 'fresh')", "23505",
                'duplicate key value violates unique constraint "k_pkey"')
    await ok(session, "ROLLBACK")
    await ok(session, "BEGIN")
    await ok(session, "TRUNCATE k")
    await ok(session, "INSERT INTO k VALUES " + ", ".join(f"({i}, 'c{i}')" for i in range(300)))
    error = await fails(session, "INSERT INTO k VALUES (1000, 'c3')", "23505")
    assert error.detail == "Key (code)=(c3) already exists."
    await ok(session, "ROLLBACK")


async def test_every_statement_on_a_truncated_table_takes_the_bulk_path(session, backend, small_limits):
    await ok(session, "CREATE TABLE src (id INT PRIMARY KEY)")
    for start in range(0, 600, 90):
        await ok(session, "INSERT INTO src VALUES " + ", ".join(f"({i})" for i in range(start, min(start + 90, 600))))
    await ok(session, "CREATE TABLE t (a INT, b INT)")
    await ok(session, "BEGIN")
    await ok(session, "TRUNCATE t")
    assert (await ok(session, "INSERT INTO t SELECT id, id % 7 FROM src")).command_tag == "INSERT 0 600"
    assert (await ok(session, "UPDATE t SET b = b + 100 WHERE a >= 100")).command_tag == "UPDATE 500"
    assert (await ok(session, "DELETE FROM t WHERE a < 50")).command_tag == "DELETE 50"
    await ok(session, "CREATE UNIQUE INDEX t_a ON t (a)")
    await ok(session, "CREATE INDEX t_b ON t (b)")
    assert len(session.transaction.write_buffer) < small_limits
    await fails(session, "INSERT INTO t VALUES (77, 0)", "23505", 'duplicate key value violates unique constraint "t_a"')
    await ok(session, "ROLLBACK")
    await ok(session, "BEGIN; TRUNCATE t; INSERT INTO t SELECT id, 1 FROM src; INSERT INTO t SELECT id, 2 FROM src")
    error = await fails(session, "CREATE UNIQUE INDEX t_a ON t (a)", "23505", 'could not create unique index "t_a"')
    assert error.detail.endswith("is duplicated.")
    await ok(session, "ROLLBACK")
    await ok(session, "BEGIN; TRUNCATE t; INSERT INTO t SELECT id, id % 3 FROM src; CREATE INDEX t_b ON t (b); COMMIT")
    assert await rows(session, "SELECT count(*) FROM t WHERE b = 2") == [(200,)]
    assert session.last_plan.kind is PlanKind.INDEX
    assert all(len(writes) <= small_limits for _, writes, _, _ in backend.commits)


async def test_a_table_created_in_the_transaction_moves_to_the_bulk_path(session, backend, small_limits):
    await ok(session, "BEGIN")
    await ok(session, "CREATE TABLE k (id INT PRIMARY KEY, code TEXT UNIQUE, grp INT)")
    await ok(session, "CREATE INDEX k_grp ON k (grp)")
    await ok(session, "INSERT INTO k VALUES " + ", ".join(f"({i}, 'c{i}', {i % 4})" for i in range(10)))
    assert len(session.transaction.write_buffer) > 30  # small so far: the ordinary buffer
    for start in range(10, 610, 150):   # each statement alone is over the quota
        await ok(session, "INSERT INTO k VALUES " + ", ".join(f"({i}, 'c{i}', {i % 4})" for i in range(start, start + 150)))
    assert len(session.transaction.write_buffer) < 10   # the catalog entries only
    await fails(session, "INSERT INTO k VALUES (3, 'new', 0)", "23505",
                'duplicate key value violates unique constraint "k_pkey"')
    await ok(session, "ROLLBACK")
    await ok(session, "BEGIN; CREATE TABLE h (v INT); CREATE INDEX h_v ON h (v)")
    for start in range(0, 1000, 200):
        await ok(session, "INSERT INTO h VALUES " + ", ".join(f"({i})" for i in range(start, start + 200)))
    assert await rows(session, "SELECT count(*) FROM h WHERE v >= 500") == [(500,)]
    await ok(session, "COMMIT")
    assert await rows(session, "SELECT count(*), min(v), max(v) FROM h") == [(1000, 0, 999)]
    assert await rows(session, "SELECT v FROM h WHERE v = 777") == [(777,)]
    assert session.last_plan.kind is PlanKind.INDEX
    assert all(len(writes) <= small_limits for _, writes, _, _ in backend.commits)


async def test_insert_rows_is_the_bulk_interface(session, backend, small_limits):
    await ok(session, "CREATE TABLE hist (tid INT NOT NULL, delta INT CHECK (delta > -100))")
    await ok(session, "BEGIN")
    await ok(session, "TRUNCATE hist")
    txn = session.transaction
    table = await executor.load_table(txn, "hist")
    assert executor.is_bulk_target(txn, table)
    written = await executor.insert_rows(txn, table, [[i, i % 50, None] for i in range(5000)])
    assert written == 5000 and len(txn.pending) < small_limits and txn.flushed_keys >= 4900
    with pytest.raises(executor.SqlError) as raised:
        await executor.insert_rows(txn, table, [[None, 1, None]])
    assert raised.value.sqlstate == "23502"
    with pytest.raises(executor.SqlError) as raised:
        await executor.insert_rows(txn, table, [[1, -500, None]])
    assert raised.value.sqlstate == "23514"
    await ok(session, "ROLLBACK")
    await ok(session, "BEGIN")
    await ok(session, "TRUNCATE hist")
    txn = session.transaction
    table = await executor.load_table(txn, "hist")
    await executor.insert_rows(txn, table, [[i, 1, None] for i in range(2500)])
    await ok(session, "COMMIT")
    assert await rows(session, "SELECT count(*), count(DISTINCT tid) FROM hist") == [(2500, 2500)]


async def test_add_primary_key_rewrites_the_table(session, backend, small_limits):
    await ok(session, "CREATE TABLE acc (aid INT, bid INT, filler TEXT)")
    await ok(session, "CREATE UNIQUE INDEX acc_filler ON acc (filler)")
    await ok(session, "CREATE INDEX acc_bid ON acc (bid)")
    await ok(session, "BEGIN")
    await ok(session, "TRUNCATE acc")
    await ok(session, f"INSERT INTO acc VALUES {values(0, 400)}")
    await ok(session, "COMMIT")
    assert (await ok(session, "ALTER TABLE acc ADD PRIMARY KEY (aid)")).command_tag == "ALTER TABLE"
    assert all(len(writes) <= small_limits for _, writes, _, _ in backend.commits)
    assert await rows(session, "SELECT aid, bid, filler FROM acc WHERE aid = 123") == [(123, 3, "f123")]
    assert session.last_plan.kind is PlanKind.POINT
    assert await rows(session, "SELECT count(*) FROM acc WHERE bid = 7") == [(40,)]
    assert session.last_plan.kind is PlanKind.INDEX
    await fails(session, "INSERT INTO acc VALUES (5, 1, 'new')", "23505",
                'duplicate key value violates unique constraint "acc_pkey"')
    await fails(session, "INSERT INTO acc VALUES (1000, 1, 'f9')", "23505",
                'duplicate key value violates unique constraint "acc_filler"')
    assert await rows(session, "SELECT constraint_type FROM information_schema.table_constraints "
                               "WHERE table_name = 'acc' ORDER BY 1") == [("PRIMARY KEY",)]
    await fails(session, "ALTER TABLE acc ADD PRIMARY KEY (bid)", "42P16")
    assert await rows(session, "SELECT count(*) FROM acc") == [(400,)]


async def test_add_primary_key_refuses_duplicates_and_nulls(session, small_limits):
    await ok(session, "CREATE TABLE d (a INT, b INT)")
    await ok(session, "BEGIN; TRUNCATE d")
    await ok(session, "INSERT INTO d VALUES " + ", ".join(f"({i}, {i})" for i in range(250)) + ", (7, 1000)")
    error = await fails(session, "ALTER TABLE d ADD CONSTRAINT d_pkey PRIMARY KEY (a)", "23505",
                        'could not create unique index "d_pkey"')
    assert error.detail == "Key (a)=(7) is duplicated."
    await ok(session, "ROLLBACK")
    await ok(session, "INSERT INTO d VALUES (NULL, 1), (1, 1)")
    await fails(session, "ALTER TABLE d ADD PRIMARY KEY (a)", "23502",
                'column "a" of relation "d" contains null values')
    await ok(session, "CREATE TABLE named (a INT, CONSTRAINT named_key_a PRIMARY KEY (a))")
    await fails(session, "INSERT INTO named VALUES (1), (1)", "23505",
                'duplicate key value violates unique constraint "named_key_a"')
    await ok(session, "CREATE TABLE later (a INT)")
    await ok(session, "ALTER TABLE later ADD CONSTRAINT later_pk PRIMARY KEY (a)")
    assert await rows(session, "SELECT constraint_name FROM information_schema.table_constraints "
                               "WHERE table_name = 'later'") == [("later_pk",)]
    await fails(session, "INSERT INTO later VALUES (1), (1)", "23505",
                'duplicate key value violates unique constraint "later_pk"')
    await fails(session, "ALTER TABLE d ADD CONSTRAINT fk FOREIGN KEY (b) REFERENCES d (a)", "0A000")
    await ok(session, "DELETE FROM d WHERE a IS NULL")
    # In the same transaction as TRUNCATE, after other statements: the keyspace is private.
    await ok(session, "BEGIN; TRUNCATE d; INSERT INTO d VALUES (1, 2), (2, 3); ALTER TABLE d ADD PRIMARY KEY (a); "
                      "INSERT INTO d VALUES (3, 4); COMMIT")
    assert await rows(session, "SELECT * FROM d ORDER BY a") == [(1, 2), (2, 3), (3, 4)]


async def test_add_primary_key_loses_no_concurrent_write(backend):
    rewriter = Session(backend, "alter")
    writer = Session(backend, "writer")
    await ok(rewriter, "CREATE TABLE c (id INT, v TEXT)")
    await ok(rewriter, "INSERT INTO c VALUES (1, 'a'), (2, 'b')")
    # A writer that started before the rewrite and commits after it fails instead of losing its row.
    await ok(writer, "BEGIN")
    await ok(writer, "INSERT INTO c VALUES (3, 'c')")
    await ok(rewriter, "ALTER TABLE c ADD PRIMARY KEY (id)")
    error = await fails(writer, "COMMIT", "40001")
    assert "OC001" in error.message
    assert await rows(rewriter, "SELECT id FROM c ORDER BY id") == [(1,), (2,)]
    # The statement must come first in its transaction unless the table is private to it.
    await ok(rewriter, "CREATE TABLE e (id INT)")
    await ok(rewriter, "BEGIN")
    await ok(rewriter, "SELECT count(*) FROM e")
    await fails(rewriter, "ALTER TABLE e ADD PRIMARY KEY (id)", "0A000")
    await ok(rewriter, "ROLLBACK")


async def test_a_table_being_rewritten_refuses_writers_until_the_rewrite_ends(backend):
    rewriter = Session(backend, "alter")
    writer = Session(backend, "writer")
    await ok(rewriter, "CREATE TABLE m (id INT, v TEXT)")
    await ok(rewriter, "INSERT INTO m VALUES (1, 'a')")
    await ok(rewriter, "BEGIN")
    await ok(rewriter, "ALTER TABLE m ADD PRIMARY KEY (id)")  # marked, copied, not committed
    error = await fails(writer, "INSERT INTO m VALUES (2, 'b')", "40001")
    assert "being rewritten" in error.message
    await fails(writer, "UPDATE m SET v = 'x'", "40001")
    await fails(writer, "DELETE FROM m", "40001")
    assert await rows(writer, "SELECT id FROM m") == [(1,)]  # readers are not affected
    await ok(rewriter, "ROLLBACK")  # removes the mark
    await ok(writer, "INSERT INTO m VALUES (2, 'b')")
    assert await rows(writer, "SELECT count(*) FROM m") == [(2,)]


# --- sequences -------------------------------------------------------------------------------------------
async def test_serial_values_unique_across_nodes_and_returning(backend):
    nodes = [Engine(), Engine()]
    sessions = [Session(backend, f"n{i}", engine=nodes[i % 2]) for i in range(4)]
    await ok(sessions[0], "CREATE TABLE o (id SERIAL PRIMARY KEY, item TEXT)")
    seen = []
    for round_number in range(30):
        for session in sessions:
            result = await ok(session, f"INSERT INTO o (item) VALUES ('r{round_number}') RETURNING id")
            seen.append(result.rows[0][0])
    assert len(set(seen)) == len(seen) == 120
    for session in sessions:  # increasing per session
        mine = [v for i, v in enumerate(seen) if i % 4 == sessions.index(session)]
        assert mine == sorted(mine)
    assert await rows(sessions[1], "SELECT count(*) FROM o") == [(120,)]
    # Each node reserved ranges: far fewer reservations than values.
    assert sum(node.sequences.reservations for node in nodes) < 20
    # No user commit ever writes the sequence's value key (no hot row on the commit path).
    state_prefix = keys.SEQUENCE_STATE_PREFIX
    user_commits = [c for c in backend.commits if any(k.startswith(keys.TABLE_ROWS_PREFIX) for k, _ in c[1])]
    assert not any(k.startswith(state_prefix) for c in user_commits for k, _ in c[1])


async def test_currval_is_per_session_and_setval_reaches_every_node(backend):
    first = Session(backend, "a", engine=Engine())
    second = Session(backend, "b", engine=Engine())
    await ok(first, "CREATE SEQUENCE s")
    await fails(first, "SELECT currval('s')", "55000", 'currval of sequence "s" is not yet defined in this session')
    await fails(first, "SELECT lastval()", "55000")
    assert await rows(first, "SELECT nextval('s')") == [(1,)]
    second_value = (await rows(second, "SELECT nextval('s')"))[0][0]
    assert second_value > 1
    assert await rows(first, "SELECT currval('s'), lastval()") == [(1, 1)]
    assert await rows(second, "SELECT currval('s')") == [(second_value,)]
    assert await rows(second, "SELECT setval('s', 5000)") == [(5000,)]
    # `first`'s node still holds a range below 5000: the new epoch makes it drop it.
    assert await rows(first, "SELECT nextval('s')") == [(5001,)]
    assert (await rows(second, "SELECT nextval('s')"))[0][0] > 5001
    await ok(first, "SELECT setval('s', 10, false)")
    assert await rows(second, "SELECT nextval('s')") == [(10,)]


async def test_a_statement_that_outruns_its_range_runs_again(session):
    await ok(session, "CREATE TABLE src (id INT PRIMARY KEY)")
    await ok(session, "INSERT INTO src VALUES " + ", ".join(f"({i})" for i in range(300)))
    await ok(session, "CREATE SEQUENCE s")
    values_ = [v for (v,) in await rows(session, "SELECT nextval('s') FROM src")]
    assert len(values_) == 300 and len(set(values_)) == 300
    # Run again inside a block after other writes: the re-run keeps them and doubles nothing.
    await ok(session, "CREATE TABLE tgt (id INT PRIMARY KEY, n BIGINT)")
    await ok(session, "BEGIN")
    await ok(session, "INSERT INTO tgt VALUES (-1, 0)")
    await ok(session, "INSERT INTO tgt SELECT id, 0 FROM src")
    assert (await ok(session, "UPDATE tgt SET n = nextval('s') WHERE id >= 0")).command_tag == "UPDATE 300"
    await ok(session, "COMMIT")
    assert await rows(session, "SELECT count(*), count(DISTINCT n), min(n) > 300 FROM tgt WHERE id >= 0") == [
        (300, 300, True)]
    assert await rows(session, "SELECT n FROM tgt WHERE id = -1") == [(0,)]
    await ok(session, "CREATE TABLE dst (id BIGSERIAL, src INT)")
    assert (await ok(session, "INSERT INTO dst (src) SELECT id FROM src")).command_tag == "INSERT 0 300"
    assert await rows(session, "SELECT count(DISTINCT id), min(id), max(id) FROM dst") == [(300, 1, 300)]


async def test_identity_columns_and_owned_sequences(session):
    await ok(session, "CREATE TABLE g (id INT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v TEXT)")
    await ok(session, "CREATE TABLE b (id BIGINT GENERATED BY DEFAULT AS IDENTITY (START WITH 7 INCREMENT BY 3), v TEXT)")
    assert await rows(session, "INSERT INTO g (v) VALUES ('a'), ('b') RETURNING id") == [(1,), (2,)]
    error = await fails(session, "INSERT INTO g VALUES (9, 'x')", "428C9")
    assert error.hint == "Use OVERRIDING SYSTEM VALUE to override."
    assert await rows(session, "INSERT INTO g OVERRIDING SYSTEM VALUE VALUES (9, 'x') RETURNING id") == [(9,)]
    assert await rows(session, "INSERT INTO g (id, v) OVERRIDING USER VALUE VALUES (50, 'y') RETURNING id") == [(3,)]
    await fails(session, "UPDATE g SET id = 4", "428C9")
    assert await rows(session, "INSERT INTO b (v) VALUES ('a') RETURNING id") == [(7,)]
    assert await rows(session, "INSERT INTO b VALUES (1, 'b') RETURNING id") == [(1,)]
    assert await rows(session, "INSERT INTO b (v) VALUES ('c') RETURNING id") == [(10,)]
    await fails(session, "DROP SEQUENCE g_id_seq", "2BP01")
    await ok(session, "DROP TABLE g")
    await fails(session, "SELECT nextval('g_id_seq')", "42P01")
    await ok(session, "CREATE TABLE g (id SERIAL)")  # the name is free again
    assert await rows(session, "INSERT INTO g DEFAULT VALUES RETURNING id") == [(1,)]
    await ok(session, "TRUNCATE g, b RESTART IDENTITY")
    assert await rows(session, "INSERT INTO g DEFAULT VALUES RETURNING id") == [(1,)]
    assert await rows(session, "INSERT INTO b (v) VALUES ('d') RETURNING id") == [(7,)]


async def test_sequence_ddl_errors(session):
    await ok(session, "CREATE SEQUENCE IF NOT EXISTS s START 3")
    assert (await ok(session, "CREATE SEQUENCE IF NOT EXISTS s")).command_tag == "CREATE SEQUENCE"
    await fails(session, "CREATE SEQUENCE s", "42P07")
    await fails(session, "CREATE TABLE s (a INT)", "42P07")
    await fails(session, "CREATE SEQUENCE c CYCLE", "0A000")
    await fails(session, "CREATE SEQUENCE c OWNED BY s.x", "0A000")
    await fails(session, "CREATE SEQUENCE c INCREMENT 0", "22023", "INCREMENT must not be zero")
    await fails(session, "CREATE SEQUENCE c CACHE 0", "22023")
    await ok(session, "CREATE SEQUENCE small AS smallint START 32767 NO CYCLE OWNED BY NONE")
    assert await rows(session, "SELECT nextval('small')") == [(32767,)]
    await fails(session, "SELECT nextval('small')", "2200H")
    await fails(session, "CREATE SEQUENCE m MINVALUE 5 MAXVALUE 5", "22023")
    await fails(session, "SELECT setval('s', 0)", "22003")
    await fails(session, "SELECT nextval(name) FROM (VALUES ('s')) v(name)", "0A000")
    small = "CREATE SEQUENCE tiny MAXVALUE 2"
    await ok(session, small)
    assert await rows(session, "SELECT nextval('tiny'), nextval('tiny')") == [(1, 2)]
    await fails(session, "SELECT nextval('tiny')", "2200H", 'nextval: reached maximum value of sequence "tiny" (2)')
    assert (await ok(session, "DROP SEQUENCE s, tiny")).command_tag == "DROP SEQUENCE"
    await fails(session, "DROP SEQUENCE s", "42P01")
    assert (await ok(session, "DROP SEQUENCE IF EXISTS s")).command_tag == "DROP SEQUENCE"


async def test_pgbench_init_statements_are_accepted(session, small_limits):
    script = [
        "drop table if exists pgbench_accounts, pgbench_branches, pgbench_history, pgbench_tellers",
        "create table pgbench_history(tid int,bid int,aid int,delta int,mtime timestamp,filler char(22))",
        "create table pgbench_tellers(tid int not null,bid int,tbalance int,filler char(84)) with (fillfactor=100)",
        "create table pgbench_accounts(aid int not null,bid int,abalance int,filler char(84)) with (fillfactor=100)",
        "create table pgbench_branches(bid int not null,bbalance int,filler char(88)) with (fillfactor=100)",
        "begin",
        "truncate table pgbench_accounts, pgbench_branches, pgbench_history, pgbench_tellers",
        "insert into pgbench_branches(bid,bbalance) values(1,0)",
        "insert into pgbench_tellers(tid,bid,tbalance) values " + ", ".join(f"({i},1,0)" for i in range(1, 11)),
        "insert into pgbench_accounts(aid,bid,abalance,filler) values "
        + ", ".join(f"({i},1,0,'')" for i in range(1, 1001)),
        "commit",
        "vacuum analyze pgbench_branches", "vacuum analyze pgbench_tellers", "vacuum analyze pgbench_accounts",
        "vacuum analyze pgbench_history",
        "alter table pgbench_branches add primary key (bid)",
        "alter table pgbench_tellers add primary key (tid)",
        "alter table pgbench_accounts add primary key (aid)",
    ]
    for sql in script:
        await ok(session, sql)
    assert await rows(session, "select count(*) from pgbench_accounts") == [(1000,)]
    await ok(session, "UPDATE pgbench_accounts SET abalance = abalance + 5 WHERE aid = 17")
    assert await rows(session, "SELECT abalance FROM pgbench_accounts WHERE aid = 17") == [(5,)]
    assert session.last_plan.kind is PlanKind.POINT
    await ok(session, "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, 17, 5, now())")


async def test_truncate_and_rewrite_with_a_stale_cached_definition(backend):
    node = Engine()
    cached = Session(backend, "cached", engine=node)
    other = Session(backend, "other")
    await ok(cached, "CREATE TABLE t (a INT, b INT)")
    await ok(cached, "INSERT INTO t VALUES (1, 1)")
    assert await rows(cached, "SELECT * FROM t") == [(1, 1)]  # the node caches the definition
    await ok(other, "ALTER TABLE t ADD COLUMN c INT")
    await ok(cached, "TRUNCATE t")                              # runs with the current definition
    await ok(cached, "INSERT INTO t VALUES (2, 2, 2)")
    await ok(other, "ALTER TABLE t ADD COLUMN d INT")
    await ok(cached, "ALTER TABLE t ADD PRIMARY KEY (a)")
    assert await rows(other, "SELECT * FROM t") == [(2, 2, 2, None)]


async def test_drop_table_with_a_stale_cached_definition(backend):
    cached = Session(backend, "cached", engine=Engine())
    other = Session(backend, "other")
    await ok(cached, "CREATE TABLE t (a INT PRIMARY KEY, b INT)")
    assert await rows(cached, "SELECT * FROM t") == []
    await ok(other, "ALTER TABLE t ADD COLUMN c INT")
    await ok(other, "CREATE INDEX t_c ON t (c)")
    await ok(cached, "DROP TABLE IF EXISTS t")   # pgbench -i starts with this on a warm node
    await fails(other, "SELECT * FROM t", "42P01")
    await fails(other, "DROP INDEX t_c", "42704")


# --- COPY (compute_node/sessions/copy.py) onto the bulk path ----------------------------------------------------
def copy_records(text: str, statement, columns: list[str]):
    from quorumdb import copyformat
    reader = copyformat.CopyReader(statement.options, columns)
    return list(copyformat.iter_records(reader, [text.encode()]))


async def test_copy_in_a_block_after_truncate_takes_the_bulk_path(session, backend, small_limits):
    from quorumdb import copyformat
    await ok(session, "CREATE TABLE acc (aid INT NOT NULL, bid INT, filler CHAR(10))")
    await ok(session, "CREATE TABLE ser (id SERIAL, v TEXT)")
    await ok(session, "INSERT INTO acc VALUES (-1, 0, 'old')")
    statement = copyformat.parse_statement("COPY acc FROM STDIN")
    assert await session.copy_columns(statement) == ["aid", "bid", "filler"]   # no hidden row id
    text = "".join(f"{i}\t{i % 10}\tf{i}\n" for i in range(2000))
    await ok(session, "BEGIN")
    await ok(session, "TRUNCATE acc, ser")
    result = await session.copy_from(statement, copy_records(text, statement, ["aid", "bid", "filler"]))
    assert (result.error, result.command_tag) == (None, "COPY 2000")
    assert len(session.transaction.pending) < small_limits   # flushed ahead, not held
    ser = copyformat.parse_statement("COPY ser (v) FROM STDIN")
    result = await session.copy_from(ser, copy_records("".join(f"v{i}\n" for i in range(500)), ser, ["v"]))
    assert (result.error, result.command_tag) == (None, "COPY 500")
    assert await rows(session, "SELECT count(*), sum(aid) FROM acc") == [(2000, sum(range(2000)))]
    await ok(session, "COMMIT")
    assert all(len(writes) <= small_limits for _, writes, _, _ in backend.commits)
    other = Session(backend, "other")
    assert await rows(other, "SELECT count(*), count(DISTINCT bid) FROM acc") == [(2000, 10)]
    # One range reserved for the whole COPY: consecutive values (where they start depends on what
    # this node reserved before, e.g. while COPY's columns were described).
    assert await rows(other, "SELECT count(*), count(DISTINCT id), max(id) - min(id) FROM ser") == [(500, 500, 499)]
    await ok(other, "ALTER TABLE acc ADD PRIMARY KEY (aid)")
    assert await rows(other, "SELECT filler FROM acc WHERE aid = 1234") == [("f1234".ljust(10),)]


async def test_copy_into_a_table_without_primary_key_in_autocommit(session, small_limits):
    from quorumdb import copyformat
    await ok(session, "CREATE TABLE h (a INT, b TEXT)")
    statement = copyformat.parse_statement("COPY h FROM STDIN")
    text = "".join(f"{i % 3}\tsame\n" for i in range(250))  # identical rows are fine without a key
    result = await session.copy_from(statement, copy_records(text, statement, ["a", "b"]))
    assert (result.error, result.command_tag) == (None, "COPY 250")
    assert await rows(session, "SELECT count(*) FROM h WHERE a = 1") == [(83,)]
    bad = copyformat.parse_statement("COPY h (quorumdb_rowid, a) FROM STDIN")
    error = (await session.copy_from(bad, copy_records("1\t1\n", bad, ["quorumdb_rowid", "a"]))).error
    assert error is not None and error.sqlstate == "0A000"


# --- savepoints and the bulk path ----------------------------------------------------------------
async def test_rollback_to_savepoint_undoes_a_truncate_and_unflushed_bulk_rows(session):
    await ok(session, "CREATE TABLE sp (a int, b int, c text)")
    await ok(session, f"INSERT INTO sp VALUES {values(0, 5)}")
    await ok(session, "BEGIN")
    await ok(session, "SAVEPOINT s")
    await ok(session, "TRUNCATE sp")
    await ok(session, f"INSERT INTO sp VALUES {values(100, 150)}")
    assert await rows(session, "SELECT count(*) FROM sp") == [(50,)]
    await ok(session, "ROLLBACK TO SAVEPOINT s")
    assert await rows(session, "SELECT count(*), min(a) FROM sp") == [(5, 0)]
    await ok(session, "COMMIT")
    assert await rows(session, "SELECT count(*), max(a) FROM sp") == [(5, 4)]


async def test_rollback_to_a_savepoint_before_flushed_rows_is_refused_and_nothing_commits(session):
    await ok(session, "CREATE TABLE sp2 (a int, b int, c text)")
    await ok(session, "BEGIN")
    await ok(session, "SAVEPOINT s")
    await ok(session, "TRUNCATE sp2")
    batch = limits.BULK_BATCH_ROWS_MAX
    for start in range(0, batch + 500, 500):
        await ok(session, f"INSERT INTO sp2 VALUES {values(start, start + 500)}")
    await fails(session, "ROLLBACK TO SAVEPOINT s", "0A000")
    await fails(session, "SELECT 1", "25P02")  # the block stays failed
    await ok(session, "ROLLBACK")
    assert await rows(session, "SELECT count(*) FROM sp2") == [(0,)]


def test_key_digests_find_repeats_and_only_repeats():
    """The rewrite's in-memory duplicate check: every repeated key is found, and a forced digest
    collision between two different keys comes back as a candidate only (the caller confirms)."""
    digests = bulk.KeyDigests(10_000)
    for number in range(5000):
        digests.add(keys.encode_key_tuple((number,)))
    assert digests.repeated() == set()
    digests.add(keys.encode_key_tuple((4321,)))
    assert digests.repeated() == {digests.digest_of(keys.encode_key_tuple((4321,)))}
    colliding = bulk.KeyDigests(10, digest=lambda key: len(key))
    colliding.add(b"ab")
    colliding.add(b"cd")
    assert colliding.repeated() == {2}, "a shared digest is a candidate, not a verdict"
    bounded = bulk.KeyDigests(2)
    bounded.add(b"a")
    bounded.add(b"b")
    with pytest.raises(OverflowError):
        bounded.add(b"c")


async def test_rewrite_checks_duplicates_across_batches_in_memory(session, backend, small_limits, monkeypatch):
    """ADD PRIMARY KEY finds a duplicate whose two rows land in different flushed batches (the
    constraint's name and PostgreSQL's DETAIL), before a NULL; a digest collision of distinct keys does not fail the rewrite."""
    await ok(session, "CREATE TABLE r (a INT, b INT, c TEXT)")
    await ok(session, "CREATE UNIQUE INDEX r_c ON r (c)")
    await ok(session, "BEGIN; TRUNCATE r")
    await ok(session, "INSERT INTO r VALUES " + ", ".join(f"({i}, {i}, 'c{i}')" for i in range(600)) + ", (3, 1, NULL)")
    await ok(session, "COMMIT")
    error = await fails(session, "ALTER TABLE r ADD PRIMARY KEY (a)", "23505", 'could not create unique index "r_pkey"')
    assert error.detail == "Key (a)=(3) is duplicated."
    await ok(session, "DELETE FROM r WHERE c IS NULL")
    await ok(session, "INSERT INTO r VALUES (599, 900, 'c900'), (NULL, 1, 'x')")
    error = await fails(session, "ALTER TABLE r ADD PRIMARY KEY (a)", "23505", 'could not create unique index "r_pkey"')
    assert error.detail == "Key (a)=(599) is duplicated.", "duplicates are reported before NULLs, as PostgreSQL"
    await ok(session, "DELETE FROM r WHERE b = 900")
    await fails(session, "ALTER TABLE r ADD PRIMARY KEY (a)", "23502", 'column "a" of relation "r" contains null values')
    await ok(session, "DELETE FROM r WHERE a IS NULL")
    # Every key gets the same digest: all are candidates, none is a real duplicate.
    real_init = bulk.KeyDigests.__init__
    monkeypatch.setattr(bulk.KeyDigests, "__init__",
                        lambda self, keys_max, digest=hash: real_init(self, keys_max, digest=lambda key: 7))
    await ok(session, "ALTER TABLE r ADD PRIMARY KEY (a)")
    monkeypatch.undo()
    assert await rows(session, "SELECT count(*), count(DISTINCT c) FROM r") == [(600, 600)]
    # Its batches went to the adjudicator flagged private (their keys need not be remembered);
    # the commits of the mark and of the catalog change were not.
    private = [txn_id for _, _, _, txn_id in backend.commits if ":flush" in txn_id]
    assert backend.private_commits == len(private) > 0
    await fails(session, "INSERT INTO r VALUES (5, 0, 'new')", "23505")


async def test_rewrite_past_its_key_bound_is_54000(session, small_limits, monkeypatch):
    monkeypatch.setattr(limits, "REWRITE_KEYS_MAX", 50)
    await ok(session, "CREATE TABLE big (a INT)")
    await ok(session, "INSERT INTO big SELECT g FROM generate_series(1, 60) AS g")
    await fails(session, "ALTER TABLE big ADD PRIMARY KEY (a)", "54000",
                'table "big" is too large to rewrite: more than 50 keys')
    await ok(session, "INSERT INTO big VALUES (61)")  # the mark is gone: the table takes writes again
    assert await rows(session, "SELECT count(*) FROM big") == [(61,)]


async def test_only_a_statement_that_flushed_ahead_outlives_the_node_statement_timeout(session, backend,
                                                                                      small_limits):
    """What the PostgreSQL endpoint asks when the node's statement timeout passes: a statement that
    committed rows ahead into a private keyspace may run on to its transaction's age limit (the
    seconds left), any other statement may not (None)."""
    await ok(session, "CREATE TABLE t (a INT, b TEXT)")
    mark = session.flush_mark()
    await ok(session, "INSERT INTO t VALUES (1, 'x')")
    assert session.bulk_time_left_s(mark) is None, "an ordinary autocommit INSERT"
    await ok(session, "BEGIN; TRUNCATE t")
    mark = session.flush_mark()
    await ok(session, "INSERT INTO t SELECT g, 'y' FROM generate_series(1, 500) AS g")
    left_s = session.bulk_time_left_s(mark)
    assert left_s is not None and 0 < left_s <= limits.TXN_AGE_MAX_NS / 1e9
    mark = session.flush_mark()
    await ok(session, "SELECT count(*) FROM t")
    assert session.bulk_time_left_s(mark) is None, "a later statement of the same block flushed nothing"
    backend.advance(limits.TXN_AGE_MAX_NS)
    await ok(session, "ROLLBACK")
    await ok(session, "BEGIN; TRUNCATE t")
    mark = session.flush_mark()
    await ok(session, "INSERT INTO t SELECT g, 'y' FROM generate_series(1, 500) AS g")
    backend.advance(limits.TXN_AGE_MAX_NS + 1)
    assert session.bulk_time_left_s(mark) == 0.0, "past the age limit nothing is left"
    await ok(session, "ROLLBACK")


async def test_insert_select_over_generate_series_streams_into_the_bulk_path(session, small_limits, monkeypatch):
    """pgbench -I G's INSERT ... SELECT ... FROM generate_series is made and written a chunk at a
    time (the query is never materialised: select_rows is not called); a bad row late in it fails
    the statement and the block; a query naming a table (here the target itself) is materialised
    first, so rows it writes never flow back into it."""
    await ok(session, "CREATE TABLE acc (aid INT NOT NULL, bid INT CHECK (bid < 4), abalance INT, filler TEXT)")
    materialised = []
    real_select_rows = executor.select_rows

    async def select_rows(txn, node):
        materialised.append(node.sql())
        return await real_select_rows(txn, node)

    monkeypatch.setattr(executor, "select_rows", select_rows)
    await ok(session, "BEGIN; TRUNCATE acc")
    result = await ok(session, "INSERT INTO acc (aid, bid, abalance, filler) "
                               "SELECT aid, (aid - 1) / 1000 + 1, 0, '' FROM generate_series(1, 3000) AS aid")
    assert result.command_tag == "INSERT 0 3000" and materialised == []
    assert session.transaction.flushed_batches > 0
    await ok(session, "COMMIT")
    assert await rows(session, "SELECT count(*), sum(aid), max(bid) FROM acc") == [(3000, 3000 * 3001 // 2, 3)]
    await ok(session, "BEGIN; TRUNCATE acc")
    await fails(session, "INSERT INTO acc SELECT g, g / 1000 + 1, 0, '' FROM generate_series(1, 3500) AS g", "23514")
    await fails(session, "SELECT 1", "25P02")
    await ok(session, "ROLLBACK")
    assert await rows(session, "SELECT count(*) FROM acc") == [(3000,)]
    await ok(session, "INSERT INTO acc SELECT aid + 3000, bid, abalance, filler FROM acc WHERE aid <= 50")
    assert len(materialised) == 1, "a query over a table is materialised"
    assert await rows(session, "SELECT count(*) FROM acc") == [(3050,)]


# --- indexes on loaded tables -------------------------------------------------------------------
async def test_create_index_and_add_unique_on_more_rows_than_a_transaction_writes(session, backend, small_limits):
    await ok(session, "CREATE TABLE big (id INT PRIMARY KEY, v INT, w INT)")
    for start in range(0, 4 * small_limits, small_limits // 2):
        await ok(session, "INSERT INTO big VALUES " +
                 ", ".join(f"({i}, {i % 7}, {i})" for i in range(start, start + small_limits // 2)))
    await ok(session, "CREATE INDEX big_v ON big (v)")
    await ok(session, "ALTER TABLE big ADD CONSTRAINT big_w_key UNIQUE (w)")
    assert all(len(writes) <= small_limits for _, writes, _, _ in backend.commits)
    assert await rows(session, "SELECT count(*) FROM big WHERE v = 3") == [(4 * small_limits // 7,)]
    assert session.last_plan.kind is PlanKind.INDEX
    await fails(session, "INSERT INTO big VALUES (-1, 0, 5)", "23505")
    await fails(session, "ALTER TABLE big ADD UNIQUE (v)", "23505")
    # Later in a transaction that already read, the entries count against its limits.
    await ok(session, "BEGIN")
    await ok(session, "SELECT count(*) FROM big")
    await fails(session, "CREATE INDEX big_vw ON big (v, w)", "54000")
    await ok(session, "ROLLBACK")


async def test_create_index_loses_no_concurrent_write(backend):
    builder = Session(backend, "builder")
    writer = Session(backend, "writer")
    await ok(builder, "CREATE TABLE ci (id INT PRIMARY KEY, v INT)")
    await ok(builder, "INSERT INTO ci VALUES (1, 10), (2, 20)")
    await ok(writer, "BEGIN")
    await ok(writer, "INSERT INTO ci VALUES (3, 30)")
    await ok(builder, "CREATE INDEX ci_v ON ci (v)")
    await fails(writer, "COMMIT", "40001")  # its row would be missing from the index
    await ok(writer, "INSERT INTO ci VALUES (3, 30)")  # the mark ended with the index's commit
    assert await rows(builder, "SELECT id FROM ci WHERE v = 30") == [(3,)]
