"""The adjudicator node: leader/standby roles around the pure ConflictChecker, and its gRPC API.

Every adjudicator follows the journal and applies committed entries to its checker, so a
standby's table matches the leader's. Leadership is won only through the journal: a node
becomes leader by `JournalWriter.take_over` (fencing a journal majority with epoch + 1),
then applies the journal up to its own leader entry before it decides anything.

Leader loop (one task per term): take up to COMMIT_BATCH_MAX queued requests, decide them
in order, append the COMMITTED ones to the journal in one call (group commit), then reply;
each Commit handler does its own commit-wait (now().earliest > commit_ts) before answering.
Heartbeats run in the same loop between batches, so a closed timestamp is never sent while
a decided batch is not yet handed to the writer. They are due every heartbeat_ms while compute
nodes say they serve reads, every IDLE_HEARTBEAT_MS otherwise, and not within a heartbeat
period of a batch append (adjudicator/heartbeat.py). An append that raises Fenced or
JournalUnavailable leaves the batch's outcome unknown (UNKNOWN to the clients), and the node
steps down: queued requests get NOT_LEADER, the checker (which may hold decisions that never
reached the journal) is dropped and rebuilt by following the journal from the start.

Retried commits (same txn_id, `retry` set) are answered from the checker's txn_id table:
COMMITTED with the original commit_ts and `duplicate` set when the transaction is already
in the journal (or, for a resend that lands in the same batch as its original, once the
original's append returns), else decided normally; see adjudicator/core.py for why that is
safe only after the leader applied the journal through its own leader entry. While the
writer sees so many journal replicas unreachable that the rest include no quorum (2 of 3; in an
active-active cluster 2 of 3 regions, each by a majority), a batch is refused UNAVAILABLE before it
is decided (nothing committed, a clear "journal unavailable" message) instead of waiting
for an append that cannot commit.

Failover: a standby whose journal stream shows no progress for failover_timeout_ms plus a
jitter asks the journal replicas and takes over only when `adjudicator.election.assess`
says so (the journal has not heard the leader for the timeout either, and no rival is
fencing); it fences above every promised epoch and gives way to a rival in the same round.
The initial leader does the same assessment at start: it leads at once on a fresh cluster
and joins as a standby when a live leader exists.

Active-active regions (docs/ACTIVE_ACTIVE.md): the adjudicators of both peer regions are one
group; each names itself `<region>/<node>` (`members.own_name`) wherever another node may read
the name (the leader entry, leader hints, Status.leader), so compute nodes of either region
find the leader. The journal probed and written is every replica of the three regions
(`members.journal_members`, each reached over `Channels.member`); the leader reports per region
whether it is voted in (Status.regions). The Global Database's region agent stays off.
"""
from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import random
import time
from typing import Awaitable, Callable

import grpc

from adjudicator import election
from adjudicator import heartbeat as heartbeat_mod
from adjudicator import region_core
from adjudicator.core import CommittedTxn, ConflictChecker, Outcome, TxnRequest
from adjudicator.metrics import CommitTimeline, TimedConflictChecker
from journal.follower import FollowBatch, JournalFollower
from journal.writer import Fenced, JournalUnavailable, JournalWriter
from quorumdb import aio, limits, members, regions, rpc, runtime
from quorumdb.clock import Clock
from quorumdb.config import ClusterConfig, NodeConfig
from quorumdb.pb import adjudicator_pb2, adjudicator_pb2_grpc, common_pb2, journal_pb2_grpc

JournalProbe = Callable[[], Awaitable[list[election.ReplicaView]]]

log = logging.getLogger("adjudicator")


class Role(enum.Enum):
    STANDBY = "standby"
    LEADER = "leader"


class TakeOverFailed(Exception):
    pass


@dataclasses.dataclass
class PendingCommit:
    request: TxnRequest
    writes: list[common_pb2.Write]
    future: asyncio.Future  # -> adjudicator_pb2.CommitReply


@dataclasses.dataclass
class LeaderTerm:
    writer: JournalWriter
    epoch: int
    leader_index: int
    queue: asyncio.Queue = dataclasses.field(default_factory=lambda: asyncio.Queue(maxsize=limits.COMMIT_QUEUE_MAX))
    wakeup: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    heartbeats: int = 0
    last_heartbeat: float = float("-inf")  # monotonic
    last_append: float = float("-inf")
    # The highest ts a claim of this term covers or will cover once committed (heartbeat claims,
    # commit_ts of appended batches): a read demand at or below it needs no new heartbeat.
    claimed_ts: int = 0
    appends: int = 0          # batches appended to the journal (Status: entries per batch)
    appended_entries: int = 0
    demand_ts: int = 0        # the highest read demand received
    # Batches decided and on their way to the journal (each a task waiting for its commit), at
    # most `batch_depth` at once (limits.COMMIT_BATCHES_IN_FLIGHT_MAX across regions, else 1).
    batch_depth: int = 1
    batch_tasks: set = dataclasses.field(default_factory=set)
    heartbeat_task: asyncio.Task | None = None
    # Why leadership ended, as a batch or heartbeat task found out ("": it did not).
    ended: str = ""
    # Resends whose original is in a batch still in flight: answered when it is.
    waiting_resends: dict = dataclasses.field(default_factory=dict)

    @property
    def appending(self) -> bool:
        """A batch is on its way to the journal."""
        return bool(self.batch_tasks)
    # A secondary region's replication agent: the writer copies the primary's log
    # (adjudicator/region.py); the term decides no commits.
    copy: bool = False


def resolve(pending: PendingCommit, reply: adjudicator_pb2.CommitReply) -> None:
    if not pending.future.done():
        pending.future.set_result(reply)


class AdjudicatorNode:
    def __init__(
        self,
        cluster: ClusterConfig,
        node: NodeConfig,
        clock: Clock,
        channels: rpc.Channels,
        writer_factory: Callable[..., JournalWriter] = JournalWriter,
        follower_factory: Callable[..., JournalFollower] = JournalFollower,
        journal_probe: JournalProbe | None = None,
        timeline: CommitTimeline | None = None,
    ):
        self.cluster = cluster
        self.node = node
        self.clock = clock
        self.channels = channels
        # The name other nodes know this one by (qualified in an active-active cluster), and the
        # journal it leads or probes: the cluster's replicas, or those of all three regions.
        self.active_active = members.active_active(cluster)
        self.own_name = members.own_name(cluster, node.name)
        self.journal_quorum = members.journal_quorum(cluster)
        # A probe may cross the WAN: a round trip of up to 2 x 75 ms plus jitter. The cluster's
        # failover timeout grows with the WAN delay (1000 + 8 x wan_ms for active-active).
        self._probe_timeout_s = limits.FAILOVER_PROBE_TIMEOUT_S
        if self.active_active is not None:
            self._probe_timeout_s = max(self._probe_timeout_s, cluster.failover_timeout_ms / 4000)
        self._writer_factory = writer_factory
        self._follower_factory = follower_factory
        self._journal_probe = journal_probe or self._probe_journal
        # Why no adjudicator leads, as far as this one knows ("" when a leader is known alive).
        self.no_leader_reason = ""
        # Batch timings for EXPLAIN ANALYZE and the metrics (adjudicator/metrics.py).
        self.timeline = timeline if timeline is not None else CommitTimeline()
        self.checker = self._new_checker()
        self.role = Role.STANDBY
        self.term: LeaderTerm | None = None
        # What the journal stream told us.
        self.applied_index = 0
        self.commit_index_seen = 0
        self.closed_ts_seen = 0
        self.epoch_seen = 0
        self.leader_seen = ""
        self.last_progress_mono = runtime.monotonic()
        self._skip_pending = False
        self._applied_changed = asyncio.Event()
        self._transition_lock = asyncio.Lock()
        self._rng = random.Random(self.own_name)  # both peers have an adjudicator-az1: differ by region
        self._follow_task: asyncio.Task | None = None
        self._background: list[asyncio.Task] = []
        self._step_down_tasks: set[asyncio.Task] = set()
        self._closing = False
        # Closed timestamps on demand (adjudicator/heartbeat.py): fast heartbeats until this
        # monotonic time. Compute nodes sending unary commits cannot say they read: then always.
        self._demand_until = float("-inf")
        self._always_demand = rpc.unary_rpc()
        # Global Database (adjudicator/region.py): None for a cluster without regions.
        self.max_entry_epoch = 0
        self.promotion_index = 0  # a failover: the last entry kept from the old primary
        self._promoted_epoch = 0  # the global epoch whose promotion entry this node queued
        self._reconcile_task: asyncio.Task | None = None
        self._was_leader = False
        self.region_agent = None
        # Roles primary/secondary belong to a Global Database; an active-active cluster's regions
        # are one database with one journal, so no region agent.
        if cluster.region and self.active_active is None:
            from adjudicator.region import RegionAgent  # only regions of a Global Database need it
            self.region_agent = RegionAgent(self)

    # --- lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        if self.region_agent is not None:
            self.region_agent.start()
        self._restart_follower()
        self._background.append(asyncio.create_task(self._watch_leader(), name="watch-leader"))
        if self.own_name == self.cluster.initial_leader:
            self._background.append(asyncio.create_task(self._initial_leadership(), name="initial-leader"))

    async def close(self) -> None:
        self._closing = True
        if self.region_agent is not None:
            await self.region_agent.close()
        if self._reconcile_task is not None:
            self._reconcile_task.cancel()
            await asyncio.gather(self._reconcile_task, return_exceptions=True)
        for task in [*self._background, *self._step_down_tasks]:
            task.cancel()
        await asyncio.gather(*self._background, *self._step_down_tasks, return_exceptions=True)
        if self.term is not None:
            await self._step_down(self.term, "node stopping", rebuild=False)
        if self._follow_task is not None:
            self._follow_task.cancel()
            await asyncio.gather(self._follow_task, return_exceptions=True)

    # --- following the journal ---------------------------------------------------
    def _restart_follower(self) -> None:
        if self._closing:
            return  # a late step-down must not start following again while the node stops
        if self._follow_task is not None:
            self._follow_task.cancel()
        self._follow_task = asyncio.create_task(self._follow_forever(), name="follow-journal")

    async def _follow_forever(self) -> None:
        while True:
            follower = self._follower_factory(self.cluster, self.node.name, self.node.az, self.channels)
            batches = follower.batches(self.applied_index + 1, allow_skip=True)
            try:
                async for batch in batches:
                    self._on_batch(batch)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the stream failed: resubscribe from where we are
                log.warning("journal stream failed at applied_index %d: %r", self.applied_index, e)
            finally:
                try:
                    await batches.aclose()
                except Exception:  # noqa: BLE001 - closing a broken stream
                    pass
            await asyncio.sleep(limits.FOLLOW_RETRY_BACKOFF_MS / 1000)

    def _on_batch(self, batch: FollowBatch) -> None:
        if batch.skipped_to:
            log.warning("journal skipped to index %d (truncated); older commits are unknown", batch.skipped_to)
            self.applied_index = max(self.applied_index, batch.skipped_to - 1)
            self._skip_pending = True
        txns: list[CommittedTxn] = []
        for entry in batch.entries:
            if entry.index <= self.applied_index:
                continue  # delivered twice (resubscribe)
            if entry.index != self.applied_index + 1 and not self._skip_pending:
                log.warning("journal gap: applied %d, got %d; treating it as a skip", self.applied_index, entry.index)
                self._skip_pending = True
            if self._skip_pending:
                self.checker.forget_before(entry.ts)
                self._skip_pending = False
            match entry.kind:
                case common_pb2.ENTRY_TXN:
                    txns.append(CommittedTxn(entry.ts, tuple(w.key for w in entry.writes), entry.txn_id, entry.index,
                                             entry.private_keyspace))
                case common_pb2.ENTRY_LEADER:
                    txns.append(CommittedTxn(entry.ts, (), index=entry.index))
                case common_pb2.ENTRY_BACKTRACK:
                    txns.append(CommittedTxn(entry.ts, (), index=entry.index, backtrack_to_ts=entry.backtrack_to_ts))
                case common_pb2.ENTRY_GLOBAL:
                    txns.append(CommittedTxn(entry.ts, (), index=entry.index))
                    if self.region_agent is not None:
                        self.region_agent.on_marker(entry)
                case _:
                    log.warning("ignoring journal entry %d of unknown kind %d", entry.index, entry.kind)
            self.applied_index = entry.index
            self.max_entry_epoch = max(self.max_entry_epoch, entry.epoch)
        self.checker.apply_committed(txns)
        if batch.closed_ts:
            self.checker.observe_closed(batch.closed_ts)
        self.checker.collect_garbage(self.clock.now().latest)
        # A higher epoch counts as progress: a new leader has just fenced the journal and is about
        # to append. Without this, two standbys that both timed out on a dead leader could depose
        # the winner in the moment between its fence and its first append (a spurious failover).
        progressed = (bool(batch.entries) or batch.closed_ts > self.closed_ts_seen
                      or batch.commit_index > self.commit_index_seen or batch.epoch > self.epoch_seen)
        self.closed_ts_seen = max(self.closed_ts_seen, batch.closed_ts)
        self.commit_index_seen = max(self.commit_index_seen, batch.commit_index)
        if batch.epoch >= self.epoch_seen and batch.leader:
            self.epoch_seen = batch.epoch
            self.leader_seen = batch.leader
            if progressed:
                self.last_progress_mono = runtime.monotonic()
                self.no_leader_reason = ""
        self._applied_changed.set()
        term = self.term
        if term is not None and batch.epoch > term.epoch:
            task = asyncio.create_task(self._step_down(term, f"journal shows epoch {batch.epoch} led by {batch.leader}"))
            self._step_down_tasks.add(task)
            task.add_done_callback(self._step_down_tasks.discard)

    async def _wait_applied(self, index: int, timeout_s: float) -> None:
        deadline = runtime.monotonic() + timeout_s
        while self.applied_index < index:
            remaining = deadline - runtime.monotonic()
            if remaining <= 0:
                raise TakeOverFailed(f"applied only up to {self.applied_index} of {index} within {timeout_s} s")
            self._applied_changed.clear()
            await aio.wait_event(self._applied_changed, remaining)

    # --- becoming leader -----------------------------------------------------------
    async def take_over(self, why: str, known_epoch: int = 0, give_way: bool = False) -> int:
        """Become leader (fence the journal with a higher epoch); returns the epoch. Raises TakeOverFailed.

        known_epoch / give_way: see JournalWriter.take_over (a failover gives way to a rival)."""
        async with self._transition_lock:
            if self.term is not None:
                return self.term.epoch
            if self._closing:
                raise TakeOverFailed("node is stopping")
            writer = self._writer_factory(self.cluster, self.own_name, self.channels, self.clock)
            copy = self.region_agent is not None and self.region_agent.view.replicates
            if self.region_agent is not None:
                # Entries copied from another region carry its epochs: fence above all of them.
                known_epoch = max(known_epoch, self.max_entry_epoch)
            try:
                if runtime.buggify("adjudicator.take_over.slow"):  # a rival may fence meanwhile
                    await asyncio.sleep(0.3)
                result = await writer.take_over(limits.TAKE_OVER_TIMEOUT_S, known_epoch=known_epoch, give_way=give_way,
                                                **({"copy": True} if copy else {}))
                runtime.crash_point("adjudicator.take_over.fenced")
                if not copy:
                    await self._wait_applied(result.leader_index, limits.LEADER_CATCH_UP_TIMEOUT_S)
                    # Every commit an older leader ever acknowledged is now in the checker's
                    # txn_id table: retries may be answered from it (adjudicator/core.py).
                    self.checker.begin_term(result.leader_index)
            except BaseException as e:
                await self._close_writer(writer)
                if isinstance(e, (asyncio.CancelledError, KeyboardInterrupt)):
                    raise
                raise TakeOverFailed(f"take over failed: {e!r}") from e
            # The old leader may have promised closed timestamps we never saw. Its promise was
            # at most its now().latest <= true time + 2 * error at that moment, which is before
            # our now, so commit_ts above our latest + 2 * error stays above every such promise.
            self.checker.observe_closed(max(result.last_ts, self.clock.now().latest + 2 * self.clock.error_ns))
            term = LeaderTerm(writer=writer, epoch=result.epoch, leader_index=result.leader_index, copy=copy,
                              batch_depth=limits.COMMIT_BATCHES_IN_FLIGHT_MAX if self.journal_quorum.multi_region
                              else 1)
            self.term = term
            self._was_leader = True
            # Compute nodes may still send their read demand to the old leader until they learn of
            # this one (their next commit or readiness probe): assume reads for one lease.
            self._demand_until = runtime.monotonic() + limits.READ_DEMAND_LEASE_S
            self.role = Role.LEADER
            self.epoch_seen = max(self.epoch_seen, result.epoch)
            self.leader_seen = self.own_name
            self.no_leader_reason = ""
            if copy:
                term.task = asyncio.create_task(self._copy(term), name=f"copy-epoch-{term.epoch}")
                self.region_agent.update_hold()
            else:
                term.task = asyncio.create_task(self._lead(term), name=f"lead-epoch-{term.epoch}")
            log.info("role change: %s at epoch %d (leader_index %d, %s)",
                     "replication agent" if copy else "leader", term.epoch, term.leader_index, why)
            return term.epoch

    async def _initial_leadership(self) -> None:
        """Lead at start, unless the journal shows a live leader (then stay a standby)."""
        backoff_ms = limits.TAKE_OVER_BACKOFF_MIN_MS
        timeout_ms = self.cluster.failover_timeout_ms or limits.INITIAL_LEADER_SILENCE_MS
        while not self._closing:
            assessment = await self._assess(timeout_ms, deferred_epoch=0)
            match assessment.verdict:
                case election.Verdict.LEADER_ALIVE:
                    log.info("initial leader joins as standby: %s", assessment.reason)
                    return
                case election.Verdict.NO_MAJORITY:
                    log.info("initial leader waits for the journal: %s", assessment.reason)
                case election.Verdict.TAKE_OVER | election.Verdict.RIVAL_TAKING_OVER:
                    known_epoch = max(assessment.fence_epoch - 1, assessment.rival_epoch)
                    try:
                        await self.take_over(f"initial leader: {assessment.reason}", known_epoch=known_epoch)
                        return
                    except TakeOverFailed as e:
                        log.warning("initial take over failed (retrying in %d ms): %s", backoff_ms, e)
            await asyncio.sleep(backoff_ms / 1000)
            backoff_ms = min(2 * backoff_ms, limits.TAKE_OVER_BACKOFF_MAX_MS)

    def _failover_jitter_s(self) -> float:
        return election.failover_jitter_ms(self.cluster.failover_timeout_ms, self._rng.random()) / 1000

    def _silence_allowed_s(self, jitter_s: float) -> float:
        allowed_s = self.cluster.failover_timeout_ms / 1000 + jitter_s
        if not self.leader_seen and self.epoch_seen == 0:
            # Never seen a leader (the cluster is starting): leave the initial leader time to
            # start on a slow machine, so that the cluster file's initial leader is the one that leads.
            allowed_s = max(allowed_s, limits.INITIAL_LEADER_SILENCE_MS / 1000)
        return allowed_s

    async def _agent_alive(self) -> bool:
        """The region's leader (the replication agent) answers as leader."""
        names = [self.leader_seen] if self.leader_seen and self.leader_seen != self.own_name else []
        for name in names:
            address = self.cluster.node(name).address
            stub = adjudicator_pb2_grpc.AdjudicatorStub(self.channels.get(address))
            try:
                reply = await stub.RegionPoint(adjudicator_pb2.RegionPointRequest(),
                                               timeout=limits.FAILOVER_PROBE_TIMEOUT_S)
            except grpc.aio.AioRpcError:
                return False
            return reply.is_leader
        return False

    async def _probe_journal(self) -> list[election.ReplicaView]:
        """Status of every journal replica (of every region) that answers within the probe timeout."""
        async def one(member: members.Member) -> election.ReplicaView:
            stub = journal_pb2_grpc.JournalStub(self.channels.member(member))
            reply = await stub.Status(common_pb2.StatusRequest(), timeout=self._probe_timeout_s)
            return election.ReplicaView(member.name, reply.epoch, reply.leader, reply.closed_ts, reply.commit_index)

        journals = members.journal_members(self.cluster)
        results = await asyncio.gather(*(one(member) for member in journals), return_exceptions=True)
        views = []
        for member, result in zip(journals, results):
            if isinstance(result, election.ReplicaView):
                views.append(result)
            elif not isinstance(result, grpc.aio.AioRpcError):
                log.warning("journal probe of %s failed: %r", member.name, result)
        return views

    async def _assess(self, timeout_ms: int, deferred_epoch: int) -> election.Assessment:
        views = await self._journal_probe()
        return election.assess(
            views, self.journal_quorum, self.clock.now().earliest, timeout_ms * 1_000_000,
            self.epoch_seen, deferred_epoch)

    async def _watch_leader(self) -> None:
        """A standby that hears nothing from the leader for failover_timeout (+ jitter) may take over.

        It asks the journal first (election.assess): a standby that was itself starved, or
        whose stream hangs, must not depose a live leader; a rival already fencing is let be.
        """
        timeout_ms = self.cluster.failover_timeout_ms
        if timeout_ms <= 0:
            return
        check_s = max(self.cluster.heartbeat_ms, limits.FAILOVER_CHECK_MS) / 1000
        jitter_s = self._failover_jitter_s()
        deferred_epoch = 0
        while True:
            await asyncio.sleep(check_s)
            if self.term is not None or self._transition_lock.locked():
                continue
            silent_s = runtime.monotonic() - self.last_progress_mono
            if silent_s < self._silence_allowed_s(jitter_s):
                continue
            if self.region_agent is not None and self.region_agent.view.replicates and await self._agent_alive():
                # A replication agent's journal is quiet while the primary is unreachable: ask it.
                self.last_progress_mono = runtime.monotonic()
                continue
            silent_since = self.last_progress_mono
            assessment = await self._assess(timeout_ms, deferred_epoch)
            jitter_s = self._failover_jitter_s()  # redrawn after every attempt: two standbys rarely fire together
            if self.term is not None or self._transition_lock.locked():
                continue
            if self.last_progress_mono != silent_since:
                # The stream showed progress while the replicas were asked: typically a rival that
                # has just fenced (a higher epoch) but not yet closed time, so the replicas' closed
                # timestamps still look old. Fencing over it now would depose a fresh leader.
                log.info("leader silent for %.2f s, but the journal progressed while assessing "
                         "(leader %r, epoch %d): not taking over", silent_s, self.leader_seen, self.epoch_seen)
                continue
            match assessment.verdict:
                case election.Verdict.LEADER_ALIVE:
                    log.info("no progress seen for %.2f s, but %s: not taking over", silent_s, assessment.reason)
                    self.no_leader_reason = ""
                case election.Verdict.RIVAL_TAKING_OVER:
                    log.info("leader silent for %.2f s; %s: giving it time", silent_s, assessment.reason)
                    deferred_epoch = assessment.rival_epoch
                    self.no_leader_reason = f"a take-over is in progress ({assessment.reason})"
                case election.Verdict.NO_MAJORITY:
                    log.info("leader silent for %.2f s; cannot take over: %s", silent_s, assessment.reason)
                    self.no_leader_reason = assessment.reason
                case election.Verdict.TAKE_OVER:
                    log.info("no progress from leader %r (epoch %d) for %.2f s and %s: taking over",
                             self.leader_seen, self.epoch_seen, silent_s, assessment.reason)
                    try:
                        await self.take_over(f"failover: {assessment.reason}",
                                             known_epoch=assessment.fence_epoch - 1, give_way=True)
                    except TakeOverFailed as e:
                        log.info("failover attempt lost: %s", e)
                        self.no_leader_reason = f"last take-over attempt failed: {e}"
            self.last_progress_mono = runtime.monotonic()

    # --- leading -----------------------------------------------------------------
    def note_read_demand(self, read_ts: int = 0) -> None:
        """A compute node serves reads (keep closed timestamps fresh for READ_DEMAND_LEASE_S),
        and one of its transactions reads at read_ts: close it now unless a claim covers it."""
        now = runtime.monotonic()
        was_live = now < self._demand_until
        self._demand_until = now + limits.READ_DEMAND_LEASE_S
        term = self.term
        if term is None:
            return
        term.demand_ts = max(term.demand_ts, read_ts)
        if heartbeat_mod.claim_needed(read_ts, term.claimed_ts):
            if not term.queue.empty() or (term.appending and term.batch_depth == 1):
                # The next batch, decided after this demand, will cover it. (With batches in
                # flight at once nothing waits for the one appending: the claim goes now.)
                term.wakeup.set()
            else:
                self._claim_closed(term)
        elif not was_live:
            term.wakeup.set()  # a periodic heartbeat may be due at once (adjudicator/heartbeat.py)

    def _claim_closed(self, term: LeaderTerm) -> None:
        """Ask the journal to carry a closed-timestamp claim of now().latest, without waiting.

        Safe at any await point of the leader loop: a batch is decided and handed to the writer
        in one synchronous step (_decide_and_assign), so the claim's index covers every commit_ts
        decided so far, and close_timestamp keeps every later commit_ts above the claim."""
        if not term.writer.majority_reachable:
            return  # nothing could be confirmed; reads wait (and fail 57P03) rather than go stale
        closed_ts = self.checker.close_timestamp(self.clock.now().latest)
        try:
            term.writer.request_heartbeat(closed_ts)
        except (Fenced, JournalUnavailable):
            term.wakeup.set()  # the leader loop notices and steps down
            return
        term.claimed_ts = max(term.claimed_ts, closed_ts)
        term.last_heartbeat = runtime.monotonic()
        term.heartbeats += 1

    def _next_heartbeat_at(self, term: LeaderTerm, heartbeat_s: float, idle_s: float) -> float:
        demand_until = float("inf") if self._always_demand else self._demand_until
        return heartbeat_mod.next_heartbeat_at(term.last_heartbeat, term.last_append, demand_until,
                                               runtime.monotonic(), heartbeat_s, idle_s)

    # --- Global Database (adjudicator/region.py) ------------------------------------------
    async def _copy(self, term: LeaderTerm) -> None:
        """A secondary region's leader: copy the primary's log until the role changes."""
        try:
            reason = await self.region_agent.copy(term)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - a bug or transport surprise: step down, a standby retries
            log.exception("replication failed")
            reason = f"replication failed: {error!r}"
        await self._step_down(term, reason, rebuild=False)

    def region_changed(self) -> None:
        """The region's role changed: a leader in the wrong mode steps down and takes over in the right one."""
        if self._closing or (self._reconcile_task is not None and not self._reconcile_task.done()):
            return
        self._reconcile_task = asyncio.create_task(self._reconcile_role(), name="region-reconcile")

    async def _reconcile_role(self) -> None:
        """Lead in the mode the region's role asks for: copying the primary's log (secondary), or
        deciding commits (primary, promoting, detached; a fenced region's leader also stays in
        this mode, refusing every commit, so that its standbys do not take turns taking over)."""
        agent = self.region_agent
        for _ in range(limits.REGION_RECONCILE_ATTEMPTS_MAX):
            term = self.term
            want_copy = agent.view.replicates
            if term is None:
                if not self._was_leader:
                    return  # standbys follow whoever leads; the failover watch handles a silent leader
            elif term.copy == want_copy:
                if not want_copy:
                    term.wakeup.set()  # a failover named this region: the leader loop writes the marker
                    if agent.view.role == region_core.RegionRole.PROMOTING and not agent.view.replicates:
                        await self._promote(term)
                return
            else:
                await self._step_down(term, f"region role is now {agent.view.role.value}", rebuild=not term.copy)
            try:
                await self.take_over(f"region role: {agent.view.role.value}")
                return
            except TakeOverFailed as error:
                log.warning("taking over as %s failed: %s", "replication agent" if want_copy else "leader", error)
                await asyncio.sleep(limits.REPLICATION_RETRY_MS / 1000)

    async def _promote(self, term: LeaderTerm) -> None:
        """A failover named this region: its first entry says so (the promotion index is the last
        entry replicated from the old primary, the one right before this term's leader entry)."""
        view = self.region_agent.view
        if self._promoted_epoch == view.global_epoch:
            return  # this failover's entry is queued or written already
        self._promoted_epoch = view.global_epoch
        self.promotion_index = term.leader_index - 1
        marker = TxnRequest(start_ts=0, write_keys=(), global_marker=(view.global_epoch, self.cluster.region,
                                                                      self.promotion_index))
        pending = PendingCommit(marker, [], asyncio.get_running_loop().create_future())
        term.queue.put_nowait(pending)
        term.wakeup.set()

    async def _lead(self, term: LeaderTerm) -> None:
        heartbeat_s = self.cluster.heartbeat_ms / 1000
        if self.region_agent is not None:
            self.region_agent.update_hold()
            if (self.region_agent.view.role == region_core.RegionRole.PROMOTING
                    and not self.region_agent.view.replicates):
                await self._promote(term)
        idle_s = heartbeat_mod.idle_interval_s(self.cluster.heartbeat_ms, self.cluster.failover_timeout_ms,
                                               limits.IDLE_HEARTBEAT_MS)
        # Batches go to the journal as tasks (at most term.batch_depth at once) and so does the
        # periodic heartbeat (one at a time): across regions each takes a WAN round trip, and the
        # loop must not wait for one before deciding the next batch. A task that finds leadership
        # over says why in term.ended and wakes the loop.
        while not term.ended:
            if (term.queue.empty() and not term.appending
                    and heartbeat_mod.claim_needed(term.demand_ts, term.claimed_ts)):
                self._claim_closed(term)  # a demand that came during an append and no batch covered
            now = runtime.monotonic()
            has_batch = not term.queue.empty() and len(term.batch_tasks) < term.batch_depth
            next_heartbeat = self._next_heartbeat_at(term, heartbeat_s, idle_s)
            heartbeat_due = term.heartbeat_task is None and now >= next_heartbeat
            if not has_batch and not heartbeat_due:
                # Woken by a new commit, a read demand, or a batch or heartbeat task that ended.
                wait_s = next_heartbeat - now if term.heartbeat_task is None else limits.JOURNAL_RPC_TIMEOUT_S
                term.wakeup.clear()
                await aio.wait_event(term.wakeup, max(wait_s, 0.0))
                continue
            if has_batch:
                batch = [term.queue.get_nowait() for _ in range(min(term.queue.qsize(), limits.COMMIT_BATCH_MAX))]
                self._start_batch(term, batch)
            if (not term.ended and term.heartbeat_task is None
                    and runtime.monotonic() >= self._next_heartbeat_at(term, heartbeat_s, idle_s)):
                term.last_heartbeat = runtime.monotonic()
                term.heartbeats += 1
                term.heartbeat_task = asyncio.create_task(self._heartbeat_task(term), name="heartbeat")
        await self._step_down(term, term.ended)

    async def _heartbeat_task(self, term: LeaderTerm) -> None:
        try:
            reason = await self._heartbeat(term)
        finally:
            term.heartbeat_task = None
        if reason and not term.ended:
            term.ended = reason
        term.wakeup.set()

    def _start_batch(self, term: LeaderTerm, batch: list[PendingCommit]) -> None:
        """Decide a batch and hand it to the journal (synchronously), then let a task wait for its
        commit and answer (`_finish_batch`)."""
        started = self._decide_and_assign(term, batch)
        if started is None:
            return
        task = asyncio.create_task(self._finish_batch(term, *started), name="commit-batch")
        term.batch_tasks.add(task)
        task.add_done_callback(term.batch_tasks.discard)

    def _decide_and_assign(self, term: LeaderTerm, batch: list[PendingCommit]):
        """Decide; append the winners' entries (the writer's synchronous step); answer what needs
        no journal. Returns (committed, resent, entries, appended-or-error) or None (nothing to
        wait for)."""
        if not term.writer.majority_reachable:
            # Deciding would put decisions in the table that cannot reach the journal: refuse first.
            unreachable = ", ".join(term.writer.unreachable_replicas)
            why = (f"journal unavailable: no majority of journal replicas ({election.needed_text(self.journal_quorum)} "
                   f"needed; unreachable: {unreachable}); nothing was committed")
            for pending in batch:
                resolve(pending, adjudicator_pb2.CommitReply(outcome=adjudicator_pb2.UNAVAILABLE, message=why))
            return None
        # Deciding and handing the entries to the writer (writer.append's first, synchronous
        # step) happen with no await between: a closed-timestamp claim (_claim_closed) made at
        # any await point covers every decided commit_ts with its index.
        decisions = self.checker.decide_batch([p.request for p in batch], self.clock.now().latest)
        entries: list[common_pb2.Entry] = []
        committed: list[PendingCommit] = []
        resent: list[PendingCommit] = []  # resends of a request decided earlier (this batch or one in flight)
        for pending, decision in zip(batch, decisions):
            match decision.outcome:
                case Outcome.COMMITTED if pending.request.global_marker is not None:
                    epoch, primary, promotion_index = pending.request.global_marker
                    entries.append(common_pb2.Entry(
                        kind=common_pb2.ENTRY_GLOBAL, ts=decision.commit_ts, global_epoch=epoch,
                        primary_region=primary, promotion_index=promotion_index, leader=self.own_name,
                    ))
                    committed.append(pending)
                case Outcome.COMMITTED if pending.request.backtrack_to_ts is not None:
                    entries.append(common_pb2.Entry(
                        kind=common_pb2.ENTRY_BACKTRACK, ts=decision.commit_ts,
                        backtrack_to_ts=pending.request.backtrack_to_ts, leader=self.own_name,
                    ))
                    committed.append(pending)
                case Outcome.COMMITTED:
                    entries.append(common_pb2.Entry(
                        kind=common_pb2.ENTRY_TXN, ts=decision.commit_ts, writes=pending.writes,
                        txn_id=pending.request.txn_id, leader=self.own_name,
                        private_keyspace=pending.request.private_keyspace,
                    ))
                    committed.append(pending)
                case Outcome.DUPLICATE if decision.index > 0:
                    resolve(pending, adjudicator_pb2.CommitReply(
                        outcome=adjudicator_pb2.COMMITTED, commit_ts=decision.commit_ts, index=decision.index,
                        duplicate=True, message=decision.message))
                case Outcome.DUPLICATE:
                    resent.append(pending)
                case Outcome.CONFLICT:
                    resolve(pending, adjudicator_pb2.CommitReply(
                        outcome=adjudicator_pb2.CONFLICT, message=decision.message, conflict_key=decision.conflict_key))
                case Outcome.TOO_OLD:
                    resolve(pending, adjudicator_pb2.CommitReply(outcome=adjudicator_pb2.TOO_OLD, message=decision.message))
                case Outcome.UNKNOWN:
                    resolve(pending, adjudicator_pb2.CommitReply(outcome=adjudicator_pb2.UNKNOWN, message=decision.message))
        own = {entry.txn_id for entry in entries}
        for pending in [p for p in resent if p.request.txn_id not in own]:
            # Its original is in a batch still in flight: answered with it (_finish_batch).
            resent.remove(pending)
            term.waiting_resends.setdefault(pending.request.txn_id, []).append(pending)
        if not entries:
            return None
        term.claimed_ts = max(term.claimed_ts, entries[-1].ts)  # closed once this batch commits
        try:
            assigned: list[common_pb2.Entry] | BaseException = term.writer.assign(entries)
        except (Fenced, JournalUnavailable) as error:
            assigned = error
        return committed, resent, entries, assigned

    async def _finish_batch(self, term: LeaderTerm, committed: list[PendingCommit], resent: list[PendingCommit],
                            entries: list[common_pb2.Entry], assigned) -> None:
        """Wait until the batch is durable, then answer; on failure end the term (term.ended)."""
        try:
            reason = await self._await_batch(term, committed, resent, entries, assigned)
        except asyncio.CancelledError:
            self._reply_unknown(committed + resent + self._waiting_for(term, entries),
                                "leader stepped down during the journal append")
            raise
        if reason and not term.ended:
            term.ended = reason
        term.wakeup.set()

    @staticmethod
    def _waiting_for(term: LeaderTerm, entries: list[common_pb2.Entry]) -> list[PendingCommit]:
        """The resends waiting for the originals among `entries` (taken off the waiting list)."""
        return [p for entry in entries for p in term.waiting_resends.pop(entry.txn_id, [])]

    async def _await_batch(self, term: LeaderTerm, committed: list[PendingCommit], resent: list[PendingCommit],
                           entries: list[common_pb2.Entry], assigned) -> str:
        try:
            if isinstance(assigned, BaseException):
                raise assigned
            await term.writer.wait_committed(assigned[-1].index, limits.JOURNAL_COMMIT_TIMEOUT_S)
            appended = assigned
            # A batch append moves the closed timestamp by itself (the writer carries the commit's
            # ts once committed): no separate heartbeat for a period after it.
            term.last_append = runtime.monotonic()
        except Fenced as e:
            self._reply_unknown(committed + resent + self._waiting_for(term, entries),
                                f"leader was fenced during the journal append ({e})")
            return f"fenced: {e}"
        except JournalUnavailable as e:
            self._reply_unknown(committed + resent + self._waiting_for(term, entries),
                                f"journal unavailable during the append ({e})")
            return f"journal unavailable: {e}"
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug or an unexpected transport error: the outcome is unknown
            log.exception("journal append failed unexpectedly")
            self._reply_unknown(committed + resent + self._waiting_for(term, entries), f"journal append failed ({e!r})")
            return f"append failed: {e!r}"
        assert len(appended) == len(entries), "the writer returns one entry per entry appended"
        if self.region_agent is not None:
            self.region_agent.update_hold()
        term.appends += 1
        term.appended_entries += len(appended)
        by_txn_id: dict[str, common_pb2.Entry] = {}
        for pending, entry, sent in zip(committed, appended, entries):
            assert entry.ts == sent.ts, "the writer keeps commit_ts"
            if self.term is term:  # else the table was rebuilt from the journal, which has it
                self.checker.record_appended(entry.txn_id, entry.ts, entry.index)
            by_txn_id[entry.txn_id] = entry
            resolve(pending, adjudicator_pb2.CommitReply(
                outcome=adjudicator_pb2.COMMITTED, commit_ts=entry.ts, index=entry.index))
        for pending in resent + self._waiting_for(term, entries):
            entry = by_txn_id[pending.request.txn_id]
            resolve(pending, adjudicator_pb2.CommitReply(
                outcome=adjudicator_pb2.COMMITTED, commit_ts=entry.ts, index=entry.index, duplicate=True,
                message=f"transaction {entry.txn_id} was already committed"))
        return ""

    def _reply_unknown(self, committed: list[PendingCommit], why: str) -> None:
        for pending in committed:
            resolve(pending, adjudicator_pb2.CommitReply(outcome=adjudicator_pb2.UNKNOWN, message=why))

    async def _heartbeat(self, term: LeaderTerm) -> str:
        if not term.writer.majority_reachable:
            # Nothing can be confirmed; the pipelines keep retrying the last heartbeat and the
            # replicas' answers bring the majority back. Do not hold up the batch loop.
            return ""
        closed_ts = self.checker.close_timestamp(self.clock.now().latest)
        term.claimed_ts = max(term.claimed_ts, closed_ts)
        try:
            await term.writer.heartbeat(closed_ts)
        except Fenced as e:
            return f"fenced on heartbeat: {e}"
        except JournalUnavailable as e:
            log.debug("heartbeat: journal unavailable: %s", e)  # no decision rides on it; retry next tick
        except Exception:  # noqa: BLE001 - keep leading; the next append will tell
            log.exception("heartbeat failed unexpectedly")
        return ""

    async def _step_down(self, term: LeaderTerm, reason: str, rebuild: bool = True) -> None:
        if self.term is not term:
            return
        self.term = None
        self.role = Role.STANDBY
        if self.leader_seen == self.own_name:
            self.leader_seen = ""
        log.info("role change: standby (stepped down from epoch %d: %s)", term.epoch, reason)
        hint = self.leader_seen
        while not term.queue.empty():
            resolve(term.queue.get_nowait(), adjudicator_pb2.CommitReply(
                outcome=adjudicator_pb2.NOT_LEADER, leader_hint=hint, message="this adjudicator stepped down"))
        if rebuild:
            # Decisions may be in the checker that never reached the journal: rebuild from the
            # journal. Now, before any await: a take-over may start at the next await point.
            self.rebuild()
        if term.task is not None and term.task is not asyncio.current_task():
            term.task.cancel()
            await asyncio.gather(term.task, return_exceptions=True)
        others = [task for task in (*term.batch_tasks, term.heartbeat_task)
                  if task is not None and task is not asyncio.current_task()]
        for task in others:
            task.cancel()  # a batch still waiting answers "unknown" (_finish_batch)
        await asyncio.gather(*others, return_exceptions=True)
        self._reply_unknown([p for waiting in term.waiting_resends.values() for p in waiting],
                            "leader stepped down during the journal append")
        term.waiting_resends.clear()
        await self._close_writer(term.writer)

    def _new_checker(self) -> ConflictChecker:
        return TimedConflictChecker(self.timeline)

    def rebuild(self) -> None:
        """Drop the checker and follow the journal again from its start (standbys only)."""
        assert self.term is None, "a leader's table holds its own decisions"
        self.checker = self._new_checker()
        self.applied_index = 0
        self._skip_pending = False
        self._restart_follower()

    async def _close_writer(self, writer: JournalWriter) -> None:
        try:
            await writer.close()
        except Exception:  # noqa: BLE001 - best effort
            log.exception("closing the journal writer failed")

    # --- requests ----------------------------------------------------------------
    def not_leader_reply(self) -> adjudicator_pb2.CommitReply:
        hint = self.leader_seen if self.leader_seen != self.own_name else ""
        message = f"{self.own_name} is not the leader"
        if self.no_leader_reason:
            hint = ""  # the leader we knew of is silent
            message += f"; no leader known: {self.no_leader_reason}"
        return adjudicator_pb2.CommitReply(outcome=adjudicator_pb2.NOT_LEADER, leader_hint=hint, message=message)

    async def commit(self, request: adjudicator_pb2.CommitRequest) -> adjudicator_pb2.CommitReply:
        (reply,) = await self.commit_many([request])
        return reply

    async def commit_many(self, requests: list[adjudicator_pb2.CommitRequest]) -> list[adjudicator_pb2.CommitReply]:
        """Queue every request for the leader loop; the replies (in request order, each with its seq)
        once all are decided and the commit-wait of the latest commit_ts has passed."""
        arrived = runtime.monotonic()  # EXPLAIN ANALYZE and the commit latency metric start here
        term = self.term
        if term is None or term.copy:
            return [self._with_seq(self.not_leader_reply(), request) for request in requests]
        if self.region_agent is not None:
            why = self.region_agent.accepts_commits() or await self.region_agent.rpo_wait()
            if why:
                return [self._with_seq(adjudicator_pb2.CommitReply(outcome=adjudicator_pb2.UNAVAILABLE, message=why),
                                       request) for request in requests]
            if self.term is not term:
                return [self._with_seq(self.not_leader_reply(), request) for request in requests]
        loop = asyncio.get_running_loop()
        waits: list[asyncio.Future] = []
        explained: list[tuple[int, TxnRequest]] = []  # (position, request) of those that asked for timings
        for request in requests:
            txn = TxnRequest(
                start_ts=request.start_ts,
                write_keys=tuple(w.key for w in request.writes),
                lock_keys=tuple(request.lock_keys),
                txn_id=request.txn_id,
                retry=request.retry,
                private_keyspace=request.private_keyspace,
            )
            pending = PendingCommit(txn, list(request.writes), loop.create_future())
            if request.explain:
                explained.append((len(waits), txn))
            try:
                term.queue.put_nowait(pending)
            except asyncio.QueueFull:
                pending.future.set_result(adjudicator_pb2.CommitReply(
                    outcome=adjudicator_pb2.UNAVAILABLE, message="overloaded: commit queue full; nothing was committed"))
            # Shielded: a client that gives up must not cancel the batch's bookkeeping.
            waits.append(asyncio.shield(pending.future))
        term.wakeup.set()
        replies = await asyncio.gather(*waits)
        decided = runtime.monotonic()
        committed_ts = [reply.commit_ts for reply in replies if reply.outcome == adjudicator_pb2.COMMITTED]
        if committed_ts:
            runtime.crash_point("adjudicator.commit.before_commit_wait")
            await self._commit_wait(max(committed_ts))
            if runtime.buggify("adjudicator.commit.slow_reply"):  # durable and waited: the answer is late
                await asyncio.sleep(0.1)
        replied = runtime.monotonic()
        self.timeline.answered(replies, arrived, replied)
        for position, txn in explained:
            replies[position].timing.CopyFrom(self.timeline.explain(
                txn, replies[position], arrived, decided, replied, self.node.name))
        return [self._with_seq(reply, request) for reply, request in zip(replies, requests)]

    async def backtrack(self, request: adjudicator_pb2.BacktrackRequest) -> adjudicator_pb2.BacktrackReply:
        """Decide a backtrack in commit order (it gets the next commit_ts), append it as an
        ENTRY_BACKTRACK, and answer once it is durable and its commit-wait has passed."""
        term = self.term
        if term is None or term.copy:
            refused = self.not_leader_reply()
            return adjudicator_pb2.BacktrackReply(outcome=refused.outcome, leader_hint=refused.leader_hint,
                                                  message=refused.message)
        if request.to_ts <= 0:
            return adjudicator_pb2.BacktrackReply(outcome=adjudicator_pb2.OUTCOME_UNSPECIFIED,
                                                  message="a backtrack needs to_ts, the time to rewind to")
        pending = PendingCommit(TxnRequest(start_ts=0, write_keys=(), backtrack_to_ts=request.to_ts), [],
                                asyncio.get_running_loop().create_future())
        try:
            term.queue.put_nowait(pending)
        except asyncio.QueueFull:
            return adjudicator_pb2.BacktrackReply(outcome=adjudicator_pb2.UNAVAILABLE,
                                                  message="overloaded: commit queue full; nothing was done")
        term.wakeup.set()
        reply = await asyncio.shield(pending.future)  # a caller that gives up must not cancel the append
        if reply.outcome == adjudicator_pb2.COMMITTED:
            await self._commit_wait(reply.commit_ts)
            log.info("backtrack to %d committed at index %d, ts %d", request.to_ts, reply.index, reply.commit_ts)
        return adjudicator_pb2.BacktrackReply(outcome=reply.outcome, index=reply.index, ts=reply.commit_ts,
                                              message=reply.message, leader_hint=reply.leader_hint)

    # --- Global Database requests -----------------------------------------------------------
    def region_point(self) -> adjudicator_pb2.RegionPointReply:
        if self.region_agent is None:
            return adjudicator_pb2.RegionPointReply(leader=self.leader_seen, is_leader=self.term is not None)
        return self.region_agent.point()

    def report_replica(self, request: adjudicator_pb2.ReportReplicaRequest) -> adjudicator_pb2.ReportReplicaReply:
        term = self.term
        agent = self.region_agent
        if agent is None or term is None or term.copy:
            return adjudicator_pb2.ReportReplicaReply(ok=False, leader_hint=self.not_leader_reply().leader_hint)
        agent.report(request)
        return adjudicator_pb2.ReportReplicaReply(ok=True, global_epoch=agent.view.global_epoch)

    async def switchover(self, request: adjudicator_pb2.SwitchoverRequest) -> adjudicator_pb2.SwitchoverReply:
        """Planned switchover (asked of the primary's leader): seal, drain, append the marker."""
        term = self.term
        agent = self.region_agent
        if agent is None:
            return adjudicator_pb2.SwitchoverReply(message="this cluster has no regions")
        if term is None or term.copy:
            return adjudicator_pb2.SwitchoverReply(message=f"{self.node.name} is not the primary's leader",
                                                   leader_hint=self.not_leader_reply().leader_hint)
        why = region_core.switchover_refusal(
            request.to_region, agent.global_cfg.names, agent.view.role, agent.fresh_reports(), term.writer.commit_index,
            request.max_lag_entries or limits.SWITCHOVER_LAG_ENTRIES_MAX, agent.control.detached)
        if not why and request.global_epoch <= agent.view.global_epoch:
            why = f"global epoch {request.global_epoch} is not above the current {agent.view.global_epoch}"
        if why:
            return adjudicator_pb2.SwitchoverReply(message=why)
        agent.sealed = True  # no new commit is queued from now on
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limits.JOURNAL_COMMIT_TIMEOUT_S
        while (not term.queue.empty() or term.appending) and loop.time() < deadline:
            await asyncio.sleep(0.005)  # the commits queued before the seal are decided first
        marker = TxnRequest(start_ts=0, write_keys=(), global_marker=(request.global_epoch, request.to_region, 0))
        pending = PendingCommit(marker, [], loop.create_future())
        try:
            term.queue.put_nowait(pending)
        except asyncio.QueueFull:
            agent.sealed = False
            return adjudicator_pb2.SwitchoverReply(message="commit queue full; try again")
        term.wakeup.set()
        reply = await asyncio.shield(pending.future)
        if reply.outcome != adjudicator_pb2.COMMITTED:
            agent.sealed = False
            return adjudicator_pb2.SwitchoverReply(message=f"the marker was not committed: {reply.message}")
        await self._commit_wait(reply.commit_ts)
        log.info("switchover to %s: marker at index %d (global epoch %d)", request.to_region, reply.index,
                 request.global_epoch)
        return adjudicator_pb2.SwitchoverReply(ok=True, marker_index=reply.index, marker_ts=reply.commit_ts)

    async def promote(self, request: adjudicator_pb2.PromoteRequest) -> adjudicator_pb2.PromoteReply:
        """Failover or detach (asked of a secondary's leader once the control state says so): wait
        until this region leads and, for a failover, its ENTRY_GLOBAL is durable."""
        agent = self.region_agent
        if agent is None:
            return adjudicator_pb2.PromoteReply(message="this cluster has no regions")
        primary_commit_index, primary_closed_ts = agent.primary_commit_index, agent.primary_closed_ts
        agent.control = await runtime.offload(regions.read_state, agent.global_cfg.data_dir)
        agent.refresh()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limits.TAKE_OVER_TIMEOUT_S + limits.JOURNAL_COMMIT_TIMEOUT_S
        want = "detached" if request.detach else "primary"
        while agent.view.role.value != want or self.term is None or self.term.copy:
            if loop.time() >= deadline:
                return adjudicator_pb2.PromoteReply(
                    message=f"{self.node.name}: region is {agent.view.role.value}, not {want}, after the deadline")
            if self.term is None and not self._was_leader:
                return adjudicator_pb2.PromoteReply(message=f"{self.node.name} is not the region's leader",
                                                    leader_hint=self.not_leader_reply().leader_hint)
            await asyncio.sleep(0.01)
        index = self.promotion_index or agent.replicated_index
        ts = agent.replicated_ts
        return adjudicator_pb2.PromoteReply(
            ok=True, promotion_index=index, promotion_ts=ts, primary_commit_index=primary_commit_index,
            primary_closed_ts=primary_closed_ts, entry_index=agent.marker.index if agent.marker else 0)

    @staticmethod
    def _with_seq(reply: adjudicator_pb2.CommitReply, request: adjudicator_pb2.CommitRequest):
        if request.seq:
            reply.seq = request.seq
        return reply

    async def _commit_wait(self, commit_ts: int) -> None:
        """Answer only once now().earliest > commit_ts: every later start_ts is then above it."""
        await aio.wait_clock_past(self.clock, commit_ts)

    def status(self) -> common_pb2.NodeStatus:
        term = self.term
        silent_ms = (runtime.monotonic() - self.last_progress_mono) * 1000
        if term is not None:
            health = "ok"
        elif not self.leader_seen:
            health = "degraded: no leader known"
        elif silent_ms > limits.ADJUDICATOR_JOURNAL_SILENCE_MS:
            health = f"degraded: no progress from leader {self.leader_seen} for {silent_ms / 1000:.1f} s"
        else:
            health = "ok"
        return common_pb2.NodeStatus(
            name=self.node.name,
            az=self.node.az,
            service="adjudicator",
            role=self.role.value,
            epoch=term.epoch if term is not None else self.epoch_seen,
            commit_index=max(term.writer.commit_index, self.commit_index_seen) if term is not None else self.commit_index_seen,
            applied_index=self.applied_index,
            closed_ts=self.closed_ts_seen,
            leader=self.leader_seen,
            region=self.cluster.region,
            regions=self._region_votes(term),
            health=health,
            detail=f"tracked_keys={self.checker.tracked_keys} txn_ids={len(self.checker.txns)} "
            f"heartbeats={term.heartbeats if term is not None else 0} "
            f"appends={term.appends if term is not None else 0} "
            f"appended_entries={term.appended_entries if term is not None else 0} "
            f"read_demand={'yes' if runtime.monotonic() < self._demand_until else 'no'} "
            f"last_ts={self.checker.last_ts} "
            f"known_since_ts={self.checker.known_since_ts} "
            f"backtrack_floor_ts={self.checker.backtrack_floor_ts}"
            + (f" {self.region_agent.status_detail()}" if self.region_agent is not None else ""),
        )


    def _region_votes(self, term: LeaderTerm | None) -> list[common_pb2.RegionVote]:
        """The leader of an active-active cluster: which regions are voted in (JournalWriter.region_votes)."""
        if term is None or self.active_active is None:
            return []
        return [common_pb2.RegionVote(name=vote.name, voted_in=vote.voted_in, match_index=vote.match_index,
                                      ack_age_ms=min(vote.ack_age_ms, 1e12), kind=vote.kind)
                for vote in term.writer.region_votes()]


class AdjudicatorService(adjudicator_pb2_grpc.AdjudicatorServicer):
    """Thin gRPC shell: protobuf in -> AdjudicatorNode -> protobuf out."""

    def __init__(self, adjudicator: AdjudicatorNode):
        self.adjudicator = adjudicator

    async def Commit(self, request, context):
        return await self.adjudicator.commit(request)

    async def CommitStream(self, request_iterator, context):
        """Each incoming batch is answered as one reply batch when decided (batches overlap, bounded)."""
        write_lock = asyncio.Lock()
        answering: set[asyncio.Task] = set()
        metrics = self.adjudicator.timeline.metrics  # None: the node serves no metrics

        async def answer(requests: list[adjudicator_pb2.CommitRequest]) -> None:
            started = time.perf_counter()
            replies = await self.adjudicator.commit_many(requests)
            async with write_lock:
                await context.write(adjudicator_pb2.CommitReplyBatch(replies=replies))
            if metrics is not None:  # per message, as the other streams
                metrics.commit_stream.observe(time.perf_counter() - started)
                metrics.stream_batch_requests.observe(len(requests))

        try:
            async for batch in request_iterator:
                if batch.reads_active:
                    self.adjudicator.note_read_demand(batch.read_demand_ts)
                if not batch.requests:
                    continue
                if len(batch.requests) > limits.COMMIT_STREAM_BATCH_MAX:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                        f"a commit batch holds at most {limits.COMMIT_STREAM_BATCH_MAX} requests")
                while len(answering) >= limits.COMMIT_STREAM_BATCHES_INFLIGHT_MAX:
                    await asyncio.wait(answering, return_when=asyncio.FIRST_COMPLETED)
                task = asyncio.create_task(answer(list(batch.requests)), name="commit-stream-batch")
                answering.add(task)
                task.add_done_callback(answering.discard)
            # Half-closed by the sender: answer what it sent, then end the stream.
            if answering:
                await asyncio.gather(*answering)
        finally:
            for task in list(answering):
                task.cancel()  # the caller is gone; the commits themselves are shielded

    async def Backtrack(self, request, context):
        return await self.adjudicator.backtrack(request)

    async def TakeOver(self, request, context):
        try:
            epoch = await self.adjudicator.take_over("TakeOver request")
        except TakeOverFailed as e:
            return adjudicator_pb2.TakeOverReply(ok=False, message=str(e))
        return adjudicator_pb2.TakeOverReply(ok=True, epoch=epoch, message=f"{self.adjudicator.own_name} leads")

    async def Status(self, request, context):
        return self.adjudicator.status()

    async def RegionPoint(self, request, context):
        return self.adjudicator.region_point()

    async def ReportReplica(self, request, context):
        return self.adjudicator.report_replica(request)

    async def Switchover(self, request, context):
        return await self.adjudicator.switchover(request)

    async def Promote(self, request, context):
        return await self.adjudicator.promote(request)
