"""A storage node process: restore from checkpoint + local log, follow the journal, heal, serve reads.

`serve(cluster, node, stop)` (called by tools.node):
  1. opens the local segment log (cutting a torn tail) and starts the gRPC server
     (Status answers "degraded: replaying local log" meanwhile);
  2. loads the newest valid checkpoint and replays the log after it (service.py);
  3. runs, until `stop` is set or a task crashes:
     - the follow loop: journal batches from applied_index + 1 (own AZ's replica
       preferred); each batch is appended + fsynced, applied, its closed time observed
       and waiting reads woken. When the journal has truncated past what this node
       needs (JournalTruncated), `repair` fills [applied_index + 1, journal first index):
         a. from storage peers' local logs (ReadLog, own AZ first);
         b. when no peer's log reaches back far enough (they dropped it behind their
            checkpoints), from the newest peer checkpoint (ReadCheckpoint stream,
            verified, installed), then from peers' logs after it;
       in bounded rounds; Status says "degraded: repairing" meanwhile. A node whose data
       directory was wiped starts at index 0 and rebuilds exactly this way, and it
       serves reads only once its closed timestamp (from the checkpoint and the journal)
       covers them, so it is never stale;
     - the SCL reporter: every SCL_REPORT_INTERVAL_MS, ReportScl to every journal replica
       (the first report goes out at once, so a wiped node stops counting as a holder);
     - the checkpoint loop: writes the checkpoint the appender asks for every
       storage_checkpoint_entries entries (or STORAGE_CHECKPOINT_LOG_BYTES_MAX of log),
       then drops old log files;
     - version GC: bounded steps below the backtrack window's start (which is at most
       closed_ts - STORAGE_VERSION_RETENTION_NS), paused while a checkpoint is being encoded.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

import grpc

from quorumdb import limits, rpc, runtime
from quorumdb.config import ClusterConfig, NodeConfig
from quorumdb.pb import journal_pb2, journal_pb2_grpc, storage_pb2, storage_pb2_grpc
from storage_node import checkpoint
from storage_node import metrics as storage_metrics
from storage_node.backup import BackupAgent
from storage_node.service import SegmentState, StorageServicer
from storage_node.store import SegmentLog

log = logging.getLogger("storage_node")


def peers_in_order(cluster: ClusterConfig, node: NodeConfig) -> list[NodeConfig]:
    """The other storage nodes, own AZ first (cheapest and most likely to share our view)."""
    others = [n for n in cluster.storages if n.name != node.name]
    return sorted(others, key=lambda n: (n.az != node.az, n.name))


def _default_follower(cluster: ClusterConfig, node: NodeConfig, channels: rpc.Channels):
    from journal.follower import JournalFollower

    return JournalFollower(cluster, subscriber=node.name, prefer_az=node.az, channels=channels)


def _journal_truncated_type() -> type[BaseException]:
    from journal.follower import JournalTruncated

    return JournalTruncated


class StorageNode:
    """Wires a SegmentState to the journal, the peers and the gRPC server."""

    def __init__(self, cluster: ClusterConfig, node: NodeConfig, follower_factory: Callable | None = None,
                 truncated_type: type[BaseException] | None = None):
        self.cluster = cluster
        self.node = node
        self.channels = rpc.Channels()
        self.segment_log = SegmentLog(cluster.node_data_dir(node.name))
        self.state = SegmentState(node, self.segment_log, checkpoint_entries=cluster.storage_checkpoint_entries,
                                  backtrack_window_ns=int(cluster.backtrack_window_s * 1_000_000_000),
                                  backtrack_budget_bytes=cluster.backtrack_budget_bytes)
        # Continuous backup to the object store is not simulated (the store is a real bucket or
        # directory, its client blocks in threads): in simulation no agent exists, so
        # state.backup_uploaded_index stays None and log drops are not gated on uploads.
        self.backup: BackupAgent | None = None
        if not runtime.simulated():
            self.backup = BackupAgent(cluster, node, self.state)  # gates log drops from here on
        factory = follower_factory or _default_follower
        self.follower = factory(cluster, node, self.channels)
        self.truncated_type = truncated_type or _journal_truncated_type()
        self.metrics = storage_metrics.attach(self)  # None unless the node serves /metrics

    async def run(self, stop: asyncio.Event) -> None:
        records = await runtime.offload(self.segment_log.open)
        log.info("local log in %s: %d records [%d, %d] in %d files, torn tail cut: %d bytes",
                 self.segment_log.directory, records, self.segment_log.first_index, self.segment_log.last_index,
                 self.segment_log.file_count, self.segment_log.truncated_bytes)
        server = rpc.new_server()
        storage_pb2_grpc.add_StorageServicer_to_server(StorageServicer(self.state), server)
        rpc.add_node_port(server, self.cluster, self.node)
        await server.start()
        log.info("storage %s serving on %s", self.node.name, self.node.address)
        tasks: list[asyncio.Task] = []
        stop_task = asyncio.create_task(stop.wait())
        try:
            started = runtime.monotonic()
            replayed = await self.state.replay(stop)
            log.info("replayed %d entries from the local log after checkpoint %d in %.0f ms: applied_index %d, "
                     "closed_ts %d", replayed, self.state.checkpoint_index, (runtime.monotonic() - started) * 1000,
                     self.state.segment.applied_index, self.state.segment.closed_ts)
            tasks = [
                asyncio.create_task(self.follow_loop(), name="follow"),
                asyncio.create_task(self.scl_loop(), name="scl"),
                asyncio.create_task(self.gc_loop(), name="gc"),
                asyncio.create_task(self.checkpoint_loop(), name="checkpoint"),
            ]
            if self.backup is not None:
                tasks.append(asyncio.create_task(self.backup.run(), name="backup"))
            done, _ = await asyncio.wait([stop_task, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stop_task and task.exception() is not None:
                    log.critical("task %s crashed", task.get_name(), exc_info=task.exception())
                    raise task.exception()
        finally:
            stop_task.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(stop_task, *tasks, return_exceptions=True)
            await server.stop(grace=0.5)
            await self.channels.close()
            self.segment_log.close()

    # --- following the journal -------------------------------------------------------
    async def follow_loop(self) -> None:
        state = self.state
        while True:
            from_index = state.segment.applied_index + 1
            log.info("following the journal from index %d", from_index)
            try:
                async for batch in self.follower.batches(from_index):
                    if runtime.buggify("storage.follow.slow"):
                        await asyncio.sleep(0.05)  # a slow copy: reads wait on it, the journal keeps its entries
                    started = time.perf_counter()
                    await state.ingest(batch.entries, batch.commit_index, batch.closed_ts, batch.closed_index,
                                       batch.epoch, batch.leader)
                    if self.metrics is not None:
                        self.metrics.ingested(time.perf_counter() - started, len(batch.entries))
            except self.truncated_type as truncated:
                first_index = truncated.first_index
                state.journal_first_index = max(state.journal_first_index, first_index)
                await self.repair(first_index)
                if state.segment.applied_index + 1 >= first_index:
                    continue
            except grpc.aio.AioRpcError as error:
                log.warning("journal stream failed: %s %s", error.code(), error.details())
            except AssertionError:
                raise  # a broken invariant: crash, do not limp on
            except Exception:
                log.exception("journal follower failed; following again")
            await asyncio.sleep(limits.FOLLOW_RETRY_BACKOFF_MS / 1000)

    async def repair(self, until_index: int) -> bool:
        """Fill [applied_index + 1, until_index) from peers' logs, or a peer checkpoint and then their logs."""
        state = self.state
        first_wanted = state.segment.applied_index + 1
        log.info("peer repair: journal starts at %d; fetching [%d, %d) from storage peers",
                 until_index, first_wanted, until_index)
        peers = peers_in_order(self.cluster, self.node)
        state.repairing = True
        try:
            for round_number in range(limits.PEER_REPAIR_ROUNDS_MAX):
                checkpoints: dict[str, int] = {}
                for peer in peers:
                    checkpoints[peer.name] = await self._repair_from(peer, until_index)
                    if state.segment.applied_index + 1 >= until_index:
                        log.info("peer repair: [%d, %d) complete", first_wanted, until_index)
                        return True
                # No peer log reaches back to what we miss: take the newest peer checkpoint
                # that is ahead of us, then go round the logs again for what follows it.
                if await self._install_checkpoint_from(peers, checkpoints):
                    if state.segment.applied_index + 1 >= until_index:
                        log.info("peer repair: [%d, %d) complete with a checkpoint", first_wanted, until_index)
                        return True
                    continue
                log.warning("peer repair round %d: still missing [%d, %d)", round_number + 1,
                            state.segment.applied_index + 1, until_index)
                await asyncio.sleep(limits.FOLLOW_RETRY_BACKOFF_MS / 1000)
            return False
        finally:
            state.repairing = False
            await state.wake_reads()

    async def _install_checkpoint_from(self, peers: list[NodeConfig], checkpoints: dict[str, int]) -> bool:
        """Install the newest checkpoint a peer offers beyond applied_index. True if one was installed."""
        applied_index = self.state.segment.applied_index
        candidates = sorted((p for p in peers if checkpoints.get(p.name, 0) > applied_index),
                            key=lambda p: -checkpoints[p.name])  # stable: own AZ first among equals
        for peer in candidates:
            try:
                if await self._fetch_checkpoint(peer, applied_index + 1):
                    return True
            except (grpc.aio.AioRpcError, ValueError) as error:
                detail = f"{error.code()} {error.details()}" if isinstance(error, grpc.aio.AioRpcError) else error
                log.warning("checkpoint from %s failed: %s", peer.name, detail)
        return False

    async def _fetch_checkpoint(self, peer: NodeConfig, min_index: int) -> bool:
        stub = storage_pb2_grpc.StorageStub(self.channels.get(peer.address))
        call = stub.ReadCheckpoint(storage_pb2.ReadCheckpointRequest(min_index=min_index),
                                   timeout=limits.PEER_CHECKPOINT_TIMEOUT_S)
        try:
            first = await call.read()
            if first is grpc.aio.EOF:
                raise ValueError("empty checkpoint stream")
            index, total = first.index, first.total_bytes
            log.info("fetching checkpoint %d (%d bytes) from %s", index, total, peer.name)
            started = runtime.monotonic()

            async def chunks():
                chunk = first
                received = 0
                while chunk is not grpc.aio.EOF:  # bounded: the stream carries `total` bytes and has a deadline
                    if (chunk.index, chunk.total_bytes, chunk.offset) != (index, total, received):
                        raise ValueError(f"chunk at {chunk.offset} of checkpoint {chunk.index} out of order")
                    if len(chunk.data) > limits.CHECKPOINT_CHUNK_BYTES or received + len(chunk.data) > total:
                        raise ValueError("checkpoint chunk larger than announced")
                    received += len(chunk.data)
                    yield chunk.data
                    chunk = await call.read()
                if received != total:
                    raise ValueError(f"checkpoint stream ended after {received} of {total} bytes")

            installed = await self.state.install_checkpoint(index, chunks())
        except checkpoint.CorruptCheckpoint as error:
            raise ValueError(f"checkpoint failed verification: {error}") from None
        finally:
            call.cancel()
        if installed:
            log.info("installed checkpoint %d from %s in %.0f ms: applied_index %d", index, peer.name,
                     (runtime.monotonic() - started) * 1000, self.state.segment.applied_index)
        return installed

    async def _repair_from(self, peer: NodeConfig, until_index: int) -> int:
        """Fetch what we miss from one peer's log. Returns the peer's checkpoint index (0 if unknown)."""
        state = self.state
        checkpoint_index = 0
        stub = storage_pb2_grpc.StorageStub(self.channels.get(peer.address))
        # Each call fetches at least one entry or ends the loop, and until_index is fixed: bounded.
        while state.segment.applied_index + 1 < until_index:
            next_index = state.segment.applied_index + 1
            wanted = min(limits.ENTRIES_PER_MESSAGE_MAX, until_index - next_index)
            try:
                reply = await stub.ReadLog(storage_pb2.ReadLogRequest(from_index=next_index, max_entries=wanted),
                                           timeout=limits.PEER_READ_LOG_TIMEOUT_S)
            except grpc.aio.AioRpcError as error:
                log.info("peer repair: %s did not answer ReadLog: %s", peer.name, error.code())
                return checkpoint_index
            checkpoint_index = reply.checkpoint_index
            entries = []
            for entry in reply.entries:
                if entry.index != next_index + len(entries) or entry.index >= until_index:
                    break
                entries.append(entry)
            if not entries:
                log.info("peer repair: %s does not hold index %d (its log starts at %d, checkpoint %d, scl %d)",
                         peer.name, next_index, reply.first_index, reply.checkpoint_index, reply.scl)
                return checkpoint_index
            await state.append_and_apply(entries)
            log.info("peer repair: applied [%d, %d] from %s", entries[0].index, entries[-1].index, peer.name)
        return checkpoint_index

    # --- SCL reports and GC -------------------------------------------------------------
    async def scl_loop(self) -> None:
        stubs = [journal_pb2_grpc.JournalStub(self.channels.get(j.address)) for j in self.cluster.journals]
        first = True
        reported_scl = None   # what every replica last acknowledged
        reported_at = 0.0
        while True:
            if not first:  # the first report at once: a wiped node must stop counting as a holder
                await asyncio.sleep(limits.SCL_REPORT_INTERVAL_MS / 1000)
            first = False
            scl = self.state.segment.scl
            # An unchanged SCL that every replica has heard is repeated only now and then (a
            # replica that restarted learns it again): an idle cluster's six copies would
            # otherwise make 90 calls a second saying nothing new.
            if scl == reported_scl and runtime.monotonic() - reported_at < limits.SCL_REPORT_IDLE_S:
                continue
            request = journal_pb2.ReportSclRequest(node=self.node.name, scl=scl)
            replies = await asyncio.gather(
                *(stub.ReportScl(request, timeout=limits.SCL_REPORT_TIMEOUT_S) for stub in stubs),
                return_exceptions=True,
            )
            answered = 0
            for reply in replies:
                if isinstance(reply, grpc.aio.AioRpcError):
                    log.debug("ReportScl failed: %s", reply.code())
                elif isinstance(reply, BaseException):
                    raise reply
                else:
                    answered += 1
                    self.state.durable_index = max(self.state.durable_index, reply.durable_index)
                    self.state.journal_first_index = max(self.state.journal_first_index, reply.first_index)
            if answered == len(stubs):
                reported_scl, reported_at = scl, runtime.monotonic()
            else:
                reported_scl = None  # a replica missed it: report again at the next tick

    async def gc_loop(self) -> None:
        state = self.state
        while True:
            await asyncio.sleep(limits.STORAGE_GC_INTERVAL_MS / 1000)
            if state.checkpointing:
                continue  # a checkpoint is reading old versions from a worker thread
            segment = state.segment  # anew each time: a checkpoint install replaces it
            # Never above the backtrack window's start: a backtrack to any time in the window must
            # find the same versions on every copy (storage_node/core.py). That start is itself at
            # least STORAGE_VERSION_RETENTION_NS behind the newest entry, which keeps what
            # transactions read.
            horizon_ts = min(segment.window_start_ts, segment.closed_ts - limits.STORAGE_VERSION_RETENTION_NS)
            if horizon_ts > segment.gc_horizon_ts:
                segment.gc_step(horizon_ts, limits.STORAGE_GC_KEYS_PER_STEP)

    async def checkpoint_loop(self) -> None:
        state = self.state
        while True:
            await state.checkpoint_wanted.wait()  # set by the appender when a checkpoint is due
            await state.write_checkpoint()


async def serve(cluster: ClusterConfig, node: NodeConfig, stop: asyncio.Event) -> None:
    await StorageNode(cluster, node).run(stop)
