"""The compute node's Backend against real journal, adjudicator and storage processes.

Story: a QuorumBackend (what every SQL session uses) commits write sets and reads
them back with 3/6 quorum reads; storage copies are SIGKILLed until the quorum is
gone; the adjudicator leader changes under it. Then the same through a whole
cluster with compute nodes and the Python client.
"""
from __future__ import annotations

import asyncio
import time

import pytest

from compute_node.cluster.backend import QuorumBackend
from quorumdb import errors, limits, rpc
from tools.launcher import Cluster
from quorumdb.pb import adjudicator_pb2, adjudicator_pb2_grpc, common_pb2
from tests.conftest import READY_TIMEOUT_S, running_nodes
from tests.util import admin_channel, admin_sync_channel, make_config, node_credentials

pytestmark = pytest.mark.cluster

SERVICES_BELOW_COMPUTE = ("journal", "adjudicator", "storage")


@pytest.fixture
def lower_cluster(tmp_path, request):
    """Journal, adjudicators and storage (no compute), healthy."""
    cluster = Cluster(make_config(tmp_path))
    with running_nodes(cluster, cluster.names(SERVICES_BELOW_COMPUTE), request, READY_TIMEOUT_S, healthy=True):
        yield cluster


@pytest.fixture
async def backend(lower_cluster):
    compute_node = lower_cluster.config.computes[0]  # az1: reads go to storage-az1-* first
    # The backend runs in the test as compute-az1 would: with its certificate.
    channels = rpc.Channels(credentials=node_credentials(lower_cluster.config, compute_node.name))
    yield QuorumBackend(lower_cluster.config, compute_node, channels)
    await channels.close()


async def commit(backend: QuorumBackend, writes, txn_id: str) -> int:
    start_ts = backend.start_ts()
    commit_ts = await backend.commit(start_ts, writes, [], txn_id)
    assert commit_ts > start_ts
    return commit_ts


async def test_commit_then_quorum_read_and_scan(backend):
    await commit(backend, [(b"t/a", b"1"), (b"t/b", b"2"), (b"t/c", b"3")], "txn-1")
    await commit(backend, [(b"t/b", None), (b"t/a", b"10")], "txn-2")
    ts = backend.start_ts()
    assert await backend.get_many([b"t/a", b"t/b", b"t/c", b"t/zz"], ts) == {
        b"t/a": b"10", b"t/b": None, b"t/c": b"3", b"t/zz": None
    }
    rows, more = await backend.scan(b"t/", b"t0", ts, limit=1)
    assert rows == [(b"t/a", b"10")] and more
    rows, more = await backend.scan(b"t/a\x00", b"t0", ts, limit=10)
    assert rows == [(b"t/c", b"3")] and not more


async def test_conflicting_commit_is_40001(backend):
    start_ts = backend.start_ts()
    await commit(backend, [(b"c/k", b"first")], "txn-first")
    with pytest.raises(errors.SqlError) as raised:
        await backend.commit(start_ts, [(b"c/k", b"second")], [], "txn-second")
    assert raised.value.sqlstate == "40001" and "OC000" in raised.value.message


async def test_reads_survive_three_dead_copies_and_fail_clearly_with_four(lower_cluster, backend):
    await commit(backend, [(b"q/k", b"v")], "txn-q")
    for name in ("storage-az1-a", "storage-az1-b", "storage-az2-a"):
        lower_cluster.kill(name)
    assert await backend.get_many([b"q/k"], backend.start_ts()) == {b"q/k": b"v"}
    rows, _ = await backend.scan(b"q/", b"q0", backend.start_ts(), limit=10)
    assert rows == [(b"q/k", b"v")]
    lower_cluster.kill("storage-az3-b")
    began = time.monotonic()
    with pytest.raises(errors.SqlError) as raised:
        await backend.get_many([b"q/k"], backend.start_ts())
    assert raised.value.sqlstate == errors.CANNOT_CONNECT_NOW
    assert "read quorum" in raised.value.message
    assert time.monotonic() - began < limits.READ_QUORUM_TIMEOUT_S + 1


async def test_commit_follows_leader_change(lower_cluster, backend):
    await commit(backend, [(b"l/k", b"before")], "txn-before")
    assert backend.leader == lower_cluster.config.initial_leader
    standby = next(n for n in lower_cluster.config.adjudicators if n.name != backend.leader)
    async with admin_channel(lower_cluster.config, standby.name) as channel:
        stub = adjudicator_pb2_grpc.AdjudicatorStub(channel)
        reply = await stub.TakeOver(adjudicator_pb2.TakeOverRequest(), timeout=10)
        assert reply.ok, reply.message
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            status = await stub.Status(common_pb2.StatusRequest(), timeout=2)
            if status.role == "leader":
                break
            await asyncio.sleep(0.1)
    # The backend still caches the old leader; the commit must find the new one.
    await commit(backend, [(b"l/k", b"after")], "txn-after")
    assert backend.leader == standby.name
    assert await backend.get_many([b"l/k"], backend.start_ts()) == {b"l/k": b"after"}


async def test_probe_reports_ok_then_why_not(lower_cluster, backend):
    assert await backend.probe() is None
    for node in lower_cluster.config.storages[:4]:
        lower_cluster.kill(node.name)
    problem = await backend.probe()
    assert problem is not None and "read quorum" in problem


# --- through compute nodes and the Python client ------------------------------------------


def compute_connection(cluster: Cluster, index: int = 0):
    from quorumdb.client import connect

    node = cluster.config.computes[index]
    return connect(node.host, node.port)


def take_over(cluster: Cluster) -> str:
    """Make a standby adjudicator lead (TakeOver RPC); returns its name once it says it leads."""
    from tools.launcher import node_status

    old_leader = next(
        n.name for n in cluster.config.adjudicators if (s := node_status(n)) is not None and s.role == "leader"
    )
    standby = next(n for n in cluster.config.adjudicators if n.name != old_leader)
    with admin_sync_channel(cluster.config, standby.name) as channel:
        reply = adjudicator_pb2_grpc.AdjudicatorStub(channel).TakeOver(adjudicator_pb2.TakeOverRequest(), timeout=10)
    assert reply.ok, reply.message
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = node_status(standby)
        if status is not None and status.role == "leader":
            return standby.name
        time.sleep(0.1)
    raise AssertionError(f"{standby.name} accepted TakeOver but does not lead after 10 s")


def test_sql_through_compute_with_storage_loss_and_leader_change(cluster_factory):
    from quorumdb.client import DatabaseError

    cluster = cluster_factory()
    with compute_connection(cluster, 0) as conn, compute_connection(cluster, 1) as other:
        conn.execute("CREATE TABLE kv (k INT PRIMARY KEY, v TEXT)")
        assert conn.execute("INSERT INTO kv VALUES ($1, $2), ($3, $4)", [1, "one", 2, "it's two"]).rowcount == 2
        # Another compute node, another AZ: sees the acknowledged commit at once.
        assert other.execute("SELECT k, v FROM kv ORDER BY k").rows == [(1, "one"), (2, "it's two")]

        def bump(c):
            (v,), = c.execute("SELECT v FROM kv WHERE k = 1").rows
            c.execute("UPDATE kv SET v = $1 WHERE k = 1", [v + "!"])

        conn.run_transaction(bump)
        assert other.execute("SELECT v FROM kv WHERE k = 1").rows == [("one!",)]

        # 3 of 6 storage copies lost: reads go on.
        for name in ("storage-az1-a", "storage-az1-b", "storage-az2-a"):
            cluster.kill(name)
        assert conn.execute("SELECT count(*) FROM kv").rows == [(2,)]

        # The leader changes: the next commit follows NOT_LEADER to the new one.
        new_leader = take_over(cluster)
        conn.execute("INSERT INTO kv VALUES (3, 'three')")
        assert other.execute("SELECT v FROM kv WHERE k = 3").rows == [("three",)]
        status = cluster.wait_ready([cluster.config.computes[0].name])[cluster.config.computes[0].name]
        assert status.leader == new_leader

        # A 4th copy lost: no read quorum, a clear error within the deadline, not a hang.
        cluster.kill("storage-az3-b")
        began = time.monotonic()
        with pytest.raises(DatabaseError) as raised:
            conn.execute("SELECT v FROM kv WHERE k = 1")
        assert raised.value.sqlstate == errors.CANNOT_CONNECT_NOW
        assert "read quorum" in raised.value.message
        assert time.monotonic() - began < limits.READ_QUORUM_TIMEOUT_S + 2
        # The session survives the error; the copies come back and reads work again.
        cluster.restart("storage-az1-a")
        cluster.wait_ready(["storage-az1-a"], timeout_s=60, healthy=True)
        if conn.transaction_status != "I":
            conn.execute("ROLLBACK")
        assert conn.execute("SELECT v FROM kv WHERE k = 1").rows == [("one!",)]
