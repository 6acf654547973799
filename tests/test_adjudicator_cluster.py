"""The adjudicator with real processes: 3 journal replicas + 3 adjudicators on 127.0.0.1.

Story: commits go through the initial leader; a stale start_ts conflicts; a standby
redirects to the leader; an admin TakeOver on a standby fences the old leader (its next
commit is not COMMITTED), the new leader commits, still detects a conflict against a commit
the OLD leader made, and commit timestamps keep increasing across the change. A second
test SIGKILLs the leader and checks that a standby takes over on its own.
"""
from __future__ import annotations

import contextlib
import functools
import time
import uuid

import grpc
import pytest

from quorumdb.clock import Clock
from tools.launcher import Cluster
from quorumdb.pb import adjudicator_pb2, adjudicator_pb2_grpc, common_pb2
from tests.conftest import call_failed, dump_logs
from tests.util import admin_sync_channel, make_config, poll_until

pytestmark = pytest.mark.cluster

RPC_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 60.0


def stub(cluster: Cluster, name: str) -> tuple[grpc.Channel, adjudicator_pb2_grpc.AdjudicatorStub]:
    channel = admin_sync_channel(cluster.config, name)
    return channel, adjudicator_pb2_grpc.AdjudicatorStub(channel)


@contextlib.contextmanager
def adjudicator_stubs(cluster: Cluster):
    """A stub for each adjudicator of `cluster`, by name; their channels closed on the way out."""
    channels, stubs = [], {}
    try:
        for node in cluster.config.adjudicators:
            channel, stubs[node.name] = stub(cluster, node.name)
            channels.append(channel)
        yield stubs
    finally:
        for channel in channels:
            channel.close()


def commit(stub_, clock: Clock, key: bytes, start_ts: int | None = None, txn_id: str = "") -> adjudicator_pb2.CommitReply:
    request = adjudicator_pb2.CommitRequest(
        start_ts=clock.now().latest if start_ts is None else start_ts,
        writes=[common_pb2.Write(key=key, value=b"value of " + key)],
        txn_id=txn_id or uuid.uuid4().hex,  # a txn_id seen before is answered as a duplicate
    )
    return stub_.Commit(request, timeout=RPC_TIMEOUT_S)


def status(stub_) -> common_pb2.NodeStatus:
    return stub_.Status(common_pb2.StatusRequest(), timeout=RPC_TIMEOUT_S)


wait_until = functools.partial(poll_until, timeout_s=20.0)


@pytest.fixture
def small_cluster(tmp_path, request):
    def start(**settings) -> Cluster:
        cluster = Cluster(make_config(tmp_path, **settings))
        started.append(cluster)
        names = cluster.names(["journal", "adjudicator"])
        cluster.start(names)
        cluster.wait_ready(names, timeout_s=READY_TIMEOUT_S, healthy=True)
        return cluster

    started: list[Cluster] = []
    yield start
    failed = call_failed(request)
    for cluster in started:
        if failed:
            dump_logs(cluster, lines=40)
        cluster.stop_all()


def test_commit_conflict_redirect_and_take_over(small_cluster):
    cluster = small_cluster(failover_timeout_ms=0)
    clock = Clock(cluster.config.clock_error_ns)
    with adjudicator_stubs(cluster) as stubs:
        old_name, new_name = "adjudicator-az1", "adjudicator-az2"
        old, new = stubs[old_name], stubs[new_name]

        start_ts = clock.now().latest
        first = commit(old, clock, b"account-1", start_ts=start_ts)
        assert first.outcome == adjudicator_pb2.COMMITTED, first
        assert first.commit_ts > start_ts and first.index > 0
        assert clock.now().earliest > first.commit_ts, "acknowledged before commit-wait"
        stale = commit(old, clock, b"account-1", start_ts=start_ts, txn_id="stale")
        assert stale.outcome == adjudicator_pb2.CONFLICT and stale.conflict_key == b"account-1", stale
        later = commit(old, clock, b"account-2")
        assert later.outcome == adjudicator_pb2.COMMITTED and later.commit_ts > first.commit_ts

        redirected = commit(new, clock, b"account-3")
        assert redirected.outcome == adjudicator_pb2.NOT_LEADER and redirected.leader_hint == old_name, redirected
        old_status = status(old)
        assert old_status.role == "leader" and old_status.service == "adjudicator"
        wait_until(lambda: status(new).applied_index >= later.index, "the standby to apply the leader's commits")

        taken = new.TakeOver(adjudicator_pb2.TakeOverRequest(), timeout=RPC_TIMEOUT_S)
        assert taken.ok and taken.epoch > old_status.epoch, taken
        after = commit(old, clock, b"account-4")
        assert after.outcome in (adjudicator_pb2.NOT_LEADER, adjudicator_pb2.UNKNOWN), after
        wait_until(lambda: status(old).role == "standby", "the old leader to step down")

        # A write-write conflict against the OLD leader's commit is still caught.
        conflict = commit(new, clock, b"account-1", start_ts=start_ts, txn_id="stale-again")
        assert conflict.outcome == adjudicator_pb2.CONFLICT, conflict
        fresh = commit(new, clock, b"account-1")
        assert fresh.outcome == adjudicator_pb2.COMMITTED, fresh
        assert fresh.commit_ts > later.commit_ts and fresh.index > later.index
        new_status = status(new)
        assert new_status.role == "leader" and new_status.epoch == taken.epoch
        hinted = wait_until(lambda: (r := commit(old, clock, b"account-5")).leader_hint == new_name and r,
                            "the old leader to point at the new one")
        assert hinted.outcome == adjudicator_pb2.NOT_LEADER


def test_standby_takes_over_after_the_leader_is_killed(small_cluster):
    cluster = small_cluster(failover_timeout_ms=600)
    clock = Clock(cluster.config.clock_error_ns)
    with adjudicator_stubs(cluster) as stubs:
        before = commit(stubs["adjudicator-az1"], clock, b"k")
        assert before.outcome == adjudicator_pb2.COMMITTED, before
        killed_at = time.monotonic()
        cluster.kill("adjudicator-az1")

        def new_leader():
            for name in ("adjudicator-az2", "adjudicator-az3"):
                try:
                    if status(stubs[name]).role == "leader":
                        return name
                except grpc.RpcError:
                    pass
            return None

        leader = wait_until(new_leader, "a standby to take over", timeout_s=20)
        took_s = time.monotonic() - killed_at
        assert took_s < 10, f"failover took {took_s:.1f} s"
        after = wait_until(
            lambda: (r := commit(stubs[leader], clock, b"k")).outcome == adjudicator_pb2.COMMITTED and r,
            "a commit through the new leader")
        assert after.commit_ts > before.commit_ts and after.index > before.index
