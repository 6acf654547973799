"""Partition guards without interceptors: what a node channel and a node server do per call.

Story. A node's calls to another node are checked against the partition rules on every call,
and a node's server refuses a cut peer and ends that peer's streams when the link is cut
(tests/test_netfault.py checks the observable behaviour end to end). This file checks how:
no gRPC interceptor on either side (they cost a task per client call and an async chain per
server call), the generated servicers' registered methods guarded too (grpc.aio looks them
up before any generic handler), a refused call that fails the way a failed call does at every
call-site pattern QuorumDB uses, and a guarded server stream that runs with a fixed number of
tasks however many messages it sends.

Everything runs in one process on 127.0.0.1: a server playing SERVER and channels playing
CLIENT, each with its own PartitionState, changed with `apply` (no rules file, no watcher).
"""
from __future__ import annotations

import asyncio

import grpc
import pytest

from quorumdb import config as config_mod
from quorumdb import netfault, rpc
from quorumdb.pb import (
    common_pb2,
    journal_pb2,
    journal_pb2_grpc,
    storage_pb2,
    storage_pb2_grpc,
)
from tests.util import free_base_port

SERVER = "storage-az1-a"
CLIENT = "compute-az2"
OTHER = "journal-az3"
WAIT_S = 10.0  # every wait below: far above what any step takes
STREAM_MESSAGES = 400
IDLE = 0  # ReadCheckpointRequest.min_index asking FakeStorage for an idle stream


@pytest.fixture
def cluster(tmp_path):
    return config_mod.default_cluster(tmp_path / "c", base_port=free_base_port(), insecure=True)  # in-process plaintext servers: partitions, not TLS


class FakeStorage(storage_pb2_grpc.StorageServicer):
    """Status (unary) and ReadCheckpoint (an async generator, like the journal's Subscribe)."""

    def __init__(self) -> None:
        self.callers: list[tuple] = []  # invocation metadata of each Status call

    async def Status(self, request, context):
        self.callers.append(tuple(context.invocation_metadata()))
        return common_pb2.NodeStatus(name=SERVER)

    async def ReadCheckpoint(self, request, context):
        # min_index: how many chunks to send; IDLE: one chunk, then nothing until the stream ends.
        count = request.min_index or 1
        for offset in range(count):
            yield storage_pb2.CheckpointChunk(index=1, total_bytes=count, offset=offset, data=b"x")
        if request.min_index == IDLE:
            await asyncio.sleep(3 * WAIT_S)


class FakeJournal(journal_pb2_grpc.JournalServicer):
    """AppendStream in the reader/writer style of journal/service.py: reads the request iterator."""

    async def AppendStream(self, request_iterator, context):
        async for request in request_iterator:
            await context.write(journal_pb2.AppendReply(last_index=request.prev_index))


class Node:
    """A guarded server for SERVER (generated servicers) and the partition states of both ends."""

    def __init__(self, cluster) -> None:
        self.cluster = cluster
        self.server_state = netfault.PartitionState(cluster, SERVER)
        self.client_state = netfault.PartitionState(cluster, CLIENT)
        self.address = cluster.node(SERVER).address
        self.storage = FakeStorage()

    async def __aenter__(self) -> Node:
        self.server = rpc.new_server(self.server_state)
        storage_pb2_grpc.add_StorageServicer_to_server(self.storage, self.server)
        journal_pb2_grpc.add_JournalServicer_to_server(FakeJournal(), self.server)
        self.server.add_insecure_port(self.address)
        await self.server.start()
        self.channels = rpc.Channels(self.client_state)
        self.tool_channel = grpc.aio.insecure_channel(self.address)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.channels.close()
        await self.tool_channel.close()
        await self.server.stop(None)

    def storage_stub(self) -> storage_pb2_grpc.StorageStub:
        return storage_pb2_grpc.StorageStub(self.channels.get(self.address))

    def journal_stub(self) -> journal_pb2_grpc.JournalStub:
        return journal_pb2_grpc.JournalStub(self.channels.get(self.address))

    def cut(self, state: netfault.PartitionState, a: str = CLIENT, b: str = SERVER) -> None:
        state.apply(netfault.NetRules(state.rules.version + 1).with_cuts([(a, b)]))

    def heal(self, state: netfault.PartitionState) -> None:
        state.apply(state.rules.healed())


def grpc_multicallable(multicallable):
    """grpc's own multicallable behind whatever Channels.get's channel returned."""
    return getattr(multicallable, "_multicallable", multicallable)


def assert_partition_error(error: BaseException, own: str = CLIENT, peer: str = SERVER) -> None:
    assert isinstance(error, grpc.aio.AioRpcError), repr(error)
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error
    assert error.details() == f"network partition: link {own}-{peer} is cut", error.details()


# --- no interceptors ---------------------------------------------------------------------------------
async def test_a_node_channel_and_server_carry_no_interceptor(cluster, monkeypatch):
    interceptors_given = []
    real_server = grpc.aio.server

    def spying_server(*args, **kwargs):
        interceptors_given.append(kwargs.get("interceptors"))
        return real_server(*args, **kwargs)

    monkeypatch.setattr(grpc.aio, "server", spying_server)
    server = rpc.new_server(netfault.PartitionState(cluster, SERVER))
    assert interceptors_given and not interceptors_given[0], interceptors_given
    assert isinstance(server, grpc.aio.Server)

    channels = rpc.Channels(netfault.PartitionState(cluster, CLIENT))
    try:
        channel = channels.get(cluster.node(SERVER).address)
        assert isinstance(channel, grpc.aio.Channel)
        for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            multicallable = getattr(channel, kind)("/quorumdb.Storage/Status")
            assert not grpc_multicallable(multicallable)._interceptors, f"{kind} has interceptors"
    finally:
        await channels.close()


async def test_a_simulated_cross_az_delay_keeps_the_interceptor_path(cluster, monkeypatch):
    monkeypatch.setenv(rpc.CROSS_AZ_DELAY_ENV, "5")
    rpc.set_identity(cluster, CLIENT)  # compute-az2
    channels = rpc.Channels()
    try:
        other_az = channels.get(cluster.node(SERVER).address).unary_unary("/quorumdb.Storage/Status")
        same_az = channels.get(cluster.node("storage-az2-a").address).unary_unary("/quorumdb.Storage/Status")
        assert grpc_multicallable(other_az)._interceptors, "a delayed channel waits in its interceptor"
        assert not grpc_multicallable(same_az)._interceptors, "no delay within an AZ: no interceptor"
    finally:
        await channels.close()
        rpc.clear_identity()


# --- the server: registered methods, refused peers ------------------------------------------------------
async def test_registered_methods_refuse_a_cut_peer_and_serve_everyone_else(cluster):
    async with Node(cluster) as node:
        node.cut(node.server_state)  # only the server knows: the client still sends
        status = storage_pb2_grpc.StorageStub(node.tool_channel).Status
        as_client = ((netfault.NODE_METADATA_KEY, CLIENT),)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await status(common_pb2.StatusRequest(), timeout=WAIT_S, metadata=as_client)
        assert_partition_error(refused.value, SERVER, CLIENT)
        with pytest.raises(grpc.aio.AioRpcError) as refused_by_node:
            await node.storage_stub().Status(common_pb2.StatusRequest(), timeout=WAIT_S)
        assert_partition_error(refused_by_node.value, SERVER, CLIENT)
        stream = storage_pb2_grpc.StorageStub(node.tool_channel).ReadCheckpoint(
            storage_pb2.ReadCheckpointRequest(min_index=3), timeout=WAIT_S, metadata=as_client)
        with pytest.raises(grpc.aio.AioRpcError) as stream_refused:
            await stream.read()
        assert_partition_error(stream_refused.value, SERVER, CLIENT)
        appends = journal_pb2_grpc.JournalStub(node.tool_channel).AppendStream(timeout=WAIT_S, metadata=as_client)
        with pytest.raises(grpc.aio.AioRpcError) as append_refused:
            await appends.write(journal_pb2.AppendRequest(prev_index=1))
            await appends.read()
        assert_partition_error(append_refused.value, SERVER, CLIENT)
        assert node.storage.callers == []  # nothing reached the servicer
        # A peer that is not cut, and a tool without the metadata, get through.
        as_other = ((netfault.NODE_METADATA_KEY, OTHER),)
        assert (await status(common_pb2.StatusRequest(), timeout=WAIT_S, metadata=as_other)).name == SERVER
        assert (await status(common_pb2.StatusRequest(), timeout=WAIT_S)).name == SERVER
        node.heal(node.server_state)
        assert (await node.storage_stub().Status(common_pb2.StatusRequest(), timeout=WAIT_S)).name == SERVER


# --- the client: a refused call fails like a failed call -------------------------------------------------
async def test_a_call_on_a_cut_link_fails_at_once_at_every_call_site_pattern(cluster):
    async with Node(cluster) as node:
        node.cut(node.client_state)  # only the client knows: nothing may be sent
        storage, journal = node.storage_stub(), node.journal_stub()
        request = common_pb2.StatusRequest()
        with pytest.raises(grpc.aio.AioRpcError) as awaited:
            await asyncio.wait_for(storage.Status(request, timeout=WAIT_S), WAIT_S)
        assert_partition_error(awaited.value)
        gathered = await asyncio.wait_for(  # storage_node/main.py's SCL reports
            asyncio.gather(storage.Status(request, timeout=WAIT_S), return_exceptions=True), WAIT_S)
        assert_partition_error(gathered[0])
        stream = storage.ReadCheckpoint(storage_pb2.ReadCheckpointRequest(min_index=3), timeout=WAIT_S)
        with pytest.raises(grpc.aio.AioRpcError) as read:  # journal/follower.py, storage checkpoint fetch
            await asyncio.wait_for(stream.read(), WAIT_S)
        assert_partition_error(read.value)
        stream.cancel()
        with pytest.raises(grpc.aio.AioRpcError) as iterated:  # compute_node/cluster/commit_stream.py's reader
            async with asyncio.timeout(WAIT_S):
                async for _ in storage.ReadCheckpoint(storage_pb2.ReadCheckpointRequest(min_index=3),
                                                      timeout=WAIT_S):
                    pass
        assert_partition_error(iterated.value)
        appends = journal.AppendStream(timeout=WAIT_S)  # journal/writer.py: write, then read
        with pytest.raises(grpc.aio.AioRpcError) as written:
            await asyncio.wait_for(appends.write(journal_pb2.AppendRequest(prev_index=1)), WAIT_S)
        assert_partition_error(written.value)
        with pytest.raises(grpc.aio.AioRpcError):
            await asyncio.wait_for(appends.read(), WAIT_S)
        assert appends.done() and not appends.cancel()
        assert await appends.code() == grpc.StatusCode.UNAVAILABLE
        assert node.storage.callers == []  # nothing was sent
        # Healed: the calls go through, named by the node, with the caller's own metadata kept.
        node.heal(node.client_state)
        reply = await storage.Status(request, timeout=WAIT_S, metadata=(("x-trace", "7"),))
        assert reply.name == SERVER
        assert (netfault.NODE_METADATA_KEY, CLIENT) in node.storage.callers[-1]
        assert ("x-trace", "7") in node.storage.callers[-1]
        appends = journal.AppendStream(timeout=WAIT_S)
        await asyncio.wait_for(appends.write(journal_pb2.AppendRequest(prev_index=5)), WAIT_S)
        assert (await asyncio.wait_for(appends.read(), WAIT_S)).last_index == 5
        appends.cancel()


# --- server streams ------------------------------------------------------------------------------------
async def test_a_guarded_server_stream_uses_a_fixed_number_of_tasks(cluster):
    """The old guard made one task per streamed message (about 4 % of a journal's CPU)."""
    async with Node(cluster) as node:
        loop = asyncio.get_running_loop()
        created = []

        def counting_factory(loop, coro, **kwargs):
            created.append(getattr(coro, "__qualname__", repr(coro)))
            return asyncio.Task(coro, loop=loop, **kwargs)

        stub = node.storage_stub()
        warm = stub.ReadCheckpoint(storage_pb2.ReadCheckpointRequest(min_index=2), timeout=WAIT_S)
        assert len([chunk async for chunk in warm]) == 2  # connected before counting
        loop.set_task_factory(counting_factory)
        try:
            call = stub.ReadCheckpoint(storage_pb2.ReadCheckpointRequest(min_index=STREAM_MESSAGES), timeout=WAIT_S)
            async with asyncio.timeout(WAIT_S):
                chunks = [chunk async for chunk in call]
        finally:
            loop.set_task_factory(None)
        assert len(chunks) == STREAM_MESSAGES
        print(f"{len(created)} tasks for a guarded stream of {STREAM_MESSAGES} messages: {sorted(set(created))}")
        assert len(created) < STREAM_MESSAGES // 10, created


async def test_server_streams_of_a_peer_end_when_its_link_is_cut(cluster):
    async with Node(cluster) as node:
        storage, journal = node.storage_stub(), node.journal_stub()
        tool_storage = storage_pb2_grpc.StorageStub(node.tool_channel)
        # An idle response stream (an async generator handler, like Subscribe).
        idle = storage.ReadCheckpoint(storage_pb2.ReadCheckpointRequest(min_index=IDLE), timeout=3 * WAIT_S)
        assert (await asyncio.wait_for(idle.read(), WAIT_S)).offset == 0
        # A bidirectional stream whose handler waits in `async for request in request_iterator`.
        appends = journal.AppendStream(timeout=3 * WAIT_S)
        await asyncio.wait_for(appends.write(journal_pb2.AppendRequest(prev_index=1)), WAIT_S)
        assert (await asyncio.wait_for(appends.read(), WAIT_S)).last_index == 1
        # A tool's stream: never cut.
        tool_idle = tool_storage.ReadCheckpoint(storage_pb2.ReadCheckpointRequest(min_index=IDLE), timeout=3 * WAIT_S)
        assert (await asyncio.wait_for(tool_idle.read(), WAIT_S)).offset == 0

        node.cut(node.server_state, SERVER, CLIENT)  # the server learns of the cut; the client not yet
        for call in (idle, appends):
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await asyncio.wait_for(call.read(), WAIT_S)
            assert_partition_error(ended.value, SERVER, CLIENT)
        assert not tool_idle.done()
        tool_idle.cancel()

        # A stream opened after the heal is guarded afresh.
        node.heal(node.server_state)
        again = storage.ReadCheckpoint(storage_pb2.ReadCheckpointRequest(min_index=IDLE), timeout=3 * WAIT_S)
        assert (await asyncio.wait_for(again.read(), WAIT_S)).offset == 0
        node.cut(node.server_state)
        with pytest.raises(grpc.aio.AioRpcError) as ended_again:
            await asyncio.wait_for(again.read(), WAIT_S)
        assert_partition_error(ended_again.value, SERVER, CLIENT)


# --- generic handlers: every kind of handler, wrapped once -------------------------------------------
def _sync_echo(request: bytes, context) -> bytes:  # a synchronous handler: grpc runs it in a thread
    return request


async def _count(request_iterator, context) -> bytes:
    return str(len([request async for request in request_iterator])).encode()


GENERIC = grpc.method_handlers_generic_handler("test.Guard", {
    "SyncEcho": grpc.unary_unary_rpc_method_handler(_sync_echo),
    "Count": grpc.stream_unary_rpc_method_handler(_count),
})


async def test_generic_handlers_are_guarded_once_whatever_their_kind(cluster):
    state = netfault.PartitionState(cluster, SERVER)
    guarded = rpc._GuardedGenericHandler(GENERIC, state)
    details = type("Details", (), {"method": "/test.Guard/Count", "invocation_metadata": ()})()
    assert guarded.service(details) is guarded.service(details)  # wrapped at the first call, then reused

    server = rpc.new_server(state)
    server.add_generic_rpc_handlers((GENERIC,))
    address = cluster.node(SERVER).address
    server.add_insecure_port(address)
    await server.start()
    channels = rpc.Channels(netfault.PartitionState(cluster, CLIENT))
    tool_channel = grpc.aio.insecure_channel(address)
    try:
        sync_echo = tool_channel.unary_unary("/test.Guard/SyncEcho")
        assert await sync_echo(b"a", timeout=WAIT_S, metadata=((netfault.NODE_METADATA_KEY, CLIENT),)) == b"a"
        count = channels.get(address).stream_unary("/test.Guard/Count")
        assert await count(iter([b"x", b"y"]), timeout=WAIT_S) == b"2"

        state.apply(netfault.NetRules(1).with_cuts([(SERVER, CLIENT)]))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await sync_echo(b"a", timeout=WAIT_S, metadata=((netfault.NODE_METADATA_KEY, CLIENT),))
        assert_partition_error(refused.value, SERVER, CLIENT)
        with pytest.raises(grpc.aio.AioRpcError) as refused_stream:
            await count(iter([b"x"]), timeout=WAIT_S)
        assert_partition_error(refused_stream.value, SERVER, CLIENT)

        channels_cut = rpc.Channels(netfault.PartitionState(cluster, CLIENT, state.rules))
        try:
            with pytest.raises(grpc.aio.AioRpcError) as not_sent:
                await asyncio.wait_for(channels_cut.get(address).stream_unary("/test.Guard/Count")(
                    iter([b"x"]), timeout=WAIT_S), WAIT_S)
            assert_partition_error(not_sent.value)
        finally:
            await channels_cut.close()
    finally:
        await channels.close()
        await tool_channel.close()
        await server.stop(None)


# --- requests that do not parse ---------------------------------------------------------------------------
GARBAGE = (b"\x07garbage", b"\xff" * 11, b"\x0a\xe8\x07short")  # never a valid message of any type


async def test_a_request_that_does_not_parse_is_refused_by_the_guard_without_a_logged_traceback(cluster, caplog):
    """Without the guard, gRPC answers UNKNOWN and logs an ERROR with a traceback per garbage
    request, before any authorization: a log anyone reaching the port could fill."""
    async with Node(cluster) as node:
        with caplog.at_level("INFO"):
            for method in ("/quorumdb.Storage/Status", "/quorumdb.Storage/ReadCheckpoint"):
                for payload in GARBAGE:
                    if method.endswith("Status"):
                        call = node.tool_channel.unary_unary(method)(payload, timeout=WAIT_S)
                    else:
                        call = node.tool_channel.unary_stream(method)(payload, timeout=WAIT_S).read()
                    with pytest.raises(grpc.aio.AioRpcError) as refused:
                        await call
                    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value
                    assert "does not parse" in refused.value.details()
        assert node.storage.callers == []
        assert not [record for record in caplog.records if record.levelname == "ERROR"], caplog.text
        # The server still answers, and a valid request goes through.
        stub = storage_pb2_grpc.StorageStub(node.tool_channel)
        assert (await stub.Status(common_pb2.StatusRequest(), timeout=WAIT_S)).name == SERVER


class FakeContext:
    def __init__(self, metadata=()) -> None:
        self.metadata = metadata

    def invocation_metadata(self):
        return self.metadata

    def auth_context(self):
        return {}

    async def abort(self, code, details):
        raise grpc.RpcError(code, details)


async def test_the_authorization_comes_before_the_parse_error():
    """An unauthenticated caller learns nothing from the parser: refused as unauthenticated first."""
    authorizer = rpc.Authorizer({}, rpc.TokenCheck(lambda: bytes(32)))
    method = "/quorumdb.Compute/Execute"

    async def execute(request, context):
        raise AssertionError("never reached")

    handler = grpc.unary_unary_rpc_method_handler(execute, request_deserializer=common_pb2.StatusRequest.FromString)
    guarded = rpc.guard_handler(handler, rpc._NO_PARTITIONS, auth=authorizer.for_method(method))
    request = guarded.request_deserializer(GARBAGE[0])
    with pytest.raises(grpc.RpcError) as refused:
        await guarded.unary_unary(request, FakeContext())
    assert refused.value.args[0] == grpc.StatusCode.UNAUTHENTICATED
    assert guarded.request_deserializer(b"") == common_pb2.StatusRequest()
