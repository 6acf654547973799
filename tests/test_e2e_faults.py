"""Crashes in the middle of a write workload, and whole-cluster restarts.

SIGKILL of one storage node and one journal replica in the middle of a
write workload; writes continue; after restart every acknowledged commit is on
every storage copy. Whole-cluster restart (every process SIGKILLed) keeps every
acknowledged commit.
"""
from __future__ import annotations

import threading
import time

import grpc
import pytest

from quorumdb import limits, rpc
from quorumdb.client import DatabaseError, connect
from quorumdb.clock import Clock
from tools.launcher import node_status
from quorumdb.pb import storage_pb2, storage_pb2_grpc

pytestmark = pytest.mark.cluster


class InsertWorkload:
    """Threads inserting unique ids through every compute node; records what was acknowledged."""

    def __init__(self, cluster, threads: int = 3):
        self.cluster = cluster
        self.acked: set[int] = set()
        self.unknown: set[int] = set()
        self.failed: list[str] = []
        self.acked_during: dict[str, int] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, worker: int) -> None:
        node = self.cluster.config.computes[worker % len(self.cluster.config.computes)]
        next_id = worker * 1_000_000
        conn = None
        deadline = time.monotonic() + 120
        while not self._stop.is_set() and time.monotonic() < deadline:
            next_id += 1
            try:
                if conn is None:
                    conn = connect(node.host, node.port)
                conn.execute(f"INSERT INTO acks VALUES ({next_id}, 'w{worker}')")
            except DatabaseError as e:
                with self._lock:
                    # 40003, or the connection lost mid-statement (08xxx), leaves the outcome
                    # unknown: the commit may have become durable before the reply was lost.
                    if e.sqlstate == "40003" or e.sqlstate.startswith("08"):
                        self.unknown.add(next_id)
                    else:
                        self.failed.append(f"{next_id}: {e.sqlstate} {e.message}")
                if e.sqlstate.startswith("08"):
                    conn = None
                time.sleep(0.05)
                continue
            with self._lock:
                self.acked.add(next_id)
        if conn is not None:
            conn.close()

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def count(self) -> int:
        with self._lock:
            return len(self.acked)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in self._threads), "workload threads did not stop"


def wait_for(predicate, timeout_s: float, what: str, interval_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def leader_commit_index(cluster) -> int:
    for node in cluster.config.adjudicators:
        status = node_status(node)
        if status is not None and status.role == "leader":
            return status.commit_index
    return 0


def storage_caught_up(cluster, index: int) -> bool:
    for node in cluster.config.storages:
        status = node_status(node)
        if status is None or status.scl < index:
            return False
    return True


def scan_copy(node, ts: int) -> list[tuple[bytes, bytes]]:
    """Every live key of one storage copy at ts, read directly (no quorum)."""
    rows: list[tuple[bytes, bytes]] = []
    start = b""
    # the cluster this test process started: its admin credentials (rpc.remember_cluster)
    with rpc.sync_client_channel(node.address, rpc.known_credentials(node.address)) as channel:
        stub = storage_pb2_grpc.StorageStub(channel)
        for _ in range(10_000):
            reply = stub.Scan(
                storage_pb2.ScanRequest(start=start, end=b"", ts=ts, limit=limits.SCAN_PAGE_MAX,
                                        wait_ms=limits.STORAGE_READ_WAIT_MS),
                timeout=limits.STORAGE_READ_TIMEOUT_S,
            )
            rows += [(v.key, v.value) for v in reply.versions]
            if not reply.more or not reply.versions:
                return rows
            start = reply.versions[-1].key + b"\x00"
    raise AssertionError("scan did not finish")


def assert_all_present(cluster, workload: InsertWorkload) -> None:
    node = cluster.config.computes[1]
    with connect(node.host, node.port) as conn:
        present = {row[0] for row in conn.execute("SELECT id FROM acks").rows}
    missing = workload.acked - present
    assert not missing, f"{len(missing)} acknowledged inserts missing, e.g. {sorted(missing)[:5]}"
    extra = present - workload.acked - workload.unknown
    assert not extra, f"rows that were never acknowledged nor unknown: {sorted(extra)[:5]}"


def start_inserts(cluster) -> InsertWorkload:
    """The acks table, and a workload inserting into it through the cluster (started)."""
    c0 = cluster.config.computes[0]
    with connect(c0.host, c0.port) as conn:
        conn.execute("CREATE TABLE acks (id BIGINT PRIMARY KEY, who TEXT)")
    workload = InsertWorkload(cluster)
    workload.start()
    return workload


def test_kill_storage_and_journal_mid_workload_then_every_copy_has_every_commit(cluster_factory):
    cluster = cluster_factory()
    workload = start_inserts(cluster)
    try:
        wait_for(lambda: workload.count() >= 30, 30, "30 acknowledged inserts before the faults")
        cluster.kill("storage-az2-a")
        cluster.kill("journal-az3")
        during = workload.count()
        wait_for(lambda: workload.count() >= during + 30, 30,
                 "30 more acknowledged inserts with a storage node and a journal replica down")
        cluster.restart("storage-az2-a")
        cluster.restart("journal-az3")
        after = workload.count()
        wait_for(lambda: workload.count() >= after + 20, 30, "inserts after the restarts")
    finally:
        workload.stop()
    assert not workload.failed, workload.failed[:5]

    target = leader_commit_index(cluster)
    assert target > 0
    wait_for(lambda: storage_caught_up(cluster, target), 60, f"every storage copy to reach index {target}")
    assert_all_present(cluster, workload)

    ts = Clock(cluster.config.clock_error_ns).now().latest
    copies = {node.name: scan_copy(node, ts) for node in cluster.config.storages}
    reference = copies["storage-az1-a"]
    assert len(reference) >= len(workload.acked)
    for name, rows in copies.items():
        assert rows == reference, f"{name} differs from storage-az1-a ({len(rows)} vs {len(reference)} keys)"


def test_whole_cluster_sigkill_and_restart_keeps_every_acknowledged_commit(cluster_factory):
    cluster = cluster_factory()
    workload = start_inserts(cluster)
    try:
        wait_for(lambda: workload.count() >= 50, 30, "50 acknowledged inserts")
    finally:
        # Kill everything while the workload is still writing: in-flight commits are unknown.
        for name in list(cluster.pids):
            cluster.kill(name)
        workload.stop()

    cluster.start()
    cluster.wait_ready(timeout_s=90, healthy=True)
    assert_all_present(cluster, workload)
    # The restarted cluster takes new writes.
    c0 = cluster.config.computes[0]
    with connect(c0.host, c0.port) as conn:
        conn.execute("INSERT INTO acks VALUES (-1, 'after restart')")
        assert conn.execute("SELECT who FROM acks WHERE id = -1").rows == [("after restart",)]
