"""A storage node process: replay the local log, follow the journal, serve reads.

`serve(cluster, node, stop)` (called by quorumdb.node):
  1. opens the local segment log (cutting a torn tail) and starts the gRPC server
     (Status answers "degraded: replaying local log" meanwhile);
  2. replays the log into the segment;
  3. runs, until `stop` is set or a task crashes:
     - the follow loop: journal batches from applied_index + 1 (own AZ's replica
       preferred); each batch is appended + fsynced, applied, its closed time observed
       and waiting reads woken. When the journal has truncated past what this node
       needs (JournalTruncated), the missing range is fetched from storage peers
       (ReadLog, own AZ first, bounded rounds): peer repair;
     - the SCL reporter: every SCL_REPORT_INTERVAL_MS, ReportScl to every journal replica;
     - version GC: bounded steps below closed_ts - STORAGE_VERSION_RETENTION_NS.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Callable

import grpc

from quorumdb import limits, rpc
from quorumdb.config import ClusterConfig, NodeConfig
from quorumdb.pb import journal_pb2, journal_pb2_grpc, storage_pb2, storage_pb2_grpc
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
        self.state = SegmentState(node, self.segment_log)
        factory = follower_factory or _default_follower
        self.follower = factory(cluster, node, self.channels)
        self.truncated_type = truncated_type or _journal_truncated_type()

    async def run(self, stop: asyncio.Event) -> None:
        records = await asyncio.to_thread(self.segment_log.open)
        log.info("segment log %s: %d records [%d, %d], torn tail cut: %d bytes", self.segment_log.path, records,
                 self.segment_log.first_index, self.segment_log.last_index, self.segment_log.truncated_bytes)
        server = rpc.new_server()
        storage_pb2_grpc.add_StorageServicer_to_server(StorageServicer(self.state), server)
        server.add_insecure_port(self.node.address)
        await server.start()
        log.info("storage %s serving on %s", self.node.name, self.node.address)
        tasks: list[asyncio.Task] = []
        stop_task = asyncio.create_task(stop.wait())
        try:
            replayed = await self.state.replay(stop)
            log.info("replayed %d entries from the local log: applied_index %d, closed_ts %d", replayed,
                     self.state.segment.applied_index, self.state.segment.closed_ts)
            tasks = [
                asyncio.create_task(self.follow_loop(), name="follow"),
                asyncio.create_task(self.scl_loop(), name="scl"),
                asyncio.create_task(self.gc_loop(), name="gc"),
            ]
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
                    await state.ingest(batch.entries, batch.commit_index, batch.closed_ts, batch.closed_index,
                                       batch.epoch, batch.leader)
            except self.truncated_type as truncated:
                first_index = truncated.first_index
                state.journal_first_index = max(state.journal_first_index, first_index)
                await self.repair_from_peers(first_index)
                if state.segment.applied_index + 1 >= first_index:
                    continue
            except grpc.aio.AioRpcError as error:
                log.warning("journal stream failed: %s %s", error.code(), error.details())
            except AssertionError:
                raise  # a broken invariant: crash, do not limp on
            except Exception:
                log.exception("journal follower failed; following again")
            await asyncio.sleep(limits.FOLLOW_RETRY_BACKOFF_MS / 1000)

    async def repair_from_peers(self, until_index: int) -> bool:
        """Fetch [applied_index + 1, until_index) from storage peers. True when the range is complete."""
        state = self.state
        first_wanted = state.segment.applied_index + 1
        log.info("peer repair: journal starts at %d; fetching [%d, %d) from storage peers",
                 until_index, first_wanted, until_index)
        peers = peers_in_order(self.cluster, self.node)
        for round_number in range(limits.PEER_REPAIR_ROUNDS_MAX):
            for peer in peers:
                await self._repair_from(peer, until_index)
                if state.segment.applied_index + 1 >= until_index:
                    log.info("peer repair: [%d, %d) complete", first_wanted, until_index)
                    await state.wake_reads()
                    return True
            log.warning("peer repair round %d: still missing [%d, %d)", round_number + 1,
                        state.segment.applied_index + 1, until_index)
            await asyncio.sleep(limits.FOLLOW_RETRY_BACKOFF_MS / 1000)
        return False

    async def _repair_from(self, peer: NodeConfig, until_index: int) -> None:
        state = self.state
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
                return
            entries = []
            for entry in reply.entries:
                if entry.index != next_index + len(entries) or entry.index >= until_index:
                    break
                entries.append(entry)
            if not entries:
                log.info("peer repair: %s does not hold index %d (its log starts at %d, scl %d)",
                         peer.name, next_index, reply.first_index, reply.scl)
                return
            await state.append_and_apply(entries)
            log.info("peer repair: applied [%d, %d] from %s", entries[0].index, entries[-1].index, peer.name)

    # --- SCL reports and GC -------------------------------------------------------------
    async def scl_loop(self) -> None:
        stubs = [journal_pb2_grpc.JournalStub(self.channels.get(j.address)) for j in self.cluster.journals]
        while True:
            await asyncio.sleep(limits.SCL_REPORT_INTERVAL_MS / 1000)
            request = journal_pb2.ReportSclRequest(node=self.node.name, scl=self.state.segment.scl)
            replies = await asyncio.gather(
                *(stub.ReportScl(request, timeout=limits.SCL_REPORT_TIMEOUT_S) for stub in stubs),
                return_exceptions=True,
            )
            for reply in replies:
                if isinstance(reply, grpc.aio.AioRpcError):
                    log.debug("ReportScl failed: %s", reply.code())
                elif isinstance(reply, BaseException):
                    raise reply
                else:
                    self.state.durable_index = max(self.state.durable_index, reply.durable_index)
                    self.state.journal_first_index = max(self.state.journal_first_index, reply.first_index)

    async def gc_loop(self) -> None:
        segment = self.state.segment
        while True:
            await asyncio.sleep(limits.STORAGE_GC_INTERVAL_MS / 1000)
            horizon_ts = segment.closed_ts - limits.STORAGE_VERSION_RETENTION_NS
            if horizon_ts > segment.gc_horizon_ts:
                segment.gc_step(horizon_ts, limits.STORAGE_GC_KEYS_PER_STEP)


async def serve(cluster: ClusterConfig, node: NodeConfig, stop: asyncio.Event) -> None:
    await StorageNode(cluster, node).run(stop)
