"""Journal replicas as real processes (3 journal nodes only); writer and follower in the test process."""
from __future__ import annotations

import asyncio
import time

import pytest

from journal.follower import JournalFollower
from journal.writer import Fenced, JournalUnavailable, JournalWriter
from quorumdb import limits, rpc
from quorumdb.clock import Clock
from tools.launcher import Cluster, node_status
from quorumdb.pb import common_pb2, journal_pb2, journal_pb2_grpc
from tests.conftest import running_nodes
from tests.util import make_config, node_credentials

pytestmark = pytest.mark.cluster

J1, J2, J3 = "journal-az1", "journal-az2", "journal-az3"
READY_S = 60.0


@pytest.fixture
def journals(tmp_path, request):
    cluster = Cluster(make_config(tmp_path))
    with running_nodes(cluster, [n.name for n in cluster.config.journals], request, READY_S):
        yield cluster


@pytest.fixture
async def channels(journals):
    # The test writes as the adjudicator leader would: with its certificate (only it may fence and append).
    channels = rpc.Channels(credentials=node_credentials(journals.config, "adjudicator-az1"))
    yield channels
    await channels.close()


class Txns:
    """Makes ENTRY_TXN entries with increasing ts and remembers which were acknowledged."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self.last_ts = 0
        self.acknowledged: list[str] = []
        self.count = 0

    def make(self, n: int) -> list[common_pb2.Entry]:
        out = []
        for _ in range(n):
            self.count += 1
            self.last_ts = max(self.last_ts + 1, self.clock.now().latest)
            out.append(common_pb2.Entry(kind=common_pb2.ENTRY_TXN, ts=self.last_ts, txn_id=f"txn-{self.count}",
                                        writes=[common_pb2.Write(key=b"k%d" % self.count, value=b"v")]))
        return out

    async def append(self, writer: JournalWriter, n: int) -> list[common_pb2.Entry]:
        committed = await asyncio.wait_for(writer.append(self.make(n)), limits.JOURNAL_COMMIT_TIMEOUT_S + 5)
        self.acknowledged += [e.txn_id for e in committed]
        return committed


async def new_writer(cluster, channels, name="adjudicator-az1") -> JournalWriter:
    writer = JournalWriter(cluster.config, name, channels, Clock())
    await asyncio.wait_for(writer.take_over(timeout_s=10), 15)
    return writer


async def read_log(cluster, channels, replica: str) -> list[common_pb2.Entry]:
    stub = journal_pb2_grpc.JournalStub(channels.get(cluster.config.node(replica).address))
    out: list[common_pb2.Entry] = []
    next_index = 1
    for _ in range(1000):
        reply = await stub.ReadEntries(journal_pb2.ReadEntriesRequest(from_index=next_index), timeout=5)
        if not reply.entries:
            return out
        out += reply.entries
        next_index = reply.entries[-1].index + 1
    raise AssertionError("log longer than expected")


async def wait_for_status(cluster, name: str, predicate, timeout_s: float = 20.0):
    deadline = time.monotonic() + timeout_s
    status = None
    while time.monotonic() < deadline:
        status = await asyncio.to_thread(node_status, cluster.config.node(name), 2.0)
        if status is not None and predicate(status):
            return status
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name} never reached the expected state; last status: {status}")


async def test_appends_commit_with_one_replica_killed(journals, channels):
    writer = await new_writer(journals, channels)
    txns = Txns(writer.clock)
    try:
        first = await txns.append(writer, 10)
        assert [e.index for e in first] == list(range(2, 12))  # index 1 is the leader entry
        journals.kill(J3)
        started = time.monotonic()
        for _ in range(5):
            await txns.append(writer, 20)
        assert time.monotonic() - started < limits.JOURNAL_COMMIT_TIMEOUT_S, "a dead replica slowed commits"
        assert writer.commit_index == writer.last_index == 111
        # Concurrent callers: indexes follow call order, each caller gets its own consecutive run.
        batches = [txns.make(3) for _ in range(20)]
        results = await asyncio.wait_for(asyncio.gather(*(writer.append(b) for b in batches)), 15)
        assert [e.index for r in results for e in r] == list(range(112, 172))
        assert [e.txn_id for r in results for e in r] == [e.txn_id for b in batches for e in b]
        for name in (J1, J2):
            status = await wait_for_status(journals, name, lambda s: s.commit_index == 171)
            assert status.last_index == 171 and status.epoch == writer.epoch
    finally:
        await writer.close()


async def test_two_replicas_killed_append_is_unavailable_within_deadline(journals, channels):
    writer = await new_writer(journals, channels)
    txns = Txns(writer.clock)
    try:
        await txns.append(writer, 3)
        journals.kill(J2)
        journals.kill(J3)
        started = time.monotonic()
        with pytest.raises(JournalUnavailable):
            await asyncio.wait_for(writer.append(txns.make(1)), limits.JOURNAL_COMMIT_TIMEOUT_S + 5)
        elapsed = time.monotonic() - started
        assert elapsed < limits.JOURNAL_COMMIT_TIMEOUT_S + 1, f"took {elapsed:.1f} s"
    finally:
        await writer.close()


async def test_second_writer_fences_the_first_and_committed_entries_survive(journals, channels):
    first = await new_writer(journals, channels, "adjudicator-az1")
    txns = Txns(first.clock)
    try:
        await txns.append(first, 25)
        # An uncommitted-looking burst in flight when the rival takes over.
        journals.kill(J3)
        await txns.append(first, 5)
        second_channels = rpc.Channels(credentials=node_credentials(journals.config, "adjudicator-az2"))
        second = JournalWriter(journals.config, "adjudicator-az2", second_channels, Clock())
        try:
            result = await asyncio.wait_for(second.take_over(timeout_s=10), 15)
            assert result.epoch > first.epoch
            assert result.leader_index == first.last_index + 1
            assert result.last_ts > txns.last_ts
            with pytest.raises(Fenced):
                await asyncio.wait_for(first.append(txns.make(1)), limits.JOURNAL_COMMIT_TIMEOUT_S + 5)
            assert not first.is_leader and second.is_leader
            txns.last_ts = result.last_ts
            await txns.append(second, 5)
        finally:
            await second.close()
            await second_channels.close()
        for name in (J1, J2):
            held = {e.txn_id for e in await read_log(journals, channels, name)}
            missing = [t for t in txns.acknowledged if t not in held]
            assert not missing, f"{name} lost acknowledged entries {missing[:5]}"
    finally:
        await first.close()


async def test_killed_replica_restarts_with_its_log_and_is_caught_up(journals, channels):
    writer = await new_writer(journals, channels)
    txns = Txns(writer.clock)
    try:
        await txns.append(writer, 10)
        await wait_for_status(journals, J3, lambda s: s.last_index == 11)
        journals.kill(J3)
        for _ in range(4):
            await txns.append(writer, 50)
        journals.restart(J3)
        journals.wait_ready([J3], timeout_s=READY_S)
        await writer.heartbeat(writer.clock.now().earliest)  # nothing new to send: the heartbeat brings it back
        status = await wait_for_status(journals, J3, lambda s: s.commit_index == writer.last_index)
        assert status.last_index == 211
        log_j3 = await read_log(journals, channels, J3)
        assert [e.index for e in log_j3] == list(range(1, 212))
        assert [e.txn_id for e in log_j3 if e.kind == common_pb2.ENTRY_TXN] == txns.acknowledged
    finally:
        await writer.close()


async def test_follower_switches_replica_when_its_replica_dies(journals, channels):
    writer = await new_writer(journals, channels)
    txns = Txns(writer.clock)
    follower = JournalFollower(journals.config, "test-follower", prefer_az="az1", channels=channels)
    received: list[common_pb2.Entry] = []
    closed_seen: list[tuple[int, int]] = []

    async def follow():
        async for batch in follower.batches(from_index=1):
            received.extend(batch.entries)
            closed_seen.append((batch.closed_ts, batch.closed_index))

    task = asyncio.create_task(follow())
    try:
        await txns.append(writer, 10)
        await wait_until(lambda: len(received) >= 11, 10)
        assert follower.current_replica == J1
        journals.kill(J1)
        for _ in range(3):
            await txns.append(writer, 10)
        await writer.heartbeat(writer.clock.now().earliest)
        await wait_until(lambda: len(received) >= 41, 20)
        assert follower.current_replica != J1
        assert [e.index for e in received] == list(range(1, 42)), "entries skipped or duplicated"
        # Heartbeats reach followers: a closed timestamp at least the last commit's ts.
        heartbeat_ts = writer.clock.now().earliest
        await writer.heartbeat(heartbeat_ts)
        await writer.heartbeat(heartbeat_ts + 1)  # carries the confirmed first claim
        await wait_until(lambda: closed_seen and closed_seen[-1][0] >= heartbeat_ts, 10)
        assert closed_seen[-1][1] == 41
        assert closed_seen == sorted(closed_seen), "closed timestamp went backwards"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await writer.close()


async def test_full_restart_keeps_the_log(journals, channels):
    writer = await new_writer(journals, channels)
    txns = Txns(writer.clock)
    try:
        for _ in range(3):
            await txns.append(writer, 30)
    finally:
        await writer.close()
    for name in (J1, J2, J3):
        journals.kill(name)
    names = [J1, J2, J3]
    journals.start(names)
    journals.wait_ready(names, timeout_s=READY_S)
    second = await new_writer(journals, channels, "adjudicator-az2")
    try:
        assert second.commit_index == 92  # 1 + 90 + its own leader entry
        follower = JournalFollower(journals.config, "after-restart", prefer_az="az2", channels=channels)
        txn_ids: list[str] = []

        async def follow():
            async for batch in follower.batches(from_index=1):
                txn_ids.extend(e.txn_id for e in batch.entries if e.kind == common_pb2.ENTRY_TXN)
                if batch.commit_index >= 92 and len(txn_ids) >= 90:
                    return

        await asyncio.wait_for(follow(), 15)
        assert txn_ids == txns.acknowledged
    finally:
        await second.close()


async def wait_until(predicate, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)
