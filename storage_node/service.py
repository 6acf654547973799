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
the file off the event loop (runtime.offload) while ingestion goes on (GC is paused from
the view until the file is written; see storage_node/core.py), then drops the log files and checkpoints the
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
from typing import AsyncIterator, Sequence

import grpc

from quorumdb import limits, runtime
from quorumdb.config import NodeConfig
from quorumdb.pb import common_pb2, storage_pb2, storage_pb2_grpc
from quorumdb import pushdown
from storage_node import backup_core, checkpoint
from storage_node.core import CheckpointView, Readiness, Record, Segment
from storage_node.store import CheckpointStore, LoadedCheckpoint, SegmentLog

DEFAULT_CHECKPOINT_ENTRIES = 20_000  # the cluster setting storage_checkpoint_entries overrides it

log = logging.getLogger(__name__)


def _too_many_keys(count: int) -> str:
    return f"Get asks for {count} keys; at most {limits.GET_KEYS_MAX} per call"


def _pushdown_spec(request: storage_pb2.ScanRequest):
    """The parsed filter + projection of a Scan (None without one); raises PushdownError."""
    return pushdown.parse(request.pushdown) if request.pushdown else None


def to_record(entry: common_pb2.Entry) -> Record:
    if entry.kind == common_pb2.ENTRY_BACKTRACK:
        return Record(index=entry.index, ts=entry.ts, backtrack_to_ts=entry.backtrack_to_ts)
    if entry.kind != common_pb2.ENTRY_TXN:
        return Record(index=entry.index, ts=entry.ts)
    writes = tuple((w.key, None if w.tombstone else w.value) for w in entry.writes)
    return Record(index=entry.index, ts=entry.ts, writes=writes)


class SegmentState:
    def __init__(self, node: NodeConfig, segment_log: SegmentLog, checkpoints: CheckpointStore | None = None,
                 checkpoint_entries: int = DEFAULT_CHECKPOINT_ENTRIES,
                 backtrack_window_ns: int = limits.BACKTRACK_WINDOW_DEFAULT_NS,
                 backtrack_budget_bytes: int = limits.BACKTRACK_BUDGET_DEFAULT_BYTES):
        assert checkpoint_entries > 0, checkpoint_entries
        self.node = node
        # The cluster's backtrack settings: every copy must use the same (storage_node/core.py).
        self.segment_settings = {"backtrack_window_ns": backtrack_window_ns,
                                 "backtrack_budget_bytes": backtrack_budget_bytes}
        self.segment = Segment(**self.segment_settings)
        self.segment_log = segment_log
        self.checkpoints = checkpoints or CheckpointStore(segment_log.directory, segment_log.disk)
        self.checkpoint_entries = checkpoint_entries
        self.changed = asyncio.Condition()
        self._change_waiters: list[asyncio.Future] = []  # read streams waiting for the next change
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
        self.checkpoint_monotonic: float | None = None  # when the newest checkpoint was loaded, written or installed
        self.checkpoint_lock = asyncio.Lock()  # one checkpoint write or install at a time
        self.checkpointing = False         # a checkpoint view is pending or being encoded: GC must wait
        self.checkpoint_wanted = asyncio.Event()  # set with _pending_checkpoint
        self._pending_checkpoint: tuple[Segment, CheckpointView] | None = None
        # Continuous backup (storage_node/backup.py): the uploaded index this copy last learnt from
        # the store's newest manifest. None: no backup, log files go with the checkpoint before.
        # Otherwise a log range leaves this copy only once the store holds it.
        self.backup_uploaded_index: int | None = None
        self.backup = None  # the BackupAgent, for Status
        # The index the log may be dropped through once the backup holds it (the older kept
        # checkpoint's): a drop the gate held back happens when the upload catches up, not only
        # at the next checkpoint.
        self.log_drop_target = 0

    # --- restart ---------------------------------------------------------------------
    async def replay(self, stop: asyncio.Event) -> int:
        """Load the newest valid checkpoint, then apply the local log after it."""
        loaded = await runtime.offload(self._load_checkpoint)
        if loaded is not None:
            header = loaded.header
            self.segment = Segment.from_checkpoint(header.applied_index, header.last_applied_ts, header.closed_ts,
                                                   header.gc_horizon_ts, loaded.records, header.window_start_ts,
                                                   **self.segment_settings)
            self.checkpoint_index = loaded.index
            self.checkpoint_bytes = loaded.size_bytes
            self.checkpoint_monotonic = runtime.monotonic()
            log.info("loaded checkpoint %d (%d bytes, %d keys)", loaded.index, loaded.size_bytes,
                     self.segment.key_count)
        base = self.segment.applied_index
        segment_log = self.segment_log
        if segment_log.last_index and segment_log.last_index < base:
            # The log ends before the checkpoint: it cannot be continued (appends follow base).
            await runtime.offload(segment_log.drop_through, base)
        elif segment_log.last_index and segment_log.last_index == base:
            self.log_drop_target = base
            await self._drop_log_the_backup_holds()  # nothing else runs yet: no lock needed
        if segment_log.first_index > base + 1:
            log.warning("local log starts at %d but the checkpoint ends at %d: dropping the log; "
                        "the journal and peers fill the gap", segment_log.first_index, base)
            await runtime.offload(segment_log.reset)
        replayed = 0
        while not stop.is_set():
            entries = await runtime.offload(
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
        if since >= self.checkpoint_entries or (
                since > 0 and self.log_bytes_since_checkpoint >= limits.STORAGE_CHECKPOINT_LOG_BYTES_MAX):
            return True
        # In simulation, now and then a checkpoint well before the threshold: checkpoints (and the
        # log drops after them) then race ingestion, repair and restarts far more often.
        return since > 0 and runtime.buggify("storage.checkpoint.early")

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
                                                     view.gc_horizon_ts, view.window_start_ts)
                started = runtime.monotonic()
                chunks = checkpoint.encode(header, segment.checkpoint_records(view), limits.CHECKPOINT_CHUNK_BYTES)
                runtime.crash_point("storage.checkpoint.before_publish")
                size = await runtime.offload(self.checkpoints.write, view.applied_index, chunks)
            finally:
                self.checkpointing = False
            # Published (durable under its name); the log it makes redundant is not dropped yet.
            runtime.crash_point("storage.checkpoint.after_publish")
            previous = self.checkpoint_index
            self.checkpoint_index = view.applied_index
            self.checkpoint_bytes = size
            self.checkpoints_written += 1
            self.checkpoint_monotonic = runtime.monotonic()
            # The older checkpoint stays (a fallback); what only the one before it needed goes.
            self.log_drop_target = previous
            dropped_files, drop_through = await self._drop_log_the_backup_holds()
            if drop_through < previous:
                log.info("keeping the local log after %d: the backup holds up to %d only", drop_through,
                         self.backup_uploaded_index)
            await runtime.offload(self.checkpoints.delete_below, previous)
            log.info("checkpoint %d written: %d bytes, %d keys, %.0f ms; dropped %d log files through %d; "
                     "log now [%d, %d] (%d bytes)", view.applied_index, size, len(view.keys),
                     (runtime.monotonic() - started) * 1000, dropped_files, drop_through, self.segment_log.first_index,
                     self.segment_log.last_index, self.segment_log.size_bytes)
            return view.applied_index

    async def _drop_log_the_backup_holds(self) -> tuple[int, int]:
        """Drop log files through log_drop_target, but none the backup does not hold yet.
        Returns (files dropped, the index dropped through). Runs under checkpoint_lock (or before
        any other task), as every change to the log's files does."""
        through = backup_core.drop_gate(self.log_drop_target, self.backup_uploaded_index)
        return await runtime.offload(self.segment_log.drop_through, through), through

    async def learn_uploaded_index(self, index: int) -> int:
        """The store holds every entry <= index: drop the log files the gate kept. Returns files dropped."""
        previous = self.backup_uploaded_index
        self.backup_uploaded_index = index if previous is None else max(previous, index)
        first = self.segment_log.first_index
        if first == 0 or first > backup_core.drop_gate(self.log_drop_target, self.backup_uploaded_index):
            return 0  # nothing to drop: no lock, no thread
        async with self.checkpoint_lock:  # not while a checkpoint install resets the log
            dropped, through = await self._drop_log_the_backup_holds()
        if dropped:
            log.info("the backup caught up to %d: dropped %d log files through %d; log now [%d, %d]",
                     index, dropped, through, self.segment_log.first_index, self.segment_log.last_index)
        return dropped

    async def install_checkpoint(self, index: int, chunks: AsyncIterator[bytes]) -> bool:
        """Make a peer's checkpoint (streamed as chunks) this node's state. False if it is not newer."""
        async with self.checkpoint_lock:
            if index <= self.segment.applied_index:
                return False
            writer = await runtime.offload(self.checkpoints.receiver, index)
            try:
                async for chunk in chunks:
                    await runtime.offload(writer.write, chunk)
                runtime.crash_point("storage.repair.install")  # received whole, not yet verified nor renamed
                await runtime.offload(writer.publish, True)
            except BaseException:
                await runtime.offload(writer.abort)
                raise
            loaded = await runtime.offload(self.checkpoints.load, index)
            assert loaded is not None, f"checkpoint {index} verified, then failed to load"
            header = loaded.header
            segment = Segment.from_checkpoint(header.applied_index, header.last_applied_ts, header.closed_ts,
                                              header.gc_horizon_ts, loaded.records, header.window_start_ts,
                                              **self.segment_settings)
            assert segment.applied_index > self.segment.applied_index
            # Every local log entry is older than the checkpoint: the checkpoint replaces them.
            await runtime.offload(self.segment_log.reset)
            self.segment = segment
            self._pending_checkpoint = None  # a view of the replaced segment is worthless now
            self.checkpointing = False
            self.checkpoint_wanted.clear()
            self.checkpoint_index = index
            self.checkpoint_bytes = loaded.size_bytes
            self.checkpoint_monotonic = runtime.monotonic()
            self.log_bytes_since_checkpoint = 0
            await runtime.offload(self.checkpoints.delete_below, index)
        await self.wake_reads()
        return True

    async def append_and_apply(self, entries: Sequence[common_pb2.Entry]) -> None:
        """Durable first (append + fsync), then visible (apply)."""
        fresh = [e for e in entries if e.index > self.segment.applied_index]
        if not fresh:
            return
        runtime.crash_point("storage.append.before_fsync")
        await runtime.offload(self.segment_log.append, fresh)
        runtime.crash_point("storage.append.after_fsync")  # durable here, not yet applied nor acknowledged
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
        self.last_batch_monotonic = runtime.monotonic()
        await self.wake_reads()

    async def wake_reads(self) -> None:
        waiters, self._change_waiters = self._change_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        async with self.changed:
            self.changed.notify_all()

    def next_change(self) -> asyncio.Future:
        """A future resolved by the next wake_reads (a batch applied, a closed timestamp moved)."""
        waiter = asyncio.get_running_loop().create_future()
        self._change_waiters.append(waiter)
        return waiter

    def health(self) -> str:
        if self.replaying:
            return "degraded: replaying local log"
        if self.repairing:
            return "degraded: repairing"
        silence_s = limits.STORAGE_JOURNAL_SILENCE_MS / 1000
        if self.last_batch_monotonic is None or runtime.monotonic() - self.last_batch_monotonic > silence_s:
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
        if state.segment.readiness(ts) is Readiness.WAIT:
            wait_s = min(wait_ms or limits.STORAGE_READ_WAIT_MS, limits.STORAGE_READ_WAIT_MS) / 1000
            remaining_s = context.time_remaining()
            if remaining_s is not None:
                wait_s = max(0.0, min(wait_s, remaining_s - 0.05))  # leave time to send the answer
            try:
                async with asyncio.timeout(wait_s), self.state.changed:  # not wait_for: see quorumdb/aio.py
                    await self.state.changed.wait_for(lambda: state.segment.readiness(ts) is not Readiness.WAIT)
            except TimeoutError:
                pass
        problem = self.unreadable(ts)
        if problem is not None:
            await context.abort(*problem)

    async def Get(self, request: storage_pb2.GetRequest, context) -> storage_pb2.GetReply:
        if len(request.keys) > limits.GET_KEYS_MAX:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _too_many_keys(len(request.keys)))
        await self._wait_readable(request.ts, request.wait_ms, context)
        return self.serve_get(request)

    async def Scan(self, request: storage_pb2.ScanRequest, context) -> storage_pb2.ScanReply:
        try:
            spec = _pushdown_spec(request)
        except pushdown.PushdownError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        await self._wait_readable(request.ts, request.wait_ms, context)
        return self.serve_scan(request, spec)

    def serve_get(self, request: storage_pb2.GetRequest) -> storage_pb2.GetReply:
        """The answer at request.ts; only call it once the segment can serve that ts."""
        segment = self.state.segment
        ts = request.ts
        versions = []
        for key in request.keys:
            value, version_ts = segment.get(key, ts)
            versions.append(storage_pb2.Version(key=key, value=value or b"", version_ts=version_ts,
                                                found=value is not None))
        return storage_pb2.GetReply(versions=versions)

    def serve_scan(self, request: storage_pb2.ScanRequest, spec) -> storage_pb2.ScanReply:
        """The page at request.ts; only call it once the segment can serve that ts."""
        # A limit above the page size (or 0) is served as one full page; `more` tells the caller to go on.
        limit = min(request.limit or limits.SCAN_PAGE_MAX, limits.SCAN_PAGE_MAX)
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

    def unreadable(self, ts: int) -> tuple[grpc.StatusCode, str] | None:
        """Why the segment cannot serve a read at ts now (None: it can); as _wait_readable reports it."""
        segment = self.state.segment
        match segment.readiness(ts):
            case Readiness.READY:
                return None
            case Readiness.WAIT:
                return grpc.StatusCode.UNAVAILABLE, (
                    f"storage node {self.state.node.name} not caught up to ts {ts}: its closed timestamp is "
                    f"{(ts - segment.closed_ts) / 1e6:.0f} ms behind (applied_index {segment.applied_index})")
            case Readiness.TOO_OLD:
                return grpc.StatusCode.FAILED_PRECONDITION, (
                    f"storage node {self.state.node.name}: read at ts {ts} is older than the "
                    f"version garbage-collection horizon {segment.gc_horizon_ts}")

    async def ReadStream(self, request_iterator, context):
        """Batched Gets and Scans (read_stream.py on the compute side): see ReadStreamServer."""
        await ReadStreamServer(self, context).run(request_iterator)

    async def ReadLog(self, request: storage_pb2.ReadLogRequest, context) -> storage_pb2.ReadLogReply:
        max_entries = min(request.max_entries or limits.ENTRIES_PER_MESSAGE_MAX, limits.ENTRIES_PER_MESSAGE_MAX)
        segment_log = self.state.segment_log
        entries = await runtime.offload(segment_log.read, request.from_index, max_entries, limits.READ_LOG_BYTES_MAX)
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
            # An open file stays readable even if a newer checkpoint deletes its name meanwhile.
            file = await runtime.offload(state.checkpoints.disk.open_read, state.checkpoints.path(index))
        except FileNotFoundError:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"checkpoint {index} was just replaced; ask again")
        self._checkpoint_streams += 1
        try:
            total = file.size
            offset = 0
            while offset < total:  # bounded: every round sends at least one byte of a fixed-size file
                data = await runtime.offload(file.read, limits.CHECKPOINT_CHUNK_BYTES)
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
            backtrack_window_start_ts=segment.window_start_ts,
            backtrack=segment.last_backtrack.describe() if segment.last_backtrack is not None else "",
            detail=(f"keys={segment.key_count} versions={segment.version_count} "
                    f"gc_horizon_ts={segment.gc_horizon_ts} backtrack_window_s={segment.backtrack_window_ns / 1e9:g} "
                    f"backtrack_budget_bytes={segment.backtrack_budget_bytes} window_bytes={segment.window_bytes} "
                    f"journal_first_index={state.journal_first_index} "
                    f"checkpoint_index={state.checkpoint_index} checkpoint_bytes={state.checkpoint_bytes} "
                    f"log_entries={state.segment_log.entry_count} log_bytes={state.segment_log.size_bytes} "
                    f"log_files={state.segment_log.file_count}"),
            **(state.backup.status_fields() if state.backup is not None else {}),
        )


class ReadStreamServer:
    """One compute node's read stream to this copy.

    Every incoming ReadBatch is served at once for the ops whose ts the segment can serve; those
    are answered together in one ReadReplyBatch. An op whose ts is not closed yet waits (bounded:
    its wait_ms, and READ_STREAM_WAITING_MAX per stream) in this stream's waiting list; one task
    per stream (not per op) re-checks the list whenever the segment changes and answers what has
    become servable, again as one message, and answers ops whose wait ran out with UNAVAILABLE
    "not caught up", exactly as the unary Get would have failed. Replies are split so a message
    stays under READ_STREAM_REPLY_BYTES.
    """

    def __init__(self, servicer: StorageServicer, context) -> None:
        self._servicer = servicer
        self._context = context
        self._waiting: list[tuple[storage_pb2.ReadOp, float]] = []  # (op, deadline on the loop clock)
        self._rearm = asyncio.Event()  # a new op waits: the waiter task recomputes its deadline
        self._waiter: asyncio.Task | None = None
        self._write_lock = asyncio.Lock()
        self._loop = asyncio.get_running_loop()

    async def run(self, request_iterator) -> None:
        try:
            async for batch in request_iterator:
                if len(batch.ops) > limits.READ_STREAM_BATCH_MAX:
                    await self._context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                              f"a read batch holds at most {limits.READ_STREAM_BATCH_MAX} ops")
                results = []
                for op in batch.ops:
                    result = self._serve(op, waited_out=False)
                    if result is not None:
                        results.append(result)
                    elif len(self._waiting) >= limits.READ_STREAM_WAITING_MAX:
                        results.append(_result_error(op.id, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                                     f"{len(self._waiting)} reads already wait on this stream"))
                    else:
                        self._wait(op)
                if results:
                    await self._write(results)
            # Half-closed by the compute node: answer what still waits, then end the stream.
            if self._waiter is not None:
                await self._waiter
        finally:
            if self._waiter is not None and not self._waiter.done():
                self._waiter.cancel()
                await asyncio.gather(self._waiter, return_exceptions=True)

    def _wait(self, op: storage_pb2.ReadOp) -> None:
        request = op.get if op.WhichOneof("op") == "get" else op.scan
        wait_s = min(request.wait_ms or limits.STORAGE_READ_WAIT_MS, limits.STORAGE_READ_WAIT_MS) / 1000
        self._waiting.append((op, self._loop.time() + wait_s))
        self._rearm.set()
        if self._waiter is None or self._waiter.done():
            self._waiter = asyncio.create_task(self._answer_waiting(), name="storage-read-stream-wait")

    async def _answer_waiting(self) -> None:
        state = self._servicer.state
        while self._waiting:
            deadline = min(deadline for _, deadline in self._waiting)
            change = state.next_change()
            self._rearm.clear()
            rearm = asyncio.ensure_future(self._rearm.wait())
            try:
                await asyncio.wait((change, rearm), timeout=max(0.0, deadline - self._loop.time()),
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                rearm.cancel()
                change.cancel()
            now = self._loop.time()
            results, still = [], []
            for op, op_deadline in self._waiting:
                result = self._serve(op, waited_out=now >= op_deadline)
                if result is None:
                    still.append((op, op_deadline))
                else:
                    results.append(result)
            self._waiting = still
            if results:
                await self._write(results)

    def _serve(self, op: storage_pb2.ReadOp, waited_out: bool) -> storage_pb2.ReadResult | None:
        """The result of `op` now; None when it must wait for its ts (and may still)."""
        servicer = self._servicer
        kind = op.WhichOneof("op")
        if kind == "get":
            request = op.get
            if len(request.keys) > limits.GET_KEYS_MAX:
                return _result_error(op.id, grpc.StatusCode.INVALID_ARGUMENT, _too_many_keys(len(request.keys)))
            problem = servicer.unreadable(request.ts)
            if problem is None:
                return storage_pb2.ReadResult(id=op.id, get=servicer.serve_get(request))
        elif kind == "scan":
            request = op.scan
            try:
                spec = _pushdown_spec(request)
            except pushdown.PushdownError as error:
                return _result_error(op.id, grpc.StatusCode.INVALID_ARGUMENT, str(error))
            problem = servicer.unreadable(request.ts)
            if problem is None:
                return storage_pb2.ReadResult(id=op.id, scan=servicer.serve_scan(request, spec))
        else:
            return _result_error(op.id, grpc.StatusCode.INVALID_ARGUMENT, "a read op needs a get or a scan")
        code, message = problem
        if code == grpc.StatusCode.UNAVAILABLE and not waited_out:
            return None
        return _result_error(op.id, code, message)

    async def _write(self, results: list[storage_pb2.ReadResult]) -> None:
        async with self._write_lock:
            batch: list[storage_pb2.ReadResult] = []
            size = 0
            for result in results:
                result_size = result.ByteSize()
                if batch and size + result_size > limits.READ_STREAM_REPLY_BYTES:
                    await self._context.write(storage_pb2.ReadReplyBatch(results=batch))
                    batch, size = [], 0
                batch.append(result)
                size += result_size
            await self._context.write(storage_pb2.ReadReplyBatch(results=batch))


def _result_error(op_id: int, code: grpc.StatusCode, message: str) -> storage_pb2.ReadResult:
    return storage_pb2.ReadResult(id=op_id, code=code.value[0], message=message)
