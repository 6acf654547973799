"""Writer core: best tail, 2-of-3 commit index, current-epoch rule, mismatch backoff, closed ts."""
from __future__ import annotations

import pytest

from journal.writer_core import BufferFull, ReplicaTail, WriterCore, best_tail, quorum_match
from quorumdb.pb import common_pb2

REPLICAS = ["j1", "j2", "j3"]


def txn(ts: int) -> common_pb2.Entry:
    return common_pb2.Entry(kind=common_pb2.ENTRY_TXN, ts=ts, txn_id=f"t{ts}")


def leader_entry(ts: int) -> common_pb2.Entry:
    return common_pb2.Entry(kind=common_pb2.ENTRY_LEADER, ts=ts, leader="adj")


def new_core(best=ReplicaTail("j1", 0, 0, 0, 1), epoch=1, commit_index=0, buffer_max=1000) -> WriterCore:
    return WriterCore(REPLICAS, "adj", epoch, best, commit_index, buffer_max=buffer_max)


def ack(core, name, match_index):
    # As the writer does: the Append carries the commit index and closed timestamp of the moment it is sent.
    return core.on_ok(name, core.plan(name), match_index, core.commit_index, core.closed())


def test_best_tail_prefers_epoch_then_index():
    tails = [ReplicaTail("j1", 10, 1, 5, 1), ReplicaTail("j2", 7, 2, 5, 1), ReplicaTail("j3", 9, 2, 5, 1)]
    assert best_tail(tails).name == "j3"
    assert best_tail(tails[:2]).name == "j2"  # a longer log of an older epoch loses


def test_quorum_match_is_second_highest():
    assert quorum_match([5, 9, 7]) == 7
    assert quorum_match([0, 0, 3]) == 0
    assert quorum_match([4, 4, 0]) == 4


def test_assign_gives_consecutive_indexes_and_epoch():
    core = new_core(best=ReplicaTail("j1", 7, 1, 7, 1), epoch=3)
    [leader] = core.assign([leader_entry(100)])
    assert (leader.index, leader.epoch) == (8, 3)
    assert core.leader_index == 8
    batch = core.assign([txn(101), txn(102)])
    assert [(e.index, e.epoch) for e in batch] == [(9, 3), (10, 3)]
    assert core.last_index == 10 and core.last_ts == 102
    with pytest.raises(AssertionError):
        core.assign([txn(102)])  # ts must increase


def test_commit_needs_two_of_three():
    core = new_core()
    core.assign([leader_entry(1), txn(2), txn(3)])
    assert not ack(core, "j1", 3)
    assert core.commit_index == 0
    assert ack(core, "j3", 2)
    assert core.commit_index == 2
    assert ack(core, "j2", 3)
    assert core.commit_index == 3


def test_old_epoch_entries_commit_only_with_the_leader_entry():
    # j1 had entries 1..5 of epoch 1, never known committed; the new writer takes them over.
    core = new_core(best=ReplicaTail("j1", 5, 1, 0, 1), epoch=2)
    core.assign([leader_entry(50)])
    assert core.progress["j1"].match_index == 5
    # j2 catches up to 5 (a majority holds entries of epoch 1) - still not committed.
    assert not ack(core, "j2", 5)
    assert core.commit_index == 0
    assert not ack(core, "j2", 6)  # the epoch-2 leader entry on one replica only
    assert core.commit_index == 0
    assert ack(core, "j1", 6)
    assert core.commit_index == 6


def test_plan_sends_from_next_index_with_prev_epoch():
    core = new_core(best=ReplicaTail("j1", 5, 1, 0, 1), epoch=2)
    core.assign([leader_entry(50), txn(51)])
    plan = core.plan("j2")
    assert (plan.prev_index, plan.prev_epoch) == (5, 1)
    assert [e.index for e in plan.entries] == [6, 7]


def test_mismatch_backs_off_exponentially_and_needs_fetch():
    core = new_core(best=ReplicaTail("j1", 100, 1, 0, 1), epoch=2)
    core.assign([leader_entry(50)])
    plan = core.plan("j2")
    core.on_mismatch("j2", plan, replica_last_index=200)  # longer but divergent
    assert core.progress["j2"].next_index == 100
    plan = core.plan("j2")
    assert plan.entries is None  # entry 100 is not buffered: fetch it from a matching replica
    assert core.source_for("j2", plan.to_index) == "j1"
    core.on_mismatch("j2", plan, replica_last_index=200)
    assert core.progress["j2"].next_index == 98
    core.on_mismatch("j2", core.plan("j2"), replica_last_index=200)
    assert core.progress["j2"].next_index == 94
    core.on_mismatch("j2", core.plan("j2"), replica_last_index=3)  # short log: resume right after it
    assert core.progress["j2"].next_index == 4


def test_has_work_and_commit_propagation():
    core = new_core()
    assert not any(core.has_work(name) for name in REPLICAS)
    core.assign([leader_entry(1)])
    assert all(core.has_work(name) for name in REPLICAS)
    ack(core, "j1", 1)
    ack(core, "j2", 1)
    assert core.commit_index == 1
    # j1 acked before the commit advanced: it still needs the new commit index.
    assert core.has_work("j1")
    assert core.has_work("j3")


def test_closed_timestamp_from_committed_entries_and_confirmed_heartbeats():
    core = new_core()
    core.assign([leader_entry(100), txn(200)])
    assert core.closed() == (0, 0)  # nothing committed: no claim
    ack(core, "j1", 2)
    ack(core, "j2", 2)
    assert core.closed() == (200, 2)
    number = core.request_heartbeat(closed_ts=500)
    assert core.closed() == (200, 2)  # not confirmed yet
    ack(core, "j1", 2)
    assert not core.heartbeat_confirmed(number)
    ack(core, "j3", 2)
    assert core.heartbeat_confirmed(number)
    assert core.closed() == (500, 2)


def test_a_confirmed_heartbeat_claim_is_sent_at_once_and_then_work_stops():
    core = new_core()
    core.assign([leader_entry(100)])
    for name in REPLICAS:
        ack(core, name, 1)
    for name in REPLICAS:
        ack(core, name, 1)  # every replica now carries commit index 1 and closed (100, 1)
    assert not any(core.has_work(name) for name in REPLICAS)
    number = core.request_heartbeat(closed_ts=700)
    assert all(core.has_work(name) for name in REPLICAS)  # the heartbeat itself
    ack(core, "j1", 1)
    ack(core, "j2", 1)  # confirmed by these two acks: the claim becomes (700, 1)
    assert core.heartbeat_confirmed(number) and core.closed() == (700, 1)
    # j1 and j2 acked Appends that still carried (100, 1): they must hear the claim now,
    # not a heartbeat period later.
    assert core.has_work("j1") and core.has_work("j2") and core.has_work("j3")
    for name in REPLICAS:
        ack(core, name, 1)
    assert not any(core.has_work(name) for name in REPLICAS)


def test_claims_asked_for_faster_than_a_round_trip_are_confirmed_one_after_another():
    """Reads ask for closed time at every transaction; a claim asked for while another is being
    confirmed must not push that confirmation away (it would never come under steady demand)."""
    core = new_core()
    core.assign([leader_entry(100)])
    for name in REPLICAS:
        ack(core, name, 1)
    first = core.request_heartbeat(closed_ts=500)
    later = [core.request_heartbeat(closed_ts=ts) for ts in (600, 650, 700)]
    assert set(later) == {first + 1}, "every claim asked for meanwhile merges into the next heartbeat"
    ack(core, "j1", 1)
    ack(core, "j2", 1)
    assert core.heartbeat_confirmed(first) and core.closed() == (500, 1)
    assert not core.heartbeat_confirmed(first + 1)
    # The merged claim is the pending one now: the next acks confirm its highest closed_ts.
    ack(core, "j1", 1)
    ack(core, "j3", 1)
    assert core.heartbeat_confirmed(first + 1) and core.closed() == (700, 1)
    assert core.pending_heartbeat is None


def test_buffer_bounds_uncommitted_entries_and_evicts_committed_ones():
    core = new_core(buffer_max=3)
    core.assign([leader_entry(1), txn(2), txn(3)])
    with pytest.raises(BufferFull):
        core.assign([txn(4)])
    ack(core, "j1", 3)
    ack(core, "j2", 3)
    core.assign([txn(4), txn(5)])
    assert core.base_index == 2 and core.buffered(2) is None and core.buffered(3).ts == 3
    assert core.epoch_at(2) == 1  # the base entry's epoch stays known


def test_committed_entries_are_also_bounded_in_bytes():
    """Bulk batches are large entries: beyond committed_bytes_max the oldest committed ones go
    (a lagging replica reads them back from another), however few they are; uncommitted stay."""
    core = WriterCore(REPLICAS, "adj", 1, ReplicaTail("j1", 0, 0, 0, 1), 0, buffer_max=1000,
                      committed_bytes_max=25_000)
    big = [common_pb2.Entry(kind=common_pb2.ENTRY_TXN, ts=ts, txn_id=f"t{ts}",
                            writes=[common_pb2.Write(key=b"k", value=b"v" * 10_000)]) for ts in range(2, 7)]
    core.assign([leader_entry(1)] + big[:3])
    assert core.base_index == 0, "nothing is committed yet: nothing goes"
    ack(core, "j1", 4)
    ack(core, "j2", 4)
    core.assign(big[3:])
    assert core.buffer_bytes <= 25_000 + big[0].ByteSize() * 2
    assert core.base_index >= 2 and core.buffered(6).ts == 6 and core.buffered(5).ts == 5
    assert core.buffer_bytes == sum(entry.ByteSize() for entry in core.buffer)


# --- copy mode: a secondary region's replication agent (docs/REGIONS.md) -------------------------
def test_copy_mode_keeps_the_primarys_indexes_epochs_and_claims_and_commits_without_a_leader_entry():
    from journal.writer_core import ReplicaTail, WriterCore
    from quorumdb.pb import common_pb2
    replicas = ["a", "b", "c"]
    core = WriterCore(replicas, "agent", 3, ReplicaTail("a", 10, 7, 10, 1), 10, copy_mode=True)
    entries = [common_pb2.Entry(index=i, epoch=7, ts=100 + i, kind=common_pb2.ENTRY_TXN) for i in (11, 12)]
    core.assign_copied(entries)
    assert [core.buffered(i).epoch for i in (11, 12)] == [7, 7]  # the primary's epoch, not the agent's 3
    core.copy_closed(150, 12)
    plan = core.plan("b")
    assert plan.prev_index == 10 and plan.prev_epoch == 7
    assert core.on_ok("a", core.plan("a"), 12, 10) is False  # one replica is not a majority
    assert core.on_ok("b", plan, 12, 10) is True             # two: committed, no leader entry needed
    assert core.commit_index == 12
    assert core.closed() == (150, 12)
    import pytest
    with pytest.raises(AssertionError):  # copied entries must continue the log
        core.assign_copied([common_pb2.Entry(index=20, epoch=7, ts=300)])
