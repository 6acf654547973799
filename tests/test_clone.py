"""quorumdb clone without a running cluster: the pure cut decisions, reading a source's files
(torn tails, incomplete checkpoints), a whole clone of a stopped source's hand-made files checked
against the state at T, and bad input that must leave the source untouched."""
from __future__ import annotations

import os
import pathlib

import pytest

from quorumdb import limits, timefmt
from tools import cli
from quorumdb import config as config_mod
from tools.dr import clone as clone_mod
from tools.dr.clone import CheckpointFile, CloneError, CopyView
from tools.launcher import free_base_port
from quorumdb.pb import common_pb2
from storage_node import checkpoint
from storage_node.core import Segment
from storage_node.service import to_record
from storage_node.store import (
    CheckpointStore,
    SegmentLog,
    checkpoint_file_name,
    log_file_name,
)

S = 1_000_000_000
T0 = 1_796_132_400 * S  # 2026-12-01T13:40:00Z


def ts_of(index: int) -> int:
    return T0 + index * S  # entry i committed at T0 + i seconds


def log_of(first: int, last: int) -> tuple[tuple[int, int], ...]:
    return tuple((i, ts_of(i)) for i in range(first, last + 1))


def ckpt(index: int) -> CheckpointFile:
    return CheckpointFile(index, ts_of(index), 1000 + index)


# --- pure decisions ------------------------------------------------------------------------------
def test_cut_takes_the_newest_checkpoint_at_or_before_t_and_the_log_up_to_t():
    view = CopyView("storage-az1-a", (ckpt(10), ckpt(20)), log_of(11, 27))
    cut = clone_mod.plan_copy(view, ts_of(24) + S // 2)
    assert (cut.base_index, cut.cut_index, cut.entries) == (20, 24, 4)
    assert cut.cut_entry_ts == ts_of(24)
    older = clone_mod.plan_copy(view, ts_of(15))
    assert (older.base_index, older.cut_index) == (10, 15)
    exact = clone_mod.plan_copy(view, ts_of(20))
    assert (exact.base_index, exact.cut_index, exact.entries) == (20, 20, 0)


def test_files_alone_cover_t_only_up_to_the_last_logged_entry():
    view = CopyView("c", (ckpt(10),), log_of(11, 15))
    assert clone_mod.plan_copy(view, ts_of(15)).cut_index == 15
    # A commit at ts_of(15) + 1 ns may exist in the journal and not in this log.
    assert clone_mod.plan_copy(view, ts_of(15) + 1) is None


def test_a_running_copys_closed_ts_extends_coverage_past_its_last_entry():
    view = CopyView("c", (ckpt(10),), log_of(11, 15), closed_ts=ts_of(15) + 5 * S, applied_index=15)
    cut = clone_mod.plan_copy(view, ts_of(15) + 3 * S)
    assert (cut.base_index, cut.cut_index) == (10, 15)
    assert clone_mod.plan_copy(view, ts_of(15) + 6 * S) is None
    # A Status taken at an applied index the log does not reach proves nothing about the log.
    ahead = CopyView("c", (ckpt(10),), log_of(11, 15), closed_ts=ts_of(20), applied_index=20)
    assert clone_mod.plan_copy(ahead, ts_of(17)) is None


def test_no_checkpoint_needs_the_log_from_the_first_entry():
    whole = CopyView("c", (), log_of(1, 5))
    cut = clone_mod.plan_copy(whole, ts_of(3))
    assert (cut.base_index, cut.checkpoint, cut.cut_index) == (0, None, 3)
    assert clone_mod.plan_copy(whole, ts_of(1) - 1) is None  # before the first commit
    assert clone_mod.plan_copy(CopyView("c", (), log_of(4, 5)), ts_of(4)) is None


def test_a_log_that_does_not_connect_to_a_checkpoint_is_not_used_with_it():
    view = CopyView("c", (ckpt(10),), log_of(13, 20))
    assert clone_mod.plan_copy(view, ts_of(15)) is None
    cut = clone_mod.plan_copy(view, ts_of(10))  # the checkpoint alone serves its own time
    assert (cut.base_index, cut.cut_index) == (10, 10)


def test_choose_cut_prefers_a_closed_copy_then_the_most_advanced():
    behind = CopyView("storage-az1-a", (ckpt(10),), log_of(11, 14))
    ahead = CopyView("storage-az2-a", (ckpt(10),), log_of(11, 18))
    closed = CopyView("storage-az3-a", (ckpt(10),), log_of(11, 16), closed_ts=ts_of(30), applied_index=16)
    assert clone_mod.choose_cut([behind, ahead], ts_of(12)).copy == "storage-az2-a"
    assert clone_mod.choose_cut([behind, ahead, closed], ts_of(12)).copy == "storage-az3-a"
    assert clone_mod.choose_cut([behind, ahead, closed], ts_of(25)).copy == "storage-az3-a"
    # Only the copy that covers T qualifies, however it ranks.
    assert clone_mod.choose_cut([behind, ahead], ts_of(17)).copy == "storage-az2-a"


def test_a_time_outside_the_range_names_the_range():
    view = CopyView("c", (ckpt(10), ckpt(20)), log_of(11, 27))
    assert clone_mod.available_range([view]) == (ts_of(10), ts_of(27))
    with pytest.raises(CloneError, match="earlier than the oldest checkpoint") as early:
        clone_mod.choose_cut([view], ts_of(5))
    assert timefmt.format_utc(ts_of(10)) in str(early.value)
    assert timefmt.format_utc(ts_of(27)) in str(early.value)
    with pytest.raises(CloneError, match="later than any source copy has applied"):
        clone_mod.choose_cut([view], ts_of(28))
    with pytest.raises(CloneError, match="no storage copy"):
        clone_mod.choose_cut([CopyView("c", (), ())], ts_of(3))


# --- a source's files, built with the storage node's own store ------------------------------------
def txn(index: int, writes: dict[bytes, bytes | None]) -> common_pb2.Entry:
    return common_pb2.Entry(
        index=index, epoch=1, kind=common_pb2.ENTRY_TXN, ts=ts_of(index), txn_id=f"t{index}",
        writes=[common_pb2.Write(key=k, value=v or b"", tombstone=v is None) for k, v in writes.items()])


def history(count: int) -> list[common_pb2.Entry]:
    """Entry i writes k{i % 7} = v{i} and deletes k{i % 5} when i % 11 == 0."""
    entries = []
    for i in range(1, count + 1):
        writes: dict[bytes, bytes | None] = {f"k{i % 7}".encode(): f"v{i}".encode()}
        if i % 11 == 0:
            writes[f"k{i % 5}".encode()] = None
        entries.append(txn(i, writes))
    return entries


def write_copy(directory: pathlib.Path, entries: list[common_pb2.Entry], checkpoints: list[int],
               keep_log_from: int) -> None:
    """A storage copy's directory: the given checkpoints and the log from keep_log_from on."""
    directory.mkdir(parents=True, exist_ok=True)
    segment = Segment()
    store = CheckpointStore(directory)
    for entry in entries:
        segment.apply([to_record(entry)])
        if entry.index in checkpoints:
            view = segment.checkpoint_view()
            header = checkpoint.CheckpointHeader(view.applied_index, view.last_applied_ts, view.closed_ts,
                                                 view.gc_horizon_ts)
            store.write(view.applied_index, checkpoint.encode(header, segment.checkpoint_records(view), 4096))
    log = SegmentLog(directory)
    log.open()
    log.append([e for e in entries if e.index >= keep_log_from])
    log.close()


def state_at(entries: list[common_pb2.Entry], at_ts: int) -> dict[bytes, bytes]:
    state: dict[bytes, bytes] = {}
    for entry in entries:
        if entry.ts > at_ts:
            break
        for write in entry.writes:
            if write.tombstone:
                state.pop(write.key, None)
            else:
                state[write.key] = write.value
    return state


def rebuilt_state(directory: pathlib.Path) -> tuple[dict[bytes, bytes], int]:
    """What a storage node restarting on directory holds (newest checkpoint + log), and its applied index."""
    loaded = CheckpointStore(directory).load_newest()
    segment = Segment()
    if loaded is not None:
        h = loaded.header
        segment = Segment.from_checkpoint(h.applied_index, h.last_applied_ts, h.closed_ts, h.gc_horizon_ts,
                                          loaded.records)
    log = SegmentLog(directory)
    assert log.open() >= 0
    assert log.truncated_bytes == 0
    entries = log.read(segment.applied_index + 1, 10_000, 1 << 30) if log.last_index else []
    log.close()
    segment.apply(to_record(e) for e in entries)
    rows, more = segment.scan(b"", None, segment.last_applied_ts, 1_000_000)
    assert not more
    return {k: v for k, v, _ in rows}, segment.applied_index


@pytest.fixture
def stopped_source(tmp_path) -> tuple[config_mod.ClusterConfig, list[common_pb2.Entry]]:
    """A source cluster that is not running: 6 copies, checkpoints 20 and 40, log 21..57 (some copies behind)."""
    source = config_mod.default_cluster(tmp_path / "source", base_port=free_base_port())
    source.write()
    entries = history(57)
    for number, node in enumerate(source.storages):
        held = entries if number % 2 == 0 else entries[:50]
        write_copy(source.node_data_dir(node.name), held, checkpoints=[20, 40], keep_log_from=21)
    return source, entries


def clone_port(source: config_mod.ClusterConfig) -> int:
    """A free port block that is not the (stopped) source's own: its ports are free too."""
    for _ in range(100):
        port = free_base_port()
        if abs(port - source.base_port) >= config_mod.PORT_BLOCK:
            return port
    raise AssertionError("no free port block apart from the source's")


def listing(root: pathlib.Path) -> dict[str, tuple[int, int, int]]:
    """Every file under root with its size, mtime and inode: what 'untouched' compares."""
    found = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            info = os.stat(os.path.join(dirpath, name))
            found[os.path.relpath(os.path.join(dirpath, name), root)] = (info.st_size, info.st_mtime_ns, info.st_ino)
    return found


def test_clone_of_a_stopped_source_at_t_rebuilds_exactly_the_state_at_t(stopped_source, tmp_path):
    source, entries = stopped_source
    before = listing(source.data_dir)
    at_ts = ts_of(33) + S // 2
    report = clone_mod.clone(source.data_dir, tmp_path / "clone", at_time=timefmt.format_utc(at_ts),
                             base_port=clone_port(source), wait_s=0.0)
    assert not report.source_running
    assert (report.checkpoint_index, report.cut_index, report.entries_copied) == (20, 33, 13)
    clone_config = config_mod.load(tmp_path / "clone" / "cluster.toml")
    assert clone_config.base_port == report.base_port != source.base_port
    for node in clone_config.storages:
        directory = clone_config.node_data_dir(node.name)
        state, applied = rebuilt_state(directory)
        assert applied == 33
        assert state == state_at(entries, at_ts)
        # the checkpoint is the source's own inode: shared, not copied
        linked = directory / checkpoint_file_name(20)
        assert linked.stat().st_ino == (source.node_data_dir(report.copy) / checkpoint_file_name(20)).stat().st_ino
        assert (directory / log_file_name(21)).exists()
    assert report.bytes_linked == (source.node_data_dir(report.copy) / checkpoint_file_name(20)).stat().st_size
    assert listing(source.data_dir) == before


def test_clone_of_a_stopped_source_defaults_to_its_latest_stored_commit(stopped_source, tmp_path):
    source, entries = stopped_source
    report = clone_mod.clone(source.data_dir, tmp_path / "clone", base_port=clone_port(source), wait_s=0.0)
    assert (report.at_ts, report.checkpoint_index, report.cut_index) == (ts_of(57), 40, 57)
    assert "not running" in report.note
    assert report.copy in {n.name for n in source.storages[::2]}  # a copy that holds entry 57
    state, applied = rebuilt_state(config_mod.load(tmp_path / "clone" / "cluster.toml").node_data_dir(
        "storage-az2-b"))
    assert (state, applied) == (state_at(entries, ts_of(57)), 57)


def test_a_torn_tail_and_an_incomplete_checkpoint_are_not_used(stopped_source, tmp_path):
    source, entries = stopped_source
    # Make every copy look mid-write: a half record at the log's end, a checkpoint without its trailer.
    for node in source.storages:
        directory = source.node_data_dir(node.name)
        last = max(directory.glob("log-*.seg"))
        with open(last, "ab") as f:
            f.write(b"\x00\x00\x01\x00\x12\x34")
        newest = directory / checkpoint_file_name(40)
        data = newest.read_bytes()
        newest.unlink()
        (directory / checkpoint_file_name(40)).write_bytes(data[: len(data) // 2])
    report = clone_mod.clone(source.data_dir, tmp_path / "clone", at_time=timefmt.format_utc(ts_of(45)),
                             base_port=clone_port(source), wait_s=0.0)
    assert (report.checkpoint_index, report.cut_index) == (20, 45)
    state, _ = rebuilt_state(config_mod.load(tmp_path / "clone" / "cluster.toml").node_data_dir("storage-az1-a"))
    assert state == state_at(entries, ts_of(45))


def test_read_log_stops_at_a_gap_between_files(tmp_path):
    directory = tmp_path / "copy"
    write_copy(directory, history(10), checkpoints=[], keep_log_from=1)
    log = SegmentLog(directory)
    log.open()
    log.roll()
    log.append([txn(11, {b"a": b"1"})])
    log.close()
    (directory / log_file_name(11)).rename(directory / log_file_name(12))
    names = sorted(p.name for p in directory.glob("log-*.seg"))
    entries, frames = clone_mod.read_log(directory, names)
    assert [i for i, _ in entries] == list(range(1, 11))
    assert set(frames) == set(range(1, 11))


# --- bad input: a clear error, exit 1, nothing of the source touched, NEW not left behind ---------
def run_cli(*args: str) -> tuple[int, str, str]:
    import io
    out, err = io.StringIO(), io.StringIO()
    parsed = cli.build_parser().parse_args(["clone", *args])
    code = cli.command_clone(parsed, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_bad_input_fails_clearly_and_touches_nothing(stopped_source, tmp_path):
    source, _ = stopped_source
    before = listing(source.data_dir)
    new = tmp_path / "new"
    port = str(clone_port(source))
    cases = [
        (["--source", str(tmp_path / "missing"), "--data-dir", str(new)], "does not exist"),
        (["--source", str(tmp_path), "--data-dir", str(new)], "no cluster.toml"),
        (["--source", str(source.data_dir), "--data-dir", str(new), "--at-time", "yesterday"], "bad time"),
        (["--source", str(source.data_dir), "--data-dir", str(new), "--at-time", "2026-12-01T13:40:00"],
         "no zone"),
        (["--source", str(source.data_dir), "--data-dir", str(new), "--base-port", port,
          "--at-time", timefmt.format_utc(ts_of(5))], "earlier than the oldest checkpoint"),
        (["--source", str(source.data_dir), "--data-dir", str(new), "--base-port", port,
          "--at-time", timefmt.format_utc(ts_of(90))], "later than any source copy has applied"),
        (["--source", str(source.data_dir), "--data-dir", str(source.data_dir / "inner")],
         "inside the source cluster's data directory"),
    ]
    for args, expected in cases:
        code, out, err = run_cli(*args)
        assert code == 1, (args, out, err)
        assert expected in err, (args, err)
        assert not new.exists(), args
        assert listing(source.data_dir) == before, args
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    code, _, err = run_cli("--source", str(source.data_dir), "--data-dir", str(occupied))
    assert code == 1 and "is not empty" in err
    assert [p.name for p in occupied.iterdir()] == ["keep.txt"]
    # Parents made on the way to NEW go too.
    code, _, err = run_cli("--source", str(source.data_dir), "--data-dir", str(tmp_path / "a" / "b" / "new"),
                           "--base-port", port, "--at-time", timefmt.format_utc(ts_of(90)))
    assert code == 1 and not (tmp_path / "a").exists()
    # An existing empty NEW stays, empty, after a failure.
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli("--source", str(source.data_dir), "--data-dir", str(empty), "--base-port", port,
                           "--at-time", timefmt.format_utc(ts_of(90)))
    assert code == 1 and list(empty.iterdir()) == []
    assert listing(source.data_dir) == before


def test_cli_prints_the_time_used_and_how_to_start(stopped_source, tmp_path):
    source, _ = stopped_source
    code, out, err = run_cli("--source", str(source.data_dir), "--data-dir", str(tmp_path / "c"),
                             "--base-port", str(clone_port(source)), "--at-time", timefmt.format_utc(ts_of(44)))
    assert code == 0, err
    assert f"cloned at {timefmt.describe(ts_of(44))}" in out
    assert "checkpoint 40" in out and "linked" in out and "copied" in out
    assert f"quorumdb up --data-dir {tmp_path / 'c'}" in out


def test_copy_order_tries_closed_copies_first_then_the_most_advanced():
    copies = [("a", 0, 0, 30), ("b", ts_of(9), 12, 12), ("c", ts_of(9), 15, 15), ("d", ts_of(2), 20, 20)]
    assert clone_mod.copy_order(copies, ts_of(5)) == ["c", "b", "a", "d"]
    assert clone_mod.copy_order(copies, 0) == ["a", "d", "c", "b"]


def test_a_checkpoint_vanishing_mid_copy_starts_over_on_a_fresh_listing(stopped_source, tmp_path, monkeypatch):
    source, entries = stopped_source
    real = clone_mod.newcluster.link_or_copy
    calls = []

    def vanishing_once(source_path, target):
        calls.append(source_path)
        if len(calls) == 1:
            raise FileNotFoundError(source_path)  # the source dropped the checkpoint meanwhile
        return real(source_path, target)

    monkeypatch.setattr(clone_mod.newcluster, "link_or_copy", vanishing_once)
    report = clone_mod.clone(source.data_dir, tmp_path / "clone", at_time=timefmt.format_utc(ts_of(44)),
                             base_port=clone_port(source), wait_s=0.0)
    assert report.attempts == 2
    assert len(calls) == 1 + 6
    state, applied = rebuilt_state(config_mod.load(tmp_path / "clone" / "cluster.toml").node_data_dir(
        "storage-az1-b"))
    assert (state, applied) == (state_at(entries, ts_of(44)), 44)


def test_files_that_keep_vanishing_give_up_and_leave_no_new_directory(stopped_source, tmp_path, monkeypatch):
    source, _ = stopped_source

    def always_vanishing(source_path, target):
        raise FileNotFoundError(source_path)

    monkeypatch.setattr(clone_mod.newcluster, "link_or_copy", always_vanishing)
    with pytest.raises(CloneError, match="kept changing"):
        clone_mod.clone(source.data_dir, tmp_path / "made" / "clone", at_time=timefmt.format_utc(ts_of(44)),
                        base_port=clone_port(source), wait_s=0.0)
    assert not (tmp_path / "made").exists()  # NEW and the parent made for it


def test_base_port_overlapping_the_source_is_refused(stopped_source, tmp_path):
    source, _ = stopped_source
    for port in (source.base_port, source.base_port + 30, source.base_port - 59):
        with pytest.raises(CloneError, match="overlaps the source cluster's ports"):
            clone_mod.clone(source.data_dir, tmp_path / "clone", base_port=port, wait_s=0.0)
        assert not (tmp_path / "clone").exists()


def test_wait_closed_returns_once_a_copy_closes_t_and_gives_up_after_the_wait(stopped_source):
    source, _ = stopped_source
    rounds = []

    def statuses_of(_source):
        rounds.append(None)
        closed_ts = ts_of(len(rounds))
        return {"storage-az1-a": common_pb2.NodeStatus(name="storage-az1-a", closed_ts=closed_ts)}

    seen = clone_mod.wait_closed(source, ts_of(3), wait_s=30.0, statuses_of=statuses_of)
    assert seen["storage-az1-a"].closed_ts == ts_of(3) and len(rounds) == 3
    rounds.clear()
    seen = clone_mod.wait_closed(source, ts_of(10**6), wait_s=0.0, statuses_of=statuses_of)
    assert len(rounds) == 1 and seen["storage-az1-a"].closed_ts == ts_of(1)
    assert clone_mod.wait_closed(source, ts_of(3), wait_s=30.0, statuses_of=lambda _s: {}) == {}


def test_closed_log_files_are_shared_and_the_cut_file_is_copied(tmp_path, monkeypatch):
    """A log file with a successor is never written again: the clone hard-links it; the file
    holding the cut is copied up to the cut, so the clone appends only to a file of its own."""
    monkeypatch.setattr(limits, "STORAGE_LOG_FILE_BYTES_MAX", 1)  # a new file at every append
    source = config_mod.default_cluster(tmp_path / "source", base_port=free_base_port())
    source.write()
    entries = history(30)
    for node in source.storages:
        directory = source.node_data_dir(node.name)
        write_copy(directory, entries[:10], checkpoints=[10], keep_log_from=11)
        log = SegmentLog(directory)
        log.open()
        for entry in entries[10:]:
            log.append([entry])  # one file per entry: log-...11, ...12, ...
        log.close()
    at_ts = ts_of(25) + S // 2
    report = clone_mod.clone(source.data_dir, tmp_path / "clone", at_time=timefmt.format_utc(at_ts),
                             base_port=clone_port(source), wait_s=0.0)
    assert (report.checkpoint_index, report.cut_index) == (10, 25)
    assert report.entries_copied == 1  # only the file holding the cut; 11..24 are shared
    clone_config = config_mod.load(tmp_path / "clone" / "cluster.toml")
    source_dir = source.node_data_dir(report.copy)
    for node in clone_config.storages:
        directory = clone_config.node_data_dir(node.name)
        for index in range(11, 25):
            name = log_file_name(index)
            assert (directory / name).stat().st_ino == (source_dir / name).stat().st_ino
        assert (directory / log_file_name(25)).stat().st_ino != (source_dir / log_file_name(25)).stat().st_ino
        assert not (directory / log_file_name(26)).exists()
        state, applied = rebuilt_state(directory)
        assert (applied, state) == (25, state_at(entries, at_ts))


def test_shared_log_files_stop_before_the_cut_and_at_a_gap():
    closed = [("a", 11, 15), ("b", 16, 20), ("c", 21, 30)]
    assert [n for n, _, _ in clone_mod.shared_log_files(closed, 10, 25)] == ["a", "b"]
    assert [n for n, _, _ in clone_mod.shared_log_files(closed, 10, 20)] == ["a"]  # 20 is in b: b is copied
    assert clone_mod.shared_log_files(closed, 12, 25) == []  # a starts before the base: not connected
    assert [n for n, _, _ in clone_mod.shared_log_files(closed, 15, 40)] == ["b", "c"]
