"""The local segment log: append + fsync, replay on restart, torn tails, ranged reads, files and drops."""
from __future__ import annotations

import os

import pytest

from quorumdb.pb import common_pb2
from storage_node.store import LEGACY_LOG_FILE, SegmentLog, log_file_name


def entry(index: int, value: bytes = b"v") -> common_pb2.Entry:
    return common_pb2.Entry(
        index=index, epoch=1, kind=common_pb2.ENTRY_TXN, ts=1000 + index,
        writes=[common_pb2.Write(key=b"k%d" % index, value=value)],
    )


def test_restart_replays_every_record(tmp_path):
    segment_log = SegmentLog(tmp_path)
    assert segment_log.open() == 0
    segment_log.append([entry(1), entry(2)])
    segment_log.append([entry(3)])
    segment_log.close()

    reopened = SegmentLog(tmp_path)
    assert reopened.open() == 3
    assert (reopened.first_index, reopened.last_index) == (1, 3)
    entries = reopened.read(1, 100, 1 << 20)
    assert entries == [entry(1), entry(2), entry(3)]
    reopened.append([entry(4)])
    assert [e.index for e in reopened.read(3, 100, 1 << 20)] == [3, 4]
    reopened.close()


@pytest.mark.parametrize("cut_bytes", [1, 5, 9, 20])
def test_torn_tail_is_cut_and_appends_continue(tmp_path, cut_bytes):
    segment_log = SegmentLog(tmp_path)
    segment_log.open()
    segment_log.append([entry(1), entry(2)])
    segment_log.append([entry(3, b"x" * 30)])
    segment_log.close()
    path = tmp_path / log_file_name(1)
    os.truncate(path, path.stat().st_size - cut_bytes)

    reopened = SegmentLog(tmp_path)
    assert reopened.open() == 2, "the torn record 3 is dropped, 1 and 2 survive"
    assert reopened.truncated_bytes > 0
    assert reopened.last_index == 2
    reopened.append([entry(3, b"again")])
    reopened.close()

    third = SegmentLog(tmp_path)
    assert third.open() == 3
    assert third.truncated_bytes == 0
    assert third.read(3, 1, 1 << 20)[0].writes[0].value == b"again"
    third.close()


def test_corrupt_last_record_is_cut(tmp_path):
    segment_log = SegmentLog(tmp_path)
    segment_log.open()
    segment_log.append([entry(1), entry(2)])
    segment_log.close()
    path = tmp_path / log_file_name(1)
    data = bytearray(path.read_bytes())
    data[-2] ^= 0xFF  # flip a payload byte of record 2: its crc no longer matches
    path.write_bytes(bytes(data))
    reopened = SegmentLog(tmp_path)
    assert reopened.open() == 1
    assert reopened.read(1, 10, 1 << 20) == [entry(1)]
    reopened.close()


def test_read_respects_bounds(tmp_path):
    segment_log = SegmentLog(tmp_path)
    segment_log.open()
    segment_log.append([entry(i, b"y" * 100) for i in range(1, 21)])
    assert [e.index for e in segment_log.read(5, 3, 1 << 20)] == [5, 6, 7]
    assert [e.index for e in segment_log.read(19, 10, 1 << 20)] == [19, 20]
    assert segment_log.read(21, 10, 1 << 20) == []
    assert [e.index for e in segment_log.read(0, 2, 1 << 20)] == [1, 2], "below the first index starts there"
    by_bytes = segment_log.read(1, 100, 250)
    assert 1 <= len(by_bytes) < 5, "about 250 bytes: a few records of ~120 bytes"
    assert [e.index for e in segment_log.read(1, 100, 1)] == [1], "always at least one record"
    segment_log.close()


def test_append_must_follow_the_last_index(tmp_path):
    segment_log = SegmentLog(tmp_path)
    segment_log.open()
    segment_log.append([entry(1)])
    with pytest.raises(AssertionError):
        segment_log.append([entry(3)])
    segment_log.close()


def indexes(segment_log: SegmentLog, from_index: int = 0) -> list[int]:
    return [e.index for e in segment_log.read(from_index, 1_000, 1 << 30)]


def test_roll_starts_files_that_drop_through_deletes_whole(tmp_path):
    segment_log = SegmentLog(tmp_path)
    segment_log.open()
    segment_log.append([entry(i) for i in range(1, 6)])
    segment_log.roll()
    segment_log.append([entry(i) for i in range(6, 9)])
    segment_log.append([entry(9)])
    segment_log.roll()
    segment_log.append([entry(10)])
    assert segment_log.file_count == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [log_file_name(1), log_file_name(6), log_file_name(10)]
    assert indexes(segment_log, 4) == list(range(4, 11)), "reads run across files"
    assert [e.index for e in segment_log.read(4, 4, 1 << 30)] == [4, 5, 6, 7]

    assert segment_log.drop_through(7) == 1, "only the file [1, 5] lies wholly at or below 7"
    assert (segment_log.first_index, segment_log.last_index) == (6, 10)
    assert indexes(segment_log) == list(range(6, 11)), "a read below the first index starts there"
    assert segment_log.drop_through(9) == 1
    assert segment_log.drop_through(9) == 0
    segment_log.append([entry(11)])
    segment_log.close()

    reopened = SegmentLog(tmp_path)
    assert reopened.open() == 2
    assert (reopened.first_index, reopened.last_index) == (10, 11)
    reopened.close()


def test_dropping_every_file_then_appending_continues(tmp_path):
    segment_log = SegmentLog(tmp_path)
    segment_log.open()
    segment_log.append([entry(1), entry(2)])
    assert segment_log.drop_through(2) == 1
    assert (segment_log.first_index, segment_log.last_index, segment_log.entry_count) == (0, 0, 0)
    segment_log.append([entry(3)])  # an empty log takes whatever follows the checkpoint
    segment_log.reset()
    assert list(tmp_path.iterdir()) == []
    segment_log.append([entry(40)])
    segment_log.close()
    reopened = SegmentLog(tmp_path)
    assert reopened.open() == 1
    assert indexes(reopened) == [40]
    reopened.close()


def test_a_gap_between_files_drops_the_later_files(tmp_path):
    segment_log = SegmentLog(tmp_path)
    segment_log.open()
    segment_log.append([entry(1), entry(2)])
    segment_log.roll()
    segment_log.append([entry(3)])
    segment_log.roll()
    segment_log.append([entry(4)])
    segment_log.close()
    (tmp_path / log_file_name(3)).unlink()
    reopened = SegmentLog(tmp_path)
    assert reopened.open() == 2
    assert indexes(reopened) == [1, 2]
    assert reopened.truncated_bytes > 0
    assert not (tmp_path / log_file_name(4)).exists()
    reopened.append([entry(3)])
    reopened.close()


def test_a_torn_file_in_the_middle_cuts_everything_after_it(tmp_path):
    segment_log = SegmentLog(tmp_path)
    segment_log.open()
    segment_log.append([entry(1), entry(2)])
    segment_log.roll()
    segment_log.append([entry(3)])
    segment_log.close()
    first = tmp_path / log_file_name(1)
    os.truncate(first, first.stat().st_size - 3)
    reopened = SegmentLog(tmp_path)
    assert reopened.open() == 1
    assert indexes(reopened) == [1]
    assert [p.name for p in tmp_path.iterdir()] == [log_file_name(1)]
    reopened.close()


def test_a_log_from_before_segmentation_is_adopted(tmp_path):
    segment_log = SegmentLog(tmp_path)
    segment_log.open()
    segment_log.append([entry(1), entry(2)])
    segment_log.close()
    (tmp_path / log_file_name(1)).rename(tmp_path / LEGACY_LOG_FILE)
    reopened = SegmentLog(tmp_path)
    assert reopened.open() == 2
    assert not (tmp_path / LEGACY_LOG_FILE).exists()
    assert indexes(reopened) == [1, 2]
    reopened.close()


def test_a_read_racing_a_drop_returns_a_consecutive_prefix(tmp_path):
    segment_log = SegmentLog(tmp_path)
    segment_log.open()
    segment_log.append([entry(1)])
    segment_log.roll()
    segment_log.append([entry(2)])
    plan_file = tmp_path / log_file_name(1)
    plan_file.unlink()  # as if drop_through ran between the read's plan and its preads
    assert segment_log.read(1, 10, 1 << 20) == []
    segment_log.close()


def test_a_full_file_rolls_by_itself_and_is_never_written_again(tmp_path, monkeypatch):
    from quorumdb import limits

    monkeypatch.setattr(limits, "STORAGE_LOG_FILE_BYTES_MAX", 200)
    log = SegmentLog(tmp_path)
    log.open()
    for index in range(1, 41):
        log.append([entry(index)])
    names = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("log-"))
    assert len(names) > 3
    sizes = {name: (tmp_path / name).stat().st_size for name in names}
    log.append([entry(41)])
    # only the newest file grew; every earlier one kept its bytes (a clone may share it)
    assert all((tmp_path / name).stat().st_size == sizes[name] for name in names[:-1])
    assert [e.index for e in log.read(1, 100, 1 << 20)] == list(range(1, 42))
    log.close()
    reopened = SegmentLog(tmp_path)
    assert reopened.open() == 41
    reopened.close()
