"""Writer core, pipelined Appends (journal/writer_core.py "Pipelining"): several messages in flight
per replica, replies matched first in first out, a mismatch or a lost stream restarts the
pipeline once (generations), commit only with a quorum, the lease from each message's send time."""
from __future__ import annotations

from journal.core import AppendStatus, ReplicaCore
from journal.writer_core import ReplicaTail, WriterCore
from quorumdb.pb import common_pb2

REPLICAS = ["j1", "j2", "j3"]
DEPTH = 4


def txn(ts: int) -> common_pb2.Entry:
    return common_pb2.Entry(kind=common_pb2.ENTRY_TXN, ts=ts, txn_id=f"t{ts}")


def leader_entry(ts: int) -> common_pb2.Entry:
    return common_pb2.Entry(kind=common_pb2.ENTRY_LEADER, ts=ts, leader="adj")


def new_core(best=ReplicaTail("j1", 0, 0, 0, 1), epoch=1, depth=DEPTH, lease_ns=0, tails=()) -> WriterCore:
    return WriterCore(REPLICAS, "adj", epoch, best, 0, lease_ns=lease_ns, tails=tails,
                      depths={name: depth for name in REPLICAS})


def send(core: WriterCore, name: str, sent_earliest: int = 0):
    assert core.can_send(name)
    plan = core.plan(name)
    core.on_sent(name, plan, core.commit_index, core.closed(), sent_earliest)
    return plan


def test_in_flight_plans_advance_next_index_and_stop_duplicates():
    core = new_core()
    core.assign([leader_entry(1)])
    first = send(core, "j2")
    assert (first.from_index, first.to_index) == (1, 1)
    assert core.progress["j2"].next_index == 2
    assert not core.has_work("j2"), "everything is in flight: no duplicate empty message"
    assert not core.can_send("j2")
    core.assign([txn(2), txn(3)])
    assert core.can_send("j2"), "new entries go out at once, behind the first message"
    second = send(core, "j2")
    assert (second.prev_index, second.prev_epoch, second.from_index, second.to_index) == (1, 1, 2, 3)
    assert core.in_flight("j2") == 2 and not core.has_work("j2")
    number = core.request_heartbeat(closed_ts=10)
    assert core.can_send("j2"), "a newer heartbeat needs a message sent after it"
    third = send(core, "j2")
    assert third.heartbeat == number and third.from_index > third.to_index
    assert not core.has_work("j2")


def test_the_window_is_bounded_by_depth():
    core = new_core(depth=2)
    core.assign([leader_entry(1)])
    send(core, "j2")
    core.assign([txn(2)])
    send(core, "j2")
    core.assign([txn(3)])
    assert core.has_work("j2") and not core.can_send("j2")
    core.on_reply_ok("j2", 1)
    assert core.can_send("j2")


def test_depth_one_is_lockstep():
    core = new_core(depth=1)
    core.assign([leader_entry(1)])
    send(core, "j2")
    core.assign([txn(2)])
    assert not core.can_send("j2")
    core.on_reply_ok("j2", 1)
    plan = send(core, "j2")
    assert (plan.from_index, plan.to_index) == (2, 2)


def test_replies_are_matched_first_in_first_out_and_commit_needs_a_quorum():
    core = new_core()
    core.assign([leader_entry(1)])
    send(core, "j1", sent_earliest=100)
    send(core, "j2", sent_earliest=100)
    core.assign([txn(2)])
    send(core, "j1", sent_earliest=200)
    send(core, "j2", sent_earliest=200)
    assert not core.on_reply_ok("j1", 1)
    assert core.commit_index == 0, "one replica is not a quorum"
    assert core.on_reply_ok("j2", 1)
    assert core.commit_index == 1
    assert core.progress["j2"].match_index == 1 and core.in_flight("j2") == 1
    # Both carried commit index 0: the new commit index still has to go out.
    assert core.has_work("j1") and core.has_work("j3")
    core.on_reply_ok("j1", 2)
    assert core.commit_index == 1
    core.on_reply_ok("j2", 2)
    assert core.commit_index == 2


def test_lease_counts_from_the_send_time_of_the_acked_message():
    core = new_core(lease_ns=1000)
    core.assign([leader_entry(1)])
    for name in REPLICAS:
        send(core, name, sent_earliest=100)
    core.assign([txn(2)])
    for name in REPLICAS:
        send(core, name, sent_earliest=500)
    core.on_reply_ok("j1", 1, lease_granted=True)
    core.on_reply_ok("j2", 1, lease_granted=True)
    assert core.lease_until() == 1100, "from the first message's send, not the latest send"
    core.on_reply_ok("j1", 2, lease_granted=True)
    assert core.lease_until() == 1100
    core.on_reply_ok("j2", 2, lease_granted=True)
    assert core.lease_until() == 1500
    core.on_reply_ok("j3", 1, lease_granted=False)  # no grant: no lease from it
    assert core.progress["j3"].lease_from == 0


def test_a_mismatch_mid_window_restarts_the_pipeline_once():
    core = new_core(best=ReplicaTail("j1", 100, 1, 0, 1), epoch=2, depth=8)
    core.assign([leader_entry(50)])
    send(core, "j2")  # prev 100: the replica's log differs there
    for ts in (51, 52, 53):
        core.assign([txn(ts)])
        send(core, "j2")
    assert core.in_flight("j2") == 4 and core.progress["j2"].next_index == 105
    generation = core.progress["j2"].generation
    acted = core.on_reply_mismatch("j2", replica_last_index=200)
    assert acted is not None and acted.prev_index == 100
    assert core.progress["j2"].next_index == 100 and core.progress["j2"].generation == generation + 1
    # The rest of the window was planned past the mismatch: their MISMATCHes are ignored.
    for _ in range(3):
        assert core.on_reply_mismatch("j2", replica_last_index=200) is None
        assert core.progress["j2"].next_index == 100
    assert core.in_flight("j2") == 0 and core.progress["j2"].mismatches == 1
    # The next real mismatch (of the new generation) backs off further, exponentially.
    plan = core.plan("j2")
    assert plan.entries is None  # entry 100 is not buffered: fetched, lockstep
    core.on_sent("j2", plan.__class__(99, 1, [], 100, 99, plan.heartbeat, plan.generation), 0)
    assert not core.can_send("j2")
    assert core.on_reply_mismatch("j2", replica_last_index=200) is not None
    assert core.progress["j2"].next_index == 98


def test_an_old_generation_ok_still_raises_match_index():
    """Messages sent before a restart that were accepted: the replica holds that prefix."""
    core = new_core(best=ReplicaTail("j1", 0, 0, 0, 1), depth=8)
    core.assign([leader_entry(1)])
    send(core, "j2")
    core.assign([txn(2)])
    send(core, "j2")
    core.on_stream_failed("j2")  # say a reply timed out: both count as lost
    assert core.progress["j2"].next_index == 1 and core.in_flight("j2") == 0
    assert core.has_work("j2")
    send(core, "j2")
    assert core.in_flight("j2") == 1
    core.on_reply_ok("j2", 2)
    assert core.progress["j2"].match_index == 2 and core.progress["j2"].next_index == 3


def test_old_generation_ok_after_a_mismatch_counts():
    core = new_core(best=ReplicaTail("j1", 10, 1, 0, 1), epoch=2, depth=8)
    core.assign([leader_entry(50)])
    send(core, "j2")
    core.assign([txn(51)])
    send(core, "j2")
    assert core.on_reply_mismatch("j2", replica_last_index=10) is not None
    assert core.progress["j2"].next_index == 10
    # The second message fitted after all (say the replica restarted its log after its prev):
    core.on_reply_ok("j2", 12)
    assert core.progress["j2"].match_index == 12 and core.progress["j2"].next_index == 13


def test_a_failed_stream_resends_from_the_first_message_of_the_generation():
    # A lagging replica resumes after its own last entry: a failure must not send it back to 1.
    best = ReplicaTail("j1", 400, 1, 398, 1)
    core = new_core(best=best, epoch=2, tails=[best, ReplicaTail("j3", 390, 1, 390, 1)])
    core.assign([leader_entry(50)])
    assert core.progress["j3"].next_index == 391
    core.on_stream_failed("j3")  # nothing was in flight: nothing moves
    assert core.progress["j3"].next_index == 391
    core.progress["j3"].depth = 1
    plan = core.plan("j3")
    assert plan.entries is None  # 391.. are not buffered: fetch
    core.on_sent("j3", plan.__class__(390, 1, [], 391, 390, plan.heartbeat, plan.generation), 0)
    core.on_stream_failed("j3")
    assert core.progress["j3"].next_index == 391


def test_has_work_after_a_failure_resends_what_was_lost():
    core = new_core()
    core.assign([leader_entry(1)])
    for name in REPLICAS:
        send(core, name)
    core.on_reply_ok("j1", 1)
    core.on_reply_ok("j2", 1)
    assert core.commit_index == 1
    for name in ("j1", "j2"):
        send(core, name)  # carry commit index 1
    number = core.request_heartbeat(closed_ts=7)
    send(core, "j1")
    assert not core.has_work("j1")
    core.on_stream_failed("j1")  # the commit index and the heartbeat never arrived
    assert core.has_work("j1")
    plan = send(core, "j1")
    assert plan.heartbeat == number
    core.on_reply_ok("j1", 1)
    assert core.progress["j1"].acked_heartbeat == number and not core.has_work("j1")


def test_pipeline_against_a_real_replica_in_order():
    """Against ReplicaCore: a window of messages applied in order all fit, and commit follows."""
    replica = ReplicaCore([])
    core = new_core(depth=8)
    core.assign([leader_entry(1)])
    messages = []
    for ts in range(2, 7):
        messages.append((send(core, "j2"), core.commit_index))
        core.assign([txn(ts)])
    messages.append((send(core, "j2"), core.commit_index))
    assert core.in_flight("j2") == 6
    for plan, commit_sent in messages:
        result = replica.append(core.epoch, "adj", plan.prev_index, plan.prev_epoch, plan.entries, commit_sent, 0, 0)
        assert result.status is AppendStatus.OK
        core.on_reply_ok("j2", result.match_index)
    assert core.progress["j2"].match_index == 6 == replica.last_index
