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
import threading
import time

import pytest

from quorumdb import client, timefmt
from tools import cli
from quorumdb import config as config_mod
from tools.dr import clone as clone_mod
from tools.launcher import Cluster, free_base_port
from tests.conftest import READY_TIMEOUT_S, dump_logs, start_cluster
from tests.test_clone import rebuilt_state

CHECKPOINT_ENTRIES = 25
ROWS_PER_TXN = 100
PAD = "p" * 100
SMALL_TXNS = 2 * CHECKPOINT_ENTRIES + 5  # so the log tail after the newest checkpoint holds small entries only
WRITER_PAUSE_S = 0.2
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


@pytest.mark.long  # about 30 s (writes the source ten times over): the CI's regions-and-long step runs it
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


class Writer(threading.Thread):
    """Inserts rows one commit at a time, noting when each was sent and when it was acknowledged."""

    def __init__(self, cluster: Cluster):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.stop = threading.Event()
        self.rows: list[tuple[int, int, int]] = []  # (id, sent_ns, acked_ns)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with connect(self.cluster) as conn:
                for row_id in range(1, 100_000):  # bounded; stopped long before
                    if self.stop.is_set():
                        return
                    sent_ns = time.time_ns()
                    conn.execute("INSERT INTO stream VALUES ($1)", [row_id])
                    self.rows.append((row_id, sent_ns, time.time_ns()))
                    # Slow enough that the checkpoint before T outlives the clone (copies keep two).
                    self.stop.wait(WRITER_PAUSE_S)
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.error = error


def test_clone_at_a_past_time_starts_beside_the_source_and_writes_stay_isolated(source, tmp_path):
    with connect(source) as conn:
        conn.execute("CREATE TABLE stream (id int PRIMARY KEY)")
        writer = Writer(source)
        writer.start()
        deadline = time.monotonic() + 60
        while len(writer.rows) < 5 and writer.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
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

    at_time = timefmt.format_utc(at_ts + 1_000_000)  # milliseconds, not truncated below the insert's commit
    report = clone_mod.clone(source.config.data_dir, tmp_path / "clone", at_time=at_time,
                             base_port=free_base_port())  # while the writer goes on: files change under it
    deadline = time.monotonic() + 30  # a clone can be quicker than the writer's pause: let it pass T
    while (not any(sent_ns > report.at_ts for _, sent_ns, _ in writer.rows) and writer.is_alive()
           and time.monotonic() < deadline):
        time.sleep(0.05)
    writer.stop.set()
    writer.join(timeout=60)
    assert writer.error is None, writer.error
    at_ts = report.at_ts  # at_time has millisecond precision
    acked_before = {row_id for row_id, _, acked_ns in writer.rows if acked_ns < at_ts}
    sent_after = {row_id for row_id, sent_ns, _ in writer.rows if sent_ns > at_ts}
    assert acked_before and sent_after, "the writer did not straddle T"
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
            in_clone = {row[0] for row in clone_conn.fetchall("SELECT id FROM stream")}
            assert acked_before <= in_clone, f"acknowledged before T, missing: {sorted(acked_before - in_clone)}"
            assert not in_clone & sent_after, f"sent after T, present: {sorted(in_clone & sent_after)}"
            clone_conn.execute("INSERT INTO acct VALUES (100, 1)")
            source_conn.execute("INSERT INTO acct VALUES (200, 2)")
            clone_conn.execute("UPDATE acct SET balance = -1 WHERE id = 1")
            assert clone_conn.fetchall("SELECT id, balance FROM acct ORDER BY id") == \
                [(1, -1)] + seen_at_t[1:] + [(100, 1)]
            assert source_conn.fetchall("SELECT id, balance FROM acct ORDER BY id") == source_rows + [(200, 2)]
    finally:
        clone_cluster.stop_all()


def stable_name(source, path) -> bool:
    """A name the running source itself does not create or remove: not its log files, checkpoints,
    journal segments, or its continuous backup's objects (the storage copies keep uploading)."""
    relative = path.relative_to(source.config.data_dir)
    return ("log-" not in path.name and "checkpoint-" not in path.name and "journal" not in str(relative)
            and relative.parts[:1] != ("backup",))


def test_bad_input_against_a_running_source_leaves_no_new_directory(source, tmp_path):
    new = tmp_path / "new"
    names_before = {p.relative_to(source.config.data_dir) for p in source.config.data_dir.rglob("*")
                    if stable_name(source, p)}
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
                   if stable_name(source, p)}
    assert names_after == names_before
