"""gRPC shell of a storage node: the segment's state holder and the Storage servicer.

`SegmentState` owns the pure `Segment`, the on-disk `SegmentLog` and `CheckpointStore`,
and a condition that wakes waiting reads. It enforces the order the core relies on:
entries are appended to the local log and fsynced, then applied, then the closed
timestamp is observed, then waiting reads are woken. Only one task (the follow loop in
main.py) ingests or installs a peer's checkpoint.

Checkpoints: when one is due, the appender itself (`append_and_apply`, right after it
applied a batch, so no append is in flight) fixes a view of the segment at applied index
C and makes the log start a new file at C + 1: log files then end exactly at checkpoint
indexes. main.py's checkpoint loop (`write_checkpoint`) encodes + writes + fsyncs + renames
the file in a worker thread while ingestion goes on (GC is paused from the view until the
file is written; see storage_node/core.py), then drops the log files and checkpoints the
*previous* checkpoint made redundant. So the disk always holds the two
newest checkpoints and the log from just after the older one: if the newest checkpoint
turns out corrupt at restart, the older one plus the log still rebuild everything. The
log therefore holds about two intervals of entries, and restart replays at most that.

Restart (`replay`): load the newest checkpoint that verifies, drop log files it covers
entirely, and replay the log after it. A log that does not connect to the checkpoint
(both checkpoints lost) is dropped: the node then repairs from the journal and peers.

Installing a peer's checkpoint (`install_checkpoint`, repair and rebuild): the bytes go
to a temporary file, which is fsynced and verified (sha256) before it is renamed; then
the local log (all of it older than the checkpoint) is dropped and the segment replaced.
Reads in flight see the new segment when they wake (`self.segment` is looked up anew).

`StorageServicer` answers Get/Scan (waiting, bounded, until the segment can serve
the read's ts), ReadLog (peer repair, from the local log), ReadCheckpoint (repair or
rebuild of a peer, from the newest checkpoint file) and Status.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import AsyncIterator, Sequence

import grpc

from quorumdb import limits
from quorumdb.config import NodeConfig
from quorumdb.pb import common_pb2, storage_pb2, storage_pb2_grpc
from storage_node import checkpoint, pushdown
from storage_node.core import CheckpointView, Readiness, Record, Segment
from storage_node.store import CheckpointStore, LoadedCheckpoint, SegmentLog

DEFAULT_CHECKPOINT_ENTRIES = 20_000  # the cluster setting storage_checkpoint_entries overrides it

log = logging.getLogger(__name__)


def to_record(entry: common_pb2.Entry) -> Record:
    if entry.kind != common_pb2.ENTRY_TXN:
        return Record(index=entry.index, ts=entry.ts)
    writes = tuple((w.key, None if w.tombstone else w.value) for w in entry.writes)
    return Record(index=entry.index, ts=entry.ts, writes=writes)


class SegmentState:
    def __init__(self, node: NodeConfig, segment_log: SegmentLog, checkpoints: CheckpointStore | None = None,
                 checkpoint_entries: int = DEFAULT_CHECKPOINT_ENTRIES):
        assert checkpoint_entries > 0, checkpoint_entries
        self.node = node
        self.segment = Segment()
        self.segment_log = segment_log
        self.checkpoints = checkpoints or CheckpointStore(segment_log.directory)
        self.checkpoint_entries = checkpoint_entries
        self.changed = asyncio.Condition()
        self.replaying = True
        self.repairing = False
        self.commit_index = 0   # highest committed index seen from the journal
        self.epoch = 0
        self.leader = ""
        self.durable_index = 0  # the journal's 4/6 storage-durable index, from ReportScl
        self.journal_first_index = 0
        self.last_batch_monotonic: float | None = None
        self.checkpoint_index = 0          # applied index of the newest durable checkpoint (0 = none)
        self.checkpoint_bytes = 0          # its size
        self.log_bytes_since_checkpoint = 0
        self.checkpoints_written = 0
        self.checkpoint_lock = asyncio.Lock()  # one checkpoint write or install at a time
        self.checkpointing = False         # a checkpoint view is pending or being encoded: GC must wait
        self.checkpoint_wanted = asyncio.Event()  # set with _pending_checkpoint
        self._pending_checkpoint: tuple[Segment, CheckpointView] | None = None

    # --- restart ---------------------------------------------------------------------
    async def replay(self, stop: asyncio.Event) -> int:
        """Load the newest valid checkpoint, then apply the local log after it."""
        loaded = await asyncio.to_thread(self._load_checkpoint)
        if loaded is not None:
            header = loaded.header
            self.segment = Segment.from_checkpoint(header.applied_index, header.last_applied_ts, header.closed_ts,
                                                   header.gc_horizon_ts, loaded.records)
            self.checkpoint_index = loaded.index
            self.checkpoint_bytes = loaded.size_bytes
            log.info("loaded checkpoint %d (%d bytes, %d keys)", loaded.index, loaded.size_bytes,
                     self.segment.key_count)
        base = self.segment.applied_index
        segment_log = self.segment_log
        if segment_log.last_index and segment_log.last_index <= base:
            await asyncio.to_thread(segment_log.drop_through, base)
        if segment_log.first_index > base + 1:
            log.warning("local log starts at %d but the checkpoint ends at %d: dropping the log; "
                        "the journal and peers fill the gap", segment_log.first_index, base)
            await asyncio.to_thread(segment_log.reset)
        replayed = 0
        while not stop.is_set():
            entries = await asyncio.to_thread(
                segment_log.read, self.segment.applied_index + 1,
                limits.ENTRIES_PER_MESSAGE_MAX, limits.READ_LOG_BYTES_MAX,
            )
            if not entries:
                break
            assert entries[0].index == self.segment.applied_index + 1, "the local log has a gap"
            self.segment.apply(to_record(e) for e in entries)
            replayed += len(entries)
        self.replaying = False
        await self.wake_reads()
        return replayed

    def _load_checkpoint(self) -> LoadedCheckpoint | None:
        self.checkpoints.open()
        return self.checkpoints.load_newest()

    # --- checkpoints -------------------------------------------------------------------
    def checkpoint_due(self) -> bool:
        if self.replaying or self.checkpoint_lock.locked() or self._pending_checkpoint is not None:
            return False
        since = self.segment.applied_index - self.checkpoint_index
        return since >= self.checkpoint_entries or (
            since > 0 and self.log_bytes_since_checkpoint >= limits.STORAGE_CHECKPOINT_LOG_BYTES_MAX)

    def _capture_checkpoint(self) -> None:
        """Fix the view a checkpoint will hold. Only call it with no log append in flight."""
        assert self._pending_checkpoint is None
        self._pending_checkpoint = (self.segment, self.segment.checkpoint_view())
        self.checkpointing = True
        self.segment_log.roll()  # the next file starts right after the view's applied index
        self.log_bytes_since_checkpoint = 0
        self.checkpoint_wanted.set()

    async def write_checkpoint(self) -> int | None:
        """Write the pending checkpoint (or one of the current state); its index, None if nothing new."""
        async with self.checkpoint_lock:
            if self._pending_checkpoint is None:
                self._capture_checkpoint()
            segment, view = self._pending_checkpoint
            self._pending_checkpoint = None
            self.checkpoint_wanted.clear()
            try:
                if segment is not self.segment or view.applied_index <= self.checkpoint_index:
                    return None
                header = checkpoint.CheckpointHeader(view.applied_index, view.last_applied_ts, view.closed_ts,
                                                     view.gc_horizon_ts)
                started = time.monotonic()
                chunks = checkpoint.encode(header, segment.checkpoint_records(view), limits.CHECKPOINT_CHUNK_BYTES)
                size = await asyncio.to_thread(self.checkpoints.write, view.applied_index, chunks)
            finally:
                self.checkpointing = False
            previous = self.checkpoint_index
            self.checkpoint_index = view.applied_index
            self.checkpoint_bytes = size
            self.checkpoints_written += 1
            # The older checkpoint stays (a fallback); what only the one before it needed goes.
            dropped_files = await asyncio.to_thread(self.segment_log.drop_through, previous)
            await asyncio.to_thread(self.checkpoints.delete_below, previous)
            log.info("checkpoint %d written: %d bytes, %d keys, %.0f ms; dropped %d log files through %d; "
                     "log now [%d, %d] (%d bytes)", view.applied_index, size, len(view.keys),
                     (time.monotonic() - started) * 1000, dropped_files, previous, self.segment_log.first_index,
                     self.segment_log.last_index, self.segment_log.size_bytes)
            return view.applied_index

    async def install_checkpoint(self, index: int, chunks: AsyncIterator[bytes]) -> bool:
        """Make a peer's checkpoint (streamed as chunks) this node's state. False if it is not newer."""
        async with self.checkpoint_lock:
            if index <= self.segment.applied_index:
                return False
            writer = await asyncio.to_thread(self.checkpoints.receiver, index)
            try:
                async for chunk in chunks:
                    await asyncio.to_thread(writer.write, chunk)
                await asyncio.to_thread(writer.publish, True)
            except BaseException:
                await asyncio.to_thread(writer.abort)
                raise
            loaded = await asyncio.to_thread(self.checkpoints.load, index)
            assert loaded is not None, f"checkpoint {index} verified, then failed to load"
            header = loaded.header
            segment = Segment.from_checkpoint(header.applied_index, header.last_applied_ts, header.closed_ts,
                                              header.gc_horizon_ts, loaded.records)
            assert segment.applied_index > self.segment.applied_index
            # Every local log entry is older than the checkpoint: the checkpoint replaces them.
            await asyncio.to_thread(self.segment_log.reset)
            self.segment = segment
            self._pending_checkpoint = None  # a view of the replaced segment is worthless now
            self.checkpointing = False
            self.checkpoint_wanted.clear()
            self.checkpoint_index = index
            self.checkpoint_bytes = loaded.size_bytes
            self.log_bytes_since_checkpoint = 0
            await asyncio.to_thread(self.checkpoints.delete_below, index)
        await self.wake_reads()
        return True

    async def append_and_apply(self, entries: Sequence[common_pb2.Entry]) -> None:
        """Durable first (append + fsync), then visible (apply)."""
        fresh = [e for e in entries if e.index > self.segment.applied_index]
        if not fresh:
            return
        await asyncio.to_thread(self.segment_log.append, fresh)
        self.log_bytes_since_checkpoint += sum(e.ByteSize() for e in fresh)
        self.segment.apply(to_record(e) for e in fresh)
        if self.checkpoint_due():
            self._capture_checkpoint()

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
        if self.repairing:
            return "degraded: repairing"
        silence_s = limits.STORAGE_JOURNAL_SILENCE_MS / 1000
        if self.last_batch_monotonic is None or time.monotonic() - self.last_batch_monotonic > silence_s:
            return "degraded: no journal"
        if self.segment.applied_index < self.commit_index:
            return "degraded: catching up"
        return "ok"


class StorageServicer(storage_pb2_grpc.StorageServicer):
    def __init__(self, state: SegmentState):
        self.state = state
        self._checkpoint_streams = 0

    async def _wait_readable(self, ts: int, wait_ms: int, context: grpc.aio.ServicerContext) -> None:
        state = self.state  # state.segment is looked up anew: a checkpoint install replaces it
        readiness = state.segment.readiness(ts)
        if readiness is Readiness.WAIT:
            wait_s = min(wait_ms or limits.STORAGE_READ_WAIT_MS, limits.STORAGE_READ_WAIT_MS) / 1000
            remaining_s = context.time_remaining()
            if remaining_s is not None:
                wait_s = max(0.0, min(wait_s, remaining_s - 0.05))  # leave time to send the answer
            try:
                async with asyncio.timeout(wait_s), self.state.changed:  # not wait_for: see quorumdb/aio.py
                    await self.state.changed.wait_for(lambda: state.segment.readiness(ts) is not Readiness.WAIT)
            except TimeoutError:
                pass
            readiness = state.segment.readiness(ts)
        segment = state.segment
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
        spec = None
        if request.pushdown:  # filter + projection here (storage_node/pushdown.py)
            try:
                spec = pushdown.parse(request.pushdown)
            except pushdown.PushdownError as error:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        await self._wait_readable(request.ts, request.wait_ms, context)
        resume_key = None
        if spec is None:
            rows, more = self.state.segment.scan(request.start, request.end or None, request.ts, limit)
        else:
            walked, more = self.state.segment.scan(request.start, request.end or None, request.ts,
                                                   limits.SCAN_PUSHDOWN_EXAMINE_MAX)
            rows, more, resume_key = pushdown.filter_page(spec, walked, more, limit)
        return storage_pb2.ScanReply(
            versions=[storage_pb2.Version(key=k, value=v, version_ts=ts, found=True) for k, v, ts in rows],
            more=more, resume_key=resume_key or b"",
        )

    async def ReadLog(self, request: storage_pb2.ReadLogRequest, context) -> storage_pb2.ReadLogReply:
        max_entries = min(request.max_entries or limits.ENTRIES_PER_MESSAGE_MAX, limits.ENTRIES_PER_MESSAGE_MAX)
        segment_log = self.state.segment_log
        entries = await asyncio.to_thread(segment_log.read, request.from_index, max_entries, limits.READ_LOG_BYTES_MAX)
        return storage_pb2.ReadLogReply(entries=entries, first_index=segment_log.first_index,
                                        scl=self.state.segment.scl, checkpoint_index=self.state.checkpoint_index)

    async def ReadCheckpoint(self, request: storage_pb2.ReadCheckpointRequest, context):
        state = self.state
        index = state.checkpoint_index
        if index == 0 or index < request.min_index:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"storage node {state.node.name}: newest checkpoint is {index}, "
                                f"{request.min_index} or newer was asked for")
        if self._checkpoint_streams >= limits.STORAGE_CHECKPOINT_STREAMS_MAX:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"storage node {state.node.name} already serves {self._checkpoint_streams} checkpoints")
        try:
            # An open descriptor keeps the file readable even if a newer checkpoint deletes it meanwhile.
            file = await asyncio.to_thread(open, state.checkpoints.path(index), "rb")
        except FileNotFoundError:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"checkpoint {index} was just replaced; ask again")
        self._checkpoint_streams += 1
        try:
            total = os.fstat(file.fileno()).st_size
            offset = 0
            while offset < total:  # bounded: every round sends at least one byte of a fixed-size file
                data = await asyncio.to_thread(file.read, limits.CHECKPOINT_CHUNK_BYTES)
                assert data, f"checkpoint {index} shrank while being read"
                yield storage_pb2.CheckpointChunk(index=index, total_bytes=total, offset=offset, data=data)
                offset += len(data)
        finally:
            self._checkpoint_streams -= 1
            file.close()

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
                    f"gc_horizon_ts={segment.gc_horizon_ts} journal_first_index={state.journal_first_index} "
                    f"checkpoint_index={state.checkpoint_index} checkpoint_bytes={state.checkpoint_bytes} "
                    f"log_entries={state.segment_log.entry_count} log_bytes={state.segment_log.size_bytes} "
                    f"log_files={state.segment_log.file_count}"),
        )
