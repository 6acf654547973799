"""gRPC shell of a journal replica: protobuf in -> ReplicaCore -> disk -> protobuf out.

Every request that changes state runs under one lock: the core step, then the disk
effects (in a worker thread, fsynced), then the reply. So a reply never claims what
is not on disk, and Appends are applied in arrival order. Readers (Subscribe,
ReadEntries, Status) read the core's in-memory state without the lock.

Subscribers are woken by a "changed" event that is replaced on every change (commit
index, closed timestamp, leader, truncation); each stream reads entries from the
in-memory log on demand, so there is no per-subscriber queue.
"""
from __future__ import annotations

import asyncio
import logging
import time

import grpc

from journal.core import AppendResult, AppendStatus, BadAppend, ReplicaCore
from journal.store import JournalStore
from quorumdb import aio, limits, runtime
from quorumdb.clock import Clock
from quorumdb.pb import common_pb2, journal_pb2, journal_pb2_grpc

log = logging.getLogger("journal.service")

_APPEND_STATUS = {
    AppendStatus.OK: journal_pb2.APPEND_OK,
    AppendStatus.FENCED: journal_pb2.APPEND_FENCED,
    AppendStatus.MISMATCH: journal_pb2.APPEND_MISMATCH,
}
# Exit code when the disk fails under us: the in-memory state is ahead of the disk.
EXIT_DISK_FAILURE = 70


class JournalService(journal_pb2_grpc.JournalServicer):
    def __init__(self, name: str, az: str, core: ReplicaCore, store: JournalStore, clock: Clock | None = None,
                 region: str = ""):
        self.name = name
        self.az = az
        self.region = region
        self.core = core
        self.store = store
        self.clock = clock or runtime.clock(1_000_000)  # the times of the lease (journal/core.py)
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._closing = False
        self._subscribers = 0
        self.metrics = None  # journal/metrics.py attaches itself when the node serves metrics

    # --- plumbing -----------------------------------------------------------------
    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def close(self) -> None:
        """End every Subscribe stream (called on shutdown)."""
        self._closing = True
        self._notify()

    async def _disk(self, fn, *args) -> None:
        """Run a disk effect of a core step in a thread, to the end, under the caller's lock.

        The core has already changed, so the disk must match it before the lock is released: a
        caller cancelled meanwhile (its RPC cancelled, e.g. a leader's append stream torn down)
        still waits for the write, then is cancelled. Otherwise the next request's write would
        race the abandoned one (seen as 'appended entries must be consecutive' after a failover).
        """
        work = asyncio.ensure_future(runtime.offload(fn, *args))
        cancelled = False
        while not work.done():
            try:
                await asyncio.shield(work)
            except asyncio.CancelledError:
                cancelled = True
        if work.exception() is not None:  # the core is now ahead of the disk: crash rather than lie
            log.critical("journal disk write failed; exiting", exc_info=work.exception())
            runtime.exit_process(EXIT_DISK_FAILURE)
        if cancelled:
            raise asyncio.CancelledError()

    def _persist_append(self, result: AppendResult, meta) -> None:
        if result.reset:
            self.store.reset(meta)
        if result.truncate_from is not None:
            self.store.truncate_suffix(result.truncate_from)
        self.store.append(result.appended)
        if result.meta_changed and not result.reset:
            self.store.write_meta(meta)

    # --- RPCs ---------------------------------------------------------------------
    async def Fence(self, request, context):
        async with self._lock:
            result = self.core.fence(request.epoch, request.candidate, self.clock.now())
            if result.meta_changed:
                runtime.crash_point("journal.fence.before_fsync")
                await self._disk(self.store.write_meta, self.core.meta())
                runtime.crash_point("journal.fence.after_fsync")
        if result.ok:
            log.info("fenced: promised epoch %d to %s", result.promised_epoch, request.candidate)
        elif result.retry_after_ns:
            log.info("fence of epoch %d by %s refused: the current writer's lease runs %.0f ms more",
                     request.epoch, request.candidate, result.retry_after_ns / 1e6)
        return journal_pb2.FenceReply(
            ok=result.ok,
            promised_epoch=result.promised_epoch,
            last_index=result.last_index,
            last_epoch=result.last_epoch,
            commit_index=result.commit_index,
            first_index=result.first_index,
            retry_after_ms=min(2**31, -(-result.retry_after_ns // 1_000_000)) if result.retry_after_ns else 0,
        )

    async def Append(self, request, context):
        return await self._append(request, context)

    async def AppendStream(self, request_iterator, context):
        async for request in request_iterator:
            started = time.perf_counter()
            reply = await self._append(request, context)
            if self.metrics is not None:  # per message: the stream's lifetime says nothing
                self.metrics.append_stream.observe(time.perf_counter() - started)
            await context.write(reply)

    async def _append(self, request, context) -> journal_pb2.AppendReply:
        async with self._lock:
            try:
                result = self.core.append(
                    epoch=request.epoch,
                    leader=request.leader,
                    prev_index=request.prev_index,
                    prev_epoch=request.prev_epoch,
                    entries=list(request.entries),
                    commit_index=request.commit_index,
                    closed_ts=request.closed_ts,
                    closed_index=request.closed_index,
                    now=self.clock.now(),
                    hold_index=request.hold_index,
                )
            except BadAppend as error:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
            if result.needs_disk:
                runtime.crash_point("journal.append.before_fsync")
                written = time.perf_counter()
                await self._disk(self._persist_append, result, self.core.meta())
                if self.metrics is not None:
                    self.metrics.disk_written(time.perf_counter() - written, len(result.appended))
                runtime.crash_point("journal.append.after_fsync")
            if result.reset:
                log.warning("log reset to start at %d (storage holds everything before)", self.core.first_index)
            truncated = self.core.truncate_to_hold() if result.status is AppendStatus.OK else None
            if truncated is not None:
                await self._disk(self.store.truncate_prefix, self.core.meta())
                log.info("truncated the log below %d (hold %d)", truncated, self.core.hold_index)
        if result.status is not AppendStatus.FENCED:
            self._notify()
        if runtime.buggify("journal.append.slow_reply"):  # durable, not yet acknowledged
            await asyncio.sleep(0.2)
        runtime.crash_point("journal.append.before_reply")
        return journal_pb2.AppendReply(
            status=_APPEND_STATUS[result.status],
            promised_epoch=result.promised_epoch,
            last_index=result.last_index,
            match_index=result.match_index,
            lease_granted=result.lease_granted,
            durable_index=self.core.durable_index,
        )

    async def ReadEntries(self, request, context):
        max_entries = min(request.max_entries or limits.ENTRIES_PER_MESSAGE_MAX, limits.ENTRIES_PER_MESSAGE_MAX)
        core = self.core
        return journal_pb2.ReadEntriesReply(
            entries=core.read(request.from_index, max_entries),
            first_index=core.first_index,
            last_index=core.last_index,
            commit_index=core.commit_index,
        )

    async def ReportScl(self, request, context):
        async with self._lock:
            result = self.core.report_scl(request.node, request.scl)
            if result.truncate_before is not None:
                await self._disk(self.store.truncate_prefix, self.core.meta())
                log.info("truncated the log below %d (durable index %d)", result.truncate_before, result.durable_index)
        if result.truncate_before is not None:
            self._notify()
        return journal_pb2.ReportSclReply(durable_index=result.durable_index, first_index=self.core.first_index)

    async def Status(self, request, context):
        core = self.core
        return common_pb2.NodeStatus(
            name=self.name,
            az=self.az,
            service="journal",
            role="replica",
            region=self.region,
            epoch=core.promised_epoch,
            commit_index=core.commit_index,
            last_index=core.last_index,
            first_index=core.first_index,
            durable_index=core.durable_index,
            closed_ts=core.closed_ts,
            leader=core.leader,
            health="ok",
        )

    async def Subscribe(self, request, context):
        if self._subscribers >= limits.JOURNAL_SUBSCRIBERS_MAX:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many journal subscribers")
        self._subscribers += 1
        try:
            async for reply in self._stream(request, context):
                yield reply
        finally:
            self._subscribers -= 1

    async def _stream(self, request, context):
        loop = asyncio.get_running_loop()
        remaining = context.time_remaining()
        stream_s = limits.SUBSCRIBE_STREAM_S if remaining is None else min(remaining, limits.SUBSCRIBE_STREAM_S)
        deadline = loop.time() + stream_s
        next_index = max(1, request.from_index)
        sent_state = None
        while not self._closing:
            changed = self._changed  # taken before reading the state: no lost wake-up
            core = self.core
            if next_index < core.first_index:
                yield self._reply(core, [], truncated=True)
                return
            entries = core.read_committed(next_index, limits.ENTRIES_PER_MESSAGE_MAX)
            state = (core.commit_index, core.closed_ts, core.closed_index, core.leader_epoch, core.leader)
            if entries or state != sent_state:
                yield self._reply(core, entries)
                sent_state = state
                next_index += len(entries)
                if entries:
                    continue
            wait_s = deadline - loop.time()
            if wait_s <= 0:
                return
            if not await aio.wait_event(changed, wait_s):
                return

    @staticmethod
    def _reply(core: ReplicaCore, entries, truncated: bool = False) -> journal_pb2.SubscribeReply:
        return journal_pb2.SubscribeReply(
            entries=entries,
            commit_index=core.commit_index,
            closed_ts=core.closed_ts,
            closed_index=core.closed_index,
            epoch=core.leader_epoch,
            leader=core.leader,
            first_index=core.first_index,
            truncated=truncated,
        )
