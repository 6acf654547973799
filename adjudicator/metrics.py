"""Where an adjudicator's commits spend their time: EXPLAIN ANALYZE's commit phases and the metrics.

Theory of operation
-------------------
The leader loop (adjudicator/service.py `_lead`) takes a batch of queued commits, decides it with
the conflict checker and hands the winners to the journal writer, with no await between the two.
Two thin subclasses observe those steps without touching the loop:

* `TimedConflictChecker.decide_batch` opens a `BatchTiming` in the node's `CommitTimeline` (when
  the batch was taken and decided, which requests it held);
* `TimedJournalWriter.assign`, called right after for the same batch, adds when its journal
  append started, and `wait_committed` when a quorum of replicas had it fsynced.

A few clock reads and a deque append per batch. `commit_many` (service.py) reads the arrival of
each request and its reply after commit-wait; for a request that asked (`CommitRequest.explain`),
`CommitTimeline.explain` finds the batch that held it (by identity, in the last
COMMIT_TIMELINE_BATCHES batches) and answers `CommitTiming`: queue, adjudication, journal append,
commit-wait. `AdjudicatorMetrics` adds the node's Prometheus metrics: commit outcomes, commit and
append latency, group-commit batch sizes, role and epoch, queue depth against its limit.
"""
from __future__ import annotations

import collections
import dataclasses
import time
from typing import Iterable, Sequence

from adjudicator.core import ConflictChecker, Decision, TxnRequest
from journal.writer import JournalWriter
from quorumdb import limits
from quorumdb import metrics as m
from quorumdb.pb import adjudicator_pb2, common_pb2

# CommitOutcome number -> metric label.
OUTCOME_LABELS = {
    adjudicator_pb2.COMMITTED: "committed",
    adjudicator_pb2.CONFLICT: "conflict",
    adjudicator_pb2.TOO_OLD: "too_old",
    adjudicator_pb2.NOT_LEADER: "not_leader",
    adjudicator_pb2.UNAVAILABLE: "unavailable",
    adjudicator_pb2.UNKNOWN: "unknown",
    adjudicator_pb2.OUTCOME_UNSPECIFIED: "unspecified",
}


@dataclasses.dataclass(slots=True)
class BatchTiming:
    """One batch of the leader loop, in time.monotonic() seconds (0.0: that step did not happen)."""

    requests: Sequence[TxnRequest]
    taken: float
    decided: float = 0.0
    append_started: float = 0.0
    appended: float = 0.0
    entries: int = 0


class CommitTimeline:
    """The last batches' timings, and (with metrics on) the histograms they feed."""

    def __init__(self, node_metrics: m.NodeMetrics | None = None, clock=time.monotonic) -> None:
        self.clock = clock
        self.batches: collections.deque[BatchTiming] = collections.deque(maxlen=limits.COMMIT_TIMELINE_BATCHES)
        self.outcomes = collections.Counter()  # CommitOutcome -> replies sent
        self.batches_appended = 0
        self.entries_appended = 0
        self.metrics = AdjudicatorMetrics(node_metrics) if node_metrics is not None else None

    # --- the leader loop's steps (through the two subclasses) ----------------------------------
    def batch_taken(self, requests: Sequence[TxnRequest]) -> BatchTiming:
        batch = BatchTiming(requests, self.clock())
        self.batches.append(batch)
        return batch

    def append_started(self) -> BatchTiming | None:
        """The batch being appended: the one just decided (no await lies between the two)."""
        if not self.batches:
            return None
        batch = self.batches[-1]
        if batch.append_started:  # an append without a decision before it (not the leader loop)
            return None
        batch.append_started = self.clock()
        return batch

    def appended(self, batch: BatchTiming | None, entries: int) -> None:
        done = self.clock()
        self.batches_appended += 1
        self.entries_appended += entries
        if batch is not None:
            batch.appended = done
            batch.entries = entries
            if self.metrics is not None:
                self.metrics.journal_append.observe(done - batch.append_started)
        if self.metrics is not None:
            self.metrics.batch_entries.observe(entries)

    # --- commit_many: replies --------------------------------------------------------------------
    def answered(self, replies: Sequence[adjudicator_pb2.CommitReply], arrived: float, replied: float) -> None:
        for reply in replies:
            self.outcomes[reply.outcome] += 1
        if self.metrics is not None:
            self.metrics.commit.observe(replied - arrived, len(replies))

    def explain(self, txn: TxnRequest, reply: adjudicator_pb2.CommitReply, arrived: float, decided_wait: float,
                replied: float, leader: str) -> adjudicator_pb2.CommitTiming:
        """Where `txn`'s time went, from its arrival to its reply (`decided_wait`: when its batch's
        replies were all in and commit-wait began)."""
        timing = adjudicator_pb2.CommitTiming(total_ns=_ns(replied - arrived), leader=leader)
        batch = next((b for b in reversed(self.batches) if any(r is txn for r in b.requests)), None)
        if batch is None:  # refused before any batch (not leader, queue full, journal unavailable)
            return timing
        timing.queue_ns = _ns(batch.taken - arrived)
        timing.batch_commits = len(batch.requests)
        timing.batch_entries = batch.entries
        decided = batch.append_started or batch.decided
        timing.adjudication_ns = _ns(decided - batch.taken)
        if batch.appended:
            timing.journal_append_ns = _ns(batch.appended - batch.append_started)
        if reply.outcome == adjudicator_pb2.COMMITTED:
            timing.commit_wait_ns = _ns(replied - decided_wait)
        return timing


def _ns(seconds: float) -> int:
    return max(0, round(seconds * 1e9))


class TimedConflictChecker(ConflictChecker):
    """The conflict checker, telling the timeline when each batch is taken and decided."""

    def __init__(self, timeline: CommitTimeline, **kwargs) -> None:
        super().__init__(**kwargs)
        self._timeline = timeline

    def decide_batch(self, requests: Sequence[TxnRequest], now_latest: int) -> list[Decision]:
        batch = self._timeline.batch_taken(requests)
        decisions = super().decide_batch(requests, now_latest)
        batch.decided = self._timeline.clock()
        return decisions


class TimedJournalWriter(JournalWriter):
    """The journal writer, telling the timeline when each batch's append started and committed."""

    def __init__(self, timeline: CommitTimeline, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._timeline = timeline
        # A batch's last index -> its timing and size, from its assignment to its commit (the
        # leader loop has several batches on their way at once across regions).
        self._assigned: dict[int, tuple[BatchTiming | None, int]] = {}

    async def append(self, entries: list[common_pb2.Entry]) -> list[common_pb2.Entry]:
        assigned = self.assign(entries)
        if assigned:
            await self.wait_committed(assigned[-1].index, limits.JOURNAL_COMMIT_TIMEOUT_S)
        return assigned

    def assign(self, entries: list[common_pb2.Entry]) -> list[common_pb2.Entry]:
        batch = self._timeline.append_started() if entries else None
        assigned = super().assign(entries)
        if assigned:
            if len(self._assigned) >= limits.COMMIT_TIMELINE_BATCHES:
                self._assigned.clear()  # batches whose wait failed: the term ended with them
            self._assigned[assigned[-1].index] = (batch, len(assigned))
        return assigned

    async def wait_committed(self, index: int, timeout_s: float) -> None:
        await super().wait_committed(index, timeout_s)
        timed = self._assigned.pop(index, None)
        if timed is not None:
            self._timeline.appended(*timed)


class AdjudicatorMetrics:
    """The histograms an adjudicator observes; `collect` (set by `attach`) adds its state at scrape time."""

    def __init__(self, node_metrics: m.NodeMetrics) -> None:
        self.node_metrics = node_metrics
        self.commit = node_metrics.histogram(
            "quorumdb_adjudicator_commit_seconds",
            "Time from a commit request's arrival at the leader to its reply: queue, conflict check, "
            "journal append, commit-wait")
        self.journal_append = node_metrics.histogram(
            "quorumdb_adjudicator_journal_append_seconds",
            "Time for one batch's journal append to be fsynced on 2 of 3 journal replicas")
        self.batch_entries = node_metrics.histogram(
            "quorumdb_adjudicator_group_commit_entries",
            "Journal entries (committed transactions) appended per batch: group commit", m.SIZE_BUCKETS)
        self.commit_stream = node_metrics.rpc_server.child("quorumdb.Adjudicator", "CommitStream")
        self.stream_batch_requests = node_metrics.histogram(
            "quorumdb_adjudicator_commit_stream_batch_requests",
            "Commit requests per CommitStream message from a compute node", m.SIZE_BUCKETS)


def collect(node, timeline: CommitTimeline) -> Iterable[m.Metric]:
    """An AdjudicatorNode's state (adjudicator/service.py) as metric families."""
    term = node.term
    status = node.status()
    yield m.gauge("quorumdb_adjudicator_is_leader", "1 on the leader, 0 on a standby", 1 if term is not None else 0)
    yield m.gauge("quorumdb_adjudicator_epoch", "The epoch this node leads in, or the latest it has seen",
                  status.epoch)
    yield m.gauge("quorumdb_adjudicator_leader_info", "The leader this adjudicator knows of (always 1)", 1,
                  {"leader": status.leader})
    yield m.gauge("quorumdb_adjudicator_applied_index", "Journal index applied to the conflict table",
                  status.applied_index)
    yield m.gauge("quorumdb_adjudicator_commit_index", "Highest journal index known committed", status.commit_index)
    yield m.gauge("quorumdb_adjudicator_apply_lag_entries", "Committed journal entries not yet applied here",
                  max(0, status.commit_index - status.applied_index))
    yield m.gauge("quorumdb_adjudicator_closed_timestamp_lag_seconds",
                  "How far the closed timestamp seen on the journal stream is behind this node's clock",
                  max(0.0, time.time() - status.closed_ts / 1e9) if status.closed_ts else 0.0)
    yield m.gauge("quorumdb_adjudicator_tracked_keys", "Keys in the conflict table", node.checker.tracked_keys)
    yield m.gauge("quorumdb_adjudicator_txn_ids", "Transaction ids remembered for resends", len(node.checker.txns))
    yield m.gauge("quorumdb_adjudicator_commit_queue_depth", "Commit requests waiting for the leader loop",
                  term.queue.qsize() if term is not None else 0)
    yield m.gauge("quorumdb_adjudicator_commit_queue_capacity", "Limit of the commit queue", limits.COMMIT_QUEUE_MAX)
    yield m.counter("quorumdb_adjudicator_heartbeats_this_term", "Closed-timestamp heartbeats of the current term",
                    term.heartbeats if term is not None else 0)
    yield m.counters("quorumdb_adjudicator_commits", "Commit replies by outcome", ("outcome",),
                     {(OUTCOME_LABELS.get(outcome, str(outcome)),): count
                      for outcome, count in timeline.outcomes.items()})
    yield m.counter("quorumdb_adjudicator_journal_appends", "Batches appended to the journal",
                    timeline.batches_appended)
    yield m.counter("quorumdb_adjudicator_journal_appended_entries", "Entries appended to the journal",
                    timeline.entries_appended)
    yield m.gauge("quorumdb_node_healthy", "1 when the node's Status health is ok", 1 if status.health == "ok" else 0)


def attach(node, timeline: CommitTimeline) -> None:
    """Register the node's state collector (only when the node serves metrics)."""
    if timeline.metrics is not None:
        timeline.metrics.node_metrics.add_service(lambda: collect(node, timeline))
