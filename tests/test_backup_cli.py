"""`quorumdb backup status`, `quorumdb snapshot create|list|delete` and dr/locate, against object stores.

The stores are filled the way storage copies fill them (quorumdb/backup_layout.py): real
checkpoint bytes of a storage Segment (storage_node/checkpoint.encode), real log objects of
journal Entries (backup_layout.encode_log), manifests; then the commands run as a user runs
them (argv through tools.cli's parser), with `now` passed in so that every printed field has
one right value. tests/test_backup_cli_cluster.py runs them against a cluster's own uploader.
"""
from __future__ import annotations

import concurrent.futures
import io
import json
import pathlib

import grpc
import pytest

from quorumdb import backup_layout as layout
from quorumdb import timefmt
from tools import cli
from quorumdb import certs
from quorumdb import config as config_mod
from tools import supervisor as supervisor_mod
from tools.dr import backup_cli, locate
from quorumdb.objectstore import LocalStore
from quorumdb.pb import common_pb2, supervisor_pb2, supervisor_pb2_grpc
from storage_node import checkpoint
from storage_node.core import Record, Segment
from tests.util import free_base_port

T0 = timefmt.parse_utc("2026-12-01T12:00:00.000Z")
MS = 1_000_000


def ts_of(index: int) -> int:
    """Entry i committed at T0 + 10 ms * i (+ 0.25 ms: not on a millisecond, as real commits are)."""
    return T0 + index * 10 * MS + MS // 4


def entry(index: int) -> common_pb2.Entry:
    key = b"k%d" % (index % 7)
    write = common_pb2.Write(key=key, tombstone=True) if index % 5 == 0 else common_pb2.Write(key=key, value=b"v%d" % index)
    return common_pb2.Entry(index=index, epoch=1, kind=common_pb2.ENTRY_TXN, ts=ts_of(index), writes=[write],
                            txn_id=f"t{index}")


class Backup:
    """Writes a backup the way the uploader does: bases of a real segment, logs, manifests."""

    def __init__(self, root: pathlib.Path) -> None:
        self.store = LocalStore(root)
        self.store.check()
        self.segment = Segment()

    def base(self, index: int) -> str:
        records = []
        for i in range(self.segment.applied_index + 1, index + 1):
            e = entry(i)
            records.append(Record(i, e.ts, tuple((w.key, None if w.tombstone else w.value) for w in e.writes)))
        self.segment.apply(records)
        header = checkpoint.CheckpointHeader(self.segment.applied_index, self.segment.last_applied_ts,
                                             self.segment.last_applied_ts, 0)
        data = b"".join(checkpoint.encode(header, self.segment.checkpoint_records(self.segment.checkpoint_view()),
                                          4096))
        key = layout.base_key(index, self.segment.last_applied_ts)
        self.store.put(key, data)
        return key

    def log(self, first: int, last: int) -> str:
        key = layout.log_key(first, last, ts_of(first), ts_of(last))
        self.store.put(key, layout.encode_log([entry(i) for i in range(first, last + 1)]))
        return key

    def manifest(self, index: int, uploader: str = "storage-az2-b", base_index: int = 0) -> str:
        restorable = ts_of(index) + 5 * MS  # the uploader's closed ts, a little after the last entry
        key = layout.manifest_key(index, restorable)
        self.store.put(key, layout.encode_manifest(layout.Manifest(index, restorable, base_index, uploader,
                                                                   restorable + 100 * MS)))
        return key

    def sizes(self) -> dict[str, int]:
        return {info.key: info.size for info in self.store.list("")}


@pytest.fixture
def backup(tmp_path) -> Backup:
    """Genesis base, logs [1,10] [11,20] [21,30], a base at 20, manifests at 20 and 30."""
    b = Backup(tmp_path / "backup")
    b.base(0)
    b.log(1, 10)
    b.log(11, 20)
    b.base(20)
    b.log(21, 30)
    b.manifest(20)
    b.manifest(30, base_index=20)
    return b


LATEST = ts_of(30) + 5 * MS
NOW = LATEST + 1234 * MS + 567  # upload lag 1234 ms


def run(argv: list[str], now_ns: int = NOW, **seams) -> tuple[int, str, str]:
    """One `quorumdb ...` command at `now_ns`: its exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    code = backup_cli.command(cli.build_parser().parse_args(argv), out, err, now_ns=lambda: now_ns, **seams)
    return code, out.getvalue(), err.getvalue()


def status_json(location: str, now_ns: int = NOW) -> dict:
    code, out, err = run(["backup", "status", "--from", location, "--json"], now_ns)
    assert code == 0, err
    return json.loads(out)


# --- the restorable window (pure) ---------------------------------------------------------------
def test_window_of_a_genesis_base_starts_at_the_first_entry(backup):
    view = layout.BackupView.from_listing(backup.sizes().items())
    assert backup_cli.restorable_window(view) == backup_cli.Window(ts_of(1), LATEST, 30)


def test_window_starts_at_the_oldest_base_whose_logs_reach_the_uploaded_index(tmp_path):
    b = Backup(tmp_path / "b")
    b.base(0)
    old_log = b.log(1, 10)  # pinned by a snapshot; [11, 20] was removed by retention
    b.base(20)
    b.log(21, 30)
    b.manifest(30)
    view = layout.BackupView.from_listing(b.sizes().items())
    # Not the pinned genesis base: a restore to a time before base 20 would miss [11, 20].
    assert view.earliest_restorable_ts == ts_of(20)
    assert backup_cli.restorable_window(view).earliest_ts == ts_of(20)
    with pytest.raises(layout.OutsideWindow, match="before the earliest"):
        layout.plan_restore(view, ts_of(15))
    assert old_log in b.sizes()


def test_window_is_empty_without_a_manifest_or_a_base(tmp_path):
    b = Backup(tmp_path / "b")
    b.base(0)
    b.log(1, 10)
    assert backup_cli.restorable_window(layout.BackupView.from_listing(b.sizes().items())).latest_ts == 0
    assert backup_cli.restorable_window(layout.BackupView.from_listing([])) == backup_cli.Window(0, 0, 0)


def test_logs_that_overlap_or_run_past_the_manifest_still_form_one_run(tmp_path):
    b = Backup(tmp_path / "b")
    b.base(0)
    b.log(1, 12)
    b.log(8, 25)  # a second uploader's range, overlapping the first
    b.log(26, 40)  # uploaded after the newest manifest was written
    b.manifest(30)
    view = layout.BackupView.from_listing(b.sizes().items())
    assert backup_cli.restorable_window(view) == backup_cli.Window(ts_of(1), ts_of(30) + 5 * MS, 30)


# --- backup status ----------------------------------------------------------------------------
def test_backup_status_json_has_every_field(backup):
    sizes = backup.sizes()
    report = status_json(backup.store.location)
    assert report["location"] == backup.store.location
    assert report["found_through"] == "--from"
    assert report["earliest_restorable_ts"] == ts_of(1)
    assert report["earliest_restorable_time"] == "2026-12-01T12:00:00.010Z"
    assert report["latest_restorable_ts"] == LATEST
    assert report["latest_restorable_time"] == "2026-12-01T12:00:00.305Z"
    assert report["upload_lag_ms"] == 1234
    assert report["uploaded_index"] == 30
    assert report["objects"] == 7
    assert report["bytes"] == sum(sizes.values())
    by_kind = report["by_kind"]
    assert {k: v["objects"] for k, v in by_kind.items()} == {"bases": 2, "logs": 3, "manifests": 2, "snapshots": 0,
                                                             "other": 0}
    assert by_kind["bases"]["bytes"] == sum(s for k, s in sizes.items() if "/base/" in k)
    assert by_kind["logs"]["bytes"] == sum(s for k, s in sizes.items() if "/log/" in k)
    assert by_kind["manifests"]["bytes"] == sum(s for k, s in sizes.items() if "/manifest/" in k)
    assert report["uploader"] == "storage-az2-b"
    assert report["manifest_written_time"] == timefmt.format_utc(LATEST + 100 * MS)
    assert report["copies"] is None  # --from names no cluster to ask
    assert report["snapshots"] == []


def test_backup_status_text(backup):
    code, out, err = run(["backup", "status", "--from", backup.store.location])
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"backup:          {backup.store.location} (found through --from)"
    assert lines[1] == f"restorable from: 2026-12-01T12:00:00.010Z (commit_ts {ts_of(1)})"
    assert lines[2] == f"restorable to:   2026-12-01T12:00:00.305Z (commit_ts {LATEST})"
    assert lines[3] == "upload lag:      1234 ms"
    assert lines[4] == "uploaded index:  30"
    assert lines[5].startswith("uploader:        storage-az2-b (newest manifest")
    assert lines[6].startswith(f"objects:         7 ({sum(backup.sizes().values())} bytes): 2 bases (")
    assert "3 logs (" in lines[6] and "2 manifests (" in lines[6] and "0 snapshots (0 bytes)" in lines[6]
    assert "not asked" in lines[7]
    assert lines[8] == "snapshots:       none"


def test_backup_status_shows_each_storage_copys_view():
    located = locate.Located("/b", "test", None, ())
    listing = [(layout.base_key(0, 0), 100), (layout.log_key(1, 3, 10, 30), 50), (layout.manifest_key(3, 35), 20)]
    copies = [backup_cli.CopyBackup("storage-az1-a", common_pb2.NodeStatus(
                  backup_uploader=True, backup_uploaded_index=3, backup_restorable_ts=T0, backup="uploading, lag 40 ms")),
              backup_cli.CopyBackup("storage-az1-b", common_pb2.NodeStatus(backup_uploaded_index=3)),
              backup_cli.CopyBackup("storage-az2-a", None)]
    report = backup_cli.status_report(located, listing, None, [], copies, now_ns=T0)
    assert report["copies"] == [
        {"name": "storage-az1-a", "up": True, "backup_uploader": True, "backup_uploaded_index": 3,
         "backup_restorable_ts": T0, "backup_restorable_time": "2026-12-01T12:00:00.000Z",
         "backup": "uploading, lag 40 ms"},
        {"name": "storage-az1-b", "up": True, "backup_uploader": False, "backup_uploaded_index": 3,
         "backup_restorable_ts": 0, "backup_restorable_time": "", "backup": ""},
        {"name": "storage-az2-a", "up": False},
    ]
    assert report["earliest_restorable_ts"] == 10 and report["latest_restorable_ts"] == 35
    assert report["upload_lag_ms"] == (T0 - 35) // MS
    text = backup_cli.status_text(report)
    copy_lines = [line for line in text.splitlines() if line.lstrip().startswith("storage-az")]
    assert [line.split("|")[1].strip() for line in copy_lines] == ["up", "up", "down"]
    assert "yes" in copy_lines[0] and "uploading, lag 40 ms" in copy_lines[0]
    everyone_down = [backup_cli.CopyBackup("storage-az1-a", None)]
    assert "none answers" in backup_cli.status_text(
        backup_cli.status_report(located, listing, None, [], everyone_down, now_ns=T0))


def test_backup_status_through_the_data_dir_asks_the_cluster_copies(backup, tmp_path):
    cluster = config_mod.default_cluster(tmp_path / "cluster", base_port=free_base_port(),
                                         backup_dir=backup.store.location)
    cluster.write()
    certs.ensure(cluster.certs_path, [])  # as `up` makes them: the copies are asked over TLS
    code, out, err = run(["backup", "status", "--data-dir", str(cluster.data_dir), "--json"])
    assert code == 0, err
    report = json.loads(out)
    assert report["found_through"] == str(cluster.config_path)
    assert report["location"] == backup.store.location
    # No node runs on that block: every copy is asked, and none answers.
    assert [c["name"] for c in report["copies"]] == [n.name for n in cluster.storages]
    assert not any(c["up"] for c in report["copies"])


def test_backup_status_fails_clearly_when_there_is_nothing_to_restore(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = run(["backup", "status", "--from", str(empty)])
    assert (code, out) == (1, "")
    assert f"no backup at {empty}: the store holds no objects" in err

    b = Backup(tmp_path / "early")
    b.base(0)
    b.log(1, 4)
    code, _, err = run(["backup", "status", "--from", b.store.location])
    assert code == 1 and "holds no restorable point yet (2 objects, 1 bases, 0 manifests)" in err

    code, _, err = run(["backup", "status", "--from", str(tmp_path / "typo")])
    assert code == 1 and f"--from {tmp_path / 'typo'}: no such directory" in err


def test_backup_status_names_a_corrupt_manifest(backup):
    newest = max(k for k in backup.sizes() if "/manifest/" in k)
    path = pathlib.Path(backup.store.location) / newest
    raw = bytearray(path.read_bytes())
    raw[-2] ^= 0xFF
    path.write_bytes(bytes(raw))
    code, out, err = run(["backup", "status", "--from", backup.store.location])
    assert code == 1 and out == ""
    assert newest in err and "sha256" in err


def test_backup_status_cannot_open_a_store_it_has_no_backend_for(tmp_path, monkeypatch):
    def unreachable(location):
        raise backup_cli.ObjectStoreError(f"{location}: cannot connect to the endpoint")

    monkeypatch.setattr(backup_cli, "open_store", unreachable)
    code, _, err = run(["backup", "status", "--from", "s3://bucket/prefix"])
    assert code == 1 and "cannot open the backup at s3://bucket/prefix: s3://bucket/prefix: cannot connect" in err


# --- snapshot create ----------------------------------------------------------------------------
def read_snapshot(backup: Backup, name: str) -> layout.Snapshot:
    return layout.decode_snapshot(backup.store.get(layout.snapshot_key(name)))


def test_create_at_a_time_pins_the_base_and_logs_a_restore_needs(backup):
    at = ts_of(25) + 2 * MS  # between entries 25 and 26, after the base at 20
    at_text = timefmt.format_utc(at)
    code, out, err = run(["snapshot", "create", "before-deploy", "--at-time", at_text, "--from", backup.store.location])
    assert code == 0, err
    snap = read_snapshot(backup, "before-deploy")
    sizes = backup.sizes()
    base = layout.base_key(20, ts_of(20))
    log = layout.log_key(21, 30, ts_of(21), ts_of(30))
    assert (snap.name, snap.base, snap.logs, snap.index) == ("before-deploy", base, (log,), 30)
    assert snap.to_ts == timefmt.parse_utc(at_text) == at - MS // 4  # the typed time, to the millisecond
    assert snap.created_at_ns == NOW
    assert out.splitlines() == [
        f"created snapshot before-deploy at {backup.store.location}",
        f"time:   {timefmt.describe(snap.to_ts)}",
        "index:  30",
        f"pinned: 2 objects, {sizes[base] + sizes[log]} bytes (1 base, 1 logs)",
    ]


def test_create_before_the_second_base_pins_the_genesis_base_and_its_logs(backup):
    code, _, err = run(["snapshot", "create", "early", "--at-time", timefmt.format_utc(ts_of(12)),
                        "--from", backup.store.location])
    assert code == 0, err
    snap = read_snapshot(backup, "early")
    assert snap.base == layout.base_key(0, 0)
    assert snap.logs == (layout.log_key(1, 10, ts_of(1), ts_of(10)), layout.log_key(11, 20, ts_of(11), ts_of(20)))
    assert snap.index == 20
    # What it pins is exactly what a restore to its time plans.
    plan = layout.plan_restore(layout.BackupView.from_listing(backup.sizes().items()), snap.to_ts)
    assert (plan.base.key, tuple(o.key for o in plan.logs)) == (snap.base, snap.logs)


def test_create_now_waits_until_the_backup_reaches_it(backup):
    now = ts_of(40) + 3 * MS + 999  # later than what the store can restore
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        # While the command waits, the uploader catches up: one more log and manifest.
        slept.append(seconds)
        if len(slept) == 2:
            backup.log(31, 45)
            backup.manifest(45)

    clock = iter(range(1000))
    code, out, err = run(["snapshot", "create", "now", "--from", backup.store.location], now_ns=now, sleep=sleep,
                         monotonic=lambda: float(next(clock)) / 100)
    assert code == 0, err
    assert len(slept) == 2
    snap = read_snapshot(backup, "now")
    assert snap.to_ts == now - now % MS  # now, on the millisecond it prints
    assert f"time:   {timefmt.describe(snap.to_ts)}" in out
    assert snap.index == 45 and snap.base == layout.base_key(20, ts_of(20))


def test_create_gives_up_after_the_wait_and_writes_nothing(backup):
    now = LATEST + 10_000 * MS
    clock = iter(range(1000))
    code, out, err = run(["snapshot", "create", "late", "--wait", "0.5", "--from", backup.store.location],
                         now_ns=now, sleep=lambda s: None, monotonic=lambda: float(next(clock)) / 10)
    assert (code, out) == (1, "")
    assert f"is restorable only up to {timefmt.describe(LATEST)}, before {timefmt.describe(now - now % MS)}" in err
    assert "after waiting 0.5 s" in err
    assert not any(k.startswith("snapshots/") for k in backup.sizes())


@pytest.mark.parametrize("argv, message", [
    (["snapshot", "create", "_bad"], "bad snapshot name '_bad'"),
    (["snapshot", "create", "a/b"], "bad snapshot name 'a/b'"),
    (["snapshot", "create", "x", "--at-time", "2026-12-01 12:00:00"], "--at-time: time '2026-12-01 12:00:00' has no zone"),
    (["snapshot", "create", "x", "--at-time", "yesterday"], "--at-time: bad time 'yesterday'"),
    (["snapshot", "create", "x", "--at-time", "2026-12-01T11:59:00.000Z"], "is before the earliest restorable time"),
    (["snapshot", "create", "x", "--at-time", "2027-01-01T00:00:00.000Z"], "is in the future (now is"),
    (["snapshot", "create", "x", "--wait", "-1"], "--wait -1.0: must be 0 or more seconds"),
])
def test_create_refuses_bad_input_and_writes_nothing(backup, argv, message):
    before = backup.sizes()
    code, out, err = run(argv + ["--from", backup.store.location])
    assert (code, out) == (1, ""), err
    assert message in err
    assert backup.sizes() == before


def test_create_refuses_an_existing_name(backup):
    at = timefmt.format_utc(ts_of(15))
    assert run(["snapshot", "create", "s1", "--at-time", at, "--from", backup.store.location])[0] == 0
    first = backup.store.get(layout.snapshot_key("s1"))
    code, _, err = run(["snapshot", "create", "s1", "--at-time", timefmt.format_utc(ts_of(25)),
                        "--from", backup.store.location])
    assert code == 1 and "snapshot s1 exists" in err
    assert backup.store.get(layout.snapshot_key("s1")) == first


def test_create_undoes_a_snapshot_whose_objects_retention_removed_meanwhile(backup, monkeypatch):
    class RetentionRacesThePut(LocalStore):
        """Retention decided before our snapshot was there, and deletes after the put."""

        def put(self, key, data):
            super().put(key, data)
            if key.startswith(layout.SNAPSHOT_PREFIX):
                self.delete(layout.log_key(1, 10, ts_of(1), ts_of(10)))

    monkeypatch.setattr(backup_cli, "open_store", RetentionRacesThePut)
    code, _, err = run(["snapshot", "create", "racy", "--at-time", timefmt.format_utc(ts_of(5)),
                        "--from", backup.store.location])
    assert code == 1
    assert "retention removed segment/pg0/log/00000000000000000001" in err and "pick a later one" in err
    assert layout.snapshot_key("racy") not in backup.sizes()


def test_a_snapshot_keeps_its_objects_through_retention_and_status_reports_both(backup):
    assert run(["snapshot", "create", "keep", "--at-time", timefmt.format_utc(ts_of(5)),
                "--from", backup.store.location])[0] == 0
    snap = read_snapshot(backup, "keep")
    assert snap.logs == (layout.log_key(1, 10, ts_of(1), ts_of(10)),)  # not [11, 20]: retention takes that one
    pinned = {snap.base, *snap.logs}
    view = layout.BackupView.from_listing(backup.sizes().items())
    everything_old = set(layout.plan_retention(view, NOW, retention_ns=0, pinned=set()))
    doomed = layout.plan_retention(view, NOW, retention_ns=0, pinned=pinned)
    assert pinned <= everything_old  # without the snapshot, retention would remove them
    assert pinned.isdisjoint(doomed)
    for key in doomed:
        backup.store.delete(key)
    report = status_json(backup.store.location)
    assert report["earliest_restorable_ts"] == ts_of(20)  # the window moved on past the snapshot
    [row] = report["snapshots"]
    assert row["missing"] == [] and row["ts"] == snap.to_ts
    # The snapshot still restores: its objects read back and decode.
    for key in snap.logs:
        layout.decode_log(backup.store.get(key), layout.parse_log(key))
    checkpoint.verify(backup.store.get(snap.base))
    code, out, _ = run(["backup", "status", "--from", backup.store.location])
    assert code == 0 and out.splitlines()[-2].split("|")[0].strip() == "keep"
    # A time in the gap retention left (after the snapshot, before the base at 20) is outside the window.
    code, _, err = run(["snapshot", "create", "gap", "--at-time", timefmt.format_utc(ts_of(15)),
                        "--from", backup.store.location])
    assert code == 1 and f"is before the earliest restorable time {timefmt.describe(ts_of(20))}" in err


# --- snapshot list and delete -------------------------------------------------------------------
def test_list_shows_time_index_bytes_and_created(backup):
    for name, index in (("b-second", 25), ("a-first", 15)):
        assert run(["snapshot", "create", name, "--at-time", timefmt.format_utc(ts_of(index)),
                    "--from", backup.store.location], now_ns=NOW + index)[0] == 0
    sizes = backup.sizes()
    code, out, err = run(["snapshot", "list", "--json", "--from", backup.store.location])
    assert code == 0, err
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["a-first", "b-second"]
    first = read_snapshot(backup, "a-first")
    assert rows[0] == {
        "name": "a-first", "time": timefmt.format_utc(first.to_ts), "ts": first.to_ts, "index": 20, "objects": 3,
        "bytes": sum(sizes[k] for k in (first.base, *first.logs)), "created": timefmt.format_utc(NOW + 15),
        "created_ts": NOW + 15, "missing": [],
    }
    code, out, _ = run(["snapshot", "list", "--from", backup.store.location])
    assert code == 0
    header, _, line_a, line_b, footer = out.splitlines()
    assert [h.strip() for h in header.split("|")] == ["name", "time", "index", "objects", "bytes pinned", "created"]
    assert [c.strip() for c in line_a.split("|")] == ["a-first", rows[0]["time"], "20", "3", str(rows[0]["bytes"]),
                                                      rows[0]["created"]]
    assert line_b.split("|")[0].strip() == "b-second" and footer == "(2 snapshots)"
    # backup status lists the same snapshots
    assert [(s["name"], s["index"], s["bytes"]) for s in status_json(backup.store.location)["snapshots"]] == [
        (r["name"], r["index"], r["bytes"]) for r in rows]


def test_list_flags_damaged_snapshots_without_hiding_the_others(backup):
    assert run(["snapshot", "create", "good", "--at-time", timefmt.format_utc(ts_of(25)),
                "--from", backup.store.location])[0] == 0
    assert run(["snapshot", "create", "lost-base", "--at-time", timefmt.format_utc(ts_of(5)),
                "--from", backup.store.location])[0] == 0
    backup.store.delete(layout.base_key(0, 0))
    backup.store.put(layout.snapshot_key("garbage"), b"not json")
    code, out, err = run(["snapshot", "list", "--from", backup.store.location])
    assert code == 0, err
    lines = {line.split("|")[0].strip(): line for line in out.splitlines()}
    assert "unreadable: snapshot is not JSON" in lines["garbage"]
    assert "1 pinned objects missing: cannot restore" in lines["lost-base"]
    assert lines["good"].rstrip().endswith("|")  # no problem
    rows = {r["name"]: r for r in json.loads(run(["snapshot", "list", "--json", "--from", backup.store.location])[1])}
    assert rows["lost-base"]["missing"] == [layout.base_key(0, 0)]
    assert rows["garbage"] == {"name": "garbage", "error": "snapshot is not JSON: Expecting value: line 1 column 1 (char 0)"}


def test_list_of_a_store_without_snapshots(backup):
    assert run(["snapshot", "list", "--from", backup.store.location])[1] == f"no snapshots at {backup.store.location}\n"
    assert run(["snapshot", "list", "--json", "--from", backup.store.location])[1] == "[]\n"


def test_delete_removes_only_the_snapshot_object(backup):
    assert run(["snapshot", "create", "gone", "--at-time", timefmt.format_utc(ts_of(25)),
                "--from", backup.store.location])[0] == 0
    snap = read_snapshot(backup, "gone")
    code, out, err = run(["snapshot", "delete", "gone", "--from", backup.store.location])
    assert code == 0, err
    assert out == (f"deleted snapshot gone (time {timefmt.describe(snap.to_ts)}, index 30, 2 objects pinned); "
                   "retention reclaims what it pinned once nothing else needs it\n")
    keys = backup.sizes()
    assert layout.snapshot_key("gone") not in keys
    assert {snap.base, *snap.logs} <= set(keys)


def test_delete_of_an_unknown_or_bad_name_is_an_error(backup):
    assert run(["snapshot", "create", "kept", "--at-time", timefmt.format_utc(ts_of(25)),
                "--from", backup.store.location])[0] == 0
    code, out, err = run(["snapshot", "delete", "nope", "--from", backup.store.location])
    assert (code, out) == (1, "")
    assert f"quorumdb snapshot delete: no snapshot named nope at {backup.store.location} (snapshots: kept)" in err
    code, _, err = run(["snapshot", "delete", "../kept", "--from", backup.store.location])
    assert code == 1 and "bad snapshot name '../kept'" in err
    assert layout.snapshot_key("kept") in backup.sizes()


def test_delete_of_a_corrupt_snapshot_object(backup):
    backup.store.put(layout.snapshot_key("broken"), b"{}")
    path = pathlib.Path(backup.store.location) / layout.snapshot_key("broken")
    path.write_bytes(path.read_bytes()[:-1] + b"]")  # fails its sha256 check
    code, out, err = run(["snapshot", "delete", "broken", "--from", backup.store.location])
    assert code == 0, err
    assert "its object was unreadable" in out
    assert not path.exists()


# --- finding the store ----------------------------------------------------------------------------
def test_locate_from_a_directory_or_a_bucket(tmp_path):
    (tmp_path / "b").mkdir()
    assert locate.locate(location=str(tmp_path / "b")) == locate.Located(str(tmp_path / "b"), "--from")
    assert locate.locate(location="s3://bucket/some/prefix").location == "s3://bucket/some/prefix"
    with pytest.raises(locate.LocateError, match="no bucket"):
        locate.locate(location="s3:///prefix")
    with pytest.raises(locate.LocateError, match="no such directory"):
        locate.locate(location=str(tmp_path / "missing"))
    with pytest.raises(locate.LocateError, match="--data-dir and --from both name a backup"):
        locate.locate(data_dir=str(tmp_path), location=str(tmp_path / "b"))


def test_locate_from_a_data_dir(tmp_path):
    cluster = config_mod.default_cluster(tmp_path / "c", base_port=free_base_port())
    cluster.write()
    found = locate.from_data_dir(tmp_path / "c")
    assert found.location == str(cluster.data_dir / "backup")
    assert found.data_dir == cluster.data_dir
    assert found.storage_nodes == tuple(cluster.storages)
    elsewhere = config_mod.default_cluster(tmp_path / "d", backup_dir="s3://bk/qdb")
    elsewhere.write()
    assert locate.from_data_dir(tmp_path / "d").location == "s3://bk/qdb"
    with pytest.raises(locate.LocateError, match="no cluster file at .*use --from"):
        locate.from_data_dir(tmp_path / "nothing")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / config_mod.CONFIG_FILE).write_text("[cluster]\nno_such_setting = 1\n")
    with pytest.raises(locate.LocateError, match="cannot read .*unknown"):
        locate.from_data_dir(tmp_path / "e")


class Launched:
    """What the supervisor reads of `quorumdb up`'s cluster: its config and processes (none here)."""

    def __init__(self, config):
        self.config = config
        self.processes = {}


@pytest.fixture
def plaintext_cluster(tmp_path, monkeypatch):
    """An --insecure cluster's directory as $QUORUMDB_DATA_DIR: the supervisors here serve plaintext."""
    cluster = config_mod.default_cluster(tmp_path / "c", base_port=free_base_port(), insecure=True,
                                         backup_dir=str(tmp_path / "store"))
    cluster.write()
    monkeypatch.setenv("QUORUMDB_DATA_DIR", str(cluster.data_dir))
    return cluster


def test_locate_asks_the_running_clusters_supervisor(tmp_path, plaintext_cluster):
    base = free_base_port()
    cluster = config_mod.default_cluster(tmp_path / "c", base_port=base, backup_dir=str(tmp_path / "store"),
                                         insecure=True)
    server = supervisor_mod.serve(supervisor_mod.Supervisor(Launched(cluster), lambda text: None),
                                  supervisor_mod.address(base))
    try:
        found = locate.locate(base_port=base)
    finally:
        server.stop(grace=None)
    assert found.location == str(tmp_path / "store")
    assert found.found_through == f"the supervisor at 127.0.0.1:{base + supervisor_mod.PORT_OFFSET}"
    assert found.data_dir == cluster.data_dir
    assert found.storage_nodes == tuple(cluster.storages)


def test_locate_without_a_supervisor_or_with_an_old_one(plaintext_cluster):
    base = free_base_port()
    with pytest.raises(locate.LocateError, match=f"no `quorumdb up` answers at 127.0.0.1:{base + 39}"):
        locate.locate(base_port=base)

    class OldSupervisor(supervisor_pb2_grpc.SupervisorServicer):
        def Nodes(self, request, context):
            return supervisor_pb2.NodesReply()  # before data_dir and backup_location

    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=1))
    supervisor_pb2_grpc.add_SupervisorServicer_to_server(OldSupervisor(), server)
    server.add_insecure_port(supervisor_mod.address(base))
    server.start()
    try:
        with pytest.raises(locate.LocateError, match="does not say where its backup is"):
            locate.locate(base_port=base)
    finally:
        server.stop(grace=None)


def test_the_cli_reports_a_missing_cluster_with_exit_1(capsys, plaintext_cluster):
    code = cli.main(["backup", "status", "--base-port", str(free_base_port())])
    assert code == 1
    assert "quorumdb backup status: no `quorumdb up` answers" in capsys.readouterr().err
