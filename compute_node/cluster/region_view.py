"""What a compute node knows of its region's role in a Global Database (docs/REGIONS.md).

A compute node of a region polls its region's adjudicators (`RegionPoint`, every
REGION_POLL_MS) and keeps the leader's answer: the role (primary, secondary, fenced,
detached), the primary region, and on a secondary the replicated point (replicated_ts:
every commit up to it is durable in this region's journal). A secondary's transactions read
at the newest replicated_ts this node has seen (so never newer than what the region holds,
never going backwards). A cluster without regions never polls: it is its own writer.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging

import grpc

from quorumdb import config as config_mod
from quorumdb import limits, members, regions, rpc
from quorumdb.pb import adjudicator_pb2, adjudicator_pb2_grpc

log = logging.getLogger("compute_node.cluster.region_view")


@dataclasses.dataclass(frozen=True)
class RegionPoint:
    region: str = ""
    role: str = ""
    primary_region: str = ""
    global_epoch: int = 0
    replicated_ts: int = 0
    replicated_index: int = 0
    primary_commit_index: int = 0
    lag_ms: int | None = 0  # None: the leader does not know its lag yet
    message: str = ""
    rpo_s: float = 0.0


class RegionView:
    def __init__(self, cluster: config_mod.ClusterConfig, channels: rpc.Channels) -> None:
        self.cluster = cluster
        # An active-active cluster has no primary: every peer takes writes, as one cluster does.
        self.region = cluster.region if members.active_active(cluster) is None else ""
        self._stubs = {node.name: adjudicator_pb2_grpc.AdjudicatorStub(channels.get(node.address))
                       for node in cluster.adjudicators}
        self.point = RegionPoint(region=self.region, role="primary" if not self.region else "")
        self.leader = cluster.initial_leader
        self._changed = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._channels = channels
        self._forwarders: dict[str, object] = {}  # primary region -> AdjudicatorClient (write forwarding)

    @property
    def enabled(self) -> bool:
        return bool(self.region)

    @property
    def role(self) -> str:
        return self.point.role

    @property
    def is_writer(self) -> bool:
        """This node's region accepts commits: the primary (or a cluster without regions, or detached)."""
        return not self.region or self.point.role in ("primary", "detached")

    @property
    def is_secondary(self) -> bool:
        return self.point.role == "secondary"

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._poll_forever(), name="region-view")

    async def forward_commit(self, start_ts: int, writes, lock_keys, txn_id: str, private_keyspace: bool = False) -> int:
        """Write forwarding: commit at the primary region's adjudicator leader (over the WAN)."""
        from compute_node.cluster.adjudicator_client import AdjudicatorClient
        from quorumdb import regions
        primary = self.point.primary_region
        client = self._forwarders.get(primary)
        if client is None:
            global_cfg = regions.of_cluster(self.cluster)
            client = AdjudicatorClient(global_cfg.region(primary).cluster(), self._channels, region=primary)
            self._forwarders[primary] = client
        return await client.commit(start_ts, writes, lock_keys, txn_id, private_keyspace)

    async def close(self) -> None:
        for client in self._forwarders.values():
            await client.close()
        self._forwarders.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def refresh(self) -> RegionPoint:
        """Ask the leader now (following its hint once); the last known point if none answers."""
        names = [self.leader, *[name for name in self._stubs if name != self.leader]]
        for name in names:
            stub = self._stubs.get(name)
            if stub is None:
                continue
            try:
                reply = await stub.RegionPoint(adjudicator_pb2.RegionPointRequest(),
                                               timeout=limits.REGION_POINT_TIMEOUT_S)
            except grpc.aio.AioRpcError:
                continue
            if not reply.is_leader:
                if reply.leader and reply.leader in self._stubs and reply.leader != name:
                    self.leader = reply.leader
                continue
            self.leader = name
            self._adopt(reply)
            return self.point
        return self.point

    def _adopt(self, reply: adjudicator_pb2.RegionPointReply) -> None:
        old = self.point
        # The replicated point never goes backwards on this node, even when a new leader
        # (which starts from its own journal view) reports an older one for a moment.
        replicated_ts = max(old.replicated_ts, reply.replicated_ts) if reply.role == old.role else reply.replicated_ts
        self.point = RegionPoint(reply.region, reply.role, reply.primary_region, reply.global_epoch,
                                 replicated_ts, max(reply.replicated_index, old.replicated_index
                                                    if reply.role == old.role else 0),
                                 reply.primary_commit_index, regions.reported_lag_ms(reply), reply.message,
                                 reply.rpo_s)
        if old.role != self.point.role:
            log.info("region %s: role %s (primary %s, global epoch %d)", self.region, self.point.role,
                     self.point.primary_region, self.point.global_epoch)
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_replicated(self, ts: int, timeout_s: float) -> bool:
        """Until this region's replicated point reaches ts (polling the leader); False at the timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.point.replicated_ts < ts:
            if loop.time() >= deadline:
                return False
            await self.refresh()
            if self.point.replicated_ts >= ts:
                return True
            await asyncio.sleep(min(limits.REGION_WAIT_POLL_MS / 1000, max(0.0, deadline - loop.time())))
        return True

    async def _poll_forever(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # noqa: BLE001 - keep polling; the next round may answer
                log.exception("region point poll failed")
            # A writer's view only changes at a switchover or failover; a secondary's replicated
            # point moves all the time and is what its reads run at.
            await asyncio.sleep((limits.REGION_POLL_MS if not self.is_writer else limits.REGION_POLL_WRITER_MS) / 1000)
