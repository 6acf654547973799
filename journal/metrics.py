"""A journal replica's Prometheus metrics (quorumdb/metrics.py says how metrics work).

At scrape time: the replica's indexes, promised epoch, the leader it follows, its closed
timestamp and how far it is behind the clock, subscribers against their limit, appends waiting
for the replica's lock. Observed as they happen (journal/service.py): each AppendStream message's
handling time, each append's disk write + fsync time and its batch size (entries per append:
the leader's group commit as this replica sees it).
"""
from __future__ import annotations

import time
from typing import Iterable

from quorumdb import limits
from quorumdb import metrics as m


class JournalMetrics:
    def __init__(self, node_metrics: m.NodeMetrics, service) -> None:
        self.service = service
        self.append_stream = node_metrics.rpc_server.child("quorumdb.Journal", "AppendStream")
        self.disk_write = node_metrics.histogram(
            "quorumdb_journal_disk_write_seconds",
            "Time to write one append's entries to the local log and fsync them")
        self.append_entries = node_metrics.histogram(
            "quorumdb_journal_append_entries",
            "Entries per append that carried entries (group commit as a replica sees it)", m.SIZE_BUCKETS)
        self.appended_entries = 0
        node_metrics.add_service(self.collect)

    def disk_written(self, seconds: float, entries: int) -> None:
        self.disk_write.observe(seconds)
        if entries:
            self.append_entries.observe(entries)
            self.appended_entries += entries

    def collect(self) -> Iterable[m.Metric]:
        service = self.service
        core = service.core
        yield m.gauge("quorumdb_journal_promised_epoch", "The highest epoch this replica promised (fencing)",
                      core.promised_epoch)
        yield m.gauge("quorumdb_journal_leader_epoch", "Epoch of the leader whose appends this replica accepts",
                      core.leader_epoch)
        yield m.gauge("quorumdb_journal_leader_info", "The adjudicator leader this replica follows (always 1)", 1,
                      {"leader": core.leader})
        yield m.gauge("quorumdb_journal_commit_index", "Highest journal index this replica knows committed",
                      core.commit_index)
        yield m.gauge("quorumdb_journal_last_index", "Last index in this replica's log", core.last_index)
        yield m.gauge("quorumdb_journal_first_index", "First index still kept (after truncation)", core.first_index)
        yield m.gauge("quorumdb_journal_durable_index", "The 4/6 storage-durable index (truncation point)",
                      core.durable_index)
        yield m.gauge("quorumdb_journal_closed_index", "Index covering every commit up to the closed timestamp",
                      core.closed_index)
        yield m.gauge("quorumdb_journal_closed_timestamp_seconds", "Closed timestamp (Unix seconds)",
                      core.closed_ts / 1e9)
        yield m.gauge("quorumdb_journal_closed_timestamp_lag_seconds",
                      "How far the closed timestamp is behind this node's clock",
                      _lag_s(core.closed_ts))
        yield m.counter("quorumdb_journal_appended_entries", "Entries this replica appended to its log",
                        self.appended_entries)
        yield m.gauge("quorumdb_journal_subscribers", "Subscribe streams open (storage nodes, standbys, tools)",
                      service._subscribers)
        yield m.gauge("quorumdb_journal_subscribers_max", "Limit of Subscribe streams", limits.JOURNAL_SUBSCRIBERS_MAX)
        waiters = getattr(service._lock, "_waiters", None)  # requests queued behind the one being written
        yield m.gauge("quorumdb_journal_lock_waiters", "Appends, fences and SCL reports waiting for the replica's lock",
                      len(waiters) if waiters else 0)
        yield m.gauge("quorumdb_node_healthy", "1 when the node's Status health is ok", 1)


def _lag_s(ts_ns: int) -> float:
    """Seconds from a cluster timestamp (Unix ns) to now; 0 before the first one."""
    return max(0.0, time.time() - ts_ns / 1e9) if ts_ns else 0.0


def attach(service) -> JournalMetrics | None:
    """Register the replica's metrics (None when the node serves none)."""
    node_metrics = m.current()
    if node_metrics is None:
        return None
    service.metrics = JournalMetrics(node_metrics, service)
    return service.metrics
