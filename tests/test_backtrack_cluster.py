"""`quorumdb backtrack` on a real cluster of processes.

Story: three tables are filled and their contents read (that is what a read at T sees); then a
DROP TABLE, a DELETE of every row of another table and an insert into the third. A backtrack to T
brings all three back exactly (a storage copy down when it was committed applies it on return);
a transaction that was open across it cannot commit (40001), even after the leader that took
the backtrack is killed; the
rewound state survives a SIGKILL of every node and a restart; a second backtrack forward, to a
time after the DROP and DELETE, brings that later state back. Bad times are refused with a clear
message and change nothing. `quorumdb status` shows the configured and the reached window.
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

from quorumdb import timefmt
from quorumdb.client import DatabaseError, connect
from tools.launcher import node_status

pytestmark = pytest.mark.cluster

ROOT = pathlib.Path(__file__).resolve().parent.parent
TABLES = ("keep", "drop_me", "wipe")


def cli(cluster, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "tools.cli", *args, "--data-dir", str(cluster.config.data_dir)],
                          capture_output=True, text=True, timeout=180, env=env, cwd=str(ROOT), check=False)


def contents(conn) -> dict[str, list[tuple] | str]:
    """Every table's rows, or the SQLSTATE reading it gives (a dropped table: 42P01)."""
    found: dict[str, list[tuple] | str] = {}
    for table in TABLES:
        try:
            found[table] = conn.execute(f"SELECT * FROM {table} ORDER BY id").rows
        except DatabaseError as error:
            found[table] = error.sqlstate
    return found


def now_iso() -> str:
    """Now, in the command's format (ms, truncated): later than every commit acknowledged so far
    (commit-wait), and earlier than every commit that follows."""
    time.sleep(0.05)
    text = timefmt.format_utc(time.time_ns())
    time.sleep(0.05)
    return text


def storage_backtrack_lines(cluster) -> dict[str, str] | None:
    """Each storage copy's Status `backtrack` line, once every copy answers and has one."""
    lines = {}
    for node in cluster.config.storages:
        status = node_status(node, timeout_s=2.0)
        if status is None or not status.backtrack:
            return None
        lines[node.name] = status.backtrack
    return lines


def wait_for(predicate, what: str, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def backtrack(cluster, to_time: str) -> str:
    result = cli(cluster, "backtrack", "--to-time", to_time)
    assert result.returncode == 0, f"backtrack failed:\n{result.stdout}\n{result.stderr}"
    assert "rewound" in result.stdout and f"used: {to_time}" in result.stdout, result.stdout
    print(result.stdout)
    return result.stdout


def test_backtrack_undoes_drop_and_delete_survives_sigkill_and_moves_forward(cluster_factory):
    # Checkpoints every few entries: the restart below loads the window start from one.
    cluster = cluster_factory(storage_checkpoint_entries=4)
    c0 = cluster.config.computes[0]
    with connect(c0.host, c0.port) as conn:
        conn.execute("CREATE TABLE keep (id BIGINT PRIMARY KEY, v TEXT)")
        conn.execute("CREATE TABLE drop_me (id BIGINT PRIMARY KEY, v TEXT, n INT)")
        conn.execute("CREATE TABLE wipe (id BIGINT PRIMARY KEY, v TEXT)")
        conn.execute("INSERT INTO keep VALUES " + ", ".join(f"({i}, 'k{i}')" for i in range(50)))
        conn.execute("INSERT INTO drop_me VALUES " + ", ".join(f"({i}, 'd{i}', {i * 3})" for i in range(80)))
        conn.execute("INSERT INTO wipe VALUES " + ", ".join(f"({i}, 'w{i}')" for i in range(120)))
        conn.execute("UPDATE keep SET v = 'changed' WHERE id < 5")
        at_t = contents(conn)
        to_t = now_iso()

        open_txn = connect(cluster.config.computes[1].host, cluster.config.computes[1].port)
        open_txn.begin()
        open_txn.execute("UPDATE keep SET v = 'from an open transaction' WHERE id = 7")

        conn.execute("DROP TABLE drop_me")
        conn.execute("DELETE FROM wipe")
        conn.execute("INSERT INTO keep VALUES (1000, 'after T')")
        at_t2 = contents(conn)
        assert at_t2["drop_me"] == "42P01" and at_t2["wipe"] == [] and at_t2 != at_t
        to_t2 = now_iso()

    # One storage copy is down when the backtrack is committed and comes back while the command
    # waits: it applies the entry from the journal like any other, with the same outcome.
    cluster.kill("storage-az3-b")
    command = subprocess.Popen(
        [sys.executable, "-m", "tools.cli", "backtrack", "--to-time", to_t, "--data-dir",
         str(cluster.config.data_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=str(ROOT))
    try:
        time.sleep(1.0)
        cluster.start(["storage-az3-b"])
        stdout, stderr = command.communicate(timeout=180)
    finally:
        if command.poll() is None:
            command.kill()
            command.wait(timeout=10)
    assert command.returncode == 0, f"{stdout}\n{stderr}"
    print(stdout)
    lines = wait_for(lambda: storage_backtrack_lines(cluster), "every storage copy to apply the backtrack")
    assert len(set(lines.values())) == 1 and "rewound" in lines["storage-az3-b"], lines
    with connect(c0.host, c0.port) as conn:
        assert contents(conn) == at_t, "the rewound database differs from what a read at T saw"
    # The leader that took the backtrack dies: its successor holds the floor from the journal.
    cluster.kill("adjudicator-az1")
    with pytest.raises(DatabaseError) as refused:
        open_txn.commit()
    assert refused.value.sqlstate == "40001", refused.value
    assert "started before a backtrack of the database to" in refused.value.message, refused.value.message
    open_txn.close()
    cluster.start(["adjudicator-az1"])
    cluster.wait_ready(["adjudicator-az1"], timeout_s=60)

    # Every node answers (none crashed on the entry); on this shared machine a Status may miss
    # its deadline now and then, hence the retries.
    status = wait_for(lambda: (lambda r: r if r.stdout.endswith("(15 of 15 nodes up)\n") else None)(
        cli(cluster, "status")), "every node to answer Status")
    assert "backtrack window: configured 1d 0h" in status.stdout, status.stdout
    nodes = json.loads(cli(cluster, "status", "--json").stdout)
    storage = [node for node in nodes if node["service"] == "storage"]
    assert all(node["backtrack_window_configured_s"] == 86_400 for node in storage)
    assert all(node["backtrack"].endswith("keys") for node in storage), [node["backtrack"] for node in storage]

    for name in list(cluster.pids):  # every node, no warning
        cluster.kill(name)
    assert list(cluster.config.node_data_dir("storage-az1-a").glob("checkpoint-*.ckpt")), "no checkpoint was written"
    cluster.start()
    cluster.wait_ready(timeout_s=120, healthy=True)
    with connect(c0.host, c0.port) as conn:
        assert contents(conn) == at_t, "the rewound state did not survive a whole-cluster SIGKILL"
        conn.execute("INSERT INTO keep VALUES (2000, 'after the restart')")  # and it takes writes

    backtrack(cluster, to_t2)  # forward again, into the range the first backtrack undid
    with connect(c0.host, c0.port) as conn:
        assert contents(conn) == at_t2, "moving forward again did not bring the later state back"

        # Bad input: a clear error, nothing changed.
        for bad, expected in [
            (timefmt.format_utc(time.time_ns() - 2 * 86_400 * 10**9), "outside the backtrack window"),
            (timefmt.format_utc(time.time_ns() + 3_600 * 10**9), "is in the future"),
            ("2026-13-45 noon", "bad time"),
        ]:
            result = cli(cluster, "backtrack", "--to-time", bad)
            assert result.returncode == 1, result
            assert expected in result.stderr, result.stderr
            assert "Traceback" not in result.stderr
        assert contents(conn) == at_t2
