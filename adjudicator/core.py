"""The adjudicator's conflict checker: optimistic concurrency control and commit timestamps.

Theory of operation
-------------------
QuorumDB runs snapshot isolation with first-committer-wins, as Aurora DSQL does. A
transaction reads at `start_ts` and buffers its writes; at COMMIT the adjudicator leader
gets `{start_ts, write keys, lock keys}` and must answer, in the order requests arrive:

  TOO_OLD    start_ts is older than the maximum transaction age (now - TXN_AGE_MAX_NS),
             or older than `known_since_ts`, the point before which this checker does not
             know every commit (the journal was truncated under it, or its table was
             garbage-collected there). Refusing is the only safe answer: a conflicting
             commit may exist that we cannot see.
  CONFLICT   some write key or lock key was committed by another transaction with
             commit_ts > start_ts (write-write conflict). Lock keys (SELECT ... FOR UPDATE)
             are checked but not recorded as written.
  COMMITTED  otherwise: commit_ts = max(now_latest, last_ts + 1, start_ts + 1), so commit
             timestamps are strictly increasing, greater than start_ts and not behind the
             clock; the write keys are recorded with commit_ts at once, so later requests
             of the same batch see them (the first committer of a batch wins).

State (all soft, rebuildable from the journal):
  last_commit    key -> (commit_ts, txn_id) of its latest commit, for commits younger than
                 the age horizon;
  last_ts        the highest timestamp assigned, applied or closed: every later commit_ts
                 is above it;
  known_since_ts every commit with commit_ts >= known_since_ts is in last_commit (if
                 younger than the horizon). A request with start_ts >= known_since_ts thus
                 sees every commit that could conflict with it (those have ts > start_ts).

Standbys call `apply_committed` with the journal's committed transactions (idempotent:
per key the max commit_ts wins, last_ts only grows), and `observe_closed` with closed
timestamps, so their table answers exactly as the leader's would. A leader calls
`close_timestamp` for each heartbeat: it returns a closed_ts and raises last_ts to it, so
every later commit_ts is above any closed timestamp already promised to storage.

Garbage collection: a deque of (commit_ts, key) in recording order. Each call pops at most
`gc_keys_per_call` items older than the horizon (now_latest - age) and deletes the key only
if its recorded commit_ts is that item's (a newer commit keeps it). known_since_ts is raised
to the horizon so that a clock going backwards (a new leader whose clock is behind) cannot
make a forgotten commit look absent. Items recorded out of commit_ts order (re-applied
entries) only delay collection, never make it unsafe.

A leader whose journal append failed cannot know which of its decisions became durable:
it drops the whole checker (`ConflictChecker()` anew) and rebuilds from the journal as a
standby. This module does no I/O and reads no clock: `now_latest` is passed in.

Backtrack
---------
A backtrack (rewinding the database in place to a time T, storage_node/core.py) is decided in
the same order as commits: a request with `backtrack_to_ts` set gets the next commit_ts b_ts
(no conflict check: it writes no keys of its own) and becomes an ENTRY_BACKTRACK. From then on
every request with start_ts < b_ts is refused (CONFLICT, 40001 at the client, with a message
saying why): it read the state the backtrack undid, and committing it would carry that state
past the rewind. The floor `backtrack_floor_ts` is raised by the leader's own decision and by
every committed ENTRY_BACKTRACK in `apply_committed`, so standbys and a rebuilt checker hold it
too. A checker that skipped the entry (journal truncated under it) has known_since_ts above
b_ts, so those requests get TOO_OLD instead: refused all the same.

Private keyspaces
-----------------
A bulk load or a table rewrite commits its rows ahead, in batches, under table ids that only
the catalog entry its transaction will commit names (compute_node/sql/bulk.py). Nobody else can
write or lock those keys before that catalog change commits, and whoever can afterwards started
after it, so after every batch: no request can conflict on them. A request flagged
`private_keyspace` is therefore decided as usual but its keys are not recorded in last_commit
(leader and standbys alike: the journal entry carries the flag), so a million-row load does not
hold a million entries for the age horizon. Its txn_id is recorded as any other.

Retries and the txn_id table
----------------------------
A compute node whose Commit RPC ends without a known outcome (an UNKNOWN reply, a
deadline, a connection broken after sending, a fenced leader) sends the SAME request again
(same txn_id, start_ts, writes) with `retry` set, to whoever leads now, until its deadline.
To answer such a resend without committing twice, the checker keeps
    txns   txn_id -> TxnRecord(commit_ts, index) for every commit it knows with
           commit_ts >= known_since_ts (the same horizon as last_commit). index is 0 while
           the commit is this leader's own decision whose journal append has not returned.
It is filled from two sources: the leader's own decisions (`_record`, index 0, then
`apply_committed` with the index once the append returns) and committed journal entries
(`apply_committed`), so a standby that becomes leader holds it too.

A request whose txn_id is in the table gets DUPLICATE (the original commit_ts and index;
the shell answers COMMITTED, flagged duplicate, or, for index 0, waits for the original's
append). Otherwise it is decided normally; except that a retry with start_ts <
known_since_ts gets UNKNOWN: its commit, if any, would have commit_ts > start_ts but may be
older than what this table knows, so "not in the table" proves nothing there.

Why "not in the table" means "never committed" (and deciding normally is safe): the
leader decides only after `begin_term(leader_index)`, i.e. once it has applied the journal
up to its own ENTRY_LEADER entry (asserted here). To write that entry it fenced a journal
majority with a higher epoch; from that moment no older leader can commit anything (a
commit needs 2 of 3 replicas, and 2 of 3 now refuse older epochs), and its log is the best
fenced log, which holds every entry that was or ever will be committed by an older leader
(any committed entry is on 2 of 3 replicas, so on a fenced one; entries not in the best log
were on a minority and are overwritten). Committing the leader entry commits all of them.
So after applying through leader_index, every commit an older leader ever acknowledged, or
ever can, is in `txns` (if younger than known_since_ts): a txn_id absent there never
committed and never will, and this leader may decide it afresh. Conversely a leader never
answers COMMITTED for something not in the journal: DUPLICATE with index > 0 comes from a
committed entry or an append that returned committed; index 0 waits for that append; a
fenced old leader's appends fail, so its answers are UNKNOWN, never COMMITTED.
"""
from __future__ import annotations

import collections
import dataclasses
import enum
from typing import Iterable, Sequence

from quorumdb import errors, limits


class Outcome(enum.Enum):
    COMMITTED = "committed"
    CONFLICT = "conflict"
    TOO_OLD = "too_old"
    DUPLICATE = "duplicate"  # txn_id already committed: commit_ts and index are the original's
    UNKNOWN = "unknown"  # a retry this checker cannot settle (its history is forgotten)


@dataclasses.dataclass(frozen=True, slots=True)
class TxnRequest:
    """One commit request as the checker sees it (no values: only keys matter)."""

    start_ts: int
    write_keys: tuple[bytes, ...]
    lock_keys: tuple[bytes, ...] = ()
    txn_id: str = ""
    retry: bool = False  # a resend of a request whose outcome the sender does not know
    # Writes only into a keyspace private to the transaction (see "Private keyspaces" above):
    # checked as usual, but its keys are not recorded.
    private_keyspace: bool = False
    # A backtrack request (see "Backtrack" above): the time to rewind to; no keys.
    backtrack_to_ts: int | None = None
    # A Global Database marker (adjudicator/region_core.py): (global_epoch, primary region,
    # promotion_index); no keys. It takes the next commit_ts like a backtrack.
    global_marker: tuple[int, str, int] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    commit_ts: int = 0  # COMMITTED and DUPLICATE
    conflict_key: bytes = b""  # CONFLICT only
    message: str = ""
    index: int = 0  # DUPLICATE: the original's journal index (0: its append is still in flight)


@dataclasses.dataclass(frozen=True, slots=True)
class TxnRecord:
    """A known commit of one txn_id. index 0: this leader's decision, append in flight."""

    commit_ts: int
    index: int


@dataclasses.dataclass(frozen=True, slots=True)
class CommittedTxn:
    """A committed journal entry as the checker needs it. A leader entry has no keys."""

    commit_ts: int
    write_keys: tuple[bytes, ...]
    txn_id: str = ""
    index: int = 0  # journal index (0: not known to the caller)
    private_keyspace: bool = False  # TxnRequest.private_keyspace: its keys are not recorded
    backtrack_to_ts: int | None = None  # an ENTRY_BACKTRACK (no keys): raises the backtrack floor


class ConflictChecker:
    def __init__(
        self,
        txn_age_max_ns: int = limits.TXN_AGE_MAX_NS,
        gc_keys_per_call: int = limits.ADJUDICATOR_GC_KEYS_PER_CALL,
        start_ts_ahead_max_ns: int = limits.START_TS_AHEAD_MAX_NS,
    ):
        assert txn_age_max_ns > 0
        assert gc_keys_per_call > 0
        self.txn_age_max_ns = txn_age_max_ns
        self.gc_keys_per_call = gc_keys_per_call
        self.start_ts_ahead_max_ns = start_ts_ahead_max_ns
        self.last_commit: dict[bytes, tuple[int, str]] = {}
        self._gc_queue: collections.deque[tuple[int, bytes]] = collections.deque()
        self.last_ts = 0
        self.known_since_ts = 0
        self.txns: dict[str, TxnRecord] = {}
        self._txn_gc_queue: collections.deque[tuple[int, str]] = collections.deque()
        self.applied_index = 0  # highest journal index passed to apply_committed
        self.term_leader_index = 0  # set by begin_term: this checker decides for a leader
        self.backtrack_floor_ts = 0  # b_ts of the newest backtrack: older start_ts never commit
        self.backtrack_to_ts = 0     # the time that backtrack rewound to (for the message)

    # --- leader ---------------------------------------------------------------
    def begin_term(self, leader_index: int) -> None:
        """This checker now decides for the leader whose ENTRY_LEADER is at leader_index.

        Only once the journal is applied through that entry (see "Retries" above)."""
        assert leader_index > 0
        assert self.applied_index >= leader_index, "a leader decides only after applying its leader entry"
        self.term_leader_index = leader_index

    def decide_batch(self, requests: Sequence[TxnRequest], now_latest: int) -> list[Decision]:
        """Decide each request in order; COMMITTED ones are recorded before the next is checked."""
        self.collect_garbage(now_latest)
        return [self._decide(request, now_latest) for request in requests]

    def _decide(self, request: TxnRequest, now_latest: int) -> Decision:
        if request.backtrack_to_ts is not None:
            commit_ts = max(now_latest, self.last_ts + 1)
            self._record(commit_ts, (), "")
            self._raise_backtrack_floor(commit_ts, request.backtrack_to_ts)
            return Decision(Outcome.COMMITTED, commit_ts=commit_ts)
        if request.global_marker is not None:
            commit_ts = max(now_latest, self.last_ts + 1)
            self._record(commit_ts, (), "")
            return Decision(Outcome.COMMITTED, commit_ts=commit_ts)
        start_ts = request.start_ts
        known = self.txns.get(request.txn_id) if request.txn_id else None
        if known is not None:
            return Decision(Outcome.DUPLICATE, commit_ts=known.commit_ts, index=known.index,
                            message=f"transaction {request.txn_id} was already committed")
        if request.retry:
            assert self.term_leader_index > 0, "retries are answered only by a caught-up leader"
            if start_ts < self.known_since_ts:
                return Decision(
                    Outcome.UNKNOWN,
                    message=f"cannot tell whether transaction {request.txn_id} committed: this adjudicator "
                    f"knows commits only from {self.known_since_ts} on, and start_ts is {start_ts}",
                )
        if start_ts < self.backtrack_floor_ts:
            return Decision(
                Outcome.CONFLICT,
                message=errors.started_before_backtrack_message(self.backtrack_to_ts, self.backtrack_floor_ts),
            )
        age_horizon_ts = now_latest - self.txn_age_max_ns
        if start_ts < age_horizon_ts:
            return Decision(
                Outcome.TOO_OLD,
                message=f"transaction too old: start_ts {start_ts} is more than "
                f"{self.txn_age_max_ns // 1_000_000_000} s behind the adjudicator clock",
            )
        if start_ts < self.known_since_ts:
            return Decision(
                Outcome.TOO_OLD,
                message=f"transaction too old: start_ts {start_ts} is before {self.known_since_ts}, "
                "the oldest commit this adjudicator knows",
            )
        if start_ts > now_latest + self.start_ts_ahead_max_ns:
            return Decision(
                Outcome.TOO_OLD,
                message=f"start_ts {start_ts} is ahead of the adjudicator clock ({now_latest}) "
                "by more than the allowed clock error; the client's clock is broken",
            )
        conflict = self._first_conflict(request)
        if conflict is not None:
            key, other_commit_ts, other_txn_id = conflict
            return Decision(
                Outcome.CONFLICT,
                conflict_key=key,
                message=f"change conflicts with another transaction, please retry: ({errors.DSQL_WRITE_CONFLICT}) "
                f"key {key!r} was committed at {other_commit_ts} by {other_txn_id or 'another transaction'} "
                f"after start_ts {start_ts}",
            )
        commit_ts = max(now_latest, self.last_ts + 1, start_ts + 1)
        self._record(commit_ts, () if request.private_keyspace else request.write_keys, request.txn_id)
        assert commit_ts > start_ts
        return Decision(Outcome.COMMITTED, commit_ts=commit_ts)

    def record_appended(self, txn_id: str, commit_ts: int, index: int) -> None:
        """The leader's append of its decision for txn_id returned committed at index."""
        assert index > 0
        if not txn_id:
            return
        known = self.txns.get(txn_id)
        assert known is not None and known.commit_ts == commit_ts, "only this leader's own decisions"
        self.txns[txn_id] = TxnRecord(commit_ts, index)

    def lookup(self, txn_id: str) -> TxnRecord | None:
        return self.txns.get(txn_id) if txn_id else None

    def _first_conflict(self, request: TxnRequest) -> tuple[bytes, int, str] | None:
        for keys in (request.write_keys, request.lock_keys):
            for key in keys:
                last = self.last_commit.get(key)
                if last is not None and last[0] > request.start_ts:
                    return key, last[0], last[1]
        return None

    def _record(self, commit_ts: int, write_keys: Iterable[bytes], txn_id: str) -> None:
        assert commit_ts > self.last_ts, "commit timestamps strictly increase"
        self.last_ts = commit_ts
        for key in write_keys:
            self.last_commit[key] = (commit_ts, txn_id)
            self._gc_queue.append((commit_ts, key))
        if txn_id:
            assert txn_id not in self.txns, "a known txn_id is answered DUPLICATE, never decided again"
            self.txns[txn_id] = TxnRecord(commit_ts, 0)
            self._txn_gc_queue.append((commit_ts, txn_id))

    def _raise_backtrack_floor(self, backtrack_ts: int, to_ts: int) -> None:
        if backtrack_ts > self.backtrack_floor_ts:
            self.backtrack_floor_ts = backtrack_ts
            self.backtrack_to_ts = to_ts

    def close_timestamp(self, now_latest: int) -> int:
        """A closed_ts for a heartbeat: every later commit_ts will be above it."""
        closed_ts = max(now_latest, self.last_ts)
        self.last_ts = closed_ts
        return closed_ts

    # --- standby --------------------------------------------------------------
    def apply_committed(self, txns: Iterable[CommittedTxn]) -> None:
        """Apply committed journal entries (idempotent; entries may repeat or come late)."""
        for txn in txns:
            self.last_ts = max(self.last_ts, txn.commit_ts)
            self.applied_index = max(self.applied_index, txn.index)
            if txn.backtrack_to_ts is not None:
                self._raise_backtrack_floor(txn.commit_ts, txn.backtrack_to_ts)
                continue
            if txn.commit_ts < self.known_since_ts:
                continue  # no request we still accept can conflict with it
            if txn.txn_id:
                self._apply_txn_id(txn)
            if txn.private_keyspace:
                continue
            for key in txn.write_keys:
                last = self.last_commit.get(key)
                if last is None or last[0] < txn.commit_ts:
                    self.last_commit[key] = (txn.commit_ts, txn.txn_id)
                    self._gc_queue.append((txn.commit_ts, key))

    def _apply_txn_id(self, txn: CommittedTxn) -> None:
        known = self.txns.get(txn.txn_id)
        if known is None:
            self.txns[txn.txn_id] = TxnRecord(txn.commit_ts, txn.index)
            self._txn_gc_queue.append((txn.commit_ts, txn.txn_id))
            return
        if known.commit_ts == txn.commit_ts:
            if known.index == 0 and txn.index:
                self.txns[txn.txn_id] = TxnRecord(known.commit_ts, txn.index)
            return
        # A txn_id reused by a client after the horizon (never within it: that is a DUPLICATE).
        if txn.commit_ts > known.commit_ts:
            self.txns[txn.txn_id] = TxnRecord(txn.commit_ts, txn.index)
            self._txn_gc_queue.append((txn.commit_ts, txn.txn_id))

    def observe_closed(self, closed_ts: int) -> None:
        """A closed timestamp seen in the journal (or a new journal's last_ts): stay above it."""
        self.last_ts = max(self.last_ts, closed_ts)

    def forget_before(self, ts: int) -> None:
        """Commits before ts may be unknown to this checker (the journal skipped them)."""
        self.known_since_ts = max(self.known_since_ts, ts)

    # --- memory bound ---------------------------------------------------------
    def collect_garbage(self, now_latest: int) -> int:
        """Forget commits older than the age horizon; at most gc_keys_per_call items. Returns items popped."""
        horizon_ts = now_latest - self.txn_age_max_ns
        if horizon_ts <= 0:
            return 0
        self.forget_before(horizon_ts)
        popped = 0
        queue = self._gc_queue
        while queue and popped < self.gc_keys_per_call and queue[0][0] < horizon_ts:
            commit_ts, key = queue.popleft()
            popped += 1
            last = self.last_commit.get(key)
            if last is not None and last[0] == commit_ts:
                del self.last_commit[key]
        txn_queue = self._txn_gc_queue
        while txn_queue and popped < self.gc_keys_per_call and txn_queue[0][0] < horizon_ts:
            commit_ts, txn_id = txn_queue.popleft()
            popped += 1
            known = self.txns.get(txn_id)
            if known is not None and known.commit_ts == commit_ts:
                del self.txns[txn_id]
        return popped

    # --- introspection (status, tests) ------------------------------------------
    def last_commit_ts(self, key: bytes) -> int | None:
        last = self.last_commit.get(key)
        return None if last is None else last[0]

    @property
    def tracked_keys(self) -> int:
        return len(self.last_commit)
