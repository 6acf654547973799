"""Journal replica core: the replication state of one journal replica, without I/O.

Theory of operation
-------------------
A replica holds a log of entries `first_index .. last_index` (entries below
`first_index` were truncated because 4 of 6 storage copies hold them), the
highest epoch it has promised, and the highest index it knows committed.

* Fence(epoch): a candidate writer asks the replica to refuse every older epoch.
  Accepted iff `epoch > promised_epoch` (strict: two candidates with the same
  epoch cannot both win a majority). The promise must be on disk before the reply.
* Append(epoch, prev_index, prev_epoch, entries, commit_index, closed): refused
  (FENCED) below the promised epoch; a higher epoch is adopted (and persisted).
  Raft's log matching: the append fits if prev_index == 0, or prev_index is below
  first_index (truncated entries were committed, so they match any leader), or the
  local entry at prev_index has prev_epoch. Otherwise MISMATCH with last_index, and
  the writer resends from further back. On a fit, an incoming entry whose index is
  held locally with another epoch truncates the local suffix from there (that suffix
  was never committed: the leader's log wins); the rest is appended and fsynced.
  Then `commit_index = max(commit_index, min(req.commit_index, match_index))`: a
  replica only marks committed what it has verified against this leader.
  Special case (storage catch-up): when the append does not fit but prev_index is at
  or below the storage-durable index this replica knows, the replica drops its whole
  log and restarts it right after prev_index. Everything up to there is on 4 of 6
  storage copies, and this is how a replica that was down longer than the journal's
  retention rejoins (the writer can no longer find the entries it misses).
* Subscribe reads committed entries (`index <= commit_index`) on demand.
* ReportScl: durable_index = 4th highest SCL among the 6 storage nodes (0 while fewer
  than 4 reported). The prefix up to min(durable_index, commit_index) may be dropped;
  the core rounds down to whole segments (the cluster's journal_segment_entries) so the
  store deletes whole files. Each node's *latest* report counts, even when it is lower
  than before: a storage node whose data directory was wiped comes back with SCL 0 and
  must not keep counting as a holder of what it lost while it rebuilds. A node that is
  down keeps its last report, which is still true of its disk, so while 3 copies are
  down the 4th highest SCL is stuck at the best of theirs: truncation pauses until
  enough copies are complete again. durable_index itself never goes back (entries
  already dropped stay dropped).
* Hold (Global Database, docs/REGIONS.md): in a region of a global database the writer's
  Appends carry hold_index, the index secondaries have replicated; the prefix dropped never
  reaches past it, and a replica that has heard none since it started drops nothing.
  In an active-active cluster (docs/ACTIVE_ACTIVE.md) the hold is the index the storage of
  every peer region holds (journal/writer_core.py `regional_hold`): a replica of a peer region
  hears storage reports of its own region only, so it drops up to min(its durable index, the
  hold). A witness replica (`witness`: its region has no storage) hears no reports at all: the
  hold is its durable index (everything up to it is on 4 of 6 copies in every peer region),
  so it drops up to the hold alone. The storage catch-up restart (above) is bounded by the
  hold too (`active_active`): a gap at or below the replica's own region's durable index is
  not enough, since the other peer's storage may lag behind it, and a log that restarts there
  would be a prefix dropped that the other region never stored. So in an active-active cluster
  every replica's first_index - 1 is at or below some hold a writer sent, i.e. stored in every
  peer region (which lets a new writer take it as a hold, journal/writer_core.py). Holds are
  facts about storage, so a replica keeps the highest it has heard. A hold that raises what may
  be dropped is acted on at once (`truncate_to_hold`), not only at the next storage report.
* Closed timestamp: (closed_ts, closed_index) from the newest valid Append (highest
  closed_ts wins): every transaction with commit_ts <= closed_ts has index <=
  closed_index. Followers may use it once they hold closed_index.
* Lease (what lets the writer publish closed-timestamp claims without confirming each
  one, journal/writer_core.py): an OK Append of the promised epoch *grants* a lease: the
  replica promises to refuse every Fence until its clock's earliest time reaches the
  append's arrival (latest) + lease_ns. So while 2 replicas hold grants, no rival can
  fence a majority, and the writer knows until when from its own send times. A refused
  Fence tells the candidate when to retry, and stops further grants for lease_ns x 2, so
  a live leader cannot keep a candidate out forever (its lease runs out, then the fence
  wins). A restarted replica has forgotten its grants: it refuses fences for lease_ns
  after it starts (`started`), which covers any grant it made before it stopped.

The core keeps every entry since first_index in memory (bounded by truncation) as
`quorumdb.pb.common_pb2.Entry` records: they are the unit stored on disk and sent on
the wire, so converting them would only cost time. Methods mutate the state and
return the effects the shell must persist, in this order, before replying:
reset (drop all entries) -> suffix truncation -> appended entries (+ fsync) -> meta.
"""
from __future__ import annotations

import dataclasses
import enum

from quorumdb import limits
from quorumdb.pb import common_pb2

STORAGE_WRITE_QUORUM = 4  # 4 of 6 copies (Aurora)


class AppendStatus(enum.Enum):
    OK = "ok"
    FENCED = "fenced"
    MISMATCH = "mismatch"


@dataclasses.dataclass(frozen=True)
class Meta:
    """What the replica must remember across restarts besides the entries."""
    promised_epoch: int = 0
    first_index: int = 1
    base_epoch: int = 0  # epoch of the entry at first_index - 1 (0 if unknown)
    commit_index: int = 0


@dataclasses.dataclass(frozen=True)
class FenceResult:
    ok: bool
    promised_epoch: int
    last_index: int
    last_epoch: int
    commit_index: int
    first_index: int
    meta_changed: bool
    retry_after_ns: int = 0  # refused for a lease: when a retry may win (0: not for a lease)


@dataclasses.dataclass
class AppendResult:
    status: AppendStatus
    promised_epoch: int
    last_index: int
    match_index: int = 0
    lease_granted: bool = False  # this OK append grants the writer a lease (see the docstring)
    # Effects, in order:
    reset: bool = False  # drop every local entry (the log restarts at first_index)
    truncate_from: int | None = None  # drop local entries with index >= truncate_from
    appended: list[common_pb2.Entry] = dataclasses.field(default_factory=list)
    meta_changed: bool = False

    @property
    def needs_disk(self) -> bool:
        return self.reset or self.truncate_from is not None or bool(self.appended) or self.meta_changed


@dataclasses.dataclass(frozen=True)
class SclResult:
    durable_index: int
    first_index: int
    truncate_before: int | None  # new first_index: drop entries below it (whole segments)


class ReplicaCore:
    def __init__(
        self,
        storage_nodes: list[str],
        meta: Meta = Meta(),
        entries: list[common_pb2.Entry] | None = None,
        segment_entries: int = limits.JOURNAL_SEGMENT_ENTRIES,
        lease_ns: int = limits.JOURNAL_LEASE_MS * 1_000_000,
        hold_required: bool = False,
        witness: bool = False,
        active_active: bool = False,
    ):
        assert segment_entries > 0
        assert not (witness and storage_nodes), "a witness region has no storage"
        assert active_active or not witness, "a witness is a region of an active-active cluster"
        assert hold_required or not active_active, "an active-active cluster's replicas drop by the hold"
        self.witness = witness
        self.active_active = active_active
        # A region of a Global Database keeps every entry after the writer's hold_index (what
        # secondaries have not replicated yet); until a writer has said it, nothing is dropped.
        self.hold_required = hold_required
        self.hold_index = 0
        assert lease_ns >= 0
        self.lease_ns = lease_ns
        self.lease_until = 0     # fences are refused while now().earliest < lease_until
        self.grants_paused_until = 0  # after refusing a fence: no new grants until then
        self.storage_nodes = frozenset(storage_nodes)
        self.segment_entries = segment_entries
        self.promised_epoch = meta.promised_epoch
        self.first_index = meta.first_index
        self.base_epoch = meta.base_epoch
        self.entries: list[common_pb2.Entry] = list(entries or [])
        for offset, entry in enumerate(self.entries):
            assert entry.index == self.first_index + offset, "entries must be consecutive from first_index"
        # A crash may have lost unsynced entries; never claim more committed than held.
        self.commit_index = min(meta.commit_index, self.last_index)
        self.leader_epoch = 0
        self.leader = ""
        self.closed_ts = 0
        self.closed_index = 0
        self.scl_by_node: dict[str, int] = {}
        self.durable_index = 0

    # --- views ------------------------------------------------------------------
    @property
    def last_index(self) -> int:
        return self.first_index + len(self.entries) - 1

    @property
    def last_epoch(self) -> int:
        return self.entries[-1].epoch if self.entries else self.base_epoch

    def meta(self) -> Meta:
        return Meta(self.promised_epoch, self.first_index, self.base_epoch, self.commit_index)

    def entry(self, index: int) -> common_pb2.Entry | None:
        if index < self.first_index or index > self.last_index:
            return None
        return self.entries[index - self.first_index]

    def epoch_at(self, index: int) -> int | None:
        """Epoch of the entry at index; base_epoch just below first_index; None if not held."""
        if index == self.first_index - 1:
            return self.base_epoch
        entry = self.entry(index)
        return None if entry is None else entry.epoch

    def read(self, from_index: int, max_entries: int) -> list[common_pb2.Entry]:
        """Local entries from from_index (committed or not), at most max_entries."""
        start = max(from_index, self.first_index)
        end = min(self.last_index, start + max_entries - 1)
        return self.entries[start - self.first_index:end - self.first_index + 1]

    def read_committed(self, from_index: int, max_entries: int) -> list[common_pb2.Entry]:
        """Committed entries from exactly from_index (empty if none yet or truncated)."""
        if from_index < self.first_index:
            return []
        end = min(self.commit_index, from_index + max_entries - 1)
        return self.entries[from_index - self.first_index:end - self.first_index + 1]

    # --- Fence ------------------------------------------------------------------
    def started(self, now_latest: int) -> None:
        """The replica (re)starts: grants made before are forgotten, so refuse fences as if one
        was just made."""
        self.lease_until = max(self.lease_until, now_latest + self.lease_ns)

    def fence(self, epoch: int, candidate: str, now: tuple[int, int] | None = None) -> FenceResult:
        """`now`: the replica clock's (earliest, latest); None leaves leases out (unit tests)."""
        earliest, latest = now if now is not None else (0, 0)
        leased = now is not None and epoch > self.promised_epoch and earliest < self.lease_until
        if leased:  # a lease is out: refuse, and grant no more so that the retry can win
            self.grants_paused_until = max(self.grants_paused_until, latest + 2 * self.lease_ns)
        ok = epoch > self.promised_epoch and not leased
        if ok:
            self.promised_epoch = epoch
        return FenceResult(
            ok=ok,
            promised_epoch=self.promised_epoch,
            last_index=self.last_index,
            last_epoch=self.last_epoch,
            commit_index=self.commit_index,
            first_index=self.first_index,
            meta_changed=ok,
            retry_after_ns=self.lease_until - earliest + 1 if leased else 0,
        )

    # --- Append -----------------------------------------------------------------
    def append(
        self,
        epoch: int,
        leader: str,
        prev_index: int,
        prev_epoch: int,
        entries: list[common_pb2.Entry],
        commit_index: int,
        closed_ts: int,
        closed_index: int,
        now: tuple[int, int] | None = None,
        hold_index: int = 0,
    ) -> AppendResult:
        """`now`: the replica clock's (earliest, latest) when the append arrived; None grants no
        lease (unit tests)."""
        if epoch < self.promised_epoch:
            return AppendResult(AppendStatus.FENCED, self.promised_epoch, self.last_index)
        _check_incoming(prev_index, entries)
        result = AppendResult(AppendStatus.OK, epoch, self.last_index)
        if hold_index:
            # Active-active: a fact about storage (durable in every peer region), true whatever
            # the epoch: taken before the fit check so a replica that lagged past it can restart.
            self.hold_index = max(self.hold_index, hold_index) if self.active_active else hold_index
            if self.witness:
                self.durable_index = max(self.durable_index, hold_index)
        if epoch > self.promised_epoch:
            self.promised_epoch = epoch
            result.meta_changed = True
        if not self._fits(prev_index, prev_epoch):
            if not (entries and prev_index <= self._restart_limit()):
                result.status = AppendStatus.MISMATCH
                result.last_index = self.last_index
                return result
            self._reset_after(prev_index, prev_epoch)
            result.reset = True
            result.meta_changed = True
        self._take_entries(prev_index, entries, result)
        match_index = prev_index + len(entries)
        new_commit = max(self.commit_index, min(commit_index, match_index))
        assert new_commit <= self.last_index
        self.commit_index = new_commit
        self.leader_epoch = epoch
        self.leader = leader
        if closed_ts > self.closed_ts:
            self.closed_ts = closed_ts
            self.closed_index = closed_index
        result.promised_epoch = self.promised_epoch
        result.last_index = self.last_index
        result.match_index = match_index
        if now is not None and self.lease_ns and now[1] >= self.grants_paused_until:
            self.lease_until = max(self.lease_until, now[1] + self.lease_ns)
            result.lease_granted = True
        return result

    def _restart_limit(self) -> int:
        """The highest prev_index after which the log may restart (everything up to it stored)."""
        if self.active_active:
            return min(self.durable_index, self.hold_index)
        return self.durable_index

    def _fits(self, prev_index: int, prev_epoch: int) -> bool:
        if prev_index == 0 or prev_index < self.first_index:
            return True
        local_epoch = self.epoch_at(prev_index)
        return local_epoch is not None and local_epoch == prev_epoch

    def _reset_after(self, prev_index: int, prev_epoch: int) -> None:
        assert prev_index <= self._restart_limit()
        assert prev_index >= self.commit_index, "a mismatching entry is never committed"
        self.entries = []
        self.first_index = prev_index + 1
        self.base_epoch = prev_epoch
        self.commit_index = prev_index

    def _take_entries(self, prev_index: int, entries: list[common_pb2.Entry], result: AppendResult) -> None:
        for position, entry in enumerate(entries):
            if entry.index < self.first_index:
                continue  # truncated here, so committed: it matches
            local_epoch = self.epoch_at(entry.index) if entry.index <= self.last_index else None
            if local_epoch == entry.epoch:
                continue  # already held
            if local_epoch is not None:
                assert entry.index > self.commit_index, "a committed entry can never be replaced"
                del self.entries[entry.index - self.first_index:]
                result.truncate_from = entry.index
            new_entries = entries[position:]
            assert new_entries[0].index == self.last_index + 1
            self.entries.extend(new_entries)
            result.appended = list(new_entries)
            return

    # --- ReportScl --------------------------------------------------------------
    def report_scl(self, node: str, scl: int) -> SclResult:
        if node in self.storage_nodes:
            self.scl_by_node[node] = scl  # the latest report, even if lower (see the module docstring)
            self.durable_index = max(self.durable_index, storage_durable_index(self.scl_by_node))
        return SclResult(self.durable_index, self.first_index, self._truncate_prefix())

    def truncate_to_hold(self) -> int | None:
        """After an Append: drop what the hold (and, but for a witness, the storage reports)
        now allow. The new first_index, or None when nothing is dropped."""
        if not self.hold_required:
            return None  # without a hold only storage reports move truncation
        return self._truncate_prefix()

    def _truncate_prefix(self) -> int | None:
        keep_from = min(self.durable_index, self.commit_index) + 1
        if self.hold_required:
            keep_from = min(keep_from, self.hold_index + 1)
        # Round down to a segment boundary: whole segment files are deleted.
        new_first = ((keep_from - 1) // self.segment_entries) * self.segment_entries + 1
        if new_first <= self.first_index:
            return None
        assert new_first <= self.last_index + 1
        self.base_epoch = self.entries[new_first - 1 - self.first_index].epoch
        del self.entries[:new_first - self.first_index]
        self.first_index = new_first
        return new_first


def storage_durable_index(scl_by_node: dict[str, int]) -> int:
    """The 4th highest SCL (4 of 6 copies hold everything up to it); 0 with fewer than 4."""
    scls = sorted(scl_by_node.values(), reverse=True)
    if len(scls) < STORAGE_WRITE_QUORUM:
        return 0
    return scls[STORAGE_WRITE_QUORUM - 1]


class BadAppend(ValueError):
    """A malformed Append (entries not consecutive after prev_index): the writer has a bug."""


def _check_incoming(prev_index: int, entries: list[common_pb2.Entry]) -> None:
    expected = prev_index + 1
    for entry in entries:
        if entry.index != expected:
            raise BadAppend(f"append entries must follow prev_index: entry {entry.index}, expected {expected}")
        expected += 1
