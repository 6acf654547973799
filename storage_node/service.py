"""gRPC shell of a storage node: the segment's state holder and the Storage servicer.

`SegmentState` owns the pure `Segment`, the on-disk `SegmentLog` and a condition that
wakes waiting reads. It enforces the order the core relies on: entries are appended
to the local log and fsynced, then applied, then the closed timestamp is observed,
then waiting reads are woken. Only one task (the follow loop in main.py) ingests.

`StorageServicer` answers Get/Scan (waiting, bounded, until the segment can serve
the read's ts), ReadLog (peer repair, from the local log) and Status.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Sequence

import grpc

from quorumdb import limits
from quorumdb.config import NodeConfig
from quorumdb.pb import common_pb2, storage_pb2, storage_pb2_grpc
from storage_node.core import Readiness, Record, Segment
from storage_node.store import SegmentLog

log = logging.getLogger(__name__)


def to_record(entry: common_pb2.Entry) -> Record:
    if entry.kind != common_pb2.ENTRY_TXN:
        return Record(index=entry.index, ts=entry.ts)
    writes = tuple((w.key, None if w.tombstone else w.value) for w in entry.writes)
    return Record(index=entry.index, ts=entry.ts, writes=writes)


class SegmentState:
    def __init__(self, node: NodeConfig, segment_log: SegmentLog):
        self.node = node
        self.segment = Segment()
        self.segment_log = segment_log
        self.changed = asyncio.Condition()
        self.replaying = True
        self.commit_index = 0   # highest committed index seen from the journal
        self.epoch = 0
        self.leader = ""
        self.durable_index = 0  # the journal's 4/6 storage-durable index, from ReportScl
        self.journal_first_index = 0
        self.last_batch_monotonic: float | None = None

    async def replay(self, stop: asyncio.Event) -> int:
        """Apply the local log into the segment (the log already holds these entries durably)."""
        replayed = 0
        while not stop.is_set():
            entries = await asyncio.to_thread(
                self.segment_log.read, self.segment.applied_index + 1,
                limits.ENTRIES_PER_MESSAGE_MAX, limits.READ_LOG_BYTES_MAX,
            )
            if not entries:
                break
            # Without checkpoints (a later issue) every local log starts at the first journal entry.
            assert entries[0].index == self.segment.applied_index + 1, "segment log does not start at index 1"
            self.segment.apply(to_record(e) for e in entries)
            replayed += len(entries)
        self.replaying = False
        await self.wake_reads()
        return replayed

    async def append_and_apply(self, entries: Sequence[common_pb2.Entry]) -> None:
        """Durable first (append + fsync), then visible (apply)."""
        fresh = [e for e in entries if e.index > self.segment.applied_index]
        if not fresh:
            return
        await asyncio.to_thread(self.segment_log.append, fresh)
        self.segment.apply(to_record(e) for e in fresh)

    async def ingest(self, entries: Sequence[common_pb2.Entry], commit_index: int, closed_ts: int,
                     closed_index: int, epoch: int, leader: str) -> None:
        """One journal batch: append + fsync, apply, observe closed time, wake waiting reads."""
        await self.append_and_apply(entries)
        self.segment.observe_closed(closed_ts, closed_index)
        self.commit_index = max(self.commit_index, commit_index, self.segment.applied_index)
        self.epoch = max(self.epoch, epoch)
        if leader:
            self.leader = leader
        self.last_batch_monotonic = time.monotonic()
        await self.wake_reads()

    async def wake_reads(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    def health(self) -> str:
        if self.replaying:
            return "degraded: replaying local log"
        silence_s = limits.STORAGE_JOURNAL_SILENCE_MS / 1000
        if self.last_batch_monotonic is None or time.monotonic() - self.last_batch_monotonic > silence_s:
            return "degraded: no journal"
        if self.segment.applied_index < self.commit_index:
            return "degraded: catching up"
        return "ok"


class StorageServicer(storage_pb2_grpc.StorageServicer):
    def __init__(self, state: SegmentState):
        self.state = state

    async def _wait_readable(self, ts: int, wait_ms: int, context: grpc.aio.ServicerContext) -> None:
        segment = self.state.segment
        readiness = segment.readiness(ts)
        if readiness is Readiness.WAIT:
            wait_s = min(wait_ms or limits.STORAGE_READ_WAIT_MS, limits.STORAGE_READ_WAIT_MS) / 1000
            remaining_s = context.time_remaining()
            if remaining_s is not None:
                wait_s = max(0.0, min(wait_s, remaining_s - 0.05))  # leave time to send the answer
            try:
                async with self.state.changed:
                    await asyncio.wait_for(
                        self.state.changed.wait_for(lambda: segment.readiness(ts) is not Readiness.WAIT), wait_s
                    )
            except TimeoutError:
                pass
            readiness = segment.readiness(ts)
        match readiness:
            case Readiness.READY:
                return
            case Readiness.WAIT:
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    f"storage node {self.state.node.name} not caught up to ts {ts}: its closed timestamp is "
                    f"{(ts - segment.closed_ts) / 1e6:.0f} ms behind (applied_index {segment.applied_index})",
                )
            case Readiness.TOO_OLD:
                await context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"storage node {self.state.node.name}: read at ts {ts} is older than the "
                    f"version garbage-collection horizon {segment.gc_horizon_ts}",
                )

    async def Get(self, request: storage_pb2.GetRequest, context) -> storage_pb2.GetReply:
        if len(request.keys) > limits.GET_KEYS_MAX:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Get asks for {len(request.keys)} keys; at most {limits.GET_KEYS_MAX} per call",
            )
        await self._wait_readable(request.ts, request.wait_ms, context)
        segment = self.state.segment
        versions = []
        for key in request.keys:
            value, version_ts = segment.get(key, request.ts)
            versions.append(storage_pb2.Version(
                key=key, value=value or b"", version_ts=version_ts, found=value is not None,
            ))
        return storage_pb2.GetReply(versions=versions)

    async def Scan(self, request: storage_pb2.ScanRequest, context) -> storage_pb2.ScanReply:
        # A limit above the page size (or 0) is served as one full page; `more` tells the caller to go on.
        limit = min(request.limit or limits.SCAN_PAGE_MAX, limits.SCAN_PAGE_MAX)
        await self._wait_readable(request.ts, request.wait_ms, context)
        rows, more = self.state.segment.scan(request.start, request.end or None, request.ts, limit)
        return storage_pb2.ScanReply(
            versions=[storage_pb2.Version(key=k, value=v, version_ts=ts, found=True) for k, v, ts in rows],
            more=more,
        )

    async def ReadLog(self, request: storage_pb2.ReadLogRequest, context) -> storage_pb2.ReadLogReply:
        max_entries = min(request.max_entries or limits.ENTRIES_PER_MESSAGE_MAX, limits.ENTRIES_PER_MESSAGE_MAX)
        segment_log = self.state.segment_log
        entries = await asyncio.to_thread(segment_log.read, request.from_index, max_entries, limits.READ_LOG_BYTES_MAX)
        return storage_pb2.ReadLogReply(entries=entries, first_index=segment_log.first_index, scl=self.state.segment.scl)

    async def Status(self, request, context) -> common_pb2.NodeStatus:
        state = self.state
        segment = state.segment
        return common_pb2.NodeStatus(
            name=state.node.name,
            az=state.node.az,
            service="storage",
            role="segment",
            epoch=state.epoch,
            commit_index=state.commit_index,
            applied_index=segment.applied_index,
            scl=segment.scl,
            last_index=state.segment_log.last_index,
            first_index=state.segment_log.first_index,
            durable_index=state.durable_index,
            closed_ts=segment.closed_ts,
            leader=state.leader,
            health=state.health(),
            detail=(f"keys={segment.key_count} versions={segment.version_count} "
                    f"gc_horizon_ts={segment.gc_horizon_ts} journal_first_index={state.journal_first_index}"),
        )
