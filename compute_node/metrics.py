"""A compute node's Prometheus metrics (quorumdb/metrics.py says how metrics work).

Observed once per event (compute_node/cluster/backend.py): each session's storage read (a point chunk or
a scan page, by kind and read mode), each copy a read asks (by copy: own AZ against the others,
and what hedging saves), each commit with its outcome (committed, 40001 by reason, 40003, 57P03).
At scrape time: the storage reader's counters (reads by mode, copies asked, hedges, fallbacks
from single-copy to quorum reads), the read and commit streams (messages, requests, queue depth
against its limit), sessions and PostgreSQL connections against their limits, the statement and
schema caches, the leader this node commits to, health. It also gives the node's /role endpoint
its answer (`role`): the writer endpoint's health check.
"""
from __future__ import annotations

import collections
import time
from typing import Any, Iterable

from quorumdb import errors, limits
from quorumdb import metrics as m

# Per-copy read latency is observed for one ask in this many (see copy_asked).
COPY_SAMPLE_EVERY = 8

# A commit's SqlError -> (outcome, reason) labels.
_REASONS = ((errors.DSQL_SCHEMA_CHANGED, "schema_changed"), (errors.DSQL_WRITE_CONFLICT, "write_conflict"),
            ("older than", "too_old"), ("age limit", "too_old"))


def commit_labels(error: errors.SqlError | None) -> tuple[str, str]:
    """(sqlstate, reason) of a commit's outcome: (SUCCESSFUL_COMPLETION, "committed"),
    (SERIALIZATION_FAILURE, "write_conflict"), ..."""
    if error is None:
        return errors.SUCCESSFUL_COMPLETION, "committed"
    if error.sqlstate == errors.SERIALIZATION_FAILURE:
        text = f"{error.message} {error.detail or ''}"
        for marker, reason in _REASONS:
            if marker in text:
                return error.sqlstate, reason
        return error.sqlstate, "serialization_failure"
    if error.sqlstate == errors.STATEMENT_COMPLETION_UNKNOWN:
        return error.sqlstate, "completion_unknown"
    if error.sqlstate == errors.CANNOT_CONNECT_NOW:
        return error.sqlstate, "unavailable"
    return error.sqlstate, "other"


class ComputeMetrics:
    def __init__(self, node_metrics: m.NodeMetrics, backend, service=None, engine=None, readiness=None) -> None:
        self.backend = backend
        self.service = service
        self.engine = engine
        self.readiness = readiness
        self.pg_server = None  # set once the PostgreSQL endpoint has started
        self.reads = node_metrics.histogram_set(
            "quorumdb_compute_read_seconds",
            "Time for one storage read of a session (a point chunk or a scan page) at its snapshot, "
            "merged from the copies it needs", ("kind", "read_mode"))
        self.copies = node_metrics.histogram_set(
            "quorumdb_compute_storage_copy_seconds",
            f"Time from asking one storage copy (an op on its read stream) to its answer, for one ask in "
            f"{COPY_SAMPLE_EVERY}; failed and cancelled (hedged-out) asks are not observed", ("copy",))
        self.commit = node_metrics.histogram(
            "quorumdb_compute_commit_seconds",
            "Time from handing a write set to the adjudicator client to its final answer (resends included)")
        self.read_stream_op = node_metrics.rpc_client.child("quorumdb.Storage", "ReadStream")
        self.commit_stream = node_metrics.rpc_client.child("quorumdb.Adjudicator", "CommitStream")
        self.commits: collections.Counter[tuple[str, str]] = collections.Counter()
        self._copy_asks = 0
        node_metrics.add_service(self.collect)
        node_metrics.set_role(self.role)

    def role(self) -> tuple[bool, str]:
        """(accepts commits, role) of this node's region, for GET /role (see region_role)."""
        return region_role(self.backend.region_view)

    # --- observed by the backend ---------------------------------------------------------------
    def read_done(self, kind: str, read_mode: str, seconds: float) -> None:
        self.reads.child(kind, read_mode).observe(seconds)

    def copy_asked(self, copy: str, future) -> None:
        # A done-callback costs a few microseconds (it is scheduled on the loop): a sample is enough.
        self._copy_asks += 1
        if self._copy_asks % COPY_SAMPLE_EVERY:
            return
        asked = time.perf_counter()
        histogram = self.copies.child(copy)
        stream = self.read_stream_op

        def done(finished) -> None:
            if finished.cancelled() or finished.exception() is not None:
                return
            seconds = time.perf_counter() - asked
            histogram.observe(seconds)
            stream.observe(seconds)

        future.add_done_callback(done)

    def commit_done(self, seconds: float, error: errors.SqlError | None) -> None:
        self.commits[commit_labels(error)] += 1
        self.commit.observe(seconds)
        self.commit_stream.observe(seconds)

    # --- scrape ----------------------------------------------------------------------------------
    def collect(self) -> Iterable[m.Metric]:
        backend = self.backend
        reader = backend.storage
        yield m.counters("quorumdb_compute_reads", "Storage reads (point chunks and scan pages) by read mode",
                         ("read_mode",), {(mode,): count for mode, count in reader.reads.items()})
        yield m.counter("quorumdb_compute_read_copies_asked", "Storage copies asked by reads", reader.copies_asked)
        yield m.counter("quorumdb_compute_read_hedges", "Copies asked because another was slower than the hedge delay",
                        reader.hedges)
        yield m.counter("quorumdb_compute_read_single_fallbacks",
                        "Single-copy reads that fell back to a quorum read", reader.single_fallbacks)
        yield m.counter("quorumdb_compute_scan_rows_received", "Scan rows received from storage copies",
                        reader.scan_rows_received)
        streams = getattr(reader, "_streams", None) or {}
        yield m.counter("quorumdb_compute_read_stream_messages", "Read-stream messages sent to storage copies",
                        sum(stream.batches_sent for stream in streams.values()))
        yield m.counter("quorumdb_compute_read_stream_ops", "Read ops sent on read streams",
                        sum(stream.ops_sent for stream in streams.values()))
        yield m.gauges("quorumdb_compute_read_stream_pending", "Read ops queued or unanswered per storage copy",
                       "copy", {name: stream._unanswered for name, stream in streams.items()})
        yield m.gauge("quorumdb_compute_read_stream_pending_max", "Limit of read ops pending per read stream",
                      limits.READ_STREAM_PENDING_MAX)
        messages, requests = backend.adjudicators.stream_figures()
        yield m.counter("quorumdb_compute_commit_stream_messages", "Commit-stream messages sent", messages)
        yield m.counter("quorumdb_compute_commit_stream_requests", "Commit requests sent on commit streams", requests)
        commit_streams = getattr(backend.adjudicators, "_streams", None) or {}
        yield m.gauges("quorumdb_compute_commit_stream_pending",
                       "Commit requests queued or unanswered per adjudicator", "adjudicator",
                       {name: stream._unanswered for name, stream in commit_streams.items()})
        yield m.gauge("quorumdb_compute_commit_stream_pending_max", "Limit of commit requests pending per stream",
                      limits.COMMIT_STREAM_PENDING_MAX)
        yield m.counters("quorumdb_compute_commits", "Commits sent to the adjudicator, by outcome "
                         "(sqlstate 00000 committed; 40001 by reason; 40003 unknown; 57P03 unavailable)",
                         ("sqlstate", "reason"), dict(self.commits))
        yield m.gauge("quorumdb_compute_leader_info", "The adjudicator leader this node commits to (always 1)", 1,
                      {"leader": backend.leader or ""})
        if self.service is not None:
            yield m.gauge("quorumdb_compute_sessions", "Open gRPC sessions", self.service.session_count)
            yield m.gauge("quorumdb_compute_sessions_max", "Limit of gRPC sessions", limits.SESSIONS_MAX)
        if self.pg_server is not None:
            yield m.gauge("quorumdb_compute_pg_connections", "Open PostgreSQL connections",
                          len(self.pg_server.connections))
        if self.engine is not None:
            yield from _engine_metrics(self.engine)
        if self.readiness is not None:
            yield m.gauge("quorumdb_node_healthy", "1 when the node's Status health is ok",
                          1 if self.readiness.health == "ok" else 0)


def _engine_metrics(engine: Any) -> Iterable[m.Metric]:
    cache = engine.schema_cache
    statements = engine.statements
    yield m.counters("quorumdb_compute_statement_cache_lookups", "Statement cache lookups (parsed once per shape)",
                     ("result",), {("hit",): statements.hits, ("miss",): statements.misses})
    yield m.gauge("quorumdb_compute_statement_shapes", "Statement shapes cached", len(statements))
    yield m.counters("quorumdb_compute_schema_cache_lookups", "Schema cache lookups", ("result",),
                     {("hit",): cache.hits, ("miss",): cache.misses})
    yield m.counter("quorumdb_compute_statement_retries", "Statements run again because a cached schema was stale",
                    engine.statement_retries)


def region_role(region_view) -> tuple[bool, str]:
    """(accepts commits, role) from a RegionView; without one, a cluster of its own: the writer.

    The region's role alone, not the node's readiness: a leader change inside the region makes
    every node degraded for a moment, and the writer endpoint would then close every session at
    once (on-marked-down shutdown-sessions), where the sessions' own retries ride it out."""
    if region_view is None:
        return True, "primary"
    return region_view.is_writer, region_view.role


def attach(backend, service=None, engine=None, readiness=None) -> ComputeMetrics | None:
    node_metrics = m.current()
    if node_metrics is None:
        return None
    compute_metrics = ComputeMetrics(node_metrics, backend, service, engine, readiness)
    backend.metrics = compute_metrics
    backend.storage.metrics = compute_metrics
    return compute_metrics
