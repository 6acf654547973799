"""The WAN between regions: the pure rules, the rules file, and calls across it in one process.

The call tests run a real grpc.aio server on 127.0.0.1 and reach it through
`rpc.region_channel` with a `wan.WanState` built here (region us-east calling eu-west), so they
check what a node process's channels to another region do, without starting any cluster. The
server stamps each message with the process's monotonic clock, which the client shares: every
timing assertion is a lower bound (a message is never early), never an upper one.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time

import grpc
import pytest

from quorumdb import config as config_mod
from quorumdb import limits, netfault, regions, rpc, wan
from tests.util import free_base_port
from tools.launcher import ensure_certs

OWN, PEER = "us-east", "eu-west"
SLACK_S = 0.002  # timers may fire this much before their time (clock resolution)


@pytest.fixture
def global_cfg(tmp_path):
    cfg = regions.layout(tmp_path / "g", [(OWN, "primary"), (PEER, "secondary")], free_base_port(), (30.0, 5.0, 0.0))
    cfg.write()
    return cfg


# --- pure rules ----------------------------------------------------------------------------------
def test_rules_cut_a_partitioned_region_from_every_other():
    rules = wan.WanRules(3, 30.0, 5.0, 0.01, frozenset({"eu-west"}))
    assert rules.is_cut("us-east", "eu-west") and rules.is_cut("eu-west", "us-east")
    assert rules.is_cut("eu-west", "ap-south")
    assert not rules.is_cut("us-east", "ap-south")
    assert not rules.is_cut("eu-west", "eu-west")  # within a region: not the WAN
    assert rules.delayed
    assert not wan.WanRules().delayed
    assert wan.WanRules(loss=0.1).delayed
    healed = rules.with_partition("ap-south").healed()
    assert healed.partitioned == frozenset() and healed.version == 5 and healed.delay_ms == 30.0
    moved = rules.with_link(100, 0, 0)
    assert (moved.version, moved.delay_ms, moved.jitter_ms, moved.loss, moved.partitioned) == (
        4, 100.0, 0.0, 0.0, frozenset({"eu-west"}))


def test_rules_round_trip_and_reject_malformed_text():
    rules = wan.WanRules(7, 30.0, 5.0, 0.25, frozenset({"b-region", "a-region"}))
    text = rules.to_json()
    assert json.loads(text) == {"version": 7, "delay_ms": 30.0, "jitter_ms": 5.0, "loss": 0.25,
                                "partitioned": ["a-region", "b-region"]}
    assert wan.parse_rules(text) == rules
    assert wan.parse_rules("{}") == wan.WanRules()
    for bad in ("", "{", "[]", '{"version": -1}', '{"version": true}', '{"version": "1"}',
                '{"delay_ms": -1}', '{"delay_ms": 1e9}', '{"delay_ms": "30"}', '{"jitter_ms": null}',
                '{"loss": 0.9}', '{"loss": NaN}', '{"partitioned": "eu-west"}', '{"partitioned": ["EU"]}',
                '{"partitioned": ["eu", "eu"]}', '{"partitioned": [3]}', '{"delay": 30}'):
        with pytest.raises(wan.RulesError):
            wan.parse_rules(bad)
    with pytest.raises(wan.RulesError):
        wan.WanRules(delay_ms=-5)


def test_delays_keep_stream_order_and_loss_follows_the_draw():
    rules = wan.WanRules(delay_ms=30, jitter_ms=10, loss=0.2)
    assert wan.one_way_delay_ms(rules, 0.0) == 30 and wan.one_way_delay_ms(rules, 0.5) == 35
    assert wan.deliver_at(previous_s=0.0, arrival_s=1.0, delay_s=0.03) == 1.03
    assert wan.deliver_at(previous_s=1.05, arrival_s=1.0, delay_s=0.01) == 1.05  # never overtakes
    assert wan.is_lost(rules, 0.1) and not wan.is_lost(rules, 0.2)
    assert not wan.is_lost(wan.WanRules(), 0.0)


def test_state_tracks_rules_and_signals_a_new_partition(global_cfg):
    state = wan.WanState(global_cfg, OWN, rng=random.Random(1))
    assert state.rules == wan.WanRules(0, 30.0, 5.0, 0.0)  # from the global cluster file
    with pytest.raises(KeyError):
        wan.WanState(global_cfg, "mars")

    async def scenario():
        signal = state.cut_signal(PEER)
        with pytest.raises(KeyError):
            state.cut_signal("mars")
        assert not state.apply(state.rules.with_link(30, 5, 0))  # only the version moved
        assert not signal.done()
        assert state.apply(state.rules.with_partition(PEER))
        assert signal.done() and state.is_cut_from(PEER)
        assert state.apply(state.rules.healed())
        assert not state.is_cut_from(PEER)
        assert not state.cut_signal(PEER).done()  # a new signal for the next partition

    asyncio.run(scenario())
    draws = [state.draw_delay_s() for _ in range(200)]
    assert all(0.030 <= d <= 0.035 for d in draws) and max(draws) > min(draws)


def test_a_cut_link_cuts_only_that_pair_both_ways_and_heals_with_the_partitions():
    rules = wan.WanRules(2, 5.0, 25.0).with_link_cut("us-east-2", "us-east-1")
    assert rules.version == 3 and rules.cut_links == {("us-east-1", "us-east-2")}
    assert rules.is_cut("us-east-1", "us-east-2") and rules.is_cut("us-east-2", "us-east-1")
    assert not rules.is_cut("us-east-1", "us-west-2") and not rules.is_cut("us-west-2", "us-east-2")
    assert not rules.is_cut("us-east-1", "us-east-1")
    assert rules.with_link_cut("us-east-1", "us-east-2").cut_links == rules.cut_links  # the same link once
    moved = rules.with_link(75, 0, 0)
    assert moved.cut_links == rules.cut_links  # a new delay keeps the cut
    both = rules.with_partition("us-west-2")
    assert both.is_cut("us-east-1", "us-west-2")
    healed = both.healed()
    assert healed.cut_links == frozenset() and healed.partitioned == frozenset() and healed.delay_ms == 5.0
    assert not healed.is_cut("us-east-1", "us-east-2")
    with pytest.raises(wan.RulesError, match="two different regions"):
        rules.with_link_cut("us-east-1", "us-east-1")


def test_cut_links_round_trip_and_malformed_ones_are_refused():
    rules = wan.WanRules(4, 5.0, 0.0, 0.0, frozenset({"c"}), frozenset({("a", "b"), ("b", "c")}))
    text = rules.to_json()
    assert json.loads(text)["cut_links"] == [["a", "b"], ["b", "c"]]
    assert wan.parse_rules(text) == rules
    assert wan.parse_rules('{"cut_links": [["z", "a"]]}').cut_links == {("a", "z")}  # either order
    assert "cut_links" not in json.loads(wan.WanRules(1).to_json())  # no cut: the file reads as before
    for bad in ('{"cut_links": "a-b"}', '{"cut_links": [["a"]]}', '{"cut_links": [["a", "a"]]}',
                '{"cut_links": [["a", "B"]]}', '{"cut_links": [["a", 3]]}', '{"cut_links": [["a", "b", "c"]]}'):
        with pytest.raises(wan.RulesError):
            wan.parse_rules(bad)


def test_state_signals_a_newly_cut_link_as_it_does_a_partition(tmp_path):
    cfg = regions.layout(tmp_path / "aa", regions.parse_active_active("p1,p2", "w1"), free_base_port(), (5.0, 0.0, 0.0))
    cfg.write()
    state = wan.WanState(cfg, "p1", rng=random.Random(2))

    async def scenario():
        to_peer, to_witness = state.cut_signal("p2"), state.cut_signal("w1")
        assert state.apply(state.rules.with_link_cut("p2", "p1"))
        assert to_peer.done() and state.is_cut_from("p2")
        assert not to_witness.done() and not state.is_cut_from("w1")  # the witness link stays up
        assert state.apply(state.rules.healed())
        assert not state.is_cut_from("p2") and not state.cut_signal("p2").done()
        other = wan.WanState(cfg, "w1")  # a link between two other regions: nothing of w1's is cut
        w_signal = other.cut_signal("p1")
        other.apply(other.rules.with_link_cut("p1", "p2"))
        assert not w_signal.done() and not other.is_cut_from("p1")

    asyncio.run(scenario())


def test_the_file_keeps_cut_links_beside_partitions_and_heal_removes_both(tmp_path):
    cfg = regions.layout(tmp_path / "aa", regions.parse_active_active("p1,p2", "w1"), free_base_port(), (5.0, 25.0, 0.0))
    cfg.write()
    cut = wan.cut_link(cfg, "p1", "p2", settle_s=0)
    assert cut.version == 1 and cut.cut_links == {("p1", "p2")}
    assert wan.read_rules(cfg) == cut
    part = wan.partition_region(cfg, "w1", settle_s=0)
    assert part.cut_links == {("p1", "p2")} and part.partitioned == {"w1"}
    assert wan.set_wan(cfg, 25, 0, 0, settle_s=0).cut_links == {("p1", "p2")}
    with pytest.raises(KeyError):
        wan.cut_link(cfg, "p1", "mars", settle_s=0)
    with pytest.raises(wan.RulesError):
        wan.cut_link(cfg, "p1", "p1", settle_s=0)
    healed = wan.heal_regions(cfg, settle_s=0)
    assert healed.cut_links == frozenset() and healed.partitioned == frozenset() and healed.delay_ms == 25.0
    assert wan.read_rules(cfg) == healed


# --- the rules file ------------------------------------------------------------------------------
def test_the_file_overrides_the_global_file_and_writers_keep_each_others_changes(global_cfg):
    assert wan.read_rules(global_cfg) == wan.WanRules(0, 30.0, 5.0, 0.0)
    assert not wan.rules_path(global_cfg).exists()
    set_rules = wan.set_wan(global_cfg, 100, 0, 0.01, settle_s=0)
    assert (set_rules.version, set_rules.delay_ms, set_rules.loss) == (1, 100.0, 0.01)
    cut = wan.partition_region(global_cfg, PEER, settle_s=0)
    assert cut.version == 2 and cut.partitioned == {PEER} and cut.delay_ms == 100.0
    again = wan.set_wan(global_cfg, 10, 2, 0, settle_s=0)
    assert again.partitioned == {PEER} and again.delay_ms == 10.0  # a new delay keeps the partition
    healed = wan.heal_regions(global_cfg, settle_s=0)
    assert healed.partitioned == frozenset() and healed.delay_ms == 10.0 and healed.version == 4
    assert wan.read_rules(global_cfg) == healed
    with pytest.raises(KeyError):
        wan.partition_region(global_cfg, "mars", settle_s=0)
    with pytest.raises(wan.RulesError):
        wan.set_wan(global_cfg, -1, 0, 0, settle_s=0)
    with pytest.raises(wan.RulesError):
        wan.set_wan(global_cfg, 10, 0, 0.75, settle_s=0)
    assert wan.read_rules(global_cfg) == healed  # refused changes wrote nothing
    assert not list(wan.rules_path(global_cfg).parent.glob("*.tmp"))
    wan.rules_path(global_cfg).write_text('{"delay_ms": "fast"}')
    with pytest.raises(wan.RulesError, match="wan.json"):
        wan.read_rules(global_cfg)


@pytest.mark.parametrize("watcher_kind", ["watch_wan", "watch_rules"])
def test_watcher_applies_a_rewritten_file(global_cfg, watcher_kind):
    """watch_wan alone, and the node's one watcher (watch_rules) following both rules files."""
    async def scenario():
        state = wan.WanState(global_cfg, OWN)
        stop = asyncio.Event()
        if watcher_kind == "watch_wan":
            watcher = asyncio.create_task(rpc.watch_wan(stop, state, None))
        else:
            region = global_cfg.region(OWN)
            cluster = config_mod.default_cluster(region.data_dir, base_port=region.base_port)
            partitions = netfault.PartitionState(cluster, "journal-az1")
            watcher = asyncio.create_task(rpc.watch_rules(stop, partitions, None, wan_state=state))
        try:
            await asyncio.to_thread(wan.partition_region, global_cfg, PEER, settle_s=0)
            for _ in range(100):
                if state.is_cut_from(PEER):
                    break
                await asyncio.sleep(limits.NETFAULT_POLL_MS / 1000)
            assert state.is_cut_from(PEER) and state.rules.version == 1
            await asyncio.to_thread(wan.heal_regions, global_cfg, settle_s=0)
            for _ in range(100):
                if not state.is_cut_from(PEER):
                    break
                await asyncio.sleep(limits.NETFAULT_POLL_MS / 1000)
            assert not state.is_cut_from(PEER) and state.rules.delay_ms == 30.0
        finally:
            stop.set()
            await asyncio.wait_for(watcher, 5)

    asyncio.run(scenario())


# --- calls across the WAN, in one process ----------------------------------------------------------
class Server:
    """A tiny service on 127.0.0.1 whose replies carry the server's clock."""

    def __init__(self) -> None:
        self.echo_calls = 0
        self.received: list[tuple[float, bytes]] = []  # bidi requests: (arrival, request)

    async def echo(self, request: bytes, context) -> bytes:
        self.echo_calls += 1
        return request

    async def fail(self, request: bytes, context) -> bytes:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no such thing")

    async def ticks(self, request: bytes, context):
        for i in range(int(request.decode())):
            yield f"{i} {time.monotonic()!r}".encode()
            await asyncio.sleep(0.005)

    async def quiet(self, request: bytes, context):
        yield b"first"
        await asyncio.sleep(30)  # idle: only a partition or a deadline ends it
        yield b"never"

    async def chat(self, requests, context):
        async for request in requests:
            self.received.append((time.monotonic(), request))
            yield f"{request.decode()} {time.monotonic()!r}".encode()

    async def total(self, requests, context) -> bytes:
        return str(sum([int(r.decode()) async for r in requests])).encode()

    def handlers(self):
        return grpc.method_handlers_generic_handler("test.Wan", {
            "Echo": grpc.unary_unary_rpc_method_handler(self.echo),
            "Fail": grpc.unary_unary_rpc_method_handler(self.fail),
            "Ticks": grpc.unary_stream_rpc_method_handler(self.ticks),
            "Quiet": grpc.unary_stream_rpc_method_handler(self.quiet),
            "Chat": grpc.stream_stream_rpc_method_handler(self.chat),
            "Total": grpc.stream_unary_rpc_method_handler(self.total),
        })


class Wan:
    """A server playing a node of PEER and a region channel from a node of OWN to it."""

    def __init__(self, global_cfg, rules: wan.WanRules, seed: int = 1) -> None:
        self.state = wan.WanState(global_cfg, OWN, rules, rng=random.Random(seed))
        self.service = Server()

    async def __aenter__(self):
        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers((self.service.handlers(),))
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        self.address = f"127.0.0.1:{port}"
        self.channel = rpc.region_channel(self.address, PEER, self.state)
        return self

    async def __aexit__(self, *exc):
        await self.channel.close()
        await self.server.stop(None)

    def unary(self, method: str = "Echo"):
        return self.channel.unary_unary(f"/test.Wan/{method}")

    def stream(self, method: str):
        return self.channel.unary_stream(f"/test.Wan/{method}")

    def bidi(self):
        return self.channel.stream_stream("/test.Wan/Chat")

    def set(self, **changes) -> None:
        rules = self.state.rules
        self.state.apply(wan.WanRules(rules.version + 1, changes.get("delay_ms", rules.delay_ms),
                                      changes.get("jitter_ms", rules.jitter_ms), changes.get("loss", rules.loss),
                                      frozenset(changes.get("partitioned", rules.partitioned))))


def test_a_unary_call_waits_a_delay_each_way(global_cfg):
    async def scenario():
        async with Wan(global_cfg, wan.WanRules(delay_ms=60, jitter_ms=20)) as link:
            for _ in range(3):
                started = time.monotonic()
                assert await link.unary()(b"hi", timeout=10) == b"hi"
                assert time.monotonic() - started >= 2 * 0.060 - SLACK_S
            # An error status is a reply: it crosses back too.
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await link.unary("Fail")(b"x", timeout=10)
            assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert time.monotonic() - started >= 2 * 0.060 - SLACK_S
            # The deadline counts the delays.
            started = time.monotonic()
            call = link.unary()(b"late", timeout=0.1)
            with pytest.raises(grpc.aio.AioRpcError) as late:
                await call
            assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert await call.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert time.monotonic() - started >= 0.1 - SLACK_S
            # The call object answers like grpc's.
            call = link.unary()(b"again", timeout=10)
            assert await call == b"again"
            assert await call.code() == grpc.StatusCode.OK and call.done() and not call.cancelled()

    asyncio.run(scenario())


def test_each_streamed_reply_arrives_after_its_own_delay_in_order(global_cfg):
    async def scenario():
        async with Wan(global_cfg, wan.WanRules(delay_ms=40, jitter_ms=30), seed=3) as link:
            arrivals = []
            async for reply in link.stream("Ticks")(b"30", timeout=10):
                arrivals.append((time.monotonic(), reply))
            assert [int(r.split()[0]) for _, r in arrivals] == list(range(30))  # all, in order, despite jitter
            for arrived, reply in arrivals:
                sent = float(reply.split()[1])
                assert arrived >= sent + 0.040 - SLACK_S, (arrived - sent, reply)
            # The status is known once it has crossed back, read or not; the replies stay readable.
            call = link.stream("Ticks")(b"3", timeout=10)
            assert await asyncio.wait_for(call.code(), 5) == grpc.StatusCode.OK and call.done()
            assert [r.split()[0] async for r in call] == [b"0", b"1", b"2"]
            # read() and the status, as on grpc's own call.
            call = link.stream("Ticks")(b"5", timeout=10)
            assert await call.read() != grpc.aio.EOF
            replies = [await call.read() for _ in range(4)]
            assert await call.read() is grpc.aio.EOF
            assert await call.code() == grpc.StatusCode.OK and len(replies) == 4

    asyncio.run(scenario())


def test_a_bidi_stream_delays_requests_without_blocking_the_writer(global_cfg):
    async def scenario():
        async with Wan(global_cfg, wan.WanRules(delay_ms=80)) as link:
            call = link.bidi()(timeout=10)
            sent = []
            for i in range(5):
                sent.append(time.monotonic())
                await call.write(str(i).encode())
            # Every write returned, and none has reached the server: they are on the WAN.
            assert link.service.received == []
            await call.done_writing()
            replies = []
            async for reply in call:
                replies.append((time.monotonic(), reply))
            assert [r.split()[0] for _, r in replies] == [b"0", b"1", b"2", b"3", b"4"]
            for (received, request), written in zip(link.service.received, sent):
                assert received >= written + 0.080 - SLACK_S
            for arrived, reply in replies:
                assert arrived >= float(reply.split()[1]) + 0.080 - SLACK_S
            assert await call.code() == grpc.StatusCode.OK
            # A request iterator crosses the same way (a client-streaming call here).
            started = time.monotonic()
            total = link.channel.stream_unary("/test.Wan/Total")(iter([b"1", b"2", b"39"]), timeout=10)
            assert await total == b"42"
            assert time.monotonic() - started >= 2 * 0.080 - SLACK_S

    asyncio.run(scenario())


def test_a_partition_refuses_calls_at_once_and_ends_open_streams(global_cfg):
    async def scenario():
        for rules in (wan.WanRules(), wan.WanRules(delay_ms=20)):  # the plain path and the delayed one
            async with Wan(global_cfg, rules) as link:
                quiet = link.stream("Quiet")(b"", timeout=30)
                assert await quiet.read() == b"first"
                chat = link.bidi()(timeout=30)
                await chat.write(b"a")
                assert (await chat.read()).startswith(b"a ")
                link.set(partitioned={PEER})
                message = f"region partition: {OWN} - {PEER} is cut"
                for call in (quiet, chat):
                    with pytest.raises(grpc.aio.AioRpcError) as ended:
                        await asyncio.wait_for(call.read(), 5)
                    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
                    assert ended.value.details() == message
                    assert await call.code() == grpc.StatusCode.UNAVAILABLE
                with pytest.raises(grpc.aio.AioRpcError) as written:
                    await chat.write(b"b")
                assert written.value.details() == message
                calls_before = link.service.echo_calls
                refused = link.unary()(b"hi", timeout=30)
                assert isinstance(refused, rpc._RefusedCall)  # nothing sent, nothing waited for
                with pytest.raises(grpc.aio.AioRpcError) as unary_refused:
                    await refused
                assert unary_refused.value.details() == message
                with pytest.raises(grpc.aio.AioRpcError):
                    async for _ in link.stream("Ticks")(b"3", timeout=30):
                        pass
                assert link.service.echo_calls == calls_before
                link.set(partitioned=())
                assert await link.unary()(b"back", timeout=10) == b"back"

    asyncio.run(scenario())


def test_a_partition_that_starts_on_the_other_side_cuts_the_link_too(global_cfg):
    async def scenario():
        async with Wan(global_cfg, wan.WanRules(delay_ms=5)) as link:
            link.set(partitioned={OWN})  # this region cut off: every other region is out of reach
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await link.unary()(b"hi", timeout=5)
            assert refused.value.details() == f"region partition: {OWN} - {PEER} is cut"

    asyncio.run(scenario())


def test_loss_fails_about_the_expected_share_and_a_lost_reply_ran(global_cfg):
    calls = 300

    async def scenario():
        async with Wan(global_cfg, wan.WanRules(loss=0.5), seed=11) as link:
            outcomes = []
            for i in range(calls):
                try:
                    await link.unary()(str(i).encode(), timeout=10)
                    outcomes.append("ok")
                except grpc.aio.AioRpcError as error:
                    assert error.code() == grpc.StatusCode.UNAVAILABLE
                    assert error.details() == wan.LOST_MESSAGE
                    outcomes.append("lost")
            ok = outcomes.count("ok")
            ran = link.service.echo_calls
            print(f"loss 0.5 per message: {ok}/{calls} calls answered, {ran} ran on the server")
            # Each way is lost with p = 0.5: a call is answered with (1 - p)^2 = 1/4, and runs with 1/2.
            assert 0.12 * calls < ok < 0.40 * calls
            assert 0.35 * calls < ran < 0.65 * calls
            assert ran > ok  # some calls ran and only their reply was lost
            # A stream ends at its first lost message.
            with pytest.raises(grpc.aio.AioRpcError) as broken:
                async for _ in link.stream("Ticks")(b"200", timeout=10):
                    pass
            assert broken.value.details() == wan.LOST_MESSAGE
            # A lost request breaks a bidi stream too; its writer learns it on a later write.
            chat = link.bidi()(timeout=10)
            with pytest.raises(grpc.aio.AioRpcError) as chat_broken:
                for i in range(200):
                    await chat.write(str(i).encode())
                    await asyncio.sleep(0.002)
                async for _ in chat:
                    pass
            assert chat_broken.value.details() == wan.LOST_MESSAGE
            assert await chat.code() == grpc.StatusCode.UNAVAILABLE

    asyncio.run(scenario())


def test_a_stream_deadline_counts_the_delay(global_cfg):
    async def scenario():
        async with Wan(global_cfg, wan.WanRules(delay_ms=50)) as link:
            started = time.monotonic()
            call = link.stream("Quiet")(b"", timeout=0.3)
            assert await call.read() == b"first"
            assert time.monotonic() - started >= 2 * 0.050 - SLACK_S
            with pytest.raises(grpc.aio.AioRpcError) as late:
                await call.read()
            assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert time.monotonic() - started >= 0.3 - SLACK_S
            # A caller's cancel() ends it as grpc's would.
            call = link.stream("Quiet")(b"", timeout=10)
            assert call.cancel() and call.cancelled() and call.done()
            with pytest.raises(asyncio.CancelledError):
                await call.read()

    asyncio.run(scenario())


def test_no_delay_costs_nothing_and_tools_are_never_delayed(global_cfg):
    async def scenario():
        async with Wan(global_cfg, wan.WanRules()) as link:
            call = link.unary()(b"plain", timeout=5)
            assert type(call).__module__.startswith("grpc")  # grpc's own call: no wrapper, no task
            assert await call == b"plain"
            assert [r async for r in link.stream("Ticks")(b"2", timeout=5)][-1].startswith(b"1 ")
            link.set(delay_ms=30)
            assert isinstance(link.unary()(b"x", timeout=5), rpc._WanUnaryUnaryCall)  # rules apply at once
            # A process without a region identity (a tool), and a channel within its own region: plain.
            assert rpc.region_identity() is None
            tool = rpc.region_channel(link.address, PEER)
            same_region = rpc.region_channel(link.address, OWN, link.state)
            try:
                for channel in (tool, same_region):
                    assert type(channel).__module__.startswith("grpc")
                    assert await channel.unary_unary("/test.Wan/Echo")(b"t", timeout=5) == b"t"
            finally:
                await tool.close()
                await same_region.close()
            with pytest.raises(KeyError):
                rpc.region_channel(link.address, "mars", link.state)
            channels = rpc.Channels(wan_state=link.state)
            try:
                remote = channels.get_remote(link.address, PEER)
                assert isinstance(remote, rpc._WanChannel) and channels.get_remote(link.address, PEER) is remote
            finally:
                await channels.close()

    asyncio.run(scenario())


def test_process_region_identity(global_cfg):
    wan.set_wan(global_cfg, 12, 0, 0, settle_s=0)
    try:
        state = rpc.set_region_identity(global_cfg, PEER)
        assert rpc.region_identity() is state and state.region == PEER and state.rules.delay_ms == 12.0
        with pytest.raises(KeyError):
            rpc.set_region_identity(global_cfg, "mars")
    finally:
        rpc.clear_region_identity()
    assert rpc.region_identity() is None


@pytest.mark.cluster
def test_a_region_node_process_reads_and_follows_the_wan_rules(global_cfg):
    """One real node process of a region: it takes its region identity and applies a rewritten file."""
    region = global_cfg.region(OWN)  # its port block is the one free_base_port found
    cluster = config_mod.default_cluster(region.data_dir, base_port=region.base_port, region=OWN,
                                         global_file=str(global_cfg.path), metrics=False)
    cluster_file = cluster.write()
    ensure_certs(cluster)  # as the launcher does before it starts nodes
    log_path = region.data_dir / "node.log"

    def wait_for(text: str) -> None:
        for _ in range(300):
            if log_path.exists() and text in log_path.read_text(errors="replace"):
                return
            time.sleep(0.1)
        raise AssertionError(f"not in the node's log after 30 s: {text!r}\n{log_path.read_text(errors='replace')}")

    with open(log_path, "wb") as log:
        node = subprocess.Popen([sys.executable, "-m", "tools.node", "--config", str(cluster_file),
                                 "--name", "journal-az1"], stdout=log, stderr=log, env={**os.environ})
    try:
        wait_for(f"region {OWN}: WAN 30.0 ms + 5.0 ms jitter, loss 0.000, partitioned: none")
        wan.partition_region(global_cfg, PEER)
        wait_for(f"WAN rules v1: 30.0 ms + 5.0 ms jitter, loss 0.000, partitioned: {PEER}")
    finally:
        node.send_signal(signal.SIGTERM)
        try:
            node.wait(timeout=30)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait(timeout=10)
