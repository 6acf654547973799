"""The compute node's schema cache: table definitions shared by every session, by catalog version.

Theory of operation
-------------------
Every transaction that writes a catalog key also increments `keys.SCHEMA_VERSION_KEY`
(Transaction.commit does it), so the catalog as of a snapshot `ts` is a function of that key's
value at `ts`. The cache holds table definitions read at some snapshot together with the
version they were read at; a definition is right for another snapshot exactly when the version
there is the same. That is what lets a statement on a known table compile without reading the
catalog:

  * compile with the cached definitions of the cache's current version V (optimistic);
  * the transaction's first storage read carries SCHEMA_VERSION_KEY along with the rows it
    needs (same request, so no extra round trip) and learns the version at its start_ts;
  * if it is V, everything compiled so far was right; otherwise the statement is run again
    with definitions read at the transaction's own snapshot (compute_node/sessions/session.py), and
    the cache moves to the newer version. A statement's result, rows or error, is never
    returned before its transaction has checked the version.

The catalog version never goes back: a backtrack (storage_node/core.py) writes its newest value
+ 1 rather than the old one, so a definition cached under a number is never reused for another
catalog. The node's sequence ranges hang on the same signal (sequences.py): they are dropped
whenever the cache sees the version change, so a range reserved before a backtrack (whose
reservation the backtrack undid) is never handed out after it.

Commits stay protected as before: each table a writing transaction used puts its catalog key
among the commit's lock keys, so a schema change committed after start_ts fails the commit with
40001 OC001. Missing tables are not cached ("relation does not exist" is answered from a read at
the transaction's snapshot), so a new table is visible to every node at once.

This module is pure: no I/O; the transaction does the reads.
"""
from __future__ import annotations

import collections

from quorumdb import limits
from quorumdb.keys import decode_version, encode_version  # noqa: F401 - where callers import them


class SchemaCache:
    """Definitions (TableDef, encoded bytes) by table name, all of catalog version `version`."""

    def __init__(self, tables_max: int | None = None) -> None:
        self.version: int | None = None  # None: nothing cached yet
        self._tables: collections.OrderedDict[str, tuple[object, bytes]] = collections.OrderedDict()
        self._tables_max = tables_max or limits.SCHEMA_CACHE_TABLES_MAX
        self.hits = 0
        self.misses = 0
        self.invalidations = 0  # times a newer version replaced the cached one
        # Called with the new version whenever the cache moves from one known version to another:
        # what else the node keeps by catalog version (sequence ranges) drops with the definitions.
        self.version_listeners: list = []

    def lookup(self, name: str, version: int | None) -> tuple[object, bytes] | None:
        """The cached definition of `name` for a snapshot at catalog `version` (None: not known
        yet: then the cache's own version is assumed, and the caller must check it)."""
        if self.version is None or (version is not None and version != self.version):
            self.misses += 1
            return None
        found = self._tables.get(name)
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def store(self, version: int, name: str, table: object, raw: bytes) -> None:
        """A definition read at a snapshot whose catalog version is `version`."""
        if self.version is not None and version < self.version:
            return  # an old snapshot's view: the cache already knows a newer catalog
        if self.version != version:
            if self.version is not None:
                self.invalidations += 1
            self._tables.clear()
            self._move_to(version)
        self._tables[name] = (table, raw)
        self._tables.move_to_end(name)
        while len(self._tables) > self._tables_max:
            self._tables.popitem(last=False)

    def observe(self, version: int) -> None:
        """A transaction saw catalog `version`: a newer one makes every cached definition stale."""
        if self.version is None or version > self.version:
            if self._tables:
                self.invalidations += 1
            self._tables.clear()
            self._move_to(version)

    def _move_to(self, version: int) -> None:
        previous, self.version = self.version, version
        if previous != version:
            for listener in self.version_listeners:
                listener(version)

    def __len__(self) -> int:
        return len(self._tables)

