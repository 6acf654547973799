"""Backtrack at the adjudicator: it takes the next commit_ts in commit order, and from then on no
transaction that started before it commits; standbys and a rebuilt checker hold the same floor
because they take it from the journal's ENTRY_BACKTRACK."""
from __future__ import annotations

from adjudicator.core import CommittedTxn, ConflictChecker, Outcome, TxnRequest
from adjudicator.service import Role
from compute_node.cluster.adjudicator_client import outcome_error
from quorumdb import errors
from quorumdb.pb import adjudicator_pb2, common_pb2
from tests.test_adjudicator_service import commit_request, harness, wait_for  # noqa: F401 - the fixture

NOW = 10_000_000


def test_backtrack_takes_the_next_commit_ts_and_refuses_older_start_ts():
    checker = ConflictChecker(txn_age_max_ns=1_000_000)
    before = TxnRequest(start_ts=NOW - 10, write_keys=(b"a",), txn_id="before")
    (committed, backtrack, refused, later, unrelated) = checker.decide_batch([
        TxnRequest(start_ts=NOW - 20, write_keys=(b"x",), txn_id="first"),
        TxnRequest(start_ts=0, write_keys=(), backtrack_to_ts=NOW - 500),
        before,
        TxnRequest(start_ts=NOW + 5, write_keys=(b"a",), txn_id="after"),
        TxnRequest(start_ts=NOW - 30, write_keys=(b"zz",), txn_id="old-other-key"),
    ], NOW)
    assert committed.outcome is Outcome.COMMITTED
    assert backtrack.outcome is Outcome.COMMITTED and backtrack.commit_ts > committed.commit_ts
    assert refused.outcome is Outcome.CONFLICT
    assert refused.message.startswith(errors.STARTED_BEFORE_BACKTRACK) and "OC000" in refused.message
    assert later.outcome is Outcome.COMMITTED and later.commit_ts > backtrack.commit_ts
    assert unrelated.outcome is Outcome.CONFLICT, "any key: the transaction read the undone state"
    assert checker.backtrack_floor_ts == backtrack.commit_ts
    # A retry of a commit made before the backtrack is still answered with its outcome.
    (duplicate,) = checker.decide_batch([TxnRequest(start_ts=NOW - 20, write_keys=(b"x",), txn_id="first",
                                                    retry=True)], NOW)
    assert duplicate.outcome is Outcome.DUPLICATE


def test_a_standby_rebuilds_the_floor_from_the_journal():
    standby = ConflictChecker(txn_age_max_ns=1_000_000)
    standby.apply_committed([
        CommittedTxn(NOW - 100, (b"k",), "t1", index=1),
        CommittedTxn(NOW - 50, (), index=2, backtrack_to_ts=NOW - 400),
        CommittedTxn(NOW - 40, (b"k",), "t2", index=3),
    ])
    assert standby.backtrack_floor_ts == NOW - 50
    (refused, fine) = standby.decide_batch([
        TxnRequest(start_ts=NOW - 60, write_keys=(b"other",), txn_id="t3"),
        TxnRequest(start_ts=NOW - 30, write_keys=(b"other",), txn_id="t4"),
    ], NOW)
    assert refused.outcome is Outcome.CONFLICT and "backtrack" in refused.message
    assert fine.outcome is Outcome.COMMITTED
    # Replayed again (resubscribe): idempotent, and an older backtrack never lowers the floor.
    standby.apply_committed([CommittedTxn(NOW - 50, (), index=2, backtrack_to_ts=NOW - 400)])
    assert standby.backtrack_floor_ts == NOW - 50


def test_the_client_gets_40001_naming_the_backtrack():
    reply = adjudicator_pb2.CommitReply(outcome=adjudicator_pb2.CONFLICT,
                                        message=errors.started_before_backtrack_message(1_796_000_000_000_000_000, 5))
    error = outcome_error(reply)
    assert error.sqlstate == "40001"
    assert "started before a backtrack of the database to 2026-" in error.message
    assert "retried" in error.message


async def test_backtrack_rpc_appends_an_entry_and_survives_failover(harness):  # noqa: F811 - the fixture
    leader = harness.nodes["adjudicator-az1"]
    standby = harness.nodes["adjudicator-az2"]
    await wait_for(lambda: leader.role is Role.LEADER, "the initial leader")
    await wait_for(lambda: standby.leader_seen == leader.node.name, "the standby to see the leader")
    old_start = harness.clock.now().latest
    before = await leader.commit(commit_request(harness.clock, b"k", start_ts=old_start))
    assert before.outcome == adjudicator_pb2.COMMITTED
    redirected = await standby.backtrack(adjudicator_pb2.BacktrackRequest(to_ts=before.commit_ts))
    assert redirected.outcome == adjudicator_pb2.NOT_LEADER and redirected.leader_hint == "adjudicator-az1"
    open_start = harness.clock.now().latest  # a transaction open across the backtrack
    reply = await leader.backtrack(adjudicator_pb2.BacktrackRequest(to_ts=before.commit_ts - 1))
    assert reply.outcome == adjudicator_pb2.COMMITTED and reply.ts > before.commit_ts
    assert harness.clock.now().earliest > reply.ts, "answered before the commit-wait ended"
    entry = harness.journal.entries[reply.index - 1]
    assert entry.kind == common_pb2.ENTRY_BACKTRACK and entry.ts == reply.ts
    assert entry.backtrack_to_ts == before.commit_ts - 1
    refused = await leader.commit(commit_request(harness.clock, b"other", start_ts=open_start))
    assert refused.outcome == adjudicator_pb2.CONFLICT and "backtrack" in refused.message
    # The standby has the floor from the journal: after a failover the rule still holds.
    await wait_for(lambda: standby.checker.backtrack_floor_ts == reply.ts, "the standby to apply the backtrack")
    await standby.take_over("test")
    refused_again = await standby.commit(commit_request(harness.clock, b"third", start_ts=open_start))
    assert refused_again.outcome == adjudicator_pb2.CONFLICT and "backtrack" in refused_again.message
    fresh = await standby.commit(commit_request(harness.clock, b"third"))
    assert fresh.outcome == adjudicator_pb2.COMMITTED
