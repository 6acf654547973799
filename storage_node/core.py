"""The storage segment: a log-structured MVCC key-value index fed by the journal (pure, no I/O).

Theory of operation
-------------------
A storage node holds one segment of the protection group. Its only input is the
journal: committed entries, in strictly increasing index and ts order, plus closed
timestamps carried by heartbeats. The shell (storage_node/main.py) appends every
entry to the local segment log and fsyncs it *before* handing it to `Segment.apply`,
so whatever the core has applied is durable locally.

Versions. For every key the segment keeps its versions sorted by commit_ts; a
version is a value or a tombstone (a delete). An ENTRY_TXN entry's ts is the
commit_ts of all of its writes. Entries arrive in ts order, so a new version is
always the newest of its key and appending keeps the list sorted. A sorted list of
all keys (bisect) serves range scans in key order.

Reads. `get(key, ts)` returns the newest version with commit_ts <= ts;
`scan(start, end, ts, limit)` walks the key index from `start` and returns the live
(non-tombstone) versions at ts. A read at ts is only *right* once every commit with
commit_ts <= ts has been applied; `can_serve(ts)` says whether that is so, and the
shell waits (bounded) until it is before calling get/scan.

Closed time. `closed_ts` is a timestamp such that every commit with ts <= closed_ts
has been applied here. Two sources raise it:
  * the ts of the last applied entry: entries are strictly increasing in ts, so any
    entry not yet applied has a larger ts;
  * a heartbeat (closed_ts, closed_index) from the journal stream, which promises
    "every commit with ts <= closed_ts has index <= closed_index": it becomes usable
    only once applied_index >= closed_index. Earlier heartbeats wait in a small,
    bounded pending list.

Complete point (SCL). The highest index with no hole below it. The segment applies
strictly consecutive entries (asserted), and the shell makes them durable before
applying, so SCL == applied_index.

Garbage collection. `gc_step(horizon_ts, keys_max)` drops versions no read at
ts >= horizon can see: for each key it keeps the newest version at or below the
horizon and everything above it; a key whose only remaining version is a tombstone
at or below the horizon is forgotten altogether (a later read then reports it as
missing, version_ts 0, rather than deleted at its tombstone's ts). Work per call is bounded by
`keys_max`; a cursor continues the sweep on the next call. Reads at ts < horizon
would be wrong afterwards, so `readiness(ts)` reports them as TOO_OLD and
`get`/`scan` raise ReadBelowHorizon.

Backtrack. An ENTRY_BACKTRACK record (ts = b_ts, backtrack_to_ts = T) rewinds the segment in
place, deterministically from its MVCC history: for every key whose newest version is newer than
T, it adds a version at b_ts holding what a read at T sees (a tombstone if nothing). So every
read at ts >= b_ts sees the state at T, reads below b_ts still see the old history, and a later
backtrack may move forward again (to a T2 in the undone range) since the old versions remain.
The catalog version key is the exception: it never goes back to an old number (compute nodes
cache table definitions and drop sequence ranges by that number), so the backtrack writes its
newest value + 1 at b_ts.

The backtrack window. Every copy must apply a backtrack identically, so what it may rewind to
cannot depend on when this copy's GC ran. `window_start_ts` (H) is a function of the applied
entries only: after each entry with ts, H = max(H, ts - backtrack_window, budget horizon),
never above ts - STORAGE_VERSION_RETENTION_NS (transactions still read there). The budget
horizon: bytes of versions written are kept per bucket of commit_ts (fixed width, aligned on
absolute time); while the versions above H weigh more than backtrack_budget_bytes, H moves up
one bucket. Every value H takes is a bucket boundary, so "the versions above H" is exactly a set
of whole buckets, and a restarted copy rebuilds the same buckets from its checkpoint's versions
above H (the checkpoint stores H; versions above the GC horizon, which never exceeds H, are the
same on every copy). A backtrack to T < H (H as before the entry) is refused, identically
everywhere; the shell collects garbage only below H, so every version a read at T >= H needs is
still here.

Checkpoints. `checkpoint_view()` fixes a point of the segment: (applied_index,
last_applied_ts, closed_ts, gc_horizon_ts) and a copy of the sorted key list.
`checkpoint_records(view)` then yields, key by key, the versions a checkpoint at that
point must hold: those with commit_ts <= the view's last_applied_ts (entries are in ts
order, so anything newer was applied after the view), minus what GC at the view's
horizon would drop. It may run in a worker thread while the event loop keeps applying
entries, because applying only ever *appends* versions newer than the view (or rewrites
the last one of the entry being applied) and adds keys the copied key list does not
hold; the caller must not run `gc_step` (which deletes old versions and keys) until it
has finished. `Segment.from_checkpoint` rebuilds a segment from such records; pending
closed-time promises are not kept (the journal's next heartbeat brings them again).
"""
from __future__ import annotations

import bisect
import collections
import dataclasses
import enum
from typing import Iterable

from quorumdb import keys as keys_mod
from quorumdb import limits, timefmt


@dataclasses.dataclass(frozen=True)
class Record:
    """A journal entry as the segment sees it (protobuf types stay at the edge)."""

    index: int
    ts: int
    # (key, value) for a write, (key, None) for a tombstone. Empty for non-txn entries.
    writes: tuple[tuple[bytes, bytes | None], ...] = ()
    # An ENTRY_BACKTRACK: the time the database is rewound to (None for every other entry).
    backtrack_to_ts: int | None = None


@dataclasses.dataclass(frozen=True)
class BacktrackOutcome:
    """What applying one backtrack entry did (the same on every copy)."""

    index: int
    ts: int
    to_ts: int
    refused: bool
    window_start_ts: int   # H when the entry was applied (before it)
    keys_rewound: int = 0  # keys given a version at ts (the catalog version key not counted)

    def describe(self) -> str:
        target = f"index {self.index} to {timefmt.format_utc(self.to_ts)}"
        if self.refused:
            return f"{target}: refused, outside the window starting {timefmt.format_utc(self.window_start_ts)}"
        return f"{target}: rewound {self.keys_rewound} keys"


def version_bytes(key: bytes, value: bytes | None) -> int:
    """What one version weighs for the backtrack budget (a fixed overhead for its bookkeeping)."""
    return len(key) + (0 if value is None else len(value)) + limits.BACKTRACK_VERSION_OVERHEAD_BYTES


class Readiness(enum.Enum):
    READY = "ready"          # every commit <= ts is applied; the read is right
    WAIT = "wait"            # commits <= ts may still be missing; wait for closed_ts
    TOO_OLD = "too_old"      # ts is below the GC horizon; versions it needs are gone


class ReadBelowHorizon(Exception):
    def __init__(self, ts: int, gc_horizon_ts: int):
        super().__init__(f"read at ts {ts} is below the garbage-collection horizon {gc_horizon_ts}")
        self.ts = ts
        self.gc_horizon_ts = gc_horizon_ts


class _KeyVersions:
    """Versions of one key, ascending by commit_ts. value None = tombstone."""

    __slots__ = ("commit_ts_list", "values")

    def __init__(self) -> None:
        self.commit_ts_list: list[int] = []
        self.values: list[bytes | None] = []

    def add(self, commit_ts: int, value: bytes | None) -> None:
        if self.commit_ts_list and self.commit_ts_list[-1] == commit_ts:
            # The same key twice in one transaction: the last write wins.
            self.values[-1] = value
            return
        assert not self.commit_ts_list or self.commit_ts_list[-1] < commit_ts, "versions must arrive in ts order"
        self.commit_ts_list.append(commit_ts)
        self.values.append(value)

    def at(self, ts: int) -> tuple[bytes | None, int]:
        """(value or None, version_ts) of the newest version with commit_ts <= ts; (None, 0) if none."""
        position = bisect.bisect_right(self.commit_ts_list, ts) - 1
        if position < 0:
            return None, 0
        return self.values[position], self.commit_ts_list[position]

    def collect(self, horizon_ts: int) -> int:
        """Drop versions older than the newest one at or below horizon_ts. Returns how many were dropped."""
        keep_from = bisect.bisect_right(self.commit_ts_list, horizon_ts) - 1
        if keep_from <= 0:
            return 0
        del self.commit_ts_list[:keep_from]
        del self.values[:keep_from]
        return keep_from

    def only_dead(self, horizon_ts: int) -> bool:
        """True when the key's single version is a tombstone at or below the horizon."""
        return len(self.values) == 1 and self.values[0] is None and self.commit_ts_list[0] <= horizon_ts


@dataclasses.dataclass(frozen=True)
class CheckpointView:
    """A point of the segment a checkpoint materializes (see the module docstring)."""

    applied_index: int
    last_applied_ts: int
    closed_ts: int
    gc_horizon_ts: int
    keys: tuple[bytes, ...]  # sorted; every key that existed at the point
    window_start_ts: int = 0  # the backtrack window's start at the point


class Segment:
    """One storage segment's MVCC state. Single-threaded; the shell serializes calls."""

    def __init__(self, backtrack_window_ns: int = limits.BACKTRACK_WINDOW_DEFAULT_NS,
                 backtrack_budget_bytes: int = limits.BACKTRACK_BUDGET_DEFAULT_BYTES,
                 bucket_ns: int = limits.BACKTRACK_BUCKET_NS) -> None:
        assert backtrack_window_ns >= 0, backtrack_window_ns
        assert backtrack_budget_bytes >= 0, backtrack_budget_bytes
        assert bucket_ns > 0, bucket_ns
        self.applied_index = 0
        self.last_applied_ts = 0
        self.closed_ts = 0
        self.gc_horizon_ts = 0
        self.backtrack_window_ns = backtrack_window_ns
        self.backtrack_budget_bytes = backtrack_budget_bytes
        self.bucket_ns = bucket_ns
        self.window_start_ts = 0  # H: see "The backtrack window" above
        # [bucket number, bytes] ascending; bucket b holds versions with b*W < commit_ts <= (b+1)*W.
        self._window_buckets: collections.deque[list[int]] = collections.deque()
        self.window_bytes = 0  # bytes of versions with commit_ts > window_start_ts
        self.last_backtrack: BacktrackOutcome | None = None
        self._versions: dict[bytes, _KeyVersions] = {}
        self._keys: list[bytes] = []  # sorted; every key in _versions
        # Heartbeats (closed_ts, closed_index) not yet usable, ascending in both.
        self._pending_closed: list[tuple[int, int]] = []
        self._gc_cursor: bytes | None = None  # next key for gc_step; None = start of a sweep
        self.version_count = 0

    # --- the journal side ------------------------------------------------------
    @property
    def scl(self) -> int:
        return self.applied_index

    @property
    def key_count(self) -> int:
        return len(self._keys)

    def apply(self, records: Iterable[Record]) -> None:
        """Apply entries that directly follow applied_index, in order."""
        for record in records:
            assert record.index == self.applied_index + 1, (
                f"entry {record.index} does not follow applied index {self.applied_index}"
            )
            assert record.ts > self.last_applied_ts, f"entry {record.index} ts {record.ts} not increasing"
            if record.backtrack_to_ts is not None:
                self._backtrack(record)
            elif record.writes:
                final: dict[bytes, bytes | None] = {}
                for key, value in record.writes:
                    self._put(key, record.ts, value)
                    final[key] = value  # the same key twice in one entry: only the last version stays
                self._count_window_bytes(record.ts, sum(version_bytes(k, v) for k, v in final.items()))
            self.applied_index = record.index
            self.last_applied_ts = record.ts
            self._advance_window(record.ts)
        self._advance_closed()

    # --- backtrack ---------------------------------------------------------------------
    def _backtrack(self, record: Record) -> None:
        to_ts = record.backtrack_to_ts
        window_start_ts = self.window_start_ts
        if to_ts < window_start_ts:
            self.last_backtrack = BacktrackOutcome(record.index, record.ts, to_ts, True, window_start_ts)
            return
        # The shell collects only below H, so every version a read at to_ts needs is here.
        assert to_ts >= self.gc_horizon_ts, f"backtrack to {to_ts} below the GC horizon {self.gc_horizon_ts}"
        version_key = keys_mod.SCHEMA_VERSION_KEY
        catalog_versions = self._versions.get(version_key)
        newest_catalog = keys_mod.decode_version(
            catalog_versions.values[-1] if catalog_versions is not None else None)
        written = 0
        rewound = 0
        for key in self._keys:
            if key == version_key:
                continue
            versions = self._versions[key]
            if versions.commit_ts_list[-1] <= to_ts:
                continue  # unchanged since to_ts
            value, _ = versions.at(to_ts)
            if value == versions.values[-1]:
                continue  # changed and changed back (or deleted twice): reads already see the value at to_ts
            self._put(key, record.ts, value)
            written += version_bytes(key, value)
            rewound += 1
        catalog_value = keys_mod.encode_version(keys_mod.version_after_backtrack(newest_catalog))
        self._put(version_key, record.ts, catalog_value)
        written += version_bytes(version_key, catalog_value)
        self._count_window_bytes(record.ts, written)
        self.last_backtrack = BacktrackOutcome(record.index, record.ts, to_ts, False, window_start_ts, rewound)

    def _count_window_bytes(self, commit_ts: int, size: int) -> None:
        assert commit_ts > self.window_start_ts, "a new version is always above the window start"
        bucket = (commit_ts - 1) // self.bucket_ns
        buckets = self._window_buckets
        if buckets and buckets[-1][0] == bucket:
            buckets[-1][1] += size
        else:
            assert not buckets or buckets[-1][0] < bucket, "versions arrive in ts order"
            buckets.append([bucket, size])
        self.window_bytes += size

    def _advance_window(self, ts: int) -> None:
        """H after an entry with ts (see "The backtrack window"): a function of applied entries only."""
        width = self.bucket_ns
        ceiling = (ts - limits.STORAGE_VERSION_RETENTION_NS) // width * width
        target = (ts - self.backtrack_window_ns) // width * width
        buckets = self._window_buckets
        while buckets and self.window_bytes > self.backtrack_budget_bytes:
            end = (buckets[0][0] + 1) * width
            if end > ceiling:
                break
            target = max(target, end)
            self.window_bytes -= buckets.popleft()[1]
        start = max(self.window_start_ts, min(target, ceiling))
        while buckets and (buckets[0][0] + 1) * width <= start:
            self.window_bytes -= buckets.popleft()[1]
        self.window_start_ts = start

    def _rebuild_window(self) -> None:
        """The buckets from the versions held (a segment made from a checkpoint)."""
        sizes: dict[int, int] = {}
        start = self.window_start_ts
        width = self.bucket_ns
        for key, versions in self._versions.items():
            for commit_ts, value in zip(versions.commit_ts_list, versions.values):
                if commit_ts > start:
                    bucket = (commit_ts - 1) // width
                    sizes[bucket] = sizes.get(bucket, 0) + version_bytes(key, value)
        self._window_buckets = collections.deque([bucket, sizes[bucket]] for bucket in sorted(sizes))
        self.window_bytes = sum(sizes.values())

    def _put(self, key: bytes, commit_ts: int, value: bytes | None) -> None:
        versions = self._versions.get(key)
        if versions is None:
            versions = _KeyVersions()
            self._versions[key] = versions
            bisect.insort(self._keys, key)
        before = len(versions.values)
        versions.add(commit_ts, value)
        self.version_count += len(versions.values) - before

    def observe_closed(self, closed_ts: int, closed_index: int) -> None:
        """A heartbeat: every commit with ts <= closed_ts has index <= closed_index."""
        if closed_ts <= self.closed_ts:
            return
        if closed_index <= self.applied_index:
            self.closed_ts = closed_ts
            return
        pending = self._pending_closed
        if pending and pending[-1][1] >= closed_index:
            # A later promise that needs no more entries than the last pending one supersedes it.
            pending[-1] = (max(pending[-1][0], closed_ts), pending[-1][1])
            return
        if len(pending) >= limits.STORAGE_PENDING_CLOSED_MAX:
            # Keep the bound: the newest promise replaces the last one (it needs more entries,
            # so the closed time advances a little later than it could have; never wrongly).
            pending[-1] = (closed_ts, closed_index)
            return
        pending.append((closed_ts, closed_index))

    def _advance_closed(self) -> None:
        closed_ts = max(self.closed_ts, self.last_applied_ts)
        pending = self._pending_closed
        usable = 0
        while usable < len(pending) and pending[usable][1] <= self.applied_index:
            closed_ts = max(closed_ts, pending[usable][0])
            usable += 1
        del pending[:usable]
        self.closed_ts = closed_ts

    # --- the read side ---------------------------------------------------------
    def readiness(self, ts: int) -> Readiness:
        if ts < self.gc_horizon_ts:
            return Readiness.TOO_OLD
        if ts <= self.closed_ts:
            return Readiness.READY
        return Readiness.WAIT

    def can_serve(self, ts: int) -> bool:
        return self.readiness(ts) is Readiness.READY

    def get(self, key: bytes, ts: int) -> tuple[bytes | None, int]:
        """(value, version_ts) at ts; value None when missing or deleted (version_ts 0 when missing)."""
        self._check_horizon(ts)
        versions = self._versions.get(key)
        if versions is None:
            return None, 0
        return versions.at(ts)

    def scan(self, start: bytes, end: bytes | None, ts: int, limit: int) -> tuple[list[tuple[bytes, bytes, int]], bool]:
        """Live versions at ts of keys in [start, end) in key order, at most `limit`; more=True if cut short."""
        assert limit > 0, limit
        self._check_horizon(ts)
        rows: list[tuple[bytes, bytes, int]] = []
        position = bisect.bisect_left(self._keys, start)
        keys = self._keys
        while position < len(keys):
            key = keys[position]
            if end is not None and key >= end:
                break
            if len(rows) == limit:
                return rows, True
            value, version_ts = self._versions[key].at(ts)
            if value is not None:
                rows.append((key, value, version_ts))
            position += 1
        return rows, False

    def _check_horizon(self, ts: int) -> None:
        if ts < self.gc_horizon_ts:
            raise ReadBelowHorizon(ts, self.gc_horizon_ts)

    # --- garbage collection ----------------------------------------------------
    def gc_step(self, horizon_ts: int, keys_max: int) -> bool:
        """Collect up to keys_max keys below horizon_ts. Returns True when a full sweep just ended."""
        assert keys_max > 0, keys_max
        # The horizon only moves forward: reads below an earlier horizon are already refused.
        self.gc_horizon_ts = max(self.gc_horizon_ts, horizon_ts)
        horizon_ts = self.gc_horizon_ts
        keys = self._keys
        position = 0 if self._gc_cursor is None else bisect.bisect_left(keys, self._gc_cursor)
        examined = 0
        while position < len(keys) and examined < keys_max:
            key = keys[position]
            versions = self._versions[key]
            self.version_count -= versions.collect(horizon_ts)
            if versions.only_dead(horizon_ts):
                del self._versions[key]
                del keys[position]
                self.version_count -= 1
            else:
                position += 1
            examined += 1
        if position >= len(keys):
            self._gc_cursor = None
            return True
        self._gc_cursor = keys[position]
        return False

    # --- checkpoints -----------------------------------------------------------------
    def checkpoint_view(self) -> CheckpointView:
        return CheckpointView(self.applied_index, self.last_applied_ts, self.closed_ts, self.gc_horizon_ts,
                              tuple(self._keys), self.window_start_ts)

    def checkpoint_records(self, view: CheckpointView) -> Iterable[tuple[bytes, list[int], list[bytes | None]]]:
        """(key, commit_ts list, values) for every key of the view that a read at ts >= horizon can see."""
        upto_ts = view.last_applied_ts
        horizon_ts = view.gc_horizon_ts
        for key in view.keys:
            versions = self._versions.get(key)
            assert versions is not None, "gc_step ran while a checkpoint was being written"
            stop = bisect.bisect_right(versions.commit_ts_list, upto_ts)
            commit_ts_list = versions.commit_ts_list[:stop]
            values = versions.values[:stop]
            keep_from = bisect.bisect_right(commit_ts_list, horizon_ts) - 1
            if keep_from > 0:
                del commit_ts_list[:keep_from]
                del values[:keep_from]
            if not commit_ts_list:
                continue
            if len(values) == 1 and values[0] is None and commit_ts_list[0] <= horizon_ts:
                continue  # a tombstone nobody can read past: forgotten, as gc_step does
            yield key, commit_ts_list, values

    @classmethod
    def from_checkpoint(cls, applied_index: int, last_applied_ts: int, closed_ts: int, gc_horizon_ts: int,
                        records: Iterable[tuple[bytes, list[int], list[bytes | None]]],
                        window_start_ts: int | None = None, **settings) -> "Segment":
        """A segment holding exactly what a checkpoint holds; records in ascending key order.

        window_start_ts None (a checkpoint written before the window existed): the GC horizon.
        settings: the backtrack window and budget, as for Segment()."""
        segment = cls(**settings)
        # GC never runs above the window start in a node; max() keeps the rule for anything else.
        segment.window_start_ts = max(gc_horizon_ts, window_start_ts or 0)
        segment.applied_index = applied_index
        segment.last_applied_ts = last_applied_ts
        segment.closed_ts = max(closed_ts, last_applied_ts)
        segment.gc_horizon_ts = gc_horizon_ts
        keys = segment._keys
        for key, commit_ts_list, values in records:
            assert not keys or keys[-1] < key, "checkpoint keys must be strictly ascending"
            assert len(commit_ts_list) == len(values), key
            assert commit_ts_list, key
            assert commit_ts_list[-1] <= last_applied_ts, "a checkpoint version is newer than its applied index"
            versions = _KeyVersions()
            for commit_ts, value in zip(commit_ts_list, values):
                versions.add(commit_ts, value)
            segment._versions[key] = versions
            keys.append(key)
            segment.version_count += len(versions.values)
        segment._rebuild_window()
        return segment
