"""Journal writer core: the single writer's replication state, without I/O.

Theory of operation
-------------------
The writer (the adjudicator leader) owns an epoch won by fencing a quorum of replicas
(`quorumdb.quorum.Quorum`: 2 of 3 in a cluster of one region; in an active-active cluster a
majority of the regions, each counted by a majority of its own replicas). Its log is the log
of the best fenced replica (highest (last_epoch, last_index)): any entry that may have been
committed is on a quorum, any two quorums share a replica, so it is on at least one fenced
replica, and the best one holds it (Raft's election restriction). The writer then appends its
own ENTRY_LEADER entry at `leader_index`; committing it commits every earlier entry.

Every "2 of 3" below is `quorum.match(...)`: the highest value a quorum of replicas reached.
Commit, the lease and heartbeat confirmation stay correct with the regional rule for the same
reason they were with 2 of 3: whatever a quorum acknowledged, every later fencing quorum has
heard from at least one of those replicas.

* Indexes: `assign` gives entries consecutive indexes and the writer's epoch, in call
  order, and keeps them in a bounded buffer until committed and no longer needed.
* Per replica: `match_index` (highest index known to equal the writer's log there) and
  `next_index` (the next index to send). Each replica has one in-order pipeline in the
  shell; a dead or slow replica only stalls its own pipeline.
* Pipelining (Raft's): a pipeline keeps up to `depth` Appends in flight on its stream
  (limits.JOURNAL_APPEND_PIPELINE_DEPTH to a replica of another region, so a batch does not
  wait a WAN round trip for the previous message's reply; 1 within the region: lockstep). The
  stream delivers them in order and the replica (journal/service.py) applies and answers them
  in order, so replies match the messages in flight first in, first out.
  - `on_sent` records a message: next_index moves on optimistically to its to_index + 1, and
    what it carried (commit index, closed claim, heartbeat number) counts as sent for
    `has_work`, which so asks for another message only for something new: entries, a higher
    commit index, a newer closed claim or heartbeat. `can_send` also bounds the window.
  - A MISMATCH, or the stream failing, restarts the pipeline: next_index goes back (as
    `on_mismatch` says; after a failure to the first index this generation had in flight,
    which the lost messages never delivered), and the replica's `generation` goes up. Every
    message carries the generation it was planned in. A MISMATCH of an older generation is
    ignored: it answers a message sent optimistically behind the one whose MISMATCH already
    moved next_index back, and applying it too would move next_index back again (for
    nothing, and twice the backoff). An OK of an older generation is applied in full: the
    replica verified that its log equals the writer's up to that message's last index (log
    matching), holds it fsynced, and never loses it while this writer leads (a replica only
    replaces entries of another epoch, or drops a prefix that storage holds), so match_index
    may rise; it also granted that lease, took that commit index and claim, and acknowledged
    that heartbeat, all facts whatever the generation.
  - Entries no longer buffered (a fetch, `SendPlan.entries is None`) are sent only with
    nothing in flight: catch-up stays lockstep.
  - The lease counts, per message, from the clock's earliest time when THAT message was sent.
* Commit: the highest match index a quorum of replicas has fsynced, and
  only if it is at or above leader_index, i.e. an entry of this epoch (Raft's rule: an
  older epoch's entry is committed only indirectly).
* Mismatch: the replica's log differs at prev_index. Resend from further back:
  min(its last_index + 1, prev_index - 2^k + 1) after k consecutive mismatches, so long
  divergent suffixes are found in log(n) round trips. Entries no longer in the buffer
  are read (ReadEntries) from a replica whose match_index covers them, one of the
  writer's own region when one does (a read across the WAN costs a round trip of it).
* Hold (journal/core.py): replicas drop a committed prefix only up to the writer's
  hold_index. In a Global Database the region agent sets it; in an active-active cluster the
  writer computes it (`peer_regions` set): the lowest, over the peer regions, of the highest
  storage-durable index any replica of that region reported (AppendReply.durable_index). A
  replica of a peer region hears storage reports of its own region only, and a witness none,
  so without the hold a replica could drop entries the other peer's storage still needs.
  Every replica's first_index - 1 is covered by some hold ever sent (truncation stops at the
  hold; a replica that jumps restarts at its source's first_index), so the writer also raises
  its hold to any first_index - 1 it learns (fence tails, `source_truncated`): a new writer that
  cannot reach one peer region still lets a lagging witness jump over what the others dropped.
* Closed timestamp carried on every Append: the later of
    (ts of the entry at commit_index, commit_index) - committed, so every later leader
      assigns larger timestamps, and
    the last heartbeat's (closed_ts, last assigned index) once a quorum acked an
      Append sent after that heartbeat was requested. Acked by a quorum before any
      rival can fence a quorum, so the claim was made before any later leader took over.
      A leader claims at most its now().latest <= true time + 2 x clock error, and a new
      leader starts its timestamps above its own now().latest + 2 x clock error
      (adjudicator/service.py take_over): above every claim an older leader had confirmed.
  A claim asked for while another is being confirmed waits for it (merged with any other):
  each confirmation takes a round trip, and replacing the pending claim would starve it.
* Lease: a replica that acknowledges an Append with `lease_granted` refuses every fence until
  at least (this writer's clock's earliest time when it sent that Append) + lease_ns
  (journal/core.py). While a quorum holds such grants (`lease_until`, the end a quorum
  reached), no rival can fence a quorum, so a claim made before then is as safe as a confirmed one:
  it is published at once (carried by the next Appends) without waiting for a round trip of
  its own. Outside the lease the confirmation above is used.
  Entries not yet committed are never the basis of a closed timestamp: a new leader may
  replace them with earlier timestamps.
"""
from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Collection

from quorumdb import limits
from quorumdb.pb import common_pb2
from quorumdb.quorum import Quorum

JOURNAL_QUORUM = 2  # of 3 replicas (a cluster of one region)


@dataclasses.dataclass(frozen=True)
class ReplicaTail:
    """What a fenced replica reported."""
    name: str
    last_index: int
    last_epoch: int
    commit_index: int
    first_index: int


def best_tail(tails: list[ReplicaTail]) -> ReplicaTail:
    """The replica whose log every possibly-committed entry is in: highest (last_epoch, last_index)."""
    assert tails
    return max(tails, key=lambda tail: (tail.last_epoch, tail.last_index))


def quorum_match(match_indexes: list[int]) -> int:
    """The highest index held by 2 of the 3 replicas of a cluster of one region."""
    assert len(match_indexes) >= JOURNAL_QUORUM
    return sorted(match_indexes, reverse=True)[JOURNAL_QUORUM - 1]


class BufferFull(Exception):
    """Too many uncommitted entries: the replicas are not keeping up (or a majority is gone)."""


@dataclasses.dataclass
class ReplicaProgress:
    match_index: int = 0
    next_index: int = 1
    mismatches: int = 0  # consecutive MISMATCH replies
    sent_commit_index: int = 0  # commit index carried by the last OK Append
    acked_heartbeat: int = 0  # highest heartbeat number an OK Append was sent after
    sent_closed: tuple[int, int] = (0, 0)  # (closed_ts, closed_index) carried by the last OK Append
    lease_from: int = 0  # clock earliest at the send of the latest Append acked with a lease grant
    durable_index: int = 0  # highest storage-durable index the replica reported (AppendReply)
    # The pipeline (see "Pipelining" above):
    depth: int = 1  # most Appends in flight at once
    generation: int = 0  # raised when the pipeline restarts (a MISMATCH acted on, a failed stream)
    in_flight: collections.deque = dataclasses.field(default_factory=collections.deque)  # of InFlight
    # What the messages sent in this generation carried (in flight or acked): has_work sends
    # again only for something newer.
    queued_commit_index: int = 0
    queued_heartbeat: int = 0
    queued_closed: tuple[int, int] = (0, 0)


@dataclasses.dataclass(frozen=True)
class SendPlan:
    """What to send next to one replica. `entries is None`: fetch (from_index .. to_index) first."""
    prev_index: int
    prev_epoch: int | None  # None: unknown here, comes with the fetched entries
    entries: list[common_pb2.Entry] | None
    from_index: int
    to_index: int  # inclusive; from_index > to_index means no entries (a heartbeat)
    heartbeat: int
    generation: int = 0  # the replica's pipeline generation when planned
    jumped: bool = False  # fetched from a source that truncated what the replica misses (shell)


@dataclasses.dataclass(frozen=True)
class InFlight:
    """An Append sent and not yet answered: what it carried, and when (the lease counts from it)."""
    plan: SendPlan
    commit_sent: int
    closed_sent: tuple[int, int]
    sent_earliest: int


class WriterCore:
    def __init__(
        self,
        replicas: list[str],
        leader: str,
        epoch: int,
        best: ReplicaTail,
        commit_index: int,
        buffer_max: int = limits.WRITER_BUFFER_ENTRIES_MAX,
        tails: tuple[ReplicaTail, ...] | list[ReplicaTail] = (),
        lease_ns: int = limits.JOURNAL_LEASE_MS * 1_000_000,
        committed_bytes_max: int = limits.WRITER_BUFFER_COMMITTED_BYTES_MAX,
        copy_mode: bool = False,
        quorum: Quorum | None = None,
        region: str = "",
        peer_regions: tuple[str, ...] | list[str] | None = None,
        depths: dict[str, int] | None = None,
    ):
        """`quorum`: which replicas make a quorum (default: a majority of `replicas`); `region`:
        the writer's own region (sources for catch-up reads are preferred there); `peer_regions`:
        in an active-active cluster, the regions whose storage the hold waits for; `depths`: the
        most Appends in flight per replica (default 1: lockstep)."""
        self.quorum = quorum if quorum is not None else Quorum.single(replicas)
        assert sorted(self.quorum.replicas) == sorted(replicas), "the quorum is over the writer's replicas"
        assert best.name in replicas
        self.region = region
        self.peer_regions = tuple(peer_regions) if peer_regions is not None else None
        assert self.peer_regions is None or all(r in self.quorum.regions for r in self.peer_regions)
        assert commit_index <= best.last_index
        self.leader = leader
        self.epoch = epoch
        self.buffer_max = buffer_max
        self.committed_bytes_max = committed_bytes_max
        self.buffer_bytes = 0  # serialized size of the buffered entries
        self.lease_ns = lease_ns
        self.commit_index = commit_index
        # The buffer holds entries base_index + 1 .. last_index; base_epoch is the epoch at base_index.
        self.base_index = best.last_index
        self.base_epoch = best.last_epoch
        self.buffer: collections.deque[common_pb2.Entry] = collections.deque()
        self.leader_index = 0  # set by the first assign (the ENTRY_LEADER entry)
        self.last_ts = 0
        self.progress = {name: ReplicaProgress(next_index=best.last_index + 1, depth=max(1, (depths or {}).get(name, 1)))
                         for name in replicas}
        # A fenced replica whose log is shorter than the best one lags (the slowest of 3 when
        # the old leader died): resume it after its own last entry. Probing it from the best
        # tail instead would look like a gap at or below the storage-durable index, which a
        # replica answers by restarting its log there: a false truncation that costs every
        # follower of that replica its history (and in-flight transactions a TOO_OLD).
        for tail in tails:
            if tail.name in self.progress and tail.name != best.name and tail.last_index < best.last_index:
                self.progress[tail.name].next_index = max(1, tail.last_index + 1)
        self.progress[best.name].match_index = best.last_index
        self.heartbeat_number = 0
        self.pending_heartbeat: tuple[int, int, int] | None = None  # (number, closed_ts, closed_index)
        self.queued_heartbeat: tuple[int, int] = (0, 0)  # (closed_ts, closed_index) asked for meanwhile
        self.heartbeat_closed = (0, 0)  # confirmed (closed_ts, closed_index)
        self.commit_closed = (0, 0)  # (ts of the entry at commit_index, commit_index)
        # A secondary region's replication agent copies the primary's committed entries (same
        # index, epoch and ts: `assign_copied`): every entry it holds is already committed in
        # the primary's history, so it counts replicas for any entry (no leader entry of its
        # own), and it forwards the primary's closed-timestamp claims (`copied_closed`), which
        # are facts about that same history.
        self.copy_mode = copy_mode
        self.copied_closed = (0, 0)
        # Replicas keep every entry after hold_index: in a Global Database what secondaries have
        # replicated (set by the region agent), in an active-active cluster what the storage of
        # every peer region holds (`regional_hold`, recomputed on every reply).
        self.hold_index = 0
        if self.peer_regions is not None:
            # Every replica's truncated prefix is on the storage of every peer region (it was
            # dropped under a hold, or jumped over from a replica that had dropped it): a new
            # writer starts its hold there, and a witness that lags behind it can jump too.
            self.hold_index = max([best.first_index - 1] + [tail.first_index - 1 for tail in tails])

    # --- views ------------------------------------------------------------------
    @property
    def last_index(self) -> int:
        return self.base_index + len(self.buffer)

    def epoch_at(self, index: int) -> int | None:
        if index == 0:
            return 0
        if index == self.base_index:
            return self.base_epoch
        entry = self.buffered(index)
        return None if entry is None else entry.epoch

    def buffered(self, index: int) -> common_pb2.Entry | None:
        if self.base_index < index <= self.last_index:
            return self.buffer[index - self.base_index - 1]
        return None

    def closed(self) -> tuple[int, int]:
        """(closed_ts, closed_index) to carry on Appends."""
        return max(self.heartbeat_closed, self.commit_closed, self.copied_closed)

    @property
    def uncommitted(self) -> int:
        return self.last_index - self.commit_index

    # --- assigning entries --------------------------------------------------------
    def assign(self, entries: list[common_pb2.Entry]) -> list[common_pb2.Entry]:
        """Give entries their index and epoch, in order; they join the buffer."""
        if self.uncommitted + len(entries) > self.buffer_max:
            raise BufferFull(f"{self.uncommitted} uncommitted journal entries")
        assigned = []
        for entry in entries:
            assert entry.ts > self.last_ts, "entries must be strictly increasing in ts"
            record = common_pb2.Entry()
            record.CopyFrom(entry)
            record.index = self.last_index + 1
            record.epoch = self.epoch
            if self.leader_index == 0:
                assert record.kind == common_pb2.ENTRY_LEADER, "a writer's first entry is its ENTRY_LEADER"
                self.leader_index = record.index
            self.buffer.append(record)
            self.buffer_bytes += record.ByteSize()
            self.last_ts = record.ts
            assigned.append(record)
        self._evict()
        return assigned

    def assign_copied(self, entries: list[common_pb2.Entry]) -> list[common_pb2.Entry]:
        """Copy mode: append the primary's entries as they are (they must continue the log)."""
        assert self.copy_mode
        if self.uncommitted + len(entries) > self.buffer_max:
            raise BufferFull(f"{self.uncommitted} uncommitted journal entries")
        for entry in entries:
            assert entry.index == self.last_index + 1, f"copied entry {entry.index} after {self.last_index}"
            assert entry.ts > self.last_ts or self.last_ts == 0, "entries must be strictly increasing in ts"
            self.buffer.append(entry)
            self.buffer_bytes += entry.ByteSize()
            self.last_ts = entry.ts
        self._evict()
        return entries

    def copy_closed(self, closed_ts: int, closed_index: int) -> None:
        """Copy mode: the primary's claim (closed_ts, closed_index), published with the next Append."""
        assert self.copy_mode
        self.copied_closed = max(self.copied_closed, (closed_ts, closed_index))

    def _evict(self) -> None:
        """Drop the oldest committed entries beyond buffer_max entries or committed_bytes_max bytes
        (they can be read back from replicas)."""
        while self.base_index + 1 <= self.commit_index and (
                len(self.buffer) > self.buffer_max or self.buffer_bytes > self.committed_bytes_max):
            dropped = self.buffer.popleft()
            self.buffer_bytes -= dropped.ByteSize()
            self.base_index = dropped.index
            self.base_epoch = dropped.epoch

    # --- heartbeats ---------------------------------------------------------------
    def lease_until(self) -> int:
        """The clock time (a bound on true time) before which no rival can fence a majority."""
        ends = [p.lease_from + self.lease_ns if p.lease_from else 0 for p in self.progress.values()]
        return self.quorum.match(dict(zip(self.progress, ends)))

    def request_heartbeat(self, closed_ts: int, now_latest: int | None = None) -> int:
        """Record a heartbeat claim (closed_ts, last assigned index); returns its number.

        Made before lease_until (`now_latest`: the clock's latest when the claim was made), it is
        published at once, and its number is 0 (nothing to confirm). Otherwise, while an earlier
        claim is being confirmed, the new one waits (merged with any other waiting claim) and
        gets the next number once the earlier one is confirmed: replacing a claim before its
        confirmation would starve confirmation altogether when claims are asked for faster than
        a round trip to the replicas (reads asking for closed time)."""
        claim = (closed_ts, self.last_index)
        if now_latest is not None and now_latest < self.lease_until():
            self.heartbeat_closed = max(self.heartbeat_closed, claim)
            return 0
        if self.pending_heartbeat is not None:
            self.queued_heartbeat = max(self.queued_heartbeat, claim)
            return self.heartbeat_number + 1
        self.heartbeat_number += 1
        self.pending_heartbeat = (self.heartbeat_number, *claim)
        return self.heartbeat_number

    def heartbeat_confirmed(self, number: int) -> bool:
        acks = {name: p.acked_heartbeat for name, p in self.progress.items()}
        return self.quorum.match(acks) >= number

    # --- pipelines ----------------------------------------------------------------
    def has_work(self, replica: str) -> bool:
        """Something not yet sent (in this generation) to `replica`: entries, a higher commit
        index, a newer heartbeat or closed claim."""
        progress = self.progress[replica]
        return (
            progress.next_index <= self.last_index
            or max(progress.sent_commit_index, progress.queued_commit_index) < self.commit_index
            or max(progress.acked_heartbeat, progress.queued_heartbeat) < self.heartbeat_number
            # A confirmed closed timestamp goes out at once, not with the next heartbeat:
            # storage serves a read at ts only once it has heard that ts is closed.
            or max(progress.sent_closed, progress.queued_closed) < self.closed()
        )

    def can_send(self, replica: str) -> bool:
        """has_work, and the pipeline may send now: fewer than depth messages in flight, and none
        at all before a message whose entries must be fetched (catch-up stays lockstep)."""
        progress = self.progress[replica]
        if len(progress.in_flight) >= progress.depth or not self.has_work(replica):
            return False
        return not progress.in_flight or not self._needs_fetch(progress.next_index)

    def in_flight(self, replica: str) -> int:
        return len(self.progress[replica].in_flight)

    def _needs_fetch(self, from_index: int) -> bool:
        if from_index > self.last_index:
            return False
        return self.epoch_at(from_index - 1) is None or self.buffered(from_index) is None

    def on_sent(self, replica: str, plan: SendPlan, commit_sent: int, closed_sent: tuple[int, int] = (0, 0),
                sent_earliest: int = 0) -> InFlight:
        """The shell sent `plan` (as actually sent: after a fetch its prev/from/to indexes)
        carrying commit_sent and closed_sent, when the clock's earliest was sent_earliest. Its
        reply is the next after those of the messages already in flight."""
        progress = self.progress[replica]
        assert plan.generation == progress.generation, "planned before the pipeline restarted"
        assert len(progress.in_flight) < progress.depth, "the window is full"
        sent = InFlight(plan, commit_sent, closed_sent, sent_earliest)
        progress.in_flight.append(sent)
        progress.next_index = max(progress.next_index, plan.to_index + 1)
        progress.queued_commit_index = max(progress.queued_commit_index, commit_sent)
        progress.queued_heartbeat = max(progress.queued_heartbeat, plan.heartbeat)
        progress.queued_closed = max(progress.queued_closed, closed_sent)
        return sent

    def on_reply_ok(self, replica: str, match_index: int, lease_granted: bool = False,
                    durable_index: int = 0) -> bool:
        """The oldest message in flight was accepted (whatever its generation: see "Pipelining").
        Returns True if the commit index advanced."""
        sent = self.progress[replica].in_flight.popleft()
        return self.on_ok(replica, sent.plan, match_index, sent.commit_sent, sent.closed_sent,
                          sent.sent_earliest, lease_granted, durable_index)

    def on_reply_mismatch(self, replica: str, replica_last_index: int) -> SendPlan | None:
        """The oldest message in flight did not fit. Returns its plan when acted on (it is of the
        current generation: the pipeline restarts), None when it is older and ignored."""
        progress = self.progress[replica]
        sent = progress.in_flight.popleft()
        if sent.plan.generation != progress.generation:
            return None
        self.on_mismatch(replica, sent.plan, replica_last_index)
        return sent.plan

    def on_stream_failed(self, replica: str) -> None:
        """Every message in flight is lost (the stream broke, a reply did not come in time): the
        pipeline resends from the first index this generation had in flight (with one message
        at a time, exactly what it would have sent again without pipelining)."""
        progress = self.progress[replica]
        current = [sent.plan.from_index for sent in progress.in_flight if sent.plan.generation == progress.generation]
        if current:
            progress.next_index = max(min(current), progress.match_index + 1)
        progress.in_flight.clear()
        self._restart_pipeline(progress)

    @staticmethod
    def _restart_pipeline(progress: ReplicaProgress) -> None:
        progress.generation += 1
        progress.queued_commit_index = progress.sent_commit_index
        progress.queued_heartbeat = progress.acked_heartbeat
        progress.queued_closed = progress.sent_closed

    def plan(self, replica: str) -> SendPlan:
        progress = self.progress[replica]
        from_index = progress.next_index
        to_index = min(self.last_index, from_index + limits.ENTRIES_PER_MESSAGE_MAX - 1)
        prev_index = from_index - 1
        prev_epoch = self.epoch_at(prev_index)
        entries = None
        if from_index > to_index:
            entries = []
        elif prev_epoch is not None and self.buffered(from_index) is not None:
            entries = [self.buffered(i) for i in range(from_index, to_index + 1)]
        return SendPlan(prev_index, prev_epoch, entries, from_index, to_index, self.heartbeat_number,
                        progress.generation)

    def source_for(self, replica: str, to_index: int, avoid: Collection[str] = ()) -> str | None:
        """A replica other than `replica` whose log matches the writer's as far as possible up to
        to_index: one of the writer's own region when it covers as much as the best (a read
        across the WAN costs a round trip), else the one that matches furthest. Replicas in
        `avoid` (unreachable: a region cut off keeps its old match indexes) only when no other
        one matches at all."""
        others = [(name not in avoid, min(p.match_index, to_index), self._region_of(name) == self.region,
                   p.match_index, name)
                  for name, p in self.progress.items() if name != replica and p.match_index > 0]
        if not others:
            return None
        return max(others)[-1]

    def _region_of(self, replica: str) -> str:
        return self.quorum.region_of(replica)

    def source_truncated(self, index: int) -> None:
        """A catch-up source holds nothing at or below `index` (its first_index - 1)."""
        if self.peer_regions is not None:
            self.hold_index = max(self.hold_index, index)

    def on_ok(self, replica: str, plan: SendPlan, match_index: int, commit_sent: int,
              closed_sent: tuple[int, int] = (0, 0), sent_earliest: int = 0, lease_granted: bool = False,
              durable_index: int = 0) -> bool:
        """An Append was accepted (sent when the clock's earliest was sent_earliest; the replica
        says whether it granted a lease, and its storage-durable index). Returns True if the
        commit index advanced."""
        progress = self.progress[replica]
        if durable_index > progress.durable_index:
            progress.durable_index = durable_index
            if self.peer_regions is not None:
                self.hold_index = max(self.hold_index, regional_hold(
                    self.quorum, {name: p.durable_index for name, p in self.progress.items()}, self.peer_regions))
        if lease_granted:
            progress.lease_from = max(progress.lease_from, sent_earliest)
        progress.sent_closed = max(progress.sent_closed, closed_sent)
        progress.mismatches = 0
        progress.match_index = max(progress.match_index, match_index)
        progress.next_index = max(progress.next_index, match_index + 1)
        progress.sent_commit_index = max(progress.sent_commit_index, commit_sent)
        progress.acked_heartbeat = max(progress.acked_heartbeat, plan.heartbeat)
        self._confirm_heartbeat()
        return self._advance_commit()

    def on_mismatch(self, replica: str, plan: SendPlan, replica_last_index: int) -> None:
        """The replica's log differs at plan.prev_index: resend from further back, in a new
        generation (messages still in flight were planned past the mismatch)."""
        progress = self.progress[replica]
        step = 2 ** progress.mismatches
        progress.mismatches = min(progress.mismatches + 1, 62)
        progress.next_index = max(1, min(replica_last_index + 1, plan.prev_index + 1 - step))
        progress.match_index = min(progress.match_index, progress.next_index - 1)
        self._restart_pipeline(progress)

    def _confirm_heartbeat(self) -> None:
        if self.pending_heartbeat is None:
            return
        number, closed_ts, closed_index = self.pending_heartbeat
        if self.heartbeat_confirmed(number):
            self.heartbeat_closed = max(self.heartbeat_closed, (closed_ts, closed_index))
            self.pending_heartbeat = None
            if self.queued_heartbeat > self.heartbeat_closed:
                self.heartbeat_number += 1
                self.pending_heartbeat = (self.heartbeat_number, *self.queued_heartbeat)
            self.queued_heartbeat = (0, 0)

    def _advance_commit(self) -> bool:
        candidate = self.quorum.match({name: p.match_index for name, p in self.progress.items()})
        if candidate <= self.commit_index:
            return False
        if not self.copy_mode and (self.leader_index == 0 or candidate < self.leader_index):
            return False
        self.commit_index = candidate
        entry = self.buffered(candidate)
        assert entry is not None, "uncommitted entries stay buffered"
        self.commit_closed = max(self.commit_closed, (entry.ts, candidate))
        self._evict()
        return True


def regional_hold(quorum: Quorum, durable_by_replica: dict[str, int], peer_regions) -> int:
    """The index up to which the storage of every peer region holds the log: per peer region the
    highest storage-durable index any of its replicas reported (they all hear that region's
    storage), then the lowest of those. 0 until every peer region has reported."""
    return min((max(durable_by_replica.get(name, 0) for name in quorum.replicas_of(region))
                for region in peer_regions), default=0)


@dataclasses.dataclass(frozen=True)
class RegionVote:
    """Whether a region is voted in, as the leader sees it (NodeStatus.regions)."""
    name: str
    voted_in: bool
    match_index: int  # the highest index a majority of its replicas hold
    ack_age_ms: float  # since a majority of its replicas last acknowledged an Append (inf: never)
    kind: str = ""  # peer | witness


def region_votes(quorum: Quorum, match_by_replica: dict[str, int], ack_age_ms_by_replica: dict[str, float],
                 min_match: int, timeout_ms: float, kinds: dict[str, str] | None = None) -> list[RegionVote]:
    """Per region: voted in when a majority of its replicas acknowledged an Append within
    `timeout_ms` and hold at least `min_match` (the commit index a moment ago: a region that
    keeps acknowledging but cannot keep up with commits does not count). A replica never heard
    from has no age (inf)."""
    votes = []
    for region, replicas in quorum.groups:
        needed = quorum.needed_in(replicas)
        live = [name for name in replicas
                if ack_age_ms_by_replica.get(name, math.inf) <= timeout_ms
                and match_by_replica.get(name, 0) >= min_match]
        ages = sorted(ack_age_ms_by_replica.get(name, math.inf) for name in replicas)
        matches = sorted((match_by_replica.get(name, 0) for name in replicas), reverse=True)
        votes.append(RegionVote(region, len(live) >= needed, matches[needed - 1], ages[needed - 1],
                                (kinds or {}).get(region, "")))
    return votes
