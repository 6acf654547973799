"""The adjudicator node's role logic, in one process, over an in-memory fake journal.

The fake journal keeps the real contract's essentials: epochs fence older writers, an
append either commits or raises (Fenced / JournalUnavailable), followers get committed
entries in order with the closed timestamp. No ports, no files: the leader/standby
transitions, group commit, UNKNOWN/NOT_LEADER replies and rebuilds are tested quickly.
"""
from __future__ import annotations

import asyncio
import dataclasses
import itertools

import pytest

from adjudicator import election
from adjudicator.service import AdjudicatorNode, Role
from journal.follower import FollowBatch
from journal.writer import Fenced, JournalUnavailable
from quorumdb import aio, limits, rpc, runtime
from quorumdb.clock import Clock
from quorumdb.config import default_cluster
from quorumdb.pb import adjudicator_pb2, common_pb2

WAIT_S = 5.0


@dataclasses.dataclass
class FakeTakeOver:
    epoch: int
    leader_index: int
    last_ts: int


class FakeJournal:
    def __init__(self):
        self.entries: list[common_pb2.Entry] = []
        self.promised_epoch = 0
        self.leader = ""
        self.closed_ts = 0
        self.available = True
        self.append_gate: asyncio.Event | None = None  # set by a test to hold appends
        self.skip_to = 0  # followers starting below this index are told they skipped
        self.changed = asyncio.Event()
        self.reachable = True  # False: writers see 2 of 3 replicas unreachable
        self.fences = 0  # take-overs attempted (successful or not)
        self.claims: list[int] = []  # closed_ts of every heartbeat claim, in order

    @property
    def last_ts(self) -> int:
        return self.entries[-1].ts if self.entries else 0

    def add(self, entry: common_pb2.Entry) -> common_pb2.Entry:
        stored = common_pb2.Entry()
        stored.CopyFrom(entry)
        stored.index = len(self.entries) + 1
        assert stored.ts > self.last_ts, "journal entries are strictly increasing in ts"
        self.entries.append(stored)
        self.changed.set()
        return stored


class FakeWriter:
    def __init__(self, journal: FakeJournal, name: str, clock: Clock):
        self.journal, self.name, self.clock = journal, name, clock
        self.epoch = 0
        self.commit_index = 0
        self.closed = False
        self.pending: list[common_pb2.Entry] = []  # assigned, not yet in the journal

    @property
    def majority_reachable(self) -> bool:
        return self.journal.reachable

    @property
    def unreachable_replicas(self) -> list[str]:
        return [] if self.journal.reachable else ["journal-az2", "journal-az3"]

    async def take_over(self, timeout_s: float, known_epoch: int = 0, give_way: bool = False):
        self.journal.fences += 1
        if not self.journal.available:
            raise JournalUnavailable("no majority")
        self.journal.promised_epoch += 1
        self.epoch = self.journal.promised_epoch
        self.journal.leader = self.name
        ts = max(self.clock.now().latest, self.journal.last_ts + 1, self.journal.closed_ts + 1)
        entry = self.journal.add(common_pb2.Entry(epoch=self.epoch, kind=common_pb2.ENTRY_LEADER, ts=ts, leader=self.name))
        self.commit_index = entry.index
        return FakeTakeOver(self.epoch, entry.index, self.journal.last_ts)

    def _check(self) -> None:
        if self.journal.promised_epoch > self.epoch:
            raise Fenced(f"epoch {self.journal.promised_epoch} > {self.epoch}")
        if not self.journal.available:
            raise JournalUnavailable("no majority")

    async def append(self, entries):
        assigned = self.assign(entries)
        await self.wait_committed(assigned[-1].index, 10.0)
        return assigned

    def assign(self, entries):
        """The real writer's synchronous step: indexes given, nothing durable yet."""
        self._check()
        base = len(self.journal.entries) + len(self.pending)
        assigned = []
        for offset, entry in enumerate(entries):
            stamped = self._stamped(entry)
            stamped.index = base + offset + 1
            assigned.append(stamped)
        self.pending.extend(assigned)
        return assigned

    async def wait_committed(self, index: int, timeout_s: float) -> None:
        if self.journal.append_gate is not None:
            await self.journal.append_gate.wait()
        self._check()
        while self.pending and self.pending[0].index <= index:
            stored = self.journal.add(self.pending.pop(0))
            self.commit_index = stored.index

    def _stamped(self, entry: common_pb2.Entry) -> common_pb2.Entry:
        """The entry as the real writer stores it: every field kept, this writer's epoch and name."""
        stored = common_pb2.Entry()
        stored.CopyFrom(entry)
        stored.epoch = self.epoch
        stored.leader = self.name
        return stored

    async def heartbeat(self, closed_ts: int) -> None:
        self.request_heartbeat(closed_ts)

    def request_heartbeat(self, closed_ts: int) -> int:
        self._check()
        assert closed_ts >= self.journal.closed_ts
        self.journal.closed_ts = closed_ts
        self.journal.claims.append(closed_ts)
        self.journal.changed.set()
        return len(self.journal.claims)

    async def close(self) -> None:
        self.closed = True


class FakeFollower:
    def __init__(self, journal: FakeJournal):
        self.journal = journal

    async def batches(self, from_index: int, allow_skip: bool = False):
        next_index = from_index
        skipped_to = 0
        if next_index < self.journal.skip_to:
            assert allow_skip
            next_index = skipped_to = self.journal.skip_to
        sent_closed_ts = -1
        while True:
            entries = self.journal.entries[next_index - 1:]
            if entries or self.journal.closed_ts != sent_closed_ts:
                next_index += len(entries)
                sent_closed_ts = self.journal.closed_ts
                yield FollowBatch(list(entries), len(self.journal.entries), self.journal.closed_ts,
                                len(self.journal.entries), self.journal.promised_epoch, self.journal.leader, skipped_to)
                skipped_to = 0
            self.journal.changed.clear()
            await aio.wait_event(self.journal.changed, 0.05)  # never wait_for: see quorumdb/aio.py


class Harness:
    def __init__(self, tmp_path, **settings):
        settings.setdefault("failover_timeout_ms", 0)
        settings.setdefault("clock_error_ns", 100_000)
        self.cluster = default_cluster(tmp_path, **settings)
        self.journal = FakeJournal()
        self.clock = Clock(self.cluster.clock_error_ns)
        self.nodes: dict[str, AdjudicatorNode] = {}
        for node in self.cluster.adjudicators:
            self.nodes[node.name] = AdjudicatorNode(
                self.cluster, node, self.clock, rpc.Channels(),
                writer_factory=lambda cluster, name, channels, clock: FakeWriter(self.journal, name, clock),
                follower_factory=lambda cluster, subscriber, az, channels: FakeFollower(self.journal),
                journal_probe=self.probe,
            )

    async def probe(self) -> list[election.ReplicaView]:
        """The fake journal as 3 replicas' Status (none when it is unavailable)."""
        if not self.journal.available:
            return []
        j = self.journal
        return [election.ReplicaView(f"journal-{az}", j.promised_epoch, j.leader, j.closed_ts, len(j.entries))
                for az in ("az1", "az2", "az3")]

    async def start(self):
        for node in self.nodes.values():
            await node.start()

    async def close(self):
        for node in self.nodes.values():
            await node.close()


@pytest.fixture
async def harness(tmp_path):
    h = Harness(tmp_path)
    await h.start()
    yield h
    await h.close()


async def wait_for(predicate, what: str, timeout_s: float = WAIT_S):
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


_txn_numbers = itertools.count()


def commit_request(clock: Clock, *keys: bytes, start_ts: int | None = None, locks=(), txn_id="", retry=False):
    return adjudicator_pb2.CommitRequest(
        start_ts=clock.now().latest if start_ts is None else start_ts,
        writes=[common_pb2.Write(key=k, value=b"v" + k) for k in keys],
        lock_keys=list(locks), txn_id=txn_id or f"t{next(_txn_numbers)}", retry=retry)


async def test_leader_commits_detects_conflicts_and_standbys_redirect(harness):
    leader = harness.nodes["adjudicator-az1"]
    standby = harness.nodes["adjudicator-az2"]
    await wait_for(lambda: leader.role is Role.LEADER, "the initial leader")
    start_ts = harness.clock.now().latest
    first = await leader.commit(commit_request(harness.clock, b"x", start_ts=start_ts, txn_id="first"))
    assert first.outcome == adjudicator_pb2.COMMITTED and first.commit_ts > start_ts
    assert harness.clock.now().earliest > first.commit_ts, "replied before commit-wait ended"
    stored = harness.journal.entries[first.index - 1]
    assert stored.ts == first.commit_ts and stored.txn_id == "first" and stored.writes[0].value == b"vx"
    second = await leader.commit(commit_request(harness.clock, b"x", start_ts=start_ts, txn_id="second"))
    assert second.outcome == adjudicator_pb2.CONFLICT and second.conflict_key == b"x" and "OC000" in second.message
    await wait_for(lambda: standby.leader_seen == leader.node.name, "the standby to see the leader")
    redirected = await standby.commit(commit_request(harness.clock, b"y"))
    assert redirected.outcome == adjudicator_pb2.NOT_LEADER
    assert redirected.leader_hint == "adjudicator-az1"
    status = standby.status()
    assert status.role == "standby" and status.health == "ok" and status.leader == "adjudicator-az1"
    assert leader.status().role == "leader"


async def test_concurrent_commits_are_group_committed_with_increasing_timestamps(harness):
    leader = harness.nodes["adjudicator-az1"]
    await wait_for(lambda: leader.role is Role.LEADER, "the initial leader")
    gate = harness.journal.append_gate = asyncio.Event()
    tasks = [asyncio.create_task(leader.commit(commit_request(harness.clock, b"k%d" % i))) for i in range(50)]
    await asyncio.sleep(0.05)
    gate.set()
    replies = await asyncio.wait_for(asyncio.gather(*tasks), WAIT_S)
    assert all(r.outcome == adjudicator_pb2.COMMITTED for r in replies)
    by_index = sorted(replies, key=lambda r: r.index)
    assert [r.commit_ts for r in by_index] == sorted({r.commit_ts for r in replies}), "ts strictly increase with index"
    assert len({r.index for r in replies}) == 50


async def test_take_over_fences_the_old_leader_and_keeps_its_conflicts(harness):
    old, new = harness.nodes["adjudicator-az1"], harness.nodes["adjudicator-az2"]
    await wait_for(lambda: old.role is Role.LEADER, "the initial leader")
    start_ts = harness.clock.now().latest
    made_by_old = await old.commit(commit_request(harness.clock, b"shared", start_ts=start_ts))
    assert made_by_old.outcome == adjudicator_pb2.COMMITTED
    old_epoch = old.term.epoch
    epoch = await new.take_over("test")
    assert epoch > old_epoch and new.role is Role.LEADER
    after = await old.commit(commit_request(harness.clock, b"other"))
    assert after.outcome in (adjudicator_pb2.NOT_LEADER, adjudicator_pb2.UNKNOWN), after
    await wait_for(lambda: old.role is Role.STANDBY, "the old leader to step down")
    conflict = await new.commit(commit_request(harness.clock, b"shared", start_ts=start_ts))
    assert conflict.outcome == adjudicator_pb2.CONFLICT
    fresh = await new.commit(commit_request(harness.clock, b"shared"))
    assert fresh.outcome == adjudicator_pb2.COMMITTED and fresh.commit_ts > made_by_old.commit_ts
    # The old leader rebuilt from the journal: it sees both commits on "shared".
    await wait_for(lambda: old.checker.last_commit_ts(b"shared") == fresh.commit_ts, "the old leader to rebuild")
    redirected = await old.commit(commit_request(harness.clock, b"z"))
    assert redirected.outcome == adjudicator_pb2.NOT_LEADER and redirected.leader_hint == "adjudicator-az2"


async def test_unavailable_journal_gives_unknown_and_a_rebuilt_standby(harness):
    leader = harness.nodes["adjudicator-az1"]
    await wait_for(lambda: leader.role is Role.LEADER, "the initial leader")
    start_ts = harness.clock.now().latest
    durable = await leader.commit(commit_request(harness.clock, b"a", start_ts=start_ts))
    assert durable.outcome == adjudicator_pb2.COMMITTED
    harness.journal.available = False
    lost = await leader.commit(commit_request(harness.clock, b"b", start_ts=start_ts))
    assert lost.outcome == adjudicator_pb2.UNKNOWN
    await wait_for(lambda: leader.role is Role.STANDBY, "the leader to step down")
    harness.journal.available = True
    await leader.take_over("test")
    # The rebuilt table has "a" (durable) but not "b" (never reached the journal).
    assert leader.checker.last_commit_ts(b"a") == durable.commit_ts
    assert leader.checker.last_commit_ts(b"b") is None
    again = await leader.commit(commit_request(harness.clock, b"a", start_ts=start_ts))
    assert again.outcome == adjudicator_pb2.CONFLICT
    retry = await leader.commit(commit_request(harness.clock, b"b", start_ts=start_ts))
    assert retry.outcome == adjudicator_pb2.COMMITTED


async def test_fenced_in_flight_commits_are_unknown_and_queued_ones_not_leader(harness, monkeypatch):
    leader, other = harness.nodes["adjudicator-az1"], harness.nodes["adjudicator-az3"]
    await wait_for(lambda: leader.role is Role.LEADER, "the initial leader")
    monkeypatch.setattr(limits, "COMMIT_BATCH_MAX", 2)
    gate = harness.journal.append_gate = asyncio.Event()
    tasks = [asyncio.create_task(leader.commit(commit_request(harness.clock, b"q%d" % i))) for i in range(6)]
    await asyncio.sleep(0.05)  # first batch (2) is in the append; 4 are queued
    harness.journal.promised_epoch += 1  # someone else fenced the journal
    harness.journal.leader = other.node.name
    gate.set()
    replies = await asyncio.wait_for(asyncio.gather(*tasks), WAIT_S)
    outcomes = [r.outcome for r in replies]
    assert outcomes[:2] == [adjudicator_pb2.UNKNOWN] * 2, outcomes
    assert outcomes[2:] == [adjudicator_pb2.NOT_LEADER] * 4, outcomes
    assert leader.role is Role.STANDBY


async def test_full_queue_answers_overloaded(harness, monkeypatch):
    leader = harness.nodes["adjudicator-az1"]
    await wait_for(lambda: leader.role is Role.LEADER, "the initial leader")
    await leader.take_over("already leader")  # no-op while leading
    monkeypatch.setattr(limits, "COMMIT_QUEUE_MAX", 3)
    monkeypatch.setattr(limits, "COMMIT_BATCH_MAX", 1)
    # A new term picks up the smaller queue bound.
    await leader._step_down(leader.term, "test")
    await leader.take_over("test")
    gate = harness.journal.append_gate = asyncio.Event()
    tasks = [asyncio.create_task(leader.commit(commit_request(harness.clock, b"o0")))]
    await asyncio.sleep(0.05)  # o0 is now in the (held) append
    tasks += [asyncio.create_task(leader.commit(commit_request(harness.clock, b"o%d" % i))) for i in range(1, 6)]
    await asyncio.sleep(0.05)
    gate.set()
    replies = await asyncio.wait_for(asyncio.gather(*tasks), WAIT_S)
    outcomes = [r.outcome for r in replies]
    assert outcomes == [adjudicator_pb2.COMMITTED] * 4 + [adjudicator_pb2.UNAVAILABLE] * 2, outcomes
    assert all("overloaded" in r.message for r in replies if r.outcome == adjudicator_pb2.UNAVAILABLE)


async def test_standby_fails_over_when_the_leader_goes_silent(tmp_path):
    h = Harness(tmp_path, failover_timeout_ms=200, heartbeat_ms=10)
    await h.start()
    try:
        leader = h.nodes["adjudicator-az1"]
        await wait_for(lambda: leader.role is Role.LEADER, "the initial leader")
        await asyncio.sleep(0.5)
        assert [n.role for n in h.nodes.values()].count(Role.LEADER) == 1, "no failover while heartbeats flow"
        await leader.close()  # the leader dies
        # Both standbys may try (losing is fine); in the end the highest epoch leads alone.
        await wait_for(lambda: any(n.role is Role.LEADER for n in h.nodes.values()), "a standby to take over")
        await asyncio.sleep(0.3)
        leaders = [n for n in h.nodes.values() if n.role is Role.LEADER]
        assert len(leaders) == 1 and leaders[0] is not leader, [n.node.name for n in leaders]
        assert leaders[0].term.epoch == h.journal.promised_epoch >= 2
        reply = await leaders[0].commit(commit_request(h.clock, b"after"))
        assert reply.outcome == adjudicator_pb2.COMMITTED
    finally:
        await h.close()


async def test_skipped_journal_history_makes_older_transactions_too_old(tmp_path):
    h = Harness(tmp_path, initial_leader="adjudicator-az1")
    await h.start()
    try:
        leader = h.nodes["adjudicator-az1"]
        await wait_for(lambda: leader.role is Role.LEADER, "the initial leader")
        old_start_ts = h.clock.now().latest
        for i in range(5):
            assert (await leader.commit(commit_request(h.clock, b"s%d" % i))).outcome == adjudicator_pb2.COMMITTED
        h.journal.skip_to = 4  # entries 1..3 truncated away
        standby = h.nodes["adjudicator-az2"]
        standby.rebuild()
        await wait_for(lambda: standby.applied_index == len(h.journal.entries), "the standby to catch up")
        assert standby.checker.known_since_ts == h.journal.entries[3].ts
        await standby.take_over("test")
        reply = await standby.commit(commit_request(h.clock, b"fresh", start_ts=old_start_ts))
        assert reply.outcome == adjudicator_pb2.TOO_OLD
    finally:
        await h.close()


# --- retried commits (txn_id table) ---------------------------------------------------------


def entries_of(journal: FakeJournal, txn_id: str) -> list[common_pb2.Entry]:
    return [e for e in journal.entries if e.txn_id == txn_id]


async def test_resent_commit_is_answered_from_the_txn_table_not_committed_twice(harness):
    leader = harness.nodes["adjudicator-az1"]
    await wait_for(lambda: leader.role is Role.LEADER, "the initial leader")
    request = commit_request(harness.clock, b"once", txn_id="resent-1")
    first = await leader.commit(request)
    assert first.outcome == adjudicator_pb2.COMMITTED and not first.duplicate
    request.retry = True
    again = await leader.commit(request)
    assert again.outcome == adjudicator_pb2.COMMITTED and again.duplicate, again
    assert (again.commit_ts, again.index) == (first.commit_ts, first.index)
    assert len(entries_of(harness.journal, "resent-1")) == 1


async def test_resend_in_the_same_batch_waits_for_the_original(harness):
    leader = harness.nodes["adjudicator-az1"]
    await wait_for(lambda: leader.role is Role.LEADER, "the initial leader")
    gate = harness.journal.append_gate = asyncio.Event()
    blocker = asyncio.create_task(leader.commit(commit_request(harness.clock, b"blocker")))
    await asyncio.sleep(0.05)  # the blocker's batch is in the (held) append
    request = commit_request(harness.clock, b"twice", txn_id="same-batch")
    original = asyncio.create_task(leader.commit(request))
    resend = adjudicator_pb2.CommitRequest()
    resend.CopyFrom(request)
    resend.retry = True
    duplicate = asyncio.create_task(leader.commit(resend))
    await asyncio.sleep(0.05)  # both queued behind the held append: they share the next batch
    gate.set()
    replies = await asyncio.wait_for(asyncio.gather(blocker, original, duplicate), WAIT_S)
    assert [r.outcome for r in replies] == [adjudicator_pb2.COMMITTED] * 3, replies
    assert not replies[1].duplicate and replies[2].duplicate
    assert replies[1].commit_ts == replies[2].commit_ts and replies[1].index == replies[2].index
    assert len(entries_of(harness.journal, "same-batch")) == 1


async def test_new_leader_answers_resends_from_the_journal_and_decides_lost_ones_afresh(harness):
    """A commit durable under the old leader is a duplicate at the new one; one whose append
    never reached the journal is committed exactly once there; the old leader, fenced, never
    answers COMMITTED for what is not in the journal."""
    old, new = harness.nodes["adjudicator-az1"], harness.nodes["adjudicator-az2"]
    await wait_for(lambda: old.role is Role.LEADER, "the initial leader")
    durable_request = commit_request(harness.clock, b"durable", txn_id="durable")
    durable = await old.commit(durable_request)
    assert durable.outcome == adjudicator_pb2.COMMITTED
    lost_request = commit_request(harness.clock, b"lost", txn_id="lost")
    harness.journal.available = False
    lost = await old.commit(lost_request)
    assert lost.outcome == adjudicator_pb2.UNKNOWN  # the sender does not know; it resends
    harness.journal.available = True
    await new.take_over("test")
    durable_request.retry = lost_request.retry = True
    durable_again = await new.commit(durable_request)
    assert durable_again.outcome == adjudicator_pb2.COMMITTED and durable_again.duplicate
    assert durable_again.commit_ts == durable.commit_ts and durable_again.index == durable.index
    lost_again = await new.commit(lost_request)
    assert lost_again.outcome == adjudicator_pb2.COMMITTED and not lost_again.duplicate
    assert len(entries_of(harness.journal, "lost")) == 1
    # The fenced old leader (stepped down): it never says COMMITTED for the lost request.
    from_old = await old.commit(lost_request)
    assert from_old.outcome == adjudicator_pb2.NOT_LEADER
    third = await new.commit(lost_request)
    assert third.duplicate and third.index == lost_again.index
    assert len(entries_of(harness.journal, "lost")) == 1


async def test_fenced_leader_that_does_not_know_it_yet_answers_unknown_not_committed(harness):
    old, new = harness.nodes["adjudicator-az1"], harness.nodes["adjudicator-az3"]
    await wait_for(lambda: old.role is Role.LEADER, "the initial leader")
    harness.journal.promised_epoch += 1  # a rival fenced the journal; old has not appended since
    harness.journal.leader = new.node.name
    reply = await old.commit(commit_request(harness.clock, b"k", txn_id="to-fenced", retry=True))
    assert reply.outcome in (adjudicator_pb2.UNKNOWN, adjudicator_pb2.NOT_LEADER), reply
    assert entries_of(harness.journal, "to-fenced") == []


async def test_resend_older_than_the_known_history_is_unknown_not_refused(tmp_path):
    h = Harness(tmp_path)
    await h.start()
    try:
        leader = h.nodes["adjudicator-az1"]
        await wait_for(lambda: leader.role is Role.LEADER, "the initial leader")
        old_start_ts = h.clock.now().latest
        for i in range(4):
            assert (await leader.commit(commit_request(h.clock, b"h%d" % i))).outcome == adjudicator_pb2.COMMITTED
        h.journal.skip_to = 4  # entries 1..3 truncated away: their txn_ids are unknown to a rebuilt table
        standby = h.nodes["adjudicator-az2"]
        standby.rebuild()
        await wait_for(lambda: standby.applied_index == len(h.journal.entries), "the standby to catch up")
        await standby.take_over("test")
        reply = await standby.commit(commit_request(h.clock, b"maybe", start_ts=old_start_ts, retry=True))
        assert reply.outcome == adjudicator_pb2.UNKNOWN, reply
        fresh = await standby.commit(commit_request(h.clock, b"maybe", start_ts=old_start_ts))
        assert fresh.outcome == adjudicator_pb2.TOO_OLD  # a first send: refusing is safe
    finally:
        await h.close()


# --- journal majority lost -------------------------------------------------------------------


async def test_unreachable_journal_majority_refuses_commits_at_once_and_keeps_leading(harness):
    leader = harness.nodes["adjudicator-az1"]
    await wait_for(lambda: leader.role is Role.LEADER, "the initial leader")
    harness.journal.reachable = False
    started = asyncio.get_running_loop().time()
    reply = await leader.commit(commit_request(harness.clock, b"nope", txn_id="nope"))
    took_s = asyncio.get_running_loop().time() - started
    print(f"refused in {took_s * 1000:.1f} ms")
    assert reply.outcome == adjudicator_pb2.UNAVAILABLE, reply
    assert "journal unavailable: no majority of journal replicas (2 of 3 needed" in reply.message
    assert entries_of(harness.journal, "nope") == [] and leader.role is Role.LEADER
    harness.journal.reachable = True
    assert (await leader.commit(commit_request(harness.clock, b"nope", txn_id="nope"))).outcome == adjudicator_pb2.COMMITTED


# --- failover decisions ------------------------------------------------------------------------


async def test_starved_standby_does_not_depose_a_live_leader(tmp_path):
    h = Harness(tmp_path, failover_timeout_ms=200, heartbeat_ms=10)
    await h.start()
    try:
        leader, standby = h.nodes["adjudicator-az1"], h.nodes["adjudicator-az2"]
        await wait_for(lambda: leader.role is Role.LEADER, "the initial leader")
        fences = h.journal.fences
        for _ in range(5):  # the standby "slept" for a second: its own view says silence
            standby.last_progress_mono -= 1.0
            await asyncio.sleep(0.1)
        assert h.journal.fences == fences, "a standby fenced a live leader"
        assert leader.role is Role.LEADER and standby.role is Role.STANDBY
    finally:
        await h.close()


async def test_a_standby_does_not_depose_a_rival_that_fenced_while_it_asked_the_journal(tmp_path):
    """Two standbys time out on a dead leader; one fences first. The other asks the replicas
    meanwhile: they answer with the winner's epoch (which its stream delivered during the ask)
    and a closed timestamp still from the dead leader. It must give the winner a whole timeout,
    not fence over it (a spurious second failover)."""
    h = Harness(tmp_path, failover_timeout_ms=200, heartbeat_ms=10)
    leader, standby = h.nodes["adjudicator-az1"], h.nodes["adjudicator-az2"]
    await leader.start()
    await standby.start()  # adjudicator-az3 is the rival, played by the rigged probe below
    probes: list[int] = []  # the journal's take-over count at each of the standby's probes

    async def rival_fences_during_the_first_probe() -> list[election.ReplicaView]:
        probes.append(h.journal.fences)
        views = await h.probe()
        if len(probes) > 1:
            return views
        rival_epoch = h.journal.promised_epoch + 1
        standby._on_batch(FollowBatch([], 0, 0, 0, rival_epoch, "adjudicator-az3"))
        return [dataclasses.replace(view, promised_epoch=rival_epoch, leader="adjudicator-az3") for view in views]

    standby._journal_probe = rival_fences_during_the_first_probe
    try:
        await wait_for(lambda: leader.role is Role.LEADER, "the initial leader")
        await leader.close()  # the leader dies
        await wait_for(lambda: len(probes) >= 2 or standby.role is Role.LEADER,
                       "the standby to ask the journal again, or to take over", timeout_s=5.0)
        assert len(probes) >= 2 and probes[1] == probes[0], "the standby fenced over the rival that had just fenced"
        # The rival never shows life: a whole timeout later the standby takes over after all.
        await wait_for(lambda: standby.role is Role.LEADER, "the standby to take over from the silent rival")
    finally:
        await h.close()


async def test_restarted_initial_leader_joins_as_standby(tmp_path):
    h = Harness(tmp_path, failover_timeout_ms=200, heartbeat_ms=10)
    await h.start()
    try:
        first = h.nodes["adjudicator-az1"]
        await wait_for(lambda: first.role is Role.LEADER, "the initial leader")
        await first.close()  # it dies; a standby takes over
        await wait_for(lambda: any(n.role is Role.LEADER for n in h.nodes.values() if n is not first),
                       "a standby to take over")
        await asyncio.sleep(0.3)
        [leader] = [n for n in h.nodes.values() if n.role is Role.LEADER]
        epoch = leader.term.epoch
        again = AdjudicatorNode(
            h.cluster, h.cluster.node("adjudicator-az1"), h.clock, rpc.Channels(),
            writer_factory=lambda cluster, name, channels, clock: FakeWriter(h.journal, name, clock),
            follower_factory=lambda cluster, subscriber, az, channels: FakeFollower(h.journal),
            journal_probe=h.probe,
        )
        h.nodes["adjudicator-az1"] = again
        await again.start()
        await asyncio.sleep(0.6)  # well past the failover timeout
        assert again.role is Role.STANDBY and leader.role is Role.LEADER
        assert leader.term.epoch == epoch == h.journal.promised_epoch, "the restarted node fenced the journal"
        assert again.leader_seen == leader.node.name
    finally:
        await h.close()


async def test_initial_leader_leads_at_once_on_a_fresh_journal(tmp_path):
    h = Harness(tmp_path, failover_timeout_ms=200)
    await h.start()
    try:
        await wait_for(lambda: h.nodes["adjudicator-az1"].role is Role.LEADER, "the initial leader", timeout_s=1.0)
        assert h.journal.promised_epoch == 1
    finally:
        await h.close()


async def test_a_read_demand_is_closed_at_once_unless_a_claim_covers_it(harness):
    """A compute node's read at ts waits for a claim covering ts: the leader makes one when the
    demand arrives (not at its next periodic heartbeat), none when an earlier claim covers it,
    and while a batch is on its way to the journal it leaves the demand to the next batch or,
    when none comes, claims once the append is done. (Calls to note_read_demand are synchronous,
    so the claim list is compared around each without a periodic heartbeat slipping in.)"""
    leader = harness.nodes["adjudicator-az1"]
    await wait_for(lambda: leader.role is Role.LEADER, "the initial leader")
    claims = harness.journal.claims
    read_ts = harness.clock.now().latest
    leader.note_read_demand(read_ts)
    assert claims and claims[-1] >= read_ts, "claimed synchronously, when the demand arrived"
    count = len(claims)
    leader.note_read_demand(read_ts)  # covered by that claim
    assert len(claims) == count
    # A batch held in the journal append: a demand meanwhile waits for the append, then gets its
    # claim; the batch's commit_ts, decided before, stays below that claim.
    gate = harness.journal.append_gate = asyncio.Event()
    pending = asyncio.create_task(leader.commit(commit_request(harness.clock, b"held")))
    await wait_for(lambda: leader.term.appending, "the batch to be on its way")
    decided_ts = leader.term.claimed_ts
    later_ts = harness.clock.now().latest + 1
    count = len(claims)
    leader.note_read_demand(later_ts)
    assert len(claims) == count, "no heartbeat while a batch is being appended"
    gate.set()
    reply = await asyncio.wait_for(pending, WAIT_S)
    assert reply.outcome == adjudicator_pb2.COMMITTED and reply.commit_ts == decided_ts
    await wait_for(lambda: claims[-1] >= later_ts, "the claim after the append")
    assert claims[-1] > decided_ts
    after = await leader.commit(commit_request(harness.clock, b"after"))
    assert after.commit_ts > claims[-1], "a commit decided after a claim is above it"
    # Commits queued behind a demand cover it themselves: their commit_ts is decided later.
    gate = harness.journal.append_gate = asyncio.Event()
    first = asyncio.create_task(leader.commit(commit_request(harness.clock, b"q1")))
    await wait_for(lambda: leader.term.appending, "the next batch to be on its way")
    second = asyncio.create_task(leader.commit(commit_request(harness.clock, b"q2")))
    await wait_for(lambda: not leader.term.queue.empty(), "a commit to queue behind it")
    demand = harness.clock.now().latest
    count = len(claims)
    leader.note_read_demand(demand)
    assert len(claims) == count
    gate.set()
    replies = await asyncio.wait_for(asyncio.gather(first, second), WAIT_S)
    assert replies[1].commit_ts > demand, "the queued commit, decided after the demand, closes it"


async def test_a_private_keyspace_commit_travels_to_the_journal_and_no_conflict_table(harness):
    """The flag of a bulk batch reaches the journal entry, so standbys skip its keys as the leader
    does; an ordinary commit's keys are remembered by both."""
    leader = harness.nodes["adjudicator-az1"]
    standby = harness.nodes["adjudicator-az2"]
    await wait_for(lambda: leader.role is Role.LEADER, "the initial leader")
    request = commit_request(harness.clock, b"p1", b"p2", b"p3", txn_id="bulk:flush1")
    request.private_keyspace = True
    flushed = await leader.commit(request)
    assert flushed.outcome == adjudicator_pb2.COMMITTED
    assert harness.journal.entries[flushed.index - 1].private_keyspace
    ordinary = await leader.commit(commit_request(harness.clock, b"q", txn_id="plain"))
    assert not harness.journal.entries[ordinary.index - 1].private_keyspace
    assert leader.checker.last_commit_ts(b"p1") is None and leader.checker.last_commit_ts(b"q") == ordinary.commit_ts
    await wait_for(lambda: standby.checker.last_commit_ts(b"q") is not None, "the standby to apply the journal")
    assert standby.checker.last_commit_ts(b"p2") is None
    assert standby.checker.lookup("bulk:flush1") is not None, "a resend is still answered from the txn table"


def test_a_higher_epoch_restarts_a_standbys_silence_clock(tmp_path):
    """A new leader has fenced the journal but not yet appended anything committed: the standby
    must give it a whole failover timeout, not depose it for the silence of the leader it replaced."""
    h = Harness(tmp_path)
    standby = h.nodes["adjudicator-az3"]
    standby._on_batch(FollowBatch([], 0, 0, 0, 3, "adjudicator-az2"))
    standby.last_progress_mono -= 0.6  # the old leader died 0.6 s ago: nothing since
    silent_before = runtime.monotonic() - standby.last_progress_mono
    standby._on_batch(FollowBatch([], 0, 0, 0, 3, "adjudicator-az2"))  # the same state again: still silent
    assert runtime.monotonic() - standby.last_progress_mono >= silent_before
    standby._on_batch(FollowBatch([], 0, 0, 0, 4, "adjudicator-az1"))  # epoch 4: a new leader, no entries yet
    assert runtime.monotonic() - standby.last_progress_mono < 0.1
    assert (standby.leader_seen, standby.epoch_seen) == ("adjudicator-az1", 4)
