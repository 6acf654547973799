"""Failover with real processes: adjudicator leader SIGKILL under load, a paused storage copy,
a dead compute node, and a journal that lost its majority.

Story 1 (its own cluster): writer threads insert rows with unique ids through all three
compute nodes while the adjudicator leader is SIGKILLed, several times. Measured: the time
from each SIGKILL to the first successful commit. Checked: no false failover while the leader
lives; exactly one leader after each failover; the killed node, restarted, joins as a
standby; every acknowledged insert is present at the end, nothing appears that was never
sent, and no txn_id is in the journal twice (a resent commit is never applied twice);
"statement completion unknown" (40003) only when no leader answered (none expected here).

Story 2 (a shared cluster): a SIGSTOPped storage copy in the compute node's own AZ (reads
stay fast: hedged), a SIGKILLed compute node under a client with several endpoints (it moves
on between transactions), and 2 of 3 journal replicas down (a commit fails within its
deadline naming the cause; nothing acknowledged is lost once they are back).
"""
from __future__ import annotations

import functools
import asyncio
import collections
import statistics
import threading
import time

import pytest

from quorumdb import client, limits
from tools.launcher import Cluster, node_status
from quorumdb.pb import journal_pb2, journal_pb2_grpc
from tests.util import admin_channel, poll_until

pytestmark = pytest.mark.cluster

FAILOVERS = 3
SANITY_FAILOVER_S = 10.0  # a generous bound only: the measured figures are printed


def endpoints(cluster: Cluster) -> list[tuple[str, int]]:
    return [(node.host, node.port) for node in cluster.config.computes]


def adjudicator_roles(cluster: Cluster) -> dict[str, tuple[str, int]]:
    """name -> (role, epoch) of every adjudicator that answers."""
    roles = {}
    for node in cluster.config.adjudicators:
        status = node_status(node, timeout_s=1.0)
        if status is not None:
            roles[node.name] = (status.role, status.epoch)
    return roles


wait_until = functools.partial(poll_until, timeout_s=30.0)


def the_leader(cluster: Cluster) -> tuple[str, int] | None:
    leaders = [(name, epoch) for name, (role, epoch) in adjudicator_roles(cluster).items() if role == "leader"]
    return leaders[0] if len(leaders) == 1 else None


class Writers:
    """Threads inserting unique ids; each outcome is recorded with its end time."""

    def __init__(self, cluster: Cluster, count: int):
        self.cluster = cluster
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acknowledged: dict[str, tuple[float, float]] = {}  # id -> monotonic (start, end)
        self.unknown: list[tuple[str, str]] = []  # (id, error) 40003 / 08006
        self.failed: list[tuple[str, str]] = []  # (id, error) definitely not committed
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(count)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)
            assert not thread.is_alive(), "a writer thread did not stop"

    def _run(self, number: int) -> None:
        nodes = endpoints(self.cluster)
        ordered = nodes[number % 3:] + nodes[: number % 3]  # spread writers over the compute nodes
        conn = client.connect(endpoints=ordered, timeout_s=limits.STATEMENT_TIMEOUT_S)
        try:
            sequence = 0
            while not self.stop.is_set():
                row_id = f"w{number}-{sequence}"
                sequence += 1
                started = time.monotonic()
                try:
                    conn.execute("INSERT INTO ledger VALUES ($1, $2)", [row_id, number])
                except client.DatabaseError as error:
                    if error.sqlstate in ("40003", "08006"):
                        with self.lock:
                            self.unknown.append((row_id, str(error)))
                    else:
                        with self.lock:
                            self.failed.append((row_id, str(error)))
                        time.sleep(0.05)
                    continue
                with self.lock:
                    self.acknowledged[row_id] = (started, time.monotonic())
        finally:
            conn.close()

    def first_ack_after(self, t: float) -> float | None:
        """End time of the first commit that started after t (one that started before may have
        been acknowledged by the old leader just before t)."""
        with self.lock:
            later = [end for start, end in self.acknowledged.values() if start > t]
        return min(later) if later else None


async def journal_txn_ids(cluster: Cluster, replica: str) -> tuple[list[str], int]:
    """The txn_ids of one replica's committed entries, and the replica's first index."""
    node = cluster.config.node(replica)
    txn_ids: list[str] = []
    first_index = 0
    async with admin_channel(cluster.config, replica) as channel:
        stub = journal_pb2_grpc.JournalStub(channel)
        next_index = 1
        for _ in range(10_000):
            reply = await stub.ReadEntries(
                journal_pb2.ReadEntriesRequest(from_index=next_index, max_entries=1_000), timeout=10)
            first_index = first_index or reply.first_index
            committed = [entry for entry in reply.entries if entry.index <= reply.commit_index]
            if not committed:
                break
            txn_ids += [entry.txn_id for entry in committed if entry.txn_id]
            next_index = committed[-1].index + 1
    return txn_ids, first_index


def test_leader_sigkill_under_load_loses_nothing_and_commits_resume_fast(cluster_factory):
    cluster = cluster_factory()
    with client.connect(endpoints=endpoints(cluster)) as conn:
        conn.execute("CREATE TABLE ledger (id TEXT PRIMARY KEY, writer INT NOT NULL)")
    writers = Writers(cluster, count=4)
    writers.start()
    failover_s: list[float] = []
    epoch_jumps: list[int] = []
    try:
        # Steady state under load: no false failover.
        leader, epoch = wait_until(lambda: the_leader(cluster), "one leader")
        time.sleep(3.0)
        assert the_leader(cluster) == (leader, epoch), "the leader changed while it was alive"
        assert writers.acknowledged, "no commit in 3 s of steady state"
        for run in range(FAILOVERS):
            leader, epoch = wait_until(lambda: the_leader(cluster), "one leader")
            killed_at = time.monotonic()
            cluster.kill(leader)
            resumed_at = wait_until(lambda: writers.first_ack_after(killed_at), "a commit after the SIGKILL",
                                    timeout_s=SANITY_FAILOVER_S)
            failover_s.append(resumed_at - killed_at)
            new_leader, new_epoch = wait_until(lambda: the_leader(cluster), "exactly one new leader")
            assert new_leader != leader and new_epoch > epoch
            epoch_jumps.append(new_epoch - epoch)
            # The killed node comes back and joins as a standby; the leader keeps leading.
            cluster.restart(leader, kill=False)
            wait_until(lambda: adjudicator_roles(cluster).get(leader, ("", 0))[0] == "standby",
                       f"{leader} to answer as a standby")
            time.sleep(1.5)  # well past the failover timeout and the restart
            assert the_leader(cluster) == (new_leader, new_epoch), f"restarted {leader} disturbed the leader"
            assert adjudicator_roles(cluster)[leader][0] == "standby"
    finally:
        writers.finish()
    print(f"\nfailover (leader SIGKILL -> first commit): "
          f"{', '.join(f'{s * 1000:.0f}' for s in failover_s)} ms; median {statistics.median(failover_s) * 1000:.0f} ms; "
          f"epoch steps {epoch_jumps} (1 = no duel)")
    print(f"commits: {len(writers.acknowledged)} acknowledged, {len(writers.unknown)} unknown, "
          f"{len(writers.failed)} refused {writers.failed[:3]}")
    assert max(failover_s) < SANITY_FAILOVER_S
    assert not writers.unknown, f"unknown outcomes although a leader answered: {writers.unknown[:3]}"

    with client.connect(endpoints=endpoints(cluster)) as conn:
        present = {row[0] for row in conn.execute("SELECT id FROM ledger").rows}
    lost = set(writers.acknowledged) - present
    assert not lost, f"acknowledged inserts missing: {sorted(lost)[:5]}"
    refused = {row_id for row_id, _ in writers.failed}
    unexpected = present & refused
    assert not unexpected, f"refused inserts are present: {[f for f in writers.failed if f[0] in unexpected][:5]}"
    time.sleep(1.0)  # let the replica's commit index catch up with the last commits
    txn_ids, first_index = asyncio.run(journal_txn_ids(cluster, "journal-az1"))
    counts = collections.Counter(txn_ids)
    repeated = [txn_id for txn_id, count in counts.items() if count > 1]
    print(f"journal-az1: {len(txn_ids)} committed transactions from index {first_index}")
    assert not repeated, f"txn_ids in the journal twice: {repeated[:5]}"
    if first_index <= 1:
        assert len(txn_ids) >= len(writers.acknowledged), "fewer journal entries than acknowledged commits"


# --- story 2: one shared cluster ------------------------------------------------------------


def test_reads_with_a_paused_storage_copy_stay_fast(shared_cluster):
    cluster = shared_cluster
    compute = cluster.config.computes[0]  # az1: its reads ask storage-az1-a and -b first
    with client.connect(compute.host, compute.port) as conn:
        conn.execute("CREATE TABLE paused (k INT PRIMARY KEY, v TEXT)")
        conn.execute("INSERT INTO paused VALUES (1, 'one'), (2, 'two')")
        cluster.pause("storage-az1-a")
        try:
            latencies_ms = []
            for i in range(30):
                began = time.monotonic()
                assert conn.execute("SELECT v FROM paused WHERE k = $1", [1 + i % 2]).rows == [("one" if i % 2 == 0 else "two",)]
                latencies_ms.append((time.monotonic() - began) * 1000)
            conn.execute("INSERT INTO paused VALUES (3, 'three')")
            assert conn.execute("SELECT count(*) FROM paused").rows == [(3,)]
        finally:
            cluster.resume("storage-az1-a")
    ordered = sorted(latencies_ms)
    print(f"\nreads with storage-az1-a paused: first {latencies_ms[0]:.0f} ms, median "
          f"{statistics.median(ordered):.0f} ms, p90 {ordered[int(0.9 * len(ordered))]:.0f} ms, "
          f"max {ordered[-1]:.0f} ms (RPC deadline {limits.STORAGE_READ_TIMEOUT_S * 1000:.0f} ms)")
    assert ordered[-1] < limits.STORAGE_READ_TIMEOUT_S * 1000, "a read waited for the paused copy's deadline"
    cluster.wait_ready(["storage-az1-a"], timeout_s=60, healthy=True)


def test_client_moves_to_another_compute_node_when_its_node_dies(shared_cluster):
    cluster = shared_cluster
    with client.connect(endpoints=endpoints(cluster)) as conn:
        conn.execute("CREATE TABLE moves (k INT PRIMARY KEY)")
        assert conn.address.endswith(str(cluster.config.computes[0].port))
        conn.begin()
        conn.execute("INSERT INTO moves VALUES (1)")
        cluster.kill("compute-az1")
        try:
            with pytest.raises(client.OperationalError) as raised:
                conn.execute("INSERT INTO moves VALUES (2)")
            assert raised.value.sqlstate == "08006"
            with pytest.raises(client.OperationalError):
                conn.commit()  # the transaction died with its node: never half-applied elsewhere
            conn.rollback()
            conn.run_transaction(lambda c: c.execute("INSERT INTO moves VALUES (3)"))
            assert conn.address.endswith(str(cluster.config.computes[1].port))
            assert conn.execute("SELECT k FROM moves ORDER BY k").rows == [(3,)]
        finally:
            cluster.restart("compute-az1", kill=False)
            cluster.wait_ready(["compute-az1"], timeout_s=60, healthy=True)


def test_journal_without_majority_fails_commits_clearly_and_loses_nothing(shared_cluster):
    cluster = shared_cluster
    compute = cluster.config.computes[1]
    with client.connect(compute.host, compute.port) as conn:
        conn.execute("CREATE TABLE durable (k INT PRIMARY KEY)")
        conn.execute("INSERT INTO durable VALUES (1), (2)")
        conn.begin()
        conn.execute("INSERT INTO durable VALUES (3)")  # reads done while the journal is whole
        cluster.kill("journal-az2")
        cluster.kill("journal-az3")
        try:
            time.sleep(0.3)  # the leader's pipelines notice the refused connections
            began = time.monotonic()
            with pytest.raises(client.DatabaseError) as raised:
                conn.commit()
            commit_s = time.monotonic() - began
            print(f"\ncommit with 2 of 3 journal replicas down: {raised.value.sqlstate} after "
                  f"{commit_s * 1000:.0f} ms: {raised.value.message}")
            assert raised.value.sqlstate == "57P03", raised.value
            assert "journal unavailable: no majority of journal replicas (2 of 3 needed" in raised.value.message
            assert commit_s < limits.COMMIT_TIMEOUT_S
            if conn.transaction_status != "I":
                conn.rollback()
            began = time.monotonic()
            with pytest.raises(client.DatabaseError) as raised:
                conn.execute("INSERT INTO durable VALUES (4)")
            print(f"autocommit insert: {raised.value.sqlstate} after {(time.monotonic() - began) * 1000:.0f} ms: "
                  f"{raised.value.message} / {raised.value.hint}")
            assert raised.value.sqlstate == "57P03"
        finally:
            cluster.restart("journal-az2")
            cluster.restart("journal-az3")
        cluster.wait_ready(["journal-az2", "journal-az3"], timeout_s=60, healthy=True)
        wait_until(lambda: _try(conn, "INSERT INTO durable VALUES (5)"), "commits to work again", timeout_s=30)
        assert conn.execute("SELECT k FROM durable ORDER BY k").rows == [(1,), (2,), (5,)]


def _try(conn: client.Connection, sql: str) -> bool:
    try:
        conn.execute(sql)
        return True
    except client.DatabaseError as error:
        return error.sqlstate == "23505"  # an earlier try did commit
