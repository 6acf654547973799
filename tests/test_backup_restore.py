"""The backup agent against a real local object store and local log, and `quorumdb restore` from it (no cluster)."""
from __future__ import annotations

import dataclasses

import asyncio
import io
import os
import pathlib
import types

import pytest

from quorumdb import backup_layout as layout
from quorumdb import config as config_mod
from quorumdb import timefmt
from tools.dr import restore as restore_mod
from quorumdb.objectstore import LocalStore
from quorumdb.pb import common_pb2
from storage_node import backup_core, checkpoint
from storage_node.backup import BackupAgent
from storage_node.core import Segment
from storage_node.service import SegmentState, to_record
from storage_node.store import CheckpointStore, SegmentLog

T0 = 1_700_000_000_000_000_000  # commit_ts of entry 1 (ns); entry i has T0 + i * 1000


def ts_of(index: int) -> int:
    return T0 + index * 1000


def entry(index: int) -> common_pb2.Entry:
    writes = [common_pb2.Write(key=b"k%03d" % (index % 7), value=b"v%d" % index),
              common_pb2.Write(key=b"i%05d" % index, value=b"x")]
    if index % 5 == 0:
        writes.append(common_pb2.Write(key=b"k%03d" % ((index + 1) % 7), tombstone=True))
    return common_pb2.Entry(index=index, ts=ts_of(index), kind=common_pb2.ENTRY_TXN, writes=writes)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeCopy:
    """What BackupAgent uses of a SegmentState: a segment, a real local log, checkpoints."""

    def __init__(self, directory: pathlib.Path):
        self.segment = Segment()
        self.segment_log = SegmentLog(directory)
        self.segment_log.open()
        self.checkpoints = CheckpointStore(directory)
        self.checkpoints.open()
        self.checkpoint_index = 0
        self.replaying = False

    async def learn_uploaded_index(self, index: int) -> int:
        self.backup_uploaded_index = index  # SegmentState also drops the log the gate kept (tested there)
        return 0

    def commit(self, through: int, closed_extra_ns: int = 0) -> None:
        fresh = [entry(i) for i in range(self.segment.applied_index + 1, through + 1)]
        self.segment_log.append(fresh)
        self.segment.apply(to_record(e) for e in fresh)
        self.segment.observe_closed(ts_of(through) + closed_extra_ns, through)

    def write_checkpoint(self) -> None:
        view = self.segment.checkpoint_view()
        header = checkpoint.CheckpointHeader(view.applied_index, view.last_applied_ts, view.closed_ts, view.gc_horizon_ts)
        self.checkpoints.write(view.applied_index, checkpoint.encode(header, self.segment.checkpoint_records(view), 4096))
        self.checkpoint_index = view.applied_index


def expected(through: int) -> dict[bytes, bytes]:
    state = Segment()
    state.apply(to_record(entry(i)) for i in range(1, through + 1))
    rows, _ = state.scan(b"", None, ts_of(through), 100_000)
    return {key: value for key, value, _ in rows}


def restored_rows(data_dir: pathlib.Path) -> tuple[int, dict[bytes, bytes], list[int]]:
    cluster = config_mod.load(data_dir / "cluster.toml")
    indexes = set()
    rows = None
    for node in cluster.storages:
        loaded = CheckpointStore(cluster.node_data_dir(node.name)).load_newest()
        indexes.add(loaded.index)
        segment = Segment.from_checkpoint(loaded.header.applied_index, loaded.header.last_applied_ts,
                                          loaded.header.closed_ts, loaded.header.gc_horizon_ts, loaded.records)
        found = {k: v for k, v, _ in segment.scan(b"", None, loaded.header.closed_ts, 100_000)[0]}
        assert rows is None or rows == found
        rows = found
    assert len(indexes) == 1
    return indexes.pop(), rows, sorted(indexes)


@pytest.fixture
def setup(tmp_path):
    backup_dir = tmp_path / "backup"
    cluster = config_mod.default_cluster(tmp_path / "src", base_port=21000, backup_dir=str(backup_dir))
    clock = Clock()
    copies = [FakeCopy(tmp_path / f"copy{i}") for i in range(2)]
    agents = [BackupAgent(cluster, cluster.storages[i], copies[i], now_s=clock) for i in range(2)]
    return types.SimpleNamespace(cluster=cluster, clock=clock, copies=copies, agents=agents,
                                 store=LocalStore(backup_dir), backup_dir=backup_dir, tmp=tmp_path)


def cycle(agent: BackupAgent, clock: Clock, seconds: float = backup_core.BATCH_S) -> None:
    clock.now += seconds
    asyncio.run(agent.cycle())
    assert agent.last_error == ""


def test_uploader_ships_base_logs_manifest_and_a_restore_is_an_exact_cut(setup):
    copy, agent = setup.copies[0], setup.agents[0]
    for through in (40, 90, 130):
        copy.commit(through)
        cycle(agent, setup.clock)
        cycle(agent, setup.clock)
    view = layout.BackupView.from_listing((i.key, i.size) for i in setup.store.list(""))
    assert [b.index for b in view.bases] == [0]
    assert view.uploaded_index == 130 and view.latest_restorable_ts >= ts_of(130)
    assert layout.CLUSTER_CONFIG_KEY in view.other_keys
    assert len(view.manifests) <= 2
    assert copy.backup_uploaded_index == 130
    for through in (1, 39, 40, 41, 89, 130):
        new = setup.tmp / f"r{through}"
        result = restore_mod.restore(str(setup.backup_dir), new, to_ts=ts_of(through) + (500 if through < 130 else 0))
        assert result.index == through
        index, rows, _ = restored_rows(new)
        assert index == through and rows == expected(through)
        assert (new / "journal-az1").exists() or any(new.rglob("journal"))
    latest = restore_mod.restore(str(setup.backup_dir), setup.tmp / "latest")
    assert latest.index == 130


def test_idle_cluster_latest_restorable_time_still_advances(setup):
    copy, agent = setup.copies[0], setup.agents[0]
    copy.commit(10)
    cycle(agent, setup.clock)
    cycle(agent, setup.clock)
    before = agent.restorable_ts
    copy.segment.observe_closed(ts_of(10) + 5 * 10**9, 10)
    cycle(agent, setup.clock, backup_core.IDLE_MANIFEST_S)
    assert agent.restorable_ts == ts_of(10) + 5 * 10**9 > before
    result = restore_mod.restore(str(setup.backup_dir), setup.tmp / "r", to_ts=ts_of(10) + 4 * 10**9)
    assert result.index == 10


def test_standby_takes_over_when_the_uploader_stops_and_leaves_no_gap(setup):
    (copy0, copy1), (agent0, agent1) = setup.copies, setup.agents
    for copy in (copy0, copy1):
        copy.commit(50)
    cycle(agent0, setup.clock)
    cycle(agent0, setup.clock)
    cycle(agent1, setup.clock, 0)
    assert agent0.uploader and not agent1.uploader and agent1.uploaded_index == 50
    copy1.commit(80)  # agent0 is dead from here on
    cycle(agent1, setup.clock, backup_core.TAKEOVER_S - 1)
    assert not agent1.uploader
    cycle(agent1, setup.clock, 1.0)
    assert agent1.uploader and agent1.uploaded_index == 80
    for through in (50, 51, 80):
        result = restore_mod.restore(str(setup.backup_dir), setup.tmp / f"r{through}", to_ts=ts_of(through))
        assert result.index == through
    copy0.commit(80)
    cycle(agent0, setup.clock)  # rank 0 is back: it continues from the store's uploaded index
    copy0.commit(95)
    copy1.commit(95)
    cycle(agent0, setup.clock)
    cycle(agent1, setup.clock)
    assert not agent1.uploader
    assert restore_mod.restore(str(setup.backup_dir), setup.tmp / "r95", to_ts=ts_of(95)).index == 95


def test_new_base_from_a_checkpoint_and_restore_from_it(setup):
    copy, agent = setup.copies[0], setup.agents[0]
    agent.cluster = dataclasses.replace(agent.cluster, backup_base_log_bytes=1)  # a base at every checkpoint
    copy.commit(60)
    cycle(agent, setup.clock)
    cycle(agent, setup.clock)
    copy.write_checkpoint()
    cycle(agent, setup.clock)
    view = layout.BackupView.from_listing((i.key, i.size) for i in setup.store.list(""))
    assert [b.index for b in view.bases] == [0, 60]
    copy.commit(70)
    cycle(agent, setup.clock)
    result = restore_mod.restore(str(setup.backup_dir), setup.tmp / "r", to_ts=ts_of(65))
    assert result.base_key.endswith(f"{60:020d}-{ts_of(60):020d}.ckpt") and result.entries_replayed == 5
    assert restored_rows(setup.tmp / "r")[1] == expected(65)


def test_restored_cluster_uploads_its_checkpoint_as_its_first_base(setup):
    copy, agent = setup.copies[0], setup.agents[0]
    copy.commit(30)
    cycle(agent, setup.clock)
    cycle(agent, setup.clock)
    new = setup.tmp / "restored"
    restore_mod.restore(str(setup.backup_dir), new, to_ts=ts_of(30))
    cluster = config_mod.load(new / "cluster.toml")
    assert cluster.backup_location == str(new / "backup")
    node = cluster.storages[0]
    restored = FakeCopy(cluster.node_data_dir(node.name))
    loaded = restored.checkpoints.load_newest()
    restored.segment = Segment.from_checkpoint(loaded.header.applied_index, loaded.header.last_applied_ts,
                                               loaded.header.closed_ts, loaded.header.gc_horizon_ts, loaded.records)
    restored.checkpoint_index = loaded.index
    agent = BackupAgent(cluster, node, restored, now_s=setup.clock)
    cycle(agent, setup.clock)
    view = layout.BackupView.from_listing((i.key, i.size) for i in LocalStore(new / "backup").list(""))
    assert [b.index for b in view.bases] == [30] and view.uploaded_index == 30


def test_retention_removes_old_objects_but_never_what_a_snapshot_pins(setup):
    store = setup.store
    empty = b"".join(checkpoint.encode(checkpoint.CheckpointHeader(0, 0, 0, 0), [], 4096))
    store.put(layout.base_key(0, 0), empty)
    old, mid = 10, 20
    for first, last in ((1, 10), (11, 20), (21, 30)):
        store.put(layout.log_key(first, last, ts_of(first), ts_of(last)),
                  layout.encode_log([entry(i) for i in range(first, last + 1)]))
    for index in (old, mid):
        seg = Segment()
        seg.apply(to_record(entry(i)) for i in range(1, index + 1))
        view = seg.checkpoint_view()
        header = checkpoint.CheckpointHeader(index, ts_of(index), ts_of(index), 0)
        store.put(layout.base_key(index, ts_of(index)),
                  b"".join(checkpoint.encode(header, seg.checkpoint_records(view), 4096)))
    pin = layout.Snapshot("keep", ts_of(5), 5, layout.base_key(0, 0), (layout.log_key(1, 10, ts_of(1), ts_of(10)),), 1)
    store.put(layout.snapshot_key("keep"), layout.encode_snapshot(pin))
    agent = setup.agents[0]
    agent.cluster = config_mod.default_cluster(setup.tmp / "src", base_port=21000, backup_dir=str(setup.backup_dir),
                                               backup_retention_s=1.0)
    asyncio.run(agent.retention(store))
    keys = {i.key for i in store.list("")}
    assert layout.base_key(0, 0) in keys and layout.log_key(1, 10, ts_of(1), ts_of(10)) in keys  # pinned
    assert layout.base_key(old, ts_of(old)) not in keys  # older than the newest base before the window
    assert layout.log_key(11, 20, ts_of(11), ts_of(20)) not in keys
    assert layout.base_key(mid, ts_of(mid)) in keys and layout.log_key(21, 30, ts_of(21), ts_of(30)) in keys
    # The pinned snapshot still restores.
    result = restore_mod.restore(str(setup.backup_dir), setup.tmp / "snap", snapshot="keep")
    assert result.index == 5 and restored_rows(setup.tmp / "snap")[1] == expected(5)


def gated_state(tmp_path) -> SegmentState:
    """A storage copy's state with checkpoints every 10 entries and a backup holding nothing yet."""
    node = config_mod.default_cluster(tmp_path, base_port=21000).storages[0]
    segment_log = SegmentLog(tmp_path / "n")
    segment_log.open()
    state = SegmentState(node, segment_log, checkpoint_entries=10)
    state.replaying = False
    state.backup_uploaded_index = 0
    return state


async def checkpoints_at(state: SegmentState, *indexes: int) -> None:
    """Apply entries up to each index in turn and write a checkpoint there."""
    for through in indexes:
        await state.append_and_apply([entry(i) for i in range(state.segment.applied_index + 1, through + 1)])
        await state.write_checkpoint()


def test_log_drop_waits_for_the_upload(tmp_path):
    state = gated_state(tmp_path)
    segment_log = state.segment_log

    async def run():
        await checkpoints_at(state, 10, 20, 30)
        assert segment_log.first_index == 1  # nothing uploaded: every entry kept
        state.backup_uploaded_index = 15
        await state.append_and_apply([entry(i) for i in range(31, 41)])
        await state.write_checkpoint()
        assert segment_log.first_index == 11  # through 10 (the file [1, 10]), not the uploaded 15
        state.backup_uploaded_index = 100
        await state.append_and_apply([entry(i) for i in range(41, 51)])
        await state.write_checkpoint()
        assert segment_log.first_index == 41  # through the previous checkpoint, as without backup

    asyncio.run(run())


def test_log_the_gate_kept_goes_when_the_upload_catches_up(tmp_path):
    state = gated_state(tmp_path)
    segment_log = state.segment_log

    async def run():
        await checkpoints_at(state, 10, 20, 30)
        assert segment_log.first_index == 1
        assert await state.learn_uploaded_index(5) == 0  # no whole file uploaded yet
        assert segment_log.first_index == 1
        await state.learn_uploaded_index(25)  # no new checkpoint needed: the kept files go now
        assert segment_log.first_index == 21  # through the older kept checkpoint (20), no further
        assert state.backup_uploaded_index == 25

    asyncio.run(run())


# --- bad input ---------------------------------------------------------------------------------
def run_cli(*argv: str) -> tuple[int, str, str]:
    from tools.cli import build_parser

    out, err = io.StringIO(), io.StringIO()
    args = build_parser().parse_args(["restore", *argv])
    return restore_mod.command(args, out, err), out.getvalue(), err.getvalue()


@pytest.fixture
def backed_up(setup):
    copy, agent = setup.copies[0], setup.agents[0]
    copy.commit(40, closed_extra_ns=10**7)
    cycle(agent, setup.clock)
    cycle(agent, setup.clock)
    return setup


def test_cli_prints_what_it_restored(backed_up):
    new = backed_up.tmp / "ok"
    code, out, err = run_cli("--from", str(backed_up.backup_dir), "--to-time", timefmt.format_utc(ts_of(40) + 10**6),
                             "--data-dir", str(new), "--base-port", "22000")
    assert code == 0, err
    assert "index 40" in out and "commit_ts" in out and f"quorumdb up --data-dir {new}" in out
    assert "plan" in out and "download" in out and "replay" in out and "write" in out


def test_time_outside_the_window_is_refused(backed_up):
    new = backed_up.tmp / "new"
    for when in (ts_of(40) + 3600 * 10**9, T0 - 3600 * 10**9):
        code, _, err = run_cli("--from", str(backed_up.backup_dir), "--to-time", timefmt.format_utc(when),
                               "--data-dir", str(new))
        assert code == 1 and "cannot be restored" in err and timefmt.format_utc(when) in err
        assert not new.exists()


def test_missing_and_corrupt_objects_are_named(backed_up):
    new = backed_up.tmp / "new"
    log_key = next(i.key for i in backed_up.store.list(layout.LOG_PREFIX))
    path = backed_up.backup_dir / log_key
    original = path.read_bytes()
    path.write_bytes(original[:-3] + b"xyz")
    code, _, err = run_cli("--from", str(backed_up.backup_dir), "--latest", "--data-dir", str(new))
    assert code == 1 and log_key in err and "corrupt" in err and not new.exists()
    path.unlink()
    code, _, err = run_cli("--from", str(backed_up.backup_dir), "--latest", "--data-dir", str(new))
    assert code == 1 and "missing" in err and not new.exists()
    base = backed_up.backup_dir / layout.base_key(0, 0)
    path.write_bytes(original)
    base.unlink()
    code, _, err = run_cli("--from", str(backed_up.backup_dir), "--latest", "--data-dir", str(new))
    assert code == 1 and not new.exists()


def test_unreachable_or_absent_store_is_named_and_nothing_is_created(backed_up):
    new = backed_up.tmp / "new"
    absent = backed_up.tmp / "no-such-backup"
    code, _, err = run_cli("--from", str(absent), "--latest", "--data-dir", str(new))
    assert code == 1 and str(absent) in err and not absent.exists() and not new.exists()
    if os.geteuid() != 0:  # root reads through any permission
        os.chmod(backed_up.backup_dir, 0)
        try:
            code, _, err = run_cli("--from", str(backed_up.backup_dir), "--latest", "--data-dir", str(new))
        finally:
            os.chmod(backed_up.backup_dir, 0o755)
        assert code == 1 and str(backed_up.backup_dir) in err and not new.exists()


def test_a_directory_that_holds_no_backup_is_named(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli("--from", str(empty), "--latest", "--data-dir", str(tmp_path / "n"))
    assert code == 1 and f"the backup at {empty} holds no restorable point" in err and "empty" in err


def test_nonempty_target_and_unknown_snapshot_are_refused(backed_up):
    target = backed_up.tmp / "busy"
    target.mkdir()
    (target / "file").write_text("x")
    code, _, err = run_cli("--from", str(backed_up.backup_dir), "--latest", "--data-dir", str(target))
    assert code == 1 and "not empty" in err and (target / "file").read_text() == "x"
    code, _, err = run_cli("--from", str(backed_up.backup_dir), "--snapshot", "nope", "--data-dir",
                           str(backed_up.tmp / "n"))
    assert code == 1 and "snapshots/nope.json" in err


def test_unreachable_store_keeps_the_log_and_shows_in_status(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    cluster = config_mod.default_cluster(tmp_path / "src", base_port=21000, backup_dir=str(blocker / "backup"))
    copy = FakeCopy(tmp_path / "copy")
    agent = BackupAgent(cluster, cluster.storages[0], copy, now_s=Clock())
    copy.commit(20)
    with pytest.raises(Exception) as failure:
        asyncio.run(agent.cycle())
    agent._failed(failure.value)
    fields = agent.status_fields()
    assert "error" in fields["backup"] and str(blocker) in fields["backup"] and "local log kept" in fields["backup"]
    assert copy.backup_uploaded_index == 0 and fields["backup_uploaded_index"] == 0
    assert backup_core.drop_gate(20, copy.backup_uploaded_index) == 0  # nothing may leave the local log
