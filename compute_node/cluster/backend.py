"""The compute node's Backend: what a SQL session needs from the rest of the cluster.

- start_ts(): clock.now().latest (a snapshot that includes every acknowledged
  commit, thanks to the adjudicator's commit-wait); it also tells the adjudicator leader
  that reads are active, so that closed timestamps stay fresh (adjudicator/heartbeat.py);
- get_many()/scan(): reads from the storage copies (StorageReader): 3 of 6 (read_mode
  "quorum", the default) or one caught-up copy ("single"); the cluster file's read_mode
  unless the caller (a session's SET quorumdb.read_mode) names one;
- commit(): the write set to the adjudicator leader (AdjudicatorClient).
It also runs the readiness probe behind the node's Status health.

Each read and commit a session asks for is measured here, once, for the node's metrics
(compute_node/metrics.py, when the node serves them) and, while an EXPLAIN ANALYZE runs, for its
trace (compute_node/cluster/trace.py): `TracedStorageReader` records the copies a traced read asks.
"""
from __future__ import annotations

import collections
import logging
import time
from typing import Sequence

from compute_node.cluster import trace as trace_mod
from compute_node.cluster.adjudicator_client import AdjudicatorClient
from compute_node.cluster.storage_reader import StorageReader
from quorumdb import clock as clock_mod
from quorumdb import config as config_mod
from quorumdb import aio, errors, rpc, runtime

log = logging.getLogger("compute_node.cluster.backend")

# The key the readiness probe reads: any key works, this one is in no table's range.
PROBE_KEY = b"\xff\xffquorumdb-readiness-probe"


RECENT_LATENCIES = 512


def median_ms(seconds: Sequence[float] | collections.deque) -> float:
    """The median of latencies in seconds, in ms (0.0 for none)."""
    if not seconds:
        return 0.0
    ordered = sorted(seconds)
    return ordered[len(ordered) // 2] * 1000


class TracedStorageReader(StorageReader):
    """The storage reader, telling an EXPLAIN ANALYZE's read (if any) which copies it asks, and the
    metrics (if on) how long each copy took."""

    metrics = None  # compute_node/metrics.py sets it when the node serves metrics

    def _send(self, name: str, kind: str, request, timeout_s: float):
        future = super()._send(name, kind, request, timeout_s)
        read = trace_mod.CURRENT_READ.get()
        if read is not None:
            read.asked(name, future)
        if self.metrics is not None:
            self.metrics.copy_asked(name, future)
        return future


class QuorumBackend:
    def __init__(
        self,
        cluster: config_mod.ClusterConfig,
        node: config_mod.NodeConfig,
        channels: rpc.Channels,
        clock: clock_mod.Clock | None = None,
    ) -> None:
        self.clock = clock or runtime.clock(cluster.clock_error_ns)
        self.node_name = node.name  # EXPLAIN ANALYZE says where it ran
        self.storage = TracedStorageReader(cluster, node.az, channels)
        self.adjudicators = AdjudicatorClient(cluster, channels)
        self.metrics = None  # compute_node/metrics.py: read and commit latency, commit outcomes
        # The latest commits' and reads' latencies (seconds), whatever the metrics setting: the
        # node's Status reports their medians (`quorumdb status` shows them per region).
        self.recent_commits: collections.deque[float] = collections.deque(maxlen=RECENT_LATENCIES)
        self.recent_reads: collections.deque[float] = collections.deque(maxlen=RECENT_LATENCIES)
        # A Global Database's view of this node's region (compute_node/cluster/region_view.py); None: no regions.
        self.region_view = None

    def start_ts(self) -> int:
        start_ts = self.clock.now().latest
        self.adjudicators.note_reads(start_ts)  # a snapshot starts: the leader closes its ts at once
        return start_ts

    def now_ts(self) -> int:
        return self.clock.now().latest

    async def get_many(self, keys: list[bytes], ts: int, read_mode: str | None = None) -> dict[bytes, bytes | None]:
        return await self._measured("get", len(keys), read_mode, self.storage.get_many(keys, ts, read_mode))

    async def scan(
        self, start: bytes, end: bytes | None, ts: int, limit: int, read_mode: str | None = None
    ) -> tuple[list[tuple[bytes, bytes]], bool]:
        return await self._measured("scan", limit, read_mode, self.storage.scan(start, end, ts, limit,
                                                                                read_mode=read_mode))

    async def scan_filtered(
        self, start: bytes, end: bytes | None, ts: int, limit: int, pushdown: bytes, read_mode: str | None = None
    ) -> tuple[list[tuple[bytes, bytes]], bool, bytes | None]:
        """A scan whose filter + projection the storage copies apply (see Backend in session.py)."""
        return await self._measured("scan", limit, read_mode, self.storage.scan(start, end, ts, limit,
                                                                                pushdown=pushdown, read_mode=read_mode))

    async def _measured(self, kind: str, keys: int, read_mode: str | None, read):
        """Await one read of a session, timed for the metrics and an EXPLAIN ANALYZE's trace."""
        started = time.perf_counter()
        traced = trace_mod.start_read(kind, keys, read_mode)
        error = None
        try:
            return await read
        except BaseException as failure:
            error = failure
            raise
        finally:
            if traced is not None:
                trace_mod.end_read(traced, error)
            elapsed = time.perf_counter() - started
            if error is None:
                self.recent_reads.append(elapsed)
            if self.metrics is not None:
                self.metrics.read_done(kind, read_mode or self.storage.read_mode, elapsed)

    @property
    def read_mode(self) -> str:
        """The cluster's read mode (a session may override it)."""
        return self.storage.read_mode

    def status_detail(self) -> str:
        """Read and commit-stream counters for the compute node's Status detail."""
        messages, requests = self.adjudicators.stream_figures()
        return f"{self.storage.status_detail()} commit_stream_messages={messages} commit_stream_requests={requests}"

    async def commit(
        self, start_ts: int, writes: list[tuple[bytes, bytes | None]], lock_keys: list[bytes], txn_id: str,
        private_keyspace: bool = False,
    ) -> int:
        started = time.perf_counter()
        try:
            commit_ts = await self.adjudicators.commit(start_ts, writes, lock_keys, txn_id, private_keyspace)
        except errors.SqlError as error:
            if self.metrics is not None:
                self.metrics.commit_done(time.perf_counter() - started, error)
            raise
        elapsed = time.perf_counter() - started
        self.recent_commits.append(elapsed)
        if self.metrics is not None:
            self.metrics.commit_done(elapsed, None)
        return commit_ts

    def latency_medians_ms(self) -> tuple[float, float]:
        """(commit, read) median latency of the latest RECENT_LATENCIES of each, ms; 0 for none."""
        return median_ms(self.recent_commits), median_ms(self.recent_reads)

    async def read_only_commit_wait(self, start_ts: int) -> None:
        """A read-only transaction's commit-wait: return once now().earliest is past every commit
        it may have seen (commit_ts <= start_ts, and no newer than any version this node has read).

        A reader can see a commit during that commit's own commit-wait, before its writer is
        answered. Without this wait, a client could finish the read, and another client could
        then start a transaction on a node whose clock is behind (start_ts = its now().latest,
        lower by up to twice the error bound) and not see the commit: a stale read in real-time
        order. Versions this node read are almost always older than now().earliest already, so
        the wait is usually zero.
        """
        await aio.wait_clock_past(self.clock, min(start_ts, self.storage.newest_version_ts))

    @property
    def leader(self) -> str | None:
        return self.adjudicators.leader

    async def probe(self) -> str | None:
        """One readiness probe: a quorum read at a fresh ts and a known leader. None when ok, else why not."""
        try:
            # Not start_ts(): a probe is no user read, and needs no fast closed timestamps. A
            # secondary region reads at its replicated point (it never serves anything newer).
            ts = self.clock.now().latest
            view = self.region_view
            if view is not None and view.enabled and not view.is_writer:
                if view.point.replicated_ts <= 0:
                    return f"region {view.region}: nothing replicated yet ({view.point.role or 'role unknown'})"
                ts = view.point.replicated_ts
            await self.storage.get_many([PROBE_KEY], ts, counted=False)
        except errors.SqlError as error:
            return f"storage: {error.message}"
        leader, why = await self.adjudicators.find_leader()
        if leader is None:
            return f"adjudicator: {why}"
        return None


class Readiness:
    """Remembers when the last probe succeeded; `health` is what Status reports."""

    def __init__(self, fresh_s: float, monotonic=runtime.monotonic) -> None:
        self._fresh_s = fresh_s
        self._monotonic = monotonic
        self._last_ok_s: float | None = None
        self._last_problem = "not probed yet"

    def record(self, problem: str | None) -> None:
        if problem is None:
            self._last_ok_s = self._monotonic()
        else:
            self._last_problem = problem

    @property
    def health(self) -> str:
        if self._last_ok_s is not None and self._monotonic() - self._last_ok_s <= self._fresh_s:
            return "ok"
        return f"degraded: {self._last_problem}"
