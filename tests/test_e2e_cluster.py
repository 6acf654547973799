"""End-to-end behaviour of a whole cluster of processes, through the Python client.

What a user must be able to rely on: no lost update under concurrent read-modify-write
through several compute nodes, conflicts surfaced as 40001, no stale read across
compute nodes, and bad input answered with the right SQLSTATE on a session that
keeps working.
"""
from __future__ import annotations

import collections
import random
import threading
import time

import pytest

from quorumdb.client import DatabaseError, connect

pytestmark = pytest.mark.cluster


def compute_conn(cluster, i: int):
    node = cluster.config.computes[i % len(cluster.config.computes)]
    return connect(node.host, node.port)


def test_concurrent_read_modify_write_loses_no_update(shared_cluster):
    with compute_conn(shared_cluster, 0) as conn:
        conn.execute("CREATE TABLE counters (id INT PRIMARY KEY, n BIGINT NOT NULL)")
        conn.execute("INSERT INTO counters VALUES (1, 0), (2, 0)")

    acked = collections.Counter()
    conflicts = collections.Counter()
    problems: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + 60

    def worker(worker_id: int) -> None:
        rng = random.Random(worker_id)
        with compute_conn(shared_cluster, worker_id) as conn:
            for _ in range(12):
                counter_id = rng.choice([1, 2])
                for _attempt in range(50):
                    if time.monotonic() > deadline:
                        return
                    try:
                        conn.execute("BEGIN")
                        (n,), = conn.execute(f"SELECT n FROM counters WHERE id = {counter_id}").rows
                        conn.execute(f"UPDATE counters SET n = {n + 1} WHERE id = {counter_id}")
                        conn.execute("COMMIT")
                    except DatabaseError as e:
                        if conn.transaction_status != "I":
                            conn.execute("ROLLBACK")
                        if e.sqlstate == "40001":
                            with lock:
                                conflicts[worker_id] += 1
                            time.sleep(rng.uniform(0.001, 0.02))
                            continue
                        with lock:
                            problems.append(f"worker {worker_id}: {e.sqlstate} {e.message}")
                        return
                    with lock:
                        acked[counter_id] += 1
                    break

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert not any(t.is_alive() for t in threads), "workers did not finish"
    assert not problems, problems

    with compute_conn(shared_cluster, 2) as conn:
        final = dict(conn.execute("SELECT id, n FROM counters ORDER BY id").rows)
    assert sum(acked.values()) > 0
    for counter_id in (1, 2):
        assert final[counter_id] == acked[counter_id], (
            f"counter {counter_id}: {final[counter_id]} in the database, {acked[counter_id]} increments acknowledged"
        )
    assert sum(conflicts.values()) > 0, "9 clients on 2 counters never conflicted: OCC is not checking"


def test_first_committer_wins_and_the_loser_gets_40001(shared_cluster):
    with compute_conn(shared_cluster, 0) as a, compute_conn(shared_cluster, 1) as b:
        a.execute("CREATE TABLE fcw (id INT PRIMARY KEY, v TEXT)")
        a.execute("INSERT INTO fcw VALUES (1, 'start')")
        a.execute("BEGIN")
        b.execute("BEGIN")
        assert a.execute("SELECT v FROM fcw WHERE id = 1").rows == [("start",)]
        assert b.execute("SELECT v FROM fcw WHERE id = 1").rows == [("start",)]
        a.execute("UPDATE fcw SET v = 'a' WHERE id = 1")
        b.execute("UPDATE fcw SET v = 'b' WHERE id = 1")
        a.execute("COMMIT")
        with pytest.raises(DatabaseError) as info:
            b.execute("COMMIT")
        assert info.value.sqlstate == "40001"
        assert "OC000" in info.value.message
        assert b.transaction_status == "I"
        assert b.execute("SELECT v FROM fcw WHERE id = 1").rows == [("a",)]


def test_commit_on_one_compute_node_is_visible_on_the_others_at_once(shared_cluster):
    with compute_conn(shared_cluster, 0) as writer, compute_conn(shared_cluster, 1) as r1, \
            compute_conn(shared_cluster, 2) as r2:
        writer.execute("CREATE TABLE reg (id INT PRIMARY KEY, v BIGINT)")
        writer.execute("INSERT INTO reg VALUES (1, 0)")
        for value in range(1, 26):
            writer.execute(f"UPDATE reg SET v = {value} WHERE id = 1")
            reader = r1 if value % 2 else r2
            seen = reader.execute("SELECT v FROM reg WHERE id = 1").rows
            assert seen == [(value,)], f"stale read: wrote {value}, another compute node read {seen}"


@pytest.mark.parametrize(
    "sql, sqlstate",
    [
        ("SELEC * FROM bad", "42601"),
        ("SELECT * FROM no_such_table", "42P01"),
        ("SELECT nope FROM bad", "42703"),
        ("INSERT INTO bad VALUES ('abc', 'x')", "22P02"),
        ("INSERT INTO bad VALUES (1, 'dup')", "23505"),
        ("INSERT INTO bad VALUES (NULL, 'x')", "23502"),
        ("CREATE TABLE bad (id INT PRIMARY KEY)", "42P07"),
    ],
)
def test_bad_input_gets_its_sqlstate_and_the_session_keeps_working(shared_cluster, sql, sqlstate):
    with compute_conn(shared_cluster, 0) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bad (id INT PRIMARY KEY, v TEXT)")
        if not conn.execute("SELECT id FROM bad WHERE id = 1").rows:
            conn.execute("INSERT INTO bad VALUES (1, 'one')")
        with pytest.raises(DatabaseError) as info:
            conn.execute(sql)
        assert info.value.sqlstate == sqlstate, info.value.message
        assert conn.transaction_status == "I"
        assert conn.execute("SELECT v FROM bad WHERE id = 1").rows == [("one",)]
