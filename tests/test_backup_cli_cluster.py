"""`quorumdb backup status` and `quorumdb snapshot` against a running cluster and its own uploader.

A 15-process cluster with frequent checkpoints and a 3 s backup retention, its supervisor
serving as inside `quorumdb up` (so `--base-port` finds the backup as a user's command does).
The story: rows are committed; `backup status` comes to show a restorable time after the last
acknowledged commit, with every storage copy's view; a snapshot taken now pins the objects a
restore to its time needs; while more commits roll the window forward and retention removes
what the window no longer needs, the pinned objects stay, intact; deleting the snapshot removes
only its object, and retention then reclaims what it pinned.
"""
from __future__ import annotations

import io
import json
import time

import pytest

from quorumdb import backup_layout as layout
from tools import cli
from tools import supervisor as supervisor_mod
from quorumdb.client import connect
from tools.dr import backup_cli
from quorumdb.objectstore import open_store
from storage_node import checkpoint

pytestmark = pytest.mark.cluster

RETENTION_S = 3.0
CHECKPOINT_ENTRIES = 40  # a new base every 40 entries, so retention has old ones to remove
UPLOAD_WAIT_S = 90.0  # the first upload on a slow shared machine; the lag itself is seconds
RETENTION_WAIT_S = 150.0


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = backup_cli.command(cli.build_parser().parse_args(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def insert_rows(conn, first: int, count: int) -> None:
    for i in range(first, first + count):
        conn.execute(f"INSERT INTO accounts VALUES ({i}, {i * 10})")


def segment_keys(store) -> dict[str, int]:
    return {info.key: info.size for info in store.list(layout.SEGMENT_PREFIX)}


@pytest.mark.long  # about a minute (waits for retention to reclaim): the CI's regions-and-long step runs it
def test_backup_status_and_a_snapshot_on_a_running_cluster(cluster_factory, monkeypatch):
    # A new base at every checkpoint, so retention has old bases to reclaim within the test.
    cluster = cluster_factory(backup_retention_s=RETENTION_S, storage_checkpoint_entries=CHECKPOINT_ENTRIES,
                              backup_base_log_bytes=1)
    # The commands find the CA and a token in the data directory, as a user's `--base-port` run would.
    monkeypatch.setenv("QUORUMDB_DATA_DIR", str(cluster.config.data_dir))
    base = str(cluster.config.base_port)
    said: list[str] = []
    server = supervisor_mod.serve(supervisor_mod.Supervisor(cluster, said.append),
                                  supervisor_mod.address(cluster.config.base_port))
    compute = cluster.config.computes[0]
    try:
        with connect(compute.host, compute.port) as conn:
            conn.execute("CREATE TABLE accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL)")
            insert_rows(conn, 1, 30)
            written_ns = time.time_ns()  # every insert above was acknowledged, so committed before this

            # 1. backup status, found through the supervisor, comes to cover the writes.
            deadline = time.monotonic() + UPLOAD_WAIT_S
            while True:
                code, out, err = run(["backup", "status", "--base-port", base, "--json"])
                report = json.loads(out) if code == 0 else None
                if report is not None and report["latest_restorable_ts"] >= written_ns:
                    break
                assert time.monotonic() < deadline, (
                    f"backup status never showed a restorable time after {written_ns} within {UPLOAD_WAIT_S:.0f} s: "
                    f"exit {code}, {err.strip() or report}")
                time.sleep(0.5)
            assert report["location"] == cluster.config.backup_location
            assert report["found_through"] == f"the supervisor at {supervisor_mod.address(cluster.config.base_port)}"
            assert 0 < report["earliest_restorable_ts"] <= written_ns <= report["latest_restorable_ts"]
            assert report["uploaded_index"] > 30  # the DDL and 30 inserts are journal entries
            assert all(report["by_kind"][kind]["objects"] >= 1 for kind in ("bases", "logs", "manifests"))
            assert report["objects"] == sum(k["objects"] for k in report["by_kind"].values())
            assert report["bytes"] == sum(k["bytes"] for k in report["by_kind"].values())
            storage_names = [node.name for node in cluster.config.storages]
            assert report["uploader"] in storage_names
            assert [c["name"] for c in report["copies"]] == storage_names
            assert all(c["up"] for c in report["copies"])
            assert any(c["backup_uploader"] for c in report["copies"]), report["copies"]
            assert max(c["backup_uploaded_index"] for c in report["copies"]) >= report["uploaded_index"]
            code, text, err = run(["backup", "status", "--base-port", base])
            assert code == 0, err
            assert text.startswith(f"backup:          {cluster.config.backup_location}")

            # 2. a snapshot now: it waits for the backup to reach now, and pins what a restore needs.
            code, out, err = run(["snapshot", "create", "before-cleanup", "--base-port", base])
            assert code == 0, err
            store = open_store(cluster.config.backup_location)
            snap = layout.decode_snapshot(store.get(layout.snapshot_key("before-cleanup")))
            assert snap.to_ts >= written_ns - 1_000_000  # "now" when created, on the millisecond
            assert snap.index >= report["uploaded_index"]
            pinned = {snap.base, *snap.logs}
            assert pinned <= set(segment_keys(store))
            code, out, err = run(["snapshot", "list", "--base-port", base, "--json"])
            assert code == 0, err
            [listed] = json.loads(out)
            assert (listed["name"], listed["ts"], listed["index"], listed["missing"]) == (
                "before-cleanup", snap.to_ts, snap.index, [])
            assert listed["bytes"] == sum(segment_keys(store)[k] for k in pinned) > 0

            # 3. more commits move the window on; retention removes objects newer than the snapshot's
            # base, so the base is past the window too, and only the snapshot keeps it.
            snap_base_index = layout.parse_base(snap.base).index
            seen: set[str] = set(segment_keys(store))
            next_id, deadline = 31, time.monotonic() + RETENTION_WAIT_S
            while True:
                insert_rows(conn, next_id, 20)
                next_id += 20
                keys = segment_keys(store)
                seen |= set(keys)
                gone = {k for k in seen - set(keys) - pinned if _after(k, snap_base_index)}
                if gone:
                    break
                assert time.monotonic() < deadline, (
                    f"retention removed no object after the snapshot's base {snap.base} within "
                    f"{RETENTION_WAIT_S:.0f} s ({len(keys)} segment objects, {next_id - 1} rows)")
                time.sleep(0.5)
            keys = segment_keys(store)
            assert pinned <= set(keys), f"retention removed pinned objects: {sorted(pinned - set(keys))}"
            checkpoint.verify(store.get(snap.base))
            for key in snap.logs:
                layout.decode_log(store.get(key), layout.parse_log(key))
            code, out, err = run(["backup", "status", "--base-port", base, "--json"])
            assert code == 0, err
            assert json.loads(out)["snapshots"][0]["missing"] == []

            # 4. delete: the snapshot object goes at once; retention reclaims what it pinned later.
            code, out, err = run(["snapshot", "delete", "before-cleanup", "--base-port", base])
            assert code == 0, err
            assert run(["snapshot", "list", "--base-port", base, "--json"])[1] == "[]\n"
            deadline = time.monotonic() + RETENTION_WAIT_S
            while snap.base in segment_keys(store):
                assert time.monotonic() < deadline, f"retention kept {snap.base} after its snapshot was deleted"
                insert_rows(conn, next_id, 5)
                next_id += 5
                time.sleep(0.5)
    finally:
        server.stop(grace=None)


def _after(key: str, base_index: int) -> bool:
    """A base or log object wholly after base_index: retention removes it only once it removes that base."""
    if (found := layout.parse_base(key)) is not None:
        return found.index > base_index
    if (log_object := layout.parse_log(key)) is not None:
        return log_object.first > base_index
    return False
