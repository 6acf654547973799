"""The access-path planner (pure): point reads, primary-key ranges, full scans."""
from __future__ import annotations

import sqlglot

from compute_node.sql.catalog import table_from_create
from compute_node.sql.planner import PlanKind, plan_access
from quorumdb import keys


def table(ddl: str, table_id: int = 7):
    return table_from_create(sqlglot.parse_one(ddl, read="postgres"), table_id)


USERS = table("CREATE TABLE users (id INT PRIMARY KEY, name TEXT, score DOUBLE PRECISION)")
EVENTS = table("CREATE TABLE events (tenant TEXT, seq BIGINT, body TEXT, PRIMARY KEY (tenant, seq))")


def plan(tbl, where: str | None):
    node = sqlglot.parse_one(f"SELECT * FROM x WHERE {where}", read="postgres").args["where"].this if where else None
    return plan_access(tbl, node)


def test_equality_on_the_whole_key_is_a_point_read():
    p = plan(USERS, "id = 5")
    assert p.kind is PlanKind.POINT
    assert p.point_keys == (keys.row_key(7, [5]),)
    assert plan(USERS, "5 = id AND name = 'x'").point_keys == (keys.row_key(7, [5]),)
    assert plan(USERS, "id = '5'").point_keys == (keys.row_key(7, [5]),)  # unknown literal coerced
    assert plan(USERS, "id = -3").point_keys == (keys.row_key(7, [-3]),)
    composite = plan(EVENTS, "seq = 2 AND tenant = 'acme'")
    assert composite.kind is PlanKind.POINT
    assert composite.point_keys == (keys.row_key(7, ["acme", 2]),)


def test_in_list_is_several_point_reads_in_key_order():
    p = plan(USERS, "id IN (9, 3, 3, 5)")
    assert p.kind is PlanKind.POINT
    assert p.point_keys == tuple(keys.row_key(7, [v]) for v in (3, 5, 9))
    product = plan(EVENTS, "tenant IN ('a', 'b') AND seq IN (1, 2)")
    assert product.kind is PlanKind.POINT and len(product.point_keys) == 4
    assert list(product.point_keys) == sorted(product.point_keys)


def test_contradictions_read_nothing():
    assert plan(USERS, "id = 1 AND id = 2") .point_keys == ()
    assert plan(USERS, "id = NULL").point_keys == ()
    assert plan(USERS, "id > 5 AND id < 3").point_keys == ()


def test_ranges_on_leading_key_columns():
    p = plan(USERS, "id >= 10 AND id < 20")
    assert p.kind is PlanKind.RANGE
    assert p.start == keys.row_key(7, [10]) and p.end == keys.row_key(7, [20])
    between = plan(USERS, "id BETWEEN 10 AND 20")
    assert between.start == keys.row_key(7, [10])
    assert between.end == keys.prefix_end(keys.row_key(7, [20]))
    open_low = plan(USERS, "id > 10")
    assert open_low.start == keys.prefix_end(keys.row_key(7, [10]))
    assert open_low.end == keys.prefix_end(keys.table_prefix(7))
    tighter = plan(USERS, "id > 10 AND id >= 15 AND id <= 30 AND id < 100")
    assert tighter.start == keys.row_key(7, [15]) and tighter.end == keys.prefix_end(keys.row_key(7, [30]))


def test_prefix_of_a_composite_key_is_a_range():
    p = plan(EVENTS, "tenant = 'acme'")
    assert p.kind is PlanKind.RANGE
    prefix = keys.table_prefix(7) + keys.encode_key_tuple(["acme"])
    assert p.start == prefix and p.end == keys.prefix_end(prefix)
    bounded = plan(EVENTS, "tenant = 'acme' AND seq > 100")
    assert bounded.start == keys.prefix_end(keys.row_key(7, ["acme", 100]))
    assert bounded.end == keys.prefix_end(prefix)


def test_everything_else_is_a_full_scan():
    full_range = (keys.table_prefix(7), keys.prefix_end(keys.table_prefix(7)))
    for where in [None, "name = 'x'", "id = 1 OR id = 2", "id + 0 = 1", "seq = 5", "id = 1.5",
                  "NOT id = 1", "id <> 3", "score > 2"]:
        tbl = EVENTS if where == "seq = 5" else USERS
        p = plan(tbl, where)
        assert p.kind is PlanKind.FULL, where
        assert (p.start, p.end) == full_range


def test_huge_in_product_falls_back_to_a_range():
    values = ", ".join(str(i) for i in range(40))
    p = plan(EVENTS, f"tenant = 'a' AND seq IN ({values})")
    assert p.kind is PlanKind.POINT
    tenants = ", ".join(f"'t{i}'" for i in range(40))
    p = plan(EVENTS, f"tenant IN ({tenants}) AND seq IN ({values})")  # 1600 keys > PLAN_POINT_KEYS_MAX
    assert p.kind is PlanKind.FULL
