"""Keepalive pings on an idle connection are welcome at the server.

The clients ping every keepalive_time (quorumdb/rpc.py OPTIONS) so a dead peer is noticed in
seconds. A gRPC server by default accepts one ping per 5 minutes without data and answers faster
ones, after two strikes, with GOAWAY "too_many_pings": the connection drops and any call caught on
it fails UNAVAILABLE (a switchover once failed that way on a loaded machine). The servers' options
(SERVER_OPTIONS) must allow the clients' rate: here an idle channel stays READY through several
pings. That test is slow by nature (pings come seconds apart), so marked `long` (the regions step
of .ci/run).
"""
from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from quorumdb import rpc
from quorumdb.pb import common_pb2, journal_pb2_grpc

pytestmark = pytest.mark.timeout(120)

# Above the servers' allowed minimum, below the product's 10 s, so that the GOAWAY a default
# server would send (after the third fast ping) comes within the test's idle time.
CLIENT_KEEPALIVE_MS = rpc.KEEPALIVE_PING_ALLOWED_MS + 1_000
IDLE_S = 4.5 * CLIENT_KEEPALIVE_MS / 1000


class Answers(journal_pb2_grpc.JournalServicer):
    async def Status(self, request, context):
        return common_pb2.NodeStatus(role="replica", health="ok")


def test_the_servers_allow_the_clients_keepalive_rate():
    client = dict(rpc.OPTIONS)
    server = dict(rpc.SERVER_OPTIONS)
    assert server["grpc.http2.min_ping_interval_without_data_ms"] <= client["grpc.keepalive_time_ms"]
    assert server["grpc.keepalive_permit_without_calls"] == 1


@pytest.mark.long
async def test_an_idle_channel_stays_connected_through_keepalive_pings():
    server = rpc.new_server()
    journal_pb2_grpc.add_JournalServicer_to_server(Answers(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    options = [(key, CLIENT_KEEPALIVE_MS if key == "grpc.keepalive_time_ms" else value) for key, value in rpc.OPTIONS]
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options)
    try:
        stub = journal_pb2_grpc.JournalStub(channel)
        await stub.Status(common_pb2.StatusRequest(), timeout=5)
        states = set()
        deadline = time.monotonic() + IDLE_S
        while time.monotonic() < deadline:
            states.add(channel.get_state())
            await asyncio.sleep(0.2)
        assert states == {grpc.ChannelConnectivity.READY}, f"the idle connection dropped: {states}"
        assert (await stub.Status(common_pb2.StatusRequest(), timeout=5)).health == "ok"
    finally:
        await channel.close()
        await server.stop(0)
