"""Replica core: fencing, log matching, divergent suffixes, commit rule, truncation."""
from __future__ import annotations

import pytest

from journal.core import AppendStatus, BadAppend, Meta, ReplicaCore, storage_durable_index
from quorumdb.pb import common_pb2

STORAGE = [f"storage-{i}" for i in range(6)]


def entry(index: int, epoch: int, ts: int | None = None) -> common_pb2.Entry:
    return common_pb2.Entry(index=index, epoch=epoch, kind=common_pb2.ENTRY_TXN, ts=ts or index * 10)


def entries(first: int, last: int, epoch: int) -> list[common_pb2.Entry]:
    return [entry(i, epoch) for i in range(first, last + 1)]


def append(core, epoch, prev_index, prev_epoch, new, commit_index=0, closed=(0, 0), leader="adj-1"):
    return core.append(epoch, leader, prev_index, prev_epoch, new, commit_index, closed[0], closed[1])


def test_fence_is_strict_and_persisted():
    core = ReplicaCore(STORAGE)
    first = core.fence(3, "a")
    assert first.ok and first.meta_changed and first.promised_epoch == 3
    same = core.fence(3, "b")
    assert not same.ok and not same.meta_changed and same.promised_epoch == 3
    assert not core.fence(2, "c").ok
    assert core.meta().promised_epoch == 3


def test_fence_reply_reports_the_tail():
    core = ReplicaCore(STORAGE)
    core.fence(1, "a")
    append(core, 1, 0, 0, entries(1, 5, 1), commit_index=3)
    reply = core.fence(2, "b")
    assert (reply.last_index, reply.last_epoch, reply.commit_index, reply.first_index) == (5, 1, 3, 1)


def test_append_below_promised_is_fenced():
    core = ReplicaCore(STORAGE)
    core.fence(5, "a")
    result = append(core, 4, 0, 0, entries(1, 2, 4))
    assert result.status is AppendStatus.FENCED
    assert result.promised_epoch == 5
    assert core.last_index == 0


def test_append_with_higher_epoch_is_adopted_and_persisted():
    core = ReplicaCore(STORAGE)
    core.fence(1, "a")
    result = append(core, 2, 0, 0, entries(1, 1, 2))
    assert result.status is AppendStatus.OK and result.meta_changed
    assert core.promised_epoch == 2
    assert core.leader_epoch == 2 and core.leader == "adj-1"


def test_mismatch_when_prev_missing_or_other_epoch():
    core = ReplicaCore(STORAGE)
    append(core, 1, 0, 0, entries(1, 3, 1))
    gap = append(core, 1, 5, 1, entries(6, 6, 1))
    assert gap.status is AppendStatus.MISMATCH and gap.last_index == 3
    wrong_epoch = append(core, 2, 3, 2, entries(4, 4, 2))
    assert wrong_epoch.status is AppendStatus.MISMATCH
    assert core.last_index == 3


def test_divergent_suffix_is_truncated():
    core = ReplicaCore(STORAGE)
    append(core, 1, 0, 0, entries(1, 5, 1), commit_index=2)
    # A new leader (epoch 2) whose log has entries 4..5 from epoch 2.
    result = append(core, 2, 3, 1, entries(4, 4, 2))
    assert result.status is AppendStatus.OK
    assert result.truncate_from == 4
    assert [e.index for e in result.appended] == [4]
    assert core.last_index == 4 and core.entry(4).epoch == 2
    assert result.match_index == 4


def test_duplicate_append_is_idempotent():
    core = ReplicaCore(STORAGE)
    append(core, 1, 0, 0, entries(1, 3, 1))
    again = append(core, 1, 0, 0, entries(1, 3, 1))
    assert again.status is AppendStatus.OK and again.appended == [] and again.truncate_from is None
    assert not again.needs_disk
    assert core.last_index == 3


def test_commit_index_never_beyond_verified_match():
    core = ReplicaCore(STORAGE)
    # The replica holds stale entries 1..5 (epoch 1); the leader says commit 9 but has only verified 2.
    append(core, 1, 0, 0, entries(1, 5, 1))
    result = append(core, 2, 2, 1, [], commit_index=9)
    assert result.match_index == 2
    assert core.commit_index == 2
    append(core, 2, 2, 1, entries(3, 4, 2), commit_index=9)
    assert core.commit_index == 4
    # The commit index never goes back.
    append(core, 2, 0, 0, [], commit_index=1)
    assert core.commit_index == 4


def test_committed_entries_only_are_readable_by_subscribers():
    core = ReplicaCore(STORAGE)
    append(core, 1, 0, 0, entries(1, 5, 1), commit_index=0)
    assert core.read_committed(1, 100) == []
    append(core, 1, 5, 1, [], commit_index=3)
    assert [e.index for e in core.read_committed(1, 100)] == [1, 2, 3]
    assert [e.index for e in core.read_committed(2, 1)] == [2]
    assert [e.index for e in core.read(4, 100)] == [4, 5]


def test_closed_timestamp_keeps_the_newest():
    core = ReplicaCore(STORAGE)
    append(core, 1, 0, 0, [], closed=(100, 3))
    append(core, 1, 0, 0, [], closed=(90, 2))
    assert (core.closed_ts, core.closed_index) == (100, 3)
    append(core, 1, 0, 0, [], closed=(150, 4))
    assert (core.closed_ts, core.closed_index) == (150, 4)


def test_malformed_append_is_rejected_without_change():
    core = ReplicaCore(STORAGE)
    with pytest.raises(BadAppend):
        append(core, 1, 0, 0, [entry(2, 1)])
    assert core.last_index == 0 and core.promised_epoch == 0


def test_durable_index_is_fourth_highest_scl():
    assert storage_durable_index({"a": 5, "b": 9, "c": 7}) == 0
    assert storage_durable_index({"a": 5, "b": 9, "c": 7, "d": 1}) == 1
    assert storage_durable_index({"a": 5, "b": 9, "c": 7, "d": 1, "e": 8, "f": 6}) == 6


def test_truncation_at_fourth_highest_scl_in_whole_segments():
    core = ReplicaCore(STORAGE, segment_entries=10)
    append(core, 1, 0, 0, entries(1, 45, 1), commit_index=40)
    for node, scl in zip(STORAGE[:3], (44, 44, 44)):
        assert core.report_scl(node, scl).truncate_before is None  # fewer than 4 reported
    result = core.report_scl(STORAGE[3], 25)
    assert result.durable_index == 25
    assert result.truncate_before == 21  # segments 1..10 and 11..20 go whole
    assert core.first_index == 21 and core.base_epoch == 1
    # Unknown nodes do not count; the commit index bounds truncation.
    core.report_scl("intruder", 1000)
    for node in STORAGE[3:]:
        core.report_scl(node, 45)
    assert core.durable_index == 44  # 45, 45, 45, 44, 44, 44
    assert core.first_index == 41  # min(durable 44, commit 40) + 1 rounded down to a segment
    assert core.read_committed(30, 5) == []  # truncated


def test_append_below_first_index_matches():
    core = ReplicaCore(STORAGE, meta=Meta(promised_epoch=1, first_index=11, base_epoch=1, commit_index=10))
    result = append(core, 1, 5, 7, entries(6, 12, 1))
    assert result.status is AppendStatus.OK
    assert core.first_index == 11 and core.last_index == 12


def test_reset_when_the_missing_entries_are_storage_durable():
    core = ReplicaCore(STORAGE)
    append(core, 1, 0, 0, entries(1, 3, 1), commit_index=3)
    for node in STORAGE:
        core.report_scl(node, 100)
    # The writer can only send from 101 on (the others truncated); this replica lacks 4..100.
    result = append(core, 2, 100, 0, entries(101, 102, 2), commit_index=102)
    assert result.status is AppendStatus.OK and result.reset
    assert core.first_index == 101 and core.last_index == 102
    assert core.commit_index == 102
    # Without the durable index the same append is a mismatch.
    fresh = ReplicaCore(STORAGE)
    assert append(fresh, 2, 100, 0, entries(101, 102, 2)).status is AppendStatus.MISMATCH


def test_restart_never_claims_more_committed_than_held():
    core = ReplicaCore(STORAGE, meta=Meta(promised_epoch=1, commit_index=9), entries=entries(1, 4, 1))
    assert core.commit_index == 4


# --- Global Database: the hold (docs/REGIONS.md) ------------------------------------------------
def _held_core(hold_required: bool):
    from journal.core import ReplicaCore
    from quorumdb.pb import common_pb2
    core = ReplicaCore([f"s{i}" for i in range(6)], segment_entries=10, hold_required=hold_required)
    entries = [common_pb2.Entry(index=i, epoch=1, ts=i) for i in range(1, 41)]
    core.append(1, "w", 0, 0, entries, commit_index=40, closed_ts=0, closed_index=0)
    return core


def test_a_region_replica_drops_nothing_before_the_writer_says_how_far_secondaries_are():
    core = _held_core(hold_required=True)
    for i in range(6):
        core.report_scl(f"s{i}", 40)
    assert core.first_index == 1  # no hold heard yet: keep everything


def test_the_hold_bounds_truncation_and_a_plain_cluster_ignores_it():
    core = _held_core(hold_required=True)
    core.append(1, "w", 40, 1, [], commit_index=40, closed_ts=0, closed_index=0, hold_index=25)
    for i in range(6):
        core.report_scl(f"s{i}", 40)
    assert core.first_index == 21  # segments of 10: everything up to 20 is dropped, 21..25 kept with its segment
    plain = _held_core(hold_required=False)
    for i in range(6):
        plain.report_scl(f"s{i}", 40)
    assert plain.first_index == 41
