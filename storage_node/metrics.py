"""A storage copy's Prometheus metrics (quorumdb/metrics.py says how metrics work).

At scrape time, from the SegmentState the Status RPC also reads: SCL and applied index against
the journal's commit index (apply lag), closed timestamp and its lag behind the clock, the
newest checkpoint's index and age, the local log's size, keys and versions, health. Observed as
it happens (storage_node/main.py's follow loop): each journal batch's ingestion time (append +
fsync to the local log, apply, wake reads) and its entries. The read path is not touched: read
latency is measured where reads are asked, on the compute nodes.
"""
from __future__ import annotations

import time
from typing import Iterable

from quorumdb import metrics as m
from quorumdb import runtime


class StorageMetrics:
    def __init__(self, node_metrics: m.NodeMetrics, storage_node) -> None:
        self.storage_node = storage_node
        self.ingest = node_metrics.histogram(
            "quorumdb_storage_ingest_seconds",
            "Time to make one journal batch durable and visible: local log append + fsync, apply, wake reads")
        self.ingested_entries = 0
        self.ingested_batches = 0
        node_metrics.add_service(self.collect)

    def ingested(self, seconds: float, entries: int) -> None:
        self.ingest.observe(seconds)
        self.ingested_batches += 1
        self.ingested_entries += entries

    def collect(self) -> Iterable[m.Metric]:
        state = self.storage_node.state
        segment = state.segment  # looked up anew: a checkpoint install replaces it
        segment_log = state.segment_log
        now_monotonic = runtime.monotonic()  # the clock checkpoint/batch times are taken on
        yield m.gauge("quorumdb_storage_scl", "Segment complete point: the highest index with no hole below it",
                      segment.scl)
        yield m.gauge("quorumdb_storage_applied_index", "Highest journal index applied to the MVCC index",
                      segment.applied_index)
        yield m.gauge("quorumdb_storage_commit_index", "Highest journal index this copy knows committed",
                      state.commit_index)
        yield m.gauge("quorumdb_storage_apply_lag_entries", "Committed journal entries this copy has not applied",
                      max(0, state.commit_index - segment.applied_index))
        yield m.gauge("quorumdb_storage_durable_index", "The journal's 4/6 storage-durable index, as last reported",
                      state.durable_index)
        yield m.gauge("quorumdb_storage_epoch", "Highest leader epoch seen on the journal stream", state.epoch)
        yield m.gauge("quorumdb_storage_closed_timestamp_seconds", "Closed timestamp (Unix seconds): reads at or "
                      "below it are served at once", segment.closed_ts / 1e9)
        yield m.gauge("quorumdb_storage_closed_timestamp_lag_seconds",
                      "How far the closed timestamp is behind this node's clock",
                      max(0.0, time.time() - segment.closed_ts / 1e9) if segment.closed_ts else 0.0)
        if state.last_batch_monotonic is not None:
            yield m.gauge("quorumdb_storage_journal_silence_seconds", "Time since the last journal batch arrived",
                          now_monotonic - state.last_batch_monotonic)
        yield m.gauge("quorumdb_storage_checkpoint_index", "Applied index of the newest checkpoint", state.checkpoint_index)
        yield m.gauge("quorumdb_storage_checkpoint_age_entries", "Entries applied since the newest checkpoint",
                      max(0, segment.applied_index - state.checkpoint_index))
        if state.checkpoint_monotonic is not None:
            yield m.gauge("quorumdb_storage_checkpoint_age_seconds", "Time since the newest checkpoint was "
                          "written, installed or loaded", now_monotonic - state.checkpoint_monotonic)
        yield m.gauge("quorumdb_storage_checkpoint_bytes", "Size of the newest checkpoint", state.checkpoint_bytes)
        yield m.counter("quorumdb_storage_checkpoints_written", "Checkpoints this process wrote",
                        state.checkpoints_written)
        yield m.gauge("quorumdb_storage_log_bytes", "Bytes of the local log", segment_log.size_bytes)
        yield m.gauge("quorumdb_storage_log_entries", "Entries in the local log", segment_log.entry_count)
        yield m.gauge("quorumdb_storage_keys", "Keys in the MVCC index", segment.key_count)
        yield m.gauge("quorumdb_storage_versions", "Versions in the MVCC index (before garbage collection)",
                      segment.version_count)
        yield m.counter("quorumdb_storage_ingested_entries", "Journal entries ingested from the journal stream",
                        self.ingested_entries)
        yield m.counter("quorumdb_storage_ingested_batches", "Journal batches ingested", self.ingested_batches)
        health = state.health()
        yield m.gauge("quorumdb_node_healthy", "1 when the node's Status health is ok", 1 if health == "ok" else 0)
        for what in ("replaying", "repairing"):
            yield m.gauge(f"quorumdb_storage_{what}", f"1 while the copy is {what}", 1 if getattr(state, what) else 0)


def attach(storage_node) -> StorageMetrics | None:
    node_metrics = m.current()
    return None if node_metrics is None else StorageMetrics(node_metrics, storage_node)
