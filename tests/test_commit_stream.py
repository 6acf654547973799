"""The compute node's commit stream (compute_node/cluster/commit_stream.py): batching and failure meaning.

The pure parts are tested directly; the batching against the fake adjudicator of
test_compute_transport (a real gRPC server), and against a real cluster in the e2e tests.
"""
from __future__ import annotations

import asyncio

import grpc
import pytest

from compute_node.cluster.adjudicator_client import AdjudicatorClient
from compute_node.cluster.commit_stream import SendFailure, failure_kind, take_batch
from quorumdb import limits
from tests.test_compute_transport import WRITES, fake  # noqa: F401  (the fixture)

REFUSED = "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Connection refused"


def test_take_batch_bounds_count_and_bytes_but_always_takes_one():
    assert take_batch([], 4, 100) == 0
    assert take_batch([10] * 10, 4, 1000) == 4
    assert take_batch([40, 40, 40], 10, 100) == 2
    assert take_batch([500, 1], 10, 100) == 1  # a request bigger than the byte bound still goes, alone
    assert take_batch([1, 500], 10, 100) == 1  # ...but not behind another one


def test_failure_kind():
    # Never written: the adjudicator cannot have seen it, whatever broke.
    assert failure_kind(False, grpc.StatusCode.DEADLINE_EXCEEDED, "") is SendFailure.NOT_SENT
    assert failure_kind(False, None, "stream ended") is SendFailure.NOT_SENT
    # Written, and no connection was ever made: nothing reached the adjudicator.
    assert failure_kind(True, grpc.StatusCode.UNAVAILABLE, REFUSED) is SendFailure.NOT_SENT
    assert failure_kind(True, grpc.StatusCode.UNAVAILABLE, "DNS resolution failed for x") is SendFailure.NOT_SENT
    # Written, then the stream broke: maybe committed. A partition cutting an open stream is one of these.
    assert failure_kind(True, grpc.StatusCode.UNAVAILABLE, "Socket closed") is SendFailure.MAYBE_SENT
    assert failure_kind(True, grpc.StatusCode.UNAVAILABLE,
                        "network partition: link compute-az1-adjudicator-az1 is cut") is SendFailure.MAYBE_SENT
    assert failure_kind(True, grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") is SendFailure.MAYBE_SENT
    assert failure_kind(True, None, "the stream ended without answering") is SendFailure.MAYBE_SENT


async def test_concurrent_commits_share_stream_messages(fake):  # noqa: F811
    await fake.start_adjudicators()
    client = AdjudicatorClient(fake.config, fake.channels)
    assert not client.unary
    commits = [client.commit(100 + i, WRITES, [], f"t{i}") for i in range(200)]
    results = await asyncio.wait_for(asyncio.gather(*commits), 30)
    assert results == [101 + i for i in range(200)]  # each reply reached its own request
    batches, requests = client.stream_figures()
    assert requests == 200
    assert batches < requests, (batches, requests)  # group commit: fewer messages than commits
    assert fake.adjudicators["adjudicator-az1"].calls == 200
    await client.close()


async def test_closed_client_refuses_without_sending(fake, monkeypatch):  # noqa: F811
    monkeypatch.setattr(limits, "COMMIT_TIMEOUT_S", 1.0)
    await fake.start_adjudicators()
    client = AdjudicatorClient(fake.config, fake.channels)
    await client.close()
    with pytest.raises(Exception) as raised:
        await asyncio.wait_for(client.commit(100, WRITES, [], "t1"), 15)
    assert getattr(raised.value, "sqlstate", "") == "57P03"  # nothing was sent anywhere: not 40003
    assert all(a.calls == 0 for a in fake.adjudicators.values())


def test_streams_wait_the_simulated_cross_az_distance_per_message(tmp_path, monkeypatch):
    from quorumdb import config as config_mod
    from quorumdb import rpc

    cluster = config_mod.default_cluster(tmp_path, insecure=True)  # in-process plaintext servers: partitions, not TLS
    cluster.write()
    monkeypatch.setenv(rpc.CROSS_AZ_DELAY_ENV, "3")
    rpc.set_identity(cluster, "compute-az1")
    try:
        assert rpc.cross_az_wait_s("adjudicator-az1") == 0.0  # same AZ
        assert rpc.cross_az_wait_s("adjudicator-az2") == pytest.approx(0.006)  # a round trip of 3 ms each way
        assert rpc.cross_az_wait_s("no-such-node") == 0.0
    finally:
        rpc.clear_identity()
    assert rpc.cross_az_wait_s("adjudicator-az2") == 0.0  # tools: never delayed


async def test_read_demands_are_coalesced_and_carry_the_highest_ts(fake):  # noqa: F811
    await fake.start_adjudicators()
    client = AdjudicatorClient(fake.config, fake.channels)
    leader = fake.adjudicators["adjudicator-az1"]
    for ts in range(1_000, 1_050):  # a burst of transactions starting: few messages, the last ts
        client.note_reads(ts)
    await wait_for_value(lambda: leader.read_demand_ts, 1_049)
    assert 1 <= leader.read_signals < 50, leader.read_signals
    client.note_reads(2_000)  # a later transaction: its own demand
    await wait_for_value(lambda: leader.read_demand_ts, 2_000)
    signals = leader.read_signals
    assert await client.commit(100, WRITES, [], "t1") == 101  # the stream still carries commits
    assert leader.read_signals == signals
    await client.close()


async def wait_for_value(get, expected, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while get() != expected:
        assert asyncio.get_running_loop().time() < deadline, f"{get()} != {expected} after {timeout_s} s"
        await asyncio.sleep(0.01)
