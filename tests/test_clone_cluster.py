"""quorumdb clone against a real running cluster: a clone at a past T holds exactly what a read
at T saw, the clone starts beside the source and writes stay isolated both ways, the bytes a clone
adds do not grow with the data, and bad input leaves the source and NEW as they were.

One source cluster for the module (storage_checkpoint_entries is low so copies checkpoint often)
and one clone cluster started in one test; every process is stopped by PID at the end.
"""
from __future__ import annotations

import json
import os
import pathlib
import time

import pytest

from quorumdb import cli, client, timefmt
from quorumdb import config as config_mod
from quorumdb.dr import clone as clone_mod
from quorumdb.launcher import Cluster, free_base_port
from tests.conftest import READY_TIMEOUT_S, dump_logs, start_cluster
from tests.test_clone import rebuilt_state

CHECKPOINT_ENTRIES = 10
ROWS_PER_TXN = 100
PAD = "p" * 100
SMALL_TXNS = 2 * CHECKPOINT_ENTRIES + 5  # so the log tail after the newest checkpoint holds small entries only
FIGURES = pathlib.Path(os.environ.get("QUORUMDB_CLONE_FIGURES", "/tmp/quorumdb-clone-figures.json"))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    cluster = start_cluster(tmp_path_factory.mktemp("source"), storage_checkpoint_entries=CHECKPOINT_ENTRIES)
    try:
        yield cluster
    finally:
        cluster.stop_all()


def connect(cluster: Cluster) -> client.Connection:
    return client.connect("127.0.0.1", cluster.config.computes[0].port, timeout_s=30.0)


def load_rows(conn: client.Connection, first_id: int, count: int) -> None:
    for start in range(first_id, first_id + count, ROWS_PER_TXN):
        values = ", ".join(f"({i}, '{PAD}')" for i in range(start, min(start + ROWS_PER_TXN, first_id + count)))
        conn.execute(f"INSERT INTO big VALUES {values}")


def small_writes(conn: client.Connection) -> None:
    for i in range(SMALL_TXNS):
        conn.execute("INSERT INTO small VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET n = excluded.n", [i % 3, i])


def test_bytes_a_clone_adds_do_not_grow_with_the_data(source, tmp_path):
    figures = {}
    with connect(source) as conn:
        conn.execute("CREATE TABLE big (id int PRIMARY KEY, pad text)")
        conn.execute("CREATE TABLE small (id int PRIMARY KEY, n int)")
        for label, first_id, count in (("1x", 1, 2_000), ("10x", 2_001, 18_000)):
            load_rows(conn, first_id, count)
            small_writes(conn)
            assert conn.execute("SELECT count(*) FROM big").scalar() == first_id + count - 1
            report = clone_mod.clone(source.config.data_dir, tmp_path / label, base_port=free_base_port())
            assert report.source_running
            assert report.checkpoint_index > 0, "the source wrote no checkpoint: the clone copied the whole log"
            state, applied = rebuilt_state(config_mod.load(tmp_path / label / "cluster.toml").node_data_dir(
                "storage-az3-b"))
            assert applied == report.cut_index
            assert len(state) >= first_id + count - 1  # every row of big, plus catalog and small
            figures[label] = {"rows": first_id + count - 1, "seconds": round(report.seconds, 3),
                              "wait_seconds": round(report.wait_seconds, 3),
                              "copy_seconds": round(report.copy_seconds, 3),
                              "bytes_linked": report.bytes_linked, "bytes_copied": report.bytes_copied,
                              "entries_copied": report.entries_copied, "clone_dir_bytes": report.clone_bytes}
    print("clone figures:", json.dumps(figures))
    FIGURES.write_text(json.dumps(figures, indent=2))
    one, ten = figures["1x"], figures["10x"]
    assert ten["bytes_linked"] > 5 * one["bytes_linked"], figures  # the data really is about 10x
    assert ten["bytes_copied"] <= 2 * one["bytes_copied"] + 64 * 1024, figures


def test_clone_at_a_past_time_starts_beside_the_source_and_writes_stay_isolated(source, tmp_path):
    with connect(source) as conn:
        conn.execute("CREATE TABLE acct (id int PRIMARY KEY, balance int)")
        conn.execute("INSERT INTO acct VALUES " + ", ".join(f"({i}, {i * 10})" for i in range(1, 11)))
        seen_at_t = conn.fetchall("SELECT id, balance FROM acct ORDER BY id")
        at_ts = time.time_ns()  # after the insert was acknowledged (commit-wait): its commit_ts < at_ts
        time.sleep(0.05)
        conn.execute("UPDATE acct SET balance = balance + 100 WHERE id <= 5")
        conn.execute("DELETE FROM acct WHERE id = 10")
        conn.execute("INSERT INTO acct VALUES (11, 110)")
        source_rows = conn.fetchall("SELECT id, balance FROM acct ORDER BY id")
    assert source_rows != seen_at_t

    at_time = timefmt.format_utc(at_ts)
    report = clone_mod.clone(source.config.data_dir, tmp_path / "clone", at_time=at_time,
                             base_port=free_base_port())
    assert report.at_ts == timefmt.parse_utc(at_time)
    assert report.cut_entry_ts <= report.at_ts
    clone_cluster = Cluster(config_mod.load(tmp_path / "clone" / "cluster.toml"))
    try:
        clone_cluster.start()
        try:
            clone_cluster.wait_ready(timeout_s=READY_TIMEOUT_S, healthy=True)
        except BaseException:
            dump_logs(clone_cluster)
            raise
        with connect(clone_cluster) as clone_conn, connect(source) as source_conn:
            assert clone_conn.fetchall("SELECT id, balance FROM acct ORDER BY id") == seen_at_t
            clone_conn.execute("INSERT INTO acct VALUES (100, 1)")
            source_conn.execute("INSERT INTO acct VALUES (200, 2)")
            clone_conn.execute("UPDATE acct SET balance = -1 WHERE id = 1")
            assert clone_conn.fetchall("SELECT id, balance FROM acct ORDER BY id") == \
                [(1, -1)] + seen_at_t[1:] + [(100, 1)]
            assert source_conn.fetchall("SELECT id, balance FROM acct ORDER BY id") == source_rows + [(200, 2)]
    finally:
        clone_cluster.stop_all()


def test_bad_input_against_a_running_source_leaves_no_new_directory(source, tmp_path):
    new = tmp_path / "new"
    names_before = {p.relative_to(source.config.data_dir) for p in source.config.data_dir.rglob("*")
                    if "log-" not in p.name and "checkpoint-" not in p.name and "journal" not in str(p)}
    future = timefmt.format_utc(time.time_ns() + 3_600 * 1_000_000_000)
    cases = [
        (future, "later than any source copy has applied"),
        ("2020-01-01T00:00:00.000Z", "earlier than the oldest checkpoint"),
        ("13:40", "bad time"),
    ]
    for at_time, expected in cases:
        args = cli.build_parser().parse_args(["clone", "--source", str(source.config.data_dir), "--data-dir",
                                              str(new), "--at-time", at_time, "--base-port",
                                              str(free_base_port())])
        import io
        err = io.StringIO()
        assert cli.command_clone(args, out=io.StringIO(), err=err) == 1
        assert expected in err.getvalue(), err.getvalue()
        assert not new.exists()
    names_after = {p.relative_to(source.config.data_dir) for p in source.config.data_dir.rglob("*")
                   if "log-" not in p.name and "checkpoint-" not in p.name and "journal" not in str(p)}
    assert names_after == names_before
