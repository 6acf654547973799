"""Journal store: restart replay, torn tail, suffix and prefix truncation, reset."""
from __future__ import annotations

from journal.core import Meta
from journal.store import JournalStore
from quorumdb.pb import common_pb2


def entries(first: int, last: int, epoch: int = 1) -> list[common_pb2.Entry]:
    return [common_pb2.Entry(index=i, epoch=epoch, kind=common_pb2.ENTRY_TXN, ts=i * 10,
                             writes=[common_pb2.Write(key=b"k%d" % i, value=b"v" * i)])
            for i in range(first, last + 1)]


def reopen(path, segment_entries=10):
    store = JournalStore(path, segment_entries=segment_entries)
    meta, held = store.open()
    return store, meta, held


def test_restart_replays_entries_and_meta(tmp_path):
    store, meta, held = reopen(tmp_path)
    assert meta == Meta() and held == []
    store.append(entries(1, 25))
    store.write_meta(Meta(promised_epoch=3, first_index=1, base_epoch=0, commit_index=20))
    _, meta, held = reopen(tmp_path)
    assert meta.promised_epoch == 3 and meta.commit_index == 20
    assert [e.index for e in held] == list(range(1, 26))
    assert held[24].writes[0].value == b"v" * 25
    assert len(list(tmp_path.glob("seg-*.log"))) == 3


def test_torn_last_record_is_ignored_and_cut(tmp_path):
    store, _, _ = reopen(tmp_path)
    store.append(entries(1, 5))
    segment = tmp_path / "seg-000000000000.log"
    size = segment.stat().st_size
    with open(segment, "r+b") as f:
        f.truncate(size - 3)  # a crash in the middle of the last record
    store, _, held = reopen(tmp_path)
    assert [e.index for e in held] == [1, 2, 3, 4]
    store.append(entries(5, 6, epoch=2))  # appending after the cut works
    _, _, held = reopen(tmp_path)
    assert [(e.index, e.epoch) for e in held] == [(1, 1), (2, 1), (3, 1), (4, 1), (5, 2), (6, 2)]


def test_corrupt_record_cuts_everything_after(tmp_path):
    store, _, _ = reopen(tmp_path)
    store.append(entries(1, 15))
    segment = tmp_path / "seg-000000000000.log"
    data = bytearray(segment.read_bytes())
    data[-5] ^= 0xFF  # flip a byte inside entry 10's payload
    segment.write_bytes(bytes(data))
    _, _, held = reopen(tmp_path)
    assert [e.index for e in held] == list(range(1, 10))
    assert not (tmp_path / "seg-000000000001.log").exists()


def test_suffix_truncation_across_segments(tmp_path):
    store, _, _ = reopen(tmp_path)
    store.append(entries(1, 27))
    store.truncate_suffix(8)
    assert store.last_index == 7
    store.append(entries(8, 12, epoch=2))
    _, _, held = reopen(tmp_path)
    assert [e.index for e in held] == list(range(1, 13))
    assert [e.epoch for e in held[6:]] == [1, 2, 2, 2, 2, 2]
    assert not (tmp_path / "seg-000000000002.log").exists()


def test_prefix_truncation_deletes_whole_segments(tmp_path):
    store, _, _ = reopen(tmp_path)
    store.append(entries(1, 35))
    store.truncate_prefix(Meta(promised_epoch=1, first_index=21, base_epoch=1, commit_index=35))
    assert sorted(p.name for p in tmp_path.glob("seg-*.log")) == ["seg-000000000002.log", "seg-000000000003.log"]
    store.append(entries(36, 36))
    _, meta, held = reopen(tmp_path)
    assert meta.first_index == 21 and meta.base_epoch == 1
    assert [e.index for e in held] == list(range(21, 37))


def test_leftover_segments_below_first_index_are_dropped_at_open(tmp_path):
    store, _, _ = reopen(tmp_path)
    store.append(entries(1, 25))
    # A crash after the meta was written but before the segments were deleted.
    store.write_meta(Meta(promised_epoch=1, first_index=11, base_epoch=1, commit_index=25))
    _, meta, held = reopen(tmp_path)
    assert [e.index for e in held] == list(range(11, 26))
    assert not (tmp_path / "seg-000000000000.log").exists()


def test_reset_restarts_the_log_mid_segment(tmp_path):
    store, _, _ = reopen(tmp_path)
    store.append(entries(1, 5))
    store.reset(Meta(promised_epoch=2, first_index=44, base_epoch=2, commit_index=43))
    store.append(entries(44, 47, epoch=2))
    _, meta, held = reopen(tmp_path)
    assert meta.first_index == 44
    assert [e.index for e in held] == [44, 45, 46, 47]
