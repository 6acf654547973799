"""The local segment log: append + fsync, replay on restart, torn tails, ranged reads."""
from __future__ import annotations

import os

import pytest

from quorumdb.pb import common_pb2
from storage_node.store import LOG_FILE, SegmentLog


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
    path = tmp_path / LOG_FILE
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
    path = tmp_path / LOG_FILE
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
