"""The adjudicator node's role logic, in one process, over an in-memory fake journal.

The fake journal keeps the real contract's essentials: epochs fence older writers, an
append either commits or raises (Fenced / JournalUnavailable), followers get committed
entries in order with the closed timestamp. No ports, no files: the leader/standby
transitions, group commit, UNKNOWN/NOT_LEADER replies and rebuilds are tested quickly.
"""
from __future__ import annotations

import asyncio
import dataclasses

import pytest

from adjudicator.service import AdjudicatorNode, Role
from journal.writer import Fenced, JournalUnavailable
from quorumdb import limits, rpc
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

    async def take_over(self, timeout_s: float):
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
        self._check()
        if self.journal.append_gate is not None:
            await self.journal.append_gate.wait()
        self._check()
        stored = [self.journal.add(common_pb2.Entry(
            epoch=self.epoch, kind=e.kind, ts=e.ts, writes=e.writes, txn_id=e.txn_id, leader=self.name)) for e in entries]
        self.commit_index = stored[-1].index
        return stored

    async def heartbeat(self, closed_ts: int) -> None:
        self._check()
        assert closed_ts >= self.journal.closed_ts
        self.journal.closed_ts = closed_ts
        self.journal.changed.set()

    async def close(self) -> None:
        self.closed = True


@dataclasses.dataclass
class FakeBatch:
    entries: list
    commit_index: int
    closed_ts: int
    closed_index: int
    epoch: int
    leader: str
    skipped_to: int = 0


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
                yield FakeBatch(list(entries), len(self.journal.entries), self.journal.closed_ts,
                                len(self.journal.entries), self.journal.promised_epoch, self.journal.leader, skipped_to)
                skipped_to = 0
            self.journal.changed.clear()
            try:
                await asyncio.wait_for(self.journal.changed.wait(), 0.05)
            except TimeoutError:
                pass


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
            )

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


def commit_request(clock: Clock, *keys: bytes, start_ts: int | None = None, locks=(), txn_id="t"):
    return adjudicator_pb2.CommitRequest(
        start_ts=clock.now().latest if start_ts is None else start_ts,
        writes=[common_pb2.Write(key=k, value=b"v" + k) for k in keys],
        lock_keys=list(locks), txn_id=txn_id)


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
