"""Sequences at run time: nextval / currval / setval / lastval, and the small transactions of
their own that reserve ranges (the arithmetic is pure, in bulk.py; its docstring has the design).

Expressions are evaluated synchronously, so a statement that names nextval('s') gets its
values ready before it runs: compiling nextval registers the sequence in the statement's
StatementSequences, the fetch phase (`prepare`) reads the sequence's definition and its
epoch at the transaction's snapshot and, when this node's range is of an older epoch or too
short, reserves a new one. If a statement still runs out (INSERT ... SELECT of more rows than
were foreseen), nextval raises NeedValues before anything was written; the executor reserves
what the statement needs and runs it again (values taken by the first run are gaps, which
sequences allow).

Honest window: setval and TRUNCATE ... RESTART IDENTITY commit at once in their own
transaction (PostgreSQL's setval is not transactional either; its RESTART IDENTITY is), and a
transaction that started before a setval committed may still get values from an older range.
"""
from __future__ import annotations

import asyncio
import itertools
import random
import time
from typing import TYPE_CHECKING, Any, Callable

from compute_node.sql import bulk
from compute_node.sql.bulk import SequenceDef, SequenceRange, SequenceState
from compute_node.sql.result import DescribeOnly
from quorumdb import errors, keys, limits
from quorumdb.errors import SqlError

if TYPE_CHECKING:
    from compute_node.sql.transaction import Transaction


# The adjudicator answers a txn_id it has seen with that commit's outcome (retries are
# idempotent), so every small transaction of its own needs a txn_id never used before.
_AUTONOMOUS_NUMBERS = itertools.count(1)


class NeedValues(Exception):
    """The node's range of `name` ran out mid-statement: reserve `count` and run it again."""

    def __init__(self, name: str, count: int):
        super().__init__(name)
        self.name = name
        self.count = count


class NodeSequences:
    """A compute node's reserved ranges, by sequence id (shared by its sessions)."""

    def __init__(self) -> None:
        self.ranges: dict[int, SequenceRange] = {}
        self.last_reserve: dict[int, tuple[int, float]] = {}   # id -> (size, monotonic time)
        self.reservations = 0
        self.generation = 0  # bumped by forget: a reservation begun before it is not kept
        self.forgotten = 0   # times forget dropped the ranges
        self.catalog_generation: int | None = None  # keys.backtrack_generation of the catalog version seen

    def catalog_version_changed(self, version: int) -> None:
        """Drop the ranges when the catalog version says the database was backtracked (ordinary
        DDL keeps them: their values are still reserved in the sequence rows)."""
        generation = keys.backtrack_generation(version)
        # The first version seen cannot say whether ranges reserved before it predate a
        # backtrack: drop them then too (a few wasted values once per node start).
        if generation != self.catalog_generation and (self.catalog_generation is not None or self.ranges):
            self.forget()
        self.catalog_generation = generation

    def forget(self, _version: int | None = None) -> None:
        """Drop every range (the catalog version changed, maybe by a backtrack that undid the
        reservations): wasting their values is allowed, handing one out twice is not."""
        self.ranges.clear()
        self.generation += 1
        self.forgotten += 1

    def usable(self, sequence_id: int, snapshot: SequenceState) -> SequenceRange | None:
        found = self.ranges.get(sequence_id)
        if found is None or not found.usable_for(snapshot.epoch, snapshot.incarnation):
            return None
        return found


class SessionSequences:
    """currval per sequence and lastval, for one session (PostgreSQL keeps them per backend)."""

    def __init__(self) -> None:
        self.current: dict[str, int] = {}
        self.last: int | None = None


async def autonomous_update(backend, read_keys: list[bytes],
                            update: Callable[[dict[bytes, bytes | None]], tuple[list, Any]], txn_id: str) -> Any:
    """Runs `update` in a small transaction of its own: reads `read_keys` at a fresh snapshot,
    commits the writes `update` returns, retries a conflict (another node did the same at the
    same moment); returns what `update` returned with the writes that committed."""
    number = next(_AUTONOMOUS_NUMBERS)
    for attempt in range(limits.AUTONOMOUS_RETRIES_MAX):
        start_ts = backend.start_ts()
        found = await backend.get_many(read_keys, start_ts)
        writes, result = update(found)
        if not writes:
            return result
        try:
            await backend.commit(start_ts, sorted(writes), [], f"{txn_id}:own{number}.{attempt}")
            return result
        except SqlError as error:
            if error.sqlstate != errors.SERIALIZATION_FAILURE:
                raise
            await asyncio.sleep(limits.AUTONOMOUS_BACKOFF_S * (attempt + 1))
    raise SqlError(errors.SERIALIZATION_FAILURE,
                   "could not update a sequence or id counter: too many concurrent updates, please retry: "
                   f"({errors.DSQL_WRITE_CONFLICT})")


class StatementSequences:
    """What one statement's nextval/currval/setval calls need, prepared before it runs."""

    def __init__(self, txn: "Transaction"):
        self.txn = txn
        self.names: set[str] = set()                 # registered by compiling nextval/setval/currval
        self.nextval_names: set[str] = set()
        self.definitions: dict[str, SequenceDef] = {}
        self.epochs: dict[str, SequenceState] = {}  # the state at the snapshot
        self.setvals: list[tuple[str, Callable, Callable]] = []  # (name, value, is_called) of each setval call
        self.setval_results: dict[int, int] = {}
        self.setvals_done = False

    @property
    def node(self) -> NodeSequences:
        if self.txn.sequences is None:
            self.txn.sequences = NodeSequences()
        return self.txn.sequences

    @property
    def session(self) -> SessionSequences:
        if self.txn.session_sequences is None:
            self.txn.session_sequences = SessionSequences()
        return self.txn.session_sequences

    # --- evaluation (synchronous) ---------------------------------------------------------------
    @property
    def describing(self) -> bool:
        """The statement is only being described (compute_node/sql/describe.py): take no values."""
        return getattr(self.txn, "param_types", None) is not None

    def nextval(self, name: str) -> int:
        if self.describing:
            raise DescribeOnly("nextval would take a value")
        definition = self.definitions.get(name)
        if definition is None:
            raise NeedValues(name, 1)
        found = self.node.usable(definition.sequence_id, self.epochs[name])
        if found is None:
            raise NeedValues(name, 1)
        value = found.take()
        self.session.current[name] = value
        self.session.last = value
        return value

    def currval(self, name: str) -> int:
        if name not in self.definitions:
            raise NeedValues(name, 0)
        value = self.session.current.get(name)
        if value is None:
            raise SqlError(errors.OBJECT_NOT_IN_PREREQUISITE_STATE,
                           f'currval of sequence "{name}" is not yet defined in this session')
        return value

    def lastval(self) -> int:
        if self.session.last is None:
            raise SqlError(errors.OBJECT_NOT_IN_PREREQUISITE_STATE, "lastval is not yet defined in this session")
        return self.session.last

    def setval_result(self, call_id: int) -> int:
        if self.describing:
            raise DescribeOnly("setval would change the sequence")
        assert call_id in self.setval_results, "setval runs in the fetch phase"
        return self.setval_results[call_id]

    # --- preparation (fetch phase) ------------------------------------------------------------------
    async def prepare(self, wanted: dict[str, int] | None = None) -> None:
        """Definitions and epochs of every registered sequence; ranges of at least wanted[name]
        values (1 for each nextval'd sequence by default); setval calls done."""
        if self.describing:
            return  # Describe reserves nothing and changes nothing (nextval and setval stop it)
        txn = self.txn
        if getattr(txn, "statement_savepoint", 0) is None:  # executor.execute: runs before any write
            txn.statement_savepoint = (dict(txn.write_buffer), txn.write_bytes, dict(txn.pending),
                                       set(txn.lock_keys), txn.flushed_batches)
        wanted = dict(wanted or {})
        for name in self.nextval_names:
            wanted.setdefault(name, 1)
        for name, count in getattr(self.txn, "sequence_demand", {}).items():
            if name in wanted:
                wanted[name] = max(wanted[name], count)
        for name in sorted(self.names | set(wanted)):
            await self._load(name)
        if not self.setvals_done:
            self.setvals_done = True
            for call_id, (name, value_fn, called_fn) in enumerate(self.setvals):
                self.setval_results[call_id] = await self.setval(name, value_fn(), called_fn())
        for name, count in wanted.items():
            if count > 0:
                await self.ensure(name, count)

    async def _load(self, name: str) -> SequenceDef:
        if name in self.definitions:
            return self.definitions[name]
        definition = await load_sequence(self.txn, name)
        if definition is None:
            raise SqlError(errors.UNDEFINED_TABLE, f'relation "{name}" does not exist')
        state_key = keys.sequence_state_key(definition.sequence_id)
        state = SequenceState.decode((await self.txn.get_many([state_key]))[state_key], definition)
        self.definitions[name] = definition
        self.epochs[name] = state
        return definition

    async def ensure(self, name: str, count: int) -> None:
        """This node holds at least `count` values of `name` (of the snapshot's epoch or newer),
        or as many as remain before the sequence's bound."""
        definition = await self._load(name)
        node = self.node
        found = node.usable(definition.sequence_id, self.epochs[name])
        if found is not None and found.remaining >= count:
            return
        previous = node.last_reserve.get(definition.sequence_id)
        now = time.monotonic()
        size = bulk.next_reserve_size(previous[0] if previous else 0, now - previous[1] if previous else None,
                                      definition.cache, count)
        state_key = keys.sequence_state_key(definition.sequence_id)
        incarnation = (self.txn.rng or random.Random()).getrandbits(63) | 1

        def take(found_state):
            state = SequenceState.decode(found_state[state_key], definition)
            reserved, after = bulk.reserve(definition, state, size, incarnation)
            return [(state_key, after.encode())], reserved

        generation = node.generation
        reserved = await autonomous_update(self.txn.backend, [state_key], take, f"{self.txn.txn_id}:seq")
        node.reservations += 1
        node.last_reserve[definition.sequence_id] = (size, now)
        if len(node.ranges) >= limits.SEQUENCE_CACHE_ENTRIES_MAX:
            node.ranges.clear()  # ranges are only a cache: dropping them wastes values, never repeats one
        if reserved is None:
            if found is not None and found.remaining > 0:
                return  # the last values before the bound
            bound = definition.max_value if definition.increment > 0 else definition.min_value
            word = "maximum" if definition.increment > 0 else "minimum"
            raise SqlError(errors.SEQUENCE_GENERATOR_LIMIT_EXCEEDED,
                           f'nextval: reached {word} value of sequence "{name}" ({bound})')
        if node.generation == generation:
            # Not kept when the ranges were dropped meanwhile: a backtrack may have undone it.
            node.ranges[definition.sequence_id] = reserved
        # Reserved after this snapshot: the stored state now has the range's epoch and incarnation.
        self.epochs[name] = SequenceState(None, reserved.epoch, reserved.incarnation)

    async def setval(self, name: str, value: Any, is_called: Any) -> int:
        definition = await self._load(name)
        if value is None or is_called is None:
            return None  # type: ignore[return-value]  (setval is strict: NULL in, NULL out)
        if not definition.min_value <= value <= definition.max_value:
            raise SqlError(errors.NUMERIC_VALUE_OUT_OF_RANGE,
                           f'setval: value {value} is out of bounds for sequence "{name}" '
                           f'({definition.min_value}..{definition.max_value})')
        state_key = keys.sequence_state_key(definition.sequence_id)

        def bump(found_state):
            state = SequenceState.decode(found_state[state_key], definition)
            after = bulk.after_setval(definition, state, value, bool(is_called))
            return [(state_key, after.encode())], after

        after = await autonomous_update(self.txn.backend, [state_key], bump, f"{self.txn.txn_id}:setval")
        self.node.ranges.pop(definition.sequence_id, None)
        self.epochs[name] = after
        if is_called:
            self.session.current[name] = value
            self.session.last = value
        return value


async def load_sequence(txn: "Transaction", name: str) -> SequenceDef | None:
    key = keys.catalog_sequence_key(name)
    raw = (await txn.get_many([key]))[key]
    txn.note_schema_read(key, raw)
    return SequenceDef.decode(raw) if raw is not None else None


def statement_sequences(ctx) -> StatementSequences:
    """The statement's StatementSequences (made on first use)."""
    found = getattr(ctx, "sequences", None)
    if found is None:
        found = ctx.sequences = StatementSequences(ctx.txn)
    return found


async def prepare_defaults(ctx, table, positions, row_count: int) -> None:
    """Before INSERT builds `row_count` rows: ranges for the nextval defaults of the columns not given."""
    if row_count == 0:
        return
    given = set(positions)
    wanted: dict[str, int] = {}
    for position, column in enumerate(table.columns):
        if position not in given and column.sequence is not None:
            wanted[column.sequence] = wanted.get(column.sequence, 0) + row_count
    if getattr(ctx, "sequences", None) is None and not wanted:
        return
    await statement_sequences(ctx).prepare(wanted)
