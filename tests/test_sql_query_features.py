"""Query-level SQL tools emit, where PostgreSQL has no counterpart to compare with: the bounds
(WITH RECURSIVE, generate_series, window frames) and the shapes of plans. Answers themselves are
checked against PostgreSQL by the differential corpus (tests/differential/corpus/11_tools_sql.sql)."""
from __future__ import annotations

import pytest

from compute_node.sessions.session import Session
from quorumdb import limits
from tests.sql_memory_backend import MemoryBackend
from tests.test_sql_statements import fails, ok, rows


@pytest.fixture
def session():
    return Session(MemoryBackend(), "test")


async def test_a_recursion_without_a_stop_fails_with_the_iteration_bound(session, monkeypatch):
    monkeypatch.setattr(limits, "RECURSIVE_ITERATIONS_MAX", 50)
    error = await fails(session, "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
                        "54000")
    assert "50 iterations" in error.message
    assert await rows(session, "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 50) "
                               "SELECT count(*) FROM r") == [(50,)]


async def test_a_recursion_that_grows_too_wide_fails_with_the_row_bound(session, monkeypatch):
    monkeypatch.setattr(limits, "RESULT_ROWS_MAX", 1000)
    error = await fails(session, "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n FROM r, (VALUES (1), (2)) v(x)) "
                                 "SELECT count(*) FROM r", "54000")
    assert "recursive query" in error.message


async def test_a_union_recursion_stops_when_nothing_new_appears(session):
    assert await rows(session, "WITH RECURSIVE r(n) AS (SELECT 0 UNION SELECT (n + 1) % 7 FROM r) "
                               "SELECT count(*), sum(n) FROM r") == [(7, 21)]


async def test_generate_series_is_bounded(session, monkeypatch):
    monkeypatch.setattr(limits, "RESULT_ROWS_MAX", 100)
    await fails(session, "SELECT count(*) FROM generate_series(1, 1000000000)", "54000")
    assert await rows(session, "SELECT count(*) FROM generate_series(1, 100)") == [(100,)]


async def test_sliding_window_frames_are_bounded(session, monkeypatch):
    monkeypatch.setattr(limits, "WINDOW_FRAME_ROWS_MAX", 1000)
    sql = ("SELECT max(s) FROM (SELECT min(g) OVER (ORDER BY g ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING) s "
           "FROM generate_series(1, 100) g) t")
    await fails(session, sql, "54000")
    # A frame anchored at the partition start grows: each row is added once, whatever the size.
    assert await rows(session, "SELECT max(s) FROM (SELECT sum(g) OVER (ORDER BY g) s FROM generate_series(1, 2000) g) t") \
        == [(2001000,)]
    # A sliding count or integer sum drops the rows that leave the frame: also linear.
    assert await rows(session, "SELECT max(s), min(c) FROM (SELECT sum(g) OVER w s, count(*) OVER w c "
                               "FROM generate_series(1, 2000) g "
                               "WINDOW w AS (ORDER BY g ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING)) t") \
        == [(2001000, 1)]


async def test_pgbench_server_side_initialisation_statement(session):
    await ok(session, "CREATE TABLE pgbench_accounts (aid int PRIMARY KEY, bid int, abalance int, filler char(84))")
    await ok(session, "insert into pgbench_accounts(aid,bid,abalance,filler) select aid, (aid - 1) / 1000 + 1, 0, '' "
                      "from generate_series(1, 2500) as aid")
    assert await rows(session, "SELECT count(*), max(bid), sum(abalance) FROM pgbench_accounts") == [(2500, 3, 0)]
    # The full 100,000-row statement is one transaction: it meets DSQL's rows-per-transaction limit.
    await fails(session, "insert into pgbench_accounts(aid,bid,abalance,filler) select aid, (aid - 1) / 100000 + 1, 0, '' "
                         "from generate_series(2501, 102500) as aid", "54000")


async def test_explain_names_the_new_plan_steps(session):
    await ok(session, "CREATE TABLE t (id int PRIMARY KEY, v int)")
    plan = [r[0] for r in await rows(session, "EXPLAIN SELECT id, rank() OVER (ORDER BY v) FROM t")]
    assert plan[0].startswith("WindowAgg")
    plan = [r[0] for r in await rows(session, "EXPLAIN SELECT * FROM t a FULL JOIN t b ON a.id = b.v")]
    assert plan[0] == "Hash Join (Full join b)"
    plan = [r[0] for r in await rows(session, "EXPLAIN SELECT * FROM t, generate_series(1, t.v) g")]
    assert any("Function Scan on g" in line for line in plan), plan


async def test_describe_infers_parameters_of_the_new_clauses(session):
    await ok(session, "CREATE TABLE t (id int PRIMARY KEY, v bigint)")
    cases = [
        ("SELECT id, sum(v) OVER (ORDER BY id ROWS BETWEEN $1 PRECEDING AND CURRENT ROW) FROM t", 1,
         ["bigint"], [("id", "integer"), ("sum", "numeric")]),
        ("SELECT lag(v, $1, $2) OVER (ORDER BY id) FROM t", 2, ["integer", "bigint"], [("lag", "bigint")]),
        ("SELECT g FROM generate_series(1, $1) AS g", 1, ["integer"], [("g", "integer")]),
        ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < $1) SELECT n FROM r", 1,
         ["integer"], [("n", "integer")]),
    ]
    for sql, count, params, columns in cases:
        description = await session.describe(sql, count, ())
        assert [t.pg_name for t in description.param_types] == params, sql
        assert description.columns is not None, sql
        assert list(description.columns) == columns, sql
