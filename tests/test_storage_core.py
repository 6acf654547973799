"""The pure storage segment: MVCC visibility, scans, closed time, GC."""
from __future__ import annotations

import random

import pytest

from quorumdb import limits
from storage_node.core import Readiness, ReadBelowHorizon, Record, Segment


def txn(index: int, ts: int, **writes: bytes | None) -> Record:
    return Record(index=index, ts=ts, writes=tuple((k.encode(), v) for k, v in writes.items()))


def test_mvcc_visibility_at_several_ts():
    segment = Segment()
    segment.apply([txn(1, 100, a=b"a1"), txn(2, 200, a=b"a2", b=b"b2"), txn(3, 300, a=None)])
    assert segment.get(b"a", 99) == (None, 0), "nothing existed before the first commit"
    assert segment.get(b"a", 100) == (b"a1", 100)
    assert segment.get(b"a", 199) == (b"a1", 100)
    assert segment.get(b"a", 200) == (b"a2", 200), "overwrite visible at its commit_ts"
    assert segment.get(b"a", 299) == (b"a2", 200)
    assert segment.get(b"a", 300) == (None, 300), "tombstone hides the key and reports its version_ts"
    assert segment.get(b"b", 150) == (None, 0)
    assert segment.get(b"b", 10_000) == (b"b2", 200)
    assert segment.get(b"zz", 10_000) == (None, 0)


def test_empty_value_is_a_value_not_a_delete():
    segment = Segment()
    segment.apply([txn(1, 10, k=b"")])
    assert segment.get(b"k", 10) == (b"", 10)


def test_same_key_twice_in_one_entry_last_write_wins():
    segment = Segment()
    segment.apply([Record(1, 10, ((b"k", b"first"), (b"k", b"second")))])
    assert segment.get(b"k", 10) == (b"second", 10)
    assert segment.version_count == 1


def test_leader_entries_advance_index_and_closed_ts_without_writes():
    segment = Segment()
    segment.apply([Record(1, 50), txn(2, 60, x=b"1"), Record(3, 70)])
    assert segment.applied_index == 3
    assert segment.scl == 3
    assert segment.closed_ts == 70
    assert segment.key_count == 1


def test_apply_asserts_consecutive_indexes_and_increasing_ts():
    segment = Segment()
    segment.apply([txn(1, 10, a=b"1")])
    with pytest.raises(AssertionError):
        segment.apply([txn(3, 30, a=b"3")])
    with pytest.raises(AssertionError):
        segment.apply([txn(2, 10, a=b"2")])


def test_scan_bounds_limit_more_and_tombstones():
    segment = Segment()
    segment.apply([
        txn(1, 10, k1=b"1", k2=b"2", k3=b"3", k4=b"4", k5=b"5"),
        txn(2, 20, k2=None, k4=b"44"),
    ])
    rows, more = segment.scan(b"k1", None, 20, 100)
    assert rows == [(b"k1", b"1", 10), (b"k3", b"3", 10), (b"k4", b"44", 20), (b"k5", b"5", 10)]
    assert more is False
    rows, more = segment.scan(b"k1", None, 15, 100)
    assert [r[0] for r in rows] == [b"k1", b"k2", b"k3", b"k4", b"k5"], "at ts 15 the delete is not visible"
    rows, more = segment.scan(b"k2", b"k5", 20, 100)
    assert [r[0] for r in rows] == [b"k3", b"k4"], "start inclusive, end exclusive, tombstone skipped"
    rows, more = segment.scan(b"k", None, 20, 2)
    assert [r[0] for r in rows] == [b"k1", b"k3"]
    assert more is True
    rows, more = segment.scan(b"k4", None, 20, 2)
    assert [r[0] for r in rows] == [b"k4", b"k5"]
    assert more is False, "limit reached exactly at the last key: nothing more"
    rows, more = segment.scan(b"k6", None, 20, 2)
    assert (rows, more) == ([], False)
    rows, more = segment.scan(b"a", None, 5, 10)
    assert rows == [], "nothing visible before the first commit"


def test_scan_matches_a_model_on_random_histories():
    rng = random.Random(1234)
    for _ in range(50):
        segment = Segment()
        model: list[tuple[int, dict[bytes, bytes | None]]] = []
        ts = 0
        for index in range(1, 40):
            ts += rng.randint(1, 5)
            writes = {bytes([rng.randrange(97, 107)]): (None if rng.random() < 0.3 else str(index).encode())
                      for _ in range(rng.randint(0, 3))}
            segment.apply([Record(index, ts, tuple(writes.items()))])
            model.append((ts, writes))
        for _ in range(20):
            read_ts = rng.randint(0, ts + 3)
            state: dict[bytes, bytes | None] = {}
            for commit_ts, writes in model:
                if commit_ts <= read_ts:
                    state.update(writes)
            live = sorted((k, v) for k, v in state.items() if v is not None)
            start, end = sorted([bytes([rng.randrange(96, 108)]), bytes([rng.randrange(96, 108)])])
            rows, _ = segment.scan(start, end, read_ts, 100)
            assert [(k, v) for k, v, _ in rows] == [(k, v) for k, v in live if start <= k < end], (read_ts, start, end)


def test_closed_ts_follows_last_applied_entry():
    segment = Segment()
    assert segment.closed_ts == 0
    assert segment.can_serve(0)
    assert not segment.can_serve(1)
    segment.apply([txn(1, 100, a=b"1")])
    assert segment.closed_ts == 100
    assert segment.can_serve(100)
    assert not segment.can_serve(101)


def test_heartbeat_usable_only_once_its_closed_index_is_applied():
    segment = Segment()
    segment.apply([txn(1, 100, a=b"1")])
    segment.observe_closed(closed_ts=500, closed_index=1)
    assert segment.closed_ts == 500, "closed_index already applied: usable at once"
    segment.observe_closed(closed_ts=900, closed_index=3)
    assert segment.closed_ts == 500, "entries 2..3 may hold commits <= 900: not usable yet"
    assert not segment.can_serve(600)
    segment.apply([txn(2, 600, b=b"2")])
    assert segment.closed_ts == 600, "last applied ts, the heartbeat still waits for index 3"
    segment.apply([txn(3, 700, c=b"3")])
    assert segment.closed_ts == 900
    assert segment.can_serve(900)
    assert not segment.can_serve(901)


def test_stale_heartbeat_never_moves_closed_ts_back():
    segment = Segment()
    segment.apply([txn(1, 100, a=b"1")])
    segment.observe_closed(closed_ts=50, closed_index=1)
    assert segment.closed_ts == 100


def test_pending_heartbeats_stay_bounded_and_safe():
    segment = Segment()
    segment.apply([Record(1, 10)])
    for i in range(limits.STORAGE_PENDING_CLOSED_MAX * 3):
        segment.observe_closed(closed_ts=1000 + i, closed_index=2 + i)
    assert len(segment._pending_closed) <= limits.STORAGE_PENDING_CLOSED_MAX
    segment.apply([Record(2, 20)])
    assert segment.closed_ts <= 1000, "a heartbeat must never be used before its closed_index is applied"
    index = 3
    ts = 30
    while index <= 2 + limits.STORAGE_PENDING_CLOSED_MAX * 3:
        segment.apply([Record(index, ts)])
        index += 1
        ts += 1
    assert segment.closed_ts == 1000 + limits.STORAGE_PENDING_CLOSED_MAX * 3 - 1


def test_gc_keeps_what_reads_at_or_above_the_horizon_need():
    segment = Segment()
    segment.apply([
        txn(1, 10, a=b"a10", d=b"d10"),
        txn(2, 20, a=b"a20", d=None),
        txn(3, 30, a=b"a30"),
        txn(4, 40, a=b"a40", e=b"e40"),
    ])
    before = {ts: (segment.get(b"a", ts), segment.get(b"d", ts), segment.get(b"e", ts)) for ts in range(25, 50)}
    assert segment.gc_step(horizon_ts=35, keys_max=100) is True
    for ts in range(35, 50):
        a, d, e = before[ts]
        assert segment.get(b"a", ts) == a, ts
        assert segment.get(b"e", ts) == e, ts
        # A forgotten delete reads as "missing" (version_ts 0) instead of "deleted at 20": still not found.
        assert d == (None, 20)
        assert segment.get(b"d", ts) == (None, 0), ts
    assert segment.version_count == 3, "a30, a40, e40 remain; a10/a20 collected; deleted d forgotten"
    assert segment.key_count == 2
    rows, _ = segment.scan(b"", None, 35, 10)
    assert [r[0] for r in rows] == [b"a"]


def test_reads_below_the_gc_horizon_are_refused():
    segment = Segment()
    segment.apply([txn(1, 10, a=b"1"), txn(2, 20, a=b"2")])
    segment.gc_step(horizon_ts=15, keys_max=10)
    assert segment.readiness(14) is Readiness.TOO_OLD
    assert segment.readiness(15) is Readiness.READY
    assert segment.readiness(21) is Readiness.WAIT
    assert not segment.can_serve(14)
    with pytest.raises(ReadBelowHorizon):
        segment.get(b"a", 14)
    with pytest.raises(ReadBelowHorizon):
        segment.scan(b"", None, 14, 10)


def test_gc_work_is_bounded_per_step_and_resumes():
    segment = Segment()
    keys = [f"k{i:03d}".encode() for i in range(50)]
    segment.apply([Record(1, 10, tuple((k, b"old") for k in keys)), Record(2, 20, tuple((k, b"new") for k in keys))])
    assert segment.version_count == 100
    steps = 0
    while not segment.gc_step(horizon_ts=25, keys_max=7):
        steps += 1
        assert steps < 20
    assert steps == 7, "50 keys at 7 per step: 7 partial steps, the 8th finishes"
    assert segment.version_count == 50
    assert all(segment.get(k, 25) == (b"new", 20) for k in keys)


def test_writes_after_gc_stay_ordered():
    segment = Segment()
    segment.apply([txn(1, 10, a=b"1"), txn(2, 20, a=None)])
    segment.gc_step(horizon_ts=30, keys_max=10)
    assert segment.key_count == 0
    segment.apply([txn(3, 40, a=b"again")])
    assert segment.get(b"a", 40) == (b"again", 40)
    assert segment.get(b"a", 35) == (None, 0)
