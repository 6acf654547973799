"""Pure parts of tables without a primary key, bulk loads and sequences (no I/O, no clock).

Theory of operation
-------------------
Row ids. A table created without a PRIMARY KEY keys its rows by a hidden bigint
(catalog.ROWID_COLUMN). The ids come from no central counter, which every insert on every
node would have to write (one hot key on the commit path). Instead each transaction draws
one random 62-bit start (from the session's seeded random.Random) and numbers its rows
start, start+1, ... . Why random rather than node id + timestamp + counter: compute nodes
have no small unique number, and a clock-based id leans on the clock never repeating across
restarts. A random start makes two transactions' ranges overlap with probability about
rows_a * rows_b / 2**62 (a million rows each: 2e-7), and overlap is still never a silent
overwrite: an ordinary INSERT reads its row keys before writing (it does that for every
primary key) and draws a new id for a key already taken; two concurrent transactions that
picked the same id write the same key, so the adjudicator lets only one commit (40001 for
the other, which the client retries). A bulk load into a private keyspace (below) skips
that read: only its own transaction writes there, and its ids are consecutive, so distinct.

Private keyspaces and the bulk path. A commit is one message to the adjudicator and the
journal, so a transaction may change at most limits.TXN_ROWS_MAX keys. A table emptied by
TRUNCATE (a new table id, as PostgreSQL gives the table a new relfilenode), rewritten by
ALTER TABLE ADD PRIMARY KEY, or created by the transaction and about to outgrow the quota
lives under ids that only the catalog entry this transaction will commit names; nobody else can read or write there before that commit. Its rows can
therefore be committed ahead, in batches that each obey the quotas (`plan_batches`), and
the transaction's own commit carries only the catalog change and its other writes. The
transaction reads such a keyspace at the commit timestamp of its last batch: every version
there is its own, so that is exactly what it wrote. Private ids come from their own counter
(keys.PRIVATE_ID_COUNTER_KEY, starting at keys.PRIVATE_ID_BASE), advanced by a small
transaction of its own before anything is written under them: two transactions can never
share a private keyspace even when one of them later aborts. An aborted transaction leaves
its flushed batches behind, unreachable (as the rows of a dropped table).

Sequences. The value of a sequence lives in one key (keys.sequence_state_key) that no
ordinary commit writes. A compute node reserves a range of values from it in a small
transaction of its own and hands them out from memory (`SequenceRange`), so inserts never
conflict on it. setval increments the sequence's *epoch* in that key; a transaction that
needs a value reads the key at its snapshot and drops a cached range of an older epoch, so a
transaction that starts after setval committed never gets a value from before it.
"""
from __future__ import annotations

import array
import dataclasses
import json
import random
from typing import Sequence

ROWID_START_MIN = 1 << 32
ROWID_START_MAX = 1 << 62   # +2**62 more rows stays below bigint's 2**63 - 1


def rowid_start(rng: random.Random) -> int:
    """The first row id of a transaction's rows (the rest follow it by one)."""
    return rng.randrange(ROWID_START_MIN, ROWID_START_MAX)


def plan_batches(writes: Sequence[tuple[bytes, bytes | None]], rows_max: int,
                 bytes_max: int) -> list[list[tuple[bytes, bytes | None]]]:
    """`writes` (in order) cut into consecutive batches of at most rows_max keys and at most
    bytes_max bytes of keys + values each; every batch is a legal transaction on its own."""
    assert rows_max > 0 and bytes_max > 0
    batches: list[list[tuple[bytes, bytes | None]]] = []
    current: list[tuple[bytes, bytes | None]] = []
    current_bytes = 0
    for key, value in writes:
        size = len(key) + (len(value) if value is not None else 0)
        assert size <= bytes_max, "a single write larger than a whole batch passed the row size check"
        if current and (len(current) >= rows_max or current_bytes + size > bytes_max):
            batches.append(current)
            current, current_bytes = [], 0
        current.append((key, value))
        current_bytes += size
    if current:
        batches.append(current)
    return batches


class KeyDigests:
    """Finds keys written twice among many, in about 8 bytes a key.

    A table rewrite (ALTER TABLE ... ADD PRIMARY KEY) writes every row of the table into a
    keyspace nobody else writes, so a duplicate of the new key can only be between two of its own
    rows: reading storage for each new key (as an INSERT does) would find nothing, at the cost of a
    read per row. Keeping the keys themselves would cost ~80 bytes a row in Python objects. So each
    key leaves a 64-bit digest, in one of DIGEST_BUCKETS arrays chosen by the digest's low byte;
    `repeated()` sorts one bucket at a time (holding 1/256 of the digests as Python ints at once)
    and returns the digests met more than once. Those are candidates only: two different keys
    share a digest with probability about n**2 / 2**65 (a million keys: 3e-8), so the caller
    confirms them against the keys themselves. `digest` is passed in so tests can force
    collisions; the default, hash(), is fixed within a process, which is all this needs."""

    DIGEST_BUCKETS = 256

    def __init__(self, keys_max: int, digest=hash):
        assert keys_max > 0
        self.keys_max = keys_max
        self.count = 0
        self._digest = digest
        self._buckets = [array.array("q") for _ in range(self.DIGEST_BUCKETS)]

    def add(self, key: bytes) -> None:
        """Raises OverflowError past keys_max (the caller words the error)."""
        if self.count >= self.keys_max:
            raise OverflowError(self.keys_max)
        value = self._digest(key)
        self._buckets[value & 0xFF].append(value)
        self.count += 1

    def repeated(self) -> set[int]:
        found: set[int] = set()
        for bucket in self._buckets:
            previous = None
            for value in sorted(bucket):
                if value == previous:
                    found.add(value)
                previous = value
        return found

    def digest_of(self, key: bytes) -> int:
        return self._digest(key)


# --- sequences ------------------------------------------------------------------------------------
BIGINT_MIN = -(2**63)
BIGINT_MAX = 2**63 - 1


@dataclasses.dataclass(frozen=True)
class SequenceDef:
    """CREATE SEQUENCE's options (the catalog entry); the current value lives elsewhere."""
    name: str
    sequence_id: int
    start: int
    increment: int
    min_value: int
    max_value: int
    cache: int = 1
    owned_by: tuple[str, str] | None = None   # (table, column) of a serial / identity column
    # 'smallint', 'integer' or 'bigint' (CREATE SEQUENCE ... AS, a serial's or identity column's
    # type): what pg_sequence.seqtypid and pg_dump's `AS` show. None: an entry stored before the
    # type was kept; the catalog reads it as the owning column's type, else bigint.
    data_type: str | None = "bigint"

    def __post_init__(self):
        assert self.increment != 0
        assert self.min_value <= self.start <= self.max_value
        assert self.data_type in (None, "smallint", "integer", "bigint")

    def encode(self) -> bytes:
        doc = {"name": self.name, "sequence_id": self.sequence_id, "start": self.start,
               "increment": self.increment, "min": self.min_value, "max": self.max_value, "cache": self.cache}
        if self.owned_by is not None:
            doc["owned_by"] = list(self.owned_by)
        if self.data_type is not None:
            doc["type"] = self.data_type
        return json.dumps(doc, sort_keys=True).encode("utf-8")

    @staticmethod
    def decode(data: bytes) -> "SequenceDef":
        doc = json.loads(data.decode("utf-8"))
        owned = doc.get("owned_by")
        return SequenceDef(doc["name"], doc["sequence_id"], doc["start"], doc["increment"], doc["min"], doc["max"],
                           doc.get("cache", 1), tuple(owned) if owned else None, doc.get("type"))


def sequence_bounds(increment: int, min_value: int | None, max_value: int | None, type_min: int,
                    type_max: int) -> tuple[int, int]:
    """PostgreSQL's defaults: ascending 1..type max, descending type min..-1."""
    low = min_value if min_value is not None else (1 if increment > 0 else type_min)
    high = max_value if max_value is not None else (type_max if increment > 0 else -1)
    return low, high


@dataclasses.dataclass(frozen=True)
class SequenceState:
    """The stored value of a sequence: the next value not yet handed out to any node (None:
    exhausted), the epoch setval bumps, and a random incarnation the first reservation draws
    (0: nothing reserved yet). A node's range is good for a snapshot only if the snapshot's
    state has the range's incarnation: a range can never outlive its sequence's key (a
    restored or different database that reuses the sequence id). `called` is PostgreSQL's
    is_called: false until a value was reserved, and as the last setval said."""
    next_value: int | None
    epoch: int
    incarnation: int = 0
    called: bool = False

    def encode(self) -> bytes:
        return json.dumps({"next": self.next_value, "epoch": self.epoch, "incarnation": self.incarnation,
                           "called": self.called}).encode("utf-8")

    @staticmethod
    def decode(data: bytes | None, definition: SequenceDef) -> "SequenceState":
        if data is None:
            return SequenceState(definition.start, 0, 0)
        doc = json.loads(data.decode("utf-8"))
        # A state stored before `called` was kept: called once anything was reserved.
        return SequenceState(doc["next"], doc["epoch"], doc.get("incarnation", 0),
                             doc.get("called", doc.get("incarnation", 0) != 0))


@dataclasses.dataclass
class SequenceRange:
    """Values [next, last] (in the direction of the increment) one node may hand out, of one epoch."""
    epoch: int
    next_value: int
    last_value: int
    increment: int
    incarnation: int = 0

    def usable_for(self, epoch: int, incarnation: int) -> bool:
        """Good for a snapshot whose stored state has this epoch and incarnation."""
        return self.incarnation == incarnation and self.epoch >= epoch and self.remaining > 0

    @property
    def remaining(self) -> int:
        if (self.last_value - self.next_value) * self.increment < 0:
            return 0
        return (self.last_value - self.next_value) // self.increment + 1

    def take(self) -> int:
        assert self.remaining > 0
        value = self.next_value
        self.next_value += self.increment
        return value


def reserve(definition: SequenceDef, state: SequenceState, count: int,
            new_incarnation: int = 1) -> tuple[SequenceRange | None, SequenceState]:
    """Up to `count` values from `state`: the range (None when the sequence is exhausted) and the
    state to store (the first reservation gives it `new_incarnation`). The range stops at the
    sequence's bound (no CYCLE)."""
    assert count > 0 and new_incarnation != 0
    if state.incarnation == 0:
        state = SequenceState(state.next_value, state.epoch, new_incarnation)
    if state.next_value is None:
        return None, state
    first = state.next_value
    increment = definition.increment
    if increment > 0:
        last = min(first + (count - 1) * increment, definition.max_value)
        following = last + increment
        next_value = following if following <= definition.max_value else None
    else:
        last = max(first + (count - 1) * increment, definition.min_value)
        following = last + increment
        next_value = following if following >= definition.min_value else None
    return (SequenceRange(state.epoch, first, last, increment, state.incarnation),
            SequenceState(next_value, state.epoch, state.incarnation, True))


def after_setval(definition: SequenceDef, state: SequenceState, value: int, is_called: bool) -> SequenceState:
    """The state once setval(value, is_called) commits: a new epoch, so every node drops its range."""
    if is_called:
        following = value + definition.increment
        in_bounds = definition.min_value <= following <= definition.max_value
        return SequenceState(following if in_bounds else None, state.epoch + 1, state.incarnation, True)
    return SequenceState(value, state.epoch + 1, state.incarnation, False)


def relation_row(definition: SequenceDef, state: SequenceState) -> tuple[int, int, bool]:
    """(last_value, log_cnt, is_called): what `SELECT * FROM seq` reads, as PostgreSQL shows it.

    PostgreSQL's last_value is the last value any session reserved, its cached values included.
    The cluster-wide equivalent here is the last value reserved by any node (the stored next
    free value less one increment), whether or not a session has taken it yet: a dump that
    restores it with setval(last_value, is_called) continues above every value handed out.
    Before anything was reserved (or after setval(v, false)) it is the next value, not called.
    log_cnt counts values PostgreSQL pre-logged in its WAL; nothing here does that: 0."""
    if state.next_value is None:
        # Exhausted: the state no longer says which value was last (a setval may have shifted the
        # steps). The last step from START before the bound is one whose next step is past the
        # bound too, so setval(last_value, true) restores a sequence just as exhausted.
        step = abs(definition.increment)
        bound = definition.max_value if definition.increment > 0 else definition.min_value
        steps = abs(bound - definition.start) // step
        return definition.start + steps * definition.increment, 0, True
    if not state.called:
        return state.next_value, 0, False
    return state.next_value - definition.increment, 0, True


def next_reserve_size(previous: int, used_within_s: float | None, cache: int, wanted: int) -> int:
    """How many values to reserve next: double the previous range when it lasted under a second
    (a busy sequence), else start small; never fewer than CACHE or than the statement needs."""
    from quorumdb import limits
    if previous and used_within_s is not None and used_within_s < 1.0:
        size = min(previous * 2, limits.SEQUENCE_RESERVE_MAX)
    else:
        size = limits.SEQUENCE_RESERVE_MIN
    return max(size, cache, wanted)
