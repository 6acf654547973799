"""An adjudicator's part in a Global Database (docs/REGIONS.md): the shell around region_core.

Every adjudicator of a region keeps the region's role current (adjudicator/region_core.py:
the journal's newest ENTRY_GLOBAL, which the node's journal follower hands to `on_marker`,
and the global control state, polled from the file the `quorumdb global` commands write).
The region's leader acts on it:

* primary: decides commits as any leader does; takes the secondaries' reports of how far
  they have replicated (`report`), keeps its journal from dropping what they lack (the hold),
  holds commits beyond the RPO limit, and on a switchover writes the marker and stops.
* secondary: is the region's *replication agent*: its journal writer runs in copy mode
  (journal/writer_core.py) and `copy` feeds it the primary's committed entries, read from a
  primary journal replica over the WAN with the journal's own Subscribe stream, batched,
  with the primary's closed-timestamp claims; the region's storage follows its own journal
  as always. The head of the primary (its adjudicator leader) is not involved.
* promoting (failover): leads, and its first entry is an ENTRY_GLOBAL naming this region.

Transitions happen by stepping down and taking over again in the other mode, so a leader
is always exactly one of: deciding commits, or copying the primary's log.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import grpc

from adjudicator import region_core as rc
from journal.follower import JournalFollower, JournalTruncated
from journal.writer import Fenced, JournalUnavailable
from quorumdb import limits, netfault, regions, rpc, runtime
from quorumdb.pb import adjudicator_pb2, adjudicator_pb2_grpc, common_pb2

log = logging.getLogger("adjudicator.region")


class _RemoteChannels:
    """The `channels` a JournalFollower takes, for another region's journal (over the WAN)."""

    def __init__(self, channels: rpc.Channels, region: str) -> None:
        self._channels = channels
        self._region = region

    def get(self, address: str) -> grpc.aio.Channel:
        return self._channels.get_remote(address, self._region)


class RegionAgent:
    def __init__(self, node: Any) -> None:
        """`node`: the AdjudicatorNode this agent belongs to (adjudicator/service.py; not imported:
        the node creates its agent)."""
        self.node = node
        cluster = node.cluster
        self.region = cluster.region
        self.global_cfg = regions.of_cluster(cluster)
        assert self.global_cfg is not None, "a region's cluster file names its global file"
        self.initial_primary = self.global_cfg.initial_primary
        # Read before this node may lead: an old primary restarted after a failover must know
        # it is fenced before it decides anything.
        self.control = regions.read_state(self.global_cfg.data_dir)
        self.marker: rc.Marker | None = None
        self.view = rc.resolve_role(self.region, self.initial_primary, None, self.control)
        # Primary: the secondaries' reports (region -> ReplicaReport), as received.
        self.reports: dict[str, rc.ReplicaReport] = {}
        self.report_at: dict[str, float] = {}  # region -> monotonic time of its last report
        # Secondary (replication agent): how far this region has replicated.
        self.replicated_index = 0
        self.replicated_ts = 0
        self.primary_commit_index = 0
        self.primary_closed_ts = 0
        self.primary_leader = ""
        self.copy_problem = ""
        # A switchover in progress on this primary: no new commit is queued.
        self.sealed = False
        self._clusters: dict[str, object] = {}
        self._tasks: list[asyncio.Task] = []

    # --- role ---------------------------------------------------------------------------------
    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._watch_control(), name="global-control"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def on_marker(self, entry: common_pb2.Entry) -> None:
        """The follower applied an ENTRY_GLOBAL."""
        self.marker = rc.newer_marker(self.marker, entry.global_epoch, entry.primary_region, entry.index)
        self._resolve()

    def refresh(self) -> None:
        self._resolve()

    def _resolve(self) -> None:
        old = self.view
        self.view = rc.resolve_role(self.region, self.initial_primary, self.marker, self.control)
        if old.role != self.view.role or old.primary != self.view.primary:
            log.info("region %s: %s -> %s (primary %s, global epoch %d)%s", self.region, old.role.value,
                     self.view.role.value, self.view.primary, self.view.global_epoch,
                     f": {self.view.reason}" if self.view.reason else "")
            if self.view.role == rc.RegionRole.PRIMARY:
                self.sealed = False
            self.node.region_changed()

    async def _watch_control(self) -> None:
        path = regions.state_path(self.global_cfg.data_dir)
        seen = None
        while True:
            try:
                signature = netfault.stat_signature(path)
                if signature != seen:
                    self.control = await runtime.offload(regions.read_state, self.global_cfg.data_dir)
                    seen = signature
                    self._resolve()
            except (OSError, ValueError) as error:
                log.warning("cannot read the global control state %s: %s", path, error)
            await asyncio.sleep(limits.GLOBAL_STATE_POLL_MS / 1000)

    @property
    def secondaries(self) -> list[str]:
        """The regions a primary keeps its journal for and counts for its RPO (none once detached)."""
        if self.view.role == rc.RegionRole.DETACHED:
            return []
        return [name for name in self.global_cfg.names if name != self.region and name not in self.control.detached]

    def accepts_commits(self) -> str:
        """"" when this region's leader may decide commits; otherwise why not."""
        view = self.view
        if self.sealed:
            return "switchover in progress: this region is handing the primary role over; nothing was committed"
        if view.accepts_commits:
            return ""
        if view.role == rc.RegionRole.SECONDARY:
            return (f"region {self.region} is a read-only secondary of the global database (primary: "
                    f"{view.primary}); nothing was committed")
        if view.role == rc.RegionRole.PROMOTING:
            return f"region {self.region} is being promoted ({view.reason}); nothing was committed"
        return f"{view.reason}; nothing was committed"

    # --- primary side -------------------------------------------------------------------------
    def report(self, request: adjudicator_pb2.ReportReplicaRequest) -> None:
        if request.region not in self.global_cfg.names or request.region == self.region:
            return
        previous = self.reports.get(request.region)
        index = max(request.index, previous.index if previous else 0)
        ts = max(request.ts, previous.ts if previous else 0)
        self.reports[request.region] = rc.ReplicaReport(request.region, index, ts)
        self.report_at[request.region] = runtime.monotonic()
        self.update_hold()

    def fresh_reports(self) -> dict[str, rc.ReplicaReport]:
        """Reports recent enough to say the region is replicating now (a switchover needs one)."""
        now = runtime.monotonic()
        return {name: report for name, report in self.reports.items()
                if now - self.report_at.get(name, float("-inf")) <= limits.REPLICA_REPORT_STALE_S}

    def update_hold(self) -> None:
        term = self.node.term
        if term is None or term.writer is None:
            return
        if self.view.replicates:
            term.writer.set_hold(max(1, term.writer.commit_index))  # nobody copies from a secondary
            return
        hold = rc.truncation_hold(self.reports, self.secondaries, term.writer.commit_index,
                                  limits.GLOBAL_RETAIN_ENTRIES_MAX)
        term.writer.set_hold(hold or max(1, term.writer.commit_index))

    async def rpo_wait(self) -> str:
        """Hold a commit while no secondary is within the RPO limit; "" once one is, else why not."""
        rpo_ns = int(self.control.rpo_s * 1e9)
        if rpo_ns <= 0:
            return ""
        deadline = runtime.monotonic() + limits.RPO_HOLD_S
        while True:
            why = rc.rpo_violation(self.reports, self.secondaries, self.node.clock.now().earliest, rpo_ns)
            if not why or runtime.monotonic() >= deadline:
                return why
            await asyncio.sleep(0.05)

    # --- secondary side: the replication agent -----------------------------------------------
    def _region_cluster(self, name: str):
        cluster = self._clusters.get(name)
        if cluster is None:
            cluster = self.global_cfg.region(name).cluster()
            self._clusters[name] = cluster
        return cluster

    async def copy(self, term: Any) -> str:
        """Copy the primary's committed entries into this region's journal until the role changes;
        returns why it stopped."""
        source = self.view.primary
        cluster = self._region_cluster(source)
        writer = term.writer
        claims: list[tuple[int, int]] = []  # (closed_index, closed_ts) not yet covered locally
        # The replicated point starts from this region's own journal: commit the tail this
        # writer inherited, and every entry up to its last one is the primary's, ts included. A
        # new leader whose primary is cut off hears nothing more, and must still know (and
        # report) how far behind it is rather than nothing.
        try:
            await writer.wait_committed(writer.last_index, limits.JOURNAL_COMMIT_TIMEOUT_S)
        except (Fenced, JournalUnavailable) as error:
            return f"local journal: {error}"
        self.replicated_index = max(self.replicated_index, writer.commit_index)
        self.replicated_ts = max(self.replicated_ts, writer.last_ts)
        reporter = asyncio.create_task(self._report_forever(term, source), name="replica-report")
        follower = JournalFollower(cluster, f"{self.region}/{self.node.node.name}", "", _RemoteChannels(
            self.node.channels, source))
        batches = follower.batches(writer.last_index + 1)
        log.info("replicating region %s's journal from index %d", source, writer.last_index + 1)
        try:
            async for batch in batches:
                if not self.view.replicates or self.view.primary != source:
                    return f"role is now {self.view.role.value}"
                self.primary_commit_index = max(self.primary_commit_index, batch.commit_index)
                self.primary_closed_ts = max(self.primary_closed_ts, batch.closed_ts)
                self.primary_leader = batch.leader or self.primary_leader
                entries = batch.entries
                stop_at = self.view.replicate_to_index
                if stop_at:
                    entries = [entry for entry in entries if entry.index <= stop_at]
                for start in range(0, len(entries), limits.REPLICATION_BATCH_ENTRIES_MAX):
                    chunk = entries[start:start + limits.REPLICATION_BATCH_ENTRIES_MAX]
                    closed = (batch.closed_ts, batch.closed_index) if start + len(chunk) >= len(entries) else (0, 0)
                    writer.append_copied(chunk, closed)
                    await writer.wait_committed(chunk[-1].index, limits.JOURNAL_COMMIT_TIMEOUT_S)
                if not entries and batch.closed_ts:
                    writer.append_copied([], (batch.closed_ts, batch.closed_index))
                if batch.closed_ts:
                    claims.append((batch.closed_index, batch.closed_ts))
                self._advance_replicated(writer, claims, entries)
                self.copy_problem = ""
                self.update_hold()
        except (Fenced, JournalUnavailable) as error:
            return f"local journal: {error}"
        except JournalTruncated as error:
            # The primary let go of what this region lacks (it was further behind than the primary
            # keeps, GLOBAL_RETAIN_ENTRIES_MAX): copying cannot resume; say so and wait.
            self.copy_problem = (f"the primary's journal no longer holds index {writer.last_index + 1} ({error}): "
                                 "this region must be seeded again")
            log.error("replication from %s stopped: %s", source, self.copy_problem)
            await asyncio.sleep(limits.REPLICATION_STALLED_RETRY_S)
            return self.copy_problem
        finally:
            reporter.cancel()
            with contextlib.suppress(BaseException):
                await reporter
            with contextlib.suppress(BaseException):
                await batches.aclose()
        return "the primary's journal stream ended"

    def _advance_replicated(self, writer, claims: list[tuple[int, int]], entries: list[common_pb2.Entry]) -> None:
        committed = writer.commit_index
        if committed <= 0:
            return
        self.replicated_index = max(self.replicated_index, committed)
        if entries and entries[-1].index <= committed:
            self.replicated_ts = max(self.replicated_ts, entries[-1].ts)
        while claims and claims[0][0] <= committed:
            self.replicated_ts = max(self.replicated_ts, claims.pop(0)[1])

    async def _report_forever(self, term: Any, source: str) -> None:
        """Tell the primary's leader how far this region has replicated (hold, RPO, lag)."""
        cluster = self._region_cluster(source)
        stubs = {node.name: adjudicator_pb2_grpc.AdjudicatorStub(self.node.channels.get_remote(node.address, source))
                 for node in cluster.adjudicators}
        while True:
            await asyncio.sleep(limits.REPLICATION_REPORT_MS / 1000)
            target = self.primary_leader if self.primary_leader in stubs else next(iter(stubs))
            request = adjudicator_pb2.ReportReplicaRequest(region=self.region, index=self.replicated_index,
                                                           ts=self.replicated_ts)
            try:
                reply = await stubs[target].ReportReplica(request, timeout=limits.REPLICATION_RPC_TIMEOUT_S)
            except grpc.aio.AioRpcError as error:
                self.copy_problem = f"cannot report to {source}/{target}: {error.code().name}"
                continue
            if not reply.ok and reply.leader_hint in stubs:
                self.primary_leader = reply.leader_hint

    # --- status -------------------------------------------------------------------------------
    def point(self) -> adjudicator_pb2.RegionPointReply:
        view = self.view
        leading = self.node.term is not None
        reply = adjudicator_pb2.RegionPointReply(
            region=self.region, role=view.role.value, primary_region=view.primary, global_epoch=view.global_epoch,
            replicated_ts=self.replicated_ts, replicated_index=self.replicated_index,
            primary_commit_index=self.primary_commit_index,
            leader=self.node.leader_seen, is_leader=leading,
            message=view.reason or self.copy_problem, rpo_s=self.control.rpo_s)
        if not view.replicates:
            reply.lag_ms = 0
        elif leading:
            # Only the leader replicates; a standby's point is whatever it had when it last led.
            lag = rc.lag_ms(self.node.clock.now().latest, self.replicated_ts)
            if lag is not None:
                reply.lag_ms = lag
        return reply

    def status_detail(self) -> str:
        view = self.view
        text = f"region={self.region} region_role={view.role.value} primary_region={view.primary} " \
               f"global_epoch={view.global_epoch}"
        if view.replicates:
            lag = rc.lag_ms(self.node.clock.now().latest, self.replicated_ts)
            text += (f" replicated_index={self.replicated_index} primary_commit_index={self.primary_commit_index}"
                     f" lag_ms={'unknown' if lag is None else lag}")
        if self.reports:
            text += " " + " ".join(f"replica_{r.region}={r.index}" for r in self.reports.values())
        return text

