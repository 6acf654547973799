"""The fast path on a real cluster: a repeated point statement on a known table makes one
storage round trip (one request to each copy asked) and parses no SQL the second time.

Story: a client creates a table and runs a point read and an upsert once (the compute node
caches the table's definition and the statements' parses). Then, with other literal values and
with parameters, it runs each statement 20 more times. The compute node's Status counters must
show, per statement: one read (3 copies asked in quorum mode, 1 in single mode), no statement
parsed (statement_misses unchanged), no catalog miss (schema_misses unchanged); and every answer
must be right.
"""
from __future__ import annotations

import pytest

from quorumdb import client
from tools.launcher import node_status

pytestmark = pytest.mark.cluster

ROUNDS = 20


def counters(node) -> dict[str, int]:
    status = node_status(node)
    assert status is not None, f"{node.name} did not answer Status"
    fields = dict(item.split("=", 1) for item in status.detail.split())
    return {key: int(value) for key, value in fields.items() if value.isdigit()}


def delta(before: dict[str, int], after: dict[str, int], *names: str) -> dict[str, int]:
    return {name: after[name] - before[name] for name in names}


@pytest.mark.parametrize("read_mode, copies", [("quorum", 3), ("single", 1)])
def test_repeated_point_statements_read_once_and_parse_nothing(shared_cluster, read_mode, copies):
    node = shared_cluster.config.node("compute-az1")
    table = f"fast_{read_mode}"
    with client.connect(node.host, node.port, timeout_s=20) as connection:
        connection.execute(f"SET quorumdb.read_mode = '{read_mode}'")
        connection.execute(f"CREATE TABLE {table} (k BIGINT PRIMARY KEY, v BIGINT, pad TEXT)")
        upsert = f"INSERT INTO {table} (k, v, pad) VALUES ({{k}}, {{v}}, 'x') ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
        select = f"SELECT v FROM {table} WHERE k = {{k}}"
        connection.execute(upsert.format(k=0, v=0))  # warm: definition and parses cached
        connection.execute(select.format(k=0))
        connection.execute(f"SELECT v FROM {table} WHERE k = $1", [0])
        connection.execute(f"INSERT INTO {table} (k, v, pad) VALUES ($1, $2, $3) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
                           [0, 0, "x"])

        before = counters(node)
        for i in range(1, ROUNDS + 1):
            connection.execute(upsert.format(k=i, v=i * 10))
            assert connection.execute(select.format(k=i)).rows == [(i * 10,)]
        middle = counters(node)
        for i in range(1, ROUNDS + 1):
            connection.execute(f"INSERT INTO {table} (k, v, pad) VALUES ($1, $2, $3) ON CONFLICT (k) DO UPDATE "
                               "SET v = EXCLUDED.v", [i, i * 100, "y"])
            assert connection.execute(f"SELECT v FROM {table} WHERE k = $1", [i]).rows == [(i * 100,)]
        after = counters(node)

    for start, end, how in ((before, middle, "literals"), (middle, after, "parameters")):
        statements = 2 * ROUNDS
        reads = end[f"reads_{read_mode}"] - start[f"reads_{read_mode}"]
        changed = delta(start, end, "copies_asked", "hedges", "statement_misses", "schema_misses")
        print(f"\n{read_mode}, {how}: {statements} statements, {reads} reads, {changed}")
        assert reads == statements, f"{how}: {reads} storage reads for {statements} point statements"
        assert changed["copies_asked"] - changed["hedges"] == copies * statements, changed
        assert changed["statement_misses"] == 0, f"{how}: SQL was parsed again: {changed}"
        assert changed["schema_misses"] == 0, f"{how}: the catalog was read again: {changed}"


def test_describe_over_the_grpc_api_compiles_and_runs_nothing(shared_cluster):
    node = shared_cluster.config.node("compute-az2")
    with client.connect(node.host, node.port, timeout_s=20) as connection:
        connection.execute("CREATE TABLE described (k BIGINT PRIMARY KEY, v TEXT)")
        before = counters(node)
        assert connection.describe("SELECT v, k + 1 AS next FROM described WHERE k = $1") == client.Description(
            ["bigint"], [("v", "text"), ("next", "bigint")])
        assert connection.describe("INSERT INTO described VALUES ($1, $2)") == client.Description(["bigint", "text"], None)
        after = counters(node)
        assert after["reads_quorum"] + after["reads_single"] - before["reads_quorum"] - before["reads_single"] <= 2, \
            "Describe reads no rows (at most the schema version, once per description)"
        assert connection.execute("SELECT count(*) FROM described").rows == [(0,)], "Describe inserted nothing"
        with pytest.raises(client.DatabaseError) as raised:
            connection.describe("SELECT nosuch FROM described")
        assert raised.value.sqlstate == "42703"
