"""An AZ partition with real processes: the minority side stops, the majority goes on, heal catches up.

Story: adjudicator-az3 is made leader (TakeOver); az3 (its compute, journal,
adjudicator and 2 storage copies) is cut off from az1 and az2. The old leader in az3
must stop committing (a commit sent straight to it is never COMMITTED); a leader on the
majority side takes over and commits continue through compute-az1; compute-az3 refuses
reads at fresh timestamps (an error, never stale rows) and cannot commit. After heal,
az3 catches up and serves every acknowledged row again, and commits through it work.
Printed: time to the first commit on the majority side, time for az3 to catch up.
"""
from __future__ import annotations

import functools
import threading
import time

import grpc

from tests.util import admin_sync_channel, poll_until
import pytest

from quorumdb import client, limits, netfault
from quorumdb.clock import Clock
from quorumdb.pb import adjudicator_pb2, adjudicator_pb2_grpc, common_pb2

pytestmark = pytest.mark.cluster

RPC_TIMEOUT_S = 10.0
RECOVERY_TIMEOUT_S = 90.0
# A key no table owns (tables live under 0x02): only written if the minority leader wrongly commits.
STRAY_KEY = b"\x7fnetfault-minority-commit"


def adjudicator(cluster, name: str) -> tuple[grpc.Channel, adjudicator_pb2_grpc.AdjudicatorStub]:
    channel = admin_sync_channel(cluster.config, name)
    return channel, adjudicator_pb2_grpc.AdjudicatorStub(channel)


def status(stub) -> common_pb2.NodeStatus | None:
    try:
        return stub.Status(common_pb2.StatusRequest(), timeout=2.0)
    except grpc.RpcError:
        return None


wait_until = functools.partial(poll_until, timeout_s=RECOVERY_TIMEOUT_S, every_s=0.1)


def sql(port: int, statement: str, timeout_s: float = limits.STATEMENT_TIMEOUT_S):
    """(rows, None) or (None, DatabaseError)."""
    try:
        with client.connect("127.0.0.1", port, timeout_s=timeout_s) as connection:
            return connection.execute(statement).rows, None
    except client.DatabaseError as error:
        return None, error


def insert_until_acknowledged(port: int, first_key: int, what: str) -> tuple[int, float]:
    """Insert fresh keys until one is acknowledged: (its key, seconds taken). 40003 keys may or may not exist."""
    started = time.monotonic()
    key = first_key
    while True:
        _, error = sql(port, f"INSERT INTO kv VALUES ({key}, 'v{key}')")
        if error is None:
            return key, time.monotonic() - started
        assert time.monotonic() - started < RECOVERY_TIMEOUT_S, f"{what}: no commit within the bound; last: {error}"
        key += 1
        time.sleep(0.1)


def create_table(port: int) -> None:
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    while True:
        _, error = sql(port, "CREATE TABLE kv (k INT PRIMARY KEY, v TEXT)")
        if error is None or keys_through(port) is not None:  # a retried CREATE may find its own table
            return
        assert time.monotonic() < deadline, f"CREATE TABLE keeps failing: {error}"
        time.sleep(0.2)


def keys_through(port: int) -> set[int] | None:
    rows, error = sql(port, "SELECT k FROM kv")
    return None if error is not None else {row[0] for row in rows}


@pytest.mark.long  # about 35 s (waits out an AZ's isolation and its catch-up): the CI's regions-and-long step runs it
def test_isolated_az_stops_committing_and_catches_up_after_heal(cluster_factory):
    cluster = cluster_factory()
    config = cluster.config
    port1, port3 = config.node("compute-az1").port, config.node("compute-az3").port
    clock = Clock(config.clock_error_ns)
    channels = []
    try:
        stubs = {}
        for node in config.adjudicators:
            channel, stubs[node.name] = adjudicator(cluster, node.name)
            channels.append(channel)

        # The leader is in az3.
        taken = stubs["adjudicator-az3"].TakeOver(adjudicator_pb2.TakeOverRequest(), timeout=RPC_TIMEOUT_S)
        assert taken.ok, taken
        wait_until(lambda: (s := status(stubs["adjudicator-az3"])) and s.role == "leader", "adjudicator-az3 to lead")
        create_table(port1)
        acknowledged = {insert_until_acknowledged(port1, key, "before the cut")[0] for key in (1, 10, 20)}
        assert acknowledged <= (keys_through(port3) or set()), "az3 should see the rows before the cut"

        # Cut az3 off. Meanwhile, a commit sent straight to the old leader in az3 (a tool is never cut).
        cut_at = time.monotonic()
        netfault.isolate_az(config, "az3")  # returns once every node has applied the rules (~0.25 s)
        minority: dict[str, object] = {}

        def commit_to_minority_leader() -> None:
            request = adjudicator_pb2.CommitRequest(
                start_ts=clock.now().latest, writes=[common_pb2.Write(key=STRAY_KEY, value=b"x")], txn_id="minority")
            try:
                minority["reply"] = stubs["adjudicator-az3"].Commit(request, timeout=limits.COMMIT_TIMEOUT_S)
            except grpc.RpcError as error:
                minority["error"] = error.code()

        minority_thread = threading.Thread(target=commit_to_minority_leader)
        minority_thread.start()

        # Commits continue through az1 once a majority-side adjudicator leads.
        key, _ = insert_until_acknowledged(port1, 100, "a commit through compute-az1 during the partition")
        acknowledged.add(key)
        failover_s = time.monotonic() - cut_at
        print(f"partition: first commit through compute-az1 acknowledged {failover_s:.1f} s after the cut")
        leaders = {name: s.epoch for name in ("adjudicator-az1", "adjudicator-az2")
                   if (s := status(stubs[name])) is not None and s.role == "leader"}
        assert leaders and max(leaders.values()) > taken.epoch, leaders
        more, _ = insert_until_acknowledged(port1, key + 1, "a second commit")
        acknowledged.add(more)

        minority_thread.join(timeout=limits.COMMIT_TIMEOUT_S + 5)
        assert not minority_thread.is_alive()
        reply = minority.get("reply")
        assert reply is None or reply.outcome != adjudicator_pb2.COMMITTED, f"the minority leader committed: {reply}"
        outcome = adjudicator_pb2.CommitOutcome.Name(reply.outcome) if reply else minority
        print(f"partition: a commit sent to the old leader in az3 got {outcome}")
        later = adjudicator_pb2.CommitRequest(
            start_ts=clock.now().latest, writes=[common_pb2.Write(key=STRAY_KEY, value=b"y")], txn_id="minority-2")
        try:
            second = stubs["adjudicator-az3"].Commit(later, timeout=limits.COMMIT_TIMEOUT_S)
            assert second.outcome != adjudicator_pb2.COMMITTED, second
        except grpc.RpcError:
            pass

        # az3's compute node refuses fresh reads (never stale rows) and cannot commit.
        rows, error = sql(port3, "SELECT k FROM kv")
        assert rows is None, f"compute-az3 answered during the partition: {rows} (acknowledged: {acknowledged})"
        print(f"partition: compute-az3 read refused with {error.sqlstate}: {error.message}")
        assert error.sqlstate in ("57P03", "40003", "57014", "08006"), error
        _, commit_error = sql(port3, "INSERT INTO kv VALUES (999999, 'az3')")
        assert commit_error is not None, "compute-az3 committed during the partition"

        # Heal: az3 catches up and serves every acknowledged row, then commits again.
        netfault.heal(config)
        healed_at = time.monotonic()
        seen = wait_until(lambda: (keys := keys_through(port3)) is not None and acknowledged <= keys and keys,
                          "compute-az3 to serve every acknowledged row after heal")
        print(f"heal: compute-az3 serves all {len(seen)} rows {time.monotonic() - healed_at:.1f} s after the heal")
        key3, took = insert_until_acknowledged(port3, 1000, "a commit through compute-az3 after heal")
        print(f"heal: commit through compute-az3 acknowledged after {took:.1f} s")
        assert key3 in (keys_through(port1) or set())
        wait_until(lambda: (s := status(stubs["adjudicator-az3"])) is not None and s.applied_index > 0,
                   "adjudicator-az3 to answer after heal")
    finally:
        for channel in channels:
            channel.close()
