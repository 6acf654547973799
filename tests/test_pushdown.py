"""Scan pushdown: quorumdb/pushdown.py's evaluator, read_core's merge with resume keys,
and the SQL engine's use of both (compute_node/sql/pushdown.py).

The evaluator is checked against the compute node's own WHERE evaluation over random
rows and predicates (NULL, NaN, +-0, infinities, unicode); a pushed filter must keep
every row WHERE keeps, and exactly those when the whole WHERE was pushed.
"""
from __future__ import annotations

import asyncio
import math
import random

import pytest
import sqlglot
from sqlglot import exp

from compute_node.cluster import read_core
from compute_node.sessions.session import Session
from compute_node.sql import pushdown as sql_pushdown
from compute_node.sql.catalog import TableDef
from compute_node.sql.planner import split_and
from quorumdb import keys, limits
from quorumdb import pushdown
from tests.sql_memory_backend import MemoryBackend


# --- a Backend that evaluates pushdown like a storage copy ---------------------------------
class PushdownBackend(MemoryBackend):
    """MemoryBackend whose scans honour `pushdown` as a storage copy does, counting traffic."""

    def __init__(self, examine_max: int = 50):
        super().__init__()
        self.examine_max = examine_max
        self.rows_moved = 0
        self.bytes_moved = 0
        self.pushed_scans = 0

    async def scan(self, start, end, ts, limit):
        rows, more = await super().scan(start, end, ts, limit)
        self._count(rows)
        return rows, more

    async def scan_filtered(self, start, end, ts, limit, pushdown: bytes):
        self.pushed_scans += 1
        spec = pushdown_mod.parse(pushdown)
        walked, more = [], False
        for key, value in self.visible(start, end, ts):
            if len(walked) == self.examine_max:
                more = True
                break
            walked.append((key, value, 1))
        kept, more, resume = pushdown_mod.filter_page(spec, walked, more, limit)
        rows = [(k, v) for k, v, _ in kept]
        self._count(rows)
        return rows, more, resume

    def _count(self, rows) -> None:
        self.rows_moved += len(rows)
        self.bytes_moved += sum(len(k) + len(v) for k, v in rows)


pushdown_mod = pushdown


def run(coro):
    return asyncio.run(coro)


async def execute(session: Session, sql: str):
    results = await session.execute(sql)
    for result in results:
        assert result.error is None, (sql, result.error)
    return results[-1].rows


# --- the evaluator against the engine -------------------------------------------------------
TEXTS = ["", "a", "A", "ab", "b", "é", "ü", "zz", "日本", "😀", "a😀", "O'Neil", " a", "a ", "10", "9"]
INTS = [0, 1, -1, 2, 7, -7, 100, 2**31 - 1, -(2**31), 2**62, -(2**62), 2**63 - 1, -(2**63)]
FLOATS = [0.0, -0.0, 1.0, -1.0, 0.5, 1.5, 2.0, 1e300, -1e300, 1e-300, math.nan, math.inf, -math.inf, 3.0, 7.0]


def _sql_float(value: float) -> str:
    if math.isnan(value):
        return "'NaN'"
    if math.isinf(value):
        return "'Infinity'" if value > 0 else "'-Infinity'"
    return repr(value)


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _random_row(rng: random.Random, row_id: int) -> str:
    def maybe(value_sql: str) -> str:
        return "NULL" if rng.random() < 0.15 else value_sql
    return "(" + ", ".join([
        str(row_id),
        maybe(str(rng.choice(INTS))),
        maybe(str(rng.randint(-3, 3))),
        maybe(_sql_text(rng.choice(TEXTS))),
        maybe(_sql_float(rng.choice(FLOATS))),
        maybe(rng.choice(["true", "false"])),
        maybe(_sql_text(rng.choice(TEXTS))),
    ]) + ")"


def _constant(rng: random.Random, column: str) -> str:
    if rng.random() < 0.07:
        return "NULL"
    if column == "i":
        return str(rng.choice(INTS + [3, -3]))
    if column == "si":
        return str(rng.randint(-4, 4))
    if column in ("s", "vc"):
        return _sql_text(rng.choice(TEXTS))
    if column == "f":
        return rng.choice(["0", "1", "-1", "0.5", "1.5", "2", "7", "1e300", "-0.0", "3.0", "1.0e-300",
                           "9007199254740993"])
    return rng.choice(["true", "false"])


def _atom(rng: random.Random) -> str:
    column = rng.choice(["i", "si", "s", "f", "b", "vc"])
    choice = rng.random()
    if choice < 0.12:
        return f"{column} IS {'NOT ' if rng.random() < 0.5 else ''}NULL"
    if choice < 0.2 and column == "b":
        return rng.choice(["b", "NOT b"])
    if choice < 0.26:
        return rng.choice(["length(s) > 1", "i + 1 > 0", "upper(s) = 'A'", "f * 2 > 1", "si = i"])
    op = rng.choice(["=", "<>", "<", "<=", ">", ">="])
    if rng.random() < 0.2:
        return f"{_constant(rng, column)} {op} {column}"
    return f"{column} {op} {_constant(rng, column)}"


def _predicate(rng: random.Random, depth: int = 0) -> str:
    if depth >= 3 or rng.random() < 0.4:
        return _atom(rng)
    kind = rng.random()
    if kind < 0.4:
        return f"({_predicate(rng, depth + 1)} AND {_predicate(rng, depth + 1)})"
    if kind < 0.8:
        return f"({_predicate(rng, depth + 1)} OR {_predicate(rng, depth + 1)})"
    return f"NOT ({_predicate(rng, depth + 1)})"


CREATE = ("CREATE TABLE r (id INT PRIMARY KEY, i BIGINT, si SMALLINT, s TEXT, f DOUBLE PRECISION, "
          "b BOOLEAN, vc VARCHAR(20))")


def test_evaluator_agrees_with_the_engine_on_random_rows_and_predicates():
    rng = random.Random(4242)

    async def main():
        backend = MemoryBackend()
        session = Session(backend, "agree")
        await execute(session, CREATE)
        row_count = 400
        for first in range(0, row_count, 100):
            await execute(session, "INSERT INTO r VALUES " + ", ".join(
                _random_row(rng, row_id) for row_id in range(first, first + 100)))
        table = TableDef.decode(backend._read(keys.catalog_table_key("r"), backend.start_ts()))
        stored = [(key, versions[-1][1]) for key, versions in sorted(backend.versions.items())
                  if key.startswith(table.rows_prefix)]
        assert len(stored) == row_count
        checked = fully_pushed = 0
        for _ in range(1500):
            predicate = _predicate(rng)
            sql = f"SELECT id FROM r WHERE {predicate}"
            results = await session.execute(sql)
            if results[0].error is not None:  # e.g. smallint out of range: not our business
                continue
            expected = {row[0] for row in results[0].rows}
            where = sqlglot.parse_one(sql, read="postgres").args["where"].this
            conjuncts = split_and(where)

            def position_of(column: exp.Column):
                return table.column_index(column.name)
            built = sql_pushdown.build(table, "r", [(c.name, c.sql_type) for c in table.columns], conjuncts,
                                       position_of, sqlglot.parse_one(sql, read="postgres"))
            if built is None or built.filter_sql is None:
                continue
            spec = pushdown.parse(built.spec)
            kept = set()
            for key, value in stored:
                out = spec.apply(value)
                if out is not None:
                    kept.add(table.decode_row(out)[0])
            assert expected <= kept, (predicate, built.filter_sql, sorted(expected - kept)[:5])
            if built.filter_sql == " AND ".join(c.sql(dialect="postgres") for c in conjuncts):
                fully_pushed += 1
                assert kept == expected, (predicate, sorted(kept - expected)[:5])
            checked += 1
        print(f"predicates checked: {checked}, fully pushed: {fully_pushed}")
        assert checked > 500 and fully_pushed > 300
    run(main())


def test_sessions_with_and_without_pushdown_return_the_same_rows():
    rng = random.Random(7)

    async def main():
        plain, pushed = MemoryBackend(), PushdownBackend(examine_max=13)
        sessions = [Session(plain, "plain"), Session(pushed, "pushed")]
        rows = [_random_row(rng, row_id) for row_id in range(300)]
        for session in sessions:
            await execute(session, CREATE)
            await execute(session, "INSERT INTO r VALUES " + ", ".join(rows))
        for _ in range(300):
            predicate = _predicate(rng)
            sql = rng.choice([f"SELECT id, s FROM r WHERE {predicate} ORDER BY id",
                              f"SELECT * FROM r WHERE {predicate} ORDER BY id",
                              f"SELECT count(*), max(f) FROM r WHERE {predicate}",
                              f"SELECT id FROM r WHERE id > 100 AND {predicate} ORDER BY id LIMIT 5"])
            answers = [await session.execute(sql) for session in sessions]
            # Storage dropping rows first may spare an error WHERE would raise on a row it
            # rejects anyway (PostgreSQL does not promise an evaluation order either); the
            # other way round is a bug.
            assert answers[1][0].error is None or answers[0][0].error is not None, sql
            if answers[0][0].error is None:
                assert repr(answers[0][0].rows) == repr(answers[1][0].rows), sql
        assert pushed.pushed_scans > 0
    run(main())


# --- paging and merge ------------------------------------------------------------------------
def _encoded(row_id: int, value) -> tuple[bytes, bytes, int]:
    return keys.row_key(1, (row_id,)), keys.encode_row([row_id, value]), 5


def test_filter_page_reports_the_last_examined_key():
    spec = pushdown.parse(pushdown.encode(["cmp", ">", 1, "int", 5], None))
    walked = [_encoded(i, i) for i in range(10)]
    kept, more, resume = pushdown.filter_page(spec, walked, True, limit=100)
    assert [keys.decode_row(v)[0] for _, v, _ in kept] == [6, 7, 8, 9]
    assert more and resume == walked[-1][0]
    kept, more, resume = pushdown.filter_page(spec, walked[:5], True, limit=100)
    assert kept == [] and more and resume == walked[4][0]  # an empty page that still moves on
    kept, more, resume = pushdown.filter_page(spec, walked, True, limit=2)
    assert len(kept) == 2 and more and resume == walked[7][0]
    kept, more, resume = pushdown.filter_page(spec, walked, False, limit=4)
    assert len(kept) == 4 and not more and resume is None


def test_projection_keeps_row_length_and_nulls_unneeded_slots():
    spec = pushdown.parse(pushdown.encode(None, [0, 2]))
    assert keys.decode_row(spec.apply(keys.encode_row([1, "big" * 100, 3.5]))) == (1, None, 3.5)
    assert keys.decode_row(spec.apply(keys.encode_row([1, "x"]))) == (1, None)  # an old, shorter row


def test_rows_that_cannot_be_evaluated_exactly_are_kept():
    spec = pushdown.parse(pushdown.encode(["cmp", "=", 3, "int", 1], None))
    short = keys.encode_row([1, 2])  # written before ADD COLUMN: slot 3 absent
    assert spec.apply(short) == short
    mismatched = keys.encode_row([1, 2, 3, "text"])  # not an int
    assert spec.apply(mismatched) == mismatched
    assert spec.apply(keys.encode_row([1, 2, 3, 2])) is None
    assert spec.apply(keys.encode_row([1, 2, 3, None])) is None  # NULL = 1 is not true


@pytest.mark.parametrize("data", [
    b"not json", b'{"v": 2, "filter": null}', b'{"v": 1, "filter": ["cmp", "~", 0, "int", 1]}',
    b'{"v": 1, "filter": ["cmp", "=", 0, "int", "x"]}', b'{"v": 1, "filter": ["frob"]}',
    b'{"v": 1, "columns": [-1]}', b'{"v": 1, "filter": ["and"]}',
])
def test_malformed_specs_are_refused(data):
    with pytest.raises(pushdown.PushdownError):
        pushdown.parse(data)


def test_deep_filters_are_refused():
    node = ["isnull", 0]
    for _ in range(limits.SCAN_PUSHDOWN_DEPTH_MAX + 2):
        node = ["not", node]
    with pytest.raises(pushdown.PushdownError):
        pushdown.encode(node, None)


def _page(name, row_ids, more, resume=None):
    versions = tuple(read_core.Version(bytes([i]), b"v%d" % i, 7, True) for i in row_ids)
    return read_core.ScanPage(name, versions, more, bytes([resume]) if resume is not None else None)


def test_merge_is_valid_up_to_the_smallest_resume_key():
    pages = [_page("a", [2, 9], True, resume=10), _page("b", [2], True, resume=5), _page("c", [2, 9, 12], False)]
    merged = read_core.merge_scan(pages, limit=100)
    assert [k for k, _ in merged.rows] == [bytes([2])]
    assert merged.more and merged.resume_after == bytes([5])
    assert merged.disagreements == []


def test_merge_of_empty_filtered_pages_moves_on():
    pages = [_page("a", [], True, resume=40), _page("b", [], True, resume=30), _page("c", [], True, resume=50)]
    merged = read_core.merge_scan(pages, limit=10)
    assert merged.rows == [] and merged.more and merged.resume_after == bytes([30])
    done = read_core.merge_scan([_page("a", [], False), _page("b", [], False), _page("c", [], False)], limit=10)
    assert done.rows == [] and not done.more


def test_merge_without_resume_keys_is_unchanged():
    pages = [_page("a", [1, 2, 3], True), _page("b", [1, 2], True), _page("c", [1, 2, 3, 4], False)]
    merged = read_core.merge_scan(pages, limit=100)
    assert [k for k, _ in merged.rows] == [bytes([1]), bytes([2])] and merged.resume_after == bytes([2])


def test_check_scan_page_validates_resume_keys():
    assert read_core.check_scan_page(_page("a", [], True, resume=5), b"", None, 10) is None
    assert read_core.check_scan_page(_page("a", [], True), b"", None, 10) is not None
    assert read_core.check_scan_page(_page("a", [6], True, resume=5), b"", None, 10) is not None
    assert read_core.check_scan_page(_page("a", [], False, resume=5), b"", None, 10) is not None
    assert read_core.check_scan_page(_page("a", [], True, resume=50), b"", bytes([20]), 10) is not None


# --- the executor moves fewer rows --------------------------------------------------------------
def test_selective_full_scan_moves_far_fewer_rows_and_bytes():
    async def main():
        plain, pushed = PushdownBackend(), PushdownBackend(examine_max=limits.SCAN_PUSHDOWN_EXAMINE_MAX)
        plain.scan_filtered = None
        sessions = [Session(plain, "plain"), Session(pushed, "pushed")]
        for session in sessions:
            await execute(session, "CREATE TABLE big (id INT PRIMARY KEY, v BIGINT, pad TEXT, note TEXT)")
            for first in range(0, 5000, 1000):
                await execute(session, "INSERT INTO big VALUES " + ", ".join(
                    f"({i}, {i % 100}, '{'p' * 60}', 'n{i}')" for i in range(first, first + 1000)))
        for backend in (plain, pushed):
            backend.rows_moved = backend.bytes_moved = 0
        sql = "SELECT id, note FROM big WHERE v = 42 AND id % 200 = 42 ORDER BY id"
        answers = [await execute(session, sql) for session in sessions]
        assert answers[0] == answers[1] and len(answers[0]) == 25
        print(f"rows moved: {plain.rows_moved} -> {pushed.rows_moved}; "
              f"bytes moved: {plain.bytes_moved} -> {pushed.bytes_moved}")
        assert plain.rows_moved == 5000 and pushed.rows_moved == 50
        assert pushed.bytes_moved * 50 < plain.bytes_moved
        plan = [row[0] for row in await execute(sessions[1], "EXPLAIN " + sql)]
        assert "Storage Filter: (v = 42)" in "\n".join(plan)
        assert any("Storage Columns: id, v, note" in line for line in plan), plan
    run(main())


def test_explain_without_pushable_conditions_and_point_reads():
    async def main():
        session = Session(PushdownBackend(), "explain")
        await execute(session, "CREATE TABLE e (id INT PRIMARY KEY, v BIGINT, w TEXT)")
        plan = "\n".join(r[0] for r in await execute(session, "EXPLAIN SELECT * FROM e WHERE v + 1 = 2"))
        assert "Storage" not in plan
        plan = "\n".join(r[0] for r in await execute(session, "EXPLAIN SELECT * FROM e WHERE id = 3 AND v = 1"))
        assert "Point Lookup" in plan and "Storage" not in plan
        plan = "\n".join(r[0] for r in await execute(session, "EXPLAIN SELECT * FROM e WHERE v = 1"))
        assert "Storage Filter: (v = 1)" in plan and "Storage Columns" not in plan
        plan = "\n".join(r[0] for r in await execute(session, "EXPLAIN SELECT count(*) FROM e x WHERE x.v > 1"))
        assert "Storage Filter: (x.v > 1)" in plan and "Storage Columns: id, v" in plan
    run(main())


def test_own_writes_are_merged_into_filtered_scans():
    async def main():
        session = Session(PushdownBackend(examine_max=3), "writes")
        await execute(session, "CREATE TABLE w (id INT PRIMARY KEY, v BIGINT)")
        await execute(session, "INSERT INTO w VALUES " + ", ".join(f"({i}, {i % 5})" for i in range(40)))
        await execute(session, "BEGIN")
        await execute(session, "UPDATE w SET v = 9 WHERE id = 3")
        await execute(session, "UPDATE w SET v = 1 WHERE id = 4")
        await execute(session, "DELETE FROM w WHERE id = 6")
        rows = await execute(session, "SELECT id FROM w WHERE v = 1 ORDER BY id")
        await execute(session, "ROLLBACK")
        assert [r[0] for r in rows] == [1, 4, 11, 16, 21, 26, 31, 36]
    run(main())
