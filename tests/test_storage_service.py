"""Storage nodes in-process over real gRPC, fed by a fake journal follower.

Covers the shell: reads wait for the closed timestamp then answer (or fail UNAVAILABLE),
Get/Scan/ReadLog/Status replies, restart replay from the local log, and peer repair
when the journal has truncated past what a node needs.
"""
from __future__ import annotations

import asyncio
import contextlib

import grpc
import pytest

from journal.follower import FollowBatch
from quorumdb import aio, rpc
from quorumdb.pb import common_pb2, storage_pb2, storage_pb2_grpc
from storage_node.main import StorageNode
from tests.util import make_config

WAIT_S = 10.0


class FakeTruncated(Exception):
    def __init__(self, first_index: int):
        super().__init__(f"journal starts at {first_index}")
        self.first_index = first_index


class FakeJournal:
    """Committed entries [first_index, ...] and a heartbeat, shared by the fake followers."""

    def __init__(self) -> None:
        self.entries: dict[int, common_pb2.Entry] = {}
        self.first_index = 1
        self.last_index = 0
        self.closed = (0, 0)
        self.changed = asyncio.Event()

    def commit(self, ts: int, **writes: bytes | None) -> int:
        self.last_index += 1
        self.entries[self.last_index] = common_pb2.Entry(
            index=self.last_index, epoch=1, kind=common_pb2.ENTRY_TXN, ts=ts,
            writes=[common_pb2.Write(key=k.encode(), value=v or b"", tombstone=v is None) for k, v in writes.items()],
        )
        self._wake()
        return self.last_index

    def heartbeat(self, closed_ts: int) -> None:
        self.closed = (closed_ts, self.last_index)
        self._wake()

    def truncate_before(self, first_index: int) -> None:
        for index in range(self.first_index, first_index):
            self.entries.pop(index, None)
        self.first_index = first_index

    def _wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


class FakeFollower:
    def __init__(self, journal: FakeJournal):
        self.journal = journal

    async def batches(self, from_index: int, allow_skip: bool = False):
        journal = self.journal
        next_index = from_index
        while True:
            if next_index < journal.first_index:
                raise FakeTruncated(journal.first_index)
            changed = journal.changed
            entries = [journal.entries[i] for i in range(next_index, journal.last_index + 1)]
            next_index += len(entries)
            yield FollowBatch(entries, journal.last_index, journal.closed[0], journal.closed[1], 1, "adjudicator-az1")
            # aio.wait_event, not wait_for, which may drop the cancellation that stops this loop
            assert await aio.wait_event(changed, WAIT_S), f"no journal change within {WAIT_S} s"


class Running:
    def __init__(self, cluster, name: str, journal: FakeJournal):
        self.cluster = cluster
        self.node_config = cluster.node(name)
        self.journal = journal
        self.node: StorageNode | None = None
        self.stop = asyncio.Event()
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        self.stop = asyncio.Event()
        self.node = StorageNode(self.cluster, self.node_config,
                                follower_factory=lambda c, n, ch: FakeFollower(self.journal),
                                truncated_type=FakeTruncated)
        self.task = asyncio.create_task(self.node.run(self.stop))

    async def halt(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, WAIT_S)


@contextlib.asynccontextmanager
async def storage_nodes(cluster):
    """A FakeJournal, and start(name) -> (Running, stub) for the storage nodes of `cluster`; every
    node started is halted on the way out."""
    journal = FakeJournal()
    channels = rpc.Channels()
    nodes: list[Running] = []

    async def start(name: str) -> tuple[Running, storage_pb2_grpc.StorageStub]:
        running = Running(cluster, name, journal)
        await running.start()
        nodes.append(running)
        return running, storage_pb2_grpc.StorageStub(channels.get(cluster.node(name).address))

    try:
        yield journal, start
    finally:
        for running in nodes:
            if running.task is not None and not running.task.done():
                await running.halt()
        await channels.close()


@pytest.fixture
async def world(tmp_path):
    async with storage_nodes(make_config(tmp_path)) as (journal, start):
        yield journal, start


async def wait_applied(stub, index: int) -> common_pb2.NodeStatus:
    async def poll():
        while True:
            try:
                status = await stub.Status(common_pb2.StatusRequest(), timeout=1.0)
                if status.applied_index >= index:
                    return status
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.02)
    return await asyncio.wait_for(poll(), WAIT_S)


async def test_reads_wait_for_closed_ts_then_answer(world):
    journal, start = world
    journal.commit(100, a=b"a100", b=b"b100")
    journal.commit(200, a=b"a200", c=b"c200")
    journal.commit(300, b=None)
    _, stub = await start("storage-az1-a")
    status = await wait_applied(stub, 3)
    assert status.closed_ts == 300
    assert status.scl == 3

    reply = await stub.Get(storage_pb2.GetRequest(keys=[b"a", b"b", b"zz"], ts=250), timeout=3)
    assert [(v.key, v.found, v.value, v.version_ts) for v in reply.versions] == [
        (b"a", True, b"a200", 200), (b"b", True, b"b100", 100), (b"zz", False, b"", 0)]
    reply = await stub.Get(storage_pb2.GetRequest(keys=[b"b"], ts=300), timeout=3)
    assert (reply.versions[0].found, reply.versions[0].version_ts) == (False, 300), "tombstone: not found, its ts"

    # A read in the future of closed_ts waits; a heartbeat closes the time and it is served.
    pending = asyncio.ensure_future(stub.Get(storage_pb2.GetRequest(keys=[b"a"], ts=1_000, wait_ms=2_000), timeout=3))
    await asyncio.sleep(0.2)
    assert not pending.done(), "must wait: commits up to ts 1000 may still arrive"
    journal.commit(900, a=b"a900")
    journal.heartbeat(1_000)
    reply = await asyncio.wait_for(pending, WAIT_S)
    assert (reply.versions[0].value, reply.versions[0].version_ts) == (b"a900", 900)

    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.Get(storage_pb2.GetRequest(keys=[b"a"], ts=5_000, wait_ms=100), timeout=3)
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "storage node storage-az1-a not caught up to ts 5000" in failure.value.details()

    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.Get(storage_pb2.GetRequest(keys=[b"k"] * 1_001, ts=1), timeout=3)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_scan_pages_and_readlog(world):
    journal, start = world
    for i in range(10):
        journal.commit(100 + i, **{f"k{i}": f"v{i}".encode()})
    journal.commit(200, k3=None)
    _, stub = await start("storage-az1-a")
    await wait_applied(stub, 11)
    reply = await stub.Scan(storage_pb2.ScanRequest(start=b"k", ts=200, limit=4), timeout=3)
    assert [v.key for v in reply.versions] == [b"k0", b"k1", b"k2", b"k4"]
    assert reply.more
    reply = await stub.Scan(storage_pb2.ScanRequest(start=b"k5", end=b"k8", ts=200, limit=100), timeout=3)
    assert [(v.key, v.value) for v in reply.versions] == [(b"k5", b"v5"), (b"k6", b"v6"), (b"k7", b"v7")]
    assert not reply.more
    reply = await stub.Scan(storage_pb2.ScanRequest(start=b"", ts=150), timeout=3)
    assert len(reply.versions) == 10, "limit 0 means a full page; at ts 150 k3 is not deleted yet"

    log_reply = await stub.ReadLog(storage_pb2.ReadLogRequest(from_index=4, max_entries=3), timeout=3)
    assert [e.index for e in log_reply.entries] == [4, 5, 6]
    assert log_reply.entries[0] == journal.entries[4]
    assert (log_reply.first_index, log_reply.scl) == (1, 11)

    status = await stub.Status(common_pb2.StatusRequest(), timeout=3)
    assert (status.service, status.role, status.name, status.az) == ("storage", "segment", "storage-az1-a", "az1")
    assert (status.commit_index, status.leader, status.health) == (11, "adjudicator-az1", "ok")


async def test_restart_replays_the_local_log(world):
    journal, start = world
    for i in range(20):
        journal.commit(100 + i, **{f"k{i}": b"x"})
    running, stub = await start("storage-az1-a")
    await wait_applied(stub, 20)
    await running.halt()
    # The journal forgets everything: what the node knows after restart comes from its own log.
    journal.truncate_before(21)
    journal.commit(500, k0=b"new")
    await running.start()
    status = await wait_applied(stub, 21)
    assert status.first_index == 1
    reply = await stub.Get(storage_pb2.GetRequest(keys=[b"k0", b"k19"], ts=500), timeout=3)
    assert [(v.value, v.version_ts) for v in reply.versions] == [(b"new", 500), (b"x", 119)]
    assert running.node.state.segment.applied_index == 21


async def test_peer_repair_after_journal_truncation(world):
    journal, start = world
    for i in range(30):
        journal.commit(100 + i, **{f"k{i}": f"v{i}".encode()})
    _, stub_a = await start("storage-az1-a")
    await wait_applied(stub_a, 30)
    journal.truncate_before(26)  # storage-az1-b, new, needs [1, 26) from a peer
    journal.commit(900, k0=b"after")
    journal.heartbeat(1_000)
    running_b, stub_b = await start("storage-az1-b")
    status = await wait_applied(stub_b, 31)
    assert status.scl == 31
    reply = await stub_b.Scan(storage_pb2.ScanRequest(start=b"k", ts=1_000, limit=100), timeout=3)
    got = {v.key: v.value for v in reply.versions}
    assert len(got) == 30
    assert got[b"k0"] == b"after"
    assert got[b"k5"] == b"v5", "k5 was committed at index 6, only a peer held it"
    assert running_b.node.segment_log.first_index == 1, "repaired entries are in b's own log"


async def test_read_stream_batches_answers_and_waits_per_op(world):
    """The compute nodes' read path: ops in one message, each answered when its ts is closed."""
    journal, start = world
    journal.commit(100, a=b"a100")
    journal.commit(200, b=b"b200")
    _, stub = await start("storage-az1-a")
    await wait_applied(stub, 2)
    call = stub.ReadStream(timeout=10)
    await call.write(storage_pb2.ReadBatch(ops=[
        storage_pb2.ReadOp(id=1, get=storage_pb2.GetRequest(keys=[b"a", b"b"], ts=150)),
        storage_pb2.ReadOp(id=2, scan=storage_pb2.ScanRequest(start=b"", ts=200, limit=10)),
        storage_pb2.ReadOp(id=3, get=storage_pb2.GetRequest(keys=[b"a"], ts=1_000, wait_ms=2_000)),
        storage_pb2.ReadOp(id=4, get=storage_pb2.GetRequest(keys=[b"a"], ts=5_000, wait_ms=100)),
        storage_pb2.ReadOp(id=5, get=storage_pb2.GetRequest(keys=[b"k"] * 1_001, ts=1)),
        storage_pb2.ReadOp(id=6, scan=storage_pb2.ScanRequest(start=b"", ts=1, pushdown=b"{not json")),
    ]))
    first = await asyncio.wait_for(call.read(), WAIT_S)
    # Everything servable (or invalid) now comes back in ONE message; 3 and 4 wait for their ts.
    assert sorted(r.id for r in first.results) == [1, 2, 5, 6]
    results = {r.id: r for r in first.results}
    assert [(v.key, v.found, v.version_ts) for v in results[1].get.versions] == [(b"a", True, 100), (b"b", False, 0)]
    assert [v.key for v in results[2].scan.versions] == [b"a", b"b"]
    assert results[5].code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert results[6].code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    # Op 4's wait (100 ms) runs out first: UNAVAILABLE "not caught up", as the unary Get says.
    second = await asyncio.wait_for(call.read(), WAIT_S)
    assert [(r.id, r.code) for r in second.results] == [(4, grpc.StatusCode.UNAVAILABLE.value[0])]
    assert "not caught up to ts 5000" in second.results[0].message
    journal.commit(900, a=b"a900")
    journal.heartbeat(1_000)
    third = await asyncio.wait_for(call.read(), WAIT_S)
    assert [(r.id, r.code) for r in third.results] == [(3, 0)]
    assert (third.results[0].get.versions[0].value, third.results[0].get.versions[0].version_ts) == (b"a900", 900)
    await call.done_writing()
    assert await asyncio.wait_for(call.read(), WAIT_S) == grpc.aio.EOF
