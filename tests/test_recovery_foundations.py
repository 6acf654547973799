"""The pure pieces every recovery command shares: time parsing, the backup's object names and
the restore/retention plans, and the new cluster's directory (journal continuing an index)."""
from __future__ import annotations

import pytest

from journal.store import JournalStore
from quorumdb import backup_layout as layout
from quorumdb import config as config_mod
from quorumdb import timefmt
from tools.dr import newcluster
from quorumdb.pb import common_pb2


# --- times -------------------------------------------------------------------------------------
def test_iso_times_round_trip_to_commit_ts():
    ts = timefmt.parse_utc("2026-12-01T13:40:00.250Z")
    assert timefmt.format_utc(ts) == "2026-12-01T13:40:00.250Z"
    assert timefmt.parse_utc("2026-12-01T14:40:00.250+01:00") == ts
    assert timefmt.parse_utc("2026-12-01T13:40:00Z") == ts - 250_000_000
    assert "commit_ts" in timefmt.describe(ts)


@pytest.mark.parametrize("text", ["2026-12-01T13:40:00.250", "yesterday", "", "2026-13-01T00:00:00Z"])
def test_times_without_a_zone_or_malformed_are_refused(text):
    with pytest.raises(timefmt.TimeFormatError):
        timefmt.parse_utc(text)


# --- object names and plans ----------------------------------------------------------------------
def _view(*items):
    return layout.BackupView.from_listing([(key, 10) for key in items])


def test_keys_sort_numerically_and_parse_back():
    keys = [layout.log_key(9, 10, 90, 100), layout.log_key(11, 200, 110, 2000)]
    assert sorted(keys) == keys
    parsed = layout.parse_log(keys[1], 7)
    assert (parsed.first, parsed.last, parsed.first_ts, parsed.last_ts, parsed.size) == (11, 200, 110, 2000, 7)
    assert layout.parse_base(layout.base_key(5, 55)).ts == 55
    assert layout.parse_log("segment/pg0/log/nonsense") is None


def test_plan_stops_at_the_first_object_past_the_time_and_skips_overlaps():
    view = _view(layout.base_key(0, 0), layout.log_key(1, 10, 100, 200), layout.log_key(5, 20, 150, 300),
                 layout.log_key(21, 30, 310, 400), layout.log_key(31, 40, 410, 500), layout.manifest_key(40, 550))
    plan = layout.plan_restore(view, 305)
    assert [o.first for o in plan.logs] == [1, 5, 21]
    assert layout.plan_restore(view, 150).logs[-1].first == 1
    assert layout.plan_restore(view, 550).through_index == 40


def test_plan_uses_the_newest_base_not_after_the_time():
    view = _view(layout.base_key(0, 0), layout.base_key(20, 300), layout.log_key(1, 20, 100, 300),
                 layout.log_key(21, 30, 310, 400), layout.manifest_key(30, 450))
    assert layout.plan_restore(view, 350).base.index == 20
    assert layout.plan_restore(view, 250).base.index == 0


def test_plan_refuses_times_outside_the_window_and_gaps():
    view = _view(layout.base_key(20, 300), layout.log_key(21, 30, 310, 400), layout.manifest_key(30, 450))
    with pytest.raises(layout.OutsideWindow, match="after the latest"):
        layout.plan_restore(view, 451)
    with pytest.raises(layout.OutsideWindow, match="before the earliest"):
        layout.plan_restore(view, 299)
    gap = _view(layout.base_key(20, 300), layout.log_key(25, 30, 350, 400), layout.manifest_key(30, 450))
    with pytest.raises(layout.BackupLayoutError, match="missing"):
        layout.plan_restore(gap, 420)
    with pytest.raises(layout.OutsideWindow, match="no restorable"):
        layout.plan_restore(_view(), 1)


def test_retention_keeps_the_base_the_window_needs_and_what_snapshots_pin():
    old_log = layout.log_key(1, 20, 100, 300)
    view = _view(layout.base_key(0, 0), layout.base_key(20, 300), layout.base_key(40, 600), old_log,
                 layout.log_key(21, 40, 310, 600), layout.log_key(41, 50, 610, 700),
                 layout.manifest_key(48, 680), layout.manifest_key(49, 690), layout.manifest_key(50, 700))
    doomed = layout.plan_retention(view, now_ns=1000, retention_ns=500, pinned=set())
    # window starts at 500: base 20 (ts 300) is the newest at or before it; base 0 and the log it needed go
    assert set(doomed) == {layout.base_key(0, 0), old_log, layout.manifest_key(48, 680)}
    pinned = layout.plan_retention(view, now_ns=1000, retention_ns=500, pinned={old_log})
    assert old_log not in pinned


def test_log_objects_check_their_framing_and_name():
    entries = [common_pb2.Entry(index=i, ts=i * 10, kind=common_pb2.ENTRY_TXN) for i in (3, 4, 5)]
    data = layout.encode_log(entries)
    obj = layout.parse_log(layout.log_key(3, 5, 30, 50))
    assert [e.index for e in layout.decode_log(data, obj)] == [3, 4, 5]
    with pytest.raises(layout.BackupLayoutError, match="corrupt"):
        layout.decode_log(data[:-1] + bytes([data[-1] ^ 1]), obj)
    with pytest.raises(layout.BackupLayoutError, match="name says"):
        layout.decode_log(data, layout.parse_log(layout.log_key(3, 6, 30, 60)))


def test_manifests_and_snapshots_round_trip_and_reject_garbage():
    manifest = layout.Manifest(10, 1234, 0, "storage-az1-a", 99)
    assert layout.decode_manifest(layout.encode_manifest(manifest)) == manifest
    snapshot = layout.Snapshot("before-deploy", 1234, 10, layout.base_key(0, 0), (layout.log_key(1, 10, 1, 1234),), 5)
    assert layout.decode_snapshot(layout.encode_snapshot(snapshot)) == snapshot
    with pytest.raises(layout.BackupLayoutError):
        layout.decode_manifest(b"{not json")
    with pytest.raises(layout.BackupLayoutError):
        layout.snapshot_key("../escape")


# --- the new cluster's directory ----------------------------------------------------------------
def test_new_cluster_has_its_own_ports_and_backup_and_a_journal_continuing_the_index(tmp_path):
    source = config_mod.default_cluster(tmp_path / "source", base_port=7300, backup_dir="/somewhere/else")
    cluster = newcluster.create(source, tmp_path / "new", None)
    assert cluster.base_port == 7300 + config_mod.PORT_BLOCK
    assert cluster.backup_location == str(tmp_path / "new" / "backup")
    assert config_mod.load(cluster.config_path).base_port == cluster.base_port
    newcluster.seed_journals(cluster, 41)
    for node in cluster.journals:
        meta, entries = JournalStore(cluster.node_data_dir(node.name) / "journal").open()
        assert (meta.first_index, meta.commit_index, entries) == (42, 41, [])


def test_new_cluster_refuses_a_used_directory_or_the_source_ports(tmp_path):
    source = config_mod.default_cluster(tmp_path / "source", base_port=7300)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "file").write_text("x")
    with pytest.raises(newcluster.NewClusterError, match="not empty"):
        newcluster.create(source, tmp_path / "used", None)
    with pytest.raises(newcluster.NewClusterError, match="source cluster's"):
        newcluster.create(source, tmp_path / "other", 7300)
    with pytest.raises(newcluster.NewClusterError, match="inside"):
        newcluster.create(source, tmp_path / "source" / "nested", None)


def test_link_or_copy_shares_the_inode(tmp_path):
    source = tmp_path / "a"
    source.write_bytes(b"immutable")
    assert newcluster.link_or_copy(source, tmp_path / "d" / "b") == 0
    assert (tmp_path / "d" / "b").stat().st_ino == source.stat().st_ino
    assert newcluster.directory_bytes(tmp_path) == len(b"immutable")
