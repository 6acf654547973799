"""Tables without a primary key, the bulk path and sequences on a real 15-process cluster,
through the PostgreSQL endpoint (psycopg), as pgbench -i uses them.

Story: no-PK tables are created; one transaction truncates one and loads 20,000 rows (far over
the 3,000-row transaction quota: the rows are committed ahead in batches under the table's new
private keyspace); nothing is visible to another compute node until COMMIT, everything after;
ALTER TABLE ADD PRIMARY KEY rewrites it and point lookups use the new key; a rolled-back load
leaves the old rows. Then serial values handed out by two compute nodes are unique.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time

import psycopg
import pytest

from quorumdb import limits
from tests.test_pgwire_cluster import make_token
from tests.util import require

pytestmark = pytest.mark.cluster

ROWS = 20_000
ROWS_PER_STATEMENT = 1_000


def connect(cluster, index: int, token: str, autocommit: bool = True) -> psycopg.Connection:
    port = cluster.config.pg_port(cluster.config.computes[index].name)
    return psycopg.connect(host="127.0.0.1", port=port, user="admin", password=token, dbname="postgres",
                           autocommit=autocommit, connect_timeout=10)


def load_statements(first: int, count: int) -> list[str]:
    statements = []
    for start in range(first, first + count, ROWS_PER_STATEMENT):
        stop = min(start + ROWS_PER_STATEMENT, first + count)
        statements.append("INSERT INTO accounts (aid, bid, abalance, filler) VALUES "
                          + ", ".join(f"({i}, {i % 10}, 0, 'filler {i}')" for i in range(start, stop)))
    return statements


@pytest.mark.long  # about 30 s (bulk loads on three nodes): the CI's regions-and-long step runs it
def test_bulk_load_add_primary_key_and_serial_across_nodes(cluster_factory):
    assert ROWS > limits.TXN_ROWS_MAX * 6, "the load must be far over one transaction's quota"
    cluster = cluster_factory()
    token = make_token(cluster.config.data_dir)
    with connect(cluster, 0, token) as first, connect(cluster, 1, token) as second:
        first.execute("CREATE TABLE accounts (aid INT NOT NULL, bid INT, abalance INT, filler CHAR(40)) "
                      "WITH (fillfactor = 100)")
        first.execute("CREATE INDEX accounts_bid ON accounts (bid)")
        first.execute("INSERT INTO accounts VALUES (-1, 0, 0, 'before')")

        # The quota still holds for an ordinary transaction.
        with pytest.raises(psycopg.errors.ProgramLimitExceeded):
            with first.transaction():
                for sql in load_statements(0, 4_000):
                    first.execute(sql)

        started = time.perf_counter()
        with connect(cluster, 0, token, autocommit=False) as loader:
            loader.execute("TRUNCATE accounts")
            for sql in load_statements(0, ROWS):
                loader.execute(sql)
            # The loading transaction reads its own flushed rows; another node sees the old table.
            assert loader.execute("SELECT count(*), sum(aid) FROM accounts").fetchone() == (ROWS, sum(range(ROWS)))
            assert loader.execute("SELECT count(*) FROM accounts WHERE bid = 3").fetchone() == (ROWS // 10,)
            assert second.execute("SELECT aid FROM accounts").fetchall() == [(-1,)]
            loader.commit()
        loaded = time.perf_counter()
        assert second.execute("SELECT count(*), min(aid), max(aid) FROM accounts").fetchone() == (ROWS, 0, ROWS - 1)

        # A writer on a third node that started before the rewrite must not lose its row silently.
        writer = connect(cluster, 2, token, autocommit=False)
        writer.execute("INSERT INTO accounts VALUES (-7, 0, 0, 'concurrent')")
        altering = time.perf_counter()
        second.execute("ALTER TABLE accounts ADD PRIMARY KEY (aid)")
        print(f"load of {ROWS} rows (with one index) in one transaction: {loaded - started:.1f} s; "
              f"ADD PRIMARY KEY: {time.perf_counter() - altering:.1f} s")
        with pytest.raises(psycopg.errors.SerializationFailure, match="OC001"):
            writer.commit()
        writer.close()
        assert first.execute("SELECT count(*) FROM accounts WHERE aid < 0").fetchone() == (0,)
        for aid in (0, 4_321, ROWS - 1):
            assert first.execute("SELECT aid, bid, filler FROM accounts WHERE aid = %s", (aid,)).fetchone() == (
                aid, aid % 10, f"filler {aid}".ljust(40))
        plan = [row[0] for row in first.execute("EXPLAIN SELECT * FROM accounts WHERE aid = 77").fetchall()]
        assert any("Point Lookup" in line for line in plan), plan
        assert first.execute("SELECT count(*) FROM accounts WHERE bid = 7").fetchone() == (ROWS // 10,)
        with pytest.raises(psycopg.errors.UniqueViolation):
            first.execute("INSERT INTO accounts VALUES (5, 0, 0, 'dup')")
        first.execute("UPDATE accounts SET abalance = abalance + 10 WHERE aid = 5")
        assert second.execute("SELECT abalance FROM accounts WHERE aid = 5").fetchone() == (10,)

        # A rolled-back load: its flushed batches stay unreachable.
        first.execute("CREATE TABLE history (tid INT, delta INT)")
        first.execute("INSERT INTO history VALUES (1, 1)")
        with connect(cluster, 1, token, autocommit=False) as loader:
            loader.execute("TRUNCATE history")
            for start in range(0, 8_000, ROWS_PER_STATEMENT):
                loader.execute("INSERT INTO history VALUES "
                               + ", ".join(f"({i}, {i})" for i in range(start, start + ROWS_PER_STATEMENT)))
            assert loader.execute("SELECT count(*) FROM history").fetchone() == (8_000,)
            loader.rollback()
        assert first.execute("SELECT tid, delta FROM history").fetchall() == [(1, 1)]
        assert second.execute("SELECT count(*) FROM history").fetchone() == (1,)

        # Serial values from two compute nodes: unique, RETURNING gives them.
        first.execute("CREATE TABLE orders (id SERIAL PRIMARY KEY, node INT)")
        seen = []
        for round_number in range(25):
            for node, connection in enumerate((first, second)):
                seen.append(connection.execute("INSERT INTO orders (node) VALUES (%s) RETURNING id",
                                               (node,)).fetchone()[0])
        assert len(set(seen)) == len(seen) == 50
        first_values = seen[0::2]
        assert first_values == sorted(first_values)
        assert second.execute("SELECT count(*) FROM orders").fetchone() == (50,)
        assert first.execute("SELECT currval('orders_id_seq')").fetchone() == (seen[-2],)
        second.execute("SELECT setval('orders_id_seq', 1000)")
        assert first.execute("INSERT INTO orders (node) VALUES (0) RETURNING id").fetchone()[0] > 1000
        first.execute("CREATE TABLE ident (id BIGINT GENERATED ALWAYS AS IDENTITY, v TEXT)")
        with pytest.raises(psycopg.errors.GeneratedAlways):
            first.execute("INSERT INTO ident VALUES (1, 'x')")
        # Each node hands out values from its own reserved range: consecutive within one statement.
        (a,), (b,) = second.execute("INSERT INTO ident (v) VALUES ('a'), ('b') RETURNING id").fetchall()
        assert b == a + 1
        assert first.execute("SELECT count(*), count(DISTINCT id) FROM ident").fetchone() == (2, 2)


@pytest.mark.long  # about 40 s (100,000 rows through COPY): the CI's regions-and-long step runs it
def test_pgbench_init_with_copy(cluster_factory):
    """Unmodified `pgbench -i` (drop, create without keys, BEGIN; TRUNCATE; COPY ...; COMMIT,
    vacuum, primary keys) at scale 1: 100,000 accounts, 33 times the transaction row quota."""
    cluster = cluster_factory()
    token = make_token(cluster.config.data_dir)
    port = cluster.config.pg_port(cluster.config.computes[0].name)
    env = dict(os.environ, PGPASSWORD=token)
    started = time.perf_counter()
    require(shutil.which("pgbench"), "pgbench", "bash scripts/install-postgres")
    done = subprocess.run([shutil.which("pgbench"), "-h", "127.0.0.1", "-p", str(port), "-U", "admin", "-i", "-s", "1",
                           "postgres"], capture_output=True, text=True, timeout=600, env=env, check=False)
    print(f"pgbench -i -s 1: {time.perf_counter() - started:.1f} s\n{done.stderr}")
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    with connect(cluster, 1, token) as check:
        assert check.execute("SELECT count(*), count(DISTINCT aid), sum(abalance) FROM pgbench_accounts").fetchone() \
            == (100_000, 100_000, 0)
        assert check.execute("SELECT count(*) FROM pgbench_tellers").fetchone() == (10,)
        assert check.execute("SELECT bid FROM pgbench_accounts WHERE aid = 54321").fetchone() == (1,)
        plan = [row[0] for row in check.execute("EXPLAIN SELECT * FROM pgbench_accounts WHERE aid = 7").fetchall()]
        assert any("Point Lookup" in line for line in plan), plan


def test_pgbench_initialises_and_runs_tpcb(cluster_factory):
    """pgbench's own DDL (-I d t: drop, create without primary keys; v p: vacuum, add primary keys)
    around a load in one transaction (what -I g sends with COPY, here with INSERTs), then the
    built-in TPC-B-like script, whose history inserts go to a table without a primary key."""
    cluster = cluster_factory()
    token = make_token(cluster.config.data_dir)
    port = cluster.config.pg_port(cluster.config.computes[0].name)
    env = dict(os.environ, PGPASSWORD=token)
    require(shutil.which("pgbench"), "pgbench", "bash scripts/install-postgres")
    base = [shutil.which("pgbench"), "-h", "127.0.0.1", "-p", str(port), "-U", "admin"]

    def pgbench(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([*base, *args, "postgres"], capture_output=True, text=True, timeout=300, env=env, check=False)
        assert done.returncode == 0, f"pgbench {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done

    pgbench("-i", "-I", "dt")
    t0 = time.perf_counter()
    accounts = 10_000
    with connect(cluster, 1, token, autocommit=False) as loader:
        loader.execute("TRUNCATE TABLE pgbench_accounts, pgbench_branches, pgbench_history, pgbench_tellers")
        loader.execute("INSERT INTO pgbench_branches (bid, bbalance) VALUES (1, 0)")
        loader.execute("INSERT INTO pgbench_tellers (tid, bid, tbalance) VALUES "
                       + ", ".join(f"({i}, 1, 0)" for i in range(1, 11)))
        for start in range(1, accounts + 1, ROWS_PER_STATEMENT):
            loader.execute("INSERT INTO pgbench_accounts (aid, bid, abalance, filler) VALUES "
                           + ", ".join(f"({i}, 1, 0, '')" for i in range(start, start + ROWS_PER_STATEMENT)))
        loader.commit()
    print("load:", round(time.perf_counter() - t0, 1), "s")
    t0 = time.perf_counter()
    pgbench("-i", "-I", "vp")
    print("vacuum + primary keys:", round(time.perf_counter() - t0, 1), "s")
    done = pgbench("-n", "-c", "2", "-t", "15", "--max-tries", "50", "-M", "simple")
    assert "number of failed transactions: 0" in done.stdout, done.stdout
    with connect(cluster, 2, token) as check:
        (history_rows, delta_sum), = check.execute("SELECT count(*), coalesce(sum(delta), 0) FROM pgbench_history")
        assert history_rows == 30
        assert check.execute("SELECT sum(bbalance) FROM pgbench_branches").fetchone() == (delta_sum,)
        assert check.execute("SELECT sum(tbalance) FROM pgbench_tellers").fetchone() == (delta_sum,)
        assert check.execute("SELECT count(*) FROM pgbench_accounts").fetchone() == (accounts,)
