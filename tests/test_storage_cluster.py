"""Storage nodes in a real cluster: journal x3 + adjudicator x3 + storage x6 processes.

Story: writes committed through the adjudicator leader are readable on every storage
copy at ts >= commit_ts; a read slightly in the future waits for the closed timestamp
(heartbeats) and is then served; a SIGKILLed storage node restarts, replays its log and
catches up; a node that was down while the journal truncated past it repairs from peers.
The tests share one cluster and run in file order.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import threading
import time
import uuid

import grpc
import pytest

from quorumdb import limits
from quorumdb.clock import Clock
from tools.launcher import Cluster, node_status
from quorumdb.pb import adjudicator_pb2, adjudicator_pb2_grpc, common_pb2, storage_pb2, storage_pb2_grpc
from tests.util import admin_sync_channel, make_config

pytestmark = pytest.mark.cluster

SERVICES = ("journal", "adjudicator", "storage")
DEADLINE_S = 60.0


class Harness:
    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.config = cluster.config
        self.clock = Clock(self.config.clock_error_ns)
        self.channels: dict[str, grpc.Channel] = {}
        self.leader = self.config.initial_leader
        self.lock = threading.Lock()

    def channel(self, name: str) -> grpc.Channel:
        with self.lock:  # commits run from several threads
            if name not in self.channels:
                self.channels[name] = admin_sync_channel(self.config, name)
            return self.channels[name]

    def storage(self, name: str) -> storage_pb2_grpc.StorageStub:
        return storage_pb2_grpc.StorageStub(self.channel(name))

    def commit(self, writes: dict[bytes, bytes | None]) -> adjudicator_pb2.CommitReply:
        """Commit through the leader, following hints; fails the test after DEADLINE_S."""
        request = adjudicator_pb2.CommitRequest(
            start_ts=self.clock.now().latest,
            writes=[common_pb2.Write(key=k, value=v or b"", tombstone=v is None) for k, v in writes.items()],
            txn_id=uuid.uuid4().hex,
        )
        deadline = time.monotonic() + DEADLINE_S
        last = ""
        while time.monotonic() < deadline:
            stub = adjudicator_pb2_grpc.AdjudicatorStub(self.channel(self.leader))
            try:
                reply = stub.Commit(request, timeout=10)
            except grpc.RpcError as error:
                last = f"{self.leader}: {error.code()}"
                self._next_leader()
                time.sleep(0.2)
                continue
            if reply.outcome == adjudicator_pb2.COMMITTED:
                return reply
            last = f"{self.leader}: {adjudicator_pb2.CommitOutcome.Name(reply.outcome)} {reply.message}"
            if reply.outcome == adjudicator_pb2.NOT_LEADER:
                if reply.leader_hint:
                    self.leader = reply.leader_hint
                else:
                    self._next_leader()
            elif reply.outcome == adjudicator_pb2.UNKNOWN:
                pytest.fail(f"commit outcome unknown: {last}")
            # UNAVAILABLE (no journal majority yet): retry with a fresh start_ts
            request.start_ts = self.clock.now().latest
            time.sleep(0.2)
        pytest.fail(f"no commit within {DEADLINE_S} s; last answer {last}")

    def _next_leader(self) -> None:
        names = [n.name for n in self.config.adjudicators]
        self.leader = names[(names.index(self.leader) + 1) % len(names)]

    def get(self, name: str, keys: list[bytes], ts: int) -> list[storage_pb2.Version]:
        """Get at ts, retrying UNAVAILABLE (not caught up yet / restarting) until DEADLINE_S."""
        deadline = time.monotonic() + DEADLINE_S
        while True:
            try:
                reply = self.storage(name).Get(storage_pb2.GetRequest(keys=keys, ts=ts, wait_ms=2_000), timeout=3)
                return list(reply.versions)
            except grpc.RpcError as error:
                if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
                if time.monotonic() > deadline:
                    pytest.fail(f"{name} could not serve ts {ts} within {DEADLINE_S} s: {error.details()}")
                time.sleep(0.1)

    def status(self, name: str) -> common_pb2.NodeStatus | None:
        return node_status(self.config.node(name), timeout_s=1.0)

    def wait_for(self, what: str, predicate, timeout_s: float = DEADLINE_S):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.1)
        pytest.fail(f"timed out after {timeout_s} s waiting for {what}")

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    # Small journal segments: the peer-repair test needs the journal to truncate past a down node.
    config = make_config(tmp_path_factory.mktemp("storage-cluster"), journal_segment_entries=500)
    with running_harness(config) as harness:
        yield harness


@contextlib.contextmanager
def running_harness(config):
    """The journal, adjudicators and storage of `config` running, able to commit; stopped on the way out."""
    cluster = Cluster(config)
    try:
        names = cluster.names(SERVICES)
        cluster.start(names)
        cluster.wait_ready(names, timeout_s=DEADLINE_S)
        harness = Harness(cluster)
        harness.commit({b"warmup": b"1"})  # the cluster can commit
        yield harness
        harness.close()
    finally:
        cluster.stop_all()


def storage_names(harness: Harness) -> list[str]:
    return [n.name for n in harness.config.storages]


def test_committed_writes_are_readable_on_every_copy(harness):
    first = harness.commit({b"acct/1": b"100", b"acct/2": b"200", b"gone": b"x"})
    second = harness.commit({b"acct/1": b"150", b"gone": None})
    assert second.commit_ts > first.commit_ts
    keys = [b"acct/1", b"acct/2", b"gone", b"never"]
    for name in storage_names(harness):
        at_second = harness.get(name, keys, second.commit_ts)
        assert [(v.found, v.value) for v in at_second] == [
            (True, b"150"), (True, b"200"), (False, b""), (False, b"")], f"{name} at the second commit"
        assert at_second[0].version_ts == second.commit_ts, name
        assert at_second[2].version_ts == second.commit_ts, f"{name}: the delete's version_ts"
        at_first = harness.get(name, keys, second.commit_ts - 1)
        assert [(v.found, v.value) for v in at_first] == [
            (True, b"100"), (True, b"200"), (True, b"x"), (False, b"")], f"{name} just before the second commit"
        scan = harness.storage(name).Scan(
            storage_pb2.ScanRequest(start=b"acct/", end=b"acct0", ts=second.commit_ts, limit=10), timeout=3)
        assert [(v.key, v.value) for v in scan.versions] == [(b"acct/1", b"150"), (b"acct/2", b"200")], name


def test_read_slightly_in_the_future_waits_then_is_served(harness):
    reply = harness.commit({b"future": b"f"})
    future_ts = harness.clock.now().latest + 300_000_000  # 300 ms ahead of every clock
    started = time.monotonic()
    got = harness.storage("storage-az1-a").Get(
        storage_pb2.GetRequest(keys=[b"future"], ts=future_ts, wait_ms=2_000), timeout=3)
    waited_s = time.monotonic() - started
    assert got.versions[0].value == b"f"
    assert got.versions[0].version_ts == reply.commit_ts
    assert waited_s >= 0.15, f"answered after {waited_s:.3f} s: it cannot know ts {future_ts} was closed yet"


def test_sigkilled_storage_node_replays_and_catches_up(harness):
    victim = "storage-az2-a"
    before = harness.commit({b"kill/before": b"1"})
    harness.get(victim, [b"kill/before"], before.commit_ts)  # the victim holds it
    harness.cluster.kill(victim)
    while_down = [harness.commit({b"kill/down%d" % i: b"%d" % i}) for i in range(20)]
    harness.cluster.restart(victim)
    harness.cluster.wait_ready([victim], timeout_s=DEADLINE_S)
    keys = [b"kill/before"] + [b"kill/down%d" % i for i in range(20)]
    versions = harness.get(victim, keys, while_down[-1].commit_ts)
    missing = [v.key for v in versions if not v.found]
    assert not missing, f"{victim} lost committed keys after restart: {missing}"
    log_text = harness.config.log_path(victim).read_text()
    assert "replayed" in log_text
    replay_lines = [line for line in log_text.splitlines() if "replayed" in line]
    assert not replay_lines[-1].split("replayed ")[1].startswith("0 "), replay_lines[-1]
    status = harness.wait_for(f"{victim} healthy", lambda: (s := harness.status(victim)) and s.health == "ok" and s)
    assert status.scl >= while_down[-1].index


def test_peer_repair_when_the_journal_truncated_past_a_down_node(harness):
    victim = "storage-az3-b"
    before = harness.commit({b"repair/before": b"1"})
    harness.get(victim, [b"repair/before"], before.commit_ts)
    victim_scl = harness.status(victim).scl
    harness.cluster.kill(victim)
    # The other 5 copies keep reporting SCL, so the 4/6 durable index passes the victim and the
    # journal drops whole segments below it. Commit (concurrently: group commit) until it has.
    segment_entries = harness.config.journal_segment_entries
    keys: list[bytes] = []
    last = before
    deadline = time.monotonic() + 4 * DEADLINE_S
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        while True:
            batch = [b"repair/%06d" % (len(keys) + i) for i in range(min(500, segment_entries))]
            replies = list(pool.map(lambda key: harness.commit({key: key}), batch))
            keys += batch
            last = max(replies + [last], key=lambda r: r.commit_ts)
            firsts = [s.first_index for j in harness.config.journals if (s := harness.status(j.name))]
            if firsts and min(firsts) > victim_scl + 1:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"journal never truncated past {victim_scl + 1} after {len(keys)} commits "
                            f"(first_index per replica: {firsts})")
    harness.cluster.restart(victim)
    harness.cluster.wait_ready([victim], timeout_s=DEADLINE_S)
    checked = keys[:limits.GET_KEYS_MAX // 2] + keys[-limits.GET_KEYS_MAX // 2:]
    versions = harness.get(victim, checked, last.commit_ts)
    missing = [v.key for v in versions if not v.found]
    assert not missing, f"{victim} is missing {len(missing)} committed keys after repair, e.g. {missing[:3]}"
    log_text = harness.config.log_path(victim).read_text()
    assert "peer repair" in log_text, "the gap had to come from peers"
    assert "complete" in log_text, "the peer repair must have finished"
