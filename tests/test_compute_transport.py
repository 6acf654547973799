"""StorageReader and AdjudicatorClient against fake in-process gRPC servers.

The fakes stand in for real storage and adjudicator nodes on the ports of a
cluster file, so quorum reads and commit routing are tested with real gRPC
failures (refused connections, deadlines, aborts) but without other services.
"""
from __future__ import annotations

import asyncio
import logging

import grpc
import pytest

from compute_node.cluster import adjudicator_client
from compute_node.cluster.adjudicator_client import AdjudicatorClient
from compute_node.cluster.storage_reader import StorageReader
from quorumdb import config as config_mod
from quorumdb import errors, limits, rpc
from quorumdb.pb import adjudicator_pb2, adjudicator_pb2_grpc, common_pb2, storage_pb2, storage_pb2_grpc
from tests.util import free_base_port


class FakeStorage(storage_pb2_grpc.StorageServicer):
    """Serves a fixed MVCC map {key: [(ts, value or None), ...]}; `mode` injects faults."""

    def __init__(self, data: dict[bytes, list[tuple[int, bytes | None]]]):
        self.data = data
        self.mode = "ok"  # ok | unavailable | hang
        self.calls = 0

    async def _fault(self, context):
        self.calls += 1
        if self.mode == "unavailable":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "not caught up")
        if self.mode == "hang":
            await asyncio.sleep(60)

    def _at(self, key: bytes, ts: int) -> tuple[int, bytes | None]:
        visible = [(vts, value) for vts, value in self.data.get(key, []) if vts <= ts]
        return max(visible, key=lambda item: item[0]) if visible else (0, None)

    async def Get(self, request, context):
        await self._fault(context)
        versions = []
        for key in request.keys:
            version_ts, value = self._at(key, request.ts)
            versions.append(storage_pb2.Version(key=key, value=value or b"", version_ts=version_ts, found=value is not None))
        return storage_pb2.GetReply(versions=versions)

    async def Scan(self, request, context):
        await self._fault(context)
        versions = []
        for key in sorted(self.data):
            if key < request.start or (request.end and key >= request.end):
                continue
            version_ts, value = self._at(key, request.ts)
            if value is None:
                continue
            if len(versions) == request.limit:
                return storage_pb2.ScanReply(versions=versions, more=True)
            versions.append(storage_pb2.Version(key=key, value=value, version_ts=version_ts, found=True))
        return storage_pb2.ScanReply(versions=versions, more=False)


    async def ReadStream(self, request_iterator, context):
        """The stream form: each op answered as the unary Get/Scan would (an abort is an error
        result), each as soon as it is done; `calls` counts ops, as it counts unary calls."""
        write_lock = asyncio.Lock()
        tasks = []

        async def answer(op):
            unary = _OpContext()
            try:
                if op.WhichOneof("op") == "get":
                    result = storage_pb2.ReadResult(id=op.id, get=await self.Get(op.get, unary))
                else:
                    result = storage_pb2.ReadResult(id=op.id, scan=await self.Scan(op.scan, unary))
            except _Aborted as aborted:
                result = storage_pb2.ReadResult(id=op.id, code=aborted.code.value[0], message=aborted.details)
            async with write_lock:
                await context.write(storage_pb2.ReadReplyBatch(results=[result]))

        try:
            async for batch in request_iterator:
                tasks += [asyncio.create_task(answer(op)) for op in batch.ops]
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()


class _Aborted(Exception):
    def __init__(self, code, details):
        super().__init__(details)
        self.code = code
        self.details = details


class _OpContext:
    """The part of a servicer context FakeStorage uses, for ops that arrive on a read stream."""

    async def abort(self, code, details):
        raise _Aborted(code, details)


class FakeAdjudicator(adjudicator_pb2_grpc.AdjudicatorServicer):
    def __init__(self, name: str):
        self.name = name
        # leader | follower | hang | crash_after_receive | conflict | unknown | unavailable
        self.mode = "leader"
        self.hint = ""
        self.message = ""
        self.calls = 0
        self.retry_flags: list[bool] = []  # CommitRequest.retry of each call
        self.read_signals = 0  # CommitBatch messages with reads_active set
        self.read_demand_ts = 0  # the highest read_demand_ts received

    async def CommitStream(self, request_iterator, context):
        """The stream form: each request of a batch is answered as Commit would, one reply batch per batch."""
        async def answer(requests):
            replies = []
            for request in requests:
                reply = await self.Commit(request, context)
                reply.seq = request.seq
                replies.append(reply)
            await context.write(adjudicator_pb2.CommitReplyBatch(replies=replies))

        tasks = []
        async for batch in request_iterator:
            self.read_signals += batch.reads_active
            self.read_demand_ts = max(self.read_demand_ts, batch.read_demand_ts)
            if batch.requests:
                tasks.append(asyncio.create_task(answer(list(batch.requests))))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    async def Commit(self, request, context):
        self.calls += 1
        self.retry_flags.append(request.retry)
        if self.mode == "follower":
            return adjudicator_pb2.CommitReply(outcome=adjudicator_pb2.NOT_LEADER, leader_hint=self.hint,
                                               message=self.message)
        if self.mode == "unavailable":
            return adjudicator_pb2.CommitReply(outcome=adjudicator_pb2.UNAVAILABLE, message=self.message)
        if self.mode == "hang":
            await asyncio.sleep(60)
        if self.mode == "crash_after_receive":
            await context.abort(grpc.StatusCode.INTERNAL, "connection reset")
        if self.mode == "conflict":
            return adjudicator_pb2.CommitReply(outcome=adjudicator_pb2.CONFLICT, conflict_key=request.writes[0].key)
        if self.mode == "unknown":
            return adjudicator_pb2.CommitReply(outcome=adjudicator_pb2.UNKNOWN, message="journal timeout")
        return adjudicator_pb2.CommitReply(outcome=adjudicator_pb2.COMMITTED, commit_ts=request.start_ts + 1,
                                           duplicate=request.retry)

    async def Status(self, request, context):
        role = "leader" if self.mode != "follower" else "standby"
        return common_pb2.NodeStatus(name=self.name, service="adjudicator", role=role, epoch=1, leader=self.hint)


class FakeCluster:
    def __init__(self, tmp_path):
        self.config = config_mod.default_cluster(tmp_path, base_port=free_base_port())
        self.servers: dict[str, grpc.aio.Server] = {}
        self.storages: dict[str, FakeStorage] = {}
        self.adjudicators: dict[str, FakeAdjudicator] = {}
        self.channels = rpc.Channels()

    async def start_storage(self, data) -> None:
        for node in self.config.storages:
            fake = FakeStorage(data)
            self.storages[node.name] = fake
            server = rpc.new_server()
            storage_pb2_grpc.add_StorageServicer_to_server(fake, server)
            await self._start(node, server)

    async def start_adjudicators(self, names=None) -> None:
        for node in self.config.adjudicators:
            fake = FakeAdjudicator(node.name)
            self.adjudicators[node.name] = fake
            if names is not None and node.name not in names:
                continue  # configured, but nothing listens: connection refused
            server = rpc.new_server()
            adjudicator_pb2_grpc.add_AdjudicatorServicer_to_server(fake, server)
            await self._start(node, server)

    async def _start(self, node, server) -> None:
        server.add_insecure_port(node.address)
        await server.start()
        self.servers[node.name] = server

    async def restart_storage(self, name: str) -> None:
        server = rpc.new_server()
        storage_pb2_grpc.add_StorageServicer_to_server(self.storages[name], server)
        await self._start(self.config.node(name), server)

    async def stop(self, name: str) -> None:
        await self.servers.pop(name).stop(grace=None)

    async def close(self) -> None:
        await self.channels.close()
        for server in self.servers.values():
            await server.stop(grace=None)


@pytest.fixture
async def fake(tmp_path):
    cluster = FakeCluster(tmp_path)
    yield cluster
    await cluster.close()


DATA = {
    b"k1": [(10, b"v1")],
    b"k2": [(10, b"old"), (20, b"new")],
    b"k3": [(10, b"x"), (30, None)],  # deleted at 30
}


# --- storage reads -----------------------------------------------------------------------


async def test_read_asks_three_copies_own_az_first(fake):
    await fake.start_storage(DATA)
    reader = StorageReader(fake.config, "az3", fake.channels)
    values = await reader.get_many([b"k1", b"k2", b"k3", b"missing"], ts=25)
    assert values == {b"k1": b"v1", b"k2": b"new", b"k3": b"x", b"missing": None}
    asked = sorted(name for name, s in fake.storages.items() if s.calls)
    assert len(asked) == 3
    assert "storage-az3-a" in asked and "storage-az3-b" in asked
    assert (await reader.get_many([b"k3"], ts=35)) == {b"k3": None}


async def test_read_survives_three_failed_copies(fake):
    await fake.start_storage(DATA)
    for name in ("storage-az1-a", "storage-az1-b"):
        fake.storages[name].mode = "unavailable"  # answering, but not caught up
    await fake.stop("storage-az2-a")  # refused
    reader = StorageReader(fake.config, "az1", fake.channels)
    assert (await reader.get_many([b"k2"], ts=25)) == {b"k2": b"new"}
    rows, more = await reader.scan(b"", None, ts=25, limit=10)
    assert rows == [(b"k1", b"v1"), (b"k2", b"new"), (b"k3", b"x")] and not more


async def read_refused_in_time(fake) -> errors.SqlError:
    """A read from az1 that no copy can answer: 57P03 within the read deadline."""
    reader = StorageReader(fake.config, "az1", fake.channels)
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(errors.SqlError) as raised:
        await reader.get_many([b"k1"], ts=25)
    assert raised.value.sqlstate == errors.CANNOT_CONNECT_NOW
    assert loop.time() - began < limits.READ_QUORUM_TIMEOUT_S
    return raised.value


async def test_read_without_quorum_fails_fast_with_57p03(fake):
    await fake.start_storage(DATA)
    for name in ("storage-az1-a", "storage-az2-a", "storage-az2-b"):
        await fake.stop(name)
    fake.storages["storage-az3-a"].mode = "unavailable"
    error = await read_refused_in_time(fake)
    assert "read quorum" in error.message


async def test_read_waits_briefly_for_a_copy_that_comes_back(fake):
    await fake.start_storage(DATA)
    for name in ("storage-az1-a", "storage-az1-b", "storage-az2-a", "storage-az2-b"):
        await fake.stop(name)
    reader = StorageReader(fake.config, "az1", fake.channels)

    async def come_back():
        await asyncio.sleep(0.2)
        await fake.restart_storage("storage-az2-b")

    comeback = asyncio.create_task(come_back())
    assert (await reader.get_many([b"k1"], ts=25)) == {b"k1": b"v1"}
    await comeback


async def test_hanging_copy_is_replaced_within_the_deadline(fake, monkeypatch):
    monkeypatch.setattr(limits, "STORAGE_READ_TIMEOUT_S", 0.5)
    await fake.start_storage(DATA)
    fake.storages["storage-az1-a"].mode = "hang"
    reader = StorageReader(fake.config, "az1", fake.channels)
    loop = asyncio.get_running_loop()
    began = loop.time()
    assert (await reader.get_many([b"k1"], ts=25)) == {b"k1": b"v1"}
    assert loop.time() - began < 2.0
    # The hung copy is now suspect: the next read does not wait for it.
    began = loop.time()
    assert (await reader.get_many([b"k1"], ts=25)) == {b"k1": b"v1"}
    assert loop.time() - began < 0.4


async def test_paused_copy_is_hedged_not_waited_for(fake):
    """A copy that hangs with the full 3 s deadline still costs a read only the hedge delay."""
    await fake.start_storage(DATA)
    fake.storages["storage-az1-b"].mode = "hang"
    reader = StorageReader(fake.config, "az1", fake.channels)
    loop = asyncio.get_running_loop()
    began = loop.time()
    assert (await reader.get_many([b"k1"], ts=25)) == {b"k1": b"v1"}  # this one meets the hung copy
    latencies_ms = [(loop.time() - began) * 1000]
    for _ in range(5):
        began = loop.time()
        assert (await reader.scan(b"k", b"l", ts=25, limit=10))[0] == [(b"k1", b"v1"), (b"k2", b"new"), (b"k3", b"x")]
        latencies_ms.append((loop.time() - began) * 1000)
    print(f"reads with a hung copy: {', '.join(f'{ms:.0f}' for ms in latencies_ms)} ms (hedges {reader.hedges})")
    assert reader.hedges >= 1
    assert max(latencies_ms) < limits.STORAGE_READ_TIMEOUT_S * 1000 / 2, "a read waited for the hung copy"
    assert fake.storages["storage-az1-b"].calls <= 2, "the hung copy stays suspect"


async def test_stale_copy_loses_and_disagreement_is_logged(fake, caplog):
    await fake.start_storage(DATA)
    stale = FakeStorage({b"k2": [(10, b"old")]})
    fake.storages["storage-az1-a"].data = stale.data
    reader = StorageReader(fake.config, "az1", fake.channels)
    with caplog.at_level(logging.WARNING, logger="compute_node.cluster.storage_reader"):
        assert (await reader.get_many([b"k2"], ts=25)) == {b"k2": b"new"}
    assert any("disagree" in record.message for record in caplog.records)


async def test_scan_pages_until_done(fake):
    data = {f"r{i:03d}".encode(): [(5, f"v{i}".encode())] for i in range(25)}
    await fake.start_storage(data)
    reader = StorageReader(fake.config, "az2", fake.channels)
    seen, start = [], b"r"
    for _ in range(10):
        rows, more = await reader.scan(start, b"s", ts=10, limit=10)
        assert len(rows) <= 10
        seen += rows
        if not more:
            break
        start = rows[-1][0] + b"\x00"
    assert [key for key, _ in seen] == sorted(data)


# --- commits -------------------------------------------------------------------------------


def reply(outcome, **fields):
    return adjudicator_pb2.CommitReply(outcome=outcome, **fields)


def test_outcome_mapping():
    assert adjudicator_client.outcome_error(reply(adjudicator_pb2.COMMITTED, commit_ts=5)) is None
    conflict = adjudicator_client.outcome_error(reply(adjudicator_pb2.CONFLICT, conflict_key=b"\x01"))
    assert conflict.sqlstate == "40001" and "OC000" in conflict.message
    schema = adjudicator_client.outcome_error(reply(adjudicator_pb2.CONFLICT, message="schema changed (OC001)"))
    assert schema.sqlstate == "40001" and "OC001" in schema.message
    too_old = adjudicator_client.outcome_error(reply(adjudicator_pb2.TOO_OLD))
    assert too_old.sqlstate == "40001" and "OC000" in too_old.message
    assert adjudicator_client.outcome_error(reply(adjudicator_pb2.UNAVAILABLE)).sqlstate == "57P03"
    assert adjudicator_client.outcome_error(reply(adjudicator_pb2.UNKNOWN)).sqlstate == "40003"
    assert adjudicator_client.outcome_error(reply(adjudicator_pb2.OUTCOME_UNSPECIFIED)).sqlstate == "40003"
    with pytest.raises(AssertionError):
        adjudicator_client.outcome_error(reply(adjudicator_pb2.NOT_LEADER))


def test_rpc_error_classification():
    classify = adjudicator_client.classify_rpc_error
    refused = "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Connection refused"
    assert classify(grpc.StatusCode.UNAVAILABLE, refused) == adjudicator_client.SendFailure.NOT_SENT
    assert classify(grpc.StatusCode.UNAVAILABLE, "Socket closed") == adjudicator_client.SendFailure.MAYBE_SENT
    assert classify(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") == adjudicator_client.SendFailure.MAYBE_SENT


def test_next_target_follows_usable_hints_only():
    state = adjudicator_client.RouteState(["a", "b", "c"])
    assert adjudicator_client.next_target(state, "c") == "c"
    state.asked_this_round.update({"a", "c"})
    assert adjudicator_client.next_target(state, "c") == "b"  # a stale hint is not followed twice
    assert adjudicator_client.next_target(state, "zzz") == "b"
    state.asked_this_round.add("b")
    assert adjudicator_client.next_target(state, None) is None


WRITES = [(b"k", b"v"), (b"gone", None)]


@pytest.fixture(params=["stream", "unary"])
def transport(request):
    """Each routing test runs over the commit stream (the default) and over unary Commit calls."""
    return request.param


def new_client(fake, transport: str) -> AdjudicatorClient:
    client = AdjudicatorClient(fake.config, fake.channels)
    client.unary = transport == "unary"
    return client


async def test_commit_follows_not_leader_hint_and_caches_leader(transport, fake):
    await fake.start_adjudicators()
    first = fake.adjudicators["adjudicator-az1"]
    first.mode, first.hint = "follower", "adjudicator-az3"
    fake.adjudicators["adjudicator-az2"].mode = "follower"
    client = new_client(fake, transport)
    assert await client.commit(100, WRITES, [], "t1") == 101
    assert client.leader == "adjudicator-az3"
    assert fake.adjudicators["adjudicator-az2"].calls == 0  # the hint went straight to az3
    assert await client.commit(200, WRITES, [], "t2") == 201
    assert first.calls == 1  # the cached leader is asked first now


async def test_commit_skips_refused_leader(transport, fake):
    await fake.start_adjudicators(names={"adjudicator-az2", "adjudicator-az3"})
    fake.adjudicators["adjudicator-az3"].mode = "follower"
    client = new_client(fake, transport)  # caches adjudicator-az1, which is down
    assert await client.commit(100, WRITES, [b"lock"], "t1") == 101
    assert client.leader == "adjudicator-az2"


async def test_commit_without_any_leader_is_unavailable_not_unknown(transport, fake, monkeypatch):
    monkeypatch.setattr(limits, "COMMIT_TIMEOUT_S", 0.6)
    await fake.start_adjudicators(names={"adjudicator-az2"})
    fake.adjudicators["adjudicator-az2"].mode = "follower"
    client = new_client(fake, transport)
    with pytest.raises(errors.SqlError) as raised:
        await client.commit(100, WRITES, [], "t1")
    assert raised.value.sqlstate == errors.CANNOT_CONNECT_NOW
    assert fake.adjudicators["adjudicator-az2"].calls >= 2  # it kept looking during the deadline


async def test_commit_waits_for_a_failover_to_finish(transport, fake):
    await fake.start_adjudicators()
    for adjudicator in fake.adjudicators.values():
        adjudicator.mode = "follower"
    client = new_client(fake, transport)

    async def elect():
        await asyncio.sleep(0.3)
        fake.adjudicators["adjudicator-az2"].mode = "leader"

    election = asyncio.create_task(elect())
    assert await client.commit(100, WRITES, [], "t1") == 101
    await election
    assert client.leader == "adjudicator-az2"


@pytest.mark.parametrize("mode", ["hang", "crash_after_receive", "unknown"])
async def test_commit_outcome_unknown_only_when_no_leader_answers_the_resends(transport, fake, monkeypatch, mode):
    monkeypatch.setattr(limits, "COMMIT_TIMEOUT_S", 0.8)
    monkeypatch.setattr(limits, "COMMIT_ATTEMPT_TIMEOUT_S", 0.3)
    await fake.start_adjudicators()
    fake.adjudicators["adjudicator-az1"].mode = mode
    for name in ("adjudicator-az2", "adjudicator-az3"):
        fake.adjudicators[name].mode = "follower"
        fake.adjudicators[name].hint = "adjudicator-az1"
    client = new_client(fake, transport)
    with pytest.raises(errors.SqlError) as raised:
        await client.commit(100, WRITES, [], "t1")
    assert raised.value.sqlstate == errors.STATEMENT_COMPLETION_UNKNOWN
    assert "resends" in raised.value.message
    flags = fake.adjudicators["adjudicator-az1"].retry_flags
    assert flags[0] is False and len(flags) >= 2 and all(flags[1:]), flags  # resent, flagged


@pytest.mark.parametrize("mode", ["hang", "crash_after_receive", "unknown"])
async def test_commit_with_unknown_outcome_is_resent_to_the_new_leader(transport, fake, monkeypatch, mode):
    monkeypatch.setattr(limits, "COMMIT_ATTEMPT_TIMEOUT_S", 0.3)
    await fake.start_adjudicators()
    fake.adjudicators["adjudicator-az1"].mode = mode
    client = new_client(fake, transport)
    assert await client.commit(100, WRITES, [], "t1") == 101
    assert fake.adjudicators["adjudicator-az2"].retry_flags == [True]  # the same request, flagged as a resend
    assert client.leader == "adjudicator-az2"


async def test_unavailable_journal_is_57p03_at_once_naming_the_cause(transport, fake):
    await fake.start_adjudicators()
    fake.adjudicators["adjudicator-az1"].mode = "unavailable"
    fake.adjudicators["adjudicator-az1"].message = (
        "journal unavailable: no majority of journal replicas (2 of 3 needed; unreachable: journal-az2, "
        "journal-az3); nothing was committed")
    client = new_client(fake, transport)
    with pytest.raises(errors.SqlError) as raised:
        await client.commit(100, WRITES, [], "t1")
    assert raised.value.sqlstate == errors.CANNOT_CONNECT_NOW
    assert raised.value.message.startswith("journal unavailable: no majority of journal replicas (2 of 3 needed")
    assert fake.adjudicators["adjudicator-az1"].calls == 1


async def test_no_leader_because_the_journal_is_down_says_so(transport, fake, monkeypatch):
    monkeypatch.setattr(limits, "COMMIT_TIMEOUT_S", 0.5)
    await fake.start_adjudicators()
    for adjudicator in fake.adjudicators.values():
        adjudicator.mode = "follower"
        adjudicator.message = (f"{adjudicator.name} is not the leader; no leader known: journal unavailable: "
                               "no majority of journal replicas (2 of 3 needed, 1 reachable)")
    client = new_client(fake, transport)
    with pytest.raises(errors.SqlError) as raised:
        await client.commit(100, WRITES, [], "t1")
    assert raised.value.sqlstate == errors.CANNOT_CONNECT_NOW
    assert "journal unavailable: no majority of journal replicas (2 of 3 needed" in raised.value.message
    assert all(flag is False for a in fake.adjudicators.values() for flag in a.retry_flags)


async def test_commit_conflict_is_40001(transport, fake):
    await fake.start_adjudicators()
    fake.adjudicators["adjudicator-az1"].mode = "conflict"
    client = new_client(fake, transport)
    with pytest.raises(errors.SqlError) as raised:
        await client.commit(100, WRITES, [], "t1")
    assert raised.value.sqlstate == "40001" and "OC000" in raised.value.message


async def test_find_leader_uses_status(transport, fake):
    await fake.start_adjudicators(names={"adjudicator-az2", "adjudicator-az3"})
    fake.adjudicators["adjudicator-az2"].mode = "follower"
    client = new_client(fake, transport)
    leader, why = await client.find_leader()
    assert leader == "adjudicator-az3" and why == ""
    fake.adjudicators["adjudicator-az3"].mode = "follower"
    leader, why = await client.find_leader()
    assert leader is None and "no adjudicator leads" in why


async def test_no_copy_caught_up_says_the_journal_is_not_advancing(fake):
    """All copies alive but none caught up: the error names the likely cause, not a dead storage tier."""
    await fake.start_storage(DATA)
    for storage in fake.storages.values():
        storage.mode = "unavailable"  # each answers UNAVAILABLE "not caught up"
    reader = StorageReader(fake.config, "az1", fake.channels)
    with pytest.raises(errors.SqlError) as raised:
        await reader.get_many([b"k1"], ts=25)
    assert raised.value.sqlstate == errors.CANNOT_CONNECT_NOW
    assert "journal" in raised.value.hint and "stale" in raised.value.hint


async def test_concurrent_reads_share_stream_messages(fake):
    """Reads of many sessions at once go to each copy as a few messages, not one call each."""
    await fake.start_storage(DATA)
    reader = StorageReader(fake.config, "az1", fake.channels)
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(reader.get_many([b"k1", b"k2"], ts=25) for _ in range(50))), 10)
        assert all(values == {b"k1": b"v1", b"k2": b"new"} for values in results)
        streams = [stream for stream in reader._streams.values() if stream.ops_sent]
        ops = sum(stream.ops_sent for stream in streams)
        # 50 reads x 3 copies; on a loaded machine a slow round also asks the other copies (hedges).
        assert 150 <= ops <= 300, ops
        assert sum(stream.batches_sent for stream in streams) < 50, [s.batches_sent for s in streams]
    finally:
        await reader.close()


async def test_a_broken_stream_fails_its_reads_and_the_next_read_reopens(fake):
    await fake.start_storage(DATA)
    reader = StorageReader(fake.config, "az1", fake.channels)
    try:
        assert await reader.get_many([b"k1"], ts=25, read_mode="single") == {b"k1": b"v1"}
        fake.storages["storage-az1-a"].mode = "hang"
        pending = asyncio.ensure_future(reader.get_many([b"k1"], ts=25, read_mode="single"))
        await asyncio.sleep(0.2)
        await fake.stop("storage-az1-a")  # the stream breaks under the hanging op: the hedge or the error wins
        assert await asyncio.wait_for(pending, 10) == {b"k1": b"v1"}
        fake.storages["storage-az1-a"].mode = "ok"
        await fake.restart_storage("storage-az1-a")
        # The copy is suspected for a while; asked directly, its stream opens again.
        stream = reader._streams["storage-az1-a"]
        sent = stream.batches_sent
        op = storage_pb2.ReadOp(get=storage_pb2.GetRequest(keys=[b"k2"], ts=25))
        reply = await asyncio.wait_for(stream.request(op), 10)
        assert [v.value for v in reply.versions] == [b"new"] and stream.batches_sent == sent + 1
    finally:
        await reader.close()
