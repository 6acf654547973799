"""Truncation paths with in-process replicas (segments of 10 entries so truncation happens quickly):
the follower's skip / JournalTruncated, and a replica that missed entries the others already dropped."""
from __future__ import annotations

import asyncio

import pytest

from journal.core import ReplicaCore
from journal.follower import JournalFollower, JournalTruncated
from journal.service import JournalService
from journal.store import JournalStore
from journal.writer import JournalWriter
from quorumdb import rpc
from quorumdb.clock import Clock
from quorumdb.pb import common_pb2, journal_pb2, journal_pb2_grpc
from tests.util import make_config

SEGMENT = 10


class Replica:
    def __init__(self, cluster, name: str):
        self.cluster = cluster
        self.node = cluster.node(name)
        self.server = None
        self.service = None

    async def start(self) -> None:
        store = JournalStore(self.cluster.node_data_dir(self.node.name) / "journal", segment_entries=SEGMENT)
        meta, entries = store.open()
        core = ReplicaCore([n.name for n in self.cluster.storages], meta, entries, segment_entries=SEGMENT)
        self.service = JournalService(self.node.name, self.node.az, core, store)
        self.server = rpc.new_server()
        journal_pb2_grpc.add_JournalServicer_to_server(self.service, self.server)
        self.server.add_insecure_port(self.node.address)
        await self.server.start()

    async def stop(self) -> None:
        if self.server is not None:
            self.service.close()
            await self.server.stop(0)
            self.server = None


@pytest.fixture
async def setup(tmp_path):
    cluster = make_config(tmp_path)
    replicas = {n.name: Replica(cluster, n.name) for n in cluster.journals}
    channels = rpc.Channels()
    yield cluster, replicas, channels
    for replica in replicas.values():
        await replica.stop()
    await channels.close()


async def report_scl(cluster, channels, replica: str, scl: int) -> journal_pb2.ReportSclReply:
    stub = journal_pb2_grpc.JournalStub(channels.get(cluster.node(replica).address))
    reply = None
    for storage in cluster.storages:
        reply = await stub.ReportScl(journal_pb2.ReportSclRequest(node=storage.name, scl=scl), timeout=5, wait_for_ready=True)
    return reply


async def append_txns(writer: JournalWriter, n: int) -> None:
    ts = writer.last_ts
    batch = []
    for i in range(n):
        ts = max(ts + 1, writer.clock.now().latest)
        batch.append(common_pb2.Entry(kind=common_pb2.ENTRY_TXN, ts=ts, txn_id=f"t{ts}"))
    await asyncio.wait_for(writer.append(batch), 10)


async def test_follower_skips_or_raises_after_truncation(setup):
    cluster, replicas, channels = setup
    for replica in replicas.values():
        await replica.start()
    writer = JournalWriter(cluster, "adjudicator-az1", channels, Clock())
    try:
        await asyncio.wait_for(writer.take_over(5), 10)
        await append_txns(writer, 49)
        await writer.heartbeat(writer.clock.now().earliest)
        for name in replicas:
            reply = await report_scl(cluster, channels, name, 40)
            assert (reply.durable_index, reply.first_index) == (40, 41)
        follower = JournalFollower(cluster, "tester", prefer_az="az1", channels=channels)
        with pytest.raises(JournalTruncated) as raised:
            async for _ in follower.batches(from_index=5):
                pass
        assert raised.value.first_index == 41
        indexes: list[int] = []
        skipped = []
        async for batch in follower.batches(from_index=5, allow_skip=True):
            if batch.skipped_to:
                skipped.append(batch.skipped_to)
            indexes += [e.index for e in batch.entries]
            if indexes and indexes[-1] == 50:
                break
        assert skipped == [41]
        assert indexes == list(range(41, 51))
    finally:
        await writer.close()


async def test_replica_that_missed_truncated_entries_rejoins(setup):
    cluster, replicas, channels = setup
    j1, j2, j3 = (replicas[n.name] for n in cluster.journals)
    await j1.start()
    await j2.start()
    first = JournalWriter(cluster, "adjudicator-az1", channels, Clock())
    try:
        await asyncio.wait_for(first.take_over(5), 10)
        await append_txns(first, 50)  # j3 is down for all of it
        await first.heartbeat(first.clock.now().earliest)
        # The heartbeat may be granted under the writer's lease with no round trip, and a replica
        # drops only what it knows is committed: wait until both have heard index 50.
        deadline = asyncio.get_running_loop().time() + 10.0
        while any(r.service.core.commit_index < 50 for r in (j1, j2)):
            assert asyncio.get_running_loop().time() < deadline, "the replicas never heard the commit index"
            await asyncio.sleep(0.01)
    finally:
        await first.close()
    for replica in (j1, j2):
        await report_scl(cluster, channels, replica.node.name, 40)
        assert replica.service.core.first_index == 41
    await j3.start()
    await report_scl(cluster, channels, j3.node.name, 40)  # storage reports to every replica
    second = JournalWriter(cluster, "adjudicator-az2", channels, Clock())
    try:
        result = await asyncio.wait_for(second.take_over(5), 10)
        assert result.leader_index == 52
        for _ in range(100):
            if j3.service.core.commit_index == 52:
                break
            await asyncio.sleep(0.05)
        core3 = j3.service.core
        assert (core3.first_index, core3.last_index, core3.commit_index) == (41, 52, 52)
        core1 = j1.service.core
        assert [e.ts for e in core3.read(41, 100)] == [e.ts for e in core1.read(41, 100)]
    finally:
        await second.close()
