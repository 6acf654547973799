"""Network partitions: the pure rules logic, the rules file, and the gRPC partition guards in one process.

The guard tests run a real aio server and channel on 127.0.0.1 with two
PartitionState objects (a "server node" and a "client node" of one cluster file), so
they check exactly what the node processes do, without starting any.
(tests/test_rpc_guard.py checks how: no interceptors, a fixed number of tasks per stream.)
"""
from __future__ import annotations

import asyncio
import json
import threading
import time

import grpc
import pytest

from quorumdb import config as config_mod
from quorumdb import limits, netfault, rpc
from tests.util import free_base_port

SERVER = "journal-az1"
CLIENT = "storage-az3-a"
OTHER = "compute-az2"


@pytest.fixture
def cluster(tmp_path):
    return config_mod.default_cluster(tmp_path / "c", base_port=free_base_port(), insecure=True)  # in-process plaintext servers: partitions, not TLS


# --- pure rules logic --------------------------------------------------------------------------
def test_cuts_are_undirected_and_versioned():
    rules = netfault.NetRules().with_cuts([("a", "b"), ("c", "a")])
    assert rules.version == 1
    assert rules.is_cut("a", "b") and rules.is_cut("b", "a")
    assert rules.is_cut("a", "c") and not rules.is_cut("b", "c")
    assert not rules.is_cut("a", "a")
    assert rules.cut_peers("a") == {"b", "c"}
    assert rules.cut_peers("b") == {"a"}
    assert rules.cut_peers("z") == frozenset()
    again = rules.with_cuts([("b", "a")])  # already cut: same set, newer version
    assert again.cuts == rules.cuts and again.version == 2
    healed = again.healed()
    assert healed.cuts == frozenset() and healed.version == 3


def test_rules_round_trip_and_reject_malformed_files():
    rules = netfault.NetRules(7, frozenset({netfault.link("x", "y"), netfault.link("b", "a")}))
    text = rules.to_json()
    assert json.loads(text) == {"version": 7, "cut": [["a", "b"], ["x", "y"]]}
    assert netfault.parse_rules(text) == rules
    assert netfault.parse_rules("") == netfault.NetRules()
    for bad in ("{", "[]", '{"version": -1}', '{"cut": [["a"]]}', '{"cut": [["a", "a"]]}',
                '{"cut": [["a", 3]]}', '{"cut": "a-b"}', '{"version": "1"}'):
        with pytest.raises(netfault.RulesError):
            netfault.parse_rules(bad)


def test_isolating_an_az_cuts_exactly_its_links_to_other_azs(cluster):
    pairs = netfault.pairs_isolating_az(cluster, "az3")
    az = {node.name: node.az for node in cluster.nodes}
    assert len(pairs) == 5 * 10  # 5 nodes in az3, 10 elsewhere
    assert all(az[a] == "az3" and az[b] != "az3" for a, b in pairs)
    rules = netfault.NetRules().with_cuts(pairs)
    assert rules.cut_peers("journal-az3") == {n.name for n in cluster.nodes if n.az != "az3"}
    assert rules.cut_peers("journal-az1") == {n.name for n in cluster.nodes if n.az == "az3"}
    assert not rules.is_cut("storage-az3-a", "storage-az3-b")  # inside the AZ: still connected
    with pytest.raises(KeyError):
        netfault.pairs_isolating_az(cluster, "az9")
    node_pairs = netfault.pairs_isolating_node(cluster, "adjudicator-az2")
    assert len(node_pairs) == len(cluster.nodes) - 1
    with pytest.raises(KeyError):
        netfault.pairs_isolating_node(cluster, "nope")


def test_partition_state_tracks_only_its_own_links(cluster):
    state = netfault.PartitionState(cluster, SERVER)
    assert state.node_by_address[cluster.node(CLIENT).address] == CLIENT
    assert not state.apply(netfault.NetRules().with_cuts([(CLIENT, OTHER)]))  # not mine: no change
    assert state.apply(netfault.NetRules(2).with_cuts([(CLIENT, SERVER)]))
    assert state.is_cut_from(CLIENT) and not state.is_cut_from(OTHER)
    assert state.apply(netfault.NetRules(4))
    assert not state.is_cut_from(CLIENT)


def test_cut_signal_completes_when_its_peer_becomes_cut(cluster):
    async def scenario():
        state = netfault.PartitionState(cluster, SERVER)
        signal = state.cut_signal(CLIENT)
        assert state.cut_signal(CLIENT) is signal  # shared by all of the peer's streams
        assert state.cut_signal(SERVER) is None and state.cut_signal("ghost") is None
        state.apply(netfault.NetRules(1).with_cuts([(OTHER, SERVER)]))
        assert not signal.done()  # another peer's cut
        state.apply(netfault.NetRules(2).with_cuts([(OTHER, SERVER), (CLIENT, SERVER)]))
        assert signal.done()
        state.apply(state.rules.healed())
        fresh = state.cut_signal(CLIENT)
        assert fresh is not signal and not fresh.done()
        # Rules applied from another thread complete it through its loop.
        await asyncio.to_thread(state.apply, netfault.NetRules(5).with_cuts([(CLIENT, SERVER)]))
        await asyncio.wait_for(fresh, 5)

    asyncio.run(scenario())


# --- the rules file ------------------------------------------------------------------------------
def test_public_api_rewrites_the_file_atomically(cluster):
    assert netfault.current_cuts(cluster) == set()
    netfault.cut_links(cluster, [("journal-az1", "journal-az2")], settle_s=0)
    assert netfault.current_cuts(cluster) == {frozenset({"journal-az1", "journal-az2"})}
    netfault.isolate_node(cluster, "storage-az2-b", settle_s=0)
    cuts = netfault.current_cuts(cluster)
    assert len(cuts) == 1 + 14
    netfault.isolate_az(cluster, "az1", settle_s=0)
    raw = json.loads(netfault.rules_path(cluster).read_text())
    assert raw["version"] == 3
    assert frozenset({"compute-az1", "compute-az3"}) in netfault.current_cuts(cluster)
    with pytest.raises(KeyError):
        netfault.cut_links(cluster, [("journal-az1", "ghost")], settle_s=0)
    assert json.loads(netfault.rules_path(cluster).read_text())["version"] == 3  # nothing written
    netfault.heal(cluster, settle_s=0)
    assert netfault.current_cuts(cluster) == set()
    assert list(netfault.rules_path(cluster).parent.glob("*.tmp")) == []


def test_concurrent_writers_lose_no_cut(cluster):
    names = [node.name for node in cluster.nodes]
    pairs = [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names))][:40]

    def cut(pair):
        netfault.cut_links(cluster, [pair], settle_s=0)

    threads = [threading.Thread(target=cut, args=(pair,)) for pair in pairs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert netfault.current_cuts(cluster) == {frozenset(pair) for pair in pairs}
    assert netfault.read_rules(cluster).version == len(pairs)


# --- partition guards, in one process --------------------------------------------------------------
async def _echo(request: bytes, context) -> bytes:
    return request


async def _ticks(request: bytes, context):
    for i in range(int(request.decode())):
        yield str(i).encode()
        await asyncio.sleep(0.02)


async def _quiet_stream(request: bytes, context):
    yield b"first"
    await asyncio.sleep(30)  # idle: only the cut itself can end it
    yield b"never"


HANDLERS = grpc.method_handlers_generic_handler("test.Net", {
    "Echo": grpc.unary_unary_rpc_method_handler(_echo),
    "Ticks": grpc.unary_stream_rpc_method_handler(_ticks),
    "Quiet": grpc.unary_stream_rpc_method_handler(_quiet_stream),
})


class Pair:
    """An aio server playing SERVER and a Channels playing CLIENT, each with its own rules watcher."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.server_state = netfault.PartitionState(cluster, SERVER)
        self.client_state = netfault.PartitionState(cluster, CLIENT)
        self.address = cluster.node(SERVER).address

    async def __aenter__(self):
        self.stop = asyncio.Event()
        self.watchers = [asyncio.create_task(rpc.watch_rules(self.stop, state, None))
                         for state in (self.server_state, self.client_state)]
        self.server = rpc.new_server(self.server_state)
        self.server.add_generic_rpc_handlers((HANDLERS,))
        self.server.add_insecure_port(self.address)
        await self.server.start()
        self.channels = rpc.Channels(self.client_state)
        self.tool_channel = grpc.aio.insecure_channel(self.address)
        return self

    async def __aexit__(self, *exc):
        self.stop.set()
        await asyncio.gather(*self.watchers)
        await self.channels.close()
        await self.tool_channel.close()
        await self.server.stop(None)

    def echo(self, channel=None):
        return (channel or self.channels.get(self.address)).unary_unary("/test.Net/Echo")

    def stream(self, method: str):
        return self.channels.get(self.address).unary_stream(f"/test.Net/{method}")

    async def apply(self, change) -> None:
        await asyncio.to_thread(change, self.cluster, settle_s=0)
        await asyncio.sleep(limits.NETFAULT_SETTLE_S)


def test_client_fails_at_once_and_server_refuses_a_cut_peer(cluster):
    async def scenario():
        async with Pair(cluster) as pair:
            assert await pair.echo()(b"hi", timeout=5) == b"hi"
            await pair.apply(lambda c, settle_s: netfault.cut_links(c, [(CLIENT, SERVER)], settle_s=settle_s))
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await pair.echo()(b"hi", timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert refused.value.details() == f"network partition: link {CLIENT}-{SERVER} is cut"
            assert time.monotonic() - started < 1.0  # at once, not after the deadline
            # A caller that names itself as the cut peer is refused by the server.
            spoofed = pair.echo(pair.tool_channel)(b"hi", timeout=5, metadata=((netfault.NODE_METADATA_KEY, CLIENT),))
            with pytest.raises(grpc.aio.AioRpcError) as by_server:
                await spoofed
            assert by_server.value.code() == grpc.StatusCode.UNAVAILABLE
            assert by_server.value.details() == f"network partition: link {SERVER}-{CLIENT} is cut"
            # A node that is not cut, and a tool without the metadata, get through.
            other = pair.echo(pair.tool_channel)(b"ok", timeout=5, metadata=((netfault.NODE_METADATA_KEY, OTHER),))
            assert await other == b"ok"
            assert await pair.echo(pair.tool_channel)(b"tool", timeout=5) == b"tool"
            with pytest.raises(grpc.aio.AioRpcError):
                async for _ in pair.stream("Ticks")(b"3", timeout=5):
                    pass
            await pair.apply(netfault.heal)
            assert await pair.echo()(b"back", timeout=5) == b"back"
            replies = [r async for r in pair.stream("Ticks")(b"3", timeout=5)]
            assert replies == [b"0", b"1", b"2"]

    asyncio.run(scenario())


def test_server_stream_ends_when_its_link_is_cut_mid_stream(cluster):
    async def scenario():
        async with Pair(cluster) as pair:
            # A busy stream: ended at the next message after the cut.
            call = pair.stream("Ticks")(b"1000", timeout=20)
            assert await call.read() == b"0"
            await pair.apply(lambda c, settle_s: netfault.isolate_node(c, SERVER, settle_s=settle_s))
            received = 1
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                while await call.read() is not grpc.aio.EOF:
                    received += 1
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "network partition" in ended.value.details()
            assert received < 100, received
            await pair.apply(netfault.heal)
            # An idle stream: ended by the cut itself.
            quiet = pair.stream("Quiet")(b"", timeout=20)
            assert await quiet.read() == b"first"
            cut_at = time.monotonic()
            await asyncio.to_thread(netfault.cut_links, pair.cluster, [(CLIENT, SERVER)], settle_s=0)
            with pytest.raises(grpc.aio.AioRpcError) as idle_ended:
                await quiet.read()
            elapsed = time.monotonic() - cut_at
            assert idle_ended.value.code() == grpc.StatusCode.UNAVAILABLE
            print(f"idle stream ended {elapsed * 1000:.0f} ms after the rules file was rewritten")
            assert elapsed < 5.0

    asyncio.run(scenario())


def test_process_identity_drives_channels_and_servers(cluster):
    async def channel_kinds() -> tuple[bool, bool, bool]:
        channels = rpc.Channels()
        try:
            node = channels.get(cluster.node(SERVER).address)
            itself = channels.get(cluster.node(CLIENT).address)
            foreign = channels.get("127.0.0.1:1")
            return (node.unary_unary("/test.Net/Echo")._link.target == SERVER,
                    not hasattr(itself.unary_unary("/test.Net/Echo"), "_link"),
                    not hasattr(foreign.unary_unary("/test.Net/Echo"), "_link"))
        finally:
            await channels.close()

    try:
        state = rpc.set_identity(cluster, CLIENT)
        assert rpc.identity() is state
        assert asyncio.run(channel_kinds()) == (True, True, True)  # guarded only towards other nodes
        # The interceptor path, kept for channels with a simulated cross-AZ delay (none set here).
        assert len(rpc.client_interceptors(state, cluster.node(SERVER).address)) == 4
        assert rpc.client_interceptors(state, cluster.node(CLIENT).address) == []  # itself
        assert rpc.client_interceptors(state, "127.0.0.1:1") == []  # not a cluster node
    finally:
        rpc.clear_identity()
    assert rpc.identity() is None
    assert rpc.client_interceptors(None, cluster.node(SERVER).address) == []


def test_partition_guard_overhead_per_call(cluster):
    """Measures (prints) the cost of the partition guards on a unary call; asserts nothing timed.

    tools/bench/rpc_guard_micro.py measures CPU per call and per message, old against new."""
    calls = 2_000

    async def rate(channel) -> float:
        echo = channel.unary_unary("/test.Net/Echo")
        for _ in range(100):
            await echo(b"x", timeout=5)
        started = time.perf_counter()
        for _ in range(calls):
            await echo(b"x", timeout=5)
        return (time.perf_counter() - started) / calls

    async def scenario():
        async with Pair(cluster) as pair:
            plain_server = rpc.new_server()
            plain_server.add_generic_rpc_handlers((HANDLERS,))
            port = plain_server.add_insecure_port("127.0.0.1:0")
            await plain_server.start()
            plain_channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
            try:
                plain = min([await rate(plain_channel) for _ in range(2)])
                guarded = min([await rate(pair.channels.get(pair.address)) for _ in range(2)])
            finally:
                await plain_channel.close()
                await plain_server.stop(None)
            print(f"unary call: {plain * 1e6:.0f} us without partition guards, {guarded * 1e6:.0f} us with "
                  f"client + server guards ({(guarded - plain) * 1e6:+.0f} us per call)")
            assert guarded > 0 and plain > 0

    asyncio.run(scenario())
