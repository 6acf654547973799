"""The journal writer used by the adjudicator leader: fencing, take-over, appends, heartbeats.

A thin async shell around `journal.writer_core.WriterCore`: one pipeline task per
replica sends Appends in order over one AppendStream per replica, one at a time within the
writer's region and up to limits.JOURNAL_APPEND_PIPELINE_DEPTH in flight to a replica across
the WAN (writer_core "Pipelining"), so a dead replica stalls only its own pipeline; callers
wait for the commit index to pass their entries.

Usage:
    writer = JournalWriter(cluster, "adjudicator-az1", channels, clock)
    result = await writer.take_over(timeout_s=5)   # Fenced / JournalUnavailable
    committed = await writer.append([Entry(kind=ENTRY_TXN, ts=commit_ts, writes=..., txn_id=...)])
    await writer.heartbeat(closed_ts)              # when idle, every heartbeat_ms
    await writer.close()

Replicas: `quorumdb.members.journal_members` (the cluster's 3, or in an active-active cluster
the 9 of the three regions, named `<region>/<node>`), each reached with `Channels.member` (over
the simulated WAN when in another region); a quorum is `members.journal_quorum` (2 of 3, or 2
of 3 regions each by a majority of its replicas). "A quorum" below means that rule.

Outcomes: `append` returns once the entries are fsynced on a quorum of replicas; it raises
`JournalUnavailable` after limits.JOURNAL_COMMIT_TIMEOUT_S and `Fenced` when a replica
holds a higher epoch (another writer took over; this one must stop). After either, the
entries' outcome is unknown: they may be committed (and survive the next take-over).
If take_over raises, call close() (its pipelines may already run).

Closed timestamps: `heartbeat(closed_ts)` clamps the claim to clock.now().earliest and
publishes it to replicas (at once, by an Append of its own) only once a quorum acked an
Append sent after the claim, so a rival that fences a quorum later has a clock past it.
Appends also carry (ts, index) of the entry at the commit index. So followers see a
heartbeat's closed_ts about two round trips after it was made.

Regions (active-active): the writer remembers when each replica last acknowledged an Append
(its own monotonic clock) and says per region whether it is voted in (`region_votes`,
writer_core.region_votes), and it computes the hold that keeps replicas from dropping what the
storage of a peer region still needs (writer_core.regional_hold).
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging

import grpc

from journal.writer_core import (
    BufferFull,
    RegionVote,
    ReplicaTail,
    SendPlan,
    WriterCore,
    best_tail,
    region_votes,
)
from quorumdb import aio, limits, members, rpc, runtime
from quorumdb.clock import Clock
from quorumdb.config import ClusterConfig
from quorumdb.pb import common_pb2, journal_pb2, journal_pb2_grpc

log = logging.getLogger("journal.writer")


# A region is voted in while a majority of its replicas hold what was committed this long ago.
REGION_VOTE_LAG_S = 1.0


class JournalUnavailable(Exception):
    """No quorum of journal replicas within the deadline; the outcome of in-flight entries is unknown."""


class Fenced(Exception):
    """A replica holds a higher epoch: this writer must stop writing."""


@dataclasses.dataclass(frozen=True)
class TakeOverResult:
    epoch: int
    leader_index: int
    last_ts: int  # max ts in the log (the ENTRY_LEADER's)


class AppendStream:
    """One pipeline's gRPC stream to one replica: Appends written in order, replies read in order.

    Up to the pipeline's depth of Appends are in flight (journal/writer_core.py "Pipelining");
    the replica answers them in order (journal/service.py AppendStream), so `next_reply` is the
    reply to the oldest one, and it must come within timeout_s of that message's send. With a
    depth of 1 this is the lockstep of before: write an Append, read its reply. A stream
    message costs much less than a unary call (the CPU profile in docs/BENCHMARKS.md). Any
    failure cancels the stream (the next send opens a new one; every message in flight is lost
    with it) and surfaces as the AioRpcError a unary Append would raise. The stream is replaced
    after half its deadline, once nothing is in flight on it (`accepts_more` stops new sends
    meanwhile, so its deadline never cuts a reply off).
    """

    def __init__(self, target: str, stub: journal_pb2_grpc.JournalStub) -> None:
        self.target = target
        self._stub = stub
        self._call = None
        self._opened = 0.0
        self._sent_at: collections.deque[float] = collections.deque()  # loop time of each send in flight
        self._reading: asyncio.Future | None = None  # the read of the next reply, once started

    @property
    def in_flight(self) -> int:
        return len(self._sent_at)

    def _aged(self) -> bool:
        return asyncio.get_running_loop().time() - self._opened > limits.JOURNAL_APPEND_STREAM_LIFETIME_S / 2

    def accepts_more(self) -> bool:
        """False while an aged stream drains before it is replaced."""
        return self._call is None or not self._sent_at or not self._aged()

    async def send(self, request: journal_pb2.AppendRequest, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        if self._call is None or (not self._sent_at and self._aged()):
            self.reset()
            self._call = self._stub.AppendStream(timeout=limits.JOURNAL_APPEND_STREAM_LIFETIME_S)
            self._opened = loop.time()
        call = self._call
        started = loop.time()
        wait_s = rpc.cross_az_wait_s(self.target)  # simulated AZ distance, per message
        try:
            async with asyncio.timeout(timeout_s + wait_s):
                if wait_s:
                    await asyncio.sleep(wait_s)
                await call.write(request)
        except BaseException as error:
            raise self._failed(error, timeout_s) from None
        self._sent_at.append(started)

    async def next_reply(self, timeout_s: float, wake: asyncio.Event | None = None) -> journal_pb2.AppendReply | None:
        """The reply to the oldest Append in flight; None if `wake` was set first (the read
        goes on, for the next call)."""
        assert self._sent_at and self._call is not None, "nothing in flight"
        loop = asyncio.get_running_loop()
        if self._reading is None:
            self._reading = asyncio.ensure_future(self._call.read())
        reading = self._reading
        deadline = self._sent_at[0] + timeout_s + rpc.cross_az_wait_s(self.target)
        waiter = asyncio.ensure_future(wake.wait()) if wake is not None else None
        try:
            waits = {reading} if waiter is None else {reading, waiter}
            await asyncio.wait(waits, timeout=max(0.0, deadline - loop.time()), return_when=asyncio.FIRST_COMPLETED)
        except BaseException as error:
            raise self._failed(error, timeout_s) from None
        finally:
            if waiter is not None:
                waiter.cancel()
        if not reading.done():
            if waiter is not None and wake.is_set():
                return None
            raise self._failed(TimeoutError(), timeout_s)
        self._reading = None
        try:
            reply = reading.result()
        except BaseException as error:
            raise self._failed(error, timeout_s) from None
        if reply is grpc.aio.EOF:
            self.reset()
            raise _rpc_error(grpc.StatusCode.UNAVAILABLE, "append stream ended by the replica")
        self._sent_at.popleft()
        return reply

    def _failed(self, error: BaseException, timeout_s: float) -> BaseException:
        """Cancel the stream; what to raise for `error`."""
        self.reset()
        if isinstance(error, TimeoutError):
            return _rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, f"no Append reply within {timeout_s:.1f} s")
        if isinstance(error, grpc.aio.AioRpcError):
            return error
        if isinstance(error, (grpc.RpcError, asyncio.InvalidStateError)):  # e.g. a write after the stream ended
            return _rpc_error(grpc.StatusCode.UNAVAILABLE, f"append stream ended: {error!r}")
        return error

    def reset(self) -> None:
        call, self._call = self._call, None
        reading, self._reading = self._reading, None
        self._sent_at.clear()
        if reading is not None:
            reading.cancel()
            reading.add_done_callback(_retrieve)
        if call is not None:
            call.cancel()


class UnaryAppends:
    """QUORUMDB_UNARY_RPC=1: one unary Append per message, one at a time (depth 1): `send` keeps
    the request, `next_reply` makes the call. Same interface as AppendStream."""

    def __init__(self, stub: journal_pb2_grpc.JournalStub) -> None:
        self._stub = stub
        self._pending: collections.deque[journal_pb2.AppendRequest] = collections.deque()

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def accepts_more(self) -> bool:
        return not self._pending

    async def send(self, request: journal_pb2.AppendRequest, timeout_s: float) -> None:
        self._pending.append(request)

    async def next_reply(self, timeout_s: float, wake: asyncio.Event | None = None) -> journal_pb2.AppendReply:
        reply = await self._stub.Append(self._pending[0], timeout=timeout_s)
        self._pending.popleft()
        return reply

    def reset(self) -> None:
        self._pending.clear()


def _retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


def _rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


class JournalWriter:
    def __init__(self, cluster: ClusterConfig, leader_name: str, channels: rpc.Channels, clock: Clock):
        self.cluster = cluster
        self.leader_name = leader_name
        self.clock = clock
        self.members = members.journal_members(cluster)
        self.replicas = [member.name for member in self.members]
        self.quorum = members.journal_quorum(cluster)
        self._global = members.active_active(cluster)
        self.region = cluster.region if self._global is not None else ""
        self._stubs = {member.name: journal_pb2_grpc.JournalStub(channels.member(member)) for member in self.members}
        # Appends go over one stream per replica, or (QUORUMDB_UNARY_RPC=1) as unary calls. The
        # simulated AZ distance applies within the region (a remote replica's is the WAN's).
        self._unary = rpc.unary_rpc()
        self._streams = {member.name: UnaryAppends(self._stubs[member.name]) if self._unary else
                         AppendStream(member.node.name if member.region in ("", cluster.region)
                                      else member.name, self._stubs[member.name])
                         for member in self.members}
        # Appends in flight per replica (writer_core "Pipelining"): a replica across the WAN gets
        # a window, so a batch does not wait a WAN round trip for the previous reply; within
        # the region, and with unary calls (unordered), one at a time.
        self._depths = {member.name: limits.JOURNAL_APPEND_PIPELINE_DEPTH
                        if not self._unary and member.region not in ("", cluster.region) else 1
                        for member in self.members}
        # When each replica last acknowledged an Append (runtime.monotonic), and the commit
        # index over the last REGION_VOTE_LAG_S: what `region_votes` judges regions by.
        self._acked_at: dict[str, float] = {}
        self._commit_history: collections.deque[tuple[float, int]] = collections.deque()
        self._core: WriterCore | None = None
        self._fenced = False
        self._closed = False
        self._highest_epoch_seen = 0
        self._progress = asyncio.Event()  # replaced on every commit advance / fence
        self._work = {name: asyncio.Event() for name in self.replicas}
        self._pipelines: list[asyncio.Task] = []
        # Replicas whose last RPC from a pipeline failed as unreachable (refused, deadline).
        self._unreachable: set[str] = set()
        # Replicas a catch-up read (ReadEntries) failed on since their pipeline last succeeded.
        self._bad_sources: set[str] = set()

    # --- properties ---------------------------------------------------------------
    @property
    def epoch(self) -> int:
        return self._core.epoch if self._core else 0

    @property
    def commit_index(self) -> int:
        return self._core.commit_index if self._core else 0

    @property
    def last_index(self) -> int:
        return self._core.last_index if self._core else 0

    @property
    def last_ts(self) -> int:
        return self._core.last_ts if self._core else 0

    @property
    def unreachable_replicas(self) -> list[str]:
        """Replicas whose last Append failed as unreachable (a dead or cut-off replica)."""
        return sorted(self._unreachable)

    @property
    def majority_reachable(self) -> bool:
        """False once the last Appends to so many replicas failed that the others include no
        quorum: an append cannot commit now."""
        return self.quorum.can_reach(self._unreachable)

    def region_votes(self) -> list[RegionVote]:
        """Per region of the journal, whether it is voted in (writer_core.region_votes): a
        majority of its replicas acknowledged an Append within the failover timeout and holds
        what was committed REGION_VOTE_LAG_S ago. Empty before take-over."""
        if self._core is None:
            return []
        now = runtime.monotonic()
        ages = {name: (now - at) * 1000 for name, at in self._acked_at.items()}
        matches = {name: progress.match_index for name, progress in self._core.progress.items()}
        kinds = {region.name: region.role for region in self._global.regions} if self._global is not None else {}
        timeout_ms = max(self.cluster.failover_timeout_ms, 1)
        return region_votes(self.quorum, matches, ages, self._commit_lagged(now), timeout_ms, kinds)

    def _commit_lagged(self, now: float) -> int:
        """The commit index as it was REGION_VOTE_LAG_S ago (the oldest sample within it)."""
        history = self._commit_history
        while len(history) > 1 and history[1][0] <= now - REGION_VOTE_LAG_S:
            history.popleft()
        if not history:
            return 0
        at, index = history[0]
        return index if at <= now - REGION_VOTE_LAG_S else 0

    @property
    def is_leader(self) -> bool:
        return self._core is not None and not self._fenced and not self._closed

    # --- take over ----------------------------------------------------------------
    async def take_over(self, timeout_s: float, known_epoch: int = 0, give_way: bool = False,
                        copy: bool = False) -> TakeOverResult:
        """Fence a majority, reconcile the tail, commit an ENTRY_LEADER.

        known_epoch: the highest epoch the caller knows was promised (the first round fences
        above it). give_way: a replica that refuses because it promised our epoch or a higher
        one to someone else means a rival candidate is fencing: raise Fenced at once instead
        of fencing again over it (two standbys that keep outbidding each other never lead).
        """
        assert self._core is None, "take_over runs once per writer"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        self._highest_epoch_seen = max(self._highest_epoch_seen, known_epoch)
        epoch, tails = await self._fence_majority(deadline, give_way)
        best = best_tail(tails)
        commit_index = min(max(tail.commit_index for tail in tails), best.last_index)
        last_ts = await self._read_ts(best, deadline)
        self._core = WriterCore(self.replicas, self.leader_name, epoch, best, commit_index, tails=tails,
                                copy_mode=copy, quorum=self.quorum, region=self.region,
                                peer_regions=self._global.peers if self._global is not None else None,
                                depths=self._depths)
        self._commit_history.append((runtime.monotonic(), commit_index))
        self._pipelines = [asyncio.create_task(self._pipeline(name), name=f"journal-pipeline-{name}")
                           for name in self.replicas]
        log.info("fenced the journal at epoch %d; log of %s up to %d (epoch %d)%s",
                 epoch, best.name, best.last_index, best.last_epoch, " to copy the primary's" if copy else "")
        if copy:
            self._core.last_ts = last_ts
            return TakeOverResult(epoch=epoch, leader_index=best.last_index, last_ts=last_ts)
        leader_entry = common_pb2.Entry(
            kind=common_pb2.ENTRY_LEADER,
            ts=max(self.clock.now().latest, last_ts + 1),
            leader=self.leader_name,
        )
        [assigned] = self._assign([leader_entry])
        await self._wait_committed(assigned.index, deadline - loop.time())
        log.info("leading the journal: epoch %d, leader entry %d", epoch, assigned.index)
        return TakeOverResult(epoch=epoch, leader_index=assigned.index, last_ts=assigned.ts)

    async def _fence_majority(self, deadline: float, give_way: bool = False) -> tuple[int, list[ReplicaTail]]:
        loop = asyncio.get_running_loop()
        for _ in range(limits.JOURNAL_TAKE_OVER_ATTEMPTS_MAX):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            epoch = self._highest_epoch_seen + 1
            replies = await asyncio.gather(*(self._fence(name, epoch, remaining) for name in self.replicas))
            tails = []
            for name, reply in zip(self.replicas, replies):
                if reply is None:
                    continue
                self._highest_epoch_seen = max(self._highest_epoch_seen, reply.promised_epoch)
                if reply.ok:
                    tails.append(ReplicaTail(name, reply.last_index, reply.last_epoch,
                                             reply.commit_index, reply.first_index))
            if self.quorum.is_quorum(tail.name for tail in tails):
                return epoch, tails
            leased = [reply.retry_after_ms for reply in replies if reply is not None and reply.retry_after_ms]
            rival = max((reply.promised_epoch for reply in replies if reply is not None and not reply.ok
                         and not reply.retry_after_ms), default=0)
            if give_way and rival >= epoch:
                raise Fenced(f"another candidate fenced epoch {rival} while we tried {epoch}")
            log.info("fencing epoch %d won %d of %d replicas (%s needed); retrying",
                     epoch, len(tails), len(self.replicas), self.quorum.describe())
            if leased:
                # Replicas still hold the current writer's lease (journal/core.py): they stopped
                # renewing it when they refused, so a retry after it runs out wins.
                await asyncio.sleep(min(max(leased) / 1000, max(0.0, deadline - loop.time())))
            elif all(reply is None for reply in replies):
                await asyncio.sleep(min(limits.JOURNAL_RETRY_BACKOFF_MAX_S, max(0.0, deadline - loop.time())))
        raise JournalUnavailable(f"could not fence a quorum of the journal replicas ({self.quorum.describe()})")

    async def _fence(self, name: str, epoch: int, timeout_s: float) -> journal_pb2.FenceReply | None:
        request = journal_pb2.FenceRequest(epoch=epoch, candidate=self.leader_name)
        try:
            return await self._stubs[name].Fence(request, timeout=min(timeout_s, limits.JOURNAL_RPC_TIMEOUT_S))
        except grpc.aio.AioRpcError as error:
            log.info("fence %s: %s", name, error.code())
            return None

    async def _read_ts(self, best: ReplicaTail, deadline: float) -> int:
        """ts of the last entry of the best log (0 if that log is empty)."""
        if best.last_index < max(1, best.first_index):
            return 0
        loop = asyncio.get_running_loop()
        request = journal_pb2.ReadEntriesRequest(from_index=best.last_index, max_entries=1)
        try:
            reply = await self._stubs[best.name].ReadEntries(
                request, timeout=max(0.01, min(deadline - loop.time(), limits.JOURNAL_RPC_TIMEOUT_S)))
        except grpc.aio.AioRpcError as error:
            raise JournalUnavailable(f"could not read the log tail of {best.name}: {error.code()}") from error
        return reply.entries[-1].ts if reply.entries else 0

    # --- append -------------------------------------------------------------------
    async def append(self, entries: list[common_pb2.Entry]) -> list[common_pb2.Entry]:
        """Append entries (kind/ts/writes/txn_id set); returns them with index and epoch once committed."""
        if not entries:
            return []
        assigned = self._assign(entries)
        await self._wait_committed(assigned[-1].index, limits.JOURNAL_COMMIT_TIMEOUT_S)
        return assigned

    def append_copied(self, entries: list[common_pb2.Entry], closed: tuple[int, int] = (0, 0)) -> None:
        """Copy mode: queue the primary's entries (same index, epoch, ts) and its closed-timestamp
        claim; `wait_committed` says when they are durable here."""
        self._check_leading()
        try:
            if entries:
                self._core.assign_copied(entries)
            if closed[0]:
                self._core.copy_closed(*closed)
        except BufferFull as error:
            raise JournalUnavailable(str(error)) from error
        self._kick_all()

    async def wait_committed(self, index: int, timeout_s: float) -> None:
        await self._wait_committed(index, timeout_s)

    def assign(self, entries: list[common_pb2.Entry]) -> list[common_pb2.Entry]:
        """`append`'s first, synchronous step: the entries get their index and epoch and go to
        the pipelines; `wait_committed(last index)` then says when they are durable."""
        return self._assign(entries)

    def set_hold(self, hold_index: int) -> None:
        """Global Database: replicas keep every entry after hold_index (sent with the next Append)."""
        if self._core is not None and hold_index != self._core.hold_index:
            self._core.hold_index = hold_index

    def _assign(self, entries: list[common_pb2.Entry]) -> list[common_pb2.Entry]:
        self._check_leading()
        try:
            assigned = self._core.assign(entries)
        except BufferFull as error:
            raise JournalUnavailable(str(error)) from error
        self._kick_all()
        return assigned

    def _check_leading(self) -> None:
        if self._core is None:
            raise RuntimeError("take_over first")
        if self._fenced:
            raise Fenced(f"a journal replica holds an epoch above {self._core.epoch}")
        if self._closed:
            raise JournalUnavailable("writer closed")

    async def _wait_committed(self, index: int, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            progress = self._progress
            if self._core.commit_index >= index:
                return  # committed is a fact, even if this writer was fenced right after
            if self._fenced:
                raise Fenced(f"a journal replica holds an epoch above {self._core.epoch}")
            if self._closed:
                raise JournalUnavailable("writer closed")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise JournalUnavailable(
                    f"entry {index} not committed on {self.quorum.describe()} in {timeout_s:.1f} s")
            await aio.wait_event(progress, remaining)

    def _notify_progress(self) -> None:
        progress, self._progress = self._progress, asyncio.Event()
        progress.set()

    def _kick_all(self) -> None:
        for event in self._work.values():
            event.set()

    # --- heartbeat ----------------------------------------------------------------
    def request_heartbeat(self, closed_ts: int) -> int:
        """Claim that no entry after the last one assigned will have ts <= closed_ts, without
        waiting: the pipelines carry the claim, and publish it once a quorum acked an Append
        sent after it (writer_core). The caller must have made its own future timestamps exceed
        closed_ts (ConflictChecker.close_timestamp). Returns the heartbeat's number."""
        self._check_leading()
        number = self._core.request_heartbeat(closed_ts, self.clock.now().latest)
        self._kick_all()
        return number

    async def heartbeat(self, closed_ts: int) -> None:
        """request_heartbeat, then wait until a quorum acked it (at most JOURNAL_RPC_TIMEOUT_S)."""
        number = self.request_heartbeat(closed_ts)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limits.JOURNAL_RPC_TIMEOUT_S
        while (not self._core.heartbeat_confirmed(number) and not self._fenced and not self._closed
               and self.majority_reachable):
            progress = self._progress
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            if not await aio.wait_event(progress, remaining):
                return
        if self._fenced:
            raise Fenced(f"a journal replica holds an epoch above {self._core.epoch}")

    # --- pipelines ----------------------------------------------------------------
    async def _pipeline(self, name: str) -> None:
        """Send Appends to one replica, up to its depth in flight, until fenced or closed."""
        try:
            await self._pipeline_loop(name)
        except asyncio.CancelledError:
            raise
        except BaseException:
            log.exception("journal pipeline to %s crashed", name)
            raise

    async def _pipeline_loop(self, name: str) -> None:
        """One task per replica interleaves sending (while the core has work and the window
        room) and reading replies in order (while waiting for one, new work wakes it up to send
        more if the window has room). Any failure loses every message in flight: the core
        restarts the pipeline (`on_stream_failed`) and this backs off."""
        backoff_s = limits.JOURNAL_RETRY_BACKOFF_MIN_S
        core = self._core
        stream = self._streams[name]
        depth = core.progress[name].depth
        while not self._fenced and not self._closed:
            work = self._work[name]
            try:
                if stream.accepts_more() and core.can_send(name):
                    if await self._send_next(name):
                        continue
                    ok = False  # nothing to send the entries from (a fetch failed)
                elif core.in_flight(name) == 0:
                    work.clear()
                    await work.wait()
                    continue
                else:
                    window_open = stream.accepts_more() and core.in_flight(name) < depth
                    work.clear()  # no await since can_send: no kick is lost
                    reply = await stream.next_reply(limits.JOURNAL_RPC_TIMEOUT_S, work if window_open else None)
                    if reply is None:
                        continue  # new work: send it while the replies are on their way
                    self._unreachable.discard(name)
                    self._bad_sources.discard(name)
                    ok = self._on_reply(name, reply)
            except grpc.aio.AioRpcError as error:
                stream.reset()
                core.on_stream_failed(name)
                if error.code() not in rpc.UNREACHABLE:
                    log.warning("append to %s failed: %s %s", name, error.code(), error.details())
                elif name not in self._unreachable:
                    self._unreachable.add(name)
                    self._notify_progress()  # a heartbeat waiting for a majority may stop waiting
                ok = False
            if ok:
                backoff_s = limits.JOURNAL_RETRY_BACKOFF_MIN_S
            else:
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, limits.JOURNAL_RETRY_BACKOFF_MAX_S)

    async def _send_next(self, name: str) -> bool:
        """Send the next Append to `name` (the core said it may). False when there was nothing
        to read entries that are no longer buffered from: the pipeline backs off."""
        core = self._core
        plan = core.plan(name)
        if plan.entries is None:  # only with nothing in flight (core.can_send)
            prev_index, prev_epoch, entries, jumped = await self._fetch(name, plan)
            if entries is None:
                return False
            if self._fenced or self._closed:
                return True
            plan = dataclasses.replace(plan, prev_index=prev_index, prev_epoch=prev_epoch, entries=entries,
                                       from_index=prev_index + 1, to_index=prev_index + len(entries), jumped=jumped)
        closed_ts, closed_index = core.closed()
        commit_index = core.commit_index
        request = journal_pb2.AppendRequest(
            epoch=core.epoch,
            leader=core.leader,
            prev_index=plan.prev_index,
            prev_epoch=plan.prev_epoch,
            entries=plan.entries,
            commit_index=commit_index,
            closed_ts=closed_ts,
            closed_index=closed_index,
            hold_index=core.hold_index,
        )
        sent_earliest = self.clock.now().earliest  # the replica's lease grant counts from no earlier
        core.on_sent(name, plan, commit_index, (closed_ts, closed_index), sent_earliest)
        await self._streams[name].send(request, limits.JOURNAL_RPC_TIMEOUT_S)
        return True

    def _on_reply(self, name: str, reply: journal_pb2.AppendReply) -> bool:
        """Apply the reply to the oldest Append in flight. Returns False when the pipeline should back off."""
        core = self._core
        if self._fenced or self._closed:
            return True
        if reply.status == journal_pb2.APPEND_FENCED:
            self._on_fenced(name, reply.promised_epoch)
            return True
        if reply.status == journal_pb2.APPEND_MISMATCH:
            plan = core.on_reply_mismatch(name, reply.last_index)
            # A jump that did not fit: the replica must learn the durable index first.
            return plan is None or not plan.jumped
        closed_before = core.closed()
        self._acked_at[name] = runtime.monotonic()
        if core.on_reply_ok(name, reply.match_index, reply.lease_granted, reply.durable_index):
            self._commit_history.append((runtime.monotonic(), core.commit_index))
            if len(self._commit_history) > limits.WRITER_BUFFER_ENTRIES_MAX:
                self._commit_lagged(runtime.monotonic())
            self._kick_all()  # carry the new commit index to every replica
        elif core.closed() > closed_before:
            self._kick_all()  # a heartbeat claim was just confirmed: publish it now
        self._notify_progress()
        return True

    async def _fetch(self, name: str, plan: SendPlan):
        """Entries the buffer no longer holds, read from a replica that matches the writer's log.

        Returns (prev_index, prev_epoch, entries, jumped); entries None if nothing could be read.
        `jumped`: the source has truncated what `name` misses; send what exists after it.
        """
        core = self._core
        source = core.source_for(name, plan.to_index, avoid=self._unreachable | self._bad_sources)
        if source is None:
            return 0, 0, None, False
        source_match = core.progress[source].match_index
        from_index = max(1, plan.from_index - 1)  # one more for prev_epoch
        max_entries = min(limits.ENTRIES_PER_MESSAGE_MAX, source_match - from_index + 1)
        if max_entries <= 0:
            return 0, 0, None, False
        request = journal_pb2.ReadEntriesRequest(from_index=from_index, max_entries=max_entries)
        try:
            reply = await self._stubs[source].ReadEntries(request, timeout=limits.JOURNAL_RPC_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            # The source failed, not `name`: do not count `name` unreachable for it (a region
            # cut off would make its catch-up look like a second region lost); try another
            # source until the failed one's own pipeline succeeds again.
            self._bad_sources.add(source)
            log.info("reading entries %d.. from %s for %s: %s", from_index, source, name, error.code())
            return 0, 0, None, False
        fetched = [entry for entry in reply.entries if entry.index <= source_match]
        if not fetched:
            return 0, 0, None, False
        if plan.from_index == 1 and fetched[0].index == 1:
            return 0, 0, fetched, False
        if fetched[0].index == plan.from_index - 1:
            return fetched[0].index, fetched[0].epoch, fetched[1:], False
        # The source truncated below fetched[0]: those entries are on 4 of 6 storage copies (of
        # every peer region, in an active-active cluster: the hold).
        core.source_truncated(fetched[0].index - 1)
        return fetched[0].index - 1, 0, fetched, True

    def _on_fenced(self, name: str, promised_epoch: int) -> None:
        if not self._fenced:
            log.warning("fenced by %s: it promised epoch %d > ours %d", name, promised_epoch, self._core.epoch)
        self._fenced = True
        self._notify_progress()
        self._kick_all()

    # --- close --------------------------------------------------------------------
    async def close(self) -> None:
        """Stop the pipelines; pending appends fail with JournalUnavailable. Channels belong to the caller."""
        self._closed = True
        self._notify_progress()
        self._kick_all()
        for task in self._pipelines:
            task.cancel()
        await asyncio.gather(*self._pipelines, return_exceptions=True)
        self._pipelines = []
        for stream in self._streams.values():
            stream.reset()
