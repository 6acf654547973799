"""One transaction of a session: a snapshot, a write buffer and the DSQL quotas.

Theory of operation
-------------------
A transaction reads the database as of `start_ts` through the Backend and never
writes to storage: INSERT/UPDATE/DELETE put new row values (or None tombstones)
into `write_buffer`. Reads see the buffer first (read-your-writes):
  * `get_many` answers buffered keys from the buffer and asks the backend for the rest;
  * `scan` pages through `backend.scan` (limits.SCAN_PAGE_MAX rows a page) and merges
    the buffered keys of the same range in key order, a buffered value replacing the
    stored one and a tombstone hiding it.
Values read from storage are remembered (`read_cache`, bounded): the snapshot never changes,
so a key read twice in a transaction is asked for once.

Schema: table definitions come from the node's SchemaCache (schema_cache.py has the
argument) until the transaction knows the catalog version at its start_ts. Its first storage
read carries keys.SCHEMA_VERSION_KEY along (same request); if the version differs from the
one the cached definitions were taken at, the read raises SchemaStale and the session runs
the statement again with definitions read at this snapshot.

Savepoints: `savepoint_state()` copies what ROLLBACK TO must restore (the buffer, its byte
count, the lock keys, the table definitions DDL changed) and `rollback_to()` puts it back; the
read cache stays, as it only holds values at start_ts.

Private keyspaces (compute_node/sql/bulk.py has the argument): the key ranges of a table this
transaction truncated or rewrote are private to it until it commits. Writes there go to
`pending` instead of the write buffer, do not count against the transaction's quotas, and are
committed ahead in batches (`flush_private`, each batch its own small commit within the
quotas) once BULK_BATCH_ROWS_MAX of them wait; reads there see `pending` over storage read at
the last batch's commit timestamp (`private_read_ts`). `commit()` flushes what is left, then
commits the buffer.

`commit()` sends the buffer and the lock keys to `backend.commit`; a transaction that
wrote nothing commits locally. A transaction that wrote a catalog key also increments the
schema version. The quotas (rows changed, bytes changed, key size,
row size) are checked on every `put`, so a statement fails with 54000 as soon as it
would pass one; limits are read from quorumdb.limits at call time so tests and
deployments may change them.
"""
from __future__ import annotations

import asyncio
import random
from typing import AsyncIterator, Protocol

from compute_node.sql import bulk
from compute_node.sql.schema_cache import SchemaCache, decode_version, encode_version
from quorumdb import errors, limits
from quorumdb import keys as keys_mod
from quorumdb.errors import SqlError


class Backend(Protocol):
    """What a transaction needs from the cluster (the compute node's client: compute_node/cluster/backend.py)."""

    def start_ts(self) -> int:
        """clock.now().latest: the snapshot a new transaction reads (the leader is asked to close
        it at once, so take it only for a snapshot)."""

    def now_ts(self) -> int:
        """clock.now().latest, asking nothing of the cluster (a transaction's age)."""

    async def get_many(self, keys: list[bytes], ts: int) -> dict[bytes, bytes | None]:
        """The value of each key at ts (None: absent or deleted)."""

    async def scan(self, start: bytes, end: bytes | None, ts: int,
                   limit: int) -> tuple[list[tuple[bytes, bytes]], bool]:
        """Live rows with start <= key < end (end None = unbounded) at ts, ascending, at most
        limit; the bool says there may be more.

        Optional companion: `scan_filtered(start, end, ts, limit, pushdown)` with a
        quorumdb/pushdown.py spec returns (rows, more, resume_after): only rows the filter
        keeps, projected, possibly none with more=True, the next page starting strictly after
        resume_after. A backend without it (or with it set to None) gets plain scans."""

    async def commit(self, start_ts: int, writes: list[tuple[bytes, bytes | None]], lock_keys: list[bytes],
                     txn_id: str, private_keyspace: bool = False) -> int:
        """The commit_ts; raises SqlError (40001 OC000, 40003 unknown, 08006/57P03 unavailable).
        `private_keyspace`: every write is in a keyspace private to the transaction (a batch
        flushed ahead): the adjudicator need not remember its keys (adjudicator/core.py)."""


class SchemaStale(Exception):
    """The definitions a statement compiled with are not those of its snapshot: run it again."""


class Transaction:
    def __init__(self, backend: Backend, start_ts: int, txn_id: str, schema_cache: SchemaCache | None = None):
        self.backend = backend
        self.start_ts = start_ts
        self.txn_id = txn_id
        self.write_buffer: dict[bytes, bytes | None] = {}
        self.read_cache: dict[bytes, bytes | None] = {}
        self.schema_cache = schema_cache if schema_cache is not None else SchemaCache()
        self.schema_version: int | None = None          # the catalog version at start_ts, once read
        self.assumed_schema_version: int | None = None  # the cache's version definitions came from before that
        self.reads_sent = 0                             # storage requests (tests: one per point statement)
        # Describe (compute_node/sql/describe.py): the $n types being inferred, and the result
        # columns the last statement compiled to. None when statements run normally.
        self.param_types = None
        self.described_columns: list[tuple[str, str]] | None = None
        self.lock_keys: set[bytes] = set()
        self.write_bytes = 0
        # Catalog cache for this snapshot (table name -> definition or None); DDL updates it.
        self.tables: dict[str, object] = {}
        # Sequences the current statement names as relations (select.preload_tables): name ->
        # bulk.SequenceDef, or None for a name that is no sequence either.
        self.sequence_relations: dict[str, object] = {}
        # Catalog keys this transaction read, with the value it saw (OC001 detection). Each is
        # also a lock key: a concurrent schema change makes the commit fail.
        self.schema_reads: dict[bytes, bytes | None] = {}
        self.rng = None  # the session's random.Random (random(), gen_random_uuid())
        self.client = None  # the session's pg_catalog.ClientInfo (current_user, pg_roles, ...)
        # The access plan of the last statement that read a table (tests and EXPLAIN-like tools).
        self.last_plan = None
        # Private keyspaces (see the module docstring): [start, end) ranges, their unflushed
        # writes, and the commit_ts of the last flushed batch, at which they are read.
        self.private_ranges: list[tuple[bytes, bytes | None]] = []
        self.pending: dict[bytes, bytes | None] = {}
        self.private_read_ts = start_ts
        self.flushed_batches = 0
        self.flushed_keys = 0
        self._next_rowid: int | None = None
        # Set by the session: the node's sequence ranges and the session's currval/lastval.
        self.sequences = None
        self.session_sequences = None
        self.sequence_demand: dict[str, int] = {}  # values a re-run statement needs (executor.execute)
        self.statement_savepoint = None  # the buffers before the statement's first nextval (executor.execute)
        self.read_data = False   # read a key outside the catalog (a snapshot that was used)
        self.created_tables: set[str] = set()  # tables CREATEd by this transaction (executor.insert_rows)
        # Undone when the transaction ends without committing (a rewrite mark, executor.py).
        self.abort_actions: list = []

    def restart_snapshot(self, start_ts: int) -> None:
        """Moves a transaction that has read no data and written nothing to a later snapshot
        (executor: ALTER TABLE ... ADD PRIMARY KEY after it marked the table)."""
        assert not self.write_buffer and not self.pending and not self.read_data
        assert start_ts > self.start_ts
        self.start_ts = self.private_read_ts = start_ts
        self.read_cache.clear()
        self.tables.clear()
        self.schema_reads.clear()
        self.lock_keys.clear()
        self.schema_version = None
        self.assumed_schema_version = None

    async def abort(self) -> None:
        """The transaction ends without committing: undo what it did outside itself (best effort:
        an undo that fails leaves a mark that expires with the transaction age limit)."""
        actions, self.abort_actions = self.abort_actions, []
        for action in actions:
            try:
                await action()
            except SqlError:
                pass

    # --- private keyspaces and row ids ---------------------------------------------------
    def add_private_prefix(self, prefix: bytes) -> None:
        """Keys under `prefix` are this transaction's alone until it commits (a new private id)."""
        assert prefix[1:] >= keys_mod.PRIVATE_ID_BASE.to_bytes(8, "big"), "only private ids are private"
        self.private_ranges.append((prefix, keys_mod.prefix_end(prefix)))

    def is_private(self, key: bytes) -> bool:
        return any(key >= start and (end is None or key < end) for start, end in self.private_ranges)

    def next_rowid(self) -> int:
        """A row id for a table without a primary key (bulk.py: consecutive after a random start)."""
        if self._next_rowid is None:
            self._next_rowid = bulk.rowid_start(self.rng if self.rng is not None else random.Random())
        value = self._next_rowid
        self._next_rowid += 1
        return value

    def skip_rowids(self) -> None:
        """A row id was taken by another transaction's row: continue from a new random start."""
        self._next_rowid = None

    def flush_due(self) -> bool:
        return len(self.pending) >= min(limits.BULK_BATCH_ROWS_MAX, limits.TXN_ROWS_MAX)

    async def flush_private(self, everything: bool = False) -> None:
        """Commits the pending private writes ahead, in batches within the quotas. Unless
        `everything`, only when a whole batch waits (small loads then ride in fewer commits)."""
        if not self.pending or (not everything and not self.flush_due()):
            return
        rows_max = min(limits.BULK_BATCH_ROWS_MAX, limits.TXN_ROWS_MAX)
        bytes_max = min(limits.BULK_BATCH_BYTES_MAX, limits.TXN_BYTES_MAX)
        writes = sorted(self.pending.items())
        self.pending = {}
        for batch in bulk.plan_batches(writes, rows_max, bytes_max):
            # A fresh snapshot for each batch: the previous batch wrote some of these keys.
            batch_start_ts = self.backend.start_ts()
            self.flushed_batches += 1
            commit_ts = await self.backend.commit(batch_start_ts, batch, [],
                                                  f"{self.txn_id}:flush{self.flushed_batches}",
                                                  private_keyspace=True)
            assert commit_ts > self.private_read_ts, "batches commit in order"
            self.private_read_ts = commit_ts
            self.flushed_keys += len(batch)

    @property
    def has_writes(self) -> bool:
        return bool(self.write_buffer) or bool(self.pending)

    # --- writes -------------------------------------------------------------------
    def put(self, key: bytes, value: bytes | None) -> None:
        if len(key) > limits.KEY_BYTES_MAX:
            raise SqlError(errors.PROGRAM_LIMIT_EXCEEDED,
                           f"key size {len(key)} bytes exceeds the limit of {limits.KEY_BYTES_MAX} bytes")
        if value is not None and len(value) > limits.ROW_BYTES_MAX:
            raise SqlError(errors.PROGRAM_LIMIT_EXCEEDED,
                           f"row size {len(value)} bytes exceeds the limit of {limits.ROW_BYTES_MAX} bytes")
        if self.private_ranges and self.is_private(key):
            # Bounded by the callers: bulk writers flush every batch (insert_rows), and UPDATE and
            # DELETE change at most TXN_ROWS_MAX rows per statement.
            self.pending[key] = value
            return
        previous_bytes = 0
        if key in self.write_buffer:
            previous_value = self.write_buffer[key]
            previous_bytes = len(key) + (len(previous_value) if previous_value is not None else 0)
        elif len(self.write_buffer) >= limits.TXN_ROWS_MAX:
            raise SqlError(errors.PROGRAM_LIMIT_EXCEEDED,
                           f"transaction exceeds the limit of {limits.TXN_ROWS_MAX} modified rows",
                           hint="Split the change into several smaller transactions.")
        new_bytes = len(key) + (len(value) if value is not None else 0)
        total = self.write_bytes - previous_bytes + new_bytes
        if total > limits.TXN_BYTES_MAX:
            raise SqlError(errors.PROGRAM_LIMIT_EXCEEDED,
                           f"transaction exceeds the limit of {limits.TXN_BYTES_MAX} bytes of modified data",
                           hint="Split the change into several smaller transactions.")
        self.write_buffer[key] = value
        self.write_bytes = total

    # --- savepoints --------------------------------------------------------------------
    def savepoint_state(self) -> tuple:
        """What ROLLBACK TO SAVEPOINT restores: the writes, their byte count, the locks taken and
        the transaction's view of table definitions (DDL changes it). The read cache is not part
        of it: it holds values at start_ts, which no write of this transaction changes."""
        return (dict(self.write_buffer), self.write_bytes, set(self.lock_keys), dict(self.tables),
                dict(self.pending), list(self.private_ranges), self.flushed_batches, len(self.abort_actions))

    def rollback_to(self, state: tuple) -> None:
        """Raises 0A000 (changing nothing) when rows were flushed ahead or a table was marked for
        a rewrite since the savepoint: those are commits of their own, which no buffer restores."""
        write_buffer, write_bytes, lock_keys, tables, pending, private_ranges, flushed, actions = state
        if self.flushed_batches != flushed or len(self.abort_actions) != actions:
            raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                           "cannot roll back to a savepoint set before a bulk load flushed rows ahead or "
                           "before ALTER TABLE ... ADD PRIMARY KEY",
                           hint="Roll back the whole transaction.")
        self.pending = dict(pending)
        self.private_ranges = list(private_ranges)
        self.write_buffer = dict(write_buffer)
        self.write_bytes = write_bytes
        # Catalog entries read since stay locked: what the client saw may still shape its later
        # statements, so a concurrent schema change must still fail this commit (OC001).
        self.lock_keys = set(lock_keys) | set(self.schema_reads)
        self.tables = dict(tables)

    def note_schema_read(self, key: bytes, value: bytes | None) -> None:
        """Records that the statement used the catalog entry `key` as it was at start_ts."""
        if key not in self.schema_reads and key not in self.write_buffer:
            self.schema_reads[key] = value
            self.lock_keys.add(key)

    def note_columns(self, columns: list[tuple[str, str]]) -> None:
        """The result columns (name, type) of the statement being compiled."""
        self.described_columns = columns

    def lock(self, key: bytes) -> None:
        """Makes the commit fail (OCC) if `key` was committed by another transaction after start_ts."""
        self.lock_keys.add(key)

    # --- schema ------------------------------------------------------------------------
    def cached_table(self, name: str) -> tuple[object, bytes] | None:
        """(TableDef, encoded) of `name` from the node's cache, if it is right for this snapshot
        (or assumed to be, until the first read checks the version)."""
        cache = self.schema_cache
        if self.schema_version is None:
            if self.assumed_schema_version is not None and self.assumed_schema_version != cache.version:
                return None  # the cache moved under this unchecked transaction: read instead
            found = cache.lookup(name, None)
            if found is not None:
                self.assumed_schema_version = cache.version
            return found
        return cache.lookup(name, self.schema_version)

    def remember_table(self, name: str, key: bytes, table: object, raw: bytes) -> None:
        """A definition this transaction read at its snapshot: the node's cache may keep it."""
        if self.schema_version is not None and key not in self.write_buffer:
            self.schema_cache.store(self.schema_version, name, table, raw)

    async def check_schema_version(self) -> None:
        """Before a statement's result leaves: its cached definitions were those of this snapshot."""
        if self.schema_version is None and self.assumed_schema_version is not None:
            await self.get_many([])

    def forget_stale_schema(self) -> None:
        """After SchemaStale: drop what the statement took from the cache (it wrote nothing)."""
        assert not self.write_buffer, "schema is checked by a transaction's first read, before any write"
        self.tables.clear()
        self.schema_reads.clear()
        self.lock_keys.clear()
        self.assumed_schema_version = None

    def _learn_schema_version(self, raw: bytes | None) -> None:
        version = decode_version(raw)
        self.schema_version = version
        self.schema_cache.observe(version)
        if self.assumed_schema_version is not None and self.assumed_schema_version != version:
            raise SchemaStale(f"catalog version {version} at start_ts, cached {self.assumed_schema_version}")

    # --- reads ----------------------------------------------------------------------
    async def get(self, key: bytes) -> bytes | None:
        return (await self.get_many([key]))[key]

    async def get_many(self, keys: list[bytes]) -> dict[bytes, bytes | None]:
        result: dict[bytes, bytes | None] = {}
        missing: list[bytes] = []
        private: list[bytes] = []
        for key in keys:
            if not self.read_data and not key.startswith(keys_mod.SYSTEM_PREFIX):
                self.read_data = True
            if self.private_ranges and self.is_private(key):
                if key in self.pending:
                    result[key] = self.pending[key]
                else:
                    private.append(key)  # never cached: later batches change what is there
            elif key in self.write_buffer:
                result[key] = self.write_buffer[key]
            elif key in self.read_cache:
                result[key] = self.read_cache[key]
            else:
                missing.append(key)
        if self.schema_version is None and keys_mod.SCHEMA_VERSION_KEY not in missing:
            # The first read also learns the catalog version (schema_cache.py), in the same request:
            # the first request, since the version is learned from the first chunk's answer.
            missing.insert(0, keys_mod.SCHEMA_VERSION_KEY)
        for offset in range(0, len(missing), limits.GET_KEYS_MAX):
            chunk = missing[offset:offset + limits.GET_KEYS_MAX]
            self.reads_sent += 1
            found = await self.backend.get_many(chunk, self.start_ts)
            cache_room = limits.TXN_READ_CACHE_KEYS_MAX - len(self.read_cache)
            for key in chunk:
                value = found.get(key)
                result[key] = value
                if cache_room > 0:
                    self.read_cache[key] = value
                    cache_room -= 1
            if self.schema_version is None:
                self._learn_schema_version(found.get(keys_mod.SCHEMA_VERSION_KEY))
        for offset in range(0, len(private), limits.GET_KEYS_MAX):
            chunk = private[offset:offset + limits.GET_KEYS_MAX]
            self.reads_sent += 1
            found = await self.backend.get_many(chunk, self.private_read_ts)
            for key in chunk:
                result[key] = found.get(key)
        return result

    async def scan(self, start: bytes, end: bytes | None,
                   pushdown: bytes | None = None, prefetch: bool = False) -> AsyncIterator[tuple[bytes, bytes]]:
        """Live rows with start <= key < end in key order, the write buffer merged in.

        With `pushdown` (and a backend that supports it) storage drops rows the filter
        rejects and projects the rest; buffered rows are merged in unfiltered and whole (the
        caller re-checks its full WHERE on every row anyway). With `prefetch` the next page is
        asked for while the caller consumes this one (one page ahead at most): for a caller that
        reads to the end anyway (a table rewrite), never one that may stop early (LIMIT)."""
        scan_filtered = getattr(self.backend, "scan_filtered", None) if pushdown is not None else None
        if scan_filtered is None:
            pushdown = None
        if not start.startswith(keys_mod.SYSTEM_PREFIX):
            self.read_data = True
        private = bool(self.private_ranges) and self.is_private(start)
        # A scan covers one table's or one index's keys, so it is private as a whole or not at all.
        assert not private or any(start >= s and (e is None or (end is not None and end <= e))
                                  for s, e in self.private_ranges), "a scan crossing a private keyspace"
        ts = self.private_read_ts if private else self.start_ts
        source = self.pending if private else self.write_buffer
        buffered = sorted((key, value) for key, value in source.items()
                          if key >= start and (end is None or key < end))
        buffered_index = 0
        position = start
        rows_read = 0
        # An unchecked transaction learns the catalog version beside its first page.
        if self.schema_version is None:
            version_read = asyncio.ensure_future(self.get_many([]))
            try:
                page_result = await self._scan_page(position, end, pushdown, scan_filtered, ts)
            except BaseException:
                version_read.cancel()
                await asyncio.gather(version_read, return_exceptions=True)
                raise
            await version_read  # raises SchemaStale before any row leaves
        else:
            page_result = await self._scan_page(position, end, pushdown, scan_filtered, ts)
        prefetched: asyncio.Future | None = None
        try:
            while True:
                if page_result is None and prefetched is not None:
                    page_result, prefetched = await prefetched, None
                elif page_result is None:
                    page_result = await self._scan_page(position, end, pushdown, scan_filtered, ts)
                page, more, resume_after = page_result
                page_result = None
                assert len(page) <= limits.SCAN_PAGE_MAX, "backend returned more rows than asked"
                assert page or not more or pushdown is not None, "backend said more but returned no rows"
                rows_read += len(page)
                if rows_read > limits.STATEMENT_ROWS_READ_MAX:
                    raise SqlError(errors.PROGRAM_LIMIT_EXCEEDED,
                                   f"statement reads more than {limits.STATEMENT_ROWS_READ_MAX} rows")
                if prefetch and more:
                    prefetched = asyncio.ensure_future(
                        self._scan_page(resume_after + b"\x00", end, pushdown, scan_filtered, ts))
                    # A scan closed early leaves it cancelled or failed: its error is not news.
                    prefetched.add_done_callback(lambda done: done.cancelled() or done.exception())
                for key, value in page:
                    assert key >= position, "backend scan went backwards"
                    while buffered_index < len(buffered) and buffered[buffered_index][0] < key:
                        buffered_key, buffered_value = buffered[buffered_index]
                        buffered_index += 1
                        if buffered_value is not None:
                            yield buffered_key, buffered_value
                    if buffered_index < len(buffered) and buffered[buffered_index][0] == key:
                        buffered_value = buffered[buffered_index][1]
                        buffered_index += 1
                        if buffered_value is not None:
                            yield key, buffered_value
                        continue
                    yield key, value
                if not more:
                    break
                position = resume_after + b"\x00"  # the smallest key after the last one covered
        finally:
            if prefetched is not None and not prefetched.done():
                prefetched.cancel()
        for buffered_key, buffered_value in buffered[buffered_index:]:
            if buffered_value is not None:
                yield buffered_key, buffered_value

    async def _scan_page(self, position: bytes, end: bytes | None, pushdown: bytes | None, scan_filtered,
                         ts: int):
        """(rows, more, resume_after) of one page from `position`, read at `ts`."""
        self.reads_sent += 1
        if pushdown is None:
            page, more = await self.backend.scan(position, end, ts, limits.SCAN_PAGE_MAX)
            return page, more, (page[-1][0] if page else None)
        page, more, resume_after = await scan_filtered(position, end, ts, limits.SCAN_PAGE_MAX, pushdown)
        assert not more or (resume_after is not None and resume_after >= position), \
            "a filtered scan must move forward"
        assert not page or not more or page[-1][0] <= resume_after
        return page, more, resume_after

    # --- end ---------------------------------------------------------------------------
    async def commit(self) -> int | None:
        """The commit timestamp, or None for a transaction that wrote nothing (committed locally)."""
        await self.flush_private(everything=True)
        if not self.write_buffer:
            assert not self.private_ranges, "a private keyspace exists only beside its catalog change"
            wait = getattr(self.backend, "read_only_commit_wait", None)  # optional: test backends lack it
            if wait is not None and self.reads_sent:
                await wait(self.start_ts)
            return None
        if any(key.startswith(keys_mod.SYSTEM_PREFIX) and key != keys_mod.SCHEMA_VERSION_KEY
               for key in self.write_buffer):
            await self._bump_schema_version()
        writes = sorted(self.write_buffer.items())
        try:
            commit_ts = await self.backend.commit(self.start_ts, writes, sorted(self.lock_keys), self.txn_id)
        except SqlError as error:
            if error.sqlstate == errors.SERIALIZATION_FAILURE and await self._schema_changed():
                raise SqlError(errors.SERIALIZATION_FAILURE,
                               f"schema has been updated by another transaction, please retry: ({errors.DSQL_SCHEMA_CHANGED})",
                               detail=error.detail,
                               hint="A table this transaction used was created, altered or dropped after it started.") \
                    from None
            raise
        assert commit_ts > self.start_ts, f"commit_ts {commit_ts} must follow start_ts {self.start_ts}"
        new_version = self.write_buffer.get(keys_mod.SCHEMA_VERSION_KEY)
        if new_version is not None:  # this node's own schema change: its cached definitions are old now
            self.schema_cache.observe(decode_version(new_version))
        return commit_ts

    async def _bump_schema_version(self) -> None:
        """A catalog change: the next version, written with it (concurrent DDL conflicts here)."""
        if keys_mod.SCHEMA_VERSION_KEY in self.write_buffer:
            return
        current = (await self.get_many([keys_mod.SCHEMA_VERSION_KEY]))[keys_mod.SCHEMA_VERSION_KEY]
        self.write_buffer[keys_mod.SCHEMA_VERSION_KEY] = encode_version(decode_version(current) + 1)

    async def _schema_changed(self) -> bool:
        """After a conflict: did a catalog entry this transaction used change since start_ts?"""
        if not self.schema_reads:
            return False
        schema_keys = sorted(self.schema_reads)
        try:
            now = await self.backend.get_many(schema_keys[:limits.GET_KEYS_MAX], self.backend.start_ts())
        except SqlError:
            return False
        return any(now.get(key) != self.schema_reads[key] for key in schema_keys[:limits.GET_KEYS_MAX])
